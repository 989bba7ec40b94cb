//! The seam between migrations and backups: a MigrationRun that must back up first asks a
//! [`BackupTaker`]. It lives apart from both controllers, so the BackupSchedule controller can provide
//! the real one without importing MigrationRun.

use futures::future::BoxFuture;

use crate::api::{DatabaseEnvironment, MigrationRun};

/// Takes a backup of an environment's database before a migration. The BackupSchedule controller
/// provides the real one (`backup_schedule::taker`).
pub trait BackupTaker: Send + Sync {
    /// Whether a backup can be taken for `env`; `Err` says why not, as a clause ("backups are …").
    fn available<'a>(&'a self, env: &'a DatabaseEnvironment) -> BoxFuture<'a, Result<(), String>>;
    /// Takes a backup of the environment's database and waits until it is complete; returns its id.
    fn take<'a>(
        &'a self,
        env: &'a DatabaseEnvironment,
        run: &'a MigrationRun,
    ) -> BoxFuture<'a, Result<String, String>>;
}
