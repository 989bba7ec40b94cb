//! MigrationRun controller. This build resolves what a run needs (its environment, Ready; its source
//! ConfigMaps; a backup when one is required) and reports precisely what is missing. Executing migrations
//! is not in this build: a run whose inputs are all present is reported `Stalled` with reason
//! `NotImplemented`, never `Ready`.

use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use tracing::instrument;

use super::{
    Context, Error,
    conditions::{self, Verdict},
    drain, error_policy, instrumented, references, status, watcher_config,
};
use crate::api::{
    ConditionedStatus, ConfigMapSource, DatabaseEnvironment, MigrationRun, MigrationRunStatus,
    database_environment::Tier, migration_run::MigrationPhase,
};

pub const CONTROLLER: &str = "migrationrun";

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let runs = Controller::new(ctx.watched_api::<MigrationRun>(), watcher_config());
    let store = runs.store();
    let stream = runs
        // A run waiting for its environment is reconciled again when that environment changes.
        .watches(
            ctx.watched_api::<DatabaseEnvironment>(),
            watcher_config(),
            move |env| {
                let (ns, name) = (env.namespace(), env.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|run| run.namespace() == ns && run.spec.environment_ref.name == name)
                    .map(|run| ObjectRef::from_obj(run.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.map(|_| ()))
        .run(reconcile, error_policy::<MigrationRun>(CONTROLLER), ctx);
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(run, ctx), fields(namespace = run.namespace().unwrap_or_default(), name = run.name_any()))]
async fn reconcile(run: Arc<MigrationRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(CONTROLLER, run.clone(), ctx.clone(), async move {
        if run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(MigrationPhase::is_finished)
        {
            return Ok(Action::await_change());
        }
        let result = evaluate(&run, &ctx).await;
        let verdict = match &result {
            Ok(v) => v.clone(),
            Err(e) => status::verdict_for(e),
        };
        status::write(
            ctx.as_ref(),
            run.as_ref(),
            &verdict,
            |s: &mut MigrationRunStatus| {
                s.phase.get_or_insert(MigrationPhase::Pending);
            },
        )
        .await?;
        result.map(|_| Action::await_change())
    })
    .await
}

/// Whether the environment requires a backup before migrating: production always does; other tiers when
/// `backupBeforeMigrate` is true.
pub fn backup_required(run: &MigrationRun, env: &DatabaseEnvironment) -> bool {
    env.spec.tier == Tier::Production || run.spec.backup_before_migrate == Some(true)
}

async fn evaluate(run: &MigrationRun, ctx: &Context) -> Result<Verdict, Error> {
    let ns = run.namespace().unwrap_or_default();
    let env: DatabaseEnvironment = references::lifeboat_object(
        ctx,
        &ns,
        &run.spec.environment_ref.name,
        "EnvironmentNotFound",
    )
    .await?;
    let env_conditions = env
        .status
        .as_ref()
        .map(|s| s.conditions())
        .unwrap_or_default();
    if !conditions::is_ready(env_conditions, env.metadata.generation) {
        return Ok(Verdict::Reconciling {
            reason: "EnvironmentNotReady",
            message: format!(
                "Waiting for DatabaseEnvironment {} to become Ready.",
                env.name_any()
            ),
        });
    }
    if env.spec.tier == Tier::Production && run.spec.backup_before_migrate == Some(false) {
        return Err(Error::InvalidSpec {
            reason: "BackupRequired",
            message: format!(
                "DatabaseEnvironment {} is production: migrations must back up first; remove backupBeforeMigrate: false",
                env.name_any()
            ),
        });
    }
    resolve_sources(ctx, &ns, &run.spec.source, "spec.source").await?;
    if backup_required(run, &env) {
        return Err(Error::InvalidSpec {
            reason: "BackupsNotAvailable",
            message: "this run requires a backup before migrating (production tier or backupBeforeMigrate) and this build cannot take backups yet; nothing was changed".into(),
        });
    }
    Err(Error::NotImplemented {
        message: "all inputs are present, but executing migrations is not in this build yet; nothing was changed".into(),
    })
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
            return Err(Error::MissingInput {
                reason: "SourceNotFound",
                message: format!(
                    "no ConfigMap in {ns} matches {field}.configMapSelector ({selector_string})"
                ),
            });
        }
        return Ok(list.items);
    }
    let mut maps = Vec::new();
    for name in &source.config_map_names {
        maps.push(
            references::config_map(ctx, ns, name, &format!("{field}.configMapNames"), None).await?,
        );
    }
    Ok(maps)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;

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
}
