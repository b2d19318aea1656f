//! Limits against floods: commands per client, failed sign-ins per source
//! address, connections at once (all and per address). Pure state, time
//! passed in, so the tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A client's command budget: a token bucket of `2 × rate` tokens refilled
/// at `rate` per second. A client that keeps sending over it gets
/// `rate_limited` answers, and after [`RateLimiter::MAX_REFUSED_IN_A_ROW`]
/// of them in a row it is disconnected.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
}

/// What the limiter says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: answer `rate_limited`.
    Refused,
    /// Over the rate for the 100th time in a row: disconnect.
    Disconnect,
}

impl RateLimiter {
    pub const MAX_REFUSED_IN_A_ROW: u32 = 100;

    /// `per_second` commands a second, bursts of twice that; starts full.
    pub fn new(per_second: u32, now: Instant) -> RateLimiter {
        let rate = f64::from(per_second.max(1));
        RateLimiter {
            rate,
            capacity: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
            refused_in_a_row: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Verdict::Allowed;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row >= Self::MAX_REFUSED_IN_A_ROW {
            Verdict::Disconnect
        } else {
            Verdict::Refused
        }
    }
}

/// Failed sign-ins per source address: more than
/// [`SignInGuard::MAX_FAILURES`] in [`SignInGuard::WINDOW`] and further
/// attempts are answered `too_many_failures` without checking anything.
/// Sign-ins in progress count as failures until they succeed, so parallel
/// guesses cannot slip past the limit together.
#[derive(Debug, Default)]
pub struct SignInGuard {
    addresses: HashMap<IpAddr, Attempts>,
}

#[derive(Debug, Default)]
struct Attempts {
    failures: VecDeque<Instant>,
    in_progress: u32,
}

/// A sign-in admitted by the guard; report how it ended with
/// [`SignInGuard::succeeded`] or [`SignInGuard::failed`].
#[derive(Debug)]
#[must_use]
pub struct Admitted {
    address: IpAddr,
}

impl SignInGuard {
    pub const MAX_FAILURES: usize = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses remembered at most; the quietest are forgotten first.
    pub const MAX_ADDRESSES: usize = 10_000;

    /// Admits a sign-in from `address`, or `None` when it has failed too
    /// often lately.
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> Option<Admitted> {
        let address = canonical(address);
        self.forget_old(address, now);
        let attempts = self.addresses.entry(address).or_default();
        let recent = attempts.failures.len() + attempts.in_progress as usize;
        if recent >= Self::MAX_FAILURES {
            return None;
        }
        attempts.in_progress += 1;
        Some(Admitted { address })
    }

    pub fn succeeded(&mut self, admitted: Admitted) {
        if let Some(attempts) = self.addresses.get_mut(&admitted.address) {
            attempts.in_progress = attempts.in_progress.saturating_sub(1);
        }
    }

    pub fn failed(&mut self, admitted: Admitted, now: Instant) {
        let attempts = self.addresses.entry(admitted.address).or_default();
        attempts.in_progress = attempts.in_progress.saturating_sub(1);
        attempts.failures.push_back(now);
        while attempts.failures.len() > Self::MAX_FAILURES {
            attempts.failures.pop_front();
        }
    }

    /// Drops failures older than the window: the address's own at every
    /// attempt, everybody's only when the table is full (so a sign-in
    /// costs the same however many addresses failed lately).
    fn forget_old(&mut self, address: IpAddr, now: Instant) {
        let cutoff = now.checked_sub(Self::WINDOW);
        let expire = |attempts: &mut Attempts| {
            while attempts
                .failures
                .front()
                .is_some_and(|at| cutoff.is_some_and(|cutoff| *at <= cutoff))
            {
                attempts.failures.pop_front();
            }
        };
        if let Some(attempts) = self.addresses.get_mut(&address) {
            expire(attempts);
        }
        if self.addresses.len() < Self::MAX_ADDRESSES {
            return;
        }
        for attempts in self.addresses.values_mut() {
            expire(attempts);
        }
        self.addresses
            .retain(|_, a| a.in_progress > 0 || !a.failures.is_empty());
        if self.addresses.len() >= Self::MAX_ADDRESSES {
            // Still full of addresses that failed lately: forget those
            // whose last failure is oldest (a flood from many addresses
            // must not grow this without bound).
            let mut last: Vec<(Instant, IpAddr)> = self
                .addresses
                .iter()
                .filter(|(_, a)| a.in_progress == 0)
                .filter_map(|(ip, a)| a.failures.back().map(|at| (*at, *ip)))
                .collect();
            last.sort();
            for (_, ip) in last.iter().take(self.addresses.len() / 2) {
                self.addresses.remove(ip);
            }
        }
    }
}

/// Connections open at once, in all and per source address.
#[derive(Debug, Default)]
pub struct ConnectionCounter {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    TooManyClients,
    TooManyFromAddress,
}

impl ConnectionCounter {
    /// Counts a new connection from `address` if the limits allow it.
    pub fn open(
        &mut self,
        address: IpAddr,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<(), ConnectionRefusal> {
        let address = canonical(address);
        if self.total >= max_total {
            return Err(ConnectionRefusal::TooManyClients);
        }
        let from_address = self.per_address.entry(address).or_default();
        if *from_address >= max_per_address {
            if *from_address == 0 {
                self.per_address.remove(&address);
            }
            return Err(ConnectionRefusal::TooManyFromAddress);
        }
        *from_address += 1;
        self.total += 1;
        Ok(())
    }

    pub fn close(&mut self, address: IpAddr) {
        let address = canonical(address);
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            self.total = self.total.saturating_sub(1);
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// An IPv4 address seen through an IPv6 socket counts as itself.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_rate_allows_a_burst_of_twice_the_rate_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, start);
        let allowed = (0..25)
            .filter(|_| limiter.check(start) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 20, "burst of 2 × 10");
        // A second later, ten more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..15)
            .filter(|_| limiter.check(later) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 10);
        // The budget never grows past the burst, however long the pause.
        let much_later = later + Duration::from_secs(3600);
        let allowed = (0..100)
            .filter(|_| limiter.check(much_later) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn a_hundred_refusals_in_a_row_disconnect() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(1, start);
        assert_eq!(limiter.check(start), Verdict::Allowed);
        assert_eq!(limiter.check(start), Verdict::Allowed);
        for _ in 0..99 {
            assert_eq!(limiter.check(start), Verdict::Refused);
        }
        assert_eq!(limiter.check(start), Verdict::Disconnect);
    }

    #[test]
    fn an_allowed_command_resets_the_refusals_in_a_row() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(1, start);
        limiter.check(start);
        limiter.check(start);
        for _ in 0..90 {
            assert_eq!(limiter.check(start), Verdict::Refused);
        }
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.check(later), Verdict::Allowed);
        for _ in 0..99 {
            assert_eq!(limiter.check(later), Verdict::Refused);
        }
        assert_eq!(limiter.check(later), Verdict::Disconnect);
    }

    #[test]
    fn five_failures_a_minute_then_no_checks() {
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for _ in 0..5 {
            let admitted = guard.admit(ip("192.0.2.1"), start).expect("admitted");
            guard.failed(admitted, start);
        }
        assert!(guard.admit(ip("192.0.2.1"), start).is_none());
        // Another address is not affected.
        assert!(guard.admit(ip("192.0.2.2"), start).is_some());
        // A minute after the failures the address may try again.
        let later = start + SignInGuard::WINDOW + Duration::from_millis(1);
        assert!(guard.admit(ip("192.0.2.1"), later).is_some());
    }

    #[test]
    fn successes_do_not_count_and_parallel_attempts_do() {
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for _ in 0..20 {
            let admitted = guard.admit(ip("192.0.2.1"), start).unwrap();
            guard.succeeded(admitted);
        }
        let parallel: Vec<Admitted> = (0..5)
            .map(|_| guard.admit(ip("192.0.2.1"), start).unwrap())
            .collect();
        assert!(
            guard.admit(ip("192.0.2.1"), start).is_none(),
            "five in flight"
        );
        for admitted in parallel {
            guard.succeeded(admitted);
        }
        assert!(guard.admit(ip("192.0.2.1"), start).is_some());
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_same_address() {
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for _ in 0..5 {
            let admitted = guard.admit(ip("::ffff:192.0.2.1"), start).unwrap();
            guard.failed(admitted, start);
        }
        assert!(guard.admit(ip("192.0.2.1"), start).is_none());
    }

    #[test]
    fn the_guard_stays_bounded_under_a_flood_of_addresses() {
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for n in 0..(3 * SignInGuard::MAX_ADDRESSES as u32) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            if let Some(admitted) = guard.admit(address, start) {
                guard.failed(admitted, start);
            }
        }
        assert!(guard.addresses.len() <= SignInGuard::MAX_ADDRESSES);
    }

    #[test]
    fn connections_are_limited_in_all_and_per_address() {
        let mut counter = ConnectionCounter::default();
        assert_eq!(counter.open(ip("192.0.2.1"), 3, 2), Ok(()));
        assert_eq!(counter.open(ip("192.0.2.1"), 3, 2), Ok(()));
        assert_eq!(
            counter.open(ip("192.0.2.1"), 3, 2),
            Err(ConnectionRefusal::TooManyFromAddress)
        );
        assert_eq!(counter.open(ip("192.0.2.2"), 3, 2), Ok(()));
        assert_eq!(
            counter.open(ip("192.0.2.3"), 3, 2),
            Err(ConnectionRefusal::TooManyClients)
        );
        counter.close(ip("192.0.2.1"));
        assert_eq!(counter.total(), 2);
        assert_eq!(counter.open(ip("192.0.2.3"), 3, 2), Ok(()));
        // Closing what was never opened changes nothing.
        counter.close(ip("198.51.100.9"));
        assert_eq!(counter.total(), 3);
    }
}
