//! Admission of new calls: the host's, a source's and a user's share of
//! calls in progress, and the rate of new INVITEs per source. A call holds
//! its share in a [`CallSlot`], released when the slot is dropped (also when
//! the call's task ends early or panics).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// Sources whose INVITE rate is tracked at once; the oldest go first.
const RATE_TABLE: usize = 65_536;

/// Why a new call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitRefusal {
    #[error("the host has {0} calls in progress (sip.limits.max_calls)")]
    HostFull(usize),
    #[error("the source has {0} calls in progress (sip.limits.calls_per_source)")]
    SourceFull(usize),
    #[error("the source sends INVITEs faster than sip.limits.invites_per_second")]
    Rate,
    #[error("the user has {0} calls in progress (sip.limits.calls_per_user)")]
    UserFull(usize),
    #[error("{0} calls are being set up (sip.limits.max_setups)")]
    SetupsFull(usize),
    #[error("the host is overloaded (its scheduler lags {0} ms behind)")]
    Overloaded(u64),
}

pub(crate) struct CallLimits {
    config: LimitsConfig,
    state: Mutex<State>,
    /// Until when (ms since `started`) new calls are refused because the
    /// scheduler lagged; and by how much it lagged.
    lagging_until: AtomicU64,
    lag_ms: AtomicU64,
    started: Instant,
}

/// How often the lag monitor looks, and how long new calls are refused
/// once the lag passed `sip.limits.max_lag_ms`.
const LAG_TICK: Duration = Duration::from_millis(20);
const LAG_HOLD: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    total: usize,
    /// Calls admitted whose setup (engine and modules) has not ended.
    setups: usize,
    per_source: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
    buckets: HashMap<IpAddr, Bucket>,
    bucket_order: VecDeque<IpAddr>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One call's share of the limits; given back on drop.
pub(crate) struct CallSlot {
    limits: Arc<CallLimits>,
    source: Option<IpAddr>,
    user: Option<String>,
    /// Still counted among the calls being set up.
    in_setup: bool,
}

impl CallLimits {
    pub fn new(config: LimitsConfig) -> Arc<CallLimits> {
        Arc::new(CallLimits {
            config,
            state: Mutex::default(),
            lagging_until: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new INVITE from `source` (`None`: the trunk, bounded by
    /// the host's total only).
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Result<CallSlot, LimitRefusal> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.lagging_until.load(Ordering::Relaxed) {
            return Err(LimitRefusal::Overloaded(
                self.lag_ms.load(Ordering::Relaxed),
            ));
        }
        let mut state = self.state();
        if state.total >= self.config.max_calls {
            return Err(LimitRefusal::HostFull(state.total));
        }
        if state.setups >= self.config.max_setups {
            return Err(LimitRefusal::SetupsFull(state.setups));
        }
        if let Some(ip) = source {
            if !self.take_token(&mut state, ip) {
                return Err(LimitRefusal::Rate);
            }
            let held = state.per_source.get(&ip).copied().unwrap_or(0);
            if held >= self.config.calls_per_source {
                return Err(LimitRefusal::SourceFull(held));
            }
            *state.per_source.entry(ip).or_default() += 1;
        }
        state.total += 1;
        state.setups += 1;
        Ok(CallSlot {
            limits: self.clone(),
            source,
            user: None,
            in_setup: true,
        })
    }

    fn take_token(&self, state: &mut State, ip: IpAddr) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.config.invites_per_second);
        let burst = f64::from(self.config.invite_burst.max(1)).max(1.0);
        if !state.buckets.contains_key(&ip) {
            if state.buckets.len() >= RATE_TABLE {
                if let Some(oldest) = state.bucket_order.pop_front() {
                    state.buckets.remove(&oldest);
                }
            }
            state.bucket_order.push_back(ip);
            state.buckets.insert(
                ip,
                Bucket {
                    tokens: burst,
                    at: now,
                },
            );
        }
        let bucket = state.buckets.get_mut(&ip).expect("inserted above");
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn release(&self, source: Option<IpAddr>, user: Option<&str>, in_setup: bool) {
        let mut state = self.state();
        state.total = state.total.saturating_sub(1);
        if in_setup {
            state.setups = state.setups.saturating_sub(1);
        }
        if let Some(ip) = source {
            decrement(&mut state.per_source, &ip);
        }
        if let Some(user) = user {
            decrement(&mut state.per_user, &user.to_string());
        }
    }

    /// Calls in progress on the host.
    pub fn calls(&self) -> usize {
        self.state().total
    }

    /// Watches the scheduler it runs on: when a tick comes more than
    /// `max_lag_ms` late, the host cannot keep up, and new calls get 503
    /// for [`LAG_HOLD`] rather than transactions that time out.
    pub async fn watch_lag(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.config.max_lag_ms == 0 {
            return;
        }
        let limit = Duration::from_millis(self.config.max_lag_ms);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LAG_TICK) => {}
            }
            let now = Instant::now();
            let lag = now.duration_since(last).saturating_sub(LAG_TICK);
            last = now;
            if lag > limit {
                self.note_lag(lag);
            }
        }
    }

    fn note_lag(&self, lag: Duration) {
        let until = self.started.elapsed() + LAG_HOLD;
        self.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
        self.lagging_until
            .store(until.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(
            lag_ms = lag.as_millis() as u64,
            "the host lags: new calls get 503 for a second"
        );
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl CallSlot {
    /// Counts the call against `user`, the authenticated caller.
    pub fn take_user(&mut self, user: &str) -> Result<(), LimitRefusal> {
        let limits = self.limits.clone();
        let mut state = limits.state();
        let held = state.per_user.get(user).copied().unwrap_or(0);
        if held >= limits.config.calls_per_user {
            return Err(LimitRefusal::UserFull(held));
        }
        *state.per_user.entry(user.to_string()).or_default() += 1;
        self.user = Some(user.to_string());
        Ok(())
    }
}

impl CallSlot {
    /// The call's setup is over (it rings, or was refused): it no longer
    /// counts against `max_setups`.
    pub fn setup_done(&mut self) {
        if std::mem::take(&mut self.in_setup) {
            let mut state = self.limits.state();
            state.setups = state.setups.saturating_sub(1);
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.limits
            .release(self.source, self.user.as_deref(), self.in_setup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(edit: impl FnOnce(&mut LimitsConfig)) -> Arc<CallLimits> {
        let mut config = LimitsConfig::default();
        edit(&mut config);
        CallLimits::new(config)
    }

    #[test]
    fn slots_count_and_are_given_back_on_drop() {
        let limits = limits(|c| {
            c.max_calls = 3;
            c.calls_per_source = 2;
            c.calls_per_user = 1;
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut first = limits.admit(Some(ip)).unwrap();
        first.take_user("anna").unwrap();
        let mut second = limits.admit(Some(ip)).unwrap();
        assert_eq!(second.take_user("anna"), Err(LimitRefusal::UserFull(1)));
        assert_eq!(
            limits.admit(Some(ip)).err(),
            Some(LimitRefusal::SourceFull(2))
        );
        let trunk = limits.admit(None).unwrap();
        assert_eq!(limits.admit(None).err(), Some(LimitRefusal::HostFull(3)));
        drop((first, trunk));
        assert_eq!(limits.calls(), 1);
        second.take_user("anna").unwrap();
        drop(second);
        assert_eq!(limits.calls(), 0);
    }

    #[test]
    fn setups_in_progress_and_scheduler_lag_refuse_new_calls() {
        let limits = limits(|c| c.max_setups = 2);
        let mut first = limits.admit(None).unwrap();
        let _second = limits.admit(None).unwrap();
        assert_eq!(limits.admit(None).err(), Some(LimitRefusal::SetupsFull(2)));
        first.setup_done();
        first.setup_done();
        let _third = limits.admit(None).unwrap();
        drop(first);
        limits.note_lag(Duration::from_millis(250));
        assert_eq!(
            limits.admit(None).err(),
            Some(LimitRefusal::Overloaded(250))
        );
    }

    #[test]
    fn a_flooding_source_is_held_to_its_rate_and_others_are_not() {
        let limits = limits(|c| {
            c.invites_per_second = 1;
            c.invite_burst = 5;
            c.calls_per_source = 1000;
        });
        let flood: IpAddr = "203.0.113.1".parse().unwrap();
        let admitted = (0..50)
            .filter_map(|_| limits.admit(Some(flood)).ok())
            .collect::<Vec<_>>();
        assert!((5..=6).contains(&admitted.len()), "{}", admitted.len());
        assert!(limits.admit(Some("192.0.2.1".parse().unwrap())).is_ok());
    }
}
