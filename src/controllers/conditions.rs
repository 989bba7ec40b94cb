//! kstatus conditions: `Ready`, `Reconciling`, `Stalled`.
//!
//! A reconciler decides one [`Verdict`] per call; [`apply_verdict`] turns it into the three conditions.
//! `lastTransitionTime` only moves when a condition's status changes, so writing the same verdict twice
//! produces an identical status (and therefore no write and no new watch event).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub use crate::api::common::{
    CONDITION_READY as READY, CONDITION_RECONCILING as RECONCILING, CONDITION_STALLED as STALLED,
};

/// Where an object stands after one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything the spec asks for is done and checked.
    Ready {
        reason: &'static str,
        message: String,
    },
    /// Work is under way or waiting on something that will change by itself.
    Reconciling {
        reason: &'static str,
        message: String,
    },
    /// Progress needs someone to act (fix the spec, create the missing object).
    Stalled {
        reason: &'static str,
        message: String,
    },
}

impl Verdict {
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Ready { reason, .. }
            | Verdict::Reconciling { reason, .. }
            | Verdict::Stalled { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Verdict::Ready { message, .. }
            | Verdict::Reconciling { message, .. }
            | Verdict::Stalled { message, .. } => message,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, Verdict::Ready { .. })
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self, Verdict::Stalled { .. })
    }
}

/// Sets one condition, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Writes the three kstatus conditions for a verdict. The condition that is true carries the verdict's
/// reason and message; the false ones say briefly why they are false.
pub fn apply_verdict(
    conditions: &mut Vec<Condition>,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (reason, message) = (verdict.reason(), verdict.message());
    let (ready, reconciling, stalled) = match verdict {
        Verdict::Ready { .. } => (true, false, false),
        Verdict::Reconciling { .. } => (false, true, false),
        Verdict::Stalled { .. } => (false, false, true),
    };
    let ready_msg = if ready {
        message.to_string()
    } else {
        format!("Not ready: {message}")
    };
    set_condition(
        conditions, READY, ready, reason, &ready_msg, generation, now,
    );
    let (r_reason, r_msg) = if reconciling {
        (reason, message)
    } else {
        ("Idle", "No work in progress.")
    };
    set_condition(
        conditions,
        RECONCILING,
        reconciling,
        r_reason,
        r_msg,
        generation,
        now,
    );
    let (s_reason, s_msg) = if stalled {
        (reason, message)
    } else {
        ("NotStalled", "Nothing blocks progress.")
    };
    set_condition(
        conditions, STALLED, stalled, s_reason, s_msg, generation, now,
    );
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the object's `Ready` condition is `True` and was written for its current generation.
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    find(conditions, READY).is_some_and(|c| {
        c.status == "True" && (generation.is_none() || c.observed_generation == generation)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn stalled(reason: &'static str) -> Verdict {
        Verdict::Stalled {
            reason,
            message: format!("{reason} happened."),
        }
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut c = Vec::new();
        apply_verdict(&mut c, &stalled("EnvironmentNotFound"), Some(1), t(0));
        let before = c.clone();
        apply_verdict(&mut c, &stalled("EnvironmentNotFound"), Some(1), t(60));
        assert_eq!(
            c, before,
            "identical verdict must give identical conditions"
        );
    }

    #[test]
    fn transition_time_moves_only_for_changed_status() {
        let mut c = Vec::new();
        apply_verdict(&mut c, &stalled("EnvironmentNotFound"), Some(1), t(0));
        apply_verdict(&mut c, &stalled("SecretNotFound"), Some(2), t(30));
        let stalled_c = find(&c, STALLED).unwrap();
        assert_eq!(
            stalled_c.last_transition_time,
            Time(t(0)),
            "still stalled: time kept"
        );
        assert_eq!(stalled_c.reason, "SecretNotFound");
        assert_eq!(stalled_c.observed_generation, Some(2));

        apply_verdict(
            &mut c,
            &Verdict::Ready {
                reason: "Ready",
                message: "Done.".into(),
            },
            Some(2),
            t(90),
        );
        assert_eq!(find(&c, READY).unwrap().status, "True");
        assert_eq!(find(&c, READY).unwrap().last_transition_time, Time(t(90)));
        assert_eq!(find(&c, STALLED).unwrap().status, "False");
        assert_eq!(find(&c, STALLED).unwrap().last_transition_time, Time(t(90)));
        assert_eq!(
            find(&c, RECONCILING).unwrap().last_transition_time,
            Time(t(0)),
            "was False, stays False"
        );
    }

    #[test]
    fn exactly_one_of_three_is_true() {
        for v in [
            Verdict::Ready {
                reason: "Ready",
                message: "m".into(),
            },
            Verdict::Reconciling {
                reason: "Waiting",
                message: "m".into(),
            },
            stalled("Broken"),
        ] {
            let mut c = Vec::new();
            apply_verdict(&mut c, &v, None, t(0));
            assert_eq!(c.len(), 3);
            assert_eq!(c.iter().filter(|c| c.status == "True").count(), 1, "{v:?}");
        }
    }

    #[test]
    fn is_ready_respects_generation() {
        let mut c = Vec::new();
        apply_verdict(
            &mut c,
            &Verdict::Ready {
                reason: "Ready",
                message: "m".into(),
            },
            Some(3),
            t(0),
        );
        assert!(is_ready(&c, Some(3)));
        assert!(
            !is_ready(&c, Some(4)),
            "a newer generation is not yet ready"
        );
    }
}
