//! The `.cmod` module package format: written by `xtask`, read and verified by the host.
//!
//! A package is a zip archive holding:
//!
//! - `module.toml` — the [`Manifest`];
//! - the module library under `lib/<target-triple>/` (path given by `Manifest::library`);
//! - optional assets, any other files (e.g. `assets/prompt.wav`);
//! - `SHA256SUMS` — `sha256sum` format (`<64 hex>  <path>\n`), one line per other
//!   file, sorted by path;
//! - `SHA256SUMS.sig` — absent in unsigned packages; otherwise the base64 Ed25519
//!   signature over the exact bytes of `SHA256SUMS`, a newline, then
//!   `key: <key id>\n` (see [`PublicKey::key_id`]).
//!
//! Signing only `SHA256SUMS` keeps the signature small and lets people check an
//! extracted package with plain `sha256sum -c`.

mod checksums;
mod error;
mod keys;
mod manifest;
mod paths;
mod signature;
mod verify;
mod write;

pub use checksums::sha256_hex;
pub use error::{Damage, PackageError, ZIP_DIRECTORY};
pub use keys::{load_trusted_keys, PublicKey, SigningKey, PUBLIC_KEY_EXTENSION, PUBLIC_KEY_TAG};
pub use manifest::{Manifest, MAX_ID_LEN};
pub use paths::MAX_PATH_LEN;
pub use verify::{open_verified, VerifiedPackage, VerifyOptions, MAX_UNPACKED_SIZE};
pub use write::PackageBuilder;

/// Name of the manifest inside the zip.
pub const MANIFEST_FILE: &str = "module.toml";
/// Name of the checksum list inside the zip.
pub const CHECKSUMS_FILE: &str = "SHA256SUMS";
/// Name of the detached signature inside the zip.
pub const SIGNATURE_FILE: &str = "SHA256SUMS.sig";
/// Conventional file extension of packages.
pub const PACKAGE_EXTENSION: &str = "cmod";
