//! The recording log (CR14) and its hash chain (CR15), in SQLite in the
//! module's shared directory: one log for all instances, as in the seed.
//!
//! Every entry — a recording, a failure ("no RTP on callee leg",
//! "incomplete after crash"), a key rotation — carries the hash of the
//! entry before it, and its own hash covers all its fields and that link.
//! Removing, editing or reordering an entry breaks the chain from there on;
//! removing the newest entries shows against the head anchored next to the
//! recordings (`chain-head.txt`, written after every entry).
//!
//! Recordings in progress are in `active`, so the next start can repair
//! and enter them after a crash.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("recording log {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("recording log: {0}")]
    Corrupt(String),
}

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Recording,
    Failure,
    KeyRotation,
    /// A recording deleted after its retention period: the entry stays,
    /// the audio goes.
    Deletion,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Recording => "recording",
            EntryKind::Failure => "failure",
            EntryKind::KeyRotation => "key-rotation",
            EntryKind::Deletion => "deletion",
        }
    }

    fn parse(text: &str) -> Option<EntryKind> {
        match text {
            "recording" => Some(EntryKind::Recording),
            "failure" => Some(EntryKind::Failure),
            "key-rotation" => Some(EntryKind::KeyRotation),
            "deletion" => Some(EntryKind::Deletion),
            _ => None,
        }
    }
}

/// An entry before it is linked into the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntry {
    pub name: String,
    pub instance: String,
    pub call_id: String,
    pub started: String,
    pub ended: String,
    /// `complete`, `stopped`, `incomplete`, `failed`, `rotated`.
    pub status: String,
    /// For people: why, what happened.
    pub detail: String,
    /// The directory the files are in, and their names.
    pub directory: String,
    pub files: Vec<String>,
    /// SHA-256 (hex) of `<name>_hash.txt`, and its signature (base64).
    pub hash_sha256: String,
    pub signature: String,
    /// The signing certificate's fingerprint.
    pub certificate: String,
    /// For finding recordings: numbers, names and user ids of the parties.
    pub parties: Vec<String>,
}

/// An entry as stored: its place, its link and its own hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub kind: EntryKind,
    #[serde(flatten)]
    pub fields: NewEntry,
    pub previous: String,
    pub hash: String,
}

/// The chain's newest entry (what `chain-head.txt` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// Where an entry's link went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub seq: i64,
    pub problem: String,
}

pub struct Chain {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chain (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,
    name TEXT NOT NULL,
    started TEXT NOT NULL,
    status TEXT NOT NULL,
    parties TEXT NOT NULL,
    previous TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chain_name ON chain(name);
CREATE TABLE IF NOT EXISTS active (
    name TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    instance TEXT NOT NULL,
    due INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done TEXT,
    PRIMARY KEY (name, target)
);
CREATE INDEX IF NOT EXISTS uploads_due ON uploads(instance, done, due);
";

/// A recording's uploads, queued in the same transaction as its entry: an
/// entered recording is never without them.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub instance: String,
    /// Target labels.
    pub targets: Vec<String>,
    /// Unix seconds.
    pub due: i64,
}

/// One recording's upload to one target, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadState {
    pub name: String,
    pub target: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the target confirmed it (RFC 3339), if it did.
    pub done: Option<String>,
}

impl Chain {
    /// The log for entries: a committed entry survives a power cut (it
    /// vouches for files).
    pub fn open(path: &Path) -> Result<Chain, ChainError> {
        Chain::open_with(path, "FULL")
    }

    /// The log for noting recordings in progress on the media thread: no
    /// fsync per call (WAL with `synchronous = NORMAL` survives a killed
    /// process, which is what the note is for; a power cut may lose the
    /// last notes, whose files then stay unentered until found by hand).
    pub fn open_for_notes(path: &Path) -> Result<Chain, ChainError> {
        Chain::open_with(path, "NORMAL")
    }

    fn open_with(path: &Path, synchronous: &str) -> Result<Chain, ChainError> {
        let error = |source| ChainError::Database {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(error)?;
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(error)?;
        conn.execute_batch(SCHEMA).map_err(error)?;
        Ok(Chain {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: rusqlite::Error) -> ChainError {
        ChainError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends an entry; `prepare` runs inside the transaction with the
    /// entry's place and the entry before it (so a recording's metadata can
    /// name its predecessor and its own position) and fills in the fields.
    pub fn append<E>(
        &mut self,
        kind: EntryKind,
        prepare: impl FnOnce(i64, Option<&Entry>) -> Result<NewEntry, E>,
    ) -> Result<Result<Entry, E>, ChainError> {
        self.append_queued(kind, &Queue::default(), prepare)
    }

    /// [`Chain::append`], queueing the entry's uploads in the same
    /// transaction.
    pub fn append_queued<E>(
        &mut self,
        kind: EntryKind,
        queue: &Queue,
        prepare: impl FnOnce(i64, Option<&Entry>) -> Result<NewEntry, E>,
    ) -> Result<Result<Entry, E>, ChainError> {
        let path = self.path.clone();
        let error = |source| ChainError::Database {
            path: path.clone(),
            source,
        };
        // Inside a batch the entry is a savepoint of the batch's
        // transaction, committed (and fsynced) with the others.
        let tx = if self.conn.is_autocommit() {
            Step::Transaction(
                self.conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(error)?,
            )
        } else {
            Step::Savepoint(self.conn.savepoint().map_err(error)?)
        };
        let last = last_entry(&tx).map_err(error)?;
        let seq = last.as_ref().map_or(1, |e| e.seq + 1);
        let fields = match prepare(seq, last.as_ref()) {
            Ok(fields) => fields,
            Err(e) => return Ok(Err(e)),
        };
        let previous = last.map(|e| e.hash).unwrap_or_default();
        let hash = entry_hash(seq, kind, &fields, &previous);
        tx.execute(
            "INSERT INTO chain (seq, kind, fields, name, started, status, parties, previous, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                seq,
                kind.as_str(),
                serde_json::to_string(&fields).unwrap_or_default(),
                fields.name,
                fields.started,
                fields.status,
                fields.parties.join("\n"),
                previous,
                hash
            ],
        )
        .map_err(error)?;
        tx.execute("DELETE FROM active WHERE name = ?1", params![fields.name])
            .map_err(error)?;
        for target in &queue.targets {
            tx.execute(
                "INSERT OR IGNORE INTO uploads (name, target, instance, due) VALUES (?1, ?2, ?3, ?4)",
                params![fields.name, target, queue.instance, queue.due],
            )
            .map_err(error)?;
        }
        tx.commit().map_err(error)?;
        Ok(Ok(Entry {
            seq,
            kind,
            fields,
            previous,
            hash,
        }))
    }

    /// Runs `entries` in one transaction: the entries it appends are
    /// committed together, with one fsync for all of them. Nothing of the
    /// batch is committed when the commit fails.
    pub fn batch<R>(&mut self, entries: impl FnOnce(&mut Chain) -> R) -> Result<R, ChainError> {
        if !self.conn.is_autocommit() {
            // A batch cut short by a panic left its transaction open.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.error(e))?;
        let result = entries(self);
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => Ok(result),
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(self.error(error))
            }
        }
    }

    pub fn head(&self) -> Result<Option<Head>, ChainError> {
        Ok(last_entry(&self.conn)
            .map_err(|e| self.error(e))?
            .map(|e| Head {
                seq: e.seq,
                hash: e.hash,
            }))
    }

    pub fn entries(&self) -> Result<Vec<Entry>, ChainError> {
        let mut statement = self
            .conn
            .prepare("SELECT seq, kind, fields, previous, hash FROM chain ORDER BY seq")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], row_entry)
            .map_err(|e| self.error(e))?;
        rows.map(|row| row.map_err(|e| self.error(e)).and_then(|e| e))
            .collect()
    }

    pub fn entry_named(&self, name: &str) -> Result<Option<Entry>, ChainError> {
        self.conn
            .query_row(
                // The recording itself, not a later entry about it (an
                // upload failure has the recording's name too).
                "SELECT seq, kind, fields, previous, hash FROM chain WHERE name = ?1
                 ORDER BY kind = 'recording' DESC, seq DESC LIMIT 1",
                params![name],
                row_entry,
            )
            .optional()
            .map_err(|e| self.error(e))?
            .transpose()
    }

    /// Every link checked: sequence without holes, each entry's `previous`
    /// the hash of the one before, each hash over its own fields.
    pub fn breaks(&self) -> Result<Vec<Break>, ChainError> {
        let mut breaks = Vec::new();
        let mut previous: Option<Entry> = None;
        for entry in self.entries()? {
            let expected_seq = previous.as_ref().map_or(1, |p| p.seq + 1);
            if entry.seq != expected_seq {
                breaks.push(Break {
                    seq: entry.seq,
                    problem: format!("entries {expected_seq}..{} are missing", entry.seq - 1),
                });
            }
            let expected_previous = previous.as_ref().map(|p| p.hash.as_str()).unwrap_or("");
            if entry.previous != expected_previous {
                breaks.push(Break {
                    seq: entry.seq,
                    problem: "its link does not name the entry before it".into(),
                });
            }
            if entry_hash(entry.seq, entry.kind, &entry.fields, &entry.previous) != entry.hash {
                breaks.push(Break {
                    seq: entry.seq,
                    problem: "its fields were changed after it was entered".into(),
                });
            }
            previous = Some(entry);
        }
        Ok(breaks)
    }

    /// Recordings of `instance` that began before `cutoff` (RFC 3339 UTC)
    /// and have no deletion entry yet, oldest first.
    pub fn expired(
        &self,
        instance: &str,
        cutoff: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, ChainError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT seq, kind, fields, previous, hash FROM chain
                 WHERE kind = 'recording' AND started < ?2
                   AND json_extract(fields, '$.instance') = ?1
                   AND name NOT IN (SELECT name FROM chain WHERE kind = 'deletion')
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![instance, cutoff, limit as i64], row_entry)
            .map_err(|e| self.error(e))?;
        rows.map(|row| row.map_err(|e| self.error(e)).and_then(|e| e))
            .collect()
    }

    /// The deletion entry of a recording, if it was deleted.
    pub fn deletion_of(&self, name: &str) -> Result<Option<Entry>, ChainError> {
        self.conn
            .query_row(
                "SELECT seq, kind, fields, previous, hash FROM chain WHERE name = ?1 AND kind = 'deletion'
                 ORDER BY seq DESC LIMIT 1",
                params![name],
                row_entry,
            )
            .optional()
            .map_err(|e| self.error(e))?
            .transpose()
    }

    /// Uploads of `instance` due at `now` (unix seconds), oldest first.
    pub fn due_uploads(
        &self,
        instance: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<UploadState>, ChainError> {
        self.query_uploads(
            "SELECT name, target, attempts, last_error, done FROM uploads
             WHERE instance = ?1 AND done IS NULL AND due <= ?2 ORDER BY due, name LIMIT ?3",
            params![instance, now, limit as i64],
        )
    }

    /// Every upload of a recording.
    pub fn uploads_of(&self, name: &str) -> Result<Vec<UploadState>, ChainError> {
        self.query_uploads(
            "SELECT name, target, attempts, last_error, done FROM uploads WHERE name = ?1 ORDER BY target",
            params![name],
        )
    }

    fn query_uploads(
        &self,
        sql: &str,
        values: impl rusqlite::Params,
    ) -> Result<Vec<UploadState>, ChainError> {
        let mut statement = self.conn.prepare(sql).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(values, |row| {
                Ok(UploadState {
                    name: row.get(0)?,
                    target: row.get(1)?,
                    attempts: row.get(2)?,
                    last_error: row.get(3)?,
                    done: row.get(4)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    pub fn upload_done(&self, name: &str, target: &str, at: &str) -> Result<(), ChainError> {
        self.conn
            .execute(
                "UPDATE uploads SET done = ?3, last_error = NULL WHERE name = ?1 AND target = ?2",
                params![name, target, at],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Counts a failed attempt and sets when the next one is due.
    pub fn upload_failed(
        &self,
        name: &str,
        target: &str,
        error: &str,
        next_due: i64,
    ) -> Result<(), ChainError> {
        self.conn
            .execute(
                "UPDATE uploads SET attempts = attempts + 1, last_error = ?3, due = ?4
                 WHERE name = ?1 AND target = ?2",
                params![name, target, error, next_due],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Notes a recording in progress (repaired after a crash).
    pub fn begin(&self, name: &str, instance: &str, record: &str) -> Result<(), ChainError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO active (name, instance, record) VALUES (?1, ?2, ?3)",
                params![name, instance, record],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Recordings that were in progress (name, instance, record).
    pub fn active(&self) -> Result<Vec<(String, String, String)>, ChainError> {
        let mut statement = self
            .conn
            .prepare("SELECT name, instance, record FROM active ORDER BY name")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }
}

/// One entry's writes: its own transaction, or a savepoint inside a batch.
enum Step<'c> {
    Transaction(rusqlite::Transaction<'c>),
    Savepoint(rusqlite::Savepoint<'c>),
}

impl Step<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Step::Transaction(tx) => tx.commit(),
            Step::Savepoint(savepoint) => savepoint.commit(),
        }
    }
}

impl std::ops::Deref for Step<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Step::Transaction(tx) => tx,
            Step::Savepoint(savepoint) => savepoint,
        }
    }
}

fn last_entry(conn: &Connection) -> rusqlite::Result<Option<Entry>> {
    conn.query_row(
        "SELECT seq, kind, fields, previous, hash FROM chain ORDER BY seq DESC LIMIT 1",
        [],
        row_entry,
    )
    .optional()
    .map(|found| found.and_then(Result::ok))
}

fn row_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Entry, ChainError>> {
    let seq: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let fields: String = row.get(2)?;
    let entry = (|| {
        Ok(Entry {
            seq,
            kind: EntryKind::parse(&kind)
                .ok_or_else(|| ChainError::Corrupt(format!("entry {seq}: kind {kind:?}")))?,
            fields: serde_json::from_str(&fields)
                .map_err(|e| ChainError::Corrupt(format!("entry {seq}: {e}")))?,
            previous: row.get(3).map_err(|e| ChainError::Corrupt(e.to_string()))?,
            hash: row.get(4).map_err(|e| ChainError::Corrupt(e.to_string()))?,
        })
    })();
    Ok(entry)
}

/// SHA-256 over the entry's place, kind, fields (as JSON, in declaration
/// order) and link.
pub fn entry_hash(seq: i64, kind: EntryKind, fields: &NewEntry, previous: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "callhost-recording-chain v1\n{seq}\n{}\n",
        kind.as_str()
    ));
    hasher.update(serde_json::to_string(fields).unwrap_or_default());
    hasher.update(b"\n");
    hasher.update(previous.as_bytes());
    hex::encode(hasher.finalize())
}

/// `chain-head.txt`: the newest entry's place and hash, next to the
/// recordings (and, with remote targets, sent along with them).
pub fn head_text(head: &Head) -> String {
    format!("seq: {}\nhash: {}\n", head.seq, head.hash)
}

pub fn parse_head(text: &str) -> Option<Head> {
    let mut seq = None;
    let mut hash = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("seq: ") {
            seq = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("hash: ") {
            hash = Some(value.trim().to_string());
        }
    }
    Some(Head {
        seq: seq?,
        hash: hash?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> NewEntry {
        NewEntry {
            name: name.into(),
            status: "complete".into(),
            ..NewEntry::default()
        }
    }

    fn chain_with(names: &[&str]) -> (tempfile::TempDir, Chain) {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::open(&dir.path().join("recordings.db")).unwrap();
        for name in names {
            chain
                .append(EntryKind::Recording, |_, _| Ok::<_, ()>(entry(name)))
                .unwrap()
                .unwrap();
        }
        (dir, chain)
    }

    #[test]
    fn entries_link_to_the_one_before() {
        let (_dir, mut chain) = chain_with(&["a", "b"]);
        let third = chain
            .append(EntryKind::Recording, |seq, before| {
                assert_eq!(seq, 3);
                assert_eq!(before.unwrap().fields.name, "b");
                Ok::<_, ()>(entry("c"))
            })
            .unwrap()
            .unwrap();
        let entries = chain.entries().unwrap();
        assert_eq!(third.previous, entries[1].hash);
        assert_eq!(entries[1].previous, entries[0].hash);
        assert_eq!(entries[0].previous, "");
        assert!(chain.breaks().unwrap().is_empty());
        assert_eq!(chain.head().unwrap().unwrap().seq, 3);
    }

    #[test]
    fn a_batch_commits_its_entries_together_linked_and_skips_one_that_failed() {
        let (dir, mut chain) = chain_with(&["a"]);
        let path = dir.path().join("recordings.db");
        let appended = chain
            .batch(|chain| {
                let b = chain.append(EntryKind::Recording, |_, _| Ok::<_, ()>(entry("b")));
                // Another connection sees nothing of the batch before it
                // is committed.
                let other = Connection::open(&path).unwrap();
                let count: i64 = other
                    .query_row("SELECT count(*) FROM chain", [], |row| row.get(0))
                    .unwrap();
                assert_eq!(count, 1);
                let failed = chain.append(EntryKind::Recording, |_, _| Err::<NewEntry, _>("x"));
                let c = chain.append(EntryKind::Failure, |seq, before| {
                    assert_eq!((seq, before.unwrap().fields.name.as_str()), (3, "b"));
                    Ok::<_, ()>(entry("c"))
                });
                (b.unwrap().unwrap(), failed.unwrap(), c.unwrap().unwrap())
            })
            .unwrap();
        assert_eq!(appended.1, Err("x"));
        let entries = Chain::open(&path).unwrap().entries().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.fields.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(entries[2].previous, appended.0.hash);
        assert!(chain.breaks().unwrap().is_empty());
        // Outside a batch, an entry is its own transaction again.
        chain
            .append(EntryKind::Recording, |_, _| Ok::<_, ()>(entry("d")))
            .unwrap()
            .unwrap();
        assert!(chain.conn.is_autocommit());
    }

    #[test]
    fn an_edited_a_removed_and_a_swapped_entry_break_the_chain() {
        let (_dir, chain) = chain_with(&["a", "b", "c", "d"]);
        chain
            .conn
            .execute(
                "UPDATE chain SET fields = replace(fields, '\"complete\"', '\"failed\"') WHERE seq = 2",
                [],
            )
            .unwrap();
        assert_eq!(chain.breaks().unwrap()[0].seq, 2);

        let (_dir, chain) = chain_with(&["a", "b", "c"]);
        chain
            .conn
            .execute("DELETE FROM chain WHERE seq = 2", [])
            .unwrap();
        let breaks = chain.breaks().unwrap();
        assert!(
            breaks
                .iter()
                .any(|b| b.seq == 3 && b.problem.contains("missing")),
            "{breaks:?}"
        );

        let (_dir, chain) = chain_with(&["a", "b", "c"]);
        chain
            .conn
            .execute_batch(
                "UPDATE chain SET seq = 100 WHERE seq = 2;
                 UPDATE chain SET seq = 2 WHERE seq = 3;
                 UPDATE chain SET seq = 3 WHERE seq = 100;",
            )
            .unwrap();
        assert!(!chain.breaks().unwrap().is_empty());
    }

    #[test]
    fn a_refused_entry_leaves_the_chain_as_it_was() {
        let (_dir, mut chain) = chain_with(&["a"]);
        let refused = chain
            .append(EntryKind::Recording, |_, _| Err("disk full"))
            .unwrap();
        assert_eq!(refused.unwrap_err(), "disk full");
        assert_eq!(chain.entries().unwrap().len(), 1);
    }

    #[test]
    fn recordings_in_progress_are_kept_until_entered() {
        let (_dir, mut chain) = chain_with(&[]);
        chain.begin("r1", "rec", "{}").unwrap();
        assert_eq!(chain.active().unwrap().len(), 1);
        chain
            .append(EntryKind::Recording, |_, _| Ok::<_, ()>(entry("r1")))
            .unwrap()
            .unwrap();
        assert!(chain.active().unwrap().is_empty());
    }

    #[test]
    fn expired_recordings_are_the_old_ones_not_yet_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::open(&dir.path().join("recordings.db")).unwrap();
        for (name, started, instance) in [
            ("old", "2016-01-01T00:00:00Z", "rec"),
            ("other", "2016-01-01T00:00:00Z", "rec2"),
            ("new", "2026-12-01T00:00:00Z", "rec"),
        ] {
            chain
                .append(EntryKind::Recording, |_, _| {
                    Ok::<_, ()>(NewEntry {
                        started: started.into(),
                        instance: instance.into(),
                        ..entry(name)
                    })
                })
                .unwrap()
                .unwrap();
        }
        let expired = chain.expired("rec", "2020-01-01T00:00:00Z", 10).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].fields.name, "old");
        chain
            .append(EntryKind::Deletion, |_, _| Ok::<_, ()>(entry("old")))
            .unwrap()
            .unwrap();
        assert!(chain
            .expired("rec", "2020-01-01T00:00:00Z", 10)
            .unwrap()
            .is_empty());
        assert!(chain.deletion_of("old").unwrap().is_some());
        // The recording's own entry is still the one found by name.
        assert_eq!(
            chain.entry_named("old").unwrap().unwrap().kind,
            EntryKind::Recording
        );
    }

    #[test]
    fn the_head_file_round_trips() {
        let head = Head {
            seq: 7,
            hash: "ab".repeat(32),
        };
        assert_eq!(parse_head(&head_text(&head)), Some(head));
        assert_eq!(parse_head("garbage"), None);
    }
}
