//! The instance's own SQLite file: the cache (RL11), the lookup history
//! (RL15) and the monthly request counts (RL20).
//!
//! Privacy: cache rows are keyed by `HMAC-SHA256(secret, provider, number)`
//! (see `callhost_lookup_core::cache_key`), so the cache holds names but no
//! numbers; the secret lives in `cache.key` next to the database, readable
//! by the host's user only. The history holds numbers, because its purpose
//! is to show which number got which name; it is pruned by age and size,
//! and `purge history` empties it.

use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use callhost_lookup_core::cache_key;
use callhost_numbers::ExternalNumber;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::extract::Found;

/// The module's errors become one-line module messages, so each message
/// carries its cause (`error`, deliberately no `source`: said once).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lookup database {path}: {error}")]
    Open {
        path: String,
        error: rusqlite::Error,
    },
    #[error("cache key file {path}: {error}")]
    Key { path: String, error: std::io::Error },
    #[error("lookup database: {0}")]
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError::Sql(error)
    }
}

/// Two connections: WAL lets the call path read the cache while a history
/// write is being committed on the other. In front of the cache table, the
/// entries read or written lately are kept in memory, so a call can be
/// answered from the cache without touching the disk (`cache_peek`).
pub struct LookupStore {
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
    secret: Vec<u8>,
    memory: Mutex<MemoryCache>,
}

/// Cache entries kept in memory at most (the oldest go first).
const MEMORY_ENTRIES: usize = 20_000;

/// The memory front of the cache, keyed like the table (HMAC keys only:
/// no numbers in memory either).
#[derive(Default)]
struct MemoryCache {
    entries: std::collections::HashMap<String, (Option<Found>, i64)>,
    order: std::collections::VecDeque<String>,
}

impl MemoryCache {
    fn get(&self, key: &str) -> Option<CacheEntry> {
        let (found, stored_at) = self.entries.get(key)?;
        Some(CacheEntry {
            found: found.clone(),
            age: Duration::from_secs(unix_now().saturating_sub(*stored_at).max(0) as u64),
        })
    }

    fn put(&mut self, key: String, found: Option<Found>, stored_at: i64) {
        if self
            .entries
            .insert(key.clone(), (found, stored_at))
            .is_none()
        {
            self.order.push_back(key);
            while self.entries.len() > MEMORY_ENTRIES {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

/// A cached answer: `found` is `None` for a negative entry.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub found: Option<Found>,
    pub age: Duration,
}

/// One lookup as the history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: i64,
    /// RFC 3339 UTC.
    pub at: String,
    /// `call`, `test`, `refresh` (call lists) or `background` (cache refresh).
    pub origin: String,
    /// `+E.164`.
    pub number: String,
    /// `address_book`, `cache`, `provider` or `none`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_score: Option<u8>,
    pub elapsed_ms: f64,
    /// Each provider's result, e.g. `{"provider":"x","result":"timed out","ms":600}`.
    pub attempts: serde_json::Value,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The month a request counts for (UTC), e.g. "2026-11".
fn month_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[..7].to_string()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    found TEXT,
    stored_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_provider ON cache (provider);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    at_unix INTEGER NOT NULL,
    origin TEXT NOT NULL,
    number TEXT NOT NULL,
    source TEXT NOT NULL,
    provider TEXT,
    name TEXT,
    spam_score INTEGER,
    elapsed_ms REAL NOT NULL,
    attempts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    provider TEXT NOT NULL,
    month TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (provider, month)
);
";

impl LookupStore {
    pub fn open(dir: &Path) -> Result<LookupStore, StoreError> {
        let path = dir.join("lookups.sqlite");
        let open_error = |error| StoreError::Open {
            path: path.display().to_string(),
            error,
        };
        let connect = || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(2))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // Commits reach the disk at checkpoints, not each time: a power
            // cut may cost the last lookups of the history or the cache,
            // which are rebuilt by the next calls; nothing an administrator
            // stored lives here.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn)
        };
        let conn = connect().map_err(open_error)?;
        conn.execute_batch(SCHEMA).map_err(open_error)?;
        let reader = connect().map_err(open_error)?;
        let secret = cache_secret(&dir.join("cache.key"))?;
        Ok(LookupStore {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            secret,
            memory: Mutex::default(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, MemoryCache> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry if it is in memory: never touches the disk (for the call
    /// path). `None` says nothing about the table.
    pub fn cache_peek(&self, provider: &str, number: &ExternalNumber) -> Option<CacheEntry> {
        let key = cache_key(&self.secret, provider, number);
        self.memory().get(&key)
    }

    pub fn cache_get(
        &self,
        provider: &str,
        number: &ExternalNumber,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let key = cache_key(&self.secret, provider, number);
        if let Some(entry) = self.memory().get(&key) {
            return Ok(Some(entry));
        }
        let row: Option<(Option<String>, i64)> = self
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prepare_cached("SELECT found, stored_at FROM cache WHERE key = ?1")?
            .query_row([&key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(row.map(|(found, stored_at)| {
            let found: Option<Found> = found.and_then(|json| serde_json::from_str(&json).ok());
            self.memory().put(key, found.clone(), stored_at);
            CacheEntry {
                found,
                age: Duration::from_secs(unix_now().saturating_sub(stored_at).max(0) as u64),
            }
        }))
    }

    /// Stores a positive (`Some`) or negative (`None`) answer.
    pub fn cache_put(
        &self,
        provider: &str,
        number: &ExternalNumber,
        found: Option<&Found>,
    ) -> Result<(), StoreError> {
        let key = cache_key(&self.secret, provider, number);
        let json = found.map(|f| serde_json::to_string(f).expect("plain data serializes"));
        let now = unix_now();
        self.conn()
            .prepare_cached(
                "INSERT INTO cache (key, provider, found, stored_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET found = ?3, stored_at = ?4",
            )?
            .execute(params![key, provider, json, now])?;
        self.memory().put(key, found.cloned(), now);
        Ok(())
    }

    /// Deletes cache rows older than `max_age` (the longer TTL).
    pub fn cache_expire(&self, max_age: Duration) -> Result<usize, StoreError> {
        let cutoff = unix_now() - max_age.as_secs() as i64;
        {
            let mut memory = self.memory();
            let MemoryCache { entries, order } = &mut *memory;
            entries.retain(|_, (_, stored_at)| *stored_at >= cutoff);
            order.retain(|key| entries.contains_key(key));
        }
        Ok(self
            .conn()
            .execute("DELETE FROM cache WHERE stored_at < ?1", [cutoff])?)
    }

    pub fn purge_cache(&self) -> Result<usize, StoreError> {
        self.memory().clear();
        Ok(self.conn().execute("DELETE FROM cache", [])?)
    }

    pub fn cache_size(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM cache", [], |row| row.get(0))?)
    }

    pub fn purge_history(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute("DELETE FROM history", [])?)
    }

    /// Adds a lookup to the history; returns its id.
    pub fn history_add(&self, record: &Record) -> Result<i64, StoreError> {
        let conn = self.conn();
        insert_history(&conn, record)?;
        Ok(conn.last_insert_rowid())
    }

    /// Adds `records` in one transaction; returns the last id.
    pub fn history_add_all(&self, records: &[Record]) -> Result<i64, StoreError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        for record in records {
            insert_history(&tx, record)?;
        }
        tx.commit()?;
        Ok(conn.last_insert_rowid())
    }

    /// Lookups with an id above `after`, oldest first, at most `limit`; or
    /// (without `after`) the latest `limit`, oldest first.
    pub fn history(&self, after: Option<i64>, limit: u32) -> Result<Vec<Record>, StoreError> {
        let conn = self.conn();
        let read = |row: &rusqlite::Row<'_>| {
            let attempts: String = row.get(9)?;
            Ok(Record {
                id: row.get(0)?,
                at: row.get(1)?,
                origin: row.get(2)?,
                number: row.get(3)?,
                source: row.get(4)?,
                provider: row.get(5)?,
                name: row.get(6)?,
                spam_score: row.get(7)?,
                elapsed_ms: row.get(8)?,
                attempts: serde_json::from_str(&attempts).unwrap_or_default(),
            })
        };
        const COLUMNS: &str =
            "id, at, origin, number, source, provider, name, spam_score, elapsed_ms, attempts";
        let mut records: Vec<Record> = match after {
            Some(after) => conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM history WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![after, limit], read)?
                .collect::<Result<_, _>>()?,
            None => conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM history ORDER BY id DESC LIMIT ?1"
                ))?
                .query_map(params![limit], read)?
                .collect::<Result<_, _>>()?,
        };
        if after.is_none() {
            records.reverse();
        }
        Ok(records)
    }

    /// Drops lookups older than `keep` and all but the newest `max`.
    pub fn prune_history(&self, keep: Duration, max: u32) -> Result<usize, StoreError> {
        let conn = self.conn();
        let old = conn.execute(
            "DELETE FROM history WHERE at_unix < ?1",
            [unix_now() - keep.as_secs() as i64],
        )?;
        let excess = conn.execute(
            "DELETE FROM history WHERE id <= (SELECT id FROM history ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            [max],
        )?;
        Ok(old + excess)
    }

    /// Counts one request against `provider`'s monthly `quota`; refuses when
    /// the month's quota is used up. Atomic across processes.
    pub fn take_quota(&self, provider: &str, quota: u32) -> Result<Result<(), u32>, StoreError> {
        let month = month_now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO usage (provider, month, count) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING",
            params![provider, month],
        )?;
        let changed = conn.execute(
            "UPDATE usage SET count = count + 1 WHERE provider = ?1 AND month = ?2 AND count < ?3",
            params![provider, month, quota],
        )?;
        if changed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(quota))
        }
    }

    /// Requests counted this month per provider.
    pub fn usage(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT provider, count FROM usage WHERE month = ?1 ORDER BY provider",
        )?;
        let rows = stmt
            .query_map([month_now()], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// The per-instance cache secret: 32 random bytes, created on first use,
/// readable by the owner only.
fn cache_secret(path: &Path) -> Result<Vec<u8>, StoreError> {
    let key_error = |error| StoreError::Key {
        path: path.display().to_string(),
        error,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(bytes) = hex::decode(text.trim()) {
                if bytes.len() >= 32 {
                    return Ok(bytes);
                }
            }
            Err(key_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not 32 hex-encoded bytes; delete it to start a new (empty) cache",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write as _;
            let mut file = options.open(path).map_err(key_error)?;
            file.write_all(hex::encode(&bytes).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(key_error)?;
            Ok(bytes)
        }
        Err(e) => Err(key_error(e)),
    }
}

fn insert_history(conn: &Connection, record: &Record) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO history (at, at_unix, origin, number, source, provider, name, spam_score, elapsed_ms, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        record.at,
        unix_now(),
        record.origin,
        record.number,
        record.source,
        record.provider,
        record.name,
        record.spam_score,
        record.elapsed_ms,
        record.attempts.to_string(),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number() -> ExternalNumber {
        ExternalNumber {
            international: "0049301234567".into(),
            e164: "+49301234567".into(),
            national: "0301234567".into(),
            country: Some("DE".into()),
        }
    }

    #[test]
    fn the_cache_holds_no_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LookupStore::open(dir.path()).unwrap();
        let found = Found {
            display: Some("Anna Schmidt".into()),
            ..Found::default()
        };
        store.cache_put("p", &number(), Some(&found)).unwrap();
        store.cache_put("q", &number(), None).unwrap();
        let hit = store.cache_get("p", &number()).unwrap().unwrap();
        assert_eq!(hit.found, Some(found));
        assert!(store
            .cache_get("q", &number())
            .unwrap()
            .unwrap()
            .found
            .is_none());
        drop(store);
        let bytes = std::fs::read(dir.path().join("lookups.sqlite")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for form in ["301234567", "+49301234567"] {
            assert!(!text.contains(form), "the database contains {form}");
        }
        // Reopening keeps the key, so entries are still found.
        let store = LookupStore::open(dir.path()).unwrap();
        assert!(store.cache_get("p", &number()).unwrap().is_some());
    }

    #[test]
    fn quotas_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LookupStore::open(dir.path()).unwrap();
        assert!(store.take_quota("p", 2).unwrap().is_ok());
        assert!(store.take_quota("p", 2).unwrap().is_ok());
        assert_eq!(store.take_quota("p", 2).unwrap(), Err(2));
        assert_eq!(store.usage().unwrap(), vec![("p".to_string(), 2)]);
    }

    #[test]
    fn history_pages_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LookupStore::open(dir.path()).unwrap();
        for i in 0..5 {
            store
                .history_add(&Record {
                    id: 0,
                    at: "2026-11-22T10:00:00Z".into(),
                    origin: "test".into(),
                    number: format!("+4930123456{i}"),
                    source: "none".into(),
                    provider: None,
                    name: None,
                    spam_score: None,
                    elapsed_ms: 1.0,
                    attempts: serde_json::json!([]),
                })
                .unwrap();
        }
        let latest = store.history(None, 2).unwrap();
        assert_eq!(latest.len(), 2);
        assert!(latest[0].id < latest[1].id);
        let after = store.history(Some(latest[0].id), 10).unwrap();
        assert_eq!(after.len(), 1);
        store.prune_history(Duration::from_secs(3600), 3).unwrap();
        assert_eq!(store.history(None, 10).unwrap().len(), 3);
    }
}
