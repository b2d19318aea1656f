//! The callee legs: ringing every device of every ring, the first answer,
//! cancelling the rest, and how a leg's failure becomes the caller's.

use std::time::{Duration, Instant};

use callhost_media::relay::Leg as MediaLeg;
use callhost_media::sdp::{describe_leg, LegDescription};
use callhost_pbx::engine::{CallOutcome, Engine, Ring};
use callhost_plugin_abi::EventKind;
use rsipstack::dialog::dialog::TerminatedReason;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, HostWithPort, StatusCode, Transport, Uri};
use rsipstack::transport::SipAddr;
use tokio::task::JoinHandle;

use super::{contact_uri, events, Call, Phase};
use crate::identity::{safe_display, safe_number};
use crate::presence::PresenceGuard;
use crate::server::{DialogPeer, DialogRoute};
use crate::srtp::{LegSecurity, OfferedSecurity};

/// A callee leg (or, in a transfer by the caller's side, a leg ringing on
/// the caller's side of the relay).
pub(super) struct Leg {
    pub dialog: InviteDialog,
    pub call_id: String,
    /// The directory user it rings, `None` for a number on the trunk.
    pub user: Option<String>,
    /// The number or user id, for logs and records.
    pub target: String,
    /// The relay side it is on.
    pub side: MediaLeg,
    /// The SDP we offered it (our side of its session, for re-INVITEs).
    pub sent_offer: String,
    /// The SRTP we offered it; what it answered decides its leg.
    pub security: OfferedSecurity,
    /// Its leg's SRTP once it answered.
    pub negotiated: Option<LegSecurity>,
    pub state: LegState,
    /// Who may send its in-dialog requests and name its media addresses.
    pub peer: DialogPeer,
    /// The user counted in a call while the leg is connected.
    pub presence: Option<PresenceGuard>,
    /// The leg's INVITE transaction, done once the final response came (and
    /// a non-2xx one was ACKed); `None` for a dialog taken from another call.
    pub invite: Option<JoinHandle<InviteAsyncResult>>,
}

/// Where one leg is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LegState {
    Ringing,
    Connected,
    /// Stopped before it answered (another phone answered, the caller gave
    /// up); a late answer gets a BYE.
    Cancelled,
    /// Refused or failed with this status.
    Failed(StatusCode),
    /// Was connected and is no longer part of the call (transferred away,
    /// or its dialog became the caller's side); later states of its dialog
    /// are not news.
    Released,
}

impl Leg {
    pub fn is_live(&self) -> bool {
        matches!(self.state, LegState::Ringing | LegState::Connected)
    }
}

/// What new legs offer and on which relay side they ring.
pub(super) struct LegPlan {
    pub side: MediaLeg,
    /// The SDP to offer (rewritten to the relay's `side`).
    pub offer: String,
    /// The calling number the new legs show.
    pub from_number: String,
}

impl Call {
    /// Starts a B leg for every device of every ring not rung yet.
    pub(super) async fn ring(&mut self, rings: &[Ring]) {
        let plan = LegPlan {
            side: MediaLeg::Callee,
            offer: self.offer_text.clone(),
            from_number: self.caller.number.clone(),
        };
        self.ring_with(rings, &plan).await;
    }

    pub(super) async fn ring_with(&mut self, rings: &[Ring], plan: &LegPlan) {
        let before = self.legs.len();
        for ring in rings {
            let key = format!("{:?}/{}", ring.user, ring.number);
            if !self.rung.insert(key) {
                continue;
            }
            let targets: Vec<(Uri, SipAddr, Option<String>, DialogPeer)> = match (
                &ring.user,
                ring.mobile,
            ) {
                (Some(user), false) => self
                    .shared
                    .live
                    .registrar
                    .bindings(user)
                    .into_iter()
                    .filter_map(|binding| {
                        let uri = Uri::try_from(binding.contact.as_str()).ok()?;
                        Some((
                            uri,
                            SipAddr::new(
                                binding.transport.stack(),
                                HostWithPort::from(binding.source),
                            ),
                            Some(user.clone()),
                            DialogPeer::Host(binding.source.ip()),
                        ))
                    })
                    .collect(),
                _ => match &self.shared.config.trunk {
                    Some(trunk) => {
                        let number = safe_number(&ring.number);
                        match Uri::try_from(format!("sip:{number}@{}", trunk.peer).as_str()) {
                            Ok(uri) => vec![(
                                uri,
                                SipAddr::new(
                                    trunk.transport.outgoing(),
                                    HostWithPort::from(trunk.peer),
                                ),
                                None,
                                DialogPeer::Trunk,
                            )],
                            Err(_) => Vec::new(),
                        }
                    }
                    None => {
                        tracing::warn!(number = %ring.number, "no SIP trunk configured: outside number not rung");
                        Vec::new()
                    }
                },
            };
            let legs = self.legs.len();
            for (uri, destination, user, peer) in targets {
                self.start_leg(ring, uri, destination, user, peer, plan);
            }
            if self.legs.len() > legs {
                self.log.rang(ring);
            }
        }
        if self.legs.len() > before && self.ring_deadline.is_none() {
            let timeout = Duration::from_secs(self.shared.config.limits.ring_timeout_seconds);
            self.ring_deadline = Some(Instant::now() + timeout);
        }
    }

    fn start_leg(
        &mut self,
        ring: &Ring,
        callee: Uri,
        destination: SipAddr,
        user: Option<String>,
        peer: DialogPeer,
        plan: &LegPlan,
    ) {
        let leg_call_id = format!("{}@callhost", hex::encode(rand::random::<[u8; 12]>()));
        let relay_side = self.media.local_addr(plan.side);
        let transport = destination.r#type.unwrap_or(Transport::Udp);
        let srtp = &self.shared.config.srtp;
        let security = match OfferedSecurity::for_callee(
            srtp.policy(user.as_deref()),
            srtp.keys_allowed(transport),
            transport,
        ) {
            Ok(security) => security,
            Err(refusal) => {
                tracing::warn!(call = %self.call_id, target = %ring.number, %refusal, "not rung");
                return;
            }
        };
        let crypto = security.crypto_lines();
        let offer = match describe_leg(
            &plan.offer,
            &LegDescription {
                address: relay_side.ip(),
                port: relay_side.port(),
                protocol: Some(security.protocol),
                crypto: &crypto,
            },
        ) {
            Ok(offer) => offer,
            Err(error) => {
                tracing::warn!(%error, "cannot rewrite the offer");
                return;
            }
        };
        if !security.offers.is_empty() {
            self.media.await_srtp(plan.side);
        }
        let host = self.shared.local;
        let from_number = safe_number(&plan.from_number);
        let Ok(caller_uri) = Uri::try_from(format!("sip:{from_number}@{host}").as_str()) else {
            return;
        };
        // The display the modules decided, in From and P-Asserted-Identity,
        // reduced to characters that cannot break either header.
        let display = safe_display(&ring.display);
        let asserted = format!("\"{display}\" <sip:{from_number}@{host}>");
        let sent_offer = offer.clone();
        let contact = contact_uri(
            &self.shared,
            Some(&from_number),
            destination.r#type.unwrap_or(Transport::Udp),
            callee.scheme == Some(rsipstack::sip::Scheme::Sips),
        );
        let option = InviteOption {
            caller_display_name: Some(display),
            caller: caller_uri,
            callee,
            destination: Some(destination),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            contact,
            headers: Some(vec![Header::PAssertedIdentity(asserted.into())]),
            call_id: Some(leg_call_id.clone()),
            ..Default::default()
        };
        match self
            .shared
            .dialogs
            .do_invite_async(option, self.state_sender.clone())
        {
            Ok((dialog, invite)) => {
                tracing::debug!(call = %self.call_id, leg = %leg_call_id, target = %ring.number, "ringing");
                self.shared.routes().insert(
                    leg_call_id.clone(),
                    DialogRoute {
                        call: self.commands.clone(),
                        peer,
                    },
                );
                self.legs.push(Leg {
                    dialog,
                    call_id: leg_call_id,
                    target: user.clone().unwrap_or_else(|| ring.number.clone()),
                    user,
                    side: plan.side,
                    sent_offer,
                    security,
                    negotiated: None,
                    state: LegState::Ringing,
                    peer,
                    presence: None,
                    invite: Some(invite),
                });
            }
            Err(error) => tracing::warn!(%error, target = %ring.number, "cannot ring"),
        }
    }

    pub(super) fn leg_index(&self, call_id: &str) -> Option<usize> {
        self.legs.iter().position(|leg| leg.call_id == call_id)
    }

    pub(super) fn live_legs(&self) -> usize {
        self.legs.iter().filter(|leg| leg.is_live()).count()
    }

    pub(super) fn live_legs_on(&self, side: MediaLeg) -> usize {
        self.legs
            .iter()
            .filter(|leg| leg.is_live() && leg.side == side)
            .count()
    }

    /// Cancels (or, if answered meanwhile, hangs up) every live leg but
    /// `keep`.
    pub(super) fn drop_legs(&mut self, keep: Option<usize>) {
        for (index, leg) in self.legs.iter_mut().enumerate() {
            if Some(index) == keep || !leg.is_live() {
                continue;
            }
            cancel_leg(leg);
        }
    }

    /// As [`Self::drop_legs`], but returns only once every CANCEL went out:
    /// for a stopping host, which would drop a task left to send it.
    pub(super) async fn drop_legs_and_wait(&mut self, keep: Option<usize>) {
        let cancels: Vec<_> = self
            .legs
            .iter_mut()
            .enumerate()
            .filter(|(index, leg)| Some(*index) != keep && leg.is_live())
            .map(|(_, leg)| {
                let cancel = cancelled(leg);
                let invite = leg.invite.take();
                async move {
                    cancel.await;
                    // The 487 still has to be ACKed, which its transaction
                    // does only while the endpoint runs.
                    if let Some(invite) = invite {
                        tokio::time::timeout(FINAL_AFTER_CANCEL, invite).await.ok();
                    }
                }
            })
            .collect();
        futures::future::join_all(cancels).await;
    }

    /// Cancels the live legs on `side` only.
    pub(super) fn drop_legs_on(&mut self, side: MediaLeg) {
        for leg in self
            .legs
            .iter_mut()
            .filter(|l| l.is_live() && l.side == side)
        {
            cancel_leg(leg);
        }
    }

    /// The caller's status when every leg failed.
    pub(super) fn failure_status(&self) -> StatusCode {
        let failures: Vec<&StatusCode> = self
            .legs
            .iter()
            .filter_map(|l| match &l.state {
                LegState::Failed(status) => Some(status),
                _ => None,
            })
            .collect();
        if failures
            .iter()
            .any(|s| **s == StatusCode::BusyHere || **s == StatusCode::BusyEverywhere)
        {
            StatusCode::BusyHere
        } else if failures.iter().any(|s| **s == StatusCode::Decline) {
            StatusCode::Decline
        } else {
            StatusCode::TemporarilyUnavailable
        }
    }

    /// A leg is ringing (180) or sends early media (183 with SDP): the
    /// caller hears it while nobody answered.
    pub(super) fn on_early(&mut self, call_id: &str, response: &rsipstack::sip::Response) {
        let Phase::Ringing { alerted } = self.phase else {
            return;
        };
        let Some(index) = self.leg_index(call_id) else {
            return;
        };
        if self.legs[index].state != LegState::Ringing {
            return;
        }
        let Some(side) = &self.caller.dialog else {
            return;
        };
        let caller = side.dialog.clone();
        if response.body.is_empty() {
            if !alerted {
                self.phase = Phase::Ringing { alerted: true };
                caller.ringing(None, None).ok();
            }
            return;
        }
        if let Some(answer) = self.relay_answer(&response.body, index) {
            self.phase = Phase::Ringing { alerted: true };
            self.caller.sent_sdp = Some(String::from_utf8_lossy(&answer).into_owned());
            caller
                .ringing(Some(vec![super::sdp::sdp_type()]), Some(answer))
                .ok();
        }
    }

    /// A leg answered (or a connected one is confirmed again after an
    /// in-dialog request).
    pub(super) fn on_confirmed(&mut self, call_id: &str, response: &rsipstack::sip::Response) {
        if self.is_caller_dialog(call_id) {
            return;
        }
        let Some(index) = self.leg_index(call_id) else {
            return;
        };
        match self.legs[index].state {
            // Back to confirmed after a REFER or re-INVITE: not an answer.
            LegState::Connected | LegState::Released => return,
            LegState::Cancelled | LegState::Failed(_) => {
                // A late answer of a phone we had stopped.
                let dialog = self.legs[index].dialog.clone();
                tokio::spawn(async move { dialog.bye().await.ok() });
                return;
            }
            LegState::Ringing => {}
        }
        match self.leg_answer_security(index, &response.body) {
            Ok(security) => self.legs[index].negotiated = Some(security),
            Err(refusal) => {
                // Its dialog ends with the BYE; the caller hears of it as of
                // any phone that failed.
                tracing::warn!(call = %self.call_id, leg = %self.legs[index].target, %refusal, "answer refused");
                let dialog = self.legs[index].dialog.clone();
                tokio::spawn(async move { dialog.bye().await.ok() });
                return;
            }
        }
        match self.phase {
            Phase::CallerTransferring { callee } if self.legs[index].side == MediaLeg::Caller => {
                self.caller_side_answered(index, callee, response);
            }
            Phase::Ringing { .. } | Phase::CalleeTransferring => self.answer(index, response),
            Phase::Originating => self.origin_answered(index, response),
            Phase::Connected { .. } | Phase::CallerTransferring { .. } | Phase::OriginAnswered => {
                // A second answer (forked or late): not wanted.
                self.legs[index].state = LegState::Cancelled;
                let dialog = self.legs[index].dialog.clone();
                tokio::spawn(async move { dialog.bye().await.ok() });
            }
        }
    }

    /// Leg `index` answered: connect it.
    fn answer(&mut self, index: usize, response: &rsipstack::sip::Response) {
        let transfer_target = self.phase == Phase::CalleeTransferring;
        self.phase = Phase::Connected { callee: index };
        self.answered_at = Some(Instant::now());
        self.no_answer_at = None;
        self.ring_deadline = None;
        let leg = &mut self.legs[index];
        leg.state = LegState::Connected;
        leg.presence = leg
            .user
            .as_deref()
            .map(|user| PresenceGuard::enter(&self.shared.live, user));
        self.drop_legs(Some(index));
        let leg = &self.legs[index];
        tracing::debug!(call = %self.call_id, answered_by = %leg.target, "answered");
        // By number, so the party resolves to the user with its name (a
        // user id is no number and would resolve to nobody).
        let answering = self.number_of(leg);
        events::emit(
            self.hooks.as_ref(),
            &self.call_id,
            EventKind::ANSWERED,
            Some(self.engine.party(&answering)),
            "",
        );
        if transfer_target {
            // A blind transfer's target joined the call (as an attended
            // transfer's partner does).
            let number = self.number_of(&self.legs[index]);
            events::emit(
                self.hooks.as_ref(),
                &self.call_id,
                EventKind::TRANSFERRED,
                Some(self.engine.party(&number)),
                "blind",
            );
            // A transfer target answered: the caller keeps its media path.
            if self.relay_answer(&response.body, index).is_none() {
                tracing::warn!(call = %self.call_id, "transfer target answered without usable SDP");
            }
            return;
        }
        self.callee_sdp = std::str::from_utf8(&response.body).ok().map(str::to_string);
        let Some(side) = &self.caller.dialog else {
            return;
        };
        let caller = side.dialog.clone();
        match self.relay_answer(&response.body, index) {
            Some(answer) => {
                self.caller.sent_sdp = Some(String::from_utf8_lossy(&answer).into_owned());
                caller
                    .accept(Some(vec![super::sdp::sdp_type()]), Some(answer))
                    .ok();
            }
            None => {
                tracing::warn!(call = %self.call_id, "answer without usable SDP");
                caller.accept(None, None).ok();
            }
        }
    }
}

/// How long a stopping host waits for a cancelled leg's final response; a
/// phone that never sends one is not worth holding the shutdown for.
const FINAL_AFTER_CANCEL: Duration = Duration::from_secs(2);

/// Stops one leg: CANCEL while it rings, BYE if it answered meanwhile.
fn cancel_leg(leg: &mut Leg) {
    tokio::spawn(cancelled(leg));
}

/// Marks `leg` cancelled (its user free again) and returns the CANCEL (or
/// the hang-up, where CANCEL no longer applies) still to be sent.
fn cancelled(leg: &mut Leg) -> impl std::future::Future<Output = ()> + Send + 'static {
    leg.state = LegState::Cancelled;
    leg.presence = None;
    let dialog = leg.dialog.clone();
    async move {
        if dialog.cancel().await.is_err() {
            dialog.hangup().await.ok();
        }
    }
}

/// The status a failed leg ended with.
pub(super) fn status_of(reason: &TerminatedReason) -> StatusCode {
    match reason {
        TerminatedReason::UasBusy => StatusCode::BusyHere,
        TerminatedReason::UasDecline => StatusCode::Decline,
        TerminatedReason::UasOther(status)
        | TerminatedReason::UacOther(status)
        | TerminatedReason::ProxyError(status) => status.clone(),
        _ => StatusCode::TemporarilyUnavailable,
    }
}

/// How long the call rings before the no-answer forward, if the user it
/// rings (the last hop) has one.
pub(super) fn no_answer_delay(engine: &Engine, outcome: &CallOutcome) -> Option<Duration> {
    let user = outcome.rang.iter().find_map(|ring| ring.user.as_deref())?;
    let state = engine.user_state(user);
    state.forward_no_answer.as_ref()?;
    Some(Duration::from_secs(u64::from(
        state.no_answer_seconds.max(1),
    )))
}
