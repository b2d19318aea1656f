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
    providers::{LookupError, Provider, Refusal, Trace},
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
    pub step: StepKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub result: StepResult,
    pub ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Where a step looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StepKind {
    #[serde(rename = "address book")]
    AddressBook,
    #[serde(rename = "cache")]
    Cache,
    #[serde(rename = "provider")]
    Provider,
}

/// How one step ended; shown (and kept in the history) as its text:
/// `hit`, `stale`, `negative`, `miss`, `won`, `found`, `not found`,
/// `skipped: …`, `error: …`, `timed out`, `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// Address book or cache: an entry that answers.
    Hit,
    /// Cache: an answer old enough to be fetched again in the background.
    Stale,
    /// Cache: the provider is known to have nothing.
    Negative,
    /// Address book or cache: nothing there.
    Miss,
    /// Provider: the first answer, the lookup's.
    Won,
    /// Provider, refreshing the cache in the background: an answer.
    Found,
    NotFound,
    /// Provider not asked, and why.
    Skipped(String),
    /// Provider asked, and why it failed.
    Error(String),
    TimedOut,
    /// Still running when another provider won.
    Cancelled,
}

impl StepResult {
    /// The provider was asked and its silence says nothing about the
    /// number: it failed or ran out of time.
    pub fn is_failure(&self) -> bool {
        matches!(self, StepResult::Error(_) | StepResult::TimedOut)
    }
}

impl std::fmt::Display for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepResult::Hit => f.write_str("hit"),
            StepResult::Stale => f.write_str("stale"),
            StepResult::Negative => f.write_str("negative"),
            StepResult::Miss => f.write_str("miss"),
            StepResult::Won => f.write_str("won"),
            StepResult::Found => f.write_str("found"),
            StepResult::NotFound => f.write_str("not found"),
            StepResult::Skipped(why) => write!(f, "skipped: {why}"),
            StepResult::Error(why) => write!(f, "error: {why}"),
            StepResult::TimedOut => f.write_str("timed out"),
            StepResult::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl Serialize for StepResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A refused request was never sent: skipped, not failed.
impl From<&LookupError> for StepResult {
    fn from(error: &LookupError) -> StepResult {
        match error {
            LookupError::Refused(why) => StepResult::Skipped(why.to_string()),
            LookupError::Failed(why) => StepResult::Error(why.clone()),
        }
    }
}

impl From<&AttemptResult<LookupError>> for StepResult {
    fn from(result: &AttemptResult<LookupError>) -> StepResult {
        match result {
            AttemptResult::Won => StepResult::Won,
            AttemptResult::NotFound => StepResult::NotFound,
            AttemptResult::Error(error) => StepResult::from(error),
            AttemptResult::Panicked(message) => {
                StepResult::Error(format!("provider panicked: {message}"))
            }
            AttemptResult::TimedOut => StepResult::TimedOut,
            AttemptResult::Cancelled => StepResult::Cancelled,
        }
    }
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

    /// Providers were asked and every one failed, so the lookup says
    /// nothing about the number (skipped providers were not asked).
    pub fn every_provider_failed(&self) -> bool {
        let mut asked = self
            .steps
            .iter()
            .filter(|s| s.step == StepKind::Provider && !matches!(s.result, StepResult::Skipped(_)))
            .peekable();
        asked.peek().is_some() && asked.all(|s| s.result.is_failure())
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
    history_writer_started: std::sync::atomic::AtomicBool,
    /// When the history and the cache were last pruned.
    last_prune: Mutex<Option<Instant>>,
}

/// The history and the cache are pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the history writer writes the calls' records that piled up
/// (one transaction for all). Once started it wakes this often even when
/// idle: a timer on the module's runtime, never the call's thread.
const HISTORY_BATCH_DELAY: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Records still queued when the instance goes (reconfigured, deactivated,
/// upgraded) are written, not dropped.
impl Drop for Resolver {
    fn drop(&mut self) {
        let batch = self.with_history_queue(std::mem::take);
        if !batch.is_empty() {
            self.write_history_batch(&batch);
        }
    }
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
            history_writer_started: std::sync::atomic::AtomicBool::new(false),
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
    fn permit(&self, provider: &Provider) -> Result<(), LookupError> {
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
                return Err(Refusal::RateLimit { limit }.into());
            }
            window.push_back(now);
        }
        // 0 turns a template's quota off (profile values cannot be removed).
        if let Some(quota) = provider.monthly_quota.filter(|q| *q > 0) {
            match self.store.take_quota(&provider.id, quota) {
                Ok(Ok(())) => {}
                Ok(Err(quota)) => return Err(Refusal::MonthlyQuota { quota }.into()),
                Err(e) => return Err(LookupError::Failed(format!("quota: {e}"))),
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
                step: StepKind::AddressBook,
                provider: None,
                result: if hit {
                    StepResult::Hit
                } else {
                    StepResult::Miss
                },
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
                        step: StepKind::Provider,
                        provider: Some(p.id.clone()),
                        result: StepResult::Skipped(format!(
                            "not for callers from {}",
                            number.country.as_deref().unwrap_or("no country")
                        )),
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
                    let result = if stale {
                        StepResult::Stale
                    } else {
                        StepResult::Hit
                    };
                    if provider.role == Role::Spam {
                        if let Some(score) = found.spam_score {
                            cached.spam = Some((provider.id.clone(), score));
                        }
                        let note = found
                            .spam_score
                            .map_or("no spam score".to_string(), |s| format!("spam score {s}"));
                        (result, vec![note])
                    } else if lookup.found.is_none() {
                        let note = format!("{:?}, {} s old", found.name(), entry.age.as_secs());
                        lookup.found = Some(found);
                        lookup.source = "cache";
                        lookup.provider = Some(provider.id.clone());
                        (result, vec![note])
                    } else {
                        (result, Vec::new())
                    }
                }
                Some(entry) if entry.found.is_none() && entry.age < self.settings.negative_ttl => {
                    cached.negative.insert(provider.id.clone());
                    (
                        StepResult::Negative,
                        vec![format!("{} s old", entry.age.as_secs())],
                    )
                }
                // Expired in memory: only the full lookup may ask again.
                Some(_) if read == CacheRead::MemoryOnly => return None,
                _ => (StepResult::Miss, Vec::new()),
            };
            lookup.steps.push(Step {
                step: StepKind::Cache,
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
        outcome: &RaceOutcome<Found, LookupError>,
        number: &ExternalNumber,
        traces: &HashMap<String, Trace>,
        offset: f64,
        steps: &mut Vec<Step>,
    ) {
        for report in &outcome.reports {
            let provider = self.providers.iter().find(|p| p.id == report.provider);
            let cache = self.settings.cache && provider.is_some_and(|p| p.cache);
            match &report.result {
                AttemptResult::Won if cache => {
                    let found = outcome.winner.as_ref().map(|w| &w.value);
                    self.cache_put(&report.provider, number, found);
                }
                AttemptResult::NotFound if cache => {
                    self.cache_put(&report.provider, number, None);
                }
                _ => {}
            }
            steps.push(Step {
                step: StepKind::Provider,
                provider: Some(report.provider.clone()),
                result: StepResult::from(&report.result),
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
                Ok(Ok(Some(_))) => StepResult::Found,
                Ok(Ok(None)) => StepResult::NotFound,
                Ok(Err(e)) => StepResult::from(e),
                Err(_) => StepResult::TimedOut,
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
                attempts: serde_json::json!([{"step": StepKind::Provider, "provider": provider.id, "result": outcome, "ms": ms(started.elapsed())}]),
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
                .filter(|s| s.step != StepKind::AddressBook)
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

    /// Queues a call's record for the history writer, which the first
    /// record starts. The call's thread only queues: spawning or waking a
    /// task per batch put a futex wake on it every other call.
    fn queue_history(self: &Arc<Self>, record: Record) {
        use std::sync::atomic::Ordering;
        self.with_history_queue(|queue| queue.push(record));
        if self.history_writer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        // Weak: the writer ends with the resolver (whose drop writes the rest).
        let resolver = Arc::downgrade(self);
        self.ctx.spawn(async move {
            let mut tick = tokio::time::interval(HISTORY_BATCH_DELAY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(resolver) = resolver.upgrade() else {
                    return;
                };
                let batch = resolver.with_history_queue(std::mem::take);
                if !batch.is_empty() {
                    let _ =
                        tokio::task::spawn_blocking(move || resolver.write_history_batch(&batch))
                            .await;
                }
            }
        });
    }

    fn with_history_queue<T>(&self, with: impl FnOnce(&mut Vec<Record>) -> T) -> T {
        with(&mut self.history_queue.lock().unwrap_or_else(|p| p.into_inner()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider_step(result: StepResult) -> Step {
        Step {
            step: StepKind::Provider,
            provider: Some("p".into()),
            result,
            ms: 0.0,
            notes: Vec::new(),
        }
    }

    fn lookup(steps: Vec<Step>) -> Lookup {
        Lookup {
            steps,
            ..Lookup::empty(
                &callhost_numbers::NumberPlan::new("DE")
                    .unwrap()
                    .normalize("030 1234567")
                    .unwrap(),
            )
        }
    }

    #[test]
    fn a_refused_request_is_skipped_and_a_failure_is_an_error() {
        let refused = AttemptResult::Error(LookupError::Refused(Refusal::RateLimit { limit: 30 }));
        assert_eq!(
            StepResult::from(&refused),
            StepResult::Skipped("rate limit: 30 requests a minute reached".into())
        );
        let quota =
            AttemptResult::Error(LookupError::Refused(Refusal::MonthlyQuota { quota: 1000 }));
        assert_eq!(
            StepResult::from(&quota).to_string(),
            "skipped: monthly quota exhausted (1000 requests this month)"
        );
        // A provider's own words decide nothing, whatever they start with.
        let failed =
            AttemptResult::Error(LookupError::Failed("rate limit of the API exceeded".into()));
        assert_eq!(
            StepResult::from(&failed),
            StepResult::Error("rate limit of the API exceeded".into())
        );
        assert_eq!(
            StepResult::from(&AttemptResult::<LookupError>::Panicked("boom".into())).to_string(),
            "error: provider panicked: boom"
        );
    }

    #[test]
    fn step_results_read_as_before() {
        let cases = [
            (StepResult::Hit, "hit"),
            (StepResult::Stale, "stale"),
            (StepResult::Negative, "negative"),
            (StepResult::Miss, "miss"),
            (StepResult::Won, "won"),
            (StepResult::Found, "found"),
            (StepResult::NotFound, "not found"),
            (StepResult::Skipped("why".into()), "skipped: why"),
            (StepResult::Error("why".into()), "error: why"),
            (StepResult::TimedOut, "timed out"),
            (StepResult::Cancelled, "cancelled"),
        ];
        for (result, text) in cases {
            assert_eq!(serde_json::to_value(&result).unwrap(), text);
        }
        assert_eq!(
            serde_json::to_value(provider_step(StepResult::Won)).unwrap()["step"],
            "provider"
        );
        assert_eq!(
            serde_json::to_value(StepKind::AddressBook).unwrap(),
            "address book"
        );
    }

    #[test]
    fn every_provider_failed_counts_the_providers_asked() {
        let failed = || provider_step(StepResult::Error("HTTP 500".into()));
        let skipped = || provider_step(StepResult::Skipped("rate limit".into()));
        assert!(lookup(vec![
            failed(),
            provider_step(StepResult::TimedOut),
            skipped()
        ])
        .every_provider_failed());
        assert!(
            !lookup(vec![failed(), provider_step(StepResult::NotFound)]).every_provider_failed()
        );
        assert!(
            !lookup(vec![skipped()]).every_provider_failed(),
            "none was asked"
        );
        assert!(!lookup(Vec::new()).every_provider_failed());
    }
}
