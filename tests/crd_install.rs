//! The CRDs installed the way users install them (`kubectl apply -f crds/`, which reads YAML 1.1 as
//! Helm and most GitOps tools do; `kubectl apply -k crds/`; the chart's `crds/`) keep every enum value
//! a string: `off` must not become `false`.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::Value;

/// Every enum value in a schema, with its path.
fn enums(schema: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        for v in values {
            out.push((path.to_string(), v.clone()));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            enums(v, &format!("{path}.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = schema.get(key) {
            enums(v, &format!("{path}[]"), out);
        }
    }
}

#[tokio::test]
async fn kubectl_apply_of_crds_keeps_enum_values_strings() {
    let _platform = require_platform!();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
    let out = tokio::process::Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "lifeboat-tests",
            "-f",
            dir,
        ])
        .output()
        .await
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "kubectl apply -f crds/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = support::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut checked = 0;
    for crd in lifeboat::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let stored = serde_json::to_value(crds.get(&name).await.unwrap()).unwrap();
        let mut found = Vec::new();
        for version in stored["spec"]["versions"].as_array().unwrap() {
            enums(&version["schema"]["openAPIV3Schema"], &name, &mut found);
        }
        for (path, value) in found {
            assert!(
                value.is_string() || value.is_null(),
                "{path}: enum value {value} is not a string"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} enum values found");
}

/// Every enum value of the CRD objects a `kubectl apply … -o json` printed.
fn enums_of_printed(json: &[u8], out: &mut Vec<(String, Value)>) -> usize {
    let printed: Value = serde_json::from_slice(json).expect("kubectl -o json prints JSON");
    let items = match printed.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![printed],
    };
    for item in &items {
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for version in item["spec"]["versions"].as_array().into_iter().flatten() {
            enums(&version["schema"]["openAPIV3Schema"], &name, out);
        }
    }
    items.len()
}

/// `kubectl apply -k crds/` and `kubectl apply -f charts/lifeboat/crds/` (what `helm install` reads),
/// each as the API server would store it (a server-side dry run), keep enum values strings.
#[tokio::test]
async fn kustomize_and_the_charts_crds_keep_enum_values_strings() {
    let _platform = require_platform!();
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        vec!["-k".to_string(), format!("{root}/crds/")],
        vec!["-f".to_string(), format!("{root}/charts/lifeboat/crds/")],
    ] {
        let out = tokio::process::Command::new("kubectl")
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "lifeboat-tests",
                "--dry-run=server",
                "-o",
                "json",
            ])
            .args(&args)
            .output()
            .await
            .expect("kubectl on PATH");
        assert!(
            out.status.success(),
            "kubectl apply {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found = Vec::new();
        let objects = enums_of_printed(&out.stdout, &mut found);
        assert_eq!(objects, lifeboat::api::crds().len(), "{args:?}: every CRD");
        assert!(
            found.len() > 10,
            "{args:?}: only {} enum values",
            found.len()
        );
        for (path, value) in found {
            // null: an optional enum field (nullable), as schemars writes it.
            assert!(
                value.is_string() || value.is_null(),
                "{args:?}: {path}: enum value {value} is not a string"
            );
        }
    }
}
