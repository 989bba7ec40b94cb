//! DatabaseEnvironment controller: a database for one tier.
//!
//! `server`: a role and a database on a shared server (optionally cloned from a template), seeded once,
//! health-checked, with the connection Secret `<name>-connection`; dropped on delete per
//! `deletionPolicy` (a finalizer, since that touches the outside world).
//! `external`: an adopted database, checked and described in the same Secret, never altered.
//! `instance`: not in this build (reported `Stalled` with reason `NotImplemented`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType},
        finalizer::{self, finalizer},
    },
};
use rand::{Rng, distr::Alphanumeric};
use sqlx::Connection;
use tracing::{info, instrument};

use super::{
    Context, Error, FIELD_MANAGER,
    conditions::Verdict,
    drain, error_policy, instrumented, references,
    status::{self, sentence},
    watcher_config,
};
use crate::{
    api::{
        DatabaseEnvironment, DatabaseEnvironmentStatus,
        common::ConnectionSecretRef,
        database_environment::{DeletionPolicy, Endpoint, Engine},
    },
    engines::{
        ServerCredentials,
        postgres::{self, PgError, provision, sql},
    },
};

pub const CONTROLLER: &str = "databaseenvironment";
/// Finalizer on `server` environments: the database and role are dropped (or kept) before the object goes.
pub const FINALIZER: &str = "lifeboat.dev/database-cleanup";
/// Key in the admin or connection Secret holding a PEM CA bundle for `verify-ca`/`verify-full`.
pub const CA_KEY: &str = "ca.crt";
/// Length of generated role passwords (alphanumeric: ~190 bits).
pub const PASSWORD_LENGTH: usize = 32;
/// Reconciles at most this many environments at once (each holds a server connection while it works).
pub const CONCURRENCY: u16 = 16;

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let envs = ctx.watched_api::<DatabaseEnvironment>();
    let secrets = ctx.watched_api::<Secret>();
    let stream = Controller::new(envs, watcher_config())
        .owns(secrets, watcher_config())
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.map(|_| ()))
        .run(
            reconcile,
            error_policy::<DatabaseEnvironment>(CONTROLLER),
            ctx,
        );
    drain(CONTROLLER, stream).await;
}

pub fn connection_secret_name(env: &DatabaseEnvironment) -> String {
    format!("{}-connection", env.name_any())
}

#[instrument(skip(env, ctx), fields(namespace = env.namespace().unwrap_or_default(), name = env.name_any()))]
async fn reconcile(env: Arc<DatabaseEnvironment>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(CONTROLLER, env.clone(), ctx.clone(), async move {
        let api: Api<DatabaseEnvironment> =
            Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
        if env.spec.server.is_none() {
            // Only the server source creates anything outside Kubernetes; no finalizer elsewhere.
            return apply(env, &ctx).await;
        }
        finalizer(&api, FINALIZER, env, |event| async {
            match event {
                finalizer::Event::Apply(env) => apply(env, &ctx).await,
                finalizer::Event::Cleanup(env) => cleanup(env, &ctx).await,
            }
        })
        .await
        .map_err(|e| match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Error::Kube(e)
            }
            other => Error::InvalidSpec {
                reason: "FinalizerError",
                message: other.to_string(),
            },
        })
    })
    .await
}

/// Converts a PostgreSQL failure into a controller error: transient ones are retried with backoff,
/// the rest need a person (and are retried with backoff too, since the fix may be outside Kubernetes).
fn pg(e: PgError) -> Error {
    if e.is_transient() {
        Error::Transient { reason: e.reason(), message: e.to_string() }
    } else {
        Error::MissingInput { reason: e.reason(), message: e.to_string() }
    }
}

/// When the environment expires, from its creation time and TTL (spec or tier default).
pub fn expires_at(env: &DatabaseEnvironment) -> Option<Timestamp> {
    let ttl: Duration = env
        .spec
        .ttl
        .map(Into::into)
        .or_else(|| env.spec.tier.default_ttl())?;
    let created = env.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(ttl).ok()?)
        .ok()
}

async fn apply(env: Arc<DatabaseEnvironment>, ctx: &Context) -> Result<Action, Error> {
    let expiry = expires_at(&env);
    if let Some(at) = expiry
        && Timestamp::now() >= at
    {
        return expire(&env, ctx, at).await;
    }
    let result = provision(&env, ctx).await;
    let (verdict, outcome) = match &result {
        Ok(outcome) => (
            Verdict::Ready {
                reason: "Ready",
                message: outcome.message.clone(),
            },
            Some(outcome),
        ),
        Err(e) => (status::verdict_for(e), None),
    };
    status::write(
        ctx,
        env.as_ref(),
        &verdict,
        |s: &mut DatabaseEnvironmentStatus| {
            s.expires_at = expiry.map(Time);
            if let Some(o) = outcome {
                s.database = Some(o.database.clone());
                s.secret_name = Some(connection_secret_name(&env));
                s.endpoint = Some(Endpoint {
                    host: o.host.clone(),
                    port: o.port.into(),
                });
                s.server_version = Some(o.server_version.clone());
                if o.seeded_now || (env.spec.seed.is_some() && s.seeded_at.is_none()) {
                    s.seeded_at = Some(Time(Timestamp::now()));
                }
            }
        },
    )
    .await?;
    result?;
    // Re-check health on its period, and wake up in time to expire.
    let period = Duration::from_secs(
        env.spec
            .health_check
            .as_ref()
            .map_or(60, |h| h.period_seconds.max(1) as u64),
    );
    let until_expiry = expiry.map(|at| {
        let secs = (at.as_second() - Timestamp::now().as_second()).max(1);
        Duration::from_secs(secs as u64)
    });
    Ok(Action::requeue(
        until_expiry.map_or(period, |d| d.min(period)),
    ))
}

async fn expire(env: &DatabaseEnvironment, ctx: &Context, at: Timestamp) -> Result<Action, Error> {
    info!(expired_at = %at, "TTL reached; deleting the environment");
    let note = format!("TTL expired at {at}; deleting the environment.");
    publish(ctx, env, EventType::Normal, "Expired", note).await;
    let api: Api<DatabaseEnvironment> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    match api
        .delete(&env.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// What a successful provisioning produced.
struct Outcome {
    database: String,
    host: String,
    port: u16,
    server_version: String,
    seeded_now: bool,
    message: String,
}

async fn provision(env: &DatabaseEnvironment, ctx: &Context) -> Result<Outcome, Error> {
    if env.spec.engine != Engine::Postgres {
        return Err(Error::NotImplemented {
            message: "only the postgres engine is supported in this release".into(),
        });
    }
    if env.spec.migrations.is_some() {
        return Err(Error::NotImplemented {
            message:
                "spec.migrations is not applied by this build yet; remove it and use a MigrationRun"
                    .into(),
        });
    }
    if let Some(server) = &env.spec.server {
        provision_server(
            env,
            ctx,
            &server.admin_secret_ref,
            server.template.clone(),
            server.database_name.clone(),
        )
        .await
    } else if let Some(external) = &env.spec.external {
        adopt_external(env, ctx, &external.connection_secret_ref).await
    } else {
        Err(Error::NotImplemented {
            message: "the instance source (a dedicated server run by the operator) is not in this build yet".into(),
        })
    }
}

/// Reads connection credentials from a Secret through the key names of `secret_ref`.
async fn read_credentials(
    ctx: &Context,
    namespace: &str,
    secret_ref: &ConnectionSecretRef,
    field: &str,
    with_database: bool,
) -> Result<(ServerCredentials, Option<String>), Error> {
    let mut required = vec![
        secret_ref.host_key(),
        secret_ref.username_key(),
        secret_ref.password_key(),
    ];
    if with_database {
        required.push(secret_ref.database_key());
    }
    let secret =
        references::secret_with_keys(ctx, namespace, &secret_ref.name, field, &required).await?;
    let get = |key: &str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| {
                String::from_utf8_lossy(&v.0)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .cloned()
            })
            .filter(|v| !v.is_empty())
    };
    let port = match get(secret_ref.port_key()) {
        None => 5432,
        Some(p) => p.trim().parse().map_err(|_| Error::MissingInput {
            reason: "SecretKeyInvalid",
            message: format!(
                "Secret {namespace}/{} named by {field}: key {} is not a port number",
                secret_ref.name,
                secret_ref.port_key()
            ),
        })?,
    };
    let sslmode = get(secret_ref.sslmode_key()).unwrap_or_else(|| "prefer".into());
    if !crate::engines::SSL_MODES.contains(&sslmode.as_str()) {
        return Err(Error::MissingInput {
            reason: "SecretKeyInvalid",
            message: format!(
                "Secret {namespace}/{} named by {field}: sslmode {sslmode:?} is not one of {}",
                secret_ref.name,
                crate::engines::SSL_MODES.join(", ")
            ),
        });
    }
    let creds = ServerCredentials {
        host: get(secret_ref.host_key()).unwrap_or_default(),
        port,
        username: get(secret_ref.username_key()).unwrap_or_default(),
        password: get(secret_ref.password_key()).unwrap_or_default(),
        sslmode,
        ca_pem: get(CA_KEY).map(String::into_bytes),
    };
    let database = if with_database {
        get(secret_ref.database_key())
    } else {
        None
    };
    Ok((creds, database))
}

async fn provision_server(
    env: &DatabaseEnvironment,
    ctx: &Context,
    admin_ref: &ConnectionSecretRef,
    template: Option<String>,
    database_name: Option<String>,
) -> Result<Outcome, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let (admin, _) = read_credentials(
        ctx,
        &namespace,
        admin_ref,
        "spec.server.adminSecretRef",
        false,
    )
    .await?;
    let seed_sql = match &env.spec.seed {
        Some(seed) => Some(read_seed(ctx, &namespace, &seed.config_map_ref.name, &seed.key).await?),
        None => None,
    };
    let database = database_name.unwrap_or_else(|| sql::default_name(&namespace, &env.name_any()));
    let target = provision::Target {
        database: database.clone(),
        role: database.clone(),
        template,
        uid: env.uid().unwrap_or_default(),
    };

    // Reach the server first: nothing (not even the connection Secret) exists until the admin
    // credentials work, so deleting an environment that never got this far has nothing to clean up.
    let mut conn = postgres::connect(&admin, "postgres").await.map_err(pg)?;
    // The password is stored before the role exists, so a crash between the two never loses it; the
    // Secret's existence also tells cleanup that something may exist on the server.
    let existing = existing_password(ctx, env).await?;
    let password = existing.clone().unwrap_or_else(generate_password);
    let app = ServerCredentials {
        username: target.role.clone(),
        password: password.clone(),
        ca_pem: admin.ca_pem.clone(),
        ..admin.clone()
    };
    write_connection_secret(ctx, env, &app, &target.database).await?;

    let server_version = provision::server_version(&mut conn).await.map_err(pg)?;
    let role_created = provision::ensure_role(&mut conn, &target, &password)
        .await
        .map_err(pg)?;
    let created = match provision::ensure_database(&mut conn, &admin, &target).await {
        Ok(created) => created,
        Err(e) => {
            if role_created {
                // Leave nothing behind from a creation that failed half-way.
                let _ = provision::drop_owned(&mut conn, &target).await;
            }
            let _ = conn.close().await;
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
        publish(ctx, env, EventType::Normal, "Created", note).await;
    }

    // The app role's password must match the Secret; repair it when someone replaced the Secret.
    let mut app_conn = match postgres::connect(&app, &target.database).await {
        Err(PgError::AuthFailed { .. }) if !role_created => {
            provision::set_role_password(&mut conn, &target, &password)
                .await
                .map_err(pg)?;
            postgres::connect(&app, &target.database)
                .await
                .map_err(pg)?
        }
        other => other.map_err(pg)?,
    };
    let _ = conn.close().await;

    let seeded_now = match &seed_sql {
        Some(seed) => provision::apply_seed(&mut app_conn, &target, seed)
            .await
            .map_err(|e| Error::MissingInput {
                reason: "SeedFailed",
                message: format!("the seed failed and was rolled back: {e}"),
            })?,
        None => false,
    };
    let _ = app_conn.close().await;
    if seeded_now {
        publish(
            ctx,
            env,
            EventType::Normal,
            "Seeded",
            format!("Applied the seed to {}.", target.database),
        )
        .await;
    }
    let query = env
        .spec
        .health_check
        .as_ref()
        .map(|h| h.query.clone())
        .unwrap_or_else(|| "select 1".into());
    postgres::health_check(&app, &target.database, &query)
        .await
        .map_err(|e| Error::MissingInput {
            reason: "HealthCheckFailed",
            message: e.to_string(),
        })?;

    Ok(Outcome {
        message: sentence(&format!(
            "database {} on {}:{} is ready; connect with Secret {}",
            target.database,
            admin.host,
            admin.port,
            connection_secret_name(env)
        )),
        database: target.database,
        host: admin.host,
        port: admin.port,
        server_version,
        seeded_now,
    })
}

async fn adopt_external(
    env: &DatabaseEnvironment,
    ctx: &Context,
    secret_ref: &ConnectionSecretRef,
) -> Result<Outcome, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let (creds, database) = read_credentials(
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
    let _ = conn.close().await;
    let query = env
        .spec
        .health_check
        .as_ref()
        .map(|h| h.query.clone())
        .unwrap_or_else(|| "select 1".into());
    postgres::health_check(&creds, &database, &query)
        .await
        .map_err(|e| Error::MissingInput {
            reason: "HealthCheckFailed",
            message: e.to_string(),
        })?;
    write_connection_secret(ctx, env, &creds, &database).await?;
    Ok(Outcome {
        message: sentence(&format!(
            "external database {database} on {}:{} answers its health check; connect with Secret {}",
            creds.host,
            creds.port,
            connection_secret_name(env)
        )),
        database,
        host: creds.host,
        port: creds.port,
        server_version,
        seeded_now: false,
    })
}

async fn read_seed(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<String, Error> {
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
    String::from_utf8(bytes).map_err(|_| Error::MissingInput {
        reason: "SeedUnreadable",
        message: format!("ConfigMap {namespace}/{name} key {key} is not UTF-8 text"),
    })
}

fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

/// The password in this environment's connection Secret, if that Secret exists and is ours.
async fn existing_password(
    ctx: &Context,
    env: &DatabaseEnvironment,
) -> Result<Option<String>, Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let Some(secret) = api.get_opt(&connection_secret_name(env)).await? else {
        return Ok(None);
    };
    let ours = secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == env.uid().as_ref());
    if !ours {
        return Err(Error::InvalidSpec {
            reason: "SecretConflict",
            message: format!(
                "Secret {} exists and is not owned by this environment; delete or rename it",
                connection_secret_name(env)
            ),
        });
    }
    Ok(secret
        .data
        .and_then(|d| {
            d.get("password")
                .map(|p| String::from_utf8_lossy(&p.0).into_owned())
        })
        .filter(|p| !p.is_empty()))
}

/// The connection Secret's data (pure).
pub fn connection_data(creds: &ServerCredentials, database: &str) -> BTreeMap<String, String> {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let host = if creds.host.contains(':') {
        format!("[{}]", creds.host)
    } else {
        creds.host.clone()
    };
    BTreeMap::from([
        ("host".into(), creds.host.clone()),
        ("port".into(), creds.port.to_string()),
        ("database".into(), database.to_string()),
        ("username".into(), creds.username.clone()),
        ("password".into(), creds.password.clone()),
        ("sslmode".into(), creds.sslmode.clone()),
        (
            "uri".into(),
            format!(
                "postgresql://{}:{}@{host}:{}/{}?sslmode={}",
                enc(&creds.username),
                enc(&creds.password),
                creds.port,
                enc(database),
                creds.sslmode
            ),
        ),
        (
            "jdbcUrl".into(),
            format!(
                "jdbc:postgresql://{host}:{}/{}?sslmode={}",
                creds.port,
                enc(database),
                creds.sslmode
            ),
        ),
    ])
}

async fn write_connection_secret(
    ctx: &Context,
    env: &DatabaseEnvironment,
    creds: &ServerCredentials,
    database: &str,
) -> Result<(), Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let name = connection_secret_name(env);
    let mut data: BTreeMap<String, ByteString> = connection_data(creds, database)
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    if let Some(ca) = &creds.ca_pem {
        data.insert(CA_KEY.into(), ByteString(ca.clone()));
    }
    if let Some(current) = api.get_opt(&name).await?
        && current.data.as_ref() == Some(&data)
    {
        return Ok(());
    }
    let owner: OwnerReference = env
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "lifeboat".into()),
                ("lifeboat.dev/environment".into(), env.name_any()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    let mut patch = serde_json::to_value(&secret)?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Secret".into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn cleanup(env: Arc<DatabaseEnvironment>, ctx: &Context) -> Result<Action, Error> {
    let Some(server) = &env.spec.server else {
        return Ok(Action::await_change());
    };
    let policy = env
        .spec
        .deletion_policy
        .unwrap_or_else(|| env.spec.tier.default_deletion_policy());
    let namespace = env.namespace().unwrap_or_default();
    let database = server
        .database_name
        .clone()
        .unwrap_or_else(|| sql::default_name(&namespace, &env.name_any()));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let never_provisioned = env.status.as_ref().and_then(|s| s.database.as_ref()).is_none()
        && secrets.get_opt(&connection_secret_name(&env)).await?.is_none();
    if never_provisioned {
        // The Secret is written before anything is created on the server: without it, nothing was.
        let note = "Nothing to drop: this environment never reached its server.".to_string();
        publish(ctx, &env, EventType::Normal, "Deleted", note).await;
        return Ok(Action::await_change());
    }
    if policy == DeletionPolicy::Retain {
        let note = format!(
            "deletionPolicy Retain: database {database} and its role are kept on the server."
        );
        publish(ctx, &env, EventType::Normal, "Retained", note).await;
        return Ok(Action::await_change());
    }
    let (admin, _) = read_credentials(ctx, &namespace, &server.admin_secret_ref, "spec.server.adminSecretRef", false)
        .await
        .map_err(|e| Error::MissingInput {
            reason: "CleanupBlocked",
            message: format!(
                "cannot drop database {database}: {e}; restore the admin Secret, or remove the finalizer {FINALIZER} to abandon the database"
            ),
        })?;
    let target = provision::Target {
        database: database.clone(),
        role: database.clone(),
        template: None,
        uid: env.uid().unwrap_or_default(),
    };
    let mut conn = postgres::connect(&admin, "postgres").await.map_err(pg)?;
    let dropped = provision::drop_owned(&mut conn, &target).await.map_err(pg);
    let _ = conn.close().await;
    let dropped = dropped?;
    let note = if dropped.is_empty() {
        "Nothing to drop: no database or role of this environment exists.".to_string()
    } else {
        format!("Dropped {}.", dropped.join(" and "))
    };
    publish(ctx, &env, EventType::Normal, "Deleted", note).await;
    Ok(Action::await_change())
}

async fn publish(
    ctx: &Context,
    env: &DatabaseEnvironment,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &env.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_data_encodes_credentials_in_the_uri() {
        let creds = ServerCredentials {
            host: "db.example".into(),
            port: 5433,
            username: "app".into(),
            password: "p@ss:w/rd".into(),
            sslmode: "require".into(),
            ca_pem: None,
        };
        let d = connection_data(&creds, "orders");
        assert_eq!(
            d["uri"],
            "postgresql://app:p%40ss%3Aw%2Frd@db.example:5433/orders?sslmode=require"
        );
        assert_eq!(
            d["jdbcUrl"],
            "jdbc:postgresql://db.example:5433/orders?sslmode=require"
        );
        assert_eq!(d["password"], "p@ss:w/rd");
        for key in [
            "host", "port", "database", "username", "password", "uri", "jdbcUrl",
        ] {
            assert!(d.contains_key(key), "{key}");
        }
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert_ne!(a, b);
    }
}
