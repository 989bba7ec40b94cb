//! One drill, start to result: pick the backup → fresh scratch database and role → stream the dump from
//! storage through decompression into `pg_restore`, checking its size and SHA-256 on the way → checks
//! against the manifest and the named queries → RTO and RPO → the scratch database dropped (or kept
//! on failure when asked). Every failure ends in a `Failed` run that names its cause.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::instance::ScratchEnvironment;
use crate::controllers::{Context, restore};
use crate::{
    api::restore_drill::{CheckResult, DrillChecks, DrillResult, DrillRun},
    controllers::clock::to_time,
    domain::manifest::Manifest,
    engines::{self, ENGINE, Kind, Restore, RestoreReport, ServerCredentials, Tenancy, Tools},
    storage::BackupStore,
};

/// Everything one drill needs, resolved by the reconcile.
#[derive(Clone, Debug)]
pub struct Job {
    pub drill_uid: String,
    /// The engine of the schedule's environment (PostgreSQL when the environment is gone).
    pub engine: Kind,
    pub backup_id: Option<String>,
    pub store: BackupStore,
    pub target: Target,
    pub checks: DrillChecks,
    pub keep_on_failure: bool,
    pub tools: Tools,
    /// Parallel `pg_restore` jobs (spooled above 1).
    pub jobs: u32,
    pub spool: restore::Spool,
    pub generation: Option<i64>,
}

/// Where the drill restores.
#[derive(Clone, Debug)]
pub enum Target {
    /// A scratch database and role on this server, created and dropped with its admin credentials.
    Server(ServerCredentials),
    /// A dedicated instance started for the drill.
    Instance(Box<ScratchEnvironment>),
}

impl Job {
    /// Removes what a run left on its target (the scratch database and role, or the instance); returns
    /// what was removed.
    pub async fn clean_up(&self, ctx: &Context) -> Result<Vec<String>, String> {
        match &self.target {
            Target::Server(admin) if let Some(tenancy) = engines::tenancy(self.engine) => {
                let prefix = tenancy.scratch_prefix(&self.drill_uid);
                let keys = tenancy
                    .clear(admin, &prefix)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((keys > 0)
                    .then(|| format!("{keys} key(s) under {prefix}"))
                    .into_iter()
                    .collect())
            }
            Target::Server(admin) => ENGINE
                .drop_scratch(admin, &ENGINE.scratch_target(&self.drill_uid))
                .await
                .map_err(|e| e.to_string()),
            Target::Instance(env) => Ok(env
                .remove(ctx)
                .await?
                .then(|| format!("DatabaseEnvironment {}", env.name))
                .into_iter()
                .collect()),
        }
    }

    /// What a kept target is called in status.
    fn kept(&self) -> String {
        match &self.target {
            Target::Server(_) if let Some(tenancy) = engines::tenancy(self.engine) => {
                format!("keys under {}", tenancy.scratch_prefix(&self.drill_uid))
            }
            Target::Server(_) => ENGINE.scratch_target(&self.drill_uid).database,
            Target::Instance(env) => format!("DatabaseEnvironment {}", env.name),
        }
    }

    /// A fresh, empty database to restore into: its credentials and name.
    async fn prepare(&self, ctx: &Context) -> Result<(ServerCredentials, String), Failed> {
        match &self.target {
            Target::Server(admin) => {
                let target = ENGINE.scratch_target(&self.drill_uid);
                let scratch = ENGINE
                    .create_scratch(admin, &target)
                    .await
                    .map_err(|e| Failed(format!("creating the scratch database: {e}")))?;
                Ok((scratch, target.database))
            }
            Target::Instance(env) => env.start(ctx).await.map_err(Failed),
        }
    }
}

/// A failed step: what the run reports.
struct Failed(String);

/// Runs the drill; never fails, the run says what happened.
pub async fn run(ctx: &Context, job: &Job) -> DrillRun {
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
    // The data is as of the snapshot, taken when the backup started: that is the point returned to.
    run.rpo_seconds = Some((started - manifest.started_at).num_seconds().max(0));
    let clock = Instant::now();
    let archive_engine = Kind::from_name(&manifest.engine).and_then(engines::tenancy);
    let outcome = async {
        if let Some(tenancy) = archive_engine {
            return restore_archive(job, tenancy, &manifest, &mut run, clock).await;
        }
        let (scratch, database) = job.prepare(ctx).await?;
        let method = restore::restore_into(
            &job.tools, &job.store, &manifest, &scratch, &database, job.jobs, &job.spool,
        )
        .await
        .map_err(Failed)?;
        run.restore_method = Some(method.describe());
        run.restore_seconds = Some(clock.elapsed().as_secs() as i64);
        let verify = Instant::now();
        run.checks = checks(job, &manifest, &scratch, &database).await?;
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
        run.kept_database = Some(job.kept());
    } else if let Err(e) = job.clean_up(ctx).await {
        tracing::warn!(target = %job.kept(), error = %e, "could not remove the drill's scratch database; the next drill or the RestoreDrill's deletion removes it");
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

/// Restores an engine's own archive (Redis) under the drill's scratch prefix on the target server,
/// then compares key counts (and name checksums) with the manifest and checks that TTLs were kept.
async fn restore_archive(
    job: &Job,
    tenancy: &dyn Tenancy,
    manifest: &Manifest,
    run: &mut DrillRun,
    clock: Instant,
) -> Result<(), Failed> {
    let product = tenancy.kind().product();
    let Target::Server(admin) = &job.target else {
        return Err(Failed(format!(
            "backup {} is a {product} backup: it is restored on a server (spec.target.server); instance targets are PostgreSQL's in this release",
            manifest.id
        )));
    };
    if !job.checks.queries.is_empty() {
        return Err(Failed(format!(
            "checks.queries are SQL; a {product} drill checks key counts, name checksums and TTLs: remove checks.queries"
        )));
    }
    let prefix = tenancy.scratch_prefix(&job.drill_uid);
    // What an interrupted run left.
    tenancy
        .clear(admin, &prefix)
        .await
        .map_err(|e| Failed(format!("clearing the scratch prefix {prefix}: {e}")))?;
    let report = crate::controllers::restore_archive::restore_archive(
        tenancy, &job.store, manifest, admin, &prefix,
    )
    .await
    .map_err(Failed)?;
    run.restore_method = Some(format!(
        "RESTORE of {} key(s) under {prefix} on the target server",
        report.keys
    ));
    run.restore_seconds = Some(clock.elapsed().as_secs() as i64);
    let verify = Instant::now();
    let want_checksums = job.checks.checksums;
    if job.checks.row_counts || want_checksums {
        let restored = tenancy
            .stats(admin, &prefix, want_checksums)
            .await
            .map_err(|e| Failed(format!("counting the restored keys: {e}")))?;
        if job.checks.row_counts {
            run.checks.push(restore::compare_tables(
                "rowCounts",
                &manifest.tables,
                &restored,
                false,
            ));
        }
        if want_checksums {
            run.checks.push(if manifest.tables.iter().any(|t| t.checksum.is_none()) {
                CheckResult {
                    name: "checksums".into(),
                    passed: false,
                    message: Some(format!(
                        "backup {} recorded key counts only (its schedule has tableChecks: rowCounts); nothing to compare checksums with",
                        manifest.id
                    )),
                }
            } else {
                restore::compare_tables("checksums", &manifest.tables, &restored, true)
            });
        }
    }
    run.checks.push(ttl_check(&report));
    run.verify_seconds = Some(verify.elapsed().as_secs() as i64);
    Ok(())
}

/// How far a restored TTL may fall short of the recorded one (the time one batch takes, with room).
pub const TTL_TOLERANCE_MS: i64 = 60_000;

/// Whether the restore kept every key's TTL (pure).
pub fn ttl_check(report: &RestoreReport) -> CheckResult {
    let passed = report.ttl_lost == 0 && report.max_ttl_drift_ms <= TTL_TOLERANCE_MS;
    CheckResult {
        name: "ttls".into(),
        passed,
        message: Some(if report.ttl_lost > 0 {
            format!(
                "{} of {} key(s) with a TTL lost it in the restore",
                report.ttl_lost, report.expiring
            )
        } else {
            format!(
                "{} key(s) kept their TTL (at most {} ms short of the recorded one; {} ms allowed)",
                report.expiring, report.max_ttl_drift_ms, TTL_TOLERANCE_MS
            )
        }),
    }
}

fn finish(mut run: DrillRun, why: String) -> DrillRun {
    run.result = DrillResult::Failed;
    run.finished_at = Some(to_time(Utc::now()));
    run.message = Some(crate::controllers::truncate(&why, 1500));
    run
}

/// The backup to restore and its manifest; also records how old the newest backup was at the start.
async fn pick(job: &Job, started: DateTime<Utc>, run: &mut DrillRun) -> Result<Manifest, Failed> {
    if let Some(id) = &job.backup_id {
        run.backup_id = id.clone();
    }
    let (manifest, newest_at) = restore::pick(&job.store, job.backup_id.as_deref())
        .await
        .map_err(Failed)?;
    run.newest_backup_age_seconds = newest_at.map(|at| (started - at).num_seconds().max(0));
    Ok(manifest)
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
        let restored = ENGINE
            .restored_stats(scratch, database, want_checksums)
            .await
            .map_err(|e| Failed(format!("reading the restored tables: {e}")))?;
        if job.checks.row_counts {
            results.push(restore::compare_tables(
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
                results.push(restore::compare_tables(
                    "checksums",
                    &manifest.tables,
                    &restored,
                    true,
                ));
            }
        }
    }
    for q in &job.checks.queries {
        let result = match ENGINE.query_value(scratch, database, &q.sql).await {
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
