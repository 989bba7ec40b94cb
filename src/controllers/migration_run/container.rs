//! `spec.runner`: the team's own migration tool, run as a Job (`controllers::pod_job`) while Lifeboat
//! holds the migration lock and after the backup where one is required. The contract a tool image meets:
//! the source's files are under `/migrations` (read-only), `/tmp` is writable, the connection is in the
//! environment (`DATABASE_URL`, `JDBC_URL`, `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`,
//! `PGSSLMODE`, defined before the run's own `env`, which may use them as `$(PGUSER)`), and exit
//! status 0 means migrated.

use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ProjectedVolumeSource, SecretKeySelector, Volume, VolumeMount, VolumeProjection,
};
use kube::{Client, Resource as _, ResourceExt};

use crate::{
    api::{MigrationRun, migration_run::ContainerRunner},
    controllers::pod_job::{self, JobResult, PodJob},
    domain::migrations::MigrationPhase,
    engines::{
        ConnectionDetails, ENGINE, Migrate as _, ServerCredentials,
        migrate::{
            BackupFailure, Hooks, Interrupted, LockRefusal, Outcome, Prior, RunOptions, RunState,
            lock_timeout_message,
        },
    },
};

/// Where the source's files are in the container.
pub const MOUNT: &str = "/migrations";
/// How long a runner may take when `timeout` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The Job of one run, and the values masked in its log.
pub struct ContainerJob {
    pub pod: PodJob,
    pub secrets: Vec<String>,
}

/// The Job's name: the run's name (shortened) and its UID's start, so a resumed task finds it.
fn job_name(run: &MigrationRun) -> String {
    let name: String = run.name_any().chars().take(44).collect();
    let uid: String = run.uid().unwrap_or_default().chars().take(8).collect();
    format!("{}-runner-{uid}", name.trim_end_matches(['-', '.']))
}

/// The connection as environment variables, each read from the connection Secret (no value is copied
/// into the Job).
fn connection_env(secret: &str) -> Vec<EnvVar> {
    [
        ("DATABASE_URL", "uri"),
        ("JDBC_URL", "jdbcUrl"),
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGDATABASE", "database"),
        ("PGUSER", "username"),
        ("PGPASSWORD", "password"),
        ("PGSSLMODE", "sslmode"),
    ]
    .into_iter()
    .map(|(name, key)| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                key: key.into(),
                name: secret.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    })
    .collect()
}

/// The Job for `run` with `runner`, mounting `maps` (the resolved source).
pub fn job(
    run: &MigrationRun,
    runner: &ContainerRunner,
    maps: &[ConfigMap],
    connection_secret: &str,
    creds: &ServerCredentials,
    database: &str,
) -> ContainerJob {
    let mut env = connection_env(connection_secret);
    env.extend(runner.env.iter().map(|e| EnvVar {
        name: e.name.clone(),
        value: Some(e.value.clone()),
        value_from: None,
    }));
    let (volumes, mounts) = volumes(maps);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "lifeboat".into()),
        (
            "app.kubernetes.io/component".into(),
            "migration-runner".into(),
        ),
        ("lifeboat.dev/migration-run".into(), run.name_any()),
    ]);
    ContainerJob {
        pod: PodJob {
            namespace: run.namespace().unwrap_or_default(),
            name: job_name(run),
            owner: run.controller_owner_ref(&()).unwrap_or_default(),
            labels,
            image: runner.image.clone(),
            command: runner.command.clone(),
            args: runner.args.clone(),
            env,
            volumes,
            mounts,
            deadline: runner.timeout.map_or(DEFAULT_TIMEOUT, Into::into),
        },
        secrets: masked(creds, database),
    }
}

/// What a runner's log must not show: the password, the connection strings holding it, and the
/// password as the URI spells it (percent-encoded).
fn masked(creds: &ServerCredentials, database: &str) -> Vec<String> {
    let data = ENGINE.connection_data(creds, database);
    let mut secrets = vec![creds.password.clone()];
    secrets.extend(
        ["uri", "jdbcUrl"]
            .iter()
            .filter_map(|k| data.get(*k).cloned()),
    );
    if let Some(encoded) = data
        .get("uri")
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p.to_string())
    {
        secrets.push(encoded);
    }
    secrets
}

/// The runner's volumes and mounts: the source's ConfigMaps, read-only under [`MOUNT`], and a
/// writable `/tmp`.
fn volumes(maps: &[ConfigMap]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let sources: Vec<VolumeProjection> = maps
        .iter()
        .map(|m| VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: m.name_any(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let volumes = vec![
        Volume {
            name: "migrations".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: None,
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mounts = vec![
        VolumeMount {
            name: "migrations".into(),
            mount_path: MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    (volumes, mounts)
}

/// Runs the Job under the migration lock, after the backup if the run needs one.
pub async fn run<H: Hooks>(
    client: &Client,
    creds: &ServerCredentials,
    database: &str,
    options: &RunOptions,
    prior: &Prior,
    job: &ContainerJob,
    hooks: &mut H,
) -> Result<Outcome, Interrupted> {
    let mut state = RunState {
        backup_id: prior.backup_id.clone(),
        ..Default::default()
    };
    let end = |state: &RunState, phase, reason, message| Outcome {
        phase,
        reason,
        message,
        state: state.clone(),
    };
    let lock = match ENGINE
        .lock_migrations(creds, database, &options.label, options.lock_timeout)
        .await
    {
        Ok(lock) => lock,
        Err(LockRefusal::Timeout { waited, holder }) => {
            let then = "the runner was not started";
            let message = lock_timeout_message(database, waited, holder.as_deref(), then);
            return Ok(end(&state, MigrationPhase::Failed, "LockTimeout", message));
        }
        Err(LockRefusal::Failed(e)) => {
            let message = format!("{e}; the runner was not started.");
            return Ok(end(&state, MigrationPhase::Failed, e.reason(), message));
        }
    };
    if state.backup_id.is_none() {
        match hooks.backup().await {
            Ok(id) => state.backup_id = id,
            Err(BackupFailure { reason, message }) => {
                lock.release().await;
                return Ok(end(&state, MigrationPhase::Failed, reason, message));
            }
        }
    }
    state.activity = format!(
        "Running {} in Job {} with the migration lock held.",
        job.pod.image, job.pod.name
    );
    if let Err(e) = hooks.report(&state, true).await {
        lock.release().await;
        return Err(Interrupted(e));
    }
    let secrets: Vec<&str> = job.secrets.iter().map(String::as_str).collect();
    let result = pod_job::run(client, &job.pod, &secrets).await;
    lock.release().await;
    let result = result.map_err(|e| Interrupted(format!("following Job {}: {e}", job.pod.name)))?;
    let (phase, reason, message) = verdict(&job.pod, &result);
    Ok(end(&state, phase, reason, message))
}

/// Phase, reason and message for a finished Job.
fn verdict(pod: &PodJob, r: &JobResult) -> (MigrationPhase, &'static str, String) {
    let log = if r.log_tail.is_empty() {
        String::new()
    } else {
        format!(" Last lines of its log:\n{}", r.log_tail)
    };
    if r.succeeded {
        return (
            MigrationPhase::Succeeded,
            "Succeeded",
            format!("{} in Job {} exited 0.{log}", pod.image, pod.name),
        );
    }
    let (reason, why) = match (r.reason.as_deref(), r.exit_code) {
        (Some("DeadlineExceeded"), _) => (
            "RunnerTimedOut",
            format!("did not finish within its timeout ({:?})", pod.deadline),
        ),
        (_, Some(code)) => ("RunnerFailed", format!("exited {code}")),
        (reason, None) => (
            "RunnerFailed",
            format!(
                "did not run ({}; see the Job's events)",
                reason.unwrap_or("no exit code")
            ),
        ),
    };
    (
        MigrationPhase::Failed,
        reason,
        format!("{} in Job {} {why}.{log}", pod.image, pod.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::rendered::assert_rendered;
    use serde_json::json;

    fn pod() -> PodJob {
        PodJob {
            namespace: "ns".into(),
            name: "r-runner-1234".into(),
            owner: Default::default(),
            labels: BTreeMap::new(),
            image: "tool:1".into(),
            command: vec![],
            args: vec![],
            env: vec![],
            volumes: vec![],
            mounts: vec![],
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn verdicts_name_the_exit_code_and_the_log() {
        let failed = JobResult {
            succeeded: false,
            reason: Some("BackoffLimitExceeded".into()),
            exit_code: Some(3),
            log_tail: "ERROR: relation \"x\" does not exist".into(),
        };
        let (phase, reason, message) = verdict(&pod(), &failed);
        assert_eq!((phase, reason), (MigrationPhase::Failed, "RunnerFailed"));
        assert_eq!(
            message,
            "tool:1 in Job r-runner-1234 exited 3. Last lines of its log:\nERROR: relation \"x\" does not exist"
        );
        let late = JobResult {
            reason: Some("DeadlineExceeded".into()),
            exit_code: None,
            log_tail: String::new(),
            ..failed
        };
        assert_eq!(verdict(&pod(), &late).1, "RunnerTimedOut");
    }

    /// Runner specs: a tool with arguments, its own variables and a timeout, reading two ConfigMaps;
    /// and a tool with its own entrypoint and nothing else, reading one.
    const RUNNERS: &[(&str, &str, &[&str])] = &[
        (
            "flyway",
            r#"{"image": "flyway/flyway:11", "args": ["-locations=filesystem:/migrations", "migrate"], "env": [{"name": "FLYWAY_CONNECT_RETRIES", "value": "3"}, {"name": "FLYWAY_USER", "value": "$(PGUSER)"}], "timeout": "5m"}"#,
            &["shop-migrations-0", "shop-migrations-1"],
        ),
        (
            "entrypoint",
            r#"{"image": "registry.corp/shop/migrate:2", "command": ["/bin/migrate", "up"]}"#,
            &["shop-migrations"],
        ),
    ];

    #[test]
    fn runner_jobs_render_as_before() {
        let creds = ServerCredentials {
            host: "db.example".into(),
            port: 5432,
            username: "shop_app".into(),
            password: "p@ss word".into(),
            sslmode: "require".into(),
            ca_pem: None,
        };
        for (name, runner, maps) in RUNNERS {
            let runner: ContainerRunner = serde_json::from_str(runner).unwrap();
            let mut run: MigrationRun = serde_yaml::from_str(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: MigrationRun\nmetadata: {name: shop-pr-1234-x7k2p, namespace: shop}\nspec: {environmentRef: {name: pr-1234}, source: {configMapNames: [m]}}",
            )
            .unwrap();
            run.metadata.uid = Some("0f9c2a4e-1b2c-4d5e-8f90-123456789abc".into());
            let maps: Vec<ConfigMap> = maps
                .iter()
                .map(|m| ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(m.to_string()),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect();
            let job = job(&run, &runner, &maps, "pr-1234-connection", &creds, "shop");
            let rendered = json!({"job": pod_job::manifest(&job.pod)});
            assert_rendered(&format!("runner-job-{name}"), rendered);
        }
    }

    #[test]
    fn the_connection_comes_from_the_secret_by_reference() {
        let env = connection_env("db-connection");
        assert_eq!(env.len(), 8);
        assert!(env.iter().all(|e| {
            e.value.is_none()
                && e.value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap()
                    .name
                    == "db-connection"
        }));
    }
}
