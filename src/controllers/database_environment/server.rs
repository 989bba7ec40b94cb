//! The `server` and `external` sources: credentials from Secrets, the idempotent provisioning steps on a
//! shared server, and adoption of an existing database.

use std::time::Duration;

use kube::{ResourceExt, runtime::events::EventType};
use rand::{Rng, distr::Alphanumeric};
use sqlx::Connection;

use super::{Outcome, existing_password, generate_password, write_connection_secret};
use crate::{
    api::{DatabaseEnvironment, common::ConnectionSecretRef},
    controllers::{Context, Error, error::pg, references, restore, status::sentence},
    engines::{
        ServerCredentials,
        postgres::{self, PgError, provision},
    },
};

/// Gives the environment its own role and database on the server reached with `admin` (a shared server,
/// or the environment's own instance), seeds it once and checks its health.
pub(super) async fn provision_on(
    env: &DatabaseEnvironment,
    ctx: &Context,
    access: super::super::server_access::Resolved,
    template: Option<String>,
    database_name: Option<String>,
) -> Result<Outcome, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let admin = access.admin;
    let seed_sql = match &env.spec.seed {
        Some(seed) => Some(read_seed(ctx, &namespace, &seed.config_map_ref.name, &seed.key).await?),
        None => None,
    };
    let database = database_name.unwrap_or_else(|| super::database_name(env));
    let target = provision::Target {
        database: database.clone(),
        role: database.clone(),
        template,
        allowed_templates: access.templates,
        connection_limit: access.connection_limit,
        uid: env.uid().unwrap_or_default(),
    };

    // Reach the server first: nothing (not even the connection Secret) exists until the admin
    // credentials work, so deleting an environment that never got this far has nothing to clean up.
    let mut conn = postgres::connect_admin(&admin, "postgres")
        .await
        .map_err(pg)?;
    // The password is stored before the role exists, so a crash between the two never loses it; the
    // Secret's existence also tells cleanup that something may exist on the server.
    let password = existing_password(ctx, env)
        .await?
        .unwrap_or_else(generate_password);
    let app = ServerCredentials {
        username: target.role.clone(),
        password: password.clone(),
        ca_pem: admin.ca_pem.clone(),
        ..admin.clone()
    };
    write_connection_secret(ctx, env, &app, &target.database).await?;

    let server_version = provision::server_version(&mut conn).await.map_err(pg)?;
    let role_created =
        create_role_and_database(env, ctx, &mut conn, &admin, &target, &password).await?;
    let mut app_conn = connect_as_app(&mut conn, &app, &target, &password, role_created).await;
    let restored_from = match &env.spec.restore {
        Some(source) => {
            // The restore may recreate the database: no session of ours may hold it meanwhile.
            if let Ok(c) = app_conn {
                let _ = c.close().await;
            }
            let id = restore_once(env, ctx, &mut conn, &admin, &app, &target, source).await?;
            app_conn = postgres::connect(&app, &target.database).await.map_err(pg);
            Some(id)
        }
        None => None,
    };
    let _ = conn.close().await;
    let mut app_conn = app_conn?;

    let work = fill_and_check(env, ctx, &mut app_conn, &app, &target, seed_sql.as_deref()).await;
    let _ = app_conn.close().await;
    let (seeded_now, schema_version) = work?;
    if seeded_now {
        let note = format!("Applied the seed to {}.", target.database);
        ctx.publish(env, EventType::Normal, "Seeded", note).await;
    }

    Ok(Outcome {
        message: sentence(&format!(
            "database {} on {}:{} is ready; connect with Secret {}",
            target.database,
            admin.host,
            admin.port,
            env.connection_secret_name()
        )),
        database: target.database,
        host: admin.host,
        port: admin.port,
        server_version,
        seeded_now,
        schema_version,
        restored_from,
    })
}

/// Fills the new database from a backup once: restored as the app's role, checked against the
/// manifest, then recorded on the database. Until that record exists every attempt starts from an
/// empty database. Returns the backup id.
async fn restore_once(
    env: &DatabaseEnvironment,
    ctx: &Context,
    admin_conn: &mut sqlx::PgConnection,
    admin: &ServerCredentials,
    app: &ServerCredentials,
    target: &provision::Target,
    source: &crate::api::database_environment::RestoreSource,
) -> Result<String, Error> {
    if let Some(id) = provision::restored_from(admin_conn, target)
        .await
        .map_err(pg)?
    {
        return Ok(id);
    }
    let namespace = env.namespace().unwrap_or_default();
    let schedule: crate::api::BackupSchedule = references::lifeboat_object(
        ctx,
        &namespace,
        &source.backup_schedule_ref.name,
        "BackupScheduleNotFound",
    )
    .await?;
    let store = crate::controllers::backup_store::for_schedule(ctx, &schedule).await?;
    let failed = |reason: &'static str, message: String| Error::NeedsAttention {
        reason,
        message,
        source: None,
    };
    let (manifest, _) = restore::pick(&store, source.backup_id.as_deref())
        .await
        .map_err(|e| failed("BackupNotFound", format!("spec.restore: {e}")))?;
    provision::recreate_database(admin_conn, admin, target)
        .await
        .map_err(pg)?;
    let method = restore::restore_into(
        &ctx.backups.tools,
        &store,
        &manifest,
        app,
        &target.database,
        source.jobs.unwrap_or(1).clamp(1, 8) as u32,
        &ctx.backups.spool,
    )
    .await
    .map_err(|e| {
        failed(
            "RestoreFailed",
            format!("restoring backup {}: {e}", manifest.id),
        )
    })?;
    let checksums = manifest.tables.iter().all(|t| t.checksum.is_some());
    let restored = postgres::restore::restored_stats(app, &target.database, checksums)
        .await
        .map_err(pg)?;
    let check = restore::compare_tables(
        if checksums { "checksums" } else { "rowCounts" },
        &manifest.tables,
        &restored,
        checksums,
    );
    if !check.passed {
        return Err(failed(
            "RestoreCheckFailed",
            format!(
                "backup {} was restored but does not match its manifest ({}); the next attempt restores it again",
                manifest.id,
                check.message.unwrap_or_default()
            ),
        ));
    }
    provision::mark_restored(admin_conn, target, &manifest.id)
        .await
        .map_err(pg)?;
    let note = format!(
        "Restored backup {} into {} ({}) and checked it against its manifest ({}).",
        manifest.id,
        target.database,
        method.describe(),
        check.message.unwrap_or_default()
    );
    ctx.publish(env, EventType::Normal, "Restored", note).await;
    Ok(manifest.id)
}

/// The role (created, or its attributes restated) and the database (created or cloned, restricted to
/// the role). Returns whether the role was created now. A creation that fails half-way leaves nothing.
async fn create_role_and_database(
    env: &DatabaseEnvironment,
    ctx: &Context,
    conn: &mut sqlx::PgConnection,
    admin: &ServerCredentials,
    target: &provision::Target,
    password: &str,
) -> Result<bool, Error> {
    let role_created = provision::ensure_role(conn, target, password)
        .await
        .map_err(pg)?;
    if !role_created && provision::enforce_role(conn, target).await.map_err(pg)? {
        let note = format!(
            "Role {} held a privilege an environment's role must not have (superuser, createdb, createrole, replication or bypassrls); it was taken away.",
            target.role
        );
        ctx.publish(env, EventType::Warning, "PrivilegeRevoked", note)
            .await;
    }
    let created = match provision::ensure_database(conn, admin, target).await {
        Ok(created) => created,
        Err(e) => {
            if role_created {
                let _ = provision::drop_owned(conn, target).await;
            }
            return Err(pg(e));
        }
    };
    if created {
        let note = match &target.template {
            Some(t) => format!(
                "Created database {} from template {t} with its own role.",
                target.database
            ),
            None => format!("Created database {} with its own role.", target.database),
        };
        ctx.publish(env, EventType::Normal, "Created", note).await;
    }
    Ok(role_created)
}

/// Connects as the environment's role. Its password must match the Secret: when someone replaced the
/// Secret, the role's password is reset (on the admin connection `conn`) to match.
async fn connect_as_app(
    conn: &mut sqlx::PgConnection,
    app: &ServerCredentials,
    target: &provision::Target,
    password: &str,
    role_created: bool,
) -> Result<sqlx::PgConnection, Error> {
    match postgres::connect(app, &target.database).await {
        Err(PgError::AuthFailed { .. }) if !role_created => {
            provision::set_role_password(conn, target, password)
                .await
                .map_err(pg)?;
            postgres::connect(app, &target.database).await.map_err(pg)
        }
        other => other.map_err(pg),
    }
}

/// As the environment's role: the seed (once), `spec.migrations`, then the health query. Returns
/// whether the seed was applied now and the schema version.
async fn fill_and_check(
    env: &DatabaseEnvironment,
    ctx: &Context,
    app_conn: &mut sqlx::PgConnection,
    app: &ServerCredentials,
    target: &provision::Target,
    seed_sql: Option<&str>,
) -> Result<(bool, Option<crate::domain::version::Version>), Error> {
    let seeded_now = match seed_sql {
        Some(seed) => {
            // The server stops a seed statement when the job's time is up (the job itself is
            // dropped then, but a backend does not notice its client left while it runs a statement).
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "set statement_timeout = {}",
                ctx.config.work_timeout().as_millis()
            )))
            .execute(&mut *app_conn)
            .await
            .map_err(|e| {
                pg(PgError::from_sqlx(
                    "setting the seed's statement timeout",
                    e,
                ))
            })?;
            provision::apply_seed(app_conn, target, seed)
                .await
                .map_err(|e| Error::NeedsAttention {
                    reason: "SeedFailed",
                    message: format!("the seed failed and was rolled back: {e}"),
                    source: Some(Box::new(e)),
                })?
        }
        None => false,
    };
    let schema_version = match &env.spec.migrations {
        Some(source) => migrate(env, ctx, app, &target.database, source).await?,
        None => None,
    };
    // Checked as the app, on the connection it already has.
    health_check(app_conn, env).await?;
    Ok((seeded_now, schema_version))
}

pub(super) async fn adopt_external(
    env: &DatabaseEnvironment,
    ctx: &Context,
    secret_ref: &ConnectionSecretRef,
) -> Result<Outcome, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let (creds, database) = references::connection_credentials(
        ctx,
        &namespace,
        secret_ref,
        "spec.external.connectionSecretRef",
        true,
    )
    .await?;
    let database = database.unwrap_or_default();
    let mut conn = postgres::connect(&creds, &database).await.map_err(pg)?;
    let server_version = provision::server_version(&mut conn).await.map_err(pg)?;
    let health = health_check(&mut conn, env).await;
    let _ = conn.close().await;
    health?;
    write_connection_secret(ctx, env, &creds, &database).await?;
    Ok(Outcome {
        message: sentence(&format!(
            "external database {database} on {}:{} answers its health check; connect with Secret {}",
            creds.host,
            creds.port,
            env.connection_secret_name()
        )),
        database,
        host: creds.host,
        port: creds.port,
        server_version,
        seeded_now: false,
        schema_version: None,
        restored_from: None,
    })
}

pub(super) async fn read_seed(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, Error> {
    let cm =
        references::config_map(ctx, namespace, name, "spec.seed.configMapRef", Some(key)).await?;
    if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(text.clone());
    }
    let bytes = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    String::from_utf8(bytes).map_err(|_| Error::NeedsAttention {
        reason: "SeedUnreadable",
        source: None,
        message: format!("ConfigMap {namespace}/{name} key {key} is not UTF-8 text"),
    })
}

/// Keeps the database migrated to everything in `spec.migrations`, with the same runner as a
/// MigrationRun (lock, ledger, one transaction per migration, rollback of this attempt on failure).
/// Returns the schema version. Production environments must back up before migrating, which this
/// build cannot do yet, so there the migrations are refused before touching the database.
async fn migrate(
    env: &DatabaseEnvironment,
    ctx: &Context,
    app: &ServerCredentials,
    database: &str,
    source: &crate::api::ConfigMapSource,
) -> Result<Option<crate::domain::version::Version>, Error> {
    use crate::{
        controllers::references::{raw_files, resolve_sources},
        domain::migrations::{self, Direction, LintMode, MigrationPhase, OnFailure},
        engines::postgres::migrate::{self, Prior, RunOptions},
    };
    let namespace = env.namespace().unwrap_or_default();
    if env.spec.tier == crate::api::database_environment::Tier::Production {
        return Err(Error::InvalidSpec {
            reason: "BackupsNotAvailable",
            message: "spec.migrations on a production environment needs a backup first, which this build cannot take yet; nothing was migrated".into(),
        });
    }
    let maps = resolve_sources(ctx, &namespace, source, "spec.migrations").await?;
    let parsed =
        migrations::source::parse(&raw_files(&maps)).map_err(|e| Error::NeedsAttention {
            reason: "MigrationSourceInvalid",
            source: None,
            message: format!("spec.migrations: {e}"),
        })?;
    let opts = RunOptions {
        // Each attempt is its own run: a failure rolls back what this attempt applied, never the
        // migrations earlier attempts applied (and the rows written since).
        run_uid: format!(
            "{}/{}",
            env.uid().unwrap_or_default(),
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(8)
                .map(char::from)
                .collect::<String>()
        ),
        label: format!("DatabaseEnvironment {namespace}/{}", env.name_any()),
        direction: Direction::Up,
        target_version: None,
        on_failure: OnFailure::Rollback,
        lint: LintMode::Warn,
        lint_rules: Default::default(),
        adopt: Default::default(),
        baseline_version: None,
        lock_timeout: MIGRATION_LOCK_TIMEOUT,
        statement_timeout: None,
    };
    let mut hooks = EnvironmentHooks {
        ctx,
        env,
        reported: false,
    };
    let outcome = migrate::run(app, database, &parsed, &opts, Prior::default(), &mut hooks)
        .await
        .map_err(|e| Error::Transient {
            reason: "MigrationInterrupted",
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    match outcome.phase {
        MigrationPhase::Succeeded => {
            if !outcome.state.applied.is_empty() {
                let note = format!(
                    "Applied {} migration(s); schema version {}.",
                    outcome.state.applied.len(),
                    outcome
                        .state
                        .to_version
                        .as_ref()
                        .map_or("none".into(), ToString::to_string)
                );
                ctx.publish(env, EventType::Normal, "Migrated", note).await;
            }
            Ok(outcome.state.to_version)
        }
        _ => Err(Error::NeedsAttention {
            reason: outcome.reason,
            source: None,
            message: outcome.message,
        }),
    }
}

/// How long an environment waits for another migration holding its database's migration lock.
pub const MIGRATION_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the spec's health query (`select 1` by default) within `healthCheck.timeoutSeconds`: the
/// server cancels it then (`statement_timeout`), and the client stops waiting a second later.
async fn health_check(
    conn: &mut sqlx::PgConnection,
    env: &DatabaseEnvironment,
) -> Result<(), Error> {
    let check = env.spec.health_check.clone().unwrap_or_default();
    let limit = Duration::from_secs(check.timeout_seconds.max(1) as u64);
    let failed = |detail: String| Error::NeedsAttention {
        reason: "HealthCheckFailed",
        source: None,
        message: detail,
    };
    let run = async {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "set statement_timeout = {}",
            limit.as_millis()
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| PgError::from_sqlx("setting the health check's timeout", e))?;
        postgres::health_check_on(&mut *conn, &check.query).await
    };
    match tokio::time::timeout(limit + Duration::from_secs(1), run).await {
        Ok(result) => result.map_err(|e| failed(e.to_string())),
        Err(_) => Err(failed(format!(
            "the health query did not answer within {}s (healthCheck.timeoutSeconds)",
            limit.as_secs()
        ))),
    }
}

/// The environment's side of a `spec.migrations` run: when there is something to apply, the
/// environment says so (`Reconciling`, reason `Migrating`) until the job's result replaces it, so
/// GitOps tools and clones (`templateFrom`) see a schema on the move. No backup: production
/// environments do not take `spec.migrations`.
struct EnvironmentHooks<'a> {
    ctx: &'a Context,
    env: &'a DatabaseEnvironment,
    reported: bool,
}

impl crate::engines::postgres::migrate::Hooks for EnvironmentHooks<'_> {
    async fn report(
        &mut self,
        state: &crate::engines::postgres::migrate::RunState,
        durable: bool,
    ) -> Result<(), String> {
        if !durable || self.reported || state.pending == 0 {
            return Ok(());
        }
        self.reported = true;
        let at = state
            .from_version
            .as_ref()
            .map_or("no migration applied".to_string(), |v| {
                format!("version {v}")
            });
        let verdict = crate::controllers::conditions::Verdict::Reconciling {
            reason: "Migrating",
            message: format!(
                "Applying {} migration(s) from spec.migrations (the schema is at {at}).",
                state.pending
            ),
        };
        // Best effort: the migrations go on if this status cannot be written.
        let _ = crate::controllers::status::write(self.ctx, self.env, &verdict, |_| {}).await;
        Ok(())
    }

    async fn backup(
        &mut self,
    ) -> Result<Option<String>, crate::engines::postgres::migrate::BackupFailure> {
        Ok(None)
    }
}
