//! Evidence that a recording is what was recorded: the installation's key
//! pair and certificate, `shasum`-style hash files, RSA signatures over them,
//! and the checks a verifier runs years later.
//!
//! # Key store layout
//!
//! All instances of the module share one directory:
//!
//! ```text
//! <dir>/
//!   current              "0002\n": the generation that signs new recordings
//!   keys/
//!     0001/              one generation, published complete by renaming a
//!       key.pem          temporary directory (never replaced, never deleted)
//!       cert.pem
//!     0002/
//!       key.pem          encrypted PKCS#8 PEM ("ENCRYPTED PRIVATE KEY"):
//!       cert.pem         PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC; mode 0600
//!     .new-<random>/     a generation being written (left by a crash: ignored)
//! ```
//!
//! - `cert.pem` is a self-signed X.509 certificate, subject
//!   `CN=call-recording <installation id>`, valid for 100 years from its
//!   creation; `key.pem` is its RSA-2048 private key, readable with
//!   `openssl pkey -in key.pem`.
//! - Every write is a temporary file or directory, fsynced, renamed into place,
//!   and the parent directory fsynced, so a crash leaves either the old or the
//!   new state. A generation directory is renamed into place only if its name
//!   is free, so two instances creating or rotating at once cannot overwrite
//!   each other's keys; the loser uses the next number (or, on first creation,
//!   the winner's generation).
//! - `current` is written after its generation is complete. A generation that
//!   a crash left without `current` pointing at it is still listed in
//!   [`KeyStore::certificates`] (it may have signed nothing, which is harmless).
//! - An open [`KeyStore`] keeps signing with the key it loaded; after another
//!   instance rotates, its signatures still verify (old certificates stay),
//!   and it signs with the new key once reopened.
//!
//! # Recording files
//!
//! A recording `<name>` in a directory gets `<name>_hash.txt` (the output of
//! `shasum -a 256` over its files, names relative to that directory) and
//! `<name>_hash.txt.SHA256withRSA.sig` (base64 of the RSA PKCS#1 v1.5 SHA-256
//! signature of the hash file, and a newline). Together with the certificate
//! they can be checked without this code by `plugins/call-recording/verify.sh`.
//!
//! Every file in the directory whose name starts with `<name>` belongs to the
//! recording and must be listed, so no recording's name may be a prefix of
//! another's in the same directory.

mod atomic_file;
mod certificate;
mod key_file;
mod key_store;
mod recording;
pub mod timestamp;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

pub use certificate::Certificate;
pub use key_file::PBKDF2_ITERATIONS;
pub use key_store::KeyStore;
pub use recording::{
    hash_file_name, hash_file_text, seal_recording, sha256_file, signature_file_name,
    verify_recording, Check, Sealed, CHECK_CERTIFICATE, CHECK_CHECKSUMS, CHECK_SIGNATURE,
};

/// What can go wrong with keys, certificates, hash files and signatures.
///
/// Messages name the file or value concerned, never a passphrase or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "cannot open the key store: the private key {} does not decrypt with the passphrase given (wrong passphrase, or the file is damaged)",
        path.display()
    )]
    Passphrase { path: PathBuf },

    #[error("cannot open the key store in {}: the passphrase is empty", dir.display())]
    EmptyPassphrase { dir: PathBuf },

    #[error("key store {}: {reason}", path.display())]
    KeyStore { path: PathBuf, reason: String },

    #[error("private key {}: {reason}", path.display())]
    PrivateKey { path: PathBuf, reason: String },

    #[error("certificate {origin}: {reason}")]
    Certificate { origin: String, reason: String },

    #[error("invalid installation id {id:?}: {reason}")]
    InstallationId { id: String, reason: &'static str },

    #[error("invalid recording file name {name:?}: {reason}")]
    FileName { name: String, reason: &'static str },

    #[error("cannot seal recording {name:?} in {}: no files given", dir.display())]
    NothingToSeal { dir: PathBuf, name: String },

    #[error("cannot {operation}: the crypto library reported an error")]
    Crypto { operation: &'static str },
}

impl EvidenceError {
    /// For `map_err`: an I/O error while doing `action` on `path`.
    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| EvidenceError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
