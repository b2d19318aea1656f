//! CardDAV providers (RL6), e.g. Nextcloud contacts. An address book stores
//! numbers in whatever form people typed them ("030 / 123 45-67"), which no
//! server-side text match can compare with a signalled number. So the
//! provider fetches the whole book (one REPORT), normalises every TEL, and
//! answers from that snapshot; the snapshot is fetched again when it is
//! older than `refresh` (the call that notices waits for it only if there is
//! no snapshot yet, otherwise the refresh runs in the background).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use callhost_numbers::{ExternalNumber, NumberPlan};
use callhost_plugin_sdk::{config_error, ConfigError};
use tokio::sync::Mutex;

use super::{
    excerpt,
    http::{client, send},
    mask, Settings, Trace,
};
use crate::{config, extract::Found};

const QUERY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
  <D:prop><D:getetag/><C:address-data/></D:prop>
</C:addressbook-query>"#;

pub struct CardDav {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    user: Option<String>,
    password: Option<String>,
    refresh: Duration,
    home: NumberPlan,
    extras: Vec<(String, String)>,
    snapshot: Mutex<Option<Snapshot>>,
    /// A background refresh is running (one at a time).
    refreshing: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct Snapshot {
    fetched: Instant,
    /// By `00…` international number.
    by_number: Arc<HashMap<String, Found>>,
}

impl CardDav {
    pub fn build(s: &Settings<'_>) -> Result<CardDav, ConfigError> {
        let refresh = match &s.config.refresh {
            Some(text) => config::duration(&(s.at)("refresh"), text)?,
            None => Duration::from_secs(300),
        };
        let home = NumberPlan::new(s.home_country)
            .map_err(|e| config_error((s.at)("url"), format!("home country: {e}")))?;
        Ok(CardDav {
            inner: Arc::new(Inner {
                client: client(s)?,
                url: s.required("url", &s.config.url)?,
                user: s.secret("user"),
                password: s.secret("password"),
                refresh,
                home,
                extras: s.extras(),
                snapshot: Mutex::new(None),
                refreshing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub async fn query(
        &self,
        number: &ExternalNumber,
        trace: &Trace,
    ) -> Result<Option<Found>, String> {
        let current = self.inner.snapshot.lock().await.clone();
        let snapshot = match current {
            Some(snapshot) if snapshot.fetched.elapsed() < self.inner.refresh => {
                trace.note(format!(
                    "address book fetched {}s ago ({} numbers)",
                    snapshot.fetched.elapsed().as_secs(),
                    snapshot.by_number.len()
                ));
                snapshot
            }
            Some(stale) => {
                trace.note("address book snapshot is stale: answering from it, refreshing in the background");
                use std::sync::atomic::Ordering;
                if !self.inner.refreshing.swap(true, Ordering::SeqCst) {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        match inner.fetch(&Trace::default()).await {
                            Ok(fresh) => *inner.snapshot.lock().await = Some(fresh),
                            Err(e) => tracing::warn!("address book refresh failed: {e}"),
                        }
                        inner.refreshing.store(false, Ordering::SeqCst);
                    });
                }
                stale
            }
            None => {
                let fresh = self.inner.fetch(trace).await?;
                *self.inner.snapshot.lock().await = Some(fresh.clone());
                fresh
            }
        };
        Ok(snapshot.by_number.get(&number.international).cloned())
    }
}

impl Inner {
    async fn fetch(&self, trace: &Trace) -> Result<Snapshot, String> {
        trace.note(format!("REPORT {}", mask(&self.url, &self.extras)));
        let method = reqwest::Method::from_bytes(b"REPORT").expect("a valid method name");
        let mut request = self
            .client
            .request(method, &self.url)
            .header("Depth", "1")
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(QUERY);
        if let Some(user) = &self.user {
            request = request.basic_auth(user, self.password.as_deref());
        }
        let (status, body) = send(request).await.map_err(|e| mask(&e, &self.extras))?;
        if status != 207 {
            return Err(format!(
                "HTTP status {status} (expected 207 Multi-Status): {}",
                excerpt(&body)
            ));
        }
        let document =
            roxmltree::Document::parse(&body).map_err(|e| format!("answer is not XML: {e}"))?;
        let mut by_number = HashMap::new();
        let mut cards = 0;
        for data in document
            .descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == "address-data")
        {
            let Some(text) = data.text() else { continue };
            cards += 1;
            for (number, found) in read_vcards(text, &self.home) {
                by_number.entry(number).or_insert(found);
            }
        }
        trace.note(format!("{cards} cards, {} numbers", by_number.len()));
        Ok(Snapshot {
            fetched: Instant::now(),
            by_number: Arc::new(by_number),
        })
    }
}

/// Every normalisable TEL of every card in `text` with the card's names.
fn read_vcards(text: &str, home: &NumberPlan) -> Vec<(String, Found)> {
    let mut out = Vec::new();
    for card in ical::VcardParser::new(std::io::BufReader::new(text.as_bytes())).flatten() {
        let value = |name: &str| {
            card.properties
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(name))
                .and_then(|p| p.value.clone())
        };
        let (last, first) = match value("N") {
            Some(n) => {
                let mut parts = n.split(';');
                (
                    parts.next().map(str::to_string),
                    parts.next().map(str::to_string),
                )
            }
            None => (None, None),
        };
        let mut found = Found::default();
        if let Some(first) = first {
            found.set(config::FieldName::FirstName, first);
        }
        if let Some(last) = last {
            found.set(config::FieldName::LastName, last);
        }
        if let Some(org) = value("ORG") {
            found.set(
                config::FieldName::Company,
                org.split(';').next().unwrap_or_default().to_string(),
            );
        }
        if let Some(full) = value("FN") {
            found.set(config::FieldName::Display, full);
        }
        for tel in card
            .properties
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case("TEL"))
        {
            let Some(raw) = &tel.value else { continue };
            let raw = raw.trim_start_matches("tel:");
            if let Ok(number) = home.normalize(raw) {
                out.push((number.international, found.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcards_are_indexed_by_normalised_number() {
        let text = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:1\r\nFN:Anna Schmidt\r\nN:Schmidt;Anna;;;\r\nORG:Acme GmbH;Sales\r\nTEL;TYPE=work:030 / 123 45-67\r\nTEL;TYPE=cell:+49 171 2345678\r\nEND:VCARD\r\n";
        let home = NumberPlan::new("DE").unwrap();
        let entries = read_vcards(text, &home);
        let numbers: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(numbers, ["0049301234567", "00491712345678"]);
        let found = &entries[0].1;
        assert_eq!(found.first_name.as_deref(), Some("Anna"));
        assert_eq!(found.last_name.as_deref(), Some("Schmidt"));
        assert_eq!(found.company.as_deref(), Some("Acme GmbH"));
    }
}
