//! The call's media: pointing the relay at what each side's SDP says
//! (addresses a peer may not name are refused), rewriting SDP to the
//! relay's ports, answering re-offers, taps and prompts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use callhost_media::prompt::Prompt;
use callhost_media::relay::{Leg as MediaLeg, TapLegs};
use callhost_media::sdes::CryptoAttribute;
use callhost_media::sdp::{describe_leg, reanswer, Codec, Direction, LegDescription, Sdp};
use callhost_plugin_abi::{EventKind, TapRequest};
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TransactionHandle};
use rsipstack::sip::{Header, StatusCode};

use super::{Call, Phase};
use crate::server::{DialogPeer, Severity};
use crate::srtp::{LegSecurity, SrtpRefusal};

/// Frames a tap may queue before the relay drops them for that tap.
const TAP_QUEUE: usize = 512;

pub(super) fn sdp_type() -> Header {
    Header::ContentType("application/sdp".into())
}

impl Call {
    /// The address a dialog peer's SDP is judged against.
    fn peer_ip(&self, peer: DialogPeer) -> IpAddr {
        match peer {
            DialogPeer::Host(ip) => ip,
            DialogPeer::Trunk => self
                .shared
                .config
                .trunk
                .as_ref()
                .map(|trunk| trunk.peer.ip())
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// Points the relay's `side` at where `sdp` says that party receives,
    /// with its DTMF payload type, if `peer` may name those addresses. `c=`
    /// 0.0.0.0 (the old way to say hold) or port 0 keeps the previous
    /// address. False when the SDP was refused.
    pub(super) fn point(&self, side: MediaLeg, sdp: &Sdp, peer: DialogPeer) -> bool {
        match self.try_point(side, sdp, peer) {
            Ok(()) => true,
            Err(error) => {
                let side = match side {
                    MediaLeg::Caller => "caller",
                    MediaLeg::Callee => "callee",
                };
                tracing::warn!(call = %self.call_id, side, %error, "SDP address refused");
                false
            }
        }
    }

    /// [`Call::point`] without the log line: the caller logs the refusal.
    pub(super) fn try_point(
        &self,
        side: MediaLeg,
        sdp: &Sdp,
        peer: DialogPeer,
    ) -> Result<(), callhost_media::sdp::SdpError> {
        sdp.check_addresses(self.peer_ip(peer), self.shared.address_policy)?;
        if let Ok(endpoint) = sdp.audio_endpoint() {
            if !endpoint.ip().is_unspecified() && endpoint.port() != 0 {
                self.media.set_remote(side, endpoint);
            }
        }
        self.media.set_dtmf_payload_type(
            side,
            sdp.audio().and_then(|a| a.telephone_event_payload_type()),
        );
        Ok(())
    }

    /// Points the relay's callee side at leg `index`'s SDP (an answer to
    /// our offer: its address and its SRTP) and returns the answer for the
    /// caller: the same SDP pointing at the relay's caller side, with the
    /// caller's profile and our key for the caller's leg.
    pub(super) fn relay_answer(&self, body: &[u8], index: usize) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(body).ok()?;
        let sdp = Sdp::parse(text).ok()?;
        let leg = &self.legs[index];
        if !self.point(MediaLeg::Callee, &sdp, leg.peer) {
            return None;
        }
        let security = sdp.audio().map(|audio| leg.security.accept(audio))?;
        let Ok(security) = security else {
            // Refused when it answered (`leg_answer_security`).
            return None;
        };
        self.media.set_srtp(MediaLeg::Callee, security.keys());
        self.answer_for_caller(text).map(String::into_bytes)
    }

    /// Any SDP of ours or of a callee, for the caller: pointing at the
    /// relay's caller side, in the caller's profile, with our key for the
    /// caller's leg (and no other).
    pub(super) fn answer_for_caller(&self, text: &str) -> Option<String> {
        let caller_side = self.media.local_addr(MediaLeg::Caller);
        let crypto = self.caller.security.crypto_lines();
        describe_leg(
            text,
            &LegDescription {
                address: caller_side.ip(),
                port: caller_side.port(),
                protocol: Some(&self.caller.protocol),
                crypto: &crypto,
            },
        )
        .ok()
    }

    /// Whether leg `index`'s answer meets the SRTP we offered it (a leg
    /// that was offered SRTP as required must answer with one of our keys).
    pub(super) fn leg_answer_security(
        &self,
        index: usize,
        body: &[u8],
    ) -> Result<LegSecurity, SrtpRefusal> {
        let audio = Sdp::parse_bytes(body)
            .ok()
            .and_then(|sdp| sdp.audio().cloned());
        match audio {
            Some(audio) => self.legs[index].security.accept(&audio),
            // No SDP in the answer: nothing to key (the media goes nowhere).
            None => Ok(LegSecurity::Plain),
        }
    }

    /// Gives every instance that tapped the call its frames, from now (call
    /// setup) until the media closes at hangup.
    pub(super) fn start_taps(&self) {
        let call_id: Arc<str> = self.call_id.as_str().into();
        for tap in &self.outcome.taps {
            let Some(sink) = self.shared.control.media_sink(&tap.instance) else {
                tracing::warn!(instance = %tap.instance, "tap requested by an instance without the media hook");
                continue;
            };
            let legs = match tap.legs {
                TapRequest::Caller => TapLegs::Caller,
                TapRequest::Callee => TapLegs::Callee,
                _ => TapLegs::Both,
            };
            let mut tap = self.media.tap(legs, TAP_QUEUE);
            let call_id = call_id.clone();
            tokio::spawn(async move {
                // Drops the tap counted and the sink was not told of yet.
                let mut told = [0u64; 2];
                let tell = |told: &mut [u64; 2], tap: &callhost_media::TapReceiver| {
                    for leg in MediaLeg::BOTH {
                        let dropped = tap.dropped(leg);
                        if dropped > told[leg.index()] {
                            sink.gap(&call_id, leg, dropped - told[leg.index()]);
                            told[leg.index()] = dropped;
                        }
                    }
                };
                while let Some(frame) = tap.recv().await {
                    tell(&mut told, &tap);
                    sink.frame(&call_id, &frame);
                }
                tell(&mut told, &tap);
                sink.end(&call_id);
            });
        }
    }

    /// Plays the prompt an instance asked for to the caller as early media
    /// (183 with our SDP) before any phone rings. False when the caller
    /// hung up meanwhile.
    pub(super) async fn play_prompt(&mut self, states: &mut DialogStateReceiver) -> bool {
        let Some(request) = self.outcome.prompt.clone() else {
            return true;
        };
        let (still_there, outcome) = self.prompt_outcome(&request, states).await;
        // Modules that wait for the prompt (a recording that begins after
        // its notice) learn that it is over, and how.
        super::events::emit(
            self.hooks.as_ref(),
            &self.call_id,
            EventKind::PROMPT_ENDED,
            None,
            &format!("{}/{}: {outcome}", request.instance, request.asset),
        );
        still_there
    }

    /// Plays the prompt; whether the caller is still there, and what
    /// happened ("played" or "not played: why").
    async fn prompt_outcome(
        &mut self,
        request: &callhost_pbx::engine::MediaPrompt,
        states: &mut DialogStateReceiver,
    ) -> (bool, String) {
        let not_played = |why: &str| (true, format!("not played: {why}"));
        let Some(path) = self
            .shared
            .control
            .prompt_file(&request.instance, &request.asset)
        else {
            tracing::warn!(instance = %request.instance, asset = %request.asset, "prompt not found");
            return not_played("not found");
        };
        let prompt = match tokio::task::spawn_blocking(move || Prompt::load(path)).await {
            Ok(Ok(prompt)) => prompt,
            Ok(Err(error)) => {
                tracing::warn!(instance = %request.instance, %error, "prompt not playable");
                return not_played(&error.to_string());
            }
            Err(_) => return not_played("its loader failed"),
        };
        let Ok(offer) = Sdp::parse(&self.offer_text) else {
            return not_played("the caller's SDP is unreadable");
        };
        let Some(audio) = offer.audio() else {
            return not_played("the caller offers no audio");
        };
        let Some(format) = audio
            .formats
            .iter()
            .find(|f| matches!(f.codec(), Codec::Pcmu | Codec::Pcma))
        else {
            tracing::warn!(call = %self.call_id, "prompt skipped: the caller offers no G.711");
            return not_played("the caller offers no G.711");
        };
        let Some(side) = &self.caller.dialog else {
            return not_played("no caller dialog");
        };
        let caller = side.dialog.clone();
        let caller_call_id = side.call_id.clone();
        let answer = early_answer(
            self.media.local_addr(MediaLeg::Caller),
            format.payload_type,
            format.codec(),
            audio.telephone_event_payload_type(),
        );
        let Some(answer) = self.answer_for_caller(&answer) else {
            return not_played("cannot describe the caller's leg");
        };
        self.phase = Phase::Ringing { alerted: true };
        self.caller.sent_sdp = Some(answer.clone());
        caller
            .ringing(Some(vec![sdp_type()]), Some(answer.into_bytes()))
            .ok();
        let playing = self
            .media
            .play_prompt(MediaLeg::Caller, &prompt, format.codec());
        tokio::pin!(playing);
        loop {
            tokio::select! {
                played = &mut playing => {
                    return match &played {
                        Ok(packets) => {
                            tracing::debug!(call = %self.call_id, instance = %request.instance, asset = %request.asset, packets, "prompt played");
                            (true, "played".into())
                        }
                        Err(error) => {
                            tracing::warn!(call = %self.call_id, instance = %request.instance, asset = %request.asset, %error, "prompt not played");
                            not_played(&error.to_string())
                        }
                    };
                }
                state = states.recv() => match state {
                    Some(DialogState::Terminated(id, _)) if id.call_id == caller_call_id => {
                        return (false, "not played to the end: the caller hung up".into())
                    }
                    None => return (false, "not played to the end: the caller hung up".into()),
                    _ => {}
                }
            }
        }
    }

    /// A re-INVITE or UPDATE from one side (hold, resume, a new address):
    /// the relay follows the new address; the answer is our earlier SDP for
    /// that side with the answering direction and a new session version.
    /// The other side is not bothered: the relay carries on.
    pub(super) async fn on_reoffer(
        &mut self,
        dialog_call_id: &str,
        offer: &rsipstack::sip::Request,
        handle: TransactionHandle,
    ) {
        let callee = self
            .callee()
            .filter(|&i| self.legs[i].call_id == dialog_call_id);
        let (side, previous, peer) = if self.is_caller_dialog(dialog_call_id) {
            (
                MediaLeg::Caller,
                self.caller.sent_sdp.clone(),
                self.caller.peer,
            )
        } else if let Some(index) = callee {
            (
                MediaLeg::Callee,
                Some(self.legs[index].sent_offer.clone()),
                self.legs[index].peer,
            )
        } else {
            self.refuse_request(
                handle,
                StatusCode::CallTransactionDoesNotExist,
                "re-offer outside the connected call",
            )
            .await;
            return;
        };
        let Some(previous) = previous else {
            self.refuse_request(
                handle,
                StatusCode::NotAcceptableHere,
                "re-offer before we sent an SDP",
            )
            .await;
            return;
        };
        let mut direction = Direction::SendRecv;
        if !offer.body.is_empty() {
            let Ok(sdp) = Sdp::parse_bytes(&offer.body) else {
                self.refuse_request(handle, StatusCode::NotAcceptableHere, "unreadable SDP")
                    .await;
                return;
            };
            if let Err(error) = self.try_point(side, &sdp, peer) {
                self.refuse_request_as(
                    handle,
                    StatusCode::NotAcceptableHere,
                    &format!("SDP names an address this peer may not use: {error}"),
                    Severity::Warn,
                )
                .await;
                return;
            }
            if let Some(audio) = sdp.audio() {
                direction = audio.direction.answer();
                self.rekey(side, callee, audio);
            }
        }
        match reanswer(&previous, direction) {
            Ok(answer) => {
                tracing::debug!(call = %self.call_id, side = ?side, %direction, "re-offer answered");
                match side {
                    MediaLeg::Caller => self.caller.sent_sdp = Some(answer.clone()),
                    MediaLeg::Callee => {
                        if let Some(index) = callee {
                            self.legs[index].sent_offer = answer.clone();
                        }
                    }
                }
                handle
                    .respond(
                        StatusCode::OK,
                        Some(vec![sdp_type()]),
                        Some(answer.into_bytes()),
                    )
                    .await
                    .ok();
            }
            Err(error) => {
                self.refuse_request(
                    handle,
                    StatusCode::NotAcceptableHere,
                    &format!("cannot answer the re-offer: {error}"),
                )
                .await;
            }
        }
    }
}

impl Call {
    /// A re-offer on an SRTP leg may carry a new key of the party (same
    /// suite as ours; the answer keeps our key): the relay takes it.
    fn rekey(
        &mut self,
        side: MediaLeg,
        callee: Option<usize>,
        audio: &callhost_media::sdp::AudioStream,
    ) {
        let ours = match side {
            MediaLeg::Caller => match &self.caller.security {
                LegSecurity::Srtp { ours, .. } => ours.clone(),
                LegSecurity::Plain => return,
            },
            MediaLeg::Callee => {
                let Some(LegSecurity::Srtp { ours, .. }) =
                    callee.and_then(|index| self.legs[index].negotiated.clone())
                else {
                    return;
                };
                ours
            }
        };
        let Some(theirs) = audio
            .crypto
            .iter()
            .filter_map(|value| CryptoAttribute::parse(value).ok())
            .find(|theirs| theirs.key.suite == ours.key.suite)
        else {
            tracing::warn!(call = %self.call_id, ?side, "re-offer without a key of our suite: the old key stays");
            return;
        };
        let security = LegSecurity::Srtp {
            ours,
            theirs: theirs.key,
        };
        self.media.set_srtp(side, security.keys());
        match side {
            MediaLeg::Caller => self.caller.security = security,
            MediaLeg::Callee => {
                if let Some(index) = callee {
                    self.legs[index].negotiated = Some(security);
                }
            }
        }
    }
}

/// Our own SDP answer for early media (a prompt before anyone answered):
/// the relay's caller side, the caller's G.711 choice and its DTMF type.
pub(super) fn early_answer(
    relay: SocketAddr,
    payload_type: u8,
    codec: Codec,
    dtmf: Option<u8>,
) -> String {
    let family = if relay.is_ipv6() { "IP6" } else { "IP4" };
    let ip = relay.ip();
    let name = if codec == Codec::Pcma { "PCMA" } else { "PCMU" };
    let mut sdp = format!(
        "v=0\r\no=callhost {session} 1 IN {family} {ip}\r\ns=callhost\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {payload_type}",
        session = rand::random::<u32>(),
        port = relay.port(),
    );
    if let Some(dtmf) = dtmf {
        sdp.push_str(&format!(" {dtmf}"));
    }
    sdp.push_str(&format!("\r\na=rtpmap:{payload_type} {name}/8000\r\n"));
    if let Some(dtmf) = dtmf {
        sdp.push_str(&format!(
            "a=rtpmap:{dtmf} telephone-event/8000\r\na=fmtp:{dtmf} 0-16\r\n"
        ));
    }
    sdp.push_str("a=sendrecv\r\n");
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_answers_are_sdp_the_media_crate_reads() {
        let text = early_answer(
            "127.0.0.1:30002".parse().unwrap(),
            8,
            Codec::Pcma,
            Some(101),
        );
        let sdp = Sdp::parse(&text).unwrap();
        assert_eq!(
            sdp.audio_endpoint().unwrap(),
            "127.0.0.1:30002".parse().unwrap()
        );
        let audio = sdp.audio().unwrap();
        assert_eq!(audio.telephone_event_payload_type(), Some(101));
        assert_eq!(audio.format(8).unwrap().codec(), Codec::Pcma);
    }
}
