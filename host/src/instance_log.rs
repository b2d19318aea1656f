//! Per-instance log files: `<data>/instances/<name>/instance.log`.
//!
//! One line per entry: `<RFC 3339 time> <LEVEL> <target>: <message>`. The
//! host writes them (a module logs through host services), so the level an
//! administrator sets applies to module and host messages alike.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{bail, Context as _, Result};
use callhost_plugin_abi::LogLevel;

pub const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

pub fn parse_level(text: &str) -> Result<LogLevel> {
    Ok(match text.to_ascii_uppercase().as_str() {
        "ERROR" => LogLevel::Error,
        "WARN" | "WARNING" => LogLevel::Warn,
        "INFO" => LogLevel::Info,
        "DEBUG" => LogLevel::Debug,
        "TRACE" => LogLevel::Trace,
        _ => bail!("log level `{text}` is not one of {}", LEVELS.join(", ")),
    })
}

pub fn level_name(level: LogLevel) -> &'static str {
    LEVELS[level as usize - 1]
}

/// An instance's log with its current level.
pub struct InstanceLog {
    path: PathBuf,
    level: AtomicU8,
    file: Mutex<Option<std::fs::File>>,
}

impl InstanceLog {
    pub fn new(path: PathBuf, level: LogLevel) -> Arc<InstanceLog> {
        Arc::new(InstanceLog {
            path,
            level: AtomicU8::new(level as u8),
            file: Mutex::new(None),
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

    /// Appends one line when `level` passes the instance's level. Logging
    /// never fails a call: write errors go to the host's own log.
    pub fn write(&self, level: LogLevel, target: &str, message: &str) {
        if level > self.level() {
            return;
        }
        let line = format!(
            "{} {:<5} {}: {}\n",
            crate::db::now(),
            level_name(level),
            target,
            message.replace('\n', " ")
        );
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            *file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        match file.as_mut().map(|f| f.write_all(line.as_bytes())) {
            Some(Ok(())) => {}
            _ => tracing::warn!(path = %self.path.display(), "cannot write instance log"),
        }
    }
}

/// Lines of a log at `min` or more severe.
pub fn read(path: &Path, min: LogLevel) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|level| parse_level(level).ok())
                .is_some_and(|level| level <= min)
        })
        .map(str::to_string)
        .collect())
}
