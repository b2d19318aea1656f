//! Live presence: who is registered (the registrar) and who is in a call
//! (counted by [`PresenceGuard`]s that calls hold). The engine reads both
//! through its `Presence` trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use callhost_pbx::engine::Presence;

use crate::registrar::Registrar;

/// Told when a user's live presence changes: the first phone registered
/// or the last one gone, the first call begun or the last one ended.
/// Called on SIP tasks: must return at once.
pub trait PresenceListener: Send + Sync {
    fn presence_changed(&self, user: &str);
}

/// Registrations and calls in progress: the engine's live presence.
pub struct LiveCalls {
    pub registrar: Registrar,
    in_call: Mutex<HashMap<String, usize>>,
    listener: OnceLock<Arc<dyn PresenceListener>>,
}

impl LiveCalls {
    pub(crate) fn new(registrar: Registrar) -> LiveCalls {
        LiveCalls {
            registrar,
            in_call: Mutex::default(),
            listener: OnceLock::new(),
        }
    }

    /// Sets who hears of presence changes (once; later calls are ignored).
    pub fn listen(&self, listener: Arc<dyn PresenceListener>) {
        let _ = self.listener.set(listener);
    }

    /// Tells the listener that `user`'s presence changed.
    pub(crate) fn changed(&self, user: &str) {
        if let Some(listener) = self.listener.get() {
            listener.presence_changed(user);
        }
    }

    fn in_call(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.in_call.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls in progress with this user in them.
    pub fn calls_of(&self, user: &str) -> usize {
        self.in_call().get(user).copied().unwrap_or(0)
    }
}

impl Presence for LiveCalls {
    fn registered(&self, user_id: &str) -> bool {
        self.registrar.is_registered(user_id)
    }

    fn busy(&self, user_id: &str) -> bool {
        self.calls_of(user_id) > 0
    }
}

/// A user counted as in a call while this lives: dropped with the call
/// (however its task ends, a panic included), the user is free again.
#[derive(Debug)]
pub(crate) struct PresenceGuard {
    live: Arc<LiveCalls>,
    user: String,
}

impl PresenceGuard {
    pub fn enter(live: &Arc<LiveCalls>, user: &str) -> PresenceGuard {
        let first = {
            let mut in_call = live.in_call();
            let count = in_call.entry(user.to_string()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            live.changed(user);
        }
        PresenceGuard {
            live: live.clone(),
            user: user.to_string(),
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let last = {
            let mut in_call = self.live.in_call();
            match in_call.get_mut(&self.user) {
                Some(count) => {
                    *count -= 1;
                    let last = *count == 0;
                    if last {
                        in_call.remove(&self.user);
                    }
                    last
                }
                None => false,
            }
        };
        if last {
            self.live.changed(&self.user);
        }
    }
}

impl std::fmt::Debug for LiveCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCalls").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_until_dropped_even_on_panic() {
        let live = Arc::new(LiveCalls::new(Registrar::default()));
        let first = PresenceGuard::enter(&live, "anna");
        let second = PresenceGuard::enter(&live, "anna");
        assert!(live.busy("anna"));
        drop(first);
        assert!(live.busy("anna"));
        let moved = std::thread::spawn(move || {
            let _held = second;
            panic!("a call task dies");
        });
        assert!(moved.join().is_err());
        assert!(!live.busy("anna"));
    }
}
