//! Receive statistics for one RTP source, following RFC 3550 appendix A.
//!
//! - A.1: sequence number validation with probation, wrap-around counting,
//!   and re-synchronisation after a large jump.
//! - A.3: expected and lost packets, fraction lost per report interval.
//! - A.8: interarrival jitter, in timestamp units.
//!
//! One [`ReceiveStats`] tracks one SSRC. When a leg's SSRC changes (e.g.
//! after a re-INVITE or transfer) the caller starts a new one, as the RFC
//! keeps state per source.

use std::num::NonZeroU32;
use std::time::Duration;

/// Sequence numbers wrap at 2^16.
const RTP_SEQ_MOD: u32 = 1 << 16;
/// A gap up to this many packets ahead is accepted as loss (A.1).
const MAX_DROPOUT: u16 = 3000;
/// Packets up to this many behind are accepted as reordered or duplicated (A.1).
const MAX_MISORDER: u16 = 100;
/// Sequential packets needed before a new source is valid (A.1).
const MIN_SEQUENTIAL: u8 = 2;

/// How [`ReceiveStats::record`] classified a packet's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The source is still on probation; the packet is not counted.
    Probation,
    /// The source became valid with this packet; counting starts here.
    Validated,
    /// Counted; it advanced the highest sequence number (perhaps past a gap).
    InOrder,
    /// Counted; same number as the highest seen so far. A.1 treats this as
    /// "in order, gap 0", so it raises `received` without raising `expected`.
    Duplicate,
    /// Counted; older than the highest seen (reordered, or a duplicate of an
    /// older packet).
    Late,
    /// A jump beyond the dropout window; not counted. Another packet that
    /// directly follows it re-synchronises the statistics.
    Jump,
    /// The packet directly followed a [`SeqOutcome::Jump`]: the sender is
    /// taken to have restarted, and all counters restart at this packet.
    Resync,
}

impl SeqOutcome {
    /// Whether A.1 counts this packet as received (and so would deliver it).
    pub fn is_counted(self) -> bool {
        !matches!(self, SeqOutcome::Probation | SeqOutcome::Jump)
    }
}

/// The reception report block values for one source (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionReport {
    /// Fraction of packets lost since the previous report, as a fixed-point
    /// number with the binary point at the left (lost × 256 / expected).
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to the 24-bit signed wire field.
    /// Negative when duplicates outnumber losses.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles × 2^16 + highest.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// Per-source receive statistics (RFC 3550 appendix A.1, A.3 and A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    /// `None` until the first packet: A.1 initialises from it.
    seq: Option<SeqState>,
    /// Previous relative transit time; `None` until a counted packet arrived.
    transit: Option<u32>,
    /// Jitter scaled by 16, as in the integer form of A.8, so the estimate
    /// stays exact in integers. 64 bits: with transit differences of up to
    /// 2^31 (timestamps a party chooses) the scaled value approaches 2^35.
    jitter_x16: u64,
}

/// The `source` fields of A.1 that concern sequence numbers.
#[derive(Debug, Clone)]
struct SeqState {
    max_seq: u16,
    /// Shifted count of wraps: a multiple of 2^16, as in A.1.
    cycles: u32,
    base_seq: u32,
    /// Last "bad" sequence number + 1; `RTP_SEQ_MOD + 1` means none, which
    /// no 16-bit number can equal.
    bad_seq: u32,
    probation: u8,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
}

impl SeqState {
    /// State for a source first heard with `seq`: A.1 calls `init_seq`, then
    /// puts the source on probation with `max_seq` one below `seq`, so that
    /// `seq` itself counts as the first sequential packet.
    fn new_source(seq: u16) -> Self {
        let mut s = SeqState {
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: 0,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
        };
        s.init(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    /// A.1 `init_seq`.
    fn init(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq`, returning why the packet was or was not counted.
    fn update(&mut self, seq: u16) -> SeqOutcome {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            // The C code compares `seq == s->max_seq + 1` in int arithmetic,
            // which misses the wrap from 65535 to 0; wrapping_add does not.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init(seq);
                    self.received = self.received.wrapping_add(1);
                    return SeqOutcome::Validated;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqOutcome::Probation;
        }
        let outcome = if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            if udelta == 0 {
                SeqOutcome::Duplicate
            } else {
                SeqOutcome::InOrder
            }
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump. Two sequential packets mean the sender
            // restarted its numbering; a single one is ignored as stray.
            if u32::from(seq) == self.bad_seq {
                self.init(seq);
                SeqOutcome::Resync
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return SeqOutcome::Jump;
            }
        } else {
            // Duplicate or reordered packet.
            SeqOutcome::Late
        };
        // Wraps like every RFC 3550 counter (a flood gets there).
        self.received = self.received.wrapping_add(1);
        outcome
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }
}

impl ReceiveStats {
    /// Statistics for a source not heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a packet with `arrival` already in RTP timestamp units (the
    /// receiver's clock at the payload's clock rate; any origin, may wrap).
    ///
    /// Jitter is updated only for packets that A.1 counts: probation and
    /// stray jump packets come from a source whose timing is not established.
    pub fn record(&mut self, sequence: u16, rtp_timestamp: u32, arrival: u32) -> SeqOutcome {
        let outcome = match &mut self.seq {
            None => {
                let mut s = SeqState::new_source(sequence);
                let outcome = s.update(sequence);
                self.seq = Some(s);
                outcome
            }
            Some(s) => s.update(sequence),
        };
        if outcome == SeqOutcome::Resync {
            // The sender restarted: its timestamps have no relation to the
            // old ones, so the first transit after the jump would be one huge
            // bogus difference. Restart the transit baseline, keep the estimate.
            self.transit = None;
        }
        if outcome.is_counted() {
            self.update_jitter(rtp_timestamp, arrival);
        }
        outcome
    }

    /// Records a packet whose arrival is a [`Duration`] since any fixed origin
    /// (e.g. `Instant::now() - call_start`), converted at `clock_rate` Hz.
    pub fn record_at(
        &mut self,
        sequence: u16,
        rtp_timestamp: u32,
        arrival: Duration,
        clock_rate: NonZeroU32,
    ) -> SeqOutcome {
        self.record(sequence, rtp_timestamp, to_clock_units(arrival, clock_rate))
    }

    /// A.8: J += (|D| - J) / 16, in the integer form with J scaled by 16.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival: u32) {
        // Both clocks wrap; the difference of differences is small, so
        // modular arithmetic reinterpreted as signed gives the right value.
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            // Stays below 2^35 + 1: each step keeps 15/16 of it and adds
            // at most 2^31, so plain arithmetic cannot overflow.
            self.jitter_x16 = self.jitter_x16 + u64::from(d) - ((self.jitter_x16 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Whether the source has passed probation (A.1).
    pub fn is_valid(&self) -> bool {
        self.seq.as_ref().is_some_and(|s| s.probation == 0)
    }

    /// Extended highest sequence number received (cycles × 2^16 + highest).
    pub fn extended_highest_sequence(&self) -> u32 {
        self.valid().map_or(0, SeqState::extended_max)
    }

    /// Packets expected since the source became valid (A.3).
    pub fn expected(&self) -> u32 {
        self.valid().map_or(0, SeqState::expected)
    }

    /// Packets counted as received, duplicates included (A.1).
    pub fn received(&self) -> u32 {
        self.valid().map_or(0, |s| s.received)
    }

    /// Cumulative packets lost: expected − received, unclamped. Negative when
    /// more duplicates than losses arrived, exactly as the RFC defines it.
    pub fn cumulative_lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received())
    }

    /// Current interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        // At most 2^31 (see update_jitter).
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }

    /// Produces a reception report and starts the next interval for the
    /// fraction lost (A.3). Call once per RTCP report.
    pub fn take_report(&mut self) -> ReceptionReport {
        let jitter = self.jitter();
        let Some(s) = self.seq.as_mut().filter(|s| s.probation == 0) else {
            return ReceptionReport {
                fraction_lost: 0,
                cumulative_lost: 0,
                extended_highest_sequence: 0,
                jitter,
            };
        };
        let expected = s.expected();
        let lost = i64::from(expected) - i64::from(s.received);
        let expected_interval = expected.wrapping_sub(s.expected_prior);
        s.expected_prior = expected;
        let received_interval = s.received.wrapping_sub(s.received_prior);
        s.received_prior = s.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            // lost_interval <= expected_interval, so this is at most 256;
            // 256 only when everything was lost, which the 8-bit field caps.
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        ReceptionReport {
            fraction_lost,
            // The wire field is 24-bit signed (A.3 clamps the same way).
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_sequence: s.extended_max(),
            jitter,
        }
    }

    fn valid(&self) -> Option<&SeqState> {
        self.seq.as_ref().filter(|s| s.probation == 0)
    }
}

/// Converts a duration to RTP clock units at `clock_rate`, wrapping at 2^32
/// like RTP timestamps do.
pub fn to_clock_units(t: Duration, clock_rate: NonZeroU32) -> u32 {
    // u128 cannot overflow: u64 seconds × 1e9 × u32 rate < 2^128.
    (t.as_nanos() * u128::from(clock_rate.get()) / 1_000_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms of 8 kHz audio.
    const FRAME: u32 = 160;

    /// Feeds `seqs` with timestamps and arrivals that match (constant delay).
    fn feed(stats: &mut ReceiveStats, seqs: &[u16]) -> Vec<SeqOutcome> {
        seqs.iter()
            .map(|&s| {
                let ts = u32::from(s) * FRAME;
                stats.record(s, ts, ts + 1000)
            })
            .collect()
    }

    #[test]
    fn first_packet_is_probation_then_valid() {
        let mut st = ReceiveStats::new();
        assert_eq!(st.record(100, 0, 0), SeqOutcome::Probation);
        assert!(!st.is_valid());
        assert_eq!(st.expected(), 0);
        assert_eq!(st.record(101, 160, 160), SeqOutcome::Validated);
        assert!(st.is_valid());
        // A.1 restarts counting at the validating packet.
        assert_eq!(st.extended_highest_sequence(), 101);
        assert_eq!(st.expected(), 1);
        assert_eq!(st.received(), 1);
    }

    #[test]
    fn probation_restarts_on_a_non_sequential_packet() {
        let mut st = ReceiveStats::new();
        assert_eq!(st.record(10, 0, 0), SeqOutcome::Probation);
        assert_eq!(st.record(12, 0, 0), SeqOutcome::Probation);
        assert_eq!(st.record(13, 0, 0), SeqOutcome::Validated);
        assert_eq!(st.extended_highest_sequence(), 13);
        assert_eq!(st.received(), 1);
    }

    #[test]
    fn probation_handles_wrap() {
        let mut st = ReceiveStats::new();
        assert_eq!(st.record(65535, 0, 0), SeqOutcome::Probation);
        assert_eq!(st.record(0, 160, 160), SeqOutcome::Validated);
        assert_eq!(st.extended_highest_sequence(), 0);
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut st = ReceiveStats::new();
        let seqs: Vec<u16> = (1000..1100).collect();
        let out = feed(&mut st, &seqs);
        assert_eq!(out[0], SeqOutcome::Probation);
        assert_eq!(out[1], SeqOutcome::Validated);
        assert!(out[2..].iter().all(|&o| o == SeqOutcome::InOrder));
        assert_eq!(st.extended_highest_sequence(), 1099);
        assert_eq!(st.expected(), 99);
        assert_eq!(st.received(), 99);
        assert_eq!(st.cumulative_lost(), 0);
        assert_eq!(
            st.take_report(),
            ReceptionReport {
                fraction_lost: 0,
                cumulative_lost: 0,
                extended_highest_sequence: 1099,
                jitter: 0
            }
        );
    }

    #[test]
    fn loss_is_counted_and_fraction_is_per_interval() {
        let mut st = ReceiveStats::new();
        // 1..=20 with 5, 6, 7 missing: base 2 (probation), expected 19, received 16.
        let seqs: Vec<u16> = (1..=20).filter(|s| !(5..=7).contains(s)).collect();
        feed(&mut st, &seqs);
        assert_eq!(st.expected(), 19);
        assert_eq!(st.received(), 16);
        assert_eq!(st.cumulative_lost(), 3);
        let r = st.take_report();
        // 3 * 256 / 19 = 40.4 -> 40
        assert_eq!(r.fraction_lost, 40);
        assert_eq!(r.cumulative_lost, 3);
        assert_eq!(r.extended_highest_sequence, 20);

        // Next interval: 21..=28 with 22 lost -> 1 of 8 = 32/256.
        let seqs: Vec<u16> = (21..=28).filter(|&s| s != 22).collect();
        feed(&mut st, &seqs);
        let r = st.take_report();
        assert_eq!(r.fraction_lost, 32);
        assert_eq!(r.cumulative_lost, 4);
        assert_eq!(r.extended_highest_sequence, 28);

        // Empty interval.
        let r = st.take_report();
        assert_eq!(r.fraction_lost, 0);
        assert_eq!(r.cumulative_lost, 4);
    }

    #[test]
    fn reordered_packet_is_late_and_fills_the_gap() {
        let mut st = ReceiveStats::new();
        let out = feed(&mut st, &[1, 2, 3, 5, 4, 6]);
        assert_eq!(out[3], SeqOutcome::InOrder); // 5 jumps the gap
        assert_eq!(out[4], SeqOutcome::Late); // 4 arrives late
        assert_eq!(out[5], SeqOutcome::InOrder);
        assert_eq!(st.extended_highest_sequence(), 6);
        assert_eq!(st.expected(), 5);
        assert_eq!(st.received(), 5);
        assert_eq!(st.cumulative_lost(), 0);
    }

    #[test]
    fn duplicates_make_loss_negative() {
        let mut st = ReceiveStats::new();
        let out = feed(&mut st, &[1, 2, 3, 3, 2, 4]);
        assert_eq!(out[3], SeqOutcome::Duplicate);
        assert_eq!(out[4], SeqOutcome::Late);
        assert_eq!(st.expected(), 3); // 2..=4
        assert_eq!(st.received(), 5);
        assert_eq!(st.cumulative_lost(), -2);
        let r = st.take_report();
        assert_eq!(r.cumulative_lost, -2);
        // Negative interval loss reports as 0.
        assert_eq!(r.fraction_lost, 0);
    }

    #[test]
    fn wraps_at_65535() {
        let mut st = ReceiveStats::new();
        let seqs: Vec<u16> = (65530..=65535).chain(0..5).collect();
        let out = feed(&mut st, &seqs);
        assert_eq!(out[6], SeqOutcome::InOrder); // seq 0
        assert_eq!(st.extended_highest_sequence(), 65536 + 4);
        assert_eq!(st.expected(), 10); // 65531..=65535 and 0..=4
        assert_eq!(st.received(), 10);
        // A late packet from before the wrap does not un-wrap.
        assert_eq!(st.record(65534, 0, 0), SeqOutcome::Late);
        assert_eq!(st.extended_highest_sequence(), 65536 + 4);
        // A gap across the wrap counts as loss.
        let mut st = ReceiveStats::new();
        feed(&mut st, &[65533, 65534, 2]);
        assert_eq!(st.extended_highest_sequence(), 65536 + 2);
        assert_eq!(st.expected(), 5); // 65534, 65535, 0, 1, 2
        assert_eq!(st.cumulative_lost(), 3);
    }

    #[test]
    fn gap_just_below_dropout_is_loss_not_jump() {
        let mut st = ReceiveStats::new();
        feed(&mut st, &[1, 2]);
        assert_eq!(st.record(2 + 2999, 0, 0), SeqOutcome::InOrder);
        assert_eq!(st.cumulative_lost(), 2998);
        assert_eq!(st.record(3001 + 3000, 0, 0), SeqOutcome::Jump);
    }

    #[test]
    fn misorder_window_boundary() {
        let mut st = ReceiveStats::new();
        feed(&mut st, &[1000, 1001]);
        // A.1 accepts fewer than MAX_MISORDER (100) behind as reordering;
        // 100 behind already counts as a jump.
        assert_eq!(st.record(902, 0, 0), SeqOutcome::Late);
        assert_eq!(st.record(901, 0, 0), SeqOutcome::Jump);
    }

    #[test]
    fn large_jump_resyncs_after_two_sequential_packets() {
        let mut st = ReceiveStats::new();
        feed(&mut st, &[1, 2, 3, 4]);
        assert_eq!(st.received(), 3);
        // A single stray packet far away is ignored.
        assert_eq!(st.record(40000, 0, 0), SeqOutcome::Jump);
        assert_eq!(st.extended_highest_sequence(), 4);
        assert_eq!(st.received(), 3);
        // The old stream continues: unaffected.
        assert_eq!(st.record(5, 0, 0), SeqOutcome::InOrder);
        // The sender restarts numbering at 20000: first packet held back,
        // the one after it re-syncs and counting restarts there.
        assert_eq!(st.record(20000, 0, 0), SeqOutcome::Jump);
        assert_eq!(st.record(20001, 0, 0), SeqOutcome::Resync);
        assert_eq!(st.extended_highest_sequence(), 20001);
        assert_eq!(st.expected(), 1);
        assert_eq!(st.received(), 1);
        assert_eq!(st.record(20002, 0, 0), SeqOutcome::InOrder);
        assert_eq!(st.expected(), 2);
        assert_eq!(st.cumulative_lost(), 0);
        // Two non-sequential jumps never re-sync.
        assert_eq!(st.record(50000, 0, 0), SeqOutcome::Jump);
        assert_eq!(st.record(50005, 0, 0), SeqOutcome::Jump);
        assert_eq!(st.extended_highest_sequence(), 20002);
    }

    #[test]
    fn jitter_of_constant_delay_is_zero() {
        let mut st = ReceiveStats::new();
        for i in 0..500u32 {
            // Timestamps start at a random-looking offset and wrap.
            let ts = 0xFFFF_0000u32.wrapping_add(i * FRAME);
            // Arrival clock has its own origin; delay is constant.
            let arrival = 77_777 + i * FRAME;
            st.record(i as u16, ts, arrival);
        }
        assert_eq!(st.jitter(), 0);
    }

    #[test]
    fn jitter_follows_a8_by_hand() {
        // Transit deltas |D| alternate 80, 80, ... (arrival early/late by 40).
        // With J16 (= 16 J) the update is J16 += |D| - ((J16 + 8) >> 4):
        //   pkt0: baseline (probation, not counted)
        //   pkt1: validating packet, sets transit baseline, J16 = 0
        //   pkt2: |D| = 80 -> J16 = 0 + 80 - 0           = 80   (J = 5)
        //   pkt3: |D| = 80 -> J16 = 80 + 80 - 5          = 155  (J = 9)
        //   pkt4: |D| = 80 -> J16 = 155 + 80 - 10        = 225  (J = 14)
        //   pkt5: |D| = 80 -> J16 = 225 + 80 - 14        = 291  (J = 18)
        let mut st = ReceiveStats::new();
        let expected_j = [0, 0, 5, 9, 14, 18];
        for i in 0..6u32 {
            let ts = i * FRAME;
            let jitter_offset = if i % 2 == 0 { 0 } else { 80 };
            st.record(i as u16, ts, 1000 + ts + jitter_offset);
            assert_eq!(st.jitter(), expected_j[i as usize], "after packet {i}");
        }
        // Steady state of J += (80 - J)/16 is 80.
        for i in 6..400u32 {
            let ts = i * FRAME;
            let jitter_offset = if i % 2 == 0 { 0 } else { 80 };
            st.record(i as u16, ts, 1000 + ts + jitter_offset);
        }
        assert!((79..=80).contains(&st.jitter()), "jitter {}", st.jitter());
    }

    #[test]
    fn jitter_from_durations() {
        let rate = NonZeroU32::new(8000).unwrap();
        assert_eq!(to_clock_units(Duration::from_millis(20), rate), 160);
        assert_eq!(to_clock_units(Duration::from_micros(125), rate), 1);
        // 2^32 / 8000 s = 536870.912 s later the clock wraps to 0.
        let wrap = Duration::from_millis(536_870_912);
        assert_eq!(to_clock_units(wrap, rate), 0);

        let mut st = ReceiveStats::new();
        // Packet 2 arrives 10 ms late: D = 80 for packet 2 and for packet 3.
        let arrivals_ms = [0u64, 20, 50, 60];
        for (i, ms) in arrivals_ms.iter().enumerate() {
            st.record_at(
                i as u16,
                i as u32 * FRAME,
                Duration::from_millis(5000 + ms),
                rate,
            );
        }
        // J16: 80, then 80 + 80 - 5 = 155 -> J = 9.
        assert_eq!(st.jitter(), 9);
    }

    #[test]
    fn resync_restarts_transit_baseline() {
        let mut st = ReceiveStats::new();
        for i in 0..10u32 {
            st.record(i as u16, i * FRAME, 500 + i * FRAME);
        }
        assert_eq!(st.jitter(), 0);
        // Restart with unrelated timestamps: no jitter spike.
        st.record(30000, 9_000_000, 500 + 10 * FRAME);
        st.record(30001, 9_000_000 + FRAME, 500 + 11 * FRAME);
        st.record(30002, 9_000_000 + 2 * FRAME, 500 + 12 * FRAME);
        assert_eq!(st.jitter(), 0);
    }

    #[test]
    fn report_before_validation_is_empty() {
        let mut st = ReceiveStats::new();
        assert_eq!(
            st.take_report(),
            ReceptionReport {
                fraction_lost: 0,
                cumulative_lost: 0,
                extended_highest_sequence: 0,
                jitter: 0
            }
        );
        st.record(5, 0, 0);
        assert_eq!(st.take_report().extended_highest_sequence, 0);
    }

    #[test]
    fn total_loss_interval_caps_fraction() {
        let mut st = ReceiveStats::new();
        feed(&mut st, &[1, 2]);
        st.take_report();
        // 3..=12 lost, 13 arrives: 11 expected, 1 received -> 10*256/11 = 232.
        feed(&mut st, &[13]);
        assert_eq!(st.take_report().fraction_lost, 232);
    }

    /// Timestamps a party chooses can make every transit difference 2^31:
    /// the estimate must approach that, not wrap (nor overflow) in u32.
    #[test]
    fn jitter_of_hostile_timestamps_saturates_near_2_pow_31() {
        let mut s = ReceiveStats::new();
        for seq in 0..2000u16 {
            let ts = if seq % 2 == 0 { 0 } else { 0x8000_0000 };
            s.record(seq, ts, 0);
        }
        assert!(s.jitter() > 0x7F00_0000, "jitter {:#x}", s.jitter());
        assert!(s.jitter() <= 0x8000_0000);
    }

    /// The received count wraps like the RFC's counters instead of
    /// overflowing under a long flood.
    #[test]
    fn the_received_count_wraps() {
        let mut s = ReceiveStats::new();
        for seq in 0..3u16 {
            s.record(seq, 0, 0);
        }
        s.seq.as_mut().unwrap().received = u32::MAX;
        assert_eq!(s.record(3, 0, 0), SeqOutcome::InOrder);
        assert_eq!(s.received(), 0);
    }
}
