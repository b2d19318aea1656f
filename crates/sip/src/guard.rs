//! The brute-force guard: a source address, or a user name, that keeps
//! failing authentication is blocked for a while.
//!
//! Failures are counted per real source address (IP) and per user name
//! across all sources, within a window; a success never resets a count (so
//! one phone's success behind a shared address does not clear an attacker's
//! failures there). A block only stops new authentication attempts: the
//! caller (`auth.rs`) still lets through a phone that is registered from
//! that exact address with correct credentials. Both tables are bounded and
//! every operation is O(1): a flood of new addresses evicts the oldest
//! entries (preferring ones that are not blocked) instead of scanning.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Entries kept per table.
const CAPACITY: usize = 65_536;
/// Entries looked at when evicting, to spare blocked ones.
const EVICTION_PROBES: usize = 8;

pub struct AuthGuard {
    per_source: u32,
    per_user: u32,
    block_for: Duration,
    tables: Mutex<Tables>,
}

struct Tables {
    sources: Bounded<IpAddr>,
    users: Bounded<String>,
}

#[derive(Default)]
struct Failures {
    count: u32,
    window_start: Option<Instant>,
    blocked_until: Option<Instant>,
    /// When a refusal was last answered (403), for at most one a second.
    last_answer: Option<Instant>,
    /// Requests dropped unanswered since the last answer, for the log.
    dropped: u64,
}

impl Failures {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }
}

/// A table with a bound and first-in-first-out eviction.
struct Bounded<K> {
    entries: HashMap<K, Failures>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    fn new(capacity: usize) -> Self {
        Bounded {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut Failures> {
        self.entries.get_mut(key)
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut Failures {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.capacity {
                self.evict(now);
            }
            self.order.push_back(key.clone());
            self.entries.insert(key.clone(), Failures::default());
        }
        self.entries.get_mut(key).expect("inserted above")
    }

    /// Drops the oldest entry that is not blocked among the first few;
    /// the oldest of all if every one of those is blocked.
    fn evict(&mut self, now: Instant) {
        for _ in 0..EVICTION_PROBES.min(self.order.len()) {
            let Some(key) = self.order.pop_front() else {
                return;
            };
            if self.entries.get(&key).is_some_and(|f| f.blocked(now)) {
                self.order.push_back(key);
                continue;
            }
            self.entries.remove(&key);
            return;
        }
        if let Some(key) = self.order.pop_front() {
            self.entries.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What to do with an authentication attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Blocked: answer 403; `dropped` requests went unanswered since the
    /// last 403 (for the log line).
    Refuse {
        dropped: u64,
    },
    /// Blocked and answered within the last second: drop silently.
    Drop,
}

/// What a failure led to, for the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blocked {
    pub source: bool,
    pub user: bool,
}

impl AuthGuard {
    pub fn new(per_source: u32, per_user: u32, block_for: Duration) -> AuthGuard {
        AuthGuard::with_capacity(per_source, per_user, block_for, CAPACITY)
    }

    fn with_capacity(
        per_source: u32,
        per_user: u32,
        block_for: Duration,
        capacity: usize,
    ) -> AuthGuard {
        AuthGuard {
            per_source: per_source.max(1),
            per_user: per_user.max(1),
            block_for,
            tables: Mutex::new(Tables {
                sources: Bounded::new(capacity),
                users: Bounded::new(capacity),
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a new authentication attempt from `source` (claiming `user`,
    /// when its credentials name one) may be checked at all.
    pub fn verdict(&self, source: IpAddr, user: Option<&str>) -> Verdict {
        let now = Instant::now();
        let mut tables = self.tables();
        let Tables { sources, users } = &mut *tables;
        let user_entry = user.and_then(|user| users.get_mut(&user.to_string()));
        let source_blocked = sources.get_mut(&source).filter(|f| f.blocked(now));
        // Answers are paced on the source's entry when it is blocked, else on
        // the user's.
        let entry = match (source_blocked, user_entry.filter(|f| f.blocked(now))) {
            (Some(entry), _) | (None, Some(entry)) => entry,
            (None, None) => return Verdict::Allow,
        };
        if entry
            .last_answer
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            entry.dropped += 1;
            Verdict::Drop
        } else {
            entry.last_answer = Some(now);
            Verdict::Refuse {
                dropped: std::mem::take(&mut entry.dropped),
            }
        }
    }

    /// Counts a failed guess from `source` for `user`; says what it blocked.
    pub fn failed(&self, source: IpAddr, user: Option<&str>) -> Blocked {
        let now = Instant::now();
        let mut tables = self.tables();
        let mut blocked = Blocked::default();
        let (per_source, per_user, block_for) = (self.per_source, self.per_user, self.block_for);
        blocked.source = count(
            tables.sources.entry(&source, now),
            now,
            per_source,
            block_for,
        );
        if let Some(user) = user {
            blocked.user = count(
                tables.users.entry(&user.to_string(), now),
                now,
                per_user,
                block_for,
            );
        }
        blocked
    }

    /// Entries held, for the bounded-memory test.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let tables = self.tables();
        (tables.sources.len(), tables.users.len())
    }
}

/// Counts one failure; true when this one starts a block.
fn count(entry: &mut Failures, now: Instant, limit: u32, block_for: Duration) -> bool {
    if entry.blocked(now) {
        return false;
    }
    if entry
        .window_start
        .is_none_or(|start| now.duration_since(start) > FAILURE_WINDOW)
    {
        entry.window_start = Some(now);
        entry.count = 0;
    }
    entry.count += 1;
    if entry.count >= limit {
        entry.blocked_until = Some(now + block_for);
        entry.count = 0;
        entry.window_start = None;
        entry.last_answer = None;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANNA: Option<&str> = Some("anna");

    #[test]
    fn blocks_a_source_after_repeated_failures_and_paces_the_answers() {
        let guard = AuthGuard::new(3, 100, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(guard.failed(ip, ANNA), Blocked::default());
        assert_eq!(guard.failed(ip, Some("bert")), Blocked::default());
        assert_eq!(guard.verdict(ip, None), Verdict::Allow);
        assert!(guard.failed(ip, Some("carl")).source);
        assert_eq!(guard.verdict(ip, None), Verdict::Refuse { dropped: 0 });
        assert_eq!(guard.verdict(ip, ANNA), Verdict::Drop);
        assert_eq!(guard.verdict(ip, None), Verdict::Drop);
        assert_eq!(guard.verdict(other, ANNA), Verdict::Allow);
    }

    #[test]
    fn counts_a_user_across_sources() {
        let guard = AuthGuard::new(100, 3, Duration::from_secs(60));
        for i in 1..=2u8 {
            assert!(!guard.failed(IpAddr::from([192, 0, 2, i]), ANNA).user);
        }
        assert!(guard.failed("192.0.2.3".parse().unwrap(), ANNA).user);
        // Anna is blocked from everywhere; others and anonymous attempts are not.
        let fresh: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(matches!(guard.verdict(fresh, ANNA), Verdict::Refuse { .. }));
        assert_eq!(guard.verdict(fresh, Some("bert")), Verdict::Allow);
        assert_eq!(guard.verdict(fresh, None), Verdict::Allow);
    }

    #[test]
    fn memory_is_bounded_and_a_flood_does_not_evict_blocks_first() {
        let guard = AuthGuard::with_capacity(2, 1000, Duration::from_secs(60), 1024);
        let attacker: IpAddr = "203.0.113.9".parse().unwrap();
        guard.failed(attacker, ANNA);
        guard.failed(attacker, ANNA);
        for i in 0..50_000u32 {
            guard.failed(IpAddr::from(i.to_be_bytes()), Some(&format!("u{i}")));
        }
        let (sources, users) = guard.held();
        assert!(sources <= 1024 && users <= 1024, "{sources} {users}");
        assert!(matches!(
            guard.verdict(attacker, None),
            Verdict::Refuse { .. }
        ));
    }

    #[test]
    fn drops_are_counted_for_the_next_answer() {
        let guard = AuthGuard::new(1, 100, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        guard.failed(ip, None);
        assert_eq!(guard.verdict(ip, None), Verdict::Refuse { dropped: 0 });
        assert_eq!(guard.verdict(ip, None), Verdict::Drop);
        assert_eq!(guard.verdict(ip, None), Verdict::Drop);
        let mut tables = guard.tables();
        let entry = tables.sources.get_mut(&ip).unwrap();
        entry.last_answer = Some(Instant::now() - Duration::from_secs(2));
        drop(tables);
        assert_eq!(guard.verdict(ip, None), Verdict::Refuse { dropped: 2 });
    }
}
