//! CRM providers (RL6), each with its documented request and answer:
//! Salesforce (SOSL search over phone fields), Pipedrive (persons search)
//! and Dynamics 365 (Dataverse Web API, OData filter on the phone fields).

use callhost_lookup_core::Placeholder;
use callhost_numbers::ExternalNumber;
use callhost_plugin_sdk::ConfigError;
use serde_json::Value;

use super::{
    excerpt,
    http::{client, send},
    mask, Settings, Trace,
};
use crate::{config::TelFormat, extract::Found};

/// What every CRM provider holds.
struct Crm {
    client: reqwest::Client,
    base: String,
    tel: TelFormat,
    extras: Vec<(String, String)>,
}

impl Crm {
    fn build(s: &Settings<'_>, secret: &str) -> Result<(Crm, String), ConfigError> {
        let token = s.secret(secret).ok_or_else(|| {
            callhost_plugin_sdk::config_error((s.at)(&format!("secrets.{secret}")), "missing")
        })?;
        let base = s.required("url", &s.config.url)?;
        Ok((
            Crm {
                client: client(s)?,
                base: base.trim_end_matches('/').to_string(),
                tel: s.tel,
                extras: s.extras(),
            },
            token,
        ))
    }

    fn number(&self, number: &ExternalNumber) -> String {
        Placeholder::Tel.value(number, self.tel.core())
    }

    /// Sends `request`, checks the status and parses the JSON answer.
    async fn json(
        &self,
        request: reqwest::RequestBuilder,
        url: &url_text::Url,
        trace: &Trace,
    ) -> Result<Option<Value>, String> {
        trace.note(format!("GET {}", mask(&url.0, &self.extras)));
        let (status, body) = send(request).await.map_err(|e| mask(&e, &self.extras))?;
        trace.note(format!("HTTP {status}: {}", excerpt(&body)));
        match status {
            200..=299 => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| format!("answer is not JSON: {e}")),
            404 => Ok(None),
            401 | 403 => Err(format!(
                "HTTP status {status}: the credentials were refused"
            )),
            _ => Err(format!("HTTP status {status}")),
        }
    }
}

/// A URL as text with query values percent-encoded.
mod url_text {
    pub struct Url(pub String);

    impl Url {
        pub fn new(base: &str, path: &str, query: &[(&str, &str)]) -> Url {
            let mut url = format!("{base}{path}");
            for (i, (key, value)) in query.iter().enumerate() {
                url.push(if i == 0 { '?' } else { '&' });
                callhost_lookup_core::percent_encode(key, &mut url);
                url.push('=');
                callhost_lookup_core::percent_encode(value, &mut url);
            }
            Url(url)
        }
    }
}
use url_text::Url;

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub struct Salesforce {
    crm: Crm,
    token: String,
    api_version: String,
}

/// SOSL reserved characters, escaped with a backslash inside `FIND {…}`.
const SOSL_RESERVED: &[char] = &[
    '?', '&', '|', '!', '{', '}', '[', ']', '(', ')', '^', '~', '*', ':', '\\', '"', '\'', '+', '-',
];

fn sosl_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 4);
    for c in term.chars() {
        if SOSL_RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Salesforce {
    pub fn build(s: &Settings<'_>) -> Result<Salesforce, ConfigError> {
        let (crm, token) = Crm::build(s, "access_token")?;
        Ok(Salesforce {
            crm,
            token,
            api_version: "v61.0".into(),
        })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let sosl = format!(
            "FIND {{{}}} IN PHONE FIELDS RETURNING Contact(FirstName, LastName, Account.Name LIMIT 1), \
             Lead(FirstName, LastName, Company LIMIT 1), Account(Name LIMIT 1)",
            sosl_escape(&self.crm.number(number))
        );
        let url = Url::new(
            &self.crm.base,
            &format!("/services/data/{}/search/", self.api_version),
            &[("q", &sosl)],
        );
        let request = self.crm.client.get(&url.0).bearer_auth(&self.token);
        let Some(json) = self.crm.json(request, &url, trace).await? else {
            return Ok(None);
        };
        let records = json
            .get("searchRecords")
            .and_then(Value::as_array)
            .ok_or("answer has no searchRecords")?;
        // Contacts first, then leads, then accounts: the most specific name.
        let of = |kind: &str| {
            records
                .iter()
                .find(|r| r.pointer("/attributes/type").and_then(Value::as_str) == Some(kind))
        };
        if let Some(contact) = of("Contact") {
            return Ok(Some(Found {
                first_name: text(contact, "/FirstName"),
                last_name: text(contact, "/LastName"),
                company: text(contact, "/Account/Name"),
                ..Found::default()
            }));
        }
        if let Some(lead) = of("Lead") {
            return Ok(Some(Found {
                first_name: text(lead, "/FirstName"),
                last_name: text(lead, "/LastName"),
                company: text(lead, "/Company"),
                ..Found::default()
            }));
        }
        Ok(of("Account").map(|account| Found {
            company: text(account, "/Name"),
            ..Found::default()
        }))
    }
}

pub struct Pipedrive {
    crm: Crm,
    token: String,
}

impl Pipedrive {
    pub fn build(s: &Settings<'_>) -> Result<Pipedrive, ConfigError> {
        let (crm, token) = Crm::build(s, "api_token")?;
        Ok(Pipedrive { crm, token })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let term = self.crm.number(number);
        let url = Url::new(
            &self.crm.base,
            "/v1/persons/search",
            &[
                ("term", &term),
                ("fields", "phone"),
                ("exact_match", "false"),
                ("limit", "1"),
                ("api_token", &self.token),
            ],
        );
        let request = self.crm.client.get(&url.0);
        let Some(json) = self.crm.json(request, &url, trace).await? else {
            return Ok(None);
        };
        if json.get("success").and_then(Value::as_bool) == Some(false) {
            return Err(format!(
                "Pipedrive: {}",
                text(&json, "/error").unwrap_or_else(|| "unsuccessful".into())
            ));
        }
        let Some(item) = json.pointer("/data/items/0/item") else {
            return Ok(None);
        };
        Ok(Some(Found {
            display: text(item, "/name"),
            company: text(item, "/organization/name"),
            ..Found::default()
        }))
    }
}

pub struct Dynamics {
    crm: Crm,
    token: String,
}

impl Dynamics {
    pub fn build(s: &Settings<'_>) -> Result<Dynamics, ConfigError> {
        let (crm, token) = Crm::build(s, "access_token")?;
        Ok(Dynamics { crm, token })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        // OData string literals double their single quotes.
        let value = self.crm.number(number).replace('\'', "''");
        let filter = format!(
            "telephone1 eq '{value}' or mobilephone eq '{value}' or telephone2 eq '{value}'"
        );
        let url = Url::new(
            &self.crm.base,
            "/api/data/v9.2/contacts",
            &[
                ("$select", "firstname,lastname,fullname"),
                ("$expand", "parentcustomerid_account($select=name)"),
                ("$filter", &filter),
                ("$top", "1"),
            ],
        );
        let request = self
            .crm
            .client
            .get(&url.0)
            .bearer_auth(&self.token)
            .header("Accept", "application/json")
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0");
        let Some(json) = self.crm.json(request, &url, trace).await? else {
            return Ok(None);
        };
        let Some(contact) = json.pointer("/value/0") else {
            return Ok(None);
        };
        Ok(Some(Found {
            first_name: text(contact, "/firstname"),
            last_name: text(contact, "/lastname"),
            display: text(contact, "/fullname"),
            company: text(contact, "/parentcustomerid_account/name"),
            ..Found::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sosl_terms_are_escaped() {
        assert_eq!(sosl_escape("+49301234567"), "\\+49301234567");
        assert_eq!(sosl_escape("a} OR {b"), "a\\} OR \\{b");
    }
}
