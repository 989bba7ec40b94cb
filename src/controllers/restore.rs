//! Restoring a backup from storage, shared by restore drills and by environments created from a
//! backup (`DatabaseEnvironment.spec.restore`): pick the backup, stream its dump through decompression
//! into `pg_restore` (as the role that will own the data, never an admin), checking size and SHA-256 on
//! the way, and compare the restored tables with the manifest.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use chrono::{DateTime, Utc};
use tokio::io::AsyncWrite;

use crate::{
    api::restore_drill::CheckResult,
    domain::{
        manifest::{Manifest, TableStats},
        schedule::id_time,
    },
    engines::{ENGINE, Restore, RestoreInput, ServerCredentials, Tools},
    storage::{self, BackupStore, DUMP_OBJECT, MANIFEST_OBJECT},
};

/// Tables named in a failed comparison's message, at most.
const NAMED_DIFFERENCES: usize = 5;

/// The backup `backup_id` (or the newest with a manifest) and its manifest, with when the newest backup
/// was taken. Errors are sentences.
pub async fn pick(
    store: &BackupStore,
    backup_id: Option<&str>,
) -> Result<(Manifest, Option<DateTime<Utc>>), String> {
    let listed = store
        .list()
        .await
        .map_err(|e| format!("listing backups: {e}"))?;
    let newest = listed
        .iter()
        .filter(|l| l.has_manifest)
        .max_by_key(|l| id_time(&l.id).unwrap_or(l.last_modified));
    let newest_at = newest.map(|n| id_time(&n.id).unwrap_or(n.last_modified));
    let id = match backup_id {
        Some(id) => id.to_string(),
        None => newest
            .map(|n| n.id.clone())
            .ok_or_else(|| format!("{} holds no backup with a manifest yet", store.url()))?,
    };
    let bytes = store
        .get(&store.path(&id, MANIFEST_OBJECT))
        .await
        .map_err(|e| format!("reading the manifest of backup {id}: {e}"))?
        .ok_or_else(|| {
            format!(
                "backup {id} has no manifest.json in {} (it is not a complete backup)",
                store.url()
            )
        })?;
    let manifest = Manifest::parse(&bytes).map_err(|e| format!("backup {id}: {e}"))?;
    if manifest.id != id {
        return Err(format!(
            "the manifest in folder {id} of {} describes backup {}; it was moved or copied by hand, so it is not trusted",
            store.url(),
            manifest.id
        ));
    }
    Ok((manifest, newest_at))
}

/// Where parallel restores spool a dump, and how much all spooled dumps together may take.
#[derive(Clone, Debug)]
pub struct Spool {
    /// Directory of the spooled files; `None`: the system's temporary directory.
    pub dir: Option<PathBuf>,
    /// Most bytes the spooled (decompressed) dumps of all restores running at once may take.
    pub limit_bytes: u64,
    /// Bytes reserved by the spools in use (shared by clones).
    pub in_use: Arc<AtomicU64>,
}

impl Spool {
    pub fn new(dir: Option<PathBuf>, limit_bytes: u64) -> Self {
        Self {
            dir,
            limit_bytes,
            in_use: Arc::default(),
        }
    }

    /// Reserves `bytes` of the limit, or says how much is free.
    fn reserve(&self, bytes: u64) -> Result<Reservation, u64> {
        let mut used = self.in_use.load(Ordering::Relaxed);
        loop {
            let free = self.limit_bytes.saturating_sub(used);
            if bytes > free {
                return Err(free);
            }
            match self.in_use.compare_exchange(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Reservation {
                        in_use: self.in_use.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Part of the spool limit held while a spooled file exists; given back on drop.
struct Reservation {
    in_use: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Default of `--spool-limit`.
pub const DEFAULT_SPOOL_LIMIT: &str = "10Gi";

impl Default for Spool {
    fn default() -> Self {
        Self::new(None, 10 << 30)
    }
}

/// How a restore was done, for status.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored {
    pub jobs: u32,
    /// Bytes of the decompressed dump spooled to disk, when it was.
    pub spooled_bytes: Option<u64>,
    /// Why a requested spool was not used.
    pub fallback: Option<String>,
}

impl Restored {
    /// One line for `restoreMethod`.
    pub fn describe(&self) -> String {
        let tool = ENGINE.restore_tool();
        match (self.spooled_bytes, &self.fallback) {
            (Some(bytes), _) => format!(
                "spooled {} to disk, then {tool} with {} parallel jobs",
                human_bytes(bytes),
                self.jobs
            ),
            (None, Some(why)) => format!("streamed into one {tool} job: {why}"),
            (None, None) => format!("streamed into one {tool} job"),
        }
    }
}

/// Restores the backup's dump into `database` as `creds`, checking the bytes against the manifest's size
/// and SHA-256: with `jobs` above 1 spooled first (within `spool`) and restored in parallel, else
/// streamed from storage through decompression into one `pg_restore`.
pub async fn restore_into(
    tools: &Tools,
    store: &BackupStore,
    manifest: &Manifest,
    creds: &ServerCredentials,
    database: &str,
    jobs: u32,
    spool: &Spool,
) -> Result<Restored, String> {
    let tool_major = ENGINE.restore_major(tools).await?;
    let server_major = ENGINE
        .server_major(creds, database)
        .await
        .map_err(|e| format!("connecting to the restore target: {e}"))?;
    let tolerant = ENGINE.needs_tolerant_restore(tool_major, server_major);
    let private = tempfile::Builder::new()
        .prefix("lifeboat-restore-")
        .tempdir()
        .map_err(|e| format!("creating a private temporary directory: {e}"))?;
    let session = Session {
        tools,
        creds,
        database,
        private: private.path(),
        tolerant,
    };
    if jobs > 1 {
        match spool_dump(store, manifest, spool).await? {
            Spooled::File(file, bytes, _reservation) => {
                session
                    .run(
                        RestoreInput::File {
                            path: file.path(),
                            jobs,
                        },
                        None,
                    )
                    .await?;
                return Ok(Restored {
                    jobs,
                    spooled_bytes: Some(bytes),
                    fallback: None,
                });
            }
            Spooled::TooLarge(why) => {
                tracing::info!(backup = %manifest.id, reason = %why, "restoring streaming with one job instead of spooling");
                session.stream(store, manifest).await?;
                return Ok(Restored {
                    jobs: 1,
                    spooled_bytes: None,
                    fallback: Some(why),
                });
            }
        }
    }
    session.stream(store, manifest).await?;
    Ok(Restored {
        jobs: 1,
        spooled_bytes: None,
        fallback: None,
    })
}

/// One `pg_restore` of a restore, with what it needs to run and judge its errors.
struct Session<'a> {
    tools: &'a Tools,
    creds: &'a ServerCredentials,
    database: &'a str,
    private: &'a Path,
    /// `pg_restore` 17+ on an older server: let past its `SET transaction_timeout` (see
    /// [`needs_tolerant_restore`]), failing on any other error.
    tolerant: bool,
}

impl Session<'_> {
    /// Streams the dump from storage through decompression into `pg_restore`'s stdin.
    async fn stream(&self, store: &BackupStore, manifest: &Manifest) -> Result<(), String> {
        let stream = store
            .stream(&store.path(&manifest.id, DUMP_OBJECT))
            .await
            .map_err(|e| format!("fetching the dump: {e}"))?;
        self.run(RestoreInput::Stdin, Some((stream, manifest)))
            .await
    }

    /// Runs `pg_restore` on `input`; with a stream, feeds it to stdin and checks its bytes against the
    /// manifest (a mismatch is reported before pg_restore's own error, which it usually causes).
    async fn run(
        &self,
        input: RestoreInput<'_>,
        feed: Option<(storage::ByteStream, &Manifest)>,
    ) -> Result<(), String> {
        let tool = ENGINE.restore_tool();
        let mut child = ENGINE
            .spawn_restore(
                self.tools,
                self.creds,
                self.database,
                self.private,
                input,
                !self.tolerant,
            )
            .map_err(|e| format!("cannot start {tool}: {e}"))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(format!("{tool} was started without a stderr pipe"));
        };
        let stderr = tokio::spawn(ENGINE.scan_restore_stderr(stderr));
        let mut piped = Ok(());
        if let Some((stream, manifest)) = feed {
            let Some(stdin) = child.stdin.take() else {
                return Err(format!("{tool} was started without a stdin pipe"));
            };
            let sink = decoder(&manifest.dump.compression, stdin);
            let (read, result) = storage::copy_hashed(stream, sink)
                .await
                .map_err(|e| format!("reading the dump: {e}"))?;
            check_bytes(manifest, &read)?;
            piped = result;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("waiting for {tool}: {e}"))?;
        let errors = stderr.await.unwrap_or_default();
        let ignored = !status.success() && self.tolerant && errors.only_ignorable();
        if ignored {
            tracing::debug!(
                sessions = errors.ignorable,
                "{tool}'s settings unknown to this server were ignored"
            );
        }
        if (status.success() || ignored) && piped.is_ok() {
            return Ok(());
        }
        let detail = match piped {
            Err(e) if errors.errors == 0 && errors.tail.trim().is_empty() => {
                format!("decompressing: {e}")
            }
            _ => errors.detail(),
        };
        Err(format!("{tool} failed: {detail}"))
    }
}

/// A decompressing writer into `sink` for the manifest's `compression`.
pub(crate) fn decoder<W: AsyncWrite + Unpin + Send + 'static>(
    compression: &str,
    sink: W,
) -> Box<dyn AsyncWrite + Unpin + Send> {
    match compression {
        "zstd" => Box::new(async_compression::tokio::write::ZstdDecoder::new(sink)),
        "gzip" => Box::new(async_compression::tokio::write::GzipDecoder::new(sink)),
        _ => Box::new(sink),
    }
}

/// The stored bytes must be the manifest's.
pub(crate) fn check_bytes(manifest: &Manifest, read: &storage::Stored) -> Result<(), String> {
    if read.size != manifest.dump.size_bytes || read.sha256 != manifest.dump.sha256 {
        return Err(format!(
            "the stored dump of backup {} does not match its manifest: {} bytes with SHA-256 {}, the manifest says {} bytes with SHA-256 {}",
            manifest.id, read.size, read.sha256, manifest.dump.size_bytes, manifest.dump.sha256
        ));
    }
    Ok(())
}

enum Spooled {
    /// The decompressed dump, checked against the manifest, its size, and its share of the limit.
    File(tempfile::NamedTempFile, u64, Reservation),
    /// Why it was not spooled: it does not fit the limit.
    TooLarge(String),
}

/// Downloads the dump, decompressing it into a private file in the spool directory. The manifest's
/// decompressed size is reserved from the spool limit first, and the file may not grow past it: the
/// manifest is in the tenant's bucket, so what it says is held while writing, not only believed. The
/// bytes read must match the manifest.
async fn spool_dump(
    store: &BackupStore,
    manifest: &Manifest,
    spool: &Spool,
) -> Result<Spooled, String> {
    let size = manifest.dump.raw_size_bytes;
    let reservation = match spool.reserve(size) {
        Ok(r) => r,
        Err(free) => {
            return Ok(Spooled::TooLarge(format!(
                "the dump is {} decompressed and the spool has {} free of its {} limit (--spool-limit)",
                human_bytes(size),
                human_bytes(free),
                human_bytes(spool.limit_bytes)
            )));
        }
    };
    let dir = spool.dir.clone().unwrap_or_else(std::env::temp_dir);
    let file = tempfile::Builder::new()
        .prefix("lifeboat-spool-")
        .tempfile_in(&dir)
        .map_err(|e| format!("creating a spool file in {}: {e}", dir.display()))?;
    let writer = tokio::fs::File::from_std(
        file.reopen()
            .map_err(|e| format!("opening the spool file: {e}"))?,
    );
    let written = Arc::new(AtomicU64::new(0));
    let sink = decoder(
        &manifest.dump.compression,
        Limited {
            inner: writer,
            written: written.clone(),
            limit: size,
        },
    );
    let stream = store
        .stream(&store.path(&manifest.id, DUMP_OBJECT))
        .await
        .map_err(|e| format!("fetching the dump: {e}"))?;
    let (read, result) = storage::copy_hashed(stream, sink)
        .await
        .map_err(|e| format!("reading the dump: {e}"))?;
    check_bytes(manifest, &read)?;
    match result {
        Ok(()) => Ok(Spooled::File(
            file,
            written.load(Ordering::Relaxed),
            reservation,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            Ok(Spooled::TooLarge(format!("{e}")))
        }
        Err(e) => Err(format!("spooling the dump to {}: {e}", dir.display())),
    }
}

/// A writer that refuses to write more than `limit` bytes in all (`StorageFull`).
struct Limited<W> {
    inner: W,
    written: Arc<AtomicU64>,
    limit: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Limited<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = self.written.load(Ordering::Relaxed);
        if written + buf.len() as u64 > self.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the dump decompresses to more than the {} its manifest states",
                    human_bytes(self.limit)
                ),
            )));
        }
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Reads a size as Kubernetes writes quantities: bytes, or with a binary (`Ki`, `Mi`, `Gi`, `Ti`) or
/// decimal (`k`, `M`, `G`, `T`) suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write bytes or e.g. 10Gi, 500Mi"))?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {suffix:?}; use Ki, Mi, Gi, Ti, k, M, G or T"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Whether the manifest recorded a checksum for every table (a restore is then checked with them).
pub fn recorded_checksums(manifest: &Manifest) -> bool {
    manifest.tables.iter().all(|t| t.checksum.is_some())
}

/// A new environment's restore (`spec.restore`) checked against the manifest: the comparison's message,
/// or the error after which the next attempt restores again.
pub fn restore_matches(
    manifest: &Manifest,
    restored: &[TableStats],
) -> Result<String, super::error::Error> {
    let checksums = recorded_checksums(manifest);
    let check = compare_tables(
        if checksums { "checksums" } else { "rowCounts" },
        &manifest.tables,
        restored,
        checksums,
    );
    let message = check.message.unwrap_or_default();
    if !check.passed {
        return Err(super::error::Error::NeedsAttention {
            reason: "RestoreCheckFailed",
            message: format!(
                "backup {} was restored but does not match its manifest ({message}); the next attempt restores it again",
                manifest.id
            ),
            source: None,
        });
    }
    Ok(message)
}

/// Compares restored tables with the manifest: row counts, or checksums (`checksums`). A failure names
/// the first tables that differ, with both values, and tables missing on either side.
pub fn compare_tables(
    name: &str,
    manifest: &[TableStats],
    restored: &[TableStats],
    checksums: bool,
) -> CheckResult {
    let value = |t: &TableStats| -> String {
        if checksums {
            t.checksum.clone().unwrap_or_else(|| "-".into())
        } else {
            t.rows.to_string()
        }
    };
    let key = |t: &TableStats| format!("{}.{}", t.schema, t.name);
    let restored_by: std::collections::BTreeMap<String, &TableStats> =
        restored.iter().map(|t| (key(t), t)).collect();
    let mut differences = Vec::new();
    for m in manifest {
        match restored_by.get(&key(m)) {
            None => differences.push(format!("{} is missing from the restore", key(m))),
            Some(r) if value(r) != value(m) => differences.push(format!(
                "{}: backup {} {}, restored {}",
                key(m),
                if checksums { "checksum" } else { "rows" },
                value(m),
                value(r)
            )),
            Some(_) => {}
        }
    }
    let in_manifest: std::collections::BTreeSet<String> = manifest.iter().map(key).collect();
    for r in restored.iter().filter(|r| !in_manifest.contains(&key(r))) {
        differences.push(format!(
            "{} was restored but is not in the manifest",
            key(r)
        ));
    }
    if differences.is_empty() {
        return CheckResult {
            name: name.into(),
            passed: true,
            message: Some(format!("{} tables match the manifest", manifest.len())),
        };
    }
    let more = differences.len().saturating_sub(NAMED_DIFFERENCES);
    let mut message = differences
        .into_iter()
        .take(NAMED_DIFFERENCES)
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    CheckResult {
        name: name.into(),
        passed: false,
        message: Some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_kubernetes_quantities() {
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("500Mi"), Ok(500 << 20));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(
            parse_size(DEFAULT_SPOOL_LIMIT),
            Ok(Spool::default().limit_bytes)
        );
        assert!(
            parse_size("10GB")
                .unwrap_err()
                .contains("unknown unit \"GB\"")
        );
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn the_method_says_how_and_why() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
        let spooled = Restored {
            jobs: 4,
            spooled_bytes: Some(3 << 20),
            fallback: None,
        };
        assert_eq!(
            spooled.describe(),
            "spooled 3.0 MiB to disk, then pg_restore with 4 parallel jobs"
        );
        let fell_back = Restored {
            jobs: 1,
            spooled_bytes: None,
            fallback: Some("the dump is 12.0 GiB decompressed and the spool has 10.0 GiB free of its 10.0 GiB limit (--spool-limit)".into()),
        };
        assert!(
            fell_back
                .describe()
                .starts_with("streamed into one pg_restore job: the dump is 12.0 GiB")
        );
    }

    #[test]
    fn spools_share_one_limit() {
        let spool = Spool::new(None, 100);
        let a = spool.reserve(60).unwrap();
        assert_eq!(spool.reserve(50).err(), Some(40));
        let b = spool.reserve(40).unwrap();
        drop(a);
        assert!(spool.reserve(60).is_ok());
        drop(b);
        assert_eq!(spool.in_use.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_spool_writer_stops_at_its_limit() {
        use tokio::io::AsyncWriteExt;
        let written = Arc::new(AtomicU64::new(0));
        let mut w = Limited {
            inner: Vec::new(),
            written: written.clone(),
            limit: 10,
        };
        w.write_all(b"0123456789").await.unwrap();
        let err = w.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!((written.load(Ordering::Relaxed), w.inner.len()), (10, 10));
    }
}
