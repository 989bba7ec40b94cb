//! DatabaseEnvironment controller: a database for one tier.
//!
//! `server`: a role and a database on a shared server (optionally cloned from a template), seeded once,
//! health-checked, with the connection Secret `<name>-connection`; dropped on delete per
//! `deletionPolicy` (a finalizer, since that touches the outside world).
//! `external`: an adopted database, checked and described in the same Secret, never altered.
//! `instance`: a dedicated server (StatefulSet, headless Service, superuser Secret), then the same steps
//! as on a shared server once its pod is Ready.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
        reflector::ObjectRef,
    },
};
use tracing::{info, instrument};

use super::{
    Context, Error, conditions::Verdict, drain, error::pg, error_policy, instrumented, references,
    status, watcher_config,
};
use crate::{
    api::{DatabaseEnvironment, DatabaseEnvironmentStatus, database_environment::DeletionPolicy},
    engines::{self, Connect, Dropping, ENGINE, Provisioning, Target},
};

mod backups;
mod cache;
mod instance;
mod jobs;
mod secret;
mod server;
mod tenant;

pub use jobs::Jobs;
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

/// What the DatabaseEnvironment controller keeps: the shared context and the provisioning jobs of this
/// process, by environment UID.
pub struct Environments {
    pub ctx: Arc<Context>,
    pub jobs: Jobs,
}

impl Environments {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            jobs: Jobs::default(),
        }
    }

    /// Aborts every provisioning job (the operator stopping hard, as a dead process's).
    pub fn abort_all(&self) {
        self.jobs.abort_all();
    }
}

pub async fn controller(state: Arc<Environments>, shutdown: super::Shutdown) {
    let ctx = state.ctx.clone();
    let policy = error_policy::<DatabaseEnvironment>(CONTROLLER);
    let envs = ctx.watched_api::<DatabaseEnvironment>();
    // Only what Lifeboat made is watched (by label), not every Secret or Pod of the cluster.
    let managed = watcher_config().labels("app.kubernetes.io/managed-by=lifeboat");
    let controller = super::watch::controller(&envs, ctx.client.clone());
    let store = controller.store();
    let stream = controller
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
        // A clone waiting for its template environment looks again as soon as the template changes.
        .watches_stream(
            super::watch::objects(
                &ctx.watched_api::<DatabaseEnvironment>(),
                ctx.client.clone(),
            ),
            super::watch::referencing(store.clone(), |e: &DatabaseEnvironment| {
                e.spec
                    .server
                    .as_ref()
                    .and_then(|s| s.template_from.as_ref())
                    .map_or("", |t| t.name.as_str())
            }),
        )
        // New files in a `spec.migrations` ConfigMap apply within seconds, not at the next health period.
        .watches(
            ctx.watched_api::<k8s_openapi::api::core::v1::ConfigMap>(),
            watcher_config(),
            {
                let (state, store) = (state.clone(), store.clone());
                let changed = super::watch::sourcing(store.clone(), |e: &DatabaseEnvironment| {
                    e.spec.migrations.as_ref()
                });
                move |cm| {
                    let refs = changed(cm);
                    for r in &refs {
                        if let Some(uid) = store.get(r).and_then(|e| e.uid()) {
                            state.jobs.sources_changed(&uid);
                        }
                    }
                    refs
                }
            },
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            reconcile,
            move |env, error, state: Arc<Environments>| policy(env, error, state.ctx.clone()),
            state,
        );
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(env, state), fields(namespace = env.namespace().unwrap_or_default(), name = env.name_any()))]
async fn reconcile(
    env: Arc<DatabaseEnvironment>,
    state: Arc<Environments>,
) -> Result<Action, Error> {
    let ctx = state.ctx.clone();
    instrumented(CONTROLLER, env.clone(), ctx.clone(), async move {
        let api: Api<DatabaseEnvironment> =
            Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
        if env.spec.server.is_none() {
            // Only the server source creates anything outside Kubernetes; no finalizer elsewhere.
            return apply(env, &state).await;
        }
        finalizer(&api, FINALIZER, env, |event| async {
            match event {
                finalizer::Event::Apply(env) => apply(env, &state).await,
                finalizer::Event::Cleanup(env) => cleanup(env, &state).await,
            }
        })
        .await
        .map_err(super::error::from_finalizer)
    })
    .await
}

/// Refuses to take over an object of the environment's names that it did not create (not controlled by
/// it): server-side apply with `force` would silently overwrite someone else's Secret or Service.
pub(super) fn refuse_foreign<K: Resource<DynamicType = ()>>(
    existing: Option<&K>,
    env: &DatabaseEnvironment,
) -> Result<(), Error> {
    let Some(obj) = existing else {
        return Ok(());
    };
    let ours = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == env.uid().as_ref());
    if ours {
        return Ok(());
    }
    Err(Error::InvalidSpec {
        reason: "ObjectConflict",
        message: format!(
            "{} {} exists and was not created by this environment; Lifeboat does not overwrite it: delete or rename it",
            K::kind(&()),
            obj.meta().name.as_deref().unwrap_or_default()
        ),
    })
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

async fn apply(env: Arc<DatabaseEnvironment>, state: &Arc<Environments>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let expiry = expires_at(&env);
    let uid = env.uid().unwrap_or_default();
    if let Some(at) = expiry
        && Timestamp::now() >= at
    {
        state.jobs.abort(&uid);
        return expire(&env, ctx, at).await;
    }
    // Wake up in time to expire.
    let until_expiry = expiry.map(|at| {
        let secs = (at.as_second() - Timestamp::now().as_second()).max(1);
        Duration::from_secs(secs as u64)
    });
    let within_ttl = |d: Duration| Action::requeue(until_expiry.map_or(d, |e| e.min(d)));
    match state.jobs.next(&uid, env.metadata.generation) {
        jobs::Next::Running => Ok(within_ttl(jobs::JOB_CHECK_INTERVAL)),
        jobs::Next::Wait(left) => Ok(within_ttl(left)),
        jobs::Next::Start => {
            let has_ready = env.status.as_ref().is_some_and(|s| {
                super::conditions::find(&s.conditions, super::conditions::READY).is_some()
            });
            if !has_ready {
                let namespace = env.namespace().unwrap_or_default();
                let message = if ctx.slots.available(&namespace) {
                    "Provisioning: creating the database.".to_string()
                } else {
                    "Waiting for a free work slot (--max-concurrent-work / --max-concurrent-work-per-namespace).".to_string()
                };
                status::write(
                    ctx.as_ref(),
                    env.as_ref(),
                    &Verdict::Reconciling {
                        reason: "Provisioning",
                        message,
                    },
                    |s: &mut DatabaseEnvironmentStatus| s.expires_at = expiry.map(Time),
                )
                .await?;
            }
            state.jobs.spawn(state.clone(), env.clone());
            Ok(within_ttl(jobs::JOB_CHECK_INTERVAL))
        }
    }
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
    schema_version: Option<crate::domain::version::Version>,
    /// The backup the database was created from (`spec.restore`).
    restored_from: Option<String>,
    /// The server's figures, for engines that report them (Redis), and whose they are (`server` or
    /// `instance`).
    usage: Option<(crate::engines::Usage, &'static str)>,
    message: String,
}

async fn provision(env: &DatabaseEnvironment, state: &Environments) -> Result<Outcome, Error> {
    let ctx = state.ctx.as_ref();
    let kind = super::engine::require_spec(&env.spec)?;
    // Engines of the coarse verbs: a tenant on a shared server, or a whole server adopted; their own
    // instance goes through `instance` below like any other.
    if let Some(tenancy) = engines::tenancy(kind) {
        if let Some(server) = &env.spec.server {
            let access = server_access(env, ctx, server, true).await?;
            return tenant::provision(env, ctx, tenancy, access).await;
        }
        if let Some(external) = &env.spec.external {
            let (creds, _) = references::engine_credentials(
                ctx,
                kind,
                &env.namespace().unwrap_or_default(),
                &external.connection_secret_ref,
                "spec.external.connectionSecretRef",
                false,
            )
            .await?;
            return tenant::adopt(env, ctx, tenancy, creds, "server").await;
        }
    }
    if let Some(server) = &env.spec.server {
        let mut access = server_access(env, ctx, server, true).await?;
        let template = match &server.template_from {
            Some(from) => {
                let database =
                    template_environment(env, ctx, &state.jobs, server, &from.name).await?;
                // An environment of this namespace on this server: a template by its owner's choice.
                access.templates.push(database.clone());
                Some(database)
            }
            None => server.template.clone(),
        };
        provision_on(env, ctx, access, template, server.database_name.clone()).await
    } else if let Some(external) = &env.spec.external {
        adopt_external(env, ctx, &external.connection_secret_ref).await
    } else {
        instance::provision_instance(env, ctx).await
    }
}

/// The database of `spec.server.templateFrom`'s environment, once it may be cloned: the environment
/// exists in this namespace on the same server, is Ready for its current spec, and has no migration
/// running or due in this operator. Checked only while the clone's database does not exist yet.
async fn template_environment(
    env: &DatabaseEnvironment,
    ctx: &Context,
    jobs: &Jobs,
    server: &crate::api::database_environment::ServerSource,
    name: &str,
) -> Result<String, Error> {
    let namespace = env.namespace().unwrap_or_default();
    let api: Api<DatabaseEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let waiting = |reason: &'static str, message: String| Error::Transient {
        reason,
        message,
        source: None,
    };
    let Some(template) = api.get_opt(name).await? else {
        return Err(waiting(
            "TemplateNotFound",
            format!(
                "spec.server.templateFrom names DatabaseEnvironment {namespace}/{name}, which does not exist; waiting for it"
            ),
        ));
    };
    let same_server = template.spec.server.as_ref().is_some_and(|t| {
        t.server_ref == server.server_ref
            && t.admin_secret_ref.as_ref().map(|s| &s.name)
                == server.admin_secret_ref.as_ref().map(|s| &s.name)
    });
    if !same_server {
        return Err(Error::InvalidSpec {
            reason: "TemplateOnAnotherServer",
            message: format!(
                "spec.server.templateFrom: DatabaseEnvironment {name} is not on this environment's server (its serverRef or adminSecretRef differs); a database can only be cloned on its own server"
            ),
        });
    }
    let status = template.status.clone().unwrap_or_default();
    let Some(database) = status.database.clone() else {
        return Err(waiting(
            "TemplateNotReady",
            format!("waiting for template environment {name} to create its database"),
        ));
    };
    // Once this environment's database exists, the template is not used again.
    if env
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_some()
    {
        return Ok(database);
    }
    let current = status.observed_generation == template.metadata.generation
        && super::conditions::find(&status.conditions, super::conditions::READY)
            .is_some_and(|c| c.status == "True");
    let settled = matches!(
        jobs.next(
            &template.uid().unwrap_or_default(),
            template.metadata.generation
        ),
        jobs::Next::Wait(_)
    );
    if !current || !settled {
        return Err(waiting(
            "TemplateMigrating",
            format!(
                "waiting for template environment {name} to be Ready with its newest migrations before cloning it (it is {})",
                if current {
                    "checking or migrating"
                } else {
                    "not Ready yet"
                }
            ),
        ));
    }
    Ok(database)
}

async fn cleanup(env: Arc<DatabaseEnvironment>, state: &Environments) -> Result<Action, Error> {
    let ctx = state.ctx.as_ref();
    let Some(server) = &env.spec.server else {
        return Ok(Action::await_change());
    };
    let uid = env.uid().unwrap_or_default();
    // A provisioning job still running would race the drop.
    state.jobs.abort(&uid);
    let policy = env
        .spec
        .deletion_policy
        .unwrap_or_else(|| env.spec.tier.default_deletion_policy());
    let namespace = env.namespace().unwrap_or_default();
    let database = database_name(&env);
    if policy == DeletionPolicy::Retain {
        let note = format!(
            "deletionPolicy Retain: database {database} and its role are kept on the server."
        );
        ctx.publish(env.as_ref(), EventType::Normal, "Retained", note)
            .await;
        release_admin_secret(ctx, &env, server).await?;
        return Ok(Action::await_change());
    }
    // Whatever the status says, look on the server: an environment deleted before it reached Ready
    // (or whose connection Secret went first, as in a namespace deletion) may still have created its
    // role and database. Only objects carrying this environment's marker are dropped.
    let target = Target {
        database: database.clone(),
        role: database.clone(),
        uid,
        ..Target::default()
    };
    let dropped = match server_access(&env, ctx, server, false).await {
        Ok(access) => drop_on_server(&env, &access.admin, &target).await,
        Err(e) => Err(e),
    };
    let dropped = match dropped {
        Ok(dropped) => dropped,
        Err(e) => {
            // Nothing recorded (no database in status, no connection Secret, which is written before
            // anything is created on the server): the environment never got as far as the server.
            let recorded = env
                .status
                .as_ref()
                .and_then(|s| s.database.as_ref())
                .is_some()
                || Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
                    .get_opt(&env.connection_secret_name())
                    .await?
                    .is_some();
            if !recorded {
                let note =
                    format!("Nothing recorded to drop, and the server could not be checked ({e}).");
                ctx.publish(env.as_ref(), EventType::Warning, "Deleted", note)
                    .await;
                release_admin_secret(ctx, &env, server).await?;
                return Ok(Action::await_change());
            }
            return Err(Error::NeedsAttention {
                reason: "CleanupBlocked",
                source: None,
                message: format!(
                    "cannot drop database {database}: {e}; restore access to the server, or remove the finalizer {FINALIZER} to abandon the database"
                ),
            });
        }
    };
    let note = if dropped.is_empty() {
        "Nothing to drop: nothing of this environment exists on the server.".to_string()
    } else {
        format!("Dropped {}.", dropped.join(" and "))
    };
    ctx.publish(env.as_ref(), EventType::Normal, "Deleted", note)
        .await;
    release_admin_secret(ctx, &env, server).await?;
    Ok(Action::await_change())
}

/// Drops what the environment has on the server reached with `admin`: through the engine's
/// [`engines::Tenancy`] verbs, or the SQL engine's database and role; only what carries its marker.
async fn drop_on_server(
    env: &DatabaseEnvironment,
    admin: &engines::ServerCredentials,
    target: &Target,
) -> Result<Vec<String>, Error> {
    if let Some(tenancy) = engines::tenancy(super::engine::kind(env.spec.engine)) {
        let tenant = tenant::tenant_of(tenancy, env);
        return tenancy.deprovision(admin, &tenant).await.map_err(pg);
    }
    let mut conn = ENGINE.connect_admin(admin).await.map_err(pg)?;
    let dropped = ENGINE.drop_owned(&mut conn, target).await.map_err(pg);
    ENGINE.close(conn).await;
    dropped
}

/// The database (and role) name of an environment: `spec.server.databaseName`, else the name it was
/// given when created (`status.database`), else the default for its namespace and name.
pub fn database_name(env: &DatabaseEnvironment) -> String {
    env.spec
        .server
        .as_ref()
        .and_then(|s| s.database_name.clone())
        .or_else(|| env.status.as_ref().and_then(|s| s.database.clone()))
        .unwrap_or_else(|| {
            ENGINE.default_name(&env.namespace().unwrap_or_default(), &env.name_any())
        })
}

/// The server an environment's `spec.server` reaches, with what it may do there: a DatabaseServer
/// (`serverRef`, checked against its `allowedNamespaces`), or the namespace's own admin Secret
/// (`adminSecretRef`), which is then held with the finalizer [`IN_USE_FINALIZER`] when `hold` is set.
async fn server_access(
    env: &DatabaseEnvironment,
    ctx: &Context,
    server: &crate::api::database_environment::ServerSource,
    hold: bool,
) -> Result<super::server_access::Resolved, Error> {
    let namespace = env.namespace().unwrap_or_default();
    if let Some(server_ref) = &server.server_ref {
        return super::server_access::resolve(ctx, &server_ref.name, &namespace, env.spec.engine)
            .await;
    }
    let Some(secret_ref) = &server.admin_secret_ref else {
        return Err(Error::InvalidSpec {
            reason: "InvalidSpec",
            message: "spec.server needs serverRef or adminSecretRef".into(),
        });
    };
    let (admin, _) = references::engine_credentials(
        ctx,
        super::engine::kind(env.spec.engine),
        &namespace,
        secret_ref,
        "spec.server.adminSecretRef",
        false,
    )
    .await?;
    if hold {
        hold_admin_secret(ctx, &namespace, &secret_ref.name).await?;
    }
    Ok(super::server_access::Resolved::admin_only(admin))
}

/// Finalizer on a namespace's admin Secret while environments use it: deleting the namespace then
/// leaves the Secret readable until every environment has dropped its database.
pub const IN_USE_FINALIZER: &str = "lifeboat.dev/in-use";

async fn hold_admin_secret(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    references::hold_secret(ctx, namespace, name, IN_USE_FINALIZER).await
}

/// Environments whose cleanup finished in this process, so they no longer need their admin Secret even
/// while their own finalizer is still being removed. Guarded by a lock, so two environments finishing
/// at once cannot each wait for the other.
/// Keyed by (namespace, UID); entries of environments that are gone are pruned on each use.
static RELEASED: std::sync::LazyLock<
    tokio::sync::Mutex<std::collections::HashSet<(String, String)>>,
> = std::sync::LazyLock::new(Default::default);

async fn release_admin_secret(
    ctx: &Context,
    env: &DatabaseEnvironment,
    server: &crate::api::database_environment::ServerSource,
) -> Result<(), Error> {
    let Some(secret_ref) = &server.admin_secret_ref else {
        return Ok(());
    };
    let namespace = env.namespace().unwrap_or_default();
    let mut released = RELEASED.lock().await;
    let key = |e: &DatabaseEnvironment| (namespace.clone(), e.uid().unwrap_or_default());
    released.insert(key(env));
    let envs: Api<DatabaseEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = envs.list(&Default::default()).await?.items;
    let present: std::collections::HashSet<_> = listed.iter().map(key).collect();
    released.retain(|k| k.0 != namespace || present.contains(k));
    let others = listed
        .into_iter()
        .filter(|e| !released.contains(&key(e)))
        .filter(|e| {
            e.spec
                .server
                .as_ref()
                .and_then(|s| s.admin_secret_ref.as_ref())
                .is_some_and(|r| r.name == secret_ref.name)
        })
        .count();
    if others > 0 {
        return Ok(());
    }
    references::release_secret(ctx, &namespace, &secret_ref.name, IN_USE_FINALIZER).await
}
