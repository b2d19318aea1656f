//! What happens to a recording after it is sealed: uploads to the remote
//! targets (CR16, CR17), deletion here once every target has it, deletion
//! after the retention period, and a watch on the local disk (CR23).
//!
//! Uploads are queued with the recording's chain entry, sent a while after
//! the call by a background task of the instance, each file confirmed by
//! reading it back, retried until every target has it. Only then, and only
//! without a local target, are the files deleted here. The chain's head
//! goes along with every upload, so each target can show that newer
//! entries existed.
//!
//! A failed upload is an entry in the chain the first time ("upload
//! failed"), then a warning in the instance log at every retry; the queue
//! is in the recording log, so a restart (or a crash) resumes it.
//!
//! Retention deletes the audio, here and on the targets, never before
//! every target confirmed it; each deletion is an entry in the chain (the
//! recording's entry stays).

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callhost_plugin_sdk::tracing;
use callhost_storage::{self as storage, StorageError, Upload};

use crate::chain::{Chain, Entry, EntryKind, NewEntry, UploadState};
use crate::config::{expand_subdirectory, Config};
use crate::recording::{anchor_head, Place};

/// How often the queue is looked at.
const PASS: Duration = Duration::from_secs(1);
/// How often the disk and the retention period are looked at.
const MAINTENANCE: Duration = Duration::from_secs(60);
/// How often a full disk is warned about while it stays full.
const DISK_WARNING_EVERY: Duration = Duration::from_secs(3600);
/// Recordings taken per pass (the rest wait for the next).
const PER_PASS: usize = 20;

struct RemoteTarget {
    label: String,
    client: storage::Target,
    subdirectory: String,
    retain_days: Option<u32>,
}

pub struct Upkeep {
    place: Place,
    targets: Vec<RemoteTarget>,
    keeps_local: bool,
    retry: Duration,
    retention: Option<Duration>,
    min_free_bytes: u64,
    last_disk_warning: Mutex<Option<Instant>>,
    /// The TSA's URL and how often the head is stamped.
    timestamp: Option<(String, Duration)>,
    /// The queue's connection, opened on first use (blocking threads only).
    chain: Mutex<Option<Chain>>,
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now_utc() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Upkeep {
    /// Builds the remote targets and sets `place`'s upload labels from
    /// them (one place derives both).
    pub fn new(config: &Config, mut place: Place) -> Upkeep {
        let targets: Vec<RemoteTarget> = config
            .targets
            .iter()
            .filter_map(|target| {
                let client = target.remote()?;
                Some(RemoteTarget {
                    label: client.label(),
                    client,
                    subdirectory: target.subdirectory().to_string(),
                    retain_days: target.retain_days(),
                })
            })
            .collect();
        place.upload_targets = targets.iter().map(|t| t.label.clone()).collect();
        Upkeep {
            place,
            targets,
            keeps_local: config.keeps_local(),
            retention: config.retention(),
            min_free_bytes: config.min_free_disk_mb.saturating_mul(1024 * 1024),
            last_disk_warning: Mutex::new(None),
            timestamp: config
                .timestamp
                .as_ref()
                .map(|t| (t.url.clone(), t.every())),
            retry: config.retry_interval(),
            chain: Mutex::new(None),
        }
    }

    /// The place, with the labels a sealed recording is queued under.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// The background task: a pass every second while the instance lives.
    pub async fn run(upkeep: Weak<Upkeep>) {
        let mut last_maintenance: Option<Instant> = None;
        let mut last_stamp: Option<Instant> = None;
        loop {
            tokio::time::sleep(PASS).await;
            let Some(upkeep) = upkeep.upgrade() else {
                return;
            };
            if let Some((url, every)) = &upkeep.timestamp {
                if last_stamp.is_none_or(|at| at.elapsed() >= *every) {
                    last_stamp = Some(Instant::now());
                    if let Err(error) = crate::stamp::stamp_head(&upkeep.place, url).await {
                        tracing::warn!(
                            "chain head not time-stamped, tried again in {}: {error}",
                            humantime::format_duration(*every)
                        );
                        upkeep.place.notifier.notify("time stamp failed", error);
                    }
                }
            }
            upkeep.pass().await;
            if last_maintenance.is_none_or(|at| at.elapsed() >= MAINTENANCE) {
                last_maintenance = Some(Instant::now());
                upkeep.blocking(|u| u.watch_disk()).await;
                upkeep.apply_retention().await;
            }
        }
    }

    /// Warns (log and mail, hourly) while free space where recordings are
    /// written is below the minimum. Nothing is deleted for it.
    fn watch_disk(&self) {
        let Some(free) = free_bytes(&self.place.root) else {
            return;
        };
        let mut last = self
            .last_disk_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if free >= self.min_free_bytes {
            if last.take().is_some() {
                tracing::info!(
                    free_mb = free / (1024 * 1024),
                    "disk space for recordings is back"
                );
            }
            return;
        }
        if last.is_some_and(|at| at.elapsed() < DISK_WARNING_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let text = format!(
            "{} has {} MB free, below the configured {} MB. Recording goes on; nothing is deleted to make room{}.",
            self.place.root.display(),
            free / (1024 * 1024),
            self.min_free_bytes / (1024 * 1024),
            if self.targets.is_empty() {
                ""
            } else {
                " (files go only once every target confirmed them)"
            }
        );
        tracing::warn!("disk filling up: {text}");
        self.place.notifier.notify("disk filling up", text);
    }

    /// Deletes recordings past the retention period, here and on the
    /// targets, each deletion entered in the chain.
    async fn apply_retention(self: &Arc<Self>) {
        let Some(retention) = self.retention else {
            return;
        };
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        let Some(cutoff) = cutoff else {
            return;
        };
        let Some(expired) = self
            .read_chain("the recordings past retention", move |u, chain| {
                chain.expired(&u.place.instance, &cutoff, PER_PASS)
            })
            .await
        else {
            return;
        };
        for entry in expired {
            self.delete_expired(entry, retention).await;
        }
    }

    async fn delete_expired(self: &Arc<Self>, entry: Entry, retention: Duration) {
        let name = entry.fields.name.clone();
        let uploads = self
            .read_chain("a recording's uploads", move |_, chain| {
                chain.uploads_of(&name)
            })
            .await
            .unwrap_or_default();
        if let Some(pending) = uploads.iter().find(|u| u.done.is_none()) {
            tracing::warn!(
                recording = %entry.fields.name,
                "past its retention period but not yet on {}: kept until it is",
                pending.target
            );
            return;
        }
        let mut done = Vec::new();
        let mut kept = Vec::new();
        for target in &self.targets {
            if !uploads.iter().any(|u| u.target == target.label) {
                continue; // never sent there (configured later)
            }
            let remote_dir = remote_dir(&target.subdirectory, &entry.fields.started);
            let files: Vec<String> = entry
                .fields
                .files
                .iter()
                .map(|f| remote_path(&remote_dir, f))
                .collect();
            match target.client.delete(&files).await {
                Ok(()) if target.retain_days.is_some() => done.push(format!(
                    "{} (Object Lock keeps its versions until their retain-until date)",
                    target.label
                )),
                Ok(()) => done.push(target.label.clone()),
                Err(error) => kept.push(format!("{}: {}", target.label, describe(&error))),
            }
        }
        if !kept.is_empty() {
            // Tried again at the next pass; nothing entered until done.
            tracing::warn!(recording = %entry.fields.name, "past retention, not deleted on {}", kept.join("; "));
            return;
        }
        let retention_text = humantime::format_duration(retention).to_string();
        self.blocking(move |u| u.enter_deletion(&entry, &retention_text, &done))
            .await;
    }

    fn enter_deletion(&self, entry: &Entry, retention: &str, remote: &[String]) {
        let directory = Path::new(&entry.fields.directory);
        for file in &entry.fields.files {
            let path = directory.join(file);
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!("retention: cannot delete {}: {error}", path.display());
                    return;
                }
            }
        }
        let _ = std::fs::remove_dir(directory);
        let mut detail = format!("retention of {retention} passed: audio and files deleted here");
        if !remote.is_empty() {
            detail.push_str(&format!(" and on {}", remote.join(", ")));
        }
        match self.enter_about(EntryKind::Deletion, &entry.fields, "deleted", &detail) {
            Ok(deletion) => {
                tracing::info!(recording = %entry.fields.name, seq = deletion.seq, "{detail}")
            }
            Err(error) => {
                tracing::error!(recording = %entry.fields.name, "deletion not entered: {error}")
            }
        }
    }

    /// An entry about a recording (its failed upload, its deletion): the
    /// recording's facts, this status and detail; the head anchored after.
    fn enter_about(
        &self,
        kind: EntryKind,
        recording: &NewEntry,
        status: &str,
        detail: &str,
    ) -> Result<Entry, String> {
        let place = &self.place;
        let entry = self.with_chain(|chain| {
            let entry = chain
                .append(kind, |_, _| {
                    Ok::<_, String>(NewEntry {
                        name: recording.name.clone(),
                        instance: place.instance.clone(),
                        call_id: recording.call_id.clone(),
                        started: recording.started.clone(),
                        ended: now_utc(),
                        status: status.into(),
                        detail: detail.into(),
                        directory: recording.directory.clone(),
                        parties: recording.parties.clone(),
                        ..NewEntry::default()
                    })
                })
                .map_err(|e| e.to_string())??;
            anchor_head(place, chain);
            Ok(entry)
        })?;
        Ok(entry)
    }

    fn with_chain<T>(
        &self,
        work: impl FnOnce(&mut Chain) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut slot = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Chain::open(&self.place.chain_path()).map_err(|e| e.to_string())?);
        }
        let chain = slot.as_mut().expect("opened above");
        let result = work(chain);
        if result.is_err() {
            *slot = None; // reopened next time
        }
        result
    }

    /// On a blocking thread: SQLite and file hashing are not for the
    /// runtime's workers.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Upkeep) -> T + Send + 'static,
    ) -> Option<T> {
        let this = self.clone();
        // Its log lines go to the instance's log, as the task's do.
        let dispatch = tracing::dispatcher::get_default(|current| current.clone());
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch, || work(&this))
        })
        .await
        .ok()
    }

    /// A read of the recording log on a blocking thread; a failure is
    /// logged (naming `what`) and is `None`.
    async fn read_chain<T: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        read: impl FnOnce(&Upkeep, &mut Chain) -> Result<T, crate::chain::ChainError> + Send + 'static,
    ) -> Option<T> {
        let result = self
            .blocking(move |u| u.with_chain(|chain| read(u, chain).map_err(|e| e.to_string())))
            .await?;
        result
            .map_err(|error| tracing::error!("cannot read {what}: {error}"))
            .ok()
    }

    pub async fn pass(self: &Arc<Self>) {
        if self.targets.is_empty() {
            return;
        }
        let Some(due) = self
            .read_chain("the upload queue", |u, chain| {
                chain.due_uploads(&u.place.instance, unix_now(), PER_PASS)
            })
            .await
        else {
            return;
        };
        for upload in due {
            self.attempt(upload).await;
        }
    }

    async fn attempt(self: &Arc<Self>, queued: UploadState) {
        let Some(target_index) = self.targets.iter().position(|t| t.label == queued.target) else {
            // Configured once, not any more: kept (never deleted early),
            // tried again later in case it comes back.
            let error = format!("target {} is no longer configured", queued.target);
            self.record_failure(queued, error).await;
            return;
        };
        let name = queued.name.clone();
        let files = self
            .blocking(move |u| u.files_of(&name, target_index))
            .await
            .unwrap_or_else(|| Err("the upload's preparation panicked".into()));
        let (entry, uploads) = match files {
            Ok(files) => files,
            Err(error) => {
                self.record_failure(queued, error).await;
                return;
            }
        };
        let target = &self.targets[target_index];
        let stored = target.client.store(&uploads).await;
        match stored {
            Ok(()) => {
                tracing::info!(
                    recording = %queued.name,
                    target = %target.label,
                    files = uploads.len(),
                    attempts = queued.attempts + 1,
                    "uploaded and confirmed"
                );
                self.blocking(move |u| u.record_success(&queued, &entry))
                    .await;
            }
            Err(error) => self.record_failure(queued, describe(&error)).await,
        }
    }

    /// The recording's files for one target, hashed, and the chain's head.
    fn files_of(&self, name: &str, target: usize) -> Result<(Entry, Vec<Upload>), String> {
        let entry = self
            .with_chain(|chain| chain.entry_named(name).map_err(|e| e.to_string()))?
            .filter(|e| e.kind == EntryKind::Recording)
            .ok_or_else(|| format!("{name} is not in the recording log"))?;
        let target = &self.targets[target];
        let directory = Path::new(&entry.fields.directory);
        let remote_dir = remote_dir(&target.subdirectory, &entry.fields.started);
        let retain_until = target.retain_days.and_then(|days| {
            humantime::parse_rfc3339(&entry.fields.started)
                .ok()
                .map(|started| started + Duration::from_secs(u64::from(days) * 86_400))
        });
        let mut uploads = Vec::new();
        for file in &entry.fields.files {
            let mut upload = Upload::of_file(&directory.join(file), remote_path(&remote_dir, file))
                .map_err(|e| describe(&e))?;
            upload.retain_until = retain_until;
            uploads.push(upload);
        }
        // The newest stamp of the head travels too (unique names: sent
        // once, found there after).
        if let Some(stamp) = crate::stamp::stamps(&self.place).last() {
            for path in [&stamp.head, &stamp.reply] {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if let Some(name) = name {
                    uploads.push(
                        Upload::of_file(path, format!("timestamps/{name}"))
                            .map_err(|e| describe(&e))?,
                    );
                }
            }
        }
        let head = self.place.head_path();
        if head.exists() {
            let mut upload =
                Upload::of_file(&head, "chain-head.txt".into()).map_err(|e| describe(&e))?;
            upload.replace = true;
            uploads.push(upload);
        }
        Ok((entry, uploads))
    }

    fn record_success(&self, queued: &UploadState, entry: &Entry) {
        let result = self.with_chain(|chain| {
            chain
                .upload_done(&queued.name, &queued.target, &now_utc())
                .map_err(|e| e.to_string())?;
            chain.uploads_of(&queued.name).map_err(|e| e.to_string())
        });
        let all = match result {
            Ok(all) => all,
            Err(error) => {
                // Not marked: it is sent again and found there already.
                tracing::error!(recording = %queued.name, "upload confirmed but not noted: {error}");
                return;
            }
        };
        if self.keeps_local || all.iter().any(|u| u.done.is_none()) {
            return;
        }
        let directory = Path::new(&entry.fields.directory);
        for file in &entry.fields.files {
            let path = directory.join(file);
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {error}", path.display());
                }
            }
        }
        let _ = std::fs::remove_dir(directory); // only when it is empty
        tracing::info!(
            recording = %queued.name,
            targets = all.len(),
            "deleted here: every target confirmed it"
        );
    }

    async fn record_failure(self: &Arc<Self>, queued: UploadState, error: String) {
        let next = unix_now() + self.retry.as_secs() as i64;
        let retry = humantime::format_duration(self.retry).to_string();
        tracing::warn!(
            recording = %queued.name,
            target = %queued.target,
            attempt = queued.attempts + 1,
            "upload failed, tried again in {retry}: {error}"
        );
        self.blocking(move |u| {
            let noted = u.with_chain(|chain| {
                chain
                    .upload_failed(&queued.name, &queued.target, &error, next)
                    .map_err(|e| e.to_string())
            });
            if let Err(db_error) = noted {
                tracing::error!(recording = %queued.name, "upload failure not noted: {db_error}");
            }
            // The first failure is on record in the chain; the retries are
            // in the log.
            if queued.attempts == 0 {
                u.enter_upload_failure(&queued, &error, &retry);
            }
        })
        .await;
    }

    fn enter_upload_failure(&self, queued: &UploadState, error: &str, retry: &str) {
        let recording = self
            .with_chain(|chain| chain.entry_named(&queued.name).map_err(|e| e.to_string()))
            .ok()
            .flatten()
            .map(|e| e.fields)
            .unwrap_or_else(|| NewEntry {
                name: queued.name.clone(),
                ..NewEntry::default()
            });
        let detail = format!(
            "upload to {} failed: {error}; tried again every {retry}, kept here until it arrives",
            queued.target
        );
        match self.enter_about(EntryKind::Failure, &recording, "upload failed", &detail) {
            Ok(entry) => {
                tracing::warn!(recording = %queued.name, seq = entry.seq, "entered: upload failed");
                self.place.notifier.notify(
                    "upload failed",
                    format!(
                        "{} to {}: {error}. Tried again every {retry}; kept here until it arrives.",
                        queued.name, queued.target
                    ),
                );
            }
            Err(error) => {
                tracing::error!(recording = %queued.name, "upload failure not entered: {error}")
            }
        }
    }
}

/// A recording's directory on a target: the subdirectory template filled
/// in from its start.
fn remote_dir(template: &str, started: &str) -> Vec<String> {
    expand_subdirectory(template, started)
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect()
}

fn remote_path(directory: &[String], file: &str) -> String {
    let mut parts = directory.to_vec();
    parts.push(file.to_string());
    parts.join("/")
}

/// Free bytes for an unprivileged writer on the file system holding
/// `path` (or its nearest existing parent).
fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stats = nix::sys::statvfs::statvfs(existing).ok()?;
    Some((stats.blocks_available() as u64).saturating_mul(stats.fragment_size() as u64))
}

/// An upload error for the log and the chain: its message, and whether
/// waiting helps.
fn describe(error: &StorageError) -> String {
    if error.is_retryable() {
        error.to_string()
    } else {
        format!("{error} (needs a change of configuration or on the target)")
    }
}
