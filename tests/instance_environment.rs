//! The `instance` source's objects on the real API server and controller manager, with the operator
//! running outside the cluster: their shape, the gating while the pod starts, and garbage collection.
//! The pod running for real, the environment reaching Ready and an application connecting are in
//! tests/node.rs (the operator installed with the chart, on the platform's node).

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret, Service},
};
use kube::Api;
use lifeboat::api::DatabaseEnvironment;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn instance_objects_and_readiness_gating() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "instance").await;
    let op = support::start_operator(&client, support::settings(&ns.name, "op"));
    support::apply_json(&client, &ns.name, json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": "orders"},
        "spec": {"tier": "dev", "instance": {"version": "18", "storage": {"size": "2Gi"}}}
    }))
    .await
    .unwrap();
    let envs: Api<DatabaseEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let env = support::wait_for(&envs, "orders", "Reconciling/InstanceStarting", WAIT, |e| {
        support::has_condition(e.status.as_ref(), "Reconciling", "InstanceStarting")
    })
    .await;
    assert_eq!(
        support::condition(env.status.as_ref(), "Ready").unwrap().0,
        "False"
    );
    let instance = env
        .status
        .as_ref()
        .unwrap()
        .instance
        .clone()
        .expect("status.instance");
    assert_eq!(instance.stateful_set_name, "orders-postgres");
    assert_eq!(instance.service_name, "orders-postgres");

    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .get("orders-postgres")
        .await
        .unwrap();
    let spec = sts.spec.unwrap();
    let pod_spec = spec.template.spec.unwrap();
    assert_eq!(
        pod_spec.containers[0].image.as_deref(),
        Some("postgres:18"),
        "pinned image"
    );
    assert_eq!(
        spec.volume_claim_templates.unwrap()[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "2Gi"
    );
    assert_eq!(
        pod_spec.security_context.unwrap().run_as_non_root,
        Some(true)
    );
    assert!(
        pod_spec.containers[0].readiness_probe.is_some()
            && pod_spec.containers[0].liveness_probe.is_some()
    );
    let svc = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("orders-postgres")
        .await
        .unwrap();
    assert_eq!(
        svc.spec.unwrap().cluster_ip.as_deref(),
        Some("None"),
        "headless Service"
    );
    let superuser = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("orders-superuser")
        .await
        .unwrap();
    assert!(
        superuser.data.unwrap()["password"].0.len() >= 32,
        "generated superuser password"
    );

    // The controller manager creates the pod (on the platform's node it then runs for real).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    support::eventually("the StatefulSet's pod", WAIT, || {
        let pods = pods.clone();
        async move { pods.get_opt("orders-postgres-0").await.unwrap() }
    })
    .await;

    // Deleting the environment takes the instance with it (owner references, garbage collector).
    envs.delete("orders", &Default::default()).await.unwrap();
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns.name);
    support::eventually("the StatefulSet to be garbage-collected", WAIT, || {
        let sts_api = sts_api.clone();
        async move {
            sts_api
                .get_opt("orders-postgres")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    op.stop().await.unwrap();
    ns.cleanup().await;
}
