//! Every Lifeboat object in `examples/` (all folders) is sent to the real API server as a server-side
//! dry run with strict field validation, in a namespace of the test's: a field the CRDs do not know, a
//! wrong type or a value CEL refuses fails here rather than in a user's first `kubectl apply`.

mod support;

use std::path::{Path, PathBuf};

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective},
};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_lifeboat_example_passes_the_api_servers_checks() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "examples").await;
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut files,
    );
    files.sort();
    let mut checked = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap(),
            )
            .unwrap();
            let Some(api_version) = value["apiVersion"].as_str() else {
                continue; // pipeline files are not Kubernetes objects
            };
            if !api_version.starts_with("lifeboat.dev/") {
                continue;
            }
            let kind = value["kind"].as_str().unwrap().to_string();
            let mut obj: DynamicObject = serde_json::from_value(value).unwrap();
            let gvk = GroupVersionKind::gvk("lifeboat.dev", "v1alpha1", &kind);
            let ar = ApiResource::from_gvk(&gvk);
            let api: Api<DynamicObject> = if kind == "DatabaseServer" {
                Api::all_with(client.clone(), &ar)
            } else {
                obj.metadata.namespace = Some(ns.name.clone());
                Api::namespaced_with(client.clone(), &ns.name, &ar)
            };
            // A name for the ones that have only generateName (MigrationRuns).
            if obj.metadata.name.is_none() {
                let prefix = obj.metadata.generate_name.take().unwrap_or_default();
                obj.metadata.name = Some(format!("{prefix}example"));
            }
            let name = obj.metadata.name.clone().unwrap();
            // Strict: an unknown field is an error, not a warning.
            let params = PatchParams::apply("lifeboat-examples-test")
                .dry_run()
                .validation(ValidationDirective::Strict);
            let result = api.patch(&name, &params, &Patch::Apply(&obj)).await;
            let file = file
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap()
                .display()
                .to_string();
            if let Err(e) = result {
                panic!("{file}: {kind} {name} refused by the API server: {e}");
            }
            checked.push(format!("{file}: {kind}"));
        }
    }
    // Every kind appears at least once, so the test cannot pass by reading nothing.
    for kind in [
        "DatabaseEnvironment",
        "MigrationRun",
        "BackupSchedule",
        "RestoreDrill",
        "DatabaseServer",
    ] {
        assert!(
            checked.iter().any(|c| c.ends_with(&format!(": {kind}"))),
            "no {kind} example was checked: {checked:#?}"
        );
    }
    ns.cleanup().await;
}
