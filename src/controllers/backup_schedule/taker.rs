//! The real [`BackupTaker`]: a MigrationRun that must back up first (production, or
//! `backupBeforeMigrate`) takes a backup through the BackupSchedule of its environment, as that
//! schedule's task (so it never runs beside one of the schedule's own), and waits for its manifest.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::future::BoxFuture;
use kube::{Api, ResourceExt, api::ListParams};

use super::{Backups, run};
use crate::{
    api::{BackupSchedule, DatabaseEnvironment, MigrationRun},
    controllers::backup::BackupTaker,
    domain::schedule::unscheduled_id,
};

/// While the schedule's own backup runs, look again this often.
const BUSY_POLL: Duration = Duration::from_secs(1);

pub struct ScheduleBackups {
    pub backups: Arc<Backups>,
}

impl ScheduleBackups {
    /// The BackupSchedule of `env` (the first by name when several name it).
    async fn schedule_for(&self, env: &DatabaseEnvironment) -> Result<BackupSchedule, String> {
        let ns = env.namespace().unwrap_or_default();
        let api: Api<BackupSchedule> = Api::namespaced(self.backups.ctx.client.clone(), &ns);
        let mut schedules: Vec<_> = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing BackupSchedules failed ({e})"))?
            .items
            .into_iter()
            .filter(|s| s.spec.environment_ref.name == env.name_any())
            .collect();
        schedules.sort_by_key(|s| s.name_any());
        schedules.into_iter().next().ok_or_else(|| {
            format!(
                "no BackupSchedule in namespace {ns} names DatabaseEnvironment {} (create one with spec.environmentRef.name: {}; see docs/backups.md)",
                env.name_any(),
                env.name_any()
            )
        })
    }

    async fn take_now(&self, env: &DatabaseEnvironment) -> Result<String, String> {
        let ctx = &self.backups.ctx;
        let deadline = tokio::time::Instant::now() + ctx.config.work_timeout();
        let schedule = loop {
            let schedule = self.schedule_for(env).await?;
            let uid = schedule.uid().unwrap_or_default();
            if !self.backups.tasks.is_running(&uid) {
                break schedule;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "BackupSchedule {} was busy with another backup for longer than the work timeout",
                    schedule.name_any()
                ));
            }
            tokio::time::sleep(BUSY_POLL).await;
        };
        let name = schedule.name_any();
        let resolved = super::resolve(&schedule, ctx)
            .await
            .map_err(|e| format!("BackupSchedule {name} cannot take a backup: {e}"))?;
        let id = unscheduled_id(Utc::now(), "premigrate");
        let job = super::job(ctx, &schedule, &resolved, id, "premigrate")
            .await
            .map_err(|e| format!("BackupSchedule {name} cannot take a backup: {e}"))?;
        let receiver = run::start(
            &self.backups,
            &schedule,
            job,
            run::Slot::HeldByCaller,
            |_| {},
        )
        .await
        .map_err(|e| format!("recording the backup on BackupSchedule {name} failed: {e}"))?;
        match receiver.await {
            Ok(Ok(manifest)) => Ok(manifest.id),
            Ok(Err(f)) => Err(format!(
                "the backup through BackupSchedule {name} failed: {}",
                f.message
            )),
            Err(_) => Err(format!(
                "the backup through BackupSchedule {name} was stopped"
            )),
        }
    }
}

impl BackupTaker for ScheduleBackups {
    fn available<'a>(&'a self, env: &'a DatabaseEnvironment) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.schedule_for(env).await.map(|_| ()) })
    }

    fn take<'a>(
        &'a self,
        env: &'a DatabaseEnvironment,
        _run: &'a MigrationRun,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.take_now(env))
    }
}
