//! Errors of the controllers. Each variant has a static [`Error::reason`], used as the condition reason,
//! the event reason and the metric label; the message (Display) is for people and never carries a secret.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::engines::Failure;

/// An underlying error kept as the cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (network, conflict, permission).
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    /// Another Lifeboat object named in the spec does not exist. Its controller watches that kind, so the
    /// object is reconciled again as soon as it appears.
    #[error("{kind} {namespace}/{name} does not exist")]
    MissingObject {
        kind: String,
        namespace: String,
        name: String,
        reason: &'static str,
    },

    /// Something a person must fix outside the spec: a missing Secret/ConfigMap or key, wrong credentials,
    /// an SQL error in a seed or migration. Reported `Stalled`; retried with backoff because the fix
    /// happens in objects or servers Lifeboat does not watch.
    #[error("{message}")]
    NeedsAttention {
        reason: &'static str,
        message: String,
        /// The error underneath, when there is one (a PostgreSQL error, an I/O error): kept for
        /// callers and logs, never shown in status (the message already says what matters).
        #[source]
        source: Option<BoxError>,
    },

    /// Something outside Kubernetes is not there yet or is busy (a server down, a template in use);
    /// retried with backoff and reported `Reconciling`, not `Stalled`.
    #[error("{message}")]
    Transient {
        reason: &'static str,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The spec is valid for the API server but cannot be acted on; waits for a spec change.
    #[error("{message}")]
    InvalidSpec {
        reason: &'static str,
        message: String,
    },

    /// The spec asks for something this build of Lifeboat does not do yet.
    #[error("{message}")]
    NotImplemented { message: String },

    /// Writing the object's status failed to serialize.
    #[error("could not serialize status: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// CamelCase constant for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::MissingObject { reason, .. } => reason,
            Error::NeedsAttention { reason, .. } => reason,
            Error::Transient { reason, .. } => reason,
            Error::InvalidSpec { reason, .. } => reason,
            Error::NotImplemented { .. } => "NotImplemented",
            Error::Serialization(_) => "SerializationError",
        }
    }

    /// Whether the error needs a person to change something (kstatus `Stalled`) rather than time.
    pub fn is_stalled(&self) -> bool {
        !matches!(self, Error::Kube(_) | Error::Transient { .. })
    }

    /// What the controller does next: errors that only a spec change or a watched object can fix wait
    /// for that change; everything else retries with exponential backoff.
    pub fn action(&self, attempt: u32) -> Action {
        match self {
            Error::MissingObject { .. }
            | Error::InvalidSpec { .. }
            | Error::NotImplemented { .. } => Action::await_change(),
            Error::Kube(_)
            | Error::NeedsAttention { .. }
            | Error::Transient { .. }
            | Error::Serialization(_) => Action::requeue(backoff(attempt)),
        }
    }
}

/// The error of a reconcile run through `kube::runtime::finalizer`: the apply's or cleanup's own error,
/// or the failed finalizer patch.
pub fn from_finalizer(e: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::InvalidSpec {
            reason: "FinalizerError",
            message: other.to_string(),
        },
    }
}

/// Converts an engine's failure (a PostgreSQL error) into a controller error: transient ones are
/// retried with backoff, the rest need a person (and are retried with backoff too, since the fix may be
/// outside Kubernetes).
pub fn pg(e: impl Failure) -> Error {
    let (reason, message) = (e.reason(), e.to_string());
    if e.is_transient() {
        Error::Transient {
            reason,
            message,
            source: Some(Box::new(e)),
        }
    } else {
        Error::NeedsAttention {
            reason,
            message,
            source: Some(Box::new(e)),
        }
    }
}

/// An error with its causes, `outer: cause: cause's cause`, for logs. A cause whose text the message
/// before it already holds (the common `message = source.to_string()`) is not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// First retry after this long.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Retries never wait longer than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Exponential backoff: 1s, 2s, 4s … capped at [`BACKOFF_MAX`].
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::postgres::PgError;

    #[test]
    fn postgres_errors_stay_the_cause() {
        let e = pg(PgError::TemplateNotAllowed {
            template: "other_team".into(),
        });
        assert_eq!(e.reason(), "TemplateNotAllowed");
        let cause = std::error::Error::source(&e).expect("the PostgreSQL error is kept");
        assert!(cause.downcast_ref::<PgError>().is_some());
        assert_eq!(cause.to_string(), e.to_string());
    }

    #[test]
    fn logs_carry_the_whole_chain_once() {
        let io = std::io::Error::other("connection reset by peer");
        let e = Error::Transient {
            reason: "ServerUnavailable",
            message: "cannot reach db.example:5432".into(),
            source: Some(Box::new(io)),
        };
        assert_eq!(
            chain(&e),
            "cannot reach db.example:5432: connection reset by peer"
        );
        let same = pg(PgError::TemplateNotAllowed {
            template: "other_team".into(),
        });
        assert_eq!(chain(&same), same.to_string());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn watched_references_wait_for_change() {
        let e = Error::MissingObject {
            kind: "DatabaseEnvironment".into(),
            namespace: "ns".into(),
            name: "db".into(),
            reason: "EnvironmentNotFound",
        };
        assert_eq!(e.action(5), Action::await_change());
        assert_eq!(e.reason(), "EnvironmentNotFound");
        assert_eq!(e.to_string(), "DatabaseEnvironment ns/db does not exist");
        let e = Error::NeedsAttention {
            reason: "SecretNotFound",
            source: None,
            message: "x".into(),
        };
        assert_eq!(e.action(2), Action::requeue(Duration::from_secs(4)));
    }
}
