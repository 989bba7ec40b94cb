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

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use tracing::warn;

pub use error::Error;

use crate::{
    engines::{Dump, ENGINE, Tools},
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

    /// The engine's client tools (`pg_dump`, `pg_restore`) from [`Config::pg_bin_dir`], for backups,
    /// restores and drills.
    pub fn tools(&self) -> Tools {
        ENGINE.tools(self.pg_bin_dir.clone())
    }
}

/// Default of `--work-timeout`: a provisioning job (clone, seed, migrations, health) that takes longer
/// is stopped and reported.
pub const DEFAULT_WORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// What every controller uses. A kind's own state (its tasks or jobs) lives with the kind, in a struct
/// holding this context (`database_environment::Environments`, `backup_schedule::Backups`,
/// `restore_drill::Drills`, `migration_run::Runs`).
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Slots for long database work, shared by every controller.
    pub slots: work::Slots,
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
            note: Some(truncate(note.as_ref(), 1000)),
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

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut (event notes, status
/// messages).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Golden renderings for the kinds' tests (at the end: readers of this file stop at `cfg(test)`).
#[cfg(test)]
pub mod rendered;
