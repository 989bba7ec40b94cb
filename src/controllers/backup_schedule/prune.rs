//! Applying retention to what is in storage: the store is listed (it is the record of which backups
//! exist), `domain::retention` decides, expired backups are deleted manifest first. Folders without a
//! manifest (left by a failed removal) are removed once they are an hour old. A failed deletion is
//! logged and retried after the next backup, never fatal.

use std::str::FromStr;

use chrono::Utc;
use tracing::{info, warn};

use crate::{
    api::backup_schedule::Retention,
    domain::{
        retention::{self, Backup, Rules},
        schedule::id_time,
    },
    storage::BackupStore,
};

/// A folder without a manifest is left alone this long (a backup may still be writing it).
const PARTIAL_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub expired: Vec<String>,
    pub partial: Vec<String>,
}

/// Applies the schedule's retention; `current`: the backup just taken (never removed).
pub async fn apply(
    store: &BackupStore,
    retention: Option<&Retention>,
    time_zone: Option<&str>,
    current: &str,
) -> Pruned {
    let listed = match store.list().await {
        Ok(l) => l,
        Err(e) => {
            warn!(store = %store.url(), error = %e, "retention: listing backups failed; retried after the next backup");
            return Pruned::default();
        }
    };
    let now = Utc::now();
    let backups: Vec<Backup> = listed
        .iter()
        .filter(|l| l.has_manifest)
        .map(|l| Backup {
            id: l.id.clone(),
            finished_at: id_time(&l.id).unwrap_or(l.last_modified),
        })
        .collect();
    let drilled = listed
        .iter()
        .filter(|l| l.has_manifest && l.drill_passed)
        .max_by_key(|l| id_time(&l.id).unwrap_or(l.last_modified))
        .map(|l| l.id.as_str());
    let protected: Vec<&str> = [Some(current), drilled].into_iter().flatten().collect();
    let rules = retention.map(rules);
    let tz = time_zone
        .and_then(|z| chrono_tz::Tz::from_str(z).ok())
        .unwrap_or(chrono_tz::UTC);
    let decision = retention::decide(&backups, now, rules.as_ref(), tz, &protected);
    let mut pruned = Pruned::default();
    for id in decision.expire {
        match store.delete_backup(&id).await {
            Ok(()) => pruned.expired.push(id),
            Err(e) => {
                warn!(backup = %id, error = %e, "retention: deleting an expired backup failed; retried after the next backup")
            }
        }
    }
    for l in listed.iter().filter(|l| !l.has_manifest && l.id != current) {
        if now - l.last_modified > PARTIAL_GRACE {
            match store.delete_backup(&l.id).await {
                Ok(()) => pruned.partial.push(l.id.clone()),
                Err(e) => {
                    warn!(backup = %l.id, error = %e, "retention: removing a partial backup failed")
                }
            }
        }
    }
    if !pruned.expired.is_empty() || !pruned.partial.is_empty() {
        info!(store = %store.url(), expired = ?pruned.expired, partial = ?pruned.partial, "retention applied");
    }
    pruned
}

/// The API's counts as retention rules (negative counts cannot pass the API server; read as 0).
pub fn rules(r: &Retention) -> Rules {
    let count = |n: Option<i32>| n.map(|n| n.max(0) as u32);
    Rules {
        keep_last: count(r.keep_last),
        daily: count(r.daily),
        weekly: count(r.weekly),
        monthly: count(r.monthly),
    }
}
