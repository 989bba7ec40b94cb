//! kstatus conformance, checked with the real library: every state a DatabaseEnvironment and a
//! MigrationRun go through on the platform (captured from a watch while the operator works: created,
//! provisioning, Ready, Stalled, a spec change the operator has not caught up with, a run pending,
//! running, succeeded, rolled back) is given to `sigs.k8s.io/cli-utils/pkg/kstatus` (e2e/kstatus, built
//! from the Go module proxy into the cache by e2e/lib/kstatus.sh), which Flux and kpt use to decide
//! whether a rollout may go on. Its answer must be the intended one: Current only when
//! `observedGeneration == generation` and Ready, InProgress while Reconciling (or not caught up),
//! Failed when Stalled, which a failed MigrationRun is.
//!
//! One known limit, shown by the test rather than hidden: an object the operator has not written any
//! status to yet is Current for kstatus (it cannot know a controller will act). docs/gitops.md gives the
//! Flux health check expression that closes that gap.

mod support;

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use futures::StreamExt as _;
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use lifeboat::api::{DatabaseEnvironment, MigrationRun};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

fn kstatus_binary() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/lib/kstatus.sh");
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("set -euo pipefail; source {script}; tool_kstatus"),
        ])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "building kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What Lifeboat means each state to be, in kstatus's words (the rule the issue states).
fn intended(obj: &Value) -> &'static str {
    let status = &obj["status"];
    if status.is_null() || status.as_object().is_some_and(|s| s.is_empty()) {
        return "Current"; // kstatus cannot know a controller will act (see the module doc)
    }
    if status["observedGeneration"] != obj["metadata"]["generation"] {
        return "InProgress";
    }
    let is_true = |t: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if is_true("Stalled") {
        "Failed"
    } else if is_true("Reconciling") {
        "InProgress"
    } else if is_true("Ready") {
        "Current"
    } else {
        "Unexpected: neither Ready, Reconciling nor Stalled"
    }
}

fn label(obj: &Value) -> String {
    let conditions: Vec<String> = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .map(|c| {
            format!(
                "{}/{}",
                c["type"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    format!(
        "{} {} gen {} observed {} [{}] phase {}",
        obj["kind"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or(""),
        obj["metadata"]["generation"],
        obj["status"]["observedGeneration"],
        conditions.join(", "),
        obj["status"]["phase"]
    )
}

async fn capture<K>(api: Api<K>, into: tokio::sync::mpsc::UnboundedSender<Value>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(obj)) = stream.next().await {
        let mut v = serde_json::to_value(&obj).unwrap();
        v["apiVersion"] = json!("lifeboat.dev/v1alpha1");
        v["kind"] = json!(K::kind(&()));
        if into.send(v).is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn every_state_lifeboat_writes_means_the_same_to_kstatus() {
    let platform = require_platform!();
    let kstatus = kstatus_binary();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "kstatus").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let runs: Api<MigrationRun> = Api::namespaced(client.clone(), &ns.name);
    let watchers = [
        tokio::spawn(capture(envs.clone(), tx.clone())),
        tokio::spawn(capture(runs.clone(), tx.clone())),
    ];
    drop(tx);
    // Created before the operator runs: the state kstatus sees first.
    let apply = |v: Value| support::apply_json(&client, &ns.name, v);
    let env = |name: &str, extra: Value| {
        let mut spec = json!({"tier": "ci", "server": {"adminSecretRef": {"name": "pg-admin"}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment",
               "metadata": {"name": name}, "spec": spec})
    };
    support::create_admin_secret(&client, &ns.name, "pg-admin", &platform.pg, json!({})).await;
    apply(env("db", json!({}))).await.unwrap();
    // A template nobody may clone: Stalled.
    apply(env(
        "bad",
        json!({"server": {"adminSecretRef": {"name": "pg-admin"}, "template": "no_such_template"}}),
    ))
    .await
    .unwrap();
    let op = support::start_operator(&client, support::settings(&ns.name, "op-1"));
    support::wait_for(&envs, "db", "Ready", Duration::from_secs(60), |e| {
        support::is_ready(e.status.as_ref())
    })
    .await;
    support::wait_for(&envs, "bad", "Stalled", Duration::from_secs(60), |e| {
        support::condition(e.status.as_ref(), "Stalled").is_some_and(|c| c.0 == "True")
    })
    .await;
    // A spec change: generation moves ahead of observedGeneration until the operator catches up.
    apply(env("db", json!({"ttl": "6h"}))).await.unwrap();
    support::wait_for(&envs, "db", "caught up", Duration::from_secs(60), |e| {
        e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
            && support::is_ready(e.status.as_ref())
    })
    .await;
    // Runs: one that succeeds, one that rolls back.
    let cm = |name: &str, files: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": files});
    apply(cm("good", json!({"1_a.up.sql": "create table a (id bigint primary key);", "1_a.down.sql": "drop table a;"}))).await.unwrap();
    apply(cm(
        "broken",
        json!({"2_b.up.sql": "insert into nowhere values (1);", "2_b.down.sql": "select 1;"}),
    ))
    .await
    .unwrap();
    for (name, source) in [("ok", "good"), ("fails", "broken")] {
        apply(json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": name},
                     "spec": {"environmentRef": {"name": "db"}, "source": {"configMapNames": [source]}}}))
            .await
            .unwrap();
        support::wait_for(&runs, name, "finished", Duration::from_secs(60), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        })
        .await;
    }
    // A run waiting for an environment that does not exist.
    apply(json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": "waits"},
                 "spec": {"environmentRef": {"name": "nowhere"}, "source": {"configMapNames": ["good"]}}}))
        .await
        .unwrap();
    support::wait_for(&runs, "waits", "a status", Duration::from_secs(30), |r| {
        r.status.is_some()
    })
    .await;
    // Collect until the watch has delivered that last state too (with a deadline, not a sleep).
    let mut states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the watch delivers the waiting run's status")
            .expect("the watches run");
        let last = v["metadata"]["name"] == "waits" && !v["status"].is_null();
        states.push(v);
        if last {
            break;
        }
    }
    for w in watchers {
        w.abort();
    }
    while let Ok(v) = rx.try_recv() {
        states.push(v);
    }
    // Every distinct state, in the order seen.
    let mut seen = BTreeSet::new();
    states.retain(|v| {
        let mut key = v.clone();
        key["metadata"] =
            json!({"name": v["metadata"]["name"], "generation": v["metadata"]["generation"]});
        if let Some(conds) = key["status"]["conditions"].as_array_mut() {
            for c in conds {
                c.as_object_mut().unwrap().remove("lastTransitionTime");
            }
        }
        seen.insert(key.to_string())
    });
    let mut child = tokio::process::Command::new(&kstatus)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for v in &states {
        stdin.write_all(format!("{v}\n").as_bytes()).await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let answers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), states.len());
    let mut kinds_of_answer = BTreeSet::new();
    let mut report = String::new();
    let mut wrong = Vec::new();
    for (v, answer) in states.iter().zip(&answers) {
        let got = answer.split('\t').next().unwrap_or("");
        let want = intended(v);
        kinds_of_answer.insert(format!("{} {got}", v["kind"].as_str().unwrap_or("")));
        report.push_str(&format!("{got:<11} {}\n", label(v)));
        if got != want {
            wrong.push(format!(
                "{} — kstatus says {answer:?}, intended {want}",
                label(v)
            ));
        }
    }
    println!("{report}");
    assert!(
        wrong.is_empty(),
        "{}\n\nall states:\n{report}",
        wrong.join("\n")
    );
    for expected in [
        "DatabaseEnvironment Current",
        "DatabaseEnvironment InProgress",
        "DatabaseEnvironment Failed",
        "MigrationRun Current",
        "MigrationRun InProgress",
        "MigrationRun Failed",
    ] {
        assert!(
            kinds_of_answer.contains(expected),
            "no state gave {expected}:\n{report}"
        );
    }
    op.stop().await.unwrap();
    ns.cleanup().await;
}
