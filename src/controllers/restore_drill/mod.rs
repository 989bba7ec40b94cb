//! RestoreDrill controller: resolve (the BackupSchedule and its storage, the target's admin Secret) →
//! decide (pure, `plan.rs`: run now, or wait for the next slot) → act (a tracked task runs the drill,
//! `drill.rs`) → status (`lastRun`, a bounded history, `ObjectivesMet`).
//!
//! The scratch database and role have one name per drill (from its UID) and carry its marker: each run
//! first drops what an interrupted run left, and the finalizer drops them when the RestoreDrill is
//! deleted, also mid-drill. A passed drill leaves `restore-drill.json` beside its backup, which
//! retention keeps.

pub mod drill;
pub mod instance;
pub mod plan;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
    },
};
use tracing::{instrument, warn};

use super::{
    Context, Error, clock, conditions, drain, error_policy, instrumented, references, status,
};
use crate::{
    api::{
        BackupSchedule, RestoreDrill, RestoreDrillStatus,
        restore_drill::{CONDITION_OBJECTIVES_MET, DrillResult, DrillRun},
    },
    engines::{ENGINE, Restore, ServerCredentials},
    storage::DRILL_OBJECT,
    telemetry::OutcomeLabels,
};

pub use plan::Step;

pub const CONTROLLER: &str = "restoredrill";
/// Finalizer on drills with a server target: the scratch database is dropped before the object goes.
pub const FINALIZER: &str = "lifeboat.dev/drill-cleanup";
/// A waiting drill is looked at again at least this often.
const RECHECK: Duration = Duration::from_secs(300);
/// While a drill task runs, the drill is looked at again this often (an in-memory check).
const TASK_CHECK: Duration = Duration::from_secs(5);
/// Status writes at the end of a drill are tried this many times.
const WRITE_ATTEMPTS: u32 = 6;

/// What the RestoreDrill controller keeps: the shared context and the drill tasks of this process, by
/// drill UID.
pub struct Drills {
    pub ctx: Arc<Context>,
    pub tasks: super::tasks::Tasks<()>,
}

impl Drills {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            tasks: Default::default(),
        }
    }

    /// Aborts every drill task (the operator stopping hard, as a dead process's).
    pub fn abort_all(&self) {
        self.tasks.abort_all();
    }
}

pub async fn controller(state: Arc<Drills>, shutdown: super::Shutdown) {
    let ctx = state.ctx.clone();
    let policy = error_policy::<RestoreDrill>(CONTROLLER);
    let drills = super::watch::controller(&ctx.watched_api::<RestoreDrill>(), ctx.client.clone());
    let store = drills.store();
    let stream = drills
        .watches_stream(
            super::watch::objects(&ctx.watched_api::<BackupSchedule>(), ctx.client.clone()),
            super::watch::referencing(store, |d: &RestoreDrill| &d.spec.backup_schedule_ref.name),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            reconcile,
            move |drill, error, state: Arc<Drills>| policy(drill, error, state.ctx.clone()),
            state,
        );
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(drill, state), fields(namespace = drill.namespace().unwrap_or_default(), name = drill.name_any()))]
async fn reconcile(drill: Arc<RestoreDrill>, state: Arc<Drills>) -> Result<Action, Error> {
    let ctx = state.ctx.clone();
    instrumented(CONTROLLER, drill.clone(), ctx.clone(), async move {
        let api: Api<RestoreDrill> =
            Api::namespaced(ctx.client.clone(), &drill.namespace().unwrap_or_default());
        finalizer(&api, FINALIZER, drill, |event| async {
            match event {
                finalizer::Event::Apply(d) => apply(d, &state).await,
                finalizer::Event::Cleanup(d) => cleanup(d, &state).await,
            }
        })
        .await
        .map_err(super::error::from_finalizer)
    })
    .await
}

/// What the reconcile read and checked.
struct Resolved {
    schedule: Option<super::schedule::Schedule>,
    job: drill::Job,
}

async fn resolve(drill: &RestoreDrill, ctx: &Context) -> Result<Resolved, Error> {
    let ns = drill.namespace().unwrap_or_default();
    let schedule = drill
        .spec
        .schedule
        .as_deref()
        .map(|e| super::schedule::parse(e, drill.spec.time_zone.as_deref(), "spec.schedule"))
        .transpose()?;
    let backups: BackupSchedule = references::lifeboat_object(
        ctx,
        &ns,
        &drill.spec.backup_schedule_ref.name,
        "BackupScheduleNotFound",
    )
    .await?;
    let store = super::backup_store::for_schedule(ctx, &backups).await?;
    let engine = drill_engine(ctx, &ns, &backups, drill.spec.backup_id.as_deref())
        .await?
        .unwrap_or(crate::engines::Kind::Postgres);
    engine
        .require(crate::engines::Capability::RestoreDrill)
        .map_err(super::engine::unsupported)?;
    let target = match &drill.spec.target.instance {
        // The image is checked where every instance's is: a refused one stalls the environment, and
        // the drill fails with its reason.
        Some(spec) => drill::Target::Instance(Box::new(instance::ScratchEnvironment::for_drill(
            drill, spec,
        ))),
        None => drill::Target::Server(admin_credentials(drill, ctx, engine).await?),
    };
    Ok(Resolved {
        schedule,
        job: drill::Job {
            drill_uid: drill.uid().unwrap_or_default(),
            engine,
            backup_id: drill.spec.backup_id.clone(),
            store,
            target,
            checks: drill.spec.checks.clone(),
            keep_on_failure: drill.spec.keep_on_failure,
            tools: ctx.config.tools(),
            jobs: drill.spec.jobs.unwrap_or(1).clamp(1, 8) as u32,
            spool: ctx.config.spool.clone(),
            generation: drill.metadata.generation,
        },
    })
}

/// Removes a server target's scratch (PostgreSQL's database and role, or the keys under an engine's
/// scratch prefix); what was removed. When the engine is a guess (`known` false: the schedule or its
/// environment and backups are gone), a failure is reported and passed over, so a drill of another
/// engine's backups never blocks its own deletion.
async fn drop_scratch(
    ctx: &Context,
    drill: &RestoreDrill,
    engine: crate::engines::Kind,
    known: bool,
    admin: &ServerCredentials,
) -> Result<Vec<String>, Error> {
    let uid = drill.uid().unwrap_or_default();
    if let Some(tenancy) = crate::engines::tenancy(engine) {
        let prefix = tenancy.scratch_prefix(&uid);
        let keys = tenancy
            .clear(admin, &prefix)
            .await
            .map_err(super::error::pg)?;
        return Ok((keys > 0)
            .then(|| format!("{keys} key(s) under {prefix}"))
            .into_iter()
            .collect());
    }
    match ENGINE
        .drop_scratch(admin, &ENGINE.scratch_target(&uid))
        .await
    {
        Ok(dropped) => Ok(dropped),
        Err(e) if !known => {
            ctx.publish(
                drill,
                EventType::Warning,
                "CleanupSkipped",
                format!("The drill's schedule or environment is gone, and its scratch database could not be dropped ({e}); drop {} (or the keys under lifeboat:drill:{uid}:) by hand if they exist.", ENGINE.scratch_target(&uid).database),
            )
            .await;
            Ok(Vec::new())
        }
        Err(e) => Err(super::error::pg(e)),
    }
}

/// The engine of a drill's backups: the schedule's environment's, or, when it is gone, the one the
/// backup's manifest records (the named backup, else the newest); `None` when neither can be read.
async fn drill_engine(
    ctx: &Context,
    ns: &str,
    backups: &BackupSchedule,
    backup_id: Option<&str>,
) -> Result<Option<crate::engines::Kind>, Error> {
    if let Some(engine) = known_engine(ctx, ns, backups).await? {
        return Ok(Some(engine));
    }
    let Ok(store) = super::backup_store::for_schedule(ctx, backups).await else {
        return Ok(None);
    };
    Ok(super::restore::pick(&store, backup_id)
        .await
        .ok()
        .and_then(|(m, _)| crate::engines::Kind::from_name(&m.engine)))
}

/// The engine of the schedule's environment, when it still exists.
async fn known_engine(
    ctx: &Context,
    ns: &str,
    backups: &BackupSchedule,
) -> Result<Option<crate::engines::Kind>, Error> {
    let environments: kube::Api<crate::api::DatabaseEnvironment> =
        kube::Api::namespaced(ctx.client.clone(), ns);
    Ok(environments
        .get_opt(&backups.spec.environment_ref.name)
        .await?
        .map(|env| super::engine::kind(env.spec.engine)))
}

async fn admin_credentials(
    drill: &RestoreDrill,
    ctx: &Context,
    engine: crate::engines::Kind,
) -> Result<ServerCredentials, Error> {
    let Some(server) = &drill.spec.target.server else {
        return Err(Error::InvalidSpec {
            reason: "NoServerTarget",
            message: "the drill has no target.server".into(),
        });
    };
    let ns = drill.namespace().unwrap_or_default();
    let (creds, _) = references::engine_credentials(
        ctx,
        engine,
        &ns,
        &server.admin_secret_ref,
        "spec.target.server.adminSecretRef",
        false,
    )
    .await?;
    Ok(creds)
}

async fn apply(cached: Arc<RestoreDrill>, state: &Drills) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let uid = cached.uid().unwrap_or_default();
    if state.tasks.is_running(&uid) {
        // The task records the result itself; a reconcile woken by that write may still see it
        // finishing, so look again soon.
        return Ok(Action::requeue(TASK_CHECK));
    }
    let api: Api<RestoreDrill> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(drill) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let resolved = match resolve(&drill, ctx).await {
        Ok(r) => r,
        Err(e) => {
            status::write_checked(ctx.as_ref(), &drill, &status::verdict_for(&e), |_| {}).await?;
            return Err(e);
        }
    };
    let now = Utc::now();
    let step = next_step(&drill, resolved.schedule.as_ref(), now);
    let next = resolved
        .schedule
        .as_ref()
        .and_then(|s| crate::domain::schedule::next_slot(&s.cron, s.time_zone, now));
    match step {
        Step::Wait { next: due } => {
            write(ctx, &drill, false, |s| {
                s.next_schedule_time = due.map(clock::to_time)
            })
            .await?;
            let wait = due
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .map_or(RECHECK, |d| d.min(RECHECK));
            Ok(Action::requeue(wait.max(Duration::from_millis(200))))
        }
        Step::Run { slot } => {
            write(ctx, &drill, true, |s| {
                if let Some(slot) = slot {
                    s.last_schedule_time = Some(clock::to_time(slot));
                }
                s.next_schedule_time = next.map(clock::to_time);
            })
            .await?;
            // The admin Secret stays readable until the scratch database is dropped, also when the
            // namespace is deleted around the drill.
            hold_admin_secret(ctx, &drill, true).await?;
            let (task_ctx, job) = (ctx.clone(), resolved.job);
            let (ns, name) = (drill.namespace().unwrap_or_default(), drill.name_any());
            state.tasks.spawn(&uid, move |_| async move {
                let run = execute(&task_ctx, &ns, &job).await;
                if let Err(e) = record(&task_ctx, &ns, &name, &job, run).await {
                    warn!(drill = %name, error = %e, "could not record the drill's result");
                }
            });
            Ok(Action::requeue(RECHECK))
        }
    }
}

/// What the drill does now; called only when no task of it runs in this process.
fn next_step(
    drill: &RestoreDrill,
    schedule: Option<&super::schedule::Schedule>,
    now: chrono::DateTime<Utc>,
) -> Step {
    let created = drill
        .metadata
        .creation_timestamp
        .as_ref()
        .map(clock::to_chrono)
        .unwrap_or_else(Utc::now);
    let current = drill.status.clone().unwrap_or_default();
    // Status says a drill runs, but no task does here: the operator stopped during it. It runs again
    // now (its first step drops what the interrupted run left), whatever the schedule says.
    let interrupted = conditions::find(&current.conditions, conditions::RECONCILING)
        .is_some_and(|c| c.status == "True" && c.reason == "DrillRunning");
    if interrupted {
        Step::Run { slot: None }
    } else {
        plan::decide(&current, schedule, drill.metadata.generation, created, now)
    }
}

async fn execute(ctx: &Context, ns: &str, job: &drill::Job) -> DrillRun {
    let _permit = ctx.slots.acquire(ns).await;
    let timeout = ctx.config.work_timeout();
    match tokio::time::timeout(timeout, drill::run(ctx, job)).await {
        Ok(run) => run,
        Err(_) => {
            // The drill was stopped midway: its scratch database goes now, not at the next run.
            let _ = job.clean_up(ctx).await;
            DrillRun {
                result: DrillResult::Failed,
                generation: job.generation,
                finished_at: Some(clock::to_time(Utc::now())),
                message: Some(format!(
                    "the drill took longer than the work timeout ({timeout:?})"
                )),
                ..Default::default()
            }
        }
    }
}

/// Records a finished run on the drill as it is now, publishes the event and the metrics, and leaves the
/// result beside the backup (a passed drill protects its backup from retention).
async fn record(
    ctx: &Context,
    ns: &str,
    name: &str,
    job: &drill::Job,
    run: DrillRun,
) -> Result<(), Error> {
    let passed = run.result == DrillResult::Passed;
    if run.kept_database.is_none() {
        release_admin_secret(ctx, ns, name).await?;
    }
    // Only beside a backup that exists (its manifest was read: the RPO is measured from it).
    if run.rpo_seconds.is_some() {
        let object = if passed {
            DRILL_OBJECT.to_string()
        } else {
            "restore-drill-failed.json".into()
        };
        let body = serde_json::to_vec_pretty(&serde_json::json!({"drill": {"namespace": ns, "name": name, "uid": job.drill_uid}, "run": run}))
            .unwrap_or_default();
        if let Err(e) = job
            .store
            .put(&job.store.path(&run.backup_id, &object), body)
            .await
        {
            warn!(drill = %name, error = %e, "could not write the drill's result beside its backup");
        }
    }
    let reason = if passed { "DrillPassed" } else { "DrillFailed" };
    ctx.metrics
        .drills
        .get_or_create(&OutcomeLabels {
            phase: if passed { "Passed" } else { "Failed" },
            reason,
        })
        .inc();
    if let Some(rto) = run.rto_seconds {
        ctx.metrics.drill_rto.observe(rto as f64);
    }
    if let Some(rpo) = run.rpo_seconds {
        ctx.metrics.drill_rpo.observe(rpo as f64);
    }
    let api: Api<RestoreDrill> = Api::namespaced(ctx.client.clone(), ns);
    let mut attempt = 0;
    loop {
        let Some(drill) = api.get_opt(name).await? else {
            return Ok(());
        };
        let met = plan::objectives(&run, drill.spec.objectives.as_ref());
        let run_now = run.clone();
        match write(ctx, &drill, false, |s| {
            plan::record(s, run_now, met.as_ref().map(|m| m.0))
        })
        .await
        {
            Ok(()) => {
                // The run's own event is the status transition (DrillRunning to DrillPassed or
                // DrillFailed, published once by status::write); a missed objective gets its own.
                if let Some((false, message)) = &met {
                    ctx.publish(&drill, EventType::Warning, "ObjectivesMissed", message)
                        .await;
                }
                return Ok(());
            }
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 && attempt < WRITE_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) if attempt < WRITE_ATTEMPTS => {
                attempt += 1;
                warn!(error = %e, "recording a drill failed; retrying");
                tokio::time::sleep(super::error::backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes the drill's status (checked against its resourceVersion) with `update` applied, the verdict
/// and `ObjectivesMet` computed from the result.
async fn write(
    ctx: &Context,
    drill: &RestoreDrill,
    running: bool,
    update: impl FnOnce(&mut RestoreDrillStatus),
) -> Result<(), Error> {
    let mut next = drill.status.clone().unwrap_or_default();
    update(&mut next);
    let verdict = plan::verdict(&next, running);
    let objectives = next
        .last_run
        .as_ref()
        .and_then(|r| plan::objectives(r, drill.spec.objectives.as_ref()));
    let generation = drill.metadata.generation;
    next.objectives_met = objectives.as_ref().map(|o| o.0);
    match &objectives {
        Some((met, _)) => {
            ctx.metrics
                .drill_objectives_met
                .get_or_create(&labels(drill))
                .set(i64::from(*met));
        }
        None => {
            ctx.metrics.drill_objectives_met.remove(&labels(drill));
        }
    }
    status::write_checked(ctx, drill, &verdict, move |s| {
        *s = RestoreDrillStatus {
            conditions: std::mem::take(&mut s.conditions),
            ..next
        };
        if objectives.is_none() {
            s.conditions.retain(|c| c.type_ != CONDITION_OBJECTIVES_MET);
        }
        if let Some((met, message)) = objectives {
            conditions::set_condition(
                &mut s.conditions,
                CONDITION_OBJECTIVES_MET,
                met,
                if met {
                    "ObjectivesMet"
                } else {
                    "ObjectivesMissed"
                },
                &message,
                generation,
                k8s_openapi::jiff::Timestamp::now(),
            );
        }
    })
    .await
}

/// The RestoreDrill is going: stop its task and drop its scratch database and role. Without the admin
/// Secret nothing can be dropped; that is said in an event and the object goes anyway.
async fn cleanup(drill: Arc<RestoreDrill>, state: &Drills) -> Result<Action, Error> {
    let ctx = state.ctx.as_ref();
    let uid = drill.uid().unwrap_or_default();
    state.tasks.forget(&uid);
    ctx.metrics.drill_objectives_met.remove(&labels(&drill));
    if let Some(spec) = &drill.spec.target.instance {
        let env = instance::ScratchEnvironment::for_drill(&drill, spec);
        let removed = env.remove(ctx).await.map_err(|message| Error::Transient {
            reason: "CleanupPending",
            message,
            source: None,
        })?;
        if removed {
            ctx.publish(
                drill.as_ref(),
                EventType::Normal,
                "Deleted",
                format!(
                    "Deleted the drill's instance, DatabaseEnvironment {}.",
                    env.name
                ),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let ns = drill.namespace().unwrap_or_default();
    let backups: Option<BackupSchedule> = kube::Api::namespaced(ctx.client.clone(), &ns)
        .get_opt(&drill.spec.backup_schedule_ref.name)
        .await?;
    let known = match &backups {
        Some(b) => drill_engine(ctx, &ns, b, drill.spec.backup_id.as_deref()).await?,
        None => None,
    };
    let engine = known.unwrap_or(crate::engines::Kind::Postgres);
    match admin_credentials(&drill, ctx, engine).await {
        Ok(admin) => {
            let dropped = drop_scratch(ctx, &drill, engine, known.is_some(), &admin).await?;
            hold_admin_secret(ctx, &drill, false).await?;
            if !dropped.is_empty() {
                ctx.publish(
                    drill.as_ref(),
                    EventType::Normal,
                    "Deleted",
                    format!("Dropped {}.", dropped.join(" and ")),
                )
                .await;
            }
        }
        Err(e) => {
            hold_admin_secret(ctx, &drill, false).await?;
            ctx.publish(
                drill.as_ref(),
                EventType::Warning,
                "CleanupSkipped",
                format!("The scratch database could not be dropped ({e}); drop {} by hand if it exists.", ENGINE.scratch_target(&uid).database),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

fn labels(drill: &RestoreDrill) -> crate::telemetry::ScheduleLabels {
    crate::telemetry::ScheduleLabels {
        namespace: drill.namespace().unwrap_or_default(),
        name: drill.name_any(),
    }
}

/// Holds (`hold`) or releases the drill's own finalizer on its target's admin Secret
/// (`lifeboat.dev/drill-<hash of the drill's UID>`): one per drill, so drills sharing a Secret never
/// release each other's hold.
/// Releases the drill's hold on its admin Secret once nothing is kept. A failure is a warning: the result
/// is recorded anyway, and the drill's deletion releases the Secret in any case.
async fn release_admin_secret(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    if let Some(drill) = Api::<RestoreDrill>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
        && let Err(e) = hold_admin_secret(ctx, &drill, false).await
    {
        warn!(drill = %name, error = %e, "could not release the admin Secret after the drill");
    }
    Ok(())
}

async fn hold_admin_secret(ctx: &Context, drill: &RestoreDrill, hold: bool) -> Result<(), Error> {
    let Some(server) = &drill.spec.target.server else {
        return Ok(());
    };
    let ns = drill.namespace().unwrap_or_default();
    let uid = drill.uid().unwrap_or_default();
    let finalizer = format!(
        "lifeboat.dev/drill-{}",
        &crate::domain::digest::sha256_hex(uid.as_bytes())[..16]
    );
    let name = &server.admin_secret_ref.name;
    if hold {
        references::hold_secret(ctx, &ns, name, &finalizer).await
    } else {
        references::release_secret(ctx, &ns, name, &finalizer).await
    }
}
