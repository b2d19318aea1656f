//! `module.toml`: the package manifest.

use serde::{Deserialize, Serialize};

use crate::paths::validate_path;
use crate::PackageError;

/// Maximum length of a module id.
pub const MAX_ID_LEN: usize = 64;

/// The contents of `module.toml`.
///
/// Unknown fields are ignored when reading, so a newer packager can add optional
/// fields without breaking older hosts; anything a host must understand goes behind
/// `abi_version` / `host_version` instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Stable identifier: lowercase `[a-z0-9-]`, 1..=64 characters.
    pub id: String,
    /// Human-readable name; must not be empty.
    pub name: String,
    /// Module version (semver), stored as a string.
    #[serde(with = "version_string")]
    pub version: semver::Version,
    /// Plugin ABI version the library was built against.
    pub abi_version: u32,
    /// Semver requirement on the host version, e.g. `">=0.1, <0.2"`.
    #[serde(with = "version_req_string")]
    pub host_version: semver::VersionReq,
    /// Free text.
    pub description: String,
    /// Target triple the library was built for, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// Path of the library inside the zip; must start with `lib/<target>/`.
    pub library: String,
}

impl Manifest {
    /// Checks the field rules that serde cannot express.
    pub fn validate(&self) -> Result<(), PackageError> {
        validate_id(&self.id)?;
        if self.name.trim().is_empty() {
            return Err(PackageError::field("name", "must not be empty"));
        }
        validate_target(&self.target)?;
        let prefix = format!("lib/{}/", self.target);
        let file_name = self.library.strip_prefix(&prefix).ok_or_else(|| {
            PackageError::field(
                "library",
                format!("{:?} must start with {prefix:?}", self.library),
            )
        })?;
        if file_name.is_empty() {
            return Err(PackageError::field(
                "library",
                format!("{:?} names a directory, not a file", self.library),
            ));
        }
        validate_path(&self.library).map_err(|reason| {
            PackageError::field("library", format!("{:?}: {reason}", self.library))
        })?;
        Ok(())
    }

    /// Parses and validates `module.toml` text.
    pub fn from_toml(text: &str) -> Result<Manifest, PackageError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let mut message = e.to_string().trim_end().to_owned();
            // Some toml syntax errors carry only a position; say what kind of error it is.
            if e.message().trim().is_empty() {
                message.push_str("\ninvalid TOML syntax");
            }
            PackageError::ManifestParse { message }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Serialises to `module.toml` text.
    pub fn to_toml(&self) -> String {
        // Every field is a string or integer, so serialisation cannot fail.
        toml::to_string(self).expect("Manifest always serialises to TOML")
    }
}

fn validate_id(id: &str) -> Result<(), PackageError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(PackageError::field(
            "id",
            format!("{id:?} must be 1 to {MAX_ID_LEN} characters long"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(PackageError::field(
            "id",
            format!("{id:?} contains {c:?}; only lowercase a-z, 0-9 and '-' are allowed"),
        ));
    }
    Ok(())
}

fn validate_target(target: &str) -> Result<(), PackageError> {
    // The triple becomes a directory name inside the zip, so keep it to the
    // characters real triples use.
    let ok = !target.is_empty()
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && target.contains('-')
        && !target.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PackageError::field(
            "target",
            format!("{target:?} is not a target triple like \"x86_64-unknown-linux-gnu\""),
        ))
    }
}

/// Serde as a string, with an error that names the field (toml adds the position).
mod version_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| {
            D::Error::custom(format!(
                "field `version`: {text:?} is not a semver version ({e})"
            ))
        })
    }
}

/// Serde as a string, with an error that names the field (toml adds the position).
mod version_req_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &semver::VersionReq, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<semver::VersionReq, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| {
            D::Error::custom(format!(
                "field `host_version`: {text:?} is not a semver requirement ({e})"
            ))
        })
    }
}
