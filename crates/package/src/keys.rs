//! Ed25519 signing keys, public keys and the trusted-key directory.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer as _};
use sha2::{Digest, Sha256};

use crate::PackageError;

/// First word of a public key file; see [`PublicKey::to_file_text`].
pub const PUBLIC_KEY_TAG: &str = "callhost-ed25519";

/// File extension of trusted public key files in the trust directory.
pub const PUBLIC_KEY_EXTENSION: &str = "pub";

/// A private Ed25519 key used to sign packages.
///
/// On disk it is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), so standard
/// tools such as `openssl pkey` can inspect it.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// Generates a fresh key from the OS random number generator.
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Loads an existing PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<SigningKey, PackageError> {
        let text = fs::read_to_string(path).map_err(|e| PackageError::io("read", path, e))?;
        Self::from_pem(&text, path)
    }

    /// Loads a key file, or creates one (mode 0600, parent dirs created) if absent.
    /// Returns `(key, created)`.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), PackageError> {
        match fs::read_to_string(path) {
            Ok(text) => return Ok((Self::from_pem(&text, path)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PackageError::io("read", path, e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
        }
        let key = SigningKey::generate();
        let pem = key
            .0
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| PackageError::SigningKeyFile {
                path: path.to_owned(),
                reason: format!("cannot encode key as PKCS#8 PEM: {e}"),
            })?;
        match create_private_file(path) {
            Ok(mut file) => {
                file.write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| PackageError::io("write", path, e))?;
                Ok((key, true))
            }
            // Another process created it between our read and create: use theirs,
            // so both end up signing with the same key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((Self::load(path)?, false)),
            Err(e) => Err(PackageError::io("create", path, e)),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    fn from_pem(text: &str, path: &Path) -> Result<SigningKey, PackageError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(SigningKey)
            .map_err(|e| PackageError::SigningKeyFile {
                path: path.to_owned(),
                reason: format!("not a PKCS#8 PEM Ed25519 private key: {e}"),
            })
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message)
    }
}

impl fmt::Debug for SigningKey {
    /// Never prints the secret, only which key it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), PackageError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PackageError::io("create directory", dir, e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), PackageError> {
    fs::create_dir_all(dir).map_err(|e| PackageError::io("create directory", dir, e))
}

fn create_private_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    // create_new: never overwrite a key someone else just wrote.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// An Ed25519 public key that packages can be verified against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Builds a key from its 32 raw bytes; refuses invalid and weak (small-order) points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, PackageError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|e| {
            PackageError::InvalidPublicKey {
                reason: format!("not a valid Ed25519 point: {e}"),
            }
        })?;
        if key.is_weak() {
            return Err(PackageError::InvalidPublicKey {
                reason: "weak (small-order) Ed25519 key".to_owned(),
            });
        }
        Ok(PublicKey(key))
    }

    /// The 32 raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// First 16 hex characters of SHA-256 over the 32 raw key bytes.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }

    /// The public key file format: one line,
    /// `callhost-ed25519 <standard base64 of the 32 key bytes>\n`.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {}\n", BASE64.encode(self.0.as_bytes()))
    }

    /// Parses [`Self::to_file_text`] output. Surrounding whitespace is ignored and
    /// anything after the base64 field on the line is a free-form comment (like
    /// OpenSSH key files), so people can note whose key it is.
    pub fn from_file_text(text: &str) -> Result<PublicKey, PackageError> {
        let bad = |reason: String| PackageError::InvalidPublicKey { reason };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("file is empty".to_owned()));
        }
        if text.contains('\n') {
            return Err(bad("expected a single line".to_owned()));
        }
        let mut fields = text.split_whitespace();
        let tag = fields.next().unwrap_or_default();
        if tag != PUBLIC_KEY_TAG {
            let shown: String = tag.chars().take(40).collect();
            return Err(bad(format!(
                "expected the line to start with {PUBLIC_KEY_TAG:?}, found {shown:?}"
            )));
        }
        let encoded = fields
            .next()
            .ok_or_else(|| bad(format!("missing base64 key after {PUBLIC_KEY_TAG:?}")))?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| bad(format!("key is not valid base64: {e}")))?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("key is {} bytes, expected 32", bytes.len())))?;
        PublicKey::from_bytes(&bytes)
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        // verify_strict rejects malleable signatures and weak keys.
        self.0.verify_strict(message, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.key_id()).finish()
    }
}

/// Trusted keys: every `*.pub` file in a directory (missing dir = none trusted).
///
/// Files are read in name order; a key present in several files is returned once.
/// Any unreadable or malformed `*.pub` file is an error rather than being skipped,
/// so a typo cannot silently distrust a key.
pub fn load_trusted_keys(dir: &Path) -> Result<Vec<PublicKey>, PackageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PackageError::io("read directory", dir, e)),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PackageError::io("read directory", dir, e))?;
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|ext| ext == PUBLIC_KEY_EXTENSION)
            && path.is_file()
        {
            paths.push(path);
        }
    }
    paths.sort();
    let mut keys: Vec<PublicKey> = Vec::new();
    for path in paths {
        let text = fs::read_to_string(&path).map_err(|e| PackageError::io("read", &path, e))?;
        let key = PublicKey::from_file_text(&text).map_err(|e| PackageError::TrustedKeyFile {
            reason: match e {
                PackageError::InvalidPublicKey { reason } => reason,
                other => other.to_string(),
            },
            path,
        })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}
