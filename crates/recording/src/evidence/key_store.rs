//! The installation's signing keys: generations of (encrypted key,
//! certificate) under `keys/`, and the `current` marker. Layout in the
//! module documentation.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use pkcs8::der::zeroize::Zeroizing;

use super::atomic_file::{self, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use super::certificate::{self, Certificate};
use super::key_file;
use super::EvidenceError;

const KEYS_DIR: &str = "keys";
const CURRENT_FILE: &str = "current";
const KEY_FILE: &str = "key.pem";
const CERTIFICATE_FILE: &str = "cert.pem";
/// Prefix of a generation directory being written.
const NEW_GENERATION_PREFIX: &str = ".new-";
/// Tries at a free generation number when other instances take them first.
const PUBLISH_ATTEMPTS: u32 = 8;

/// One installation's signing keys, in a directory shared by all instances
/// of the module, private keys encrypted at rest with a passphrase the host
/// provides (kept in memory only, to encrypt keys made by [`rotate`]).
///
/// [`rotate`]: KeyStore::rotate
pub struct KeyStore {
    dir: PathBuf,
    passphrase: Zeroizing<Vec<u8>>,
    installation_id: String,
    /// Oldest first; `current_index` points at the signing one.
    certificates: Vec<Certificate>,
    current_index: usize,
    signing_key: KeyPair,
    /// The generation `current` named when the key was loaded.
    generation: u32,
}

impl fmt::Debug for KeyStore {
    // The passphrase and key stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("installation_id", &self.installation_id)
            .field("current", &self.current().fingerprint)
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the store, creating the first key pair and certificate when the
    /// directory has none. `installation_id` goes into the certificate
    /// subject CN `call-recording <installation id>`.
    pub fn open(
        dir: &Path,
        passphrase: &[u8],
        installation_id: &str,
    ) -> Result<KeyStore, EvidenceError> {
        if passphrase.is_empty() {
            return Err(EvidenceError::EmptyPassphrase {
                dir: dir.to_path_buf(),
            });
        }
        check_installation_id(installation_id)?;
        let keys_dir = dir.join(KEYS_DIR);
        fs::create_dir_all(&keys_dir).map_err(EvidenceError::io("create directory", &keys_dir))?;

        let current_generation = match read_current(dir)? {
            Some(generation) => generation,
            None => first_generation(dir, passphrase, installation_id)?,
        };
        let loaded = load(dir, passphrase, current_generation)?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            passphrase: Zeroizing::new(passphrase.to_vec()),
            installation_id: installation_id.to_string(),
            certificates: loaded.certificates,
            current_index: loaded.current_index,
            signing_key: loaded.signing_key,
            generation: current_generation,
        })
    }

    /// Whether the key loaded is still the one `current` names (another
    /// process may have rotated it); a cached store reopens when not.
    pub fn is_current(&self) -> Result<bool, EvidenceError> {
        Ok(read_current(&self.dir)? == Some(self.generation))
    }

    /// The certificate of the key that signs.
    pub fn current(&self) -> &Certificate {
        // `load` guarantees the index is in range.
        &self.certificates[self.current_index]
    }

    /// Every certificate ever made here, oldest first (old ones stay for old
    /// recordings).
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    /// The key store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// base64 of the RSA PKCS#1 v1.5 SHA-256 signature of `data` with the
    /// current key.
    pub fn sign(&self, data: &[u8]) -> Result<String, EvidenceError> {
        let mut signature = vec![0u8; self.signing_key.public_modulus_len()];
        self.signing_key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                data,
                &mut signature,
            )
            .map_err(|_| EvidenceError::Crypto {
                operation: "sign with the current key",
            })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }

    /// Makes a new key pair and certificate and makes it current; returns
    /// (old, new) fingerprints. Old generations are kept.
    pub fn rotate(&mut self) -> Result<(String, String), EvidenceError> {
        let dir = self.dir.clone();
        let dir = dir.as_path();
        let old_fingerprint = self.current().fingerprint.clone();
        let newest = list_generations(dir)?.last().copied().unwrap_or(0);
        let generation =
            publish_new_generation(dir, newest, &self.passphrase, &self.installation_id)?;
        write_current(dir, generation)?;
        let loaded = load(dir, &self.passphrase, generation)?;
        self.certificates = loaded.certificates;
        self.current_index = loaded.current_index;
        self.signing_key = loaded.signing_key;
        self.generation = generation;
        let new_fingerprint = self.current().fingerprint.clone();
        tracing::info!(
            dir = %dir.display(),
            old = %old_fingerprint,
            new = %new_fingerprint,
            "call recording signing key rotated"
        );
        Ok((old_fingerprint, new_fingerprint))
    }
}

/// What [`load`] reads.
struct Loaded {
    certificates: Vec<Certificate>,
    current_index: usize,
    signing_key: KeyPair,
}

/// Reads all certificates and decrypts the key of `current_generation`.
fn load(dir: &Path, passphrase: &[u8], current_generation: u32) -> Result<Loaded, EvidenceError> {
    let mut certificates = Vec::new();
    let mut current_index = None;
    for generation in list_generations(dir)? {
        let certificate_path = generation_dir(dir, generation).join(CERTIFICATE_FILE);
        match Certificate::from_pem_file(&certificate_path) {
            Ok(certificate) => {
                if generation == current_generation {
                    current_index = Some(certificates.len());
                }
                certificates.push(certificate);
            }
            Err(error) if generation == current_generation => return Err(error),
            // An old certificate only matters to old recordings; it must
            // not stop new ones from being signed.
            Err(error) => tracing::warn!(%error, "skipping unreadable old certificate"),
        }
    }
    let current_index = current_index.ok_or_else(|| EvidenceError::KeyStore {
        path: dir.join(CURRENT_FILE),
        reason: format!(
            "names generation {} but {} does not exist",
            generation_name(current_generation),
            generation_dir(dir, current_generation).display()
        ),
    })?;

    let key_path = generation_dir(dir, current_generation).join(KEY_FILE);
    let key_pem = Zeroizing::new(atomic_file::read_bounded(&key_path, 64 * 1024)?);
    let private_key_pkcs8 = key_file::decrypt_private_key(&key_pem, passphrase, &key_path)?;
    let signing_key =
        KeyPair::from_pkcs8(&private_key_pkcs8).map_err(|error| EvidenceError::PrivateKey {
            path: key_path.clone(),
            reason: format!("not a usable RSA key: {error}"),
        })?;
    // A swapped key or certificate file would make signatures that the
    // listed certificate does not verify.
    if signing_key.public_key().as_ref() != certificates[current_index].rsa_public_key() {
        return Err(EvidenceError::KeyStore {
            path: key_path,
            reason: format!(
                "the private key does not belong to certificate {}",
                certificates[current_index].fingerprint
            ),
        });
    }
    Ok(Loaded {
        certificates,
        current_index,
        signing_key,
    })
}

fn check_installation_id(installation_id: &str) -> Result<(), EvidenceError> {
    let invalid = |reason| EvidenceError::InstallationId {
        id: installation_id.to_string(),
        reason,
    };
    if installation_id.trim().is_empty() {
        return Err(invalid("empty"));
    }
    if installation_id.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    Ok(())
}

fn generation_name(generation: u32) -> String {
    format!("{generation:04}")
}

fn generation_dir(dir: &Path, generation: u32) -> PathBuf {
    dir.join(KEYS_DIR).join(generation_name(generation))
}

/// Generation numbers present under `keys/`, ascending. Other names
/// (unfinished `.new-…` directories, stray files) are ignored.
fn list_generations(dir: &Path) -> Result<Vec<u32>, EvidenceError> {
    let keys_dir = dir.join(KEYS_DIR);
    let entries = fs::read_dir(&keys_dir).map_err(EvidenceError::io("list", &keys_dir))?;
    let mut generations = Vec::new();
    for entry in entries {
        let entry = entry.map_err(EvidenceError::io("list", &keys_dir))?;
        let Some(generation) = entry.file_name().to_str().and_then(parse_generation) else {
            continue;
        };
        if entry.path().is_dir() {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

fn parse_generation(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&generation| generation > 0)
}

fn read_current(dir: &Path) -> Result<Option<u32>, EvidenceError> {
    let path = dir.join(CURRENT_FILE);
    let contents = match atomic_file::read_bounded(&path, 64) {
        Ok(contents) => contents,
        Err(EvidenceError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let text = String::from_utf8_lossy(&contents);
    parse_generation(text.trim())
        .map(Some)
        .ok_or_else(|| EvidenceError::KeyStore {
            path,
            reason: format!("expected a generation number, found {:?}", text.trim()),
        })
}

fn write_current(dir: &Path, generation: u32) -> Result<(), EvidenceError> {
    let contents = format!("{}\n", generation_name(generation));
    atomic_file::write_atomically(
        &dir.join(CURRENT_FILE),
        contents.as_bytes(),
        PUBLIC_FILE_MODE,
    )
}

/// With no `current`: adopts the newest generation a crash (or another
/// instance) left behind, or makes generation 1.
fn first_generation(
    dir: &Path,
    passphrase: &[u8],
    installation_id: &str,
) -> Result<u32, EvidenceError> {
    let generation = match list_generations(dir)?.last() {
        Some(&newest) => newest,
        None => {
            let generation = publish_new_generation(dir, 0, passphrase, installation_id)?;
            tracing::info!(
                dir = %dir.display(),
                "created the call recording signing key"
            );
            generation
        }
    };
    // Another instance may have written `current` meanwhile; theirs wins.
    if let Some(theirs) = read_current(dir)? {
        return Ok(theirs);
    }
    write_current(dir, generation)?;
    Ok(generation)
}

/// Makes a key pair and certificate and publishes them as the first free
/// generation after `newest`; returns its number.
fn publish_new_generation(
    dir: &Path,
    newest: u32,
    passphrase: &[u8],
    installation_id: &str,
) -> Result<u32, EvidenceError> {
    let key_pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| EvidenceError::Crypto {
        operation: "generate an RSA-2048 key pair",
    })?;
    let private_key_pkcs8 = key_pair.as_der().map_err(|_| EvidenceError::Crypto {
        operation: "encode the private key as PKCS#8",
    })?;
    let certificate = certificate::self_signed(private_key_pkcs8.as_ref(), installation_id)?;
    let key_pem = Zeroizing::new(key_file::encrypt_private_key(
        private_key_pkcs8.as_ref(),
        passphrase,
    )?);

    let keys_dir = dir.join(KEYS_DIR);
    let staging = keys_dir.join(format!(
        "{NEW_GENERATION_PREFIX}{:016x}",
        rand::random::<u64>()
    ));
    let staged = stage_generation(&staging, key_pem.as_bytes(), certificate.pem.as_bytes());
    if let Err(error) = staged {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }

    let mut generation = newest;
    for _ in 0..PUBLISH_ATTEMPTS {
        generation = generation
            .checked_add(1)
            .ok_or_else(|| EvidenceError::KeyStore {
                path: keys_dir.clone(),
                reason: "no generation numbers left".to_string(),
            })?;
        let target = generation_dir(dir, generation);
        // Renaming a directory onto an existing non-empty one fails, so a
        // generation another instance published is never replaced.
        match fs::rename(&staging, &target) {
            Ok(()) => {
                atomic_file::sync_dir(&keys_dir)?;
                return Ok(generation);
            }
            Err(error) if is_taken(&error) || target.exists() => continue,
            Err(error) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(EvidenceError::io("publish key generation", &target)(error));
            }
        }
    }
    let _ = fs::remove_dir_all(&staging);
    Err(EvidenceError::KeyStore {
        path: keys_dir,
        reason: format!(
            "generation numbers {}..={} were all taken while publishing",
            newest.saturating_add(1),
            generation
        ),
    })
}

fn is_taken(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
    )
}

fn stage_generation(
    staging: &Path,
    key_pem: &[u8],
    certificate_pem: &[u8],
) -> Result<(), EvidenceError> {
    fs::create_dir(staging).map_err(EvidenceError::io("create directory", staging))?;
    atomic_file::write_new_file(&staging.join(KEY_FILE), key_pem, PRIVATE_FILE_MODE)?;
    atomic_file::write_new_file(
        &staging.join(CERTIFICATE_FILE),
        certificate_pem,
        PUBLIC_FILE_MODE,
    )?;
    atomic_file::sync_dir(staging)
}

#[cfg(test)]
pub(crate) mod layout {
    //! File names, for tests that tamper with the store.
    use std::path::{Path, PathBuf};

    pub(crate) fn key_file(dir: &Path, generation: u32) -> PathBuf {
        super::generation_dir(dir, generation).join(super::KEY_FILE)
    }

    pub(crate) fn certificate_file(dir: &Path, generation: u32) -> PathBuf {
        super::generation_dir(dir, generation).join(super::CERTIFICATE_FILE)
    }

    pub(crate) fn current_file(dir: &Path) -> PathBuf {
        dir.join(super::CURRENT_FILE)
    }
}
