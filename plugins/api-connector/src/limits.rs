//! Limits against floods: commands per client, failed sign-ins per source
//! address and per user, connections at once (all and per address), log
//! lines a flood would repeat. Pure state, time passed in, so the tests
//! need no clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
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

/// Failed sign-ins per source: more than [`SignInGuard::MAX_FAILURES`] in
/// [`SignInGuard::WINDOW`] and further attempts are answered
/// `too_many_failures` without checking anything. Sign-ins in progress
/// count as failures until they succeed, so parallel guesses cannot slip
/// past the limit together: one that would pass it is not admitted until
/// one in progress ended ([`SignInGuard::failed_too_often`] tells such a
/// wait from a refusal). A source is an IPv4 address or an IPv6 /64
/// (whoever has one IPv6 address has the whole /64 to pick from).
///
/// Wrong passwords are also counted per user from anywhere: more than
/// [`SignInGuard::MAX_USER_FAILURES`] in the window, and the user's
/// sign-ins are refused for the rest of it, so a guess spread over many
/// addresses is bounded too (high enough that one guesser cannot lock a
/// user out, as for the host's own logins).
#[derive(Debug, Default)]
pub struct SignInGuard {
    addresses: HashMap<IpAddr, Attempts>,
    users: HashMap<String, VecDeque<Instant>>,
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
    pub const MAX_USER_FAILURES: usize = 100;
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses (and users) remembered at most; the quietest are
    /// forgotten first.
    pub const MAX_ADDRESSES: usize = 10_000;

    /// Admits a sign-in from `address`, or `None` when its source has
    /// failed too often lately.
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> Option<Admitted> {
        let address = source(address);
        self.forget_old(address, now);
        let attempts = self.addresses.entry(address).or_default();
        let recent = attempts.failures.len() + attempts.in_progress as usize;
        if recent >= Self::MAX_FAILURES {
            return None;
        }
        attempts.in_progress += 1;
        Some(Admitted { address })
    }

    /// Whether the source of `address` is refused for its failures alone
    /// (as of its last [`SignInGuard::admit`]); when not, a sign-in that
    /// was not admitted is to wait for those in progress.
    pub fn failed_too_often(&self, address: IpAddr) -> bool {
        self.addresses
            .get(&source(address))
            .is_some_and(|attempts| attempts.failures.len() >= Self::MAX_FAILURES)
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

    /// Whether `user` had more wrong passwords lately, from anywhere,
    /// than [`SignInGuard::MAX_USER_FAILURES`].
    pub fn user_blocked(&mut self, user: &str, now: Instant) -> bool {
        let cutoff = now.checked_sub(Self::WINDOW);
        let Some(failures) = self.users.get_mut(user) else {
            return false;
        };
        forget_before(failures, cutoff);
        if failures.is_empty() {
            self.users.remove(user);
            return false;
        }
        failures.len() >= Self::MAX_USER_FAILURES
    }

    /// A wrong password for `user`: a failure of the source, and one of
    /// the user's from anywhere.
    pub fn wrong_password(&mut self, admitted: Admitted, user: &str, now: Instant) {
        self.failed(admitted, now);
        if self.users.len() >= Self::MAX_ADDRESSES && !self.users.contains_key(user) {
            // Only directory users get here, but a huge directory must
            // not grow this without bound either.
            let cutoff = now.checked_sub(Self::WINDOW);
            self.users.retain(|_, failures| {
                forget_before(failures, cutoff);
                !failures.is_empty()
            });
            if self.users.len() >= Self::MAX_ADDRESSES {
                let mut last: Vec<(Instant, String)> = self
                    .users
                    .iter()
                    .filter_map(|(user, failures)| failures.back().map(|at| (*at, user.clone())))
                    .collect();
                last.sort();
                for (_, user) in last.iter().take(self.users.len() / 2) {
                    self.users.remove(user);
                }
            }
        }
        let failures = self.users.entry(user.to_string()).or_default();
        failures.push_back(now);
        while failures.len() > Self::MAX_USER_FAILURES {
            failures.pop_front();
        }
    }

    /// Drops failures older than the window: the address's own at every
    /// attempt, everybody's only when the table is full (so a sign-in
    /// costs the same however many addresses failed lately).
    fn forget_old(&mut self, address: IpAddr, now: Instant) {
        let cutoff = now.checked_sub(Self::WINDOW);
        let expire = |attempts: &mut Attempts| forget_before(&mut attempts.failures, cutoff);
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

/// Drops the failures at or before `cutoff` (none when the clock is too
/// young to have one).
fn forget_before(failures: &mut VecDeque<Instant>, cutoff: Option<Instant>) {
    while failures
        .front()
        .is_some_and(|at| cutoff.is_some_and(|cutoff| *at <= cutoff))
    {
        failures.pop_front();
    }
}

/// A log line a flood could repeat without end (a refusal answered to
/// anyone who connects): said at most once per [`LogThrottle::EVERY`],
/// with how often it was due meanwhile, so the instance log cannot be
/// filled from the network.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last: Option<Instant>,
    due: u64,
}

impl LogThrottle {
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Counts one occurrence; `Some(count)` when the line is to be said
    /// now, `count` being the occurrences since the last line, this one
    /// included.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        self.due += 1;
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < Self::EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.due))
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

/// The source failed sign-ins are counted for: an IPv4 address, or the
/// /64 network of an IPv6 address.
fn source(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
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
        assert!(
            !guard.failed_too_often(ip("192.0.2.1")),
            "not refused: to wait for those in flight"
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
    fn the_addresses_of_one_ipv6_network_count_together() {
        // Whoever has 2001:db8:1:2::1 has all of 2001:db8:1:2::/64.
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for n in 1..=5 {
            let address = ip(&format!("2001:db8:1:2::{n:x}"));
            let admitted = guard.admit(address, start).expect("admitted");
            guard.failed(admitted, start);
        }
        assert!(
            guard
                .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), start)
                .is_none(),
            "another address of the same /64"
        );
        assert!(
            guard.admit(ip("2001:db8:1:3::1"), start).is_some(),
            "the next /64"
        );
    }

    #[test]
    fn wrong_passwords_for_one_user_from_many_addresses_are_limited() {
        let start = Instant::now();
        let mut guard = SignInGuard::default();
        for n in 0..SignInGuard::MAX_USER_FAILURES as u32 {
            assert!(!guard.user_blocked("anna", start), "after {n}");
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + n));
            let admitted = guard.admit(address, start).expect("a fresh address");
            guard.wrong_password(admitted, "anna", start);
        }
        assert!(guard.user_blocked("anna", start));
        assert!(!guard.user_blocked("bert", start), "only her");
        let later = start + SignInGuard::WINDOW + Duration::from_millis(1);
        assert!(!guard.user_blocked("anna", later), "for a minute");
        assert!(guard.users.is_empty(), "forgotten");
    }

    #[test]
    fn a_throttled_line_is_said_once_per_interval_with_its_count() {
        let start = Instant::now();
        let mut throttle = LogThrottle::default();
        assert_eq!(throttle.due(start), Some(1));
        for _ in 0..99 {
            assert_eq!(throttle.due(start + Duration::from_secs(1)), None);
        }
        assert_eq!(throttle.due(start + LogThrottle::EVERY), Some(100));
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
