//! A test namespace with an in-process operator watching it and the admin Secret `pg-admin` for the
//! platform's PostgreSQL 18: what most DatabaseEnvironment tests start from.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::DeleteParams};
use lifeboat::api::DatabaseEnvironment;
use serde_json::{Value, json};

use super::{Platform, RunningOperator, TestNamespace};

/// How long a fixture waits for a condition.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Fixture {
    pub platform: Platform,
    pub client: Client,
    pub ns: TestNamespace,
    pub op: Option<RunningOperator>,
    pub envs: Api<DatabaseEnvironment>,
}

impl Fixture {
    pub async fn new(platform: Platform, prefix: &str) -> Self {
        let client = super::client().await;
        super::install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let op = Some(super::start_operator(
            &client,
            super::settings(&ns.name, "op"),
        ));
        super::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
        let envs = Api::namespaced(client.clone(), &ns.name);
        Self {
            platform,
            client,
            ns,
            op,
            envs,
        }
    }

    pub async fn apply_env(&self, name: &str, spec: Value) {
        super::apply_json(
            &self.client,
            &self.ns.name,
            json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": name}, "spec": spec}),
        )
        .await
        .expect("apply DatabaseEnvironment");
    }

    pub async fn config_map(&self, name: &str, data: Value) {
        super::apply_json(
            &self.client,
            &self.ns.name,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
        )
        .await
        .expect("apply ConfigMap");
    }

    pub async fn ready(&self, name: &str) -> DatabaseEnvironment {
        super::wait_for(&self.envs, name, "Ready", WAIT, |e| {
            super::is_ready(e.status.as_ref())
        })
        .await
    }

    pub async fn condition(&self, name: &str, type_: &str, reason: &str) -> DatabaseEnvironment {
        let (t, r) = (type_.to_string(), reason.to_string());
        super::wait_for(
            &self.envs,
            name,
            &format!("{type_}/{reason}"),
            WAIT,
            move |e| super::has_condition(e.status.as_ref(), &t, &r),
        )
        .await
    }

    pub async fn connection(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .get(&format!("{name}-connection"))
            .await
            .expect("connection Secret");
        secret
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    }

    pub async fn delete_env(&self, name: &str) {
        self.envs
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        let envs = self.envs.clone();
        let name = name.to_string();
        super::eventually("the environment to be gone", WAIT, move || {
            let (envs, name) = (envs.clone(), name.clone());
            async move { envs.get_opt(&name).await.unwrap().is_none().then_some(()) }
        })
        .await;
    }

    /// The connection URI of an environment (from its connection Secret).
    pub async fn uri(&self, name: &str) -> String {
        self.connection(name).await["uri"].clone()
    }

    /// The database an environment was given (`status.database`), once it is Ready.
    pub async fn database(&self, name: &str) -> String {
        self.ready(name).await.status.unwrap().database.unwrap()
    }

    /// Every event in the namespace, as `kubectl get events -o json` prints them.
    pub async fn events(&self) -> String {
        let out = tokio::process::Command::new("kubectl")
            .args(["get", "events", "-n", &self.ns.name, "-o", "json"])
            .output()
            .await
            .expect("kubectl on PATH");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn db_name(&self, env: &str) -> String {
        lifeboat::engines::postgres::sql::default_name(&self.ns.name, env)
    }

    pub async fn finish(mut self) {
        if let Some(op) = self.op.take() {
            op.stop().await.unwrap();
        }
        self.ns.cleanup().await;
    }
}
