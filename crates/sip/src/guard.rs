//! The brute-force guard: a source that keeps failing authentication is
//! blocked for a while and gets only 403, at most one a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct AuthGuard {
    max_failures: u32,
    block_for: Duration,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

#[derive(Default)]
struct Source {
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    last_answer: Option<Instant>,
}

/// What to do with a request from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Blocked: answer 403.
    Refuse,
    /// Blocked and answered within the last second: drop silently.
    Drop,
}

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

impl AuthGuard {
    pub fn new(max_failures: u32, block_for: Duration) -> AuthGuard {
        AuthGuard {
            max_failures: max_failures.max(1),
            block_for,
            sources: Mutex::default(),
        }
    }

    pub fn verdict(&self, ip: IpAddr) -> Verdict {
        let mut sources = self.sources.lock().expect("guard table");
        let Some(source) = sources.get_mut(&ip) else {
            return Verdict::Allow;
        };
        let now = Instant::now();
        match source.blocked_until {
            Some(until) if until > now => {
                if source
                    .last_answer
                    .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
                {
                    Verdict::Drop
                } else {
                    source.last_answer = Some(now);
                    Verdict::Refuse
                }
            }
            _ => Verdict::Allow,
        }
    }

    /// Counts a failed authentication; true when this blocks the source.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let mut sources = self.sources.lock().expect("guard table");
        let now = Instant::now();
        if sources.len() > 100_000 {
            sources.retain(|_, s| s.blocked_until.is_some_and(|until| until > now));
        }
        let source = sources.entry(ip).or_default();
        if source
            .last_failure
            .is_some_and(|at| now.duration_since(at) > FAILURE_WINDOW)
        {
            source.failures = 0;
        }
        source.failures += 1;
        source.last_failure = Some(now);
        if source.failures >= self.max_failures {
            source.blocked_until = Some(now + self.block_for);
            source.failures = 0;
            tracing::warn!(
                source = %ip,
                seconds = self.block_for.as_secs(),
                "SIP authentication failed {} times: source blocked",
                self.max_failures
            );
            return true;
        }
        false
    }

    /// A successful authentication clears the count.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut sources = self.sources.lock().expect("guard table");
        if sources.get(&ip).is_some_and(|s| s.blocked_until.is_none()) {
            sources.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_repeated_failures_and_rate_limits_the_answers() {
        let guard = AuthGuard::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!guard.failed(ip));
        assert!(!guard.failed(ip));
        assert_eq!(guard.verdict(ip), Verdict::Allow);
        assert!(guard.failed(ip));
        assert_eq!(guard.verdict(ip), Verdict::Refuse);
        assert_eq!(guard.verdict(ip), Verdict::Drop);
        assert_eq!(guard.verdict(other), Verdict::Allow);
        guard.succeeded(other);
        // A success from a blocked source does not lift the block.
        guard.succeeded(ip);
        assert_ne!(guard.verdict(ip), Verdict::Allow);
    }
}
