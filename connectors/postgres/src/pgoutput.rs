//! A decoder of `pgoutput`'s logical replication messages (protocol version 1, the one
//! PostgreSQL 10+ speaks), as they arrive in the replication stream's XLogData payloads.
//!
//! Decoded here rather than by the replication client, so that what Debezium's output
//! needs is kept: the unchanged-TOAST marker of a column (`'u'`), the replica identity and
//! key flags of a relation, and the commit's *end* LSN (the position to resume after: a
//! transaction whose commit starts below the confirmed position is skipped by the server,
//! so the end LSN, not the commit LSN, is what is stored and confirmed). Every error names
//! the message and the byte offset at fault.

use std::fmt;

/// A position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// PostgreSQL's notation: `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN (expected X/Y in hex)"))?;
        let part = |p: &str| {
            u64::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not an LSN (bad hex {p:?})"))
        };
        Ok(Lsn((part(hi)? << 32) | part(lo)?))
    }
}

/// How a relation identifies its old rows in updates and deletes (`REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// The primary key (DEFAULT).
    Default,
    /// None: updates and deletes carry no old row.
    Nothing,
    /// The whole old row.
    Full,
    /// A unique index.
    Index,
}

/// A column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity (the key).
    pub key: bool,
    pub type_oid: u32,
    /// The type modifier (`-1` when none): a NUMERIC's precision and scale, a
    /// VARCHAR's length, a TIMESTAMP's precision.
    pub type_modifier: i32,
}

/// A relation (table) as the server describes it before its first change in a session
/// and after every change of its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

/// One column's value in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change: the server does not send it.
    UnchangedToast,
    /// The value in PostgreSQL's text output format.
    Text(Vec<u8>),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        /// Where the transaction's commit record starts.
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        /// Just past the commit record: where streaming resumes after this transaction.
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        /// The old key (`K`, identity DEFAULT or INDEX and the key changed) or the whole
        /// old row (`O`, identity FULL); none when neither was sent.
        old: Option<Vec<Datum>>,
        old_is_key_only: bool,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
        old_is_key_only: bool,
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// `pg_logical_emit_message`.
    Logical {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput {message} message: {problem} at byte {offset}")]
pub struct DecodeError {
    /// Which message (its tag as a name).
    pub message: &'static str,
    pub problem: String,
    pub offset: usize,
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn fail(&self, problem: impl Into<String>) -> DecodeError {
        DecodeError {
            message: self.message,
            problem: problem.into(),
            offset: self.at,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                self.fail(format!(
                    "{n} bytes needed, {} left",
                    self.bytes.len().saturating_sub(self.at)
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0_u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0_u8; 8];
        a.copy_from_slice(b);
        Ok(Lsn(u64::from_be_bytes(a)))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.fail("string without its terminating NUL"))?;
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.fail(format!("string is not UTF-8: {e}")))?
            .to_owned();
        self.at += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| self.fail(format!("column count {n}")))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let datum = match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.i32()?;
                    let len = usize::try_from(len)
                        .map_err(|_| self.fail(format!("value length {len}")))?;
                    Datum::Text(self.take(len)?.to_vec())
                }
                b'b' => return Err(self.fail("a binary value: the binary option is not asked for")),
                other => return Err(self.fail(format!("column kind {:?}", char::from(other)))),
            };
            out.push(datum);
        }
        Ok(out)
    }

    fn done(&self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.fail(format!("{} bytes left over", self.bytes.len() - self.at)))
        }
    }
}

/// Decodes one pgoutput message (an XLogData payload).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some(&tag) = bytes.first() else {
        return Err(DecodeError {
            message: "empty",
            problem: "no tag".into(),
            offset: 0,
        });
    };
    let name = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        _ => {
            return Err(DecodeError {
                message: "unknown",
                problem: format!(
                    "tag {:?} (a streamed or two-phase transaction? those are not asked for)",
                    char::from(tag)
                ),
                offset: 0,
            })
        }
    };
    let mut r = Reader {
        bytes,
        at: 1,
        message: name,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.lsn()?,
                end_lsn: r.lsn()?,
                commit_time: r.i64()?,
            }
        }
        b'O' => Message::Origin {
            lsn: r.lsn()?,
            name: r.string()?,
        },
        b'R' => {
            let oid = r.u32()?;
            let schema = r.string()?;
            let name = r.string()?;
            let identity = match r.u8()? {
                b'd' => ReplicaIdentity::Default,
                b'n' => ReplicaIdentity::Nothing,
                b'f' => ReplicaIdentity::Full,
                b'i' => ReplicaIdentity::Index,
                other => return Err(r.fail(format!("replica identity {:?}", char::from(other)))),
            };
            let n = r.i16()?;
            let n = usize::try_from(n).map_err(|_| r.fail(format!("column count {n}")))?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(Column {
                    key: flags & 1 == 1,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation {
                oid,
                // pg_catalog's relations come with an empty namespace.
                schema: if schema.is_empty() {
                    "pg_catalog".into()
                } else {
                    schema
                },
                name,
                identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: r.u32()?,
            schema: r.string()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return Err(r.fail(format!("tuple kind {:?}", char::from(other)))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, old_is_key_only) = match r.u8()? {
                b'K' => (Some(r.tuple()?), true),
                b'O' => (Some(r.tuple()?), false),
                b'N' => {
                    let new = r.tuple()?;
                    r.done()?;
                    return Ok(Message::Update {
                        relation,
                        old: None,
                        old_is_key_only: false,
                        new,
                    });
                }
                other => return Err(r.fail(format!("tuple kind {:?}", char::from(other)))),
            };
            match r.u8()? {
                b'N' => Message::Update {
                    relation,
                    old,
                    old_is_key_only,
                    new: r.tuple()?,
                },
                other => return Err(r.fail(format!("tuple kind {:?}", char::from(other)))),
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let old_is_key_only = match r.u8()? {
                b'K' => true,
                b'O' => false,
                other => return Err(r.fail(format!("tuple kind {:?}", char::from(other)))),
            };
            Message::Delete {
                relation,
                old: r.tuple()?,
                old_is_key_only,
            }
        }
        b'T' => {
            let n = r.i32()?;
            let n = usize::try_from(n).map_err(|_| r.fail(format!("relation count {n}")))?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        _ => {
            let flags = r.u8()?;
            let lsn = r.lsn()?;
            let prefix = r.string()?;
            let len = r.i32()?;
            let len = usize::try_from(len).map_err(|_| r.fail(format!("content length {len}")))?;
            Message::Logical {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.take(len)?.to_vec(),
            }
        }
    };
    r.done()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds messages byte by byte, as the server writes them.
    #[derive(Default)]
    struct Out(Vec<u8>);

    impl Out {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn s(mut self, v: &str) -> Self {
            self.0.extend_from_slice(v.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, v: &str) -> Self {
            let out = self.u8(b't').i32(i32::try_from(v.len()).unwrap_or(0));
            let mut bytes = out.0;
            bytes.extend_from_slice(v.as_bytes());
            Out(bytes)
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgresql_writes_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap_or_default();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16-B3".parse::<Lsn>().is_err());
    }

    #[test]
    fn a_transaction_decodes_with_its_end_lsn_and_toast_marker() -> Result<(), DecodeError> {
        let begin = Out::default().u8(b'B').i64(0x100).i64(7).i32(42).0;
        assert_eq!(
            decode(&begin)?,
            Message::Begin {
                final_lsn: Lsn(0x100),
                commit_time: 7,
                xid: 42
            }
        );
        let relation = Out::default()
            .u8(b'R')
            .i32(16384)
            .s("public")
            .s("orders")
            .u8(b'd')
            .i16(2)
            .u8(1)
            .s("id")
            .i32(23)
            .i32(-1)
            .u8(0)
            .s("note")
            .i32(25)
            .i32(-1)
            .0;
        let Message::Relation(rel) = decode(&relation)? else {
            panic!("not a relation");
        };
        assert_eq!(
            (rel.schema.as_str(), rel.name.as_str()),
            ("public", "orders")
        );
        assert_eq!(rel.identity, ReplicaIdentity::Default);
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(rel.columns[1].type_oid, 25);

        let update = Out::default()
            .u8(b'U')
            .i32(16384)
            .u8(b'N')
            .i16(2)
            .text("7")
            .u8(b'u')
            .0;
        assert_eq!(
            decode(&update)?,
            Message::Update {
                relation: 16384,
                old: None,
                old_is_key_only: false,
                new: vec![Datum::Text(b"7".to_vec()), Datum::UnchangedToast],
            }
        );
        let delete = Out::default()
            .u8(b'D')
            .i32(16384)
            .u8(b'K')
            .i16(2)
            .text("7")
            .u8(b'n')
            .0;
        assert_eq!(
            decode(&delete)?,
            Message::Delete {
                relation: 16384,
                old: vec![Datum::Text(b"7".to_vec()), Datum::Null],
                old_is_key_only: true,
            }
        );
        let commit = Out::default().u8(b'C').u8(0).i64(0x100).i64(0x130).i64(7).0;
        assert_eq!(
            decode(&commit)?,
            Message::Commit {
                commit_lsn: Lsn(0x100),
                end_lsn: Lsn(0x130),
                commit_time: 7
            }
        );
        Ok(())
    }

    #[test]
    fn truncate_and_logical_messages_keep_their_flags() -> Result<(), DecodeError> {
        let truncate = Out::default().u8(b'T').i32(2).u8(3).i32(1).i32(2).0;
        assert_eq!(
            decode(&truncate)?,
            Message::Truncate {
                relations: vec![1, 2],
                cascade: true,
                restart_identity: true
            }
        );
        let mut logical = Out::default().u8(b'M').u8(1).i64(9).s("sluice").i32(2).0;
        logical.extend_from_slice(b"hi");
        assert_eq!(
            decode(&logical)?,
            Message::Logical {
                transactional: true,
                lsn: Lsn(9),
                prefix: "sluice".into(),
                content: b"hi".to_vec()
            }
        );
        Ok(())
    }

    #[test]
    fn a_damaged_message_names_the_message_and_the_byte() {
        // An Insert cut in the middle of its only value.
        let cut = Out::default()
            .u8(b'I')
            .i32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(10)
            .0;
        let err = decode(&cut).err();
        assert_eq!(
            err.as_ref().map(|e| (e.message, e.offset)),
            Some(("Insert", 13))
        );
        assert!(err.is_some_and(|e| e.to_string().contains("10 bytes needed, 0 left")));
        let unknown = decode(b"S\x00")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(unknown.contains("'S'"), "{unknown}");
        let trailing = Out::default().u8(b'B').i64(1).i64(2).i32(3).u8(9).0;
        assert!(decode(&trailing).is_err_and(|e| e.problem.contains("left over")));
    }
}
