//! The files of a recording: which parties go into which file, file names,
//! and the switch to a new set of files when the codec changes.
//!
//! Naming: the first set of files is `<name>.wav` (stereo) or
//! `<name>_caller.wav` / `<name>_callee.wav` (one party per file). Set `k`
//! from the second on, started by a codec change, appends `-k`:
//! `<name>-2.wav`, `<name>_caller-2.wav`. Every set of a track starts where
//! the previous one ended, so the sets together cover the whole call.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use callhost_media::wav::{WavFormat, WavSpec, WavWriter};

use super::leg::Leg;
use super::{AudioError, Codec, Side};

/// Sets of files a track may start; codec changes beyond that are ignored
/// (counted, warned), so a hostile peer flipping codecs cannot create files
/// without end.
pub(super) const MAX_FILE_SETS: u32 = 16;
/// Ticks rendered per write, so that hours of silence take bounded memory.
const CHUNK_TICKS: u64 = 8000;
/// The header is made valid again after this much audio (5 s), besides on
/// every `tick`.
const SYNC_EVERY_TICKS: u64 = 5 * 8000;

type Writer = WavWriter<BufWriter<File>>;

/// One open WAV file and where it is.
#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    writer: Writer,
}

impl OpenFile {
    fn create(path: PathBuf, spec: WavSpec) -> Result<Self, AudioError> {
        // Never overwrite: an existing file is another recording.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| AudioError::Io {
                path: path.clone(),
                source,
            })?;
        let wav_err = |source| AudioError::Wav {
            path: path.clone(),
            source,
        };
        let mut writer =
            WavWriter::new(BufWriter::with_capacity(1 << 16, file), spec).map_err(wav_err)?;
        // Out of the buffer at once: a crash before the first tick still
        // leaves a header that repair can work from.
        writer.sync_header().map_err(wav_err)?;
        Ok(OpenFile { path, writer })
    }

    fn wav_err(&self) -> impl FnOnce(callhost_media::wav::WavError) -> AudioError + '_ {
        |source| AudioError::Wav {
            path: self.path.clone(),
            source,
        }
    }

    fn finish(self) -> Result<PathBuf, AudioError> {
        let OpenFile { path, writer } = self;
        let wav_err = |source| AudioError::Wav {
            path: path.clone(),
            source,
        };
        let buffered = writer.finish().map_err(wav_err)?;
        let file = buffered.into_inner().map_err(|e| AudioError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        // A finished recording is evidence: make sure it is on disk.
        file.sync_all().map_err(|source| AudioError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// How one set's files hold the track's parties.
#[derive(Debug)]
enum SetFiles {
    /// One stereo file: caller left, callee right.
    Stereo(OpenFile),
    /// One mono file per party, in the track's side order.
    Mono(Vec<OpenFile>),
}

/// One set of files in one codec, covering ticks `[start, written)`.
#[derive(Debug)]
struct FileSet {
    codec: Codec,
    files: SetFiles,
    written: u64,
    synced_at: u64,
}

/// A group of parties recorded together: both in one stereo file, or one
/// party alone.
#[derive(Debug)]
pub(super) struct Track {
    sides: Vec<Side>,
    /// Whether the parties share one stereo file (where the codec allows).
    stereo: bool,
    set: Option<FileSet>,
    sets_started: u32,
    /// The codec before the last switch, for the lagging party of a stereo
    /// track whose frames still come in it.
    previous_codec: Option<Codec>,
    /// First tick not yet written (also when no set is open yet).
    written: u64,
    closed: Vec<PathBuf>,
    scratch: Vec<Vec<u8>>,
}

/// What [`Track::accepts`] says about a frame's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CodecFit {
    /// The open set has this codec.
    Fits,
    /// No set yet: open one.
    Open,
    /// Start a new set in this codec.
    Switch,
    /// The party still sends the previous codec after the other switched.
    Lagging,
    /// No more sets may be started.
    TooManySets,
}

impl Track {
    pub(super) fn new(sides: Vec<Side>, stereo: bool) -> Self {
        let scratch = sides.iter().map(|_| Vec::new()).collect();
        Track {
            sides,
            stereo,
            set: None,
            sets_started: 0,
            previous_codec: None,
            written: 0,
            closed: Vec::new(),
            scratch,
        }
    }

    pub(super) fn sides(&self) -> &[Side] {
        &self.sides
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn codec(&self) -> Option<Codec> {
        self.set.as_ref().map(|set| set.codec)
    }

    pub(super) fn sets_started(&self) -> u32 {
        self.sets_started
    }

    pub(super) fn accepts(&self, codec: Codec, party_last: Option<Codec>) -> CodecFit {
        match &self.set {
            None => CodecFit::Open,
            Some(set) if set.codec == codec => CodecFit::Fits,
            Some(_)
                if self.sides.len() > 1
                    && self.previous_codec == Some(codec)
                    && party_last == Some(codec) =>
            {
                CodecFit::Lagging
            }
            Some(_) if self.sets_started >= MAX_FILE_SETS => CodecFit::TooManySets,
            Some(_) => CodecFit::Switch,
        }
    }

    /// Whether a set in `codec` holds the parties in one stereo file:
    /// not for G.722, which players decode as mono only (see
    /// [`WavFormat::G722`]).
    pub(super) fn stereo_file_for(&self, codec: Codec) -> bool {
        self.stereo && codec != Codec::G722
    }

    /// Opens a new set in `codec` from tick `at` (after writing everything
    /// before `at` to the current set and closing it).
    pub(super) fn open_set(
        &mut self,
        dir: &Path,
        name: &str,
        codec: Codec,
        at: u64,
        legs: &mut [Leg; 2],
    ) -> Result<(), AudioError> {
        if let Some(old) = self.codec() {
            self.write_until(at, legs)?;
            self.close_set()?;
            self.previous_codec = Some(old);
        }
        // The first set starts at 0: the leading silence is written into it.
        let start = if self.sets_started == 0 { 0 } else { at };
        let index = self.sets_started + 1;
        let suffix = if index == 1 {
            String::new()
        } else {
            format!("-{index}")
        };
        let format = codec.wav_format();
        let files = if self.stereo_file_for(codec) {
            let path = dir.join(format!("{name}{suffix}.wav"));
            SetFiles::Stereo(OpenFile::create(path, WavSpec::stereo(format))?)
        } else {
            let mut files = Vec::with_capacity(self.sides.len());
            for side in &self.sides {
                let path = dir.join(format!("{name}_{}{suffix}.wav", side.file_tag()));
                files.push(OpenFile::create(path, WavSpec::mono(format))?);
            }
            SetFiles::Mono(files)
        };
        self.sets_started = index;
        self.written = start;
        for side in &self.sides {
            // Whatever was buffered belongs to the previous codec.
            legs[side.index()].buffer.reset(start);
        }
        self.set = Some(FileSet {
            codec,
            files,
            written: start,
            synced_at: start,
        });
        Ok(())
    }

    /// Writes every party's audio (or silence) up to tick `upto`.
    pub(super) fn write_until(&mut self, upto: u64, legs: &mut [Leg; 2]) -> Result<(), AudioError> {
        let Some(set) = self.set.as_mut() else {
            return Ok(());
        };
        let silence = set.codec.silence();
        while set.written < upto {
            let chunk_end = upto.min(set.written + CHUNK_TICKS);
            for (side, buf) in self.sides.iter().zip(self.scratch.iter_mut()) {
                buf.clear();
                legs[side.index()].render(chunk_end, silence, buf);
            }
            match &mut set.files {
                SetFiles::Stereo(file) => {
                    let (left, right) = (&self.scratch[0], &self.scratch[1]);
                    let result = file.writer.write_stereo(left, right);
                    result.map_err(file.wav_err())?;
                }
                SetFiles::Mono(files) => {
                    for (file, buf) in files.iter_mut().zip(&self.scratch) {
                        let result = file.writer.write_mono(buf);
                        result.map_err(file.wav_err())?;
                    }
                }
            }
            set.written = chunk_end;
            if set.written - set.synced_at >= SYNC_EVERY_TICKS {
                Self::sync_set(set)?;
            }
        }
        self.written = set.written;
        Ok(())
    }

    /// Makes the open files' headers valid for what they hold.
    pub(super) fn sync(&mut self) -> Result<(), AudioError> {
        match self.set.as_mut() {
            Some(set) => Self::sync_set(set),
            None => Ok(()),
        }
    }

    fn sync_set(set: &mut FileSet) -> Result<(), AudioError> {
        let files: Vec<&mut OpenFile> = match &mut set.files {
            SetFiles::Stereo(file) => vec![file],
            SetFiles::Mono(files) => files.iter_mut().collect(),
        };
        for file in files {
            let result = file.writer.sync_header();
            result.map_err(file.wav_err())?;
        }
        set.synced_at = set.written;
        Ok(())
    }

    fn close_set(&mut self) -> Result<(), AudioError> {
        let Some(set) = self.set.take() else {
            return Ok(());
        };
        let files = match set.files {
            SetFiles::Stereo(file) => vec![file],
            SetFiles::Mono(files) => files,
        };
        for file in files {
            self.closed.push(file.finish()?);
        }
        Ok(())
    }

    /// Closes the open set and returns every file this track wrote.
    pub(super) fn finish(mut self) -> Result<Vec<PathBuf>, AudioError> {
        self.close_set()?;
        Ok(self.closed)
    }
}

impl Codec {
    pub(super) fn wav_format(self) -> WavFormat {
        match self {
            Codec::Pcma => WavFormat::ALaw,
            Codec::Pcmu => WavFormat::MuLaw,
            Codec::G722 => WavFormat::G722,
        }
    }
}
