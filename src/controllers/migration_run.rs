//! MigrationRun controller: read the run and its environment → validate and plan (pure) → start the
//! migration as a tracked task → the task writes progress and the final status.
//!
//! The database work never runs inside a reconcile: [`task::Tasks`] (on the shared
//! [`crate::controllers::tasks::Tasks`]) keeps one tokio task per run UID.
//! A reconcile that finds a run `Running` with no task in this process (the operator restarted, or
//! the task stopped without a result) starts it again: the runner reads the ledger, whose rows carry
//! the run's UID, and carries on from what is really applied. When the controller stops, its tasks
//! are aborted: their connections close, PostgreSQL rolls back the open transaction and releases the
//! advisory lock, and the next leader resumes the run.

mod container;
pub mod convert;
mod task;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, ResourceExt, api::DeleteParams, runtime::controller::Action};
use tracing::{info, instrument};

use super::{
    Context, Error,
    conditions::{self, Verdict},
    drain, error_policy, instrumented, references, status, watcher_config,
};
use crate::{
    api::{
        ConditionedStatus, ConnectionSecretRef, DatabaseEnvironment, MigrationRun,
        MigrationRunStatus, database_environment::Tier, migration_run::MigrationPhase,
    },
    domain::migrations,
    engines::migrate,
};

pub use super::backup::BackupTaker;

pub const CONTROLLER: &str = "migrationrun";

/// What the MigrationRun controller keeps besides the shared [`Context`]: its running tasks and the
/// way backups are taken.
pub struct Runs {
    pub ctx: Arc<Context>,
    tasks: task::Tasks,
    backups: Arc<dyn BackupTaker>,
}

/// The controller with a given way of taking backups (the operator passes BackupSchedule's).
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: super::Shutdown,
    backups: Arc<dyn BackupTaker>,
) {
    let tasks = task::Tasks::default();
    let runs = Arc::new(Runs {
        ctx: ctx.clone(),
        tasks,
        backups,
    });
    let controller =
        super::watch::controller(&ctx.watched_api::<MigrationRun>(), ctx.client.clone());
    let store = controller.store();
    let policy = error_policy::<MigrationRun>(CONTROLLER);
    let stream = controller
        // A run waiting for its environment is reconciled again when that environment changes.
        .watches_stream(
            super::watch::objects(
                &ctx.watched_api::<DatabaseEnvironment>(),
                ctx.client.clone(),
            ),
            super::watch::referencing(store.clone(), |r: &MigrationRun| {
                &r.spec.environment_ref.name
            }),
        )
        // A run not yet started (e.g. waiting for its source to appear) looks again when it does.
        .watches(
            ctx.watched_api::<k8s_openapi::api::core::v1::ConfigMap>(),
            watcher_config(),
            super::watch::sourcing(store, |r: &MigrationRun| {
                let started = r
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p != MigrationPhase::Pending);
                (!started).then_some(&r.spec.source)
            }),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            reconcile,
            move |run, error, runs: Arc<Runs>| policy(run, error, runs.ctx.clone()),
            runs.clone(),
        );
    drain(CONTROLLER, stream).await;
    let aborted = runs.tasks.abort_all();
    if aborted > 0 {
        info!(
            aborted,
            "stopped with migrations in flight; the next leader resumes them"
        );
    }
}

#[instrument(skip(run, runs), fields(namespace = run.namespace().unwrap_or_default(), name = run.name_any()))]
async fn reconcile(run: Arc<MigrationRun>, runs: Arc<Runs>) -> Result<Action, Error> {
    let ctx = runs.ctx.clone();
    instrumented(CONTROLLER, run.clone(), ctx.clone(), async move {
        let status = run.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        if phase.is_finished() {
            return expire(&run, &ctx).await;
        }
        let uid = run.uid().unwrap_or_default();
        if runs.tasks.is_running(&uid) {
            return Ok(Action::requeue(task::TASK_CHECK_INTERVAL));
        }
        if runs.tasks.attempts(&uid) >= task::MAX_ATTEMPTS {
            let message = format!(
                "The run stopped {} times without a result (status could not be written); the ledger table lifeboat_schema_migrations says what is applied. Start a new run.",
                task::MAX_ATTEMPTS
            );
            task::finish_refused(&ctx, &run, "Interrupted", message).await?;
            return Ok(Action::await_change());
        }
        match prepare(&run, &runs).await {
            Ok(Prepared::Wait(verdict)) => {
                status::write(ctx.as_ref(), run.as_ref(), &verdict, |s| {
                    s.phase = Some(MigrationPhase::Pending);
                })
                .await?;
                Ok(Action::await_change())
            }
            Ok(Prepared::Refuse { reason, message }) => {
                task::finish_refused(&ctx, &run, reason, message).await?;
                Ok(Action::await_change())
            }
            Ok(Prepared::Start(job)) => {
                let resumed = phase == MigrationPhase::Running;
                let verdict = if resumed {
                    Verdict::Reconciling {
                        reason: "Resumed",
                        message: "This run was running when its task stopped (an operator restart); resuming from the ledger.".into(),
                    }
                } else {
                    Verdict::Reconciling {
                        reason: "Running",
                        message: "Starting: taking the migration lock.".into(),
                    }
                };
                // Running is written before the task starts, so the task's final status always lands last.
                status::write(ctx.as_ref(), run.as_ref(), &verdict, |s| {
                    s.phase = Some(MigrationPhase::Running);
                    s.started_at.get_or_insert(Time(Timestamp::now()));
                })
                .await?;
                runs.tasks.spawn(ctx.clone(), run.clone(), *job);
                Ok(Action::requeue(task::TASK_CHECK_INTERVAL))
            }
            Err(e) => {
                let verdict = status::verdict_for(&e);
                status::write(ctx.as_ref(), run.as_ref(), &verdict, |s| {
                    s.phase = Some(MigrationPhase::Pending);
                })
                .await?;
                Err(e)
            }
        }
    })
    .await
}

/// What a reconcile decided.
enum Prepared {
    /// Not yet: the environment is not Ready.
    Wait(Verdict),
    /// Never: the run fails before touching the database.
    Refuse {
        reason: &'static str,
        message: String,
    },
    /// Everything is in place: run it.
    Start(Box<task::Job>),
}

/// Whether the environment requires a backup before migrating: production always does; other tiers when
/// `backupBeforeMigrate` is true.
pub fn backup_required(run: &MigrationRun, env: &DatabaseEnvironment) -> bool {
    env.spec.tier == Tier::Production || run.spec.backup_before_migrate == Some(true)
}

async fn prepare(run: &MigrationRun, runs: &Runs) -> Result<Prepared, Error> {
    let ctx = runs.ctx.as_ref();
    let ns = run.namespace().unwrap_or_default();
    let env: DatabaseEnvironment = references::lifeboat_object(
        ctx,
        &ns,
        &run.spec.environment_ref.name,
        "EnvironmentNotFound",
    )
    .await?;
    if let Some(not_yet) = environment_refusal(run, &env) {
        return Ok(not_yet);
    }
    let backup = backup_required(run, &env);
    if backup && let Err(why) = runs.backups.available(&env).await {
        return Ok(backups_missing(&env, &why));
    }
    let maps = references::resolve_sources(ctx, &ns, &run.spec.source, "spec.source").await?;
    // With a container runner the files are the tool's to read (any layout); Lifeboat only mounts them.
    let migrations = if run.spec.runner.is_some() {
        Vec::new()
    } else {
        match migrations::source::parse(&references::raw_files(&maps)) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Prepared::Refuse {
                    reason: "InvalidMigrationSource",
                    message: format!(
                        "Nothing was changed: the migration files are not usable: {e}."
                    ),
                });
            }
        }
    };
    let secret = ConnectionSecretRef {
        name: env.connection_secret_name(),
        keys: None,
    };
    let field = "the environment's connection Secret";
    let (creds, database) =
        references::connection_credentials(ctx, &ns, &secret, field, true).await?;
    let database = database.unwrap_or_default();
    let runner = run
        .spec
        .runner
        .as_ref()
        .map(|r| container::job(run, r, &maps, &secret.name, &creds, &database));
    Ok(Prepared::Start(Box::new(task::Job {
        creds,
        database,
        migrations,
        options: options(run),
        prior: prior(run.status.clone().unwrap_or_default()),
        backup: backup.then(|| (runs.backups.clone(), env)),
        runner,
    })))
}

/// Why the run cannot start on `env` now (not Ready yet) or ever (production without a backup), or
/// `None` (pure).
fn environment_refusal(run: &MigrationRun, env: &DatabaseEnvironment) -> Option<Prepared> {
    let engine = super::engine::kind(env.spec.engine);
    if let Err(e) = engine.require(crate::engines::Capability::Migrations) {
        return Some(Prepared::Refuse {
            reason: crate::engines::Unsupported::REASON,
            message: format!(
                "DatabaseEnvironment {} runs {}: {e}. Nothing was changed.",
                env.name_any(),
                engine.product()
            ),
        });
    }
    let env_conditions = env
        .status
        .as_ref()
        .map(|s| s.conditions())
        .unwrap_or_default();
    if !conditions::is_ready(env_conditions, env.metadata.generation) {
        return Some(Prepared::Wait(Verdict::Reconciling {
            reason: "EnvironmentNotReady",
            message: format!(
                "Waiting for DatabaseEnvironment {} to become Ready.",
                env.name_any()
            ),
        }));
    }
    if env.spec.tier == Tier::Production && run.spec.backup_before_migrate == Some(false) {
        return Some(Prepared::Refuse {
            reason: "BackupRequired",
            message: format!(
                "DatabaseEnvironment {} is production, where migrations always back up first; backupBeforeMigrate: false is not allowed there. Nothing was changed; create a new run without it.",
                env.name_any()
            ),
        });
    }
    None
}

/// The refusal of a run that must back up first when backups are not available (pure).
fn backups_missing(env: &DatabaseEnvironment, why: &str) -> Prepared {
    Prepared::Refuse {
        reason: "BackupsNotAvailable",
        message: format!(
            "This run requires a backup before migrating ({}), and {why}. Nothing was changed.",
            if env.spec.tier == Tier::Production {
                "production environment"
            } else {
                "backupBeforeMigrate: true"
            }
        ),
    }
}

/// What earlier attempts of the run recorded, for the runner to continue from (pure).
fn prior(status: MigrationRunStatus) -> migrate::Prior {
    migrate::Prior {
        from_version: status.from_version.clone(),
        applied: migrations::Records::from_parts(
            status.applied,
            usize::try_from(status.applied_count.unwrap_or_default()).unwrap_or_default(),
        ),
        rolled_back: migrations::Records::from_parts(
            status.rolled_back,
            usize::try_from(status.rolled_back_count.unwrap_or_default()).unwrap_or_default(),
        ),
        failure: status.failure,
        backup_id: status.backup_id,
    }
}

fn options(run: &MigrationRun) -> migrate::RunOptions {
    migrate::RunOptions {
        run_uid: run.uid().unwrap_or_default(),
        label: format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any()),
        direction: run.spec.direction,
        target_version: run.spec.target_version.clone(),
        on_failure: run.spec.on_failure,
        lint: run.spec.lint,
        lint_rules: run.spec.lint_rules.clone().unwrap_or_default(),
        adopt: run.spec.adopt_from.unwrap_or_default(),
        baseline_version: run.spec.baseline_version.clone(),
        lock_timeout: run.spec.lock_timeout.into(),
        statement_timeout: run.spec.statement_timeout.map(Into::into),
    }
}

/// A finished run with `ttlSecondsAfterFinished` deletes itself once that time has passed.
async fn expire(run: &MigrationRun, ctx: &Context) -> Result<Action, Error> {
    let Some(ttl) = run.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished = run
        .status
        .as_ref()
        .and_then(|s| s.finished_at.clone())
        .map_or_else(Timestamp::now, |t| t.0);
    let due = finished
        .checked_add(SignedDuration::from_secs(i64::from(ttl.max(0))))
        .unwrap_or(finished);
    let left = Timestamp::now().duration_until(due);
    if left.is_positive() {
        let wait = Duration::try_from(left).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    let api: Api<MigrationRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    info!(ttl, "ttlSecondsAfterFinished passed: deleting the run");
    match api
        .delete(&run.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Copies the runner's state into status fields.
pub fn apply_state(s: &mut MigrationRunStatus, state: &migrate::RunState) {
    s.from_version = state.from_version.clone().or(s.from_version.take());
    s.to_version = state.to_version.clone().or(s.to_version.take());
    s.applied = state.applied.listed();
    s.applied_count = i64::try_from(state.applied.len()).ok();
    s.rolled_back = state.rolled_back.listed();
    s.rolled_back_count = (!state.rolled_back.is_empty())
        .then(|| i64::try_from(state.rolled_back.len()).ok())
        .flatten();
    s.lint_findings = state.lint_findings.clone();
    s.lint_counts = state.lint_counts.iter().cloned().map(Into::into).collect();
    s.imported = state.imported.clone().map(Into::into).or(s.imported.take());
    s.failure = state.failure.clone();
    s.backup_id = state.backup_id.clone().or(s.backup_id.take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_always_backs_up() {
        let env = |tier: &str| -> DatabaseEnvironment {
            serde_yaml::from_str(&format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: DatabaseEnvironment\nmetadata: {{name: e}}\nspec: {{tier: {tier}, server: {{adminSecretRef: {{name: a}}}}}}"
            ))
            .unwrap()
        };
        let run = |backup: &str| -> MigrationRun {
            serde_yaml::from_str(&format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: MigrationRun\nmetadata: {{name: r}}\nspec: {{environmentRef: {{name: e}}, source: {{configMapNames: [m]}}{backup}}}"
            ))
            .unwrap()
        };
        assert!(backup_required(&run(""), &env("production")));
        assert!(!backup_required(&run(""), &env("ci")));
        assert!(backup_required(
            &run(", backupBeforeMigrate: true"),
            &env("ci")
        ));
        let opts = options(&run(", lockTimeout: 90s"));
        assert_eq!(opts.lock_timeout, Duration::from_secs(90));
        assert_eq!(opts.statement_timeout, None);
    }
}
