//! Rules for paths inside a package.
//!
//! The host may extract package files to disk, so every path must stay inside
//! the extraction directory on any platform and be unambiguous as a zip name.

use std::collections::BTreeSet;

use crate::PackageError;

/// Longest accepted path inside a package, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Checks one relative, `/`-separated path; returns why it is refused.
pub(crate) fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("path is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path is longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if path.contains('\\') {
        return Err("backslashes are not allowed; use '/'");
    }
    if path.chars().any(char::is_control) {
        // Also keeps SHA256SUMS line-oriented: no newline can sneak into a name.
        return Err("control characters are not allowed");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component (trailing or doubled '/')"),
            "." | ".." => return Err("'.' and '..' components are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// Like [`validate_path`], as a [`PackageError`].
pub(crate) fn check_path(path: &str) -> Result<(), PackageError> {
    validate_path(path).map_err(|reason| PackageError::InvalidPath {
        path: path.to_owned(),
        reason,
    })
}

/// Refuses layouts that cannot be extracted: a file that is also used as a
/// directory of another file (`a` and `a/b`).
pub(crate) fn check_no_file_dir_conflict<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<(), PackageError> {
    let set: BTreeSet<&str> = paths.into_iter().collect();
    for path in &set {
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            if set.contains(parent) {
                return Err(PackageError::PathConflict {
                    path: (*path).to_owned(),
                    other: parent.to_owned(),
                    reason: "a file cannot also be a directory",
                });
            }
        }
    }
    Ok(())
}
