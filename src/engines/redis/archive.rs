//! The key archive of a tenant on a shared Redis (`lifeboat-redis-keys-v1`): its own keys only, never
//! a whole-server RDB (which would hold other tenants' keys). docs/redis.md documents the format; all
//! integers are big-endian:
//!
//! ```text
//! "LBRK" 0x01                                   magic and version
//! 'K' u32 len, key    u8 type  i64 pttl  u32 len, payload    one per key; the key without the
//!                                                            tenant's prefix, pttl -1 without a TTL,
//!                                                            payload is DUMP's (restores with RESTORE)
//! 'E' u64 keys                                  the end, with the number of keys
//! ```
//!
//! A stream that stops before its end record is truncated, and says so. Each payload carries Redis's
//! own RDB version and CRC64, which RESTORE checks; the archive as a whole is checked by the SHA-256
//! the backup records. The statistics ([`TableStats`], one per type as `db0`/`<type>`) count keys
//! and, with checksums, sum a hash of each key's name and type, order-independent, so a restore
//! elsewhere (under another prefix) is compared with what was backed up.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use crate::domain::manifest::TableStats;

/// The format's name, as a manifest records it.
pub const FORMAT: &str = "lifeboat-redis-keys-v1";
const MAGIC: &[u8; 5] = b"LBRK\x01";
/// The largest key or payload a record may declare (Redis's own limit on a value is 512 MiB).
const MAX_LEN: u32 = 512 * 1024 * 1024;

/// A Redis data type, as `TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyType {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::String,
        KeyType::List,
        KeyType::Set,
        KeyType::ZSet,
        KeyType::Hash,
        KeyType::Stream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::ZSet => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
        }
    }

    /// The type of a `DUMP` serialization, from its first byte (the RDB object type, every encoding
    /// Redis 7 writes: plain, ziplist, listpack, intset, quicklist, stream listpacks); `None` for a
    /// module type or one this build does not know.
    pub fn from_rdb_type(t: u8) -> Option<Self> {
        match t {
            0 => Some(KeyType::String),
            1 | 10 | 14 | 18 => Some(KeyType::List),
            2 | 11 | 20 => Some(KeyType::Set),
            3 | 5 | 12 | 17 => Some(KeyType::ZSet),
            4 | 9 | 13 | 16 => Some(KeyType::Hash),
            15 | 19 | 21 => Some(KeyType::Stream),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    fn code(self) -> u8 {
        Self::ALL.iter().position(|t| *t == self).unwrap_or(0) as u8 + 1
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// One key of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key without the tenant's prefix.
    pub key: Vec<u8>,
    pub key_type: KeyType,
    /// Milliseconds left to live when it was read; `None` without a TTL.
    pub pttl: Option<i64>,
    /// `DUMP`'s serialization.
    pub payload: Vec<u8>,
}

/// Counts and name checksums per type, as keys are seen.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Per database and type: keys, and the sum of their name hashes.
    counts: BTreeMap<(u32, KeyType), (i64, u128)>,
    /// Keys with a TTL.
    pub expiring: u64,
}

impl Tally {
    /// A key of database 0 (where tenants live).
    pub fn add(&mut self, key: &[u8], key_type: KeyType, expiring: bool) {
        self.add_in(0, key, key_type, expiring)
    }

    pub fn add_in(&mut self, db: u32, key: &[u8], key_type: KeyType, expiring: bool) {
        let digest = Sha256::new()
            .chain_update([key_type.code()])
            .chain_update(key)
            .finalize();
        let part = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
        let entry = self.counts.entry((db, key_type)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.wrapping_add(part);
        if expiring {
            self.expiring += 1;
        }
    }

    pub fn keys(&self) -> i64 {
        self.counts.values().map(|(n, _)| n).sum()
    }

    /// Keys of `key_type` per database.
    pub fn count_of(&self, key_type: KeyType) -> BTreeMap<u32, i64> {
        self.counts
            .iter()
            .filter(|((_, t), _)| *t == key_type)
            .map(|((db, _), (n, _))| (*db, *n))
            .collect()
    }

    /// One [`TableStats`] per database and type seen (`db<N>`, `<type>`), with checksums when asked.
    pub fn stats(&self, checksums: bool) -> Vec<TableStats> {
        self.counts
            .iter()
            .map(|((db, t), (n, sum))| TableStats {
                schema: format!("db{db}"),
                name: t.name().into(),
                rows: *n,
                checksum: checksums.then(|| format!("{sum:032x}")),
            })
            .collect()
    }
}

/// Bytes buffered between records and the sink (or source): a record is often a few dozen bytes.
const BUFFER: usize = 256 * 1024;

/// Writes archives, one record at a time.
pub struct Writer<W> {
    sink: BufWriter<W>,
    keys: u64,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub async fn new(sink: W) -> std::io::Result<Self> {
        let mut sink = BufWriter::with_capacity(BUFFER, sink);
        sink.write_all(MAGIC).await?;
        Ok(Self { sink, keys: 0 })
    }

    pub async fn record(&mut self, r: &Record) -> std::io::Result<()> {
        let mut head = Vec::with_capacity(32 + r.key.len());
        head.push(b'K');
        head.extend_from_slice(&(r.key.len() as u32).to_be_bytes());
        head.extend_from_slice(&r.key);
        head.push(r.key_type.code());
        head.extend_from_slice(&r.pttl.unwrap_or(-1).to_be_bytes());
        head.extend_from_slice(&(r.payload.len() as u32).to_be_bytes());
        self.sink.write_all(&head).await?;
        self.sink.write_all(&r.payload).await?;
        self.keys += 1;
        Ok(())
    }

    /// Writes the end record and shuts the sink down; the number of keys.
    pub async fn finish(mut self) -> std::io::Result<u64> {
        self.sink.write_all(b"E").await?;
        self.sink.write_all(&self.keys.to_be_bytes()).await?;
        self.sink.shutdown().await?;
        Ok(self.keys)
    }
}

/// Why an archive could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("not a Redis key archive (it does not start with the {FORMAT} header)")]
    NotAnArchive,
    #[error("the archive is truncated: it ends after {0} key(s) without its end record")]
    Truncated(u64),
    #[error("the archive is damaged after {keys} key(s): {detail}")]
    Damaged { keys: u64, detail: String },
    #[error("the archive says it holds {said} key(s), but {read} were read")]
    CountMismatch { said: u64, read: u64 },
    #[error("reading the archive: {0}")]
    Io(String),
}

/// Reads archives, one record at a time.
pub struct Reader<R> {
    source: BufReader<R>,
    keys: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub async fn new(source: R) -> Result<Self, ArchiveError> {
        let mut source = BufReader::with_capacity(BUFFER, source);
        let mut magic = [0u8; 5];
        match source.read_exact(&mut magic).await {
            Ok(_) if &magic == MAGIC => Ok(Self {
                source,
                keys: 0,
                done: false,
            }),
            Ok(_) => Err(ArchiveError::NotAnArchive),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(ArchiveError::NotAnArchive)
            }
            Err(e) => Err(ArchiveError::Io(e.to_string())),
        }
    }

    fn short(&self, e: std::io::Error) -> ArchiveError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ArchiveError::Truncated(self.keys)
        } else {
            ArchiveError::Io(e.to_string())
        }
    }

    fn damaged(&self, detail: impl Into<String>) -> ArchiveError {
        ArchiveError::Damaged {
            keys: self.keys,
            detail: detail.into(),
        }
    }

    async fn bytes(&mut self, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let len = self.source.read_u32().await.map_err(|e| self.short(e))?;
        if len > MAX_LEN {
            return Err(self.damaged(format!("a {what} of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.source
            .read_exact(&mut buf)
            .await
            .map_err(|e| self.short(e))?;
        Ok(buf)
    }

    /// The next record, or `None` after the end record (whose count must match).
    pub async fn next(&mut self) -> Result<Option<Record>, ArchiveError> {
        if self.done {
            return Ok(None);
        }
        let tag = self.source.read_u8().await.map_err(|e| self.short(e))?;
        match tag {
            b'K' => {
                let key = self.bytes("key").await?;
                let code = self.source.read_u8().await.map_err(|e| self.short(e))?;
                let key_type = KeyType::from_code(code)
                    .ok_or_else(|| self.damaged(format!("unknown type code {code}")))?;
                let pttl = self.source.read_i64().await.map_err(|e| self.short(e))?;
                let payload = self.bytes("payload").await?;
                self.keys += 1;
                Ok(Some(Record {
                    key,
                    key_type,
                    pttl: (pttl >= 0).then_some(pttl),
                    payload,
                }))
            }
            b'E' => {
                let said = self.source.read_u64().await.map_err(|e| self.short(e))?;
                self.done = true;
                if said != self.keys {
                    return Err(ArchiveError::CountMismatch {
                        said,
                        read: self.keys,
                    });
                }
                let mut rest = [0u8; 1];
                match self.source.read(&mut rest).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Err(self.damaged("bytes after the end record")),
                    Err(e) => Err(ArchiveError::Io(e.to_string())),
                }
            }
            other => Err(self.damaged(format!("unknown record tag {other:#04x}"))),
        }
    }
}

/// Reads a whole archive: its statistics and how many keys it holds (what `verify` checks).
pub async fn tally(
    source: impl AsyncRead + Unpin,
    checksums: bool,
) -> Result<Vec<TableStats>, ArchiveError> {
    let mut reader = Reader::new(source).await?;
    let mut tally = Tally::default();
    while let Some(r) = reader.next().await? {
        tally.add(&r.key, r.key_type, r.pttl.is_some());
    }
    Ok(tally.stats(checksums))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, t: KeyType, pttl: Option<i64>) -> Record {
        Record {
            key: key.as_bytes().to_vec(),
            key_type: t,
            pttl,
            payload: vec![0, 1, 2, 3],
        }
    }

    async fn archive(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out).await.unwrap();
        for r in records {
            w.record(r).await.unwrap();
        }
        w.finish().await.unwrap();
        out
    }

    #[tokio::test]
    async fn records_round_trip_and_tally_by_type() {
        let records = [
            record("a", KeyType::String, None),
            record("b", KeyType::Hash, Some(3_600_000)),
            record("c", KeyType::String, Some(5)),
        ];
        let bytes = archive(&records).await;
        let mut reader = Reader::new(&bytes[..]).await.unwrap();
        for r in &records {
            assert_eq!(reader.next().await.unwrap().as_ref(), Some(r));
        }
        assert_eq!(reader.next().await.unwrap(), None);
        let stats = tally(&bytes[..], true).await.unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!((stats[0].name.as_str(), stats[0].rows), ("string", 2));
        assert_eq!((stats[1].name.as_str(), stats[1].rows), ("hash", 1));
        assert!(
            stats
                .iter()
                .all(|s| s.checksum.is_some() && s.schema == "db0")
        );
    }

    #[tokio::test]
    async fn checksums_ignore_order_but_not_names() {
        let a = [
            record("x", KeyType::Set, None),
            record("y", KeyType::Set, None),
        ];
        let b = [
            record("y", KeyType::Set, None),
            record("x", KeyType::Set, None),
        ];
        let c = [
            record("x", KeyType::Set, None),
            record("z", KeyType::Set, None),
        ];
        let sum = |r: &[Record]| {
            let mut t = Tally::default();
            for r in r {
                t.add(&r.key, r.key_type, false);
            }
            t.stats(true)[0].checksum.clone()
        };
        assert_eq!(sum(&a), sum(&b));
        assert_ne!(sum(&a), sum(&c));
    }

    #[tokio::test]
    async fn truncated_and_damaged_archives_say_so() {
        let bytes = archive(&[
            record("a", KeyType::String, None),
            record("b", KeyType::List, None),
        ])
        .await;
        let cut = &bytes[..bytes.len() - 12];
        assert_eq!(
            tally(cut, false).await.unwrap_err(),
            ArchiveError::Truncated(1)
        );
        let no_end = &bytes[..bytes.len() - 9];
        assert_eq!(
            tally(no_end, false).await.unwrap_err(),
            ArchiveError::Truncated(2)
        );
        let mut flipped = bytes.clone();
        flipped[5] = b'X';
        assert!(matches!(
            tally(&flipped[..], false).await.unwrap_err(),
            ArchiveError::Damaged { keys: 0, .. }
        ));
        assert_eq!(
            tally(&b"PGDMP"[..], false).await.unwrap_err(),
            ArchiveError::NotAnArchive
        );
    }
}
