//! Reading and verifying `.cmod` packages.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::ZipArchive;

use crate::checksums::{parse_checksums, sha256_hex};
use crate::error::{Damage, ZIP_DIRECTORY};
use crate::paths::{check_no_file_dir_conflict, check_path, validate_path};
use crate::signature::parse_signature;
use crate::{Manifest, PackageError, PublicKey, CHECKSUMS_FILE, MANIFEST_FILE, SIGNATURE_FILE};

/// Upper bound on the total unpacked size of a package, so a zip bomb cannot
/// exhaust the host's memory before verification even starts.
pub const MAX_UNPACKED_SIZE: u64 = 1 << 30;

/// A package read from disk and fully verified.
#[derive(Clone)]
pub struct VerifiedPackage {
    /// The validated `module.toml`.
    pub manifest: Manifest,
    /// Key id of the trusted key whose signature verified; `None` if the package
    /// was unsigned and that was allowed.
    pub signed_by: Option<String>,
    /// Every checksummed file by path: `module.toml`, the library and all assets
    /// (not `SHA256SUMS` / `SHA256SUMS.sig`).
    pub files: BTreeMap<String, Vec<u8>>,
    /// `SHA256SUMS` as verified: lowercase hex SHA-256 by path, the same
    /// paths as `files`.
    pub checksums: BTreeMap<String, String>,
}

impl VerifiedPackage {
    /// The library's bytes (the file at `manifest.library`). Verification
    /// guarantees it exists; empty only if the caller removed it from `files`.
    pub fn library_bytes(&self) -> &[u8] {
        self.files
            .get(&self.manifest.library)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The library's SHA-256 as `SHA256SUMS` lists it (lowercase hex).
    pub fn library_sha256(&self) -> &str {
        self.checksums
            .get(&self.manifest.library)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Files other than `module.toml` and the library, in path order.
    pub fn assets(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files
            .iter()
            .filter(|(path, _)| *path != MANIFEST_FILE && **path != self.manifest.library)
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
    }
}

impl fmt::Debug for VerifiedPackage {
    /// Lists file sizes instead of dumping megabytes of bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: BTreeMap<&str, usize> = self
            .files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.len()))
            .collect();
        f.debug_struct("VerifiedPackage")
            .field("manifest", &self.manifest)
            .field("signed_by", &self.signed_by)
            .field("files", &sizes)
            .finish()
    }
}

/// What [`open_verified`] checks a package against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Keys whose signatures are accepted.
    pub trusted: &'a [PublicKey],
    /// Accept packages without `SHA256SUMS.sig`. A package that *is* signed must
    /// still verify against a trusted key: a bad signature means tampering, not
    /// the absence of a signature.
    pub allow_unsigned: bool,
    /// The plugin ABI version this host implements; must equal `abi_version`.
    pub host_abi: u32,
    /// This host's version, matched against the module's `host_version`.
    pub host_version: &'a semver::Version,
}

/// Opens and verifies: zip readable; SHA256SUMS present and every listed file's hash matches and every file in the zip (except SHA256SUMS/.sig, directories) is listed; signature present (unless allow_unsigned) and valid for one trusted key; module.toml parses and validates; abi_version == host_abi; host_version requirement matches host_version; library file present.
///
/// Checks run in this order — signature over `SHA256SUMS`, checksums, manifest,
/// ABI/host version — so nothing from `module.toml` is believed before the
/// bytes are known to be the signed ones.
pub fn open_verified(path: &Path, opts: &VerifyOptions) -> Result<VerifiedPackage, PackageError> {
    let mut files = read_entries(path)?;

    let sums_bytes = files
        .remove(CHECKSUMS_FILE)
        .ok_or_else(|| PackageError::damaged(path, CHECKSUMS_FILE, Damage::Missing))?;
    let signed_by = check_signature(&sums_bytes, files.remove(SIGNATURE_FILE), opts)?;

    let sums = parse_checksums(&sums_bytes)?;
    check_checksums(path, &files, &sums)?;

    let manifest_bytes = files
        .get(MANIFEST_FILE)
        .ok_or_else(|| PackageError::damaged(path, MANIFEST_FILE, Damage::Missing))?;
    let manifest_text =
        std::str::from_utf8(manifest_bytes).map_err(|e| PackageError::ManifestParse {
            message: format!("not valid UTF-8: {e}"),
        })?;
    let manifest = Manifest::from_toml(manifest_text)?;

    if manifest.abi_version != opts.host_abi {
        return Err(PackageError::AbiMismatch {
            module: manifest.abi_version,
            host: opts.host_abi,
        });
    }
    if !manifest.host_version.matches(opts.host_version) {
        return Err(PackageError::HostVersionMismatch {
            required: manifest.host_version.clone(),
            host: opts.host_version.clone(),
        });
    }
    if !files.contains_key(&manifest.library) {
        return Err(PackageError::MissingLibrary {
            path: manifest.library.clone(),
        });
    }

    Ok(VerifiedPackage {
        manifest,
        signed_by,
        files,
        checksums: sums,
    })
}

/// Reads every file entry into memory, refusing unsafe names and oversized content.
fn read_entries(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, PackageError> {
    let file = File::open(path).map_err(|e| PackageError::io("open", path, e))?;
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|e| PackageError::damaged(path, ZIP_DIRECTORY, e.into()))?;
    let mut files = BTreeMap::new();
    let mut budget = MAX_UNPACKED_SIZE;
    for index in 0..archive.len() {
        // The central directory names the entry even when its header is
        // bad; a name that is refused anyway is not printed.
        let listed = archive
            .name_for_index(index)
            .filter(|name| validate_path(name).is_ok())
            .map_or_else(|| format!("entry #{index}"), str::to_owned);
        let mut entry = archive
            .by_index(index)
            .map_err(|e| PackageError::damaged(path, listed, e.into()))?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        check_path(&name)?;
        // The declared size is only a hint from the archive; cap the
        // preallocation and enforce the budget on what actually decompresses.
        let hint = entry.size().min(budget).min(64 << 20);
        let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        // Reading to the end also makes zip check the entry's CRC-32.
        (&mut entry)
            .take(budget + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| PackageError::damaged(path, &name, Damage::Data(e)))?;
        let len = bytes.len() as u64;
        if len > budget {
            return Err(PackageError::EntryTooLarge {
                path: path.to_owned(),
                entry: name,
                limit: MAX_UNPACKED_SIZE,
            });
        }
        budget -= len;
        if files.contains_key(&name) {
            return Err(PackageError::PathConflict {
                other: name.clone(),
                path: name,
                reason: "the zip contains this name twice",
            });
        }
        files.insert(name, bytes);
    }
    check_no_file_dir_conflict(files.keys().map(String::as_str))?;
    Ok(files)
}

/// Returns the id of the trusted key that signed `sums`, `None` for an allowed
/// unsigned package.
fn check_signature(
    sums: &[u8],
    signature_file: Option<Vec<u8>>,
    opts: &VerifyOptions,
) -> Result<Option<String>, PackageError> {
    let Some(signature_file) = signature_file else {
        return if opts.allow_unsigned {
            Ok(None)
        } else {
            Err(PackageError::Unsigned)
        };
    };
    let parsed = parse_signature(&signature_file)?;
    // Try every trusted key rather than only the claimed id: the claim is
    // unauthenticated and only used to explain failures.
    if let Some(key) = opts
        .trusted
        .iter()
        .find(|key| key.verify(sums, &parsed.signature))
    {
        return Ok(Some(key.key_id()));
    }
    if opts.trusted.iter().any(|key| key.key_id() == parsed.key_id) {
        return Err(PackageError::SignatureInvalid {
            key_id: parsed.key_id,
        });
    }
    let trusted = if opts.trusted.is_empty() {
        "none".to_owned()
    } else {
        opts.trusted
            .iter()
            .map(PublicKey::key_id)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(PackageError::UntrustedSignature {
        key_id: parsed.key_id,
        trusted,
    })
}

fn check_checksums(
    package: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    sums: &BTreeMap<String, String>,
) -> Result<(), PackageError> {
    for (path, bytes) in files {
        let expected = sums
            .get(path)
            .ok_or_else(|| PackageError::UnlistedFile { path: path.clone() })?;
        let actual = sha256_hex(bytes);
        if *expected != actual {
            return Err(PackageError::ChecksumMismatch {
                path: path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    if let Some(path) = sums.keys().find(|path| !files.contains_key(*path)) {
        return Err(PackageError::damaged(
            package,
            path,
            Damage::ListedButMissing,
        ));
    }
    Ok(())
}
