//! The pure middle of the BackupSchedule reconcile: what to do now, given the spec, the status and the
//! clock; and what the status says, given the backups it records. No client, no database: table-tested.

use chrono::{DateTime, Utc};

use crate::api::{RestoreDrill, backup_schedule::VerifiedRestore, restore_drill::DrillResult};
pub use crate::controllers::clock::{to_chrono, to_time};
use crate::{
    api::{
        BackupScheduleSpec, BackupScheduleStatus,
        backup_schedule::{BackupPhase, BackupRecord, MAX_RECENT_BACKUPS},
    },
    controllers::conditions::Verdict,
    domain::schedule::{self, Due},
};

use super::super::schedule::Schedule;

/// What the reconcile does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A backup recorded `Running` has no task in this process (the operator stopped during it): mark
    /// it failed and remove its objects.
    Interrupted { id: String },
    /// Take a backup now.
    Run {
        id: String,
        kind: &'static str,
        /// The slot, for scheduled backups (recorded as `lastScheduleTime`).
        slot: Option<DateTime<Utc>>,
        /// The trigger handled, for manual backups (recorded as `lastHandledTrigger`).
        trigger: Option<String>,
    },
    /// The newest slot is past `startingDeadlineSeconds`: record it handled and say so.
    Missed {
        slot: DateTime<Utc>,
        late_seconds: u64,
    },
    /// Nothing to do until `next` (`None`: suspended, or the cron never fires again).
    Wait { next: Option<DateTime<Utc>> },
}

/// Decides the next step; called only when no backup task of this schedule runs in this process (a
/// `Running` record then means the backup was interrupted).
pub fn decide(
    spec: &BackupScheduleSpec,
    status: &BackupScheduleStatus,
    parsed: &Schedule,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Step {
    if let Some(r) = status
        .recent_backups
        .iter()
        .find(|r| r.phase == BackupPhase::Running)
    {
        return Step::Interrupted { id: r.id.clone() };
    }
    if let Some(trigger) = &spec.trigger
        && status.last_handled_trigger.as_ref() != Some(trigger)
    {
        let id = schedule::free_unscheduled_id(now, "manual", |id| {
            status.recent_backups.iter().any(|r| r.id == id)
        });
        return Step::Run {
            id,
            kind: "manual",
            slot: None,
            trigger: Some(trigger.clone()),
        };
    }
    if spec.suspend {
        return Step::Wait { next: None };
    }
    let last = status.last_schedule_time.as_ref().map(to_chrono);
    let deadline = spec
        .starting_deadline_seconds
        .map(|s| std::time::Duration::from_secs(s.max(0) as u64));
    match schedule::decide(&parsed.cron, parsed.time_zone, last, created, now, deadline) {
        Due::Run { slot } => Step::Run {
            id: schedule::slot_id(slot),
            kind: "scheduled",
            slot: Some(slot),
            trigger: None,
        },
        Due::Missed { slot, late } => Step::Missed {
            slot,
            late_seconds: late.as_secs(),
        },
        Due::Wait { next } => Step::Wait { next },
    }
}

/// Records `record` in the status: replaces the entry with its id or adds it first, keeps at most
/// [`MAX_RECENT_BACKUPS`], and moves `lastSuccessfulBackup` when it succeeded.
pub fn record(status: &mut BackupScheduleStatus, record: BackupRecord) {
    if record.phase == BackupPhase::Succeeded {
        status.last_successful_backup = Some(record.clone());
    }
    match status.recent_backups.iter_mut().find(|r| r.id == record.id) {
        Some(r) => *r = record,
        None => status.recent_backups.insert(0, record),
    }
    status.recent_backups.truncate(MAX_RECENT_BACKUPS);
}

/// The Ready verdict for a status: the newest backup decides.
pub fn verdict(status: &BackupScheduleStatus, suspended: bool) -> Verdict {
    let next = status
        .next_schedule_time
        .as_ref()
        .map(|t| format!(" Next backup at {}.", t.0))
        .unwrap_or_default();
    match status.recent_backups.first() {
        Some(r) if r.phase == BackupPhase::Running => Verdict::Reconciling {
            reason: "BackupRunning",
            message: format!("Backup {} is running.", r.id),
        },
        Some(r) if r.phase == BackupPhase::Failed => Verdict::Stalled {
            reason: "BackupFailed",
            message: format!(
                "Backup {} failed: {}{next}",
                r.id,
                r.message.as_deref().unwrap_or("no reason recorded")
            ),
        },
        Some(r) => Verdict::Ready {
            reason: "BackupSucceeded",
            message: format!(
                "Backup {} finished{}{}.{next}",
                r.id,
                r.finished_at
                    .as_ref()
                    .map(|t| format!(" at {}", t.0))
                    .unwrap_or_default(),
                r.size_bytes
                    .map(|b| format!(" ({b} bytes)"))
                    .unwrap_or_default()
            ),
        },
        None if suspended => Verdict::Ready {
            reason: "Suspended",
            message: "Suspended; no backup taken yet (a trigger still takes one).".into(),
        },
        None => Verdict::Ready {
            reason: "Scheduled",
            message: format!("No backup yet.{next}"),
        },
    }
}

/// `BackupFailing`: true while the newest finished backup failed, with its reason and message.
pub fn failing(status: &BackupScheduleStatus) -> (bool, String, String) {
    match status
        .recent_backups
        .iter()
        .find(|r| r.phase != BackupPhase::Running)
    {
        Some(r) if r.phase == BackupPhase::Failed => (
            true,
            r.reason.clone().unwrap_or_else(|| "BackupFailed".into()),
            format!(
                "Backup {} failed: {}",
                r.id,
                r.message.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        Some(r) => (
            false,
            "BackupSucceeded".into(),
            format!("The newest backup, {}, succeeded.", r.id),
        ),
        None => (
            false,
            "NoBackupYet".into(),
            "No backup has finished yet.".into(),
        ),
    }
}

/// The newest passed drill among `drills` and the `Recoverable` condition: true when it finished
/// within `within` of `now`.
pub fn recoverable(
    drills: &[RestoreDrill],
    now: DateTime<Utc>,
    within: std::time::Duration,
) -> (Option<VerifiedRestore>, (bool, &'static str, String)) {
    let newest = drills
        .iter()
        .flat_map(|d| {
            d.status
                .iter()
                .flat_map(|s| s.history.iter().chain(s.last_run.iter()))
                .filter(|r| r.result == DrillResult::Passed)
                .filter_map(move |r| Some((to_chrono(r.finished_at.as_ref()?), r, d)))
        })
        .max_by_key(|(at, _, _)| *at);
    let Some((at, run, drill)) = newest else {
        return (
            None,
            (
                false,
                "NoPassedDrill",
                "No RestoreDrill has passed on this schedule's backups yet; create one (docs/backups.md).".into(),
            ),
        );
    };
    use kube::ResourceExt;
    let verified = VerifiedRestore {
        drill: drill.name_any(),
        backup_id: run.backup_id.clone(),
        finished_at: run.finished_at.clone(),
        rto_seconds: run.rto_seconds,
    };
    let age = (now - at).to_std().unwrap_or_default();
    let condition = if age <= within {
        (
            true,
            "DrillPassed",
            format!(
                "RestoreDrill {} restored backup {} at {at} (RTO {} s).",
                verified.drill,
                verified.backup_id,
                verified.rto_seconds.unwrap_or_default()
            ),
        )
    } else {
        (
            false,
            "DrillTooOld",
            format!(
                "The newest passed drill ({} of backup {}) finished at {at}, longer ago than recoverableWithin ({} s).",
                verified.drill,
                verified.backup_id,
                within.as_secs()
            ),
        )
    };
    (Some(verified), condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::schedule::parse;

    fn spec(extra: &str) -> BackupScheduleSpec {
        serde_yaml::from_str(&format!(
            "environmentRef: {{name: e}}\nschedule: '0 3 * * *'\ndestination: {{s3: {{bucket: bbb, credentialsSecretRef: {{name: s}}}}}}\n{extra}"
        ))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rec(id: &str, phase: BackupPhase) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            phase,
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let parsed = parse("0 3 * * *", None, "spec.schedule").unwrap();
        let created = at("2026-11-30T12:00:00Z");
        let now = at("2026-12-01T03:00:05Z");
        let empty = BackupScheduleStatus::default();
        let handled = BackupScheduleStatus {
            last_schedule_time: Some(to_time(at("2026-12-01T03:00:00Z"))),
            ..Default::default()
        };
        let running = BackupScheduleStatus {
            recent_backups: vec![rec("20261201T030000Z", BackupPhase::Running)],
            ..Default::default()
        };
        let triggered = BackupScheduleStatus {
            last_handled_trigger: Some("one".into()),
            ..handled.clone()
        };
        let table: Vec<(&str, BackupScheduleSpec, &BackupScheduleStatus, Step)> = vec![
            (
                "the slot is due",
                spec(""),
                &empty,
                Step::Run {
                    id: "20261201T030000Z".into(),
                    kind: "scheduled",
                    slot: Some(at("2026-12-01T03:00:00Z")),
                    trigger: None,
                },
            ),
            (
                "the slot was handled",
                spec(""),
                &handled,
                Step::Wait {
                    next: Some(at("2026-12-02T03:00:00Z")),
                },
            ),
            (
                "a Running record without a task was interrupted",
                spec(""),
                &running,
                Step::Interrupted {
                    id: "20261201T030000Z".into(),
                },
            ),
            (
                "suspended",
                spec("suspend: true"),
                &empty,
                Step::Wait { next: None },
            ),
            (
                "a new trigger runs even when suspended",
                spec("suspend: true\ntrigger: two"),
                &triggered,
                Step::Run {
                    id: "20261201T030005Z-manual".into(),
                    kind: "manual",
                    slot: None,
                    trigger: Some("two".into()),
                },
            ),
            (
                "a handled trigger does not run again",
                spec("trigger: one"),
                &triggered,
                Step::Wait {
                    next: Some(at("2026-12-02T03:00:00Z")),
                },
            ),
        ];
        for (what, spec, status, want) in table {
            assert_eq!(decide(&spec, status, &parsed, created, now), want, "{what}");
        }
    }

    #[test]
    fn a_slot_past_its_starting_deadline_is_missed() {
        let parsed = parse("0 3 * * *", None, "spec.schedule").unwrap();
        let late = decide(
            &spec("startingDeadlineSeconds: 60"),
            &BackupScheduleStatus::default(),
            &parsed,
            at("2026-11-30T12:00:00Z"),
            at("2026-12-01T03:05:00Z"),
        );
        assert_eq!(
            late,
            Step::Missed {
                slot: at("2026-12-01T03:00:00Z"),
                late_seconds: 300
            }
        );
    }

    #[test]
    fn records_are_bounded_and_replace_by_id() {
        let mut status = BackupScheduleStatus::default();
        for i in 0..15 {
            record(&mut status, rec(&format!("b{i:02}"), BackupPhase::Running));
        }
        assert_eq!(status.recent_backups.len(), MAX_RECENT_BACKUPS);
        assert_eq!(status.recent_backups[0].id, "b14");
        record(&mut status, rec("b14", BackupPhase::Succeeded));
        assert_eq!(status.recent_backups.len(), MAX_RECENT_BACKUPS);
        assert_eq!(status.recent_backups[0].phase, BackupPhase::Succeeded);
        assert_eq!(status.last_successful_backup.as_ref().unwrap().id, "b14");
    }

    #[test]
    fn the_newest_backup_decides_the_verdict() {
        let mut status = BackupScheduleStatus::default();
        assert_eq!(verdict(&status, false).reason(), "Scheduled");
        assert!(!failing(&status).0);
        record(&mut status, rec("a", BackupPhase::Succeeded));
        assert!(verdict(&status, false).is_ready());
        let mut failed = rec("b", BackupPhase::Failed);
        failed.reason = Some("DumpFailed".into());
        failed.message = Some("pg_dump exited with status 1".into());
        record(&mut status, failed);
        assert!(verdict(&status, false).is_stalled());
        let (on, reason, message) = failing(&status);
        assert!(on && reason == "DumpFailed" && message.contains("status 1"));
        record(&mut status, rec("c", BackupPhase::Running));
        assert_eq!(verdict(&status, false).reason(), "BackupRunning");
        assert!(failing(&status).0, "still failing while the next one runs");
    }

    #[test]
    fn recoverable_needs_a_recent_passed_drill() {
        let drill = |runs: &str| -> RestoreDrill {
            serde_yaml::from_str(&format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: RestoreDrill\nmetadata: {{name: weekly}}\nspec: {{backupScheduleRef: {{name: s}}, target: {{server: {{adminSecretRef: {{name: a}}}}}}}}\nstatus: {{history: [{runs}]}}"
            ))
            .unwrap()
        };
        let week = std::time::Duration::from_secs(7 * 86400);
        let now = at("2026-12-08T00:00:00Z");
        let (v, (ok, reason, _)) = recoverable(&[], now, week);
        assert!(v.is_none() && !ok && reason == "NoPassedDrill");
        let failed = drill("{backupId: b1, result: Failed, finishedAt: '2026-12-07T00:00:00Z'}");
        assert!(
            !recoverable(&[failed], now, week).1.0,
            "a failed drill proves nothing"
        );
        let both = drill(
            "{backupId: b2, result: Failed, finishedAt: '2026-12-07T00:00:00Z'}, {backupId: b1, result: Passed, finishedAt: '2026-12-06T00:00:00Z', rtoSeconds: 9}",
        );
        let (v, (ok, reason, _)) = recoverable(std::slice::from_ref(&both), now, week);
        assert!(ok && reason == "DrillPassed");
        assert_eq!(v.unwrap().backup_id, "b1");
        let (_, (ok, reason, _)) = recoverable(&[both], at("2026-12-20T00:00:00Z"), week);
        assert!(!ok && reason == "DrillTooOld");
    }
}
