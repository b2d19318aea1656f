//! TOML configuration into the module's `Config` type, errors naming the field.

use callhost_plugin_abi::ConfigError;
use serde::de::DeserializeOwned;

use crate::config_error;

/// The JSON Schema of a configuration type as the host gets it: draft
/// 2020-12, every subschema inlined (a form builder then needs no `$ref`
/// resolution), fields in declaration order.
pub(crate) fn schema<C: schemars::JsonSchema>() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<C>();
    serde_json::to_value(schema).unwrap_or_else(|_| serde_json::json!({}))
}

pub(crate) fn parse<C: DeserializeOwned + Default>(text: &str) -> Result<C, ConfigError> {
    if text.trim().is_empty() {
        return Ok(C::default());
    }
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().message().trim().to_string();
        config_error(field_of(&path, &message), message)
    })
}

/// Names the key itself for an unknown key (serde_path_to_error may or may
/// not have put it in the path already).
fn field_of(path: &str, message: &str) -> String {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (unknown, path) {
        (Some(key), "." | "") => key.to_string(),
        (Some(key), path) if path == key || path.ends_with(&format!(".{key}")) => path.to_string(),
        (Some(key), parent) => format!("{parent}.{key}"),
        (None, "." | "") => "(top level)".to_string(),
        (None, path) => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        level: u32,
        inner: Inner,
    }

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        names: Vec<String>,
    }

    #[test]
    fn empty_text_gives_defaults() {
        let sample: Sample = parse("  \n").unwrap();
        assert_eq!(sample.level, 0);
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let error = parse::<Sample>("[inner]\nnames = [1]").unwrap_err();
        assert_eq!(error.field.as_str(), "inner.names[0]");
        assert!(error.message.contains("invalid type"), "{}", error.message);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let error = parse::<Sample>("levle = 3").unwrap_err();
        assert_eq!(error.field.as_str(), "levle");
        let error = parse::<Sample>("[inner]\nnamez = []").unwrap_err();
        assert_eq!(error.field.as_str(), "inner.namez");
    }
}
