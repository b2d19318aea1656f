//! Writes that must never make a call wait: `callhost serve` hands the
//! call-list entries of each ended call to this writer, which owns its own
//! connection to `callhost.db` on a thread of its own. Whatever piled up
//! while the last batch was written goes into one SQLite transaction (one
//! commit, one sync), so the cost per call falls as the load rises.
//!
//! Nothing is lost: a batch that cannot be written (disk full, database
//! locked for long) is kept and tried again with a growing pause; entries
//! still unwritten when the process stops go to `call-lists.pending.jsonl`
//! in the data directory, which the next start writes first.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use callhost_pbx::store::{CallListEntry, Store};

/// Entries written in one transaction at most.
const MAX_BATCH: usize = 2_000;
/// Longest pause between attempts at a failing batch.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

enum Job {
    Write(Vec<CallListEntry>),
    /// Answered once everything queued before it is written (or spilled).
    Flush(mpsc::Sender<()>),
}

/// The handle the call path uses: sending never blocks.
pub struct CallListWriter {
    jobs: mpsc::Sender<Job>,
    /// Entries handed over and not yet written.
    backlog: Arc<AtomicUsize>,
    spill: PathBuf,
}

impl CallListWriter {
    /// Starts the writer on `store` (a connection of its own). Entries a
    /// previous run left in the spill file are written first.
    pub fn start(store: Store, data: &Path) -> Result<CallListWriter> {
        let spill = data.join("call-lists.pending.jsonl");
        let pending = read_spill(&spill)?;
        if !pending.is_empty() {
            store
                .add_call_list_entries(&pending)
                .context("writing the call lists a previous run left pending")?;
            std::fs::remove_file(&spill)
                .with_context(|| format!("removing {}", spill.display()))?;
            tracing::info!(entries = pending.len(), "pending call lists written");
        }
        let (jobs, receiver) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let thread_backlog = backlog.clone();
        let thread_spill = spill.clone();
        std::thread::Builder::new()
            .name("callhost-call-lists".into())
            .spawn(move || run(store, receiver, thread_backlog, thread_spill))
            .context("starting the call-list writer")?;
        Ok(CallListWriter {
            jobs,
            backlog,
            spill,
        })
    }

    /// Queues a call's entries; returns at once.
    pub fn write(&self, entries: Vec<CallListEntry>) {
        if entries.is_empty() {
            return;
        }
        let count = entries.len();
        self.backlog.fetch_add(count, Ordering::Relaxed);
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job::Write(entries)) {
            // The writer thread is gone (it panicked): keep them on disk.
            self.backlog.fetch_sub(count, Ordering::Relaxed);
            if let Job::Write(entries) = job {
                spill_or_log(&self.spill, &entries);
            }
        }
    }

    /// Entries queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until everything queued so far is written
    /// or, if the database cannot take it, spilled to the pending file.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        if self.jobs.send(Job::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }
}

fn run(store: Store, receiver: mpsc::Receiver<Job>, backlog: Arc<AtomicUsize>, spill: PathBuf) {
    let mut pending: Vec<CallListEntry> = Vec::new();
    let mut flushes: Vec<mpsc::Sender<()>> = Vec::new();
    let mut pause = Duration::from_millis(50);
    let mut failing_since: Option<Instant> = None;
    loop {
        // Wait for work (or, with a failed batch held, only a pause).
        let first = if pending.is_empty() {
            match receiver.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        } else {
            match receiver.recv_timeout(pause) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut take = |job: Job, pending: &mut Vec<CallListEntry>| match job {
            Job::Write(entries) => pending.extend(entries),
            Job::Flush(done) => flushes.push(done),
        };
        if let Some(job) = first {
            take(job, &mut pending);
        }
        while pending.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => take(job, &mut pending),
                Err(_) => break,
            }
        }
        let batch = pending.len().min(MAX_BATCH);
        match store.add_call_list_entries(&pending[..batch]) {
            Ok(()) => {
                pending.drain(..batch);
                backlog.fetch_sub(batch, Ordering::Relaxed);
                pause = Duration::from_millis(50);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        after_seconds = since.elapsed().as_secs(),
                        "call lists are written again"
                    );
                }
            }
            Err(error) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::error!(
                        entries = pending.len(),
                        "cannot write call lists, keeping them and trying again: {}",
                        crate::error_chain(&error)
                    );
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
                if !flushes.is_empty() {
                    // Someone waits (shutdown): what cannot be written now
                    // goes to the pending file.
                    spill_or_log(&spill, &pending);
                    backlog.fetch_sub(pending.len(), Ordering::Relaxed);
                    pending.clear();
                }
            }
        }
        if pending.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
    if !pending.is_empty() {
        spill_or_log(&spill, &pending);
    }
}

/// Appends entries to the pending file (one JSON object a line, synced).
fn spill_or_log(spill: &Path, entries: &[CallListEntry]) {
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spill)?;
        let mut text = String::new();
        for entry in entries {
            text.push_str(&serde_json::to_string(entry).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    match written {
        Ok(()) => tracing::warn!(
            entries = entries.len(),
            file = %spill.display(),
            "call lists kept in the pending file; the next start writes them"
        ),
        Err(error) => tracing::error!(
            entries = entries.len(),
            file = %spill.display(),
            "call lists LOST: neither the database nor the pending file took them: {error}"
        ),
    }
}

fn read_spill(spill: &Path) -> Result<Vec<CallListEntry>> {
    let text = match std::fs::read_to_string(spill) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", spill.display())),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", spill.display(), index + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_pbx::store::CallDirection;

    fn entry(user: &str, call: usize) -> CallListEntry {
        CallListEntry {
            id: None,
            user_id: user.into(),
            time: "2026-12-01T12:00:00Z".into(),
            direction: CallDirection::In,
            number: "030123456".into(),
            name: None,
            call_id: format!("c{call}"),
        }
    }

    fn store(dir: &Path) -> Store {
        let sealer = Arc::new(callhost_seal::Sealer::open(dir).unwrap());
        Store::open(&dir.join("callhost.db"), sealer).unwrap()
    }

    #[test]
    fn every_queued_entry_is_written_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CallListWriter::start(store(dir.path()), dir.path()).unwrap();
        for call in 0..5_000 {
            writer.write(vec![entry("anna", call)]);
        }
        assert!(writer.flush(Duration::from_secs(30)));
        assert_eq!(writer.backlog(), 0);
        assert_eq!(store(dir.path()).call_list("anna").unwrap().len(), 5_000);
    }

    #[test]
    fn entries_the_database_refuses_at_shutdown_wait_in_the_pending_file() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CallListWriter::start(store(dir.path()), dir.path()).unwrap();
        // Another connection holds the write lock: the writer cannot commit.
        let blocker = store(dir.path());
        blocker
            .conn()
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO call_list (user_id, time, direction, number, call_id) VALUES ('x', '2026-12-01T12:00:00Z', 'in', '1', 'x');")
            .unwrap();
        writer.write(vec![entry("anna", 1), entry("anna", 2)]);
        assert!(writer.flush(Duration::from_secs(30)));
        let spill = dir.path().join("call-lists.pending.jsonl");
        assert_eq!(read_spill(&spill).unwrap().len(), 2);
        blocker.conn().execute_batch("ROLLBACK").unwrap();
        drop(writer);
        // The next start writes them first.
        let again = CallListWriter::start(store(dir.path()), dir.path()).unwrap();
        assert!(!spill.exists());
        assert_eq!(store(dir.path()).call_list("anna").unwrap().len(), 2);
        drop(again);
    }
}
