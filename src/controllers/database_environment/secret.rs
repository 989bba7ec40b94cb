//! The connection Secret `<name>-connection` and the generated password it carries.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use rand::{Rng, distr::Alphanumeric};

use super::{CA_KEY, PASSWORD_LENGTH, refuse_foreign};
use crate::{
    api::DatabaseEnvironment,
    controllers::{Context, Error, FIELD_MANAGER},
    engines::{ConnectionDetails, ENGINE, ServerCredentials},
};

pub(super) fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

/// The password in this environment's connection Secret, if that Secret exists and is ours.
pub(super) async fn existing_password(
    ctx: &Context,
    env: &DatabaseEnvironment,
) -> Result<Option<String>, Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let Some(secret) = api.get_opt(&env.connection_secret_name()).await? else {
        return Ok(None);
    };
    refuse_foreign(Some(&secret), env)?;
    Ok(secret
        .data
        .and_then(|d| {
            d.get("password")
                .map(|p| String::from_utf8_lossy(&p.0).into_owned())
        })
        .filter(|p| !p.is_empty()))
}

pub(super) async fn write_connection_secret(
    ctx: &Context,
    env: &DatabaseEnvironment,
    creds: &ServerCredentials,
    database: &str,
) -> Result<(), Error> {
    let data = ENGINE.connection_data(creds, database);
    write_secret_data(ctx, env, data, creds.ca_pem.as_deref()).await
}

/// Writes the connection Secret with the engine's `data` (and the server's CA, when there is one);
/// refuses a Secret of that name this environment did not make.
pub(super) async fn write_secret_data(
    ctx: &Context,
    env: &DatabaseEnvironment,
    data: BTreeMap<String, String>,
    ca_pem: Option<&[u8]>,
) -> Result<(), Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let name = env.connection_secret_name();
    let mut data: BTreeMap<String, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    if let Some(ca) = ca_pem {
        data.insert(CA_KEY.into(), ByteString(ca.to_vec()));
    }
    let current = api.get_opt(&name).await?;
    refuse_foreign(current.as_ref(), env)?;
    if current.is_some_and(|c| c.data.as_ref() == Some(&data)) {
        return Ok(());
    }
    let owner: OwnerReference = env
        .controller_owner_ref(&())
        .expect("a stored object has a name and uid");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "lifeboat".into()),
                ("lifeboat.dev/environment".into(), env.name_any()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    let mut patch = serde_json::to_value(&secret)?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Secret".into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert_ne!(a, b);
    }
}
