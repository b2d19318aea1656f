//! The instance configuration as the administrator writes it (TOML), and its
//! validation into ready-to-run settings. Every refusal names the field.

use std::collections::BTreeMap;

pub use callhost_plugin_sdk::settings::{duration, Secret};
use serde::{Deserialize, Serialize};

/// The whole configuration; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// RL1: resolve external callers on calls to users and groups.
    #[schemars(title = "Resolve incoming calls")]
    pub resolve_incoming: bool,
    /// RL2: resolve the external numbers users dial (for their display and
    /// call list; never sent to the called party).
    #[schemars(title = "Resolve outgoing calls")]
    pub resolve_outgoing: bool,
    /// The lookup's own limit in milliseconds (1–10000); the host's
    /// call-setup budget (700 ms) applies as well, so keep this below it.
    #[schemars(title = "Lookup budget (ms)", range(min = 1, max = 10_000), extend("x-expert" = true))]
    pub budget_ms: u64,
    /// RL3: longest extension (0–4 digits) cut off to find a number block's
    /// base number; 0 turns base-number resolution off.
    #[schemars(title = "Longest extension", range(max = 4), extend("x-expert" = true))]
    pub max_extension_length: u8,
    /// RL10: a name the host's address book has for the number wins before
    /// the cache and the providers are asked.
    #[schemars(title = "Use the address book")]
    pub address_book: bool,
    /// RL12: add a contact to the host's address book for every number a
    /// provider resolves.
    #[schemars(title = "Create contacts")]
    pub create_contacts: bool,
    /// The phone's display for a resolved caller: `{name}`, `{first_name}`,
    /// `{last_name}`, `{company}` and the other placeholders of the module
    /// page.
    pub display: String,
    /// RL17: put the called user's or group's name in front of the display.
    #[schemars(title = "Prefix the callee's name")]
    pub prefix_callee_name: bool,
    /// How the prefix is combined with the display: `{callee}` and
    /// `{display}`.
    #[schemars(title = "Prefix format")]
    pub prefix_format: String,
    /// RL11: how long answers are kept and served from the cache.
    #[schemars(extend("x-expert" = true))]
    pub cache: CacheConfig,
    /// RL15: how much of the lookup history is kept.
    #[schemars(extend("x-expert" = true))]
    pub history: HistoryConfig,
    /// RL8: what a spam score does.
    pub spam: SpamConfig,
    /// The sources of names, asked in parallel; the first answer wins.
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

/// RL11. Durations in humantime syntax ("30days", "12h", "90s").
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Use the cache at all; off: nothing is read from it or written to it.
    #[schemars(title = "Cache enabled")]
    pub enabled: bool,
    /// How long a found name is served (e.g. "30days").
    #[schemars(title = "Keep found names")]
    pub positive_ttl: String,
    /// How long "no provider knows this number" is remembered (e.g. "1day").
    #[schemars(title = "Keep \"not found\"")]
    pub negative_ttl: String,
    /// A found name older than this is served at once and refreshed in the
    /// background (e.g. "7days").
    #[schemars(title = "Refresh after")]
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
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Lookups older than this are deleted (humantime, e.g. "30days").
    #[schemars(title = "Keep lookups for")]
    pub keep: String,
    /// At most this many lookups are kept.
    #[schemars(title = "Most lookups kept")]
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
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SpamConfig {
    /// What a score at or above the threshold does.
    pub action: SpamAction,
    /// Scores at or above this count as spam; they run from 1 (trustworthy)
    /// to 9 (harassing), as tellows reports them.
    pub threshold: u8,
    /// The display for a caller at or above the threshold (action `show`
    /// and `flag`); `{display}` is the normal display, `{score}` the score.
    #[schemars(title = "Spam display")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Letters, digits, `-` and `_`, unique in the instance. Cache entries,
    /// quota counts and history are kept by id: a new id starts afresh.
    pub id: String,
    /// A shipped profile to start from (e.g. `das-oertliche`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// One of the profile's variants, e.g. `web` for `tel-search-ch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `false` keeps the entry but never asks it (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The name shown in the `test` output (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A note for you; the module does not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// "any", or ISO country codes separated by commas ("CH,LI"): only
    /// numbers of those countries are asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// How the provider is asked; required unless the template says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// `name` (default) or `spam`: a spam provider supplies a score, not a
    /// name (HTTP, SQL).
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
    #[schemars(title = "URL")]
    pub url: Option<String>,
    /// HTTP: how to read the answer (default `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// HTTP: extra request headers (values may use `{secret}` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// HTTP: `basic` sends secrets `user` and `password` as Basic auth,
    /// `bearer` sends secret `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Authentication")]
    pub auth: Option<Auth>,
    /// Credentials and keys; usable as `{name}` in URLs, headers and
    /// connection strings; never shown or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, Secret>>,
    /// SQL: the database kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Database")]
    pub driver: Option<Driver>,
    /// SQL: the statement; LDAP: the search filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// LDAP: the search base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Base DN")]
    pub base_dn: Option<String>,
    /// LDAP: who binds (with secret `password`); anonymous when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Bind DN")]
    pub bind_dn: Option<String>,
    /// The number form `{tel}` stands for (default `international`); for
    /// CRMs, the form that is searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Number format")]
    pub tel_format: Option<TelFormat>,
    /// RL16: this provider's own limit in milliseconds (default 500); the
    /// instance's budget applies as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Timeout (ms)", range(min = 1), extend("x-expert" = true))]
    pub timeout_ms: Option<u64>,
    /// RL11: whether this provider's answers are cached (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Cache answers", extend("x-expert" = true))]
    pub cache: Option<bool>,
    /// RL3: try base numbers when the exact number is not found (default:
    /// on for HTTP and SQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Try base numbers", extend("x-expert" = true))]
    pub base_number: Option<bool>,
    /// RL20: requests per minute at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Rate limit (per minute)", extend("x-expert" = true))]
    pub rate_limit_per_minute: Option<u32>,
    /// RL20: requests per calendar month (UTC) at most; 0: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Monthly quota", extend("x-expert" = true))]
    pub monthly_quota: Option<u32>,
    /// CardDAV: how often the address book is fetched again (humantime,
    /// default "5min").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Refresh every", extend("x-expert" = true))]
    pub refresh: Option<String>,
    /// RL7: parser rules that read fields out of the answer (HTTP, SQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Parser rules")]
    pub rules: Option<Vec<RuleConfig>>,
    /// HTTP with `json` or `xml`: JSON pointers (`/data/0/name`) or XML
    /// paths (`entry/title`) per field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Extract paths", schema_with = "extract_schema")]
    pub extract: Option<BTreeMap<FieldName, String>>,
    /// RL16: this provider's display template (else the instance's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// `extract`'s schema: one optional path per [`FieldName`], no other key
/// (serde's map of `FieldName` keys takes no other).
fn extract_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let properties: serde_json::Map<String, serde_json::Value> = [
        ("first_name", "Where the first name is."),
        ("last_name", "Where the last name is."),
        ("company", "Where the company is."),
        ("display", "Where a complete name is."),
        ("spam", "Where a spam score is."),
    ]
    .into_iter()
    .map(|(field, description)| {
        let path = serde_json::json!({ "type": "string", "description": description });
        (field.to_string(), path)
    })
    .collect();
    schemars::json_schema!({
        "type": ["object", "null"],
        "properties": properties,
        "additionalProperties": false,
    })
}

/// One parser rule (RL7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Named in errors and the test output.
    pub name: String,
    /// The field the rule fills.
    pub field: FieldName,
    /// A regular expression (Rust `regex` syntax).
    pub matcher: String,
    /// The result, from the match: `{0}` the whole match, `{1}`… groups.
    /// Empty: `{1}` when the matcher has a group, else `{0}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub formatter: String,
    /// SQL only: the column this rule reads (0-based); by default the
    /// rule's position, as in the original ("the first parser reads the
    /// first column").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A field of an answer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FieldName {
    /// The first name.
    FirstName,
    /// The last name.
    LastName,
    /// The company.
    Company,
    /// A complete name.
    Display,
    /// A spam score.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Name,
    Spam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Html,
    Text,
    Json,
    Xml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic,
    Bearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Postgres,
    Mysql,
    Sqlite,
    Mssql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TelFormat {
    /// `0049301234567`, what the PBX signals.
    International,
    /// `+49301234567`.
    E164,
    /// `0301234567` at home, the `00…` form for foreign numbers.
    National,
    /// `49301234567`, international without prefix.
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
    fn the_schema_describes_the_documented_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "resolve_incoming",
            "resolve_outgoing",
            "budget_ms",
            "max_extension_length",
            "address_book",
            "create_contacts",
            "display",
            "prefix_callee_name",
            "prefix_format",
            "cache",
            "history",
            "spam",
            "providers",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(properties["budget_ms"]["x-expert"], true);
        assert_eq!(properties["budget_ms"]["default"], 600);
        assert_eq!(properties["budget_ms"]["maximum"], 10_000);
        assert!(properties["providers"].get("x-expert").is_none());
        let cache = &properties["cache"];
        assert_eq!(cache["x-expert"], true);
        assert_eq!(cache["properties"]["positive_ttl"]["default"], "30days");
        let actions = serde_json::to_string(&properties["spam"]["properties"]["action"]).unwrap();
        for action in ["\"show\"", "\"flag\"", "\"reject\""] {
            assert!(actions.contains(action), "{actions}");
        }

        let providers = &properties["providers"];
        assert_eq!(providers["type"], "array");
        let provider = &providers["items"];
        assert_eq!(provider["additionalProperties"], false);
        assert_eq!(provider["required"], serde_json::json!(["id"]));
        let fields = provider["properties"].as_object().unwrap();
        for name in [
            "id",
            "template",
            "kind",
            "url",
            "secrets",
            "timeout_ms",
            "rules",
        ] {
            assert!(fields.contains_key(name), "providers[].{name}");
        }
        assert_eq!(fields["timeout_ms"]["x-expert"], true);
        let kinds = serde_json::to_string(&fields["kind"]).unwrap();
        for kind in ["\"http\"", "\"carddav\"", "\"dynamics\""] {
            assert!(kinds.contains(kind), "{kinds}");
        }
        // Every secret is a write-only string.
        let secret = &fields["secrets"]["additionalProperties"];
        assert_eq!(secret["type"], "string");
        assert_eq!(secret["writeOnly"], true);
        // `extract` takes exactly the field names serde takes.
        let extract = &fields["extract"];
        assert_eq!(extract["additionalProperties"], false);
        let keys: Vec<&String> = extract["properties"].as_object().unwrap().keys().collect();
        for key in &keys {
            let field: FieldName = serde_json::from_value(serde_json::json!(key)).unwrap();
            assert_eq!(serde_json::to_value(field).unwrap(), serde_json::json!(key));
        }
        assert_eq!(keys.len(), 5);
        assert!(extract["description"]
            .as_str()
            .is_some_and(|d| d.contains("JSON pointers")));
        let rule = &fields["rules"]["items"];
        assert_eq!(
            rule["required"],
            serde_json::json!(["name", "field", "matcher"])
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
