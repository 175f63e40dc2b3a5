//! Syslog message parsing (RFC 5424, and the BSD format RFC 3164 describes) and TCP
//! framing (RFC 6587: octet counting or newline-terminated, detected per frame).
//!
//! Parsing never loses input: a line that is neither format is returned whole as the
//! message, with `error` saying which byte or field did not fit.

use std::collections::BTreeMap;

/// RFC 5424 STRUCTURED-DATA: SD-ID -> (PARAM-NAME -> PARAM-VALUE).
pub type StructuredData = BTreeMap<String, BTreeMap<String, String>>;

/// A parsed syslog message. Fields a format does not carry, or that were the nil value
/// `-`, are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `facility * 8 + severity`.
    pub facility: Option<i32>,
    /// The severity (Kafka Connect's syslog connector calls it `level`).
    pub level: Option<i32>,
    /// Milliseconds since the epoch.
    pub date: Option<i64>,
    /// The HOSTNAME field.
    pub host: Option<String>,
    /// RFC 5424 VERSION.
    pub version: Option<i32>,
    /// RFC 5424 APP-NAME (RFC 3164: the tag before `:` or `[`).
    pub app_name: Option<String>,
    /// RFC 5424 PROCID (RFC 3164: the number in `tag[pid]`).
    pub process_id: Option<String>,
    /// RFC 5424 MSGID.
    pub message_id: Option<String>,
    /// RFC 5424 STRUCTURED-DATA: SD-ID -> (PARAM-NAME -> PARAM-VALUE).
    pub structured_data: StructuredData,
    /// The message text (RFC 3164: everything after the timestamp, as the seed's documents
    /// show it).
    pub message: String,
    /// Why the input is not a valid syslog message, naming the byte or field; `None` when
    /// it parsed.
    pub error: Option<String>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm);
/// `None` when the year is too large for the arithmetic (the digits come from the wire).
/// `month` must be 1 to 12 and `day` small (callers check both).
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?.checked_add(doe - 719_468)
}

/// The proleptic Gregorian year of a time in milliseconds since the epoch (the inverse of
/// [`days_from_civil`], Howard Hinnant's `civil_from_days`).
fn year_of(millis: i64) -> i64 {
    let z = millis.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // March-based years: January and February belong to the next civil year.
    yoe + era * 400 + i64::from(mp >= 10)
}

/// Milliseconds since the epoch of a UTC date and time, `None` if it does not fit an i64.
fn epoch_millis(days: i64, hour: i64, minute: i64, second: i64, millis: i64) -> Option<i64> {
    days.checked_mul(86_400_000)?
        .checked_add(((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

fn digits(s: &str, what: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: expected digits, found {s:?}"));
    }
    s.parse().map_err(|e| format!("{what}: {e}"))
}

/// An RFC 3339 timestamp as RFC 5424 uses it, in milliseconds since the epoch.
pub fn rfc3339_millis(s: &str) -> Result<i64, String> {
    let (date, time) = s
        .split_once('T')
        .ok_or_else(|| format!("TIMESTAMP {s:?}: no 'T' between date and time"))?;
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(da), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(format!("TIMESTAMP {s:?}: date is not YYYY-MM-DD"));
    };
    let (year, month, day) = (digits(y, "year")?, digits(mo, "month")?, digits(da, "day")?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(format!("TIMESTAMP {s:?}: month or day out of range"));
    }
    let (clock, offset_minutes) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time
            .rfind(['+', '-'])
            .ok_or_else(|| format!("TIMESTAMP {s:?}: no time zone (Z or +hh:mm)"))?;
        let (c, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..]
            .split_once(':')
            .ok_or_else(|| format!("TIMESTAMP {s:?}: zone is not +hh:mm"))?;
        let (hours, minutes) = (digits(h, "zone hours")?, digits(m, "zone minutes")?);
        // RFC 3339 offsets are at most 23:59; larger would also overflow below.
        if hours > 23 || minutes > 59 {
            return Err(format!("TIMESTAMP {s:?}: zone out of range"));
        }
        (c, sign * (hours * 60 + minutes))
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (Some(h), Some(mi), Some(se), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err(format!("TIMESTAMP {s:?}: time is not hh:mm:ss"));
    };
    let (hour, minute, second) = (
        digits(h, "hour")?,
        digits(mi, "minute")?,
        digits(se, "second")?,
    );
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!("TIMESTAMP {s:?}: time out of range"));
    }
    let millis = fraction_millis(fraction)
        .ok_or_else(|| format!("TIMESTAMP {s:?}: fraction: expected digits, found {fraction:?}"))?;
    days_from_civil(year, month, day)
        .and_then(|days| epoch_millis(days, hour, minute, second, millis))
        .and_then(|t| t.checked_sub(offset_minutes * 60_000))
        .ok_or_else(|| format!("TIMESTAMP {s:?}: the year does not fit"))
}

/// TIME-SECFRAC as milliseconds: RFC 3339 allows any number of digits, only the first three
/// count (truncated, as before), so no length of digits can overflow.
fn fraction_millis(fraction: &str) -> Option<i64> {
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.is_empty() {
        return Some(0);
    }
    Some(
        fraction
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0, |ms, b| ms * 10 + i64::from(b - b'0')),
    )
}

/// `<PRI>` at the start; returns (pri, rest).
fn pri(line: &str) -> Result<(i32, &str), String> {
    let rest = line
        .strip_prefix('<')
        .ok_or_else(|| "byte 0: expected '<' opening PRI".to_owned())?;
    let end = rest
        .find('>')
        .filter(|e| (1..=3).contains(e))
        .ok_or_else(|| "PRI: expected 1 to 3 digits then '>'".to_owned())?;
    let value = digits(&rest[..end], "PRI")?;
    if value > 191 {
        return Err(format!("PRI: {value} is above 191"));
    }
    Ok((i32::try_from(value).unwrap_or(0), &rest[end + 1..]))
}

fn nil(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_owned())
}

/// STRUCTURED-DATA at the start of `s`: returns the elements and the rest.
fn structured_data(s: &str) -> Result<(StructuredData, &str), String> {
    let mut out = BTreeMap::new();
    if let Some(rest) = s.strip_prefix('-') {
        return Ok((out, rest));
    }
    let mut rest = s;
    while let Some(body) = rest.strip_prefix('[') {
        let id_end = body
            .find([' ', ']'])
            .ok_or_else(|| "STRUCTURED-DATA: unterminated SD-ELEMENT".to_owned())?;
        let id = body[..id_end].to_owned();
        let mut params = BTreeMap::new();
        let mut cursor = &body[id_end..];
        loop {
            if let Some(after) = cursor.strip_prefix(']') {
                cursor = after;
                break;
            }
            let param = cursor
                .strip_prefix(' ')
                .ok_or_else(|| format!("STRUCTURED-DATA [{id}]: expected ' ' or ']'"))?;
            let eq = param
                .find('=')
                .ok_or_else(|| format!("STRUCTURED-DATA [{id}]: PARAM-NAME without '='"))?;
            let name = param[..eq].to_owned();
            let value_start = param[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("STRUCTURED-DATA [{id}] {name}: value must be quoted"))?;
            let mut value = String::new();
            let mut chars = value_start.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end =
                end.ok_or_else(|| format!("STRUCTURED-DATA [{id}] {name}: unterminated value"))?;
            params.insert(name, value);
            cursor = &value_start[end + 1..];
        }
        out.insert(id, params);
        rest = cursor;
    }
    if out.is_empty() {
        return Err("STRUCTURED-DATA: expected '-' or '['".to_owned());
    }
    Ok((out, rest))
}

fn rfc5424(pri: i32, rest: &str) -> Result<Message, String> {
    let mut parts = rest.splitn(7, ' ');
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("{what}: missing"))
    };
    let version = digits(next("VERSION")?, "VERSION")?;
    let timestamp = next("TIMESTAMP")?;
    let host = next("HOSTNAME")?;
    let app = next("APP-NAME")?;
    let proc_id = next("PROCID")?;
    let msg_id = next("MSGID")?;
    let tail = parts.next().unwrap_or("-");
    let date = if timestamp == "-" {
        None
    } else {
        Some(rfc3339_millis(timestamp)?)
    };
    let (structured_data, after) = structured_data(tail)?;
    let text = after.strip_prefix(' ').unwrap_or(after);
    Ok(Message {
        facility: Some(pri / 8),
        level: Some(pri % 8),
        date,
        host: nil(host),
        version: i32::try_from(version).ok(),
        app_name: nil(app),
        process_id: nil(proc_id),
        message_id: nil(msg_id),
        structured_data,
        message: text.strip_prefix('\u{feff}').unwrap_or(text).to_owned(),
        error: None,
    })
}

/// `Mmm dd hh:mm:ss` (RFC 3164), UTC, in the year that puts it closest to `received`: the
/// format has no year, and a "Dec 31" line that arrives on January 1st (or a sender whose
/// clock runs a little ahead over New Year) must not land a year off.
fn bsd_timestamp(s: &str, received: i64) -> Result<i64, String> {
    let month = MONTHS
        .iter()
        .position(|m| s.starts_with(m))
        .ok_or_else(|| {
            format!(
                "TIMESTAMP: {:?} is not a month name",
                s.get(..3).unwrap_or(s)
            )
        })?;
    let day = digits(s.get(3..6).unwrap_or_default().trim(), "day")?;
    let clock = s.get(7..15).unwrap_or_default();
    let mut t = clock.split(':');
    let (Some(h), Some(m), Some(sec)) = (t.next(), t.next(), t.next()) else {
        return Err(format!("TIMESTAMP: {clock:?} is not hh:mm:ss"));
    };
    let (hour, minute, second) = (
        digits(h, "hour")?,
        digits(m, "minute")?,
        digits(sec, "second")?,
    );
    // The fields are at most 3 digits (fixed columns), so this cannot overflow.
    let year = year_of(received);
    (year - 1..=year + 1)
        .filter_map(|y| days_from_civil(y, month as i64 + 1, day))
        .filter_map(|days| epoch_millis(days, hour, minute, second, 0))
        .min_by_key(|t| t.abs_diff(received))
        .ok_or_else(|| format!("TIMESTAMP: year {year} does not fit"))
}

fn rfc3164(pri: i32, rest: &str, received: i64) -> Result<Message, String> {
    let date = bsd_timestamp(rest, received)?;
    let after = rest.get(15..).unwrap_or_default();
    let text = after.strip_prefix(' ').unwrap_or(after);
    let mut words = text.splitn(2, ' ');
    let host = words.next().filter(|h| !h.is_empty()).map(str::to_owned);
    let tag_and_msg = words.next().unwrap_or_default();
    // TAG: up to 32 alphanumerics, then '[pid]' and/or ':'.
    let tag_end = tag_and_msg
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
        .unwrap_or(tag_and_msg.len());
    let (app_name, process_id) = match tag_and_msg[tag_end..].chars().next() {
        Some('[') => {
            let pid = tag_and_msg[tag_end + 1..]
                .split_once(']')
                .map(|(pid, _)| pid.to_owned());
            (Some(tag_and_msg[..tag_end].to_owned()), pid)
        }
        Some(':') => (Some(tag_and_msg[..tag_end].to_owned()), None),
        _ => (None, None),
    };
    Ok(Message {
        facility: Some(pri / 8),
        level: Some(pri % 8),
        date: Some(date),
        host,
        app_name: app_name.filter(|a| !a.is_empty()),
        process_id,
        message: text.to_owned(),
        ..Message::default()
    })
}

/// Parses one syslog message received at `received` (milliseconds since the epoch), which
/// dates RFC 3164 timestamps: they carry no year, the one closest to `received` is taken.
pub fn parse(line: &str, received: i64) -> Message {
    let line = line.trim_end_matches(['\r', '\n', '\0']);
    let result = pri(line).and_then(|(p, rest)| {
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            rfc5424(p, rest)
        } else {
            rfc3164(p, rest, received)
        }
    });
    match result {
        Ok(m) => m,
        Err(error) => Message {
            message: line.to_owned(),
            error: Some(error),
            ..Message::default()
        },
    }
}

/// What [`Framer::next_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole message.
    Message(Vec<u8>),
    /// A message longer than the limit: its first `limit` bytes (the rest is skipped).
    Truncated(Vec<u8>),
}

/// Splits a TCP byte stream into messages (RFC 6587): a frame starting with a digit is
/// octet-counted (`LEN SP MSG`), any other is terminated by LF.
#[derive(Debug, Default)]
pub struct Framer {
    buffer: Vec<u8>,
    /// Bytes still to drop of a truncated octet-counted frame.
    skip: usize,
    /// Dropping the rest of an over-long newline frame.
    skip_line: bool,
}

impl Framer {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a whole frame yet (lost if the peer goes now).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, if the buffer holds one; `limit` caps a message's size.
    pub fn next_frame(&mut self, limit: usize) -> Option<Frame> {
        {
            if self.skip > 0 {
                let n = self.skip.min(self.buffer.len());
                self.buffer.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.skip_line {
                let end = self.buffer.iter().position(|b| *b == b'\n');
                match end {
                    Some(i) => {
                        self.buffer.drain(..=i);
                        self.skip_line = false;
                    }
                    None => {
                        self.buffer.clear();
                        return None;
                    }
                }
            }
            // Blank lines between frames are noise, not messages.
            let Some(start) = self
                .buffer
                .iter()
                .position(|b| !matches!(b, b'\n' | b'\r' | b'\0'))
            else {
                self.buffer.clear();
                return None;
            };
            self.buffer.drain(..start);
            let first = *self.buffer.first()?;
            if first.is_ascii_digit() {
                let space = self.buffer.iter().take(11).position(|b| *b == b' ');
                if let Some(space) = space {
                    let len = std::str::from_utf8(&self.buffer[..space])
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok());
                    if let Some(len) = len {
                        let body = space + 1;
                        if len > limit {
                            let have = self.buffer.len() - body;
                            if have < limit {
                                return None;
                            }
                            let kept = self.buffer[body..body + limit].to_vec();
                            let consumed = (body + len).min(self.buffer.len());
                            self.buffer.drain(..consumed);
                            self.skip = body + len - consumed;
                            return Some(Frame::Truncated(kept));
                        }
                        if self.buffer.len() < body + len {
                            return None;
                        }
                        let frame = self.buffer[body..body + len].to_vec();
                        self.buffer.drain(..body + len);
                        return Some(Frame::Message(frame));
                    }
                } else if self.buffer.len() < 11 {
                    return None; // the length may still be arriving
                }
                // Digits without a valid length: a newline-framed message after all.
            }
            match self.buffer.iter().position(|b| *b == b'\n') {
                Some(i) if i <= limit => {
                    let frame = self.buffer[..i].to_vec();
                    self.buffer.drain(..=i);
                    Some(Frame::Message(frame))
                }
                Some(_) => {
                    let kept = self.buffer[..limit].to_vec();
                    self.skip_line = true;
                    Some(Frame::Truncated(kept))
                }
                None if self.buffer.len() > limit => {
                    let kept = self.buffer[..limit].to_vec();
                    self.skip_line = true;
                    Some(Frame::Truncated(kept))
                }
                None => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-06-01T00:00:00Z: when the tests' messages are received.
    const RECEIVED: i64 = 1_717_200_000_000;

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let m = parse(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 \
             [exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\\"cation\"][x@1 a=\"b\\]\"] \u{feff}An application event",
            RECEIVED,
        );
        assert_eq!(m.error, None);
        assert_eq!(
            (m.facility, m.level, m.version),
            (Some(20), Some(5), Some(1))
        );
        assert_eq!(m.date, Some(1_065_910_455_003));
        assert_eq!(m.host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.app_name.as_deref(), Some("evntslog"));
        assert_eq!(m.process_id, None);
        assert_eq!(m.message_id.as_deref(), Some("ID47"));
        assert_eq!(
            m.structured_data["exampleSDID@32473"]["eventSource"],
            "Appli\"cation"
        );
        assert_eq!(m.structured_data["x@1"]["a"], "b]");
        assert_eq!(m.message, "An application event");
    }

    #[test]
    fn rfc5424_offsets_and_nil_values() {
        let m = parse(
            "<34>1 2003-10-11T22:14:15.5-07:00 - su 77 - - 'su root' failed",
            RECEIVED,
        );
        assert_eq!(m.error, None);
        assert_eq!(m.date, Some(1_065_910_455_500 + 7 * 3_600_000));
        assert_eq!((m.host, m.process_id.as_deref()), (None, Some("77")));
        assert_eq!(m.message, "'su root' failed");
        let bare = parse("<13>1 - - - - -", RECEIVED);
        assert_eq!((bare.error, bare.message.as_str()), (None, ""));
    }

    #[test]
    fn rfc3164_as_the_seed_shows_it() {
        let m = parse(
            "<4>Nov  9 01:09:49 vagrant-ubuntu-trusty-64 kernel: [16583.344413] Hardware name: X",
            1_478_653_789_000,
        );
        assert_eq!(m.error, None);
        assert_eq!((m.facility, m.level), (Some(0), Some(4)));
        assert_eq!(m.date, Some(1_478_653_789_000));
        assert_eq!(m.host.as_deref(), Some("vagrant-ubuntu-trusty-64"));
        assert_eq!(m.app_name.as_deref(), Some("kernel"));
        assert_eq!(
            m.message,
            "vagrant-ubuntu-trusty-64 kernel: [16583.344413] Hardware name: X"
        );
        let tagged = parse("<13>Feb 29 23:59:59 host sshd[4242]: hello", RECEIVED);
        assert_eq!(tagged.process_id.as_deref(), Some("4242"));
        assert_eq!(tagged.app_name.as_deref(), Some("sshd"));
    }

    #[test]
    fn garbage_is_kept_whole_with_the_reason() {
        for (line, says) in [
            ("hello world", "byte 0"),
            ("<999>1 - - - - -", "PRI"),
            ("<13>1 2003-13-11T22:14:15Z h a p m -", "month"),
            ("<13>Foo  1 00:00:00 h x", "month name"),
            ("<13>1 - h a p m [unterminated a=\"b", "STRUCTURED-DATA"),
        ] {
            let m = parse(line, RECEIVED);
            assert_eq!(m.message, line);
            let error = m.error.unwrap_or_default();
            assert!(error.contains(says), "{line}: {error}");
        }
    }

    /// Digits from the wire are untrusted: numbers too large for the date arithmetic keep
    /// the line whole with a `parse_error` (no overflow panic), and a fraction of any length
    /// is read as milliseconds.
    #[test]
    fn timestamps_that_do_not_fit_are_parse_errors_and_long_fractions_scale() {
        for (line, says) in [
            (
                "<13>1 999999999999999999-01-01T00:00:00Z h a p m - x",
                "TIMESTAMP",
            ),
            (
                "<13>1 2003-10-11T22:14:15+999999999999999999:00 h a p m - x",
                "zone",
            ),
            (
                "<13>1 2003-10-11T22:14:15+00:999999999999999999 h a p m - x",
                "zone",
            ),
        ] {
            let m = parse(line, RECEIVED);
            assert_eq!(m.message, line);
            let error = m.error.unwrap_or_default();
            assert!(error.contains(says), "{line}: {error}");
        }
        let base = 1_065_910_455_000;
        for (fraction, millis) in [
            ("5", 500),
            ("5000000000", 500),
            ("1234567890123456789", 123),
            ("9999999999999999999999999", 999),
            ("003", 3),
        ] {
            let line = format!("<13>1 2003-10-11T22:14:15.{fraction}Z h a p m - x");
            let m = parse(&line, RECEIVED);
            assert_eq!(m.error, None, "{line}");
            assert_eq!(m.date, Some(base + millis), "{line}");
        }
    }

    /// 2025-01-01T00:00:00Z in milliseconds.
    const NEW_YEAR_2025: i64 = 1_735_689_600_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn rfc3164_dates_take_the_year_closest_to_the_receive_time() {
        for (line, received, date) in [
            // Sent just before midnight, received just after: last year.
            (
                "<13>Dec 31 23:59:59 h a: x",
                NEW_YEAR_2025 + 10_000,
                NEW_YEAR_2025 - 1_000,
            ),
            // The sender's clock is a little ahead of ours: next year.
            (
                "<13>Jan  1 00:00:30 h a: x",
                NEW_YEAR_2025 - 60_000,
                NEW_YEAR_2025 + 30_000,
            ),
            // More than half a year ahead is last year's December.
            (
                "<13>Dec 31 00:00:00 h a: x",
                NEW_YEAR_2025 + 166 * DAY,
                NEW_YEAR_2025 - DAY,
            ),
            // An ordinary day.
            (
                "<13>Jan  2 00:00:00 h a: x",
                NEW_YEAR_2025 + DAY / 2,
                NEW_YEAR_2025 + DAY,
            ),
        ] {
            let m = parse(line, received);
            assert_eq!(m.error, None, "{line}");
            assert_eq!(m.date, Some(date), "{line} received at {received}");
        }
    }

    #[test]
    fn the_year_of_a_time_is_the_civil_year() {
        let new_year_2025 = 1_735_689_600_000;
        assert_eq!(year_of(new_year_2025 - 1), 2024);
        assert_eq!(year_of(new_year_2025), 2025);
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(-1), 1969);
        // 2024-02-29T12:00:00Z and 2100-03-01T00:00:00Z (1900 and 2100 are not leap years).
        assert_eq!(year_of(1_709_208_000_000), 2024);
        assert_eq!(year_of(4_107_542_400_000), 2100);
    }

    #[test]
    fn framing_detects_octet_counting_and_newlines_per_frame() {
        let mut f = Framer::default();
        f.push(b"11 <13>1 - - -");
        assert_eq!(
            f.next_frame(100),
            Some(Frame::Message(b"<13>1 - - -".to_vec()))
        );
        f.push(b"<13>plain line\r\n\n5 ab");
        assert_eq!(
            f.next_frame(100),
            Some(Frame::Message(b"<13>plain line\r".to_vec()))
        );
        assert_eq!(f.next_frame(100), None);
        assert_eq!(f.pending(), 4);
        f.push(b"cde");
        assert_eq!(f.next_frame(100), Some(Frame::Message(b"abcde".to_vec())));
        assert_eq!(f.next_frame(100), None);
        // Trailing blank lines are not a partial frame (a clean close reports nothing lost).
        f.push(b"\r\n\n");
        assert_eq!(f.next_frame(100), None);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn oversized_frames_are_cut_and_the_stream_stays_in_step() {
        let mut f = Framer::default();
        f.push(b"12 0123456789ABnext line\n");
        assert_eq!(f.next_frame(4), Some(Frame::Truncated(b"0123".to_vec())));
        assert_eq!(
            f.next_frame(100),
            Some(Frame::Message(b"next line".to_vec()))
        );
        f.push(b"a very long line without end");
        assert_eq!(f.next_frame(6), Some(Frame::Truncated(b"a very".to_vec())));
        f.push(b" still going\nshort\n");
        assert_eq!(f.next_frame(6), Some(Frame::Message(b"short".to_vec())));
    }
}
