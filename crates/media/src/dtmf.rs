//! RFC 4733 telephone events: payload parsing and per-leg DTMF detection.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! A sender reports one key press as many packets sharing one RTP timestamp
//! (the event's start): the first with the marker bit, updates with a growing
//! duration, and the final report (E bit) usually sent three times. Any of
//! them may be lost, duplicated or reordered. [`DtmfDetector`] turns that
//! stream into exactly one [`DtmfPress`] per key press.

use std::fmt;

/// Length of one event report.
pub const EVENT_LEN: usize = 4;

/// Errors from parsing a telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// Fewer than the 4 bytes of one event report.
    #[error("telephone-event payload is {0} bytes; RFC 4733 needs at least 4")]
    TooShort(usize),
    /// Trailing bytes that do not form a whole event report.
    #[error("telephone-event payload length {0} is not a multiple of 4")]
    PartialReport(usize),
}

/// One RFC 4733 event report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–15 are DTMF (see [`DtmfDigit`]), 16 is flash, others
    /// are tones and signals of RFC 4734.
    pub event: u8,
    /// E bit: this report ends the event.
    pub end: bool,
    /// Power level in −dBm0, 0–63 (6 bits).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event report of a telephone-event payload.
    ///
    /// RFC 4733 §2.5.1.5 allows several reports in one packet; they are
    /// length-checked here but only the first is returned, which is the one
    /// the packet's timestamp belongs to. The R bit is ignored as the RFC
    /// requires of receivers.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        if payload.len() < EVENT_LEN {
            return Err(DtmfError::TooShort(payload.len()));
        }
        if payload.len() % EVENT_LEN != 0 {
            return Err(DtmfError::PartialReport(payload.len()));
        }
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// Encodes the report; `volume` is truncated to its 6 bits, R is 0.
    pub fn to_bytes(&self) -> [u8; EVENT_LEN] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// A DTMF key: events 0–9 are the digits, 10 is `*`, 11 is `#`, 12–15 are A–D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    const CHARS: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
    ];

    /// The key for an RFC 4733 event code, or `None` for non-DTMF events.
    pub fn from_event(event: u8) -> Option<Self> {
        (event < 16).then_some(DtmfDigit(event))
    }

    /// The key for a character `0-9 * # A-D` (lower-case `a-d` accepted).
    pub fn from_char(c: char) -> Option<Self> {
        let c = c.to_ascii_uppercase();
        Self::CHARS
            .iter()
            .position(|&k| k == c)
            .map(|i| DtmfDigit(i as u8))
    }

    /// The RFC 4733 event code.
    pub fn event(self) -> u8 {
        self.0
    }

    /// The key as a character.
    pub fn to_char(self) -> char {
        Self::CHARS[usize::from(self.0)]
    }
}

impl fmt::Display for DtmfDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_char())
    }
}

/// One key press, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPress {
    /// The key.
    pub digit: DtmfDigit,
    /// RTP timestamp at which the key went down (of the first segment).
    pub timestamp: u32,
    /// Total duration in RTP timestamp units; may exceed 0xFFFF for a key
    /// held across several segments.
    pub duration: u32,
    /// Last reported volume (−dBm0).
    pub volume: u8,
    /// `false` when no end report arrived and the press was closed by a
    /// later event or by [`DtmfDetector::flush`]; the duration is then the
    /// longest seen.
    pub ended: bool,
}

/// A key press that has started but not ended.
#[derive(Debug, Clone, Copy)]
struct Pending {
    digit: DtmfDigit,
    start_ts: u32,
    /// Timestamp of the current segment; packets carrying it belong here.
    segment_ts: u32,
    /// Longest duration reported in the current segment.
    segment_duration: u16,
    /// Duration of earlier segments (and in-place wraps).
    earlier: u32,
    volume: u8,
}

impl Pending {
    fn close(self, ended: bool) -> DtmfPress {
        DtmfPress {
            digit: self.digit,
            timestamp: self.start_ts,
            duration: self
                .earlier
                .saturating_add(u32::from(self.segment_duration)),
            volume: self.volume,
            ended,
        }
    }
}

/// The segment of the last reported press; packets at or before its
/// timestamp are retransmissions or stragglers.
#[derive(Debug, Clone, Copy)]
struct Done {
    digit: DtmfDigit,
    segment_ts: u32,
    segment_duration: u16,
}

/// Below this, a segment is not long enough to be continued by another: a
/// new timestamp after a short one is a new key press even without marker.
const LONG_SEGMENT: u16 = 0x8000;

/// Turns one leg's telephone-event packets into key presses.
///
/// Rules (timestamps compared modulo 2^32, like sequence numbers):
///
/// - Packets with the same RTP timestamp are one event; the press is reported
///   once, at its first end report. Later retransmissions, and any packet
///   older than the current event, are ignored.
/// - A lost start (marker) packet does not matter: any report with a new
///   timestamp starts a press, and an end report alone yields the digit.
/// - If all end reports are lost, the press is reported when the next event
///   starts, or by [`DtmfDetector::flush`] (call it when the call ends or
///   audio resumes), with `ended: false`.
/// - Long presses (RFC 4733 §2.5.1.3): when the 16-bit duration would
///   overflow, the sender continues with a new segment whose timestamp is the
///   previous one plus its duration, without marker. A new timestamp for the
///   same key, without marker, following a long segment (≥ 0x8000 units,
///   about 4 s at 8 kHz) and no further than 0xFFFF ahead, continues the press
///   instead of starting one, and durations add up. This holds even if the
///   sender (against the RFC) set E on the earlier segment: the continuation
///   is then swallowed, as the press was already reported.
/// - Senders that instead let the duration wrap within one timestamp are
///   recognised by a drop of more than 0x8000, which reordering cannot cause.
/// - Non-DTMF events (flash, tones) are ignored.
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    pending: Option<Pending>,
    done: Option<Done>,
}

impl DtmfDetector {
    /// A detector that has seen no packets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event RTP packet: its payload, timestamp and
    /// marker bit. Returns the presses completed by it (at most two: a press
    /// that never saw its end, and one that ends in this very packet).
    pub fn push(
        &mut self,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
    ) -> Result<Vec<DtmfPress>, DtmfError> {
        Ok(self.push_event(TelephoneEvent::parse(payload)?, timestamp, marker))
    }

    /// Like [`DtmfDetector::push`] for an already parsed report.
    pub fn push_event(
        &mut self,
        ev: TelephoneEvent,
        timestamp: u32,
        marker: bool,
    ) -> Vec<DtmfPress> {
        let mut out = Vec::new();
        let Some(digit) = DtmfDigit::from_event(ev.event) else {
            return out;
        };

        if let Some(p) = &mut self.pending {
            let age = timestamp.wrapping_sub(p.segment_ts) as i32;
            if age < 0 {
                return out;
            }
            if age == 0 {
                if p.segment_duration >= LONG_SEGMENT
                    && ev.duration < p.segment_duration
                    && p.segment_duration - ev.duration > LONG_SEGMENT
                {
                    // The duration wrapped in place.
                    // Saturating: a party can keep a "key" down for ever.
                    p.earlier = p.earlier.saturating_add(0x1_0000);
                    p.segment_duration = ev.duration;
                } else {
                    p.segment_duration = p.segment_duration.max(ev.duration);
                }
                p.volume = ev.volume;
                if ev.end {
                    self.close(true, &mut out);
                }
                return out;
            }
            if is_continuation(digit, marker, age, p.digit, p.segment_duration) {
                p.earlier = p.earlier.saturating_add(age as u32);
                p.segment_ts = timestamp;
                p.segment_duration = ev.duration;
                p.volume = ev.volume;
                if ev.end {
                    self.close(true, &mut out);
                }
                return out;
            }
            // A new event began before this one's end report arrived.
            self.close(false, &mut out);
        } else if let Some(d) = &mut self.done {
            let age = timestamp.wrapping_sub(d.segment_ts) as i32;
            if age <= 0 {
                // Retransmitted end report, or a straggler of an older event.
                return out;
            }
            if is_continuation(digit, marker, age, d.digit, d.segment_duration) {
                // Next segment of a press already reported: follow it so its
                // own reports are recognised as retransmissions.
                d.segment_ts = timestamp;
                d.segment_duration = ev.duration;
                return out;
            }
        }

        self.pending = Some(Pending {
            digit,
            start_ts: timestamp,
            segment_ts: timestamp,
            segment_duration: ev.duration,
            earlier: 0,
            volume: ev.volume,
        });
        if ev.end {
            self.close(true, &mut out);
        }
        out
    }

    /// Reports a press whose end report never arrived, if any. Call when the
    /// call ends or ordinary audio resumes on the leg.
    pub fn flush(&mut self) -> Option<DtmfPress> {
        let mut out = Vec::new();
        self.close(false, &mut out);
        out.pop()
    }

    fn close(&mut self, ended: bool, out: &mut Vec<DtmfPress>) {
        if let Some(p) = self.pending.take() {
            self.done = Some(Done {
                digit: p.digit,
                segment_ts: p.segment_ts,
                segment_duration: p.segment_duration,
            });
            out.push(p.close(ended));
        }
    }
}

/// Whether a report with a new timestamp `age` units after the previous
/// segment continues that segment's key press (RFC 4733 §2.5.1.3).
fn is_continuation(
    digit: DtmfDigit,
    marker: bool,
    age: i32,
    prev_digit: DtmfDigit,
    prev_duration: u16,
) -> bool {
    !marker
        && digit == prev_digit
        && prev_duration >= LONG_SEGMENT
        && age >= i32::from(prev_duration)
        && age <= 0xFFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    /// The packets a typical phone sends for one 100 ms key press at 8 kHz
    /// with 20 ms packetisation: start with marker, updates, three end reports.
    fn press_packets(event: u8, ts: u32) -> Vec<(TelephoneEvent, u32, bool)> {
        let mut v = vec![(ev(event, false, 160), ts, true)];
        for d in [320, 480, 640] {
            v.push((ev(event, false, d), ts, false));
        }
        for _ in 0..3 {
            v.push((ev(event, true, 800), ts, false));
        }
        v
    }

    fn run(det: &mut DtmfDetector, packets: &[(TelephoneEvent, u32, bool)]) -> Vec<DtmfPress> {
        packets
            .iter()
            .flat_map(|&(e, ts, m)| det.push(&e.to_bytes(), ts, m).unwrap())
            .collect()
    }

    fn digits(presses: &[DtmfPress]) -> String {
        presses.iter().map(|p| p.digit.to_char()).collect()
    }

    #[test]
    fn parses_exact_bytes() {
        // '5', E=1, R=1 (ignored), volume 10, duration 800.
        let e = TelephoneEvent::parse(&[0x05, 0xCA, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(e.to_bytes(), [0x05, 0x8A, 0x03, 0x20]);
        let e = TelephoneEvent::parse(&[0x0B, 0x3F, 0xFF, 0xFF, 1, 2, 3, 4]).unwrap();
        assert_eq!(
            (e.event, e.end, e.volume, e.duration),
            (11, false, 63, 0xFFFF)
        );
    }

    #[test]
    fn parse_errors_name_the_length() {
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::TooShort(3))
        );
        assert_eq!(
            TelephoneEvent::parse(&[0; 6]),
            Err(DtmfError::PartialReport(6))
        );
        assert_eq!(
            DtmfError::TooShort(0).to_string(),
            "telephone-event payload is 0 bytes; RFC 4733 needs at least 4"
        );
        let mut det = DtmfDetector::new();
        assert_eq!(det.push(&[], 0, true), Err(DtmfError::TooShort(0)));
    }

    #[test]
    fn digit_mapping() {
        let all: String = (0..16)
            .map(|e| DtmfDigit::from_event(e).unwrap().to_char())
            .collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(DtmfDigit::from_event(16), None);
        assert_eq!(DtmfDigit::from_char('*').unwrap().event(), 10);
        assert_eq!(DtmfDigit::from_char('#').unwrap().event(), 11);
        assert_eq!(DtmfDigit::from_char('d').unwrap().event(), 15);
        assert_eq!(DtmfDigit::from_char('E'), None);
        assert_eq!(DtmfDigit::from_event(12).unwrap().to_string(), "A");
    }

    #[test]
    fn realistic_press_yields_one_digit_at_the_first_end_report() {
        let mut det = DtmfDetector::new();
        let packets = press_packets(5, 48_000);
        let per_packet: Vec<usize> = packets
            .iter()
            .map(|&(e, ts, m)| det.push_event(e, ts, m).len())
            .collect();
        assert_eq!(per_packet, [0, 0, 0, 0, 1, 0, 0]);

        let mut det = DtmfDetector::new();
        let presses = run(&mut det, &packets);
        assert_eq!(
            presses,
            [DtmfPress {
                digit: DtmfDigit::from_event(5).unwrap(),
                timestamp: 48_000,
                duration: 800,
                volume: 10,
                ended: true
            }]
        );
        assert_eq!(det.flush(), None);
    }

    #[test]
    fn same_digit_twice_yields_two_presses() {
        let mut det = DtmfDetector::new();
        let mut packets = press_packets(3, 1000);
        packets.extend(press_packets(3, 4000));
        let presses = run(&mut det, &packets);
        assert_eq!(digits(&presses), "33");
        assert_eq!(presses[0].timestamp, 1000);
        assert_eq!(presses[1].timestamp, 4000);
    }

    #[test]
    fn star_one_yields_star_then_one() {
        let mut det = DtmfDetector::new();
        let mut packets = press_packets(10, 160_000);
        packets.extend(press_packets(1, 162_400));
        assert_eq!(digits(&run(&mut det, &packets)), "*1");
    }

    #[test]
    fn lost_start_packet_still_yields_the_digit() {
        let mut det = DtmfDetector::new();
        let packets = press_packets(9, 7000);
        assert_eq!(digits(&run(&mut det, &packets[1..])), "9");
        // Only end reports survive.
        let mut det = DtmfDetector::new();
        let presses = run(&mut det, &packets[5..]);
        assert_eq!(digits(&presses), "9");
        assert_eq!(presses[0].duration, 800);
    }

    #[test]
    fn reordered_updates_keep_the_longest_duration() {
        let mut det = DtmfDetector::new();
        let mut packets = press_packets(2, 0);
        packets.swap(2, 3);
        packets.insert(5, (ev(2, false, 320), 0, false));
        let presses = run(&mut det, &packets);
        assert_eq!(presses.len(), 1);
        assert_eq!(presses[0].duration, 800);
    }

    #[test]
    fn lost_end_reports_close_at_the_next_event_or_flush() {
        let mut det = DtmfDetector::new();
        let first = &press_packets(4, 1000)[..4]; // no end reports
        let second = press_packets(6, 5000);
        assert!(run(&mut det, first).is_empty());
        let presses = run(&mut det, &second);
        assert_eq!(digits(&presses), "46");
        assert!(!presses[0].ended);
        assert_eq!(presses[0].duration, 640);
        assert!(presses[1].ended);

        let mut det = DtmfDetector::new();
        assert!(run(&mut det, first).is_empty());
        let p = det.flush().unwrap();
        assert_eq!((p.digit.to_char(), p.ended, p.duration), ('4', false, 640));
        assert_eq!(det.flush(), None);
        // Its late end reports are retransmissions now.
        assert!(det.push_event(ev(4, true, 800), 1000, false).is_empty());
    }

    #[test]
    fn one_packet_can_complete_two_presses() {
        let mut det = DtmfDetector::new();
        assert!(det.push_event(ev(1, false, 160), 0, true).is_empty());
        let presses = det.push_event(ev(2, true, 800), 4000, false);
        assert_eq!(digits(&presses), "12");
        assert_eq!(
            presses.iter().map(|p| p.ended).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn stragglers_of_an_earlier_press_are_ignored() {
        let mut det = DtmfDetector::new();
        let mut presses = run(&mut det, &press_packets(7, 1000));
        presses.extend(det.push_event(ev(8, false, 160), 3000, true));
        // Delayed end report and start of the first press.
        presses.extend(det.push_event(ev(7, true, 800), 1000, false));
        presses.extend(det.push_event(ev(7, false, 160), 1000, true));
        presses.extend(run(&mut det, &press_packets(8, 3000)[1..]));
        assert_eq!(digits(&presses), "78");
    }

    #[test]
    fn timestamps_compare_across_wrap() {
        let mut det = DtmfDetector::new();
        let mut packets = press_packets(1, u32::MAX - 100);
        packets.extend(press_packets(2, 2000));
        let mut presses = run(&mut det, &packets);
        // A retransmission from before the wrap is older, not newer.
        presses.extend(det.push_event(ev(1, true, 800), u32::MAX - 100, false));
        assert_eq!(digits(&presses), "12");
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let mut det = DtmfDetector::new();
        assert!(det.push_event(ev(16, true, 800), 0, true).is_empty());
        assert_eq!(det.flush(), None);
    }

    /// A key held for ~10 s at 8 kHz: the first segment reaches 0xFFFF, the
    /// second starts at ts + 0xFFFF without marker (RFC 4733 §2.5.1.3).
    #[test]
    fn long_press_across_segments_is_one_press() {
        let mut det = DtmfDetector::new();
        let t0 = 100_000u32;
        let mut presses = Vec::new();
        presses.extend(det.push_event(ev(11, false, 160), t0, true));
        for d in (320..=65_440).step_by(160) {
            presses.extend(det.push_event(ev(11, false, d as u16), t0, false));
        }
        presses.extend(det.push_event(ev(11, false, 0xFFFF), t0, false));
        let t1 = t0 + 0xFFFF;
        for d in [160, 320, 14_465] {
            presses.extend(det.push_event(ev(11, false, d), t1, false));
        }
        for _ in 0..3 {
            presses.extend(det.push_event(ev(11, true, 14_465), t1, false));
        }
        assert_eq!(
            presses,
            [DtmfPress {
                digit: DtmfDigit::from_event(11).unwrap(),
                timestamp: t0,
                duration: 0xFFFF + 14_465,
                volume: 10,
                ended: true
            }]
        );
    }

    #[test]
    fn long_press_with_lost_segment_end_still_continues() {
        let mut det = DtmfDetector::new();
        let mut presses = det.push_event(ev(0, false, 60_000), 0, true);
        // The last packets of segment 1 (up to 0xFFFF) were lost.
        presses.extend(det.push_event(ev(0, true, 800), 0xFFFF, false));
        assert_eq!(presses.len(), 1);
        assert_eq!(presses[0].duration, 0xFFFF + 800);
    }

    #[test]
    fn segment_ended_with_e_bit_is_not_reported_twice() {
        let mut det = DtmfDetector::new();
        let mut presses = det.push_event(ev(5, false, 160), 0, true);
        presses.extend(det.push_event(ev(5, true, 0xFFFF), 0, false));
        assert_eq!(presses.len(), 1);
        for d in [160, 320] {
            presses.extend(det.push_event(ev(5, false, d), 0xFFFF, false));
        }
        for _ in 0..3 {
            presses.extend(det.push_event(ev(5, true, 480), 0xFFFF, false));
        }
        assert_eq!(presses.len(), 1);
        assert_eq!(det.flush(), None);
        // A genuine new press afterwards (marker) is reported.
        let presses = run(&mut det, &press_packets(5, 0xFFFF + 8000));
        assert_eq!(digits(&presses), "5");
    }

    #[test]
    fn short_press_then_same_key_without_marker_is_a_new_press() {
        // End reports of the first press and the marker of the second lost:
        // the first segment was short, so no continuation.
        let mut det = DtmfDetector::new();
        let mut presses = run(&mut det, &press_packets(3, 0)[..4]);
        presses.extend(run(&mut det, &press_packets(3, 2000)[1..]));
        assert_eq!(digits(&presses), "33");
    }

    #[test]
    fn duration_wrapping_in_place_is_accumulated() {
        let mut det = DtmfDetector::new();
        let mut presses = det.push_event(ev(8, false, 160), 500, true);
        presses.extend(det.push_event(ev(8, false, 65_440), 500, false));
        // Non-compliant sender: duration wraps, timestamp stays.
        presses.extend(det.push_event(ev(8, false, 64), 500, false));
        presses.extend(det.push_event(ev(8, true, 224), 500, false));
        presses.extend(det.push_event(ev(8, true, 224), 500, false));
        assert_eq!(presses.len(), 1);
        assert_eq!(presses[0].duration, 0x1_0000 + 224);
    }

    /// A key held "for ever" (in-place wraps, then new segments, far past
    /// what the u32 total can count) saturates instead of overflowing.
    #[test]
    fn an_endless_press_saturates_its_duration() {
        let mut d = DtmfDetector::new();
        let report = |duration, end| TelephoneEvent {
            event: 5,
            end,
            volume: 10,
            duration,
        };
        assert!(d.push_event(report(0xF000, false), 0, true).is_empty());
        for _ in 0..70_000 {
            // 0xF000 -> 0x1000 reads as a wrap, +0x10000 each time.
            assert!(d.push_event(report(0x1000, false), 0, false).is_empty());
            assert!(d.push_event(report(0xF000, false), 0, false).is_empty());
        }
        let mut ts = 0u32;
        for _ in 0..10 {
            ts = ts.wrapping_add(0xF000);
            assert!(d.push_event(report(0xF000, false), ts, false).is_empty());
        }
        let press = d.push_event(report(0xF000, true), ts, false);
        assert_eq!(press.len(), 1);
        assert_eq!(press[0].duration, u32::MAX);
        assert!(press[0].ended);
    }
}
