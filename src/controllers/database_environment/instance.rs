//! The `instance` source: a dedicated server for one environment (what runs it comes from the engine's
//! [`InstanceTemplate`]), run as a one-replica StatefulSet behind a headless Service, with a generated
//! superuser Secret. Persistent tiers keep their
//! data on a PersistentVolumeClaim; `ci` uses a size-limited `emptyDir`. Once the pod is Ready, the
//! environment's own role and database are made on it exactly as on a shared server.
//!
//! Everything here is owned by the environment (owner references), so deleting the environment deletes
//! it; the claim's fate follows `deletionPolicy` through the StatefulSet's PVC retention policy.

use std::collections::BTreeMap;

use super::{ENVIRONMENT_LABEL, Outcome, generate_password, provision_on, refuse_foreign};
use crate::{
    api::{
        DatabaseEnvironment,
        database_environment::{DeletionPolicy, InstanceSource, Tier},
    },
    controllers::{Context, Error, FIELD_MANAGER},
    engines::{self, Durability, InstanceSettings, InstanceTemplate},
};
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSecurityContext,
            PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
            SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
            VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};

/// How the environment's engine runs in a pod.
fn template(env: &DatabaseEnvironment) -> &'static (dyn InstanceTemplate + Sync) {
    engines::instance_template(crate::controllers::engine::kind(env.spec.engine))
}

/// Volume size when `storage.size` is unset.
pub const DEFAULT_STORAGE: &str = "1Gi";

/// Names of the objects an instance consists of.
#[derive(Debug, PartialEq, Eq)]
pub struct InstanceNames {
    pub stateful_set: String,
    pub service: String,
    pub superuser_secret: String,
    pub pod: String,
}

pub fn names(env: &DatabaseEnvironment) -> InstanceNames {
    let base = format!("{}-{}", env.name_any(), template(env).server_name());
    InstanceNames {
        pod: format!("{base}-0"),
        service: base.clone(),
        stateful_set: base,
        superuser_secret: format!("{}-superuser", env.name_any()),
    }
}

/// The image to run: the spec's, else the official image of the pinned version.
pub fn image(t: &dyn InstanceTemplate, spec: &InstanceSource) -> String {
    spec.image
        .clone()
        .unwrap_or_else(|| t.official_image(&spec.version))
}

/// Whether the operator may run the instance's image (pure): the official image of the version, or one
/// starting with a prefix the operator's administrator allowed (an image runs with the database's data
/// and its superuser password, so a tenant must not pick any image it likes).
pub fn image_allowed(t: &dyn InstanceTemplate, spec: &InstanceSource, allowed: &[String]) -> bool {
    let image = image(t, spec);
    image == t.official_image(&spec.version)
        || allowed
            .iter()
            .any(|prefix| !prefix.is_empty() && image.starts_with(prefix.as_str()))
}

/// What `status.instance` says about an instance whose objects were applied (pure).
pub fn status(
    env: &DatabaseEnvironment,
    spec: &InstanceSource,
) -> crate::api::database_environment::InstanceStatus {
    let n = names(env);
    crate::api::database_environment::InstanceStatus {
        stateful_set_name: n.stateful_set,
        service_name: n.service,
        image: image(template(env), spec),
        persistent: env.spec.tier.is_persistent(),
    }
}

fn labels(env: &DatabaseEnvironment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".into(),
            template(env).server_name().into(),
        ),
        ("app.kubernetes.io/instance".into(), env.name_any()),
        ("app.kubernetes.io/managed-by".into(), "lifeboat".into()),
        (ENVIRONMENT_LABEL.into(), env.name_any()),
    ])
}

/// The metadata of an object of the instance: its name, the instance's labels and the environment
/// as its controlling owner (so deleting the environment deletes it).
fn owned_metadata(env: &DatabaseEnvironment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(labels(env)),
        owner_references: env.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}

/// The headless Service giving the pod a stable DNS name (pure).
pub fn service(env: &DatabaseEnvironment) -> Service {
    let n = names(env);
    let t = template(env);
    Service {
        metadata: owned_metadata(env, n.service),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels(env)),
            ports: Some(vec![ServicePort {
                name: Some(t.server_name().into()),
                port: i32::from(t.port()),
                target_port: Some(IntOrString::String(t.server_name().into())),
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// The StatefulSet running the server (pure).
pub fn stateful_set(env: &DatabaseEnvironment, spec: &InstanceSource) -> StatefulSet {
    let n = names(env);
    let t = template(env);
    let persistent = env.spec.tier.is_persistent();
    let policy = env
        .spec
        .deletion_policy
        .unwrap_or_else(|| env.spec.tier.default_deletion_policy());
    let mut volumes = vec![empty_dir("run", None), empty_dir("tmp", None)];
    if !persistent {
        volumes.push(empty_dir("data", Some(storage_size(spec))));
    }
    let uid = t.run_as();
    StatefulSet {
        metadata: owned_metadata(env, n.stateful_set),
        spec: Some(StatefulSetSpec {
            service_name: Some(n.service),
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels(env)),
                match_expressions: None,
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        if policy == DeletionPolicy::Delete {
                            "Delete"
                        } else {
                            "Retain"
                        }
                        .into(),
                    ),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(env)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![server_container(env, spec)],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: persistent.then(|| vec![data_claim(env, spec)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The StatefulSet as it is applied: `stateful_set` without the `apiVersion` and `kind` that
/// k8s-openapi writes into every PersistentVolumeClaim, the claim templates included. Lifeboat's
/// claim templates never carried them, and a StatefulSet's claim templates cannot be changed once
/// it exists, so what is applied stays what it always was (pure).
pub fn stateful_set_manifest(sts: &StatefulSet) -> serde_json::Value {
    let mut manifest = serde_json::to_value(sts).unwrap_or_default();
    if let Some(claims) = manifest
        .pointer_mut("/spec/volumeClaimTemplates")
        .and_then(serde_json::Value::as_array_mut)
    {
        for claim in claims
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            claim.remove("apiVersion");
            claim.remove("kind");
        }
    }
    manifest
}

/// A volume of the pod on the node's disk, of at most `size_limit`.
fn empty_dir(name: &str, size_limit: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit,
        }),
        ..Default::default()
    }
}

fn storage_size(spec: &InstanceSource) -> Quantity {
    spec.storage
        .as_ref()
        .and_then(|s| s.size.clone())
        .unwrap_or_else(|| Quantity(DEFAULT_STORAGE.into()))
}

/// Requests and limits of a server whose spec sets none.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("100m".into())),
            ("memory".into(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
        claims: None,
    }
}

/// The server's environment: the superuser's name and password from its Secret (by reference), then
/// the engine's variables placing the data on the volume.
fn server_env(env: &DatabaseEnvironment, t: &dyn InstanceTemplate) -> Vec<EnvVar> {
    let secret = names(env).superuser_secret;
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    };
    let (user_env, password_env) = t.superuser_env();
    let mut vars = vec![
        from_secret(user_env, "username"),
        from_secret(password_env, "password"),
    ];
    vars.extend(t.data_env().into_iter().map(|(name, value)| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }));
    vars
}

/// The server's container: the image, the superuser from its Secret, probes, a read-only root.
fn server_container(env: &DatabaseEnvironment, spec: &InstanceSource) -> Container {
    let t = template(env);
    let resources = spec.resources.clone().unwrap_or_else(default_resources);
    let probe = |initial: i32, period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(t.ready_command()),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let args = t.server_args(&settings(env, spec));
    Container {
        name: t.server_name().into(),
        image: Some(image(t, spec)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: (!args.is_empty()).then_some(args),
        ports: Some(vec![ContainerPort {
            name: Some(t.server_name().into()),
            container_port: i32::from(t.port()),
            ..Default::default()
        }]),
        env: Some(server_env(env, t)),
        readiness_probe: Some(probe(5, 5, 3)),
        liveness_probe: Some(probe(30, 10, 6)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("data", t.data_mount()),
            mount("run", t.run_dir()),
            mount("tmp", "/tmp"),
        ]),
        ..Default::default()
    }
}

/// What the tier and the spec ask of the server's settings (pure).
pub fn settings(env: &DatabaseEnvironment, spec: &InstanceSource) -> InstanceSettings {
    let durability = match env.spec.tier {
        Tier::Ci => Durability::None,
        Tier::Dev => Durability::Log,
        Tier::Staging | Tier::Production => Durability::LogAndSnapshots,
    };
    let max_memory_bytes = spec.max_memory.as_ref().and_then(|q| quantity_bytes(&q.0));
    let eviction_policy = match (spec.eviction_policy, spec.cache, max_memory_bytes) {
        (Some(p), _, _) => Some(p.as_str().to_string()),
        (None, true, _) => Some("allkeys-lru".into()),
        (None, false, Some(_)) => Some("noeviction".into()),
        (None, false, None) => None,
    };
    InstanceSettings {
        durability,
        max_memory_bytes,
        eviction_policy,
    }
}

/// Bytes of a memory quantity (`256Mi`, `1G`, `1048576`); `None` when it is not one (pure).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The data volume of a persistent tier.
fn data_claim(env: &DatabaseEnvironment, spec: &InstanceSource) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(env)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), storage_size(spec))])),
                limits: None,
            }),
            storage_class_name: spec
                .storage
                .as_ref()
                .and_then(|s| s.storage_class_name.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates (once) the superuser Secret and returns its password.
async fn superuser_password(env: &DatabaseEnvironment, ctx: &Context) -> Result<String, Error> {
    let n = names(env);
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let existing = api.get_opt(&n.superuser_secret).await?;
    refuse_foreign(existing.as_ref(), env)?;
    if let Some(secret) = existing {
        let password = secret.data.and_then(|d| {
            d.get("password")
                .map(|p| String::from_utf8_lossy(&p.0).into_owned())
        });
        return password
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::NeedsAttention {
                reason: "SecretKeyMissing",
                source: None,
                message: format!(
                    "Secret {} lacks the key password; delete it and Lifeboat makes a new one",
                    n.superuser_secret
                ),
            });
    }
    let password = generate_password();
    api.patch(
        &n.superuser_secret,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&superuser_secret(env, &password)),
    )
    .await?;
    Ok(password)
}

/// The superuser Secret with `password` (pure).
fn superuser_secret(env: &DatabaseEnvironment, password: &str) -> Secret {
    Secret {
        metadata: owned_metadata(env, names(env).superuser_secret),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("username".into(), template(env).superuser().into()),
            ("password".into(), password.into()),
        ])),
        ..Default::default()
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Applies the instance's objects, waits for its pod, then provisions the environment's database on it.
pub(super) async fn provision_instance(
    env: &DatabaseEnvironment,
    ctx: &Context,
) -> Result<Outcome, Error> {
    let Some(spec) = env.spec.instance.as_ref() else {
        return Err(Error::InvalidSpec {
            reason: "InvalidSpec",
            message: "spec.instance is not set".into(),
        });
    };
    let t = template(env);
    if !image_allowed(t, spec, &ctx.config.allowed_images) {
        return Err(Error::InvalidSpec {
            reason: "ImageNotAllowed",
            message: format!(
                "spec.instance.image {} is not allowed: the operator runs only {} and images starting with one of its --allowed-images ({}); nothing was created",
                image(t, spec),
                t.official_image("<version>"),
                if ctx.config.allowed_images.is_empty() {
                    "none configured".to_string()
                } else {
                    ctx.config.allowed_images.join(", ")
                }
            ),
        });
    }
    let ns = env.namespace().unwrap_or_default();
    let n = names(env);
    let password = superuser_password(env, ctx).await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let services = Api::<Service>::namespaced(ctx.client.clone(), &ns);
    let stateful_sets = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns);
    refuse_foreign(services.get_opt(&n.service).await?.as_ref(), env)?;
    refuse_foreign(stateful_sets.get_opt(&n.stateful_set).await?.as_ref(), env)?;
    services
        .patch(&n.service, &params, &Patch::Apply(&service(env)))
        .await?;
    stateful_sets
        .patch(
            &n.stateful_set,
            &params,
            &Patch::Apply(&stateful_set_manifest(&stateful_set(env, spec))),
        )
        .await?;

    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&n.pod)
        .await?;
    if !pod.as_ref().is_some_and(pod_ready) {
        return Err(Error::Transient {
            reason: "InstanceStarting",
            source: None,
            message: format!("waiting for pod {} ({}) to be Ready", n.pod, image(t, spec)),
        });
    }
    let admin = t.instance_admin(format!("{}.{ns}.svc", n.service), password);
    let kind = crate::controllers::engine::kind(env.spec.engine);
    if let Some(tenancy) = engines::tenancy(kind) {
        // The environment owns the whole server: its clients connect as the superuser.
        return super::tenant::adopt(env, ctx, tenancy, admin, "instance").await;
    }
    provision_on(
        env,
        ctx,
        crate::controllers::server_access::Resolved::admin_only(admin),
        None,
        None,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DatabaseEnvironmentSpec;
    use crate::controllers::rendered::assert_rendered;
    use serde_json::json;

    /// The StatefulSet as applied, as JSON.
    fn applied(env: &DatabaseEnvironment, spec: &InstanceSource) -> serde_json::Value {
        stateful_set_manifest(&stateful_set(env, spec))
    }

    fn env(tier: &str) -> DatabaseEnvironment {
        let spec: DatabaseEnvironmentSpec = serde_json::from_value(json!({
            "tier": tier, "instance": {"version": "18", "storage": {"size": "5Gi", "storageClassName": "fast"}}
        }))
        .unwrap();
        let mut env = DatabaseEnvironment::new("orders", spec);
        env.metadata.namespace = Some("shop".into());
        env.metadata.uid = Some("uid-1".into());
        env
    }

    #[test]
    fn status_names_the_objects() {
        let dev = env("dev");
        let s = status(&dev, dev.spec.instance.as_ref().unwrap());
        assert_eq!(
            (
                s.stateful_set_name.as_str(),
                s.service_name.as_str(),
                s.image.as_str(),
                s.persistent
            ),
            ("orders-postgres", "orders-postgres", "postgres:18", true)
        );
        let ci = env("ci");
        assert!(!status(&ci, ci.spec.instance.as_ref().unwrap()).persistent);
    }

    #[test]
    fn only_the_official_image_or_allowed_prefixes_run() {
        let mut spec = env("dev").spec.instance.unwrap();
        let t = &crate::engines::ENGINE;
        assert!(image_allowed(t, &spec, &[]));
        spec.image = Some("evil.example/miner:latest".into());
        assert!(!image_allowed(t, &spec, &[]));
        assert!(!image_allowed(t, &spec, &["".into()]));
        assert!(!image_allowed(t, &spec, &["registry.corp/".into()]));
        spec.image = Some("registry.corp/postgres:18-postgis".into());
        assert!(image_allowed(t, &spec, &["registry.corp/".into()]));
        spec.image = Some("postgres:17".into());
        assert!(
            !image_allowed(t, &spec, &[]),
            "another version than spec.version"
        );
    }

    #[test]
    fn persistent_tiers_get_a_claim_and_ci_an_empty_dir() {
        let dev = env("dev");
        let sts = applied(&dev, dev.spec.instance.as_ref().unwrap());
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "5Gi"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Delete"
        );
        let ci = env("ci");
        let sts = applied(&ci, ci.spec.instance.as_ref().unwrap());
        assert!(sts["spec"].get("volumeClaimTemplates").is_none());
        let volumes = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "data" && v["emptyDir"]["sizeLimit"] == "5Gi")
        );
    }

    #[test]
    fn production_retains_its_volume_and_runs_restricted() {
        let prod = env("production");
        let sts = applied(&prod, prod.spec.instance.as_ref().unwrap());
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "postgres:18");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert!(c["readinessProbe"]["exec"]["command"][0] == "pg_isready");
        assert_eq!(pod["securityContext"]["runAsUser"], 999);
        assert_eq!(pod["securityContext"]["fsGroup"], 999);
        assert_eq!(c["name"], "postgres");
        assert_eq!(c["ports"][0]["containerPort"], 5432);
        let env: Vec<_> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["POSTGRES_USER", "POSTGRES_PASSWORD", "PGDATA"]);
        assert_eq!(c["env"][2]["value"], "/var/lib/postgresql/data/pgdata");
        let mounts: Vec<_> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            ["/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"]
        );
    }

    #[test]
    fn a_redis_instance_runs_redis_server_with_its_tier_settings() {
        let spec: DatabaseEnvironmentSpec = serde_json::from_value(json!({
            "engine": "redis", "tier": "production",
            "instance": {"version": "7", "maxMemory": "256Mi", "cache": true}
        }))
        .unwrap();
        let mut env = DatabaseEnvironment::new("sessions", spec);
        env.metadata.namespace = Some("shop".into());
        env.metadata.uid = Some("uid-2".into());
        let sts = applied(&env, env.spec.instance.as_ref().unwrap());
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(sts["metadata"]["name"], "sessions-redis");
        assert_eq!(c["image"], "redis:7");
        assert_eq!(c["ports"][0]["containerPort"], 6379);
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(after("--maxmemory"), "268435456");
        assert_eq!(after("--maxmemory-policy"), "allkeys-lru", "a cache evicts");
        assert_eq!(after("--save"), "900 1 300 10 60 10000");
        assert_eq!(after("--requirepass"), "$(REDIS_PASSWORD)");
        assert_eq!(c["env"][1]["name"], "REDIS_PASSWORD");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
        assert!(
            !c["readinessProbe"]["exec"]["command"][2]
                .as_str()
                .unwrap()
                .contains("REDIS_PASSWORD\"\"")
        );
        assert!(
            sts["spec"]["volumeClaimTemplates"].is_array(),
            "production keeps a claim"
        );
        // Data, not a cache: writes fail at the limit rather than keys going.
        let mut data = env.spec.instance.clone().unwrap();
        data.cache = false;
        assert_eq!(
            settings(&env, &data).eviction_policy.as_deref(),
            Some("noeviction")
        );
    }

    /// Environments covering each engine and tier, with the spec's options varied across them.
    const RENDERED: &[(&str, &str)] = &[
        (
            "postgres-ci",
            r#"{"tier": "ci", "instance": {"version": "18"}}"#,
        ),
        (
            "postgres-dev",
            r#"{"tier": "dev", "instance": {"version": "18", "storage": {"size": "5Gi", "storageClassName": "fast"}}}"#,
        ),
        (
            "postgres-staging",
            r#"{"tier": "staging", "deletionPolicy": "Retain", "instance": {"version": "17", "image": "registry.corp/postgres:17-postgis", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}}}"#,
        ),
        (
            "postgres-production",
            r#"{"tier": "production", "instance": {"version": "18", "storage": {"size": "20Gi"}}}"#,
        ),
        (
            "redis-ci",
            r#"{"engine": "redis", "tier": "ci", "instance": {"version": "7"}}"#,
        ),
        (
            "redis-dev",
            r#"{"engine": "redis", "tier": "dev", "deletionPolicy": "Delete", "instance": {"version": "7", "maxMemory": "256Mi"}}"#,
        ),
        (
            "redis-staging",
            r#"{"engine": "redis", "tier": "staging", "instance": {"version": "7", "cache": true, "maxMemory": "1Gi", "storage": {"size": "2Gi"}}}"#,
        ),
        (
            "redis-production",
            r#"{"engine": "redis", "tier": "production", "instance": {"version": "7.4", "maxMemory": "256Mi", "evictionPolicy": "volatile-lru", "storage": {"storageClassName": "fast"}, "resources": {"limits": {"cpu": "2", "memory": "512Mi"}}}}"#,
        ),
    ];

    #[test]
    fn instance_objects_render_as_before() {
        for (name, spec) in RENDERED {
            let spec: DatabaseEnvironmentSpec = serde_json::from_str(spec).unwrap();
            let mut env = DatabaseEnvironment::new("orders", spec);
            env.metadata.namespace = Some("shop".into());
            env.metadata.uid = Some(format!("uid-{name}"));
            let instance = env.spec.instance.clone().unwrap();
            let rendered = json!({
                "service": service(&env),
                "statefulSet": applied(&env, &instance),
                "superuserSecret": superuser_secret(&env, "secret-password"),
            });
            assert_rendered(&format!("instance-{name}"), rendered);
        }
    }

    #[test]
    fn memory_quantities_are_bytes() {
        assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1_048_576));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn names_are_derived_from_the_environment() {
        let n = names(&env("dev"));
        assert_eq!(
            (
                n.stateful_set.as_str(),
                n.pod.as_str(),
                n.superuser_secret.as_str()
            ),
            ("orders-postgres", "orders-postgres-0", "orders-superuser")
        );
    }
}
