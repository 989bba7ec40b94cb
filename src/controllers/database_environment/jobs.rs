//! Provisioning jobs: the database work of an environment (create, clone, seed, migrate, health check)
//! never runs inside a reconcile. One tokio task per environment UID does it, waiting first for a slot
//! ([`crate::controllers::work::Slots`], global and per namespace), bounded by `--work-timeout`, and
//! writes the status itself. A reconcile only starts a job when none is running and the last result is
//! stale (another generation, or its re-check is due), so a slow seed or a hanging health query of one
//! tenant holds one slot of its namespace, never the controller.

use std::time::{Duration, Instant};

use tracing::warn;

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt, runtime::events::EventType};

use super::{CONTROLLER, Environments, Outcome, expires_at, provision};
use crate::controllers::{conditions, error::backoff, tasks::Tasks};
use crate::{
    api::{DatabaseEnvironment, DatabaseEnvironmentStatus, database_environment::Endpoint},
    controllers::{Context, Error, conditions::Verdict, status},
};

/// A running job is looked at again this often (its status is written by the job itself).
pub const JOB_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Failed jobs are retried with backoff, never waiting longer than this.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// What outlives one job of an environment.
#[derive(Default)]
pub struct Entry {
    /// Generation the last finished job worked from, and when the next one is due.
    last: Option<(Option<i64>, Instant)>,
    /// Consecutive failed jobs (for the backoff).
    failures: u32,
    /// Consecutive failed health checks of a Ready environment.
    health_failures: u32,
    /// Changes seen to the environment's migration ConfigMaps (a job that started before the last one
    /// is not current when it ends).
    source_changes: u64,
}

/// What a reconcile should do about an environment's job.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A job is running.
    Running,
    /// The last result still holds for this long.
    Wait(Duration),
    /// Start a job now.
    Start,
}

/// The provisioning jobs of this process, by environment UID.
#[derive(Default)]
pub struct Jobs {
    tasks: Tasks<Entry>,
}

impl Jobs {
    /// Whether the environment's job runs, or its last result is still current for `generation`.
    pub fn next(&self, uid: &str, generation: Option<i64>) -> Next {
        if self.tasks.is_running(uid) {
            return Next::Running;
        }
        // Peek, not `with`: asking about an environment must not leave state behind for it.
        self.tasks
            .peek(uid, |entry| match entry.last {
                Some((g, due)) if g == generation => {
                    match due.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => Next::Wait(left),
                        _ => Next::Start,
                    }
                }
                _ => Next::Start,
            })
            .unwrap_or(Next::Start)
    }

    /// A ConfigMap behind the environment's `spec.migrations` changed: the last result is no longer
    /// current, so the next reconcile starts a job (or the running one is followed by another).
    pub fn sources_changed(&self, uid: &str) {
        self.tasks.with(uid, |entry| {
            entry.source_changes += 1;
            entry.last = None;
        });
    }

    pub fn spawn(&self, envs: Arc<Environments>, env: Arc<DatabaseEnvironment>) {
        let uid = env.uid().unwrap_or_default();
        self.tasks.spawn(&uid, move |state| async move {
            let generation = env.metadata.generation;
            let (health_failures, failures, changes) =
                state.with(|e| (e.health_failures, e.failures, e.source_changes));
            let report = execute(&envs, &env, health_failures).await;
            state.with(|entry| {
                if entry.source_changes != changes {
                    // The sources changed while this job ran: it may have read the old files.
                    entry.health_failures = report.health_failures;
                    entry.last = None;
                    return;
                }
                let wait = if report.ok {
                    entry.failures = 0;
                    report.period
                } else {
                    entry.failures = failures + 1;
                    backoff(failures).min(RETRY_MAX).min(report.period)
                };
                entry.health_failures = report.health_failures;
                entry.last = Some((generation, Instant::now() + wait));
            });
        });
    }

    /// Stops the environment's job, if one runs, and forgets it (the environment is being deleted).
    pub fn abort(&self, uid: &str) {
        self.tasks.forget(uid);
    }

    /// Aborts every job (the controller is stopping); returns how many were running.
    pub fn abort_all(&self) -> usize {
        self.tasks.abort_all()
    }
}

struct Report {
    ok: bool,
    /// Health-check period of the environment: when a successful result goes stale.
    period: Duration,
    health_failures: u32,
}

/// Runs one provisioning job and writes its result to the environment's status.
async fn execute(
    envs: &Environments,
    env: &Arc<DatabaseEnvironment>,
    health_failures: u32,
) -> Report {
    let ctx = &envs.ctx;
    let namespace = env.namespace().unwrap_or_default();
    let check = env.spec.health_check.clone().unwrap_or_default();
    let period = Duration::from_secs(check.period_seconds.max(1) as u64);
    let result = provision_within_limits(envs, env, &namespace).await;
    if let Err(e) = &result {
        ctx.metrics.reconcile_failed(CONTROLLER, e.reason());
    }

    // The status is written on the environment as it is now (the job may have run for minutes), but
    // for the generation the job worked from.
    let api: Api<DatabaseEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = match api.get_opt(&env.name_any()).await {
        Ok(Some(current)) if current.uid() == env.uid() => current,
        Ok(_) => {
            return Report {
                ok: false,
                period,
                health_failures: 0,
            };
        }
        Err(e) => {
            warn!(error = %e, "could not read the environment to write its status");
            return Report {
                ok: false,
                period,
                health_failures,
            };
        }
    };
    let mut current = current;
    current.metadata.generation = env.metadata.generation;
    let was_ready = current
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_ready(&s.conditions, env.metadata.generation));

    let threshold = check.failure_threshold.max(1) as u32;
    let health_failed = matches!(&result, Err(e) if e.reason() == "HealthCheckFailed");
    let (health_failures, keep_ready) =
        health_verdict(health_failed, was_ready, health_failures, threshold);
    if keep_ready && let Err(e) = &result {
        let note = format!("Health check {health_failures} of {threshold} failed: {e}");
        ctx.publish(&current, EventType::Warning, "HealthCheckFailing", note)
            .await;
        return Report {
            ok: false,
            period,
            health_failures,
        };
    }
    if let Err(e) = write_result(ctx, &current, &result).await {
        warn!(error = %e, "could not write the environment's status");
    }
    if let Err(e) = &result {
        warn!(reason = e.reason(), error = %e, "provisioning failed");
    }
    Report {
        ok: result.is_ok(),
        period,
        health_failures,
    }
}

/// Provisions under a work slot of the namespace and within `--work-timeout`.
async fn provision_within_limits(
    envs: &Environments,
    env: &Arc<DatabaseEnvironment>,
    namespace: &str,
) -> Result<Outcome, Error> {
    let ctx = &envs.ctx;
    let limit = ctx.config.work_timeout();
    let _permit = ctx.slots.acquire(namespace).await;
    match tokio::time::timeout(limit, provision(env, envs)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Transient {
            reason: "WorkTimedOut",
            source: None,
            message: format!(
                "provisioning took longer than {}s (the operator's --work-timeout) and was stopped; it is retried",
                limit.as_secs()
            ),
        }),
    }
}

/// Consecutive failed health checks after this one, and whether a Ready environment stays Ready
/// (with a warning) because the count is still below `failureThreshold` (pure).
pub fn health_verdict(
    failed_now: bool,
    was_ready: bool,
    before: u32,
    threshold: u32,
) -> (u32, bool) {
    if !failed_now {
        return (0, false);
    }
    let failed = before + 1;
    (failed, was_ready && failed < threshold)
}

async fn write_result(
    ctx: &Context,
    env: &DatabaseEnvironment,
    result: &Result<Outcome, Error>,
) -> Result<(), Error> {
    let expiry = expires_at(env);
    let (verdict, outcome) = match result {
        Ok(outcome) => (
            Verdict::Ready {
                reason: "Ready",
                message: outcome.message.clone(),
            },
            Some(outcome),
        ),
        Err(e) => (status::verdict_for(e), None),
    };
    // An instance's objects exist once its pod is being waited for (or the database is ready).
    let applied = match result {
        Ok(_) => true,
        Err(e) => matches!(e.reason(), "InstanceStarting" | "ServerUnreachable"),
    };
    let instance = env
        .spec
        .instance
        .as_ref()
        .filter(|_| applied)
        .map(|spec| super::instance::status(env, spec));
    let backups = super::backups::check(ctx, env).await;
    let generation = env.metadata.generation;
    status::write(ctx, env, &verdict, |s: &mut DatabaseEnvironmentStatus| {
        s.expires_at = expiry.map(Time);
        if let Some(b) = backups {
            conditions::set_condition(
                &mut s.conditions,
                super::backups::CONDITION_BACKUPS_EXPECTED,
                b.missing,
                b.reason,
                &b.message,
                generation,
                Timestamp::now(),
            );
        }
        if instance.is_some() {
            s.instance = instance;
        }
        if let Some((usage, scope)) = outcome.and_then(|o| o.usage.as_ref()) {
            s.cache = Some(super::cache::status(usage, scope));
            let thresholds = env.spec.thresholds.clone().unwrap_or_default();
            let (within, reason, message) = super::cache::judge(usage, &thresholds);
            conditions::set_condition(
                &mut s.conditions,
                super::cache::CONDITION_WITHIN_THRESHOLDS,
                within,
                reason,
                &message,
                generation,
                Timestamp::now(),
            );
        }
        if let Some(o) = outcome {
            s.database = Some(o.database.clone());
            s.secret_name = Some(env.connection_secret_name());
            s.endpoint = Some(Endpoint {
                host: o.host.clone(),
                port: o.port.into(),
            });
            s.server_version = Some(o.server_version.clone());
            s.schema_version = o.schema_version.clone();
            if o.restored_from.is_some() {
                s.restored_from = o.restored_from.clone();
            }
            if o.seeded_now || (env.spec.seed.is_some() && s.seeded_at.is_none()) {
                s.seeded_at = Some(Time(Timestamp::now()));
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_failures_count_to_the_threshold() {
        // (failed now, was Ready, failures before, threshold) -> (failures after, stays Ready)
        for (case, want) in [
            ((false, true, 2, 3), (0, false)),
            ((true, true, 0, 3), (1, true)),
            ((true, true, 1, 3), (2, true)),
            ((true, true, 2, 3), (3, false)),
            ((true, false, 0, 3), (1, false)),
            ((true, true, 0, 1), (1, false)),
        ] {
            let (failed, ready, before, threshold) = case;
            assert_eq!(
                health_verdict(failed, ready, before, threshold),
                want,
                "{case:?}"
            );
        }
    }

    #[test]
    fn unknown_environments_start_and_stale_generations_restart() {
        let jobs = Jobs::default();
        assert_eq!(jobs.next("a", Some(1)), Next::Start);
        jobs.tasks.with("a", |e| {
            e.last = Some((Some(1), Instant::now() + Duration::from_secs(30)))
        });
        assert!(matches!(jobs.next("a", Some(1)), Next::Wait(d) if d <= Duration::from_secs(30)));
        assert_eq!(jobs.next("a", Some(2)), Next::Start);
        jobs.tasks
            .with("a", |e| e.last = Some((Some(1), Instant::now())));
        assert_eq!(jobs.next("a", Some(1)), Next::Start);
    }

    #[tokio::test]
    async fn running_jobs_are_reported_and_aborted() {
        let jobs = Jobs::default();
        jobs.tasks.spawn("a", |_| std::future::pending::<()>());
        assert_eq!(jobs.next("a", None), Next::Running);
        assert_eq!(jobs.abort_all(), 1);
        assert_eq!(jobs.next("a", None), Next::Start);
    }
}
