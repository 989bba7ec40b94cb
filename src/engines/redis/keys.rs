//! A tenant's keys in bulk: backed up into a key archive (`SCAN` on its prefix, then `TYPE`, `PTTL` and
//! `DUMP` pipelined per batch), restored under another prefix (`RESTORE` with the TTL each key had
//! left), counted, and deleted, [`BATCH`] keys per round trip.

use std::collections::HashSet;

use redis::{Value, aio::MultiplexedConnection};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    RedisError,
    acl::glob_escape,
    archive::{self, KeyType, Reader, Record, Tally, Writer},
    snapshot,
};
use crate::domain::manifest::TableStats;

/// Keys per round trip.
pub const BATCH: usize = 1000;

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub keys: u64,
    /// Keys restored with a TTL.
    pub expiring: u64,
    /// Of those, how far the TTL read right after RESTORE fell short of the one recorded, at most.
    pub max_ttl_drift_ms: i64,
    /// Keys that had a TTL in the archive but none after RESTORE.
    pub ttl_lost: u64,
}

fn command(context: &str, e: redis::RedisError) -> RedisError {
    RedisError::command(context.to_string(), e)
}

fn archive_error(e: archive::ArchiveError) -> RedisError {
    RedisError::Archive(e)
}

/// One `SCAN` step under `prefix`: the next cursor and the keys.
async fn scan(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    cursor: u64,
) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(format!("{}*", glob_escape(prefix)))
        .arg("COUNT")
        .arg(BATCH)
        .query_async(conn)
        .await
        .map_err(|e| command(&format!("SCAN for keys under {prefix}"), e))
}

/// The server's version, asked with `HELLO` (which every user may send; `INFO` is an admin command).
pub async fn version(conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
    let hello: Vec<Value> = redis::cmd("HELLO")
        .query_async(conn)
        .await
        .map_err(|e| command("HELLO", e))?;
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    Ok(hello
        .chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some("version"))
        .and_then(|kv| kv.get(1).and_then(text))
        .unwrap_or_else(|| "unknown".into()))
}

/// Writes every key under `prefix` (read as the connection's user) to an archive on `sink`, keys
/// stored without the prefix. Not a point-in-time copy: a key written while the backup runs may or
/// may not be in it; each key is as of its own `DUMP`. Reading runs ahead of writing: the next `SCAN`
/// goes out while a batch is dumped, and dumped batches queue (a few) for the writer. Returns the
/// statistics.
pub async fn backup(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    sink: impl AsyncWrite + Unpin,
) -> Result<Tally, RedisError> {
    let io = |e: std::io::Error| RedisError::Command {
        context: "writing the key archive".into(),
        detail: e.to_string(),
    };
    let (batches, mut received) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader = read_batches(conn.clone(), prefix.to_string(), batches);
    let write = async {
        let mut writer = Writer::new(sink).await.map_err(io)?;
        let mut tally = Tally::default();
        while let Some(batch) = received.recv().await {
            for record in batch {
                tally.add(&record.key, record.key_type, record.pttl.is_some());
                writer.record(&record).await.map_err(io)?;
            }
        }
        writer.finish().await.map_err(io)?;
        Ok::<_, RedisError>(tally)
    };
    let (read, written) = tokio::join!(reader, write);
    // A failed read ends the batches early: its error, not a short archive, is the result.
    read?;
    written
}

/// The keys a SCAN has returned so far (it may return one twice), as a 128-bit hash each rather than the
/// key: 16 bytes a key whatever its length.
#[derive(Default)]
struct Seen {
    hashers: (std::hash::RandomState, std::hash::RandomState),
    hashes: HashSet<u128>,
}

impl Seen {
    /// Whether `key` is seen for the first time.
    fn first(&mut self, key: &[u8]) -> bool {
        use std::hash::BuildHasher;
        let high = u128::from(self.hashers.0.hash_one(key)) << 64;
        self.hashes
            .insert(high | u128::from(self.hashers.1.hash_one(key)))
    }
}

/// Dumped batches waiting for the writer, at most.
const READ_AHEAD: usize = 4;

/// Scans `prefix` and sends each batch's records (`PTTL` and `DUMP` pipelined; the type is the first
/// byte of the serialization) to `batches`, the next `SCAN` running alongside each batch's dump.
async fn read_batches(
    conn: MultiplexedConnection,
    prefix: String,
    batches: tokio::sync::mpsc::Sender<Vec<Record>>,
) -> Result<(), RedisError> {
    let mut seen = Seen::default();
    let mut scan_conn = conn.clone();
    let mut next = scan(&mut scan_conn, &prefix, 0).await?;
    loop {
        let (cursor, keys) = next;
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| seen.first(k)).collect();
        let dump = dump_batch(conn.clone(), &prefix, keys);
        let (scanned, dumped) = if cursor == 0 {
            (None, dump.await)
        } else {
            let (s, d) = tokio::join!(scan(&mut scan_conn, &prefix, cursor), dump);
            (Some(s), d)
        };
        let records = dumped?;
        if !records.is_empty() && batches.send(records).await.is_err() {
            // The writer stopped (its own error is the result).
            return Ok(());
        }
        match scanned {
            None => return Ok(()),
            Some(s) => next = s?,
        }
    }
}

/// `PTTL` and `DUMP` of `keys`, pipelined; the records of those still there.
async fn dump_batch(
    mut conn: MultiplexedConnection,
    prefix: &str,
    keys: Vec<Vec<u8>>,
) -> Result<Vec<Record>, RedisError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("PTTL").arg(k).cmd("DUMP").arg(k);
    }
    let answers: Vec<Value> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| command(&format!("reading keys under {prefix}"), e))?;
    let mut records = Vec::with_capacity(keys.len());
    for (key, parts) in answered(&keys, &answers, prefix)? {
        // `None`: gone between SCAN and DUMP.
        records.extend(to_record(key, parts)?);
    }
    Ok(records)
}

/// A key without its prefix, with its answers.
type Answered<'a> = (&'a [u8], &'a [Value]);

/// Each key (without `prefix`) with its two answers. A server that answers with another number of
/// replies, or lists a key outside the prefix, is refused rather than trusted (an adopted server is
/// whatever the Secret names).
fn answered<'a>(
    keys: &'a [Vec<u8>],
    answers: &'a [Value],
    prefix: &str,
) -> Result<Vec<Answered<'a>>, RedisError> {
    let odd = |detail: String| RedisError::Command {
        context: format!("reading keys under {prefix}"),
        detail,
    };
    if answers.len() != keys.len() * 2 {
        return Err(odd(format!(
            "the server sent {} replies for {} keys",
            answers.len(),
            keys.len()
        )));
    }
    keys.iter()
        .zip(answers.chunks(2))
        .map(|(key, parts)| {
            let relative = key.strip_prefix(prefix.as_bytes()).ok_or_else(|| {
                odd(format!(
                    "SCAN listed {} outside the prefix",
                    String::from_utf8_lossy(key)
                ))
            })?;
            Ok((relative, parts))
        })
        .collect()
}

/// A record from `PTTL` and `DUMP` of `key` (without its prefix); `None` when the key went away
/// meanwhile.
fn to_record(key: &[u8], parts: &[Value]) -> Result<Option<Record>, RedisError> {
    let pttl = match parts[0] {
        Value::Int(-2) => return Ok(None),
        // A key about to expire keeps a TTL (RESTORE reads 0 as none): 1 ms.
        Value::Int(n) if n >= 0 => Some(n.max(1)),
        _ => None,
    };
    let payload = match &parts[1] {
        Value::BulkString(b) => b.clone(),
        _ => return Ok(None),
    };
    let key_type = payload
        .first()
        .and_then(|t| KeyType::from_rdb_type(*t))
        .ok_or_else(|| RedisError::Command {
            context: format!("backing up key {}", String::from_utf8_lossy(key)),
            detail: format!(
                "its serialization has RDB type {:?}, which a key archive does not hold (module types are not backed up)",
                payload.first()
            ),
        })?;
    Ok(Some(Record {
        key: key.to_vec(),
        key_type,
        pttl,
        payload,
    }))
}

/// Restores an archive under `prefix` (as an admin: RESTORE is a dangerous command), each key with the
/// TTL it had left, replacing what is there.
pub async fn restore(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    source: impl AsyncRead + Unpin,
) -> Result<Restored, RedisError> {
    let mut reader = Reader::new(source).await.map_err(archive_error)?;
    let mut done = Restored::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let record = reader.next().await.map_err(archive_error)?;
        let last = record.is_none();
        batch.extend(record.map(|r| (0, r)));
        if batch.len() == BATCH || (last && !batch.is_empty()) {
            restore_batch(conn, prefix, &batch, &mut done).await?;
            batch.clear();
        }
        if last {
            return Ok(done);
        }
    }
}

/// Restores an RDB snapshot under `prefix`, each key in the database it came from, with the TTL it
/// had left when the snapshot was taken. The snapshot is decoded on a blocking thread while decoded
/// batches are restored. A snapshot holding streams fails once read (they are not decoded), naming
/// them; what was restored until then stays for the caller to clear.
pub async fn restore_snapshot(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    source: impl AsyncRead + Unpin + Send + 'static,
) -> Result<Restored, RedisError> {
    let (batches, mut received) = tokio::sync::mpsc::channel(READ_AHEAD);
    let read = snapshot::read_async(source, BATCH, Some(batches));
    let write = async {
        let mut done = Restored::default();
        while let Some(batch) = received.recv().await {
            restore_batch(conn, prefix, &batch, &mut done).await?;
        }
        Ok::<_, RedisError>(done)
    };
    let (read, written) = tokio::join!(read, write);
    // A failed write stops the reading: its error, not the reader's, is the cause.
    let done = written?;
    let contents = read.map_err(RedisError::Snapshot)?;
    let streams = snapshot::streams(&contents);
    if !streams.is_empty() {
        return Err(RedisError::Snapshot(snapshot::SnapshotError::Streams {
            streams: streams.values().sum::<i64>() as u64,
            databases: streams.keys().copied().collect(),
        }));
    }
    Ok(done)
}

/// `RESTORE` of a batch of (database, record), `SELECT`ing each record's database (the connection
/// is the restore's own).
async fn restore_batch(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    batch: &[(u32, Record)],
    done: &mut Restored,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    let mut db = None;
    for (in_db, r) in batch {
        if db != Some(*in_db) {
            pipe.cmd("SELECT").arg(*in_db).ignore();
            db = Some(*in_db);
        }
        let mut key = prefix.as_bytes().to_vec();
        key.extend_from_slice(&r.key);
        pipe.cmd("RESTORE")
            .arg(&key)
            .arg(r.pttl.unwrap_or(0))
            .arg(&r.payload)
            .arg("REPLACE")
            .ignore();
        if r.pttl.is_some() {
            pipe.cmd("PTTL").arg(&key);
        }
    }
    if db != Some(0) {
        pipe.cmd("SELECT").arg(0).ignore();
    }
    let ttls: Vec<i64> = pipe.query_async(conn).await.map_err(|e| {
        let first = batch
            .first()
            .map(|(_, r)| String::from_utf8_lossy(&r.key).into_owned())
            .unwrap_or_default();
        command(
            &format!("RESTORE of the batch starting at key {first} under {prefix}"),
            e,
        )
    })?;
    let mut ttls = ttls.into_iter();
    for (_, r) in batch {
        done.keys += 1;
        let Some(recorded) = r.pttl else { continue };
        done.expiring += 1;
        match ttls.next() {
            Some(left) if left >= 0 => {
                done.max_ttl_drift_ms = done.max_ttl_drift_ms.max(recorded - left);
            }
            _ => done.ttl_lost += 1,
        }
    }
    Ok(())
}

/// The databases that hold keys, as `INFO keyspace` lists them; database 0 alone when the user may
/// not read `INFO` (a tenant, whose keys are all there).
async fn databases(conn: &mut MultiplexedConnection) -> Vec<u32> {
    match redis::cmd("INFO")
        .arg("keyspace")
        .query_async::<String>(conn)
        .await
    {
        Ok(text) => {
            let dbs = super::info::databases(&super::info::parse_info(&text));
            if dbs.is_empty() { vec![0] } else { dbs }
        }
        Err(_) => vec![0],
    }
}

/// Selects `db` on the connection (whose only user is the caller).
async fn select(conn: &mut MultiplexedConnection, db: u32) -> Result<(), RedisError> {
    redis::cmd("SELECT")
        .arg(db)
        .query_async::<()>(conn)
        .await
        .map_err(|e| command(&format!("SELECT {db}"), e))
}

/// Counts (and name checksums of) the keys under `prefix` by database and type, names taken without
/// the prefix.
pub async fn stats(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    checksums: bool,
) -> Result<Vec<TableStats>, RedisError> {
    let mut tally = Tally::default();
    for db in databases(conn).await {
        select(conn, db).await?;
        let counted = count_in(conn, prefix, db, &mut tally).await;
        select(conn, 0).await?;
        counted?;
    }
    Ok(tally.stats(checksums))
}

async fn count_in(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    db: u32,
    tally: &mut Tally,
) -> Result<(), RedisError> {
    let mut seen = Seen::default();
    let mut cursor = 0;
    loop {
        let (next, keys) = scan(conn, prefix, cursor).await?;
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| seen.first(k)).collect();
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
            }
            let answers: Vec<Value> = pipe
                .query_async(conn)
                .await
                .map_err(|e| command(&format!("counting keys under {prefix}"), e))?;
            for (key, parts) in answered(&keys, &answers, prefix)? {
                let name = match &parts[0] {
                    Value::SimpleString(s) => s.clone(),
                    _ => continue,
                };
                let Some(t) = KeyType::from_name(&name) else {
                    continue;
                };
                let expiring = matches!(parts[1], Value::Int(n) if n >= 0);
                tally.add_in(db, key, t, expiring);
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Unlinks every key under `prefix`, in every database that holds keys, [`BATCH`] at a time; how
/// many.
pub async fn delete(conn: &mut MultiplexedConnection, prefix: &str) -> Result<u64, RedisError> {
    let mut total = 0u64;
    for db in databases(conn).await {
        select(conn, db).await?;
        let deleted = delete_in(conn, prefix).await;
        select(conn, 0).await?;
        total += deleted?;
    }
    Ok(total)
}

async fn delete_in(conn: &mut MultiplexedConnection, prefix: &str) -> Result<u64, RedisError> {
    let mut cursor = 0;
    let mut total = 0u64;
    loop {
        let (next, keys) = scan(conn, prefix, cursor).await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(conn)
                .await
                .map_err(|e| command(&format!("UNLINK keys under {prefix}"), e))?;
            total += n;
        }
        if next == 0 {
            return Ok(total);
        }
        cursor = next;
    }
}
