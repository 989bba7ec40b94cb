//! `lifeboat run`: wait for the CRDs, win the leader Lease, run the controllers, stop cleanly.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::FutureExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    runtime::wait::{await_condition, conditions::is_crd_established},
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    controllers::{
        Config, Context, Shutdown, backup_schedule, database_environment, database_server,
        migration_run, restore_drill,
    },
    telemetry::{self, Metrics, Readiness},
};

/// How long to wait for Lifeboat's CRDs to be established before giving up.
pub const CRD_WAIT: Duration = Duration::from_secs(120);

/// How long in-flight reconciles may take to finish after a stop (below Kubernetes' default
/// `terminationGracePeriodSeconds` of 30 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Settings of one operator instance.
#[derive(Clone, Debug)]
pub struct Settings {
    pub controllers: Config,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` serves nothing (tests).
    pub metrics_addr: Option<SocketAddr>,
    pub lease: LeaseSettings,
}

/// Leader election over a `coordination.k8s.io` Lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// A holder that has not renewed for this long loses the Lease.
    pub duration: Duration,
    /// The holder renews this long before expiry.
    pub grace: Duration,
}

/// A running operator instance, for callers that want to observe it (tests, `main`).
pub struct Operator {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    shutdown: watch::Sender<bool>,
}

impl Operator {
    pub fn new() -> Self {
        Self {
            metrics: Arc::new(Metrics::default()),
            readiness: Readiness::default(),
            shutdown: watch::channel(false).0,
        }
    }

    /// Asks the instance to stop: controllers finish in-flight work, the Lease is released.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    fn stopped(&self) -> impl Fn() -> futures::future::BoxFuture<'static, ()> + use<> {
        let rx = self.shutdown.subscribe();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
            .boxed()
        }
    }

    /// Runs until [`Operator::stop`] is called or leadership is lost (an error: the process should exit
    /// and be restarted rather than keep acting without the Lease).
    pub async fn run(&self, client: Client, settings: Settings) -> anyhow::Result<()> {
        if let Some(addr) = settings.metrics_addr {
            self.serve_metrics(addr);
        }
        wait_for_crds(&client).await?;
        self.readiness.set(true);

        let lease = &settings.lease;
        let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration.as_secs())
            .with_grace(lease.grace.as_secs())
            .build()
            .await
            .context("creating the leader election Lease manager")?;
        let (mut leading, lease_task) = manager.watch().await;
        // If this future is dropped (the process is going down hard), the Lease task goes with it
        // instead of renewing a Lease for controllers that no longer run.
        let lease_task = AbortOnDrop(Some(lease_task));
        info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for leadership");
        let won = tokio::select! {
            res = leading.wait_for(|l| *l) => { res.map(|_| true).context("lease manager stopped")? }
            _ = self.stopped()() => false,
        };
        if !won {
            drop(leading);
            lease_task.join().await;
            return Ok(());
        }
        info!(identity = %lease.identity, "leading: starting controllers");
        self.metrics.leader.set(1);
        let ctx = Arc::new(Context::new(
            client,
            settings.controllers.clone(),
            self.metrics.clone(),
        ));
        self.lead(ctx, leading.clone()).await;
        self.metrics.leader.set(0);
        let still_leading = *leading.borrow();
        // Dropping the receiver makes the lease task release the Lease and exit.
        drop(leading);
        lease_task.join().await;
        if still_leading || *self.shutdown.borrow() {
            info!("stopped; Lease released");
            Ok(())
        } else {
            anyhow::bail!("lost the leader Lease; exiting so a restart can compete for it again")
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` at `addr` until the instance stops.
    fn serve_metrics(&self, addr: SocketAddr) {
        let server = telemetry::serve(
            addr,
            self.metrics.clone(),
            self.readiness.clone(),
            self.stopped()(),
        );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }

    /// Runs the controllers while `leading` stays true and the instance is not stopped; after either,
    /// in-flight work gets [`SHUTDOWN_GRACE`] to finish.
    async fn lead(&self, ctx: Arc<Context>, mut leading: watch::Receiver<bool>) {
        let stopped = self.stopped();
        let (lost_tx, lost_rx) = watch::channel(false);
        let lost_watch = AbortOnDrop(Some(tokio::spawn(async move {
            // Resolves when leadership flips to false (or the manager dies).
            let _ = leading.wait_for(|l| !*l).await;
            lost_tx.send_replace(true);
        })));
        let stop_or_lost = || {
            let stop = stopped();
            let mut lost = lost_rx.clone();
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = lost.wait_for(|l| *l) => {}
                }
            }
        };
        let deadline = stop_or_lost();
        tokio::select! {
            _ = run_controllers(ctx, stop_or_lost()) => {}
            // In-flight work gets a bounded time to finish; after it, it is dropped as in a crash
            // (connections close, PostgreSQL rolls back, the next leader resumes).
            _ = async { deadline.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; abandoning in-flight work");
            }
        }
        drop(lost_watch);
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the five controllers until `shutdown` resolves, then lets in-flight reconciles finish. Each
/// kind's state is made here from the shared [`Context`]: the controllers own theirs, and BackupSchedule's
/// is also handed to MigrationRun, whose pre-migration backups run as the schedule's tasks.
pub async fn run_controllers(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    info!(namespace = ?ctx.config.watch_namespace, "starting controllers");
    let environments = Arc::new(database_environment::Environments::new(ctx.clone()));
    let backups = Arc::new(backup_schedule::Backups::new(ctx.clone()));
    let drills = Arc::new(restore_drill::Drills::new(ctx.clone()));
    // Long work holds its kind's state (and the Context), so dropping the controllers alone would not
    // stop it: when this future is dropped (a hard stop) or ends, every job and backup and drill task
    // is aborted, as a dead process's.
    let _abort = AbortWork {
        environments: environments.clone(),
        backups: backups.clone(),
        drills: drills.clone(),
    };
    let token = Shutdown::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let next = || token.clone();
    // A controller that ends while nobody asked it to makes the process unhealthy (`/healthz`).
    let watched = |name: &'static str, controller: futures::future::BoxFuture<'static, ()>| {
        let (ctx, stopping) = (ctx.clone(), token.clone());
        async move {
            controller.await;
            if !stopping.is_cancelled() {
                tracing::error!(controller = name, "controller stopped unexpectedly");
                *ctx.metrics.broken.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("controller {name} stopped unexpectedly"));
            }
        }
        .boxed()
    };
    let taker = Arc::new(backup_schedule::taker::ScheduleBackups {
        backups: backups.clone(),
    });
    let controllers = vec![
        watched(
            database_environment::CONTROLLER,
            database_environment::controller(environments, next()).boxed(),
        ),
        watched(
            migration_run::CONTROLLER,
            migration_run::run_controller(ctx.clone(), next(), taker).boxed(),
        ),
        watched(
            backup_schedule::CONTROLLER,
            backup_schedule::controller(backups, next()).boxed(),
        ),
        watched(
            restore_drill::CONTROLLER,
            restore_drill::controller(drills, next()).boxed(),
        ),
        watched(
            database_server::CONTROLLER,
            database_server::controller(ctx.clone(), next()).boxed(),
        ),
    ];
    futures::future::join_all(controllers).await;
    info!("controllers stopped");
}

/// Aborts the long work of every controller when dropped.
struct AbortWork {
    environments: Arc<database_environment::Environments>,
    backups: Arc<backup_schedule::Backups>,
    drills: Arc<restore_drill::Drills>,
}

impl Drop for AbortWork {
    fn drop(&mut self) {
        self.environments.abort_all();
        self.backups.abort_all();
        self.drills.abort_all();
    }
}

/// Waits until every Lifeboat CRD is established, naming the missing one on failure.
pub async fn wait_for_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.name_any();
        info!(crd = %name, "waiting for CRD to be established");
        tokio::time::timeout(CRD_WAIT, await_condition(api.clone(), &name, is_crd_established()))
            .await
            .with_context(|| format!("CRD {name} not established after {CRD_WAIT:?}; install it with `lifeboat crds | kubectl apply -f -`"))?
            .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// A spawned task that is aborted when its handle is dropped, unless joined first.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
