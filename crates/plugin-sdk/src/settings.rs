//! Field types module configurations share: credentials that never show,
//! durations in words.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{config_error, ConfigError};

/// A credential: read from the configuration, shown, serialised and logged
/// as stars. (The host keeps the configuration text itself sealed at rest.)
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub const MASK: &'static str = "********";

    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself; call sites that need it are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Secret::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Secret::MASK)
    }
}

/// A credential in the configuration's JSON Schema: a string marked
/// `writeOnly`, which the host's forms never fill in and which is kept as
/// it is when a form leaves it untouched.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

/// The schema keyword that folds a setting away among the "expert"
/// settings of the host's form: `#[schemars(extend("x-expert" = true))]`
/// on the field.
pub const EXPERT: &str = "x-expert";

/// A duration field in humantime syntax ("30days", "12h", "500ms").
pub fn duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        config_error(
            field,
            format!("{text:?} is not a duration ({e}); write e.g. \"30days\", \"12h\" or \"90s\""),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), Secret::MASK);
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            format!("\"{}\"", Secret::MASK)
        );
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_secret_is_write_only_in_the_schema() {
        let schema = schemars::schema_for!(Option<Secret>);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("\"writeOnly\":true"), "{text}");
    }

    #[test]
    fn a_bad_duration_names_its_field() {
        assert_eq!(duration("a.b", "90s").unwrap(), Duration::from_secs(90));
        let error = duration("a.b", "soon").unwrap_err();
        assert_eq!(error.field.as_str(), "a.b");
    }
}
