//! DatabaseEnvironment controller: a database for one tier.
//!
//! `server`: a role and a database on a shared server (optionally cloned from a template), seeded once,
//! health-checked, with the connection Secret `<name>-connection`; dropped on delete per
//! `deletionPolicy` (a finalizer, since that touches the outside world).
//! `external`: an adopted database, checked and described in the same Secret, never altered.
//! `instance`: a dedicated server (StatefulSet, headless Service, superuser Secret), then the same steps
//! as on a shared server once its pod is Ready.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::StatefulSet,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
        reflector::ObjectRef,
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

mod instance;
mod secret;
mod server;

pub use secret::connection_data;
use secret::*;
use server::*;

pub const CONTROLLER: &str = "databaseenvironment";
/// Label on everything made for an environment (its value is the environment's name).
pub const ENVIRONMENT_LABEL: &str = "lifeboat.dev/environment";
/// Finalizer on `server` environments: the database and role are dropped (or kept) before the object goes.
pub const FINALIZER: &str = "lifeboat.dev/database-cleanup";
pub use super::references::CA_KEY;
/// Length of generated role passwords (alphanumeric: ~190 bits).
pub const PASSWORD_LENGTH: usize = 32;
/// Reconciles at most this many environments at once (each holds a server connection while it works).
pub const CONCURRENCY: u16 = 16;

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let envs = ctx.watched_api::<DatabaseEnvironment>();
    // Only what Lifeboat made is watched (by label), not every Secret or Pod of the cluster.
    let managed = watcher_config().labels("app.kubernetes.io/managed-by=lifeboat");
    let stream = Controller::new(envs, watcher_config())
        .owns(ctx.watched_api::<Secret>(), managed.clone())
        .owns(ctx.watched_api::<StatefulSet>(), managed.clone())
        .watches(
            ctx.watched_api::<Pod>(),
            watcher_config().labels(ENVIRONMENT_LABEL),
            |pod| {
                // An instance's pod becoming Ready moves its environment on.
                let env = pod.labels().get(ENVIRONMENT_LABEL)?.clone();
                Some(ObjectRef::<DatabaseEnvironment>::new(&env).within(&pod.namespace()?))
            },
        )
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
        Error::Transient {
            reason: e.reason(),
            message: e.to_string(),
        }
    } else {
        Error::NeedsAttention {
            reason: e.reason(),
            message: e.to_string(),
        }
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
                s.schema_version = o.schema_version;
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
    ctx.publish(env, EventType::Normal, "Expired", note).await;
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
    /// Newest applied migration of `spec.migrations`, if any.
    schema_version: Option<i64>,
    message: String,
}

async fn provision(env: &DatabaseEnvironment, ctx: &Context) -> Result<Outcome, Error> {
    if env.spec.engine != Engine::Postgres {
        return Err(Error::NotImplemented {
            message: "only the postgres engine is supported in this release".into(),
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
        instance::provision_instance(env, ctx).await
    }
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
    let never_provisioned = env
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_none()
        && secrets
            .get_opt(&connection_secret_name(&env))
            .await?
            .is_none();
    if never_provisioned {
        // The Secret is written before anything is created on the server: without it, nothing was.
        let note = "Nothing to drop: this environment never reached its server.".to_string();
        ctx.publish(env.as_ref(), EventType::Normal, "Deleted", note)
            .await;
        return Ok(Action::await_change());
    }
    if policy == DeletionPolicy::Retain {
        let note = format!(
            "deletionPolicy Retain: database {database} and its role are kept on the server."
        );
        ctx.publish(env.as_ref(), EventType::Normal, "Retained", note)
            .await;
        return Ok(Action::await_change());
    }
    let (admin, _) = references::connection_credentials(ctx, &namespace, &server.admin_secret_ref, "spec.server.adminSecretRef", false)
        .await
        .map_err(|e| Error::NeedsAttention {
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
    ctx.publish(env.as_ref(), EventType::Normal, "Deleted", note)
        .await;
    Ok(Action::await_change())
}
