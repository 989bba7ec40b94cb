//! Bounds on long database work (provisioning, seeds, health checks, migrations): at most `global` jobs
//! at once in the process, and at most `per_namespace` of them for one namespace, so one tenant's slow
//! seeds or thousand waiting migrations cannot take every slot (or every server connection) from the
//! others. A job waits for its slots before it opens any connection.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default of `--max-concurrent-work`.
pub const DEFAULT_GLOBAL: usize = 16;
/// Default of `--max-concurrent-work-per-namespace`.
pub const DEFAULT_PER_NAMESPACE: usize = 8;

/// The limits, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub global: usize,
    pub per_namespace: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            global: DEFAULT_GLOBAL,
            per_namespace: DEFAULT_PER_NAMESPACE,
        }
    }
}

/// The slots of this process.
pub struct Slots {
    limits: Limits,
    global: Arc<Semaphore>,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Both permits of a running job; dropping it frees the slots.
pub struct Permit {
    _namespace: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            global: limits.global.max(1),
            per_namespace: limits.per_namespace.max(1),
        };
        Self {
            limits,
            global: Arc::new(Semaphore::new(limits.global)),
            namespaces: Mutex::default(),
        }
    }

    /// Whether a job could start now without waiting (for status messages).
    pub fn available(&self, namespace: &str) -> bool {
        self.global.available_permits() > 0 && self.namespace(namespace).available_permits() > 0
    }

    fn namespace(&self, namespace: &str) -> Arc<Semaphore> {
        let mut map = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle namespaces (nobody holds or waits for one of their slots), so a cluster that
        // makes a namespace per pull request does not keep a semaphore for each one ever seen.
        let limit = self.limits.per_namespace;
        map.retain(|_, sem| Arc::strong_count(sem) > 1 || sem.available_permits() < limit);
        map.entry(namespace.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_namespace)))
            .clone()
    }

    /// Waits for a slot of the namespace, then for a global one (in that order, so a namespace at its
    /// own limit never holds a global slot while it waits).
    pub async fn acquire(&self, namespace: &str) -> Permit {
        let ns = self.namespace(namespace);
        // The semaphores are never closed, so acquiring cannot fail.
        let ns = ns.acquire_owned().await.expect("semaphore never closed");
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        Permit {
            _namespace: ns,
            _global: global,
        }
    }
}

impl Default for Slots {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_busy_namespace_does_not_take_the_others_slots() {
        let slots = Slots::new(Limits {
            global: 3,
            per_namespace: 2,
        });
        let _a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        assert!(!slots.available("a"), "namespace a is at its limit");
        // A third job of `a` waits, and holds no global slot while it waits.
        let waiting = tokio::time::timeout(Duration::from_millis(100), slots.acquire("a")).await;
        assert!(waiting.is_err());
        assert!(slots.available("b"));
        let _b = tokio::time::timeout(Duration::from_millis(100), slots.acquire("b"))
            .await
            .expect("namespace b gets the last global slot");
        assert!(!slots.available("c"), "every global slot is taken");
    }

    #[tokio::test]
    async fn idle_namespaces_are_forgotten() {
        let slots = Slots::default();
        for i in 0..100 {
            drop(slots.acquire(&format!("pr-{i}")).await);
        }
        let held = slots.acquire("busy").await;
        assert!(slots.available("other"));
        let known = slots.namespaces.lock().unwrap().len();
        assert!(known <= 2, "{known} namespaces kept");
        drop(held);
    }

    #[tokio::test]
    async fn dropping_a_permit_frees_both_slots() {
        let slots = Slots::new(Limits {
            global: 1,
            per_namespace: 1,
        });
        let p = slots.acquire("a").await;
        assert!(!slots.available("a") && !slots.available("b"));
        drop(p);
        assert!(slots.available("a") && slots.available("b"));
    }
}
