//! The relay's receive path of one call (two legs), socket-free: signalled
//! addresses, DTMF payload types and datagrams from a few sources, as the
//! parties and anyone else who reaches the ports choose them. Checks the
//! latching rules, that foreign datagrams change nothing, and the counters.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use callhost_media::latch::{Latch, Latching, LegLatch};
use callhost_media::relay::{Leg, LegReceiver, Reception};
use callhost_media::rtp::RtpHeader;
use libfuzzer_sys::fuzz_target;

/// Few addresses and SSRCs, so that inputs hit the same ones often.
const SOURCES: u8 = 6;
const SSRCS: [u32; 4] = [0x1111_1111, 0x2222_2222, 0xDEAD_BEEF, 0];

#[derive(Debug, Arbitrary)]
enum Datagram {
    Raw(Vec<u8>),
    Rtp {
        payload_type: u8,
        marker: bool,
        sequence: u16,
        timestamp: u32,
        ssrc: u8,
        payload: Vec<u8>,
    },
    Rtcp {
        packet_type: u8,
        ssrc: u8,
    },
}

#[derive(Debug, Arbitrary)]
enum Op {
    SetRemote {
        callee: bool,
        address: u8,
    },
    SetDtmf {
        callee: bool,
        payload_type: Option<u8>,
    },
    Receive {
        callee: bool,
        source: u8,
        /// Milliseconds since the previous operation.
        after_ms: u16,
        datagram: Datagram,
    },
    Flush {
        callee: bool,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    follow: bool,
    window_ms: u16,
    ops: Vec<Op>,
}

fn address(index: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, index % SOURCES], 4000 + u16::from(index % 2)))
}

fn encode(datagram: &Datagram) -> (Vec<u8>, Option<u32>) {
    match datagram {
        Datagram::Raw(bytes) => (bytes.clone(), None),
        Datagram::Rtp {
            payload_type,
            marker,
            sequence,
            timestamp,
            ssrc,
            payload,
        } => {
            let ssrc = SSRCS[usize::from(*ssrc) % SSRCS.len()];
            let mut buf = vec![0; 12 + payload.len()];
            let len = RtpHeader::new(payload_type & 0x7F, *sequence, *timestamp, ssrc)
                .with_marker(*marker)
                .write_packet(payload, 0, &mut buf)
                .expect("fits");
            buf.truncate(len);
            (buf, Some(ssrc))
        }
        Datagram::Rtcp { packet_type, ssrc } => {
            let ssrc = SSRCS[usize::from(*ssrc) % SSRCS.len()];
            let mut buf = vec![0x80, 200 + packet_type % 5, 0, 6];
            buf.extend_from_slice(&ssrc.to_be_bytes());
            buf.extend_from_slice(&[0; 20]);
            (buf, None)
        }
    }
}

/// The SSRC a latch would let move: the latched one, or the one known from
/// before the signalled address moved.
fn known_ssrc(latch: &LegLatch) -> Option<u32> {
    match latch.state() {
        Latch::Waiting { known_ssrc, .. } => known_ssrc,
        Latch::Latched { ssrc, .. } => Some(ssrc),
    }
}

fn signalled(latch: &LegLatch) -> Option<SocketAddr> {
    match latch.state() {
        Latch::Waiting { signalled, .. } | Latch::Latched { signalled, .. } => signalled,
    }
}

fuzz_target!(|input: Input| {
    let mode = if input.follow {
        Latching::Follow
    } else {
        Latching::Strict
    };
    let window = Duration::from_millis(u64::from(input.window_ms));
    let start = Instant::now();
    let mut now = start;
    let mut legs = [
        LegReceiver::new(Leg::Caller, mode, window),
        LegReceiver::new(Leg::Callee, mode, window),
    ];
    // Accepted datagrams per leg, to check the counters against.
    let mut accepted = [0u64; 2];
    for op in input.ops {
        match op {
            Op::SetRemote { callee, address: a } => {
                let leg = &mut legs[usize::from(callee)];
                leg.set_remote(address(a), now);
                assert_eq!(signalled(leg.latch()), Some(address(a)));
            }
            Op::SetDtmf {
                callee,
                payload_type,
            } => legs[usize::from(callee)].set_dtmf_payload_type(payload_type),
            Op::Flush { callee } => {
                let leg = &mut legs[usize::from(callee)];
                if let Some(press) = leg.flush_dtmf() {
                    assert!(!press.ended);
                }
            }
            Op::Receive {
                callee,
                source,
                after_ms,
                datagram,
            } => {
                now += Duration::from_millis(u64::from(after_ms));
                let index = usize::from(callee);
                let leg = &mut legs[index];
                let source = address(source);
                let (bytes, rtp_ssrc) = encode(&datagram);
                let before = leg.clone();
                let before_stats = before.stats();
                let reception = leg.receive(source, &bytes, now, now - start);
                let after_stats = leg.stats();
                assert_eq!(after_stats.packets_in, before_stats.packets_in + 1);
                match &reception {
                    Reception::Invalid | Reception::Foreign(_) => {
                        // Dropped: nothing but the counters of drops moved.
                        assert_eq!(leg.latch().state(), before.latch().state());
                        let mut expected = before_stats.clone();
                        expected.packets_in += 1;
                        expected.bytes_in += bytes.len() as u64;
                        if matches!(reception, Reception::Invalid) {
                            expected.invalid_packets += 1;
                        } else {
                            expected.foreign_packets += 1;
                        }
                        assert_eq!(after_stats, expected);
                    }
                    Reception::Rtcp => {
                        accepted[index] += 1;
                        assert_eq!(leg.latch().state(), before.latch().state());
                        if mode == Latching::Strict {
                            assert_eq!(before.send_address(), Some(source));
                        }
                    }
                    Reception::Rtp { packet, presses } => {
                        accepted[index] += 1;
                        assert!(presses.len() <= 2);
                        if let Some(ssrc) = rtp_ssrc {
                            assert_eq!(packet.ssrc(), ssrc);
                        }
                        assert_eq!(leg.send_address(), Some(source));
                        assert_eq!(known_ssrc(leg.latch()), Some(packet.ssrc()));
                        let moved = before.send_address() != Some(source);
                        assert_eq!(
                            after_stats.latch_changes,
                            before_stats.latch_changes + u64::from(moved)
                        );
                        if mode == Latching::Strict {
                            // Strict: who may take the leg.
                            let signalled_before = signalled(before.latch());
                            assert!(signalled_before.is_some(), "latched without SDP");
                            let waiting = matches!(before.latch().state(), Latch::Waiting { .. });
                            assert!(
                                !moved
                                    || signalled_before == Some(source)
                                    || known_ssrc(before.latch()) == Some(packet.ssrc())
                                    || (waiting && before.latch().window_open(now)),
                                "{source} took the leg from {:?}",
                                before.latch().state()
                            );
                        }
                    }
                }
                if mode == Latching::Strict && signalled(leg.latch()).is_none() {
                    assert!(!reception.is_forwarded());
                }
                let stats = leg.stats();
                assert_eq!(
                    stats.packets_in,
                    stats.invalid_packets + stats.foreign_packets + accepted[index]
                );
            }
        }
    }
});
