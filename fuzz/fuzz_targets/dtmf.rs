//! Telephone-event payloads and key-press detection over packet sequences
//! a party chooses: no panic, each press once, retransmissions ignored.
#![no_main]

use arbitrary::Arbitrary;
use callhost_media::dtmf::{DtmfDetector, DtmfDigit, DtmfPress, TelephoneEvent};
use libfuzzer_sys::fuzz_target;

/// Pushes per input at most, repetitions included: long presses and floods
/// of a few thousand packets, while staying fast. Presses held far longer
/// are the unit test `dtmf::tests::an_endless_press_saturates_its_duration`.
const MAX_PUSHES: usize = 1 << 12;

#[derive(Debug, Arbitrary)]
struct Report {
    event: u8,
    end: bool,
    volume: u8,
    duration: u16,
    timestamp: u32,
    marker: bool,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A raw telephone-event payload.
    Raw {
        payload: Vec<u8>,
        timestamp: u32,
        marker: bool,
    },
    /// A well-formed report.
    Report(Report),
    /// The same few reports over and over, timestamps and durations
    /// advancing by the given steps each round (long presses, floods).
    Repeat {
        reports: Vec<Report>,
        rounds: u16,
        timestamp_step: u32,
        duration_step: u16,
    },
    Flush,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut detector = DtmfDetector::new();
    let mut pushes = 0;
    for op in ops {
        match op {
            Op::Raw {
                payload,
                timestamp,
                marker,
            } => {
                pushes += 1;
                match TelephoneEvent::parse(&payload) {
                    Ok(event) => {
                        let mut bytes = event.to_bytes();
                        // R is ignored, volume is 6 bits: the rest round-trips.
                        bytes[1] |= payload[1] & 0x40;
                        assert_eq!(bytes[..], payload[..4]);
                        let presses = detector.push(&payload, timestamp, marker).unwrap();
                        check(&presses);
                    }
                    Err(_) => assert!(detector.push(&payload, timestamp, marker).is_err()),
                }
            }
            Op::Report(report) => {
                pushes += 1;
                push_twice(&mut detector, &report, 0, 0);
            }
            Op::Repeat {
                reports,
                rounds,
                timestamp_step,
                duration_step,
            } => {
                'rounds: for round in 0..u32::from(rounds) {
                    for report in reports.iter().take(4) {
                        if pushes >= MAX_PUSHES {
                            break 'rounds;
                        }
                        pushes += 1;
                        let ts_shift = round.wrapping_mul(timestamp_step);
                        let duration_shift = (round as u16).wrapping_mul(duration_step);
                        push_twice(&mut detector, report, ts_shift, duration_shift);
                    }
                }
            }
            Op::Flush => {
                if let Some(press) = detector.flush() {
                    check(&[press]);
                    assert!(!press.ended);
                }
                assert_eq!(detector.flush(), None);
            }
        }
        if pushes >= MAX_PUSHES {
            break;
        }
    }
});

/// Pushes a report, then the identical packet again: a retransmission never
/// yields another press.
fn push_twice(detector: &mut DtmfDetector, report: &Report, ts_shift: u32, duration_shift: u16) {
    let event = TelephoneEvent {
        event: report.event,
        end: report.end,
        volume: report.volume & 0x3F,
        duration: report.duration.wrapping_add(duration_shift),
    };
    let timestamp = report.timestamp.wrapping_add(ts_shift);
    let presses = detector.push_event(event, timestamp, report.marker);
    check(&presses);
    if DtmfDigit::from_event(event.event).is_none() {
        assert!(presses.is_empty(), "non-DTMF events are ignored");
    }
    let again = detector
        .push(&event.to_bytes(), timestamp, report.marker)
        .expect("a whole report parses");
    assert!(again.is_empty(), "retransmission reported {again:?}");
}

fn check(presses: &[DtmfPress]) {
    assert!(presses.len() <= 2);
    for press in presses {
        let c = press.digit.to_char();
        assert_eq!(DtmfDigit::from_char(c), Some(press.digit));
        assert!(press.digit.event() < 16);
        assert!(press.volume < 64);
    }
    if presses.len() == 2 {
        assert!(!presses[0].ended, "only the first of two is closed early");
    }
}
