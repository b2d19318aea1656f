//! `SHA256SUMS`: `sha256sum`-compatible checksum list.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::paths::validate_path;
use crate::{PackageError, CHECKSUMS_FILE, SIGNATURE_FILE};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One `<64 hex>  <path>\n` line per file, sorted by path (BTreeMap order),
/// so `sha256sum -c SHA256SUMS` works on an extracted package.
pub(crate) fn format_checksums(files: &BTreeMap<String, Vec<u8>>) -> String {
    files
        .iter()
        .map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes)))
        .collect()
}

/// Parses `SHA256SUMS` strictly: exactly the format [`format_checksums`] writes.
/// Being strict costs nothing (the file is machine-written) and leaves no room
/// for two readers to disagree about what the signature covers.
pub(crate) fn parse_checksums(bytes: &[u8]) -> Result<BTreeMap<String, String>, PackageError> {
    let bad = |line: usize, reason: String| PackageError::MalformedChecksums { line, reason };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        bad(line, "not valid UTF-8".to_owned())
    })?;
    if !text.is_empty() && !text.ends_with('\n') {
        let last = text.lines().count();
        return Err(bad(last, "missing final newline".to_owned()));
    }
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let (hash, path) = line.split_once("  ").ok_or_else(|| {
            bad(
                number,
                format!("expected \"<sha256>  <path>\", got {line:?}"),
            )
        })?;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                number,
                format!("{hash:?} is not 64 lowercase hex characters"),
            ));
        }
        validate_path(path).map_err(|reason| bad(number, format!("path {path:?}: {reason}")))?;
        if path == CHECKSUMS_FILE || path == SIGNATURE_FILE {
            return Err(bad(number, format!("{path} must not list itself")));
        }
        if let Some(prev) = previous {
            if path <= prev {
                let reason = if path == prev {
                    format!("{path} is listed twice")
                } else {
                    format!("{path} is out of order (lines must be sorted by path)")
                };
                return Err(bad(number, reason));
            }
        }
        previous = Some(path);
        sums.insert(path.to_owned(), hash.to_owned());
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse_err(text: &str) -> String {
        parse_checksums(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn round_trip() {
        let mut files = BTreeMap::new();
        files.insert("b".to_owned(), b"bee".to_vec());
        files.insert("a/x y".to_owned(), Vec::new());
        let text = format_checksums(&files);
        assert_eq!(text.lines().next().unwrap(), format!("{HASH}  a/x y"));
        let sums = parse_checksums(text.as_bytes()).unwrap();
        assert_eq!(sums["a/x y"], HASH);
        assert_eq!(sums["b"], sha256_hex(b"bee"));
        assert!(parse_checksums(b"").unwrap().is_empty());
    }

    #[test]
    fn strict_format() {
        let upper = HASH.to_uppercase();
        let cases = [
            (format!("{HASH}  a"), "line 1: missing final newline"),
            (format!("{HASH} a\n"), "line 1: expected"),
            (format!("{upper}  a\n"), "not 64 lowercase hex"),
            (
                format!("{HASH}  b\n{HASH}  a\n"),
                "line 2: a is out of order",
            ),
            (
                format!("{HASH}  a\n{HASH}  a\n"),
                "line 2: a is listed twice",
            ),
            (format!("{HASH}  ../a\n"), "path \"../a\""),
            (format!("{HASH}  SHA256SUMS.sig\n"), "must not list itself"),
        ];
        for (text, expected) in cases {
            let msg = parse_err(&text);
            assert!(msg.starts_with("SHA256SUMS line "), "{msg}");
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
    }
}
