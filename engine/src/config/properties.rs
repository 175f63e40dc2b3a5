//! Java `.properties` files, as Kafka Connect reads `worker.properties` and standalone
//! connector configs: `key=value`, `key: value` or `key value`; `#` and `!` comments;
//! backslash line continuations; `\t \n \r \f \uXXXX` escapes. A later key wins.

use std::collections::BTreeMap;

/// A `.properties` text that cannot be read, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PropertiesError {
    /// 1-based line number where the logical line starts.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a `.properties` text into key/value pairs.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, PropertiesError> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, first)) = lines.next() {
        let start = index + 1;
        let mut logical = first.trim_start().to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        let key = unescape(key).map_err(|message| PropertiesError {
            line: start,
            message,
        })?;
        let value = unescape(value).map_err(|message| PropertiesError {
            line: start,
            message,
        })?;
        out.insert(key, value);
    }
    Ok(out)
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or blank; blanks around the separator go.
fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => return (&line[..i], line[i + 1..].trim_start()),
            c if c.is_whitespace() => {
                let rest = line[i..].trim_start();
                let rest = rest.strip_prefix(['=', ':']).map_or(rest, str::trim_start);
                return (&line[..i], rest);
            }
            _ => {}
        }
    }
    (line, "")
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .ok_or_else(|| format!("malformed \\u escape \\u{hex}"))?;
                let ch =
                    char::from_u32(code).ok_or_else(|| format!("\\u{hex} is not a character"))?;
                out.push(ch);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_separators_comments_and_continuations_java_reads() {
        let text = "\
# a comment
! another
bootstrap.servers=127.0.0.1:9092
group.id : connect-cluster
plugin.path   /opt/a
key.converter.schemas.enable=false
listeners=http://127.0.0.1:8083,\\
          http://127.0.0.1:8084
empty=
path=C:\\\\kafka\\\\data
unicode=caf\\u00e9
a\\=b=c
";
        let p = parse(text).unwrap();
        assert_eq!(p["bootstrap.servers"], "127.0.0.1:9092");
        assert_eq!(p["group.id"], "connect-cluster");
        assert_eq!(p["plugin.path"], "/opt/a");
        assert_eq!(
            p["listeners"],
            "http://127.0.0.1:8083,http://127.0.0.1:8084"
        );
        assert_eq!(p["empty"], "");
        assert_eq!(p["path"], "C:\\kafka\\data");
        assert_eq!(p["unicode"], "café");
        assert_eq!(p["a=b"], "c");
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn a_later_key_wins() {
        assert_eq!(parse("a=1\na=2\n").unwrap()["a"], "2");
    }

    #[test]
    fn bad_escapes_name_the_line() {
        let e = parse("ok=1\n\nbad=\\u12G4\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("\\u12G4"), "{e}");
    }
}
