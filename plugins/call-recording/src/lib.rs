//! Call recording (CR1–CR27): the calls of configured users, groups and
//! numbers, recorded from call setup to hangup in their own codec, signed,
//! linked in a hash chain and entered in the recording log. See
//! `docs/modules/call-recording.md`.
//!
//! Where the work happens:
//! - call setup (the call's own thread): only decides and claims; no I/O;
//! - the instance's media thread: frames into the files
//!   ([`callhost_recording::audio`]);
//! - a thread per finished recording: metadata, checksums, signature and
//!   the chain entry ([`recording`]);
//! - actions run in whichever process asks (CLI, API) and read only what
//!   is on disk: the log, the key store, the files.

pub mod chain;
pub mod config;
pub mod notify;
pub mod recording;
pub mod select;
pub mod stamp;
pub mod upkeep;

use std::sync::{Arc, Mutex, OnceLock};

use callhost_plugin_sdk::{
    config_error, export_module, serde_json, serde_json::json, tracing, Action, CallEvent,
    CallSetup, ConfigError, Context, Decision, Direction, EventKind, MediaFrame, Module, Setup,
    TapRequest,
};
use callhost_recording::evidence;

use crate::chain::{Chain, EntryKind, NewEntry};
use crate::config::Config;
use crate::recording::{CallInfo, Place, Recordings};

pub struct CallRecording {
    config: Config,
    ctx: Context,
    recordings: Arc<Recordings>,
    upkeep: Arc<upkeep::Upkeep>,
}

/// The first instance of this library to activate in a process holds the
/// recorder lock: only it repairs what a crash left, and only when no
/// other process (another host on the same data) records.
static RECORDER_LOCK: OnceLock<Mutex<Option<std::fs::File>>> = OnceLock::new();

impl CallRecording {
    fn place(ctx: &Context, config: &Config) -> Result<Place, ConfigError> {
        let passphrase = ctx
            .module_secret("key-store")
            .ok_or_else(|| config_error("(host)", "the host offers no secret for the key store"))?;
        Ok(Place {
            instance: ctx.instance.clone(),
            module_dir: ctx.module_dir.clone(),
            root: config.local_root(&ctx.data_dir),
            channels: config.channels.channels(),
            channels_text: config.channels.describe(),
            host_version: ctx.host_version(),
            installation_id: ctx.installation_id(),
            passphrase: hex::encode(passphrase).into_bytes(),
            // Filled in by `Upkeep::new`, which builds the targets.
            upload_targets: Vec::new(),
            upload_delay: config.upload_delay(),
            notifier: Default::default(),
        })
    }

    /// Takes the recorder lock for this process if nobody holds it; true
    /// when this process has it.
    fn recorder_lock(&self) -> bool {
        let slot = RECORDER_LOCK.get_or_init(Mutex::default);
        let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return true;
        }
        let path = self.ctx.module_dir.join("recorder.lock");
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                true
            }
            Err(_) => false,
        }
    }
}

impl Module for CallRecording {
    type Config = Config;

    fn new(ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        for (field, notice) in [
            ("notice_incoming", &config.notice_incoming),
            ("notice_outgoing", &config.notice_outgoing),
        ] {
            if let Some(name) = notice {
                if !ctx.data_dir.join("assets").join(name).is_file() {
                    return Err(config_error(
                        field,
                        format!(
                            "the instance has no asset {name:?}; add it first with `callhost instance asset add {} FILE`",
                            ctx.instance
                        ),
                    ));
                }
            }
        }
        let upkeep = upkeep::Upkeep::new(&config, Self::place(ctx, &config)?);
        let place = upkeep.place().clone();
        let stop_digits = config.stop_digits.clone();
        Ok(CallRecording {
            upkeep: Arc::new(upkeep),
            recordings: Arc::new(Recordings::new(ctx, place, stop_digits)),
            config,
            ctx: ctx.clone(),
        })
    }

    fn activate(&self) {
        let place = self.recordings.place().clone();
        // The certificate at every start (CR12), so it is on record in the
        // instance log; the key pair is made the first time.
        match place.key_store() {
            Ok(store) => {
                let current = store.current();
                tracing::info!(
                    fingerprint = %current.fingerprint,
                    subject = %current.subject,
                    not_after = %current.not_after,
                    "signing certificate:\n{}",
                    current.pem
                );
            }
            Err(error) => tracing::error!("the key store cannot be opened: {error}"),
        }
        if self.recorder_lock() {
            self.ctx
                .spawn_blocking(move || recording::repair_after_crash(&place));
        }
        // The writer: a thread of its own, ending with the instance.
        let recordings = Arc::downgrade(&self.recordings);
        let started = std::thread::Builder::new()
            .name(format!("callhost-rec-{}", self.ctx.instance))
            .spawn(move || loop {
                std::thread::sleep(recording::WRITER_PASS);
                let Some(recordings) = recordings.upgrade() else {
                    return;
                };
                recordings.write_pass();
            });
        if let Err(error) = started {
            tracing::error!("cannot start the recording writer: {error}");
        }
        if let Some(mail) = &self.config.mail {
            if let Some(task) = self
                .recordings
                .place()
                .notifier
                .start(mail, &self.ctx.instance)
            {
                self.ctx.spawn_service(task);
            }
        }
        // The uploads: a task of the instance's, ending with it. What it
        // has not sent stays queued in the recording log for the next start.
        self.ctx
            .spawn_service(upkeep::Upkeep::run(Arc::downgrade(&self.upkeep)));
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        let Some(reason) = select::selects(&self.config, setup) else {
            return Setup::Ready(Decision::default());
        };
        // Another instance (earlier in the order) records it already, or
        // an earlier hop of this call was claimed by this one.
        if !recording::claim(&setup.call_id, &self.ctx.instance) {
            return Setup::Ready(Decision::default());
        }
        let place = self.recordings.place();
        // The notice for this direction (internal calls get none): played
        // to the caller by the host, recorded from its end.
        let notice = match setup.direction {
            Direction::Incoming => self.config.notice_incoming.as_ref(),
            Direction::Outgoing => self.config.notice_outgoing.as_ref(),
            Direction::Internal => None,
        }
        .map(|name| format!("instance/{name}"));
        self.recordings.claimed(
            CallInfo::new(setup, &reason, &place.root, self.config.subdirectory()),
            notice.clone(),
        );
        Setup::Ready(Decision {
            prompt: notice.map(Into::into).into(),
            tap: TapRequest::Both,
            reason: Some(format!("recorded: {}", reason.describe()).into()).into(),
            ..Decision::default()
        })
    }

    fn call_event(&self, event: &CallEvent) {
        let call_id = event.call_id.as_str();
        let party = event
            .party
            .as_ref()
            .into_option()
            .map(|p| p.label().to_string());
        match event.kind {
            EventKind::DTMF => self.recordings.key(call_id, event.detail.as_str(), party),
            EventKind::ANSWERED => self.recordings.answered(call_id, party),
            EventKind::TRANSFERRED => self
                .recordings
                .transferred(call_id, party.unwrap_or_else(|| event.detail.to_string())),
            EventKind::HANGUP | EventKind::REJECTED => self.recordings.hangup(call_id),
            EventKind::PROMPT_ENDED => self.recordings.prompt_ended(call_id, event.detail.as_str()),
            _ => {}
        }
    }

    fn media(&self, frame: &MediaFrame<'_>) {
        let audio_frame = callhost_recording::audio::Frame {
            sequence: frame.sequence,
            timestamp: frame.timestamp,
            payload_type: frame.payload_type,
            marker: frame.marker,
            payload: frame.payload.as_slice(),
        };
        self.recordings
            .frame(frame.call_id.as_str(), frame.leg, &audio_frame);
    }

    fn media_gap(&self, call_id: &str, leg: TapRequest, frames: u32) {
        self.recordings.gap(call_id, leg, frames);
    }

    fn media_end(&self, call_id: &str) {
        self.recordings.media_end(call_id);
    }
}

/// The admin actions, bound to their names in `export_module!` below.
impl CallRecording {
    fn chain(&self) -> Result<Chain, String> {
        Chain::open(&self.recordings.place().chain_path()).map_err(|e| e.to_string())
    }

    /// `recordings [--json] [--from T] [--to T] [--party TEXT] [--status S]`
    fn recordings(&self, args: &[String]) -> Action {
        let filter = match Filter::parse(args) {
            Ok(filter) => filter,
            Err(error) => return Action::Ready(Err(error)),
        };
        let chain = match self.chain() {
            Ok(chain) => chain,
            Err(error) => return Action::Ready(Err(error)),
        };
        let entries = match chain.entries() {
            Ok(entries) => entries,
            Err(error) => return Action::Ready(Err(error.to_string())),
        };
        let listed: Vec<serde_json::Value> = entries
            .iter()
            .filter(|e| e.kind != EntryKind::KeyRotation && filter.keeps(&e.fields))
            .map(|e| {
                let directory = std::path::Path::new(&e.fields.directory);
                let files: Vec<std::path::PathBuf> =
                    e.fields.files.iter().map(|f| directory.join(f)).collect();
                // Only the recording's own entry has uploads; a later
                // "upload failed" entry names the same recording.
                let uploads = if e.kind == EntryKind::Recording {
                    chain.uploads_of(&e.fields.name).unwrap_or_default()
                } else {
                    Vec::new()
                };
                json!({
                    "name": e.fields.name,
                    "status": e.fields.status,
                    "kind": e.kind,
                    "started": e.fields.started,
                    "ended": e.fields.ended,
                    "instance": e.fields.instance,
                    "call_id": e.fields.call_id,
                    "parties": e.fields.parties,
                    "detail": e.fields.detail,
                    "chain_position": e.seq,
                    "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    // Deleted here once every remote target confirmed them.
                    "kept_here": !files.is_empty() && files.iter().all(|f| f.exists()),
                    "uploads": uploads.iter().map(|u| json!({
                        "target": u.target,
                        "state": if u.done.is_some() { "confirmed" } else if u.attempts > 0 { "retrying" } else { "queued" },
                        "attempts": u.attempts,
                        "confirmed": u.done,
                        "last_error": u.last_error,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        Action::Ready(Ok(json!(listed)))
    }

    /// `verify [PATH…] [--json]`: every recording named (a file of it or
    /// its name), or all; one status per check; an error when any failed.
    fn verify(&self, args: &[String]) -> Action {
        let as_json = args.iter().any(|a| a == "--json");
        let wanted: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .collect();
        let place = self.recordings.place().clone();
        Action::Later(Box::pin(async move {
            tokio::task::spawn_blocking(move || verify::run(&place, &wanted, as_json))
                .await
                .map_err(|e| e.to_string())?
        }))
    }

    /// `certificate`: the current certificate, PEM.
    fn certificate(&self, _args: &[String]) -> Action {
        Action::Ready(
            self.recordings
                .place()
                .key_store()
                .map(|store| json!(store.current().pem)),
        )
    }

    /// `rotate-key`: a new key pair; the rotation is an entry in the chain
    /// and the old certificate stays for the old recordings.
    fn rotate_key(&self, _args: &[String]) -> Action {
        let place = self.recordings.place().clone();
        let answer = (|| {
            let mut store = place.key_store()?;
            let (old, new) = store.rotate().map_err(|e| e.to_string())?;
            let mut chain = Chain::open(&place.chain_path()).map_err(|e| e.to_string())?;
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let signature = store
                .sign(format!("key rotation {old} -> {new}").as_bytes())
                .map_err(|e| e.to_string())?;
            let entry = chain
                .append(EntryKind::KeyRotation, |_, _| {
                    Ok::<_, String>(NewEntry {
                        name: format!("key-rotation-{now}"),
                        instance: place.instance.clone(),
                        started: now.clone(),
                        ended: now.clone(),
                        status: "rotated".into(),
                        detail: format!("signing key {old} replaced by {new}"),
                        signature,
                        certificate: new.clone(),
                        ..NewEntry::default()
                    })
                })
                .map_err(|e| e.to_string())??;
            tracing::info!(old = %old, new = %new, seq = entry.seq, "signing key rotated");
            Ok::<_, String>(
                json!({ "old": old, "new": new, "chain_position": entry.seq, "certificate": store.current().pem }),
            )
        })();
        Action::Ready(answer)
    }
}

mod verify;

/// What `recordings` filters by.
#[derive(Default)]
struct Filter {
    from: Option<String>,
    to: Option<String>,
    party: Option<String>,
    status: Option<String>,
}

impl Filter {
    fn parse(args: &[String]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--json" => {}
                "--from" => filter.from = Some(value("--from")?),
                "--to" => filter.to = Some(value("--to")?),
                "--party" => filter.party = Some(value("--party")?),
                "--status" => filter.status = Some(value("--status")?),
                other => {
                    return Err(format!(
                        "unknown option {other:?}; use --from TIME, --to TIME, --party TEXT, --status STATUS, --json"
                    ))
                }
            }
        }
        Ok(filter)
    }

    fn keeps(&self, entry: &NewEntry) -> bool {
        // RFC 3339 UTC sorts as text: a date alone is its midnight.
        self.from
            .as_ref()
            .is_none_or(|from| entry.started.as_str() >= from.as_str())
            && self
                .to
                .as_ref()
                .is_none_or(|to| entry.started.as_str() <= to.as_str())
            && self.status.as_ref().is_none_or(|s| &entry.status == s)
            && self.party.as_ref().is_none_or(|party| {
                let party = party.to_lowercase();
                entry
                    .parties
                    .iter()
                    .any(|p| p.to_lowercase().contains(&party))
            })
    }
}

/// The certificate check, shared by `verify`.
pub(crate) fn certificates(place: &Place) -> Result<Vec<evidence::Certificate>, String> {
    place.key_store().map(|store| store.certificates().to_vec())
}

export_module! {
    module: CallRecording,
    id: "call-recording",
    name: "Call recording",
    description: "Records chosen calls in their own codec, signed and chained, never lost",
    hooks: [quick_setup, call_event, media],
    actions: [
        { name: "recordings", usage: "[--json] [--from TIME] [--to TIME] [--party TEXT] [--status STATUS]", help: "Recordings and failures in the log, with their files, status and chain position", handler: CallRecording::recordings },
        { name: "verify", usage: "[PATH…] [--json]", help: "Check recordings (all, or the ones named): checksums, signature, certificate, chain link", handler: CallRecording::verify },
        { name: "certificate", usage: "", help: "The current signing certificate (PEM)", handler: CallRecording::certificate },
        { name: "rotate-key", usage: "", help: "Make a new signing key pair; the chain records it, old certificates stay", handler: CallRecording::rotate_key },
    ],
}
