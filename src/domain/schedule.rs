//! When a scheduled backup is due, and how backups are named.
//!
//! Pure functions of the cron expression, the clock and what was already handled, so the
//! controller can stay a thin shell and the tricky cases (downtime, deadlines, time zones, DST)
//! are tested here without a cluster.

use std::time::Duration;

use Due::{Missed, Run, Wait};
use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// The timestamp layout of backup ids: compact, filename- and label-safe, and it sorts
/// chronologically as a plain string.
const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// Length of a timestamp written with [`ID_FORMAT`] (four-digit years).
const ID_TIME_LEN: usize = 16;

/// What a schedule should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Take the backup of this slot now.
    Run { slot: DateTime<Utc> },
    /// The newest slot that passed is older than startingDeadlineSeconds: it is skipped (record
    /// it as handled and emit an event), `late` is how late it would be.
    Missed { slot: DateTime<Utc>, late: Duration },
    /// Nothing to do until `next` (None: the cron never fires again).
    Wait { next: Option<DateTime<Utc>> },
}

/// Decides what a schedule should do at `now`.
///
/// `last_slot`: the slot most recently handled (run or missed); None for a new schedule, then
/// `created` (the object's creation time) stands in for it, so a new schedule never runs for a
/// slot before it existed.
/// Only the newest slot in (last_slot, now] counts: after downtime only the newest missed slot
/// runs, like a Kubernetes CronJob with concurrencyPolicy Forbid, because a burst of catch-up
/// backups would only load the database to produce copies nobody needs.
/// `starting_deadline`: None = run however late. Some(d): run only if now - slot <= d, else
/// Missed, because a backup far off its slot may hit the hours the slot was chosen to avoid.
pub fn decide(
    cron: &Cron,
    tz: Tz,
    last_slot: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    starting_deadline: Option<Duration>,
) -> Due {
    let handled = last_slot.unwrap_or(created);
    match newest_slot_at_or_before(cron, tz, now) {
        Some(slot) if slot > handled => run_or_miss(slot, now, starting_deadline),
        // A handled slot later than `now` means our clock lags the one that recorded it: wait
        // past it rather than offering that slot again.
        _ => Wait {
            next: next_slot(cron, tz, handled.max(now)),
        },
    }
}

/// Runs `slot` unless it is later than the deadline allows.
fn run_or_miss(slot: DateTime<Utc>, now: DateTime<Utc>, deadline: Option<Duration>) -> Due {
    // `slot <= now` here, so the conversion cannot fail; zero is the harmless fallback anyway.
    let late = (now - slot).to_std().unwrap_or_default();
    match deadline {
        Some(limit) if late > limit => Missed { slot, late },
        _ => Run { slot },
    }
}

/// The newest slot at or before `at` (inclusive, so a controller woken exactly on the slot runs
/// it), or None if the cron never fired before.
fn newest_slot_at_or_before(cron: &Cron, tz: Tz, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&at.with_timezone(&tz), true)
        .ok()
        .map(|slot| slot.with_timezone(&Utc))
}

/// The next slot strictly after `after`, in `tz` (cron fields are wall-clock in tz; DST handled
/// by croner).
pub fn next_slot(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|slot| slot.with_timezone(&Utc))
}

/// The id of a scheduled backup: the slot in UTC as `YYYYMMDDTHHMMSSZ` (e.g. 20261201T030000Z).
/// Deterministic, so a retry of the same slot gets the same id and cannot duplicate it; sorts
/// chronologically as a string.
pub fn slot_id(slot: DateTime<Utc>) -> String {
    slot.format(ID_FORMAT).to_string()
}

/// The id of an unscheduled backup started at `at` with a kind suffix:
/// `<YYYYMMDDTHHMMSSZ>-<kind>`, e.g. `20261201T101502Z-manual` or `...-premigrate`.
/// The suffix keeps it apart from a scheduled backup of the same second. `kind` must be
/// `[a-z]+` (checked in debug builds), so ids stay label-safe.
pub fn unscheduled_id(at: DateTime<Utc>, kind: &str) -> String {
    debug_assert!(
        !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase()),
        "backup kind must be [a-z]+: {kind:?}"
    );
    format!("{}-{kind}", slot_id(at))
}

/// [`unscheduled_id`] at `at`, or at the next second whose id `taken` does not hold: ids have one-second
/// resolution, and two unscheduled backups in one second must not share one.
pub fn free_unscheduled_id(at: DateTime<Utc>, kind: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut at = at;
    let mut id = unscheduled_id(at, kind);
    while taken(&id) {
        at += chrono::Duration::seconds(1);
        id = unscheduled_id(at, kind);
    }
    id
}

/// The time encoded in a backup id (either form); None if the id does not start with that
/// timestamp, so ids not made by [`slot_id`] / [`unscheduled_id`] are never misdated.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, rest) = id.split_at_checked(ID_TIME_LEN)?;
    if !has_id_shape(stamp) || !(rest.is_empty() || rest.starts_with('-')) {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, ID_FORMAT)
        .ok()
        .map(|naive| naive.and_utc())
}

/// Checks the exact layout `DDDDDDDDTDDDDDDZ`, because chrono's parser alone also accepts
/// shorter fields and signs.
fn has_id_shape(stamp: &str) -> bool {
    stamp.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'T',
        15 => b == b'Z',
        _ => b.is_ascii_digit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn cron(expr: &str) -> Cron {
        Cron::from_str(expr).expect("valid cron")
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    struct Case {
        name: &'static str,
        cron: &'static str,
        tz: Tz,
        last: Option<&'static str>,
        created: &'static str,
        now: &'static str,
        deadline: Option<Duration>,
        want: Due,
    }

    fn run(slot: &str) -> Due {
        Run { slot: t(slot) }
    }

    fn wait(next: &str) -> Due {
        Wait {
            next: Some(t(next)),
        }
    }

    #[test]
    fn decide_table() {
        let utc = Tz::UTC;
        let berlin = Tz::Europe__Berlin;
        let created = "2026-01-01T00:00:00Z";
        #[rustfmt::skip]
        let cases = [
            Case { name: "new: slot after creation", cron: "0 3 * * *", tz: utc, last: None,
                created: "2026-12-01T02:59:00Z", now: "2026-12-01T03:00:30Z", deadline: None,
                want: run("2026-12-01T03:00:00Z") },
            Case { name: "new: slot before creation", cron: "0 3 * * *", tz: utc, last: None,
                created: "2026-12-01T03:01:00Z", now: "2026-12-01T03:02:00Z", deadline: None,
                want: wait("2026-12-02T03:00:00Z") },
            Case { name: "downtime: only the newest slot runs", cron: "0 * * * *", tz: utc,
                last: Some("2026-12-01T03:00:00Z"), created, now: "2026-12-01T07:20:00Z",
                deadline: None, want: run("2026-12-01T07:00:00Z") },
            Case { name: "every minute after downtime", cron: "* * * * *", tz: utc,
                last: Some("2026-12-01T03:00:00Z"), created, now: "2026-12-01T03:05:59Z",
                deadline: None, want: run("2026-12-01T03:05:00Z") },
            Case { name: "slot already handled", cron: "0 3 * * *", tz: utc,
                last: Some("2026-12-01T03:00:00Z"), created, now: "2026-12-01T15:00:00Z",
                deadline: None, want: wait("2026-12-02T03:00:00Z") },
            Case { name: "handled slot ahead of a lagging clock", cron: "0 3 * * *", tz: utc,
                last: Some("2026-12-01T03:00:00Z"), created, now: "2026-12-01T02:59:58Z",
                deadline: None, want: wait("2026-12-02T03:00:00Z") },
            Case { name: "deadline exceeded", cron: "0 3 * * *", tz: utc,
                last: Some("2026-11-30T03:00:00Z"), created, now: "2026-12-01T03:10:00Z",
                deadline: Some(secs(300)),
                want: Missed { slot: t("2026-12-01T03:00:00Z"), late: secs(600) } },
            Case { name: "within deadline", cron: "0 3 * * *", tz: utc,
                last: Some("2026-11-30T03:00:00Z"), created, now: "2026-12-01T03:05:00Z",
                deadline: Some(secs(300)), want: run("2026-12-01T03:00:00Z") },
            Case { name: "deadline 0, now == slot", cron: "0 3 * * *", tz: utc,
                last: Some("2026-11-30T03:00:00Z"), created, now: "2026-12-01T03:00:00Z",
                deadline: Some(secs(0)), want: run("2026-12-01T03:00:00Z") },
            Case { name: "sub-second now just past the slot", cron: "0 3 * * *", tz: utc,
                last: Some("2026-11-30T03:00:00Z"), created, now: "2026-12-01T03:00:00.250Z",
                deadline: Some(secs(0)), want: Missed { slot: t("2026-12-01T03:00:00Z"),
                late: Duration::from_millis(250) } },
            Case { name: "Berlin winter is UTC+1", cron: "0 3 * * *", tz: berlin,
                last: Some("2026-01-14T02:00:00Z"), created, now: "2026-01-15T12:00:00Z",
                deadline: None, want: run("2026-01-15T02:00:00Z") },
            Case { name: "Berlin summer is UTC+2", cron: "0 3 * * *", tz: berlin,
                last: Some("2026-07-14T01:00:00Z"), created, now: "2026-07-15T12:00:00Z",
                deadline: None, want: run("2026-07-15T01:00:00Z") },
        ];
        for c in cases {
            let got = decide(
                &cron(c.cron),
                c.tz,
                c.last.map(t),
                t(c.created),
                t(c.now),
                c.deadline,
            );
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    /// 02:30 does not exist in Berlin on 2026-03-29; whatever croner picks, the day must have
    /// exactly one slot and deciding around it must not panic.
    #[test]
    fn dst_spring_forward_gives_a_single_slot() {
        let c = cron("30 2 * * *");
        let tz = Tz::Europe__Berlin;
        let day_before = t("2026-03-28T01:30:00Z"); // 02:30 CET
        let gap_slot = next_slot(&c, tz, day_before).expect("a slot on the DST day");
        let day_after = next_slot(&c, tz, gap_slot).expect("a slot the day after");
        assert!(gap_slot > t("2026-03-28T23:00:00Z") && gap_slot < t("2026-03-29T22:00:00Z"));
        assert_eq!(day_after, t("2026-03-30T00:30:00Z")); // 02:30 CEST
        let due = decide(
            &c,
            tz,
            Some(day_before),
            day_before,
            t("2026-03-29T12:00:00Z"),
            None,
        );
        assert_eq!(due, Run { slot: gap_slot });
        let due = decide(
            &c,
            tz,
            Some(gap_slot),
            day_before,
            t("2026-03-29T12:00:00Z"),
            None,
        );
        assert_eq!(
            due,
            Wait {
                next: Some(day_after)
            }
        );
    }

    #[test]
    fn next_slot_is_strictly_after() {
        let c = cron("0 3 * * *");
        let at_slot = t("2026-12-01T03:00:00Z");
        assert_eq!(
            next_slot(&c, Tz::UTC, at_slot),
            Some(t("2026-12-02T03:00:00Z"))
        );
        let before = t("2026-12-01T02:59:59Z");
        assert_eq!(next_slot(&c, Tz::UTC, before), Some(at_slot));
        let every_minute = cron("* * * * *");
        let mid_minute = t("2026-12-01T03:00:30Z");
        assert_eq!(
            next_slot(&every_minute, Tz::UTC, mid_minute),
            Some(t("2026-12-01T03:01:00Z"))
        );
    }

    #[test]
    fn ids() {
        let slot = Utc
            .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
            .single()
            .expect("valid");
        assert_eq!(slot_id(slot), "20261201T030000Z");
        assert_eq!(id_time(&slot_id(slot)), Some(slot));
        let at = t("2026-12-01T10:15:02Z");
        assert_eq!(unscheduled_id(at, "manual"), "20261201T101502Z-manual");
        let taken = ["20261201T101502Z-manual", "20261201T101503Z-manual"];
        assert_eq!(
            free_unscheduled_id(at, "manual", |id| taken.contains(&id)),
            "20261201T101504Z-manual"
        );
        assert_eq!(id_time("20261201T101502Z-manual"), Some(at));
        assert_eq!(id_time(&unscheduled_id(at, "premigrate")), Some(at));
        assert!(slot_id(slot) < slot_id(at));
        for bad in [
            "garbage",
            "",
            "20261201T030000",
            "20261301T030000Z",
            "20261201T030000Zx",
        ] {
            assert_eq!(id_time(bad), None, "{bad:?}");
        }
        assert_eq!(id_time("+0261201T030000Z"), None);
        assert_eq!(id_time("2026120１T030000Z"), None); // multibyte: no panic on slicing
    }

    #[test]
    fn id_drops_sub_second_precision() {
        let precise = t("2026-12-01T03:00:00.750Z");
        assert_eq!(id_time(&slot_id(precise)), Some(t("2026-12-01T03:00:00Z")));
    }
}
