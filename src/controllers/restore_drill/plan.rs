//! The pure parts of a restore drill: when to run, how a restored database compares with its backup's
//! manifest, and whether the measured RTO and RPO meet the objectives. Table-tested, no client.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    api::{
        RestoreDrillStatus,
        restore_drill::{DrillResult, DrillRun, MAX_DRILL_HISTORY, Objectives},
    },
    controllers::{clock::to_chrono, conditions::Verdict, schedule::Schedule},
    domain::schedule as slots,
};

/// What the reconcile does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run a drill now (`slot`: the scheduled time it is for).
    Run { slot: Option<DateTime<Utc>> },
    /// Nothing until `next` (`None`: a one-shot drill that ran for this generation).
    Wait { next: Option<DateTime<Utc>> },
}

/// A one-shot drill runs once per generation; a scheduled one at its newest due slot.
pub fn decide(
    status: &RestoreDrillStatus,
    schedule: Option<&Schedule>,
    generation: Option<i64>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Step {
    let Some(schedule) = schedule else {
        let ran = status
            .last_run
            .as_ref()
            .is_some_and(|r| r.generation == generation);
        return if ran {
            Step::Wait { next: None }
        } else {
            Step::Run { slot: None }
        };
    };
    let last = status.last_schedule_time.as_ref().map(to_chrono);
    match slots::decide(&schedule.cron, schedule.time_zone, last, created, now, None) {
        slots::Due::Run { slot } | slots::Due::Missed { slot, .. } => {
            Step::Run { slot: Some(slot) }
        }
        slots::Due::Wait { next } => Step::Wait { next },
    }
}

/// Whether the run met every objective set, with a message naming each objective and by how much it
/// was met or missed. `None` when no objective is set (or the drill never measured an RTO).
pub fn objectives(run: &DrillRun, objectives: Option<&Objectives>) -> Option<(bool, String)> {
    let o = objectives?;
    if o.rto.is_none() && o.rpo.is_none() {
        return None;
    }
    let mut met = true;
    let mut parts = Vec::new();
    let mut judge = |what: &str, limit: Option<Duration>, measured: Option<i64>| {
        let Some(limit) = limit else { return };
        let limit_s = limit.as_secs() as i64;
        match measured {
            None => {
                met = false;
                parts.push(format!(
                    "{what} not measured (the drill failed) against {limit_s} s"
                ));
            }
            Some(m) if m > limit_s => {
                met = false;
                parts.push(format!(
                    "{what} {m} s missed the objective of {limit_s} s by {} s",
                    m - limit_s
                ));
            }
            Some(m) => parts.push(format!("{what} {m} s met the objective of {limit_s} s")),
        }
    };
    judge("RTO", o.rto.map(Into::into), run.rto_seconds);
    judge("RPO", o.rpo.map(Into::into), run.rpo_seconds);
    Some((met, format!("{}.", parts.join("; "))))
}

/// Records a finished run: `lastRun`, the bounded history, `objectivesMet`.
pub fn record(status: &mut RestoreDrillStatus, run: DrillRun, objectives_met: Option<bool>) {
    status.history.insert(0, run.clone());
    status.history.truncate(MAX_DRILL_HISTORY);
    status.last_run = Some(run);
    status.objectives_met = objectives_met;
}

/// The Ready verdict from the last run.
pub fn verdict(status: &RestoreDrillStatus, running: bool) -> Verdict {
    if running {
        return Verdict::Reconciling {
            reason: "DrillRunning",
            message: "A restore drill is running.".into(),
        };
    }
    match &status.last_run {
        None => Verdict::Reconciling {
            reason: "DrillPending",
            message: "No drill has run yet.".into(),
        },
        Some(r) if r.result == DrillResult::Passed => Verdict::Ready {
            reason: "DrillPassed",
            message: format!(
                "Backup {} restored and passed {} checks; RTO {} s, RPO {} s.",
                r.backup_id,
                r.checks.len(),
                r.rto_seconds.unwrap_or_default(),
                r.rpo_seconds.unwrap_or_default()
            ),
        },
        Some(r) => Verdict::Stalled {
            reason: "DrillFailed",
            message: format!(
                "The drill of backup {} failed: {}",
                if r.backup_id.is_empty() {
                    "(none)"
                } else {
                    &r.backup_id
                },
                r.message.as_deref().unwrap_or("see status.lastRun.checks")
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest::TableStats;

    fn t(name: &str, rows: i64, sum: &str) -> TableStats {
        TableStats {
            schema: "public".into(),
            name: name.into(),
            rows,
            checksum: Some(sum.into()),
        }
    }

    #[test]
    fn table_comparison_names_what_differs() {
        let manifest = [t("a", 3, "x"), t("b", 2, "y"), t("gone", 1, "z")];
        let restored = [t("a", 3, "x"), t("b", 2, "Y"), t("extra", 0, "0")];
        let rows =
            crate::controllers::restore::compare_tables("rowCounts", &manifest, &restored, false);
        assert!(!rows.passed);
        let m = rows.message.unwrap();
        assert!(
            m.contains("public.gone is missing") && m.contains("public.extra was restored"),
            "{m}"
        );
        assert!(!m.contains("public.b"), "row counts of b agree: {m}");
        let sums =
            crate::controllers::restore::compare_tables("checksums", &manifest, &restored, true);
        assert!(
            sums.message
                .unwrap()
                .contains("public.b: backup checksum y, restored Y")
        );
        let same = crate::controllers::restore::compare_tables(
            "rowCounts",
            &manifest[..2],
            &restored[..2],
            false,
        );
        assert!(same.passed);
    }

    #[test]
    fn objectives_say_which_was_missed_and_by_how_much() {
        let run = DrillRun {
            rto_seconds: Some(100),
            rpo_seconds: Some(7200),
            ..Default::default()
        };
        let o = |rto: Option<u64>, rpo: Option<u64>| Objectives {
            rto: rto.map(|s| Duration::from_secs(s).into()),
            rpo: rpo.map(|s| Duration::from_secs(s).into()),
        };
        assert_eq!(objectives(&run, None), None);
        assert_eq!(objectives(&run, Some(&o(None, None))), None);
        let (met, msg) = objectives(&run, Some(&o(Some(900), Some(3600)))).unwrap();
        assert!(!met);
        assert!(
            msg.contains("RTO 100 s met")
                && msg.contains("RPO 7200 s missed the objective of 3600 s by 3600 s"),
            "{msg}"
        );
        let (met, _) = objectives(&run, Some(&o(Some(100), Some(86400)))).unwrap();
        assert!(met, "equal to the objective meets it");
        let failed = DrillRun::default();
        let (met, msg) = objectives(&failed, Some(&o(Some(900), None))).unwrap();
        assert!(!met && msg.contains("not measured"));
    }

    #[test]
    fn one_shot_drills_run_once_per_generation() {
        let now = Utc::now();
        let mut status = RestoreDrillStatus::default();
        assert_eq!(
            decide(&status, None, Some(1), now, now),
            Step::Run { slot: None }
        );
        record(
            &mut status,
            DrillRun {
                generation: Some(1),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            decide(&status, None, Some(1), now, now),
            Step::Wait { next: None }
        );
        assert_eq!(
            decide(&status, None, Some(2), now, now),
            Step::Run { slot: None }
        );
        for _ in 0..15 {
            record(&mut status, DrillRun::default(), None);
        }
        assert_eq!(status.history.len(), MAX_DRILL_HISTORY);
    }
}
