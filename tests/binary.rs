//! The built `lifeboat` binary as a user runs it: `lifeboat crds` prints the four CRDs; `lifeboat run`
//! serves its endpoints, logs JSON, takes the Lease, reconciles, and on SIGTERM stops cleanly and
//! releases the Lease.

mod support;

use std::{process::Stdio, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lifeboat::api::MigrationRun;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn crds_subcommand_prints_every_kind() {
    let out = tokio::process::Command::new(BIN)
        .arg("crds")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            v["spec"]["names"]["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "DatabaseEnvironment",
            "MigrationRun",
            "BackupSchedule",
            "RestoreDrill",
            "DatabaseServer"
        ]
    );
}

#[tokio::test]
async fn run_logs_json_and_stops_cleanly_on_sigterm() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "binary").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "run",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .args([
            "--watch-namespace",
            &ns.name,
            "--lease-namespace",
            &ns.name,
            "--identity",
            "binary-op",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start lifeboat run");
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let logs = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    support::eventually("leading, as /metrics says", WAIT, || async move {
        support::http_get(port, "/metrics")
            .await
            .filter(|m| m.contains("lifeboat_leader 1"))
            .map(|_| ())
    })
    .await;
    // Ready (API server and CRDs) is set before the Lease is won; waited on all the same, with the
    // deadline, so a loaded machine's slow answer is not read as a failure.
    support::eventually("/readyz to answer 200", WAIT, || async move {
        support::http_get(port, "/readyz")
            .await
            .filter(|r| r.starts_with("HTTP/1.1 200"))
            .map(|_| ())
    })
    .await;
    support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "r"},
        "spec": {"environmentRef": {"name": "missing"}, "source": {"configMapNames": ["m"]}}
    }))
    .await
    .unwrap();
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns.name);
    support::wait_for(&runs, "r", "Stalled", WAIT, |r| {
        support::has_condition(r.status.as_ref(), "Stalled", "EnvironmentNotFound")
    })
    .await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let holder = leases
        .get("lifeboat-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("binary-op"));

    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let holder = leases
        .get("lifeboat-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "the Lease is released on shutdown, holder {holder:?}"
    );

    let logs = logs.await.unwrap();
    assert!(!logs.is_empty());
    for line in &logs {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("shutdown signal received")),
        "the shutdown is logged"
    );
    ns.cleanup().await;
}
