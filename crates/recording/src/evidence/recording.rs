//! A recording's hash file and signature: writing them, and checking them.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::atomic_file::{self, PUBLIC_FILE_MODE};
use super::{Certificate, EvidenceError, KeyStore};

/// Name of the check that every file matches the hash file.
pub const CHECK_CHECKSUMS: &str = "checksums";
/// Name of the check that the hash file's signature is valid.
pub const CHECK_SIGNATURE: &str = "signature";
/// Name of the check of the certificate that verified the signature.
pub const CHECK_CERTIFICATE: &str = "certificate";

/// A hash file lists a recording's few files; anything far larger is not one.
const MAX_HASH_FILE_LEN: u64 = 1024 * 1024;
const MAX_SIGNATURE_FILE_LEN: u64 = 16 * 1024;
/// Read size of [`sha256_file`]: memory stays bounded on multi-GB files.
const HASH_BUFFER_LEN: usize = 64 * 1024;

/// What [`seal_recording`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub hash_file: PathBuf,
    /// Hex SHA-256 of the hash file.
    pub hash_file_sha256: String,
    pub signature_file: PathBuf,
    /// base64 signature, as in the signature file (without the newline).
    pub signature: String,
    /// Fingerprint of the certificate that verifies the signature.
    pub certificate_fingerprint: String,
}

/// The outcome of one check of [`verify_recording`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// [`CHECK_CHECKSUMS`], [`CHECK_SIGNATURE`] or [`CHECK_CERTIFICATE`].
    pub name: String,
    pub passed: bool,
    /// What was found, for a person to read.
    pub detail: String,
}

impl Check {
    fn new(name: &str, passed: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            passed,
            detail: detail.into(),
        }
    }
}

/// `<name>_hash.txt`.
pub fn hash_file_name(name: &str) -> String {
    format!("{name}_hash.txt")
}

/// `<name>_hash.txt.SHA256withRSA.sig`.
pub fn signature_file_name(name: &str) -> String {
    format!("{}.SHA256withRSA.sig", hash_file_name(name))
}

/// Why a name may not appear in a hash file, if it may not: names are plain
/// file names in the hash file's directory, which `sha256sum -c` reads
/// without escapes (so no backslash or line break either).
fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("not a file name")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with(' ') || name.starts_with('*') {
        Some("starts with a space or '*', which shasum would misread")
    } else {
        None
    }
}

fn check_file_name(name: &str) -> Result<(), EvidenceError> {
    match file_name_problem(name) {
        Some(reason) => Err(EvidenceError::FileName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// SHA-256 of a file, read in bounded chunks.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], EvidenceError> {
    let mut file = File::open(path).map_err(EvidenceError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_LEN];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(EvidenceError::io("read", path)(error)),
        }
    }
    Ok(hasher.finalize().into())
}

/// `shasum -a 256` format (`<64 hex>  <file name>\n` per file, names
/// relative to the hash file's directory `dir`, in the given order).
pub fn hash_file_text(dir: &Path, files: &[&str]) -> Result<String, EvidenceError> {
    let mut text = String::new();
    for name in files {
        check_file_name(name)?;
        let digest = sha256_file(&dir.join(name))?;
        text.push_str(&hex::encode(digest));
        text.push_str("  ");
        text.push_str(name);
        text.push('\n');
    }
    Ok(text)
}

/// Writes `<name>_hash.txt` over `files` and
/// `<name>_hash.txt.SHA256withRSA.sig` (base64 + newline), each via
/// temporary file + fsync + rename + directory fsync.
pub fn seal_recording(
    store: &KeyStore,
    dir: &Path,
    name: &str,
    files: &[&str],
) -> Result<Sealed, EvidenceError> {
    check_file_name(name)?;
    if files.is_empty() {
        return Err(EvidenceError::NothingToSeal {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        });
    }
    let hash_file_name = hash_file_name(name);
    let signature_file_name = signature_file_name(name);
    for file in files {
        if *file == hash_file_name || *file == signature_file_name {
            return Err(EvidenceError::FileName {
                name: file.to_string(),
                reason: "is the recording's own hash or signature file",
            });
        }
    }
    let unlisted = unlisted_files(dir, name, files.iter().copied()).unwrap_or_default();
    if !unlisted.is_empty() {
        // Verification will report these; sealing what is given still beats
        // leaving the recording unsealed.
        tracing::warn!(
            dir = %dir.display(),
            recording = name,
            ?unlisted,
            "recording files not in the list to seal"
        );
    }

    let text = hash_file_text(dir, files)?;
    let signature = store.sign(text.as_bytes())?;
    let hash_file = dir.join(&hash_file_name);
    let signature_file = dir.join(&signature_file_name);
    atomic_file::write_atomically(&hash_file, text.as_bytes(), PUBLIC_FILE_MODE)?;
    atomic_file::write_atomically(
        &signature_file,
        format!("{signature}\n").as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    Ok(Sealed {
        hash_file,
        hash_file_sha256: hex::encode(Sha256::digest(text.as_bytes())),
        signature_file,
        signature,
        certificate_fingerprint: store.current().fingerprint.clone(),
    })
}

/// Files of recording `name` in `dir` (names starting with `name`) that
/// are neither in `listed` nor its hash and signature files.
fn unlisted_files<'a>(
    dir: &Path,
    name: &str,
    listed: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, io::Error> {
    let listed: BTreeSet<&str> = listed.into_iter().collect();
    let own = [hash_file_name(name), signature_file_name(name)];
    let mut unlisted = Vec::new();
    for entry in fs::read_dir(dir)? {
        let file_name = entry?.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(name)
            && !listed.contains(file_name.as_ref())
            && !own.iter().any(|own_name| *own_name == file_name)
        {
            unlisted.push(file_name.into_owned());
        }
    }
    unlisted.sort();
    Ok(unlisted)
}

/// The checks of one recording, one status each, all of them run whatever
/// fails:
/// - [`CHECK_CHECKSUMS`]: every file in the hash file is present and
///   matches, and no other file `<name>*` is in `dir`;
/// - [`CHECK_SIGNATURE`]: the signature of the hash file is valid under one
///   of `certificates` (the detail says which);
/// - [`CHECK_CERTIFICATE`]: that certificate parses, is self-signed, and
///   now lies within its validity.
pub fn verify_recording(dir: &Path, name: &str, certificates: &[Certificate]) -> Vec<Check> {
    if let Some(reason) = file_name_problem(name) {
        let detail = format!("recording name {name:?} {reason}");
        return [CHECK_CHECKSUMS, CHECK_SIGNATURE, CHECK_CERTIFICATE]
            .into_iter()
            .map(|check| Check::new(check, false, detail.clone()))
            .collect();
    }
    let hash_path = dir.join(hash_file_name(name));
    let hash_file = atomic_file::read_bounded(&hash_path, MAX_HASH_FILE_LEN);
    let checksums = match &hash_file {
        Ok(contents) => check_checksums(dir, name, contents),
        Err(error) => Check::new(CHECK_CHECKSUMS, false, error.to_string()),
    };
    let (signature, signer) = match &hash_file {
        Ok(contents) => check_signature(dir, name, contents, certificates),
        Err(_) => (
            Check::new(
                CHECK_SIGNATURE,
                false,
                format!("not checked: {} cannot be read", hash_path.display()),
            ),
            None,
        ),
    };
    vec![checksums, signature, check_certificate(signer)]
}

fn check_checksums(dir: &Path, name: &str, hash_file: &[u8]) -> Check {
    let Ok(text) = std::str::from_utf8(hash_file) else {
        return Check::new(CHECK_CHECKSUMS, false, "the hash file is not UTF-8 text");
    };
    let mut problems = Vec::new();
    let mut listed = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let Some((expected, file)) = parse_hash_line(line) else {
            problems.push(format!("line {line_number} is not \"<sha256>  <file>\""));
            continue;
        };
        if let Some(reason) = file_name_problem(file) {
            problems.push(format!("line {line_number}: file name {file:?} {reason}"));
            continue;
        }
        listed.push(file);
        match sha256_file(&dir.join(file)) {
            Ok(actual) if hex::encode(actual) == expected.to_ascii_lowercase() => {}
            Ok(_) => problems.push(format!("{file:?} does not match its SHA-256")),
            Err(EvidenceError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                problems.push(format!("{file:?} is missing"))
            }
            Err(error) => problems.push(format!("{file:?} cannot be read: {error}")),
        }
    }
    if listed.is_empty() && problems.is_empty() {
        problems.push("the hash file lists no files".to_string());
    }
    match unlisted_files(dir, name, listed.iter().copied()) {
        Ok(unlisted) => problems.extend(
            unlisted
                .into_iter()
                .map(|file| format!("{file:?} is not in the hash file")),
        ),
        Err(error) => problems.push(format!("cannot list {}: {error}", dir.display())),
    }
    if problems.is_empty() {
        Check::new(
            CHECK_CHECKSUMS,
            true,
            format!("{} files match: {}", listed.len(), listed.join(", ")),
        )
    } else {
        Check::new(CHECK_CHECKSUMS, false, problems.join("; "))
    }
}

/// `<64 hex>  <file>` (text mode) or `<64 hex> *<file>` (binary mode).
fn parse_hash_line(line: &str) -> Option<(&str, &str)> {
    let expected = line.get(..64)?;
    if !expected.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let file = line
        .get(64..)?
        .strip_prefix("  ")
        .or_else(|| line.get(64..)?.strip_prefix(" *"))?;
    Some((expected, file))
}

fn check_signature<'a>(
    dir: &Path,
    name: &str,
    hash_file: &[u8],
    certificates: &'a [Certificate],
) -> (Check, Option<&'a Certificate>) {
    let signature_path = dir.join(signature_file_name(name));
    let signature = match atomic_file::read_bounded(&signature_path, MAX_SIGNATURE_FILE_LEN) {
        Ok(contents) => contents,
        Err(error) => return (Check::new(CHECK_SIGNATURE, false, error.to_string()), None),
    };
    let Ok(signature) = std::str::from_utf8(&signature) else {
        let detail = format!("{} is not base64 text", signature_path.display());
        return (Check::new(CHECK_SIGNATURE, false, detail), None);
    };
    match certificates
        .iter()
        .find(|certificate| certificate.verify(hash_file, signature))
    {
        Some(signer) => (
            Check::new(
                CHECK_SIGNATURE,
                true,
                format!(
                    "valid under certificate {} ({})",
                    signer.fingerprint, signer.subject
                ),
            ),
            Some(signer),
        ),
        None => (
            Check::new(
                CHECK_SIGNATURE,
                false,
                format!(
                    "the hash file's signature is not valid under any of the {} certificates given",
                    certificates.len()
                ),
            ),
            None,
        ),
    }
}

fn check_certificate(signer: Option<&Certificate>) -> Check {
    let Some(signer) = signer else {
        return Check::new(
            CHECK_CERTIFICATE,
            false,
            "not checked: no certificate verifies the signature",
        );
    };
    let reparsed = match Certificate::from_pem(&signer.pem) {
        Ok(certificate) if certificate == *signer => certificate,
        Ok(_) => {
            let detail = format!(
                "certificate {} does not match its own PEM",
                signer.fingerprint
            );
            return Check::new(CHECK_CERTIFICATE, false, detail);
        }
        Err(error) => return Check::new(CHECK_CERTIFICATE, false, error.to_string()),
    };
    let mut problems = Vec::new();
    if !reparsed.is_self_signed() {
        problems.push("its self-signature is not valid");
    }
    if !reparsed.is_valid_at(SystemTime::now()) {
        problems.push("now is outside its validity");
    }
    let summary = format!(
        "certificate {} ({}), valid {} to {}",
        reparsed.fingerprint, reparsed.subject, reparsed.not_before, reparsed.not_after
    );
    if problems.is_empty() {
        Check::new(CHECK_CERTIFICATE, true, summary)
    } else {
        Check::new(
            CHECK_CERTIFICATE,
            false,
            format!("{summary}: {}", problems.join(", ")),
        )
    }
}
