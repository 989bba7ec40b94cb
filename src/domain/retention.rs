//! Grandfather-father-son retention: which successful backups to keep and which to expire.
//!
//! Pure, so the one place that decides to delete data can be tested exhaustively with dates.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

/// The rules (all counts; None or 0 disables a rule). The kept set is the union of the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub keep_last: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

/// One successful backup, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub id: String,
    pub finished_at: DateTime<Utc>,
}

/// Why a backup is kept (for logs and tests), one per backup kept; a backup kept by several
/// reasons lists the first in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Newest,
    Protected,
    Last,
    Daily,
    Weekly,
    Monthly,
}

/// The outcome: every input backup is in exactly one of the two lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Kept ids with their reason, newest first.
    pub keep: Vec<(String, Kept)>,
    /// Ids to delete, oldest first (so an interrupted cleanup loses the least valuable first).
    pub expire: Vec<String>,
}

/// The calendar bucket of a local date, for the daily/weekly/monthly rules.
type Bucket = fn(NaiveDate) -> (i32, u32);

/// Decides which backups to keep.
///
/// `rules: None` = keep everything (reported as [`Kept::Last`], as if keep_last were unbounded).
/// `protected`: ids never deleted (the newest backup that passed a restore drill). The newest
/// backup overall is always kept ([`Kept::Newest`]) whatever the rules, so retention can never
/// leave a database without a backup.
///
/// Buckets are calendar days / ISO weeks (Monday start) / calendar months in `tz`, because
/// "one per day" means the user's day, not UTC's. We use restic/borg semantics: `daily: N`
/// keeps the newest backup in each of the N most recent buckets *that contain a backup*
/// (restic `--keep-daily N`), not the buckets of the last N calendar days. So a schedule that
/// stopped for a month still keeps N daily backups instead of silently expiring them all.
/// `keep_last: N` keeps the N newest backups.
///
/// Backups in the future relative to `now` (clock skew) are kept as if newest: they sort first,
/// are kept as [`Kept::Newest`], and count in `now`'s bucket, since a skewed clock is no reason
/// to delete a fresh backup.
pub fn decide(
    backups: &[Backup],
    now: DateTime<Utc>,
    rules: Option<&Rules>,
    tz: Tz,
    protected: &[&str],
) -> Decision {
    let sorted = newest_first(backups);
    let reasons: Vec<Option<Kept>> = sorted
        .iter()
        .enumerate()
        .map(|(i, b)| forced_reason(i, b, now, protected))
        .collect();
    let reasons = match rules {
        None => fill(reasons, |_| Some(Kept::Last)),
        Some(rules) => apply_rules(reasons, &sorted, rules, now, tz),
    };
    partition(&sorted, reasons)
}

/// Sorts newest first; ties broken by id so the result does not depend on input order.
fn newest_first(backups: &[Backup]) -> Vec<&Backup> {
    let mut sorted: Vec<&Backup> = backups.iter().collect();
    sorted.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
    sorted
}

/// The reasons that hold regardless of rules: newest overall, from the future, or protected.
fn forced_reason(
    i: usize,
    backup: &Backup,
    now: DateTime<Utc>,
    protected: &[&str],
) -> Option<Kept> {
    if i == 0 || backup.finished_at > now {
        return Some(Kept::Newest);
    }
    protected
        .contains(&backup.id.as_str())
        .then_some(Kept::Protected)
}

/// Adds each rule's picks, in precedence order, to the backups not yet kept for a better reason.
fn apply_rules(
    reasons: Vec<Option<Kept>>,
    sorted: &[&Backup],
    rules: &Rules,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<Option<Kept>> {
    let last = count(rules.keep_last);
    let reasons = fill(reasons, |i| (i < last).then_some(Kept::Last));
    let day: Bucket = |d| (d.year(), d.ordinal());
    let iso_week: Bucket = |d| (d.iso_week().year(), d.iso_week().week());
    let month: Bucket = |d| (d.year(), d.month());
    let by_period = [
        (rules.daily, day, Kept::Daily),
        (rules.weekly, iso_week, Kept::Weekly),
        (rules.monthly, month, Kept::Monthly),
    ];
    by_period
        .into_iter()
        .fold(reasons, |reasons, (n, bucket, why)| {
            let picked = newest_per_bucket(sorted, count(n), bucket, now, tz);
            fill(reasons, |i| picked[i].then_some(why))
        })
}

/// A rule's count; None and 0 both disable it.
fn count(n: Option<u32>) -> usize {
    n.map_or(0, |n| n as usize)
}

/// Gives `reason(i)` to each backup that has no reason yet, keeping earlier (stronger) ones.
fn fill(reasons: Vec<Option<Kept>>, reason: impl Fn(usize) -> Option<Kept>) -> Vec<Option<Kept>> {
    reasons
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.or_else(|| reason(i)))
        .collect()
}

/// Marks the newest backup of each of the `n` most recent buckets (calendar periods in `tz`)
/// that contain a backup (`sorted` is newest first, so the first of each bucket is its newest).
fn newest_per_bucket(
    sorted: &[&Backup],
    n: usize,
    bucket: Bucket,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<bool> {
    let mut previous = None;
    let mut left = n;
    sorted
        .iter()
        .map(|b| {
            // Clamped to `now`, so a backup from a skewed clock falls in `now`'s bucket.
            let key = bucket(b.finished_at.min(now).with_timezone(&tz).date_naive());
            let starts_bucket = previous != Some(key);
            previous = Some(key);
            let keep = starts_bucket && left > 0;
            left -= usize::from(keep);
            keep
        })
        .collect()
}

/// Splits into kept (newest first) and expired (oldest first).
fn partition(sorted: &[&Backup], reasons: Vec<Option<Kept>>) -> Decision {
    let mut decision = Decision::default();
    for (backup, reason) in sorted.iter().zip(reasons) {
        match reason {
            Some(why) => decision.keep.push((backup.id.clone(), why)),
            None => decision.expire.push(backup.id.clone()),
        }
    }
    decision.expire.reverse();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kept::*;
    use chrono::{Days, NaiveDateTime, TimeZone};

    /// Parses `MM-DD HH:MM` in 2026 as UTC; tests use the same string as the backup id.
    fn t(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&format!("2026-{s}"), "%Y-%m-%d %H:%M")
            .expect("test time")
            .and_utc()
    }

    #[rustfmt::skip]
    fn backups(ids: &[&str]) -> Vec<Backup> {
        let backup = |id: &&str| Backup { id: id.to_string(), finished_at: t(id) };
        ids.iter().map(backup).collect()
    }

    #[rustfmt::skip]
    fn rules(last: u32, d: u32, w: u32, m: u32) -> Rules {
        Rules { keep_last: Some(last), daily: Some(d), weekly: Some(w), monthly: Some(m) }
    }

    #[rustfmt::skip]
    fn daily(n: u32) -> Option<Rules> {
        Some(Rules { daily: Some(n), ..Rules::default() })
    }

    #[rustfmt::skip]
    struct Case {
        name: &'static str, backups: &'static [&'static str], now: &'static str,
        rules: Option<Rules>, tz: Tz, protected: &'static [&'static str],
        keep: &'static [(&'static str, Kept)], expire: &'static [&'static str],
    }

    /// Runs `decide`, checking the result partitions the input and ignores input order.
    fn decide_checked(
        input: &[Backup],
        now: &str,
        r: Option<&Rules>,
        tz: Tz,
        p: &[&str],
    ) -> Decision {
        let d = decide(input, t(now), r, tz, p);
        let reversed: Vec<Backup> = input.iter().rev().cloned().collect();
        assert_eq!(
            decide(&reversed, t(now), r, tz, p),
            d,
            "order changed the result"
        );
        let mut ids: Vec<&str> = d.keep.iter().map(|(id, _)| id.as_str()).collect();
        ids.extend(d.expire.iter().map(String::as_str));
        let mut want: Vec<&str> = input.iter().map(|b| b.id.as_str()).collect();
        ids.sort_unstable();
        want.sort_unstable();
        assert_eq!(ids, want, "keep and expire must partition the input");
        d
    }

    fn kept(d: &Decision) -> Vec<(&str, Kept)> {
        d.keep.iter().map(|(id, why)| (id.as_str(), *why)).collect()
    }

    #[test]
    fn decide_table() {
        let ny = Tz::America__New_York;
        let utc = Tz::UTC;
        #[rustfmt::skip]
        let cases = [
            Case { name: "no rules keep everything", rules: None, tz: utc, protected: &[],
                backups: &["01-01 00:00", "12-01 03:00", "11-30 03:00"], now: "12-01 12:00",
                keep: &[("12-01 03:00", Newest), ("11-30 03:00", Last), ("01-01 00:00", Last)],
                expire: &[] },
            Case { name: "all None keeps only the newest",
                rules: Some(Rules::default()), tz: utc, protected: &[],
                backups: &["11-30 03:00", "12-01 03:00", "11-29 03:00"], now: "12-01 12:00",
                keep: &[("12-01 03:00", Newest)], expire: &["11-29 03:00", "11-30 03:00"] },
            Case { name: "all zero keeps only the newest",
                rules: Some(rules(0, 0, 0, 0)), tz: utc, protected: &[],
                backups: &["11-30 03:00", "12-01 03:00", "11-29 03:00"], now: "12-01 12:00",
                keep: &[("12-01 03:00", Newest)], expire: &["11-29 03:00", "11-30 03:00"] },
            Case { name: "protected old backup",
                rules: Some(rules(1, 0, 0, 0)), tz: utc, protected: &["01-02 03:00"],
                backups: &["12-01 03:00", "11-30 03:00", "01-02 03:00"], now: "12-01 12:00",
                keep: &[("12-01 03:00", Newest), ("01-02 03:00", Protected)],
                expire: &["11-30 03:00"] },
            // 23:30Z and 00:30Z are two UTC days but both the evening of 06-10 in New York.
            Case { name: "daily in UTC", rules: daily(2), tz: utc, protected: &[],
                backups: &["06-09 12:00", "06-10 23:30", "06-11 00:30"], now: "06-11 12:00",
                keep: &[("06-11 00:30", Newest), ("06-10 23:30", Daily)],
                expire: &["06-09 12:00"] },
            Case { name: "daily in New York", rules: daily(2), tz: ny, protected: &[],
                backups: &["06-09 12:00", "06-10 23:30", "06-11 00:30"], now: "06-11 12:00",
                keep: &[("06-11 00:30", Newest), ("06-09 12:00", Daily)],
                expire: &["06-10 23:30"] },
            Case { name: "several a day: newest of each day", rules: daily(2), tz: utc,
                protected: &[], now: "12-01 18:00",
                backups: &["12-01 01:00", "12-01 09:00", "12-01 17:00",
                    "11-30 08:00", "11-30 20:00", "11-29 20:00"],
                keep: &[("12-01 17:00", Newest), ("11-30 20:00", Daily)],
                expire: &["11-29 20:00", "11-30 08:00", "12-01 01:00", "12-01 09:00"] },
            Case { name: "future backups (clock skew) kept as newest", rules: daily(1), tz: utc,
                protected: &[],
                backups: &["12-02 03:00", "12-01 03:00", "11-30 03:00"], now: "11-30 12:00",
                keep: &[("12-02 03:00", Newest), ("12-01 03:00", Newest)],
                expire: &["11-30 03:00"] },
            Case { name: "empty input", rules: Some(rules(3, 7, 4, 12)), tz: utc, protected: &["x"],
                backups: &[], now: "12-01 12:00", keep: &[], expire: &[] },
        ];
        for c in cases {
            let d = decide_checked(
                &backups(c.backups),
                c.now,
                c.rules.as_ref(),
                c.tz,
                c.protected,
            );
            assert_eq!(kept(&d), c.keep, "{}", c.name);
            assert_eq!(d.expire, c.expire, "{}", c.name);
        }
    }

    #[test]
    fn grandfather_father_son_over_400_days() {
        // One backup a day at 03:00 UTC for 400 days ending 2026-12-01 (a Tuesday).
        let end = Utc
            .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
            .single()
            .expect("valid");
        let mut input: Vec<Backup> = (0..400)
            .filter_map(|n| end.checked_sub_days(Days::new(n)))
            .map(|at| Backup {
                id: at.format("%Y-%m-%d").to_string(),
                finished_at: at,
            })
            .collect();
        input.swap(3, 250);
        input.rotate_left(77);
        let d = decide_checked(
            &input,
            "12-01 12:00",
            Some(&rules(3, 7, 4, 12)),
            Tz::UTC,
            &[],
        );
        #[rustfmt::skip]
        let want = [
            ("2026-12-01", Newest), ("2026-11-30", Last), ("2026-11-29", Last),
            ("2026-11-28", Daily), ("2026-11-27", Daily),
            ("2026-11-26", Daily), ("2026-11-25", Daily),
            ("2026-11-22", Weekly), ("2026-11-15", Weekly), // Sundays ending earlier ISO weeks
            ("2026-10-31", Monthly), ("2026-09-30", Monthly), ("2026-08-31", Monthly),
            ("2026-07-31", Monthly), ("2026-06-30", Monthly), ("2026-05-31", Monthly),
            ("2026-04-30", Monthly), ("2026-03-31", Monthly), ("2026-02-28", Monthly),
            ("2026-01-31", Monthly),
        ];
        assert_eq!(kept(&d), want);
        assert_eq!(d.expire.len(), 400 - want.len());
        assert_eq!(d.expire.first().map(String::as_str), Some("2025-10-28"));
        assert_eq!(d.expire.last().map(String::as_str), Some("2026-11-24"));
    }
}
