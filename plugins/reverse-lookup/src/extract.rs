//! Structured answers: JSON pointers and XML paths per display field, and
//! what a provider found.

use std::collections::BTreeMap;

use callhost_lookup_core::Extracted;
use callhost_plugin_sdk::abi::display_name;
use serde::{Deserialize, Serialize};

use crate::config::FieldName;

/// What a provider found for a number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// A complete name, for providers that give only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_score: Option<u8>,
}

impl Found {
    /// "First Last", else the display name, else the company; "" if none.
    pub fn name(&self) -> String {
        // The shared rule, with a provider's complete name ranked before
        // the company.
        display_name(
            self.first_name.as_deref(),
            self.last_name.as_deref(),
            self.display.as_deref(),
        )
        .or_else(|| display_name(None, None, self.company.as_deref()))
        .unwrap_or_default()
    }

    pub fn has_name(&self) -> bool {
        !self.name().is_empty()
    }

    /// Fills the fields still empty from `other`.
    pub fn fill_from(&mut self, other: Found) {
        fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
            if slot.is_none() {
                *slot = value;
            }
        }
        fill(&mut self.first_name, other.first_name);
        fill(&mut self.last_name, other.last_name);
        fill(&mut self.company, other.company);
        fill(&mut self.display, other.display);
        fill(&mut self.spam_score, other.spam_score);
    }

    pub fn set(&mut self, field: FieldName, value: String) {
        let value = collapse(&value);
        if value.is_empty() {
            return;
        }
        match field {
            FieldName::FirstName => self.first_name = Some(value),
            FieldName::LastName => self.last_name = Some(value),
            FieldName::Company => self.company = Some(value),
            FieldName::Display => self.display = Some(value),
            FieldName::Spam => self.spam_score = parse_score(&value),
        }
    }
}

impl From<Extracted> for Found {
    fn from(e: Extracted) -> Found {
        Found {
            first_name: e.first_name,
            last_name: e.last_name,
            company: e.company,
            display: e.display,
            spam_score: e.spam_score,
        }
    }
}

/// A spam score as a provider writes it ("7", "7.0", 7).
pub fn parse_score(text: &str) -> Option<u8> {
    let value: f64 = text.trim().parse().ok()?;
    (0.0..=255.0).contains(&value).then(|| value.round() as u8)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the configured JSON pointers out of `json`.
pub fn from_json(json: &serde_json::Value, paths: &BTreeMap<FieldName, String>) -> Found {
    let mut found = Found::default();
    for (field, pointer) in paths {
        let value = match json.pointer(pointer) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        found.set(*field, value);
    }
    found
}

/// Reads the configured XML paths out of `document`: `entry/name` is the
/// text of the first `name` element inside the first `entry` that has one,
/// by local name (namespaces are ignored, so `tel:name` is `name`), below
/// the root element. A last step `@attr` reads an attribute.
pub fn from_xml(document: &roxmltree::Document<'_>, paths: &BTreeMap<FieldName, String>) -> Found {
    let mut found = Found::default();
    for (field, path) in paths {
        let steps: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(value) = xml_path(document.root_element(), &steps) {
            found.set(*field, value);
        }
    }
    found
}

fn xml_path(node: roxmltree::Node<'_, '_>, steps: &[&str]) -> Option<String> {
    let (step, rest) = steps.split_first()?;
    if let Some(attribute) = step.strip_prefix('@') {
        return rest
            .is_empty()
            .then(|| node.attribute(attribute).map(str::to_string))
            .flatten();
    }
    let local = step.rsplit(':').next().unwrap_or(step);
    node.children()
        .filter(|child| child.is_element() && child.tag_name().name() == local)
        .find_map(|child| {
            if rest.is_empty() {
                let text: String = child
                    .descendants()
                    .filter(|n| n.is_text())
                    .filter_map(|n| n.text())
                    .collect();
                (!text.trim().is_empty()).then_some(text)
            } else {
                xml_path(child, rest)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_fill_fields() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"belongs_to":[{"firstname":"Jane","lastname":"Doe","name":"Jane  Doe"}],"tellows":{"score":"8"}}"#,
        )
        .unwrap();
        let paths = BTreeMap::from([
            (FieldName::FirstName, "/belongs_to/0/firstname".to_string()),
            (FieldName::Display, "/belongs_to/0/name".to_string()),
            (FieldName::Spam, "/tellows/score".to_string()),
            (FieldName::Company, "/missing".to_string()),
        ]);
        let found = from_json(&json, &paths);
        assert_eq!(found.first_name.as_deref(), Some("Jane"));
        assert_eq!(found.display.as_deref(), Some("Jane Doe"));
        assert_eq!(found.spam_score, Some(8));
        assert_eq!(found.company, None);
    }

    #[test]
    fn xml_paths_use_local_names() {
        let text = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:tel="http://tel.search.ch/api/spec/result/1.0/">
            <title>tel.search.ch</title>
            <entry><title type="text">Muster, Hans</title><tel:name>Muster</tel:name><tel:firstname>Hans</tel:firstname>
            <tel:phone kind="main">+41441234567</tel:phone></entry></feed>"#;
        let doc = roxmltree::Document::parse(text).unwrap();
        let paths = BTreeMap::from([
            (FieldName::LastName, "entry/tel:name".to_string()),
            (FieldName::FirstName, "entry/firstname".to_string()),
            (FieldName::Display, "entry/title".to_string()),
            (FieldName::Company, "entry/phone/@kind".to_string()),
        ]);
        let found = from_xml(&doc, &paths);
        assert_eq!(found.last_name.as_deref(), Some("Muster"));
        assert_eq!(found.first_name.as_deref(), Some("Hans"));
        assert_eq!(found.display.as_deref(), Some("Muster, Hans"));
        assert_eq!(found.company.as_deref(), Some("main"));
    }

    #[test]
    fn names_prefer_the_person() {
        let found = Found {
            first_name: Some("Anna".into()),
            last_name: Some("Schmidt".into()),
            company: Some("Acme".into()),
            ..Found::default()
        };
        assert_eq!(found.name(), "Anna Schmidt");
        let company = Found {
            company: Some("Acme".into()),
            ..Found::default()
        };
        assert_eq!(company.name(), "Acme");
        let display = Found {
            display: Some("Muster, Hans".into()),
            ..company.clone()
        };
        assert_eq!(
            display.name(),
            "Muster, Hans",
            "a complete name before the company"
        );
        let blank = Found {
            first_name: Some(" ".into()),
            display: Some("  ".into()),
            company: Some(" Acme ".into()),
            ..Found::default()
        };
        assert_eq!(
            blank.name(),
            "Acme",
            "blank parts skipped, the rest trimmed"
        );
        assert!(!Found::default().has_name());
        assert_eq!(parse_score("7.4"), Some(7));
        assert_eq!(parse_score("x"), None);
    }
}
