//! Writing an object's status: conditions from a [`Verdict`], `observedGeneration`, and events on
//! transitions. A status equal to the one already stored is not written at all.

use std::fmt::Debug;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::object::HasStatus,
    runtime::events::EventType,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Context, FIELD_MANAGER,
    conditions::{self, Verdict},
    error::Error,
};
use crate::api::ConditionedStatus;

/// Computes the new status from the object's current one and `verdict` (plus kind-specific fields set by
/// `update`), writes it if it differs, and publishes an event when the `Ready` reason or status changed.
pub async fn write<K>(
    ctx: &Context,
    obj: &K,
    verdict: &Verdict,
    update: impl FnOnce(&mut K::Status),
) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
    K::Status: ConditionedStatus + Clone + PartialEq + Serialize,
{
    write_inner(ctx, obj, verdict, update, false).await
}

/// Like [`write`], but only if the object is unchanged since `obj` was read (its `resourceVersion`
/// is sent as a precondition): for status that more than one writer updates (a BackupSchedule's
/// backups, written by its reconcile and by the task taking a backup), so no writer overwrites a
/// newer status with an older one. A conflict is an [`Error::Kube`] with code 409; read again and retry.
pub async fn write_checked<K>(
    ctx: &Context,
    obj: &K,
    verdict: &Verdict,
    update: impl FnOnce(&mut K::Status),
) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
    K::Status: ConditionedStatus + Clone + PartialEq + Serialize,
{
    write_inner(ctx, obj, verdict, update, true).await
}

async fn write_inner<K>(
    ctx: &Context,
    obj: &K,
    verdict: &Verdict,
    update: impl FnOnce(&mut K::Status),
    precondition: bool,
) -> Result<(), Error>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
    K::Status: ConditionedStatus + Clone + PartialEq + Serialize,
{
    let old = obj.status().cloned();
    let mut new = old.clone().unwrap_or_default();
    update(&mut new);
    let generation = obj.meta().generation;
    new.set_observed_generation(generation);
    conditions::apply_verdict(new.conditions_mut(), verdict, generation, Timestamp::now());
    if old.as_ref() == Some(&new) {
        return Ok(());
    }

    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    if precondition && let Some(rv) = &obj.meta().resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    let before = old
        .as_ref()
        .and_then(|s| conditions::find(s.conditions(), conditions::READY).cloned());
    let changed = before
        .as_ref()
        .is_none_or(|c| c.reason != verdict.reason() || (c.status == "True") != verdict.is_ready());
    if changed {
        let type_ = if verdict.is_stalled() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(obj, type_, verdict.reason(), verdict.message())
            .await;
    }
    Ok(())
}

/// The verdict an error stands for: errors a person must fix are `Stalled`, the rest `Reconciling`.
pub fn verdict_for(error: &Error) -> Verdict {
    if error.is_stalled() {
        Verdict::Stalled {
            reason: error.reason(),
            message: sentence(&error.to_string()),
        }
    } else {
        Verdict::Reconciling {
            reason: error.reason(),
            message: sentence(&format!("Retrying: {error}")),
        }
    }
}

/// Condition messages are one sentence: capitalised, ending with a full stop.
pub fn sentence(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences() {
        assert_eq!(
            sentence("secret x has no key password"),
            "Secret x has no key password."
        );
        assert_eq!(sentence("Done."), "Done.");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(super::super::truncate("ééé", 3), "é…");
        assert_eq!(super::super::truncate("abc", 5), "abc");
    }
}
