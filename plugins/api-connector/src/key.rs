//! The installation key clients sign in with.
//!
//! Nothing secret is stored: the key is derived from the host's secret for
//! this module (`module_secret("installation-key")`, which never leaves the
//! host in any other form) and the instance's name and key generation:
//!
//! ```text
//! key = hex(HMAC-SHA256(module_secret, instance name ‖ 0x00 ‖ generation as u64 big-endian))
//! ```
//!
//! `rotate-key` raises the generation (a small file in the instance's
//! directory), which gives a new key; the old one stops working for new
//! sign-ins. The running connector reads the generation at every sign-in,
//! so a rotation made by another process (the CLI) applies at once.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The purpose the host's module secret is asked for.
pub const SECRET_PURPOSE: &str = "installation-key";

/// The file holding the key generation (a decimal number; missing is 0).
pub const GENERATION_FILE: &str = "key-generation";

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key generation {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key generation {path} holds {text:?}, not a number")]
    Corrupt { path: PathBuf, text: String },
    #[error("cannot write the key generation {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The generation is the largest there is (the file was edited): a
    /// rotation would give the same key again.
    #[error("the key generation {path} is at its maximum; write 0 there (or remove it) to start over, which brings back the first key")]
    Exhausted { path: PathBuf },
}

/// What the key is made from: the host's secret for this module and the
/// instance's name. Holds the secret; never printed.
#[derive(Clone)]
pub struct KeyMaterial {
    secret: Vec<u8>,
    instance: String,
    data_dir: PathBuf,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    pub fn new(secret: Vec<u8>, instance: &str, data_dir: &Path) -> KeyMaterial {
        KeyMaterial {
            secret,
            instance: instance.to_string(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The key of the current generation (reads the generation file).
    pub fn current(&self) -> Result<InstallationKey, KeyError> {
        let generation = read_generation(&self.data_dir)?;
        Ok(self.of_generation(generation))
    }

    pub fn of_generation(&self, generation: u64) -> InstallationKey {
        InstallationKey {
            generation,
            text: derive(&self.secret, &self.instance, generation),
        }
    }

    /// A new generation, written before it is used: the new key.
    pub fn rotate(&self) -> Result<InstallationKey, KeyError> {
        let path = self.data_dir.join(GENERATION_FILE);
        // Saturating would hand out the same key as new and leave the old
        // one working.
        let next = read_generation(&self.data_dir)?
            .checked_add(1)
            .ok_or_else(|| KeyError::Exhausted { path: path.clone() })?;
        crate::files::write_atomically(&path, format!("{next}\n").as_bytes())
            .map_err(|source| KeyError::Write { path, source })?;
        Ok(self.of_generation(next))
    }
}

/// One generation's key, as clients type or import it.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallationKey {
    pub generation: u64,
    text: String,
}

impl std::fmt::Debug for InstallationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InstallationKey(generation {})", self.generation)
    }
}

impl InstallationKey {
    /// The key itself (64 lowercase hex digits), for the admin actions.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Whether `sent` is this key, in time independent of where they
    /// differ (only a length difference shows). Case and surrounding
    /// blanks of what a person pasted do not count.
    pub fn matches(&self, sent: &str) -> bool {
        let sent = sent.trim().to_ascii_lowercase();
        sent.as_bytes().ct_eq(self.text.as_bytes()).into()
    }
}

/// The derivation itself (see the module documentation).
pub fn derive(secret: &[u8], instance: &str, generation: u64) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(instance.as_bytes());
    mac.update(&[0]);
    mac.update(&generation.to_be_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The first characters of what a client sent as its key, for an error
/// message that helps without repeating the key: at most 4 characters,
/// letters and digits only.
pub fn sent_prefix(sent: &str) -> String {
    sent.trim()
        .chars()
        .take(4)
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

pub fn read_generation(data_dir: &Path) -> Result<u64, KeyError> {
    let path = data_dir.join(GENERATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| KeyError::Corrupt {
            path,
            text: text.chars().take(40).collect(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_an_hmac_of_instance_and_generation() {
        let secret = [1u8; 32];
        let key = derive(&secret, "crm", 0);
        assert_eq!(key.len(), 64);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(key, derive(&secret, "crm", 0), "stable");
        assert_ne!(key, derive(&secret, "crm", 1), "per generation");
        assert_ne!(key, derive(&secret, "crm2", 0), "per instance");
        assert_ne!(key, derive(&[2u8; 32], "crm", 0), "per secret");
        // The separator keeps name and generation apart.
        assert_ne!(derive(&secret, "a\0", 0), derive(&secret, "a", 0));
    }

    #[test]
    fn a_known_vector_stays_the_same() {
        // Clients that saved a key must keep working across releases.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").unwrap();
        mac.update(b"crm\0\0\0\0\0\0\0\0\x03");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(derive(b"secret", "crm", 3), expected);
    }

    #[test]
    fn rotation_raises_the_generation_and_changes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let material = KeyMaterial::new(vec![9; 32], "crm", dir.path());
        let first = material.current().unwrap();
        assert_eq!(first.generation, 0);
        let second = material.rotate().unwrap();
        assert_eq!(second.generation, 1);
        assert_ne!(first.expose(), second.expose());
        assert_eq!(material.current().unwrap(), second);
        assert!(!second.matches(first.expose()));
    }

    #[test]
    fn a_corrupt_generation_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GENERATION_FILE), "seven").unwrap();
        let material = KeyMaterial::new(vec![9; 32], "crm", dir.path());
        assert!(matches!(material.current(), Err(KeyError::Corrupt { .. })));
    }

    #[test]
    fn a_rotation_past_the_last_generation_is_refused_not_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GENERATION_FILE), format!("{}\n", u64::MAX)).unwrap();
        let material = KeyMaterial::new(vec![9; 32], "crm", dir.path());
        let before = material.current().unwrap();
        assert!(matches!(material.rotate(), Err(KeyError::Exhausted { .. })));
        assert_eq!(material.current().unwrap(), before);
    }

    #[test]
    fn matching_ignores_case_and_blanks_but_nothing_else() {
        let key = KeyMaterial::new(vec![3; 32], "crm", Path::new("/nonexistent")).of_generation(0);
        assert!(key.matches(key.expose()));
        assert!(key.matches(&format!("  {}\n", key.expose().to_uppercase())));
        assert!(!key.matches(&key.expose()[..63]));
        assert!(!key.matches(""));
        let mut wrong = key.expose().to_string();
        wrong.replace_range(63.., if wrong.ends_with('0') { "1" } else { "0" });
        assert!(!key.matches(&wrong));
    }

    #[test]
    fn the_sent_prefix_shows_four_safe_characters() {
        assert_eq!(sent_prefix("ab12cd34"), "ab12");
        assert_eq!(sent_prefix(" a\"<b"), "ab");
        assert_eq!(sent_prefix("a\"<bcd"), "ab");
        assert_eq!(sent_prefix(""), "");
        assert_eq!(sent_prefix("äöü1234"), "1");
    }

    #[test]
    fn debug_never_shows_the_key_or_secret() {
        let material = KeyMaterial::new(vec![0xAB; 32], "crm", Path::new("/x"));
        let key = material.of_generation(2);
        assert!(!format!("{material:?}").contains("ab"));
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
