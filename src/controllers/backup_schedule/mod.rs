//! BackupSchedule controller: resolve (schedule, environment, destination) → decide (pure, `plan.rs`) →
//! act (start a backup task, record a missed slot, clean up after an interrupted backup) → status.
//!
//! A backup never runs inside the reconcile: it is a tracked task per schedule (`run.rs`) that writes the
//! schedule's status itself when it ends; while it runs, the reconcile leaves the status alone. Every
//! status write is checked against the `resourceVersion` it was computed from, so the reconcile, the
//! task and a MigrationRun's pre-migration backup (`taker.rs`) never overwrite each other's records.

mod archive;
mod base;
pub mod destination;
pub mod pipeline;
pub mod plan;
pub mod prune;
pub mod run;
pub mod taker;
pub mod wal;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use tracing::instrument;

use super::{Context, Error, conditions, drain, error_policy, instrumented, references, status};
use crate::{
    api::{
        BackupSchedule, BackupScheduleStatus, DatabaseEnvironment, RestoreDrill,
        backup_schedule::{BackupPhase, BackupRecord},
        common::ConnectionSecretRef,
    },
    domain::{manifest::EnvironmentRef, schedule as slots},
    storage::BackupStore,
};

pub use plan::Step;

pub const CONTROLLER: &str = "backupschedule";
/// The condition saying the newest finished backup failed.
pub const CONDITION_BACKUP_FAILING: &str = "BackupFailing";
/// The condition saying a restore drill passed on this schedule's backups recently enough.
pub const CONDITION_RECOVERABLE: &str = "Recoverable";
/// Default of `spec.recoverableWithin`.
pub const DEFAULT_RECOVERABLE_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// A schedule is looked at again at least this often (its next slot, a clock that moved).
const RECHECK: Duration = Duration::from_secs(300);
/// While a backup task runs, its schedule is looked at again this often (an in-memory check).
const TASK_CHECK: Duration = Duration::from_secs(5);
/// A due backup whose environment is not Ready yet is looked at again this often.
const ENVIRONMENT_WAIT: Duration = Duration::from_secs(10);

/// What the BackupSchedule controller keeps: the shared context and one tracked backup task per
/// schedule. The operator makes one and hands it to this controller and to MigrationRun's backups
/// (`taker.rs`), so a pre-migration backup runs as its schedule's task.
pub struct Backups {
    pub ctx: Arc<Context>,
    pub tasks: super::tasks::Tasks<()>,
    /// One WAL archiver per schedule with `spec.wal.enabled`.
    pub archivers: super::tasks::Tasks<wal::Running>,
}

impl Backups {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            tasks: Default::default(),
            archivers: Default::default(),
        }
    }

    /// Aborts every backup task (the operator stopping hard, as a dead process's).
    pub fn abort_all(&self) {
        self.tasks.abort_all();
        self.archivers.abort_all();
    }
}

pub async fn controller(backups: Arc<Backups>, shutdown: super::Shutdown) {
    let ctx = backups.ctx.clone();
    let policy = error_policy::<BackupSchedule>(CONTROLLER);
    let schedules =
        super::watch::controller(&ctx.watched_api::<BackupSchedule>(), ctx.client.clone());
    let store = schedules.store();
    let stream = schedules
        .watches_stream(
            super::watch::objects(
                &ctx.watched_api::<DatabaseEnvironment>(),
                ctx.client.clone(),
            ),
            super::watch::referencing(store, |s: &BackupSchedule| &s.spec.environment_ref.name),
        )
        // A drill that finishes moves `lastVerifiedRestore` and `Recoverable`.
        .watches_stream(
            super::watch::objects(&ctx.watched_api::<RestoreDrill>(), ctx.client.clone()),
            |d: RestoreDrill| {
                Some(
                    kube::runtime::reflector::ObjectRef::<BackupSchedule>::new(
                        &d.spec.backup_schedule_ref.name,
                    )
                    .within(&d.namespace()?),
                )
            },
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            reconcile,
            move |schedule, error, backups: Arc<Backups>| {
                policy(schedule, error, backups.ctx.clone())
            },
            backups.clone(),
        );
    drain(CONTROLLER, stream).await;
    backups.tasks.abort_all();
}

#[instrument(skip(cached, backups), fields(namespace = cached.namespace().unwrap_or_default(), name = cached.name_any()))]
async fn reconcile(cached: Arc<BackupSchedule>, backups: Arc<Backups>) -> Result<Action, Error> {
    let ctx = backups.ctx.clone();
    instrumented(CONTROLLER, cached.clone(), ctx.clone(), async move {
        let uid = cached.uid().unwrap_or_default();
        if backups.tasks.is_running(&uid) {
            // The task writes the status when it ends, but a reconcile woken by that write can still
            // see the task finishing (retention runs after it): look again soon, not at RECHECK.
            return Ok(Action::requeue(TASK_CHECK));
        }
        // Read fresh, not from the cache: the status decides whether a Running backup was interrupted.
        let api: Api<BackupSchedule> =
            Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
        let Some(schedule) = api.get_opt(&cached.name_any()).await? else {
            wal::stop(&backups, &uid).await;
            // Deleted: its per-schedule gauges go too, or alerts would fire for a schedule that is gone.
            let labels = labels(&cached);
            ctx.metrics.backup_last_success.remove(&labels);
            ctx.metrics.backup_interval.remove(&labels);
            ctx.metrics.backup_failing.remove(&labels);
            ctx.metrics.backup_recoverable.remove(&labels);
            ctx.metrics.wal_archive_lag.remove(&labels);
            return Ok(Action::await_change());
        };
        match resolve(&schedule, &ctx).await {
            Ok(Resolved {
                destination_check: Some(check),
                ..
            }) => {
                // Recorded first; the next reconcile acts on the fresh object (a check is not due).
                write(&ctx, &schedule, |s| s.destination_check = Some(check)).await?;
                Ok(Action::requeue(Duration::from_millis(200)))
            }
            Ok(resolved) => {
                wal::reconcile(&backups, &schedule, &resolved).await?;
                act(&schedule, &backups, resolved).await
            }
            Err(e) => {
                let verdict = status::verdict_for(&e);
                status::write_checked(ctx.as_ref(), &schedule, &verdict, |_| {}).await?;
                Err(e)
            }
        }
    })
    .await
}

/// What the reconcile read and checked.
pub struct Resolved {
    /// A check of the destination that passed now, to record (`None`: none was due).
    pub destination_check: Option<crate::api::backup_schedule::DestinationCheck>,
    pub parsed: super::schedule::Schedule,
    pub store: BackupStore,
    pub environment: DatabaseEnvironment,
}

/// Reads the schedule, the environment and the destination (its credentials Secret).
pub async fn resolve(schedule: &BackupSchedule, ctx: &Context) -> Result<Resolved, Error> {
    let ns = schedule.namespace().unwrap_or_default();
    let parsed = super::schedule::parse(
        &schedule.spec.schedule,
        schedule.spec.time_zone.as_deref(),
        "spec.schedule",
    )?;
    let environment: DatabaseEnvironment = references::lifeboat_object(
        ctx,
        &ns,
        &schedule.spec.environment_ref.name,
        "EnvironmentNotFound",
    )
    .await?;
    super::engine::require(environment.spec.engine, crate::engines::Capability::Backup)?;
    let (store, secret_version) = super::backup_store::with_secret_version(ctx, schedule).await?;
    let destination_check = destination::ensure(schedule, &store, &secret_version).await?;
    Ok(Resolved {
        destination_check,
        parsed,
        store,
        environment,
    })
}

async fn act(
    schedule: &BackupSchedule,
    backups: &Backups,
    resolved: Resolved,
) -> Result<Action, Error> {
    let ctx = &backups.ctx;
    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .map(plan::to_chrono)
        .unwrap_or_else(Utc::now);
    let now = Utc::now();
    let current = schedule.status.clone().unwrap_or_default();
    let step = plan::decide(&schedule.spec, &current, &resolved.parsed, created, now);
    let next = slots::next_slot(&resolved.parsed.cron, resolved.parsed.time_zone, now);
    ctx.metrics
        .backup_interval
        .get_or_create(&labels(schedule))
        .set(interval_seconds(&resolved.parsed, now));
    match step {
        Step::Interrupted { id } => {
            interrupted(schedule, ctx, &resolved.store, &id).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Missed { slot, late_seconds } => {
            missed(schedule, ctx, slot, late_seconds).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Wait { next: due } => {
            write(ctx, schedule, |s| {
                s.next_schedule_time = due
                    .or(next)
                    .filter(|_| !schedule.spec.suspend)
                    .map(plan::to_time);
            })
            .await?;
            let wait = due
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .map_or(RECHECK, |d| d.min(RECHECK));
            Ok(Action::requeue(wait.max(Duration::from_millis(200))))
        }
        Step::Run {
            id,
            kind,
            slot,
            trigger,
        } => {
            let due = Due {
                id,
                kind,
                slot,
                trigger,
                next,
            };
            run_due(schedule, backups, resolved, due).await
        }
    }
}

/// Records a slot missed past `startingDeadlineSeconds` as handled, with a warning event.
async fn missed(
    schedule: &BackupSchedule,
    ctx: &Context,
    slot: chrono::DateTime<Utc>,
    late_seconds: u64,
) -> Result<(), Error> {
    ctx.publish(
        schedule,
        EventType::Warning,
        "Missed",
        format!(
            "The backup due at {slot} was not taken: it is {late_seconds} s late, past startingDeadlineSeconds ({}).",
            schedule.spec.starting_deadline_seconds.unwrap_or_default()
        ),
    )
    .await;
    write(ctx, schedule, |s| {
        s.last_schedule_time = Some(plan::to_time(slot));
    })
    .await
}

/// A backup that is due ([`Step::Run`]) and the schedule's next slot after now.
struct Due {
    id: String,
    kind: &'static str,
    slot: Option<chrono::DateTime<Utc>>,
    trigger: Option<String>,
    next: Option<chrono::DateTime<Utc>>,
}

/// Starts the due backup once the environment is Ready (until then says so and looks again soon).
async fn run_due(
    schedule: &BackupSchedule,
    backups: &Backups,
    resolved: Resolved,
    due: Due,
) -> Result<Action, Error> {
    let ctx = &backups.ctx;
    let Due {
        id,
        kind,
        slot,
        trigger,
        next,
    } = due;
    if !conditions::is_ready(
        resolved
            .environment
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        resolved.environment.metadata.generation,
    ) {
        let verdict = conditions::Verdict::Reconciling {
            reason: "EnvironmentNotReady",
            message: format!(
                "Backup {id} is due; waiting for DatabaseEnvironment {} to become Ready.",
                resolved.environment.name_any()
            ),
        };
        status::write_checked(ctx.as_ref(), schedule, &verdict, |_| {}).await?;
        return Ok(Action::requeue(ENVIRONMENT_WAIT));
    }
    let job = job(ctx, schedule, &resolved, id, kind).await?;
    run::start(backups, schedule, job, run::Slot::Acquire, move |s| {
        if let Some(slot) = slot {
            s.last_schedule_time = Some(plan::to_time(slot));
        }
        if let Some(t) = trigger {
            s.last_handled_trigger = Some(t);
        }
        s.next_schedule_time = next.filter(|_| !schedule.spec.suspend).map(plan::to_time);
    })
    .await?;
    Ok(Action::requeue(RECHECK))
}

/// Builds a backup job for the environment of `schedule`.
pub async fn job(
    ctx: &Context,
    schedule: &BackupSchedule,
    resolved: &Resolved,
    id: String,
    kind: &'static str,
) -> Result<pipeline::Job, Error> {
    let env = &resolved.environment;
    let ns = env.namespace().unwrap_or_default();
    let engine = super::engine::kind(env.spec.engine);
    // The environment's own Secret: its credentials, and the key naming its part of the server (a
    // Redis environment owning its whole server has an empty key prefix).
    let secret = ConnectionSecretRef {
        name: env.connection_secret_name(),
        keys: Some(crate::api::common::ConnectionSecretKeys {
            database: Some(
                crate::engines::connection_details(engine)
                    .scope_key()
                    .into(),
            ),
            ..Default::default()
        }),
    };
    let field = "the environment's connection Secret";
    let key_prefix_may_be_empty = crate::engines::tenancy(engine).is_some();
    let (creds, database) =
        references::engine_credentials(ctx, engine, &ns, &secret, field, !key_prefix_may_be_empty)
            .await?;
    Ok(pipeline::Job {
        id,
        kind,
        engine,
        environment: EnvironmentRef {
            namespace: ns,
            name: env.name_any(),
        },
        creds,
        database: database.unwrap_or_default(),
        store: resolved.store.clone(),
        compression: schedule.spec.compression,
        verify: schedule.spec.verify,
        checksums: schedule.spec.table_checks
            == crate::api::backup_schedule::TableChecks::Checksums,
        tools: ctx.config.tools(),
        lock_wait: ctx.config.work_timeout(),
        base_backup: (schedule.spec.wal.as_ref().is_some_and(|w| w.enabled)
            && wal::refusal(env).is_none())
        .then(|| schedule.uid().unwrap_or_default()),
    })
}

/// A backup recorded `Running` whose task is gone (the operator stopped during it): it failed; its
/// objects are removed so it never counts as a backup.
async fn interrupted(
    schedule: &BackupSchedule,
    ctx: &Context,
    store: &BackupStore,
    id: &str,
) -> Result<(), Error> {
    let removed = store.delete_backup(id).await;
    let mut record = schedule
        .status
        .as_ref()
        .and_then(|s| s.recent_backups.iter().find(|r| r.id == id).cloned())
        .unwrap_or_default();
    record.id = id.to_string();
    record.phase = BackupPhase::Failed;
    record.finished_at = Some(plan::to_time(Utc::now()));
    record.reason = Some("Interrupted".into());
    record.message = Some(match &removed {
        Ok(()) => {
            "the operator stopped while this backup ran; its partial objects were removed".into()
        }
        Err(e) => format!(
            "the operator stopped while this backup ran; removing its partial objects failed ({e}), retention retries"
        ),
    });
    ctx.metrics
        .backups
        .get_or_create(&crate::telemetry::OutcomeLabels {
            phase: "Failed",
            reason: "Interrupted",
        })
        .inc();
    ctx.publish(
        schedule,
        EventType::Warning,
        "BackupInterrupted",
        format!("Backup {id} was interrupted by an operator restart and is marked failed."),
    )
    .await;
    write(ctx, schedule, |s| plan::record(s, record)).await
}

/// Writes the status of `schedule` (checked against its resourceVersion) with `update` applied, the
/// verdict and `BackupFailing` computed from the result.
pub async fn write(
    ctx: &Context,
    schedule: &BackupSchedule,
    update: impl FnOnce(&mut BackupScheduleStatus),
) -> Result<(), Error> {
    let mut next = schedule.status.clone().unwrap_or_default();
    update(&mut next);
    let drills = drills_of(ctx, schedule).await;
    let within = schedule
        .spec
        .recoverable_within
        .map(Into::into)
        .unwrap_or(DEFAULT_RECOVERABLE_WITHIN);
    let (verified, recoverable) = plan::recoverable(&drills, Utc::now(), within);
    next.last_verified_restore = verified;
    ctx.metrics
        .backup_recoverable
        .get_or_create(&labels(schedule))
        .set(i64::from(recoverable.0));
    let verdict = plan::verdict(&next, schedule.spec.suspend);
    let wal_condition = wal::condition(schedule.spec.wal.as_ref(), next.wal.as_ref());
    wal_lag_metric(ctx, schedule, wal_condition.is_some(), &next);
    let (failing, reason, message) = plan::failing(&next);
    let generation = schedule.metadata.generation;
    ctx.metrics
        .backup_failing
        .get_or_create(&labels(schedule))
        .set(i64::from(failing));
    if let Some(t) = next
        .last_successful_backup
        .as_ref()
        .and_then(|r| r.finished_at.as_ref())
    {
        ctx.metrics
            .backup_last_success
            .get_or_create(&labels(schedule))
            .set(t.0.as_second());
    }
    status::write_checked(ctx, schedule, &verdict, move |s| {
        *s = BackupScheduleStatus {
            conditions: std::mem::take(&mut s.conditions),
            ..next
        };
        conditions::set_condition(
            &mut s.conditions,
            CONDITION_BACKUP_FAILING,
            failing,
            &reason,
            &message,
            generation,
            k8s_openapi::jiff::Timestamp::now(),
        );
        let (ok, reason, message) = recoverable;
        conditions::set_condition(
            &mut s.conditions,
            CONDITION_RECOVERABLE,
            ok,
            reason,
            &message,
            generation,
            k8s_openapi::jiff::Timestamp::now(),
        );
        match wal_condition {
            Some((ok, reason, message)) => conditions::set_condition(
                &mut s.conditions,
                wal::CONDITION,
                ok,
                reason,
                &message,
                generation,
                k8s_openapi::jiff::Timestamp::now(),
            ),
            None => s.conditions.retain(|c| c.type_ != wal::CONDITION),
        }
    })
    .await
}

/// `lifeboat_wal_archive_lag_seconds` of the schedule while it archives WAL (and has archived some).
fn wal_lag_metric(ctx: &Context, schedule: &BackupSchedule, on: bool, next: &BackupScheduleStatus) {
    match wal::lag(next.wal.as_ref(), Utc::now()).filter(|_| on) {
        Some(lag) => {
            ctx.metrics
                .wal_archive_lag
                .get_or_create(&labels(schedule))
                .set(lag);
        }
        None => {
            ctx.metrics.wal_archive_lag.remove(&labels(schedule));
        }
    }
}

/// The RestoreDrills of the schedule's namespace that restore its backups (none when they cannot be
/// listed: `Recoverable` then says no drill passed, which is what can be shown).
async fn drills_of(ctx: &Context, schedule: &BackupSchedule) -> Vec<RestoreDrill> {
    let api: Api<RestoreDrill> = Api::namespaced(
        ctx.client.clone(),
        &schedule.namespace().unwrap_or_default(),
    );
    match api.list(&Default::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|d| d.spec.backup_schedule_ref.name == schedule.name_any())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not list RestoreDrills for Recoverable");
            Vec::new()
        }
    }
}

fn labels(schedule: &BackupSchedule) -> crate::telemetry::ScheduleLabels {
    crate::telemetry::ScheduleLabels {
        namespace: schedule.namespace().unwrap_or_default(),
        name: schedule.name_any(),
    }
}

/// Seconds between the next two slots.
fn interval_seconds(parsed: &super::schedule::Schedule, now: chrono::DateTime<Utc>) -> i64 {
    let first = slots::next_slot(&parsed.cron, parsed.time_zone, now);
    let second = first.and_then(|f| slots::next_slot(&parsed.cron, parsed.time_zone, f));
    match (first, second) {
        (Some(a), Some(b)) => (b - a).num_seconds(),
        _ => 0,
    }
}

/// A record for a backup that starts now.
pub fn running_record(id: &str, kind: &str) -> BackupRecord {
    BackupRecord {
        id: id.to_string(),
        phase: BackupPhase::Running,
        started_at: Some(plan::to_time(Utc::now())),
        kind: Some(kind.to_string()),
        ..Default::default()
    }
}
