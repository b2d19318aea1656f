//! Announcements: decoding a file once to 8 kHz mono PCM, and playing it into
//! a call leg as G.711 RTP paced in real time.
//!
//! Decoding uses `symphonia` with only the formats announcements come in:
//! WAV (PCM, A-law/µ-law, IMA/MS ADPCM), Ogg Vorbis, FLAC and MP3. All are
//! pure Rust and small next to the rest of the workspace; AAC/MP4/MKV are left
//! out because prompts are not shipped in them and they double the decoder
//! code. Resampling is a plain area average (down) or linear interpolation
//! (up): speech prompts end up in an 8 kHz G.711 channel whose own
//! quantisation noise hides the difference to a polyphase filter.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as DecodeError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::MediaError;
use crate::g711::Law;
use crate::relay::{random_u32, CallMedia, Leg};
use crate::rtp::RtpHeader;
use crate::sdp::Codec;

/// Sample rate of decoded prompts and of the G.711 they are sent as.
pub const PROMPT_RATE: u32 = 8000;
/// Samples per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Packet interval.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// A decoded announcement: 8 kHz mono 16-bit PCM, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

impl Prompt {
    /// Decodes an audio file (format guessed from content, helped by the
    /// extension), mixes it to mono and resamples it to 8 kHz.
    pub fn load(path: impl AsRef<Path>) -> Result<Prompt, MediaError> {
        let path = path.as_ref();
        let decode_error = |e: DecodeError| MediaError::PromptDecode {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let file = File::open(path).map_err(|error| MediaError::PromptOpen {
            path: path.to_owned(),
            error,
        })?;
        let stream = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                stream,
                &FormatOptions::default(),
                &MetadataOptions::default(),
            )
            .map_err(decode_error)?;
        let mut format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| MediaError::PromptDecode {
                path: path.to_owned(),
                reason: "no audio track".into(),
            })?;
        let track_id = track.id;
        let mut rate = track.codec_params.sample_rate.unwrap_or(0);
        let mut decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(decode_error)?;

        let mut mono: Vec<f32> = Vec::new();
        let mut buffer: Option<SampleBuffer<f32>> = None;
        loop {
            let packet = match format.next_packet() {
                Ok(packet) => packet,
                Err(DecodeError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    break
                }
                Err(e) => return Err(decode_error(e)),
            };
            if packet.track_id() != track_id {
                continue;
            }
            let decoded = match decoder.decode(&packet) {
                Ok(decoded) => decoded,
                // A corrupt packet costs a click, not the prompt.
                Err(DecodeError::DecodeError(reason)) => {
                    tracing::debug!(path = %path.display(), reason, "prompt packet skipped");
                    continue;
                }
                Err(e) => return Err(decode_error(e)),
            };
            let spec = *decoded.spec();
            rate = spec.rate;
            let channels = spec.channels.count().max(1);
            let needed = decoded.capacity() as u64;
            let samples = match &mut buffer {
                Some(b) if b.capacity() as u64 >= needed * channels as u64 => b,
                slot => slot.insert(SampleBuffer::new(needed, spec)),
            };
            samples.copy_interleaved_ref(decoded);
            mono.extend(
                samples
                    .samples()
                    .chunks_exact(channels)
                    .map(|frame| frame.iter().sum::<f32>() / channels as f32),
            );
        }
        if rate == 0 {
            return Err(MediaError::PromptDecode {
                path: path.to_owned(),
                reason: "unknown sample rate".into(),
            });
        }
        let resampled = resample(&mono, rate, PROMPT_RATE);
        let samples: Vec<i16> = resampled
            .iter()
            .map(|&s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16)
            .collect();
        tracing::debug!(path = %path.display(), source_rate = rate, samples = samples.len(), "prompt loaded");
        Ok(Prompt {
            samples: samples.into(),
        })
    }

    /// A prompt from 8 kHz mono samples.
    pub fn from_samples(samples: impl Into<Arc<[i16]>>) -> Prompt {
        Prompt {
            samples: samples.into(),
        }
    }

    /// The 8 kHz mono samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Playing time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(PROMPT_RATE))
    }

    /// Number of 20 ms packets it is sent as (the last padded with silence).
    pub fn packet_count(&self) -> usize {
        self.samples.len().div_ceil(SAMPLES_PER_PACKET)
    }
}

/// Area-average downsampling (a box low-pass against aliasing) or linear
/// interpolation upsampling.
fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let ratio = f64::from(from) / f64::from(to);
    let out_len = ((input.len() as f64) / ratio).floor() as usize;
    let mut out = Vec::with_capacity(out_len);
    if ratio > 1.0 {
        for i in 0..out_len {
            let begin = (i as f64 * ratio) as usize;
            let end = (((i + 1) as f64 * ratio) as usize).clamp(begin + 1, input.len());
            let window = &input[begin..end];
            out.push(window.iter().sum::<f32>() / window.len() as f32);
        }
    } else {
        for i in 0..out_len {
            let pos = i as f64 * ratio;
            let k = pos as usize;
            let frac = (pos - k as f64) as f32;
            let a = input[k];
            let b = input.get(k + 1).copied().unwrap_or(a);
            out.push(a + (b - a) * frac);
        }
    }
    out
}

impl CallMedia {
    /// Plays `prompt` to `leg` as `codec` (PCMU or PCMA, static payload
    /// types 0 and 8), in 20 ms packets paced in real time, with its own
    /// SSRC, sequence numbers and timestamps. While it plays, packets from
    /// the other leg are not forwarded to `leg` (they are still counted and
    /// tapped); forwarding resumes when the future completes or is dropped.
    ///
    /// Errors at once with [`MediaError::PromptCodecUnsupported`] for any
    /// other codec (a G.722-only call cannot hear prompts: the relay does not
    /// transcode). The future fails with [`MediaError::NoRemote`] if the leg
    /// has no remote address, and with [`MediaError::Closed`] if the call is
    /// closed while playing. It resolves to the number of packets sent.
    pub fn play_prompt(
        &self,
        leg: Leg,
        prompt: &Prompt,
        codec: Codec,
    ) -> impl Future<Output = Result<usize, MediaError>> + Send + 'static {
        let law = match codec {
            Codec::Pcmu => Ok((Law::MuLaw, 0u8)),
            Codec::Pcma => Ok((Law::ALaw, 8u8)),
            other => Err(MediaError::PromptCodecUnsupported(other)),
        };
        let handle = self.shared_for_prompt();
        let samples = prompt.samples.clone();
        // Mute the other party now, not at the first poll, so nothing
        // slips through between the call and the first packet.
        let guard = law.is_ok().then(|| handle.start_playing(leg));
        async move {
            let (law, payload_type) = law?;
            let _guard = guard;
            let ssrc = random_u32();
            let mut sequence = random_u32() as u16;
            let mut timestamp = random_u32();
            let mut payload = Vec::with_capacity(SAMPLES_PER_PACKET);
            let mut packet = [0u8; 12 + SAMPLES_PER_PACKET];
            let mut ticks = tokio::time::interval(PACKET_INTERVAL);
            let mut sent = 0;
            for (index, chunk) in samples.chunks(SAMPLES_PER_PACKET).enumerate() {
                payload.clear();
                law.encode_into(chunk, &mut payload);
                payload.resize(SAMPLES_PER_PACKET, law.silence());
                let len = RtpHeader::new(payload_type, sequence, timestamp, ssrc)
                    .with_marker(index == 0)
                    .write_packet(&payload, 0, &mut packet)
                    .expect("a 20 ms G.711 packet fits its buffer");
                tokio::select! {
                    _ = handle.cancel_token().cancelled() => return Err(MediaError::Closed),
                    _ = ticks.tick() => {}
                }
                handle.send(leg, &packet[..len]).await?;
                sent += 1;
                sequence = sequence.wrapping_add(1);
                timestamp = timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
            }
            Ok(sent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_length_and_level() {
        let tone: Vec<f32> = (0..16000)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 500.0 / 16000.0).sin() * 0.5)
            .collect();
        let down = resample(&tone, 16000, 8000);
        assert_eq!(down.len(), 8000);
        let rms = |v: &[f32]| (v.iter().map(|s| s * s).sum::<f32>() / v.len() as f32).sqrt();
        assert!((rms(&down) - rms(&tone)).abs() < 0.02, "{}", rms(&down));
        let up = resample(&down, 8000, 44100);
        assert_eq!(up.len(), 44100);
        assert!((rms(&up) - rms(&tone)).abs() < 0.03);
        assert_eq!(resample(&[], 44100, 8000), Vec::<f32>::new());
    }

    #[test]
    fn packet_count_rounds_up() {
        assert_eq!(Prompt::from_samples(vec![0i16; 320]).packet_count(), 2);
        assert_eq!(Prompt::from_samples(vec![0i16; 321]).packet_count(), 3);
        assert_eq!(
            Prompt::from_samples(vec![0i16; 8000]).duration(),
            Duration::from_secs(1)
        );
    }
}
