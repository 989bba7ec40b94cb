//! `BackupsExpected` on production environments: true while production has no successful backup
//! within twice its schedule's interval (or no BackupSchedule at all), with what to do about it. Read
//! from the BackupSchedules of the namespace on every health check of a production environment.

use chrono::{DateTime, Utc};
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    api::{BackupSchedule, DatabaseEnvironment, database_environment::Tier},
    controllers::{Context, schedule},
    domain::schedule::next_slot,
};

pub const CONDITION_BACKUPS_EXPECTED: &str = "BackupsExpected";

/// The condition's value: `missing` is its status (true = a backup is expected and missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub missing: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The condition for a production environment; `None` for other tiers or when the schedules cannot
/// be listed (the condition is then left as it was).
pub async fn check(ctx: &Context, env: &DatabaseEnvironment) -> Option<Expectation> {
    if env.spec.tier != Tier::Production {
        return None;
    }
    let api: Api<BackupSchedule> =
        Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let schedules = api.list(&ListParams::default()).await.ok()?.items;
    Some(expectation(&env.name_any(), &schedules, Utc::now()))
}

/// Pure: the newest successful backup of the schedules naming `env`, against twice the interval of
/// the schedule that took it (or of the first schedule, when none succeeded yet; counted from its
/// creation).
pub fn expectation(env: &str, schedules: &[BackupSchedule], now: DateTime<Utc>) -> Expectation {
    let mine: Vec<&BackupSchedule> = schedules
        .iter()
        .filter(|s| s.spec.environment_ref.name == env)
        .collect();
    if mine.is_empty() {
        return Expectation {
            missing: true,
            reason: "NoBackupSchedule",
            message: format!(
                "Production expects backups, but no BackupSchedule names {env}; create one (docs/backups.md)."
            ),
        };
    }
    let newest = mine
        .iter()
        .filter_map(|s| {
            let r = s.status.as_ref()?.last_successful_backup.as_ref()?;
            let at = to_chrono(r.finished_at.as_ref()?);
            Some((at, r.id.clone(), *s))
        })
        .max_by_key(|(at, _, _)| *at);
    match newest {
        Some((at, id, s)) => match window(s, now) {
            Some(w) if now - at > w => Expectation {
                missing: true,
                reason: "BackupTooOld",
                message: format!(
                    "The newest successful backup, {id} of BackupSchedule {}, finished at {at}: more than twice the schedule's interval ago ({} s).",
                    s.name_any(),
                    w.num_seconds()
                ),
            },
            _ => Expectation {
                missing: false,
                reason: "BackupRecent",
                message: format!(
                    "Backup {id} of BackupSchedule {} finished at {at}.",
                    s.name_any()
                ),
            },
        },
        None => without_success(mine[0], now),
    }
}

/// Twice the interval of `s`'s cron at `now`: how old its newest backup may be.
fn window(s: &BackupSchedule, now: DateTime<Utc>) -> Option<chrono::TimeDelta> {
    let parsed = schedule::parse(
        &s.spec.schedule,
        s.spec.time_zone.as_deref(),
        "spec.schedule",
    )
    .ok()?;
    let a = next_slot(&parsed.cron, parsed.time_zone, now)?;
    let b = next_slot(&parsed.cron, parsed.time_zone, a)?;
    Some((b - a) * 2)
}

/// No schedule of the environment has a successful backup: missing once `first` has existed for
/// longer than its window.
fn without_success(first: &BackupSchedule, now: DateTime<Utc>) -> Expectation {
    let created = first
        .metadata
        .creation_timestamp
        .as_ref()
        .map(to_chrono)
        .unwrap_or(now);
    match window(first, now) {
        Some(w) if now - created > w => Expectation {
            missing: true,
            reason: "NoSuccessfulBackup",
            message: format!(
                "BackupSchedule {} has existed for more than twice its interval without a successful backup.",
                first.name_any()
            ),
        },
        _ => Expectation {
            missing: false,
            reason: "FirstBackupPending",
            message: format!(
                "BackupSchedule {} has not taken its first backup yet.",
                first.name_any()
            ),
        },
    }
}

fn to_chrono(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(env: &str, created: &str, last_success: Option<&str>) -> BackupSchedule {
        let mut s: BackupSchedule = serde_yaml::from_str(&format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: nightly, creationTimestamp: '{created}'}}\nspec: {{environmentRef: {{name: {env}}}, schedule: '0 3 * * *', destination: {{s3: {{bucket: bbb, credentialsSecretRef: {{name: s}}}}}}}}"
        ))
        .unwrap();
        if let Some(at) = last_success {
            s.status = Some(
                serde_yaml::from_str(&format!(
                    "lastSuccessfulBackup: {{id: x, phase: Succeeded, finishedAt: '{at}'}}"
                ))
                .unwrap(),
            );
        }
        s
    }

    #[test]
    fn production_backups_are_expected_within_twice_the_interval() {
        let now: DateTime<Utc> = "2026-12-05T12:00:00Z".parse().unwrap();
        let table = [
            (vec![], true, "NoBackupSchedule"),
            (
                vec![schedule("other", "2026-11-01T00:00:00Z", None)],
                true,
                "NoBackupSchedule",
            ),
            (
                vec![schedule("prod", "2026-12-05T11:00:00Z", None)],
                false,
                "FirstBackupPending",
            ),
            (
                vec![schedule("prod", "2026-11-01T00:00:00Z", None)],
                true,
                "NoSuccessfulBackup",
            ),
            (
                vec![schedule(
                    "prod",
                    "2026-11-01T00:00:00Z",
                    Some("2026-12-05T03:00:09Z"),
                )],
                false,
                "BackupRecent",
            ),
            (
                vec![schedule(
                    "prod",
                    "2026-11-01T00:00:00Z",
                    Some("2026-12-03T03:00:09Z"),
                )],
                true,
                "BackupTooOld",
            ),
        ];
        for (schedules, missing, reason) in table {
            let e = expectation("prod", &schedules, now);
            assert_eq!((e.missing, e.reason), (missing, reason), "{}", e.message);
        }
    }
}
