//! `target.instance`: the drill restores into a dedicated server of its own, started for it as a
//! `ci` DatabaseEnvironment with the `instance` source (the same StatefulSet, Service, superuser
//! Secret, readiness gating and cleanup as any instance environment; an emptyDir of the asked size for
//! its data). The environment is named from the drill's UID, owned by the drill (so the garbage
//! collector removes it if the drill goes without its finalizer) and expires after a day at most. The
//! dump is restored as the environment's own role into its database, as for `target.server` into a
//! scratch database. The RTO includes starting the server: that is what recovery onto a new server
//! takes.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::wait::await_condition,
};
use serde_json::json;

use crate::{
    api::{
        DatabaseEnvironment, RestoreDrill, common::ConnectionSecretRef,
        database_environment::InstanceSource,
    },
    controllers::{Context, FIELD_MANAGER, conditions, references},
    engines::ServerCredentials,
};

/// How long the drill waits for its instance to be Ready (image pull, initdb, first start).
pub const START_TIMEOUT: Duration = Duration::from_secs(600);
/// Label on a scratch environment naming its drill.
pub const DRILL_LABEL: &str = "lifeboat.dev/restore-drill";

/// The drill's own environment, as the task needs it.
#[derive(Clone, Debug)]
pub struct ScratchEnvironment {
    pub namespace: String,
    pub name: String,
    pub drill: String,
    pub owner: OwnerReference,
    pub instance: InstanceSource,
}

/// The name of a drill's scratch environment: one per drill, from its UID.
pub fn name(drill_uid: &str) -> String {
    format!(
        "lifeboat-drill-{}",
        &crate::domain::digest::sha256_hex(drill_uid.as_bytes())[..16]
    )
}

impl ScratchEnvironment {
    pub fn for_drill(drill: &RestoreDrill, instance: &InstanceSource) -> Self {
        Self {
            namespace: drill.namespace().unwrap_or_default(),
            name: name(&drill.uid().unwrap_or_default()),
            drill: drill.name_any(),
            owner: drill.controller_owner_ref(&()).unwrap_or_default(),
            instance: instance.clone(),
        }
    }

    fn api(&self, ctx: &Context) -> Api<DatabaseEnvironment> {
        Api::namespaced(ctx.client.clone(), &self.namespace)
    }

    /// Starts the instance fresh (removing what an interrupted run left) and waits until it is Ready;
    /// returns its role's credentials and database. Errors are sentences.
    pub async fn start(&self, ctx: &Context) -> Result<(ServerCredentials, String), String> {
        self.remove(ctx).await?;
        let env = json!({
            "apiVersion": "lifeboat.dev/v1alpha1",
            "kind": "DatabaseEnvironment",
            "metadata": {
                "name": self.name,
                "labels": {DRILL_LABEL: self.drill},
                "ownerReferences": [self.owner],
            },
            "spec": {
                "tier": "ci",
                "ttl": "24h",
                "deletionPolicy": "Delete",
                "instance": self.instance,
            }
        });
        self.api(ctx)
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(env),
            )
            .await
            .map_err(|e| {
                format!(
                    "creating the drill's instance (DatabaseEnvironment {}): {e}",
                    self.name
                )
            })?;
        let settled = |env: Option<&DatabaseEnvironment>| {
            env.and_then(|e| e.status.as_ref()).is_some_and(|s| {
                conditions::is_ready(&s.conditions, s.observed_generation)
                    || conditions::find(&s.conditions, conditions::STALLED)
                        .is_some_and(|c| c.status == "True")
            })
        };
        let env = tokio::time::timeout(
            START_TIMEOUT,
            await_condition(self.api(ctx), &self.name, settled),
        )
        .await
        .map_err(|_| {
            format!(
                "the drill's instance (DatabaseEnvironment {}) was not Ready within {START_TIMEOUT:?}",
                self.name
            )
        })?
        .map_err(|e| format!("watching the drill's instance: {e}"))?
        .ok_or_else(|| format!("the drill's instance (DatabaseEnvironment {}) was deleted", self.name))?;
        let status = env.status.clone().unwrap_or_default();
        if let Some(stalled) =
            conditions::find(&status.conditions, conditions::STALLED).filter(|c| c.status == "True")
        {
            return Err(format!(
                "the drill's instance (DatabaseEnvironment {}) cannot start: {}: {}",
                self.name, stalled.reason, stalled.message
            ));
        }
        let secret = ConnectionSecretRef {
            name: env.connection_secret_name(),
            keys: None,
        };
        let (creds, database) = references::connection_credentials(
            ctx,
            &self.namespace,
            &secret,
            "the drill's instance",
            true,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok((creds, database.unwrap_or_default()))
    }

    /// Deletes the instance and waits until it is gone (its StatefulSet, Service and Secrets go with
    /// it); returns whether there was one.
    pub async fn remove(&self, ctx: &Context) -> Result<bool, String> {
        let api = self.api(ctx);
        let existed = match api.delete(&self.name, &DeleteParams::foreground()).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => {
                return Err(format!(
                    "deleting the drill's instance (DatabaseEnvironment {}): {e}",
                    self.name
                ));
            }
        };
        if existed {
            tokio::time::timeout(
                START_TIMEOUT,
                await_condition(api, &self.name, |e: Option<&DatabaseEnvironment>| {
                    e.is_none()
                }),
            )
            .await
            .map_err(|_| {
                format!(
                    "the drill's instance (DatabaseEnvironment {}) was not gone within {START_TIMEOUT:?}",
                    self.name
                )
            })?
            .map_err(|e| format!("watching the drill's instance go: {e}"))?;
        }
        Ok(existed)
    }
}
