//! LDAP providers (RL6): an address directory such as estos MetaDirectory or
//! Active Directory, searched with a filter template. The number is escaped
//! for the filter (RFC 4515), so it can never change the filter's shape.

use callhost_numbers::ExternalNumber;
use callhost_plugin_sdk::{config_error, ConfigError};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::{mask, Settings, Trace};
use crate::{config::TelFormat, extract::Found};

const ATTRIBUTES: [&str; 7] = ["givenName", "sn", "cn", "displayName", "o", "company", "ou"];

pub struct Ldap {
    url: String,
    base_dn: String,
    filter: String,
    bind_dn: Option<String>,
    password: Option<String>,
    tel: TelFormat,
    timeout: std::time::Duration,
    extras: Vec<(String, String)>,
}

impl Ldap {
    pub fn build(s: &Settings<'_>) -> Result<Ldap, ConfigError> {
        // The filter gets the number only: a secret has no place in it.
        let filter = s.required("query", &s.config.query)?;
        callhost_lookup_core::check_template(&filter, &[])
            .map_err(|e| config_error((s.at)("query"), e.to_string()))?;
        if s.config.bind_dn.is_some() && s.secret("password").is_none() {
            // An empty password is an anonymous bind on many servers.
            return Err(config_error(
                (s.at)("secrets.password"),
                "missing: bind_dn needs it (leave bind_dn out to search anonymously)",
            ));
        }
        Ok(Ldap {
            url: s.required("url", &s.config.url)?,
            base_dn: s.required("base_dn", &s.config.base_dn)?,
            filter,
            bind_dn: s.config.bind_dn.clone(),
            password: s.secret("password"),
            tel: s.tel,
            timeout: s.timeout,
            extras: s.extras(),
        })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let filter = callhost_lookup_core::expand(
            &self.filter,
            number,
            self.tel.core(),
            &[],
            escape_filter_value,
        )
        .map_err(|e| e.to_string())?;
        trace.note(format!("LDAP search {} under {:?}", filter, self.base_dn));
        let fail = |e: ldap3::LdapError| mask(&e.to_string(), &self.extras);
        let settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(fail)?;
        ldap3::drive!(connection);
        if let Some(dn) = &self.bind_dn {
            ldap.simple_bind(dn, self.password.as_deref().unwrap_or_default())
                .await
                .map_err(fail)?
                .success()
                .map_err(fail)?;
        }
        let (entries, _) = ldap
            .search(&self.base_dn, Scope::Subtree, &filter, ATTRIBUTES.to_vec())
            .await
            .map_err(fail)?
            .success()
            .map_err(fail)?;
        let _ = ldap.unbind().await;
        let Some(entry) = entries.into_iter().next() else {
            return Ok(None);
        };
        let entry = SearchEntry::construct(entry);
        trace.note(format!("entry {}", entry.dn));
        let first = |names: &[&str]| {
            names.iter().find_map(|name| {
                entry
                    .attrs
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .and_then(|(_, values)| values.first().cloned())
            })
        };
        Ok(Some(Found {
            first_name: first(&["givenName"]),
            last_name: first(&["sn"]),
            company: first(&["o", "company", "ou"]),
            display: first(&["displayName", "cn"]),
            spam_score: None,
        }))
    }
}

/// RFC 4515 escaping of a value inside a filter.
fn escape_filter_value(value: &str, out: &mut String) {
    out.push_str(&ldap3::ldap_escape(value));
}
