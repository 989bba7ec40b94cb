//! The `server` and `external` sources: credentials from Secrets, the idempotent provisioning steps on a
//! shared server, and adoption of an existing database.

use std::time::Duration;

use kube::{ResourceExt, runtime::events::EventType};
use rand::{Rng, distr::Alphanumeric};

use super::{Outcome, existing_password, generate_password, write_connection_secret};
use crate::{
    api::{
        ConfigMapSource, DatabaseEnvironment,
        common::ConnectionSecretRef,
        database_environment::{RestoreSource, Tier},
    },
    controllers::{
        Context, Error, error::pg, references, restore, server_access::Resolved, status::sentence,
    },
    engines::{
        Connect, Dropping, ENGINE, Engine, Failure, Health, Provisioning, Restore,
        ServerCredentials, Target,
    },
};

/// An open session on the environment's server.
type Session = <Engine as Connect>::Session;

/// Gives the environment its own role and database on the server reached with `admin` (a shared server,
/// or the environment's own instance), seeds it once and checks its health: resolve (the seed, the
/// server, the stored password) → [`plan`] → [`act`].
pub(super) async fn provision_on(
    env: &DatabaseEnvironment,
    ctx: &Context,
    access: Resolved,
    template: Option<String>,
    database_name: Option<String>,
) -> Result<Outcome, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let seed_sql = match &env.spec.seed {
        Some(seed) => Some(read_seed(ctx, &namespace, &seed.config_map_ref.name, &seed.key).await?),
        None => None,
    };
    // Reach the server first: nothing (not even the connection Secret) exists until the admin
    // credentials work, so deleting an environment that never got this far has nothing to clean up.
    let conn = ENGINE.connect_admin(&access.admin).await.map_err(pg)?;
    let read = Read {
        access,
        template,
        database_name,
        seed_sql,
        existing_password: existing_password(ctx, env).await?,
    };
    act(env, ctx, conn, plan(env, read, generate_password())).await
}

/// What provisioning read before deciding anything.
struct Read {
    /// The server, with what the environment may do there.
    access: Resolved,
    /// The database to clone, if any.
    template: Option<String>,
    /// The database name the caller chose (else the environment's own, see [`super::database_name`]).
    database_name: Option<String>,
    /// The seed's text (`spec.seed`).
    seed_sql: Option<String>,
    /// The password in the environment's connection Secret, when it exists.
    existing_password: Option<String>,
}

/// What provisioning does, decided by [`plan`] from what was read.
#[derive(Debug)]
struct Plan {
    admin: ServerCredentials,
    target: Target,
    /// The environment's own credentials: the admin's server, the role's name and password.
    app: ServerCredentials,
    /// Fill the database from a backup once (`spec.restore`).
    restore: Option<RestoreSource>,
    /// Apply this seed once.
    seed_sql: Option<String>,
    migrations: Migrations,
}

/// What becomes of `spec.migrations`.
#[derive(Debug, PartialEq)]
enum Migrations {
    None,
    Run(ConfigMapSource),
    /// Production environments must back up before migrating, which this build cannot do: refused
    /// before the migrations touch the database.
    Refused,
}

/// Decides what provisioning does (pure). The stored password is kept, so a role made by an earlier
/// attempt still matches its Secret; `generated_password` is used only when there is none.
fn plan(env: &DatabaseEnvironment, read: Read, generated_password: String) -> Plan {
    let Read {
        access,
        template,
        database_name,
        seed_sql,
        existing_password,
    } = read;
    let database = database_name.unwrap_or_else(|| super::database_name(env));
    let target = Target {
        database: database.clone(),
        role: database,
        template,
        allowed_templates: access.templates,
        connection_limit: access.connection_limit,
        uid: env.uid().unwrap_or_default(),
    };
    let app = ServerCredentials {
        username: target.role.clone(),
        password: existing_password.unwrap_or(generated_password),
        ..access.admin.clone()
    };
    let migrations = match &env.spec.migrations {
        None => Migrations::None,
        Some(_) if env.spec.tier == Tier::Production => Migrations::Refused,
        Some(source) => Migrations::Run(source.clone()),
    };
    Plan {
        admin: access.admin,
        target,
        app,
        restore: env.spec.restore.clone(),
        seed_sql,
        migrations,
    }
}

/// Carries out the plan on the admin session `conn`: the connection Secret, the role and database, the
/// restore, then as the app the seed, the migrations and the health query.
async fn act(
    env: &DatabaseEnvironment,
    ctx: &Context,
    mut conn: Session,
    plan: Plan,
) -> Result<Outcome, Error> {
    let Plan {
        admin,
        target,
        app,
        restore,
        seed_sql,
        migrations,
    } = plan;
    // The password is stored before the role exists, so a crash between the two never loses it; the
    // Secret's existence also tells cleanup that something may exist on the server.
    write_connection_secret(ctx, env, &app, &target.database).await?;

    let server_version = ENGINE.server_version(&mut conn).await.map_err(pg)?;
    let role_created =
        create_role_and_database(env, ctx, &mut conn, &admin, &target, &app.password).await?;
    let mut app_conn = connect_as_app(&mut conn, &app, &target, role_created).await;
    let restored_from = match &restore {
        Some(source) => {
            // The restore may recreate the database: no session of ours may hold it meanwhile.
            if let Ok(c) = app_conn {
                ENGINE.close(c).await;
            }
            let id = restore_once(env, ctx, &mut conn, &admin, &app, &target, source).await?;
            app_conn = ENGINE.connect(&app, &target.database).await.map_err(pg);
            Some(id)
        }
        None => None,
    };
    ENGINE.close(conn).await;
    let mut app_conn = app_conn?;

    let work = fill_and_check(
        env,
        ctx,
        &mut app_conn,
        &app,
        &target,
        seed_sql.as_deref(),
        &migrations,
    )
    .await;
    ENGINE.close(app_conn).await;
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
        usage: None,
    })
}

/// Fills the new database from a backup once: restored as the app's role, checked against the
/// manifest, then recorded on the database. Until that record exists every attempt starts from an
/// empty database. Returns the backup id.
async fn restore_once(
    env: &DatabaseEnvironment,
    ctx: &Context,
    admin_conn: &mut Session,
    admin: &ServerCredentials,
    app: &ServerCredentials,
    target: &Target,
    source: &RestoreSource,
) -> Result<String, Error> {
    if let Some(id) = ENGINE.restored_from(admin_conn, target).await.map_err(pg)? {
        return Ok(id);
    }
    let namespace = env.namespace().unwrap_or_default();
    let (store, manifest) =
        crate::controllers::backup_store::restore_source(ctx, &namespace, source).await?;
    let failed = |reason: &'static str, message: String| Error::NeedsAttention {
        reason,
        message,
        source: None,
    };
    ENGINE
        .recreate_database(admin_conn, admin, target)
        .await
        .map_err(pg)?;
    let method = restore::restore_into(
        &ctx.config.tools(),
        &store,
        &manifest,
        app,
        &target.database,
        source.jobs.unwrap_or(1).clamp(1, 8) as u32,
        &ctx.config.spool,
    )
    .await
    .map_err(|e| {
        failed(
            "RestoreFailed",
            format!("restoring backup {}: {e}", manifest.id),
        )
    })?;
    let checksums = restore::recorded_checksums(&manifest);
    let restored = ENGINE
        .restored_stats(app, &target.database, checksums)
        .await
        .map_err(pg)?;
    let check = restore::restore_matches(&manifest, &restored)?;
    ENGINE
        .mark_restored(admin_conn, target, &manifest.id)
        .await
        .map_err(pg)?;
    let note = format!(
        "Restored backup {} into {} ({}) and checked it against its manifest ({}).",
        manifest.id,
        target.database,
        method.describe(),
        check
    );
    ctx.publish(env, EventType::Normal, "Restored", note).await;
    Ok(manifest.id)
}

/// The role (created, or its attributes restated) and the database (created or cloned, restricted to
/// the role). Returns whether the role was created now. A creation that fails half-way leaves nothing.
async fn create_role_and_database(
    env: &DatabaseEnvironment,
    ctx: &Context,
    conn: &mut Session,
    admin: &ServerCredentials,
    target: &Target,
    password: &str,
) -> Result<bool, Error> {
    let role_created = ENGINE
        .ensure_role(conn, target, password)
        .await
        .map_err(pg)?;
    if !role_created && ENGINE.enforce_role(conn, target).await.map_err(pg)? {
        let note = format!(
            "Role {} held a privilege an environment's role must not have (superuser, createdb, createrole, replication or bypassrls); it was taken away.",
            target.role
        );
        ctx.publish(env, EventType::Warning, "PrivilegeRevoked", note)
            .await;
    }
    let created = match ENGINE.ensure_database(conn, admin, target).await {
        Ok(created) => created,
        Err(e) => {
            if role_created {
                let _ = ENGINE.drop_owned(conn, target).await;
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
    conn: &mut Session,
    app: &ServerCredentials,
    target: &Target,
    role_created: bool,
) -> Result<Session, Error> {
    match ENGINE.connect(app, &target.database).await {
        Err(e) if e.is_auth_failure() && !role_created => {
            ENGINE
                .set_role_password(conn, target, &app.password)
                .await
                .map_err(pg)?;
            ENGINE.connect(app, &target.database).await.map_err(pg)
        }
        other => other.map_err(pg),
    }
}

/// As the environment's role: the seed (once), `spec.migrations`, then the health query. Returns
/// whether the seed was applied now and the schema version.
async fn fill_and_check(
    env: &DatabaseEnvironment,
    ctx: &Context,
    app_conn: &mut Session,
    app: &ServerCredentials,
    target: &Target,
    seed_sql: Option<&str>,
    migrations: &Migrations,
) -> Result<(bool, Option<crate::domain::version::Version>), Error> {
    let seeded_now = match seed_sql {
        Some(seed) => {
            // The server stops a seed statement when the job's time is up (the job itself is
            // dropped then, but a backend does not notice its client left while it runs a statement).
            ENGINE
                .limit_statements(app_conn, ctx.config.work_timeout())
                .await
                .map_err(pg)?;
            ENGINE
                .apply_seed(app_conn, target, seed)
                .await
                .map_err(|e| Error::NeedsAttention {
                    reason: "SeedFailed",
                    message: format!("the seed failed and was rolled back: {e}"),
                    source: Some(Box::new(e)),
                })?
        }
        None => false,
    };
    let schema_version = match migrations {
        Migrations::None => None,
        Migrations::Refused => {
            return Err(Error::InvalidSpec {
                reason: "BackupsNotAvailable",
                message: "spec.migrations on a production environment needs a backup first, which this build cannot take yet; nothing was migrated".into(),
            });
        }
        Migrations::Run(source) => migrate(env, ctx, app, &target.database, source).await?,
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
    let mut conn = ENGINE.connect(&creds, &database).await.map_err(pg)?;
    let server_version = ENGINE.server_version(&mut conn).await.map_err(pg)?;
    let health = health_check(&mut conn, env).await;
    ENGINE.close(conn).await;
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
        usage: None,
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
/// Returns the schema version. (Production environments do not get here: see [`Migrations::Refused`].)
async fn migrate(
    env: &DatabaseEnvironment,
    ctx: &Context,
    app: &ServerCredentials,
    database: &str,
    source: &ConfigMapSource,
) -> Result<Option<crate::domain::version::Version>, Error> {
    use crate::{
        controllers::references::{raw_files, resolve_sources},
        domain::migrations::{self, MigrationPhase},
        engines::{Migrate as _, migrate::Prior},
    };
    let namespace = env.namespace().unwrap_or_default();
    let maps = resolve_sources(ctx, &namespace, source, "spec.migrations").await?;
    let parsed =
        migrations::source::parse(&raw_files(&maps)).map_err(|e| Error::NeedsAttention {
            reason: "MigrationSourceInvalid",
            source: None,
            message: format!("spec.migrations: {e}"),
        })?;
    let opts = run_options(env, &namespace);
    let mut hooks = EnvironmentHooks {
        ctx,
        env,
        reported: false,
    };
    let outcome = ENGINE
        .migrate(app, database, &parsed, &opts, Prior::default(), &mut hooks)
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

/// What an environment's migrations run with: forward to the newest, each attempt its own run rolled
/// back on failure, lint findings as warnings.
fn run_options(env: &DatabaseEnvironment, namespace: &str) -> crate::engines::migrate::RunOptions {
    use crate::{
        domain::migrations::{Direction, LintMode, OnFailure},
        engines::migrate::RunOptions,
    };
    RunOptions {
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
    }
}

/// How long an environment waits for another migration holding its database's migration lock.
pub const MIGRATION_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the spec's health query (`select 1` by default) within `healthCheck.timeoutSeconds`: the
/// server cancels it then (`statement_timeout`), and the client stops waiting a second later.
async fn health_check(conn: &mut Session, env: &DatabaseEnvironment) -> Result<(), Error> {
    let check = env.spec.health_check.clone().unwrap_or_default();
    let limit = Duration::from_secs(check.timeout_seconds.max(1) as u64);
    let failed = |detail: String| Error::NeedsAttention {
        reason: "HealthCheckFailed",
        source: None,
        message: detail,
    };
    let run = async {
        ENGINE.limit_statements(conn, limit).await?;
        ENGINE.health_check(conn, &check.query).await
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

impl crate::engines::migrate::Hooks for EnvironmentHooks<'_> {
    async fn report(
        &mut self,
        state: &crate::engines::migrate::RunState,
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

    async fn backup(&mut self) -> Result<Option<String>, crate::engines::migrate::BackupFailure> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env(spec: serde_json::Value) -> DatabaseEnvironment {
        let mut spec_json = json!({"tier": "dev", "server": {"adminSecretRef": {"name": "admin"}}});
        spec_json
            .as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        let mut env =
            DatabaseEnvironment::new("orders", serde_json::from_value(spec_json).unwrap());
        env.metadata.namespace = Some("shop".into());
        env.metadata.uid = Some("uid-1".into());
        env
    }

    fn admin() -> ServerCredentials {
        ServerCredentials {
            host: "db.example".into(),
            port: 5433,
            username: "admin".into(),
            password: "admin-secret".into(),
            sslmode: "verify-full".into(),
            ca_pem: Some(b"PEM".to_vec()),
        }
    }

    /// A plan case: what was read, and what the plan must say.
    struct Case {
        name: &'static str,
        spec: serde_json::Value,
        database_name: Option<&'static str>,
        template: Option<&'static str>,
        existing_password: Option<&'static str>,
        seed_sql: Option<&'static str>,
        // Expected (the database is the chosen name, else the default):
        password: &'static str,
        restore: Option<&'static str>,
        migrations: &'static str,
    }

    /// The cases of [`the_plan_follows_what_was_read`].
    fn plan_cases() -> [Case; 6] {
        [
            Case {
                name: "a first attempt uses the generated password and the default name",
                spec: json!({}),
                database_name: None,
                template: None,
                existing_password: None,
                seed_sql: None,
                password: "generated",
                restore: None,
                migrations: "none",
            },
            Case {
                name: "a later attempt keeps the Secret's password",
                spec: json!({}),
                database_name: None,
                template: None,
                existing_password: Some("stored"),
                seed_sql: None,
                password: "stored",
                restore: None,
                migrations: "none",
            },
            Case {
                name: "a chosen database name and template, with a seed",
                spec: json!({"seed": {"configMapRef": {"name": "seed"}, "key": "seed.sql"}}),
                database_name: Some("orders_db"),
                template: Some("orders_template"),
                existing_password: None,
                seed_sql: Some("insert into t values (1)"),
                password: "generated",
                restore: None,
                migrations: "none",
            },
            Case {
                name: "a restore from a schedule's backup",
                spec: json!({"restore": {"backupScheduleRef": {"name": "nightly"}}}),
                database_name: None,
                template: None,
                existing_password: None,
                seed_sql: None,
                password: "generated",
                restore: Some("nightly"),
                migrations: "none",
            },
            Case {
                name: "migrations run outside production",
                spec: json!({"migrations": {"configMapNames": ["m"]}}),
                database_name: None,
                template: None,
                existing_password: None,
                seed_sql: None,
                password: "generated",
                restore: None,
                migrations: "run",
            },
            Case {
                name: "migrations are refused in production",
                spec: json!({"tier": "production", "migrations": {"configMapNames": ["m"]}}),
                database_name: None,
                template: None,
                existing_password: None,
                seed_sql: None,
                password: "generated",
                restore: None,
                migrations: "refused",
            },
        ]
    }

    /// Plans the case `c` and compares the plan with what it expects (`default`: the default name).
    fn check_plan(c: Case, default: &str) {
        let env = env(c.spec);
        let read = Read {
            access: Resolved {
                admin: admin(),
                templates: vec!["allowed".into()],
                connection_limit: Some(7),
            },
            template: c.template.map(Into::into),
            database_name: c.database_name.map(Into::into),
            seed_sql: c.seed_sql.map(Into::into),
            existing_password: c.existing_password.map(Into::into),
        };
        let plan = plan(&env, read, "generated".into());
        let name = c.name;
        let database = c.database_name.unwrap_or(default);
        assert_eq!(plan.target.database, database, "{name}");
        assert_eq!(
            plan.target.role, database,
            "{name}: the role is named as the database"
        );
        assert_eq!(plan.target.template.as_deref(), c.template, "{name}");
        assert_eq!(plan.target.allowed_templates, ["allowed"], "{name}");
        assert_eq!(plan.target.connection_limit, Some(7), "{name}");
        assert_eq!(plan.target.uid, "uid-1", "{name}");
        assert_eq!(plan.admin, admin(), "{name}");
        assert_eq!(
            plan.app,
            ServerCredentials {
                username: database.into(),
                password: c.password.into(),
                ..admin()
            },
            "{name}: the app reaches the admin's server, TLS settings included"
        );
        assert_eq!(
            plan.restore
                .as_ref()
                .map(|r| r.backup_schedule_ref.name.as_str()),
            c.restore,
            "{name}"
        );
        assert_eq!(plan.seed_sql.as_deref(), c.seed_sql, "{name}");
        let migrations = match plan.migrations {
            Migrations::None => "none",
            Migrations::Run(_) => "run",
            Migrations::Refused => "refused",
        };
        assert_eq!(migrations, c.migrations, "{name}");
    }

    #[test]
    fn the_plan_follows_what_was_read() {
        let default = crate::engines::ENGINE.default_name("shop", "orders");
        for c in plan_cases() {
            check_plan(c, &default);
        }
    }
}
