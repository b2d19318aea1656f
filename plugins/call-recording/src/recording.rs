//! The calls an instance records, from the claim at call setup to the
//! entry in the chain.
//!
//! A call moves through [`CallState`]: claimed at setup (no I/O on the
//! call's thread), recording from its first frame (files created on the
//! media thread), stopped by `*1`, and entered once its media is over (the
//! host's `media_end`) — or, when no media ever came (the call ended before
//! it reached the relay), a while after its hangup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use callhost_plugin_sdk::{tracing, CallSetup, Context, Direction, Party, TapRequest};
use callhost_recording::audio::{self, AudioSummary, Channels, Recorder, Side};
use callhost_recording::evidence::{self, KeyStore};
use serde::{Deserialize, Serialize};

use crate::chain::{self, Chain, EntryKind, NewEntry};
use crate::select::Reason;

/// Calls some instance of this library records, by call id: the first
/// instance (in the administrator's order) to claim a call records it, no
/// other does (CR20), and the later hops of a call are not claimed again.
static CLAIMS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

/// The connection recordings are entered through, kept open between
/// batches (opening one parses the schema). One batch at a time per
/// process, so the chain's head file follows the entries in order.
static ENTRIES: Mutex<Option<Chain>> = Mutex::new(None);

/// An instance's calls whose media is over, waiting to be entered, and
/// whether its drainer is at work on them.
#[derive(Default)]
struct Finished {
    calls: Vec<(String, RecordedCall)>,
    draining: bool,
}

/// Calls one drainer pass takes at most.
const CALLS_PER_PASS: usize = 256;
/// Audio one chain transaction seals at most (the first recording always
/// goes in): sealing hashes the files while the chain is locked, and the
/// media thread's notes wait for that lock.
const AUDIO_BYTES_PER_BATCH: u64 = 32 << 20;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Claims `call_id` for `instance`; false when another instance has it.
pub fn claim(call_id: &str, instance: &str) -> bool {
    let mut claims = lock(&CLAIMS);
    match claims.get(call_id) {
        Some(owner) => owner == instance,
        None => {
            claims.insert(call_id.to_string(), instance.to_string());
            true
        }
    }
}

fn release(call_id: &str) {
    lock(&CLAIMS).remove(call_id);
}

/// What the metadata says about a call, known at setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub direction: String,
    pub caller: PartyInfo,
    pub callee: PartyInfo,
    pub dialled: String,
    pub reason: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_utc: String,
    pub name: String,
    pub directory: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartyInfo {
    pub number: String,
    pub name: Option<String>,
    pub id: Option<String>,
}

impl PartyInfo {
    fn of(party: &Party) -> PartyInfo {
        PartyInfo {
            number: party.number.to_string(),
            name: party.known_name().map(str::to_string),
            id: party.id.as_ref().into_option().map(|n| n.to_string()),
        }
    }

    fn describe(&self) -> String {
        let mut text = self.number.clone();
        if let Some(name) = &self.name {
            text.push_str(&format!(" \"{name}\""));
        }
        if let Some(id) = &self.id {
            text.push_str(&format!(" ({id})"));
        }
        text
    }
}

impl CallInfo {
    pub fn new(setup: &CallSetup, reason: &Reason, root: &Path, subdirectory: &str) -> CallInfo {
        let now = SystemTime::now();
        let started_utc = humantime::format_rfc3339_seconds(now).to_string();
        let caller = PartyInfo::of(&setup.caller);
        let callee = PartyInfo::of(&setup.callee);
        let name = recording_name(&started_utc, &caller.number, &callee.number, &setup.call_id);
        CallInfo {
            call_id: setup.call_id.to_string(),
            direction: match setup.direction {
                Direction::Incoming => "incoming",
                Direction::Outgoing => "outgoing",
                Direction::Internal => "internal",
            }
            .into(),
            caller,
            callee,
            dialled: setup.dialled.to_string(),
            reason: reason.describe(),
            directory: root.join(crate::config::expand_subdirectory(
                subdirectory,
                &started_utc,
            )),
            started_utc,
            name,
        }
    }

    fn parties(&self) -> Vec<String> {
        [&self.caller, &self.callee]
            .iter()
            .flat_map(|p| {
                std::iter::once(p.number.clone())
                    .chain(p.name.clone())
                    .chain(p.id.clone())
            })
            .collect()
    }
}

/// `20261202T192501Z_<caller>_<callee>_<call hash>`: the UTC start first,
/// so alphabetical is chronological (CR11); numbers reduced to characters
/// every file system takes; a short hash of the call id keeps two calls of
/// one second apart.
pub fn recording_name(started_utc: &str, caller: &str, callee: &str, call_id: &str) -> String {
    let stamp: String = started_utc
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let safe = |number: &str| -> String {
        let kept: String = number
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .take(32)
            .collect();
        if kept.is_empty() {
            "unknown".into()
        } else {
            kept
        }
    };
    use sha2::Digest as _;
    let call = hex::encode(&sha2::Sha256::digest(call_id.as_bytes())[..4]);
    format!("{stamp}_{}_{}_{call}", safe(caller), safe(callee))
}

/// Where a recorded call is. Only the writer touches a recorder, never
/// the media thread (which only queues frames).
enum CallState {
    /// Tapped at setup; no file yet.
    Claimed,
    /// Frames are being written.
    Recording(Box<Recorder>),
    /// Out with the writer for this pass.
    Writing,
    /// Stopped by a party's keys (or an error): the audio is closed, its
    /// summary waits for the call's end; later frames are ignored.
    Stopped(Option<Box<Result<AudioSummary, String>>>),
}

/// A frame queued by the media thread for the writer.
struct Inbound {
    side: Side,
    at: Instant,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    marker: bool,
    payload: Vec<u8>,
}

struct RecordedCall {
    info: CallInfo,
    started: Instant,
    state: CallState,
    /// Frames waiting for the writer, and frames dropped because the
    /// inbox was full (reported to the recorder as gaps).
    inbox: Vec<Inbound>,
    inbox_dropped: [u32; 2],
    /// The host's `media_end` came: every frame is in the inbox.
    media_over: bool,
    /// The stop keys were pressed at this time.
    stop_at: Option<Instant>,
    hangup_at: Option<Instant>,
    answered_by: Option<String>,
    transfers: Vec<String>,
    /// The last keys pressed, for the stop sequence.
    keys: String,
    /// Why it stopped before hangup, if it did.
    stopped: Option<String>,
    last_tick: Instant,
    notice: Notice,
}

/// The notice played to the caller before the recording (CR7).
enum Notice {
    None,
    /// Playing: frames are not recorded yet.
    Playing(String),
    /// Over; what the metadata says about it.
    Over(String),
}

/// A notice whose end the host never reported (a host without prompts,
/// a simulator) holds the recording back this long at most.
const NOTICE_LIMIT: Duration = Duration::from_secs(120);

/// Frames one call may have waiting for the writer: 5 s of both legs.
const INBOX_LIMIT: usize = 500;
/// How often the writer empties the inboxes.
pub const WRITER_PASS: Duration = Duration::from_millis(20);

/// What every finalisation needs: where the shared files are.
#[derive(Clone)]
pub struct Place {
    pub instance: String,
    /// The module's shared directory (key store, recording log).
    pub module_dir: PathBuf,
    pub root: PathBuf,
    pub channels: Channels,
    pub channels_text: &'static str,
    pub host_version: String,
    pub installation_id: String,
    pub passphrase: Vec<u8>,
    /// The remote targets' labels a sealed recording is queued for.
    pub upload_targets: Vec<String>,
    pub upload_delay: Duration,
    /// Mail to the administrators (failures, disk space).
    pub notifier: crate::notify::Notifier,
}

impl Place {
    pub fn chain_path(&self) -> PathBuf {
        self.module_dir.join("recordings.db")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.module_dir.join("keys")
    }

    /// What a newly entered recording queues for upload.
    pub fn queue(&self) -> chain::Queue {
        chain::Queue {
            instance: self.instance.clone(),
            targets: self.upload_targets.clone(),
            due: crate::upkeep::unix_now() + self.upload_delay.as_secs() as i64,
        }
    }

    pub fn head_path(&self) -> PathBuf {
        self.root.join("chain-head.txt")
    }

    /// The key store, opened afresh (for `rotate-key`).
    pub fn key_store(&self) -> Result<KeyStore, String> {
        KeyStore::open(&self.keys_dir(), &self.passphrase, &self.installation_id)
            .map_err(|e| e.to_string())
    }

    /// The key store kept open between recordings: decrypting the key
    /// (PBKDF2, 600 000 rounds) per recording would cost a third of a
    /// second each. Reopened when another process rotated the key.
    pub fn signing_store(&self) -> Result<Arc<KeyStore>, String> {
        static OPEN: Mutex<Option<Arc<KeyStore>>> = Mutex::new(None);
        let mut open = lock(&OPEN);
        if let Some(store) = open.as_ref() {
            if store.dir() == self.keys_dir() && store.is_current().unwrap_or(false) {
                return Ok(store.clone());
            }
        }
        let store = Arc::new(self.key_store()?);
        *open = Some(store.clone());
        Ok(store)
    }
}

/// After this long past its hangup, a claimed call that never got media
/// is entered as such.
const NO_MEDIA_GRACE: Duration = Duration::from_secs(10);
/// A claimed call with neither media nor a hangup after this long is given
/// up (entered as having no media), so no claim is kept forever.
const CLAIM_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How often a recording's files are made valid even without frames.
const TICK: Duration = Duration::from_secs(1);

/// The calls one instance records.
pub struct Recordings {
    place: Place,
    stop_digits: String,
    calls: Mutex<HashMap<String, RecordedCall>>,
    /// The media thread's connection for noting recordings in progress,
    /// opened once (opening per call stalled every call's frames).
    notes: Mutex<Option<Chain>>,
    finished: Arc<Mutex<Finished>>,
    ctx: Context,
}

impl Recordings {
    pub fn new(ctx: &Context, place: Place, stop_digits: String) -> Recordings {
        Recordings {
            place,
            stop_digits,
            calls: Mutex::default(),
            notes: Mutex::default(),
            finished: Arc::default(),
            ctx: ctx.clone(),
        }
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<String, RecordedCall>> {
        lock(&self.calls)
    }

    /// Call setup decided to record: remember the call (no I/O here).
    /// With a notice, the recording begins when its prompt is over.
    pub fn claimed(&self, info: CallInfo, notice: Option<String>) {
        let now = Instant::now();
        self.calls()
            .entry(info.call_id.clone())
            .or_insert(RecordedCall {
                info,
                started: now,
                state: CallState::Claimed,
                hangup_at: None,
                answered_by: None,
                transfers: Vec::new(),
                keys: String::new(),
                stopped: None,
                last_tick: now,
                inbox: Vec::new(),
                inbox_dropped: [0, 0],
                media_over: false,
                stop_at: None,
                notice: notice.map_or(Notice::None, Notice::Playing),
            });
    }

    /// The host's prompt is over (`detail`: which, and whether it was
    /// heard): the recording begins now.
    pub fn prompt_ended(&self, call_id: &str, detail: &str) {
        let mut calls = self.calls();
        let Some(call) = calls.get_mut(call_id) else {
            return;
        };
        if let Notice::Playing(asset) = &call.notice {
            call.notice = Notice::Over(format!("{asset}, then recorded ({detail})"));
            call.started = Instant::now();
        }
    }

    /// A frame from the media thread: queued for the writer, no I/O.
    pub fn frame(&self, call_id: &str, leg: TapRequest, frame: &audio::Frame<'_>) {
        let Some(side) = side_of(leg) else { return };
        let mut calls = self.calls();
        let Some(call) = calls.get_mut(call_id) else {
            return;
        };
        if matches!(call.state, CallState::Stopped(_)) || call.stop_at.is_some() {
            return;
        }
        if let Notice::Playing(asset) = &call.notice {
            if call.started.elapsed() < NOTICE_LIMIT {
                return; // the caller hears the notice: not recorded
            }
            call.notice = Notice::Over(format!(
                "{asset}: its end was not reported; recorded from {} s after setup",
                NOTICE_LIMIT.as_secs()
            ));
            call.started = Instant::now();
        }
        if call.inbox.len() >= INBOX_LIMIT {
            call.inbox_dropped[side.index()] += 1;
            return;
        }
        call.inbox.push(Inbound {
            side,
            at: Instant::now(),
            sequence: frame.sequence,
            timestamp: frame.timestamp,
            payload_type: frame.payload_type,
            marker: frame.marker,
            payload: frame.payload.to_vec(),
        });
    }

    pub fn gap(&self, call_id: &str, leg: TapRequest, frames: u32) {
        let Some(side) = side_of(leg) else { return };
        let mut calls = self.calls();
        let Some(call) = calls.get_mut(call_id) else {
            return;
        };
        tracing::warn!(
            call = call_id,
            ?side,
            frames,
            "frames lost on the way to the recording"
        );
        call.inbox_dropped[side.index()] = call.inbox_dropped[side.index()].saturating_add(frames);
    }

    /// Creates the files' recorder and notes the recording as in progress.
    fn open_recorder(&self, info: &CallInfo, started: Instant) -> Result<Recorder, String> {
        std::fs::create_dir_all(&info.directory)
            .map_err(|e| format!("{}: {e}", info.directory.display()))?;
        let recorder = Recorder::create(&info.directory, &info.name, self.place.channels, started)
            .map_err(|e| e.to_string())?;
        let record = serde_json::to_string(info).unwrap_or_default();
        let mut notes = lock(&self.notes);
        if notes.is_none() {
            let chain =
                Chain::open_for_notes(&self.place.chain_path()).map_err(|e| e.to_string())?;
            *notes = Some(chain);
        }
        if let Some(chain) = notes.as_ref() {
            chain
                .begin(&info.name, &self.place.instance, &record)
                .map_err(|e| e.to_string())?;
        }
        Ok(recorder)
    }

    pub fn answered(&self, call_id: &str, by: Option<String>) {
        if let Some(call) = self.calls().get_mut(call_id) {
            call.answered_by = by;
        }
    }

    pub fn transferred(&self, call_id: &str, to: String) {
        if let Some(call) = self.calls().get_mut(call_id) {
            call.transfers.push(to);
        }
    }

    /// A key pressed by either party; the stop sequence ends the recording.
    pub fn key(&self, call_id: &str, digit: &str, by: Option<String>) {
        if self.stop_digits.is_empty() {
            return;
        }
        let mut calls = self.calls();
        let Some(call) = calls.get_mut(call_id) else {
            return;
        };
        call.keys.push_str(digit);
        let keep = self.stop_digits.len();
        if call.keys.len() > keep {
            call.keys = call.keys[call.keys.len() - keep..].to_string();
        }
        if call.keys != self.stop_digits || call.stopped.is_some() {
            return;
        }
        let who = by.unwrap_or_else(|| "a party".into());
        tracing::info!(call = call_id, by = %who, "recording stopped by {}", self.stop_digits);
        call.stopped = Some(format!("stopped by {} ({who})", self.stop_digits));
        call.stop_at = Some(Instant::now());
    }

    pub fn hangup(&self, call_id: &str) {
        if let Some(call) = self.calls().get_mut(call_id) {
            call.hangup_at.get_or_insert_with(Instant::now);
        }
    }

    /// The call's media is over: the writer closes and enters it once
    /// it has written what is queued.
    pub fn media_end(&self, call_id: &str) {
        if let Some(call) = self.calls().get_mut(call_id) {
            call.media_over = true;
        }
    }

    /// One pass of the writer (every 20 ms, on its own thread): the
    /// queued frames into the files, stops, valid headers once a second,
    /// and the calls that are over handed to finalisation. The calls' lock
    /// is held only to take and put back, never across I/O.
    pub fn write_pass(&self) {
        let now = Instant::now();
        struct Work {
            call_id: String,
            info: CallInfo,
            started: Instant,
            state: CallState,
            inbox: Vec<Inbound>,
            dropped: [u32; 2],
            stop_at: Option<Instant>,
            tick: bool,
            /// Why writing failed in this pass.
            failure: Option<String>,
        }
        let mut work = Vec::new();
        {
            let mut calls = self.calls();
            for (call_id, call) in calls.iter_mut() {
                let tick = now.duration_since(call.last_tick) >= TICK;
                let busy = !call.inbox.is_empty()
                    || call.inbox_dropped != [0, 0]
                    || (call.stop_at.is_some() && matches!(call.state, CallState::Recording(_)))
                    || (tick && matches!(call.state, CallState::Recording(_)));
                if !busy {
                    continue;
                }
                if tick {
                    call.last_tick = now;
                }
                work.push(Work {
                    call_id: call_id.clone(),
                    info: call.info.clone(),
                    started: call.started,
                    state: std::mem::replace(&mut call.state, CallState::Writing),
                    inbox: std::mem::take(&mut call.inbox),
                    dropped: std::mem::take(&mut call.inbox_dropped),
                    stop_at: call.stop_at,
                    tick,
                    failure: None,
                });
            }
        }
        for item in &mut work {
            let mut state = std::mem::replace(&mut item.state, CallState::Writing);
            if matches!(state, CallState::Claimed) && !item.inbox.is_empty() {
                state = match self.open_recorder(&item.info, item.started) {
                    Ok(recorder) => CallState::Recording(Box::new(recorder)),
                    Err(error) => {
                        tracing::error!(call = %item.call_id, "cannot start the recording: {error}");
                        item.failure = Some(error.clone());
                        CallState::Stopped(Some(Box::new(Err(error))))
                    }
                };
            }
            if let CallState::Recording(mut recorder) = state {
                let mut result = Ok(());
                for side in [Side::Caller, Side::Callee] {
                    if item.dropped[side.index()] > 0 {
                        recorder.dropped(side, item.dropped[side.index()]);
                    }
                }
                for frame in &item.inbox {
                    if item.stop_at.is_some_and(|stop| frame.at >= stop) {
                        break;
                    }
                    let audio_frame = audio::Frame {
                        sequence: frame.sequence,
                        timestamp: frame.timestamp,
                        payload_type: frame.payload_type,
                        marker: frame.marker,
                        payload: &frame.payload,
                    };
                    result = recorder.frame(frame.side, frame.at, &audio_frame);
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_ok() && item.tick {
                    result = recorder.tick(now);
                }
                state = match (result, item.stop_at) {
                    (Ok(()), None) => CallState::Recording(recorder),
                    (Ok(()), Some(stop)) => CallState::Stopped(Some(Box::new(
                        recorder.finish(stop).map_err(|e| e.to_string()),
                    ))),
                    (Err(error), _) => {
                        // What was written is kept, sealed and marked failed.
                        tracing::error!(call = %item.call_id, "writing the recording: {error}");
                        item.failure = Some(error.to_string());
                        CallState::Stopped(Some(Box::new(
                            recorder.finish(now).map_err(|e| e.to_string()),
                        )))
                    }
                };
            }
            item.state = state;
        }
        let mut over = Vec::new();
        {
            let mut calls = self.calls();
            for item in work {
                if let Some(call) = calls.get_mut(&item.call_id) {
                    if let Some(error) = &item.failure {
                        call.stopped
                            .get_or_insert_with(|| format!("failed: {error}"));
                    }
                    call.state = item.state;
                }
            }
            for (call_id, call) in calls.iter() {
                let drained = call.inbox.is_empty() && call.inbox_dropped == [0, 0];
                let ended_long_ago = call
                    .hangup_at
                    .is_some_and(|at| now.duration_since(at) >= NO_MEDIA_GRACE);
                let never_started = matches!(call.state, CallState::Claimed)
                    && now.duration_since(call.started) >= CLAIM_LIMIT;
                let idle = !matches!(call.state, CallState::Writing);
                if idle && ((call.media_over && drained) || ended_long_ago || never_started) {
                    over.push(call_id.clone());
                }
            }
            let finished: Vec<(String, RecordedCall)> = over
                .into_iter()
                .filter_map(|id| calls.remove(&id).map(|call| (id, call)))
                .collect();
            drop(calls);
            for (call_id, call) in finished {
                self.finalise_in_background(call_id, call);
            }
        }
    }

    fn finalise_in_background(&self, call_id: String, call: RecordedCall) {
        let mut finished = lock(&self.finished);
        finished.calls.push((call_id, call));
        if std::mem::replace(&mut finished.draining, true) {
            return;
        }
        drop(finished);
        // Hashing, signing and the chain's fsync are not for the writer.
        // One drainer per instance (its entries in its own log) enters
        // whatever has finished, many calls per chain transaction (a
        // thread per call waiting for the chain cost more than the work);
        // a stopping host waits for it (`settle`).
        let (place, finished) = (self.place.clone(), self.finished.clone());
        self.ctx
            .spawn_blocking(move || drain_finished(&place, &finished));
    }
}

/// Enters an instance's finished calls until none is left.
fn drain_finished(place: &Place, finished: &Mutex<Finished>) {
    /// Clears `draining` if the drainer panics, so the next finished call
    /// starts another.
    struct Draining<'a> {
        finished: &'a Mutex<Finished>,
        done: bool,
    }
    impl Drop for Draining<'_> {
        fn drop(&mut self) {
            if !self.done {
                lock(self.finished).draining = false;
            }
        }
    }
    let mut draining = Draining {
        finished,
        done: false,
    };
    loop {
        let pass: Vec<(String, RecordedCall)> = {
            let mut finished = lock(finished);
            if finished.calls.is_empty() {
                finished.draining = false;
                draining.done = true;
                return;
            }
            let take = finished.calls.len().min(CALLS_PER_PASS);
            finished.calls.drain(..take).collect()
        };
        finalise(place, pass);
    }
}

fn side_of(leg: TapRequest) -> Option<Side> {
    match leg {
        TapRequest::Caller => Some(Side::Caller),
        TapRequest::Callee => Some(Side::Callee),
        _ => None,
    }
}

/// What became of a call's audio when it was closed.
enum Audio {
    Written(AudioSummary),
    /// No media ever reached the relay.
    None,
    /// Writing failed; what was written before it was made valid.
    Repaired {
        summary: AudioSummary,
        why: String,
    },
    /// Writing failed and nothing usable is left.
    Lost(String),
}

impl Audio {
    fn bytes(&self) -> u64 {
        match self {
            Audio::Written(summary) | Audio::Repaired { summary, .. } => summary
                .files
                .iter()
                .filter_map(|file| std::fs::metadata(file).ok())
                .map(|meta| meta.len())
                .sum(),
            Audio::None | Audio::Lost(_) => 0,
        }
    }
}

/// A call whose audio is closed, to be entered.
struct Closed {
    call_id: String,
    call: RecordedCall,
    ended_utc: String,
    audio: Audio,
}

/// Closes the calls' audio, then enters them in the chain, signed, in
/// transactions of up to [`AUDIO_BYTES_PER_BATCH`] of audio (the first
/// call of a transaction goes in whatever its size).
fn finalise(place: &Place, pass: Vec<(String, RecordedCall)>) {
    let mut closed: Vec<(Closed, u64)> = pass
        .into_iter()
        .map(|(call_id, call)| {
            let closed = close_audio(call_id, call);
            let bytes = closed.audio.bytes();
            (closed, bytes)
        })
        .collect();
    while !closed.is_empty() {
        let mut bytes = 0;
        let take = closed
            .iter()
            .take_while(|(_, size)| {
                bytes += size;
                bytes <= AUDIO_BYTES_PER_BATCH
            })
            .count()
            .max(1);
        let batch: Vec<Closed> = closed.drain(..take).map(|(call, _)| call).collect();
        with_entries(place, |chain, entered| {
            for call in &batch {
                enter_closed(place, chain, call, entered);
            }
        });
        for call in batch {
            release(&call.call_id);
        }
    }
}

fn close_audio(call_id: String, mut call: RecordedCall) -> Closed {
    let ended = call.hangup_at.unwrap_or_else(Instant::now);
    let ended_utc = utc_at(ended);
    let state = std::mem::replace(&mut call.state, CallState::Claimed);
    let summary: Result<Option<AudioSummary>, String> = match state {
        CallState::Recording(recorder) => {
            recorder.finish(ended).map(Some).map_err(|e| e.to_string())
        }
        CallState::Stopped(summary) => summary.map(|summary| *summary).transpose(),
        CallState::Claimed | CallState::Writing => Ok(None),
    };
    let audio = match summary {
        Ok(Some(summary)) => Audio::Written(summary),
        Ok(None) => Audio::None,
        // What was written before the failure (a full disk, say) is
        // made valid and sealed as incomplete when it can be.
        Err(error) => match audio::repair_recording(&call.info.directory, &call.info.name) {
            Ok(summary) => Audio::Repaired {
                summary,
                why: format!("incomplete: audio not written to the end: {error}"),
            },
            Err(_) => Audio::Lost(format!("audio not written: {error}")),
        },
    };
    Closed {
        call_id,
        call,
        ended_utc,
        audio,
    }
}

fn enter_closed(place: &Place, chain: &mut Chain, closed: &Closed, entered: &mut Vec<Entered>) {
    let call = &closed.call;
    let notice = match &call.notice {
        Notice::None => None,
        Notice::Playing(asset) => Some(format!("{asset}: the call ended during it")),
        Notice::Over(text) => Some(text.clone()),
    };
    let facts = Facts {
        info: &call.info,
        ended_utc: &closed.ended_utc,
        answered_by: call.answered_by.as_deref(),
        transfers: &call.transfers,
        stopped: call.stopped.as_deref(),
        notice: notice.as_deref(),
        incomplete: None,
    };
    match &closed.audio {
        Audio::Written(summary) => enter_recording(place, chain, &facts, summary, entered),
        Audio::None => enter_failure(
            place,
            chain,
            &facts,
            "no media: the call ended before its audio reached the relay",
            entered,
        ),
        Audio::Repaired { summary, why } => {
            let facts = Facts {
                incomplete: Some(why),
                ..facts
            };
            enter_recording(place, chain, &facts, summary, entered)
        }
        Audio::Lost(why) => enter_failure(place, chain, &facts, why, entered),
    }
}

/// An entry made in a batch, reported once the batch is committed.
enum Entered {
    Recording {
        entry: chain::Entry,
        finalise_ms: f64,
    },
    Failure {
        entry: chain::Entry,
        why: String,
    },
}

impl Entered {
    fn entry(&self) -> &chain::Entry {
        match self {
            Entered::Recording { entry, .. } | Entered::Failure { entry, .. } => entry,
        }
    }

    fn report(&self, place: &Place) {
        match self {
            Entered::Recording { entry, finalise_ms } => tracing::info!(
                recording = %entry.fields.name,
                seq = entry.seq,
                status = %entry.fields.status,
                finalise_ms = %format!("{finalise_ms:.1}"),
                "recording entered"
            ),
            Entered::Failure { entry, why } => {
                tracing::warn!(recording = %entry.fields.name, seq = entry.seq, "entered as failed: {why}");
                place.notifier.notify(
                    "recording failed",
                    format!(
                        "{} (call {}, chain position {}): {why}",
                        entry.fields.name, entry.fields.call_id, entry.seq
                    ),
                );
            }
        }
    }
}

/// Runs `enter` in one transaction of the entries' connection to
/// `place`'s chain, anchors the head once, and then reports what was
/// entered: only what the commit made durable is logged as entered.
fn with_entries(place: &Place, enter: impl FnOnce(&mut Chain, &mut Vec<Entered>)) {
    let mut open = lock(&ENTRIES);
    let path = place.chain_path();
    if open.as_ref().is_none_or(|chain| chain.path() != path) {
        match Chain::open(&path) {
            Ok(chain) => *open = Some(chain),
            Err(error) => {
                tracing::error!("recordings not entered: {error}");
                return;
            }
        }
    }
    let Some(chain) = open.as_mut() else { return };
    let mut entered = Vec::new();
    match chain.batch(|chain| enter(chain, &mut entered)) {
        Ok(()) => {
            if !entered.is_empty() {
                anchor_head(place, chain);
            }
            drop(open);
            for entry in &entered {
                entry.report(place);
            }
        }
        Err(error) => {
            *open = None; // reopened for the next batch
            let names: Vec<&str> = entered
                .iter()
                .map(|entry| entry.entry().fields.name.as_str())
                .collect();
            tracing::error!(
                "{} recordings not entered, the chain's commit failed ({}): {error}",
                names.len(),
                names.join(", ")
            );
        }
    }
}

/// The facts of one recording the metadata and the entry are made from.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    pub info: &'a CallInfo,
    pub ended_utc: &'a str,
    pub answered_by: Option<&'a str>,
    pub transfers: &'a [String],
    pub stopped: Option<&'a str>,
    /// The notice played before the recording, and how.
    pub notice: Option<&'a str>,
    /// `Some(why)` when the audio did not reach the end (repaired after a
    /// crash, or after a write failed).
    pub incomplete: Option<&'a str>,
}

impl Facts<'_> {
    /// The entry's fields every kind shares (no files, no seal).
    fn entry(&self, place: &Place, status: &str, detail: String) -> NewEntry {
        NewEntry {
            name: self.info.name.clone(),
            instance: place.instance.clone(),
            call_id: self.info.call_id.clone(),
            started: self.info.started_utc.clone(),
            ended: self.ended_utc.to_string(),
            status: status.into(),
            detail,
            directory: self.info.directory.display().to_string(),
            parties: self.info.parties(),
            ..NewEntry::default()
        }
    }

    fn status(&self) -> &'static str {
        if self.incomplete.is_some() {
            "incomplete"
        } else if self.stopped.is_some_and(|s| s.starts_with("failed")) {
            "failed"
        } else if self.stopped.is_some() {
            "stopped"
        } else {
            "complete"
        }
    }
}

/// Writes `<name>_info.txt`, seals the recording and enters it.
fn enter_recording(
    place: &Place,
    chain: &mut Chain,
    facts: &Facts<'_>,
    summary: &AudioSummary,
    entered: &mut Vec<Entered>,
) {
    let began = Instant::now();
    let store = match place.signing_store() {
        Ok(store) => store,
        Err(error) => {
            tracing::error!("recording {} not signed: {error}", facts.info.name);
            enter_failure(
                place,
                chain,
                facts,
                &format!("not signed: {error}"),
                entered,
            );
            return;
        }
    };
    let directory = &facts.info.directory;
    let audio_files: Vec<String> = summary
        .files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let info_name = format!("{}_info.txt", facts.info.name);
    let appended = chain.append_queued(EntryKind::Recording, &place.queue(), |seq, previous| {
        let text = info_text(place, facts, Some(summary), seq, previous);
        write_atomically(&directory.join(&info_name), text.as_bytes())?;
        let mut listed: Vec<&str> = audio_files.iter().map(String::as_str).collect();
        listed.push(&info_name);
        let sealed = evidence::seal_recording(&store, directory, &facts.info.name, &listed)
            .map_err(|e| e.to_string())?;
        let mut files = audio_files.clone();
        files.push(info_name.clone());
        files.push(format!("{}_hash.txt", facts.info.name));
        files.push(format!("{}_hash.txt.SHA256withRSA.sig", facts.info.name));
        Ok::<_, String>(NewEntry {
            files,
            hash_sha256: sealed.hash_file_sha256,
            signature: sealed.signature,
            certificate: sealed.certificate_fingerprint,
            ..facts.entry(place, facts.status(), detail(facts, summary))
        })
    });
    match appended {
        Ok(Ok(entry)) => entered.push(Entered::Recording {
            entry,
            finalise_ms: began.elapsed().as_secs_f64() * 1000.0,
        }),
        Ok(Err(error)) => {
            tracing::error!("recording {} not sealed: {error}", facts.info.name);
            enter_failure_keeping(
                place,
                chain,
                facts,
                &format!("not sealed: {error}; the audio written is kept, unsealed"),
                &audio_files,
                entered,
            );
        }
        Err(error) => tracing::error!("recording {} not entered: {error}", facts.info.name),
    }
}

/// An entry for a recording that does not exist (or is not usable), so
/// its absence is on record.
fn enter_failure(
    place: &Place,
    chain: &mut Chain,
    facts: &Facts<'_>,
    why: &str,
    entered: &mut Vec<Entered>,
) {
    enter_failure_keeping(place, chain, facts, why, &[], entered);
}

/// [`enter_failure`] for a recording whose audio exists but could not be
/// sealed: the files stay and are listed, so none is an orphan.
fn enter_failure_keeping(
    place: &Place,
    chain: &mut Chain,
    facts: &Facts<'_>,
    why: &str,
    files: &[String],
    entered: &mut Vec<Entered>,
) {
    let appended = chain.append(EntryKind::Failure, |_, _| {
        Ok::<_, String>(NewEntry {
            files: files.to_vec(),
            ..facts.entry(place, "failed", why.to_string())
        })
    });
    match appended {
        Ok(Ok(entry)) => entered.push(Entered::Failure {
            entry,
            why: why.to_string(),
        }),
        Ok(Err(error)) | Err(chain::ChainError::Corrupt(error)) => {
            tracing::error!("failure of {} not entered: {error}", facts.info.name)
        }
        Err(error) => tracing::error!("failure of {} not entered: {error}", facts.info.name),
    }
}

/// `chain-head.txt` next to the recordings: deleting the newest entries
/// with their recordings shows against it.
pub(crate) fn anchor_head(place: &Place, chain: &Chain) {
    match chain.head() {
        Ok(Some(head)) => {
            let _ = std::fs::create_dir_all(&place.root);
            if let Err(error) =
                write_atomically(&place.head_path(), chain::head_text(&head).as_bytes())
            {
                tracing::error!("cannot anchor the chain's head: {error}");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::error!("cannot read the chain's head: {error}"),
    }
}

fn detail(facts: &Facts<'_>, summary: &AudioSummary) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(crash) = facts.incomplete {
        parts.push(crash.to_string());
    }
    if let Some(stopped) = facts.stopped {
        parts.push(stopped.to_string());
    }
    parts.extend(summary.warnings.iter().cloned());
    if parts.is_empty() {
        "complete".into()
    } else {
        parts.join("; ")
    }
}

/// The metadata file (CR10): UTF-8, one `Key: value` per line, so it is
/// read by people and by `grep` alike.
fn info_text(
    place: &Place,
    facts: &Facts<'_>,
    summary: Option<&AudioSummary>,
    seq: i64,
    previous: Option<&chain::Entry>,
) -> String {
    let info = facts.info;
    let mut lines = vec![
        format!("Recording: {}", info.name),
        format!("Start: {}", info.started_utc),
        format!("End: {}", facts.ended_utc),
        format!("Status: {}", facts.status()),
        format!("Call-ID: {}", info.call_id),
        format!("Direction: {}", info.direction),
        format!("Caller: {}", info.caller.describe()),
        format!("Callee: {}", info.callee.describe()),
        format!("Dialled: {}", info.dialled),
        format!("Recorded because: {}", info.reason),
    ];
    if let Some(by) = facts.answered_by {
        lines.push(format!("Answered by: {by}"));
    }
    for to in facts.transfers {
        lines.push(format!("Transferred to: {to}"));
    }
    if let Some(notice) = facts.notice {
        lines.push(format!("Notice: {notice}"));
    }
    if let Some(stopped) = facts.stopped {
        lines.push(format!("Stopped: {stopped}"));
    }
    if let Some(crash) = facts.incomplete {
        lines.push(format!("Incomplete: {crash}"));
    }
    lines.push(format!("Instance: {}", place.instance));
    lines.push(format!("Host: callhost {}", place.host_version));
    lines.push(format!("Installation: {}", place.installation_id));
    if let Some(summary) = summary {
        lines.push(format!("Codec: {}", summary.codec.describe()));
        lines.push(format!("Channels: {}", place.channels_text));
        lines.push(format!("Duration: {:.3} s", summary.duration.as_secs_f64()));
        for file in &summary.files {
            if let Some(name) = file.file_name() {
                lines.push(format!("File: {}", name.to_string_lossy()));
            }
        }
        for (label, leg) in ["caller", "callee"].iter().zip(summary.legs.iter()) {
            lines.push(format!(
                "Leg {label}: packets={} lost={} late={} dropped={} gaps={} gap_ms={} duplicates={} ignored={}",
                leg.packets, leg.lost, leg.late, leg.dropped, leg.gaps, leg.gap_ms, leg.duplicates, leg.ignored
            ));
        }
        for segment in &summary.segments {
            lines.push(format!("Segment: {segment}"));
        }
        for warning in &summary.warnings {
            lines.push(format!("Warning: {warning}"));
        }
    }
    lines.push(format!("Chain position: {seq}"));
    match previous {
        Some(previous) => {
            lines.push(format!("Previous recording: {}", previous.fields.name));
            lines.push(format!(
                "Previous signature: {}",
                if previous.fields.signature.is_empty() {
                    "(none: a failure entry)"
                } else {
                    previous.fields.signature.as_str()
                }
            ));
            lines.push(format!("Previous entry hash: {}", previous.hash));
        }
        None => lines.push("Previous recording: (none: the first entry)".into()),
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The time `at` was, in UTC.
fn utc_at(at: Instant) -> String {
    let ago = Instant::now().saturating_duration_since(at);
    let then = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or_else(SystemTime::now);
    humantime::format_rfc3339_seconds(then).to_string()
}

/// Temp file, fsync, rename, fsync of the directory: a crash leaves the old
/// file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let staging = path.with_extension("partial");
    let result = (|| {
        let mut file = std::fs::File::create(&staging)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&staging, path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok::<_, std::io::Error>(())
    })();
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// After a crash: every recording that was in progress is repaired,
/// signed and entered as incomplete, with its real length.
pub fn repair_after_crash(place: &Place) {
    let active = match Chain::open(&place.chain_path()).and_then(|chain| chain.active()) {
        Ok(active) => active,
        Err(error) => {
            tracing::error!("cannot read the recordings in progress: {error}");
            return;
        }
    };
    for (name, instance, record) in active {
        let Ok(info) = serde_json::from_str::<CallInfo>(&record) else {
            tracing::error!(recording = %name, "recording in progress has unreadable facts");
            continue;
        };
        // Another instance's recording is sealed and entered, but its
        // targets are that instance's: not queued from here.
        let upload_targets = if instance == place.instance {
            place.upload_targets.clone()
        } else {
            if !place.upload_targets.is_empty() {
                tracing::warn!(recording = %name, "repaired for instance {instance}: not queued for upload from this one");
            }
            Vec::new()
        };
        let place = Place {
            instance,
            upload_targets,
            ..place.clone()
        };
        let repaired = audio::repair_recording(&info.directory, &info.name);
        let ended_utc = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let facts = Facts {
            info: &info,
            ended_utc: &ended_utc,
            answered_by: None,
            transfers: &[],
            stopped: None,
            notice: None,
            incomplete: Some("incomplete after crash: the host stopped during the call"),
        };
        with_entries(&place, |chain, entered| match repaired {
            Ok(summary) => {
                tracing::warn!(recording = %name, "repaired after a crash");
                enter_recording(&place, chain, &facts, &summary, entered);
            }
            Err(error) => enter_failure(
                &place,
                chain,
                &facts,
                &format!("incomplete after crash, not repairable: {error}"),
                entered,
            ),
        });
    }
}
