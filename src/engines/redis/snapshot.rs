//! Whole-server backups of Redis: an RDB snapshot taken over the replication protocol, as
//! `redis-cli --rdb` takes it (`REPLCONF rdb-only 1`, then `SYNC`: the server forks, writes a
//! point-in-time RDB and sends it as one bulk reply), streamed as it arrives. The snapshot is read
//! with the `rdb` crate on the way (keys per database and type, the RDB version, the server's own
//! CRC64 trailer) and hashed with SHA-256, so the manifest describes the file itself.
//!
//! A snapshot restores key by key: each decoded value becomes a `DUMP`-format payload (Redis's
//! plain RDB encodings, RDB version [`PAYLOAD_RDB_VERSION`] and CRC64) that `RESTORE` loads, under a
//! prefix and in the database it came from, with the TTL it had left when the snapshot was taken.
//! Streams and module values are counted but not decoded by the `rdb` crate: a snapshot holding
//! them backs up and verifies, and its restore fails naming them (docs/redis.md).

use std::{cell::RefCell, collections::BTreeMap, io::Read, rc::Rc, time::Duration};

use rdb::{Filter, RdbDecoder, RdbValue};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::{
    RedisError,
    archive::{KeyType, Record, Tally},
    endpoint,
};
use crate::{domain::digest::hex, engines::ServerCredentials};

/// The format's name, as a manifest records it.
pub const FORMAT: &str = "redis-rdb";
/// How every RDB file starts.
pub const MAGIC: &[u8; 5] = b"REDIS";
/// The RDB version restored payloads declare: Redis 5's, which every Redis with ACLs (6.0+) loads.
const PAYLOAD_RDB_VERSION: u16 = 9;
/// How long the server may stay silent while it prepares the snapshot (it sends a newline every
/// second meanwhile) or while it sends it.
const SILENCE: Duration = Duration::from_secs(60);
/// Bytes read from the server at a time.
const CHUNK: usize = 256 * 1024;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// What a snapshot holds.
#[derive(Debug, Default)]
pub struct Contents {
    pub rdb_version: u32,
    /// The `redis-ver` the file records.
    pub redis_version: Option<String>,
    pub tally: Tally,
}

/// A snapshot taken: what it holds and the SHA-256 of its bytes.
#[derive(Debug)]
pub struct Taken {
    pub contents: Contents,
    pub sha256: String,
    pub bytes: u64,
}

/// A replication connection whose server has started sending a snapshot of `len` bytes.
pub struct Replication {
    stream: BufReader<TcpStream>,
    len: u64,
}

/// Why a server would not send a snapshot (its answer), for a caller that backs up key by key
/// instead.
#[derive(Debug)]
pub struct Refused(pub String);

fn lost(at: &str, detail: String) -> RedisError {
    RedisError::Lost {
        context: format!("the snapshot from {at}"),
        detail,
    }
}

/// One command in RESP.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply line (without CRLF), skipping the bare newlines a server sends while it prepares
/// a snapshot.
async fn line(stream: &mut BufReader<TcpStream>, at: &str) -> Result<String, RedisError> {
    loop {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(SILENCE, stream.read_until(b'\n', &mut buf))
            .await
            .map_err(|_| lost(at, format!("no answer within {}s", SILENCE.as_secs())))?
            .map_err(|e| lost(at, e.to_string()))?;
        if n == 0 {
            return Err(lost(at, "the server closed the connection".into()));
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            return Ok(text.to_string());
        }
    }
}

/// Asks the server at `creds` for a snapshot. `Ok(Err(Refused))` when it answers but will not send
/// one (a user without `SYNC`, a managed service that disables it); TLS connections are refused here
/// (a snapshot is read over plain TCP in this release).
pub async fn open(creds: &ServerCredentials) -> Result<Result<Replication, Refused>, RedisError> {
    if creds.sslmode != "disable" {
        return Ok(Err(Refused(format!(
            "snapshots are read over plain TCP in this release, and the connection uses TLS (sslmode {})",
            creds.sslmode
        ))));
    }
    let at = endpoint(creds);
    let tcp = tokio::time::timeout(
        super::TIMEOUT,
        TcpStream::connect((creds.host.as_str(), creds.port)),
    )
    .await
    .map_err(|_| RedisError::Unreachable {
        endpoint: at.clone(),
        detail: "connect timed out".into(),
    })?
    .map_err(|e| RedisError::Unreachable {
        endpoint: at.clone(),
        detail: e.to_string(),
    })?;
    let _ = tcp.set_nodelay(true);
    let mut stream = BufReader::with_capacity(CHUNK, tcp);
    let mut send = async |args: &[&[u8]]| {
        stream
            .get_mut()
            .write_all(&command(args))
            .await
            .map_err(|e| lost(&at, e.to_string()))?;
        line(&mut stream, &at).await
    };
    if !creds.password.is_empty() {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if !creds.username.is_empty() {
            args.push(creds.username.as_bytes());
        }
        args.push(creds.password.as_bytes());
        let answer = send(&args).await?;
        if answer.starts_with('-') {
            return Err(RedisError::AuthFailed {
                endpoint: at.clone(),
                user: creds.username.clone(),
                detail: answer.trim_start_matches('-').to_string(),
            });
        }
    }
    // Redis 7.0+: send the RDB only, no replication stream after it. An older server answers with an
    // error and streams writes after the RDB, which is never read.
    let answer = send(&[b"REPLCONF", b"rdb-only", b"1"]).await?;
    if answer.starts_with("-NOPERM") {
        return Ok(Err(Refused(answer.trim_start_matches('-').to_string())));
    }
    let answer = send(&[b"SYNC"]).await?;
    let Some(len) = answer.strip_prefix('$') else {
        return Ok(Err(Refused(answer.trim_start_matches('-').to_string())));
    };
    let len = len
        .parse::<u64>()
        .map_err(|_| lost(&at, format!("SYNC answered {answer:?}, not a length")))?;
    Ok(Ok(Replication { stream, len }))
}

impl Replication {
    /// Streams the snapshot into `sink` (shut down at the end) while reading it: what it holds and
    /// its SHA-256. A snapshot the `rdb` crate cannot read fails the backup, naming why.
    pub async fn stream(
        mut self,
        at: &str,
        mut sink: impl AsyncWrite + Unpin,
    ) -> Result<Taken, RedisError> {
        let (mut to_reader, from_stream) = tokio::io::duplex(CHUNK);
        let reader = tokio::task::spawn_blocking(move || {
            read(
                tokio_util::io::SyncIoBridge::new(from_stream),
                false,
                |_, _| Ok(()),
            )
        });
        let mut hasher = Sha256::new();
        let mut left = self.len;
        let mut buf = vec![0u8; CHUNK];
        let copied = async {
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = tokio::time::timeout(SILENCE, self.stream.read(&mut buf[..want]))
                    .await
                    .map_err(|_| {
                        lost(
                            at,
                            format!("the snapshot stalled for {}s", SILENCE.as_secs()),
                        )
                    })?
                    .map_err(|e| lost(at, e.to_string()))?;
                if n == 0 {
                    return Err(lost(
                        at,
                        format!(
                            "the server closed the connection after {} of the snapshot's {} bytes",
                            self.len - left,
                            self.len
                        ),
                    ));
                }
                hasher.update(&buf[..n]);
                let io = |e: std::io::Error| RedisError::Command {
                    context: "writing the snapshot".into(),
                    detail: e.to_string(),
                };
                sink.write_all(&buf[..n]).await.map_err(io)?;
                // The reader ends early only on an error, which is reported below.
                let _ = to_reader.write_all(&buf[..n]).await;
                left -= n as u64;
            }
            sink.shutdown().await.map_err(|e| RedisError::Command {
                context: "writing the snapshot".into(),
                detail: e.to_string(),
            })?;
            Ok::<_, RedisError>(())
        }
        .await;
        drop(to_reader);
        let contents = reader.await.map_err(|e| RedisError::Command {
            context: "reading the snapshot".into(),
            detail: e.to_string(),
        })?;
        copied?;
        let contents = contents.map_err(RedisError::Snapshot)?;
        Ok(Taken {
            contents,
            sha256: hex(&hasher.finalize()),
            bytes: self.len,
        })
    }
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is truncated: it ends after {0} key(s), before its end")]
    Truncated(u64),
    #[error("the snapshot is damaged after {keys} key(s): {detail}")]
    Damaged { keys: u64, detail: String },
    #[error(
        "the snapshot's CRC64 is {stored:016x}, but its bytes sum to {computed:016x}: it is damaged"
    )]
    Checksum { stored: u64, computed: u64 },
    #[error(
        "key {key} in database {db} holds a module value, which Lifeboat cannot read (only Redis's own types)"
    )]
    Module { db: u32, key: String },
    #[error(
        "the snapshot holds {streams} stream key(s) (in database(s) {databases:?}); streams are counted but not decoded by the rdb crate, so this release cannot restore them from an RDB snapshot"
    )]
    Streams { streams: u64, databases: Vec<u32> },
    #[error("{0}")]
    Stopped(String),
}

/// A decoded key, ready for `RESTORE`: its database and record (TTL relative to the snapshot's time).
pub type Restorable = (u32, Record);

/// Sees every key before the decoder reads its value: the database, the type byte and the name.
/// Streams and modules are not decoded, so they are counted here.
#[derive(Clone, Default)]
struct Spy(Rc<RefCell<Seen>>);

#[derive(Default)]
struct Seen {
    db: u32,
    rdb_type: u8,
    /// Keys the decoder walks without yielding them: (database, type byte, name).
    undecoded: Vec<(u32, u8, Vec<u8>)>,
}

impl Filter for Spy {
    fn matches_db(&self, db: u32) -> bool {
        self.0.borrow_mut().db = db;
        true
    }
    fn matches_type(&self, rdb_type: u8) -> bool {
        self.0.borrow_mut().rdb_type = rdb_type;
        true
    }
    fn matches_key(&self, key: &[u8]) -> bool {
        let mut seen = self.0.borrow_mut();
        if matches!(
            rdb::Type::from_encoding(seen.rdb_type),
            Ok(rdb::Type::Stream | rdb::Type::Module)
        ) {
            let (db, t) = (seen.db, seen.rdb_type);
            seen.undecoded.push((db, t, key.to_vec()));
        }
        true
    }
}

/// Computes the CRC64 of everything read except the last 8 bytes (the trailer, where RDB 5+ keeps
/// its own CRC64), and counts bytes.
struct Summing<R> {
    inner: R,
    sums: Rc<RefCell<Sums>>,
}

struct Sums {
    digest: crc::Digest<'static, u64>,
    tail: Vec<u8>,
}

impl<R: Read> Read for Summing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut sums = self.sums.borrow_mut();
        sums.tail.extend_from_slice(&buf[..n]);
        if sums.tail.len() > 8 {
            let cut = sums.tail.len() - 8;
            let Sums { digest, tail } = &mut *sums;
            digest.update(&tail[..cut]);
            tail.drain(..cut);
        }
        Ok(n)
    }
}

/// Reads a whole snapshot from `source`: what it holds, each decoded key handed to `each` (database,
/// record) when restoring. Truncation, damage, a wrong CRC64 and module values fail, naming which.
/// Streams are counted; `each` is not given them (a restore checks [`Contents`] for them first).
pub fn read(
    source: impl Read,
    restoring: bool,
    mut each: impl FnMut(u32, Record) -> Result<(), String>,
) -> Result<Contents, SnapshotError> {
    let spy = Spy::default();
    let sums = Rc::new(RefCell::new(Sums {
        digest: CRC64.digest(),
        tail: Vec::new(),
    }));
    let summing = Summing {
        inner: source,
        sums: sums.clone(),
    };
    let mut contents = Contents::default();
    let damaged = |keys: u64, e: rdb::RdbError| match e {
        rdb::RdbError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            SnapshotError::Truncated(keys)
        }
        e => SnapshotError::Damaged {
            keys,
            detail: e.to_string(),
        },
    };
    let mut decoder = RdbDecoder::new(
        std::io::BufReader::with_capacity(CHUNK, summing),
        spy.clone(),
    )
    .map_err(|e| damaged(0, e))?;
    contents.rdb_version = decoder.version();
    let mut keys = 0u64;
    let mut ctime_ms: Option<i64> = None;
    let mut stored_crc = None;
    for item in decoder.by_ref() {
        let item = item.map_err(|e| damaged(keys, e))?;
        keys += count_undecoded(&spy, &mut contents)?;
        let db = spy.0.borrow().db;
        let (key, key_type, expiry, payload) = match item {
            RdbValue::AuxField { key, value } => {
                aux_field(&mut contents, &mut ctime_ms, &key, &value);
                continue;
            }
            RdbValue::Checksum(c) => {
                stored_crc = <[u8; 8]>::try_from(c.as_slice())
                    .ok()
                    .map(u64::from_le_bytes);
                continue;
            }
            value => match key_payload(value, restoring) {
                Some(decoded) => decoded,
                None => continue,
            },
        };
        // A key whose time was up when the snapshot was taken is gone, as Redis drops it on load.
        let Some(pttl) = time_left(expiry, ctime_ms) else {
            continue;
        };
        keys += 1;
        contents.tally.add_in(db, &key, key_type, pttl.is_some());
        each(
            db,
            Record {
                key,
                key_type,
                pttl,
                payload: payload.finish(),
            },
        )
        .map_err(SnapshotError::Stopped)?;
    }
    drop(decoder);
    check_crc(sums, stored_crc)?;
    Ok(contents)
}

/// Keeps what Lifeboat reads of an auxiliary field: the Redis version, and the snapshot's time
/// (`ctime`, seconds) as milliseconds.
fn aux_field(contents: &mut Contents, ctime_ms: &mut Option<i64>, key: &[u8], value: &[u8]) {
    match key {
        b"redis-ver" => contents.redis_version = Some(String::from_utf8_lossy(value).into_owned()),
        b"ctime" => {
            *ctime_ms = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .map(|s| s * 1000)
        }
        _ => {}
    }
}

/// A key decoded from the snapshot: its name, type, expiry (Unix milliseconds) and `DUMP` payload.
type Decoded = (Vec<u8>, KeyType, Option<u64>, Payload);

/// The key of a value the decoder yields with its `DUMP` payload (only its type byte unless
/// `restoring`: a backup only counts); `None` for what is not a key.
fn key_payload(value: RdbValue, restoring: bool) -> Option<Decoded> {
    let decoded = key_type(&value)?;
    if !restoring {
        let (key, expiry) = match value {
            RdbValue::String { key, expiry, .. }
            | RdbValue::List { key, expiry, .. }
            | RdbValue::Set { key, expiry, .. }
            | RdbValue::SortedSet { key, expiry, .. }
            | RdbValue::Hash { key, expiry, .. } => (key, expiry),
            _ => return None,
        };
        return Some((key, decoded.0, expiry, Payload::new(decoded.1)));
    }
    encode(value)
}

/// The type of a key the decoder yields and its RDB type byte in a payload.
fn key_type(value: &RdbValue) -> Option<(KeyType, u8)> {
    match value {
        RdbValue::String { .. } => Some((KeyType::String, 0)),
        RdbValue::List { .. } => Some((KeyType::List, 1)),
        RdbValue::Set { .. } => Some((KeyType::Set, 2)),
        RdbValue::SortedSet { .. } => Some((KeyType::ZSet, 5)),
        RdbValue::Hash { .. } => Some((KeyType::Hash, 4)),
        _ => None,
    }
}

/// A decoded value as its `DUMP` payload.
fn encode(value: RdbValue) -> Option<Decoded> {
    match value {
        RdbValue::AuxField { .. }
        | RdbValue::Checksum(_)
        | RdbValue::SelectDb(_)
        | RdbValue::ResizeDb { .. } => None,
        RdbValue::String { key, value, expiry } => {
            let mut p = Payload::new(0);
            p.string(&value);
            Some((key, KeyType::String, expiry, p))
        }
        RdbValue::List {
            key,
            values,
            expiry,
        } => {
            let mut p = Payload::new(1);
            p.length(values.len() as u64);
            values.iter().for_each(|v| p.string(v));
            Some((key, KeyType::List, expiry, p))
        }
        RdbValue::Set {
            key,
            members,
            expiry,
        } => {
            let mut p = Payload::new(2);
            p.length(members.len() as u64);
            members.iter().for_each(|v| p.string(v));
            Some((key, KeyType::Set, expiry, p))
        }
        RdbValue::SortedSet {
            key,
            values,
            expiry,
        } => {
            let mut p = Payload::new(5);
            p.length(values.len() as u64);
            for (score, member) in &values {
                p.string(member);
                p.bytes.extend_from_slice(&score.to_le_bytes());
            }
            Some((key, KeyType::ZSet, expiry, p))
        }
        RdbValue::Hash {
            key,
            values,
            expiry,
        } => {
            let mut p = Payload::new(4);
            p.length(values.len() as u64);
            for (field, value) in &values {
                p.string(field);
                p.string(value);
            }
            Some((key, KeyType::Hash, expiry, p))
        }
    }
}

/// Tallies the keys the decoder walked without yielding them (streams); a module value fails the
/// snapshot. Returns how many were tallied.
fn count_undecoded(spy: &Spy, contents: &mut Contents) -> Result<u64, SnapshotError> {
    let mut keys = 0;
    for (db, t, key) in std::mem::take(&mut spy.0.borrow_mut().undecoded) {
        if matches!(rdb::Type::from_encoding(t), Ok(rdb::Type::Module)) {
            return Err(SnapshotError::Module {
                db,
                key: String::from_utf8_lossy(&key).into_owned(),
            });
        }
        contents.tally.add_in(db, &key, KeyType::Stream, false);
        keys += 1;
    }
    Ok(keys)
}

/// A key's TTL in milliseconds from the snapshot's time (`ctime`): `None` when its time was up then,
/// `Some(None)` when it has no expiry.
fn time_left(expiry: Option<u64>, ctime_ms: Option<i64>) -> Option<Option<i64>> {
    match (expiry, ctime_ms) {
        (Some(at), Some(then)) => match at as i64 - then {
            left if left <= 0 => None,
            left => Some(Some(left)),
        },
        (Some(_), None) => Some(Some(1)),
        (None, _) => Some(None),
    }
}

/// Compares the snapshot's stored CRC64 (0: none was written) with the one its bytes sum to; the
/// decoder, the only other owner of `sums`, must be dropped.
fn check_crc(sums: Rc<RefCell<Sums>>, stored_crc: Option<u64>) -> Result<(), SnapshotError> {
    if let Some(stored) = stored_crc.filter(|c| *c != 0) {
        let Ok(sums) = Rc::try_unwrap(sums) else {
            unreachable!("the decoder, the only other owner, is dropped")
        };
        let computed = sums.into_inner().digest.finalize();
        if computed != stored {
            return Err(SnapshotError::Checksum { stored, computed });
        }
    }
    Ok(())
}

/// A `DUMP`-format payload: the RDB type byte and value, the RDB version (2 bytes) and the CRC64 of
/// both (8 bytes), little-endian, as `RESTORE` checks them.
struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    fn new(rdb_type: u8) -> Self {
        Payload {
            bytes: vec![rdb_type],
        }
    }

    /// RDB's length encoding: 6, 14, 32 or 64 bits.
    fn length(&mut self, n: u64) {
        match n {
            0..64 => self.bytes.push(n as u8),
            64..16384 => self
                .bytes
                .extend_from_slice(&((n as u16) | 0x4000).to_be_bytes()),
            16384..=0xffff_ffff => {
                self.bytes.push(0x80);
                self.bytes.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                self.bytes.push(0x81);
                self.bytes.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    fn string(&mut self, s: &[u8]) {
        self.length(s.len() as u64);
        self.bytes.extend_from_slice(s);
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes
            .extend_from_slice(&PAYLOAD_RDB_VERSION.to_le_bytes());
        let crc = CRC64.checksum(&self.bytes);
        self.bytes.extend_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

/// Whether `head` (an archive's first bytes) starts an RDB file.
pub fn is_snapshot(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Reads a snapshot on a blocking thread from an async `source`, handing decoded keys (in batches of
/// `batch`) to `batches`; what it holds. A receiver that goes away stops the reading.
pub async fn read_async(
    source: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    batch: usize,
    batches: Option<tokio::sync::mpsc::Sender<Vec<Restorable>>>,
) -> Result<Contents, SnapshotError> {
    tokio::task::spawn_blocking(move || {
        let mut pending: Vec<Restorable> = Vec::new();
        let send = |pending: &mut Vec<Restorable>| -> Result<(), String> {
            if let Some(tx) = &batches
                && !pending.is_empty()
            {
                tx.blocking_send(std::mem::take(pending))
                    .map_err(|_| "the restore stopped".to_string())?;
            }
            pending.clear();
            Ok(())
        };
        let restoring = batches.is_some();
        let contents = read(
            tokio_util::io::SyncIoBridge::new(source),
            restoring,
            |db, record| {
                if batches.is_none() {
                    return Ok(());
                }
                pending.push((db, record));
                if pending.len() >= batch {
                    send(&mut pending)?;
                }
                Ok(())
            },
        )?;
        send(&mut pending).map_err(SnapshotError::Stopped)?;
        Ok(contents)
    })
    .await
    .map_err(|e| SnapshotError::Stopped(e.to_string()))?
}

/// Streams per database in what a snapshot holds (which a restore cannot bring back).
pub fn streams(contents: &Contents) -> BTreeMap<u32, i64> {
    contents.tally.count_of(KeyType::Stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_redis_encoding() {
        let enc = |n| {
            let mut p = Payload::new(0);
            p.length(n);
            p.bytes[1..].to_vec()
        };
        assert_eq!(enc(5), vec![5]);
        assert_eq!(enc(63), vec![63]);
        assert_eq!(enc(64), vec![0x40, 64]);
        assert_eq!(enc(16383), vec![0x7f, 0xff]);
        assert_eq!(enc(16384), vec![0x80, 0, 0, 0x40, 0]);
        assert_eq!(enc(1 << 32), vec![0x81, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn crc64_is_redis_jones() {
        // Redis's own test vector (src/crc64.c).
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn a_string_payload_is_what_dump_writes() {
        // DUMP of "bar" on Redis 7.0 is 00 03 'b' 'a' 'r' 0a 00 + CRC64; with version 9 the CRC
        // covers 00 03 b a r 09 00.
        let mut p = Payload::new(0);
        p.string(b"bar");
        let out = p.finish();
        assert_eq!(&out[..7], &[0, 3, b'b', b'a', b'r', 9, 0]);
        assert_eq!(
            u64::from_le_bytes(out[7..].try_into().unwrap()),
            CRC64.checksum(&out[..7])
        );
    }

    #[test]
    fn not_an_rdb_is_damaged_and_a_cut_one_truncated() {
        let e = read(&b"LBRK\x01...."[..], false, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, SnapshotError::Damaged { keys: 0, .. }), "{e}");
        // A header and the start of an AUX field, cut.
        let e = read(&b"REDIS0010\xfa\x09redis-v"[..], false, |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, SnapshotError::Truncated(0)), "{e}");
    }
}
