//! RestoreDrill controller. This build resolves the BackupSchedule and the scratch target's admin Secret
//! and reports what is missing. Restoring is not in this build: a drill whose inputs are present is
//! reported `Stalled` with reason `NotImplemented`, never `Ready`.

use std::sync::Arc;

use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action},
};
use tracing::instrument;

use super::{
    Context, Error, conditions::Verdict, drain, error_policy, instrumented, references, status,
    watcher_config,
};
use crate::api::{BackupSchedule, RestoreDrill, RestoreDrillStatus};

pub const CONTROLLER: &str = "restoredrill";

pub async fn controller(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let drills = Controller::new(ctx.watched_api::<RestoreDrill>(), watcher_config());
    let store = drills.store();
    let stream = drills
        .watches(
            ctx.watched_api::<BackupSchedule>(),
            watcher_config(),
            super::referencing(store, |d: &RestoreDrill| &d.spec.backup_schedule_ref.name),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy::<RestoreDrill>(CONTROLLER), ctx);
    drain(CONTROLLER, stream).await;
}

#[instrument(skip(drill, ctx), fields(namespace = drill.namespace().unwrap_or_default(), name = drill.name_any()))]
async fn reconcile(drill: Arc<RestoreDrill>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(CONTROLLER, drill.clone(), ctx.clone(), async move {
        let result = evaluate(&drill, &ctx).await;
        let verdict = match &result {
            Ok(v) => v.clone(),
            Err(e) => status::verdict_for(e),
        };
        status::write(
            ctx.as_ref(),
            drill.as_ref(),
            &verdict,
            |_: &mut RestoreDrillStatus| {},
        )
        .await?;
        result.map(|_| Action::await_change())
    })
    .await
}

async fn evaluate(drill: &RestoreDrill, ctx: &Context) -> Result<Verdict, Error> {
    let ns = drill.namespace().unwrap_or_default();
    if let Some(expression) = &drill.spec.schedule {
        super::schedule::parse(expression, drill.spec.time_zone.as_deref(), "spec.schedule")?;
    }
    let _schedule: BackupSchedule = references::lifeboat_object(
        ctx,
        &ns,
        &drill.spec.backup_schedule_ref.name,
        "BackupScheduleNotFound",
    )
    .await?;
    if let Some(server) = &drill.spec.target.server {
        let r = &server.admin_secret_ref;
        references::secret_with_keys(
            ctx,
            &ns,
            &r.name,
            "spec.target.server.adminSecretRef",
            &[r.host_key(), r.username_key(), r.password_key()],
        )
        .await?;
    }
    Err(Error::NotImplemented {
        message: "all inputs are present, but restore drills are not in this build yet; nothing was restored".into(),
    })
}
