//! Resolving what a spec names: other Lifeboat objects, Secrets and their keys, ConfigMaps.
//! Errors name the object, the field that referenced it and the missing key — never a value.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::{Context, Error};
use crate::{api::ConnectionSecretRef, engines::ServerCredentials};

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
            message: format!("Secret {namespace}/{name} named by {field} does not exist"),
        })?;
    let missing = missing_secret_keys(&secret, keys);
    if !missing.is_empty() {
        return Err(Error::NeedsAttention {
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

/// Reads connection credentials from a Secret through the key names of `secret_ref`.
pub async fn connection_credentials(
    ctx: &Context,
    namespace: &str,
    secret_ref: &ConnectionSecretRef,
    field: &str,
    with_database: bool,
) -> Result<(ServerCredentials, Option<String>), Error> {
    let mut required = vec![
        secret_ref.host_key(),
        secret_ref.username_key(),
        secret_ref.password_key(),
    ];
    if with_database {
        required.push(secret_ref.database_key());
    }
    let secret = secret_with_keys(ctx, namespace, &secret_ref.name, field, &required).await?;
    let get = |key: &str| -> Option<String> {
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
    };
    let port = match get(secret_ref.port_key()) {
        None => 5432,
        Some(p) => p.trim().parse().map_err(|_| Error::NeedsAttention {
            reason: "SecretKeyInvalid",
            message: format!(
                "Secret {namespace}/{} named by {field}: key {} is not a port number",
                secret_ref.name,
                secret_ref.port_key()
            ),
        })?,
    };
    let ca_pem = get(CA_KEY).map(String::into_bytes);
    // A CA in the Secret says the server's certificate can be checked: then check it, host name included.
    let sslmode = get(secret_ref.sslmode_key()).unwrap_or_else(|| {
        if ca_pem.is_some() {
            "verify-full".into()
        } else {
            "prefer".into()
        }
    });
    if !crate::engines::SSL_MODES.contains(&sslmode.as_str()) {
        return Err(Error::NeedsAttention {
            reason: "SecretKeyInvalid",
            message: format!(
                "Secret {namespace}/{} named by {field}: sslmode {sslmode:?} is not one of {}",
                secret_ref.name,
                crate::engines::SSL_MODES.join(", ")
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
    let database = if with_database {
        get(secret_ref.database_key())
    } else {
        None
    };
    Ok((creds, database))
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
            message: format!("ConfigMap {namespace}/{name} named by {field} does not exist"),
        })?;
    if let Some(key) = key {
        let has = cm.data.as_ref().is_some_and(|d| d.contains_key(key))
            || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key));
        if !has {
            return Err(Error::NeedsAttention {
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
