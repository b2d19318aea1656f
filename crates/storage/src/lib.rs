//! Storage targets for finished recordings: files put at relative paths
//! below a target's root, each confirmed by reading it back and comparing
//! its SHA-256 with the local file's. Nothing here decides *when* to
//! upload or what to delete; that is the caller's (the call-recording
//! module's upload queue).
//!
//! - [`sftp`]: SSH with the server's host key pinned; written to
//!   `<name>.partial` and renamed, so a broken transfer never leaves a
//!   file under its final name.
//! - [`s3`]: one object per file, optionally under Object Lock in
//!   compliance mode until a retain-until date.
//! - [`onedrive`]: Microsoft Graph (client credentials, upload sessions for
//!   large files).
//!
//! Every error says which target and which file, and whether trying again
//! later can help ([`StorageError::is_retryable`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

pub mod onedrive;
pub mod s3;
pub mod sftp;

/// One file to put.
#[derive(Debug, Clone)]
pub struct Upload {
    pub local: PathBuf,
    /// Below the target's root, `/`-separated, no `..`.
    pub remote: String,
    /// The local file's SHA-256 (hex), the confirmation compares with it.
    pub sha256: String,
    /// Object Lock: kept unchangeable until then (S3 only; ignored
    /// elsewhere).
    pub retain_until: Option<SystemTime>,
    /// Replaces an existing file of other content (the chain's head);
    /// otherwise an existing file must already be this one.
    pub replace: bool,
}

impl Upload {
    /// `local` read and hashed now (for files whose hash nobody recorded).
    pub fn of_file(local: &Path, remote: String) -> Result<Upload, StorageError> {
        Ok(Upload {
            sha256: sha256_of_file(local)?,
            local: local.to_owned(),
            remote,
            retain_until: None,
            replace: false,
        })
    }
}

/// A target, ready to take files.
#[derive(Debug, Clone)]
pub enum Target {
    Sftp(sftp::Sftp),
    S3(s3::S3),
    OneDrive(onedrive::OneDrive),
}

impl Target {
    /// Puts every file (in order, over one connection) and confirms each.
    pub async fn store(&self, uploads: &[Upload]) -> Result<(), StorageError> {
        for upload in uploads {
            check_remote_path(&upload.remote).map_err(|why| StorageError::Refused {
                target: self.label(),
                file: upload.remote.clone(),
                detail: why,
            })?;
        }
        match self {
            Target::Sftp(target) => target.store(uploads).await,
            Target::S3(target) => target.store(uploads).await,
            Target::OneDrive(target) => target.store(uploads).await,
        }
    }

    /// Deletes files (retention); a file that is not there counts as
    /// deleted. What the target keeps anyway (S3 versions under Object
    /// Lock) is the target's to keep.
    pub async fn delete(&self, remote: &[String]) -> Result<(), StorageError> {
        for path in remote {
            check_remote_path(path).map_err(|why| StorageError::Refused {
                target: self.label(),
                file: path.clone(),
                detail: why,
            })?;
        }
        match self {
            Target::Sftp(target) => target.delete(remote).await,
            Target::S3(target) => target.delete(remote).await,
            Target::OneDrive(target) => target.delete(remote).await,
        }
    }

    /// Names the target for people and logs, without any secret; also the
    /// key a queued upload is kept under, so it must not change between
    /// versions:
    /// `sftp://user@host:port/root`, `s3://bucket/prefix`,
    /// `onedrive:drive/root`.
    pub fn label(&self) -> String {
        match self {
            Target::Sftp(target) => target.label(),
            Target::S3(target) => target.label(),
            Target::OneDrive(target) => target.label(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The target could not be reached, or the connection broke.
    #[error("{target}: cannot connect: {detail}")]
    Connect { target: String, detail: String },
    /// Reached, but it refused who we are or what we asked.
    #[error("{target}: refused {file}: {detail}")]
    Refused {
        target: String,
        file: String,
        detail: String,
    },
    /// The SSH server's key is not the pinned one.
    #[error("{target}: host key {seen} is not the pinned {pinned}; not sent")]
    HostKey {
        target: String,
        pinned: String,
        seen: String,
    },
    /// A transfer failed half-way.
    #[error("{target}: {file}: {detail}")]
    Transfer {
        target: String,
        file: String,
        detail: String,
    },
    /// Read back, the file is not what was sent.
    #[error("{target}: {file} read back with SHA-256 {found}, sent {expected}")]
    Mismatch {
        target: String,
        file: String,
        expected: String,
        found: String,
    },
    /// Already there, with other content, and not to be replaced.
    #[error("{target}: {file} exists with other content (SHA-256 {found}); left as it is")]
    Exists {
        target: String,
        file: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StorageError {
    /// False where waiting cannot help until someone changes something
    /// (a wrong host key, a file that is not ours, a bad path).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            StorageError::HostKey { .. } | StorageError::Exists { .. }
        )
    }
}

/// SHA-256 (hex) of a local file.
pub fn sha256_of_file(path: &Path) -> Result<String, StorageError> {
    let mut file = std::fs::File::open(path).map_err(|source| StorageError::Local {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| StorageError::Local {
        path: path.to_owned(),
        source,
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// Before a put, what is there already (`found`: its SHA-256): `true`
/// when it is this upload (nothing to send), an error when it is
/// something else that is not to be replaced.
pub(crate) fn already_there(
    target: &str,
    file: &str,
    upload: &Upload,
    found: Option<String>,
) -> Result<bool, StorageError> {
    match found {
        Some(found) if found == upload.sha256 => Ok(true),
        Some(found) if !upload.replace => Err(StorageError::Exists {
            target: target.to_string(),
            file: file.to_string(),
            found,
        }),
        _ => Ok(false),
    }
}

/// After a put, what was read back (`found`) must be what was sent.
pub(crate) fn confirm(
    target: &str,
    file: &str,
    upload: &Upload,
    found: Option<String>,
) -> Result<(), StorageError> {
    match found {
        Some(found) if found == upload.sha256 => Ok(()),
        found => Err(StorageError::Mismatch {
            target: target.to_string(),
            file: file.to_string(),
            expected: upload.sha256.clone(),
            found: found.unwrap_or_else(|| "(missing)".into()),
        }),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) async fn read_local(path: &Path) -> Result<Vec<u8>, StorageError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| StorageError::Local {
            path: path.to_owned(),
            source,
        })
}

/// A remote path of plain names: nothing that climbs out of the root or
/// means something to a shell or a URL.
fn check_remote_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') {
        return Err("a remote path is relative to the target's root".into());
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{part:?} is not allowed in a remote path"));
        }
        if let Some(bad) = part
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | '?' | '#' | '%' | ':' | '"' | '*'))
        {
            return Err(format!("{bad:?} is not allowed in a remote path"));
        }
    }
    Ok(())
}

/// `root` and `relative` joined with one `/`.
pub(crate) fn join(root: &str, relative: &str) -> String {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        relative.to_string()
    } else {
        format!("{root}/{relative}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_stay_below_the_root() {
        assert!(check_remote_path("2026/12/03/a_info.txt").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "a/./b",
            "a?b",
            "a%2e",
            "a\\b",
        ] {
            assert!(check_remote_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_with_one_slash() {
        assert_eq!(join("/srv/rec/", "a/b"), "/srv/rec/a/b");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("prefix", "a"), "prefix/a");
    }

    #[test]
    fn only_waiting_helps_is_retryable() {
        let connect = StorageError::Connect {
            target: "t".into(),
            detail: "refused".into(),
        };
        assert!(connect.is_retryable());
        let key = StorageError::HostKey {
            target: "t".into(),
            pinned: "a".into(),
            seen: "b".into(),
        };
        assert!(!key.is_retryable());
    }
}
