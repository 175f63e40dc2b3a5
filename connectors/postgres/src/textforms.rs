//! PostgreSQL's text output of bit strings, points and times with time zone, read into the
//! values Debezium gives them: `io.debezium.data.Bits` (the bits as a little-endian bit
//! set: the rightmost bit is bit 0 of byte 0, as many bytes as the highest set bit needs),
//! `io.debezium.data.geometry.Point` (x, y and the point's little-endian WKB) and
//! `io.debezium.time.ZonedTime` (the time in UTC, `HH:MM:SS[.fraction]Z`, the fraction
//! without trailing zeros), and hstore's pairs (`"a"=>"1", "b"=>NULL`).

/// A BIT or BIT VARYING value (`101`) as Debezium's bytes; `None` for a character other
/// than `0` and `1`.
pub fn bits(text: &str) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for (i, c) in text.bytes().rev().enumerate() {
        match c {
            b'0' => {}
            b'1' => {
                let byte = i / 8;
                if out.len() <= byte {
                    out.resize(byte + 1, 0);
                }
                out[byte] |= 1 << (i % 8);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A POINT (`(1,2)`) as its coordinates and its WKB (byte order 1, little-endian; type 1).
pub fn point(text: &str) -> Option<(f64, f64, Vec<u8>)> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (x, y) = inner.split_once(',')?;
    let (x, y): (f64, f64) = (x.trim().parse().ok()?, y.trim().parse().ok()?);
    let mut wkb = Vec::with_capacity(21);
    wkb.push(1);
    wkb.extend_from_slice(&1_u32.to_le_bytes());
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    Some((x, y, wkb))
}

/// A TIME WITH TIME ZONE (`13:45:30.5+02`, `08:00:00-05:30`) in UTC, as Java's
/// `ISO_OFFSET_TIME` prints it (`11:45:30.5Z`).
pub fn zoned_time(text: &str) -> Option<String> {
    let at = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(at);
    let sign: i64 = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset.get(1..)?.split(':');
    let mut offset_seconds = 0_i64;
    for unit in [3600, 60, 1] {
        if let Some(p) = parts.next() {
            offset_seconds += p.parse::<i64>().ok()? * unit;
        }
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => {
            (clock, fraction.trim_end_matches('0'))
        }
        Some(_) => return None,
        None => (time, ""),
    };
    let mut fields = clock.split(':');
    let mut seconds = 0_i64;
    for unit in [3600, 60, 1] {
        seconds += fields.next()?.parse::<i64>().ok()? * unit;
    }
    if fields.next().is_some() {
        return None;
    }
    let utc = (seconds - sign * offset_seconds).rem_euclid(86_400);
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    Some(format!(
        "{:02}:{:02}:{:02}{fraction}Z",
        utc / 3600,
        utc / 60 % 60,
        utc % 60
    ))
}

/// An hstore value (`"a"=>"1", "b"=>NULL`: keys and values double-quoted, a backslash escaping
/// the next character, a value NULL unquoted) as its pairs in text order.
pub fn hstore(text: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut chars = text.chars().peekable();
    let mut out = Vec::new();
    let quoted = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        if chars.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '\\' => s.push(chars.next()?),
                '"' => return Some(s),
                c => s.push(c),
            }
        }
    };
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key = quoted(&mut chars)?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next()? != '=' || chars.next()? != '>' {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            Some(quoted(&mut chars)?)
        } else {
            let word: String =
                std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphabetic())).collect();
            if !word.eq_ignore_ascii_case("NULL") {
                return None;
            }
            None
        };
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_a_little_endian_bit_set_as_long_as_its_highest_bit() {
        // Debezium's tests: '1'::bit(7) -> {64}, '000000110000001000000001'::bit(24) ->
        // {1, 2, 3}, '00'::bit(2) -> {}, B'101' -> {5}.
        assert_eq!(bits("1000000"), Some(vec![64]));
        assert_eq!(bits("000000110000001000000001"), Some(vec![1, 2, 3]));
        assert_eq!(bits("00"), Some(vec![]));
        assert_eq!(bits("101"), Some(vec![5]));
        assert_eq!(bits("0000000100000000"), Some(vec![0, 1]));
        assert_eq!(bits("10x"), None);
    }

    #[test]
    fn a_point_carries_its_little_endian_wkb() {
        let (x, y, wkb) = point("(1,2)").unwrap();
        assert_eq!((x, y), (1.0, 2.0));
        // 01 01000000 000000000000F03F 0000000000000040
        let hex: String = wkb.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "0101000000000000000000F03F0000000000000040");
        assert_eq!(
            point("(-1.5, 3e2)").map(|p| (p.0, p.1)),
            Some((-1.5, 300.0))
        );
        assert!(point("1,2").is_none() && point("(1)").is_none());
    }

    #[test]
    fn hstore_pairs_are_read_with_their_escapes_and_nulls() {
        assert_eq!(
            hstore(r#""a"=>"1", "b"=>NULL"#),
            Some(vec![("a".into(), Some("1".into())), ("b".into(), None)])
        );
        assert_eq!(
            hstore(r#""k \"q\""=>"x\\y", "e"=>"""#),
            Some(vec![
                ("k \"q\"".into(), Some("x\\y".into())),
                ("e".into(), Some(String::new()))
            ])
        );
        assert_eq!(hstore(""), Some(vec![]));
        assert!(hstore(r#""a"=>1"#).is_none() && hstore(r#""a"="1""#).is_none());
    }

    #[test]
    fn times_with_zone_are_printed_in_utc_as_java_does() {
        // Debezium's tests: '13:51:30.123789+02:00' -> "11:51:30.123789Z".
        assert_eq!(
            zoned_time("13:51:30.123789+02").as_deref(),
            Some("11:51:30.123789Z")
        );
        assert_eq!(zoned_time("13:45:30.5+02").as_deref(), Some("11:45:30.5Z"));
        assert_eq!(
            zoned_time("13:45:30.500+02").as_deref(),
            Some("11:45:30.5Z")
        );
        assert_eq!(zoned_time("00:00:00+00").as_deref(), Some("00:00:00Z"));
        assert_eq!(zoned_time("22:30:00-05:30").as_deref(), Some("04:00:00Z"));
        assert_eq!(zoned_time("01:00:00+02").as_deref(), Some("23:00:00Z"));
        assert!(zoned_time("13:45").is_none() && zoned_time("x+02").is_none());
    }
}
