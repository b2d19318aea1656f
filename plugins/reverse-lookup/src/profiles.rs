//! The shipped provider profiles (`profiles.toml`) and how a configured
//! provider is laid over its profile.

use std::{collections::BTreeMap, sync::OnceLock};

use serde::Serialize;

use crate::config::ProviderConfig;

const PROFILES: &str = include_str!("profiles.toml");

/// One shipped profile (or variant), parsed.
#[derive(Debug, Clone)]
pub struct Profile {
    pub fields: ProviderConfig,
    /// Secrets a provider built from it must set.
    pub needs_secrets: Vec<String>,
    pub variants: BTreeMap<String, Profile>,
    /// The profile's text as shipped (for `defaults`).
    pub table: toml::Table,
}

/// All shipped profiles by name.
pub fn profiles() -> &'static BTreeMap<String, Profile> {
    static PARSED: OnceLock<BTreeMap<String, Profile>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let table: toml::Table = PROFILES.parse().expect("profiles.toml is valid TOML");
        table
            .into_iter()
            .map(|(name, value)| {
                let profile = parse(&name, value).unwrap_or_else(|e| panic!("profile {name}: {e}"));
                (name, profile)
            })
            .collect()
    })
}

fn parse(name: &str, value: toml::Value) -> Result<Profile, String> {
    let toml::Value::Table(mut table) = value else {
        return Err("not a table".into());
    };
    let shipped = table.clone();
    let needs_secrets = match table.remove("needs_secrets") {
        Some(value) => value
            .try_into()
            .map_err(|e| format!("needs_secrets: {e}"))?,
        None => Vec::new(),
    };
    let variants = match table.remove("variants") {
        Some(toml::Value::Table(variants)) => variants
            .into_iter()
            .map(|(variant, value)| Ok((variant.clone(), parse(&variant, value)?)))
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("variants must be a table".into()),
        None => BTreeMap::new(),
    };
    table.insert("id".into(), toml::Value::String(name.into()));
    let fields: ProviderConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| e.to_string())?;
    Ok(Profile {
        fields,
        needs_secrets,
        variants,
        table: shipped,
    })
}

/// `base` with every field `top` sets replaced.
pub fn overlay(base: &ProviderConfig, top: &ProviderConfig) -> ProviderConfig {
    let mut merged = base.clone();
    merged.id = top.id.clone();
    macro_rules! over {
        ($($field:ident),* $(,)?) => {
            $(if top.$field.is_some() { merged.$field = top.$field.clone(); })*
        };
    }
    over!(
        template,
        variant,
        enabled,
        name,
        description,
        country,
        kind,
        role,
        url,
        format,
        headers,
        auth,
        driver,
        query,
        base_dn,
        bind_dn,
        tel_format,
        timeout_ms,
        cache,
        base_number,
        rate_limit_per_minute,
        monthly_quota,
        refresh,
        rules,
        extract,
        display,
    );
    // Secrets add up: a profile never ships any, the configuration sets them.
    if let Some(secrets) = &top.secrets {
        merged
            .secrets
            .get_or_insert_with(BTreeMap::new)
            .extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged
}

/// The provider as configured, laid over its profile and variant; also the
/// secrets the profile needs. Errors name the unknown profile or variant.
pub fn resolve(provider: &ProviderConfig) -> Result<(ProviderConfig, Vec<String>), String> {
    let Some(name) = &provider.template else {
        return Ok((provider.clone(), Vec::new()));
    };
    let profile = profiles().get(name).ok_or_else(|| {
        format!(
            "unknown template {name:?}; the shipped ones are: {}",
            profiles().keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let (mut base, mut needs) = (profile.fields.clone(), profile.needs_secrets.clone());
    if let Some(variant) = &provider.variant {
        let chosen = profile.variants.get(variant).ok_or_else(|| {
            format!(
                "template {name:?} has no variant {variant:?}; it has: {}",
                if profile.variants.is_empty() {
                    "none".to_string()
                } else {
                    profile
                        .variants
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        })?;
        base = overlay(&base, &chosen.fields);
        // A variant's table lists what it needs, even when that is nothing.
        if chosen.table.contains_key("needs_secrets") {
            needs = chosen.needs_secrets.clone();
        }
    }
    Ok((overlay(&base, provider), needs))
}

/// What `profiles` lists.
#[derive(Debug, Serialize)]
pub struct ProfileListing {
    pub template: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub country: Option<String>,
    pub needs_secrets: Vec<String>,
    pub variants: Vec<String>,
}

pub fn listing() -> Vec<ProfileListing> {
    profiles()
        .iter()
        .map(|(template, p)| ProfileListing {
            template: template.clone(),
            name: p.fields.name.clone(),
            description: p.fields.description.clone(),
            country: p.fields.country.clone(),
            needs_secrets: p.needs_secrets.clone(),
            variants: p.variants.keys().cloned().collect(),
        })
        .collect()
}

/// A ready-to-paste `[[providers]]` entry that uses the profile unchanged
/// ("restore defaults"), followed by the profile's shipped values as
/// comments so the administrator can see what they would override.
pub fn defaults_snippet(name: &str, variant: Option<&str>) -> Result<String, String> {
    let probe = ProviderConfig {
        id: name.to_string(),
        template: Some(name.to_string()),
        variant: variant.map(str::to_string),
        ..ProviderConfig::default()
    };
    let (_, needs) = resolve(&probe)?;
    let profile = &profiles()[name];
    let mut text = format!("[[providers]]\nid = {name:?}\ntemplate = {name:?}\n");
    if let Some(variant) = variant {
        text.push_str(&format!("variant = {variant:?}\n"));
    }
    for secret in &needs {
        text.push_str(&format!("secrets.{secret} = \"…\"\n"));
    }
    let mut shipped = profile.table.clone();
    shipped.remove("variants");
    if let Some(variant) = variant {
        for (key, value) in &profile.variants[variant].table {
            shipped.insert(key.clone(), value.clone());
        }
    }
    text.push_str("# The profile's values (set any of them above to override):\n");
    let values = toml::to_string(&shipped).map_err(|e| e.to_string())?;
    for line in values.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_with_its_variants() {
        let all = profiles();
        for name in [
            "das-oertliche",
            "11880",
            "goyellow",
            "herold",
            "tel-search-ch",
            "etv",
            "detelefoongids",
            "paginebianche",
            "whitepages-pro",
            "tellows",
            "salesforce",
            "pipedrive",
            "dynamics",
        ] {
            assert!(all.contains_key(name), "{name} missing");
        }
        assert!(all["tel-search-ch"].variants.contains_key("web"));
    }

    #[test]
    fn configuration_overrides_the_profile_and_the_variant() {
        let configured = ProviderConfig {
            id: "ch".into(),
            template: Some("tel-search-ch".into()),
            variant: Some("web".into()),
            timeout_ms: Some(250),
            ..ProviderConfig::default()
        };
        let (merged, needs) = resolve(&configured).unwrap();
        assert_eq!(merged.id, "ch");
        assert_eq!(merged.timeout_ms, Some(250));
        assert_eq!(
            merged.url.as_deref(),
            Some("https://tel.search.ch/?was={tel}")
        );
        assert_eq!(merged.country.as_deref(), Some("CH,LI"));
        assert!(needs.is_empty(), "the web variant needs no key: {needs:?}");

        let api = ProviderConfig {
            variant: None,
            ..configured
        };
        let (_, needs) = resolve(&api).unwrap();
        assert_eq!(needs, ["api_key"]);
    }

    #[test]
    fn unknown_templates_and_variants_are_named() {
        let bad = ProviderConfig {
            id: "x".into(),
            template: Some("nope".into()),
            ..ProviderConfig::default()
        };
        assert!(resolve(&bad)
            .unwrap_err()
            .contains("unknown template \"nope\""));
        let bad_variant = ProviderConfig {
            template: Some("tellows".into()),
            variant: Some("gold".into()),
            ..bad
        };
        let error = resolve(&bad_variant).unwrap_err();
        assert!(error.contains("no variant \"gold\""), "{error}");
    }

    #[test]
    fn defaults_snippet_is_a_valid_provider_entry() {
        let text = defaults_snippet("tel-search-ch", None).unwrap();
        assert!(text.contains("secrets.api_key"), "{text}");
        let parsed: toml::Table = text.replace('…', "KEY").parse().unwrap();
        let providers = parsed["providers"].as_array().unwrap();
        assert_eq!(providers[0]["template"].as_str(), Some("tel-search-ch"));
    }
}
