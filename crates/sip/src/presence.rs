//! Live presence: who is registered (the registrar) and who is in a call
//! (counted by [`PresenceGuard`]s that calls hold). The engine reads both
//! through its `Presence` trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use callhost_pbx::engine::Presence;

use crate::registrar::Registrar;

/// Registrations and calls in progress: the engine's live presence.
pub struct LiveCalls {
    pub registrar: Registrar,
    in_call: Mutex<HashMap<String, usize>>,
}

impl LiveCalls {
    pub(crate) fn new(registrar: Registrar) -> LiveCalls {
        LiveCalls {
            registrar,
            in_call: Mutex::default(),
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
        *live.in_call().entry(user.to_string()).or_default() += 1;
        PresenceGuard {
            live: live.clone(),
            user: user.to_string(),
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let mut in_call = self.live.in_call();
        if let Some(count) = in_call.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                in_call.remove(&self.user);
            }
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
