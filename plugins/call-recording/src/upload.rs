//! Uploads to the remote targets (CR16, CR17): queued with the recording's
//! chain entry, sent a while after the call by a background task of the
//! instance, each file confirmed by reading it back, retried until every
//! target has it. Only then, and only without a local target, are the
//! files deleted here. The chain's head goes along with every upload, so
//! each target can show that newer entries existed.
//!
//! A failed upload is an entry in the chain the first time ("upload
//! failed"), then a warning in the instance log at every retry; the queue
//! is in the recording log, so a restart (or a crash) resumes it.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callhost_plugin_sdk::tracing;
use callhost_storage::{self as storage, StorageError, Upload};

use crate::chain::{Chain, Entry, EntryKind, NewEntry, UploadState};
use crate::config::{expand_subdirectory, Config};
use crate::recording::{anchor_head, Place};

/// How often the queue is looked at.
const PASS: Duration = Duration::from_secs(1);
/// Recordings taken per pass (the rest wait for the next).
const PER_PASS: usize = 20;

struct RemoteTarget {
    label: String,
    client: storage::Target,
    subdirectory: String,
    retain_days: Option<u32>,
}

pub struct Uploader {
    place: Place,
    targets: Vec<RemoteTarget>,
    keeps_local: bool,
    retry: Duration,
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

impl Uploader {
    pub fn new(config: &Config, place: Place) -> Uploader {
        let targets = config
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
        Uploader {
            place,
            targets,
            keeps_local: config.keeps_local(),
            retry: config.retry_interval(),
            chain: Mutex::new(None),
        }
    }

    /// The labels a recording is queued under (for [`Place`]).
    pub fn labels(config: &Config) -> Vec<String> {
        config
            .targets
            .iter()
            .filter_map(|t| t.remote().map(|client| client.label()))
            .collect()
    }

    /// The background task: a pass every second while the instance lives.
    pub async fn run(uploader: Weak<Uploader>) {
        loop {
            tokio::time::sleep(PASS).await;
            let Some(uploader) = uploader.upgrade() else {
                return;
            };
            uploader.pass().await;
        }
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
        work: impl FnOnce(&Uploader) -> T + Send + 'static,
    ) -> Option<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(&this)).await.ok()
    }

    pub async fn pass(self: &Arc<Self>) {
        if self.targets.is_empty() {
            return;
        }
        let due = self
            .blocking(|u| {
                u.with_chain(|chain| {
                    chain
                        .due_uploads(&u.place.instance, unix_now(), PER_PASS)
                        .map_err(|e| e.to_string())
                })
            })
            .await;
        let due = match due {
            Some(Ok(due)) => due,
            Some(Err(error)) => {
                tracing::error!("cannot read the upload queue: {error}");
                return;
            }
            None => return,
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
        let subdirectory = expand_subdirectory(&target.subdirectory, &entry.fields.started);
        let remote_dir: Vec<String> = subdirectory
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let retain_until = target.retain_days.and_then(|days| {
            humantime::parse_rfc3339(&entry.fields.started)
                .ok()
                .map(|started| started + Duration::from_secs(u64::from(days) * 86_400))
        });
        let mut uploads = Vec::new();
        for file in &entry.fields.files {
            let mut remote = remote_dir.clone();
            remote.push(file.clone());
            let mut upload = Upload::of_file(&directory.join(file), remote.join("/"))
                .map_err(|e| describe(&e))?;
            upload.retain_until = retain_until;
            uploads.push(upload);
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
        let place = &self.place;
        let appended = self.with_chain(|chain| {
            let recording = chain
                .entry_named(&queued.name)
                .map_err(|e| e.to_string())?
                .map(|e| e.fields)
                .unwrap_or_else(|| NewEntry {
                    name: queued.name.clone(),
                    ..NewEntry::default()
                });
            let now = now_utc();
            chain
                .append(EntryKind::Failure, |_, _| {
                    Ok::<_, String>(NewEntry {
                        name: recording.name.clone(),
                        instance: place.instance.clone(),
                        call_id: recording.call_id.clone(),
                        started: recording.started.clone(),
                        ended: now,
                        status: "upload failed".into(),
                        detail: format!(
                            "upload to {} failed: {error}; tried again every {retry}, kept here until it arrives",
                            queued.target
                        ),
                        directory: recording.directory.clone(),
                        parties: recording.parties.clone(),
                        ..NewEntry::default()
                    })
                })
                .map_err(|e| e.to_string())?
        });
        match appended {
            Ok(entry) => {
                tracing::warn!(recording = %queued.name, seq = entry.seq, "entered: upload failed");
                if let Ok(slot) = self.chain.lock() {
                    if let Some(chain) = slot.as_ref() {
                        anchor_head(place, chain);
                    }
                }
            }
            Err(error) => {
                tracing::error!(recording = %queued.name, "upload failure not entered: {error}")
            }
        }
    }
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
