//! Tracked migration tasks: one tokio task per MigrationRun UID, the status it writes while it runs and
//! when it ends, and the backup hook.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::controllers::backup::BackupTaker;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Context, Error, apply_state};
use crate::{
    api::{
        DatabaseEnvironment, MigrationRun,
        migration_run::{MigrationFailure, MigrationPhase},
    },
    controllers::{conditions::Verdict, status},
    domain::migrations::{self, Migration},
    engines::{
        ENGINE, Migrate as _, ServerCredentials,
        migrate::{BackupFailure, Hooks, Outcome, Prior, RunOptions, RunState},
    },
};

/// A run whose task stops this many times without a result (in one operator process) is failed.
pub const MAX_ATTEMPTS: u32 = 3;
/// Progress is written at most this often while migrations apply (the ledger is the record; status
/// is for people).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// While a task runs, its run is looked at this often, so a task that ended without a result (its
/// status could not be written) is resumed without waiting for a watch event.
pub const TASK_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Status writes that matter (start, final) are tried this many times, with backoff.
const WRITE_ATTEMPTS: u32 = 5;

/// Everything a task needs, resolved by the reconcile.
pub struct Job {
    pub creds: ServerCredentials,
    pub database: String,
    pub migrations: Vec<Migration>,
    pub options: RunOptions,
    pub prior: Prior,
    /// Set when the run must back up first.
    pub backup: Option<(Arc<dyn BackupTaker>, DatabaseEnvironment)>,
    /// Set when the run's tool runs as a container (`spec.runner`) instead of Lifeboat's runner.
    pub runner: Option<super::container::ContainerJob>,
}

/// The running migration tasks of this process, by run UID, with how often each was started without
/// reaching a result.
#[derive(Default)]
pub struct Tasks {
    tasks: crate::controllers::tasks::Tasks<u32>,
}

impl Tasks {
    pub fn is_running(&self, uid: &str) -> bool {
        self.tasks.is_running(uid)
    }

    /// How often this process has started the run's task without it reaching a result.
    pub fn attempts(&self, uid: &str) -> u32 {
        self.tasks.peek(uid, |n| *n).unwrap_or(0)
    }

    pub fn spawn(&self, ctx: Arc<Context>, run: Arc<MigrationRun>, job: Job) {
        let uid = run.uid().unwrap_or_default();
        self.tasks.with(&uid, |n| *n += 1);
        self.tasks.spawn(&uid, move |state| async move {
            if execute(ctx, run, job).await {
                state.clear();
            }
        });
    }

    /// Aborts every task (the controller is stopping); returns how many were running.
    pub fn abort_all(&self) -> usize {
        self.tasks.abort_all()
    }
}

/// Runs the job and writes the final status; false when the run ended without a result.
async fn execute(ctx: Arc<Context>, run: Arc<MigrationRun>, job: Job) -> bool {
    let api: Api<MigrationRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mut hooks = StatusHooks {
        ctx: ctx.clone(),
        api,
        name: run.name_any(),
        last: None,
        backup: job.backup.map(|(b, env)| (b, env, run.clone())),
    };
    // Wait for a work slot before opening any connection: a thousand queued runs hold no connection.
    let namespace = run.namespace().unwrap_or_default();
    if !ctx.slots.available(&namespace) {
        info!(run = %job.options.label, "waiting for a free work slot");
    }
    let _permit = ctx.slots.acquire(&namespace).await;
    let started = Instant::now();
    let result = match &job.runner {
        None => {
            ENGINE
                .migrate(
                    &job.creds,
                    &job.database,
                    &job.migrations,
                    &job.options,
                    job.prior,
                    &mut hooks,
                )
                .await
        }
        Some(container) => {
            super::container::run(
                &ctx.client,
                &job.creds,
                &job.database,
                &job.options,
                &job.prior,
                container,
                &mut hooks,
            )
            .await
        }
    };
    match result {
        Ok(outcome) => {
            info!(run = %job.options.label, phase = ?outcome.phase, reason = outcome.reason, "migration run finished");
            let phase = match outcome.phase {
                migrations::MigrationPhase::Succeeded => "Succeeded",
                migrations::MigrationPhase::RolledBack => "RolledBack",
                _ => "Failed",
            };
            ctx.metrics
                .migration_runs
                .get_or_create(&crate::telemetry::OutcomeLabels {
                    phase,
                    reason: outcome.reason,
                })
                .inc();
            ctx.metrics
                .migration_run_duration
                .observe(started.elapsed().as_secs_f64());
            hooks.finish(outcome).await
        }
        Err(e) => {
            warn!(run = %job.options.label, error = %e, "migration run stopped without a result; it will be resumed");
            false
        }
    }
}

/// The status side of a run: progress reports, the backup, the final write.
struct StatusHooks {
    ctx: Arc<Context>,
    api: Api<MigrationRun>,
    name: String,
    last: Option<Instant>,
    backup: Option<(Arc<dyn BackupTaker>, DatabaseEnvironment, Arc<MigrationRun>)>,
}

impl StatusHooks {
    /// Writes status from the current object: `phase` and a verdict, plus the runner's state.
    async fn write(
        &self,
        verdict: &Verdict,
        state: &RunState,
        phase: MigrationPhase,
        attempts: u32,
    ) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(super::super::error::backoff(attempt - 1)).await;
            }
            let result: Result<(), Error> = async {
                let Some(obj) = self.api.get_opt(&self.name).await? else {
                    return Err(Error::NeedsAttention {
                        reason: "RunDeleted",
                        source: None,
                        message: "the MigrationRun was deleted".into(),
                    });
                };
                status::write(self.ctx.as_ref(), &obj, verdict, |s| {
                    apply_state(s, state);
                    s.phase = Some(phase);
                    if phase.is_finished() {
                        s.finished_at = Some(Time(Timestamp::now()));
                        if phase != MigrationPhase::Succeeded && s.failure.is_none() {
                            s.failure = Some(MigrationFailure {
                                error: verdict.message().to_string(),
                                ..Default::default()
                            });
                        }
                    }
                })
                .await
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e @ Error::NeedsAttention { .. }) => return Err(e.to_string()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    async fn finish(&self, outcome: Outcome) -> bool {
        let Outcome {
            phase,
            reason,
            mut message,
            state,
        } = outcome;
        let hidden = state.lint_total.saturating_sub(state.lint_findings.len());
        if hidden > 0 {
            message.push_str(&format!(" {hidden} more lint finding(s) are not listed."));
        }
        let verdict = if phase == migrations::MigrationPhase::Succeeded {
            Verdict::Ready { reason, message }
        } else {
            Verdict::Stalled { reason, message }
        };
        match self.write(&verdict, &state, phase, WRITE_ATTEMPTS).await {
            Ok(()) => true,
            Err(e) => {
                warn!(name = %self.name, error = %e, "could not write the final status; the run will be resumed to re-establish it");
                false
            }
        }
    }
}

impl Hooks for StatusHooks {
    async fn report(&mut self, state: &RunState, durable: bool) -> Result<(), String> {
        if !durable && self.last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return Ok(());
        }
        let verdict = Verdict::Reconciling {
            reason: "Running",
            message: state.activity.clone(),
        };
        let attempts = if durable { WRITE_ATTEMPTS } else { 1 };
        let result = self
            .write(&verdict, state, MigrationPhase::Running, attempts)
            .await;
        self.last = Some(Instant::now());
        result
    }

    async fn backup(&mut self) -> Result<Option<String>, BackupFailure> {
        let Some((taker, env, run)) = &self.backup else {
            return Ok(None);
        };
        taker
            .take(env, run)
            .await
            .map(Some)
            .map_err(|why| BackupFailure {
                reason: "BackupFailed",
                message: format!("The backup before migrating failed: {why}. Nothing was changed."),
            })
    }
}

/// Ends a run that is refused before it starts: phase Failed, `Stalled` with `reason`.
pub async fn finish_refused(
    ctx: &Context,
    run: &MigrationRun,
    reason: &'static str,
    message: String,
) -> Result<(), Error> {
    let verdict = Verdict::Stalled {
        reason,
        message: message.clone(),
    };
    status::write(ctx, run, &verdict, |s| {
        s.phase = Some(MigrationPhase::Failed);
        s.finished_at = Some(Time(Timestamp::now()));
        s.failure = Some(MigrationFailure {
            error: message,
            ..Default::default()
        });
    })
    .await
}
