//! Restoring a backup from storage, shared by restore drills and by environments created from a
//! backup (`DatabaseEnvironment.spec.restore`): pick the backup, stream its dump through decompression
//! into `pg_restore` (as the role that will own the data, never an admin), checking size and SHA-256 on
//! the way, and compare the restored tables with the manifest.

use chrono::{DateTime, Utc};
use tokio::io::AsyncWrite;

use crate::{
    api::restore_drill::CheckResult,
    domain::{
        manifest::{Manifest, TableStats},
        schedule::id_time,
    },
    engines::{
        ServerCredentials,
        postgres::dump::{DumpTools, stderr_tail},
    },
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

/// Streams the backup's dump into `pg_restore` as `creds` into `database`; the bytes read must match
/// the manifest's size and SHA-256.
pub async fn restore_into(
    tools: &DumpTools,
    store: &BackupStore,
    manifest: &Manifest,
    creds: &ServerCredentials,
    database: &str,
) -> Result<(), String> {
    let path = store.path(&manifest.id, DUMP_OBJECT);
    let stream = store
        .stream(&path)
        .await
        .map_err(|e| format!("fetching the dump: {e}"))?;
    let private = tempfile::Builder::new()
        .prefix("lifeboat-restore-")
        .tempdir()
        .map_err(|e| format!("creating a private temporary directory: {e}"))?;
    let mut child = tools
        .spawn_restore(creds, database, private.path())
        .map_err(|e| format!("cannot start pg_restore: {e}"))?;
    let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
        return Err("pg_restore was started without pipes".into());
    };
    let stderr = tokio::spawn(stderr_tail(stderr));
    let sink: Box<dyn AsyncWrite + Unpin + Send> = match manifest.dump.compression.as_str() {
        "zstd" => Box::new(async_compression::tokio::write::ZstdDecoder::new(stdin)),
        "gzip" => Box::new(async_compression::tokio::write::GzipDecoder::new(stdin)),
        _ => Box::new(stdin),
    };
    let (read, piped) = storage::copy_hashed(stream, sink)
        .await
        .map_err(|e| format!("reading the dump: {e}"))?;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for pg_restore: {e}"))?;
    let stderr = stderr.await.unwrap_or_default();
    if read.size != manifest.dump.size_bytes || read.sha256 != manifest.dump.sha256 {
        return Err(format!(
            "the stored dump of backup {} does not match its manifest: {} bytes with SHA-256 {}, the manifest says {} bytes with SHA-256 {}",
            manifest.id, read.size, read.sha256, manifest.dump.size_bytes, manifest.dump.sha256
        ));
    }
    if !status.success() || piped.is_err() {
        let detail = match piped {
            Err(e) if stderr.trim().is_empty() => format!("decompressing: {e}"),
            _ => stderr.trim().to_string(),
        };
        return Err(format!("pg_restore failed: {detail}"));
    }
    Ok(())
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
