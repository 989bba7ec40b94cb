//! Lifeboat's custom resources: API group `lifeboat.dev`, version `v1alpha1`, all with a status
//! subresource and the `lifeboat` category (`kubectl get lifeboat`). All are namespaced except
//! `DatabaseServer`, which the platform team owns.
//!
//! | kind | short names | file |
//! |---|---|---|
//! | `DatabaseEnvironment` | `dbenv` | [`database_environment`] |
//! | `MigrationRun` | `mrun`, `migrun` | [`migration_run`] |
//! | `BackupSchedule` | `bsched` | [`backup_schedule`] |
//! | `RestoreDrill` | `rdrill`, `drill` | [`restore_drill`] |
//! | `DatabaseServer` (cluster-scoped) | `dbserver` | [`database_server`] |
//!
//! # Where these types differ from the target architecture
//!
//! Decisions taken while writing the types, for `docs/architecture.md`:
//!
//! - **Durations** (`ttl`, `lockTimeout`, `statementTimeout`, `objectives.rto/rpo`) use the Go /
//!   `metav1.Duration` syntax (`90s`, `30m`, `24h`, `1h30m`), typed as `kube::core::Duration`. There
//!   is no day unit: write `168h`, not `7d`. A CEL regex rejects malformed values at admission.
//! - **Cron** fields accept five fields or the macros `@yearly`, `@monthly`, `@weekly`, `@daily`,
//!   `@hourly`. CEL checks the shape; the controller reads the expression with croner and the zone
//!   (an IANA name, default UTC) with chrono-tz as soon as it sees the object, and sets `Stalled`
//!   (`InvalidSchedule`, `InvalidTimeZone`) on values that cannot fire (`61 * * * *`, `Mars/Olympus`).
//! - **Migration source** (`MigrationRun.spec.source`, `DatabaseEnvironment.spec.migrations`) is
//!   `{configMapNames: [...]}` or `{configMapSelector: <LabelSelector>}`, exactly one; every `.sql`
//!   key of the selected ConfigMaps is a file. Several ConfigMaps get around the 1 MiB limit.
//! - **Migration versions** are integers (`i64`): sqlx, golang-migrate and dbmate all use numeric
//!   (often timestamp) versions. `targetVersion` unset: `up` applies everything pending, `down`
//!   reverts only the newest applied migration.
//! - **DatabaseEnvironment**:
//!   - `engine` defaults to `postgres` and is immutable; `redis`/`mongodb` are rejected by CEL.
//!   - `tier` is immutable, and so is the kind of provisioning source and `server.databaseName`:
//!     changing them would orphan the data (and moving production to another tier would side-step
//!     its deletion protection). A new environment is a new object.
//!   - `deletionPolicy` and `ttl` are optional; unset means the tier default (`Tier` helpers).
//!   - `allowProductionDataLoss: true` is required for `tier: production` + `deletionPolicy: Delete`.
//!   - `production` may not set `ttl` (a production database must not expire).
//!   - `ci` may use `external` (no rule): an external database is never dropped anyway.
//!   - `instance` has no `databaseName`: the database is named after the object; the connection
//!     Secret is the contract. `instance.image` defaults to the official image for `version`.
//!   - `healthCheck` also has `timeoutSeconds` and `failureThreshold`.
//!   - Status adds `serverVersion`, `seededAt` (the seed is applied once) and `schemaVersion`.
//! - **MigrationRun**:
//!   - `backupBeforeMigrate` is optional; unset means true for `production` and false otherwise,
//!     and `false` on a production environment fails the run (migrations must back up first).
//!   - `onFailure: rollback` undoes what the run itself changed (down scripts of an `up` run, up
//!     scripts of a `down` run).
//!   - Status adds `backupId` (the pre-migration backup) and richer `failure` data (`version`,
//!     `statement` index, `line`, `position`, `sqlState`, `error`).
//! - **BackupSchedule**:
//!   - `destination.s3` is the only destination; `destination` is a struct so GCS/Azure/volume can
//!     be added as siblings. `compression` defaults to `zstd`, `verify` to true.
//!   - `retention` unset keeps every backup; its counts are `>= 0`.
//!   - Status `lastSuccessfulBackup` is a full backup record (not only a time), and
//!     `lastHandledTrigger` remembers which `spec.trigger` value was already acted on.
//!     `recentBackups` holds at most 10 entries, newest first.
//! - **RestoreDrill**:
//!   - `backupScheduleRef` is required (it tells where backups are stored and with which
//!     credentials); `backupId` optionally pins one backup, else the newest successful backup is
//!     used. `backupId` together with `schedule` is rejected (a recurring drill of one fixed backup
//!     proves nothing new).
//!   - Adds `timeZone` next to `schedule`. `checks.rowCounts` defaults to true, `checks.checksums`
//!     to false (it reads every row and inflates the measured RTO).
//!   - Status adds `nextScheduleTime`; `lastRun.result` is `Passed` or `Failed`, RTO/RPO are
//!     whole seconds.
//! - **All kinds**: `status.conditions` is a list-map keyed by `type`; condition type names are
//!   constants in [`common`]. Printer columns show `Ready`, its `reason`, and `Age`.

pub mod backup_schedule;
pub mod common;
pub mod database_environment;
pub mod database_server;
pub mod migration_run;
pub mod restore_drill;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use backup_schedule::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
pub use common::{ConditionedStatus, ConfigMapSource, ConnectionSecretRef, LocalObjectReference};
pub use database_environment::{
    DatabaseEnvironment, DatabaseEnvironmentSpec, DatabaseEnvironmentStatus,
};
pub use database_server::{DatabaseServer, DatabaseServerSpec, DatabaseServerStatus};
pub use migration_run::{MigrationRun, MigrationRunSpec, MigrationRunStatus};
pub use restore_drill::{RestoreDrill, RestoreDrillSpec, RestoreDrillStatus};

/// The API group of every Lifeboat resource.
pub const GROUP: &str = "lifeboat.dev";
/// The API version of every Lifeboat resource.
pub const VERSION: &str = "v1alpha1";

/// The CustomResourceDefinitions of all five kinds, always in the same order (DatabaseEnvironment,
/// MigrationRun, BackupSchedule, RestoreDrill, DatabaseServer), so generated YAML is stable.
///
/// Use this rather than `Kind::crd()`: it also re-flows the descriptions (see
/// [`reflow_descriptions`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        DatabaseEnvironment::crd(),
        MigrationRun::crd(),
        BackupSchedule::crd(),
        RestoreDrill::crd(),
        DatabaseServer::crd(),
    ]
    .into_iter()
    .map(reflow_descriptions)
    .collect()
}

/// Joins the lines of each paragraph of every schema description.
///
/// Doc comments are wrapped at the source's line width, and schemars keeps those line breaks;
/// `kubectl explain` would print them as ragged lines. Blank-line paragraph breaks are kept.
fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(node: &mut serde_json::Value) {
        match node {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match value {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = reflow(text)
                        }
                        _ => walk(value),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    walk(&mut value);
    serde_json::from_value(value).expect("re-flowing descriptions keeps the CRD valid")
}

fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.lines().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Helpers for the per-kind CRD tests: read the generated schema and check it against the rules
/// every Lifeboat CRD must follow.
#[cfg(test)]
pub(crate) mod test_support {
    use super::CustomResourceDefinition;
    use serde_json::Value;

    /// The `openAPIV3Schema` of the only version, as JSON.
    pub(crate) fn schema(crd: &CustomResourceDefinition) -> Value {
        let version = &crd.spec.versions[0];
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema.expect("derived CRDs have a schema")).unwrap()
    }

    /// Every `(rule, message)` pair anywhere in the schema.
    pub(crate) fn rules(crd: &CustomResourceDefinition) -> Vec<(String, String)> {
        fn walk(node: &Value, out: &mut Vec<(String, String)>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                        for rule in rules {
                            let text = |k: &str| rule[k].as_str().unwrap_or_default().to_owned();
                            out.push((text("rule"), text("message")));
                        }
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&schema(crd), &mut out);
        out
    }

    /// Asserts the short names, the `lifeboat` category and status subresource (the scope is each
    /// kind's own test).
    pub(crate) fn assert_names(crd: &CustomResourceDefinition, short_names: &[&str]) {
        assert_eq!(crd.spec.group, super::GROUP);
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap_or_default(),
            short_names
        );
        assert_eq!(
            crd.spec.names.categories.clone().unwrap_or_default(),
            ["lifeboat"]
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, super::VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    /// Asserts the printer columns, in order.
    pub(crate) fn assert_columns(crd: &CustomResourceDefinition, names: &[&str]) {
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        let actual: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(actual, names);
        let ready = columns
            .iter()
            .find(|c| c.name == "Ready")
            .expect("a Ready column");
        assert_eq!(
            ready.json_path,
            r#".status.conditions[?(@.type=="Ready")].status"#
        );
    }

    /// Asserts the schema is structural in the ways kube's derive can get wrong: no `$ref`, no
    /// `anyOf`/`oneOf`/`allOf`, no `additionalProperties: false`, and a `type` on every node
    /// (except int-or-string and preserve-unknown-fields nodes).
    pub(crate) fn assert_structural(node: &Value) {
        fn walk(node: &Value, path: &str) {
            let Value::Object(map) = node else { return };
            for keyword in [
                "$ref",
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "definitions",
                "$defs",
            ] {
                assert!(!map.contains_key(keyword), "{path} uses {keyword}");
            }
            let free = map.contains_key("x-kubernetes-int-or-string")
                || map.contains_key("x-kubernetes-preserve-unknown-fields");
            assert!(
                free || map.get("type").is_some_and(Value::is_string),
                "{path} has no single type"
            );
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    walk(prop, &format!("{path}.{name}"));
                }
            }
            if let Some(items) = map.get("items") {
                walk(items, &format!("{path}[]"));
            }
            if let Some(extra) = map.get("additionalProperties") {
                assert!(
                    extra.is_object(),
                    "{path} has additionalProperties: {extra}"
                );
                walk(extra, &format!("{path}{{}}"));
            }
        }
        walk(node, "");
    }

    /// Asserts every property has a non-empty description (they are `kubectl explain`'s text).
    pub(crate) fn assert_all_described(node: &Value) {
        fn walk(node: &Value, path: &str) {
            let Value::Object(map) = node else { return };
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    let path = format!("{path}.{name}");
                    let description = prop
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    assert!(!description.trim().is_empty(), "{path} has no description");
                    walk(prop, &path);
                }
            }
            if let Some(items) = map.get("items") {
                walk(items, &format!("{path}[]"));
            }
            if let Some(extra) = map.get("additionalProperties") {
                walk(extra, &format!("{path}{{}}"));
            }
        }
        walk(node, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_reflowed_into_paragraphs() {
        assert_eq!(
            reflow("one\ntwo\n\n\tthree\nfour"),
            "one two\n\n\tthree four"
        );
        let crd = crds().remove(0);
        let text = serde_json::to_string(&test_support::schema(&crd)).unwrap();
        // Every remaining line break is a paragraph break.
        assert!(
            !text.replace("\\n\\n", "").contains("\\n"),
            "a description keeps a line break"
        );
        let spec = &test_support::schema(&crd)["properties"]["spec"]["properties"];
        assert!(
            spec["tier"]["description"]
                .as_str()
                .unwrap()
                .contains("is ephemeral (no volume")
        );
    }

    #[test]
    fn crds_come_in_a_fixed_order_in_one_group() {
        let crds = crds();
        let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
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
        assert!(crds.iter().all(|c| c.spec.group == GROUP));
    }
}
