//! SRTP terminated in the relay, per leg: what a party sends is decrypted
//! with its own key, what goes to it is encrypted with the key the host
//! gave that leg. Everything in between (latching, statistics, DTMF,
//! taps, prompts) sees plain RTP.
//!
//! The SRTP itself is `rtc-srtp` (RFC 3711: key derivation, the rollover
//! counter, replay windows; AES-CM with HMAC-SHA1 and AES-GCM). What this
//! module adds is keeping it bounded against hostile input:
//!
//! - A decrypting context keeps state for every SSRC it is shown, before
//!   the packet is authenticated. So each SSRC that authenticated gets a
//!   context of its own (at most [`MAX_STREAMS`] per leg, the oldest
//!   forgotten first), and a packet with an SSRC not seen before is tried
//!   on a fresh context that is kept only if the packet authenticated.
//! - The encrypting context keeps state for every SSRC the host sends on
//!   the leg (the other party's, prompts'). Past [`MAX_STREAMS`] of them it
//!   starts afresh (a party switching SSRCs without end cannot grow it).

use bytes::Bytes;
use rtc_shared::error::Error as SrtpFailure;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::AwsLcRsProvider;
use rtc_srtp::crypto::RTCCryptoProvider as _;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use crate::sdes::{CryptoSuite, KeyMaterial};

/// SSRCs a leg keeps SRTP state for, per direction.
pub const MAX_STREAMS: usize = 4;
/// Packets behind the newest one that are still accepted once (RFC 3711
/// §3.3.2 asks for at least 64; libsrtp uses 128).
const REPLAY_WINDOW: usize = 128;

/// The keys of one SRTP leg.
#[derive(Debug, Clone)]
pub struct SrtpKeys {
    /// The party's key: decrypts what it sends.
    pub receive: KeyMaterial,
    /// The host's key for this leg: encrypts what goes to the party.
    pub send: KeyMaterial,
}

/// Why a datagram on an SRTP leg was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpReject {
    /// Shorter than a header and an authentication tag.
    TooShort,
    /// The authentication tag did not verify (wrong key, forged, or plain
    /// RTP sent to an SRTP leg).
    Authentication,
    /// A packet already received (or too old for the replay window).
    Replay,
}

impl SrtpReject {
    fn of(failure: &SrtpFailure) -> SrtpReject {
        match failure {
            SrtpFailure::SrtpSsrcDuplicated(..) | SrtpFailure::SrtcpSsrcDuplicated(..) => {
                SrtpReject::Replay
            }
            SrtpFailure::ErrTooShortRtp
            | SrtpFailure::ErrTooShortRtcp
            | SrtpFailure::SrtpTooSmall(..)
            | SrtpFailure::SrtcpTooSmall(..)
            | SrtpFailure::PacketTooShort
            | SrtpFailure::BufferTooShort => SrtpReject::TooShort,
            _ => SrtpReject::Authentication,
        }
    }
}

fn profile(suite: CryptoSuite) -> ProtectionProfile {
    match suite {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        CryptoSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn receiving_context(key: &KeyMaterial) -> Context {
    Context::new(
        key.key(),
        key.salt(),
        profile(key.suite),
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
        AwsLcRsProvider::new().crypto(),
    )
    .expect("key and salt lengths are checked by KeyMaterial")
}

fn sending_context(key: &KeyMaterial) -> Context {
    Context::new(
        key.key(),
        key.salt(),
        profile(key.suite),
        None,
        None,
        AwsLcRsProvider::new().crypto(),
    )
    .expect("key and salt lengths are checked by KeyMaterial")
}

/// RTCP or RTP, by the packet type in the second byte (RFC 5761 §4:
/// RTCP packet types 192–223 are never RTP payload types with the marker).
fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && (192..=223).contains(&datagram[1])
}

/// The SSRC a packet names: RTP's at bytes 8–11, RTCP's sender at 4–7.
fn ssrc_of(datagram: &[u8], rtcp: bool) -> Option<u32> {
    let at = if rtcp { 4 } else { 8 };
    let bytes = datagram.get(at..at + 4)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// One leg's SRTP state: decrypting what its party sends, encrypting what
/// goes to it.
pub struct LegSrtp {
    receive_key: KeyMaterial,
    /// One context per SSRC that authenticated, most recent last.
    receiving: Vec<(u32, Context)>,
    send_key: KeyMaterial,
    sending: Context,
    /// SSRCs `sending` holds state for.
    sent: Vec<u32>,
}

impl std::fmt::Debug for LegSrtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegSrtp")
            .field("receive", &self.receive_key.suite)
            .field("send", &self.send_key.suite)
            .finish_non_exhaustive()
    }
}

impl LegSrtp {
    /// A leg keyed with `keys`.
    pub fn new(keys: SrtpKeys) -> LegSrtp {
        LegSrtp {
            sending: sending_context(&keys.send),
            receive_key: keys.receive,
            receiving: Vec::new(),
            send_key: keys.send,
            sent: Vec::new(),
        }
    }

    /// New keys (a re-INVITE). A party's key that did not change keeps its
    /// streams' state (rollover counters, replay windows); a new one starts
    /// afresh. Likewise for the host's key.
    pub fn rekey(&mut self, keys: SrtpKeys) {
        if keys.receive != self.receive_key {
            self.receive_key = keys.receive;
            self.receiving.clear();
        }
        if keys.send != self.send_key {
            self.sending = sending_context(&keys.send);
            self.send_key = keys.send;
            self.sent.clear();
        }
    }

    /// SSRCs whose state is kept for decrypting (at most [`MAX_STREAMS`]).
    pub fn receiving_streams(&self) -> usize {
        self.receiving.len()
    }

    /// Decrypts a datagram the party sent (SRTP, or SRTCP when multiplexed
    /// on the same port).
    pub fn unprotect(&mut self, datagram: &[u8]) -> Result<Bytes, SrtpReject> {
        let rtcp = is_rtcp(datagram);
        let ssrc = ssrc_of(datagram, rtcp).ok_or(SrtpReject::TooShort)?;
        if rtcp {
            // rtc-srtp 0.21 returns an AES-CM SRTCP packet whose E flag is
            // clear (unencrypted SRTCP) without checking its tag: anyone
            // could inject RTCP. Unencrypted SRTCP is never negotiated
            // here, so the flag must be set.
            let profile = profile(self.receive_key.suite);
            let trailer = profile.rtcp_auth_tag_len() + 4;
            let flag_at = datagram
                .len()
                .checked_sub(trailer)
                .filter(|&at| at >= 8)
                .ok_or(SrtpReject::TooShort)?;
            if datagram[flag_at] >> 7 == 0 {
                return Err(SrtpReject::Authentication);
            }
        }
        let decrypt = |context: &mut Context| {
            if rtcp {
                context.decrypt_rtcp(datagram)
            } else {
                context.decrypt_rtp(datagram)
            }
        };
        if let Some(at) = self.receiving.iter().position(|(known, _)| *known == ssrc) {
            let plain = decrypt(&mut self.receiving[at].1).map_err(|e| SrtpReject::of(&e))?;
            return Ok(plain.freeze());
        }
        let mut context = receiving_context(&self.receive_key);
        let plain = decrypt(&mut context).map_err(|e| SrtpReject::of(&e))?;
        if self.receiving.len() == MAX_STREAMS {
            self.receiving.remove(0);
        }
        self.receiving.push((ssrc, context));
        Ok(plain.freeze())
    }

    /// Encrypts a plain RTP (or multiplexed RTCP) datagram for the party.
    /// `None` for one too short to be either.
    pub fn protect(&mut self, plain: &[u8]) -> Option<Bytes> {
        let rtcp = is_rtcp(plain);
        let ssrc = ssrc_of(plain, rtcp)?;
        if !self.sent.contains(&ssrc) {
            if self.sent.len() == MAX_STREAMS {
                self.sending = sending_context(&self.send_key);
                self.sent.clear();
            }
            self.sent.push(ssrc);
        }
        let protected = if rtcp {
            self.sending.encrypt_rtcp(plain)
        } else {
            self.sending.encrypt_rtp(plain)
        };
        protected.ok().map(|b| b.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpHeader;

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut buf = [0u8; 200];
        let len = RtpHeader::new(8, seq, u32::from(seq) * 160, ssrc)
            .write_packet(&[0xd5; 160], 0, &mut buf)
            .unwrap();
        buf[..len].to_vec()
    }

    /// Two ends of one direction: the phone's sender and the relay's leg.
    fn pair(suite: CryptoSuite) -> (LegSrtp, LegSrtp) {
        let phone = KeyMaterial::generate(suite);
        let host = KeyMaterial::generate(suite);
        let relay = LegSrtp::new(SrtpKeys {
            receive: phone.clone(),
            send: host.clone(),
        });
        // The phone's view: it sends with its key, receives with ours.
        let phone_side = LegSrtp::new(SrtpKeys {
            receive: host,
            send: phone,
        });
        (phone_side, relay)
    }

    #[test]
    fn every_suite_round_trips_and_the_ciphertext_hides_the_payload() {
        for suite in CryptoSuite::ALL {
            let (mut phone, mut relay) = pair(suite);
            for seq in 0..5u16 {
                let plain = rtp(seq, 0x1111);
                let sent = phone.protect(&plain).unwrap();
                assert_ne!(&sent[12..172], &plain[12..172], "{suite}: payload in clear");
                assert_eq!(relay.unprotect(&sent).unwrap(), plain, "{suite}");
                // And back.
                let back = relay.protect(&plain).unwrap();
                assert_eq!(phone.unprotect(&back).unwrap(), plain, "{suite}");
            }
        }
    }

    #[test]
    fn replays_wrong_keys_plain_rtp_and_scraps_are_rejected() {
        let (mut phone, mut relay) = pair(CryptoSuite::AesCm128HmacSha1_80);
        let first = phone.protect(&rtp(1, 7)).unwrap();
        relay.unprotect(&first).unwrap();
        assert_eq!(relay.unprotect(&first), Err(SrtpReject::Replay));

        let (mut stranger, _) = pair(CryptoSuite::AesCm128HmacSha1_80);
        let forged = stranger.protect(&rtp(2, 7)).unwrap();
        assert_eq!(relay.unprotect(&forged), Err(SrtpReject::Authentication));
        assert_eq!(relay.unprotect(&rtp(3, 7)), Err(SrtpReject::Authentication));
        assert_eq!(relay.unprotect(&[0x80, 8, 0]), Err(SrtpReject::TooShort));
        // The genuine stream goes on.
        let next = phone.protect(&rtp(4, 7)).unwrap();
        assert!(relay.unprotect(&next).is_ok());
    }

    #[test]
    fn srtcp_is_authenticated_even_when_it_claims_to_be_unencrypted() {
        for suite in CryptoSuite::ALL {
            let (mut phone, mut relay) = pair(suite);
            let mut report = vec![0x80, 200, 0, 6, 0, 0, 0x12, 0x34];
            report.extend_from_slice(&[0u8; 20]);
            let sent = phone.protect(&report).unwrap();
            assert_eq!(relay.unprotect(&sent).unwrap(), report, "{suite}");
            // A plain report with a cleared E flag and a zero "tag".
            let mut forged = report.clone();
            forged.extend_from_slice(&[0u8; 4 + 16]);
            forged[6] = 0x56;
            assert_eq!(
                relay.unprotect(&forged),
                Err(SrtpReject::Authentication),
                "{suite}: unauthenticated SRTCP taken"
            );
        }
    }

    #[test]
    fn forged_ssrcs_leave_no_state_and_real_ones_are_bounded() {
        let (mut phone, mut relay) = pair(CryptoSuite::AesCm128HmacSha1_32);
        let (mut stranger, _) = pair(CryptoSuite::AesCm128HmacSha1_32);
        for ssrc in 0..1000 {
            let forged = stranger.protect(&rtp(1, ssrc)).unwrap();
            assert!(relay.unprotect(&forged).is_err());
        }
        assert!(relay.receiving.is_empty());
        for ssrc in 0..10 {
            let real = phone.protect(&rtp(1, ssrc)).unwrap();
            relay.unprotect(&real).unwrap();
        }
        assert_eq!(relay.receiving.len(), MAX_STREAMS);
        for ssrc in 0..100 {
            relay.protect(&rtp(1, ssrc)).unwrap();
        }
        assert!(relay.sent.len() <= MAX_STREAMS);
    }

    #[test]
    fn the_rollover_counter_follows_a_sequence_number_wrap_both_ways() {
        let (mut phone, mut relay) = pair(CryptoSuite::AesCm128HmacSha1_80);
        // 65 530 … 65 535, then 0 … 9 with the rollover counter at 1: the
        // relay must derive it, or every packet after the wrap fails.
        for seq in (65_530..=65_535u16).chain(0..10) {
            let plain = rtp(seq, 0x0AC0);
            let sent = phone.protect(&plain).unwrap();
            assert_eq!(relay.unprotect(&sent).unwrap(), plain, "seq {seq}");
            let back = relay.protect(&plain).unwrap();
            assert_eq!(phone.unprotect(&back).unwrap(), plain, "seq {seq} back");
        }
    }

    #[test]
    fn a_rekey_with_the_same_party_key_keeps_the_replay_window() {
        let (mut phone, mut relay) = pair(CryptoSuite::AeadAes128Gcm);
        let first = phone.protect(&rtp(1, 9)).unwrap();
        relay.unprotect(&first).unwrap();
        relay.rekey(SrtpKeys {
            receive: relay.receive_key.clone(),
            send: KeyMaterial::generate(CryptoSuite::AeadAes128Gcm),
        });
        assert_eq!(relay.unprotect(&first), Err(SrtpReject::Replay));
    }
}
