//! Tracked tasks: long database work never runs inside a reconcile. A [`Tasks`] set keeps at most one
//! tokio task per key (an object's UID) plus a little state per key that outlives the task (attempts, the
//! last result's time). A reconcile asks whether a task runs, reads or updates the state, and starts one;
//! the task updates the state when it ends. Stopping the controller (or dropping the set, as a crash
//! would) aborts every task: their connections close and PostgreSQL rolls back what was open.
//!
//! Used by MigrationRun (one attempt of a run) and DatabaseEnvironment (one provisioning job).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::task::JoinHandle;

struct Slot<S> {
    handle: Option<JoinHandle<()>>,
    state: S,
}

type Map<S> = Arc<Mutex<HashMap<String, Slot<S>>>>;

fn lock<S>(map: &Map<S>) -> MutexGuard<'_, HashMap<String, Slot<S>>> {
    // A panic elsewhere must not stop the map from being read (or the tasks from being aborted).
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tasks of one controller, by key, with per-key state `S`.
pub struct Tasks<S> {
    map: Map<S>,
}

impl<S> Default for Tasks<S> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// What a running task holds to update its key's state.
pub struct TaskState<S> {
    map: Map<S>,
    key: String,
}

impl<S: Default> TaskState<S> {
    /// Forgets the key's state (the object's work is done for good). The task is finishing; a reconcile
    /// that looks now sees no task and fresh state.
    pub fn clear(&self) {
        lock(&self.map).remove(&self.key);
    }

    /// Reads or changes the state of the task's key.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut map = lock(&self.map);
        let slot = map.entry(self.key.clone()).or_insert_with(|| Slot {
            handle: None,
            state: S::default(),
        });
        f(&mut slot.state)
    }
}

impl<S: Default + Send + 'static> Tasks<S> {
    /// Whether a task runs for `key`.
    pub fn is_running(&self, key: &str) -> bool {
        lock(&self.map).get(key).is_some_and(|s| s.handle.is_some())
    }

    /// Reads the state of `key` without creating it (`None` for a key never seen or forgotten).
    pub fn peek<R>(&self, key: &str, f: impl FnOnce(&S) -> R) -> Option<R> {
        lock(&self.map).get(key).map(|slot| f(&slot.state))
    }

    /// Reads or changes the state of `key` (created with `S::default()`).
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&mut S) -> R) -> R {
        let mut map = lock(&self.map);
        let slot = map.entry(key.to_string()).or_insert_with(|| Slot {
            handle: None,
            state: S::default(),
        });
        f(&mut slot.state)
    }

    /// Starts the task for `key`: `work` gets the key's [`TaskState`]. When it ends the key is no longer
    /// running; its state stays.
    pub fn spawn<F, Fut>(&self, key: &str, work: F)
    where
        F: FnOnce(TaskState<S>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Held while spawning, so the task cannot finish (and clear its handle) before it is stored.
        let mut map = lock(&self.map);
        let state = TaskState {
            map: self.map.clone(),
            key: key.to_string(),
        };
        let done = TaskState {
            map: self.map.clone(),
            key: key.to_string(),
        };
        let fut = work(state);
        let handle = tokio::spawn(async move {
            fut.await;
            if let Some(slot) = lock(&done.map).get_mut(&done.key) {
                slot.handle = None;
            }
        });
        map.entry(key.to_string())
            .or_insert_with(|| Slot {
                handle: None,
                state: S::default(),
            })
            .handle = Some(handle);
    }

    /// Aborts the task of `key`, if one runs, and forgets its state (the object is going away).
    pub fn forget(&self, key: &str) {
        if let Some(slot) = lock(&self.map).remove(key)
            && let Some(handle) = slot.handle
        {
            handle.abort();
        }
    }

    /// Aborts every task (the controller is stopping); returns how many were running.
    pub fn abort_all(&self) -> usize {
        let mut map = lock(&self.map);
        let mut n = 0;
        for slot in map.values_mut() {
            if let Some(handle) = slot.handle.take() {
                handle.abort();
                n += 1;
            }
        }
        n
    }
}

/// Tasks die with their set, as they would with the process: an operator dropped without a clean stop
/// (a crash, or a test killing an in-process instance) must not leave database work running.
impl<S> Drop for Tasks<S> {
    fn drop(&mut self) {
        for slot in lock(&self.map).values_mut() {
            if let Some(handle) = slot.handle.take() {
                handle.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_task_per_key_with_state_that_outlives_it() {
        let tasks: Tasks<u32> = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.with("a", |n| *n += 1);
        tasks.spawn("a", |state| async move {
            let _ = rx.await;
            state.with(|n| *n += 10);
        });
        assert!(tasks.is_running("a"));
        assert!(!tasks.is_running("b"));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.is_running("a") {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task ends once released");
        assert_eq!(tasks.with("a", |n| *n), 11);
        tasks.forget("a");
        assert_eq!(
            tasks.peek("a", |n| *n),
            None,
            "forgotten, and peek creates nothing"
        );
        assert_eq!(tasks.peek("a", |n| *n), None);
    }

    #[tokio::test]
    async fn stopping_aborts_running_tasks() {
        let tasks: Tasks<()> = Tasks::default();
        tasks.spawn("a", |_| std::future::pending::<()>());
        tasks.spawn("b", |_| std::future::pending::<()>());
        assert_eq!(tasks.abort_all(), 2);
        assert!(!tasks.is_running("a"));
        assert_eq!(tasks.abort_all(), 0);
    }
}
