//! Per-instance log files: `<data>/instances/<name>/instance.log`.
//!
//! One line per entry: `<RFC 3339 time> <LEVEL> <target>: <message>`. The
//! host writes them (a module logs through host services), so the level an
//! administrator sets applies to module and host messages alike.
//!
//! A module logs from wherever it runs, its `call_setup` too, so writing
//! never waits for the disk: lines go to one writer thread that appends
//! whatever piled up to each file in one write. If the disk falls behind
//! by more than [`QUEUE`] lines, further lines are dropped and the drop is
//! written into the log as soon as there is room.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{Context as _, Result};
use callhost_plugin_abi::LogLevel;

pub const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

pub fn parse_level(text: &str) -> Result<LogLevel> {
    Ok(match text.to_ascii_uppercase().as_str() {
        "ERROR" => LogLevel::Error,
        "WARN" | "WARNING" => LogLevel::Warn,
        "INFO" => LogLevel::Info,
        "DEBUG" => LogLevel::Debug,
        "TRACE" => LogLevel::Trace,
        _ => {
            return Err(crate::db::Invalid(format!(
                "log level `{text}` is not one of {}",
                LEVELS.join(", ")
            ))
            .into())
        }
    })
}

pub fn level_name(level: LogLevel) -> &'static str {
    LEVELS[level as usize - 1]
}

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 65_536;

enum Job {
    Line(Arc<PathBuf>, String),
    /// Answered once every line queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

struct Writer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Lines dropped because the queue was full, per path.
    dropped: Mutex<std::collections::HashMap<Arc<PathBuf>, u64>>,
    /// `dropped` is not empty (read without the lock on every line).
    any_dropped: std::sync::atomic::AtomicBool,
}

static WRITER: std::sync::LazyLock<Writer> = std::sync::LazyLock::new(|| {
    let (jobs, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("callhost-instance-logs".into())
        .spawn(move || write_lines(receiver));
    if let Err(error) = spawned {
        tracing::error!("cannot start the instance log writer: {error}");
    }
    Writer {
        jobs,
        dropped: Mutex::default(),
        any_dropped: std::sync::atomic::AtomicBool::new(false),
    }
});

fn write_lines(receiver: std::sync::mpsc::Receiver<Job>) {
    let mut files: std::collections::HashMap<Arc<PathBuf>, std::fs::File> =
        std::collections::HashMap::new();
    while let Ok(first) = receiver.recv() {
        let mut batch: Vec<(Arc<PathBuf>, String)> = Vec::new();
        let mut flushes = Vec::new();
        let mut take = |job: Job| match job {
            Job::Line(path, line) => batch.push((path, line)),
            Job::Flush(done) => flushes.push(done),
        };
        take(first);
        while let Ok(job) = receiver.try_recv() {
            take(job);
        }
        let mut by_file: Vec<(Arc<PathBuf>, String)> = Vec::new();
        for (path, line) in batch {
            match by_file.iter_mut().find(|(p, _)| *p == path) {
                Some((_, text)) => text.push_str(&line),
                None => by_file.push((path, line)),
            }
        }
        for (path, text) in by_file {
            let file = match files.entry(path.clone()) {
                std::collections::hash_map::Entry::Occupied(file) => file.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    match OpenOptions::new().create(true).append(true).open(&*path) {
                        Ok(file) => slot.insert(file),
                        Err(error) => {
                            tracing::warn!(path = %path.display(), "cannot write instance log: {error}");
                            continue;
                        }
                    }
                }
            };
            if let Err(error) = file.write_all(text.as_bytes()) {
                tracing::warn!(path = %path.display(), "cannot write instance log: {error}");
                // Open it again next time (the file may have been removed).
                files.remove(&path);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Waits (at most `timeout`) until every line logged so far is written.
pub fn flush(timeout: std::time::Duration) -> bool {
    let (done, wait) = std::sync::mpsc::channel();
    if WRITER.jobs.send(Job::Flush(done)).is_err() {
        return false;
    }
    wait.recv_timeout(timeout).is_ok()
}

/// An instance's log with its current level.
pub struct InstanceLog {
    path: Arc<PathBuf>,
    level: AtomicU8,
}

impl InstanceLog {
    pub fn new(path: PathBuf, level: LogLevel) -> Arc<InstanceLog> {
        Arc::new(InstanceLog {
            path: Arc::new(path),
            level: AtomicU8::new(level as u8),
        })
    }

    pub fn level(&self) -> LogLevel {
        match self.level.load(Ordering::Relaxed) {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            4 => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }

    pub fn set_level(&self, level: LogLevel) {
        self.level.store(level as u8, Ordering::Relaxed);
    }

    /// Queues one line when `level` passes the instance's level; never
    /// waits for the disk. Logging never fails a call.
    pub fn write(&self, level: LogLevel, target: &str, message: &str) {
        if level > self.level() {
            return;
        }
        let now = crate::db::now();
        let line = format!(
            "{now} {:<5} {}: {}\n",
            level_name(level),
            target,
            message.replace('\n', " ")
        );
        let writer = &*WRITER;
        if writer.any_dropped.load(Ordering::Relaxed) {
            self.note_dropped(writer, &now);
        }
        if let Err(std::sync::mpsc::TrySendError::Full(_)) =
            writer.jobs.try_send(Job::Line(self.path.clone(), line))
        {
            let mut dropped = writer.dropped.lock().unwrap_or_else(|p| p.into_inner());
            *dropped.entry(self.path.clone()).or_default() += 1;
            writer.any_dropped.store(true, Ordering::Relaxed);
        }
    }

    /// Writes how many of this log's lines were dropped, if there is room.
    fn note_dropped(&self, writer: &Writer, now: &str) {
        let mut dropped = writer.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let Some(count) = dropped.remove(&self.path) else {
            return;
        };
        let note = format!(
            "{now} {:<5} callhost: {count} lines dropped: the disk did not keep up\n",
            level_name(LogLevel::Warn)
        );
        if writer
            .jobs
            .try_send(Job::Line(self.path.clone(), note))
            .is_err()
        {
            dropped.insert(self.path.clone(), count);
        }
        writer
            .any_dropped
            .store(!dropped.is_empty(), Ordering::Relaxed);
    }
}

/// Lines of a log at `min` or more severe.
pub fn read(path: &Path, min: LogLevel) -> Result<Vec<String>> {
    // Lines this process logged are on disk first.
    flush(std::time::Duration::from_secs(2));
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|line| at_least(line, min))
        .map(str::to_string)
        .collect())
}

/// Whether a log line is at `min` or more severe.
pub fn at_least(line: &str, min: LogLevel) -> bool {
    line.split_whitespace()
        .nth(1)
        .and_then(|level| parse_level(level).ok())
        .is_some_and(|level| level <= min)
}
