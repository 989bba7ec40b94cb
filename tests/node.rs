//! Lifeboat as users install it, on the platform's real node (`e2e/platform.sh node`: containerd, runc,
//! kubelet, kube-proxy, CoreDNS): `helm install` of charts/lifeboat with the operator image built here
//! (`e2e/lib/images.sh`, imported into the node; `LIFEBOAT_OPERATOR_IMAGE` names it); the operator pod
//! becomes Ready and wins the Lease; `instance` environments start real PostgreSQL pods that reach Ready,
//! and an application pod connects through the Service with the connection Secret; a persistent tier's
//! data outlives its pod on a PersistentVolume; `deletionPolicy` decides the volume's fate; `helm upgrade`
//! rolls the operator in the middle of a migration and the new pod finishes it; `helm uninstall` leaves
//! the databases alone.
//!
//! Needs the node and the images: `e2e/test.sh` brings both up. By hand: `e2e/platform.sh up --with-node`,
//! then the image step of e2e/test.sh, then `eval "$(e2e/platform.sh env)"` and
//! `LIFEBOAT_OPERATOR_IMAGE=… cargo test --test node`.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    coordination::v1::Lease,
    core::v1::{PersistentVolume, PersistentVolumeClaim, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, LogParams, Patch, PatchParams},
};
use lifeboat::api::{
    BackupSchedule, DatabaseEnvironment, MigrationRun, RestoreDrill, backup_schedule::BackupPhase,
    migration_run::MigrationPhase, restore_drill::DrillResult,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);

/// The node's coordinates, or `None` (a skip outside CI, a failure in CI).
fn node() -> Option<String> {
    let image = std::env::var("LIFEBOAT_OPERATOR_IMAGE").ok();
    let node = std::env::var("LIFEBOAT_NODE_NAME").ok();
    match (image, node) {
        (Some(image), Some(_)) => Some(image),
        _ => {
            let how = "e2e/test.sh brings up the node (e2e/platform.sh up --with-node) and imports the images; it exports LIFEBOAT_OPERATOR_IMAGE";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and the node or the operator image is missing: {how}");
            }
            eprintln!("SKIPPED: no node or operator image: {how}");
            None
        }
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/lifeboat");

fn helm(args: &[&str]) -> String {
    run("helm", args)
}

/// The `--set` arguments of the chart with the image built here (never pulled), watching `watch`, plus
/// `extra` values.
fn chart_values(image: &str, watch: &str, extra: &[&str]) -> Vec<String> {
    let (repository, tag) = image.rsplit_once(':').expect("image with a tag");
    [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".into(),
        format!("watchNamespace={watch}"),
    ]
    .into_iter()
    .chain(extra.iter().map(|v| v.to_string()))
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

/// `helm install` of the chart into `namespace` with `values`, waiting until the operator pod is Ready.
/// Returns the release: a name of its own, as the chart's cluster-scoped objects are named after it.
fn install_chart(namespace: &str, values: &[String]) -> String {
    let release = format!("lb-{}", support::random_suffix());
    let mut install = vec![
        "install",
        &release,
        CHART,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "180s",
    ];
    install.extend(values.iter().map(String::as_str));
    helm(&install);
    release
}

/// Runs `sql` with psql in a pod of the PostgreSQL image, connected with the environment's connection
/// Secret (key `uri`), through the Service; returns what psql printed.
async fn psql_in_pod(client: &Client, ns: &str, env: &str, name: &str, sql: &str) -> String {
    let script = "exec psql \"$URL\" -v ON_ERROR_STOP=1 -tA -c \"$SQL\"";
    client_in_pod(
        client,
        ns,
        env,
        name,
        "postgres:18",
        script,
        &[("SQL", sql)],
    )
    .await
}

/// Runs `script` (sh) in a pod of `image` with the environment's connection Secret's `uri` in `$URL`
/// and `vars`; waits for it to succeed and returns what it printed.
async fn client_in_pod(
    client: &Client,
    ns: &str,
    env: &str,
    name: &str,
    image: &str,
    script: &str,
    vars: &[(&str, &str)],
) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let secret = format!("{env}-connection");
    let mut env_vars =
        vec![json!({"name": "URL", "valueFrom": {"secretKeyRef": {"name": secret, "key": "uri"}}})];
    env_vars.extend(vars.iter().map(|(k, v)| json!({"name": k, "value": v})));
    support::apply_json(client, ns, json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "app", "image": image, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "env": env_vars,
                "securityContext": {"runAsUser": 70000, "runAsNonRoot": true, "allowPrivilegeEscalation": false}
            }]
        }
    }))
    .await
    .unwrap();
    let phase = support::eventually(&format!("pod {name} to finish"), WAIT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get(name).await.ok()?;
            let phase = p.status?.phase?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        }
    })
    .await;
    let logs = pods.logs(name, &LogParams::default()).await.unwrap();
    assert_eq!(phase, "Succeeded", "{name}: {logs}");
    pods.delete(name, &DeleteParams::default()).await.unwrap();
    logs
}

/// A hostPath PersistentVolume bound in advance to the claim the StatefulSet of `env` makes, so no other
/// test's claim takes it (the platform has no provisioner). The directory belongs to uid 999 (postgres).
async fn volume_for(client: &Client, ns: &str, env: &str) -> String {
    volume_for_claim(client, ns, &format!("data-{env}-postgres-0")).await
}

/// A hostPath PersistentVolume bound in advance to the claim `claim` (see [`volume_for`]).
async fn volume_for_claim(client: &Client, ns: &str, claim: &str) -> String {
    let name = format!("lb-test-{}", support::random_suffix());
    let dir = format!("/var/lib/lifeboat-test-volumes/{name}");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(999), Some(999)).unwrap();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.patch(
        &name,
        &PatchParams::apply("lifeboat-test"),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": {"path": dir, "type": "Directory"},
                "claimRef": {"namespace": ns, "name": claim}
            }
        })),
    )
    .await
    .unwrap();
    name
}

/// The platform's PostgreSQL 18 through the node's forwarder: reachable from the host and from pods.
fn node_postgres(platform: &support::Platform) -> support::Postgres {
    support::Postgres {
        host: std::env::var("LIFEBOAT_PG_NODE_HOST").expect("LIFEBOAT_PG_NODE_HOST"),
        port: std::env::var("LIFEBOAT_PG_NODE_PORT")
            .expect("LIFEBOAT_PG_NODE_PORT")
            .parse()
            .expect("LIFEBOAT_PG_NODE_PORT is a port"),
        ..platform.pg.clone()
    }
}

async fn ready_env(envs: &Api<DatabaseEnvironment>, name: &str) -> DatabaseEnvironment {
    support::wait_for(envs, name, "Ready", WAIT, |e| {
        support::is_ready(e.status.as_ref())
    })
    .await
}

#[tokio::test]
async fn the_chart_runs_the_operator_and_instances_run_real_postgres() {
    let _platform = require_platform!();
    let Some(image) = node() else { return };
    let client = support::client().await;
    support::install_crds(&client).await;
    let op_ns = support::TestNamespace::new(&client, "chart").await;
    let app = support::TestNamespace::new(&client, "chart-app").await;
    // helm install: the operator pod becomes Ready (--wait) and wins the Lease.
    let values = chart_values(&image, &app.name, &["logLevel=info\\,lifeboat=debug"]);
    let release = install_chart(&op_ns.name, &values);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &op_ns.name);
    let operator_pod = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the operator pod");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &op_ns.name);
    let holder = support::eventually("the operator to hold the Lease", WAIT, || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("lifeboat-leader")
                .await
                .ok()??
                .spec?
                .holder_identity
        }
    })
    .await;
    assert_eq!(holder, operator_pod.name_any(), "the pod leads");

    // An `instance` environment (tier ci: emptyDir) reaches Ready with a real PostgreSQL pod, and an
    // application pod connects through the Service with the connection Secret.
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &app.name);
    let env = |name: &str, tier: &str, extra: serde_json::Value| {
        let mut spec =
            json!({"tier": tier, "instance": {"version": "18", "storage": {"size": "1Gi"}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
               "metadata": {"name": name}, "spec": spec})
    };
    support::apply_json(&client, &app.name, env("orders", "ci", json!({})))
        .await
        .unwrap();
    let orders = ready_env(&envs, "orders").await;
    let endpoint = orders.status.as_ref().unwrap().endpoint.clone().unwrap();
    assert_eq!(endpoint.host, format!("orders-postgres.{}.svc", app.name));
    let who = psql_in_pod(
        &client,
        &app.name,
        "orders",
        "app-connects",
        "select current_database() || ' ' || split_part(version(), ' ', 2)",
    )
    .await;
    let database = orders.status.as_ref().unwrap().database.clone().unwrap();
    assert!(who.starts_with(&format!("{database} 18.")), "{who}");

    // helm upgrade in the middle of a migration (30 s, longer than the operator's 15 s shutdown grace):
    // the old pod gives the run up and goes, the new one wins the Lease and finishes the run.
    support::apply_json(
        &client,
        &app.name,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "schema"},
            "data": {
                "1_slow.up.sql": "select pg_sleep(30); create table slow (id bigint primary key);",
                "1_slow.down.sql": "drop table slow;"
            }
        }),
    )
    .await
    .unwrap();
    support::apply_json(&client, &app.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "across-upgrade"},
        "spec": {"environmentRef": {"name": "orders"}, "source": {"configMapNames": ["schema"]}, "lint": "warn",
                 "lockTimeout": "60s"}
    }))
    .await
    .unwrap();
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &app.name);
    support::wait_for(&runs, "across-upgrade", "Running", WAIT, |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Running)
    })
    .await;
    let mut upgrade = vec![
        "upgrade",
        &release,
        CHART,
        "-n",
        &op_ns.name,
        "--wait",
        "--timeout",
        "180s",
        "--set",
        "podAnnotations.rolled=yes",
    ];
    upgrade.extend(values.iter().map(String::as_str));
    helm(&upgrade);
    let old_pod = operator_pod.name_any();
    support::eventually("the old operator pod to be gone", WAIT, || {
        let pods = pods.clone();
        let old_pod = old_pod.clone();
        async move { pods.get_opt(&old_pod).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let mid = runs.get("across-upgrade").await.unwrap().status.unwrap();
    assert_eq!(
        mid.phase,
        Some(MigrationPhase::Running),
        "the migration outlives the old pod: {mid:#?}"
    );
    let run = support::wait_for(&runs, "across-upgrade", "finished", WAIT, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished())
    })
    .await;
    let status = run.status.unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Succeeded), "{status:#?}");
    let new_holder = support::eventually("a new pod to hold the Lease", WAIT, || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("lifeboat-leader")
                .await
                .ok()??
                .spec?
                .holder_identity
        }
    })
    .await;
    assert_ne!(new_holder, holder, "a new pod leads after the upgrade");
    let ledger = psql_in_pod(
        &client,
        &app.name,
        "orders",
        "app-ledger",
        "select count(*) || ' ' || (select count(*) from slow) from lifeboat_schema_migrations",
    )
    .await;
    assert_eq!(ledger.trim(), "1 0", "applied once, the table exists");

    // A persistent tier on a PersistentVolume: the data outlives the pod.
    let kept_pv = volume_for(&client, &app.name, "kept").await;
    let gone_pv = volume_for(&client, &app.name, "gone").await;
    support::apply_json(
        &client,
        &app.name,
        env("kept", "dev", json!({"deletionPolicy": "Retain"})),
    )
    .await
    .unwrap();
    support::apply_json(
        &client,
        &app.name,
        env("gone", "dev", json!({"deletionPolicy": "Delete"})),
    )
    .await
    .unwrap();
    ready_env(&envs, "kept").await;
    ready_env(&envs, "gone").await;
    psql_in_pod(
        &client,
        &app.name,
        "kept",
        "app-writes",
        "create table notes (body text); insert into notes values ('still here')",
    )
    .await;
    let app_pods: Api<Pod> = Api::namespaced(client.clone(), &app.name);
    let first = app_pods.get("kept-postgres-0").await.unwrap().uid();
    app_pods
        .delete("kept-postgres-0", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually("a new PostgreSQL pod, Ready", WAIT, || {
        let app_pods = app_pods.clone();
        let first = first.clone();
        async move {
            let p = app_pods.get_opt("kept-postgres-0").await.ok()??;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.uid() != first && ready).then_some(())
        }
    })
    .await;
    ready_env(&envs, "kept").await;
    let read = psql_in_pod(
        &client,
        &app.name,
        "kept",
        "app-reads",
        "select body from notes",
    )
    .await;
    assert_eq!(read.trim(), "still here");

    // deletionPolicy: Retain keeps the claim (and so the volume's data), Delete removes it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &app.name);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &app.name);
    for name in ["kept", "gone"] {
        envs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["kept", "gone"] {
        let sts = format!("{name}-postgres");
        support::eventually(&format!("StatefulSet {sts} to be gone"), WAIT, || {
            let sets = sets.clone();
            let sts = sts.clone();
            async move { sets.get_opt(&sts).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
    support::eventually("the Delete environment's claim to be gone", WAIT, || {
        let claims = claims.clone();
        async move {
            claims
                .get_opt("data-gone-postgres-0")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        claims
            .get_opt("data-kept-postgres-0")
            .await
            .unwrap()
            .is_some(),
        "deletionPolicy Retain keeps the claim"
    );

    // helm uninstall removes the operator, never the databases it made.
    helm(&[
        "uninstall",
        &release,
        "-n",
        &op_ns.name,
        "--wait",
        "--timeout",
        "120s",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &op_ns.name);
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(envs.get_opt("orders").await.unwrap().is_some());
    assert!(sets.get_opt("orders-postgres").await.unwrap().is_some());
    let still = psql_in_pod(
        &client,
        &app.name,
        "orders",
        "app-after-uninstall",
        "select count(*) from slow",
    )
    .await;
    assert_eq!(still.trim(), "0", "the database still answers");

    // Clean up without an operator: the environment's finalizer is lifted by hand.
    envs.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for pv in [kept_pv, gone_pv] {
        let _ = volumes.delete(&pv, &DeleteParams::default()).await;
        let _ = std::fs::remove_dir_all(format!("/var/lib/lifeboat-test-volumes/{pv}"));
    }
    app.cleanup().await;
    op_ns.cleanup().await;
}

/// MigrationRun's container runner: the team's tool (here psql in the PostgreSQL image, over the mounted
/// files) runs as a Job with the connection injected while Lifeboat holds the migration lock; exit 0 is
/// Succeeded; a failing tool is Failed with its exit code and log, the password masked.
#[tokio::test]
async fn a_container_runner_migrates_under_the_lock() {
    let platform = require_platform!();
    if node().is_none() {
        return;
    }
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "runner").await;
    // The platform's PostgreSQL through the node's forwarder: reachable from the host and from pods.
    let reachable = node_postgres(&platform);
    support::create_admin_secret(&client, &ns.name, "pg-admin", &reachable, json!({})).await;
    let op = support::start_operator(&client, support::settings(&ns.name, "op"));
    support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "app"},
        "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}}}
    }))
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let env = ready_env(&envs, "app").await;
    let database = env.status.unwrap().database.unwrap();
    let locks = || async {
        let mut c = support::admin_conn(&platform.pg, "postgres").await;
        sqlx::query_scalar::<_, i64>("select count(*) from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = $1")
            .bind(&database)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };

    let script = "sleep 3; for f in /migrations/*.sql; do echo \"applying $f\"; psql -v ON_ERROR_STOP=1 -q -f \"$f\" || exit 4; done";
    let cm = |name: &str, files: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": files});
    let run = |name: &str, source: &str, script: &str| {
        json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": name},
            "spec": {"environmentRef": {"name": "app"}, "source": {"configMapNames": [source]},
                     "runner": {"image": "postgres:18", "command": ["sh", "-c", script], "timeout": "2m"}}
        })
    };
    support::apply_json(&client, &ns.name, cm("schema", json!({
        "V1__users.sql": "create table users (id bigint primary key, name text);",
        "V2__orders.sql": "create table orders (id bigint primary key, user_id bigint references users);"
    })))
    .await
    .unwrap();
    support::apply_json(&client, &ns.name, run("tool", "schema", script))
        .await
        .unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns.name);
    support::eventually("the runner's Job, with the lock held", WAIT, || {
        let jobs = jobs.clone();
        async move {
            let running = !jobs.list(&Default::default()).await.ok()?.items.is_empty();
            (running && locks().await == 1).then_some(())
        }
    })
    .await;
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns.name);
    let finished = |name: &'static str| {
        let runs = runs.clone();
        async move {
            support::wait_for(&runs, name, "finished", WAIT, |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_finished())
            })
            .await
            .status
            .unwrap()
        }
    };
    let ok = finished("tool").await;
    assert_eq!(ok.phase, Some(MigrationPhase::Succeeded), "{ok:#?}");
    let (_, reason, message) = support::condition(Some(&ok), "Ready").unwrap();
    assert_eq!(reason, "Succeeded");
    assert!(
        message.contains("exited 0") && message.contains("applying /migrations/V2__orders.sql"),
        "{message}"
    );
    let mut c = support::admin_conn(&platform.pg, &database).await;
    let tables: i64 = sqlx::query_scalar("select count(*) from pg_tables where schemaname = 'public' and tablename in ('users', 'orders')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(tables, 2, "the tool migrated the database");
    assert_eq!(locks().await, 0, "the lock is released");

    // A failing tool that prints its connection string: Failed, exit code and log, password masked.
    support::apply_json(
        &client,
        &ns.name,
        cm(
            "broken",
            json!({"V3__bad.sql": "insert into nowhere values (1);"}),
        ),
    )
    .await
    .unwrap();
    let leaky = format!("echo \"url: $DATABASE_URL password: $PGPASSWORD\"; {script}");
    support::apply_json(&client, &ns.name, run("broken", "broken", &leaky))
        .await
        .unwrap();
    let failed = finished("broken").await;
    assert_eq!(failed.phase, Some(MigrationPhase::Failed), "{failed:#?}");
    let (_, reason, message) = support::condition(Some(&failed), "Stalled").unwrap();
    assert_eq!(reason, "RunnerFailed");
    assert!(
        message.contains("exited 4") && message.contains("relation \"nowhere\" does not exist"),
        "{message}"
    );
    assert!(message.contains("url: *** password: ***"), "{message}");
    let everything = serde_json::to_string(&runs.get("broken").await.unwrap()).unwrap();
    let connection =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns.name)
            .get("app-connection")
            .await
            .unwrap();
    let secret = String::from_utf8(connection.data.unwrap()["password"].0.clone()).unwrap();
    assert!(
        !everything.contains(&secret),
        "the password never reaches status"
    );
    assert_eq!(locks().await, 0);

    // The API server refuses what the container runner does not do.
    let refused = support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "down"},
        "spec": {"environmentRef": {"name": "app"}, "source": {"configMapNames": ["schema"]}, "direction": "down",
                 "runner": {"image": "postgres:18"}}
    }))
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("spec.runner runs your tool's own migrate command"),
        "{refused}"
    );
    op.stop().await.unwrap();
    ns.cleanup().await;
}

/// The README's "Install on a cluster" scenario, as a new user does it: install the chart, register the
/// shared server, `lifeboat ci up` a migrations folder, connect with psql using the printed variables,
/// `lifeboat ci down`, and the database and its role are gone. (The test adds what its surroundings need:
/// the locally built image, a watch limited to its namespace, unique names.)
#[tokio::test]
async fn the_readme_scenario_works_as_written() {
    let platform = require_platform!();
    let Some(image) = node() else { return };
    let client = support::client().await;
    support::install_crds(&client).await;
    let system = support::TestNamespace::new(&client, "lifeboat-system").await;
    let ci = support::TestNamespace::new(&client, "ci").await;
    let server = format!("shared-pg-{}", support::random_suffix());
    // helm install lifeboat charts/lifeboat -n lifeboat-system --create-namespace
    let release = install_chart(&system.name, &chart_values(&image, &ci.name, &[]));
    // kubectl -n lifeboat-system create secret generic shared-pg-admin --from-literal=host=… …
    let reachable = node_postgres(&platform);
    support::create_admin_secret(
        &client,
        &system.name,
        "shared-pg-admin",
        &reachable,
        json!({}),
    )
    .await;
    // kubectl label namespace ci lifeboat.dev/tenant=true; kubectl apply -f database-server.yaml
    run(
        "kubectl",
        &["label", "namespace", &ci.name, "lifeboat.dev/tenant=true"],
    );
    support::apply_json(&client, "", json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseServer", "metadata": {"name": server},
        "spec": {"adminSecretRef": {"name": "shared-pg-admin"},
                 "allowedNamespaces": {"matchLabels": {"lifeboat.dev/tenant": "true"}},
                 "tls": {"mode": "require"}}
    }))
    .await
    .unwrap();
    // A migrations folder, as a repository has it.
    let dir = tempfile::tempdir().unwrap();
    for (file, sql) in [
        (
            "20250101000000_customers.up.sql",
            "create table customers (id bigint primary key, name text not null);",
        ),
        ("20250101000000_customers.down.sql", "drop table customers;"),
        (
            "20250102000000_orders.up.sql",
            "create table orders (id bigint primary key, customer_id bigint not null references customers);",
        ),
        ("20250102000000_orders.down.sql", "drop table orders;"),
    ] {
        std::fs::write(dir.path().join(file), sql).unwrap();
    }
    let folder = dir.path().to_str().unwrap();
    // eval "$(lifeboat ci up --name pr-123 --migrations ./migrations --server shared-pg --namespace ci --wait)"
    let bin = env!("CARGO_BIN_EXE_lifeboat");
    let up = run(
        bin,
        &[
            "ci",
            "up",
            "--name",
            "pr-123",
            "--migrations",
            folder,
            "--server",
            &server,
            "--namespace",
            &ci.name,
            "--wait",
            "--timeout",
            "3m",
            "--output",
            "env",
        ],
    );
    let vars: Vec<(String, String)> = up
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} in {up}"))
    };
    // psql -c '…' with the printed variables. Debian's psql 15 (built with TLS; the platform's PyPI psql 18
    // has none, and the server asks for `require`).
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-XAtc",
            "select count(*) from pg_tables where tablename in ('customers', 'orders')",
        ])
        .env_clear()
        .envs(vars.iter().filter(|(k, _)| k.starts_with("PG")).cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let (database, role) = (get("PGDATABASE"), get("PGUSER"));
    // lifeboat ci down --name pr-123 --namespace ci
    run(
        bin,
        &["ci", "down", "--name", "pr-123", "--namespace", &ci.name],
    );
    support::eventually("the database and its role to be gone", WAIT, || {
        let (database, role) = (database.clone(), role.clone());
        let pg = platform.pg.clone();
        async move {
            let mut c = support::admin_conn(&pg, "postgres").await;
            let left: i64 = sqlx::query_scalar(
                "select (select count(*) from pg_database where datname = $1) + (select count(*) from pg_roles where rolname = $2)",
            )
            .bind(&database)
            .bind(&role)
            .fetch_one(&mut c)
            .await
            .unwrap();
            (left == 0).then_some(())
        }
    })
    .await;
    helm(&[
        "uninstall",
        &release,
        "-n",
        &system.name,
        "--wait",
        "--timeout",
        "120s",
    ]);
    run(
        "kubectl",
        &["delete", "databaseserver", &server, "--wait=false"],
    );
    ci.cleanup().await;
    system.cleanup().await;
}

/// A RestoreDrill with `target.instance`, on real pods: the operator in its pod backs a shared-server
/// environment up to S3 (both reached through the node's forwarders), then restores the backup into a
/// PostgreSQL pod it starts for the drill (a `ci` DatabaseEnvironment the drill owns), checks row counts
/// and checksums, measures the RTO with the server's start in it, and removes the instance afterwards.
#[tokio::test]
async fn a_drill_restores_into_an_instance_of_its_own() {
    let platform = require_platform!();
    let Some(image) = node() else { return };
    let client = support::client().await;
    support::install_crds(&client).await;
    let op_ns = support::TestNamespace::new(&client, "drill-op").await;
    let app = support::TestNamespace::new(&client, "drill-app").await;
    let release = install_chart(
        &op_ns.name,
        &chart_values(&image, &app.name, &["spool.sizeLimit=1Gi"]),
    );
    support::create_admin_secret(
        &client,
        &app.name,
        "pg-admin",
        &node_postgres(&platform),
        json!({}),
    )
    .await;
    let s3 = &platform.s3;
    support::apply_json(
        &client,
        &app.name,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-seed"},
            "data": {"seed.sql": support::backups::SEED}
        }),
    )
    .await
    .unwrap();
    support::apply_json(&client, &app.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "shop"},
        "spec": {"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}},
                 "seed": {"configMapRef": {"name": "shop-seed"}}}
    }))
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &app.name);
    ready_env(&envs, "shop").await;
    let backup = back_up_now(&client, &app.name, "shop", s3).await;

    support::apply_json(&client, &app.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill", "metadata": {"name": "on-instance"},
        "spec": {"backupScheduleRef": {"name": "nightly"}, "jobs": 2,
                 "target": {"instance": {"version": "18", "storage": {"size": "1Gi"}}},
                 "checks": {"rowCounts": true, "checksums": true, "queries": [
                     {"name": "customers", "sql": "select count(*) from customers", "expected": "3000"}]}}
    }))
    .await
    .unwrap();
    let drills: Api<RestoreDrill> = Api::namespaced(client.clone(), &app.name);
    let drill = support::wait_for(&drills, "on-instance", "a finished drill", WAIT, |d| {
        d.status.as_ref().is_some_and(|s| s.last_run.is_some())
    })
    .await;
    let run = drill.status.clone().unwrap().last_run.unwrap();
    assert_eq!(run.result, DrillResult::Passed, "{run:#?}");
    assert_eq!(run.backup_id, backup.id);
    assert!(
        run.checks.iter().all(|c| c.passed) && run.checks.len() == 3,
        "{run:#?}"
    );
    let method = run.restore_method.clone().unwrap_or_default();
    assert!(method.ends_with("with 2 parallel jobs"), "{method}");
    assert!(run.rto_seconds.unwrap() >= run.restore_seconds.unwrap());
    // The drill's instance is gone: its environment, and with it the StatefulSet and its pod.
    let scratch = lifeboat::controllers::restore_drill::instance::name(&drill.uid().unwrap());
    support::eventually("the drill's instance to be gone", WAIT, || {
        let (envs, sets) = (
            envs.clone(),
            Api::<StatefulSet>::namespaced(client.clone(), &app.name),
        );
        let scratch = scratch.clone();
        async move {
            let env = envs.get_opt(&scratch).await.ok()?;
            let sets = sets.list(&Default::default()).await.ok()?;
            (env.is_none() && sets.items.is_empty()).then_some(())
        }
    })
    .await;
    helm(&["uninstall", &release, "-n", &op_ns.name, "--wait"]);
}

/// A BackupSchedule `nightly` of environment `env`, with its S3 credentials in the Secret `s3` (S3
/// reached through the node's forwarder), that backs up now and never by itself; waits for that backup,
/// which must succeed.
async fn back_up_now(
    client: &Client,
    ns: &str,
    env: &str,
    s3: &support::S3,
) -> lifeboat::api::backup_schedule::BackupRecord {
    let s3_endpoint =
        std::env::var("LIFEBOAT_S3_NODE_ENDPOINT").expect("LIFEBOAT_S3_NODE_ENDPOINT");
    support::apply_json(
        client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
            "stringData": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
        }),
    )
    .await
    .unwrap();
    support::apply_json(client, ns, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": "nightly"},
        "spec": {"environmentRef": {"name": env}, "schedule": "0 0 1 1 *", "trigger": "now",
                 "tableChecks": "checksums",
                 "destination": {"s3": {"bucket": s3.bucket, "endpoint": s3_endpoint, "region": s3.region,
                                        "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}}}}
    }))
    .await
    .unwrap();
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), ns);
    let schedule = support::wait_for(&schedules, "nightly", "a backup", WAIT, |s| {
        s.status
            .as_ref()
            .and_then(|s| s.recent_backups.first())
            .is_some_and(|r| r.phase != BackupPhase::Running)
    })
    .await;
    let backup = schedule.status.unwrap().recent_backups[0].clone();
    assert_eq!(backup.phase, BackupPhase::Succeeded, "{backup:#?}");
    backup
}

/// Runs `redis-cli` with `args` in a pod of the Redis image, connected with the environment's connection
/// Secret (key `uri`) through the Service; returns what it printed.
async fn redis_cli_in_pod(client: &Client, ns: &str, env: &str, name: &str, args: &str) -> String {
    let script = format!("exec redis-cli -u \"$URL\" --no-auth-warning {args}");
    client_in_pod(client, ns, env, name, "redis:7", &script, &[]).await
}

/// A `dev` Redis instance runs redis-server from the node's `redis:7` image with its password, an
/// append-only file on its claim and its memory limit; an application pod writes through the Service
/// with the connection Secret; the key survives the pod's deletion.
#[tokio::test]
async fn a_redis_dev_instance_keeps_its_keys_through_a_pod_deletion() {
    let platform = require_platform!();
    let Some(image) = node() else { return };
    let client = support::client().await;
    support::install_crds(&client).await;
    let op_ns = support::TestNamespace::new(&client, "redis-chart").await;
    let app = support::TestNamespace::new(&client, "redis-app").await;
    let release = install_chart(&op_ns.name, &chart_values(&image, &app.name, &[]));
    let pv = volume_for_claim(&client, &app.name, "data-cache-redis-0").await;
    support::apply_json(&client, &app.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "cache"},
        "spec": {"engine": "redis", "tier": "dev",
                 "instance": {"version": "7", "storage": {"size": "1Gi"}, "maxMemory": "64Mi"}}
    }))
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &app.name);
    let env = ready_env(&envs, "cache").await;
    let status = env.status.clone().unwrap();
    assert_eq!(status.cache.as_ref().unwrap().scope, "instance");
    assert_eq!(status.cache.as_ref().unwrap().max_memory_mi_b, Some(64));
    assert!(status.server_version.unwrap().starts_with("7."));
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &app.name);
    let args = sts
        .get("cache-redis")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--maxmemory-policy", "noeviction"]),
        "{args:?}"
    );

    let set = redis_cli_in_pod(
        &client,
        &app.name,
        "cache",
        "writer",
        "SET greeting kept-through-restarts",
    )
    .await;
    assert_eq!(set.trim(), "OK");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &app.name);
    let before = pods.get("cache-redis-0").await.unwrap().uid().unwrap();
    pods.delete("cache-redis-0", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually("a new Redis pod to be Ready", WAIT, || {
        let (pods, before) = (pods.clone(), before.clone());
        async move {
            let p = pods.get_opt("cache-redis-0").await.ok()??;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.uid()? != before && ready).then_some(())
        }
    })
    .await;
    let got = redis_cli_in_pod(&client, &app.name, "cache", "reader", "GET greeting").await;
    assert_eq!(
        got.trim(),
        "kept-through-restarts",
        "the key outlived its pod"
    );

    // Its backup is an RDB snapshot, read from the pod over the replication protocol by the
    // operator's pod and stored in S3 (both through the node's forwarders).
    let s3 = &platform.s3;
    let backup = back_up_now(&client, &app.name, "cache", s3).await;
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &app.name);
    let manifest = {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(format!(
            "{}/nightly/{}/manifest.json",
            app.name, backup.id
        ));
        let body = s3.store(&s3.secret_key).get(&path).await.unwrap();
        lifeboat::domain::manifest::Manifest::parse(&body.bytes().await.unwrap()).unwrap()
    };
    assert_eq!(manifest.dump.format, "redis-rdb", "{manifest:#?}");
    assert!(
        manifest
            .tables
            .iter()
            .any(|t| t.schema == "db0" && t.name == "string" && t.rows >= 1),
        "{manifest:#?}"
    );
    schedules
        .delete("nightly", &DeleteParams::default())
        .await
        .unwrap();

    envs.delete("cache", &DeleteParams::default())
        .await
        .unwrap();
    helm(&["uninstall", &release, "-n", &op_ns.name, "--wait"]);
    let _ = Api::<PersistentVolume>::all(client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
    app.cleanup().await;
    op_ns.cleanup().await;
}
