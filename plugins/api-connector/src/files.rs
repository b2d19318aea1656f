//! The instance's small files: written atomically, and the listener lock
//! that tells which process serves the instance.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The lock the serving process holds while it listens (also in the
/// process's own later instances: a new library version waits for it).
pub const LOCK_FILE: &str = "listener.lock";

/// Writes `contents` to `path` so that a reader sees the old file or the
/// new one, never a part: a temporary file next to it, synced, renamed.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The listener lock, held: released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct ListenerLock {
    file: std::fs::File,
}

impl ListenerLock {
    /// Takes the lock if no process (this one included, through another
    /// instance value) holds it.
    pub fn try_take(data_dir: &Path) -> std::io::Result<Option<ListenerLock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(data_dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ListenerLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }

    /// Records where the holder listens, for [`listening_holder`].
    pub fn record(&mut self, listen: SocketAddr) -> std::io::Result<()> {
        self.file.set_len(0)?;
        let text = format!("pid={}\nlisten={listen}\n", std::process::id());
        std::io::Seek::rewind(&mut self.file)?;
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }
}

/// Where the process that holds the instance's listener lock listens;
/// `None` when nobody holds it.
pub fn listening_holder(data_dir: &Path) -> Option<SocketAddr> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new().read(true).open(&path).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it (ours is let go with the file).
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => std::fs::read_to_string(&path)
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("listen="))
            .and_then(|address| address.trim().parse().ok()),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seats.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn the_lock_is_exclusive_and_names_the_holders_address() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(listening_holder(dir.path()), None);
        let mut held = ListenerLock::try_take(dir.path()).unwrap().expect("free");
        held.record("127.0.0.1:8443".parse().unwrap()).unwrap();
        assert!(ListenerLock::try_take(dir.path()).unwrap().is_none());
        assert_eq!(
            listening_holder(dir.path()),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        drop(held);
        assert_eq!(listening_holder(dir.path()), None);
        assert!(ListenerLock::try_take(dir.path()).unwrap().is_some());
    }
}
