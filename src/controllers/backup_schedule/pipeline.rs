//! One backup, start to manifest: snapshot and table statistics → `pg_dump -Fc --snapshot` → compression
//! and SHA-256 → multipart upload → read back and check (`verify`) → `manifest.json`, written last. Any
//! failure removes what was stored, so a failed backup leaves no object behind and never counts.
//!
//! This is the backup executor: it runs in the operator process, in a tracked task, under a work slot.
//! Its input ([`Job`]) is plain data, so the same function can run as a `lifeboat` subcommand in a
//! Kubernetes Job once the platform runs pods (docs/backups.md says what is built).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_compression::tokio::write;
use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::InspectReader;

use crate::{
    api::backup_schedule::Compression,
    domain::manifest::{DumpObject, EnvironmentRef, MANIFEST_FORMAT, Manifest},
    engines::{
        Connect, Dump, DumpSnapshot, ENGINE, Engine, Kind, Restore, ServerCredentials, Tools,
    },
    storage::{self, BackupStore, DUMP_OBJECT, MANIFEST_OBJECT},
};

/// Bytes between pg_dump, the compressor and the upload (each side holds at most this much).
pub(super) const PIPE_BUFFER: usize = 1024 * 1024;
/// While another backup of the same database holds the lock, look again this often.
const LOCK_RETRY: Duration = Duration::from_secs(2);

/// Everything one backup needs, resolved by the controller.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    /// `scheduled`, `manual` or `premigrate`.
    pub kind: &'static str,
    /// The environment's engine.
    pub engine: Kind,
    pub environment: EnvironmentRef,
    pub creds: ServerCredentials,
    /// The environment's part of the server: its database (PostgreSQL) or key prefix (Redis).
    pub database: String,
    pub store: BackupStore,
    pub compression: Compression,
    pub verify: bool,
    /// Content checksums per table, not only row counts.
    pub checksums: bool,
    pub tools: Tools,
    /// Longest wait for another backup of the database to finish.
    pub lock_wait: Duration,
    /// Also take a base backup of the whole server: the schedule archives WAL (its UID owns the slot).
    pub base_backup: Option<String>,
}

/// Why a backup failed: a static reason and one sentence for people (never a credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn fail(reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
    }
}

/// Takes the backup. On failure the backup's folder is removed (best effort; retention removes what a
/// failed removal leaves).
pub async fn take(job: &Job) -> Result<Manifest, Failure> {
    let result = run(job).await;
    if result.is_err()
        && let Err(e) = job.store.delete_backup(&job.id).await
    {
        tracing::warn!(backup = %job.id, error = %e, "could not remove the objects of a failed backup");
    }
    result
}

async fn run(job: &Job) -> Result<Manifest, Failure> {
    if let Some(tenancy) = crate::engines::tenancy(job.engine) {
        return super::archive::run(job, tenancy).await;
    }
    let (tool_version, tool_major) = ENGINE
        .dump_version(&job.tools)
        .await
        .map_err(|e| fail("DumpToolMissing", e))?;
    let mut snapshot = lock_and_snapshot(job).await?;
    // The backup's data is as of this moment (the snapshot), not of when it waited for the lock.
    let started_at = Utc::now();
    if tool_major < snapshot.server_major() {
        return Err(fail(
            "DumpToolTooOld",
            format!(
                "{tool_version} cannot dump {} {}: {} must be at least the server's major version (set --pg-bin-dir to a newer client)",
                ENGINE.product(),
                snapshot.server_version(),
                ENGINE.dump_tool()
            ),
        ));
    }
    // pg_dump reads the exported snapshot on its own connection while the statistics are taken on the
    // snapshot's: both see the same state, and the statistics cost no wall time of their own.
    let snapshot_id = snapshot.id().to_string();
    let (tables, dumped) =
        tokio::join!(snapshot.table_stats(job.checksums), dump(job, &snapshot_id));
    let server_version = snapshot.server_version().to_string();
    snapshot.close().await;
    let (stored, raw_size) = dumped?;
    let tables = tables.map_err(|e| fail(e.reason(), format!("reading table statistics: {e}")))?;
    if job.verify {
        verify(job, &stored).await?;
    }
    let base = match (crate::engines::wal_archiver(job.engine), &job.base_backup) {
        (Some(engine), Some(owner)) => Some(super::base::take(job, engine, owner).await?),
        _ => None,
    };
    write_manifest(
        job,
        Written {
            base,
            engine: ENGINE.name(),
            server_version,
            tool_version,
            format: ENGINE.dump_format(),
            started_at,
            stored,
            raw_size,
            tables,
            content: None,
        },
    )
    .await
}

/// What a backup wrote, for its manifest.
pub(super) struct Written {
    pub engine: &'static str,
    pub server_version: String,
    pub tool_version: String,
    /// The archive's format.
    pub format: &'static str,
    /// When the data is as of (the snapshot, or the start of the reading).
    pub started_at: chrono::DateTime<Utc>,
    pub stored: storage::Stored,
    /// Bytes before compression.
    pub raw_size: u64,
    pub tables: Vec<crate::domain::manifest::TableStats>,
    /// The archive's own version and SHA-256 before compression, when the engine read them.
    pub content: Option<crate::engines::Content>,
    /// The base backup taken with it (WAL archiving).
    pub base: Option<crate::domain::manifest::BaseBackupObject>,
}

/// Writes the backup's `manifest.json`, last: only then does the backup count.
pub(super) async fn write_manifest(job: &Job, w: Written) -> Result<Manifest, Failure> {
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: job.id.clone(),
        kind: job.kind.to_string(),
        environment: job.environment.clone(),
        engine: w.engine.into(),
        server_version: w.server_version,
        dump_tool_version: w.tool_version,
        database: job.database.clone(),
        started_at: w.started_at,
        finished_at: Utc::now(),
        dump: DumpObject {
            object: DUMP_OBJECT.into(),
            format: w.format.into(),
            compression: compression_name(job.compression).into(),
            size_bytes: w.stored.size,
            raw_size_bytes: w.raw_size,
            sha256: w.stored.sha256,
            content_version: w.content.as_ref().map(|c| c.version.clone()),
            content_sha256: w.content.map(|c| c.sha256),
        },
        table_checks: if job.checksums {
            "checksums"
        } else {
            "rowCounts"
        }
        .into(),
        tables: w.tables,
        base: w.base,
    };
    job.store
        .put(
            &job.store.path(&job.id, MANIFEST_OBJECT),
            manifest.to_json(),
        )
        .await
        .map_err(|e| fail(e.reason(), e.to_string()))?;
    Ok(manifest)
}

pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::None => "none",
    }
}

/// Waits (bounded) for the database's backup lock, then opens the snapshot.
async fn lock_and_snapshot(job: &Job) -> Result<<Engine as Dump>::Snapshot, Failure> {
    let deadline = tokio::time::Instant::now() + job.lock_wait;
    loop {
        match ENGINE.open_snapshot(&job.creds, &job.database).await {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Ok(None) => {
                return Err(fail(
                    "BackupInProgress",
                    format!(
                        "another backup of database {} held its lock for longer than {:?}",
                        job.database, job.lock_wait
                    ),
                ));
            }
            Err(e) => return Err(fail(e.reason(), format!("connecting for the backup: {e}"))),
        }
    }
}

/// Runs pg_dump and streams its archive into the store; returns what was stored and pg_dump's bytes.
async fn dump(job: &Job, snapshot: &str) -> Result<(storage::Stored, u64), Failure> {
    let tool = ENGINE.dump_tool();
    let private = tempfile::Builder::new()
        .prefix("lifeboat-backup-")
        .tempdir()
        .map_err(|e| {
            fail(
                "DumpFailed",
                format!("creating a private temporary directory: {e}"),
            )
        })?;
    let mut child = spawn_dump(job, snapshot, private.path())?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(fail(
            "DumpFailed",
            format!("{tool} was started without pipes"),
        ));
    };
    let stderr = tokio::spawn(ENGINE.stderr_tail(stderr));
    let raw = Arc::new(AtomicU64::new(0));
    let counter = raw.clone();
    let counted = InspectReader::new(stdout, move |b: &[u8]| {
        counter.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    // Compression runs as its own task writing into a bounded pipe the upload reads. A write-side
    // encoder emits whole blocks; the read-side one flushes a block each time pg_dump's pipe is
    // momentarily empty, which costs CPU and ratio.
    let (pipe_out, pipe_in) = tokio::io::duplex(PIPE_BUFFER);
    let compression = job.compression;
    let compressor = tokio::spawn(compress(counted, pipe_in, compression));
    let uploaded = job
        .store
        .upload(&job.store.path(&job.id, DUMP_OBJECT), pipe_out)
        .await;
    if uploaded.is_err() {
        // Nobody reads its output any more: stop it rather than wait for it.
        let _ = child.start_kill();
    }
    let compressed = compressor
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let status = child
        .wait()
        .await
        .map_err(|e| fail("DumpFailed", format!("waiting for {tool}: {e}")))?;
    let stderr = stderr.await.unwrap_or_default();
    let stored = uploaded.map_err(|e| fail(e.reason(), e.to_string()))?;
    if let Err(e) = compressed
        && status.success()
    {
        return Err(fail("DumpFailed", format!("compressing the dump: {e}")));
    }
    if !status.success() {
        return Err(fail(
            "DumpFailed",
            format!("{tool} {}: {}", exit_text(status), stderr.trim()),
        ));
    }
    let raw_size = raw.load(Ordering::Relaxed);
    if raw_size == 0 {
        return Err(fail(
            "DumpFailed",
            format!("{tool} exited 0 but wrote nothing"),
        ));
    }
    Ok((stored, raw_size))
}

/// Starts the dump program on `snapshot`, compressing itself only when the backup is not compressed
/// on the way to the store.
fn spawn_dump(
    job: &Job,
    snapshot: &str,
    private_dir: &std::path::Path,
) -> Result<tokio::process::Child, Failure> {
    let compress_in_dump = job.compression == Compression::None;
    ENGINE
        .spawn_dump(
            &job.tools,
            &job.creds,
            &job.database,
            snapshot,
            compress_in_dump,
            private_dir,
        )
        .map_err(|e| {
            fail(
                "DumpToolMissing",
                format!(
                    "cannot start {}: {e}",
                    ENGINE.dump_program(&job.tools).display()
                ),
            )
        })
}

/// Copies `source` into `sink` through the stream compression, then ends `sink` (the upload sees the
/// end of the stream only after the compressor's last block).
pub(super) async fn compress(
    mut source: impl AsyncRead + Unpin,
    sink: tokio::io::DuplexStream,
    compression: Compression,
) -> std::io::Result<()> {
    let mut sink: Box<dyn AsyncWrite + Unpin + Send> = match compression {
        Compression::Zstd => Box::new(write::ZstdEncoder::new(sink)),
        Compression::Gzip => Box::new(write::GzipEncoder::new(sink)),
        Compression::None => Box::new(sink),
    };
    let mut buf = vec![0u8; PIPE_BUFFER];
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sink.write_all(&buf[..n]).await?;
    }
    sink.shutdown().await
}

/// Reads the stored dump back: its size and SHA-256 must match what was written, and `pg_restore`
/// must read every entry of the (decompressed) archive.
async fn verify(job: &Job, stored: &storage::Stored) -> Result<(), Failure> {
    let tool = ENGINE.restore_tool();
    let path = job.store.path(&job.id, DUMP_OBJECT);
    let stream = job
        .store
        .stream(&path)
        .await
        .map_err(|e| fail(e.reason(), format!("verify: {e}")))?;
    let mut child = ENGINE
        .spawn_archive_check(&job.tools)
        .map_err(|e| fail("DumpToolMissing", format!("cannot start {tool}: {e}")))?;
    let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
        return Err(fail(
            "VerifyFailed",
            format!("{tool} was started without pipes"),
        ));
    };
    let stderr = tokio::spawn(ENGINE.stderr_tail(stderr));
    let sink: Box<dyn AsyncWrite + Unpin + Send> = match job.compression {
        Compression::Zstd => Box::new(write::ZstdDecoder::new(stdin)),
        Compression::Gzip => Box::new(write::GzipDecoder::new(stdin)),
        Compression::None => Box::new(stdin),
    };
    let (read, piped) = storage::copy_hashed(stream, sink)
        .await
        .map_err(|e| fail("VerifyFailed", format!("reading the dump back: {e}")))?;
    let status = child
        .wait()
        .await
        .map_err(|e| fail("VerifyFailed", format!("waiting for {tool}: {e}")))?;
    let stderr = stderr.await.unwrap_or_default();
    if read != *stored {
        return Err(fail(
            "VerifyFailed",
            format!(
                "the dump read back from {} is {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} were written",
                job.store.url(),
                read.size,
                read.sha256,
                stored.size,
                stored.sha256
            ),
        ));
    }
    if !status.success() || piped.is_err() {
        let detail = match piped {
            Err(e) if stderr.trim().is_empty() => format!("decompressing: {e}"),
            _ => stderr.trim().to_string(),
        };
        return Err(fail(
            "VerifyFailed",
            format!(
                "{tool} could not read the archive back ({}): {detail}",
                exit_text(status)
            ),
        ));
    }
    Ok(())
}

fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".into(),
    }
}
