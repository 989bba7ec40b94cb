//! Shared pieces of the integration tests: the platform's coordinates (from `e2e/platform.sh env`),
//! a Kubernetes client, throw-away namespaces, and waiting on a condition with a deadline.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};

const START_COMMAND: &str = "e2e/platform.sh up && eval \"$(e2e/platform.sh env)\"";

/// One PostgreSQL server of the platform.
#[derive(Clone, Debug)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Postgres {
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, self.host, self.port, database
        )
    }
}

/// The S3-compatible server of the platform.
#[derive(Clone, Debug)]
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

#[derive(Clone, Debug)]
pub struct Platform {
    pub pg: Postgres,
    pub pg15: Postgres,
    pub s3: S3,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The platform, or `None` (with a message naming the command that starts it) when it is not up.
/// With `CI=true` a missing platform is a failure, never a skip.
pub fn platform() -> Option<Platform> {
    let pg = |prefix: &str| -> Option<Postgres> {
        Some(Postgres {
            host: var(&format!("{prefix}_HOST"))?,
            port: var(&format!("{prefix}_PORT"))?.parse().ok()?,
            user: var(&format!("{prefix}_USER"))?,
            password: var(&format!("{prefix}_PASSWORD"))?,
        })
    };
    let found = (|| {
        var("KUBECONFIG")?;
        Some(Platform {
            pg: pg("LIFEBOAT_PG")?,
            pg15: pg("LIFEBOAT_PG15")?,
            s3: S3 {
                endpoint: var("LIFEBOAT_S3_ENDPOINT")?,
                bucket: var("LIFEBOAT_S3_BUCKET")?,
                access_key: var("LIFEBOAT_S3_ACCESS_KEY")?,
                secret_key: var("LIFEBOAT_S3_SECRET_KEY")?,
                region: var("LIFEBOAT_S3_REGION")?,
            },
        })
    })();
    if found.is_none() {
        if var("CI").as_deref() == Some("true") {
            panic!("CI=true and the test platform is not configured; start it with: {START_COMMAND}");
        }
        eprintln!("SKIPPED: the test platform is not up; start it with: {START_COMMAND}");
    }
    found
}

/// Returns early from a test when the platform is absent (a failure under CI=true).
#[macro_export]
macro_rules! require_platform {
    () => {
        match support::platform() {
            Some(p) => p,
            None => return,
        }
    };
}

pub async fn client() -> Client {
    lifeboat::install_crypto_provider();
    Client::try_default().await.expect("a Kubernetes client from KUBECONFIG")
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// A namespace made for one test; `cleanup` deletes it.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        Self { name, client: client.clone() }
    }

    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

/// Polls `check` until it yields `Some`, failing the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn name_of<K: ResourceExt>(obj: &K) -> String {
    obj.name_any()
}
