//! Work in a pod: a small executor that runs one container as a Kubernetes Job, waits for it and
//! collects its result (exit code, the log's last lines with secrets masked). The Job is named by its
//! caller deterministically, so a task resumed after an operator restart finds and follows the Job it
//! started instead of starting a second one. Used by MigrationRun's container runner.

use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EnvVar, Pod, PodSpec, PodTemplateSpec, SeccompProfile,
            SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client,
    api::{ListParams, LogParams, PostParams},
};

/// What to run.
pub struct PodJob {
    pub namespace: String,
    pub name: String,
    /// Owner of the Job (the object it works for): deleting the owner deletes the Job.
    pub owner: OwnerReference,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    /// Volumes and the container's mounts.
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// The Job's `activeDeadlineSeconds`.
    pub deadline: Duration,
}

/// How a Job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobResult {
    pub succeeded: bool,
    /// Why it failed, in Kubernetes' words (`BackoffLimitExceeded`, `DeadlineExceeded`), if it did.
    pub reason: Option<String>,
    /// The container's exit code, when it ran.
    pub exit_code: Option<i32>,
    /// The log's last lines, secrets masked.
    pub log_tail: String,
}

/// Lines of the log kept in a result.
pub const LOG_LINES: i64 = 20;
/// Most bytes of the log kept in a result.
const LOG_BYTES: i64 = 4096;

/// The Job's manifest: one pod, no retries, no service account token, hardened container.
pub fn manifest(job: &PodJob) -> Job {
    let container = Container {
        name: "run".into(),
        image: Some(job.image.clone()),
        command: (!job.command.is_empty()).then(|| job.command.clone()),
        args: (!job.args.is_empty()).then(|| job.args.clone()),
        env: Some(job.env.clone()),
        volume_mounts: Some(job.mounts.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job.name.clone()),
            namespace: Some(job.namespace.clone()),
            labels: Some(job.labels.clone()),
            owner_references: Some(vec![job.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(job.deadline.as_secs().max(1)).unwrap_or(i64::MAX),
            ),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job.labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    containers: vec![container],
                    volumes: Some(job.volumes.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Starts the Job unless it exists already (a resumed task), then waits for it to end. `secrets` are
/// masked in the log tail.
pub async fn run(
    client: &Client,
    job: &PodJob,
    secrets: &[&str],
) -> Result<JobResult, kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    if jobs.get_opt(&job.name).await?.is_none() {
        match jobs.create(&PostParams::default(), &manifest(job)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    // Watched, not polled: the call returns when the Job has a final condition (or is gone).
    let done = |j: Option<&Job>| j.is_none_or(|j| ended(j).is_some());
    let current = kube::runtime::wait::await_condition(jobs, &job.name, done)
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    let Some((succeeded, reason)) = current.as_ref().and_then(ended) else {
        return Ok(JobResult {
            succeeded: false,
            reason: Some("JobDeleted".into()),
            exit_code: None,
            log_tail: String::new(),
        });
    };
    let (exit_code, log_tail) = container_result(client, job, secrets).await?;
    Ok(JobResult {
        succeeded,
        reason,
        exit_code,
        log_tail,
    })
}

/// `(succeeded, reason)` once the Job has a final condition.
fn ended(job: &Job) -> Option<(bool, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some((true, None)),
            "Failed" => Some((false, c.reason.clone())),
            _ => None,
        })
}

/// The exit code and log tail of the Job's pod (the newest, if several).
async fn container_result(
    client: &Client,
    job: &PodJob,
    secrets: &[&str],
) -> Result<(Option<i32>, String), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &job.namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name)))
        .await?;
    let Some(pod) = list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
    else {
        return Ok((None, String::new()));
    };
    let exit_code = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    let name = pod.metadata.name.unwrap_or_default();
    let params = LogParams {
        tail_lines: Some(LOG_LINES),
        limit_bytes: Some(LOG_BYTES),
        ..Default::default()
    };
    // A pod that never started has no log; that is not an error of the run's.
    let log = pods.logs(&name, &params).await.unwrap_or_default();
    Ok((exit_code, mask(&log, secrets)))
}

/// `text` with every non-empty secret replaced by `***`, longest first (a URI holds its password).
pub fn mask(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(text.trim_end().to_string(), |t, s| t.replace(s, "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_longest_first() {
        let uri = "postgresql://u:p%40ss@h:5432/d";
        let log = format!("connecting to {uri}\npassword p@ss rejected\n");
        let masked = mask(&log, &[uri, "p@ss", ""]);
        assert_eq!(masked, "connecting to ***\npassword *** rejected");
    }

    #[test]
    fn the_manifest_runs_once_without_a_token() {
        let job = PodJob {
            namespace: "ns".into(),
            name: "run-1".into(),
            owner: Default::default(),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "lifeboat".to_string(),
            )]),
            image: "flyway/flyway:11".into(),
            command: vec![],
            args: vec!["migrate".into()],
            env: vec![],
            volumes: vec![],
            mounts: vec![],
            deadline: Duration::from_secs(90),
        };
        let m = serde_json::to_value(manifest(&job)).unwrap();
        assert_eq!(m["spec"]["backoffLimit"], 0);
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 90);
        let pod = &m["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["restartPolicy"], "Never");
        assert!(
            pod["containers"][0].get("command").is_none(),
            "the image's entrypoint"
        );
        assert_eq!(pod["containers"][0]["args"], serde_json::json!(["migrate"]));
        assert!(serde_json::from_value::<Job>(m).is_ok());
    }
}
