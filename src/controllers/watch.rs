//! The main watch of each controller, made to survive objects it cannot read.
//!
//! A typed watch decodes each list page as a whole, so one object that does not deserialize into the
//! Rust type (written under an older, looser schema, or with validation bypassed) fails every list and
//! stops the controller for every object of its kind. Here the watch reads objects untyped and decodes
//! them one by one: an object that does not decode is skipped with a warning that names it, and the
//! others are reconciled as usual.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event, watcher},
    },
};
use serde::de::DeserializeOwned;

/// A `Controller` of `api`'s objects whose main watch is [`lenient`].
pub fn controller<K>(api: &Api<K>, client: kube::Client) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, objects) = lenient::<K>(untyped(api, client), super::watcher_config());
    Controller::for_stream(objects, store)
}

/// The changed objects of `api`, from a watch that skips objects that do not decode as `K`: the
/// trigger of a controller by another Lifeboat kind (`Controller::watches_stream`).
pub fn objects<K>(
    api: &Api<K>,
    client: kube::Client,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    lenient::<K>(untyped(api, client), super::watcher_config()).1
}

/// An untyped `Api` over the same objects as `api` (same kind, same namespace or all).
pub fn untyped<K>(api: &Api<K>, client: kube::Client) -> Api<DynamicObject>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    match api.namespace() {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    }
}

/// A store of `K` and the stream of its changed objects, fed by a watch of `api` that skips objects
/// that do not decode as `K` (see the module doc). For `Controller::for_stream`.
pub fn lenient<K>(
    api: Api<DynamicObject>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let events = watcher(api, config).filter_map(|event| async move {
        match event {
            Ok(event) => decode(event).map(Ok),
            Err(e) => Some(Err(e)),
        }
    });
    let objects = reflector::reflector(writer, events).applied_objects();
    (reader, objects)
}

/// The typed event, or `None` when its object does not decode (logged).
fn decode<K>(event: Event<DynamicObject>) -> Option<Event<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let parse = |object: DynamicObject| {
        let (namespace, name) = (
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        );
        object
            .try_parse::<K>()
            .map_err(|e| {
                tracing::warn!(
                    kind = %K::kind(&()),
                    namespace,
                    name,
                    error = %e,
                    "skipping an object that does not match this operator's schema; fix or delete it (the others are reconciled)"
                );
            })
            .ok()
    };
    match event {
        Event::Apply(o) => parse(o).map(Event::Apply),
        Event::Delete(o) => parse(o).map(Event::Delete),
        Event::InitApply(o) => parse(o).map(Event::InitApply),
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// A `Controller::watches` mapper: a change of a referenced object (an environment, a schedule) wakes the
/// objects of kind `K` in its namespace whose spec names it (`referenced_name`).
pub fn referencing<K, R>(
    store: kube::runtime::reflector::Store<K>,
    referenced_name: fn(&K) -> &str,
) -> impl Fn(R) -> Vec<kube::runtime::reflector::ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + ResourceExt + Clone + Send + Sync + 'static,
    R: ResourceExt,
{
    move |changed: R| {
        let (ns, name) = (changed.namespace(), changed.name_any());
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == ns && referenced_name(o) == name)
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

/// A `Controller::watches` mapper for ConfigMaps: a changed migration source wakes the objects of kind
/// `K` in its namespace whose source (`source`: `None` when the object does not care now) includes it,
/// so new migration files apply within seconds, not at the next health period.
pub fn sourcing<K>(
    store: kube::runtime::reflector::Store<K>,
    source: fn(&K) -> Option<&crate::api::ConfigMapSource>,
) -> impl Fn(k8s_openapi::api::core::v1::ConfigMap) -> Vec<kube::runtime::reflector::ObjectRef<K>>
+ Send
+ Sync
+ 'static
where
    K: Resource<DynamicType = ()> + ResourceExt + Clone + Send + Sync + 'static,
{
    move |cm| {
        let ns = cm.namespace();
        store
            .state()
            .into_iter()
            .filter(|o| o.namespace() == ns)
            .filter(|o| source(o).is_some_and(|s| super::references::source_includes(s, &cm)))
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RestoreDrill;

    fn object(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreDrill",
            "metadata": {"name": "d", "namespace": "n"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn objects_that_do_not_decode_are_skipped_and_the_rest_pass() {
        let good = object(serde_json::json!({
            "backupScheduleRef": {"name": "s"}, "target": {"server": {"adminSecretRef": {"name": "a"}}}
        }));
        let bad = object(serde_json::json!({"backupScheduleRef": {"name": "s"}}));
        assert!(matches!(
            decode::<RestoreDrill>(Event::InitApply(good.clone())),
            Some(Event::InitApply(d)) if d.spec.backup_schedule_ref.name == "s"
        ));
        assert!(decode::<RestoreDrill>(Event::Apply(bad.clone())).is_none());
        assert!(decode::<RestoreDrill>(Event::InitApply(bad)).is_none());
        assert!(matches!(
            decode::<RestoreDrill>(Event::InitDone),
            Some(Event::InitDone)
        ));
    }
}
