//! A schedule that passes the API server's shape check but can never fire (a minute of 61, an unknown
//! time zone) is reported `Stalled` with what to fix as soon as the controller reads it, before it
//! looks at anything else.

mod support;

use std::time::Duration;

use kube::Api;
use lifeboat::api::{BackupSchedule, RestoreDrill};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn impossible_schedules_and_unknown_time_zones_are_stalled() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "sched").await;
    let op = support::start_operator(&client, support::settings(&ns.name, "op"));
    let schedule = |name: &str, cron: &str, tz: Option<&str>| {
        let mut spec = json!({
            "environmentRef": {"name": "db"}, "schedule": cron,
            "destination": {"s3": {"bucket": "backups", "credentialsSecretRef": {"name": "s3"}}}
        });
        if let Some(tz) = tz {
            spec["timeZone"] = tz.into();
        }
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": name}, "spec": spec})
    };
    let cases = [
        (
            schedule("minute-61", "61 * * * *", None),
            "InvalidSchedule",
            "61 * * * *",
        ),
        (
            schedule("mars", "0 3 * * *", Some("Mars/Olympus")),
            "InvalidTimeZone",
            "Mars/Olympus",
        ),
    ];
    let schedules: Api<BackupSchedule> = Api::namespaced(client.clone(), &ns.name);
    for (manifest, reason, quoted) in &cases {
        support::apply_json(&client, &ns.name, manifest.clone())
            .await
            .expect("the API server accepts the shape");
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let s = support::wait_for(&schedules, name, reason, WAIT, |s: &BackupSchedule| {
            support::has_condition(s.status.as_ref(), "Stalled", reason)
        })
        .await;
        let (_, _, msg) = support::condition(s.status.as_ref(), "Stalled").unwrap();
        assert!(msg.contains(quoted), "{msg}");
    }
    support::apply_json(
        &client,
        &ns.name,
        json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill", "metadata": {"name": "drill"},
               "spec": {"backupScheduleRef": {"name": "minute-61"}, "schedule": "0 0 31 2 8",
                        "target": {"server": {"adminSecretRef": {"name": "scratch"}}}}}),
    )
    .await
    .expect("the API server accepts the shape");
    let drills: Api<RestoreDrill> = Api::namespaced(client.clone(), &ns.name);
    let d = support::wait_for(
        &drills,
        "drill",
        "InvalidSchedule",
        WAIT,
        |d: &RestoreDrill| support::has_condition(d.status.as_ref(), "Stalled", "InvalidSchedule"),
    )
    .await;
    let (_, _, msg) = support::condition(d.status.as_ref(), "Stalled").unwrap();
    assert!(msg.contains("0 0 31 2 8"), "{msg}");
    op.stop().await.unwrap();
    ns.cleanup().await;
}
