//! Logs, metrics and the health/metrics HTTP endpoint.
//!
//! Metric labels are static strings only (controller names and error reasons), never object names or
//! messages, so cardinality stays bounded. The one exception is per-BackupSchedule gauges
//! ([`ScheduleLabels`]): alerts on "no successful backup within twice the interval" need them, and
//! schedules are few (one or two per production database), unlike per-pull-request environments.
//! Cache figures are per server ([`ServerLabels`]) for the same reason: a shared server's figures
//! are its own, whatever number of tenants it has.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::{EnvFilter, prelude::*};

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `level` is an `EnvFilter` directive such as `info` or
/// `lifeboat=debug,kube=info`.
pub fn init_tracing(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init()?,
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Final phase (`Succeeded`, `Failed`, `RolledBack`).
    pub phase: &'static str,
    /// Static reason constant of the outcome.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

/// Labels of a per-object gauge (a BackupSchedule or a RestoreDrill).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub namespace: String,
    pub name: String,
}

/// Labels of a per-server gauge: the engine, and the server (a DatabaseServer's name, or
/// `<namespace>/<secret>` for a namespace's own admin Secret). Servers are few, like schedules.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub engine: String,
    pub server: String,
}

/// A cache server's figures at its tenants' last check (engine `redis`).
#[derive(Default)]
pub struct CacheMetrics {
    pub hit_ratio: Family<ServerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub lookups: Family<ServerLabels, Gauge>,
    pub evicted_keys: Family<ServerLabels, Gauge>,
    pub used_memory_bytes: Family<ServerLabels, Gauge>,
    pub max_memory_bytes: Family<ServerLabels, Gauge>,
    pub connected_clients: Family<ServerLabels, Gauge>,
}

impl CacheMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_hit_ratio",
            "Share of a cache server's lookups that found their key since it started",
            self.hit_ratio.clone(),
        );
        registry.register(
            "cache_lookups",
            "Lookups (hits and misses) a cache server answered since it started",
            self.lookups.clone(),
        );
        registry.register(
            "cache_evicted_keys",
            "Keys a cache server evicted to stay under maxmemory since it started",
            self.evicted_keys.clone(),
        );
        registry.register(
            "cache_used_memory_bytes",
            "Memory a cache server uses",
            self.used_memory_bytes.clone(),
        );
        registry.register(
            "cache_max_memory_bytes",
            "A cache server's maxmemory (absent without one)",
            self.max_memory_bytes.clone(),
        );
        registry.register(
            "cache_connected_clients",
            "Clients connected to a cache server",
            self.connected_clients.clone(),
        );
    }

    /// Records one check's figures.
    pub fn record(&self, labels: &ServerLabels, usage: &crate::engines::Usage) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(rate) = usage.hit_rate() {
            self.hit_ratio.get_or_create(labels).set(rate);
        }
        self.lookups
            .get_or_create(labels)
            .set(as_i64(usage.keyspace_hits + usage.keyspace_misses));
        self.evicted_keys
            .get_or_create(labels)
            .set(as_i64(usage.evicted_keys));
        self.used_memory_bytes
            .get_or_create(labels)
            .set(as_i64(usage.used_memory_bytes));
        match usage.max_memory_bytes {
            Some(m) => {
                self.max_memory_bytes.get_or_create(labels).set(as_i64(m));
            }
            None => {
                self.max_memory_bytes.remove(labels);
            }
        }
        self.connected_clients
            .get_or_create(labels)
            .set(as_i64(usage.connected_clients));
    }
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
    pub migration_runs: Family<OutcomeLabels, Counter>,
    pub migration_run_duration: Histogram,
    /// Finished backups by phase (`Succeeded`, `Failed`) and reason.
    pub backups: Family<OutcomeLabels, Counter>,
    pub backup_duration: Histogram,
    /// Bytes stored by successful backups.
    pub backup_bytes: Counter,
    /// Unix time of the newest successful backup, per schedule.
    pub backup_last_success: Family<ScheduleLabels, Gauge>,
    /// Seconds between two slots of the schedule (from its cron), per schedule.
    pub backup_interval: Family<ScheduleLabels, Gauge>,
    /// 1 while a schedule's newest backup failed, per schedule.
    pub backup_failing: Family<ScheduleLabels, Gauge>,
    /// 1 while a passed restore drill of the schedule's backups is recent enough (`Recoverable`).
    pub backup_recoverable: Family<ScheduleLabels, Gauge>,
    /// Seconds of written WAL not archived yet, per schedule with WAL archiving.
    pub wal_archive_lag: Family<ScheduleLabels, Gauge>,
    /// Finished restore drills by phase (`Passed`, `Failed`) and reason.
    pub drills: Family<OutcomeLabels, Counter>,
    /// Measured RTO of passed drills.
    pub drill_rto: Histogram,
    /// Measured RPO (age of the restored backup) of drills.
    pub drill_rpo: Histogram,
    /// 1 when a drill's last run met its objectives, 0 when it missed one (drills with objectives).
    pub drill_objectives_met: Family<ScheduleLabels, Gauge>,
    /// Cache servers' figures (engine `redis`).
    pub cache: CacheMetrics,
    /// Set when a part of the operator stopped that should run for as long as the process does (a
    /// controller); `/healthz` then fails with this reason, so the kubelet restarts the pod.
    pub broken: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self::unregistered(Registry::with_prefix("lifeboat"));
        // Registered in this order, which is the order of `/metrics`.
        metrics.register_migrations();
        metrics.register_backups_and_drills();
        metrics.register_reconciles();
        metrics.cache.register(&mut metrics.registry);
        metrics
    }
}

impl Metrics {
    /// Every metric, none registered in `registry` yet.
    fn unregistered(registry: Registry) -> Self {
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            });
        let migration_run_duration = Histogram::new([
            0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ]);
        let backup_duration = Histogram::new([
            1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
        ]);
        let drill_rto = Histogram::new([
            1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
        ]);
        let drill_rpo = Histogram::new([
            60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0, 172800.0, 604800.0,
        ]);
        Self {
            registry,
            reconciliations: Family::default(),
            failures: Family::default(),
            reconcile_duration,
            leader: Gauge::default(),
            migration_runs: Family::default(),
            migration_run_duration,
            backups: Family::default(),
            backup_duration,
            backup_bytes: Counter::default(),
            backup_last_success: Family::default(),
            backup_interval: Family::default(),
            backup_failing: Family::default(),
            backup_recoverable: Family::default(),
            wal_archive_lag: Family::default(),
            drills: Family::default(),
            drill_rto,
            drill_rpo,
            drill_objectives_met: Family::default(),
            cache: CacheMetrics::default(),
            broken: std::sync::Mutex::default(),
        }
    }

    fn register_migrations(&mut self) {
        self.registry.register(
            "migration_runs",
            "Finished MigrationRun attempts by phase and reason",
            self.migration_runs.clone(),
        );
        self.registry.register(
            "migration_run_duration_seconds",
            "Wall time of one MigrationRun attempt, from lock to result",
            self.migration_run_duration.clone(),
        );
    }

    fn register_backups_and_drills(&mut self) {
        self.registry.register(
            "wal_archive_lag_seconds",
            "Seconds of WAL a server wrote that are not archived yet (BackupSchedule spec.wal), growing while archiving is stopped",
            self.wal_archive_lag.clone(),
        );
        self.registry.register(
            "backup_recoverable",
            "1 while a restore drill passed on the schedule's backups within its recoverableWithin",
            self.backup_recoverable.clone(),
        );
        self.registry.register(
            "restore_drill_objectives_met",
            "1 when a RestoreDrill's last run met its objectives, 0 when it missed one",
            self.drill_objectives_met.clone(),
        );
        self.registry.register(
            "restore_drills",
            "Finished restore drills by phase and reason",
            self.drills.clone(),
        );
        self.registry.register(
            "restore_drill_rto_seconds",
            "Measured recovery time of passed restore drills",
            self.drill_rto.clone(),
        );
        self.registry.register(
            "restore_drill_rpo_seconds",
            "Age of the restored backup when a drill started",
            self.drill_rpo.clone(),
        );
        self.registry.register(
            "backups",
            "Finished backups by phase and reason",
            self.backups.clone(),
        );
        self.registry.register(
            "backup_duration_seconds",
            "Wall time of one backup, from snapshot to manifest",
            self.backup_duration.clone(),
        );
        self.registry.register(
            "backup_stored_bytes",
            "Bytes written to object storage by successful backups",
            self.backup_bytes.clone(),
        );
        self.registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time the newest successful backup of a schedule finished",
            self.backup_last_success.clone(),
        );
        self.registry.register(
            "backup_schedule_interval_seconds",
            "Seconds between two slots of a schedule",
            self.backup_interval.clone(),
        );
        self.registry.register(
            "backup_failing",
            "1 while the newest backup of a schedule failed",
            self.backup_failing.clone(),
        );
    }

    fn register_reconciles(&mut self) {
        self.registry.register(
            "reconciliations",
            "Reconcile calls by controller",
            self.reconciliations.clone(),
        );
        self.registry.register(
            "reconcile_failures",
            "Failed reconciles by controller and reason",
            self.failures.clone(),
        );
        self.registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile call",
            self.reconcile_duration.clone(),
        );
        self.registry.register(
            "leader",
            "1 while this instance holds the leader Lease",
            self.leader.clone(),
        );
    }
}

impl Metrics {
    /// Marks the start of one reconcile; the returned guard records its duration when dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: std::time::Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, reason })
            .inc();
    }

    /// Total reconcile calls made by one controller (used by tests and logs).
    pub fn reconcile_count(&self, controller: &'static str) -> u64 {
        self.reconciliations
            .get_or_create(&ControllerLabels { controller })
            .get()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Readiness as `/readyz` reports it: true once the API server answered and Lifeboat's CRDs are
/// established. A passive replica waiting for the Lease is ready too (the `lifeboat_leader` gauge tells
/// which one leads), so rolling updates are not blocked by a standby.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(HttpState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let broken = state
        .metrics
        .broken
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match broken {
        None => (StatusCode::OK, "ok".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn readyz_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the API server and CRDs",
        )
    }
}
