//! Starting a backup and recording its end: the `Running` record is written before the task starts (so a
//! restart finds it and marks it interrupted, never taken twice), the task waits for a work slot, runs the
//! pipeline under `--work-timeout`, records the result, applies retention, and answers whoever waits.

use std::time::Instant;

use chrono::Utc;
use kube::{Api, ResourceExt};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Backups, Context, Error, pipeline, plan, prune};
use crate::{
    api::{
        BackupSchedule, BackupScheduleStatus,
        backup_schedule::{BackupPhase, BackupRecord},
    },
    domain::manifest::Manifest,
    telemetry::OutcomeLabels,
};

/// Status writes at the end of a backup are tried this many times (a conflict re-reads and retries).
const WRITE_ATTEMPTS: u32 = 6;

/// What a backup ended with.
pub type Outcome = Result<Manifest, pipeline::Failure>;

/// Whether a backup task takes a work slot of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A scheduled or manual backup waits for a slot like any database work.
    Acquire,
    /// The caller (a MigrationRun backing up first) already holds a slot of the namespace: waiting for
    /// a second one could wait forever with `--max-concurrent-work-per-namespace 1`.
    HeldByCaller,
}

/// Records `job` as running (with `update` applied to the status in the same write) and starts its
/// task. The receiver gets the outcome once it is recorded.
pub async fn start(
    backups: &Backups,
    schedule: &BackupSchedule,
    job: pipeline::Job,
    slot: Slot,
    update: impl FnOnce(&mut BackupScheduleStatus),
) -> Result<oneshot::Receiver<Outcome>, Error> {
    let record = super::running_record(&job.id, job.kind);
    let (tx, rx) = oneshot::channel();
    // The task exists before the Running record does, so a reconcile in between never takes the record
    // for an interrupted backup; it starts work only once the record is written.
    let (go, gate) = oneshot::channel::<()>();
    let uid = schedule.uid().unwrap_or_default();
    let (ns, name) = (
        schedule.namespace().unwrap_or_default(),
        schedule.name_any(),
    );
    let retention = schedule.spec.retention.clone();
    let tz = schedule.spec.time_zone.clone();
    let ctx = &backups.ctx;
    let task_ctx = ctx.clone();
    backups.tasks.spawn(&uid, move |_| async move {
        if gate.await.is_err() {
            return; // the Running record could not be written: nothing was started
        }
        let ctx = task_ctx;
        let outcome = execute(&ctx, &ns, &job, slot).await;
        let record = finished_record(&job, &outcome);
        if let Err(e) = record_result(&ctx, &ns, &name, record).await {
            // The Running record stays; the next reconcile marks it interrupted and removes the objects
            // of a backup whose success could not be recorded (so status and storage agree).
            warn!(schedule = %name, backup = %job.id, error = %e, "could not record the backup's result");
        } else if outcome.is_ok() {
            prune::apply(&job.store, retention.as_ref(), tz.as_deref(), &job.id).await;
        }
        let _ = tx.send(outcome);
    });
    super::write(ctx, schedule, |s| {
        update(s);
        plan::record(s, record);
    })
    .await?;
    let _ = go.send(());
    Ok(rx)
}

async fn execute(ctx: &Context, ns: &str, job: &pipeline::Job, slot: Slot) -> Outcome {
    let _permit = match slot {
        Slot::HeldByCaller => None,
        Slot::Acquire => {
            if !ctx.slots.available(ns) {
                info!(backup = %job.id, "waiting for a free work slot");
            }
            Some(ctx.slots.acquire(ns).await)
        }
    };
    let started = Instant::now();
    let timeout = ctx.config.work_timeout();
    let outcome = match tokio::time::timeout(timeout, pipeline::take(job)).await {
        Ok(o) => o,
        Err(_) => {
            let _ = job.store.delete_backup(&job.id).await;
            Err(pipeline::Failure {
                reason: "WorkTimedOut",
                message: format!("the backup took longer than the work timeout ({timeout:?})"),
            })
        }
    };
    let (phase, reason) = match &outcome {
        Ok(m) => {
            ctx.metrics.backup_bytes.inc_by(m.dump.size_bytes);
            ("Succeeded", "BackupSucceeded")
        }
        Err(f) => ("Failed", f.reason),
    };
    ctx.metrics
        .backups
        .get_or_create(&OutcomeLabels { phase, reason })
        .inc();
    ctx.metrics
        .backup_duration
        .observe(started.elapsed().as_secs_f64());
    info!(backup = %job.id, phase, reason, seconds = started.elapsed().as_secs_f64(), "backup finished");
    outcome
}

fn finished_record(job: &pipeline::Job, outcome: &Outcome) -> BackupRecord {
    let mut record = super::running_record(&job.id, job.kind);
    match outcome {
        Ok(m) => {
            record.phase = BackupPhase::Succeeded;
            record.started_at = Some(plan::to_time(m.started_at));
            record.finished_at = Some(plan::to_time(m.finished_at));
            record.size_bytes = i64::try_from(m.dump.size_bytes).ok();
            record.sha256 = Some(m.dump.sha256.clone());
        }
        Err(f) => {
            record.phase = BackupPhase::Failed;
            record.finished_at = Some(plan::to_time(Utc::now()));
            record.reason = Some(f.reason.to_string());
            record.message = Some(crate::controllers::truncate(&f.message, 1500));
        }
    }
    record
}

/// Writes the finished record on the schedule as it is now (re-read on conflict). Keeps the started time of the `Running` record.
async fn record_result(
    ctx: &Context,
    ns: &str,
    name: &str,
    mut record: BackupRecord,
) -> Result<(), Error> {
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), ns);
    let mut attempt = 0;
    loop {
        let Some(schedule) = api.get_opt(name).await? else {
            return Ok(()); // deleted meanwhile: nothing to record on
        };
        if let Some(started) = schedule
            .status
            .as_ref()
            .and_then(|s| s.recent_backups.iter().find(|r| r.id == record.id))
            .and_then(|r| r.started_at.clone())
            && record.phase == BackupPhase::Failed
        {
            record.started_at = Some(started);
        }
        match super::write(ctx, &schedule, |s| plan::record(s, record.clone())).await {
            // The event is the status's: every backup moves Ready from BackupRunning to
            // BackupSucceeded or BackupFailed, and status::write publishes that transition once.
            Ok(()) => return Ok(()),
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 && attempt < WRITE_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) if attempt < WRITE_ATTEMPTS => {
                attempt += 1;
                warn!(error = %e, "recording a backup failed; retrying");
                tokio::time::sleep(crate::controllers::error::backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
