//! One object the operator cannot read does not stop its controller. A RestoreDrill stored without
//! `spec.target` (possible under an older or looser CRD; here the CRD is loosened for a moment, then put
//! back, the way a schema change leaves old objects behind) sits beside a good drill when the operator
//! starts: a typed watch would fail every list on it and reconcile nothing, so the good drill must get
//! its status all the same.
//!
//! This binary changes the RestoreDrill CRD for a moment, so it holds this one test (test binaries run
//! one after another).

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use lifeboat::api::RestoreDrill;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_unreadable_object_does_not_stop_its_controller() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "watch").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "restoredrills.lifeboat.dev";
    let crd = crds.get(name).await.unwrap();
    let required = serde_json::to_value(&crd).unwrap()["spec"]["versions"][0]["schema"]
        ["openAPIV3Schema"]["properties"]["spec"]["required"]
        .clone();
    let at = required
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r == "target")
        .expect("target is required");
    // Loosen: spec.target no longer required (a JSON patch, under another field manager).
    let path = format!("/spec/versions/0/schema/openAPIV3Schema/properties/spec/required/{at}");
    crds.patch(
        name,
        &PatchParams::default(),
        &Patch::<()>::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": path, "value": "target"},
                {"op": "remove", "path": path}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let unreadable = json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill", "metadata": {"name": "old"},
        "spec": {"backupScheduleRef": {"name": "nightly"}}
    });
    support::eventually("the loosened CRD to take the object", WAIT, || {
        let (client, ns, object) = (client.clone(), ns.name.clone(), unreadable.clone());
        async move { support::apply_json(&client, &ns, object).await.ok() }
    })
    .await;
    // Put the CRD back: the stored object stays as it was.
    support::install_crds(&client).await;
    let drills: Api<RestoreDrill> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        drills.list(&Default::default()).await.is_err(),
        "a typed list fails on the unreadable drill (otherwise this test proves nothing)"
    );
    support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill", "metadata": {"name": "good"},
        "spec": {"backupScheduleRef": {"name": "missing"},
                 "target": {"server": {"adminSecretRef": {"name": "pg-admin"}}}}
    }))
    .await
    .unwrap();

    let op = support::start_operator(&client, support::settings(&ns.name, "op"));
    let good = support::eventually("the good drill to be reconciled", WAIT, || {
        let drills = drills.clone();
        async move {
            let d = drills.get("good").await.ok()?;
            support::condition(d.status.as_ref(), "Stalled")
                .filter(|(s, _, _)| s == "True")
                .map(|(_, reason, _)| reason)
        }
    })
    .await;
    assert_eq!(good, "BackupScheduleNotFound");
    op.stop().await.unwrap();
    ns.cleanup().await;
}
