//! Shared pieces of the integration tests: the platform's coordinates (from `e2e/platform.sh env`),
//! a Kubernetes client, throw-away namespaces, and waiting on a condition with a deadline.
// Every test binary compiles this whole module and uses part of it, so rustc would call the rest dead
// in each binary. Helpers no test uses at all are removed (checked by grepping tests/ for each `pub fn`).
#![allow(dead_code)]

pub mod backups;
pub mod capture;
mod fixture;
pub mod private_pg;
pub mod redis;

#[allow(unused_imports)] // (not every test binary uses it)
pub use fixture::Fixture;

use std::{future::Future, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};

/// A whole-number migration version (what most tests write).
pub fn v(n: i64) -> lifeboat::domain::migrations::Version {
    lifeboat::domain::migrations::Version::whole(n).expect("a version is not negative")
}

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

impl S3 {
    /// A client of the platform's bucket signing with `secret_key` (the real one: `self.secret_key`).
    pub fn store(&self, secret_key: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(secret_key)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("an S3 client for the platform")
    }
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
            panic!(
                "CI=true and the test platform is not configured; start it with: {START_COMMAND}"
            );
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
    // Operator logs in test output when asked for: LIFEBOAT_TEST_LOG=lifeboat=debug cargo test ...
    if let Ok(filter) = std::env::var("LIFEBOAT_TEST_LOG") {
        let _ = lifeboat::telemetry::init_tracing(lifeboat::telemetry::LogFormat::Text, &filter);
    }
    Client::try_default()
        .await
        .expect("a Kubernetes client from KUBECONFIG")
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
        Self {
            name,
            client: client.clone(),
        }
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

/// Installs (server-side apply) Lifeboat's CRDs and waits until they are established.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in lifeboat::api::crds() {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("lifeboat-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        lifeboat::operator::wait_for_crds(client),
    )
    .await
    .expect("CRDs established in time")
    .expect("CRDs established");
}

/// An operator instance running in this test process, watching one namespace.
pub struct RunningOperator {
    pub operator: std::sync::Arc<lifeboat::operator::Operator>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningOperator {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.operator.stop();
        tokio::time::timeout(Duration::from_secs(45), self.task)
            .await
            .expect("operator stops within 45s")
            .expect("operator task")
    }

    /// Kills the instance without any cleanup, as a crash would: in-flight work is dropped mid-way
    /// (its database connections close, so PostgreSQL rolls back open transactions) and the Lease is
    /// not released (a successor waits for it to expire).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.operator.metrics.reconcile_count(controller)
    }
}

pub fn settings(namespace: &str, identity: &str) -> lifeboat::operator::Settings {
    lifeboat::operator::Settings {
        controllers: lifeboat::controllers::Config {
            watch_namespace: Some(namespace.to_string()),
            instance: Some(identity.to_string()),
            operator_namespace: namespace.to_string(),
            ..Default::default()
        },
        metrics_addr: None,
        lease: lifeboat::operator::LeaseSettings {
            namespace: namespace.to_string(),
            name: "lifeboat-leader".into(),
            identity: identity.to_string(),
            duration: Duration::from_secs(4),
            grace: Duration::from_secs(1),
        },
    }
}

/// Starts an operator in-process that watches only `namespace` (so parallel tests do not interfere).
pub fn start_operator(client: &Client, settings: lifeboat::operator::Settings) -> RunningOperator {
    let operator = std::sync::Arc::new(lifeboat::operator::Operator::new());
    let (op, client) = (operator.clone(), client.clone());
    let task = tokio::spawn(async move { op.run(client, settings).await });
    RunningOperator { operator, task }
}

/// Waits (watching, with a deadline) until `check` holds for the named object. With
/// `LIFEBOAT_CAPTURE_DIR` set, every state it sees is offered to [`capture::observe`].
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    deadline: Duration,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let cond = move |obj: Option<&K>| obj.inspect(|o| capture::observe(*o)).is_some_and(&check);
    match tokio::time::timeout(
        deadline,
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} vanished while waiting for {what}"),
        Ok(Err(e)) => panic!("watch failed while waiting for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            last.iter().for_each(capture::observe);
            panic!(
                "timed out after {deadline:?} waiting for {name} to be {what}; last state: {last:#?}"
            )
        }
    }
}

/// The (status, reason) of a condition in a Lifeboat object's status.
pub fn condition<S: lifeboat::api::ConditionedStatus>(
    status: Option<&S>,
    type_: &str,
) -> Option<(String, String, String)> {
    lifeboat::controllers::conditions::find(status?.conditions(), type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Applies a YAML/JSON manifest of any kind with server-side apply in `namespace`.
pub async fn apply_json(
    client: &Client,
    namespace: &str,
    value: serde_json::Value,
) -> Result<kube::api::DynamicObject, kube::Error> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let api_version = value["apiVersion"].as_str().unwrap().to_string();
    let kind = value["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let name = value["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply("lifeboat-tests").force(),
        &Patch::Apply(&value),
    )
    .await
}

/// A Secret with admin credentials for a platform PostgreSQL server, as a user would create it.
pub async fn create_admin_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    pg: &Postgres,
    extra: serde_json::Value,
) {
    use k8s_openapi::api::core::v1::Secret;
    let mut data = serde_json::json!({
        "host": pg.host, "port": pg.port.to_string(), "username": pg.user, "password": pg.password
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    let secret: Secret =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "stringData": data}))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// An admin connection to a platform server's `database`.
pub async fn admin_conn(pg: &Postgres, database: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&pg.url(database))
        .await
        .expect("admin connection")
}

pub fn is_ready<S: lifeboat::api::ConditionedStatus>(status: Option<&S>) -> bool {
    condition(status, "Ready").is_some_and(|(s, _, _)| s == "True")
}

/// True when the object's condition `type_` is True with `reason`.
pub fn has_condition<S: lifeboat::api::ConditionedStatus>(
    status: Option<&S>,
    type_: &str,
    reason: &str,
) -> bool {
    condition(status, type_).is_some_and(|(s, r, _)| s == "True" && r == reason)
}

/// A plain HTTP/1.1 GET on loopback: the whole response (status line, headers, body), or `None` while
/// nothing listens on the port yet.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    Some(out)
}

/// Deletes every object of a kind in the Api's namespace and waits until they are gone (finalizers
/// included).
pub async fn delete_all<K>(api: &Api<K>, deadline: Duration)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .expect("delete collection");
    eventually("every object deleted", deadline, || async {
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The first ```` ```sh ```` block after `<!-- marker -->` in `docs/<doc>`, without the indentation of a
/// block under a list item: a runbook a test runs exactly as written.
pub fn doc_block(doc: &str, marker: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let after = text
        .split(&format!("<!-- {marker} -->"))
        .nth(1)
        .unwrap_or_else(|| panic!("the marker {marker} in {}", path.display()));
    let fence = after.find("```sh\n").expect("a sh block after the marker");
    let indent = &after[after[..fence].rfind('\n').map_or(0, |n| n + 1)..fence];
    let start = fence + "```sh\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end]
        .trim_end_matches(' ')
        .trim_end_matches('\n')
        .lines()
        .map(|l| l.strip_prefix(indent).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}
