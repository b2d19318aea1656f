//! Configurations between the module's TOML and the browser's form: the
//! schema a module describes, TOML as JSON values and back, and secrets
//! that the form never sees but a save must keep.

use serde_json::Value;

use crate::loader::Library;

/// What the form shows in place of a secret, and what a form sends back
/// for a secret left untouched (the SDK's `Secret::MASK`).
pub const SECRET_MASK: &str = "********";

/// The module's configuration schema as JSON (`{}` when it sent none or
/// sent something that is not JSON: the form then offers the raw editor
/// only).
pub fn schema_of(library: &Library) -> Value {
    serde_json::from_str(&library.config_schema)
        .unwrap_or_else(|_| Value::Object(Default::default()))
}

/// TOML values as JSON (dates become their text).
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Float(number) => {
            serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(time) => Value::String(time.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(key, value)| (key.clone(), toml_to_json(value)))
                .collect(),
        ),
    }
}

/// JSON values (the form's) as a TOML table. `null` means "not set" and is
/// left out; the error names the path of what TOML cannot hold.
pub fn json_to_toml(value: &Value) -> Result<toml::Value, String> {
    fn convert(value: &Value, path: &str) -> Result<Option<toml::Value>, String> {
        Ok(Some(match value {
            Value::Null => return Ok(None),
            Value::Bool(flag) => toml::Value::Boolean(*flag),
            Value::Number(number) => match (number.as_i64(), number.as_f64()) {
                (Some(integer), _) => toml::Value::Integer(integer),
                (None, Some(float)) => toml::Value::Float(float),
                _ => return Err(format!("`{path}`: {number} does not fit a TOML number")),
            },
            Value::String(text) => toml::Value::String(text.clone()),
            Value::Array(items) => {
                let mut converted = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match convert(item, &format!("{path}[{index}]"))? {
                        Some(item) => converted.push(item),
                        None => {
                            return Err(format!(
                                "`{path}[{index}]`: a list cannot hold an empty value"
                            ))
                        }
                    }
                }
                toml::Value::Array(converted)
            }
            Value::Object(map) => {
                let mut table = toml::Table::new();
                for (key, item) in map {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if let Some(item) = convert(item, &at)? {
                        table.insert(key.clone(), item);
                    }
                }
                toml::Value::Table(table)
            }
        }))
    }
    match convert(value, "")? {
        Some(table @ toml::Value::Table(_)) => Ok(table),
        _ => Err("expected an object of settings".into()),
    }
}

/// `submitted` with every secret that came back as [`SECRET_MASK`] put
/// back to the value at the same place in `stored` (or left out, when
/// nothing is stored there). Places are keys and list positions: a secret
/// in a list entry that moved is asked for again.
pub fn restore_secrets(submitted: toml::Value, stored: &toml::Value) -> toml::Value {
    fn restore(value: toml::Value, stored: Option<&toml::Value>) -> Option<toml::Value> {
        match value {
            toml::Value::String(text) if text == SECRET_MASK => stored
                .filter(|stored| stored.as_str() != Some(SECRET_MASK))
                .cloned(),
            toml::Value::Table(table) => Some(toml::Value::Table(
                table
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let before = stored.and_then(|stored| stored.get(&key));
                        restore(value, before).map(|value| (key, value))
                    })
                    .collect(),
            )),
            toml::Value::Array(items) => Some(toml::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(index, value)| {
                        let before = stored
                            .and_then(toml::Value::as_array)
                            .and_then(|stored| stored.get(index));
                        restore(value, before)
                    })
                    .collect(),
            )),
            other => Some(other),
        }
    }
    restore(submitted, Some(stored)).unwrap_or(toml::Value::Table(toml::Table::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_values_become_toml_without_the_unset_ones() {
        let table = json_to_toml(&json!({
            "greeting": "Hi",
            "numbers": ["201", "202"],
            "tap": null,
            "limits": { "max": 3, "ratio": 0.5 },
        }))
        .unwrap();
        let text = toml::to_string(&table).unwrap();
        assert!(text.contains("greeting = \"Hi\""), "{text}");
        assert!(!text.contains("tap"), "{text}");
        assert!(
            text.contains("max = 3") && text.contains("ratio = 0.5"),
            "{text}"
        );
        assert_eq!(toml_to_json(&table)["numbers"][1], "202");
    }

    #[test]
    fn what_toml_cannot_hold_is_named() {
        let error = json_to_toml(&json!({ "a": { "b": [1, null] } })).unwrap_err();
        assert!(error.contains("`a.b[1]`"), "{error}");
        assert!(json_to_toml(&json!([1])).is_err());
    }

    #[test]
    fn a_masked_secret_keeps_the_stored_value_by_place() {
        let stored: toml::Value = toml::from_str(
            "[[providers]]\nname = \"a\"\nsecrets = { key = \"s3cret\" }\n\
             [[providers]]\nname = \"b\"\n",
        )
        .unwrap();
        let submitted = json_to_toml(&json!({
            "providers": [
                { "name": "a", "secrets": { "key": SECRET_MASK } },
                { "name": "b", "secrets": { "key": SECRET_MASK } },
                { "name": "c", "secrets": { "key": "new" } },
            ]
        }))
        .unwrap();
        let restored = restore_secrets(submitted, &stored);
        let providers = restored["providers"].as_array().unwrap();
        assert_eq!(providers[0]["secrets"]["key"].as_str(), Some("s3cret"));
        // Nothing was stored there: the mask is not taken as the secret.
        assert!(providers[1]["secrets"].get("key").is_none());
        assert_eq!(providers[2]["secrets"]["key"].as_str(), Some("new"));
    }
}
