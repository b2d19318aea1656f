//! Providers: one configured source of names (RL5, RL6), ready to query.
//! Each kind lives in its own file and answers `query(number)`; what they
//! share (answer check, base numbers, quota permits, the trace the `test`
//! action shows) is here.

mod carddav;
mod crm;
mod http;
mod ldap;
mod sql;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use callhost_lookup_core::{base_number_candidates, verdict, RuleSet, Verdict};
use callhost_numbers::{ExternalNumber, NumberPlan};
use callhost_plugin_sdk::{config_error, ConfigError};

use crate::{
    config::{self, Kind, ProviderConfig, Role, RuleConfig, Secret, TelFormat},
    extract::Found,
};

/// Notes one provider leaves while it works, for the `test` action.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    pub fn note(&self, line: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The start of an answer, on one line, for traces.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A configured provider, validated.
pub struct Provider {
    pub id: String,
    pub name: String,
    /// `None`: any country.
    pub countries: Option<Vec<String>>,
    pub role: Role,
    pub timeout: Duration,
    pub cache: bool,
    pub base_number: bool,
    pub display: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub monthly_quota: Option<u32>,
    source: Source,
}

enum Source {
    Http(http::Http),
    Sql(sql::Sql),
    Ldap(ldap::Ldap),
    CardDav(carddav::CardDav),
    Salesforce(crm::Salesforce),
    Pipedrive(crm::Pipedrive),
    Dynamics(crm::Dynamics),
}

/// Asks the resolver whether one more request is allowed (rate limit and
/// monthly quota); `Err` says why not.
pub type Permit<'a> = &'a (dyn Fn() -> Result<(), LookupError> + Send + Sync);

/// Why a provider's lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Not sent: the resolver refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Asked, and it failed (unreachable, an error status, an answer it
    /// could not read, the quota count not readable).
    #[error("{0}")]
    Failed(String),
}

/// Why the resolver refused a provider's request (RL20).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("rate limit: {limit} requests a minute reached")]
    RateLimit { limit: u32 },
    #[error("monthly quota exhausted ({quota} requests this month)")]
    MonthlyQuota { quota: u32 },
}

/// Shared settings a provider is built with.
pub struct BuildContext<'a> {
    pub home_country: &'a str,
    /// The index of this provider in `providers`, for error paths.
    pub index: usize,
}

impl Provider {
    /// Builds the provider from its configuration (already laid over its
    /// profile); `needs` are the secrets its profile requires.
    pub fn build(
        config: &ProviderConfig,
        needs: &[String],
        ctx: &BuildContext<'_>,
    ) -> Result<Provider, ConfigError> {
        let at = |field: &str| format!("providers[{}].{field}", ctx.index);
        let kind = config
            .kind
            .ok_or_else(|| config_error(at("kind"), "missing: set a kind or a template"))?;
        let secrets = config.secrets.clone().unwrap_or_default();
        for name in needs {
            if !secrets.contains_key(name) {
                return Err(config_error(
                    at(&format!("secrets.{name}")),
                    format!(
                        "missing: template {:?} needs it",
                        config.template.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        for name in secrets.keys() {
            let reserved = ["tel", "tel_national", "tel_digits"];
            let shaped =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !shaped || reserved.contains(&name.as_str()) {
                return Err(config_error(
                    at(&format!("secrets.{name}")),
                    "a secret's name must be letters, digits and '_', and not a number placeholder",
                ));
            }
        }
        let countries = match config.country.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(any) if any.eq_ignore_ascii_case("any") => None,
            Some(list) => {
                let mut countries = Vec::new();
                for code in list.split(',').map(str::trim) {
                    let code = code.to_ascii_uppercase();
                    NumberPlan::new(&code).map_err(|_| {
                        config_error(
                            at("country"),
                            format!("{code:?} is not a country code; write \"any\" or codes like \"CH,LI\""),
                        )
                    })?;
                    countries.push(code);
                }
                Some(countries)
            }
        };
        let timeout = Duration::from_millis(config.timeout_ms.unwrap_or(500));
        if timeout.is_zero() {
            return Err(config_error(at("timeout_ms"), "must be more than 0"));
        }
        let rules = compile_rules(config.rules.as_deref().unwrap_or_default(), &at)?;
        let settings = Settings {
            config,
            secrets: &secrets,
            tel: config.tel_format.unwrap_or(TelFormat::International),
            timeout,
            rules,
            home_country: ctx.home_country,
            at: &at,
        };
        let source = match kind {
            Kind::Http => Source::Http(http::Http::build(&settings)?),
            Kind::Sql => Source::Sql(sql::Sql::build(&settings)?),
            Kind::Ldap => Source::Ldap(ldap::Ldap::build(&settings)?),
            Kind::Carddav => Source::CardDav(carddav::CardDav::build(&settings)?),
            Kind::Salesforce => Source::Salesforce(crm::Salesforce::build(&settings)?),
            Kind::Pipedrive => Source::Pipedrive(crm::Pipedrive::build(&settings)?),
            Kind::Dynamics => Source::Dynamics(crm::Dynamics::build(&settings)?),
        };
        Ok(Provider {
            id: config.id.clone(),
            name: config.name.clone().unwrap_or_else(|| config.id.clone()),
            countries,
            role: config.role.unwrap_or(Role::Name),
            timeout,
            cache: config.cache.unwrap_or(true),
            base_number: config
                .base_number
                .unwrap_or(matches!(kind, Kind::Http | Kind::Sql)),
            display: config.display.clone(),
            rate_limit_per_minute: config.rate_limit_per_minute,
            monthly_quota: config.monthly_quota,
            source,
        })
    }

    /// RL10: country-independent providers always, others only for callers
    /// from their countries.
    pub fn eligible(&self, number: &ExternalNumber) -> bool {
        match (&self.countries, &number.country) {
            (None, _) => true,
            (Some(countries), Some(country)) => countries.iter().any(|c| c == country),
            (Some(_), None) => false,
        }
    }

    /// Looks `number` up: the exact number, then (RL3) its base-number
    /// candidates in order, each a request that needs a permit. An answer
    /// that is no name (RL19) counts as not found.
    pub async fn lookup(
        &self,
        number: &ExternalNumber,
        max_extension_length: u8,
        permit: Permit<'_>,
        trace: &Trace,
    ) -> Result<Option<Found>, LookupError> {
        if let Some(found) = self.lookup_exact(number, permit, trace).await? {
            return Ok(Some(found));
        }
        if !self.base_number || self.role == Role::Spam {
            return Ok(None);
        }
        let plan = number
            .country
            .as_deref()
            .and_then(|c| NumberPlan::new(c).ok());
        for candidate in base_number_candidates(number, max_extension_length) {
            let Some(candidate) = plan.as_ref().and_then(|p| p.normalize(&candidate).ok()) else {
                continue;
            };
            trace.note(format!("base number {}", candidate.e164));
            if let Some(found) = self.lookup_exact(&candidate, permit, trace).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    async fn lookup_exact(
        &self,
        number: &ExternalNumber,
        permit: Permit<'_>,
        trace: &Trace,
    ) -> Result<Option<Found>, LookupError> {
        permit()?;
        let found = match &self.source {
            Source::Http(s) => s.query(number, trace).await,
            Source::Sql(s) => s.query(number, trace).await,
            Source::Ldap(s) => s.query(number, trace).await,
            Source::CardDav(s) => s.query(number, trace).await,
            Source::Salesforce(s) => s.query(number, trace).await,
            Source::Pipedrive(s) => s.query(number, trace).await,
            Source::Dynamics(s) => s.query(number, trace).await,
        }
        .map_err(LookupError::Failed)?;
        let Some(found) = found else {
            trace.note("no entry");
            return Ok(None);
        };
        if self.role == Role::Spam {
            return Ok(match found.spam_score {
                Some(score) => {
                    trace.note(format!("spam score {score}"));
                    Some(found)
                }
                None => {
                    trace.note("answer has no spam score");
                    None
                }
            });
        }
        let name = found.name();
        match verdict(&name, number) {
            Verdict::Meaningful => {
                trace.note(format!("found {name:?}"));
                Ok(Some(found))
            }
            other => {
                trace.note(format!("answer {name:?} is not a name ({other:?})"));
                Ok(None)
            }
        }
    }
}

/// What every kind's `build` reads.
pub struct Settings<'a> {
    pub config: &'a ProviderConfig,
    pub secrets: &'a BTreeMap<String, Secret>,
    pub tel: TelFormat,
    pub timeout: Duration,
    /// Rules with the column each reads (SQL) in configuration order.
    pub rules: Vec<(RuleConfig, RuleSet)>,
    pub home_country: &'a str,
    pub at: &'a dyn Fn(&str) -> String,
}

impl Settings<'_> {
    /// A required field or a refusal naming it.
    pub fn required(&self, field: &str, value: &Option<String>) -> Result<String, ConfigError> {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| config_error((self.at)(field), "missing"))
    }

    /// A secret by name, if set.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).map(|s| s.expose().to_string())
    }

    /// The secret names, for templates that may use them.
    pub fn secret_names(&self) -> Vec<&str> {
        self.secrets.keys().map(String::as_str).collect()
    }

    /// All rules as one set (answers that are one text).
    pub fn rule_set(&self) -> Option<RuleSet> {
        if self.rules.is_empty() {
            return None;
        }
        let all: Vec<_> = self.rules.iter().map(|(c, _)| core_rule(c)).collect();
        Some(RuleSet::compile(&all).expect("each rule compiled on its own"))
    }

    /// The secrets as `(name, value)` for template expansion.
    pub fn extras(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect()
    }

    /// The URL, checked for unknown placeholders.
    pub fn template(&self, field: &str, value: &Option<String>) -> Result<String, ConfigError> {
        let template = self.required(field, value)?;
        callhost_lookup_core::check_template(&template, &self.secret_names())
            .map_err(|e| config_error((self.at)(field), e.to_string()))?;
        Ok(template)
    }
}

fn core_rule(rule: &RuleConfig) -> callhost_lookup_core::Rule {
    let formatter = if !rule.formatter.is_empty() {
        rule.formatter.clone()
    } else if regex::Regex::new(&rule.matcher).is_ok_and(|r| r.captures_len() > 1) {
        "{1}".to_string()
    } else {
        // An invalid matcher is reported by the compile step.
        "{0}".to_string()
    };
    callhost_lookup_core::Rule {
        name: rule.name.clone(),
        matcher: rule.matcher.clone(),
        formatter,
        field: rule.field.rule_field(),
    }
}

fn compile_rules(
    rules: &[RuleConfig],
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<(RuleConfig, RuleSet)>, ConfigError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            RuleSet::compile(std::slice::from_ref(&core_rule(rule)))
                .map(|set| (rule.clone(), set))
                .map_err(|e| config_error(at(&format!("rules[{i}]")), e.to_string()))
        })
        .collect()
}

/// `(name, value)` pairs borrowed for `callhost_lookup_core::expand`.
pub fn borrowed(extras: &[(String, String)]) -> Vec<(&str, &str)> {
    extras
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `text` with every secret value replaced by stars (for traces and logs).
pub fn mask(text: &str, extras: &[(String, String)]) -> String {
    let mut masked = config::mask_url_password(text);
    for (_, value) in extras {
        if value.len() >= 3 {
            masked = masked.replace(value.as_str(), Secret::MASK);
            // Also the percent-encoded form a URL carries.
            let mut encoded = String::new();
            callhost_lookup_core::percent_encode(value, &mut encoded);
            masked = masked.replace(&encoded, Secret::MASK);
        }
    }
    masked
}
