//! Streaming WAV writer for call recordings, with in-place RF64 upgrade.
//!
//! Recordings keep the call's codec (CR6): A-law (format tag 6), µ-law (7)
//! and G.722 (0x028F, see [`WavFormat::G722`]) bytes go to disk as received;
//! 16-bit PCM (1) serves decoded audio and tests. Stereo files carry one
//! party per channel, interleaved sample by sample (G.722: byte by byte) and
//! never mixed (CR5).
//!
//! The header is written first and the data streamed after it; sizes are
//! fixed by [`WavWriter::finish`] (or [`WavWriter::sync_header`] on the way).
//! Plain RIFF caps sizes at 32 bits, so past 4 GiB the file becomes RF64
//! (EBU Tech 3306, CR22). Every file reserves a `JUNK` chunk of exactly the
//! size of a `ds64` chunk right after the RIFF header; the switch rewrites
//! `RIFF`→`RF64` and `JUNK`→`ds64` in place without moving any audio.
//!
//! Layout (offsets in bytes):
//!
//! ```text
//!  0  "RIFF" | "RF64"   size (0xFFFFFFFF in RF64)   "WAVE"
//! 12  "JUNK" | "ds64"   28: riffSize u64, dataSize u64, sampleCount u64, tableLength u32 = 0
//! 48  "fmt "            16 (PCM) or 18 (G.711, G.722: WAVEFORMATEX with cbSize = 0)
//! 74  "fact"            4: sample frames (0xFFFFFFFF in RF64)     not PCM
//! 86  "data"            size (0xFFFFFFFF in RF64)   → audio from 94 (not PCM) or 80 (PCM)
//! ```
//!
//! [`repair`] makes such a file valid again after a crash left its sizes
//! stale, from the real file length.
//!
//! Non-PCM formats carry a `fact` chunk because the WAVE specification asks
//! for one; its 32-bit count is what the ds64 `sampleCount` stands in for.
//! A data chunk of odd length is followed by one pad byte, as RIFF requires.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::Duration;

/// Default file size above which the writer switches to RF64: 4 GiB. The
/// RIFF size field (file length − 8) and the data size are then still below
/// 2^32. Note that some readers already fail above 2 GiB (signed sizes).
pub const DEFAULT_RF64_THRESHOLD: u64 = 1 << 32;

const RIFF_HEADER_LEN: usize = 12;
/// ds64 body with an empty table: three u64 sizes and the table length.
const DS64_BODY_LEN: u32 = 28;
const DS64_CHUNK_LEN: usize = 8 + DS64_BODY_LEN as usize;
/// A 32-bit size of all ones means "see ds64" in RF64.
const RF64_SIZE_PLACEHOLDER: u32 = u32::MAX;
/// Longest header this writer produces (G.711 with fact chunk).
const MAX_HEADER_LEN: usize = 94;

/// Audio encodings the writer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WavFormat {
    /// G.711 A-law bytes, format tag 6.
    ALaw,
    /// G.711 µ-law bytes, format tag 7.
    MuLaw,
    /// Signed 16-bit little-endian PCM, format tag 1.
    Pcm16,
    /// G.722 at 64 kbit/s as sent in RTP (one octet per pair of 16 kHz
    /// samples, high sub-band in the top two bits), format tag 0x028F.
    ///
    /// The fmt chunk says what the audio is, not what RTP says: 16000
    /// samples/s, 8000 bytes/s per channel, 4 bits per sample, block align 1
    /// byte per channel. The RTP clock of G.722 is 8000 Hz (RFC 3551 keeps
    /// the historical value), and writing that rate makes players run the
    /// audio at half speed: a classic recorder bug, rejected by
    /// [`WavSpec`] validation. The fact chunk counts 16 kHz samples per
    /// channel, so the duration is data bytes / 8000 s per channel.
    ///
    /// Stereo files interleave byte by byte (`L R L R`, each byte two
    /// samples of one party). Note that ffmpeg's G.722 decoder (checked with
    /// 5.1) is mono only: it reads a 2-channel G.722 WAV as one channel of
    /// twice the length. Recordings therefore store G.722 as mono files.
    G722,
}

impl WavFormat {
    /// The WAVE format tag.
    pub fn format_tag(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 1,
            WavFormat::ALaw => 6,
            WavFormat::MuLaw => 7,
            WavFormat::G722 => 0x028F,
        }
    }

    /// The format for a WAVE format tag this crate supports.
    pub fn from_format_tag(tag: u16) -> Option<Self> {
        match tag {
            1 => Some(WavFormat::Pcm16),
            6 => Some(WavFormat::ALaw),
            7 => Some(WavFormat::MuLaw),
            0x028F => Some(WavFormat::G722),
            _ => None,
        }
    }

    /// Bits per sample: 8 for G.711, 16 for PCM, 4 for G.722.
    pub fn bits_per_sample(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 16,
            WavFormat::ALaw | WavFormat::MuLaw => 8,
            WavFormat::G722 => 4,
        }
    }

    /// The audio's own sampling rate: 8000 Hz for G.711, 16000 Hz for
    /// G.722 (whatever its RTP clock says); the default for PCM.
    pub fn native_sample_rate(self) -> u32 {
        match self {
            WavFormat::G722 => 16_000,
            WavFormat::ALaw | WavFormat::MuLaw | WavFormat::Pcm16 => 8000,
        }
    }

    /// Bytes of one channel's smallest unit: one sample, or for G.722 one
    /// octet holding two samples.
    fn bytes_per_unit(self) -> u16 {
        match self {
            WavFormat::G722 => 1,
            other => other.bits_per_sample() / 8,
        }
    }

    /// Samples per channel in one such unit.
    fn samples_per_unit(self) -> u64 {
        match self {
            WavFormat::G722 => 2,
            _ => 1,
        }
    }

    fn is_pcm(self) -> bool {
        self == WavFormat::Pcm16
    }

    /// Length of the fmt chunk body: PCMWAVEFORMAT for PCM, WAVEFORMATEX
    /// with an empty extension otherwise.
    fn fmt_body_len(self) -> u32 {
        if self.is_pcm() {
            16
        } else {
            18
        }
    }

    /// Bytes from the start of the file to the first audio byte.
    fn header_len(self) -> usize {
        let fact = if self.is_pcm() { 0 } else { 12 };
        RIFF_HEADER_LEN + DS64_CHUNK_LEN + 8 + self.fmt_body_len() as usize + fact + 8
    }
}

/// What a WAV file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSpec {
    /// Encoding of the samples.
    pub format: WavFormat,
    /// 1, or 2 with one party per channel.
    pub channels: u16,
    /// Samples per second per channel; 8000 for G.711.
    pub sample_rate: u32,
}

impl WavSpec {
    /// Mono at the format's native rate (8000 Hz; G.722 16000 Hz).
    pub fn mono(format: WavFormat) -> Self {
        WavSpec {
            format,
            channels: 1,
            sample_rate: format.native_sample_rate(),
        }
    }

    /// Stereo at the format's native rate: one party per channel.
    pub fn stereo(format: WavFormat) -> Self {
        WavSpec {
            format,
            channels: 2,
            sample_rate: format.native_sample_rate(),
        }
    }

    /// Bytes per block of all channels (WAVE nBlockAlign): a sample frame,
    /// or for G.722 one octet per channel.
    pub fn block_align(&self) -> u16 {
        self.channels * self.format.bytes_per_unit()
    }

    /// Bytes per second (nAvgBytesPerSec); 8000 per channel for G.722.
    pub fn byte_rate(&self) -> u32 {
        // validate() bounds the rate and channels, so this fits in 32 bits.
        self.sample_rate * u32::from(self.channels) * u32::from(self.format.bits_per_sample()) / 8
    }

    /// Sample frames (samples per channel) in `data_len` bytes of audio.
    pub fn frames(&self, data_len: u64) -> u64 {
        (data_len / u64::from(self.block_align().max(1)))
            .saturating_mul(self.format.samples_per_unit())
    }

    /// Playing time of `data_len` bytes of audio.
    pub fn duration(&self, data_len: u64) -> Duration {
        let frames = self.frames(data_len);
        let rate = u64::from(self.sample_rate.max(1));
        let nanos = u128::from(frames % rate) * 1_000_000_000 / u128::from(rate);
        Duration::new(frames / rate, nanos as u32)
    }

    fn validate(&self) -> Result<(), WavError> {
        if !(1..=2).contains(&self.channels) {
            return Err(WavError::UnsupportedChannels(self.channels));
        }
        // Zero is meaningless; the upper bound keeps byte_rate in 32 bits.
        if self.sample_rate == 0 || self.sample_rate > 192_000 {
            return Err(WavError::InvalidSampleRate(self.sample_rate));
        }
        if self.format == WavFormat::G722 && self.sample_rate != 16_000 {
            return Err(WavError::G722SampleRate(self.sample_rate));
        }
        Ok(())
    }
}

/// Errors from writing or validating WAV files. Messages name the field or value.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The underlying stream failed (its error says how: a full disk, …).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Only mono and stereo are written.
    #[error(
        "unsupported channel count {0}: expected 1 (mono) or 2 (stereo, one party per channel)"
    )]
    UnsupportedChannels(u16),
    /// Zero or implausibly high sample rate.
    #[error("invalid sample rate {0} Hz: expected 1..=192000")]
    InvalidSampleRate(u32),
    /// G.722 at another rate than its audio's (usually its RTP clock, 8000).
    #[error("G.722 is stored at 16000 Hz, its audio rate, not {0} Hz (its RTP clock is 8000 Hz)")]
    G722SampleRate(u32),
    /// A write method that does not fit the file's format or channel count.
    #[error("{method} does not fit a {channels}-channel {format:?} file")]
    WrongLayout {
        /// The method called.
        method: &'static str,
        /// The file's format.
        format: WavFormat,
        /// The file's channel count.
        channels: u16,
    },
    /// Stereo blocks of different lengths.
    #[error("stereo blocks must have equal lengths: left has {left} samples, right has {right}")]
    ChannelLengthMismatch {
        /// Samples for the left channel.
        left: usize,
        /// Samples for the right channel.
        right: usize,
    },
    /// Interleaved bytes that end inside a sample frame.
    #[error("{len} bytes is not a whole number of {block_align}-byte sample frames")]
    PartialFrame {
        /// Bytes given.
        len: usize,
        /// Bytes per frame.
        block_align: u16,
    },
    /// Reader: the bytes end before the named part.
    #[error("WAV header too short: {len} bytes, need {needed} to read the {part}")]
    TooShort {
        /// The part that does not fit.
        part: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: u64,
    },
    /// Reader: a chunk or form identifier is not what the position requires.
    #[error("WAV {field} is {found:?}, expected {expected}")]
    BadId {
        /// Which identifier.
        field: &'static str,
        /// What the file has (lossy UTF-8).
        found: String,
        /// What is allowed there.
        expected: &'static str,
    },
    /// A format tag other than 1, 6, 7 or 0x028F.
    #[error(
        "unsupported WAV format tag {0}: expected 1 (PCM), 6 (A-law), 7 (µ-law) or 655 (G.722)"
    )]
    UnsupportedFormatTag(u16),
    /// Repair: the file is not laid out as [`WavWriter`] writes.
    #[error("cannot repair: {0}")]
    NotRepairable(&'static str),
    /// Reader: a numeric field disagrees with what the rest of the file implies.
    #[error("WAV {field} is {found}, expected {expected}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its value in the file.
        found: u64,
        /// The value the rest of the file implies.
        expected: u64,
    },
    /// A chunk the format requires is absent.
    #[error("WAV file has no {0} chunk before the audio data")]
    MissingChunk(&'static str),
    /// A format browsers cannot play and this crate cannot decode.
    #[error("{0:?} recordings are not converted for playback: play the file in VLC or ffmpeg")]
    NoPlayback(WavFormat),
}

/// Builds the complete header for `data_len` bytes of audio. `padded` says
/// whether the pad byte after odd-length data is (or will be) in the file.
fn header_bytes(
    spec: &WavSpec,
    data_len: u64,
    rf64: bool,
    padded: bool,
) -> ([u8; MAX_HEADER_LEN], usize) {
    let header_len = spec.format.header_len();
    let pad = u64::from(padded && data_len % 2 == 1);
    let riff_size = header_len as u64 - 8 + data_len + pad;
    let frames = spec.frames(data_len);
    // In plain RIFF these fit: the writer switches before they would not.
    let size32 = |v: u64| {
        if rf64 {
            RF64_SIZE_PLACEHOLDER
        } else {
            v as u32
        }
    };

    let mut h = [0u8; MAX_HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(if rf64 { b"RF64" } else { b"RIFF" });
    put(&size32(riff_size).to_le_bytes());
    put(b"WAVE");
    if rf64 {
        put(b"ds64");
        put(&DS64_BODY_LEN.to_le_bytes());
        put(&riff_size.to_le_bytes());
        put(&data_len.to_le_bytes());
        put(&frames.to_le_bytes());
        put(&0u32.to_le_bytes()); // no table: only the data chunk is large
    } else {
        put(b"JUNK");
        put(&DS64_BODY_LEN.to_le_bytes());
        put(&[0; DS64_BODY_LEN as usize]);
    }
    put(b"fmt ");
    put(&spec.format.fmt_body_len().to_le_bytes());
    put(&spec.format.format_tag().to_le_bytes());
    put(&spec.channels.to_le_bytes());
    put(&spec.sample_rate.to_le_bytes());
    put(&spec.byte_rate().to_le_bytes());
    put(&spec.block_align().to_le_bytes());
    put(&spec.format.bits_per_sample().to_le_bytes());
    if !spec.format.is_pcm() {
        put(&0u16.to_le_bytes()); // cbSize: no extra format bytes
        put(b"fact");
        put(&4u32.to_le_bytes());
        put(&size32(frames).to_le_bytes());
    }
    put(b"data");
    put(&size32(data_len).to_le_bytes());
    debug_assert_eq!(at, header_len);
    (h, header_len)
}

/// A stored recording as 16-bit PCM, for players that cannot decode G.711
/// (browsers): a PCM header, then the audio converted chunk by chunk. The
/// file is only read; PCM files pass through unchanged.
#[derive(Debug)]
pub struct PcmPlayback<R: Read> {
    source: R,
    law: Option<crate::g711::Law>,
    /// Stored audio bytes not read yet.
    remaining: u64,
    header: Vec<u8>,
}

/// Bytes of stored audio converted per [`PcmPlayback::next_chunk`].
const PLAYBACK_CHUNK: u64 = 64 * 1024;

impl<R: Read + Seek> PcmPlayback<R> {
    /// Reads the header of the WAV file `source` (`file_len` bytes long)
    /// and positions it at the audio.
    pub fn open(mut source: R, file_len: u64) -> Result<Self, WavError> {
        let mut head = Vec::with_capacity(512);
        (&mut source).take(512).read_to_end(&mut head)?;
        let info = parse_wav_header(&head, file_len)?;
        let law = match info.spec.format {
            WavFormat::ALaw => Some(crate::g711::Law::ALaw),
            WavFormat::MuLaw => Some(crate::g711::Law::MuLaw),
            WavFormat::Pcm16 => None,
            WavFormat::G722 => return Err(WavError::NoPlayback(WavFormat::G722)),
        };
        let spec = WavSpec {
            format: WavFormat::Pcm16,
            ..info.spec
        };
        let out_len = info.data_len * if law.is_some() { 2 } else { 1 };
        let rf64 = out_len + spec.format.header_len() as u64 >= DEFAULT_RF64_THRESHOLD;
        let (bytes, len) = header_bytes(&spec, out_len, rf64, false);
        source.seek(SeekFrom::Start(info.data_offset))?;
        Ok(PcmPlayback {
            source,
            law,
            remaining: info.data_len,
            header: bytes[..len].to_vec(),
        })
    }
}

impl<R: Read> PcmPlayback<R> {
    /// The PCM file's header (sizes of the whole converted file).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The next converted audio bytes; `None` at the end. A file that ends
    /// early (still being written) ends the audio there.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, WavError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut stored = Vec::with_capacity(PLAYBACK_CHUNK.min(self.remaining) as usize);
        (&mut self.source)
            .take(PLAYBACK_CHUNK.min(self.remaining))
            .read_to_end(&mut stored)?;
        if stored.is_empty() {
            self.remaining = 0;
            return Ok(None);
        }
        self.remaining -= stored.len() as u64;
        Ok(Some(match self.law {
            None => stored,
            Some(law) => stored
                .iter()
                .flat_map(|&code| law.decode(code).to_le_bytes())
                .collect(),
        }))
    }
}

/// Streams a WAV (or, past the threshold, RF64) file to `W`.
///
/// The header goes at the stream position found at construction. Dropping
/// the writer without [`WavWriter::finish`] finalises the header on a best
/// effort basis; call `finish` to see errors. After an I/O error the file
/// state is unknown and the writer should be abandoned.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    /// `None` once finished; lets `finish` hand the stream back although
    /// the type implements `Drop`.
    inner: Option<W>,
    spec: WavSpec,
    /// Stream position of the first header byte.
    base: u64,
    header_len: u64,
    data_len: u64,
    rf64: bool,
    rf64_threshold: u64,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header and returns a writer ready for audio.
    pub fn new(inner: W, spec: WavSpec) -> Result<Self, WavError> {
        Self::with_rf64_threshold(inner, spec, DEFAULT_RF64_THRESHOLD)
    }

    /// Like [`WavWriter::new`] with the file size above which the file turns
    /// into RF64. For tests only, which cannot afford 4 GiB files; production
    /// code uses [`DEFAULT_RF64_THRESHOLD`]. Values above the default are
    /// clamped to it, as larger plain RIFF files cannot be described.
    pub fn with_rf64_threshold(
        mut inner: W,
        spec: WavSpec,
        rf64_threshold: u64,
    ) -> Result<Self, WavError> {
        spec.validate()?;
        let base = inner.stream_position()?;
        let (header, len) = header_bytes(&spec, 0, false, false);
        inner.write_all(&header[..len])?;
        Ok(WavWriter {
            inner: Some(inner),
            spec,
            base,
            header_len: len as u64,
            data_len: 0,
            rf64: false,
            rf64_threshold: rf64_threshold.min(DEFAULT_RF64_THRESHOLD),
        })
    }

    /// What the file holds.
    pub fn spec(&self) -> &WavSpec {
        &self.spec
    }

    /// Audio bytes written so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Whether the file has switched to RF64.
    pub fn is_rf64(&self) -> bool {
        self.rf64
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        self.inner.as_ref().expect("stream present until finish")
    }

    /// Writes mono G.711 codes or G.722 octets (1-channel file, not PCM).
    pub fn write_mono(&mut self, codes: &[u8]) -> Result<(), WavError> {
        self.check_layout("write_mono", false, 1)?;
        self.write_raw(codes)
    }

    /// Writes one block of G.711 codes (or G.722 octets) per party into a
    /// stereo file, interleaved `L0 R0 L1 R1 …`. Both blocks must be equally
    /// long; the caller pads a silent party with [`crate::g711::Law::silence`].
    pub fn write_stereo(&mut self, left: &[u8], right: &[u8]) -> Result<(), WavError> {
        self.check_layout("write_stereo", false, 2)?;
        check_equal(left.len(), right.len())?;
        let mut buf = [0u8; 4096];
        for (l, r) in left.chunks(buf.len() / 2).zip(right.chunks(buf.len() / 2)) {
            for (i, (&a, &b)) in l.iter().zip(r).enumerate() {
                buf[2 * i] = a;
                buf[2 * i + 1] = b;
            }
            self.write_raw(&buf[..2 * l.len()])?;
        }
        Ok(())
    }

    /// Writes mono 16-bit samples (PCM file, 1 channel).
    pub fn write_pcm16_mono(&mut self, samples: &[i16]) -> Result<(), WavError> {
        self.check_layout("write_pcm16_mono", true, 1)?;
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / 2) {
            for (i, s) in chunk.iter().enumerate() {
                buf[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
            }
            self.write_raw(&buf[..2 * chunk.len()])?;
        }
        Ok(())
    }

    /// Writes one block of 16-bit samples per party into a stereo PCM file,
    /// interleaved sample by sample.
    pub fn write_pcm16_stereo(&mut self, left: &[i16], right: &[i16]) -> Result<(), WavError> {
        self.check_layout("write_pcm16_stereo", true, 2)?;
        check_equal(left.len(), right.len())?;
        let mut buf = [0u8; 4096];
        for (l, r) in left.chunks(buf.len() / 4).zip(right.chunks(buf.len() / 4)) {
            for (i, (a, b)) in l.iter().zip(r).enumerate() {
                buf[4 * i..4 * i + 2].copy_from_slice(&a.to_le_bytes());
                buf[4 * i + 2..4 * i + 4].copy_from_slice(&b.to_le_bytes());
            }
            self.write_raw(&buf[..4 * l.len()])?;
        }
        Ok(())
    }

    /// Writes already interleaved frames in the file's encoding (PCM as
    /// little-endian); the length must be a whole number of frames.
    pub fn write_interleaved(&mut self, frames: &[u8]) -> Result<(), WavError> {
        let block_align = self.spec.block_align();
        if frames.len() % usize::from(block_align) != 0 {
            return Err(WavError::PartialFrame {
                len: frames.len(),
                block_align,
            });
        }
        self.write_raw(frames)
    }

    /// Rewrites the header's sizes for the data written so far, so that a
    /// crash leaves a readable file. The RIFF pad byte for odd data lengths
    /// is only added by [`WavWriter::finish`].
    pub fn sync_header(&mut self) -> Result<(), WavError> {
        self.rewrite_header(false)?;
        self.inner_mut().flush()?;
        Ok(())
    }

    /// Adds the pad byte if needed, writes the final sizes, flushes, and
    /// returns the stream positioned after the file.
    pub fn finish(mut self) -> Result<W, WavError> {
        let result = self.finalize();
        // Taken even on error so that Drop does not try a second time.
        let inner = self.inner.take().expect("stream present until finish");
        result.map(|()| inner)
    }

    fn finalize(&mut self) -> Result<(), WavError> {
        if self.data_len % 2 == 1 {
            // The pad byte counts towards the RIFF size, so it may be the
            // byte that crosses the threshold.
            self.switch_if_needed(self.data_len + 1)?;
            self.inner_mut().write_all(&[0])?;
        }
        self.rewrite_header(true)?;
        self.inner_mut().flush()?;
        Ok(())
    }

    fn check_layout(&self, method: &'static str, pcm: bool, channels: u16) -> Result<(), WavError> {
        if self.spec.format.is_pcm() != pcm || self.spec.channels != channels {
            return Err(WavError::WrongLayout {
                method,
                format: self.spec.format,
                channels: self.spec.channels,
            });
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), WavError> {
        let new_len = self.data_len + bytes.len() as u64;
        // Count the pad byte an odd length will need, so that finish() never
        // produces a plain RIFF file one byte over the limit.
        self.switch_if_needed(new_len + new_len % 2)?;
        self.inner_mut().write_all(bytes)?;
        self.data_len = new_len;
        Ok(())
    }

    fn switch_if_needed(&mut self, data_len_with_pad: u64) -> Result<(), WavError> {
        if !self.rf64 && self.header_len + data_len_with_pad > self.rf64_threshold {
            self.rf64 = true;
            self.rewrite_header(false)?;
        }
        Ok(())
    }

    /// Rewrites the whole header in place (it has the same length in RIFF
    /// and RF64 form) and returns to the end of the data.
    fn rewrite_header(&mut self, padded: bool) -> Result<(), WavError> {
        let (header, len) = header_bytes(&self.spec, self.data_len, self.rf64, padded);
        let end = self.base
            + self.header_len
            + self.data_len
            + u64::from(padded && self.data_len % 2 == 1);
        let base = self.base;
        let inner = self.inner_mut();
        inner.seek(SeekFrom::Start(base))?;
        inner.write_all(&header[..len])?;
        inner.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    fn inner_mut(&mut self) -> &mut W {
        self.inner.as_mut().expect("stream present until finish")
    }
}

impl<W: Write + Seek> Drop for WavWriter<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // Best effort: a recording cut short (error path, panic unwind)
            // should still have correct sizes. Errors cannot be reported here.
            let _ = self.finalize();
        }
    }
}

fn check_equal(left: usize, right: usize) -> Result<(), WavError> {
    if left != right {
        return Err(WavError::ChannelLengthMismatch { left, right });
    }
    Ok(())
}

/// What [`wav_header_is_valid`] found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    /// RF64 (sizes from the ds64 chunk) rather than plain RIFF.
    pub rf64: bool,
    /// Format, channels and rate from the fmt chunk.
    pub spec: WavSpec,
    /// RIFF size: file length − 8.
    pub riff_size: u64,
    /// Offset of the first audio byte.
    pub data_offset: u64,
    /// Audio bytes, without the pad byte.
    pub data_len: u64,
    /// Sample frames (samples per channel).
    pub frames: u64,
}

impl WavInfo {
    /// Playing time of the audio.
    pub fn duration(&self) -> Duration {
        self.spec.duration(self.data_len)
    }
}

/// Validates a complete WAV/RF64 file held in memory and describes it.
pub fn wav_header_is_valid(bytes: &[u8]) -> Result<WavInfo, WavError> {
    parse_wav_header(bytes, bytes.len() as u64)
}

/// Validates the start of a WAV/RF64 file of `file_len` bytes; `header` needs
/// to reach only up to the data chunk's header, so large recordings can be
/// checked from their first few hundred bytes.
///
/// Accepts the formats this crate writes (tags 1 with 16 bits, 6 and 7 with
/// 8 bits, 0x028F with 4 bits at 16000 Hz; 1 or 2 channels), checks that fmt fields agree with each other,
/// that the RIFF size matches `file_len`, that the data fits in the file and
/// is whole frames, and that a fact chunk (or ds64 sample count) matches it.
/// Unknown chunks before the data are skipped.
pub fn parse_wav_header(header: &[u8], file_len: u64) -> Result<WavInfo, WavError> {
    let need = |part: &'static str, needed: usize| {
        if header.len() < needed {
            Err(WavError::TooShort {
                part,
                len: header.len(),
                needed: needed as u64,
            })
        } else {
            Ok(())
        }
    };
    need("RIFF header", RIFF_HEADER_LEN)?;
    let rf64 = match &header[0..4] {
        b"RIFF" => false,
        b"RF64" => true,
        other => return Err(bad_id("file identifier", other, "\"RIFF\" or \"RF64\"")),
    };
    if &header[8..12] != b"WAVE" {
        return Err(bad_id("form type", &header[8..12], "\"WAVE\""));
    }
    let riff_size32 = le32(&header[4..8]);

    // ds64 values: (riff size, data size, sample count).
    let mut ds64: Option<(u64, u64, u64)> = None;
    let mut spec: Option<WavSpec> = None;
    let mut fact: Option<u32> = None;
    let mut at = RIFF_HEADER_LEN;
    loop {
        need("chunk header", at + 8)?;
        let id = &header[at..at + 4];
        let size32 = le32(&header[at + 4..at + 8]);
        let body = at + 8;
        if rf64 && at == RIFF_HEADER_LEN {
            // EBU Tech 3306: ds64 must be the first chunk.
            if id != b"ds64" {
                return Err(bad_id("first RF64 chunk", id, "\"ds64\""));
            }
            if size32 < DS64_BODY_LEN {
                return Err(bad_field(
                    "ds64 chunk size",
                    size32.into(),
                    DS64_BODY_LEN.into(),
                ));
            }
            need("ds64 chunk", body + DS64_BODY_LEN as usize)?;
            ds64 = Some((
                le64(&header[body..body + 8]),
                le64(&header[body + 8..body + 16]),
                le64(&header[body + 16..body + 24]),
            ));
        }
        match id {
            b"fmt " => {
                if size32 < 16 {
                    return Err(bad_field("fmt chunk size", size32.into(), 16));
                }
                need("fmt chunk", body + 16)?;
                spec = Some(parse_fmt(&header[body..body + 16])?);
            }
            b"fact" => {
                if size32 < 4 {
                    return Err(bad_field("fact chunk size", size32.into(), 4));
                }
                need("fact chunk", body + 4)?;
                fact = Some(le32(&header[body..body + 4]));
            }
            b"data" => {
                let spec = spec.ok_or(WavError::MissingChunk("fmt "))?;
                let data_offset = body as u64;
                let (riff_size, data_len, ds64_frames) = match ds64 {
                    Some((riff, data, frames)) => {
                        if riff_size32 != RF64_SIZE_PLACEHOLDER {
                            return Err(bad_field(
                                "RF64 size field",
                                riff_size32.into(),
                                RF64_SIZE_PLACEHOLDER.into(),
                            ));
                        }
                        (riff, data, Some(frames))
                    }
                    None => (u64::from(riff_size32), u64::from(size32), None),
                };
                return check_data(
                    spec,
                    rf64,
                    riff_size,
                    data_offset,
                    data_len,
                    file_len,
                    fact,
                    ds64_frames,
                );
            }
            _ => {}
        }
        // Chunks are word aligned: odd sizes are followed by a pad byte.
        at = body + size32 as usize + (size32 as usize & 1);
    }
}

fn parse_fmt(b: &[u8]) -> Result<WavSpec, WavError> {
    let tag = le16(&b[0..2]);
    let format = WavFormat::from_format_tag(tag).ok_or(WavError::UnsupportedFormatTag(tag))?;
    let spec = WavSpec {
        format,
        channels: le16(&b[2..4]),
        sample_rate: le32(&b[4..8]),
    };
    spec.validate()?;
    let bits = le16(&b[14..16]);
    if bits != format.bits_per_sample() {
        return Err(bad_field(
            "bits per sample",
            bits.into(),
            format.bits_per_sample().into(),
        ));
    }
    let block_align = le16(&b[12..14]);
    if block_align != spec.block_align() {
        return Err(bad_field(
            "block align",
            block_align.into(),
            spec.block_align().into(),
        ));
    }
    let byte_rate = le32(&b[8..12]);
    if byte_rate != spec.byte_rate() {
        return Err(bad_field(
            "byte rate",
            byte_rate.into(),
            spec.byte_rate().into(),
        ));
    }
    Ok(spec)
}

#[allow(clippy::too_many_arguments)]
fn check_data(
    spec: WavSpec,
    rf64: bool,
    riff_size: u64,
    data_offset: u64,
    data_len: u64,
    file_len: u64,
    fact: Option<u32>,
    ds64_frames: Option<u64>,
) -> Result<WavInfo, WavError> {
    if riff_size.checked_add(8) != Some(file_len) {
        return Err(bad_field(
            "RIFF size",
            riff_size,
            file_len.saturating_sub(8),
        ));
    }
    let data_end = data_offset + data_len + data_len % 2;
    if data_end > file_len {
        return Err(bad_field(
            "data size",
            data_len,
            file_len.saturating_sub(data_offset),
        ));
    }
    let block_align = u64::from(spec.block_align());
    if data_len % block_align != 0 {
        return Err(bad_field(
            "data size modulo block align",
            data_len % block_align,
            0,
        ));
    }
    let frames = spec.frames(data_len);
    match (fact, ds64_frames) {
        (Some(f), Some(d)) if f == RF64_SIZE_PLACEHOLDER => {
            if d != frames {
                return Err(bad_field("ds64 sample count", d, frames));
            }
        }
        (Some(f), _) => {
            if u64::from(f) != frames {
                return Err(bad_field("fact sample count", f.into(), frames));
            }
        }
        (None, _) if !spec.format.is_pcm() => return Err(WavError::MissingChunk("fact")),
        (None, _) => {}
    }
    Ok(WavInfo {
        rf64,
        spec,
        riff_size,
        data_offset,
        data_len,
        frames,
    })
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavRepair {
    /// The file as it is now.
    pub info: WavInfo,
    /// Whether the header had to be rewritten (false: it was already valid).
    pub rewritten: bool,
    /// Bytes cut from the end: a partial last sample frame.
    pub truncated_bytes: u64,
}

/// Makes a file written by [`WavWriter`] valid again after the writer died
/// (crash, `kill -9`) with stale header sizes: the audio is whatever the
/// file holds after the header, a partial last sample frame is cut off, the
/// RIFF pad byte is added for odd lengths, and the sizes (RIFF or, as the
/// header says or the length needs, RF64) are rewritten from that. A file
/// with a complete header and no audio becomes a valid empty file. A file
/// that is already valid is left alone.
///
/// Only this writer's layout is repaired (the chunk offsets in the module
/// documentation): a crashed writer leaves that layout, and guessing at
/// other layouts could damage evidence.
pub fn repair(file: &mut File) -> Result<WavRepair, WavError> {
    let file_len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(MAX_HEADER_LEN);
    Read::by_ref(file)
        .take(MAX_HEADER_LEN as u64)
        .read_to_end(&mut head)?;
    if let Ok(info) = parse_wav_header(&head, file_len) {
        return Ok(WavRepair {
            info,
            rewritten: false,
            truncated_bytes: 0,
        });
    }
    let (spec, rf64) = writer_layout(&head)?;
    let header_len = spec.format.header_len() as u64;
    let available = file_len - header_len; // writer_layout saw a whole header
    let truncated_bytes = available % u64::from(spec.block_align());
    let data_len = available - truncated_bytes;
    let pad = data_len % 2;
    // set_len zero-fills when growing, which writes the pad byte.
    file.set_len(header_len + data_len + pad)?;
    let rf64 = rf64 || header_len + data_len + pad > DEFAULT_RF64_THRESHOLD;
    let (header, len) = header_bytes(&spec, data_len, rf64, true);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header[..len])?;
    file.sync_all()?;
    let info = parse_wav_header(&header[..len], header_len + data_len + pad)?;
    Ok(WavRepair {
        info,
        rewritten: true,
        truncated_bytes,
    })
}

/// Checks that `head` is a complete header in [`WavWriter`]'s layout
/// (ignoring its sizes) and returns what it describes and whether it is RF64.
fn writer_layout(head: &[u8]) -> Result<(WavSpec, bool), WavError> {
    let short = |part: &'static str, needed: usize| WavError::TooShort {
        part,
        len: head.len(),
        needed: needed as u64,
    };
    let at = |offset: usize, len: usize| head.get(offset..offset + len);
    let rf64 = match at(0, 4) {
        Some(b"RIFF") => false,
        Some(b"RF64") => true,
        Some(other) => return Err(bad_id("file identifier", other, "\"RIFF\" or \"RF64\"")),
        None => return Err(short("RIFF header", RIFF_HEADER_LEN)),
    };
    let junk = if rf64 { b"ds64" } else { b"JUNK" };
    let fmt_at = RIFF_HEADER_LEN + DS64_CHUNK_LEN;
    if head.len() < fmt_at + 24 {
        return Err(short("fmt chunk", fmt_at + 24));
    }
    if at(8, 4) != Some(b"WAVE") || at(12, 4) != Some(junk) || at(fmt_at, 4) != Some(b"fmt ") {
        return Err(WavError::NotRepairable(
            "the header is not the one this writer writes",
        ));
    }
    let spec = parse_fmt(&head[fmt_at + 8..fmt_at + 24])?;
    let header_len = spec.format.header_len();
    if head.len() < header_len {
        return Err(short("header", header_len));
    }
    let fact_ok = spec.format.is_pcm() || at(header_len - 20, 4) == Some(b"fact");
    if !fact_ok || at(header_len - 8, 4) != Some(b"data") {
        return Err(WavError::NotRepairable(
            "the chunks are not where this writer puts them",
        ));
    }
    Ok((spec, rf64))
}

fn bad_id(field: &'static str, found: &[u8], expected: &'static str) -> WavError {
    WavError::BadId {
        field,
        found: String::from_utf8_lossy(found).into_owned(),
        expected,
    }
}

fn bad_field(field: &'static str, found: u64, expected: u64) -> WavError {
    WavError::BadField {
        field,
        found,
        expected,
    }
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn write_file(spec: WavSpec, f: impl FnOnce(&mut WavWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        f(&mut w);
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn playback_decodes_g711_stereo_to_pcm_and_leaves_the_file_as_it_is() {
        let left = [0xD5u8, 0x55, 0x2A];
        let right = [0xAAu8, 0xD5, 0x80];
        let stored = write_file(WavSpec::stereo(WavFormat::ALaw), |w| {
            w.write_stereo(&left, &right).unwrap();
        });
        let kept = stored.clone();
        let mut playback = PcmPlayback::open(Cursor::new(stored), kept.len() as u64).unwrap();
        let mut pcm = playback.header().to_vec();
        while let Some(chunk) = playback.next_chunk().unwrap() {
            pcm.extend(chunk);
        }
        let info = wav_header_is_valid(&pcm).unwrap();
        assert_eq!(info.spec, WavSpec::stereo(WavFormat::Pcm16));
        assert_eq!((info.frames, info.data_len), (3, 12));
        let samples: Vec<i16> = pcm[info.data_offset as usize..]
            .chunks(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        let law = crate::g711::Law::ALaw;
        let expected: Vec<i16> = left
            .iter()
            .zip(&right)
            .flat_map(|(l, r)| [law.decode(*l), law.decode(*r)])
            .collect();
        assert_eq!(samples, expected, "one party per channel, in order");
    }

    #[test]
    fn playback_refuses_g722_with_the_reason() {
        let stored = write_file(WavSpec::mono(WavFormat::G722), |w| {
            w.write_mono(&[0xFF; 4]).unwrap();
        });
        let len = stored.len() as u64;
        let error = PcmPlayback::open(Cursor::new(stored), len).unwrap_err();
        assert!(error.to_string().contains("VLC"), "{error}");
    }

    #[test]
    fn mono_alaw_header_bytes_exactly() {
        let bytes = write_file(WavSpec::mono(WavFormat::ALaw), |w| {
            w.write_mono(&[0xD5, 0xD5, 0x55, 0x2A, 0xAA]).unwrap();
        });
        let mut expected = Vec::new();
        expected.extend_from_slice(b"RIFF");
        expected.extend_from_slice(&92u32.to_le_bytes()); // 100 - 8
        expected.extend_from_slice(b"WAVE");
        expected.extend_from_slice(b"JUNK");
        expected.extend_from_slice(&28u32.to_le_bytes());
        expected.extend_from_slice(&[0; 28]);
        expected.extend_from_slice(b"fmt ");
        expected.extend_from_slice(&18u32.to_le_bytes());
        expected.extend_from_slice(&6u16.to_le_bytes()); // WAVE_FORMAT_ALAW
        expected.extend_from_slice(&1u16.to_le_bytes()); // channels
        expected.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
        expected.extend_from_slice(&8000u32.to_le_bytes()); // byte rate
        expected.extend_from_slice(&1u16.to_le_bytes()); // block align
        expected.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
        expected.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        expected.extend_from_slice(b"fact");
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(&5u32.to_le_bytes()); // sample frames
        expected.extend_from_slice(b"data");
        expected.extend_from_slice(&5u32.to_le_bytes());
        expected.extend_from_slice(&[0xD5, 0xD5, 0x55, 0x2A, 0xAA]);
        expected.push(0); // pad byte after odd-length data
        assert_eq!(expected.len(), 100);
        assert_eq!(bytes, expected);

        assert_eq!(
            wav_header_is_valid(&bytes).unwrap(),
            WavInfo {
                rf64: false,
                spec: WavSpec::mono(WavFormat::ALaw),
                riff_size: 92,
                data_offset: 94,
                data_len: 5,
                frames: 5
            }
        );
    }

    #[test]
    fn mulaw_and_pcm_fmt_fields() {
        let bytes = write_file(WavSpec::stereo(WavFormat::MuLaw), |_| {});
        assert_eq!(bytes.len(), 94);
        assert_eq!(&bytes[48..74], {
            let mut v = b"fmt ".to_vec();
            v.extend_from_slice(&[18, 0, 0, 0, 7, 0, 2, 0]);
            v.extend_from_slice(&8000u32.to_le_bytes());
            v.extend_from_slice(&16000u32.to_le_bytes());
            v.extend_from_slice(&[2, 0, 8, 0, 0, 0]);
            v
        });

        let spec = WavSpec {
            format: WavFormat::Pcm16,
            channels: 1,
            sample_rate: 16000,
        };
        let bytes = write_file(spec, |w| w.write_pcm16_mono(&[1, -2]).unwrap());
        let mut expected = b"RIFF".to_vec();
        expected.extend_from_slice(&76u32.to_le_bytes());
        expected.extend_from_slice(b"WAVEJUNK");
        expected.extend_from_slice(&28u32.to_le_bytes());
        expected.extend_from_slice(&[0; 28]);
        expected.extend_from_slice(b"fmt ");
        expected.extend_from_slice(&16u32.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 1, 0]);
        expected.extend_from_slice(&16000u32.to_le_bytes());
        expected.extend_from_slice(&32000u32.to_le_bytes());
        expected.extend_from_slice(&[2, 0, 16, 0]);
        expected.extend_from_slice(b"data");
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(&[0x01, 0x00, 0xFE, 0xFF]);
        assert_eq!(bytes, expected);
        let info = wav_header_is_valid(&bytes).unwrap();
        assert_eq!((info.data_offset, info.data_len, info.frames), (80, 4, 2));
    }

    #[test]
    fn stereo_interleaves_one_party_per_channel() {
        let bytes = write_file(WavSpec::stereo(WavFormat::ALaw), |w| {
            w.write_stereo(&[1, 2, 3], &[0x81, 0x82, 0x83]).unwrap();
            w.write_stereo(&[4], &[0x84]).unwrap();
        });
        let info = wav_header_is_valid(&bytes).unwrap();
        assert_eq!(info.frames, 4);
        assert_eq!(info.data_len, 8);
        assert_eq!(&bytes[94..], &[1, 0x81, 2, 0x82, 3, 0x83, 4, 0x84]);

        let spec = WavSpec::stereo(WavFormat::Pcm16);
        let bytes = write_file(spec, |w| {
            w.write_pcm16_stereo(&[0x0102, -1], &[0x0304, 0x7FFF])
                .unwrap();
        });
        assert_eq!(
            &bytes[80..],
            &[0x02, 0x01, 0x04, 0x03, 0xFF, 0xFF, 0xFF, 0x7F]
        );
        assert_eq!(wav_header_is_valid(&bytes).unwrap().frames, 2);
    }

    #[test]
    fn long_stereo_blocks_cross_the_internal_buffer() {
        let left: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
        let right: Vec<u8> = left.iter().map(|b| !b).collect();
        let bytes = write_file(WavSpec::stereo(WavFormat::MuLaw), |w| {
            w.write_stereo(&left, &right).unwrap();
        });
        let data = &bytes[94..];
        assert_eq!(data.len(), 10_000);
        for i in 0..5000 {
            assert_eq!((data[2 * i], data[2 * i + 1]), (left[i], right[i]));
        }
        let l16: Vec<i16> = (0..3000).map(|i| i as i16 * 7).collect();
        let r16: Vec<i16> = l16.iter().map(|s| -s).collect();
        let bytes = write_file(WavSpec::stereo(WavFormat::Pcm16), |w| {
            w.write_pcm16_stereo(&l16, &r16).unwrap();
        });
        let data = &bytes[80..];
        for i in 0..3000 {
            assert_eq!(le16(&data[4 * i..]) as i16, l16[i]);
            assert_eq!(le16(&data[4 * i + 2..]) as i16, r16[i]);
        }
    }

    #[test]
    fn finish_sizes_after_many_writes() {
        let bytes = write_file(WavSpec::mono(WavFormat::MuLaw), |w| {
            for _ in 0..50 {
                w.write_mono(&[0xFF; 160]).unwrap();
            }
            w.write_interleaved(&[0x7F; 3]).unwrap();
            assert_eq!(w.data_len(), 8003);
        });
        assert_eq!(bytes.len(), 94 + 8003 + 1);
        assert_eq!(le32(&bytes[4..8]), 94 - 8 + 8004);
        assert_eq!(le32(&bytes[82..86]), 8003); // fact
        assert_eq!(le32(&bytes[90..94]), 8003); // data
        let info = wav_header_is_valid(&bytes).unwrap();
        assert_eq!(info.data_len, 8003);
        assert!(!info.rf64);
    }

    #[test]
    fn sync_header_leaves_a_readable_file() {
        let mut w =
            WavWriter::new(Cursor::new(Vec::new()), WavSpec::mono(WavFormat::ALaw)).unwrap();
        w.write_mono(&[0xD5; 320]).unwrap();
        w.sync_header().unwrap();
        let snapshot = w.get_ref().get_ref().clone();
        assert_eq!(wav_header_is_valid(&snapshot).unwrap().data_len, 320);
        // Writing continues at the end, not over the header.
        w.write_mono(&[0x55; 160]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(wav_header_is_valid(&bytes).unwrap().data_len, 480);
        assert_eq!(bytes[94 + 320], 0x55);
    }

    #[test]
    fn header_goes_at_the_initial_stream_position() {
        let mut cur = Cursor::new(Vec::new());
        cur.write_all(b"prefix").unwrap();
        let mut w = WavWriter::new(cur, WavSpec::mono(WavFormat::ALaw)).unwrap();
        w.write_mono(&[1, 2]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[..6], b"prefix");
        assert_eq!(wav_header_is_valid(&bytes[6..]).unwrap().data_len, 2);
    }

    #[test]
    fn drop_finalises_sizes() {
        let mut buf = Vec::new();
        {
            let mut cur = Cursor::new(&mut buf);
            let mut w = WavWriter::new(&mut cur, WavSpec::mono(WavFormat::ALaw)).unwrap();
            w.write_mono(&[9; 10]).unwrap();
        }
        assert_eq!(wav_header_is_valid(&buf).unwrap().data_len, 10);
    }

    #[test]
    fn switches_to_rf64_in_place_past_the_threshold() {
        let threshold = 200;
        let mut w = WavWriter::with_rf64_threshold(
            Cursor::new(Vec::new()),
            WavSpec::stereo(WavFormat::ALaw),
            threshold,
        )
        .unwrap();
        let mut audio = Vec::new();
        for i in 0..10u8 {
            let l = [i; 20];
            let r = [i | 0x80; 20];
            w.write_stereo(&l, &r).unwrap();
            for k in 0..20 {
                audio.extend_from_slice(&[l[k], r[k]]);
            }
            // 94 + 40 * (i + 1) bytes: above 200 from the third block on.
            assert_eq!(
                w.is_rf64(),
                94 + 40 * (u64::from(i) + 1) > threshold,
                "block {i}"
            );
        }
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 94 + 400);

        assert_eq!(&bytes[0..4], b"RF64");
        assert_eq!(le32(&bytes[4..8]), u32::MAX);
        assert_eq!(&bytes[8..12], b"WAVE");
        assert_eq!(&bytes[12..16], b"ds64");
        assert_eq!(le32(&bytes[16..20]), 28);
        assert_eq!(le64(&bytes[20..28]), 494 - 8); // riffSize
        assert_eq!(le64(&bytes[28..36]), 400); // dataSize
        assert_eq!(le64(&bytes[36..44]), 200); // sampleCount (frames)
        assert_eq!(le32(&bytes[44..48]), 0); // tableLength
        assert_eq!(&bytes[48..52], b"fmt ");
        assert_eq!(&bytes[74..78], b"fact");
        assert_eq!(le32(&bytes[82..86]), u32::MAX);
        assert_eq!(&bytes[86..90], b"data");
        assert_eq!(le32(&bytes[90..94]), u32::MAX);
        assert_eq!(&bytes[94..], &audio[..]);

        assert_eq!(
            wav_header_is_valid(&bytes).unwrap(),
            WavInfo {
                rf64: true,
                spec: WavSpec::stereo(WavFormat::ALaw),
                riff_size: 486,
                data_offset: 94,
                data_len: 400,
                frames: 200
            }
        );
    }

    #[test]
    fn pad_byte_alone_can_trigger_rf64() {
        // 94 + 5 = 99 fits a 100-byte limit, but 99 + pad = 100 is the limit
        // itself and 94 + 7 + pad = 102 is not.
        let mut w = WavWriter::with_rf64_threshold(
            Cursor::new(Vec::new()),
            WavSpec::mono(WavFormat::MuLaw),
            100,
        )
        .unwrap();
        w.write_mono(&[0; 5]).unwrap();
        assert!(!w.is_rf64());
        w.write_mono(&[0; 2]).unwrap();
        assert!(w.is_rf64());
        let bytes = w.finish().unwrap().into_inner();
        let info = wav_header_is_valid(&bytes).unwrap();
        assert!(info.rf64);
        assert_eq!((info.riff_size, info.data_len), (94, 7));
    }

    #[test]
    fn pcm_rf64_round_trip() {
        let mut w = WavWriter::with_rf64_threshold(
            Cursor::new(Vec::new()),
            WavSpec::mono(WavFormat::Pcm16),
            0,
        )
        .unwrap();
        assert!(!w.is_rf64());
        w.write_pcm16_mono(&[5; 10]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let info = wav_header_is_valid(&bytes).unwrap();
        assert!(info.rf64);
        assert_eq!((info.data_offset, info.data_len, info.frames), (80, 20, 10));
    }

    /// A stream that keeps only the first bytes and counts the rest, so the
    /// real 4 GiB boundary can be crossed without 4 GiB of memory or disk.
    #[derive(Default)]
    struct SparseSink {
        head: Vec<u8>,
        pos: u64,
        len: u64,
    }
    const KEEP: u64 = 128;
    impl Write for SparseSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            for (i, &b) in buf.iter().enumerate() {
                let at = self.pos + i as u64;
                if at >= KEEP {
                    break;
                }
                if at as usize >= self.head.len() {
                    self.head.resize(at as usize + 1, 0);
                }
                self.head[at as usize] = b;
            }
            self.pos += buf.len() as u64;
            self.len = self.len.max(self.pos);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for SparseSink {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.pos = match pos {
                SeekFrom::Start(p) => p,
                SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
                SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
            };
            Ok(self.pos)
        }
    }

    #[test]
    fn default_threshold_switches_just_past_4_gib() {
        let spec = WavSpec::mono(WavFormat::ALaw);
        let mut w = WavWriter::new(SparseSink::default(), spec).unwrap();
        let block = vec![0xD5u8; 1 << 20];
        // Fill to exactly 4 GiB of file: still plain RIFF.
        let fits = DEFAULT_RF64_THRESHOLD - 94;
        let mut left = fits;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            w.write_mono(&block[..n]).unwrap();
            left -= n as u64;
        }
        assert!(!w.is_rf64());
        w.sync_header().unwrap();
        let head = w.get_ref().head.clone();
        let info = parse_wav_header(&head, DEFAULT_RF64_THRESHOLD).unwrap();
        assert_eq!(
            (info.rf64, info.riff_size),
            (false, u64::from(u32::MAX) - 7)
        );
        // Two more bytes cross it.
        w.write_mono(&[0x55, 0x55]).unwrap();
        assert!(w.is_rf64());
        let sink = w.finish().unwrap();
        assert_eq!(sink.len, DEFAULT_RF64_THRESHOLD + 2);
        let info = parse_wav_header(&sink.head, sink.len).unwrap();
        assert!(info.rf64);
        assert_eq!(info.data_len, fits + 2);
        assert_eq!(info.riff_size, DEFAULT_RF64_THRESHOLD + 2 - 8);
        assert_eq!(info.frames, fits + 2);
    }

    #[test]
    fn writer_rejects_mismatched_calls() {
        assert!(matches!(
            WavWriter::new(
                Cursor::new(Vec::new()),
                WavSpec {
                    format: WavFormat::ALaw,
                    channels: 3,
                    sample_rate: 8000
                }
            ),
            Err(WavError::UnsupportedChannels(3))
        ));
        assert!(matches!(
            WavWriter::new(
                Cursor::new(Vec::new()),
                WavSpec {
                    format: WavFormat::ALaw,
                    channels: 1,
                    sample_rate: 0
                }
            ),
            Err(WavError::InvalidSampleRate(0))
        ));

        let mut w =
            WavWriter::new(Cursor::new(Vec::new()), WavSpec::stereo(WavFormat::ALaw)).unwrap();
        let err = w.write_mono(&[1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "write_mono does not fit a 2-channel ALaw file"
        );
        assert!(matches!(
            w.write_pcm16_stereo(&[1], &[1]),
            Err(WavError::WrongLayout {
                method: "write_pcm16_stereo",
                ..
            })
        ));
        let err = w.write_stereo(&[1, 2], &[1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stereo blocks must have equal lengths: left has 2 samples, right has 1"
        );
        assert!(matches!(
            w.write_interleaved(&[1, 2, 3]),
            Err(WavError::PartialFrame {
                len: 3,
                block_align: 2
            })
        ));
        assert_eq!(w.data_len(), 0);
    }

    #[test]
    fn g722_header_states_the_audio_rate_not_the_rtp_clock() {
        let octets: Vec<u8> = (0..8000u32).map(|i| (i % 256) as u8).collect();
        let bytes = write_file(WavSpec::mono(WavFormat::G722), |w| {
            w.write_mono(&octets).unwrap();
        });
        assert_eq!(le16(&bytes[56..58]), 0x028F); // format tag
        assert_eq!(le16(&bytes[58..60]), 1); // channels
        assert_eq!(le32(&bytes[60..64]), 16_000); // nSamplesPerSec
        assert_eq!(le32(&bytes[64..68]), 8000); // nAvgBytesPerSec
        assert_eq!(le16(&bytes[68..70]), 1); // nBlockAlign
        assert_eq!(le16(&bytes[70..72]), 4); // wBitsPerSample
        assert_eq!(le16(&bytes[72..74]), 0); // cbSize
        assert_eq!(le32(&bytes[82..86]), 16_000); // fact: 16 kHz samples
        assert_eq!(&bytes[94..], &octets[..]);
        let info = wav_header_is_valid(&bytes).unwrap();
        assert_eq!((info.data_len, info.frames), (8000, 16_000));
        // One second: bytes / 8000 per channel.
        assert_eq!(info.duration(), Duration::from_secs(1));
    }

    #[test]
    fn g722_stereo_interleaves_byte_by_byte() {
        let bytes = write_file(WavSpec::stereo(WavFormat::G722), |w| {
            w.write_stereo(&[1, 2, 3, 4], &[0x81, 0x82, 0x83, 0x84])
                .unwrap();
        });
        assert_eq!(le32(&bytes[64..68]), 16_000); // 8000 per channel
        assert_eq!(le16(&bytes[68..70]), 2);
        assert_eq!(&bytes[94..], &[1, 0x81, 2, 0x82, 3, 0x83, 4, 0x84]);
        let info = wav_header_is_valid(&bytes).unwrap();
        assert_eq!(info.frames, 8); // two samples per octet and channel
        assert_eq!(info.duration(), Duration::from_micros(500));
    }

    #[test]
    fn g722_at_the_rtp_clock_rate_is_rejected() {
        let spec = WavSpec {
            format: WavFormat::G722,
            channels: 1,
            sample_rate: 8000,
        };
        let err = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap_err();
        assert!(matches!(err, WavError::G722SampleRate(8000)), "{err}");
        // And a file that says so is not valid either.
        let mut bytes = write_file(WavSpec::mono(WavFormat::G722), |w| {
            w.write_mono(&[0xFF; 4]).unwrap();
        });
        bytes[60..64].copy_from_slice(&8000u32.to_le_bytes());
        bytes[64..68].copy_from_slice(&4000u32.to_le_bytes());
        assert!(matches!(
            wav_header_is_valid(&bytes),
            Err(WavError::G722SampleRate(8000))
        ));
    }

    #[test]
    fn g722_rf64_counts_samples_in_ds64() {
        let mut w = WavWriter::with_rf64_threshold(
            Cursor::new(Vec::new()),
            WavSpec::mono(WavFormat::G722),
            100,
        )
        .unwrap();
        w.write_mono(&[0xFF; 10]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(le64(&bytes[36..44]), 20); // sampleCount at 16 kHz
        let info = wav_header_is_valid(&bytes).unwrap();
        assert!(info.rf64);
        assert_eq!(info.frames, 20);
    }

    /// A file as a crashed writer leaves it: header synced at some point,
    /// audio written after that.
    fn crashed_file(spec: WavSpec, synced: usize, total: usize) -> (tempfile::TempPath, Vec<u8>) {
        let audio: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.write_interleaved(&audio[..synced]).unwrap();
        w.sync_header().unwrap();
        w.write_interleaved(&audio[synced..]).unwrap();
        let bytes = w.get_ref().get_ref().clone();
        std::mem::forget(w); // a crash runs no Drop
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        (file.into_temp_path(), audio)
    }

    #[test]
    fn repair_recovers_a_file_cut_at_any_byte() {
        for spec in [
            WavSpec::mono(WavFormat::ALaw),
            WavSpec::stereo(WavFormat::MuLaw),
            WavSpec::stereo(WavFormat::Pcm16),
            WavSpec::mono(WavFormat::G722),
        ] {
            let header_len = spec.format.header_len();
            let (path, audio) = crashed_file(spec, 40, 400);
            let full = std::fs::read(&path).unwrap();
            for cut in [
                header_len,
                header_len + 1,
                header_len + 3,
                header_len + 41,
                full.len() - 1,
                full.len(),
            ] {
                std::fs::write(&path, &full[..cut]).unwrap();
                let mut file = File::options().read(true).write(true).open(&path).unwrap();
                let repaired = repair(&mut file).unwrap();
                let available = (cut - header_len) as u64;
                let whole = available - available % u64::from(spec.block_align());
                assert_eq!(repaired.info.data_len, whole, "{spec:?} cut at {cut}");
                assert_eq!(repaired.truncated_bytes, available - whole);
                let bytes = std::fs::read(&path).unwrap();
                let info = wav_header_is_valid(&bytes).unwrap();
                assert_eq!(info, repaired.info);
                assert_eq!(
                    &bytes[header_len..header_len + whole as usize],
                    &audio[..whole as usize]
                );
                assert_eq!(info.duration(), spec.duration(whole));
            }
        }
    }

    #[test]
    fn repair_makes_a_header_only_file_empty_and_valid() {
        let (path, _) = crashed_file(WavSpec::mono(WavFormat::ALaw), 0, 0);
        // Sizes deliberately stale: claim audio that is not there.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[90..94].copy_from_slice(&1000u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut file = File::options().read(true).write(true).open(&path).unwrap();
        let repaired = repair(&mut file).unwrap();
        assert!(repaired.rewritten);
        assert_eq!(repaired.info.data_len, 0);
        assert_eq!(repaired.info.duration(), Duration::ZERO);
        assert!(wav_header_is_valid(&std::fs::read(&path).unwrap()).is_ok());
    }

    #[test]
    fn repair_leaves_valid_files_and_refuses_foreign_ones() {
        let (path, _) = crashed_file(WavSpec::mono(WavFormat::MuLaw), 8, 8);
        let before = std::fs::read(&path).unwrap();
        let mut file = File::options().read(true).write(true).open(&path).unwrap();
        assert!(!repair(&mut file).unwrap().rewritten);
        assert_eq!(std::fs::read(&path).unwrap(), before);

        std::fs::write(&path, &before[..50]).unwrap();
        let mut file = File::options().read(true).write(true).open(&path).unwrap();
        let err = repair(&mut file);
        assert!(matches!(err, Err(WavError::TooShort { .. })), "{err:?}");
        std::fs::write(
            &path,
            b"not a wav file at all, just some text that is long enough to hold a header....",
        )
        .unwrap();
        let mut file = File::options().read(true).write(true).open(&path).unwrap();
        assert!(matches!(repair(&mut file), Err(WavError::BadId { .. })));
    }

    #[test]
    fn repair_keeps_rf64() {
        let mut w = WavWriter::with_rf64_threshold(
            Cursor::new(Vec::new()),
            WavSpec::mono(WavFormat::ALaw),
            100,
        )
        .unwrap();
        w.write_mono(&[0xD5; 20]).unwrap();
        let mut bytes = w.get_ref().get_ref().clone();
        std::mem::forget(w);
        bytes.extend_from_slice(&[0x55; 9]);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let repaired = repair(&mut file).unwrap();
        assert!(repaired.info.rf64);
        assert_eq!(repaired.info.data_len, 29);
        assert_eq!(repaired.info.riff_size, 94 - 8 + 30); // with the pad byte
    }

    #[test]
    fn reader_rejects_broken_files() {
        let good = write_file(WavSpec::mono(WavFormat::ALaw), |w| {
            w.write_mono(&[0xD5; 4]).unwrap()
        });
        assert!(wav_header_is_valid(&good).is_ok());

        let err = |bytes: &[u8]| wav_header_is_valid(bytes).unwrap_err().to_string();

        assert_eq!(
            err(&good[..10]),
            "WAV header too short: 10 bytes, need 12 to read the RIFF header"
        );
        let mut b = good.clone();
        b[0..4].copy_from_slice(b"RIFX");
        assert_eq!(
            err(&b),
            "WAV file identifier is \"RIFX\", expected \"RIFF\" or \"RF64\""
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(err(&b), "WAV RIFF size is 90, expected 91");
        let mut b = good.clone();
        b[90..94].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(err(&b), "WAV data size is 100, expected 4");
        let mut b = good.clone();
        b[82..86].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(err(&b), "WAV fact sample count is 3, expected 4");
        let mut b = good.clone();
        b[56..58].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            err(&b),
            "unsupported WAV format tag 3: expected 1 (PCM), 6 (A-law), 7 (µ-law) or 655 (G.722)"
        );
        let mut b = good.clone();
        b[60..64].copy_from_slice(&16000u32.to_le_bytes());
        assert_eq!(err(&b), "WAV byte rate is 8000, expected 16000");
        let mut b = good.clone();
        b[74..78].copy_from_slice(b"junk");
        assert_eq!(err(&b), "WAV file has no fact chunk before the audio data");
        let mut b = good.clone();
        b[0..4].copy_from_slice(b"RF64");
        assert_eq!(
            err(&b),
            "WAV first RF64 chunk is \"JUNK\", expected \"ds64\""
        );
        // Header only, file length given separately.
        assert_eq!(parse_wav_header(&good[..94], 98).unwrap().data_len, 4);
        assert_eq!(
            parse_wav_header(&good[..90], 98).unwrap_err().to_string(),
            "WAV header too short: 90 bytes, need 94 to read the chunk header"
        );
    }
}
