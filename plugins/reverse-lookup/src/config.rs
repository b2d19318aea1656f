//! The instance configuration as the administrator writes it (TOML), and its
//! validation into ready-to-run settings. Every refusal names the field.

use std::collections::BTreeMap;

pub use callhost_plugin_sdk::settings::{duration, Secret};
use serde::{Deserialize, Serialize};

/// The whole configuration; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// RL1: resolve callers from outside.
    pub resolve_incoming: bool,
    /// RL2: resolve the numbers users dial out to (for their call lists).
    pub resolve_outgoing: bool,
    /// The lookup's own limit in milliseconds; the host's call-setup budget
    /// (700 ms) applies as well, so keep this below it.
    pub budget_ms: u64,
    /// RL3: longest extension cut off to find a number block's base number
    /// (0 turns base-number resolution off).
    pub max_extension_length: u8,
    /// RL10: look in the host's address book first.
    pub address_book: bool,
    /// RL12: add a contact to the host's address book for every number a
    /// provider resolves.
    pub create_contacts: bool,
    /// The phone's display text; see the module page for the placeholders.
    pub display: String,
    /// RL17: put the called user's or group's name in front.
    pub prefix_callee_name: bool,
    /// How the prefix is combined with the display.
    pub prefix_format: String,
    pub cache: CacheConfig,
    pub history: HistoryConfig,
    pub spam: SpamConfig,
    pub providers: Vec<ProviderConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resolve_incoming: true,
            resolve_outgoing: true,
            budget_ms: 600,
            max_extension_length: 3,
            address_book: true,
            create_contacts: false,
            display: "{name}".into(),
            prefix_callee_name: false,
            prefix_format: "{callee}: {display}".into(),
            cache: CacheConfig::default(),
            history: HistoryConfig::default(),
            spam: SpamConfig::default(),
            providers: Vec::new(),
        }
    }
}

/// RL11.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long a found name is served.
    pub positive_ttl: String,
    /// How long "no provider knows this number" is remembered.
    pub negative_ttl: String,
    /// A found name older than this is served at once and refreshed in the
    /// background.
    pub refresh_after: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            positive_ttl: "30days".into(),
            negative_ttl: "1day".into(),
            refresh_after: "7days".into(),
        }
    }
}

/// RL15.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Lookups older than this are deleted.
    pub keep: String,
    /// At most this many lookups are kept.
    pub max_entries: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep: "30days".into(),
            max_entries: 10_000,
        }
    }
}

/// RL8.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpamConfig {
    /// What a score at or above the threshold does.
    pub action: SpamAction,
    /// Scores run 1 (trustworthy) to 9 (harassing), as tellows reports them.
    pub threshold: u8,
    /// The display for a caller at or above the threshold (action `show`
    /// and `flag`); `{display}` is the normal display, `{score}` the score.
    pub display: String,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            action: SpamAction::Show,
            threshold: 7,
            display: "SPAM? {display} ({score}/9)".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpamAction {
    /// Only the display shows the score.
    Show,
    /// The call rings, marked as suspected spam.
    Flag,
    /// The call is rejected.
    Reject,
}

/// One provider as configured. Every field but `id` may come from the
/// shipped profile named in `template`; what is set here overrides it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// "any", or ISO country codes separated by commas ("CH,LI").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// `name` (default) or `spam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// HTTP: the lookup URL; CRMs: the base URL; SQL, LDAP: the server URL;
    /// CardDAV: the address book collection. A password written into it is
    /// shown as stars (better: `{password}` and a secret).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "masked_url"
    )]
    pub url: Option<String>,
    /// HTTP: how to read the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// HTTP: extra request headers (values may use `{secret}` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// HTTP: `basic` sends secrets `user` and `password` as Basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Credentials and keys; usable as `{name}` in URLs, headers and
    /// connection strings; never shown or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, Secret>>,
    /// SQL: the database kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    /// SQL: the statement; LDAP: the search filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// LDAP: the search base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dn: Option<String>,
    /// LDAP: who binds (with secret `password`); anonymous when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    /// The number form `{tel}` stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tel_format: Option<TelFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// RL11: whether this provider's answers are cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// RL3: try base numbers when the exact number is not found (HTTP, SQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_number: Option<bool>,
    /// RL20: requests per minute at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// RL20: requests per calendar month (UTC) at most; 0: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_quota: Option<u32>,
    /// CardDAV: how often the address book is fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// RL7: parser rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleConfig>>,
    /// JSON pointers (`/data/0/name`) or XML paths (`entry/title`) per field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<BTreeMap<FieldName, String>>,
    /// RL16: this provider's display template (else the instance's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// One parser rule (RL7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub field: FieldName,
    pub matcher: String,
    /// Empty: `{1}` when the matcher has a group, else `{0}` (the match).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub formatter: String,
    /// SQL only: the column this rule reads (0-based); by default the
    /// rule's position, as in the original ("the first parser reads the
    /// first column").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldName {
    FirstName,
    LastName,
    Company,
    Display,
    Spam,
}

impl FieldName {
    pub fn rule_field(self) -> callhost_lookup_core::Field {
        use callhost_lookup_core::Field;
        match self {
            FieldName::FirstName => Field::FirstName,
            FieldName::LastName => Field::LastName,
            FieldName::Company => Field::Company,
            FieldName::Display => Field::Display,
            FieldName::Spam => Field::Spam,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Http,
    Sql,
    Ldap,
    Carddav,
    Salesforce,
    Pipedrive,
    Dynamics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Name,
    Spam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Html,
    Text,
    Json,
    Xml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic,
    Bearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Postgres,
    Mysql,
    Sqlite,
    Mssql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelFormat {
    International,
    E164,
    National,
    Digits,
}

impl TelFormat {
    pub fn core(self) -> callhost_lookup_core::TelFormat {
        use callhost_lookup_core::TelFormat as T;
        match self {
            TelFormat::International => T::International,
            TelFormat::E164 => T::E164,
            TelFormat::National => T::National,
            TelFormat::Digits => T::Digits,
        }
    }
}

fn masked_url<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&mask_url_password(url)),
        None => serializer.serialize_none(),
    }
}

/// `url` with any `user:password@` shown as `user:********@`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:{}{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            Secret::MASK,
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("postgres://crm:s3cret@db:5432/crm"),
            "postgres://crm:********@db:5432/crm"
        );
        assert_eq!(
            mask_url_password("https://example.com/a?b=c"),
            "https://example.com/a?b=c"
        );
        assert_eq!(
            mask_url_password("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
    }

    #[test]
    fn secrets_never_serialize() {
        let provider = ProviderConfig {
            id: "x".into(),
            secrets: Some(BTreeMap::from([(
                "api_key".to_string(),
                Secret::new("abc123"),
            )])),
            ..ProviderConfig::default()
        };
        let text = toml::to_string(&provider).unwrap();
        assert!(!text.contains("abc123"), "{text}");
        assert!(text.contains(Secret::MASK));
        assert!(!format!("{provider:?}").contains("abc123"));
    }
}
