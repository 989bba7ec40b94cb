//! A destination is proven before anything depends on it (as Velero checks a BackupStorageLocation):
//! when the destination or its credentials change, and every [`RECHECK`] after that, a small object is
//! written, read back and deleted ([`BackupStore::probe`]). Until that passes the schedule is not
//! `Ready` (`DestinationUnavailable`, naming the destination and S3's answer, never the secret). What
//! was checked is kept in `status.destinationCheck` as a fingerprint of the settings and of the
//! credentials Secret's `resourceVersion`, so no secret material is kept.

use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::Error;
use crate::{
    api::{BackupSchedule, backup_schedule::DestinationCheck},
    domain::digest::hex,
    storage::{BackupStore, StorageError},
};

/// A destination that passed is checked again after this long.
pub const RECHECK: Duration = Duration::from_secs(600);
/// The probe object's name under the schedule's prefix.
pub const PROBE_OBJECT: &str = ".lifeboat-destination-check";
/// The reason a schedule is not Ready while its destination fails the check.
pub const REASON: &str = "DestinationUnavailable";

/// What identifies the destination as checked: its settings and the credentials Secret's version.
pub fn fingerprint(schedule: &BackupSchedule, secret_version: &str) -> String {
    let s3 = schedule.spec.destination.s3.as_ref();
    let text = serde_json::json!({
        "destination": s3,
        "secretVersion": secret_version,
        "namespace": schedule.namespace(),
        "name": schedule.name_any(),
    })
    .to_string();
    hex(&Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// Whether the destination must be checked now: never checked, checked with other settings or
/// credentials, or checked more than [`RECHECK`] ago.
pub fn due(last: Option<&DestinationCheck>, fingerprint: &str, now: chrono::DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    let age = last
        .checked_at
        .as_ref()
        .map(|t| now - super::plan::to_chrono(t));
    last.fingerprint != fingerprint || age.is_none_or(|a| a.to_std().map_or(true, |a| a >= RECHECK))
}

/// Checks the destination when [`due`]: the check to record in status after a pass (`None` when none
/// was due). A failure is an error the schedule reports (not Ready) and retries with backoff.
pub async fn ensure(
    schedule: &BackupSchedule,
    store: &BackupStore,
    secret_version: &str,
) -> Result<Option<DestinationCheck>, Error> {
    let print = fingerprint(schedule, secret_version);
    let now = Utc::now();
    let last = schedule
        .status
        .as_ref()
        .and_then(|s| s.destination_check.as_ref());
    if !due(last, &print, now) {
        return Ok(None);
    }
    store
        .probe(PROBE_OBJECT)
        .await
        .map_err(|e| Error::NeedsAttention {
            reason: REASON,
            message: format!("destination {} is unavailable: {}", store.url(), answer(&e)),
            source: Some(Box::new(e)),
        })?;
    Ok(Some(DestinationCheck {
        checked_at: Some(super::plan::to_time(now)),
        fingerprint: print,
    }))
}

/// What the store said, for people: S3's error code and message when the answer is an S3 error
/// document, the error's own words otherwise (a bounded length; never a credential: requests are
/// signed, and S3's answers name at most the access key ID).
pub fn answer(e: &StorageError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    if let Some(code) = tag("Code") {
        let head = text.split('<').next().unwrap_or_default().trim_end();
        return match tag("Message").filter(|m| !m.trim().is_empty()) {
            Some(message) => format!("{head} S3 answered {code}: {message}"),
            None => format!("{head} S3 answered {code}"),
        };
    }
    if text.chars().count() > 400 {
        text = text.chars().take(400).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fingerprint: &str, minutes_ago: i64) -> DestinationCheck {
        DestinationCheck {
            checked_at: Some(super::super::plan::to_time(
                Utc::now() - chrono::Duration::minutes(minutes_ago),
            )),
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn a_check_is_due_when_new_changed_or_old() {
        let now = Utc::now();
        assert!(due(None, "a", now));
        assert!(!due(Some(&check("a", 1)), "a", now));
        assert!(due(Some(&check("b", 1)), "a", now), "settings changed");
        assert!(due(Some(&check("a", 11)), "a", now), "older than RECHECK");
        assert!(
            due(Some(&check("a", -5)), "a", now),
            "a clock that went back"
        );
    }

    #[test]
    fn s3_answers_are_read_for_their_code_and_message() {
        let e = StorageError::Config {
            detail: "Error performing PUT http://s3/b/x: Client error with status 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The Access Key Id you provided does not exist in our records.</Message><Resource>/b/x</Resource></Error>".into(),
        };
        let said = answer(&e);
        assert!(
            said.ends_with("S3 answered InvalidAccessKeyId: The Access Key Id you provided does not exist in our records."),
            "{said}"
        );
        assert!(said.contains("403 Forbidden"), "{said}");
        let long = StorageError::Config {
            detail: "x".repeat(1000),
        };
        assert!(answer(&long).chars().count() <= 401);
    }

    #[test]
    fn the_fingerprint_follows_settings_and_secret_version() {
        let mut s: BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "n", "namespace": "ns"},
            "spec": {"environmentRef": {"name": "e"}, "schedule": "0 0 * * *",
                     "destination": {"s3": {"bucket": "backups", "credentialsSecretRef": {"name": "s3"}}}}
        }))
        .unwrap();
        let a = fingerprint(&s, "1");
        assert_eq!(a, fingerprint(&s, "1"));
        assert_ne!(a, fingerprint(&s, "2"), "the Secret changed");
        s.spec.destination.s3.as_mut().unwrap().bucket = "other".into();
        assert_ne!(a, fingerprint(&s, "1"), "the bucket changed");
    }
}
