//! Instance configurations encrypted at rest. They hold modules' secrets
//! (API keys, database and directory passwords), so `callhost.db` stores
//! each one sealed with XChaCha20-Poly1305 under a key kept next to it in
//! `<data>/config.key` (created on first use, owner-only). Copying the
//! database alone reveals no secret; a backup needs both files.
//!
//! A stored value is `sealed:v1:` + base64(nonce ‖ ciphertext). Anything
//! else is a configuration written before sealing existed: it is read as is
//! and sealed when the database is opened.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng},
    XChaCha20Poly1305, XNonce,
};

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl Sealer {
    /// The data directory's key, created if there is none yet.
    pub fn open(data: &Path) -> Result<Sealer> {
        let path = data.join("config.key");
        let key = match read_key(&path)? {
            Some(key) => key,
            None => match create_key(&path) {
                Ok(key) => key,
                // Another process created it first: use theirs.
                Err(_) => read_key(&path)?
                    .with_context(|| format!("{} could not be created", path.display()))?,
            },
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
        Ok(Sealer { cipher, path })
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("encryption of a small buffer cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// The configuration text of a stored value (sealed or not yet).
    pub fn unseal(&self, stored: &str) -> Result<String> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let bytes = STANDARD
            .decode(encoded)
            .context("a sealed configuration is damaged (not base64)")?;
        if bytes.len() < NONCE_LEN {
            bail!("a sealed configuration is damaged (too short)");
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| {
                anyhow::anyhow!(
                    "a configuration cannot be decrypted with {}: is it the key this database was written with?",
                    self.path.display()
                )
            })?;
        String::from_utf8(plain).context("a sealed configuration is not UTF-8")
    }
}

fn read_key(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        // A key being written by another process may still be empty.
        Ok(text) if text.trim().is_empty() => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let text = std::fs::read_to_string(path)?;
            decode_key(path, &text).map(Some)
        }
        Ok(text) => decode_key(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn decode_key(path: &Path, text: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .with_context(|| format!("{}: not a 32-byte hex key", path.display()))
}

fn create_key(path: &Path) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let key = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(hex::encode(&key).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_round_trips_and_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let text = "secrets.api_key = \"abc-123\"\n";
        let sealed = sealer.seal(text);
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("abc-123"));
        assert_ne!(sealed, sealer.seal(text), "a fresh nonce each time");
        assert_eq!(sealer.unseal(&sealed).unwrap(), text);
        assert_eq!(sealer.unseal("plain = 1").unwrap(), "plain = 1");
        // The same key is read back.
        let again = Sealer::open(dir.path()).unwrap();
        assert_eq!(again.unseal(&sealed).unwrap(), text);
        // Another key cannot read it, and says which file it used.
        let other = tempfile::tempdir().unwrap();
        let error = Sealer::open(other.path())
            .unwrap()
            .unseal(&sealed)
            .unwrap_err()
            .to_string();
        assert!(error.contains("config.key"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("config.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
