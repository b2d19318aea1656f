//! One leg's side of the timeline: where its frames belong (sequence and
//! RTP timestamp tracking, the anchor) and the jitter window they wait in.
//!
//! The call's timeline counts ticks of 1/8000 s since the recording
//! started. Every codec recorded here carries exactly one byte per tick and
//! channel (G.711: one sample; G.722: one octet, two 16 kHz samples, one
//! tick of its 8 kHz RTP clock), so a tick is also a byte offset.

use super::{Codec, LegCounters, SegmentKind, TICKS_PER_SECOND};

/// Sequence numbers further ahead than this are a new stream, not loss
/// (RFC 3550, appendix A.1).
const MAX_DROPOUT: i32 = 3000;
/// Sequence numbers further behind than this are a new stream, not a
/// reordered packet (RFC 3550, appendix A.1).
const MAX_MISORDER: i32 = 100;
/// How many of the latest sequence numbers are remembered for duplicates.
const SEEN_WINDOW: i32 = 128;
/// A frame whose RTP place and arrival disagree by more than this re-anchors
/// the leg: one second, far above network jitter, far below hold.
pub(super) const RESYNC_TICKS: i64 = TICKS_PER_SECOND as i64;
/// Ticks the jitter buffer can hold ahead of the write position. It must
/// cover the window plus the resync tolerance plus one maximal payload;
/// frames that do not fit re-anchor instead.
pub(super) const BUFFER_TICKS: usize = 4 * TICKS_PER_SECOND as usize;

/// Where a sequence number stands relative to what the leg has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeqStep {
    /// The leg's first frame.
    First,
    /// Seen already.
    Duplicate,
    /// The newest so far; `skipped` numbers in between are missing.
    Next { skipped: u16 },
    /// Older than the newest, not seen before: reordered or late.
    Older,
    /// So far from the newest that it is another stream's numbering.
    Jump,
}

/// Sequence number bookkeeping of one stream (wraps at 65535).
#[derive(Debug, Default)]
struct Sequence {
    /// Newest sequence number seen, `None` before the first frame.
    newest: Option<u16>,
    /// Bit `i` set: `newest - i` was seen.
    seen: u128,
}

impl Sequence {
    fn classify(&self, seq: u16) -> SeqStep {
        let Some(newest) = self.newest else {
            return SeqStep::First;
        };
        let delta = i32::from(seq.wrapping_sub(newest) as i16);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            SeqStep::Jump
        } else if delta > 0 {
            SeqStep::Next {
                skipped: (delta - 1) as u16,
            }
        } else if -delta < SEEN_WINDOW && self.seen & (1u128 << -delta) != 0 {
            SeqStep::Duplicate
        } else {
            SeqStep::Older
        }
    }

    /// Records `seq` as seen; `step` is what [`Sequence::classify`] said.
    fn record(&mut self, seq: u16, step: SeqStep) {
        match (step, self.newest) {
            (SeqStep::Next { .. }, Some(newest)) => {
                let delta = u32::from(seq.wrapping_sub(newest));
                self.seen = if delta >= SEEN_WINDOW as u32 {
                    0
                } else {
                    self.seen << delta
                } | 1;
                self.newest = Some(seq);
            }
            (SeqStep::Older, Some(newest)) => {
                let behind = u32::from(newest.wrapping_sub(seq));
                if behind < SEEN_WINDOW as u32 {
                    self.seen |= 1u128 << behind;
                }
            }
            (SeqStep::Duplicate, _) => {}
            // First, Jump, or no stream yet: start over at this number.
            _ => {
                self.newest = Some(seq);
                self.seen = 1;
            }
        }
    }
}

/// A leg's link from RTP timestamps to the call timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Tick of the call timeline where `rtp_ext` lies.
    tick: i64,
    /// Extended (unwrapped) RTP timestamp at `tick`.
    rtp_ext: i64,
    /// The last RTP timestamp placed, and its extended value: the reference
    /// for unwrapping the next one.
    last_rtp: u32,
    last_ext: i64,
}

impl Anchor {
    fn new(rtp: u32, tick: u64) -> Self {
        Anchor {
            tick: tick as i64,
            rtp_ext: i64::from(rtp),
            last_rtp: rtp,
            last_ext: i64::from(rtp),
        }
    }

    /// The tick `rtp` belongs at, unwrapping around the last one placed
    /// (timestamps wrap at 2^32; neighbours are far closer than 2^31).
    fn place(&self, rtp: u32) -> (i64, i64) {
        let ext = self.last_ext + i64::from(rtp.wrapping_sub(self.last_rtp) as i32);
        (self.tick + (ext - self.rtp_ext), ext)
    }
}

/// The leg's stream state: before its first audio frame, or anchored.
#[derive(Debug)]
enum StreamState {
    /// No audio frame yet: the whole leg is silence so far.
    Waiting,
    /// Frames are placed by RTP timestamp relative to the anchor.
    Anchored(Anchor),
}

/// Where a frame's audio goes, decided by [`Leg::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// Put the payload at this tick; `segment` says the leg was (re)anchored.
    At {
        tick: u64,
        segment: Option<SegmentKind>,
    },
    /// Seen already: dropped.
    Duplicate,
}

/// One leg: counters, stream state and its jitter buffer.
#[derive(Debug)]
pub(super) struct Leg {
    pub(super) counters: LegCounters,
    /// Frames the host said it dropped that no sequence gap has accounted
    /// for yet (so they are not counted as lost as well).
    dropped_unaccounted: u64,
    sequence: Sequence,
    stream: StreamState,
    pub(super) buffer: JitterBuffer,
    /// Codec of the last audio frame, `None` before the first.
    pub(super) last_codec: Option<Codec>,
    /// Whether the last tick rendered was silence (a gap continues).
    in_gap: bool,
    gap_ticks: u64,
}

impl Leg {
    pub(super) fn new() -> Self {
        Leg {
            counters: LegCounters::default(),
            dropped_unaccounted: 0,
            sequence: Sequence::default(),
            stream: StreamState::Waiting,
            buffer: JitterBuffer::new(),
            last_codec: None,
            in_gap: false,
            gap_ticks: 0,
        }
    }

    pub(super) fn host_dropped(&mut self, frames: u32) {
        self.counters.dropped += u64::from(frames);
        self.dropped_unaccounted += u64::from(frames);
    }

    /// Sequence bookkeeping of a frame that carries no audio (DTMF, comfort
    /// noise…): it shares the stream's numbering, so its number is no loss.
    /// Returns false for a duplicate.
    pub(super) fn note_sequence(&mut self, seq: u16) -> bool {
        let step = self.sequence.classify(seq);
        if step == SeqStep::Duplicate {
            self.counters.duplicates += 1;
            return false;
        }
        self.count_step(step);
        self.sequence.record(seq, step);
        true
    }

    /// Decides where an audio frame goes: by its timestamp, or, when that
    /// disagrees with its arrival (`arrival` tick) by more than
    /// [`RESYNC_TICKS`] or cannot be buffered, at its arrival as a new
    /// anchor. `written` is the first tick not yet written to the files.
    pub(super) fn place(&mut self, seq: u16, rtp: u32, arrival: u64, written: u64) -> Placement {
        let step = self.sequence.classify(seq);
        if step == SeqStep::Duplicate {
            self.counters.duplicates += 1;
            return Placement::Duplicate;
        }
        let anchored = match &self.stream {
            StreamState::Waiting => None,
            StreamState::Anchored(anchor) => Some(*anchor),
        };
        let segment = match anchored {
            None => Some(SegmentKind::First),
            Some(anchor) => {
                let (tick, _) = anchor.place(rtp);
                let off_by = tick - arrival as i64;
                let fits = tick + 1 < written as i64 + BUFFER_TICKS as i64;
                if off_by.abs() > RESYNC_TICKS || tick < 0 || !fits {
                    Some(if step == SeqStep::Jump {
                        SegmentKind::NewStream
                    } else {
                        SegmentKind::Resync
                    })
                } else {
                    None
                }
            }
        };
        let tick = match (segment, anchored) {
            (None, Some(mut anchor)) => {
                let (mut tick, ext) = anchor.place(rtp);
                if matches!(step, SeqStep::Next { .. }) && tick < written as i64 {
                    // The newest frame, yet behind what is written: the
                    // sender's clock is slow or the network stalled longer
                    // than the window. Slip the anchor instead of losing
                    // the stream from here on.
                    anchor.tick += written as i64 - tick;
                    tick = written as i64;
                    self.counters.slips += 1;
                }
                anchor.last_rtp = rtp;
                anchor.last_ext = ext;
                self.stream = StreamState::Anchored(anchor);
                self.count_step(step);
                tick as u64
            }
            _ => {
                // (Re)anchor at arrival; a jump in numbering is no loss.
                self.stream = StreamState::Anchored(Anchor::new(rtp, arrival));
                if step != SeqStep::First && step != SeqStep::Jump {
                    self.count_step(step);
                }
                arrival
            }
        };
        let step = if segment.is_some() && step != SeqStep::First {
            SeqStep::Jump // start the numbering over at this frame
        } else {
            step
        };
        self.sequence.record(seq, step);
        Placement::At { tick, segment }
    }

    fn count_step(&mut self, step: SeqStep) {
        match step {
            SeqStep::Next { skipped } => {
                let skipped = u64::from(skipped);
                let excused = skipped.min(self.dropped_unaccounted);
                self.dropped_unaccounted -= excused;
                self.counters.lost += skipped - excused;
            }
            // A number counted missing turned up after all.
            SeqStep::Older => self.counters.lost = self.counters.lost.saturating_sub(1),
            SeqStep::First | SeqStep::Duplicate | SeqStep::Jump => {}
        }
    }

    /// Moves this leg's audio for ticks `[buffer.base, upto)` to `out`,
    /// silence where nothing arrived, counting the gaps.
    pub(super) fn render(&mut self, upto: u64, silence: u8, out: &mut Vec<u8>) {
        let silent = self.buffer.take(upto, silence, out, &mut self.in_gap);
        self.gap_ticks += silent.ticks;
        self.counters.gaps += silent.runs;
    }

    pub(super) fn finish_counters(&self) -> LegCounters {
        LegCounters {
            gap_ms: self.gap_ticks * 1000 / TICKS_PER_SECOND,
            ..self.counters
        }
    }
}

/// Silence found while rendering.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Silence {
    /// Ticks of silence.
    pub(super) ticks: u64,
    /// Silence runs that started here.
    pub(super) runs: u64,
}

/// What [`JitterBuffer::put`] did with a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Put {
    /// Stored (perhaps without a head that was already written).
    Stored,
    /// Entirely before the write position: too late.
    Late,
}

/// A fixed ring of [`BUFFER_TICKS`] ticks starting at `base`, the first
/// tick not yet written. Bounded whatever the input: a frame that does not
/// fit is cut at the end (the caller re-anchors before that can happen).
#[derive(Debug)]
pub(super) struct JitterBuffer {
    base: u64,
    bytes: Vec<u8>,
    filled: Vec<bool>,
}

impl JitterBuffer {
    fn new() -> Self {
        JitterBuffer {
            base: 0,
            bytes: vec![0; BUFFER_TICKS],
            filled: vec![false; BUFFER_TICKS],
        }
    }

    /// Forgets everything buffered and restarts at `tick` (a new file set).
    pub(super) fn reset(&mut self, tick: u64) {
        self.filled.fill(false);
        self.base = tick;
    }

    pub(super) fn put(&mut self, tick: u64, payload: &[u8]) -> Put {
        let end = tick.saturating_add(payload.len() as u64);
        if end <= self.base {
            return Put::Late;
        }
        let skip = self.base.saturating_sub(tick) as usize;
        let limit = self.base + BUFFER_TICKS as u64;
        for (i, &byte) in payload.iter().enumerate().skip(skip) {
            let at = tick + i as u64;
            if at >= limit {
                break;
            }
            let slot = (at % BUFFER_TICKS as u64) as usize;
            self.bytes[slot] = byte;
            self.filled[slot] = true;
        }
        Put::Stored
    }

    /// Appends ticks `[base, upto)` to `out` and advances `base`.
    fn take(&mut self, upto: u64, silence: u8, out: &mut Vec<u8>, in_gap: &mut bool) -> Silence {
        let mut found = Silence::default();
        while self.base < upto {
            let slot = (self.base % BUFFER_TICKS as u64) as usize;
            if self.filled[slot] {
                out.push(self.bytes[slot]);
                self.filled[slot] = false;
                *in_gap = false;
            } else {
                out.push(silence);
                found.ticks += 1;
                if !*in_gap {
                    found.runs += 1;
                    *in_gap = true;
                }
            }
            self.base += 1;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_wraps_at_65535() {
        let mut s = Sequence::default();
        for seq in [65533u16, 65534, 65535, 0, 1] {
            let step = s.classify(seq);
            assert!(
                matches!(step, SeqStep::First | SeqStep::Next { skipped: 0 }),
                "{seq}: {step:?}"
            );
            s.record(seq, step);
        }
        assert_eq!(s.classify(65535), SeqStep::Duplicate);
        assert_eq!(s.classify(4), SeqStep::Next { skipped: 2 });
        assert_eq!(s.classify(65000), SeqStep::Jump);
        assert_eq!(s.classify(30000), SeqStep::Jump);
        assert_eq!(s.classify(65500), SeqStep::Older);
    }

    #[test]
    fn anchor_unwraps_rtp_timestamps() {
        let mut anchor = Anchor::new(u32::MAX - 159, 800);
        let (tick, ext) = anchor.place((u32::MAX - 159).wrapping_add(160)); // wraps to 0
        assert_eq!(tick, 960);
        anchor.last_rtp = 0;
        anchor.last_ext = ext;
        assert_eq!(anchor.place(160).0, 1120);
        assert_eq!(anchor.place(u32::MAX - 159).0, 800); // older, before the wrap
    }

    #[test]
    fn buffer_is_bounded_and_late_is_late() {
        let mut b = JitterBuffer::new();
        b.reset(100);
        assert_eq!(b.put(0, &[1; 100]), Put::Late);
        assert_eq!(b.put(90, &[2; 20]), Put::Stored); // head already written
        assert_eq!(b.put(100 + BUFFER_TICKS as u64 - 2, &[3; 10]), Put::Stored);
        let mut out = Vec::new();
        let mut in_gap = false;
        let silent = b.take(112, 0xD5, &mut out, &mut in_gap);
        assert_eq!(&out[..10], &[2; 10]);
        assert_eq!(&out[10..], &[0xD5; 2]);
        assert_eq!((silent.ticks, silent.runs), (2, 1));
    }
}
