//! Invalid specs are rejected by the API server (CEL rules and schema in the generated CRDs) with a
//! message that says what to fix. Each row: a manifest, and a phrase the rejection must contain.

mod support;

use serde_json::{Value, json};

fn env(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "DatabaseEnvironment", "metadata": {"name": name}, "spec": spec})
}

fn server() -> Value {
    json!({"adminSecretRef": {"name": "pg-admin"}})
}

fn run(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "MigrationRun", "metadata": {"name": name}, "spec": spec})
}

fn schedule(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupSchedule", "metadata": {"name": name}, "spec": spec})
}

fn s3() -> Value {
    json!({"s3": {"bucket": "backups", "credentialsSecretRef": {"name": "s3"}}})
}

fn invalid_manifests() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "bucket name S3 would refuse",
            schedule(
                "bad-bucket",
                json!({"environmentRef": {"name": "e"}, "schedule": "0 0 * * *",
                       "destination": {"s3": {"bucket": "My_Backups", "credentialsSecretRef": {"name": "s3"}}}}),
            ),
            "bucket must be a valid S3 bucket name",
        ),
        (
            "WAL archive timeout over a minute",
            schedule(
                "slow-wal",
                json!({"environmentRef": {"name": "e"}, "schedule": "0 0 * * *", "destination": s3(),
                       "wal": {"enabled": true, "archiveTimeout": "5m"}}),
            ),
            "archiveTimeout must be whole seconds from 5s to 60s",
        ),
        (
            "bucket name with two dots",
            schedule(
                "dots-bucket",
                json!({"environmentRef": {"name": "e"}, "schedule": "0 0 * * *",
                       "destination": {"s3": {"bucket": "my..backups", "credentialsSecretRef": {"name": "s3"}}}}),
            ),
            "bucket must be a valid S3 bucket name",
        ),
        (
            "bucket name that is an IP address",
            schedule(
                "ip-bucket",
                json!({"environmentRef": {"name": "e"}, "schedule": "0 0 * * *",
                       "destination": {"s3": {"bucket": "192.168.1.1", "credentialsSecretRef": {"name": "s3"}}}}),
            ),
            "bucket must be a valid S3 bucket name",
        ),
        (
            "no provisioning source",
            env("no-source", json!({"tier": "dev"})),
            "set exactly one of spec.server, spec.instance or spec.external",
        ),
        (
            "two provisioning sources",
            env(
                "two-sources",
                json!({"tier": "dev", "server": server(), "external": {"connectionSecretRef": {"name": "x"}}}),
            ),
            "set exactly one of spec.server, spec.instance or spec.external",
        ),
        (
            "unknown tier",
            env("bad-tier", json!({"tier": "qa", "server": server()})),
            "supported values: \"dev\", \"ci\", \"staging\", \"production\"",
        ),
        (
            "engine not yet supported",
            env(
                "mongo",
                json!({"tier": "dev", "engine": "mongodb", "server": server()}),
            ),
            "engine must be postgres or redis in this release (mongodb is planned)",
        ),
        (
            "production with Delete and no opt-in",
            env(
                "prod-delete",
                json!({"tier": "production", "deletionPolicy": "Delete", "server": server()}),
            ),
            "set spec.allowProductionDataLoss: true to confirm",
        ),
        (
            "production with a TTL",
            env(
                "prod-ttl",
                json!({"tier": "production", "ttl": "24h", "server": server()}),
            ),
            "a production environment cannot expire",
        ),
        (
            "malformed TTL",
            env(
                "bad-ttl",
                json!({"tier": "ci", "ttl": "one day", "server": server()}),
            ),
            "must be a duration such as 90s, 30m, 24h or 1h30m",
        ),
        (
            "zero TTL",
            env(
                "zero-ttl",
                json!({"tier": "ci", "ttl": "0s", "server": server()}),
            ),
            "ttl must be longer than 0s",
        ),
        (
            "instance storage size that is not a quantity",
            env(
                "bad-size",
                json!({"tier": "dev", "instance": {"version": "18", "storage": {"size": "lots"}}}),
            ),
            "size must be a positive quantity",
        ),
        (
            "name too long for its connection Secret",
            env(&"n".repeat(250), json!({"tier": "dev", "server": server()})),
            "metadata.name is at most 242 characters",
        ),
        (
            "instance name too long for its StatefulSet",
            env(
                &"i".repeat(60),
                json!({"tier": "dev", "instance": {"version": "18"}}),
            ),
            "at most 43 characters",
        ),
        (
            "both serverRef and adminSecretRef",
            env(
                "two-servers",
                json!({"tier": "dev", "server": {"serverRef": {"name": "shared"}, "adminSecretRef": {"name": "a"}}}),
            ),
            "exactly one of",
        ),
        (
            "database name that is not an identifier",
            env(
                "bad-dbname",
                json!({"tier": "dev", "server": {"adminSecretRef": {"name": "a"}, "databaseName": "My-DB"}}),
            ),
            "databaseName must be a lowercase PostgreSQL identifier",
        ),
        (
            "migration run with an unknown direction",
            run(
                "bad-direction",
                json!({"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]}, "direction": "sideways"}),
            ),
            "supported values: \"up\", \"down\"",
        ),
        (
            "migration run with an unknown lint mode",
            run(
                "bad-lint",
                json!({"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]}, "lint": "strict"}),
            ),
            "supported values: \"enforce\", \"warn\", \"off\"",
        ),
        (
            "migration run with two sources",
            run(
                "two-sources",
                json!({"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"], "configMapSelector": {"matchLabels": {"a": "b"}}}}),
            ),
            "set exactly one of configMapNames (a non-empty list) or configMapSelector",
        ),
        (
            "migration run with a malformed lock timeout",
            run(
                "bad-lock",
                json!({"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]}, "lockTimeout": "soon"}),
            ),
            "must be a duration",
        ),
        (
            "backup schedule with a malformed cron",
            schedule(
                "bad-cron",
                json!({"environmentRef": {"name": "db"}, "schedule": "every day", "destination": s3()}),
            ),
            "cron",
        ),
        (
            "backup schedule with negative retention",
            schedule(
                "neg-retention",
                json!({"environmentRef": {"name": "db"}, "schedule": "0 3 * * *", "destination": s3(), "retention": {"daily": -1}}),
            ),
            "should be greater than or equal to 0",
        ),
    ]
}

#[tokio::test]
async fn invalid_specs_are_rejected_with_a_clear_message() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "validation").await;
    let mut failures = Vec::new();
    for (case, manifest, expected) in invalid_manifests() {
        match support::apply_json(&client, &ns.name, manifest).await {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(expected) {
                    failures.push(format!(
                        "{case}: got {} {:?}, expected it to contain {expected:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{case}: unexpected error {e}")),
        }
    }
    // A valid manifest of each kind is accepted, so the rejections above are about the rule, not the kind.
    for valid in [
        env("ok", json!({"tier": "ci", "server": server()})),
        run(
            "ok",
            json!({"environmentRef": {"name": "ok"}, "source": {"configMapNames": ["m"]}}),
        ),
        schedule(
            "ok",
            json!({"environmentRef": {"name": "ok"}, "schedule": "0 3 * * *", "destination": s3()}),
        ),
    ] {
        if let Err(e) = support::apply_json(&client, &ns.name, valid.clone()).await {
            failures.push(format!("valid {} rejected: {e}", valid["kind"]));
        }
    }
    ns.cleanup().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn migration_run_spec_is_immutable_and_tier_cannot_change() {
    let _platform = require_platform!();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "immutable").await;
    let spec = json!({"environmentRef": {"name": "db"}, "source": {"configMapNames": ["m"]}});
    support::apply_json(&client, &ns.name, run("r1", spec))
        .await
        .expect("created");
    let changed = json!({"environmentRef": {"name": "other"}, "source": {"configMapNames": ["m"]}});
    let err = support::apply_json(&client, &ns.name, run("r1", changed))
        .await
        .expect_err("spec change rejected");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("create a new MigrationRun")),
        "{err}"
    );

    support::apply_json(
        &client,
        &ns.name,
        env("e1", json!({"tier": "dev", "server": server()})),
    )
    .await
    .expect("created");
    let err = support::apply_json(
        &client,
        &ns.name,
        env("e1", json!({"tier": "production", "server": server()})),
    )
    .await
    .expect_err("tier change rejected");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.message.contains("tier is immutable")),
        "{err}"
    );
    ns.cleanup().await;
}
