//! Which legs of a call carry SRTP, and with which keys (SDES, RFC 4568).
//!
//! The relay terminates SRTP per leg, so each leg is negotiated on its own:
//! the caller's offer decides the caller's leg, our offer and the callee's
//! answer the callee's. The host generates a fresh key for every leg and
//! never copies one party's key to the other (`describe_leg` takes the
//! other party's `a=crypto` lines out).
//!
//! Policy (`[sip.srtp]`): per user and for the trunk, `required`,
//! `preferred` or `off`. Keys travel in the SDP, so they are offered and
//! accepted only on a TLS signalling leg unless `keys_over_plain` allows
//! it (for tests): on UDP or TCP a `preferred` leg is plain, a `required`
//! one cannot be set up.
//!
//! | policy    | caller offers RTP/SAVP | caller offers RTP/AVP + crypto | RTP/AVP | our offer to a callee        |
//! |-----------|------------------------|--------------------------------|---------|------------------------------|
//! | required  | SRTP                   | SRTP                           | 488     | RTP/SAVP + keys              |
//! | preferred | SRTP                   | SRTP                           | plain   | RTP/AVP + keys (best effort) |
//! | off       | 488                    | plain                          | plain   | RTP/AVP                      |

use std::collections::BTreeMap;

use callhost_media::sdes::{CryptoAttribute, CryptoSuite, KeyMaterial};
use callhost_media::sdp::AudioStream;
use callhost_media::srtp::SrtpKeys;
use serde::{Deserialize, Serialize};

/// Whether a party's leg must, may or must not carry SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    Required,
    #[default]
    Preferred,
    Off,
}

/// `[sip.srtp]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SrtpConfig {
    /// For users not listed in `users`.
    pub default: SrtpPolicy,
    /// Per user id.
    pub users: BTreeMap<String, SrtpPolicy>,
    /// For the trunk's leg.
    pub trunk: SrtpPolicy,
    /// Offer and accept keys over UDP and TCP as well (anyone on the path
    /// reads them there): for tests only.
    pub keys_over_plain: bool,
}

impl SrtpConfig {
    /// The policy of a user's leg, or the trunk's (`None`).
    pub(crate) fn policy(&self, user: Option<&str>) -> SrtpPolicy {
        match user {
            Some(user) => self.users.get(user).copied().unwrap_or(self.default),
            None => self.trunk,
        }
    }

    /// Whether keys may travel on a signalling leg over `transport`.
    pub(crate) fn keys_allowed(&self, transport: rsipstack::sip::Transport) -> bool {
        transport == rsipstack::sip::Transport::Tls || self.keys_over_plain
    }
}

/// What one leg carries, as negotiated.
#[derive(Debug, Clone)]
pub(crate) enum LegSecurity {
    Plain,
    Srtp {
        /// The host's key for the leg, as it goes into the SDP.
        ours: CryptoAttribute,
        /// The party's key.
        theirs: KeyMaterial,
    },
}

impl LegSecurity {
    /// The relay's keys for the leg (`None`: plain RTP).
    pub fn keys(&self) -> Option<SrtpKeys> {
        match self {
            LegSecurity::Plain => None,
            LegSecurity::Srtp { ours, theirs } => Some(SrtpKeys {
                receive: theirs.clone(),
                send: ours.key.clone(),
            }),
        }
    }

    /// Our `a=crypto` values for the leg's SDP.
    pub fn crypto_lines(&self) -> Vec<String> {
        match self {
            LegSecurity::Plain => Vec::new(),
            LegSecurity::Srtp { ours, .. } => vec![ours.value()],
        }
    }
}

/// Why a leg cannot be set up as its policy says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SrtpRefusal {
    #[error("SRTP is required, the offer has no usable a=crypto")]
    Required,
    #[error("SRTP is required, and keys are not exchanged over {0:?} (only TLS)")]
    NotOverTls(rsipstack::sip::Transport),
    #[error("RTP/SAVP offered, and SRTP is off for this party")]
    Off,
    #[error("RTP/SAVP offered without a usable a=crypto")]
    NoUsableKey,
    #[error("SRTP was required, the answer has no a=crypto for our offer")]
    AnswerWithoutKey,
}

/// The first `a=crypto` line the relay can do, in the offerer's order.
fn first_usable(stream: &AudioStream) -> Option<CryptoAttribute> {
    stream
        .crypto
        .iter()
        .find_map(|value| CryptoAttribute::parse(value).ok())
}

/// The caller's leg from its offer: SRTP (with our fresh key of the suite
/// it chose first), plain, or refused (488).
pub(crate) fn caller_leg(
    offer: &AudioStream,
    policy: SrtpPolicy,
    keys_allowed: bool,
    transport: rsipstack::sip::Transport,
) -> Result<LegSecurity, SrtpRefusal> {
    let secure = offer.is_secure_profile();
    let usable = if keys_allowed {
        first_usable(offer)
    } else {
        None
    };
    match (policy, secure, usable) {
        (SrtpPolicy::Off, true, _) => Err(SrtpRefusal::Off),
        (SrtpPolicy::Required, _, None) if !keys_allowed => Err(SrtpRefusal::NotOverTls(transport)),
        (SrtpPolicy::Required, _, None) => Err(SrtpRefusal::Required),
        (_, true, None) if !keys_allowed => Err(SrtpRefusal::NotOverTls(transport)),
        (_, true, None) => Err(SrtpRefusal::NoUsableKey),
        (SrtpPolicy::Off, false, _) | (_, false, None) => Ok(LegSecurity::Plain),
        (_, _, Some(theirs)) => Ok(LegSecurity::Srtp {
            ours: CryptoAttribute {
                tag: theirs.tag,
                key: KeyMaterial::generate(theirs.key.suite),
            },
            theirs: theirs.key,
        }),
    }
}

/// Our offer to one callee: the profile to state and our keys (one per
/// suite, each its own).
#[derive(Debug, Clone)]
pub(crate) struct OfferedSecurity {
    pub required: bool,
    pub protocol: &'static str,
    pub offers: Vec<CryptoAttribute>,
}

impl OfferedSecurity {
    pub fn plain() -> OfferedSecurity {
        OfferedSecurity {
            required: false,
            protocol: "RTP/AVP",
            offers: Vec::new(),
        }
    }

    /// For a callee with `policy` on a signalling leg where keys are
    /// (not) allowed; `Err` when the policy cannot be met there.
    pub fn for_callee(
        policy: SrtpPolicy,
        keys_allowed: bool,
        transport: rsipstack::sip::Transport,
    ) -> Result<OfferedSecurity, SrtpRefusal> {
        let offers = || {
            // The two suites every SDES phone has; GCM only when offered to us.
            [
                CryptoSuite::AesCm128HmacSha1_80,
                CryptoSuite::AesCm128HmacSha1_32,
            ]
            .into_iter()
            .zip(1..)
            .map(|(suite, tag)| CryptoAttribute {
                tag,
                key: KeyMaterial::generate(suite),
            })
            .collect()
        };
        match (policy, keys_allowed) {
            (SrtpPolicy::Required, false) => Err(SrtpRefusal::NotOverTls(transport)),
            (SrtpPolicy::Required, true) => Ok(OfferedSecurity {
                required: true,
                protocol: "RTP/SAVP",
                offers: offers(),
            }),
            (SrtpPolicy::Preferred, true) => Ok(OfferedSecurity {
                required: false,
                protocol: "RTP/AVP",
                offers: offers(),
            }),
            _ => Ok(OfferedSecurity::plain()),
        }
    }

    pub fn crypto_lines(&self) -> Vec<String> {
        self.offers.iter().map(CryptoAttribute::value).collect()
    }

    /// The callee's leg from its answer: the line it picked must be one of
    /// ours (same tag and suite).
    pub fn accept(&self, answer: &AudioStream) -> Result<LegSecurity, SrtpRefusal> {
        if self.offers.is_empty() {
            return Ok(LegSecurity::Plain);
        }
        let picked = answer.crypto.iter().find_map(|value| {
            let theirs = CryptoAttribute::parse(value).ok()?;
            let ours = self
                .offers
                .iter()
                .find(|ours| ours.tag == theirs.tag && ours.key.suite == theirs.key.suite)?;
            Some(LegSecurity::Srtp {
                ours: ours.clone(),
                theirs: theirs.key,
            })
        });
        match picked {
            Some(security) => Ok(security),
            None if self.required => Err(SrtpRefusal::AnswerWithoutKey),
            None => Ok(LegSecurity::Plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_media::sdp::Sdp;
    use rsipstack::sip::Transport;

    fn audio(protocol: &str, crypto: &[String]) -> AudioStream {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 {protocol} 8\r\n"
        );
        for value in crypto {
            text.push_str(&format!("a=crypto:{value}\r\n"));
        }
        Sdp::parse(&text).unwrap().audio().unwrap().clone()
    }

    fn key_line(tag: u32, suite: CryptoSuite) -> String {
        CryptoAttribute {
            tag,
            key: KeyMaterial::generate(suite),
        }
        .value()
    }

    #[test]
    fn the_callers_leg_follows_the_policy_table() {
        use SrtpPolicy::*;
        let keyed = [key_line(1, CryptoSuite::AesCm128HmacSha1_80)];
        let savp = audio("RTP/SAVP", &keyed);
        let avp_keyed = audio("RTP/AVP", &keyed);
        let avp = audio("RTP/AVP", &[]);
        let savp_unusable = audio("RTP/SAVP", &["1 F8_128_HMAC_SHA1_80 inline:x".into()]);
        let tls = Transport::Tls;
        let srtp = |r: Result<LegSecurity, SrtpRefusal>| matches!(r, Ok(LegSecurity::Srtp { .. }));
        let plain = |r: Result<LegSecurity, SrtpRefusal>| matches!(r, Ok(LegSecurity::Plain));

        assert!(srtp(caller_leg(&savp, Required, true, tls)));
        assert!(srtp(caller_leg(&avp_keyed, Required, true, tls)));
        assert_eq!(
            caller_leg(&avp, Required, true, tls).unwrap_err(),
            SrtpRefusal::Required
        );
        assert!(srtp(caller_leg(&savp, Preferred, true, tls)));
        assert!(srtp(caller_leg(&avp_keyed, Preferred, true, tls)));
        assert!(plain(caller_leg(&avp, Preferred, true, tls)));
        assert_eq!(
            caller_leg(&savp, Off, true, tls).unwrap_err(),
            SrtpRefusal::Off
        );
        assert!(plain(caller_leg(&avp_keyed, Off, true, tls)));
        assert_eq!(
            caller_leg(&savp_unusable, Preferred, true, tls).unwrap_err(),
            SrtpRefusal::NoUsableKey
        );
        // Keys over UDP: not taken.
        let udp = Transport::Udp;
        assert!(plain(caller_leg(&avp_keyed, Preferred, false, udp)));
        assert_eq!(
            caller_leg(&savp, Preferred, false, udp).unwrap_err(),
            SrtpRefusal::NotOverTls(udp)
        );
        assert_eq!(
            caller_leg(&avp_keyed, Required, false, udp).unwrap_err(),
            SrtpRefusal::NotOverTls(udp)
        );
    }

    #[test]
    fn our_key_is_fresh_of_the_callers_suite_and_tag() {
        let line = key_line(7, CryptoSuite::AesCm128HmacSha1_32);
        let offer = audio("RTP/SAVP", std::slice::from_ref(&line));
        let Ok(LegSecurity::Srtp { ours, theirs }) =
            caller_leg(&offer, SrtpPolicy::Preferred, true, Transport::Tls)
        else {
            panic!("not SRTP");
        };
        assert_eq!(ours.tag, 7);
        assert_eq!(ours.key.suite, CryptoSuite::AesCm128HmacSha1_32);
        assert_eq!(theirs, CryptoAttribute::parse(&line).unwrap().key);
        assert_ne!(ours.key, theirs, "the caller's key copied into our answer");
    }

    #[test]
    fn a_callee_answer_must_pick_one_of_our_lines() {
        let offered =
            OfferedSecurity::for_callee(SrtpPolicy::Required, true, Transport::Tls).unwrap();
        assert_eq!(offered.protocol, "RTP/SAVP");
        assert_eq!(offered.offers.len(), 2);
        let answer = |tag: u32, suite| audio("RTP/SAVP", &[key_line(tag, suite)]);
        assert!(matches!(
            offered.accept(&answer(2, CryptoSuite::AesCm128HmacSha1_32)),
            Ok(LegSecurity::Srtp { ref ours, .. }) if ours.tag == 2
        ));
        // A tag we did not offer with that suite, or no key at all.
        assert_eq!(
            offered
                .accept(&answer(2, CryptoSuite::AesCm128HmacSha1_80))
                .unwrap_err(),
            SrtpRefusal::AnswerWithoutKey
        );
        assert_eq!(
            offered.accept(&audio("RTP/AVP", &[])).unwrap_err(),
            SrtpRefusal::AnswerWithoutKey
        );
        let best_effort =
            OfferedSecurity::for_callee(SrtpPolicy::Preferred, true, Transport::Tls).unwrap();
        assert_eq!(best_effort.protocol, "RTP/AVP");
        assert!(matches!(
            best_effort.accept(&audio("RTP/AVP", &[])),
            Ok(LegSecurity::Plain)
        ));
        assert!(
            OfferedSecurity::for_callee(SrtpPolicy::Preferred, false, Transport::Udp)
                .unwrap()
                .offers
                .is_empty()
        );
        assert!(OfferedSecurity::for_callee(SrtpPolicy::Required, false, Transport::Udp).is_err());
    }
}
