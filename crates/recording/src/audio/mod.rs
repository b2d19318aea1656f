//! One call's audio, from tapped RTP frames to WAV files.
//!
//! The codec is kept (CR6): A-law, µ-law and G.722 bytes go to disk as
//! received. Each party has its own channel or file (CR5), never mixed.
//!
//! # Timeline
//!
//! Positions are ticks of 1/8000 s since the recording started; every codec
//! here carries one byte per tick and channel (G.711: a sample; G.722: an
//! octet of two 16 kHz samples, one tick of its 8 kHz RTP clock). Within a
//! leg a frame's place is its RTP timestamp relative to the leg's anchor;
//! the legs have independent RTP clocks, so a leg is anchored at the arrival
//! time of its first audio frame. Whatever no frame covers is silence of
//! exactly that length: loss, silence suppression, hold, a party that never
//! sends.
//!
//! - A frame whose timestamp disagrees with its arrival by more than one
//!   second re-anchors its leg at its arrival: a new stream (sequence
//!   numbers jumped too, e.g. a new SSRC after a transfer), or a resync (a
//!   sender whose clock jumped or stopped, e.g. during hold). This also caps
//!   a jump: a frame "an hour in the future" is placed at its arrival, so no
//!   hostile timestamp makes the recorder write silence that did not pass.
//! - The jitter window is [`JITTER_WINDOW`] (300 ms): audio is written once
//!   it is that much older than the newest arrival (or `tick`), so frames
//!   reordered or delayed within it land in their place; a frame older than
//!   what was written is counted `late` and dropped. The newest frame of a
//!   stream arriving behind what was written (a slow sender clock, a stall)
//!   slips its leg's anchor instead, counted in `slips`.
//! - A codec change starts a new set of files from that frame's place (see
//!   `files.rs` for names: `<name>-2.wav`, `<name>_caller-2.wav`), with its
//!   own [`Segment`]. In a stereo file the party that has not switched yet
//!   is ignored until it does (no transcoding), with a warning.
//! - G.722 is never written as a stereo file: ffmpeg decodes G.722 WAV as
//!   mono only (see [`WavFormat::G722`](callhost_media::wav::WavFormat::G722)),
//!   so `Stereo` with G.722 writes `<name>_caller.wav` and
//!   `<name>_callee.wav` instead and says so in the warnings.
//!
//! Memory is bounded: a fixed jitter buffer per leg and a fixed write chunk.
//! Headers are made valid on every [`Recorder::tick`] and every 5 s of
//! audio, so a crash leaves files that [`repair`] restores to their real
//! length.

mod files;
mod leg;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callhost_media::wav::{self, WavError, WavFormat};

use files::{CodecFit, Track};
use leg::{Leg, Placement, Put};

/// Timeline ticks per second: the 8 kHz RTP clock of every codec here.
const TICKS_PER_SECOND: u64 = 8000;
/// How long audio waits for late and reordered frames before it is written.
pub const JITTER_WINDOW: Duration = Duration::from_millis(300);
const JITTER_WINDOW_TICKS: u64 = 2400;
/// Longest payload recorded: one second. RTP carries 10–60 ms in practice;
/// anything longer is ignored (and counted) rather than trusted.
pub const MAX_PAYLOAD_BYTES: usize = 8000;
/// G.711 silence, as the relay's prompts write it.
const PCMA_SILENCE: u8 = callhost_media::g711::ALAW_SILENCE;
const PCMU_SILENCE: u8 = callhost_media::g711::ULAW_SILENCE;
/// G.722 silence. A G.722 encoder fed zeros from reset emits 0xFA, but a
/// run of 0xFA decodes (ffmpeg 5.1) to a DC of about +200 (−44 dBFS): its
/// low sub-band step is positive and accumulates. 0xFF (low code 63, the
/// smallest negative step; high code 3) decodes to a fresh decoder's ±2 and
/// settles within 20 ms after speech at a DC of about −28 (−61 dBFS), the
/// quietest constant octet measured.
const G722_SILENCE: u8 = 0xFF;

/// Which parties are recorded, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// The caller alone: `<name>_caller.wav`.
    Caller,
    /// The callee alone: `<name>_callee.wav`.
    Callee,
    /// One file `<name>.wav`, caller left, callee right, never mixed.
    Stereo,
    /// Two mono files, `<name>_caller.wav` and `<name>_callee.wav`.
    Separate,
}

/// A party of the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// Who placed the call.
    Caller,
    /// Who was called.
    Callee,
}

impl Side {
    /// Its place in per-leg arrays (caller 0, callee 1).
    pub fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }

    fn file_tag(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }
}

/// One tapped RTP packet, as the relay saw it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP marker bit (start of a talkspurt).
    pub marker: bool,
    /// The payload, untouched.
    pub payload: &'a [u8],
}

/// The audio codecs recorded, from static RTP payload types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 A-law, payload type 8: WAV format tag 6.
    Pcma,
    /// G.711 µ-law, payload type 0: WAV format tag 7.
    Pcmu,
    /// G.722, payload type 9: WAV format tag 0x028F at 16 kHz.
    G722,
}

impl Codec {
    /// The codec of a static RTP payload type; `None` for anything that is
    /// not recorded audio (telephone events, comfort noise, dynamic types).
    pub fn from_payload_type(payload_type: u8) -> Option<Codec> {
        match payload_type {
            8 => Some(Codec::Pcma),
            0 => Some(Codec::Pcmu),
            9 => Some(Codec::G722),
            _ => None,
        }
    }

    /// The byte written where the party sent nothing.
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcma => PCMA_SILENCE,
            Codec::Pcmu => PCMU_SILENCE,
            Codec::G722 => G722_SILENCE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Pcma => "PCMA",
            Codec::Pcmu => "PCMU",
            Codec::G722 => "G722",
        }
    }

    /// For people: the codec and how it is stored.
    pub fn describe(self) -> &'static str {
        match self {
            Codec::Pcma => "PCMA (G.711 A-law, 8000 Hz, WAV format 6)",
            Codec::Pcmu => "PCMU (G.711 µ-law, 8000 Hz, WAV format 7)",
            Codec::G722 => "G722 (G.722 as sent, 16000 Hz, WAV format 0x028F)",
        }
    }

    fn of_wav_format(format: WavFormat) -> Option<Codec> {
        match format {
            WavFormat::ALaw => Some(Codec::Pcma),
            WavFormat::MuLaw => Some(Codec::Pcmu),
            WavFormat::G722 => Some(Codec::G722),
            _ => None,
        }
    }
}

/// Per-leg counts for the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Frames handed in.
    pub packets: u64,
    /// Sequence numbers missing (less those the host said it dropped).
    pub lost: u64,
    /// Frames that arrived after their place was written.
    pub late: u64,
    /// Frames the host dropped before they reached the recorder.
    pub dropped: u64,
    /// Runs of silence inserted into this party's channel.
    pub gaps: u64,
    /// Their total length.
    pub gap_ms: u64,
    /// Frames seen twice.
    pub duplicates: u64,
    /// Frames that are not recorded audio: other payload types, empty or
    /// oversized payloads, a codec a stereo file cannot take.
    pub ignored: u64,
    /// Times the anchor slipped to keep a lagging stream (see module docs).
    pub slips: u64,
}

/// Why a segment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// The leg's first audio frame.
    First,
    /// Sequence number and timestamp jumped: another stream (new SSRC).
    NewStream,
    /// The timestamp alone disagreed with arrival: re-anchored.
    Resync,
    /// The codec changed: a new set of files.
    CodecChange,
}

/// A stretch of one leg's audio with one anchor and one codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Whose audio.
    pub side: Side,
    /// Why it starts.
    pub kind: SegmentKind,
    /// Where it starts, from the start of the recording.
    pub offset: Duration,
    /// Its codec.
    pub codec: Codec,
    /// The set of files it is in: 1 for `<name>.wav`, k for `<name>-k.wav`.
    pub file_set: u32,
}

/// What the metadata needs from a finished recording.
#[derive(Debug, Clone)]
pub struct AudioSummary {
    /// Every file written, in order of closing.
    pub files: Vec<PathBuf>,
    /// The codec of the first segment (PCMA if nobody sent audio).
    pub codec: Codec,
    /// Length of every party's audio: the call's length since `started`.
    pub duration: Duration,
    /// Caller, callee.
    pub legs: [LegCounters; 2],
    /// Every (re)anchoring and codec change, in order.
    pub segments: Vec<Segment>,
    /// What a listener should know: one-way audio, dropped codecs…
    pub warnings: Vec<String>,
}

/// What [`repair`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// The real playing time of the file now.
    pub duration: Duration,
    /// Audio bytes in the file.
    pub data_bytes: u64,
    /// Bytes of a partial last sample frame that were cut off.
    pub truncated_bytes: u64,
    /// False if the file was valid already and left alone.
    pub rewritten: bool,
}

/// Errors of recording audio. Each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Creating, writing or syncing a file failed.
    #[error("recording file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The WAV layer refused or failed.
    #[error("recording file {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: WavError,
    },
    /// The recording's name cannot be a file name.
    #[error("recording name {name:?} is not usable as a file name: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The directory for the files does not exist.
    #[error("recording directory {0} does not exist or is not a directory")]
    NoDirectory(PathBuf),
    /// No audio file of the recording is where it should be.
    #[error("no audio file of recording {name} in {dir}")]
    NoFiles {
        /// The recording's name.
        name: String,
        /// Where its files were looked for.
        dir: PathBuf,
    },
}

/// Warnings given once each.
#[derive(Debug, Default)]
struct WarnedOnce {
    g722_stereo: bool,
    lagging: [bool; 2],
    too_many_sets: bool,
}

/// One call's recording in progress.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    name: String,
    started: Instant,
    legs: [Leg; 2],
    tracks: Vec<Track>,
    /// The newest arrival (or tick) seen, in ticks.
    latest: u64,
    first_codec: Option<Codec>,
    audio_frames: [u64; 2],
    segments: Vec<Segment>,
    warnings: Vec<String>,
    warned: WarnedOnce,
}

impl Recorder {
    /// Files are `<dir>/<name>.wav` (Stereo), `<dir>/<name>_caller.wav` /
    /// `_callee.wav` (Separate, or the one side for Caller/Callee). They are
    /// created at the first audio frame, when the codec is known, and never
    /// overwrite an existing file.
    pub fn create(
        dir: &Path,
        name: &str,
        channels: Channels,
        started: Instant,
    ) -> Result<Recorder, AudioError> {
        check_name(name)?;
        if !dir.is_dir() {
            return Err(AudioError::NoDirectory(dir.to_path_buf()));
        }
        let tracks = match channels {
            Channels::Caller => vec![Track::new(vec![Side::Caller], false)],
            Channels::Callee => vec![Track::new(vec![Side::Callee], false)],
            Channels::Stereo => vec![Track::new(vec![Side::Caller, Side::Callee], true)],
            Channels::Separate => vec![
                Track::new(vec![Side::Caller], false),
                Track::new(vec![Side::Callee], false),
            ],
        };
        Ok(Recorder {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            started,
            legs: [Leg::new(), Leg::new()],
            tracks,
            latest: 0,
            first_codec: None,
            audio_frames: [0; 2],
            segments: Vec::new(),
            warnings: Vec::new(),
            warned: WarnedOnce::default(),
        })
    }

    /// Takes one frame of `side` that arrived at `at`.
    pub fn frame(&mut self, side: Side, at: Instant, frame: &Frame<'_>) -> Result<(), AudioError> {
        let arrival = self.tick_of(at);
        self.latest = self.latest.max(arrival);
        let leg_index = side.index();
        self.legs[leg_index].counters.packets += 1;
        let Some(track_index) = self.track_of(side) else {
            return self.advance(); // a party not recorded: counted only
        };
        let codec = Codec::from_payload_type(frame.payload_type);
        let audio_len_ok = !frame.payload.is_empty() && frame.payload.len() <= MAX_PAYLOAD_BYTES;
        let Some(codec) = codec.filter(|_| audio_len_ok) else {
            let leg = &mut self.legs[leg_index];
            if leg.note_sequence(frame.sequence) {
                leg.counters.ignored += 1;
            }
            return self.advance();
        };
        if self.first_codec.is_none() {
            self.open_first_sets(codec)?;
        }
        self.advance()?;

        let track = &mut self.tracks[track_index];
        let leg = &mut self.legs[leg_index];
        let written = track.written();
        let (tick, segment) = match leg.place(frame.sequence, frame.timestamp, arrival, written) {
            Placement::Duplicate => return Ok(()),
            Placement::At { tick, segment } => (tick, segment),
        };
        if let Some(kind) = segment {
            self.segments.push(Segment {
                side,
                kind,
                offset: duration_of(tick),
                codec,
                file_set: track.sets_started().max(1),
            });
        }
        let end = tick.saturating_add(frame.payload.len() as u64);
        if end <= written {
            leg.counters.late += 1;
            return Ok(());
        }
        match track.accepts(codec, leg.last_codec) {
            CodecFit::Fits => {}
            CodecFit::Open | CodecFit::Switch => {
                let at = tick.max(written);
                track.open_set(&self.dir, &self.name, codec, at, &mut self.legs)?;
                self.segments.push(Segment {
                    side,
                    kind: SegmentKind::CodecChange,
                    offset: duration_of(at),
                    codec,
                    file_set: track.sets_started(),
                });
                self.warn_g722_stereo(track_index, codec);
            }
            CodecFit::Lagging => {
                let leg = &mut self.legs[leg_index];
                leg.counters.ignored += 1;
                leg.last_codec = Some(codec);
                if !self.warned.lagging[leg_index] {
                    self.warned.lagging[leg_index] = true;
                    let current = self.tracks[track_index].codec().map_or("?", Codec::name);
                    self.warnings.push(format!(
                        "the {} kept sending {} after the switch to {current}: those frames are not in the stereo file",
                        side.file_tag(),
                        codec.name()
                    ));
                }
                return Ok(());
            }
            CodecFit::TooManySets => {
                self.legs[leg_index].counters.ignored += 1;
                if !self.warned.too_many_sets {
                    self.warned.too_many_sets = true;
                    self.warnings.push(format!(
                        "more than {} codec changes: frames in other codecs are not recorded",
                        files::MAX_FILE_SETS
                    ));
                }
                return Ok(());
            }
        }
        let leg = &mut self.legs[leg_index];
        leg.last_codec = Some(codec);
        self.audio_frames[leg_index] += 1;
        if leg.buffer.put(tick, frame.payload) == Put::Late {
            leg.counters.late += 1;
        }
        Ok(())
    }

    /// `frames` frames of `side` were dropped by the host before the next
    /// one: counted as dropped (not lost); their time becomes silence
    /// through the next frame's timestamp.
    pub fn dropped(&mut self, side: Side, frames: u32) {
        self.legs[side.index()].host_dropped(frames);
    }

    /// Called about once a second even when no frames come: writes out what
    /// is older than the jitter window and makes the headers valid (so a
    /// crash leaves playable files).
    pub fn tick(&mut self, now: Instant) -> Result<(), AudioError> {
        self.latest = self.latest.max(self.tick_of(now));
        self.advance()?;
        for track in &mut self.tracks {
            track.sync()?;
        }
        Ok(())
    }

    /// Ends the recording at `ended`: every channel is padded with silence
    /// up to the same length (the call's length since `started`), headers
    /// final. Audio placed after `ended` is cut.
    pub fn finish(mut self, ended: Instant) -> Result<AudioSummary, AudioError> {
        let written = self.tracks.iter().map(Track::written).max().unwrap_or(0);
        // Never shorter than what was written already (hostile `at`s
        // after `ended`), so that all channels stay equally long.
        let end = self.tick_of(ended).max(written);
        let codec = self.first_codec.unwrap_or(Codec::Pcma);
        for index in 0..self.tracks.len() {
            let track = &mut self.tracks[index];
            if track.codec().is_none() {
                track.open_set(&self.dir, &self.name, codec, 0, &mut self.legs)?;
                self.warn_g722_stereo(index, codec);
            }
            self.tracks[index].write_until(end, &mut self.legs)?;
        }
        let mut files = Vec::new();
        let mut silent = Vec::new();
        for track in self.tracks {
            for side in track.sides() {
                if self.audio_frames[side.index()] == 0 {
                    silent.push(*side);
                }
            }
            files.extend(track.finish()?);
        }
        let mut warnings = Vec::new();
        for side in silent {
            warnings.push(format!(
                "one-way audio: no RTP from the {}; its channel is silence",
                side.file_tag()
            ));
        }
        warnings.append(&mut self.warnings);
        Ok(AudioSummary {
            files,
            codec,
            duration: duration_of(end),
            legs: [
                self.legs[0].finish_counters(),
                self.legs[1].finish_counters(),
            ],
            segments: self.segments,
            warnings,
        })
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started);
        let ticks = since.as_nanos() * u128::from(TICKS_PER_SECOND) / 1_000_000_000;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn track_of(&self, side: Side) -> Option<usize> {
        self.tracks.iter().position(|t| t.sides().contains(&side))
    }

    /// The first audio frame fixes the codec of every track's first set, so
    /// that a silent party's file exists (and survives a crash) too.
    fn open_first_sets(&mut self, codec: Codec) -> Result<(), AudioError> {
        self.first_codec = Some(codec);
        for index in 0..self.tracks.len() {
            self.tracks[index].open_set(&self.dir, &self.name, codec, 0, &mut self.legs)?;
            self.warn_g722_stereo(index, codec);
        }
        Ok(())
    }

    /// Writes everything older than the jitter window.
    fn advance(&mut self) -> Result<(), AudioError> {
        let horizon = self.latest.saturating_sub(JITTER_WINDOW_TICKS);
        for track in &mut self.tracks {
            track.write_until(horizon, &mut self.legs)?;
        }
        Ok(())
    }

    fn warn_g722_stereo(&mut self, track_index: usize, codec: Codec) {
        let track = &self.tracks[track_index];
        let wanted_stereo = track.sides().len() > 1;
        if wanted_stereo && !track.stereo_file_for(codec) && !self.warned.g722_stereo {
            self.warned.g722_stereo = true;
            self.warnings.push(format!(
                "G.722 recorded as two mono files ({0}_caller.wav, {0}_callee.wav) instead of one stereo file: players decode G.722 WAV as mono only",
                self.name
            ));
        }
    }
}

fn duration_of(ticks: u64) -> Duration {
    Duration::from_secs(ticks / TICKS_PER_SECOND)
        + Duration::from_nanos((ticks % TICKS_PER_SECOND) * 1_000_000_000 / TICKS_PER_SECOND)
}

fn check_name(name: &str) -> Result<(), AudioError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a directory reference")
    } else if name.contains(['/', '\\', '\0']) {
        Some("it contains a path separator or NUL")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AudioError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// After a crash: makes a WAV (or RF64) file whose header sizes are stale
/// valid again from the real file length (truncating a partial last sample
/// frame); returns its real duration. A file with only a header becomes a
/// valid empty file. Only files in the layout this crate writes are
/// repaired.
pub fn repair(path: &Path) -> Result<Repaired, AudioError> {
    let io_err = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let repaired = wav::repair(&mut file).map_err(|source| AudioError::Wav {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Repaired {
        duration: repaired.info.duration(),
        data_bytes: repaired.info.data_len,
        truncated_bytes: repaired.truncated_bytes,
        rewritten: repaired.rewritten,
    })
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            SegmentKind::First => "first audio",
            SegmentKind::NewStream => "new stream",
            SegmentKind::Resync => "re-synchronised",
            SegmentKind::CodecChange => "codec change",
        };
        write!(
            f,
            "{} at {:.3} s: {kind}, {}, file set {}",
            self.side.file_tag(),
            self.offset.as_secs_f64(),
            self.codec.name(),
            self.file_set
        )
    }
}

/// After a crash: repairs every audio file of the recording `name` in
/// `dir` (any channels setting, any file set) and describes them as far as
/// the files tell: their real length and codec; no counters survive.
pub fn repair_recording(dir: &Path, name: &str) -> Result<AudioSummary, AudioError> {
    let entries = std::fs::read_dir(dir).map_err(|source| AudioError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|file| is_audio_file_of(file, name))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(AudioError::NoFiles {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let mut duration = Duration::ZERO;
    let mut codec = None;
    let mut warnings = Vec::new();
    for file in &files {
        let repaired = repair(file)?;
        duration = duration.max(repaired.duration);
        if repaired.truncated_bytes > 0 {
            warnings.push(format!(
                "{}: {} bytes of a partial sample cut",
                file.display(),
                repaired.truncated_bytes
            ));
        }
        if codec.is_none() {
            let mut header = vec![0u8; 512];
            let read = std::fs::File::open(file)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut header))
                .unwrap_or(0);
            let length = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            codec = wav::parse_wav_header(&header[..read], length)
                .ok()
                .and_then(|info| Codec::of_wav_format(info.spec.format));
        }
    }
    Ok(AudioSummary {
        files,
        codec: codec.unwrap_or(Codec::Pcma),
        duration,
        legs: [LegCounters::default(); 2],
        segments: Vec::new(),
        warnings,
    })
}

/// `<name>.wav`, `<name>-k.wav`, `<name>_caller.wav`, `<name>_callee-k.wav`…
fn is_audio_file_of(file: &str, name: &str) -> bool {
    let Some(rest) = file.strip_prefix(name).and_then(|r| r.strip_suffix(".wav")) else {
        return false;
    };
    let rest = rest
        .strip_prefix("_caller")
        .or_else(|| rest.strip_prefix("_callee"))
        .unwrap_or(rest);
    rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests;
