//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong writing, reading or verifying a `.cmod` package,
/// or handling keys. Every message names the file, field or value involved, because
/// these errors end up verbatim in front of an administrator installing a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted, e.g. "read" or "create directory".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The package file is not a readable zip archive.
    #[error("{}: not a valid .cmod (zip) archive: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },

    /// One entry of the zip could not be read (corrupt, encrypted, unsupported compression).
    #[error("{}: cannot read entry {entry}: {source}", path.display())]
    ZipEntry {
        path: PathBuf,
        entry: String,
        #[source]
        source: zip::result::ZipError,
    },

    /// Assembling the zip archive (in memory) failed.
    #[error("cannot assemble the zip archive: {source}")]
    ZipWrite {
        #[source]
        source: zip::result::ZipError,
    },

    /// The entries decompress to more than the size limit (zip bomb protection).
    #[error(
        "{}: entry {entry} exceeds the {limit}-byte limit on unpacked package size",
        path.display()
    )]
    EntryTooLarge {
        path: PathBuf,
        entry: String,
        limit: u64,
    },

    /// A path inside the package is unsafe or malformed.
    #[error("invalid path {path:?} in package: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    /// Two package paths collide (same name twice, reserved name, or a file used as a directory).
    #[error("package path {path:?} conflicts with {other:?}: {reason}")]
    PathConflict {
        path: String,
        other: String,
        reason: &'static str,
    },

    /// A mandatory file is absent from the package.
    #[error("package has no {name}")]
    MissingEntry { name: &'static str },

    /// `SHA256SUMS` is not in the expected `sha256sum` format.
    #[error("SHA256SUMS line {line}: {reason}")]
    MalformedChecksums { line: usize, reason: String },

    /// A file's content does not match its `SHA256SUMS` entry.
    #[error("checksum mismatch for {path}: SHA256SUMS says {expected}, file has {actual}")]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    /// A file in the zip is not covered by `SHA256SUMS` (so not by the signature either).
    #[error("file {path} is not listed in SHA256SUMS")]
    UnlistedFile { path: String },

    /// `SHA256SUMS` lists a file the zip does not contain.
    #[error("file {path} is listed in SHA256SUMS but missing from the package")]
    MissingFile { path: String },

    /// No `SHA256SUMS.sig` and unsigned packages were not allowed.
    #[error("package is unsigned; use --allow-unsigned to install it anyway")]
    Unsigned,

    /// `SHA256SUMS.sig` is not in the expected format.
    #[error("SHA256SUMS.sig: {reason}")]
    MalformedSignature { reason: String },

    /// The signature names a trusted key but does not verify: the package was altered.
    #[error(
        "signature by trusted key {key_id} does not verify: SHA256SUMS was altered after signing, or the signature is corrupt"
    )]
    SignatureInvalid { key_id: String },

    /// The signature was made by a key that is not trusted.
    #[error(
        "signature does not verify against any trusted key (signed with key {key_id}; trusted: {trusted})"
    )]
    UntrustedSignature {
        /// The key id the signature file claims (unverified).
        key_id: String,
        /// Comma-separated trusted key ids, or "none".
        trusted: String,
    },

    /// `module.toml` is not valid UTF-8 / TOML or lacks fields; holds toml's message.
    #[error("module.toml: {message}")]
    ManifestParse { message: String },

    /// A `module.toml` field has an invalid value.
    #[error("module.toml: field `{field}`: {reason}")]
    ManifestField { field: &'static str, reason: String },

    /// The module targets a different plugin ABI.
    #[error("module built for ABI version {module}, this host speaks ABI version {host}")]
    AbiMismatch { module: u32, host: u32 },

    /// The module's `host_version` requirement excludes this host.
    #[error("module requires host version {required}, this host is {host}")]
    HostVersionMismatch {
        required: semver::VersionReq,
        host: semver::Version,
    },

    /// `module.toml` names a library the package does not contain.
    #[error("library {path} named in module.toml is not in the package")]
    MissingLibrary { path: String },

    /// [`crate::PackageBuilder::write`] was called without [`crate::PackageBuilder::library`].
    #[error("no library bytes given for {path}; call PackageBuilder::library before write")]
    NoLibrary { path: String },

    /// Public key text is malformed.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey { reason: String },

    /// A trusted key file could not be parsed.
    #[error("trusted key file {}: {reason}", path.display())]
    TrustedKeyFile { path: PathBuf, reason: String },

    /// The signing key file could not be parsed.
    #[error("signing key file {}: {reason}", path.display())]
    SigningKeyFile { path: PathBuf, reason: String },
}

impl PackageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PackageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        PackageError::ManifestField {
            field,
            reason: reason.into(),
        }
    }
}
