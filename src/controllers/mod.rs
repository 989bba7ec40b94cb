//! The five controllers and what they share.
//!
//! Every reconciler follows one path: read (the object and what it references) → validate and plan (pure
//! functions) → act → write status. Errors go to [`error_policy`] as data; it records the failure metric
//! and chooses between waiting for a change and retrying with backoff.

pub mod backup;
pub mod backup_schedule;
pub mod backup_store;
pub mod clock;
pub mod conditions;
pub mod database_environment;
pub mod database_server;
pub mod engine;
pub mod error;
pub mod migration_run;
pub mod pod_job;
pub mod references;
pub mod restore;
pub mod restore_archive;
pub mod restore_drill;
pub mod schedule;
pub mod server_access;
pub mod status;
pub mod tasks;
pub mod watch;
pub mod work;

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use futures::{FutureExt, StreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;

use crate::{
    engines::{Dump, ENGINE},
    telemetry::Metrics,
};

/// The one field manager for everything Lifeboat writes with server-side apply.
pub const FIELD_MANAGER: &str = "lifeboat";

/// Configuration read once in `main` and shared by every reconciler.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Only watch this namespace; `None` watches all namespaces.
    pub watch_namespace: Option<String>,
    /// Name of this instance in events (`reportingInstance`).
    pub instance: Option<String>,
    /// The operator's own namespace: where the admin Secrets of DatabaseServers live.
    pub operator_namespace: String,
    /// Bounds on concurrent database work.
    pub work_limits: work::Limits,
    /// Longest time one provisioning job (create, seed, migrate, health check) may take.
    pub work_timeout: Option<std::time::Duration>,
    /// Directory of `pg_dump` and `pg_restore` for backups; `None`: found on `PATH`.
    pub pg_bin_dir: Option<std::path::PathBuf>,
    /// Where parallel restores spool dumps, and how much.
    pub spool: restore::Spool,
    /// Image prefixes an `instance` environment may run (`spec.instance.image`); empty: only the
    /// default image.
    pub allowed_images: Vec<String>,
}

impl Config {
    /// [`Config::work_timeout`] or its default.
    pub fn work_timeout(&self) -> std::time::Duration {
        self.work_timeout.unwrap_or(DEFAULT_WORK_TIMEOUT)
    }
}

/// Default of `--work-timeout`: a provisioning job (clone, seed, migrations, health) that takes longer
/// is stopped and reported.
pub const DEFAULT_WORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Shared state of all controllers.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Slots for long database work, shared by every controller.
    pub slots: work::Slots,
    /// Provisioning jobs of DatabaseEnvironments.
    pub environment_jobs: database_environment::Jobs,
    /// Backup tasks of BackupSchedules and the client tools they run.
    pub backups: backup_schedule::Backups,
    /// Restore drill tasks.
    pub drills: restore_drill::Drills,
    /// Consecutive failures per object, for exponential backoff; reset by a successful reconcile.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "lifeboat".into(),
            instance: config.instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            slots: work::Slots::new(config.work_limits),
            environment_jobs: database_environment::Jobs::default(),
            backups: backup_schedule::Backups::new(
                ENGINE.tools(config.pg_bin_dir.clone()),
                config.spool.clone(),
            ),
            drills: restore_drill::Drills::default(),
            config,
            metrics,
            failures: Mutex::default(),
        }
    }

    /// An `Api` for a namespaced kind, limited to the watched namespace when one is configured.
    pub fn watched_api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.config.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Publishes an event on `obj` (`note` cut to 1000 bytes). An event is a courtesy: failing to publish
    /// one is logged and never fails the reconcile.
    pub async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, note: impl AsRef<str>)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(status::truncate(note.as_ref(), 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, "could not publish event");
        }
    }

    fn record_failure(&self, key: String) -> u32 {
        let mut failures = self.failures.lock().expect("failure map poisoned");
        let n = failures.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    }

    fn record_success(&self, key: &str) {
        self.failures
            .lock()
            .expect("failure map poisoned")
            .remove(key);
    }
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Shared `error_policy`: count the failure by reason, then wait for a change or back off.
pub fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj, error, ctx| {
        ctx.metrics.reconcile_failed(controller, error.reason());
        let attempt = ctx.record_failure(object_key(obj.as_ref()));
        let action = error.action(attempt);
        let meta = obj.meta();
        warn!(
            controller,
            namespace = meta.namespace.as_deref().unwrap_or(""),
            name = meta.name.as_deref().unwrap_or(""),
            reason = error.reason(),
            error = %error::chain(error),
            ?action,
            "reconcile failed"
        );
        action
    }
}

/// Wraps a reconciler with metrics and the backoff reset.
pub async fn instrumented<K, F>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    f: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action, Error>>,
{
    let _timer = ctx.metrics.reconcile_started(controller);
    let result = f.await;
    if result.is_ok() {
        ctx.record_success(&object_key(obj.as_ref()));
    }
    result
}

/// The watcher configuration every controller uses.
pub fn watcher_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Tells controllers (and anything else long-lived) to stop taking new work: one cloneable token, so
/// adding a controller needs no new channel.
pub type Shutdown = tokio_util::sync::CancellationToken;

/// Runs all five controllers until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    info!(namespace = ?ctx.config.watch_namespace, "starting controllers");
    // Long work holds the Context itself, so dropping the controllers alone would not stop it: when this
    // future is dropped (a hard stop) or ends, every job and backup task is aborted, as a dead process's.
    let _abort = AbortWork(ctx.clone());
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
    let controllers = vec![
        watched(
            database_environment::CONTROLLER,
            database_environment::controller(ctx.clone(), next()).boxed(),
        ),
        watched(
            migration_run::CONTROLLER,
            migration_run::run_controller(
                ctx.clone(),
                next(),
                Arc::new(backup_schedule::taker::ScheduleBackups { ctx: ctx.clone() }),
            )
            .boxed(),
        ),
        watched(
            backup_schedule::CONTROLLER,
            backup_schedule::controller(ctx.clone(), next()).boxed(),
        ),
        watched(
            restore_drill::CONTROLLER,
            restore_drill::controller(ctx.clone(), next()).boxed(),
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
struct AbortWork(Arc<Context>);

impl Drop for AbortWork {
    fn drop(&mut self) {
        self.0.environment_jobs.abort_all();
        self.0.backups.tasks.abort_all();
        self.0.drills.tasks.abort_all();
    }
}

/// Logs each reconcile result of a controller stream at debug level.
pub async fn drain<S, T, E>(controller: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    stream
        .for_each(|res| async move {
            match res {
                Ok(o) => tracing::debug!(controller, object = ?o, "reconciled"),
                Err(e) => tracing::debug!(controller, error = %e, "reconcile error"),
            }
        })
        .await;
}

/// A `Controller::watches` mapper: a change of a referenced object (an environment, a schedule) wakes the
/// objects of kind `K` in its namespace whose spec names it (`referenced_name`).
pub fn referencing<K, R>(
    store: kube::runtime::reflector::Store<K>,
    referenced_name: fn(&K) -> &str,
) -> impl Fn(R) -> Vec<kube::runtime::reflector::ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + ResourceExt + Clone + Send + Sync + 'static,
    R: ResourceExt,
{
    move |changed: R| {
        let (ns, name) = (changed.namespace(), changed.name_any());
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == ns && referenced_name(o) == name)
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

/// A `Controller::watches` mapper for ConfigMaps: a changed migration source wakes the objects of kind
/// `K` in its namespace whose source (`source`: `None` when the object does not care now) includes it,
/// so new migration files apply within seconds, not at the next health period.
pub fn sourcing<K>(
    store: kube::runtime::reflector::Store<K>,
    source: fn(&K) -> Option<&crate::api::ConfigMapSource>,
) -> impl Fn(k8s_openapi::api::core::v1::ConfigMap) -> Vec<kube::runtime::reflector::ObjectRef<K>>
+ Send
+ Sync
+ 'static
where
    K: Resource<DynamicType = ()> + ResourceExt + Clone + Send + Sync + 'static,
{
    move |cm| {
        let ns = cm.namespace();
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == ns)
            .filter(|o| source(o).is_some_and(|s| references::source_includes(s, &cm)))
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}
