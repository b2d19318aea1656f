//! Which source a relay leg accepts RTP from: the latching decision, as a
//! pure state machine with no socket or clock of its own.
//!
//! Every datagram arriving on a relay port may come from anyone who can reach
//! the port. A leg therefore latches once, to its party, and drops what
//! comes from elsewhere ([`Latching::Strict`]):
//!
//! - [`LegLatch::set_remote`] records the address the party's SDP signalled.
//!   The first call opens the latch window (`window` long, from that moment).
//! - Waiting: RTP from the signalled address latches at once. Within the
//!   window, the first RTP from any source latches (the party is behind NAT
//!   and its packets come from the NAT's address). After the window, only
//!   the signalled address latches, or a stream whose SSRC the leg already
//!   knows (one that was latched before a re-INVITE moved the party).
//! - Latched: RTP from the latched address passes; a new SSRC from it is
//!   taken over (the phone restarted its stream). RTP from another address
//!   re-latches only with the latched SSRC (the same stream moved: the NAT
//!   re-bound, the phone roamed), or when it comes from the signalled address
//!   (the party's own, SIP-signalled address always wins over a source that
//!   merely won the race in the window). Everything else is foreign.
//! - RTCP multiplexed on the RTP port (RFC 5761) never latches; it passes
//!   only from the address the leg sends to.
//! - Before any `set_remote`, everything is foreign.
//!
//! A later `set_remote` with the address signalled before changes nothing
//! (re-INVITEs repeat it). A different address moves the send address there
//! and the leg waits again, for that address or the known SSRC; the window is
//! never reopened (it may still be running if it had not ended yet).
//!
//! Where the leg sends: to the latched address once latched, to the
//! signalled address until then ([`LegLatch::send_address`]).
//!
//! [`Latching::Follow`] keeps the behaviour of earlier versions, for lab use:
//! every RTP packet latches the leg to its source, whatever it is, and RTCP
//! passes from anywhere. Anyone who can reach the port can redirect the leg.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::rtp::RtpPacket;

/// How strictly relay legs latch to their party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Latching {
    /// Latch once, to the signalled address or (within the latch window) the
    /// first source; later moves only with the same SSRC. See the module docs.
    #[default]
    Strict,
    /// Follow the source of every RTP packet, from anyone (the behaviour of
    /// earlier versions). For labs and tests only: anyone who can reach the
    /// relay port can take over the leg.
    Follow,
}

/// What a received, well-formed datagram is, as far as latching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// An RTP packet of the stream with this SSRC.
    Rtp {
        /// The packet's synchronisation source.
        ssrc: u32,
    },
    /// RTCP multiplexed on the RTP port (RFC 5761).
    Rtcp,
}

impl PacketKind {
    /// Classifies a parsed packet. RTCP packet types 200-204 read as marker
    /// set and payload type 72-76 when parsed as RTP (RFC 5761 §4).
    pub fn of(packet: &RtpPacket<'_>) -> Self {
        if packet.marker() && (72..=76).contains(&packet.payload_type()) {
            PacketKind::Rtcp
        } else {
            PacketKind::Rtp {
                ssrc: packet.ssrc(),
            }
        }
    }
}

/// The latch state of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    /// Not latched (yet, or again after the signalled address moved).
    Waiting {
        /// The address the party's SDP signalled, if any yet; the leg sends
        /// there until it latches.
        signalled: Option<SocketAddr>,
        /// The SSRC of the stream latched before the signalled address
        /// moved: that stream may latch from anywhere.
        known_ssrc: Option<u32>,
    },
    /// Latched to the party's stream.
    Latched {
        /// The address the party's SDP signalled (`None` only in
        /// [`Latching::Follow`], which latches without SDP).
        signalled: Option<SocketAddr>,
        /// Where the party's packets come from and the leg sends to.
        remote: SocketAddr,
        /// The party's stream.
        ssrc: u32,
    },
}

/// Why a datagram was not accepted as the party's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Foreign {
    /// No address has been signalled for the leg yet.
    NotSignalled,
    /// RTP from an address that is not the signalled one, after the latch
    /// window, with an SSRC the leg does not know.
    WindowClosed,
    /// RTP from an address other than the latched one, with another SSRC.
    OtherSource,
    /// RTCP from an address the leg does not send to.
    RtcpElsewhere,
}

/// What to do with a received, well-formed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// It is the party's: account and forward it.
    Accept {
        /// It moved the leg's send address (to its source).
        moved: bool,
    },
    /// Not the party's: drop it, unaccounted except as foreign.
    Foreign(Foreign),
}

impl Verdict {
    /// Whether the datagram is the party's.
    pub fn is_accepted(self) -> bool {
        matches!(self, Verdict::Accept { .. })
    }
}

/// What [`LegLatch::set_remote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteChange {
    /// The first address signalled for the leg; the latch window started.
    First,
    /// The same address as signalled before: nothing changed.
    Unchanged,
    /// A new address: the leg sends there and waits to latch again.
    Moved,
}

/// The latching of one leg: its mode, window and [`Latch`] state.
#[derive(Debug, Clone)]
pub struct LegLatch {
    mode: Latching,
    window: Duration,
    /// When the first address was signalled: the window runs from here.
    window_opened: Option<Instant>,
    state: Latch,
}

impl LegLatch {
    /// A leg that has neither signalled address nor packets yet.
    pub fn new(mode: Latching, window: Duration) -> Self {
        LegLatch {
            mode,
            window,
            window_opened: None,
            state: Latch::Waiting {
                signalled: None,
                known_ssrc: None,
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> Latch {
        self.state
    }

    /// The latching mode.
    pub fn mode(&self) -> Latching {
        self.mode
    }

    /// Where the leg's packets go: the latched address, else the signalled
    /// one, else nowhere yet.
    pub fn send_address(&self) -> Option<SocketAddr> {
        match self.state {
            Latch::Waiting { signalled, .. } => signalled,
            Latch::Latched { remote, .. } => Some(remote),
        }
    }

    /// Whether the latch window is open at `now`: it runs for `window` from
    /// the first [`LegLatch::set_remote`].
    pub fn window_open(&self, now: Instant) -> bool {
        self.window_opened
            .is_some_and(|opened| now.saturating_duration_since(opened) < self.window)
    }

    /// Records the address the party's SDP signalled, at `now`.
    pub fn set_remote(&mut self, address: SocketAddr, now: Instant) -> RemoteChange {
        let (signalled, known_ssrc) = match self.state {
            Latch::Waiting {
                signalled,
                known_ssrc,
            } => (signalled, known_ssrc),
            Latch::Latched {
                signalled, ssrc, ..
            } => (signalled, Some(ssrc)),
        };
        if signalled == Some(address) {
            return RemoteChange::Unchanged;
        }
        let first = self.window_opened.is_none();
        if first {
            self.window_opened = Some(now);
        }
        self.state = Latch::Waiting {
            signalled: Some(address),
            known_ssrc,
        };
        if first {
            RemoteChange::First
        } else {
            RemoteChange::Moved
        }
    }

    /// Decides about a well-formed datagram of `kind` from `source`,
    /// arriving at `now`, and updates the state when it latches.
    pub fn receive(&mut self, source: SocketAddr, kind: PacketKind, now: Instant) -> Verdict {
        let strict = self.mode == Latching::Strict;
        let signalled = self.signalled();
        let before = self.send_address();
        if strict && signalled.is_none() {
            return Verdict::Foreign(Foreign::NotSignalled);
        }
        let PacketKind::Rtp { ssrc } = kind else {
            // RTCP names no stream the latch could check: it never latches.
            if strict && before != Some(source) {
                return Verdict::Foreign(Foreign::RtcpElsewhere);
            }
            return Verdict::Accept { moved: false };
        };
        let (latches, refusal) = match self.state {
            Latch::Waiting { known_ssrc, .. } => (
                !strict
                    || signalled == Some(source)
                    || self.window_open(now)
                    || known_ssrc == Some(ssrc),
                Foreign::WindowClosed,
            ),
            Latch::Latched {
                remote,
                ssrc: latched,
                ..
            } => (
                !strict || remote == source || ssrc == latched || signalled == Some(source),
                Foreign::OtherSource,
            ),
        };
        if !latches {
            return Verdict::Foreign(refusal);
        }
        self.state = Latch::Latched {
            signalled,
            remote: source,
            ssrc,
        };
        Verdict::Accept {
            moved: before != Some(source),
        }
    }

    /// The address the party's SDP signalled last, if any.
    pub fn signalled(&self) -> Option<SocketAddr> {
        match self.state {
            Latch::Waiting { signalled, .. } | Latch::Latched { signalled, .. } => signalled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(3);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn rtp(ssrc: u32) -> PacketKind {
        PacketKind::Rtp { ssrc }
    }

    fn strict() -> (LegLatch, Instant) {
        (LegLatch::new(Latching::Strict, WINDOW), Instant::now())
    }

    const ACCEPT: Verdict = Verdict::Accept { moved: false };
    const MOVED: Verdict = Verdict::Accept { moved: true };

    #[test]
    fn nothing_is_accepted_before_an_address_is_signalled() {
        let (mut latch, t0) = strict();
        assert_eq!(
            latch.receive(addr(1), rtp(7), t0),
            Verdict::Foreign(Foreign::NotSignalled)
        );
        assert_eq!(
            latch.receive(addr(1), PacketKind::Rtcp, t0),
            Verdict::Foreign(Foreign::NotSignalled)
        );
        assert_eq!(latch.send_address(), None);
        assert!(!latch.window_open(t0));
    }

    #[test]
    fn the_signalled_address_latches_at_once_even_after_the_window() {
        let (mut latch, t0) = strict();
        assert_eq!(latch.set_remote(addr(1), t0), RemoteChange::First);
        assert_eq!(latch.send_address(), Some(addr(1)));
        let late = t0 + WINDOW * 10;
        assert_eq!(latch.receive(addr(1), rtp(7), late), ACCEPT);
        assert_eq!(
            latch.state(),
            Latch::Latched {
                signalled: Some(addr(1)),
                remote: addr(1),
                ssrc: 7
            }
        );
    }

    #[test]
    fn within_the_window_the_first_source_latches_and_no_other() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        let t = t0 + WINDOW / 2;
        assert_eq!(latch.receive(addr(2), rtp(7), t), MOVED);
        assert_eq!(latch.send_address(), Some(addr(2)));
        // A second source, still within the window: foreign.
        assert_eq!(
            latch.receive(addr(3), rtp(8), t),
            Verdict::Foreign(Foreign::OtherSource)
        );
        assert_eq!(latch.send_address(), Some(addr(2)));
    }

    #[test]
    fn after_the_window_other_sources_are_foreign() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        let t = t0 + WINDOW;
        assert!(!latch.window_open(t));
        assert_eq!(
            latch.receive(addr(2), rtp(7), t),
            Verdict::Foreign(Foreign::WindowClosed)
        );
        assert_eq!(latch.receive(addr(1), rtp(9), t), ACCEPT);
    }

    #[test]
    fn a_moved_stream_relatches_only_with_its_ssrc() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        latch.receive(addr(1), rtp(7), t0);
        let t = t0 + WINDOW * 2;
        assert_eq!(
            latch.receive(addr(2), rtp(8), t),
            Verdict::Foreign(Foreign::OtherSource)
        );
        assert_eq!(latch.receive(addr(2), rtp(7), t), MOVED);
        assert_eq!(latch.send_address(), Some(addr(2)));
        // A third address with another SSRC is foreign...
        assert_eq!(
            latch.receive(addr(3), rtp(9), t),
            Verdict::Foreign(Foreign::OtherSource)
        );
        // ...but the signalled address takes the leg back with any SSRC.
        assert_eq!(latch.receive(addr(1), rtp(9), t), MOVED);
        assert_eq!(
            latch.state(),
            Latch::Latched {
                signalled: Some(addr(1)),
                remote: addr(1),
                ssrc: 9
            }
        );
    }

    #[test]
    fn an_ssrc_change_from_the_latched_address_is_tracked() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        latch.receive(addr(2), rtp(7), t0);
        assert_eq!(latch.receive(addr(2), rtp(8), t0 + WINDOW), ACCEPT);
        // Now 8 is the stream that may move; 7 is not any more.
        let t = t0 + WINDOW * 2;
        assert_eq!(
            latch.receive(addr(3), rtp(7), t),
            Verdict::Foreign(Foreign::OtherSource)
        );
        assert_eq!(latch.receive(addr(3), rtp(8), t), MOVED);
    }

    #[test]
    fn rtcp_passes_only_from_the_send_address_and_never_latches() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        // Waiting: RTCP from the signalled address passes, from elsewhere
        // it does not, even within the window.
        assert_eq!(latch.receive(addr(1), PacketKind::Rtcp, t0), ACCEPT);
        assert_eq!(
            latch.receive(addr(2), PacketKind::Rtcp, t0),
            Verdict::Foreign(Foreign::RtcpElsewhere)
        );
        assert!(matches!(latch.state(), Latch::Waiting { .. }));
        latch.receive(addr(2), rtp(7), t0);
        assert_eq!(latch.receive(addr(2), PacketKind::Rtcp, t0), ACCEPT);
        assert_eq!(
            latch.receive(addr(1), PacketKind::Rtcp, t0),
            Verdict::Foreign(Foreign::RtcpElsewhere)
        );
        assert_eq!(latch.send_address(), Some(addr(2)));
    }

    #[test]
    fn repeating_the_signalled_address_changes_nothing() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        latch.receive(addr(2), rtp(7), t0);
        let before = latch.state();
        assert_eq!(
            latch.set_remote(addr(1), t0 + WINDOW),
            RemoteChange::Unchanged
        );
        assert_eq!(latch.state(), before);
        assert_eq!(latch.send_address(), Some(addr(2)));
    }

    #[test]
    fn a_new_signalled_address_waits_again_without_a_new_window() {
        let (mut latch, t0) = strict();
        latch.set_remote(addr(1), t0);
        latch.receive(addr(1), rtp(7), t0);
        let t = t0 + WINDOW * 2;
        assert_eq!(latch.set_remote(addr(4), t), RemoteChange::Moved);
        assert_eq!(latch.send_address(), Some(addr(4)));
        assert_eq!(
            latch.state(),
            Latch::Waiting {
                signalled: Some(addr(4)),
                known_ssrc: Some(7)
            }
        );
        // No any-source window: a stranger is foreign...
        assert_eq!(
            latch.receive(addr(5), rtp(8), t),
            Verdict::Foreign(Foreign::WindowClosed)
        );
        // ...the known stream may latch from wherever it now comes from.
        assert_eq!(latch.receive(addr(6), rtp(7), t), MOVED);
        assert_eq!(latch.send_address(), Some(addr(6)));
        // And the new signalled address can always take over.
        latch.set_remote(addr(7), t);
        assert_eq!(latch.receive(addr(7), rtp(99), t), ACCEPT);
    }

    #[test]
    fn a_huge_window_does_not_overflow() {
        let mut latch = LegLatch::new(Latching::Strict, Duration::MAX);
        let t0 = Instant::now();
        latch.set_remote(addr(1), t0);
        assert!(latch.window_open(t0 + Duration::from_secs(1 << 40)));
        assert_eq!(latch.receive(addr(2), rtp(1), t0), MOVED);
        // A clock reading before the window opened counts as inside it.
        let mut early = LegLatch::new(Latching::Strict, WINDOW);
        early.set_remote(addr(1), t0 + WINDOW);
        assert!(early.window_open(t0));
    }

    #[test]
    fn follow_latches_to_every_source() {
        let mut latch = LegLatch::new(Latching::Follow, WINDOW);
        let t0 = Instant::now();
        // Without SDP, from anyone.
        assert_eq!(latch.receive(addr(1), rtp(1), t0), MOVED);
        assert_eq!(latch.receive(addr(2), rtp(2), t0 + WINDOW * 9), MOVED);
        assert_eq!(latch.receive(addr(2), rtp(2), t0 + WINDOW * 9), ACCEPT);
        assert_eq!(latch.receive(addr(3), PacketKind::Rtcp, t0), ACCEPT);
        assert_eq!(latch.send_address(), Some(addr(2)));
        assert_eq!(latch.set_remote(addr(4), t0), RemoteChange::First);
        assert_eq!(latch.send_address(), Some(addr(4)));
        assert_eq!(latch.receive(addr(5), rtp(5), t0 + WINDOW * 9), MOVED);
    }

    #[test]
    fn rtcp_shaped_packets_are_classified() {
        let mut buf = [0u8; 12];
        let header = crate::rtp::RtpHeader::new(72, 1, 2, 3).with_marker(true);
        header.write(&mut buf).unwrap();
        let packet = RtpPacket::parse(&buf).unwrap();
        assert_eq!(PacketKind::of(&packet), PacketKind::Rtcp);
        header.with_marker(false).write(&mut buf).unwrap();
        let packet = RtpPacket::parse(&buf).unwrap();
        assert_eq!(PacketKind::of(&packet), PacketKind::Rtp { ssrc: 3 });
    }
}
