//! Database engines: one trait per capability a controller uses (connecting, provisioning, dropping,
//! health, connection details, the instance template, dump, restore, and migrate in [`migrate`]),
//! engine-neutral data shapes
//! ([`ServerCredentials`], [`Target`], [`RestoreInput`], [`RestoreErrors`]), and [`Engine`], the engine
//! controllers call through those traits.
//!
//! The engine is chosen per object at run time: `spec.engine` names a [`Kind`], whose declared
//! [`Capability`]s a controller asks for before it acts ([`Kind::require`]: one refusal,
//! `EngineUnsupported`). Engines whose environments are an account on a shared server go through the
//! coarse verbs of [`Tenancy`] ([`tenancy`] gives the engine for a kind: Redis); PostgreSQL, the SQL
//! engine, goes through the finer traits below on [`ENGINE`] (its controller path seeds, clones,
//! restores and migrates between steps). What a connection Secret holds comes from the kind's
//! [`ConnectionDetails`] ([`connection_details`]). docs/architecture.md has "adding an engine".

pub mod capability;
pub mod migrate;
pub mod naming;
pub mod postgres;
pub mod redis;
pub mod tenancy;
pub mod wal;

pub use capability::{Capability, Kind, Unsupported};
pub use migrate::{Migrate, MigrationLock};
pub use tenancy::{Archive, Content, EngineError, RestoreReport, Tenancy, Tenant, Usage};

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::Child;

use crate::domain::manifest::TableStats;

/// The SQL engine, whose finer capability traits controllers call: PostgreSQL.
pub type Engine = postgres::Postgres;
/// The engine value controllers call the SQL capability traits on.
pub const ENGINE: Engine = postgres::Postgres;

/// The engine of `kind` as [`Tenancy`] verbs, when its environments go through them.
/// The engine's WAL archiving, when it has one (PostgreSQL).
pub fn wal_archiver(kind: Kind) -> Option<&'static dyn wal::WalArchiver> {
    match kind {
        Kind::Postgres => Some(&postgres::Postgres),
        _ => None,
    }
}

pub fn tenancy(kind: Kind) -> Option<&'static dyn Tenancy> {
    match kind {
        Kind::Redis => Some(&redis::Redis),
        Kind::Postgres | Kind::MongoDb => None,
    }
}

/// How `kind`'s server runs in a pod, when it can.
pub fn instance_template(kind: Kind) -> &'static (dyn InstanceTemplate + Sync) {
    match kind {
        Kind::Redis => &redis::Redis,
        Kind::Postgres | Kind::MongoDb => &ENGINE,
    }
}

/// What a Secret of `kind`'s servers holds and means.
pub fn connection_details(kind: Kind) -> &'static (dyn ConnectionDetails + Sync) {
    match kind {
        Kind::Redis => &redis::Redis,
        Kind::Postgres | Kind::MongoDb => &ENGINE,
    }
}
/// The engine's client programs (dump and restore), as the operator's flags configure them.
pub type Tools = <Engine as Dump>::Tools;

/// How to reach a database server, read from a Secret. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerCredentials {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full.
    pub sslmode: String,
    /// PEM CA bundle for verify-ca / verify-full.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ServerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sslmode", &self.sslmode)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// What one environment (or drill) needs on a server: its database and role, marked with `uid`.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub database: String,
    pub role: String,
    pub template: Option<String>,
    /// Databases the server's administrator allows as templates besides those the engine marks as such.
    pub allowed_templates: Vec<String>,
    /// Most connections the role may hold at once; `None`: no limit.
    pub connection_limit: Option<i32>,
    /// UID of the owning object: the marker on everything created.
    pub uid: String,
}

/// What a controller needs to know about an engine's failure.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// CamelCase reason for conditions, events and metrics.
    fn reason(&self) -> &'static str;
    /// Whether time alone may fix it (network, a busy template) rather than a person.
    fn is_transient(&self) -> bool;
    /// Whether the server refused the credentials.
    fn is_auth_failure(&self) -> bool;
}

/// Sessions on a server: the root of every capability that talks to one.
pub trait Connect {
    /// An open session.
    type Session: Send;
    type Error: Failure;

    /// The engine's name, as a manifest records it and instance objects are named (`postgres`).
    fn name(&self) -> &'static str;
    /// The server product's name, for messages (`PostgreSQL`).
    fn product(&self) -> &'static str;
    /// A session with admin credentials on the server's maintenance database.
    fn connect_admin(
        &self,
        admin: &ServerCredentials,
    ) -> impl Future<Output = Result<Self::Session, Self::Error>> + Send;
    /// A session as `creds` on `database`.
    fn connect(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> impl Future<Output = Result<Self::Session, Self::Error>> + Send;
    /// Ends a session (best effort).
    fn close(&self, session: Self::Session) -> impl Future<Output = ()> + Send;
    /// The server stops any one statement of this session after `limit`.
    fn limit_statements(
        &self,
        session: &mut Self::Session,
        limit: Duration,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// An environment's own role and database on a server, made idempotently; every step only touches
/// objects carrying the target's marker.
pub trait Provisioning: Connect {
    /// The default database (and role) name of an environment `name` in `namespace`.
    fn default_name(&self, namespace: &str, name: &str) -> String;
    /// Creates the role with `password` unless it exists; whether it was created now.
    fn ensure_role(
        &self,
        admin: &mut Self::Session,
        target: &Target,
        password: &str,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// Restates the role's attributes; whether it held a privilege it must not have.
    fn enforce_role(
        &self,
        admin: &mut Self::Session,
        target: &Target,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    fn set_role_password(
        &self,
        admin: &mut Self::Session,
        target: &Target,
        password: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Creates (or clones from `target.template`) the database unless it exists; whether it was
    /// created now.
    fn ensure_database(
        &self,
        admin: &mut Self::Session,
        admin_creds: &ServerCredentials,
        target: &Target,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// Applies the seed once, as the app; whether it was applied now.
    fn apply_seed(
        &self,
        app: &mut Self::Session,
        target: &Target,
        seed: &str,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// The backup the database was restored from, when that was recorded on it.
    fn restored_from(
        &self,
        admin: &mut Self::Session,
        target: &Target,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;
    /// Records on the database that backup `id` was restored into it.
    fn mark_restored(
        &self,
        admin: &mut Self::Session,
        target: &Target,
        id: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Taking an environment's objects away again.
pub trait Dropping: Connect {
    /// Drops the target's database and role when they carry its marker; returns what was dropped.
    fn drop_owned(
        &self,
        admin: &mut Self::Session,
        target: &Target,
    ) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send;
}

/// Whether a server (or database) answers.
pub trait Health: Connect {
    /// The server's version string, e.g. `18.4`.
    fn server_version(
        &self,
        session: &mut Self::Session,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;
    /// Whether the session's role may create databases and roles.
    fn may_provision(
        &self,
        admin: &mut Self::Session,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
    /// Runs an environment's health query; it must return at least one row.
    fn health_check(
        &self,
        session: &mut Self::Session,
        query: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a connection Secret says and what a Secret naming a server may say.
pub trait ConnectionDetails {
    /// The port when a Secret names none.
    fn default_port(&self) -> u16;
    /// The TLS modes a Secret may name.
    fn ssl_modes(&self) -> &'static [&'static str];
    /// The TLS mode when a Secret names none: with a CA, one that checks the server's certificate.
    fn default_ssl_mode(&self, with_ca: bool) -> &'static str;
    /// The connection Secret's key naming the environment's part of the server (`database`,
    /// `keyPrefix`).
    fn scope_key(&self) -> &'static str;
    /// The connection Secret's data: the parts and the URIs an application connects with.
    fn connection_data(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> BTreeMap<String, String>;
}

/// How much of its data a server in a pod keeps across a restart (from the environment's tier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Nothing on disk (`ci`).
    None,
    /// A write log, flushed every second (`dev`).
    Log,
    /// The log and periodic snapshots (`staging`, `production`).
    LogAndSnapshots,
}

/// What an instance's spec and tier ask of its server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSettings {
    pub durability: Durability,
    /// The memory the server may use for data, in bytes (`None`: no limit).
    pub max_memory_bytes: Option<u64>,
    /// What the server evicts at the limit (the engine's name for it).
    pub eviction_policy: Option<String>,
}

/// Running the engine's server in a pod (the `instance` source).
pub trait InstanceTemplate {
    /// The engine's name in the instance's object names (`<env>-postgres`).
    fn server_name(&self) -> &'static str;
    /// The container's arguments (empty: the image's default command).
    fn server_args(&self, settings: &InstanceSettings) -> Vec<String>;
    /// The official image of a version.
    fn official_image(&self, version: &str) -> String;
    /// The port the server listens on.
    fn port(&self) -> u16;
    /// The image's superuser.
    fn superuser(&self) -> &'static str;
    /// The uid (and gid) the image's server runs as.
    fn run_as(&self) -> i64;
    /// The data volume's mount path.
    fn data_mount(&self) -> &'static str;
    /// Environment variables placing the data on the volume.
    fn data_env(&self) -> Vec<(&'static str, &'static str)>;
    /// The variables the image reads the superuser's name and password from.
    fn superuser_env(&self) -> (&'static str, &'static str);
    /// The directory the server writes at run time besides its data and `/tmp` (socket, lock file);
    /// the pod's root file system is read-only.
    fn run_dir(&self) -> &'static str;
    /// The readiness (and liveness) command.
    fn ready_command(&self) -> Vec<String>;
    /// The superuser's credentials on a pod's server reached at `host`.
    fn instance_admin(&self, host: String, password: String) -> ServerCredentials;
}

/// An open snapshot a dump reads.
pub trait DumpSnapshot: Send {
    type Error: Failure;
    /// What the dump tool imports.
    fn id(&self) -> &str;
    fn server_version(&self) -> &str;
    fn server_major(&self) -> u32;
    /// Row counts (and, with `checksums`, content checksums) of every table the dump carries rows of.
    fn table_stats(
        &mut self,
        checksums: bool,
    ) -> impl Future<Output = Result<Vec<TableStats>, Self::Error>> + Send;
    /// Ends the snapshot (and releases the backup lock).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Logical backups with the engine's own client program.
pub trait Dump: Connect {
    /// The client programs and where they are.
    type Tools: Clone + fmt::Debug + Send + Sync;
    type Snapshot: DumpSnapshot<Error = Self::Error>;

    /// The client programs in `bin_dir` (`None`: found on `PATH`).
    fn tools(&self, bin_dir: Option<PathBuf>) -> Self::Tools;
    /// The archive format a manifest records.
    fn dump_format(&self) -> &'static str;
    /// The dump program's name, for messages (`pg_dump`).
    fn dump_tool(&self) -> &'static str;
    /// The dump program (for messages).
    fn dump_program(&self, tools: &Self::Tools) -> PathBuf;
    /// The dump program's version line and major version.
    fn dump_version(
        &self,
        tools: &Self::Tools,
    ) -> impl Future<Output = Result<(String, u32), String>> + Send;
    /// Opens the snapshot of `database` holding its backup lock; `Ok(None)` when another backup holds it.
    fn open_snapshot(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> impl Future<Output = Result<Option<Self::Snapshot>, Self::Error>> + Send;
    /// The dump of `database` at `snapshot`, written to stdout (stderr piped). `compress`: whether the
    /// program compresses itself. Credentials go to files in `private_dir`, never to arguments.
    fn spawn_dump(
        &self,
        tools: &Self::Tools,
        creds: &ServerCredentials,
        database: &str,
        snapshot: &str,
        compress: bool,
        private_dir: &Path,
    ) -> std::io::Result<Child>;
    /// A program reading an archive from stdin to the end (stderr piped): fails on a damaged one.
    fn spawn_archive_check(&self, tools: &Self::Tools) -> std::io::Result<Child>;
    /// The last bytes of a program's stderr, read to the end in bounded memory.
    fn stderr_tail(
        &self,
        stderr: impl tokio::io::AsyncRead + Unpin + Send,
    ) -> impl Future<Output = String> + Send;
}

/// Where a restore reads the archive from.
#[derive(Clone, Copy, Debug)]
pub enum RestoreInput<'a> {
    /// Its stdin, one job (an archive streamed from storage is not seekable).
    Stdin,
    /// A spooled archive file, restored with `jobs` parallel jobs.
    File { path: &'a Path, jobs: u32 },
}

/// What a restore program reported, read from its whole stderr in bounded memory.
#[derive(Debug, Default, PartialEq)]
pub struct RestoreErrors {
    /// Error entries.
    pub errors: usize,
    /// Of those, the ones a tolerant restore may ignore.
    pub ignorable: usize,
    /// The first error that is not ignorable, bounded.
    pub first: Option<String>,
    /// The last bytes of stderr.
    pub tail: String,
}

impl RestoreErrors {
    /// Whether every error was ignorable (and there was at least one: a failed exit with none is not).
    pub fn only_ignorable(&self) -> bool {
        self.errors > 0 && self.errors == self.ignorable
    }

    /// What to say when the restore failed: the first real error, else the tail.
    pub fn detail(&self) -> String {
        self.first
            .clone()
            .unwrap_or_else(|| self.tail.trim().to_string())
    }
}

/// Restoring a dump (as the role that will own the data) and checking what was restored.
pub trait Restore: Dump {
    /// The restore program's name, for messages (`pg_restore`).
    fn restore_tool(&self) -> &'static str;
    /// The restore program's major version.
    fn restore_major(
        &self,
        tools: &Self::Tools,
    ) -> impl Future<Output = Result<u32, String>> + Send;
    /// The server's major version, on a session as `creds`.
    fn server_major(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> impl Future<Output = Result<u32, Self::Error>> + Send;
    /// Whether a restore program of `tool_major` must be let past errors of its own session settings
    /// on a server of `server_major` (the ignorable ones of [`RestoreErrors`]).
    fn needs_tolerant_restore(&self, tool_major: u32, server_major: u32) -> bool;
    /// The restore program on `input` into `database` as `creds` (stderr piped; stdin piped for
    /// [`RestoreInput::Stdin`]). `stop_at_first_error`: stop at the first error.
    fn spawn_restore(
        &self,
        tools: &Self::Tools,
        creds: &ServerCredentials,
        database: &str,
        private_dir: &Path,
        input: RestoreInput<'_>,
        stop_at_first_error: bool,
    ) -> std::io::Result<Child>;
    /// Reads the restore program's stderr to the end.
    fn scan_restore_stderr(
        &self,
        stderr: impl tokio::io::AsyncRead + Unpin + Send,
    ) -> impl Future<Output = RestoreErrors> + Send;
    /// Row counts (and checksums) of the restored database's tables, in one snapshot, as a backup
    /// records them.
    fn restored_stats(
        &self,
        creds: &ServerCredentials,
        database: &str,
        checksums: bool,
    ) -> impl Future<Output = Result<Vec<TableStats>, Self::Error>> + Send;
    /// Runs a check query read-only; the first column of its first row as text (`None`: no row).
    fn query_value(
        &self,
        creds: &ServerCredentials,
        database: &str,
        query: &str,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;
    /// Drops the target's database (ours only) and creates it empty, for a restore to fill.
    fn recreate_database(
        &self,
        admin: &mut Self::Session,
        admin_creds: &ServerCredentials,
        target: &Target,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The scratch database and role of a drill, named from its UID.
    fn scratch_target(&self, drill_uid: &str) -> Target;
    /// A fresh, empty scratch database owned by a fresh role with a generated password; the role's
    /// credentials.
    fn create_scratch(
        &self,
        admin: &ServerCredentials,
        target: &Target,
    ) -> impl Future<Output = Result<ServerCredentials, Self::Error>> + Send;
    /// Drops the scratch database and role if they carry the drill's marker; what was dropped.
    fn drop_scratch(
        &self,
        admin: &ServerCredentials,
        target: &Target,
    ) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send;
}
