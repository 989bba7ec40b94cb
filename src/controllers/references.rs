//! Resolving what a spec names: other Lifeboat objects, Secrets and their keys, ConfigMaps.
//! Errors name the object, the field that referenced it and the missing key — never a value.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::{Context, Error};

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
            kind: kind_name::<K>(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        })
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    // Kinds are static strings in kube-derive; leak-free mapping through a match keeps reasons static.
    match K::kind(&()).as_ref() {
        "DatabaseEnvironment" => "DatabaseEnvironment",
        "MigrationRun" => "MigrationRun",
        "BackupSchedule" => "BackupSchedule",
        "RestoreDrill" => "RestoreDrill",
        _ => "object",
    }
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
        .ok_or_else(|| Error::MissingInput {
            reason: "SecretNotFound",
            message: format!("Secret {namespace}/{name} named by {field} does not exist"),
        })?;
    let missing = missing_secret_keys(&secret, keys);
    if !missing.is_empty() {
        return Err(Error::MissingInput {
            reason: "SecretKeyMissing",
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
        .ok_or_else(|| Error::MissingInput {
            reason: "ConfigMapNotFound",
            message: format!("ConfigMap {namespace}/{name} named by {field} does not exist"),
        })?;
    if let Some(key) = key {
        let has = cm.data.as_ref().is_some_and(|d| d.contains_key(key))
            || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key));
        if !has {
            return Err(Error::MissingInput {
                reason: "ConfigMapKeyMissing",
                message: format!("ConfigMap {namespace}/{name} named by {field} has no key {key}"),
            });
        }
    }
    Ok(cm)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

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
