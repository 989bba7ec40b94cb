//! [`Postgres`]: the capability traits of `engines` implemented with this module's functions.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{Connection, PgConnection};
use tokio::process::Child;

use super::{PgError, connection, dump, instance, migrate, provision, restore, sql};
use crate::domain::migrations::source::Migration;
use crate::{
    domain::manifest::TableStats,
    engines::{
        Connect, ConnectionDetails, Dropping, Dump, DumpSnapshot, Failure, Health,
        InstanceTemplate, Migrate, MigrationLock, Provisioning, Restore, RestoreErrors,
        RestoreInput, ServerCredentials, Target,
        migrate::{Hooks, Interrupted, LockRefusal, Outcome, Prior, RunOptions},
    },
};

/// PostgreSQL, through sqlx and the official image's and client programs' conventions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Postgres;

/// The database an admin session opens: the one every server has.
pub const MAINTENANCE_DATABASE: &str = "postgres";

impl Failure for PgError {
    fn reason(&self) -> &'static str {
        PgError::reason(self)
    }
    fn is_transient(&self) -> bool {
        PgError::is_transient(self)
    }
    fn is_auth_failure(&self) -> bool {
        matches!(self, PgError::AuthFailed { .. })
    }
}

impl Connect for Postgres {
    type Session = PgConnection;
    type Error = PgError;

    fn name(&self) -> &'static str {
        "postgres"
    }
    fn product(&self) -> &'static str {
        "PostgreSQL"
    }
    async fn connect_admin(&self, admin: &ServerCredentials) -> Result<PgConnection, PgError> {
        super::connect_admin(admin, MAINTENANCE_DATABASE).await
    }
    async fn connect(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> Result<PgConnection, PgError> {
        super::connect(creds, database).await
    }
    async fn close(&self, session: PgConnection) {
        let _ = session.close().await;
    }
    async fn limit_statements(
        &self,
        session: &mut PgConnection,
        limit: Duration,
    ) -> Result<(), PgError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "set statement_timeout = {}",
            limit.as_millis()
        )))
        .execute(&mut *session)
        .await
        .map(|_| ())
        .map_err(|e| PgError::from_sqlx("setting the statement timeout", e))
    }
}

impl Provisioning for Postgres {
    fn default_name(&self, namespace: &str, name: &str) -> String {
        sql::default_name(namespace, name)
    }
    async fn ensure_role(
        &self,
        admin: &mut PgConnection,
        target: &Target,
        password: &str,
    ) -> Result<bool, PgError> {
        provision::ensure_role(admin, target, password).await
    }
    async fn enforce_role(
        &self,
        admin: &mut PgConnection,
        target: &Target,
    ) -> Result<bool, PgError> {
        provision::enforce_role(admin, target).await
    }
    async fn set_role_password(
        &self,
        admin: &mut PgConnection,
        target: &Target,
        password: &str,
    ) -> Result<(), PgError> {
        provision::set_role_password(admin, target, password).await
    }
    async fn ensure_database(
        &self,
        admin: &mut PgConnection,
        admin_creds: &ServerCredentials,
        target: &Target,
    ) -> Result<bool, PgError> {
        provision::ensure_database(admin, admin_creds, target).await
    }
    async fn apply_seed(
        &self,
        app: &mut PgConnection,
        target: &Target,
        seed: &str,
    ) -> Result<bool, PgError> {
        provision::apply_seed(app, target, seed).await
    }
    async fn restored_from(
        &self,
        admin: &mut PgConnection,
        target: &Target,
    ) -> Result<Option<String>, PgError> {
        provision::restored_from(admin, target).await
    }
    async fn mark_restored(
        &self,
        admin: &mut PgConnection,
        target: &Target,
        id: &str,
    ) -> Result<(), PgError> {
        provision::mark_restored(admin, target, id).await
    }
}

impl Dropping for Postgres {
    async fn drop_owned(
        &self,
        admin: &mut PgConnection,
        target: &Target,
    ) -> Result<Vec<String>, PgError> {
        provision::drop_owned(admin, target).await
    }
}

impl Health for Postgres {
    async fn server_version(&self, session: &mut PgConnection) -> Result<String, PgError> {
        provision::server_version(session).await
    }
    async fn may_provision(&self, admin: &mut PgConnection) -> Result<bool, PgError> {
        sqlx::query_scalar(
            "select rolsuper or (rolcreatedb and rolcreaterole) from pg_catalog.pg_roles where rolname = pg_catalog.current_user()",
        )
        .fetch_one(&mut *admin)
        .await
        .map_err(|e| PgError::from_sqlx("reading the admin role's privileges", e))
    }
    async fn health_check(&self, session: &mut PgConnection, query: &str) -> Result<(), PgError> {
        super::health_check_on(session, query).await
    }
}

impl ConnectionDetails for Postgres {
    fn default_port(&self) -> u16 {
        instance::PORT
    }
    fn ssl_modes(&self) -> &'static [&'static str] {
        connection::SSL_MODES
    }
    fn default_ssl_mode(&self, with_ca: bool) -> &'static str {
        connection::default_sslmode(with_ca)
    }
    fn scope_key(&self) -> &'static str {
        "database"
    }
    fn connection_data(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> BTreeMap<String, String> {
        connection::connection_data(creds, database)
    }
}

impl InstanceTemplate for Postgres {
    fn server_name(&self) -> &'static str {
        "postgres"
    }
    /// The official image's entrypoint configures and starts the server.
    fn server_args(&self, _settings: &crate::engines::InstanceSettings) -> Vec<String> {
        Vec::new()
    }
    fn official_image(&self, version: &str) -> String {
        instance::official_image(version)
    }
    fn port(&self) -> u16 {
        instance::PORT
    }
    fn superuser(&self) -> &'static str {
        instance::SUPERUSER
    }
    fn run_as(&self) -> i64 {
        instance::UID
    }
    fn data_mount(&self) -> &'static str {
        instance::DATA_MOUNT
    }
    fn data_env(&self) -> Vec<(&'static str, &'static str)> {
        vec![("PGDATA", instance::PGDATA)]
    }
    fn superuser_env(&self) -> (&'static str, &'static str) {
        ("POSTGRES_USER", "POSTGRES_PASSWORD")
    }
    fn run_dir(&self) -> &'static str {
        instance::SOCKET_DIR
    }
    fn ready_command(&self) -> Vec<String> {
        instance::ready_command()
    }
    fn instance_admin(&self, host: String, password: String) -> ServerCredentials {
        ServerCredentials {
            host,
            port: instance::PORT,
            username: instance::SUPERUSER.into(),
            password,
            // The pod's server has no certificate of Lifeboat's making.
            sslmode: "prefer".into(),
            ca_pem: None,
        }
    }
}

impl DumpSnapshot for dump::Snapshot {
    type Error = PgError;

    fn id(&self) -> &str {
        &self.id
    }
    fn server_version(&self) -> &str {
        &self.server_version
    }
    fn server_major(&self) -> u32 {
        self.server_major
    }
    async fn table_stats(&mut self, checksums: bool) -> Result<Vec<TableStats>, PgError> {
        dump::Snapshot::table_stats(self, checksums).await
    }
    async fn close(self) {
        dump::Snapshot::close(self).await
    }
}

impl Dump for Postgres {
    type Tools = dump::DumpTools;
    type Snapshot = dump::Snapshot;

    fn tools(&self, bin_dir: Option<PathBuf>) -> dump::DumpTools {
        dump::DumpTools { bin_dir }
    }
    fn dump_tool(&self) -> &'static str {
        "pg_dump"
    }
    fn dump_format(&self) -> &'static str {
        // pg_dump -Fc
        "custom"
    }
    fn dump_program(&self, tools: &dump::DumpTools) -> PathBuf {
        tools.pg_dump()
    }
    async fn dump_version(&self, tools: &dump::DumpTools) -> Result<(String, u32), String> {
        tools.dump_version().await
    }
    async fn open_snapshot(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> Result<Option<dump::Snapshot>, PgError> {
        dump::open_snapshot(creds, database).await
    }
    fn spawn_dump(
        &self,
        tools: &dump::DumpTools,
        creds: &ServerCredentials,
        database: &str,
        snapshot: &str,
        compress: bool,
        private_dir: &Path,
    ) -> std::io::Result<Child> {
        tools.spawn_dump(creds, database, snapshot, compress, private_dir)
    }
    fn spawn_archive_check(&self, tools: &dump::DumpTools) -> std::io::Result<Child> {
        tools.spawn_restore_check()
    }
    async fn stderr_tail(&self, stderr: impl tokio::io::AsyncRead + Unpin + Send) -> String {
        dump::stderr_tail(stderr).await
    }
}

impl Restore for Postgres {
    fn restore_tool(&self) -> &'static str {
        "pg_restore"
    }
    async fn restore_major(&self, tools: &dump::DumpTools) -> Result<u32, String> {
        tools.restore_major().await
    }
    async fn server_major(
        &self,
        creds: &ServerCredentials,
        database: &str,
    ) -> Result<u32, PgError> {
        restore::server_major(creds, database).await
    }
    fn needs_tolerant_restore(&self, tool_major: u32, server_major: u32) -> bool {
        restore::needs_tolerant_restore(tool_major, server_major)
    }
    fn spawn_restore(
        &self,
        tools: &dump::DumpTools,
        creds: &ServerCredentials,
        database: &str,
        private_dir: &Path,
        input: RestoreInput<'_>,
        stop_at_first_error: bool,
    ) -> std::io::Result<Child> {
        tools.spawn_restore(creds, database, private_dir, input, stop_at_first_error)
    }
    async fn scan_restore_stderr(
        &self,
        stderr: impl tokio::io::AsyncRead + Unpin + Send,
    ) -> RestoreErrors {
        restore::scan_restore_stderr(stderr).await
    }
    async fn restored_stats(
        &self,
        creds: &ServerCredentials,
        database: &str,
        checksums: bool,
    ) -> Result<Vec<TableStats>, PgError> {
        restore::restored_stats(creds, database, checksums).await
    }
    async fn query_value(
        &self,
        creds: &ServerCredentials,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, PgError> {
        restore::query_value(creds, database, query).await
    }
    async fn recreate_database(
        &self,
        admin: &mut PgConnection,
        admin_creds: &ServerCredentials,
        target: &Target,
    ) -> Result<(), PgError> {
        provision::recreate_database(admin, admin_creds, target).await
    }
    fn scratch_target(&self, drill_uid: &str) -> Target {
        restore::scratch_target(drill_uid)
    }
    async fn create_scratch(
        &self,
        admin: &ServerCredentials,
        target: &Target,
    ) -> Result<ServerCredentials, PgError> {
        restore::create_scratch(admin, target, &sql::random_password()).await
    }
    async fn drop_scratch(
        &self,
        admin: &ServerCredentials,
        target: &Target,
    ) -> Result<Vec<String>, PgError> {
        restore::drop_scratch(admin, target).await
    }
}

impl MigrationLock for migrate::lock::MigrationLock {
    async fn release(self) {
        migrate::lock::MigrationLock::release(self).await
    }
}

impl Migrate for Postgres {
    type Lock = migrate::lock::MigrationLock;

    async fn migrate<H: Hooks>(
        &self,
        creds: &ServerCredentials,
        database: &str,
        migrations: &[Migration],
        opts: &RunOptions,
        prior: Prior,
        hooks: &mut H,
    ) -> Result<Outcome, Interrupted> {
        migrate::run(creds, database, migrations, opts, prior, hooks).await
    }
    async fn lock_migrations(
        &self,
        creds: &ServerCredentials,
        database: &str,
        label: &str,
        timeout: Duration,
    ) -> Result<Self::Lock, LockRefusal<PgError>> {
        migrate::lock::acquire(creds, database, label, timeout).await
    }
    fn lint_rule_names(&self) -> Vec<String> {
        migrate::lint::rule_names()
    }
}
