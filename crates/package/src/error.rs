//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong writing, reading or verifying a `.cmod` package,
/// or handling keys. Every message names the file, field or value involved, because
/// these errors end up verbatim in front of an administrator installing a module.
/// A cause from elsewhere (the system's or zip's words) is the `source` and
/// not repeated in the message: whoever prints the chain says it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// A filesystem operation failed. The message names the path; the
    /// operating system's words are the source (printed once, by the chain).
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being attempted, e.g. "read" or "create directory".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The package file's bytes are not what was written: a truncated or
    /// corrupt zip, an entry that fails its CRC-32 or does not inflate, a
    /// mandatory entry missing. `part` is the entry's name, or
    /// [`ZIP_DIRECTORY`] when the archive as a whole is unreadable.
    #[error("damaged package {}: {part}", path.display())]
    Damaged {
        path: PathBuf,
        part: String,
        #[source]
        damage: Damage,
    },

    /// Assembling the zip archive (in memory) failed.
    #[error("cannot assemble the zip archive")]
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

/// [`PackageError::Damaged`]'s `part` when the zip's central directory (the
/// archive as a whole) cannot be read.
pub const ZIP_DIRECTORY: &str = "zip directory";

/// What is wrong with a damaged part of a package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    /// The zip structure is unreadable (zip's own words).
    #[error(transparent)]
    Zip(zip::result::ZipError),
    /// The data cannot be read: it does not inflate, fails its CRC-32 or
    /// ends early.
    #[error(transparent)]
    Data(io::Error),
    /// A mandatory entry is absent.
    #[error("missing")]
    Missing,
    /// `SHA256SUMS` lists the entry, the zip does not contain it.
    #[error("listed in SHA256SUMS but missing from the package")]
    ListedButMissing,
}

impl From<zip::result::ZipError> for Damage {
    /// zip's I/O errors say only "i/o error" themselves: the cause is the
    /// I/O error.
    fn from(error: zip::result::ZipError) -> Damage {
        match error {
            zip::result::ZipError::Io(error) => Damage::Data(error),
            other => Damage::Zip(other),
        }
    }
}

impl PackageError {
    /// Whether the message names the package file already (the host adds
    /// the path to the others).
    pub fn names_package(&self) -> bool {
        matches!(
            self,
            PackageError::Io { .. }
                | PackageError::Damaged { .. }
                | PackageError::EntryTooLarge { .. }
        )
    }

    pub(crate) fn damaged(path: &std::path::Path, part: impl Into<String>, damage: Damage) -> Self {
        PackageError::Damaged {
            path: path.to_owned(),
            part: part.into(),
            damage,
        }
    }

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
