//! [`Tenancy`]: an environment's place on a shared server as coarse verbs (check the server,
//! provision, check health, deprovision). The engine runs its own steps in its own order; the
//! controller only reads Secrets, writes the connection Secret and reports. Engines reach controllers
//! through [`super::tenancy`] as `&'static dyn Tenancy`, chosen per object at run time.
//!
//! PostgreSQL still takes its finer path (role, database, template, restore, seed, migrations, each a
//! trait of `engines`), because the controller calls back into Kubernetes between those steps;
//! Redis (and the engines after it) go through these verbs.

use std::{collections::BTreeMap, fmt};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Failure, Kind, ServerCredentials};
use crate::domain::manifest::TableStats;

/// Where a backup writes its archive (the engine shuts it down at the end).
pub type Sink = Box<dyn AsyncWrite + Unpin + Send>;
/// Where an archive is read from.
pub type Source = Box<dyn AsyncRead + Unpin + Send>;

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub server_version: String,
    /// The archive's format, as a manifest records it.
    pub format: &'static str,
    /// Keys per type (with name checksums when asked), as a manifest records them.
    pub tables: Vec<TableStats>,
    /// What the engine read of the content itself, when it reads it (a snapshot file).
    pub content: Option<Content>,
}

/// An archive's content as the engine read it: its own format version and the SHA-256 of its bytes
/// before compression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// e.g. `RDB 10`.
    pub version: String,
    pub sha256: String,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub keys: u64,
    /// Keys restored with a TTL.
    pub expiring: u64,
    /// How far a restored TTL fell short of the recorded one, at most (milliseconds).
    pub max_ttl_drift_ms: i64,
    /// Keys that had a TTL in the archive but none once restored.
    pub ttl_lost: u64,
}

/// An environment's place on a shared server: its user, the part of the keyspace it owns, and the
/// UID of the owning object (the marker on everything made for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub user: String,
    /// Every key (and channel) the user may touch starts with this.
    pub key_prefix: String,
    pub uid: String,
}

/// What a server says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// The version it reports, e.g. `7.0.15`.
    pub version: String,
}

/// What one check of an environment found. The figures are the server's (a shared server's are
/// shared by its tenants); `None` where the server does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub evicted_keys: u64,
    pub used_memory_bytes: u64,
    /// `None`: no limit.
    pub max_memory_bytes: Option<u64>,
    pub connected_clients: u64,
}

impl Usage {
    /// Hits over lookups, `None` before the first lookup.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.keyspace_hits + self.keyspace_misses;
        (lookups > 0).then(|| self.keyspace_hits as f64 / lookups as f64)
    }

    /// Used memory over the limit, `None` without a limit.
    pub fn memory_ratio(&self) -> Option<f64> {
        self.max_memory_bytes
            .filter(|m| *m > 0)
            .map(|m| self.used_memory_bytes as f64 / m as f64)
    }
}

/// What provisioning did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// Whether the user was created now (rather than restated).
    pub created: bool,
}

/// An engine's failure, engine-neutral: the reason and classes a controller needs, the message for
/// people (never a password), and the engine's own error as the cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub reason: &'static str,
    pub transient: bool,
    pub auth: bool,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl EngineError {
    pub fn from_failure(e: impl Failure) -> Self {
        EngineError {
            reason: e.reason(),
            transient: e.is_transient(),
            auth: e.is_auth_failure(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

impl Failure for EngineError {
    fn reason(&self) -> &'static str {
        self.reason
    }
    fn is_transient(&self) -> bool {
        self.transient
    }
    fn is_auth_failure(&self) -> bool {
        self.auth
    }
}

/// An environment on a shared server, as coarse verbs. Every verb is idempotent, and a verb that
/// removes something only removes what carries the tenant's marker.
pub trait Tenancy: Send + Sync {
    fn kind(&self) -> Kind;
    /// The tenant of the environment `name` in `namespace` with UID `uid`.
    fn tenant(&self, namespace: &str, name: &str, uid: &str) -> Tenant;
    /// Whether the server answers with the admin credentials and lets them manage tenants.
    fn check_server<'a>(
        &'a self,
        admin: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<ServerFacts, EngineError>>;
    /// Creates the tenant's user with `password`, or restates its rights and password.
    fn provision<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Provisioned, EngineError>>;
    /// As the tenant's own user (`app`): does the server answer? Then, as the admin, the server's
    /// figures.
    fn check<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        app: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<Usage, EngineError>>;
    /// A whole server reached with `creds` (an environment's own instance, or an adopted one): does
    /// it answer, its version, and its figures when `creds` may read them.
    fn adopt<'a>(
        &'a self,
        creds: &'a ServerCredentials,
    ) -> BoxFuture<'a, Result<(ServerFacts, Option<Usage>), EngineError>>;
    /// Removes the tenant's user and data when they carry its marker; what was removed, for people.
    fn deprovision<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
    ) -> BoxFuture<'a, Result<Vec<String>, EngineError>>;
    /// The connection Secret's data for `app` (the tenant's own credentials).
    fn connection_data(&self, app: &ServerCredentials, tenant: &Tenant)
    -> BTreeMap<String, String>;

    /// The tenant's data under `prefix`, read as `app` (its own user), written as an archive to
    /// `sink`.
    fn backup<'a>(
        &'a self,
        app: &'a ServerCredentials,
        prefix: &'a str,
        checksums: bool,
        sink: Sink,
    ) -> BoxFuture<'a, Result<Archive, EngineError>>;
    /// Reads a whole archive back: the statistics it holds (a truncated or damaged one fails, saying
    /// which).
    fn check_archive(
        &self,
        source: Source,
        checksums: bool,
    ) -> BoxFuture<'_, Result<Vec<TableStats>, EngineError>>;
    /// The prefix a drill of UID `drill_uid` restores under (no tenant's prefix starts like it).
    fn scratch_prefix(&self, drill_uid: &str) -> String;
    /// Restores an archive under `prefix` as `admin`, replacing what is there.
    fn restore<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
        source: Source,
    ) -> BoxFuture<'a, Result<RestoreReport, EngineError>>;
    /// The statistics of what is under `prefix`, as an archive's.
    fn stats<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
        checksums: bool,
    ) -> BoxFuture<'a, Result<Vec<TableStats>, EngineError>>;
    /// The backup the tenant's data was restored from, when that was recorded.
    fn restored_from<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
    ) -> BoxFuture<'a, Result<Option<String>, EngineError>>;
    /// Records that backup `id` was restored into the tenant (after it was checked).
    fn mark_restored<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        tenant: &'a Tenant,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Deletes everything under `prefix` (a drill's scratch); how many keys.
    fn clear<'a>(
        &'a self,
        admin: &'a ServerCredentials,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<u64, EngineError>>;
}

impl fmt::Debug for dyn Tenancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenancy({})", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_a_denominator() {
        let mut u = Usage::default();
        assert_eq!(u.hit_rate(), None);
        assert_eq!(u.memory_ratio(), None);
        u.keyspace_hits = 9;
        u.keyspace_misses = 1;
        u.used_memory_bytes = 50;
        u.max_memory_bytes = Some(200);
        assert_eq!(u.hit_rate(), Some(0.9));
        assert_eq!(u.memory_ratio(), Some(0.25));
    }
}
