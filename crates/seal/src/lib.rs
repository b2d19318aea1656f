//! Secrets in `callhost.db` sealed at rest: instance configurations (API
//! keys, database and directory passwords) and the SIP users' HA1 hashes.
//! Each value is encrypted with XChaCha20-Poly1305 under a key kept next to
//! the database in `<data>/config.key` (created on first use, owner-only),
//! so a copy of the database alone reveals no secret; a backup needs both.
//!
//! A value is bound to its place, the column and the row it is stored in
//! ([`Place`], the AEAD's associated data): a ciphertext copied into another
//! row does not open there, so nobody who can write the database but lacks
//! the key can hand one user's HA1 to another user or one instance's secrets
//! to another instance.
//!
//! Stored forms:
//! - `sealed:v2:` + base64(nonce ‖ ciphertext), associated data
//!   `<column>:<row>` (e.g. `instances.config:rl`, `users.sip_ha1:anna`).
//!   The only form callhost writes.
//! - `sealed:v1:` + base64(nonce ‖ ciphertext) without associated data, and
//!   plain text: what callhost 0.1.0 wrote. [`Sealer::unseal_legacy`] reads
//!   them for the one-time upgrade; [`Sealer::unseal`] refuses them.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    XChaCha20Poly1305, XNonce,
};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "config.key";

const V1: &str = "sealed:v1:";
const V2: &str = "sealed:v2:";
const NONCE_LEN: usize = 24;

/// Where a sealed value is stored: a column and the key of its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    column: &'static str,
    row: &'a str,
}

impl<'a> Place<'a> {
    /// `column` is `table.column` (no `:`), `row` the row's key.
    pub const fn new(column: &'static str, row: &'a str) -> Place<'a> {
        Place { column, row }
    }

    /// The AEAD's associated data: `<column>:<row>`. Unambiguous because a
    /// column name has no `:`.
    fn associated_data(&self) -> Vec<u8> {
        format!("{}:{}", self.column, self.row).into_bytes()
    }
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of `{}`", self.column, self.row)
    }
}

/// The form a stored value is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Not sealed (callhost 0.1.0's HA1s, configurations from before sealing).
    Plain,
    /// Sealed without its place (callhost 0.1.0's configurations).
    V1,
    /// Sealed and bound to its place.
    V2,
}

impl Form {
    pub fn of(stored: &str) -> Form {
        if stored.starts_with(V2) {
            Form::V2
        } else if stored.starts_with(V1) {
            Form::V1
        } else {
            Form::Plain
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Form::Plain => "not sealed",
            Form::V1 => "sealed without its row binding (sealed:v1)",
            Form::V2 => "sealed (sealed:v2)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the key file {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the key file {}", path.display())]
    CreateKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a 32-byte hex key", path.display())]
    BadKey { path: PathBuf },
    #[error("{place}: the sealed value is damaged ({reason})")]
    Damaged { place: String, reason: &'static str },
    #[error(
        "{place}: cannot be opened with {}: it was sealed for another row (copied from one?) or with another key",
        key.display()
    )]
    WrongRowOrKey { place: String, key: PathBuf },
    #[error(
        "{place}: refused: the stored value is {form}, a form callhost no longer writes (was it copied in from elsewhere?)"
    )]
    NotSealed { place: String, form: Form },
    #[error("{place}: the sealed value is not UTF-8 text")]
    NotText { place: String },
}

/// Seals and opens values with the data directory's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// For [`Sealer::derive`] only.
    key: [u8; 32],
    key_path: PathBuf,
}

impl fmt::Debug for Sealer {
    /// The key file's path, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The key in `data`'s `config.key`, created (mode 0600) if there is
    /// none yet.
    pub fn open(data: &Path) -> Result<Sealer, SealError> {
        let path = data.join(KEY_FILE);
        let key = match read_key(&path)? {
            Some(key) => key,
            None => match create_key(&path) {
                Ok(key) => key,
                // Another process created it first: use theirs.
                Err(error) => match read_key(&path)? {
                    Some(key) => key,
                    None => return Err(error),
                },
            },
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
        let key: [u8; 32] = key[..].try_into().expect("32-byte key");
        Ok(Sealer {
            cipher,
            key,
            key_path: path,
        })
    }

    /// A key of its own for `purpose` (HMAC-SHA256 of the purpose under the
    /// data directory's key): what a module encrypts its secrets with,
    /// without ever holding this key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"callhost derive v1\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key file this sealer uses.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// `plain` sealed for `place` (a fresh nonce each time).
    pub fn seal(&self, place: Place<'_>, plain: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = place.associated_data();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("encryption of a small buffer cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{V2}{}", STANDARD.encode(bytes))
    }

    /// The text of a value sealed for `place`. Anything else is refused: a
    /// value sealed for another place, with another key, or in a form
    /// callhost no longer writes.
    pub fn unseal(&self, place: Place<'_>, stored: &str) -> Result<String, SealError> {
        match Form::of(stored) {
            Form::V2 => self.open_sealed(place, &stored[V2.len()..], &place.associated_data()),
            form => Err(SealError::NotSealed {
                place: place.to_string(),
                form,
            }),
        }
    }

    /// The text of a value in any form: for upgrading what an older version
    /// wrote (plain text, `sealed:v1`), which is then sealed again with
    /// [`Sealer::seal`].
    pub fn unseal_legacy(&self, place: Place<'_>, stored: &str) -> Result<String, SealError> {
        match Form::of(stored) {
            Form::V2 => self.unseal(place, stored),
            Form::V1 => self.open_sealed(place, &stored[V1.len()..], &[]),
            Form::Plain => Ok(stored.to_string()),
        }
    }

    fn open_sealed(
        &self,
        place: Place<'_>,
        encoded: &str,
        aad: &[u8],
    ) -> Result<String, SealError> {
        let damaged = |reason| SealError::Damaged {
            place: place.to_string(),
            reason,
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| damaged("not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(damaged("too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| SealError::WrongRowOrKey {
                place: place.to_string(),
                key: self.key_path.clone(),
            })?;
        String::from_utf8(plain).map_err(|_| SealError::NotText {
            place: place.to_string(),
        })
    }
}

fn read_key(path: &Path) -> Result<Option<Vec<u8>>, SealError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| SealError::ReadKey {
            path: path.to_owned(),
            source,
        })
    };
    match std::fs::read_to_string(path) {
        // A key being written by another process may still be empty.
        Ok(text) if text.trim().is_empty() => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            decode_key(path, &read(path)?).map(Some)
        }
        Ok(text) => decode_key(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SealError::ReadKey {
            path: path.to_owned(),
            source,
        }),
    }
}

fn decode_key(path: &Path, text: &str) -> Result<Vec<u8>, SealError> {
    hex::decode(text.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| SealError::BadKey {
            path: path.to_owned(),
        })
}

fn create_key(path: &Path) -> Result<Vec<u8>, SealError> {
    use std::io::Write as _;
    let failed = |source| SealError::CreateKey {
        path: path.to_owned(),
        source,
    };
    let key = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(hex::encode(&key).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Place<'static> = Place::new("instances.config", "a");

    #[test]
    fn derived_keys_are_stable_per_purpose_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let key = sealer.derive("module:call-recording:keystore");
        assert_eq!(
            key,
            Sealer::open(dir.path())
                .unwrap()
                .derive("module:call-recording:keystore")
        );
        assert_ne!(key, sealer.derive("module:other:keystore"));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            key,
            Sealer::open(other.path())
                .unwrap()
                .derive("module:call-recording:keystore")
        );
        assert_ne!(&key[..], &sealer.key[..], "never the key itself");
    }

    #[test]
    fn sealed_text_round_trips_and_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let text = "secrets.api_key = \"abc-123\"\n";
        let sealed = sealer.seal(HERE, text);
        assert_eq!(Form::of(&sealed), Form::V2);
        assert!(!sealed.contains("abc-123"));
        assert_ne!(sealed, sealer.seal(HERE, text), "a fresh nonce each time");
        assert_eq!(sealer.unseal(HERE, &sealed).unwrap(), text);
        // The same key is read back.
        let again = Sealer::open(dir.path()).unwrap();
        assert_eq!(again.unseal(HERE, &sealed).unwrap(), text);
        // Another key cannot read it, and says which file it used.
        let other = tempfile::tempdir().unwrap();
        let error = Sealer::open(other.path())
            .unwrap()
            .unseal(HERE, &sealed)
            .unwrap_err();
        assert!(matches!(error, SealError::WrongRowOrKey { .. }), "{error}");
        assert!(error.to_string().contains("config.key"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_value_opens_only_in_its_own_place() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let anna = sealer.seal(Place::new("users.sip_ha1", "anna"), "0123abcd");
        for elsewhere in [
            Place::new("users.sip_ha1", "bert"),
            Place::new("instances.config", "anna"),
            Place::new("users.sip_ha1", "anna "),
        ] {
            let error = sealer.unseal(elsewhere, &anna).unwrap_err();
            assert!(matches!(error, SealError::WrongRowOrKey { .. }), "{error}");
            let text = error.to_string();
            assert!(text.starts_with(&elsewhere.to_string()), "{text}");
            assert!(text.contains("another row"), "{text}");
        }
        assert_eq!(
            sealer
                .unseal(Place::new("users.sip_ha1", "anna"), &anna)
                .unwrap(),
            "0123abcd"
        );
    }

    /// `text` sealed as callhost 0.1.0 did: no associated data.
    fn seal_v1(sealer: &Sealer, text: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut bytes = nonce.to_vec();
        bytes.extend(sealer.cipher.encrypt(&nonce, text.as_bytes()).unwrap());
        format!("{V1}{}", STANDARD.encode(bytes))
    }

    #[test]
    fn older_forms_open_only_for_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let v1 = seal_v1(&sealer, "greeting = \"Moin\"\n");
        assert_eq!(Form::of(&v1), Form::V1);
        assert_eq!(
            sealer.unseal_legacy(HERE, &v1).unwrap(),
            "greeting = \"Moin\"\n"
        );
        assert_eq!(
            sealer.unseal_legacy(HERE, "plain = 1").unwrap(),
            "plain = 1"
        );
        let v2 = sealer.seal(HERE, "x = 1");
        assert_eq!(sealer.unseal_legacy(HERE, &v2).unwrap(), "x = 1");
        for old in [v1.as_str(), "plain = 1", ""] {
            let error = sealer.unseal(HERE, old).unwrap_err();
            assert!(matches!(error, SealError::NotSealed { .. }), "{error}");
            assert!(error.to_string().contains("instances.config of `a`"));
        }
        // A v2 value moved elsewhere is not opened by the upgrade path either.
        let error = sealer
            .unseal_legacy(Place::new("instances.config", "b"), &v2)
            .unwrap_err();
        assert!(matches!(error, SealError::WrongRowOrKey { .. }), "{error}");
    }

    #[test]
    fn damaged_values_and_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let error = sealer.unseal(HERE, "sealed:v2:***").unwrap_err();
        assert!(matches!(error, SealError::Damaged { .. }), "{error}");
        let error = sealer.unseal(HERE, "sealed:v2:AAAA").unwrap_err();
        assert!(error.to_string().contains("too short"), "{error}");
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(KEY_FILE), "not hex").unwrap();
        let error = Sealer::open(bad.path()).unwrap_err();
        assert!(matches!(error, SealError::BadKey { .. }), "{error}");
        assert!(error.to_string().contains("config.key"), "{error}");
    }
}
