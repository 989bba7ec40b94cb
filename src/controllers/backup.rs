//! The seam between migrations and backups: a MigrationRun that must back up first asks a
//! [`BackupTaker`]. It lives apart from both controllers, so the BackupSchedule controller can provide
//! the real one without importing MigrationRun.

use futures::future::BoxFuture;

use crate::api::{DatabaseEnvironment, MigrationRun};

/// Takes a backup of an environment's database before a migration. The BackupSchedule controller will
/// provide the real one; until then [`BackupsNotAvailable`] refuses, and runs that need a backup fail
/// before touching the database.
pub trait BackupTaker: Send + Sync {
    /// Whether a backup can be taken for `env`; `Err` says why not, as a clause ("backups are …").
    fn available(&self, env: &DatabaseEnvironment) -> Result<(), String>;
    /// Takes a backup of the environment's database and waits until it is complete; returns its id.
    fn take<'a>(
        &'a self,
        env: &'a DatabaseEnvironment,
        run: &'a MigrationRun,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// This build cannot take backups (BackupSchedule is not implemented yet).
pub struct BackupsNotAvailable;

const NO_BACKUPS: &str =
    "backups are not available yet (this build of Lifeboat cannot take BackupSchedule backups)";

impl BackupTaker for BackupsNotAvailable {
    fn available(&self, _: &DatabaseEnvironment) -> Result<(), String> {
        Err(NO_BACKUPS.into())
    }
    fn take<'a>(
        &'a self,
        _: &'a DatabaseEnvironment,
        _: &'a MigrationRun,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err(NO_BACKUPS.to_string()) })
    }
}
