//! Off unless `LIFEBOAT_CAPTURE_DIR` is set: then every distinct state of a Lifeboat object (group
//! `lifeboat.dev`) that a waiting helper observes is written to that directory as YAML, one file per
//! state, for `deploy/argocd/capture.sh` to turn into Argo CD health check test cases.
//!
//! A state is what the health rule reads: the kind, whether there is a status, whether
//! `status.observedGeneration` equals `metadata.generation`, every True condition with its reason,
//! `ObjectivesMet`'s status, `status.phase` and `spec.suspend`. The first object seen in a state is kept
//! (file name: kind and a hash of the state, so parallel tests and test binaries never write one twice).
//! What changes from run to run is made stable: uid, resourceVersion, managedFields and
//! creationTimestamp are removed, timestamps in the status become one fixed time, the test namespace
//! loses its random suffix (also inside messages and database names), and the platform's loopback
//! addresses (PostgreSQL `host:port` in messages and `{host, port}` fields, the S3 endpoint) become fixed
//! host names.
//!
//! Unset, [`observe`] costs one check of a value read once per process.

use std::{collections::HashSet, io::Write, path::PathBuf, sync::Mutex, sync::OnceLock};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const GROUP: &str = "lifeboat.dev";
/// Every timestamp in a captured status.
pub const FIXED_TIME: &str = "2026-01-01T00:00:00Z";

struct Capture {
    dir: PathBuf,
    /// States this process has written or found already written.
    seen: Mutex<HashSet<String>>,
    /// The platform's PostgreSQL servers (host, port) and the stable host each becomes (port 5432).
    servers: Vec<(String, u64, &'static str)>,
    /// The platform's S3 endpoint.
    s3: Option<String>,
}

const STABLE_PORT: u64 = 5432;
const STABLE_S3: &str = "https://s3.example";

fn capture() -> Option<&'static Capture> {
    static CAPTURE: OnceLock<Option<Capture>> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let dir = PathBuf::from(std::env::var_os("LIFEBOAT_CAPTURE_DIR")?);
            if dir.as_os_str().is_empty() {
                return None;
            }
            std::fs::create_dir_all(&dir).expect("create LIFEBOAT_CAPTURE_DIR");
            let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let servers = [
                ("LIFEBOAT_PG", "postgres.example"),
                ("LIFEBOAT_PG15", "postgres15.example"),
            ]
            .into_iter()
            .filter_map(|(prefix, stable)| {
                let host = var(&format!("{prefix}_HOST"))?;
                let port = var(&format!("{prefix}_PORT"))?.parse().ok()?;
                Some((host, port, stable))
            })
            .collect();
            Some(Capture {
                dir,
                seen: Mutex::new(HashSet::new()),
                servers,
                s3: var("LIFEBOAT_S3_ENDPOINT"),
            })
        })
        .as_ref()
}

/// Records `obj` when capturing is on and it is a Lifeboat object in a state not recorded yet.
pub fn observe<K>(obj: &K)
where
    K: kube::Resource + serde::Serialize,
    K::DynamicType: Default,
{
    let Some(capture) = capture() else {
        return;
    };
    let dt = K::DynamicType::default();
    if K::group(&dt) != GROUP {
        return;
    }
    let Ok(mut value) = serde_json::to_value(obj) else {
        return;
    };
    value["apiVersion"] = json!(K::api_version(&dt));
    value["kind"] = json!(K::kind(&dt));
    let key = state_key(&value);
    let digest = Sha256::digest(key.as_bytes());
    let file = format!(
        "{}-{}.yaml",
        K::kind(&dt),
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if !capture.seen.lock().unwrap().insert(file.clone()) {
        return;
    }
    let stable = stabilise(value, capture);
    let yaml = serde_yaml::to_string(&stable).expect("a captured object as YAML");
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed thread")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(b, _)| b.to_string()))
        .unwrap_or_default();
    // create_new: another test (or test binary) that reached the same state first keeps its file.
    let Ok(mut out) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(capture.dir.join(&file))
    else {
        return;
    };
    let _ = write!(
        out,
        "# captured from tests/{binary}.rs {test}\n# state: {key}\n{yaml}"
    );
}

/// What the health rule reads, in one line (also the comment at the top of a captured file).
fn state_key(v: &Value) -> String {
    let status = &v["status"];
    let has_status = status.as_object().is_some_and(|s| !s.is_empty());
    let caught_up = status["observedGeneration"] == v["metadata"]["generation"];
    let mut conditions: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True" || c["type"] == "ObjectivesMet")
        .map(|c| {
            format!(
                "{}={}/{}",
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    conditions.sort();
    format!(
        "{} status={} caughtUp={} conditions=[{}] phase={} suspend={}",
        v["kind"].as_str().unwrap_or(""),
        has_status,
        has_status && caught_up,
        conditions.join(","),
        status["phase"].as_str().unwrap_or("-"),
        v["spec"]["suspend"].as_bool().unwrap_or(false)
    )
}

/// The test namespace without its random suffix (`backup-abcdefgh` → `backup`).
fn stable_namespace(ns: &str) -> &str {
    match ns.rsplit_once('-') {
        Some((prefix, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            prefix
        }
        _ => ns,
    }
}

fn stabilise(mut v: Value, capture: &Capture) -> Value {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let (name, namespace, generate_name, env) = (
        text("/metadata/name").unwrap_or_default(),
        text("/metadata/namespace"),
        text("/metadata/generateName"),
        text("/spec/environmentRef/name"),
    );
    let mut replacements: Vec<(String, String)> = capture
        .servers
        .iter()
        .map(|(host, port, stable)| (format!("{host}:{port}"), format!("{stable}:{STABLE_PORT}")))
        .chain(
            capture
                .s3
                .iter()
                .map(|e| (e.clone(), STABLE_S3.to_string())),
        )
        .collect();
    if let Some(generate) = generate_name
        && name.starts_with(&generate)
        && name.len() > generate.len()
    {
        replacements.push((name.clone(), format!("{generate}abcde")));
    }
    if let Some(ns) = namespace {
        let stable = stable_namespace(&ns);
        if stable != ns {
            // A database name carries a hash of namespace/name: recompute it for the object's own name
            // and for the environment it refers to.
            let sql = lifeboat::engines::postgres::sql::default_name;
            for object in std::iter::once(&name).chain(env.as_ref()) {
                replacements.push((sql(&ns, object), sql(stable, object)));
            }
            replacements.push((ns.clone(), stable.to_string()));
            replacements.push((ns.replace('-', "_"), stable.replace('-', "_")));
        }
    }
    if let Some(meta) = v["metadata"].as_object_mut() {
        for volatile in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
        ] {
            meta.remove(volatile);
        }
        if meta.contains_key("deletionTimestamp") {
            meta.insert("deletionTimestamp".into(), json!(FIXED_TIME));
        }
        for owner in meta
            .get_mut("ownerReferences")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(owner) = owner.as_object_mut() {
                owner.remove("uid");
            }
        }
    }
    if let Some(status) = v.get_mut("status") {
        fix_times(status);
    }
    fix_endpoints(&mut v, &capture.servers);
    let mut text = v.to_string();
    for (from, to) in &replacements {
        text = text.replace(from.as_str(), to);
    }
    serde_json::from_str(&text).expect("a stabilised object")
}

/// Every RFC 3339 timestamp in `v` becomes [`FIXED_TIME`].
fn fix_times(v: &mut Value) {
    match v {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            *s = FIXED_TIME.to_string();
        }
        Value::Array(items) => items.iter_mut().for_each(fix_times),
        Value::Object(map) => map.values_mut().for_each(fix_times),
        _ => {}
    }
}

/// Every `{host, port}` of a platform server (e.g. `status.endpoint`) becomes its stable host and 5432.
fn fix_endpoints(v: &mut Value, servers: &[(String, u64, &'static str)]) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| fix_endpoints(i, servers)),
        Value::Object(map) => {
            let server = servers.iter().find(|(host, port, _)| {
                map.get("host").and_then(Value::as_str) == Some(host.as_str())
                    && map.get("port").and_then(Value::as_u64) == Some(*port)
            });
            if let Some((_, _, stable)) = server {
                map.insert("host".into(), json!(stable));
                map.insert("port".into(), json!(STABLE_PORT));
            }
            map.values_mut().for_each(|i| fix_endpoints(i, servers));
        }
        _ => {}
    }
}
