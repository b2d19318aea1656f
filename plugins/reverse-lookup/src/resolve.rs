//! One lookup, in the order RL10 gives: the host's address book, then the
//! cache, then every eligible provider at once; the first success wins and
//! the others are dropped (RL9). Spam providers run alongside within the same
//! budget. Every step is written down for the `test` action (RL14) and the
//! history (RL15).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use callhost_lookup_core::{first_success, Attempt, AttemptResult, RaceOutcome};
use callhost_numbers::ExternalNumber;
use callhost_plugin_sdk::{Context, NewContact};
use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    config::Role,
    extract::Found,
    providers::{Provider, Trace},
    store::{LookupStore, Record},
};

/// Settings of the lookup itself, from the instance configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub budget: Duration,
    pub max_extension_length: u8,
    pub address_book: bool,
    pub create_contacts: bool,
    pub cache: bool,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub refresh_after: Duration,
    pub history_keep: Duration,
    pub history_max: u32,
}

/// Why a lookup runs; kept in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Call,
    Test,
    Refresh,
    Background,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Call => "call",
            Origin::Test => "test",
            Origin::Refresh => "refresh",
            Origin::Background => "background",
        }
    }
}

/// One step of a lookup, as the `test` action shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `won`, `found`, `not found`, `error: …`, `timed out`, `cancelled`,
    /// `skipped: …`, `hit`, `negative`, `miss`, `stale`.
    pub result: String,
    pub ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What a lookup came to.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    pub number: String,
    pub found: Option<Found>,
    /// `address_book`, `cache`, `provider` or `none`.
    pub source: &'static str,
    pub provider: Option<String>,
    pub spam_score: Option<u8>,
    pub spam_provider: Option<String>,
    pub elapsed_ms: f64,
    pub steps: Vec<Step>,
    /// The history entry's id, once written.
    pub id: Option<i64>,
}

/// How the cache step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheRead {
    /// Memory and then the table (the full lookup).
    Database,
    /// Memory only: the call thread never waits for the disk.
    MemoryOnly,
}

/// What the cache step learnt besides a name.
#[derive(Debug, Default)]
struct Cached {
    /// Providers whose negative entry says they have nothing.
    negative: HashSet<String>,
    /// A cached spam score and its provider.
    spam: Option<(String, u8)>,
}

impl Lookup {
    fn empty(number: &ExternalNumber) -> Lookup {
        Lookup {
            number: number.e164.clone(),
            found: None,
            source: "none",
            provider: None,
            spam_score: None,
            spam_provider: None,
            elapsed_ms: 0.0,
            steps: Vec::new(),
            id: None,
        }
    }

    pub fn name(&self) -> Option<String> {
        self.found
            .as_ref()
            .map(Found::name)
            .filter(|n| !n.is_empty())
    }
}

/// The lookup machinery of one instance configuration.
pub struct Resolver {
    pub settings: Settings,
    pub providers: Vec<Arc<Provider>>,
    pub store: Arc<LookupStore>,
    pub ctx: Context,
    /// Request times of the last minute per provider (RL20 rate limits).
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Cache entries being refreshed in the background, by provider + number.
    refreshing: Mutex<HashSet<(String, String)>>,
    /// Wakes `live` watchers when a lookup is written to the history.
    pub written: Arc<Notify>,
    /// Calls' history records waiting for the writer: one task writes all
    /// that piled up in one transaction (not a task and a commit each).
    history_queue: Mutex<Vec<Record>>,
    history_flush_pending: std::sync::atomic::AtomicBool,
    /// When the history and the cache were last pruned.
    last_prune: Mutex<Option<Instant>>,
}

/// The history and the cache are pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How long a call's history record may wait for others to be written
/// with it.
const HISTORY_BATCH_DELAY: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl Resolver {
    pub fn new(
        settings: Settings,
        providers: Vec<Arc<Provider>>,
        store: Arc<LookupStore>,
        ctx: Context,
        written: Arc<Notify>,
    ) -> Resolver {
        Resolver {
            settings,
            providers,
            store,
            ctx,
            recent: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
            written,
            history_queue: Mutex::new(Vec::new()),
            history_flush_pending: std::sync::atomic::AtomicBool::new(false),
            last_prune: Mutex::new(None),
        }
    }

    /// The same providers without the cache (for `test --fresh`).
    pub fn without_cache(&self) -> Resolver {
        Resolver::new(
            Settings {
                cache: false,
                ..self.settings.clone()
            },
            self.providers.clone(),
            self.store.clone(),
            self.ctx.clone(),
            self.written.clone(),
        )
    }

    /// May `provider` send one more request? Rate limit first (in memory),
    /// then the monthly quota (in the database, so restarts don't reset it).
    fn permit(&self, provider: &Provider) -> Result<(), String> {
        if let Some(limit) = provider.rate_limit_per_minute {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let window = recent.entry(provider.id.clone()).or_default();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                window.pop_front();
            }
            if window.len() >= limit as usize {
                return Err(format!("rate limit: {limit} requests a minute reached"));
            }
            window.push_back(now);
        }
        // 0 turns a template's quota off (profile values cannot be removed).
        if let Some(quota) = provider.monthly_quota.filter(|q| *q > 0) {
            match self.store.take_quota(&provider.id, quota) {
                Ok(Ok(())) => {}
                Ok(Err(quota)) => {
                    return Err(format!(
                        "monthly quota exhausted ({quota} requests this month)"
                    ))
                }
                Err(e) => return Err(format!("quota: {e}")),
            }
        }
        Ok(())
    }

    /// What a call can be answered with at once, without the disk or the
    /// network: the address book, or cache entries in memory that need no
    /// provider. `None`: the full [`Resolver::resolve`] is needed. For the
    /// module's quick `call_setup` (it runs on the host's call thread).
    pub fn resolve_quick(
        self: &Arc<Self>,
        number: &ExternalNumber,
        known_name: Option<String>,
        spam: bool,
    ) -> Option<Lookup> {
        let started = Instant::now();
        let mut lookup = Lookup::empty(number);
        if let Some(found) =
            self.address_book_step(number, known_name, Origin::Call, &mut lookup, started)
        {
            lookup.found = Some(found);
            lookup.source = "address_book";
            return Some(self.finish(lookup, started, Origin::Call));
        }
        let eligible = self.eligible(number, &mut lookup);
        let cached = self.cache_step(
            &eligible,
            number,
            &mut lookup,
            started,
            CacheRead::MemoryOnly,
        )?;
        let providers_needed = (lookup.found.is_none()
            && eligible
                .iter()
                .any(|p| p.role == Role::Name && !cached.negative.contains(&p.id)))
            || (spam
                && cached.spam.is_none()
                && eligible
                    .iter()
                    .any(|p| p.role == Role::Spam && !cached.negative.contains(&p.id)));
        if providers_needed {
            return None;
        }
        if let Some((provider, score)) = cached.spam {
            lookup.spam_score = Some(score);
            lookup.spam_provider = Some(provider);
        }
        Some(self.finish(lookup, started, Origin::Call))
    }

    /// Resolves `number`. `known_name` is the address-book name the host
    /// already found for a call's party (for other origins the host is
    /// asked). `spam`: also ask the spam providers (not for outgoing
    /// calls, whose callee's score nobody uses). Never takes longer than
    /// the budget.
    pub async fn resolve(
        self: &Arc<Self>,
        number: &ExternalNumber,
        known_name: Option<String>,
        origin: Origin,
        spam: bool,
    ) -> Lookup {
        let started = Instant::now();
        let mut lookup = Lookup::empty(number);
        // 1. The host's address book.
        if let Some(found) =
            self.address_book_step(number, known_name, origin, &mut lookup, started)
        {
            lookup.found = Some(found);
            lookup.source = "address_book";
            return self.finish(lookup, started, origin);
        }
        let eligible = self.eligible(number, &mut lookup);
        // 2. The cache.
        let cached = self
            .cache_step(&eligible, number, &mut lookup, started, CacheRead::Database)
            .expect("a database read always answers");
        let negative = cached.negative;
        let mut cached_spam = cached.spam;

        // 3. Providers, all at once, within what is left of the budget.
        let remaining = self.settings.budget.saturating_sub(started.elapsed());
        let want_name = lookup.found.is_none();
        let mut traces: HashMap<String, Trace> = HashMap::new();
        let mut attempts = |role: Role| {
            let mut list = Vec::new();
            for provider in eligible.iter().filter(|p| p.role == role) {
                if negative.contains(&provider.id) {
                    continue;
                }
                let trace = Trace::default();
                traces.insert(provider.id.clone(), trace.clone());
                let (resolver, provider, number) =
                    (self.clone(), (*provider).clone(), number.clone());
                let max = self.settings.max_extension_length;
                list.push(Attempt::new(
                    provider.id.clone(),
                    provider.timeout,
                    async move {
                        let permit = || resolver.permit(&provider);
                        provider.lookup(&number, max, &permit, &trace).await
                    },
                ));
            }
            list
        };
        let name_attempts = if want_name {
            attempts(Role::Name)
        } else {
            Vec::new()
        };
        let spam_attempts = if spam && cached_spam.is_none() {
            attempts(Role::Spam)
        } else {
            Vec::new()
        };
        let race_started = Instant::now();
        let (names, spam) = tokio::join!(
            first_success(name_attempts, remaining),
            first_success(spam_attempts, remaining)
        );
        let offset = ms(race_started.duration_since(started));
        for outcome in [&names, &spam] {
            self.record_race(outcome, number, &traces, offset, &mut lookup.steps);
        }
        if let Some(winner) = names.winner {
            lookup.found = Some(winner.value);
            lookup.source = "provider";
            lookup.provider = Some(winner.provider.clone());
            // Contacts come from calls only: a test or a call-list refresh
            // is not a caller worth an address-book entry.
            if self.settings.create_contacts && origin == Origin::Call {
                self.create_contact(number, lookup.found.as_ref().expect("just set"));
            }
        }
        if let Some(winner) = spam.winner {
            cached_spam = winner.value.spam_score.map(|s| (winner.provider, s));
        }
        if let Some((provider, score)) = cached_spam {
            lookup.spam_score = Some(score);
            lookup.spam_provider = Some(provider);
        }
        self.finish(lookup, started, origin)
    }

    /// Step 1 (RL10): a name from the host's address book ends the lookup.
    fn address_book_step(
        &self,
        number: &ExternalNumber,
        known_name: Option<String>,
        origin: Origin,
        lookup: &mut Lookup,
        started: Instant,
    ) -> Option<Found> {
        if !self.settings.address_book {
            return None;
        }
        let name = match origin {
            Origin::Call => known_name,
            _ => self
                .ctx
                .lookup_number(&number.e164)
                .and_then(|party| party.name.into_option())
                .map(|name| name.into_string()),
        }
        .filter(|name| !name.trim().is_empty());
        // Only the `test` action shows this step (the history leaves it out).
        if origin != Origin::Call {
            let hit = name.is_some();
            lookup.steps.push(Step {
                step: "address book",
                provider: None,
                result: if hit { "hit" } else { "miss" }.into(),
                ms: ms(started.elapsed()),
                notes: name.iter().map(|n| format!("contact {n:?}")).collect(),
            });
        }
        Some(Found {
            display: Some(name?),
            ..Found::default()
        })
    }

    /// The providers that take this number (the others noted as skipped).
    fn eligible(&self, number: &ExternalNumber, lookup: &mut Lookup) -> Vec<&Arc<Provider>> {
        self.providers
            .iter()
            .filter(|p| {
                let ok = p.eligible(number);
                if !ok {
                    lookup.steps.push(Step {
                        step: "provider",
                        provider: Some(p.id.clone()),
                        result: format!(
                            "skipped: not for callers from {}",
                            number.country.as_deref().unwrap_or("no country")
                        ),
                        ms: 0.0,
                        notes: Vec::new(),
                    });
                }
                ok
            })
            .collect()
    }

    /// Step 2 (RL11): the cache of every eligible provider. Fills
    /// `lookup.found` from the first positive entry; returns the providers
    /// known to have nothing and a cached spam score. With
    /// [`CacheRead::MemoryOnly`], `None` when an entry is not in memory.
    fn cache_step(
        self: &Arc<Self>,
        eligible: &[&Arc<Provider>],
        number: &ExternalNumber,
        lookup: &mut Lookup,
        started: Instant,
        read: CacheRead,
    ) -> Option<Cached> {
        let mut cached = Cached::default();
        if !self.settings.cache {
            return Some(cached);
        }
        for provider in eligible.iter().filter(|p| p.cache) {
            let entry = match read {
                CacheRead::MemoryOnly => Some(self.store.cache_peek(&provider.id, number)?),
                CacheRead::Database => match self.store.cache_get(&provider.id, number) {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!("cache read failed: {e}");
                        None
                    }
                },
            };
            let (result, notes) = match entry {
                Some(entry) if entry.found.is_some() && entry.age < self.settings.positive_ttl => {
                    let found = entry.found.expect("checked");
                    let stale = entry.age >= self.settings.refresh_after;
                    if stale {
                        self.refresh_in_background(provider, number);
                    }
                    let result = if stale { "stale" } else { "hit" };
                    if provider.role == Role::Spam {
                        if let Some(score) = found.spam_score {
                            cached.spam = Some((provider.id.clone(), score));
                        }
                        let note = found
                            .spam_score
                            .map_or("no spam score".to_string(), |s| format!("spam score {s}"));
                        (result.to_string(), vec![note])
                    } else if lookup.found.is_none() {
                        let note = format!("{:?}, {} s old", found.name(), entry.age.as_secs());
                        lookup.found = Some(found);
                        lookup.source = "cache";
                        lookup.provider = Some(provider.id.clone());
                        (result.to_string(), vec![note])
                    } else {
                        (result.to_string(), Vec::new())
                    }
                }
                Some(entry) if entry.found.is_none() && entry.age < self.settings.negative_ttl => {
                    cached.negative.insert(provider.id.clone());
                    (
                        "negative".to_string(),
                        vec![format!("{} s old", entry.age.as_secs())],
                    )
                }
                // Expired in memory: only the full lookup may ask again.
                Some(_) if read == CacheRead::MemoryOnly => return None,
                _ => ("miss".to_string(), Vec::new()),
            };
            lookup.steps.push(Step {
                step: "cache",
                provider: Some(provider.id.clone()),
                result,
                ms: ms(started.elapsed()),
                notes,
            });
        }
        Some(cached)
    }

    /// Writes each attempt's step and caches what is worth caching: the
    /// winner's answer, and "not found" from providers that answered so.
    fn record_race(
        &self,
        outcome: &RaceOutcome<Found>,
        number: &ExternalNumber,
        traces: &HashMap<String, Trace>,
        offset: f64,
        steps: &mut Vec<Step>,
    ) {
        for report in &outcome.reports {
            let provider = self.providers.iter().find(|p| p.id == report.provider);
            let cache = self.settings.cache && provider.is_some_and(|p| p.cache);
            let result = match &report.result {
                AttemptResult::Won => {
                    if cache {
                        let found = outcome.winner.as_ref().map(|w| &w.value);
                        self.cache_put(&report.provider, number, found);
                    }
                    "won".to_string()
                }
                AttemptResult::NotFound => {
                    if cache {
                        self.cache_put(&report.provider, number, None);
                    }
                    "not found".to_string()
                }
                AttemptResult::Error(e)
                    if e.starts_with("rate limit") || e.starts_with("monthly quota") =>
                {
                    format!("skipped: {e}")
                }
                AttemptResult::Error(e) => format!("error: {e}"),
                AttemptResult::TimedOut => "timed out".to_string(),
                AttemptResult::Cancelled => "cancelled".to_string(),
            };
            steps.push(Step {
                step: "provider",
                provider: Some(report.provider.clone()),
                result,
                ms: offset + ms(report.elapsed),
                notes: traces
                    .get(&report.provider)
                    .map(Trace::lines)
                    .unwrap_or_default(),
            });
        }
    }

    fn cache_put(&self, provider: &str, number: &ExternalNumber, found: Option<&Found>) {
        if let Err(e) = self.store.cache_put(provider, number, found) {
            tracing::warn!("cache write failed: {e}");
        }
    }

    /// RL11: a stale entry is served now and fetched again off the call path.
    fn refresh_in_background(self: &Arc<Self>, provider: &Arc<Provider>, number: &ExternalNumber) {
        let key = (provider.id.clone(), number.e164.clone());
        if !self
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        let (resolver, provider, number) = (self.clone(), provider.clone(), number.clone());
        self.ctx.spawn(async move {
            let trace = Trace::default();
            let permit = || resolver.permit(&provider);
            let max = resolver.settings.max_extension_length;
            let started = Instant::now();
            let result = tokio::time::timeout(
                provider.timeout,
                provider.lookup(&number, max, &permit, &trace),
            )
            .await;
            let outcome = match &result {
                Ok(Ok(Some(_))) => "found".to_string(),
                Ok(Ok(None)) => "not found".to_string(),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => "timed out".to_string(),
            };
            let name = match &result {
                Ok(Ok(Some(found))) => Some(found.name()).filter(|n| !n.is_empty()),
                _ => None,
            };
            match result {
                Ok(Ok(found)) => {
                    // Only a real answer replaces the entry: a name that
                    // vanished is "not found" from now on.
                    resolver.cache_put(&provider.id, &number, found.as_ref());
                    tracing::debug!(provider = %provider.id, "cache entry refreshed");
                }
                Ok(Err(e)) => {
                    tracing::info!(provider = %provider.id, "background refresh failed: {e}")
                }
                Err(_) => tracing::info!(provider = %provider.id, "background refresh timed out"),
            }
            let record = Record {
                id: 0,
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                origin: Origin::Background.as_str().into(),
                number: number.e164.clone(),
                source: "provider".into(),
                provider: Some(provider.id.clone()),
                name,
                spam_score: None,
                elapsed_ms: ms(started.elapsed()),
                attempts: serde_json::json!([{"step": "provider", "provider": provider.id, "result": outcome, "ms": ms(started.elapsed())}]),
            };
            let _ = resolver.store.history_add(&record);
            resolver.written.notify_waiters();
            resolver
                .refreshing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(provider.id.clone(), number.e164.clone()));
        });
    }

    /// RL12: the host writes the contact off the call path.
    fn create_contact(&self, number: &ExternalNumber, found: &Found) {
        let (first, last) = match (&found.first_name, &found.last_name) {
            (None, None) => (None, found.display.clone()),
            (first, last) => (first.clone(), last.clone()),
        };
        let contact = NewContact {
            first_name: first.map(Into::into).into(),
            last_name: last.map(Into::into).into(),
            company: found.company.clone().map(Into::into).into(),
            number: number.e164.as_str().into(),
        };
        let ctx = self.ctx.clone();
        self.ctx.spawn(async move {
            let added = tokio::task::spawn_blocking(move || ctx.add_contact(&contact)).await;
            match added {
                Ok(Ok(())) => tracing::info!("contact added to the address book"),
                Ok(Err(e)) => tracing::warn!("adding a contact failed: {e}"),
                Err(e) => tracing::warn!("adding a contact failed: {e}"),
            }
        });
    }

    /// Records the lookup in the history (off the call path for calls).
    fn finish(self: &Arc<Self>, mut lookup: Lookup, started: Instant, origin: Origin) -> Lookup {
        lookup.elapsed_ms = ms(started.elapsed());
        let record = Record {
            id: 0,
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            origin: origin.as_str().into(),
            number: lookup.number.clone(),
            source: lookup.source.into(),
            provider: lookup.provider.clone(),
            name: lookup.name(),
            spam_score: lookup.spam_score,
            elapsed_ms: lookup.elapsed_ms,
            attempts: serde_json::json!(lookup
                .steps
                .iter()
                .filter(|s| s.step != "address book")
                .map(|s| serde_json::json!({"step": s.step, "provider": s.provider, "result": s.result, "ms": s.ms}))
                .collect::<Vec<_>>()),
        };
        if origin == Origin::Call {
            self.queue_history(record);
        } else {
            lookup.id = self.write_history(&record);
        }
        lookup
    }

    /// Queues a call's record; a flush is scheduled unless one is pending.
    fn queue_history(self: &Arc<Self>, record: Record) {
        use std::sync::atomic::Ordering;
        self.history_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
        if self.history_flush_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let resolver = self.clone();
        self.ctx.spawn(async move {
            // A moment for more lookups to join the batch.
            tokio::time::sleep(HISTORY_BATCH_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || loop {
                // Cleared before the drain: a record queued after it
                // schedules the next flush.
                resolver
                    .history_flush_pending
                    .store(false, Ordering::Release);
                let batch = std::mem::take(
                    &mut *resolver
                        .history_queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                if batch.is_empty() {
                    break;
                }
                resolver.write_history_batch(&batch);
            })
            .await;
        });
    }

    fn write_history(&self, record: &Record) -> Option<i64> {
        self.write_history_batch(std::slice::from_ref(record))
    }

    fn write_history_batch(&self, records: &[Record]) -> Option<i64> {
        // The id of the last record written.
        let id = match self.store.history_add_all(records) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!("history write failed: {e}");
                None
            }
        };
        // Pruning once in a while (every 100 entries, at most once a
        // minute) keeps the cost off most lookups, however many there are.
        let crossed_hundred = |last: i64| last / 100 != (last - records.len() as i64) / 100;
        let due = {
            let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due && id.is_some_and(crossed_hundred) {
                *last = Some(Instant::now());
            }
            due
        };
        if due && id.is_some_and(crossed_hundred) {
            let _ = self
                .store
                .prune_history(self.settings.history_keep, self.settings.history_max);
            let longest = self.settings.positive_ttl.max(self.settings.negative_ttl);
            let _ = self.store.cache_expire(longest);
        }
        self.written.notify_waiters();
        id
    }
}
