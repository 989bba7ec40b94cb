//! Resolving what a spec names: other Lifeboat objects, Secrets and their keys, ConfigMaps (and the
//! migration files in them).
//! Errors name the object, the field that referenced it and the missing key — never a value.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Resource, ResourceExt, api::ListParams};
use serde::de::DeserializeOwned;

use super::{Context, Error};
use crate::{
    api::{ConfigMapSource, ConnectionSecretRef},
    domain::migrations::RawFile,
    engines::{Kind, ServerCredentials},
};

/// Key in an admin or connection Secret holding a PEM CA bundle for `verify-ca`/`verify-full`.
pub const CA_KEY: &str = "ca.crt";

/// Gets a Lifeboat object named by the spec; a missing one is [`Error::MissingObject`] with `reason`.
pub async fn lifeboat_object<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    reason: &'static str,
) -> Result<K, Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::MissingObject {
            kind: K::kind(&()).into_owned(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        })
}

/// Gets a Secret and checks it has every key in `keys` (non-empty). `field` names the spec field that
/// referenced it, for the message.
pub async fn secret_with_keys(
    ctx: &Context,
    namespace: &str,
    name: &str,
    field: &str,
    keys: &[&str],
) -> Result<Secret, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NeedsAttention {
            reason: "SecretNotFound",
            source: None,
            message: format!("Secret {namespace}/{name} named by {field} does not exist"),
        })?;
    let missing = missing_secret_keys(&secret, keys);
    if !missing.is_empty() {
        return Err(Error::NeedsAttention {
            reason: "SecretKeyMissing",
            source: None,
            message: format!(
                "Secret {namespace}/{name} named by {field} lacks the key(s) {}",
                missing.join(", ")
            ),
        });
    }
    Ok(secret)
}

/// Keys of `keys` that are absent or empty in the Secret (in `data` or `stringData`).
pub fn missing_secret_keys(secret: &Secret, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            let in_data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(**k))
                .is_some_and(|v| !v.0.is_empty());
            let in_string = secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(**k))
                .is_some_and(|v| !v.is_empty());
            !(in_data || in_string)
        })
        .map(|k| k.to_string())
        .collect()
}

/// The value of `key` in a Secret (`data` or `stringData`), trailing newlines cut; `None` when absent or
/// empty.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| {
            String::from_utf8_lossy(&v.0)
                .trim_end_matches('\n')
                .to_string()
        })
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
        .filter(|v| !v.is_empty())
}

/// Reads a PostgreSQL connection's credentials from a Secret through the key names of `secret_ref`.
pub async fn connection_credentials(
    ctx: &Context,
    namespace: &str,
    secret_ref: &ConnectionSecretRef,
    field: &str,
    with_database: bool,
) -> Result<(ServerCredentials, Option<String>), Error> {
    engine_credentials(
        ctx,
        Kind::Postgres,
        namespace,
        secret_ref,
        field,
        with_database,
    )
    .await
}

/// Reads the credentials of a `kind` server from a Secret through the key names of `secret_ref`:
/// the engine says the default port and the TLS modes a Secret may name. The database key is required
/// with `with_database`, and returned whenever it holds something.
pub async fn engine_credentials(
    ctx: &Context,
    kind: Kind,
    namespace: &str,
    secret_ref: &ConnectionSecretRef,
    field: &str,
    with_database: bool,
) -> Result<(ServerCredentials, Option<String>), Error> {
    let details = crate::engines::connection_details(kind);
    let mut required = vec![
        secret_ref.host_key(),
        secret_ref.username_key(),
        secret_ref.password_key(),
    ];
    if with_database {
        required.push(secret_ref.database_key());
    }
    let secret = secret_with_keys(ctx, namespace, &secret_ref.name, field, &required).await?;
    let get = |key: &str| secret_value(&secret, key);
    let port = match get(secret_ref.port_key()) {
        None => details.default_port(),
        Some(p) => p.trim().parse().map_err(|_| Error::NeedsAttention {
            reason: "SecretKeyInvalid",
            source: None,
            message: format!(
                "Secret {namespace}/{} named by {field}: key {} is not a port number",
                secret_ref.name,
                secret_ref.port_key()
            ),
        })?,
    };
    let ca_pem = get(CA_KEY).map(String::into_bytes);
    // A CA in the Secret says the server's certificate can be checked: the engine's default then checks it.
    let sslmode = get(secret_ref.sslmode_key())
        .unwrap_or_else(|| details.default_ssl_mode(ca_pem.is_some()).into());
    if !details.ssl_modes().contains(&sslmode.as_str()) {
        return Err(Error::NeedsAttention {
            reason: "SecretKeyInvalid",
            source: None,
            message: format!(
                "Secret {namespace}/{} named by {field}: sslmode {sslmode:?} is not one of {}",
                secret_ref.name,
                details.ssl_modes().join(", ")
            ),
        });
    }
    let creds = ServerCredentials {
        host: get(secret_ref.host_key()).unwrap_or_default(),
        port,
        username: get(secret_ref.username_key()).unwrap_or_default(),
        password: get(secret_ref.password_key()).unwrap_or_default(),
        sslmode,
        ca_pem,
    };
    Ok((creds, get(secret_ref.database_key())))
}

/// Gets a ConfigMap and, when `key` is given, checks it holds that key in `data` or `binaryData`.
pub async fn config_map(
    ctx: &Context,
    namespace: &str,
    name: &str,
    field: &str,
    key: Option<&str>,
) -> Result<ConfigMap, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let cm = api
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NeedsAttention {
            reason: "ConfigMapNotFound",
            source: None,
            message: format!("ConfigMap {namespace}/{name} named by {field} does not exist"),
        })?;
    if let Some(key) = key {
        let has = cm.data.as_ref().is_some_and(|d| d.contains_key(key))
            || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key));
        if !has {
            return Err(Error::NeedsAttention {
                reason: "ConfigMapKeyMissing",
                source: None,
                message: format!("ConfigMap {namespace}/{name} named by {field} has no key {key}"),
            });
        }
    }
    Ok(cm)
}

/// Every `.sql` key of the ConfigMaps, from `data` and `binaryData`.
pub fn raw_files(maps: &[ConfigMap]) -> Vec<RawFile> {
    let mut files = Vec::new();
    for cm in maps {
        let name = cm.name_any();
        for (key, text) in cm.data.iter().flatten() {
            files.push(RawFile::new(&name, key, text.as_bytes()));
        }
        for (key, bytes) in cm.binary_data.iter().flatten() {
            files.push(RawFile::new(&name, key, bytes.0.clone()));
        }
    }
    files
}

/// Resolves a ConfigMap source to its ConfigMaps: every named one must exist; a selector must match one.
pub async fn resolve_sources(
    ctx: &Context,
    ns: &str,
    source: &ConfigMapSource,
    field: &str,
) -> Result<Vec<ConfigMap>, Error> {
    if let Some(selector) = &source.config_map_selector {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        let selector_string = label_selector_string(selector);
        let list = api
            .list(&ListParams::default().labels(&selector_string))
            .await?;
        if list.items.is_empty() {
            return Err(Error::NeedsAttention {
                reason: "SourceNotFound",
                source: None,
                message: format!(
                    "no ConfigMap in {ns} matches {field}.configMapSelector ({selector_string})"
                ),
            });
        }
        return Ok(list.items);
    }
    let mut maps = Vec::new();
    for name in &source.config_map_names {
        maps.push(config_map(ctx, ns, name, &format!("{field}.configMapNames"), None).await?);
    }
    Ok(maps)
}

/// Whether ConfigMap `cm` belongs to `source` (named in it, or matched by its selector); `false` for a
/// selector that cannot be read (the resolve reports that one).
pub fn source_includes(source: &ConfigMapSource, cm: &ConfigMap) -> bool {
    use kube::core::{Selector, SelectorExt as _};
    let name = cm.metadata.name.as_deref().unwrap_or_default();
    if source.config_map_names.iter().any(|n| n == name) {
        return true;
    }
    let Some(selector) = &source.config_map_selector else {
        return false;
    };
    Selector::try_from(selector.clone())
        .is_ok_and(|s| s.matches(cm.metadata.labels.as_ref().unwrap_or(&Default::default())))
}

/// A label selector in the query-string syntax of the API (`a=b,c in (d,e),!f`).
pub fn label_selector_string(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            _ => format!("!{}", expr.key),
        });
    }
    parts.join(",")
}

/// Adds `finalizer` to a Secret (unless it is being deleted, or already held): the Secret then stays
/// readable until [`release_secret`], e.g. while a namespace is deleted around an object whose cleanup
/// needs it. The patch is conditional on the Secret's resourceVersion.
pub async fn hold_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    finalizer: &str,
) -> Result<(), Error> {
    change_finalizers(ctx, namespace, name, |secret| {
        let held = secret
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == finalizer);
        if held || secret.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let mut finalizers = secret.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(finalizer.to_string());
        Some(finalizers)
    })
    .await
}

/// Removes `finalizer` from a Secret, if present.
pub async fn release_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    finalizer: &str,
) -> Result<(), Error> {
    change_finalizers(ctx, namespace, name, |secret| {
        let finalizers: Vec<String> = secret
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect();
        (finalizers.len() != secret.metadata.finalizers.as_ref().map_or(0, Vec::len))
            .then_some(finalizers)
    })
    .await
}

/// Attempts at a finalizer change whose Secret another writer changed meanwhile (two drills holding one
/// admin Secret finish at the same moment).
const FINALIZER_ATTEMPTS: u32 = 5;

/// Reads the Secret, asks `change` for its new finalizers (`None`: nothing to do) and writes them with
/// the `resourceVersion` read; a conflict reads again.
async fn change_finalizers(
    ctx: &Context,
    namespace: &str,
    name: &str,
    change: impl Fn(&Secret) -> Option<Vec<String>>,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut attempt = 1;
    loop {
        let Some(secret) = api.get_opt(name).await? else {
            return Ok(());
        };
        let Some(finalizers) = change(&secret) else {
            return Ok(());
        };
        match patch_finalizers(&api, &secret, finalizers).await {
            Err(Error::Kube(kube::Error::Api(e)))
                if e.code == 409 && attempt < FINALIZER_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn patch_finalizers(
    api: &Api<Secret>,
    secret: &Secret,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    use kube::{
        ResourceExt,
        api::{Patch, PatchParams},
    };
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": secret.resource_version(),
    }});
    api.patch(
        &secret.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        ByteString,
        apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
    };
    use kube::api::ObjectMeta;

    use super::*;
    use crate::domain::migrations;

    #[test]
    fn selector_strings() {
        let s = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "shop".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "old".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(label_selector_string(&s), "app=shop,tier in (a,b),!old");
    }

    #[test]
    fn files_come_from_data_and_binary_data() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("m1".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("1_a.up.sql".into(), "select 1;".into())])),
            binary_data: Some(BTreeMap::from([(
                "2_b.up.sql".into(),
                ByteString(b"select 2;".to_vec()),
            )])),
            ..Default::default()
        };
        let files = raw_files(&[cm]);
        assert_eq!(files.len(), 2);
        let parsed = migrations::source::parse(&files).unwrap();
        assert_eq!(
            parsed
                .iter()
                .map(|m| m.version.to_string())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(parsed[1].up.sql, "select 2;");
    }

    #[test]
    fn finds_missing_and_empty_keys() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("host".to_string(), ByteString(b"db".to_vec())),
                ("password".to_string(), ByteString(Vec::new())),
            ])),
            string_data: Some(BTreeMap::from([(
                "username".to_string(),
                "admin".to_string(),
            )])),
            ..Default::default()
        };
        assert_eq!(
            missing_secret_keys(&secret, &["host", "username", "password", "port"]),
            vec!["password", "port"]
        );
    }
}
