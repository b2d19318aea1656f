//! HTTP GET providers (RL5): phone-book pages parsed by rules, JSON and XML
//! APIs read by paths (and rules).

use std::collections::BTreeMap;

use callhost_lookup_core::{expand, no_escape, percent_encode, RuleSet};
use callhost_numbers::ExternalNumber;
use callhost_plugin_sdk::{config_error, ConfigError};

use super::{borrowed, excerpt, mask, Settings, Trace};
use crate::{
    config::{Auth, FieldName, Format, TelFormat},
    extract::{self, Found},
};

/// Bodies above this are cut: no phone-book page is larger, and a provider
/// that streams forever must not fill memory.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

pub struct Http {
    client: reqwest::Client,
    url: String,
    format: Format,
    headers: Vec<(String, String)>,
    auth: Auth,
    extras: Vec<(String, String)>,
    tel: TelFormat,
    rules: Option<RuleSet>,
    extract: BTreeMap<FieldName, String>,
}

/// One HTTP client per provider: connection reuse matters within 700 ms.
/// Redirects stay within the request's origin ([`redirect_policy`]) and
/// carry no `Referer` (it would repeat the URL's query, secrets included).
pub fn client(settings: &Settings<'_>) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(redirect_policy())
        .referer(false)
        .user_agent(concat!(
            "callhost-reverse-lookup/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| config_error((settings.at)("url"), format!("HTTP client: {e}")))
}

/// Redirects followed at most per request.
pub const MAX_REDIRECTS: usize = 10;

/// Why a redirect was not followed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectRefused {
    #[error(
        "redirect to another origin ({to}) refused: a provider's credentials go only to {from}"
    )]
    OtherOrigin { from: String, to: String },
    #[error("more than {0} redirects")]
    TooMany(usize),
}

/// Follows a redirect only to the origin (scheme, host and port) the
/// request was sent to, and refuses any other: a request carries the
/// provider's credentials (`Authorization`, headers and URL query values
/// made from secrets, user and password in the URL), and none of them may
/// reach another server. (reqwest's default policy drops only the
/// `Authorization` and cookie headers, and only when host or port change.)
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // The first URL is the request's own.
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(RedirectRefused::TooMany(MAX_REDIRECTS));
        }
        let (from, to) = (first.origin(), attempt.url().origin());
        // An opaque origin (not http or https) never equals another.
        if from == to {
            attempt.follow()
        } else {
            let refused = RedirectRefused::OtherOrigin {
                from: from.ascii_serialization(),
                to: to.ascii_serialization(),
            };
            attempt.error(refused)
        }
    })
}

impl Http {
    pub fn build(s: &Settings<'_>) -> Result<Http, ConfigError> {
        let url = s.template("url", &s.config.url)?;
        let format = s.config.format.unwrap_or(Format::Html);
        let auth = s.config.auth.unwrap_or(Auth::None);
        let extract = s.config.extract.clone().unwrap_or_default();
        if matches!(format, Format::Html | Format::Text) && !extract.is_empty() {
            return Err(config_error(
                (s.at)("extract"),
                "paths need format = \"json\" or \"xml\"; HTML and text answers are read by rules",
            ));
        }
        if extract.is_empty() && s.rules.is_empty() {
            return Err(config_error(
                (s.at)("rules"),
                "an HTTP provider needs rules (or extract paths for JSON and XML) to find a name",
            ));
        }
        let needs = match auth {
            Auth::None => &[][..],
            Auth::Basic => &["user", "password"][..],
            Auth::Bearer => &["token"][..],
        };
        for name in needs {
            if s.secret(name).is_none() {
                return Err(config_error(
                    (s.at)(&format!("secrets.{name}")),
                    format!("missing: auth = {auth:?} needs it"),
                ));
            }
        }
        let mut headers = Vec::new();
        for (name, value) in s.config.headers.clone().unwrap_or_default() {
            callhost_lookup_core::check_template(&value, &s.secret_names())
                .map_err(|e| config_error((s.at)(&format!("headers.{name}")), e.to_string()))?;
            headers.push((name, value));
        }
        Ok(Http {
            client: client(s)?,
            url,
            format,
            headers,
            auth,
            extras: s.extras(),
            tel: s.tel,
            rules: s.rule_set(),
            extract,
        })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let extras = borrowed(&self.extras);
        let url = expand(&self.url, number, self.tel.core(), &extras, percent_encode)
            .map_err(|e| e.to_string())?;
        trace.note(format!("GET {}", mask(&url, &self.extras)));
        let mut request = self.client.get(&url);
        for (name, value) in &self.headers {
            let value = expand(value, number, self.tel.core(), &extras, no_escape)
                .map_err(|e| e.to_string())?;
            request = request.header(name, value);
        }
        let secret = |name: &str| {
            self.extras
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        request = match self.auth {
            Auth::None => request,
            Auth::Basic => request.basic_auth(secret("user"), Some(secret("password"))),
            Auth::Bearer => request.bearer_auth(secret("token")),
        };
        let (status, body) = send(request).await.map_err(|e| mask(&e, &self.extras))?;
        trace.note(format!(
            "HTTP {status}: {}",
            mask(&excerpt(&body), &self.extras)
        ));
        if status == 404 || status == 204 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(format!("HTTP status {status}"));
        }
        let mut found = match self.format {
            Format::Json if !self.extract.is_empty() => {
                let json: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
                extract::from_json(&json, &self.extract)
            }
            Format::Xml if !self.extract.is_empty() => {
                let document = roxmltree::Document::parse(&body)
                    .map_err(|e| format!("answer is not XML: {e}"))?;
                extract::from_xml(&document, &self.extract)
            }
            _ => Found::default(),
        };
        if let Some(rules) = &self.rules {
            let by_rules = Found::from(rules.apply(&body));
            if by_rules != Found::default() {
                trace.note(format!("rules matched: {by_rules:?}"));
            }
            found.fill_from(by_rules);
        }
        Ok((found != Found::default()).then_some(found))
    }
}

/// Sends `request` and reads at most [`MAX_BODY`] bytes of the answer.
pub async fn send(request: reqwest::RequestBuilder) -> Result<(u16, String), String> {
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        let room = MAX_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// reqwest's error with its causes, which say what actually failed.
pub fn describe(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
