//! Reverse lookup (RL1–RL20): caller names from phone books, CRMs, LDAP,
//! SQL and CardDAV, queried in parallel within the call-setup budget, with a
//! cache that stores no numbers, spam scores, history and a live view.
//!
//! Code map: `config` (what the administrator writes), `profiles` (the
//! shipped provider templates), `providers` (one file per kind), `extract`
//! (JSON and XML paths), `resolve` (the RL10 order and the race), `store`
//! (cache, history, quotas). This file declares the module and turns a
//! lookup into a decision. See `docs/modules/reverse-lookup.md`.

pub mod config;
pub mod extract;
pub mod profiles;
pub mod providers;
pub mod resolve;
pub mod store;

use std::{collections::HashMap, sync::Arc, time::Duration};

use callhost_numbers::{ExternalNumber, NumberPlan};
use callhost_plugin_sdk::abi_stable::std_types::ROption;
use callhost_plugin_sdk::{
    config_error, export_module,
    serde_json::json,
    template::{Placeholder, Template},
    Action, CallSetup, ConfigError, Context, Decision, Direction, Module, PartyKind, Setup,
};
use tokio::sync::Notify;

use crate::{
    config::{Config, SpamAction},
    providers::{BuildContext, Provider},
    resolve::{Lookup, Origin, Resolver},
    store::LookupStore,
};

callhost_plugin_sdk::placeholders! {
    /// Placeholders of `display` and the providers' `display`.
    enum DisplayField {
        Name = "name",
        FirstName = "first_name",
        LastName = "last_name",
        Company = "company",
        Number = "number",
        SpamScore = "spam_score",
        Provider = "provider",
    }
}

callhost_plugin_sdk::placeholders! {
    /// Placeholders of `prefix_format`.
    enum PrefixField {
        Callee = "callee",
        Display = "display",
    }
}

callhost_plugin_sdk::placeholders! {
    /// Placeholders of `spam.display`.
    enum SpamField {
        Display = "display",
        Score = "score",
        Number = "number",
    }
}

pub struct ReverseLookup {
    config: Config,
    resolver: Arc<Resolver>,
    plan: NumberPlan,
    /// Built once per configuration; calls share it.
    view: Arc<View>,
    /// Callers' numbers as normalised lately: parsing a number is the
    /// dearest part of a call's lookup, and callers call again.
    normalized: std::sync::Mutex<HashMap<String, ExternalNumber>>,
}

/// Numbers kept normalised at most (then the memo starts afresh).
const NORMALIZED_MEMO: usize = 10_000;

fn template<P: Placeholder>(field: &str, text: &str) -> Result<Template<P>, ConfigError> {
    Template::parse(text).map_err(|e| config_error(field, e))
}

impl Module for ReverseLookup {
    type Config = Config;

    fn new(ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        if config.budget_ms == 0 || config.budget_ms > 10_000 {
            return Err(config_error(
                "budget_ms",
                format!("{} is out of range 1–10000 (keep it below the host's call-setup budget, 700 ms by default)", config.budget_ms),
            ));
        }
        if config.max_extension_length > 4 {
            return Err(config_error(
                "max_extension_length",
                format!(
                    "{} is too long: at most 4 digits (0 turns base numbers off)",
                    config.max_extension_length
                ),
            ));
        }
        let home = ctx.home_country();
        let plan = NumberPlan::new(&home)
            .map_err(|e| config_error("(host)", format!("home country: {e}")))?;
        let cache = &config.cache;
        let settings = resolve::Settings {
            budget: Duration::from_millis(config.budget_ms),
            max_extension_length: config.max_extension_length,
            address_book: config.address_book,
            create_contacts: config.create_contacts,
            cache: cache.enabled,
            positive_ttl: config::duration("cache.positive_ttl", &cache.positive_ttl)?,
            negative_ttl: config::duration("cache.negative_ttl", &cache.negative_ttl)?,
            refresh_after: config::duration("cache.refresh_after", &cache.refresh_after)?,
            history_keep: config::duration("history.keep", &config.history.keep)?,
            history_max: config.history.max_entries,
        };
        let mut providers = Vec::new();
        let mut provider_displays = HashMap::new();
        for (index, configured) in config.providers.iter().enumerate() {
            let at = |field: &str| format!("providers[{index}].{field}");
            let id = configured.id.trim();
            let id_ok = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(config_error(
                    at("id"),
                    format!("{id:?}: an id is letters, digits, '-' and '_'"),
                ));
            }
            if config.providers[..index]
                .iter()
                .any(|p| p.id == configured.id)
            {
                return Err(config_error(at("id"), format!("{id:?} is used twice")));
            }
            let (merged, needs) =
                profiles::resolve(configured).map_err(|e| config_error(at("template"), e))?;
            if merged.enabled == Some(false) {
                continue;
            }
            let provider = Provider::build(
                &merged,
                &needs,
                &BuildContext {
                    home_country: &home,
                    index,
                },
            )?;
            if let Some(text) = &provider.display {
                provider_displays.insert(provider.id.clone(), template(&at("display"), text)?);
            }
            providers.push(Arc::new(provider));
        }
        let store = LookupStore::open(&ctx.data_dir)
            .map_err(|e| config_error("(instance data)", e.to_string()))?;
        // The prefix template is checked even when it is off.
        let prefix = template("prefix_format", &config.prefix_format)?;
        let view = Arc::new(View {
            display: template("display", &config.display)?,
            provider_displays,
            prefix: config.prefix_callee_name.then_some(prefix),
            spam_display: template("spam.display", &config.spam.display)?,
            spam_action: config.spam.action,
            spam_threshold: config.spam.threshold,
        });
        Ok(ReverseLookup {
            view,
            normalized: std::sync::Mutex::default(),
            resolver: Arc::new(Resolver::new(
                settings,
                providers,
                Arc::new(store),
                ctx.clone(),
                Arc::new(Notify::new()),
            )),
            plan,
            config,
        })
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        let callee_is_local = matches!(setup.callee.kind, PartyKind::User | PartyKind::Group);
        let (party, outgoing) = match setup.direction {
            // RL18: only calls to a user or a group.
            Direction::Incoming if self.config.resolve_incoming && callee_is_local => {
                (&setup.caller, false)
            }
            Direction::Outgoing if self.config.resolve_outgoing => (&setup.callee, true),
            _ => return Setup::Ready(Decision::default()),
        };
        if party.kind != PartyKind::External {
            return Setup::Ready(Decision::default());
        }
        let Some(number) = self.number_of(party) else {
            return Setup::Ready(Decision::default());
        };
        let known = party.name.clone().into_option().map(|n| n.into_string());
        let callee = setup.callee.label().to_string();
        let shown_number = party.number.to_string();
        // The address book or the cache in memory answer at once, on the
        // host's call thread; anything else runs on our runtime.
        if let Some(lookup) = self
            .resolver
            .resolve_quick(&number, known.clone(), !outgoing)
        {
            return Setup::Ready(self.view.decide(
                &lookup,
                outgoing,
                &callee,
                callee_is_local,
                &shown_number,
            ));
        }
        let resolver = self.resolver.clone();
        let view = self.view.clone();
        Setup::Later(Box::pin(async move {
            let lookup = resolver
                .resolve(&number, known, Origin::Call, !outgoing)
                .await;
            view.decide(&lookup, outgoing, &callee, callee_is_local, &shown_number)
        }))
    }
}

/// The admin actions, bound to their names in `export_module!` below.
impl ReverseLookup {
    /// `test NUMBER [--fresh]`: resolves a number now and explains every step.
    fn test(&self, args: &[String]) -> Action {
        // The number may come in pieces ("030 1234567" unquoted).
        let raw: String = args
            .iter()
            .filter(|a| !a.starts_with("--"))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        if raw.is_empty() {
            return Action::Ready(Err("usage: test NUMBER [--fresh]".into()));
        }
        let number = match self.plan.normalize(&raw) {
            Ok(number) => number,
            Err(e) => return Action::Ready(Err(format!("{raw:?}: {e}"))),
        };
        let fresh = args.iter().any(|a| a == "--fresh");
        let resolver = self.resolver.clone();
        let view = self.view.clone();
        let chosen: Vec<_> = resolver
            .providers
            .iter()
            .map(|p| json!({"provider": p.id, "name": p.name, "eligible": p.eligible(&number), "role": format!("{:?}", p.role).to_lowercase(), "timeout_ms": p.timeout.as_millis() as u64, "cache": p.cache}))
            .collect();
        Action::Later(Box::pin(async move {
            let resolver = if fresh {
                Arc::new(resolver.without_cache())
            } else {
                resolver
            };
            let lookup = resolver.resolve(&number, None, Origin::Test, true).await;
            let decision = view.decide(&lookup, false, "", false, &number.national);
            // Error: the answer says nothing about the number; warning:
            // the providers answered, but no one knows it.
            let verdict = match &lookup.found {
                Some(_) => "success",
                None if lookup.every_provider_failed() => "error",
                None => "warning: no provider knows this number",
            };
            Ok(json!({
                "number": {"international": number.international, "e164": number.e164, "national": number.national, "country": number.country},
                "providers": chosen,
                "result": verdict,
                "display": decision.display.into_option().map(|d| d.into_string()),
                "reject": decision.reject.into_option().map(|d| d.into_string()),
                "lookup": lookup,
            }))
        }))
    }

    /// `history [LIMIT]`.
    fn history(&self, args: &[String]) -> Result<serde_json::Value, String> {
        let limit = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
        self.resolver
            .store
            .history(None, limit)
            .map(|records| json!({"lookups": records}))
            .map_err(|e| e.to_string())
    }

    /// `live [AFTER_ID] [WAIT_SECONDS]`.
    fn live(&self, args: &[String]) -> Action {
        let after = args.first().and_then(|a| a.parse::<i64>().ok());
        let wait = args
            .get(1)
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(25)
            .min(60);
        Action::Later(Box::pin(lookups_after(
            self.resolver.clone(),
            after,
            Duration::from_secs(wait),
        )))
    }

    /// `purge [cache|history|all]`.
    fn purge(&self, args: &[String]) -> Result<serde_json::Value, String> {
        let what = args.first().map(String::as_str).unwrap_or("cache");
        let store = &self.resolver.store;
        let result = match what {
            "cache" => store
                .purge_cache()
                .map(|n| json!({"cache_entries_deleted": n})),
            "history" => store
                .purge_history()
                .map(|n| json!({"history_entries_deleted": n})),
            "all" => store.purge_cache().and_then(|c| {
                store
                    .purge_history()
                    .map(|h| json!({"cache_entries_deleted": c, "history_entries_deleted": h}))
            }),
            other => return Err(format!("purge {other:?}: say cache, history or all")),
        };
        result.map_err(|e| e.to_string())
    }

    /// `refresh-call-lists`.
    fn refresh_call_lists(&self, _args: &[String]) -> Action {
        Action::Later(Box::pin(name_call_lists(
            self.resolver.clone(),
            self.plan.clone(),
        )))
    }

    /// `profiles`.
    fn profiles(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        Ok(json!({"profiles": profiles::listing()}))
    }

    /// `defaults TEMPLATE [VARIANT]`.
    fn defaults(&self, args: &[String]) -> Result<serde_json::Value, String> {
        let Some(template) = args.first() else {
            return Err("usage: defaults TEMPLATE [VARIANT]".into());
        };
        profiles::defaults_snippet(template, args.get(1).map(String::as_str))
            .map(|toml| json!({"toml": toml}))
    }

    /// `stats`.
    fn stats(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        let store = &self.resolver.store;
        store
            .cache_size()
            .and_then(|size| store.usage().map(|usage| (size, usage)))
            .map(|(size, usage)| {
                json!({
                    "cache_entries": size,
                    "requests_this_month": usage.into_iter().collect::<HashMap<_, _>>(),
                })
            })
            .map_err(|e| e.to_string())
    }
}

impl ReverseLookup {
    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The party's number, normalised, if it is an external number.
    fn number_of(&self, party: &callhost_plugin_sdk::Party) -> Option<ExternalNumber> {
        let raw = party
            .e164
            .as_ref()
            .map(|n| n.as_str())
            .into_option()
            .unwrap_or(party.number.as_str());
        let mut memo = self.normalized.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(number) = memo.get(raw) {
            return Some(number.clone());
        }
        let number = self.plan.normalize(raw).ok()?;
        if memo.len() >= NORMALIZED_MEMO {
            memo.clear();
        }
        memo.insert(raw.to_string(), number.clone());
        Some(number)
    }
}

/// How a lookup becomes a decision (display, spam, prefix).
struct View {
    display: Template<DisplayField>,
    provider_displays: HashMap<String, Template<DisplayField>>,
    prefix: Option<Template<PrefixField>>,
    spam_display: Template<SpamField>,
    spam_action: SpamAction,
    spam_threshold: u8,
}

impl View {
    fn decide(
        &self,
        lookup: &Lookup,
        outgoing: bool,
        callee: &str,
        callee_is_local: bool,
        shown_number: &str,
    ) -> Decision {
        let mut decision = Decision::default();
        let name = lookup.name();
        if outgoing {
            // RL2: the name goes to the calling user, never to the callee.
            decision.callee_name = name.map(Into::into).into();
            return decision;
        }
        let found = lookup.found.clone().unwrap_or_default();
        let score = lookup.spam_score.map(|s| s.to_string()).unwrap_or_default();
        let provider = lookup.provider.clone().unwrap_or_default();
        let mut display = name.as_ref().map(|name| {
            let template = lookup
                .provider
                .as_ref()
                .and_then(|p| self.provider_displays.get(p))
                .unwrap_or(&self.display);
            let empty = String::new();
            template
                .render(|placeholder| match placeholder {
                    DisplayField::Name => name.as_str(),
                    DisplayField::FirstName => found.first_name.as_ref().unwrap_or(&empty),
                    DisplayField::LastName => found.last_name.as_ref().unwrap_or(&empty),
                    DisplayField::Company => found.company.as_ref().unwrap_or(&empty),
                    DisplayField::Number => shown_number,
                    DisplayField::SpamScore => score.as_str(),
                    DisplayField::Provider => provider.as_str(),
                })
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        });
        if name.is_some() {
            decision.first_name = found.first_name.clone().map(Into::into).into();
            decision.last_name = found.last_name.clone().map(Into::into).into();
            decision.company = found.company.clone().map(Into::into).into();
            if found.first_name.is_none() && found.last_name.is_none() && found.company.is_none() {
                // A provider that gives one name only: it is the person's name.
                decision.last_name = name.clone().map(Into::into).into();
            }
        }
        if let Some(score) = lookup.spam_score.filter(|s| *s >= self.spam_threshold) {
            let source = lookup.spam_provider.clone().unwrap_or_default();
            match self.spam_action {
                SpamAction::Reject => {
                    decision.reject = Some(format!(
                        "spam score {score} from {source} (threshold {})",
                        self.spam_threshold
                    ))
                    .map(Into::into)
                    .into();
                }
                action => {
                    if action == SpamAction::Flag {
                        decision.flag = Some(format!("spam score {score} from {source}"))
                            .map(Into::into)
                            .into();
                    }
                    let base = display.clone().unwrap_or_else(|| shown_number.to_string());
                    let score = score.to_string();
                    display = Some(self.spam_display.render(|placeholder| match placeholder {
                        SpamField::Display => base.as_str(),
                        SpamField::Score => score.as_str(),
                        SpamField::Number => shown_number,
                    }));
                }
            }
        }
        if let (Some(prefix), true) = (&self.prefix, callee_is_local) {
            let base = display.clone().unwrap_or_else(|| shown_number.to_string());
            display = Some(prefix.render(|placeholder| match placeholder {
                PrefixField::Callee => callee,
                PrefixField::Display => base.as_str(),
            }));
        }
        decision.display = display.map(Into::into).into();
        let reason = match (&lookup.provider, lookup.source) {
            (_, "address_book") => format!("address book, {} ms", lookup.elapsed_ms),
            (Some(p), source) => format!("{source} {p}, {} ms", lookup.elapsed_ms),
            (None, _) => format!("not found, {} ms", lookup.elapsed_ms),
        };
        decision.reason = ROption::RSome(reason.into());
        decision
    }
}

/// The `live` action: lookups after `after` (default: from now on), waiting
/// up to `wait` for the first; `next` is the id to ask after next time. The
/// database is polled too, so lookups of other processes show up.
async fn lookups_after(
    resolver: Arc<Resolver>,
    after: Option<i64>,
    wait: Duration,
) -> Result<serde_json::Value, String> {
    let store = &resolver.store;
    let after = match after {
        Some(after) => after,
        None => store
            .history(None, 1)
            .map_err(|e| e.to_string())?
            .last()
            .map_or(0, |r| r.id),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let records = store.history(Some(after), 100).map_err(|e| e.to_string())?;
        if !records.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = records.last().map_or(after, |r| r.id);
            return Ok(json!({"next": next, "lookups": records}));
        }
        let notified = resolver.written.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// RL13: resolves every call-list number without a name and names all its
/// entries, for all users. Progress goes to the instance log.
async fn name_call_lists(
    resolver: Arc<Resolver>,
    plan: NumberPlan,
) -> Result<serde_json::Value, String> {
    let ctx = resolver.ctx.clone();
    let numbers = tokio::task::spawn_blocking(move || ctx.unresolved_call_list_numbers())
        .await
        .map_err(|e| e.to_string())??;
    let total = numbers.len();
    tracing::info!("refreshing call lists: {total} numbers without a name");
    let mut results = Vec::new();
    let (mut resolved, mut entries) = (0, 0u64);
    let progress = |done: usize| resolver.ctx.report_progress(done as u64, total as u64);
    progress(0);
    for (i, raw) in numbers.into_iter().enumerate() {
        // Reported as each number starts: the last one ends at `total`.
        progress(i);
        let Ok(number) = plan.normalize(&raw) else {
            results.push(json!({"number": raw, "result": "not an external number"}));
            continue;
        };
        let lookup = resolver
            .resolve(&number, None, Origin::Refresh, false)
            .await;
        let Some(name) = lookup.name() else {
            results.push(json!({"number": raw, "result": "not found"}));
            tracing::info!("call lists: {}/{total} {raw}: not found", i + 1);
            continue;
        };
        let ctx = resolver.ctx.clone();
        let (number_text, name_text) = (raw.clone(), name.clone());
        let changed =
            tokio::task::spawn_blocking(move || ctx.set_call_list_name(&number_text, &name_text))
                .await
                .map_err(|e| e.to_string())??;
        resolved += 1;
        entries += changed;
        tracing::info!(
            "call lists: {}/{total} {raw}: {name} ({changed} entries)",
            i + 1
        );
        results.push(json!({"number": raw, "result": "resolved", "name": name, "entries": changed, "source": lookup.source, "provider": lookup.provider}));
    }
    progress(total);
    Ok(
        json!({"numbers": total, "resolved": resolved, "entries_updated": entries, "results": results}),
    )
}

export_module! {
    module: ReverseLookup,
    id: "reverse-lookup",
    name: "Reverse lookup",
    description: "Caller names from phone books, CRMs, LDAP, SQL and CardDAV, in parallel within the call budget",
    hooks: [quick_setup, lookup],
    actions: [
        { name: "test", usage: "NUMBER [--fresh]", help: "Resolve a number now and explain every step (--fresh skips the cache)", handler: ReverseLookup::test },
        { name: "history", usage: "[LIMIT]", help: "The latest lookups: which provider answered what, when", handler: ReverseLookup::history },
        { name: "live", usage: "[AFTER_ID] [WAIT_SECONDS]", help: "Lookups after AFTER_ID, waiting for the next one (a feed: pass back `next`)", handler: ReverseLookup::live },
        { name: "purge", usage: "[cache|history|all]", help: "Delete the cache, the history or both", handler: ReverseLookup::purge },
        { name: "refresh-call-lists", usage: "", help: "Resolve call-list entries without a name and name them for all users", handler: ReverseLookup::refresh_call_lists },
        { name: "profiles", usage: "", help: "List the shipped provider templates and their variants", handler: ReverseLookup::profiles },
        { name: "defaults", usage: "TEMPLATE [VARIANT]", help: "A provider entry that uses a template's defaults (restore defaults)", handler: ReverseLookup::defaults },
        { name: "stats", usage: "", help: "Cache size and this month's requests per provider", handler: ReverseLookup::stats },
    ],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Found;

    fn view(display: &str, prefix: &str, spam: &str) -> View {
        View {
            display: Template::parse(display).unwrap(),
            provider_displays: HashMap::new(),
            prefix: Some(Template::parse(prefix).unwrap()),
            spam_display: Template::parse(spam).unwrap(),
            spam_action: SpamAction::Show,
            spam_threshold: 5,
        }
    }

    fn lookup() -> Lookup {
        Lookup {
            number: "+49301234567".into(),
            found: Some(Found {
                first_name: Some("Anna".into()),
                last_name: Some("Schmidt".into()),
                company: Some("Acme".into()),
                ..Found::default()
            }),
            source: "provider",
            provider: Some("oertliche".into()),
            spam_score: Some(7),
            spam_provider: Some("tellows".into()),
            elapsed_ms: 1.0,
            steps: Vec::new(),
            id: None,
        }
    }

    /// Every placeholder, in an order unlike their declaration: each is
    /// filled with its own value.
    #[test]
    fn every_display_placeholder_is_filled_by_its_name() {
        let view = view(
            "{provider}|{spam_score}|{number}|{company}|{last_name}|{first_name}|{name}",
            "{display} @ {callee}",
            "{number} {score} {display}",
        );
        let decision = view.decide(&lookup(), false, "Zentrale", true, "0301234567");
        assert_eq!(
            decision
                .display
                .into_option()
                .map(|d| d.into_string())
                .as_deref(),
            Some("0301234567 7 oertliche|7|0301234567|Acme|Schmidt|Anna|Anna Schmidt @ Zentrale")
        );
    }
}
