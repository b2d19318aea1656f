//! Crash-safe writes: temporary file, fsync, rename, fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::EvidenceError;

/// Mode of files holding a private key.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every other file written here.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;

/// A name in the same directory as `path`, unlikely to collide, starting
/// with a dot so that it never looks like a recording's file.
fn temporary_sibling(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}.tmp-{:016x}", rand::random::<u64>()))
}

/// Creates `path` (which must not exist), writes `contents` and fsyncs it.
pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), EvidenceError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(EvidenceError::io("create", path))?;
    file.write_all(contents)
        .map_err(EvidenceError::io("write", path))?;
    file.sync_all().map_err(EvidenceError::io("fsync", path))
}

/// Replaces `path` with a file holding `contents`, so that a crash leaves
/// either the old or the new file, never a partial one.
pub(crate) fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), EvidenceError> {
    let temporary = temporary_sibling(path);
    let result = write_new_file(&temporary, contents, mode).and_then(|()| {
        fs::rename(&temporary, path).map_err(EvidenceError::io("rename a temporary file to", path))
    });
    if result.is_err() {
        // Best effort: the temporary name starts with a dot and is ignored.
        let _ = fs::remove_file(&temporary);
        return result;
    }
    sync_parent(path)
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
pub(crate) fn sync_parent(path: &Path) -> Result<(), EvidenceError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory (a no-op where directories cannot be opened).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), EvidenceError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(EvidenceError::io("fsync directory", dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Reads a whole file, refusing one larger than `limit` bytes: files here
/// may have been replaced by an attacker, and must not exhaust memory.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, EvidenceError> {
    let file = File::open(path).map_err(EvidenceError::io("open", path))?;
    let mut contents = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut contents)
        .map_err(EvidenceError::io("read", path))?;
    if contents.len() as u64 > limit {
        return Err(EvidenceError::Io {
            action: "read",
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than the {limit} bytes such a file can have"),
            ),
        });
    }
    Ok(contents)
}
