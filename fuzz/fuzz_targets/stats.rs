//! RFC 3550 receive statistics fed sequence numbers, timestamps and arrival
//! times a party chooses: no panic, report fields within their wire ranges.
#![no_main]

use std::num::NonZeroU32;
use std::time::Duration;

use arbitrary::Arbitrary;
use callhost_media::stats::{to_clock_units, ReceiveStats, SeqOutcome};
use libfuzzer_sys::fuzz_target;

/// Packets per input at most, runs included.
const MAX_PACKETS: usize = 1 << 12;

#[derive(Debug, Arbitrary)]
enum Op {
    Packet {
        sequence: u16,
        timestamp: u32,
        arrival: u32,
    },
    /// Arrival as a duration since the call's start at some clock rate.
    PacketAt {
        sequence: u16,
        timestamp: u32,
        arrival_nanos: u64,
        clock_rate: u32,
    },
    /// A run of packets with fixed steps (streams, floods, wraps).
    Run {
        count: u32,
        sequence: u16,
        sequence_step: u16,
        timestamp: u32,
        timestamp_step: u32,
        arrival_step: u32,
    },
    Report,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut stats = ReceiveStats::new();
    let mut packets = 0usize;
    let mut arrival = 0u32;
    for op in ops {
        match op {
            Op::Packet {
                sequence,
                timestamp,
                arrival,
            } => {
                packets += 1;
                record(&mut stats, sequence, timestamp, arrival);
            }
            Op::PacketAt {
                sequence,
                timestamp,
                arrival_nanos,
                clock_rate,
            } => {
                packets += 1;
                let rate = NonZeroU32::new(clock_rate).unwrap_or(NonZeroU32::MIN);
                let at = Duration::from_nanos(arrival_nanos);
                let units = to_clock_units(at, rate);
                let outcome = stats.record_at(sequence, timestamp, at, rate);
                let _ = (units, outcome);
                check(&stats);
            }
            Op::Run {
                count,
                sequence,
                sequence_step,
                timestamp,
                timestamp_step,
                arrival_step,
            } => {
                for i in 0..count {
                    if packets >= MAX_PACKETS {
                        break;
                    }
                    packets += 1;
                    arrival = arrival.wrapping_add(arrival_step);
                    record(
                        &mut stats,
                        sequence.wrapping_add((i as u16).wrapping_mul(sequence_step)),
                        timestamp.wrapping_add(i.wrapping_mul(timestamp_step)),
                        arrival,
                    );
                }
            }
            Op::Report => {
                let was_valid = stats.is_valid();
                let report = stats.take_report();
                assert!((-0x80_0000..=0x7F_FFFF).contains(&report.cumulative_lost));
                if !was_valid {
                    assert_eq!(report.fraction_lost, 0);
                    assert_eq!(report.extended_highest_sequence, 0);
                }
                // A second report right away covers an empty interval.
                assert_eq!(stats.take_report().fraction_lost, 0);
            }
        }
        if packets >= MAX_PACKETS {
            break;
        }
    }
});

fn record(stats: &mut ReceiveStats, sequence: u16, timestamp: u32, arrival: u32) {
    let received = stats.received();
    let outcome = stats.record(sequence, timestamp, arrival);
    if stats.is_valid() && outcome.is_counted() && outcome != SeqOutcome::Validated {
        // Counted packets count once; a resync restarts the count at 1.
        let expected = if outcome == SeqOutcome::Resync {
            1
        } else {
            received.wrapping_add(1)
        };
        assert_eq!(stats.received(), expected, "{outcome:?}");
    } else if !outcome.is_counted() && stats.is_valid() {
        assert_eq!(stats.received(), received, "{outcome:?}");
    }
    check(stats);
}

fn check(stats: &ReceiveStats) {
    if !stats.is_valid() {
        assert_eq!((stats.expected(), stats.received()), (0, 0));
        assert_eq!(stats.extended_highest_sequence(), 0);
    }
    let lost = stats.cumulative_lost();
    assert_eq!(
        lost,
        i64::from(stats.expected()) - i64::from(stats.received())
    );
    let _ = stats.jitter();
}
