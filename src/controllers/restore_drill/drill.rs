//! One drill, start to result: pick the backup → fresh scratch database and role → stream the dump from
//! storage through decompression into `pg_restore`, checking its size and SHA-256 on the way → checks
//! against the manifest and the named queries → RTO and RPO → the scratch database dropped (or kept
//! on failure when asked). Every failure ends in a `Failed` run that names its cause.

use std::time::Instant;

use async_compression::tokio::write;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::plan;
use crate::{
    api::restore_drill::{CheckResult, DrillChecks, DrillResult, DrillRun},
    controllers::clock::to_time,
    domain::{manifest::Manifest, schedule::id_time},
    engines::{
        ServerCredentials,
        postgres::{
            dump::DumpTools,
            restore::{self, scratch_target},
        },
    },
    storage::{self, BackupStore, DUMP_OBJECT, MANIFEST_OBJECT},
};

/// Everything one drill needs, resolved by the reconcile.
#[derive(Clone, Debug)]
pub struct Job {
    pub drill_uid: String,
    pub backup_id: Option<String>,
    pub store: BackupStore,
    pub admin: ServerCredentials,
    pub checks: DrillChecks,
    pub keep_on_failure: bool,
    pub tools: DumpTools,
    pub generation: Option<i64>,
}

/// A failed step: what the run reports.
struct Failed(String);

/// Runs the drill; never fails, the run says what happened.
pub async fn run(job: &Job) -> DrillRun {
    let started = Utc::now();
    let mut run = DrillRun {
        started_at: Some(to_time(started)),
        generation: job.generation,
        result: DrillResult::Failed,
        ..Default::default()
    };
    let manifest = match pick(job, started, &mut run).await {
        Ok(m) => m,
        Err(Failed(why)) => return finish(run, why),
    };
    run.backup_id = manifest.id.clone();
    run.rpo_seconds = Some((started - manifest.finished_at).num_seconds().max(0));
    let target = scratch_target(&job.drill_uid);
    let password = crate::engines::postgres::sql::random_password();
    let clock = Instant::now();
    let outcome = async {
        let scratch = restore::create_scratch(&job.admin, &target, &password)
            .await
            .map_err(|e| Failed(format!("creating the scratch database: {e}")))?;
        restore_into(job, &manifest, &scratch, &target.database).await?;
        run.restore_seconds = Some(clock.elapsed().as_secs() as i64);
        let verify = Instant::now();
        run.checks = checks(job, &manifest, &scratch, &target.database).await?;
        run.verify_seconds = Some(verify.elapsed().as_secs() as i64);
        Ok::<(), Failed>(())
    }
    .await;
    let passed = outcome.is_ok() && run.checks.iter().all(|c| c.passed);
    if passed {
        run.result = DrillResult::Passed;
        run.rto_seconds = Some((Utc::now() - started).num_seconds().max(0));
    }
    if !passed && job.keep_on_failure {
        run.kept_database = Some(target.database.clone());
    } else if let Err(e) = restore::drop_scratch(&job.admin, &target).await {
        tracing::warn!(database = %target.database, error = %e, "could not drop the drill's scratch database; the next drill or the RestoreDrill's deletion drops it");
    }
    match outcome {
        Err(Failed(why)) => finish(run, why),
        Ok(()) if !passed => {
            let failed: Vec<_> = run
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.clone())
                .collect();
            let why = format!("check(s) failed: {}", failed.join(", "));
            finish(run, why)
        }
        Ok(()) => {
            run.finished_at = Some(to_time(Utc::now()));
            run
        }
    }
}

fn finish(mut run: DrillRun, why: String) -> DrillRun {
    run.result = DrillResult::Failed;
    run.finished_at = Some(to_time(Utc::now()));
    run.message = Some(crate::controllers::status::truncate(&why, 1500));
    run
}

/// The backup to restore (`backupId`, or the newest with a manifest) and its manifest; also records how
/// old the newest backup was at the start.
async fn pick(job: &Job, started: DateTime<Utc>, run: &mut DrillRun) -> Result<Manifest, Failed> {
    let listed = job
        .store
        .list()
        .await
        .map_err(|e| Failed(format!("listing backups: {e}")))?;
    let newest = listed
        .iter()
        .filter(|l| l.has_manifest)
        .max_by_key(|l| id_time(&l.id).unwrap_or(l.last_modified));
    if let Some(n) = newest {
        let at = id_time(&n.id).unwrap_or(n.last_modified);
        run.newest_backup_age_seconds = Some((started - at).num_seconds().max(0));
    }
    let id = match &job.backup_id {
        Some(id) => id.clone(),
        None => newest.map(|n| n.id.clone()).ok_or_else(|| {
            Failed(format!(
                "{} holds no backup with a manifest yet",
                job.store.url()
            ))
        })?,
    };
    run.backup_id = id.clone();
    let bytes = job
        .store
        .get(&job.store.path(&id, MANIFEST_OBJECT))
        .await
        .map_err(|e| Failed(format!("reading the manifest of backup {id}: {e}")))?
        .ok_or_else(|| {
            Failed(format!(
                "backup {id} has no manifest.json in {} (it is not a complete backup)",
                job.store.url()
            ))
        })?;
    Manifest::parse(&bytes).map_err(|e| Failed(format!("backup {id}: {e}")))
}

/// Streams the dump into `pg_restore` as the scratch role; the bytes read must match the manifest.
async fn restore_into(
    job: &Job,
    manifest: &Manifest,
    scratch: &ServerCredentials,
    database: &str,
) -> Result<(), Failed> {
    let path = job.store.path(&manifest.id, DUMP_OBJECT);
    let mut stream = job
        .store
        .stream(&path)
        .await
        .map_err(|e| Failed(format!("fetching the dump: {e}")))?;
    let private = tempfile::Builder::new()
        .prefix("lifeboat-drill-")
        .tempdir()
        .map_err(|e| Failed(format!("creating a private temporary directory: {e}")))?;
    let mut child = job
        .tools
        .spawn_restore(scratch, database, private.path())
        .map_err(|e| Failed(format!("cannot start pg_restore: {e}")))?;
    let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
        return Err(Failed("pg_restore was started without pipes".into()));
    };
    let stderr = tokio::spawn(crate::engines::postgres::dump::stderr_tail(stderr));
    let mut sink: Box<dyn AsyncWrite + Unpin + Send> = match manifest.dump.compression.as_str() {
        "zstd" => Box::new(write::ZstdDecoder::new(stdin)),
        "gzip" => Box::new(write::GzipDecoder::new(stdin)),
        _ => Box::new(stdin),
    };
    let (mut hash, mut size, mut piped) = (Sha256::new(), 0u64, Ok(()));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Failed(format!("reading the dump: {e}")))?;
        hash.update(&chunk);
        size += chunk.len() as u64;
        if piped.is_ok() {
            piped = sink.write_all(&chunk).await;
        }
    }
    if piped.is_ok() {
        piped = sink.shutdown().await;
    }
    drop(sink);
    let status = child
        .wait()
        .await
        .map_err(|e| Failed(format!("waiting for pg_restore: {e}")))?;
    let stderr = stderr.await.unwrap_or_default();
    let sha256 = storage::hex(&hash.finalize());
    if size != manifest.dump.size_bytes || sha256 != manifest.dump.sha256 {
        return Err(Failed(format!(
            "the stored dump of backup {} does not match its manifest: {size} bytes with SHA-256 {sha256}, the manifest says {} bytes with SHA-256 {}",
            manifest.id, manifest.dump.size_bytes, manifest.dump.sha256
        )));
    }
    if !status.success() || piped.is_err() {
        let detail = match piped {
            Err(e) if stderr.trim().is_empty() => format!("decompressing: {e}"),
            _ => stderr.trim().to_string(),
        };
        return Err(Failed(format!("pg_restore failed: {detail}")));
    }
    Ok(())
}

/// Row counts, checksums and queries, each a [`CheckResult`].
async fn checks(
    job: &Job,
    manifest: &Manifest,
    scratch: &ServerCredentials,
    database: &str,
) -> Result<Vec<CheckResult>, Failed> {
    let mut results = Vec::new();
    let want_checksums = job.checks.checksums;
    if job.checks.row_counts || want_checksums {
        let restored = restore::restored_stats(scratch, database, want_checksums)
            .await
            .map_err(|e| Failed(format!("reading the restored tables: {e}")))?;
        if job.checks.row_counts {
            results.push(plan::compare_tables(
                "rowCounts",
                &manifest.tables,
                &restored,
                false,
            ));
        }
        if want_checksums {
            if manifest.tables.iter().any(|t| t.checksum.is_none()) {
                results.push(CheckResult {
                    name: "checksums".into(),
                    passed: false,
                    message: Some(format!(
                        "backup {} recorded row counts only (its schedule has tableChecks: rowCounts); nothing to compare checksums with",
                        manifest.id
                    )),
                });
            } else {
                results.push(plan::compare_tables(
                    "checksums",
                    &manifest.tables,
                    &restored,
                    true,
                ));
            }
        }
    }
    for q in &job.checks.queries {
        let result = match restore::query_value(scratch, database, &q.sql).await {
            Ok(Some(v)) if v == q.expected => CheckResult {
                name: q.name.clone(),
                passed: true,
                message: None,
            },
            Ok(got) => CheckResult {
                name: q.name.clone(),
                passed: false,
                message: Some(format!(
                    "expected {:?}, got {}",
                    q.expected,
                    got.map_or("no row".into(), |v| format!("{v:?}"))
                )),
            },
            Err(e) => CheckResult {
                name: q.name.clone(),
                passed: false,
                message: Some(format!("the query failed: {e}")),
            },
        };
        results.push(result);
    }
    Ok(results)
}
