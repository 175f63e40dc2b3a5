//! RELP, the Reliable Event Logging Protocol of rsyslog (`omrelp` sends, `imrelp` receives):
//! frame parsing and the server's replies.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The client numbers its frames and
//! keeps every `syslog` frame until the server answers `TXNR rsp 6 200 OK`; after a broken
//! session it reconnects and sends the unanswered ones again, first. That is what lets the
//! source acknowledge a message only once the Kafka transaction holding it has committed.

use std::collections::VecDeque;

/// The most digits of TXNR and DATALEN (the protocol caps both at 999,999,999).
const MAX_DIGITS: usize = 9;
/// The longest command name accepted (the protocol's are at most 32 characters).
const MAX_COMMAND: usize = 32;

/// One frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelpFrame {
    /// The client's transaction number, echoed in the reply.
    pub txnr: u32,
    /// `open`, `syslog`, `close`, or a command this server does not know.
    pub command: String,
    /// The data, cut at the reader's limit.
    pub data: Vec<u8>,
    /// The data was longer than the limit; the rest was skipped.
    pub truncated: bool,
}

/// Where the reader is inside the stream.
#[derive(Debug)]
enum State {
    /// Expecting a header.
    Header,
    /// Reading `remaining` data bytes of a frame whose header was read.
    Data { frame: RelpFrame, remaining: usize },
    /// Expecting the LF that ends a frame.
    Trailer(RelpFrame),
}

/// Splits a RELP byte stream into frames. Memory stays bounded by the limit: data past it
/// is skipped as it arrives, not buffered.
#[derive(Debug)]
pub struct RelpReader {
    buffer: Vec<u8>,
    state: State,
    /// Bytes of the session consumed so far, so errors can name the byte at fault.
    consumed: u64,
}

impl Default for RelpReader {
    fn default() -> Self {
        RelpReader {
            buffer: Vec::new(),
            state: State::Header,
            consumed: 0,
        }
    }
}

/// Parses a run of ASCII digits.
fn number(field: &[u8]) -> Option<usize> {
    if field.is_empty() || field.len() > MAX_DIGITS || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

impl RelpReader {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether the reader is between frames (nothing of a frame has been read).
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Header) && self.buffer.is_empty()
    }

    fn take(&mut self, n: usize) {
        self.buffer.drain(..n);
        self.consumed += n as u64;
    }

    fn error(&self, at: usize, what: &str) -> String {
        format!(
            "RELP byte {} of the session: {what}",
            self.consumed + at as u64
        )
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or an error naming the
    /// byte that broke the framing (the session cannot continue after it).
    pub fn next_frame(&mut self, limit: usize) -> Result<Option<RelpFrame>, String> {
        loop {
            match std::mem::replace(&mut self.state, State::Header) {
                State::Header => {
                    let Some((frame, datalen, ended)) = self.header(limit)? else {
                        return Ok(None);
                    };
                    if ended {
                        // `TXNR CMD 0 LF`: the header's LF was the trailer.
                        return Ok(Some(frame));
                    }
                    self.state = if datalen == 0 {
                        State::Trailer(frame)
                    } else {
                        State::Data {
                            frame,
                            remaining: datalen,
                        }
                    };
                }
                State::Data {
                    mut frame,
                    remaining,
                } => {
                    let n = remaining.min(self.buffer.len());
                    let room = limit.saturating_sub(frame.data.len()).min(n);
                    frame.data.extend_from_slice(&self.buffer[..room]);
                    frame.truncated |= room < n;
                    self.take(n);
                    if remaining > n {
                        self.state = State::Data {
                            frame,
                            remaining: remaining - n,
                        };
                        return Ok(None);
                    }
                    self.state = State::Trailer(frame);
                }
                State::Trailer(frame) => {
                    let Some(&byte) = self.buffer.first() else {
                        self.state = State::Trailer(frame);
                        return Ok(None);
                    };
                    if byte != b'\n' {
                        return Err(self.error(
                            0,
                            &format!(
                                "expected LF ending frame {}, found byte 0x{byte:02x}",
                                frame.txnr
                            ),
                        ));
                    }
                    self.take(1);
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// Reads `TXNR SP COMMAND SP DATALEN` and the separator after it: the frame so far,
    /// its data length, and whether the separator was the trailing LF of an empty frame.
    fn header(&mut self, limit: usize) -> Result<Option<(RelpFrame, usize, bool)>, String> {
        // The longest header: 9 digits, 32 letters, 9 digits, 3 separators.
        let window = &self.buffer[..self.buffer.len().min(MAX_DIGITS * 2 + MAX_COMMAND + 3)];
        let mut ends = [0_usize; 3];
        let mut at = 0;
        for (i, end) in ends.iter_mut().enumerate() {
            let stop: &[u8] = if i == 2 { b" \n" } else { b" " };
            match window[at..].iter().position(|b| stop.contains(b)) {
                Some(p) => {
                    *end = at + p;
                    at += p + 1;
                }
                None if window.len() == self.buffer.len() => return Ok(None),
                None => return Err(self.error(at, "header too long or missing a space")),
            }
        }
        let txnr = number(&window[..ends[0]])
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.error(0, "TXNR is not a number of at most 9 digits"))?;
        let command = &window[ends[0] + 1..ends[1]];
        if command.is_empty()
            || command.len() > MAX_COMMAND
            || !command.iter().all(u8::is_ascii_alphabetic)
        {
            return Err(self.error(ends[0] + 1, "COMMAND is not 1 to 32 letters"));
        }
        let command = String::from_utf8_lossy(command).into_owned();
        let datalen = number(&window[ends[1] + 1..ends[2]]).ok_or_else(|| {
            self.error(ends[1] + 1, "DATALEN is not a number of at most 9 digits")
        })?;
        let ended = window[ends[2]] == b'\n';
        if ended && datalen > 0 {
            return Err(self.error(
                ends[2],
                &format!("frame {txnr} announces {datalen} data bytes but ends"),
            ));
        }
        self.take(ends[2] + 1);
        let frame = RelpFrame {
            txnr,
            command,
            data: Vec::with_capacity(datalen.min(limit)),
            truncated: false,
        };
        Ok(Some((frame, datalen, ended)))
    }
}

/// The server's reply to frame `txnr`: `TXNR rsp DATALEN [SP DATA] LF`.
pub fn reply(txnr: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{txnr} rsp {}", data.len()).into_bytes();
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
    out
}

/// The data of the reply to `open`: status, then the offers this server accepts.
pub fn open_reply_data() -> Vec<u8> {
    format!(
        "200 OK\nrelp_version=0\nrelp_software=sluice,{},https://github.com/sluice-io/sluice\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// FNV-1a, 64 bits: a message fingerprint that stays the same across restarts and
/// releases (std's hasher makes no such promise), for recognising resent messages.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Fingerprints of the latest messages taken from one peer, oldest first, each with the
/// task's sequence number when it was polled. Carried in the source offset, so it commits
/// with the messages it describes and survives a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecentMessages {
    entries: VecDeque<(u64, u64)>,
}

impl RecentMessages {
    /// Remembers a message, forgetting the oldest past `window`.
    pub fn push(&mut self, fingerprint: u64, sequence: u64, window: usize) {
        self.entries.push_back((fingerprint, sequence));
        while self.entries.len() > window {
            self.entries.pop_front();
        }
    }

    /// The sequence number of the latest message with this fingerprint, if remembered.
    pub fn find(&self, fingerprint: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|(f, _)| *f == fingerprint)
            .map(|(_, s)| *s)
    }

    /// How many are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fingerprints as one hex string, 16 digits each (for the source offset).
    pub fn encode(&self) -> String {
        self.entries
            .iter()
            .map(|(f, _)| format!("{f:016x}"))
            .collect()
    }

    /// Reads [`encode`](Self::encode)'s text back; the messages count as committed
    /// (sequence 0), which they are when read from the offsets topic.
    pub fn decode(text: &str, window: usize) -> Result<Self, String> {
        if text.len() % 16 != 0 {
            return Err(format!(
                "recent-message fingerprints: length {} is not a multiple of 16",
                text.len()
            ));
        }
        let mut recent = RecentMessages::default();
        for (i, chunk) in text.as_bytes().chunks(16).enumerate() {
            let fingerprint = std::str::from_utf8(chunk)
                .ok()
                .and_then(|c| u64::from_str_radix(c, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "recent-message fingerprints: characters {}..{} are not hex",
                        i * 16,
                        i * 16 + 16
                    )
                })?;
            recent.push(fingerprint, 0, window);
        }
        Ok(recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(reader: &mut RelpReader, limit: usize) -> Vec<RelpFrame> {
        let mut out = Vec::new();
        loop {
            match reader.next_frame(limit) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn frames_split_anywhere_are_read_whole() {
        let offers = b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog";
        let mut stream = format!("1 open {} ", offers.len()).into_bytes();
        stream.extend_from_slice(offers);
        stream.extend_from_slice(b"\n2 syslog 11 <13>hello 1\n3 close 0\n");
        // Fed one byte at a time: every split point is exercised.
        let mut reader = RelpReader::default();
        let mut got = Vec::new();
        for b in stream.iter() {
            reader.push(&[*b]);
            got.extend(frames(&mut reader, 1024));
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!((got[0].txnr, got[0].command.as_str()), (1, "open"));
        assert!(got[0].data.ends_with(b"commands=syslog"));
        assert_eq!(got[1].data, b"<13>hello 1");
        assert_eq!((got[2].txnr, got[2].command.as_str()), (3, "close"));
        assert!(got[2].data.is_empty());
        assert!(reader.idle());
    }

    #[test]
    fn oversized_data_is_cut_and_the_stream_stays_in_step() {
        let mut reader = RelpReader::default();
        reader.push(b"7 syslog 10 0123456789\n8 syslog 2 ok\n");
        let got = frames(&mut reader, 4);
        assert_eq!(got[0].data, b"0123");
        assert!(got[0].truncated);
        assert_eq!((got[1].txnr, got[1].data.as_slice()), (8, b"ok".as_slice()));
        assert!(!got[1].truncated);
    }

    #[test]
    fn broken_framing_names_the_byte() {
        let mut reader = RelpReader::default();
        reader.push(b"1 syslog 2 ok\nx syslog 1 a\n");
        assert_eq!(
            reader.next_frame(100).ok().flatten().map(|f| f.txnr),
            Some(1)
        );
        let e = reader.next_frame(100).err().unwrap_or_default();
        assert!(e.contains("byte 14") && e.contains("TXNR"), "{e}");

        let mut reader = RelpReader::default();
        reader.push(b"1 syslog 2 okX");
        let e = reader.next_frame(100).err().unwrap_or_default();
        assert!(e.contains("byte 13") && e.contains("0x58"), "{e}");

        let mut reader = RelpReader::default();
        reader.push(b"1 syslog 5\n");
        let e = reader.next_frame(100).err().unwrap_or_default();
        assert!(e.contains("announces 5"), "{e}");
    }

    #[test]
    fn replies_have_the_protocols_shape() {
        assert_eq!(reply(5, b"200 OK"), b"5 rsp 6 200 OK\n");
        assert_eq!(reply(9, b""), b"9 rsp 0\n");
        let open = String::from_utf8(open_reply_data()).unwrap_or_default();
        assert!(open.starts_with("200 OK\nrelp_version=0\n") && open.ends_with("commands=syslog"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn recent_messages_round_trip_and_stay_within_the_window() {
        let mut recent = RecentMessages::default();
        for n in 1..=5_u64 {
            recent.push(fingerprint(&n.to_be_bytes()), n, 3);
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.find(fingerprint(&2_u64.to_be_bytes())), None);
        assert_eq!(recent.find(fingerprint(&4_u64.to_be_bytes())), Some(4));
        let text = recent.encode();
        assert_eq!(text.len(), 48);
        let back = RecentMessages::decode(&text, 3).unwrap_or_default();
        assert_eq!(back.find(fingerprint(&4_u64.to_be_bytes())), Some(0));
        assert_eq!(back.encode(), text);
        let e = RecentMessages::decode("0123456789abcdefXYZ0123456789abc", 3).err();
        assert!(e.is_some_and(|e| e.contains("16..32")));
        assert!(RecentMessages::decode("abc", 3).is_err());
    }
}
