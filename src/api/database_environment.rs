//! `DatabaseEnvironment`: one database for one tier.

use k8s_openapi::{
    api::core::v1::ResourceRequirements,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema, ResourceExt, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::version::Version;

use super::common::{
    ConfigMapSource, ConnectionSecretRef, DURATION_PATTERN, LocalObjectReference,
    MAX_DURATION_LENGTH, duration_rule, impl_conditioned_status,
};

/// A database for one application in one tier (dev, ci, staging or production): provisioned on a
/// shared server, run as a dedicated instance, or adopted from outside; seeded, kept migrated and
/// health-checked, with its connection details in the Secret `<name>-connection`.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy takes for repeats.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "lifeboat.dev",
    version = "v1alpha1",
    kind = "DatabaseEnvironment",
    namespaced,
    status = "DatabaseEnvironmentStatus",
    derive = "PartialEq",
    shortname = "dbenv",
    shortname = "dbenvs",
    category = "lifeboat",
    selectable = ".spec.tier",
    doc = "A database for one application in one tier, with its connection Secret `<name>-connection`.",
    validation = Rule::new("self.metadata.name.size() <= 242").message(
        "metadata.name is at most 242 characters: the connection Secret <name>-connection must fit in 253"
    ),
    validation = Rule::new(
        "!has(self.spec.instance) || (self.metadata.name.size() <= 43 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))"
    ).message(
        "an instance environment's metadata.name names its StatefulSet and Service <name>-postgres or <name>-redis (52 characters at most): at most 43 characters, lowercase letters, digits and '-', starting with a letter"
    ),
    printcolumn(
        name = "Tier",
        type_ = "string",
        json_path = ".spec.tier",
        description = "Policy tier"
    ),
    printcolumn(
        name = "Engine",
        type_ = "string",
        json_path = ".spec.engine",
        description = "Database engine"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the database is usable"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why it is (not) ready"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.database",
        description = "Database name on the server",
        priority = 1
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the TTL deletes this environment"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new(
        "(has(self.server) ? 1 : 0) + (has(self.instance) ? 1 : 0) + (has(self.external) ? 1 : 0) == 1"
    ).message("set exactly one of spec.server, spec.instance or spec.external"),
    validation = Rule::new(
        "has(self.server) == has(oldSelf.server) && has(self.instance) == has(oldSelf.instance) \
         && has(self.external) == has(oldSelf.external)"
    ).message(
        "the provisioning source (server, instance or external) cannot change after creation; \
         create a new DatabaseEnvironment instead"
    ),
    validation = Rule::new(
        "self.tier != 'production' || !has(self.deletionPolicy) || self.deletionPolicy != 'Delete' \
         || (has(self.allowProductionDataLoss) && self.allowProductionDataLoss)"
    ).message(
        "deletionPolicy Delete on a production environment drops its data when the object is deleted; \
         set spec.allowProductionDataLoss: true to confirm, or use deletionPolicy Retain"
    ).field_path(".deletionPolicy"),
    validation = Rule::new("self.tier != 'production' || !has(self.ttl)")
        .message("a production environment cannot expire; remove spec.ttl")
        .field_path(".ttl"),
    validation = Rule::new("!has(self.restore) || (has(self.server) && !has(self.server.template) && !has(self.server.templateFrom) && !has(self.seed))")
        .message("spec.restore fills a new database on a shared server from a backup: it needs spec.server, and neither spec.server.template nor spec.seed (the backup is the content)")
        .field_path(".restore"),
    validation = Rule::new("has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)")
        .message("spec.restore cannot be added, changed or removed after creation; create a new DatabaseEnvironment to restore another backup")
        .field_path(".restore"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.seed)")
        .message("spec.seed is SQL, which engine redis does not run; remove spec.seed")
        .field_path(".seed"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.migrations)")
        .message("spec.migrations are SQL migrations, which engine redis does not run; remove spec.migrations")
        .field_path(".migrations"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.server) || !has(self.server.template)")
        .message("spec.server.template clones a PostgreSQL database; engine redis has no templates: remove it")
        .field_path(".server.template"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.server) || !has(self.server.templateFrom)")
        .message("spec.server.templateFrom clones a PostgreSQL database; engine redis has no templates: remove it")
        .field_path(".server.templateFrom"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.server) || !has(self.server.databaseName)")
        .message("spec.server.databaseName names a PostgreSQL database; a redis environment's user and key prefix are derived from its namespace and name: remove it")
        .field_path(".server.databaseName"),
    validation = Rule::new("!has(self.engine) || self.engine != 'redis' || !has(self.healthCheck) || !has(self.healthCheck.query) || self.healthCheck.query == 'SELECT 1'")
        .message("spec.healthCheck.query is SQL; a redis environment is checked with PING: remove the query (periodSeconds and failureThreshold apply)")
        .field_path(".healthCheck.query"),
    validation = Rule::new("(has(self.engine) && self.engine == 'redis') || !has(self.instance) || (!has(self.instance.maxMemory) && !has(self.instance.evictionPolicy) && !(has(self.instance.cache) && self.instance.cache))")
        .message("spec.instance.maxMemory, cache and evictionPolicy are Redis settings; remove them for engine postgres")
        .field_path(".instance"),
    validation = Rule::new("!has(self.thresholds) || (has(self.engine) && self.engine == 'redis')")
        .message("spec.thresholds judges a cache's figures, which only engine redis reports in this release; remove spec.thresholds")
        .field_path(".thresholds"),
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEnvironmentSpec {
    /// Database engine: `postgres` or `redis` (`mongodb` is planned). Default `postgres`. A `redis`
    /// environment is an ACL user limited to its own key prefix on a shared Redis (`spec.server`);
    /// seeds, templates, migrations and SQL health queries are PostgreSQL's. Immutable.
    #[serde(default)]
    #[x_kube(
        validation = Rule::new("self == 'postgres' || self == 'redis'").message("engine must be postgres or redis in this release (mongodb is planned)"),
        validation = Rule::new("self == oldSelf").message("engine is immutable; create a new DatabaseEnvironment"),
    )]
    pub engine: Engine,

    /// Policy tier: `dev`, `ci`, `staging` or `production`. It sets the defaults: `ci` is ephemeral
    /// (no volume, TTL 24h, deletionPolicy Delete), `dev` and `staging` are persistent, `production`
    /// is persistent with deletionPolicy Retain, expects backups and backs up before migrating.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("tier is immutable; create a new DatabaseEnvironment"))]
    pub tier: Tier,

    /// Provision a database and its own role on an existing shared server. The fast path for
    /// per-pull-request CI databases (optionally cloned from a template database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSource>,

    /// Run a dedicated database server for this environment (StatefulSet, headless Service and a
    /// generated superuser Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceSource>,

    /// Adopt an existing database (e.g. a managed cloud database) as-is. Lifeboat never creates
    /// or drops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSource>,

    /// SQL applied once, right after the database is created (never for `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSource>,

    /// Create the database from a backup of a BackupSchedule (same namespace) instead of empty: the
    /// way back after losing a database, or to fill a staging database from production's backups.
    /// The dump is restored as the environment's own role and checked against the backup's manifest
    /// (row counts, and checksums when recorded) before the environment is Ready. `server` source
    /// only; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSource>,

    /// Migration files to keep the database migrated to (the same source shape as a
    /// MigrationRun's `spec.source`). `Ready` waits until all of them are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<ConfigMapSource>,

    /// How long the environment lives, counted from its creation (e.g. `24h`, `90m`); after it the
    /// environment deletes itself. Unset: 24h for the `ci` tier, never for the others. Not allowed
    /// for `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DURATION_LENGTH))]
    #[x_kube(validation = duration_rule())]
    #[x_kube(validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) > duration('0s')")).message("ttl must be longer than 0s; remove it for no expiry (dev and staging)"))]
    pub ttl: Option<Duration>,

    /// What happens to the data when this object is deleted: `Delete` drops the database and role
    /// (or tears down the instance and its volume), `Retain` leaves them in place. Unset: `Retain`
    /// for `production`, `Delete` for the other tiers. An `external` database is never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Required to be `true` to combine tier `production` with deletionPolicy `Delete`: an
    /// explicit acknowledgement that deleting this object destroys production data. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_production_data_loss: bool,

    /// The query that proves the database answers, and how often to run it. Unset: `SELECT 1`
    /// every 30 seconds (`PING` for `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Limits on a cache's figures (engine `redis`): below the hit rate or above the memory share,
    /// the condition `WithinThresholds` turns False (the environment stays Ready: the data is
    /// still there). Unset: hit rate 80%, memory 90% of `maxmemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
}

/// Limits on a cache's figures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Lowest acceptable share of lookups that find their key, in percent, judged once the server
    /// has answered at least 100 lookups. Default 80.
    #[serde(default = "default_hit_rate_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub cache_hit_rate_percent: i32,
    /// Highest acceptable memory use, in percent of the server's `maxmemory` (not judged without
    /// one). Default 90.
    #[serde(default = "default_memory_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub memory_used_percent: i32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cache_hit_rate_percent: default_hit_rate_percent(),
            memory_used_percent: default_memory_percent(),
        }
    }
}

fn default_hit_rate_percent() -> i32 {
    80
}
fn default_memory_percent() -> i32 {
    90
}

/// Database engine: `postgres` or `redis` (`mongodb` planned).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    // PostgreSQL.
    #[default]
    Postgres,
    // Redis.
    Redis,
    // MongoDB (planned).
    MongoDb,
}

/// Policy tier: `dev`, `ci`, `staging` or `production`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    // A developer's long-lived database; persistent.
    Dev,
    // A throwaway database for one pipeline run; ephemeral, TTL 24h, deleted with the object.
    Ci,
    // A pre-production copy; persistent.
    Staging,
    // The real thing: retained on delete, backups expected, backup before every migration.
    Production,
}

impl Tier {
    /// Whether this tier keeps its data on a persistent volume (all but `ci`).
    pub fn is_persistent(self) -> bool {
        !matches!(self, Tier::Ci)
    }

    /// The deletion policy used when `spec.deletionPolicy` is unset.
    pub fn default_deletion_policy(self) -> DeletionPolicy {
        match self {
            Tier::Production => DeletionPolicy::Retain,
            Tier::Dev | Tier::Ci | Tier::Staging => DeletionPolicy::Delete,
        }
    }

    /// The TTL used when `spec.ttl` is unset (`ci`: 24 hours; other tiers never expire).
    pub fn default_ttl(self) -> Option<std::time::Duration> {
        matches!(self, Tier::Ci).then_some(std::time::Duration::from_secs(24 * 60 * 60))
    }
}

/// What happens to the data when the owning object is deleted: `Delete` or `Retain`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeletionPolicy {
    // Drop the database and role, or tear down the instance and its volume.
    Delete,
    // Leave the data where it is.
    Retain,
}

/// A logical database and its own role on an existing shared server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.serverRef) != has(self.adminSecretRef)")
        .message("set exactly one of server.serverRef (a DatabaseServer) or server.adminSecretRef (an admin Secret in this namespace)"),
    validation = Rule::new("!(has(self.template) && has(self.templateFrom))")
        .message("set at most one of server.template (a template database) or server.templateFrom (a template environment)"),
    validation = Rule::new(
        "has(self.serverRef) == has(oldSelf.serverRef) && (!has(self.serverRef) || self.serverRef == oldSelf.serverRef) \
         && has(self.adminSecretRef) == has(oldSelf.adminSecretRef) \
         && (!has(self.adminSecretRef) || self.adminSecretRef.name == oldSelf.adminSecretRef.name)"
    ).message("the server (serverRef or adminSecretRef) is immutable: the database lives there; create a new DatabaseEnvironment to use another server"),
    validation = Rule::new(
        "has(self.databaseName) == has(oldSelf.databaseName) \
         && (!has(self.databaseName) || self.databaseName == oldSelf.databaseName)"
    ).message("server.databaseName is immutable; create a new DatabaseEnvironment to use another database"),
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSource {
    /// The cluster-scoped DatabaseServer to provision on: its admin credentials stay in the
    /// operator's namespace, and it decides which namespaces may use it and which databases are
    /// templates. The way to share a server between teams. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ServerReference>,
    /// Secret in this namespace with an administrative connection to the server (keys `host`,
    /// `port`, `username`, `password`, optional `sslmode` and `ca.crt`); the role must be allowed to
    /// create databases and roles. For a server one team owns alone: whoever can read this Secret
    /// owns the server. Lifeboat keeps the Secret (finalizer `lifeboat.dev/in-use`) while
    /// environments need it for cleanup. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_ref: Option<ConnectionSecretRef>,
    /// Database to clone (`CREATE DATABASE … TEMPLATE`); nobody may be connected to it while
    /// cloning. Only databases marked as templates on the server (`IS_TEMPLATE true`) or listed in
    /// the DatabaseServer's `templates` may be cloned. Unset: an empty database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub template: Option<String>,
    /// Clone the database of this DatabaseEnvironment (same namespace, same server) instead: a
    /// template kept at the newest schema by its own `spec.migrations` (say, the main branch's), so a
    /// pull request's database only applies the pull request's migrations. The clone waits
    /// (`Reconciling`, reason `TemplateMigrating`) until the template environment is Ready with its
    /// current spec and no migration running or due, so it never copies a template mid-migration.
    /// Used when the database is created; later changes of the template do not reach the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_from: Option<LocalObjectReference>,
    /// Name of the database (and of its role) to create. Unset: derived from the namespace and
    /// the object name, with a hash of both so that no two environments share one. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]*$')").message(
        "databaseName must be a lowercase PostgreSQL identifier: letters, digits and _, not starting with a digit"
    ))]
    pub database_name: Option<String>,
}

/// A reference to a cluster-scoped DatabaseServer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerReference {
    /// Name of the DatabaseServer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A dedicated database server run by the operator for one environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSource {
    /// Major server version, e.g. `"18"`; pinned so an operator upgrade never upgrades data.
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+([.][0-9]+)?$')")
        .message("version must be a server version such as \"18\" or \"17.6\""))]
    pub version: String,
    /// Container image to run. Unset: the official image for `version` (`postgres:<version>`).
    /// Pin a digest in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Storage for the data directory: a PersistentVolumeClaim for persistent tiers, a size-limited
    /// `emptyDir` for `ci`. Unset: 1Gi on the default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<InstanceStorage>,
    /// CPU and memory requests and limits of the database container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Redis: the memory the server may use for data (`maxmemory`), e.g. `256Mi`. Unset: no limit
    /// (keep it below the container's memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))").message("maxMemory must be a positive quantity such as 256Mi"))]
    pub max_memory: Option<Quantity>,
    /// Redis: a cache, whose keys may be evicted at `maxMemory` (`evictionPolicy` defaults to
    /// `allkeys-lru`), rather than data (`noeviction`: writes fail at the limit). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// Redis: what is evicted at `maxMemory`. Unset: `allkeys-lru` for a cache, `noeviction`
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<EvictionPolicy>,
}

/// Redis's `maxmemory-policy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    // Refuse writes at the limit.
    Noeviction,
    // Evict the least recently used key.
    AllkeysLru,
    // Evict the least frequently used key.
    AllkeysLfu,
    // Evict any key.
    AllkeysRandom,
    // Evict the least recently used key with a TTL.
    VolatileLru,
    // Evict the least frequently used key with a TTL.
    VolatileLfu,
    // Evict any key with a TTL.
    VolatileRandom,
    // Evict the key with a TTL nearest to expiry.
    VolatileTtl,
}

impl EvictionPolicy {
    /// Redis's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionPolicy::Noeviction => "noeviction",
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::AllkeysLfu => "allkeys-lfu",
            EvictionPolicy::AllkeysRandom => "allkeys-random",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::VolatileLfu => "volatile-lfu",
            EvictionPolicy::VolatileRandom => "volatile-random",
            EvictionPolicy::VolatileTtl => "volatile-ttl",
        }
    }
}

/// Storage of a dedicated instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStorage {
    /// Volume size, e.g. `10Gi`. Default `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))").message("size must be a positive quantity such as 1Gi or 500Mi"))]
    pub size: Option<Quantity>,
    /// StorageClass of the PersistentVolumeClaim. Unset: the cluster default. Ignored for `ci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// An existing database adopted as-is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSource {
    /// Secret with the connection details of the database (keys `host`, `port`, `database`,
    /// `username`, `password`, optional `sslmode`).
    pub connection_secret_ref: ConnectionSecretRef,
}

/// A backup to create the database from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The BackupSchedule (same namespace) whose storage holds the backup.
    pub backup_schedule_ref: super::common::LocalObjectReference,
    /// The backup to restore (an id from the schedule's status or storage). Unset: the newest backup
    /// with a manifest when the environment is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup_id: Option<String>,
    /// Parallel `pg_restore` jobs (as RestoreDrill's `jobs`: above 1 the dump is spooled first, within
    /// the operator's `--spool-limit`). Unset or 1: streamed into one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8))]
    pub jobs: Option<i32>,
}

/// SQL applied once after the database is created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSource {
    /// ConfigMap in the same namespace holding the SQL.
    pub config_map_ref: LocalObjectReference,
    /// Key in the ConfigMap holding the SQL. Default `seed.sql`.
    #[serde(default = "default_seed_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_seed_key() -> String {
    "seed.sql".to_owned()
}

/// The query that proves the database answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// SQL run as the environment's own user; it passes when it returns without error.
    /// Default `SELECT 1`.
    #[serde(default = "default_health_query")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Seconds between checks. Default 30.
    #[serde(default = "default_period_seconds")]
    #[schemars(range(min = 1))]
    pub period_seconds: i32,
    /// Seconds after which a check counts as failed. Default 5.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i32,
    /// Consecutive failed checks before the environment stops being Ready. Default 3.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: i32,
}

fn default_health_query() -> String {
    "SELECT 1".to_owned()
}
fn default_period_seconds() -> i32 {
    30
}
fn default_timeout_seconds() -> i32 {
    5
}
fn default_failure_threshold() -> i32 {
    3
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            query: default_health_query(),
            period_seconds: default_period_seconds(),
            timeout_seconds: default_timeout_seconds(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

impl DatabaseEnvironment {
    /// The Secret with the environment's connection details: `<name>-connection` (the naming contract
    /// applications rely on).
    pub fn connection_secret_name(&self) -> String {
        format!("{}-connection", self.name_any())
    }
}

/// Observed state of a DatabaseEnvironment (kstatus: conditions `Ready`, `Reconciling`, `Stalled`; on
/// production also `BackupsExpected`, true while no BackupSchedule names it or its newest successful
/// backup is older than twice the schedule's interval).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEnvironmentStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Name of the database on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Name of the Secret with the connection details (`host`, `port`, `database`, `username`,
    /// `password`, `uri`, `jdbcUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Version the server reports, e.g. `18.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// When the TTL deletes this environment; unset when it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the seed SQL was applied; a seed is applied only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeded_at: Option<Time>,
    /// Newest migration version applied from `spec.migrations` (a string: `"20250101120000"`, `"1.2.3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<Version>,
    /// The backup the database was created from (`spec.restore`), once restored and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// The dedicated server, for `instance` environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceStatus>,
    /// A cache's figures at the last check (engine `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// A cache's figures, as the server reported them at the last check. On a shared server they are the
/// server's, shared by its tenants (`scope: server`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// Whose figures these are: `server` (a shared server's) or `instance` (the environment's own).
    pub scope: String,
    /// Share of lookups that found their key since the server started, in whole percent; unset
    /// before the first lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate_percent: Option<i32>,
    /// Lookups (hits and misses) since the server started.
    pub lookups: i64,
    /// Keys evicted to stay under `maxmemory` since the server started.
    pub evicted_keys: i64,
    /// Memory in use, in MiB.
    pub used_memory_mi_b: i64,
    /// The server's `maxmemory`, in MiB; unset when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mi_b: Option<i64>,
    /// Clients connected to the server.
    pub connected_clients: i64,
}
impl_conditioned_status!(DatabaseEnvironmentStatus);

/// Network address of a database server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Host name clients connect to.
    pub host: String,
    /// TCP port clients connect to.
    pub port: i32,
}

/// The objects running a dedicated instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Name of the StatefulSet running the server.
    pub stateful_set_name: String,
    /// Name of the headless Service in front of it.
    pub service_name: String,
    /// Image the server runs.
    pub image: String,
    /// Whether the data lives on a PersistentVolumeClaim (false: `emptyDir`).
    pub persistent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::*;
    use kube::CustomResourceExt;

    const EXAMPLE: &str = r#"
apiVersion: lifeboat.dev/v1alpha1
kind: DatabaseEnvironment
metadata: {name: pr-1234, namespace: shop}
spec:
  tier: ci
  server:
    adminSecretRef: {name: shared-pg-admin}
    template: shop_template
  migrations:
    configMapNames: [shop-migrations]
  seed:
    configMapRef: {name: shop-seed}
  ttl: 6h
  healthCheck: {query: "SELECT count(*) FROM products"}
"#;

    #[test]
    fn example_deserializes_with_defaults() {
        let env: DatabaseEnvironment = serde_yaml::from_str(EXAMPLE).unwrap();
        assert_eq!(env.spec.engine, Engine::Postgres);
        assert_eq!(env.spec.tier, Tier::Ci);
        let server = env.spec.server.as_ref().unwrap();
        assert_eq!(
            server.admin_secret_ref.as_ref().unwrap().name,
            "shared-pg-admin"
        );
        assert_eq!(server.template.as_deref(), Some("shop_template"));
        assert_eq!(env.spec.seed.as_ref().unwrap().key, "seed.sql");
        assert_eq!(
            env.spec.ttl.unwrap(),
            std::time::Duration::from_secs(6 * 3600)
        );
        let check = env.spec.health_check.as_ref().unwrap();
        assert_eq!((check.period_seconds, check.failure_threshold), (30, 3));
        assert!(!env.spec.allow_production_data_loss);
        assert_eq!(
            env.spec.tier.default_deletion_policy(),
            DeletionPolicy::Delete
        );
        // Serializing back omits what was not set.
        let json = serde_json::to_value(&env.spec).unwrap();
        assert!(
            json.get("allowProductionDataLoss").is_none() && json.get("deletionPolicy").is_none()
        );
    }

    #[test]
    fn enums_use_the_documented_strings() {
        let names = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        assert_eq!(
            names(serde_json::to_value(Engine::MongoDb).unwrap()),
            "mongodb"
        );
        assert_eq!(
            names(serde_json::to_value(Tier::Production).unwrap()),
            "production"
        );
        assert_eq!(
            names(serde_json::to_value(DeletionPolicy::Retain).unwrap()),
            "Retain"
        );
    }

    #[test]
    fn crd_carries_rules_columns_and_names() {
        let crd = DatabaseEnvironment::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("databaseenvironments.lifeboat.dev")
        );
        assert_names(&crd, &["dbenv", "dbenvs"]);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_columns(
            &crd,
            &[
                "Tier", "Engine", "Ready", "Reason", "Database", "Expires", "Age",
            ],
        );
        let rules = rules(&crd);
        for (rule, message) in [
            (
                "(has(self.server) ? 1 : 0) + (has(self.instance) ? 1 : 0) + (has(self.external) ? 1 : 0) == 1",
                "set exactly one of spec.server, spec.instance or spec.external",
            ),
            (
                "self == 'postgres' || self == 'redis'",
                "engine must be postgres or redis in this release (mongodb is planned)",
            ),
            (
                "!has(self.engine) || self.engine != 'redis' || !has(self.seed)",
                "spec.seed is SQL, which engine redis does not run; remove spec.seed",
            ),
            (
                "self == oldSelf",
                "tier is immutable; create a new DatabaseEnvironment",
            ),
            (
                "self.tier != 'production' || !has(self.ttl)",
                "a production environment cannot expire; remove spec.ttl",
            ),
        ] {
            assert!(
                rules.contains(&(rule.into(), message.into())),
                "missing rule {rule}"
            );
        }
        assert!(
            rules
                .iter()
                .any(|(r, m)| r.contains("allowProductionDataLoss") && m.contains("Retain"))
        );
        let schema = schema(&crd);
        let ttl = &schema["properties"]["spec"]["properties"]["ttl"];
        assert_eq!(
            ttl["x-kubernetes-validations"][0]["rule"],
            crate::api::common::duration_rule().rule
        );
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }

    #[test]
    fn schema_is_structural_and_documented() {
        let crd = DatabaseEnvironment::crd();
        assert_structural(&schema(&crd));
        assert_all_described(&schema(&crd));
    }
}
