//! Transfers: REFER from either side, blind (the engine's blind transfer
//! by the transferring user, under the same dial policy as a call of that
//! user) or attended (RFC 3891 Replaces, honoured only when it names one of
//! our dialogs exactly and comes from that dialog's own party).

use std::ops::ControlFlow;
use std::time::Duration;

use callhost_media::relay::Leg as MediaLeg;
use callhost_media::sdp::{describe_leg, LegDescription, Sdp};
use callhost_pbx::engine::{CallOutcome, CallRequest, Outcome, Via};
use callhost_plugin_abi::{EventKind, PartyKind};
use rsipstack::dialog::dialog::{DialogState, TransactionHandle};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::StatusCode;

use super::legs::{Leg, LegPlan, LegState};
use super::{events, Call, CallCommand, End, Flow, Partner, Phase, SideDialog};
use crate::policy::Dialler;
use crate::presence::PresenceGuard;
use crate::refer::{parse_refer_to, ReferTarget, Replaces};
use crate::server::{DialogPeer, DialogRoute, Severity};
use crate::srtp::{LegSecurity, OfferedSecurity};

/// Why a call does not hand over its party: not a hijack attempt, just late.
const NOT_CONNECTED: &str = "the replaced call is not connected";

/// Which of a call's two dialogs an attended transfer elsewhere replaces.
#[derive(Debug, Clone, Copy)]
enum Replaced {
    /// The caller's dialog: the callee is handed over.
    Caller,
    /// The connected callee's dialog: the caller is handed over.
    Callee(usize),
}

/// The dialog `id` is the one `replaces` names: the Call-ID and both tags,
/// in either orientation (phones differ in whose view they write).
fn names_dialog(id: &DialogId, replaces: &Replaces) -> bool {
    id.call_id == replaces.call_id
        && ((id.local_tag == replaces.to_tag && id.remote_tag == replaces.from_tag)
            || (id.local_tag == replaces.from_tag && id.remote_tag == replaces.to_tag))
}

impl Call {
    /// A REFER from one side of the connected call.
    pub(super) async fn on_refer(
        &mut self,
        id: &DialogId,
        refer: &rsipstack::sip::Request,
        handle: TransactionHandle,
    ) -> Flow {
        let Phase::Connected { callee } = self.phase else {
            self.refuse_request(
                handle,
                StatusCode::CallTransactionDoesNotExist,
                "the call is not connected",
            )
            .await;
            return ControlFlow::Continue(());
        };
        let side = if self.legs[callee].call_id == id.call_id {
            MediaLeg::Callee
        } else if self.is_caller_dialog(&id.call_id) {
            MediaLeg::Caller
        } else {
            self.refuse_request(
                handle,
                StatusCode::CallTransactionDoesNotExist,
                "not a dialog of the connected call",
            )
            .await;
            return ControlFlow::Continue(());
        };
        let target = match refer.refer_to_header().map(|h| parse_refer_to(h.value())) {
            Some(Ok(target)) => target,
            Some(Err(error)) => {
                self.refuse_request(handle, StatusCode::BadRequest, &error.to_string())
                    .await;
                return ControlFlow::Continue(());
            }
            None => {
                self.refuse_request(handle, StatusCode::BadRequest, "REFER without Refer-To")
                    .await;
                return ControlFlow::Continue(());
            }
        };
        let number = match target {
            ReferTarget::Attended(replaces) => {
                handle.reply(StatusCode::Accepted).await.ok();
                self.attended_transfer(side, callee, &replaces).await;
                return ControlFlow::Continue(());
            }
            ReferTarget::Blind(number) => number,
        };
        let transferor = match side {
            MediaLeg::Callee => self.legs[callee].user.clone(),
            MediaLeg::Caller => self.caller.user.clone(),
        };
        let dialler = match &transferor {
            Some(user) => Dialler::User(user),
            None => Dialler::Trunk,
        };
        let target = self.engine.party(&number);
        if target.kind == PartyKind::Unknown {
            self.refuse_request(
                handle,
                StatusCode::NotFound,
                &format!("unknown number {number:?}"),
            )
            .await;
            return ControlFlow::Continue(());
        }
        if let Err(refusal) = self.shared.policy.check_transfer(dialler, &number, &target) {
            self.refuse_request(handle, StatusCode::Forbidden, &refusal.to_string())
                .await;
            return ControlFlow::Continue(());
        }
        handle.reply(StatusCode::Accepted).await.ok();
        let ended = match side {
            MediaLeg::Callee => self.blind_transfer(callee, &number).await,
            MediaLeg::Caller => self.caller_side_transfer(callee, &number).await,
        };
        match ended {
            Some(end) => ControlFlow::Break(end),
            None => ControlFlow::Continue(()),
        }
    }

    /// The number a leg's party has (a user's primary number).
    pub(super) fn number_of(&self, leg: &Leg) -> String {
        leg.user
            .as_deref()
            .and_then(|user| self.engine.directory().user(user))
            .map(|user| user.primary_number().to_string())
            .unwrap_or_else(|| leg.target.clone())
    }

    /// The answered callee (leg `index`) sent the caller on to `target`
    /// (RD8): the engine sets the transfer up as a blind transfer by that
    /// user, the transferor is told (NOTIFY) and released, and the target's
    /// phones ring with the caller's media path unchanged. Returns how the
    /// call ended if it ended.
    async fn blind_transfer(&mut self, index: usize, target: &str) -> Option<End> {
        let by = self.legs[index]
            .user
            .clone()
            .unwrap_or_else(|| self.legs[index].target.clone());
        let from = self.caller.number.clone();
        let external = self.request.external_caller;
        let next = self
            .place_blind_transfer(&from, target, &by, external)
            .await;
        let accepted = next.outcome == Outcome::Ringing;
        release_transferor(self.legs[index].dialog.clone(), accepted);
        self.legs[index].state = LegState::Released;
        self.legs[index].presence = None;
        self.phase = Phase::CalleeTransferring;
        let rings = next.rang.clone();
        self.outcome = next;
        if !accepted {
            self.bye_caller().await;
            return Some(End::HungUp("transfer failed"));
        }
        let before = self.legs.len();
        self.ring(&rings).await;
        if self.legs.len() == before {
            self.bye_caller().await;
            return Some(End::HungUp("transfer target not reachable"));
        }
        None
    }

    /// Asks the engine (and so the modules) where `from`, sent on by `by`,
    /// rings at `target`: the engine's blind transfer.
    async fn place_blind_transfer(
        &mut self,
        from: &str,
        target: &str,
        by: &str,
        external_caller: bool,
    ) -> CallOutcome {
        // A hop of the same call: modules see one call id from the first
        // ring to the hangup, the transfer included.
        let transfer = CallRequest {
            call_id: self.call_id.clone(),
            from: from.to_string(),
            to: target.to_string(),
            via: Via::BlindTransfer,
            by: Some(by.to_string()),
            no_answer: false,
            external_caller,
        };
        let next = self.engine.place(&transfer, self.hooks.as_ref()).await;
        tracing::debug!(call = %self.call_id, from = %from, by = %by, to = %target, outcome = ?next.outcome, "blind transfer");
        // The call's line keeps what the call did before the transfer.
        self.log.keep(&self.outcome);
        self.log.transfer("blind", by, target);
        next
    }

    /// The caller's side sent the answered callee on to `target` (REFER
    /// from the caller, a blind transfer by the caller): the target rings on
    /// the relay's caller side with the callee's SDP as the offer, and takes
    /// the caller's place when it answers.
    async fn caller_side_transfer(&mut self, index: usize, target: &str) -> Option<End> {
        let transferee_number = self.number_of(&self.legs[index]);
        let external = self.legs[index].user.is_none();
        let by = self
            .caller
            .user
            .clone()
            .unwrap_or_else(|| self.caller.number.clone());
        let next = self
            .place_blind_transfer(&transferee_number, target, &by, external)
            .await;
        let accepted = next.outcome == Outcome::Ringing;
        // The transferor's dialog is no longer the caller's side: its
        // hangup does not end the call.
        if let Some(side) = self.caller.dialog.take() {
            release_transferor(side.dialog.clone(), accepted);
            self.released.push(side.dialog);
        }
        self.caller.user = None;
        self.caller.presence = None;
        self.phase = Phase::CallerTransferring { callee: index };
        let rings = next.rang.clone();
        self.outcome = next;
        let release_callee = |call: &Call| {
            let dialog = call.legs[index].dialog.clone();
            tokio::spawn(async move { dialog.bye().await.ok() });
        };
        let Some(offer) = self.callee_sdp.clone().filter(|_| accepted) else {
            release_callee(self);
            return Some(End::HungUp("transfer failed"));
        };
        let plan = LegPlan {
            side: MediaLeg::Caller,
            offer,
            from_number: transferee_number,
        };
        let before = self.legs.len();
        self.ring_with(&rings, &plan).await;
        if self.legs.len() == before {
            release_callee(self);
            return Some(End::HungUp("transfer target not reachable"));
        }
        None
    }

    /// The target of a caller-side transfer answered: it is the caller's
    /// side from now on.
    pub(super) fn caller_side_answered(
        &mut self,
        index: usize,
        callee: usize,
        response: &rsipstack::sip::Response,
    ) {
        tracing::debug!(call = %self.call_id, answered_by = %self.legs[index].target, "transfer target answered");
        self.take_caller_side(index, response);
        self.phase = Phase::Connected { callee };
        self.ring_deadline = None;
        // Other phones of the target stop ringing.
        self.drop_legs_on(MediaLeg::Caller);
        events::emit(
            self.hooks.as_ref(),
            &self.call_id,
            EventKind::TRANSFERRED,
            Some(self.engine.party(&self.caller.number)),
            "blind",
        );
    }

    /// Leg `index`, which rang on the caller's side of the relay and
    /// answered, becomes the call's caller side (its dialog, media, SRTP,
    /// user and presence).
    pub(super) fn take_caller_side(&mut self, index: usize, response: &rsipstack::sip::Response) {
        self.legs[index].state = LegState::Released;
        let leg = &self.legs[index];
        if let Ok(sdp) = Sdp::parse_bytes(&response.body) {
            self.point(MediaLeg::Caller, &sdp, leg.peer);
        }
        // Its leg's SRTP, as it answered our offer, is the caller side's now.
        let security = leg.negotiated.clone().unwrap_or(LegSecurity::Plain);
        self.media.set_srtp(MediaLeg::Caller, security.keys());
        self.caller.protocol = leg.security.protocol.to_string();
        self.caller.security = security;
        let leg = &self.legs[index];
        let number = self.number_of(leg);
        let leg = &self.legs[index];
        self.caller.dialog = Some(SideDialog {
            dialog: leg.dialog.clone(),
            call_id: leg.call_id.clone(),
        });
        self.caller.sent_sdp = Some(leg.sent_offer.clone());
        self.caller.peer = leg.peer;
        self.caller.number = number;
        self.caller.user = leg.user.clone();
        self.caller.presence = leg
            .user
            .as_deref()
            .map(|user| PresenceGuard::enter(&self.shared.live, user));
    }

    /// A command from another call.
    pub(super) fn on_command(&mut self, command: CallCommand) -> Flow {
        let CallCommand::HandOver {
            replaces,
            transferor,
            states,
            reply,
        } = command
        else {
            return ControlFlow::Continue(());
        };
        let replaced = match self.replaced(&replaces, transferor.as_deref()) {
            Ok(replaced) => replaced,
            Err(why) => {
                let _ = reply.send(Err(why));
                return ControlFlow::Continue(());
            }
        };
        let (partner, replaced_dialog) = self.take_partner(replaced);
        let partner_call_id = partner.call_id.clone();
        match reply.send(Ok(partner)) {
            Ok(()) => {
                // RFC 3891: the replaced dialog ends. Not awaited: the
                // partner's states must be forwarded at once, however long
                // the transferor takes to answer.
                tokio::spawn(async move { replaced_dialog.bye().await.ok() });
                ControlFlow::Break(End::HandedOver {
                    states,
                    partner_call_id,
                })
            }
            Err(partner) => {
                // The asking call gave up: the partner stays here.
                if let Ok(partner) = partner {
                    self.put_back(replaced, partner);
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// Which of this call's dialogs `replaces` names, if `transferor` is
    /// the party of that dialog.
    fn replaced(
        &self,
        replaces: &Replaces,
        transferor: Option<&str>,
    ) -> Result<Replaced, &'static str> {
        let Phase::Connected { callee } = self.phase else {
            return Err(NOT_CONNECTED);
        };
        let caller = self.caller.dialog.as_ref().ok_or(NOT_CONNECTED)?;
        let (replaced, party) = if names_dialog(&caller.dialog.id(), replaces) {
            (Replaced::Caller, self.caller.user.as_deref())
        } else if names_dialog(&self.legs[callee].dialog.id(), replaces) {
            (Replaced::Callee(callee), self.legs[callee].user.as_deref())
        } else {
            return Err("Replaces does not name a dialog of that call exactly");
        };
        if party.is_none() || party != transferor {
            return Err("the REFER is not from the replaced dialog's party");
        }
        Ok(replaced)
    }

    /// The party across from the `replaced` dialog, with its presence, and
    /// the replaced dialog itself.
    fn take_partner(&mut self, replaced: Replaced) -> (Partner, InviteDialog) {
        match replaced {
            Replaced::Caller => {
                let callee = match self.phase {
                    Phase::Connected { callee } => callee,
                    _ => unreachable!("checked by `replaced`"),
                };
                let number = self.number_of(&self.legs[callee]);
                let leg = &mut self.legs[callee];
                let partner = Partner {
                    dialog: leg.dialog.clone(),
                    call_id: leg.call_id.clone(),
                    user: leg.user.clone(),
                    number,
                    peer: leg.peer,
                    presence: leg.presence.take(),
                };
                let side = self.caller.dialog.as_ref().expect("checked by `replaced`");
                (partner, side.dialog.clone())
            }
            Replaced::Callee(callee) => {
                let side = self.caller.dialog.as_ref().expect("checked by `replaced`");
                let partner = Partner {
                    dialog: side.dialog.clone(),
                    call_id: side.call_id.clone(),
                    user: self.caller.user.clone(),
                    number: self.caller.number.clone(),
                    peer: self.caller.peer,
                    presence: self.caller.presence.take(),
                };
                (partner, self.legs[callee].dialog.clone())
            }
        }
    }

    fn put_back(&mut self, replaced: Replaced, partner: Partner) {
        match replaced {
            Replaced::Caller => {
                if let Phase::Connected { callee } = self.phase {
                    self.legs[callee].presence = partner.presence;
                }
            }
            Replaced::Callee(_) => self.caller.presence = partner.presence,
        }
    }

    /// An attended transfer (REFER with Replaces, RFC 3891) from this call's
    /// `side`: the transferor's other call hands over its party, who takes
    /// the transferor's place here (re-INVITEd onto this call's relay).
    async fn attended_transfer(&mut self, side: MediaLeg, callee: usize, replaces: &Replaces) {
        let (transferor, transferor_user) = match side {
            MediaLeg::Callee => (
                self.legs[callee].dialog.clone(),
                self.legs[callee].user.clone(),
            ),
            MediaLeg::Caller => match &self.caller.dialog {
                Some(side) => (side.dialog.clone(), self.caller.user.clone()),
                None => return,
            },
        };
        let refuse = |transferor: InviteDialog| {
            tokio::spawn(async move {
                transferor
                    .notify_refer(
                        StatusCode::CallTransactionDoesNotExist,
                        "terminated;reason=noresource",
                    )
                    .await
                    .ok();
            });
        };
        let other_call = self
            .shared
            .routes()
            .get(&replaces.call_id)
            .map(|route| route.call.clone())
            .filter(|other| !other.same_channel(&self.commands));
        // A refused transfer is logged once, here, with the reason.
        let refused = |why: &str, severity: Severity| match severity {
            Severity::Info => {
                tracing::info!(call = %self.call_id, replaced = replaces.call_id.as_str(), reason = %why, "attended transfer refused")
            }
            Severity::Warn => {
                tracing::warn!(call = %self.call_id, replaced = replaces.call_id.as_str(), reason = %why, "attended transfer refused")
            }
        };
        let Some(other_call) = other_call else {
            refused("no other call with that dialog", Severity::Info);
            refuse(transferor);
            return;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = other_call.send(CallCommand::HandOver {
            replaces: replaces.clone(),
            transferor: transferor_user,
            states: self.state_sender.clone(),
            reply,
        });
        let partner = match (
            asked,
            tokio::time::timeout(Duration::from_secs(2), answer).await,
        ) {
            (Ok(()), Ok(Ok(Ok(partner)))) => partner,
            (Ok(()), Ok(Ok(Err(why)))) => {
                // Naming another's dialog is what a hijack looks like.
                let severity = if why == NOT_CONNECTED {
                    Severity::Info
                } else {
                    Severity::Warn
                };
                refused(why, severity);
                refuse(transferor);
                return;
            }
            _ => {
                refused("the other call did not hand over", Severity::Info);
                refuse(transferor);
                return;
            }
        };
        let party = partner
            .user
            .as_deref()
            .unwrap_or(&partner.number)
            .to_string();
        tracing::debug!(call = %self.call_id, ?side, partner = %party, "attended transfer");
        let by = match side {
            MediaLeg::Callee => self.legs[callee].target.clone(),
            MediaLeg::Caller => self
                .caller
                .user
                .clone()
                .unwrap_or_else(|| self.caller.number.clone()),
        };
        self.log.transfer("attended", &by, &party);
        // What the partner is offered: the staying party's SDP at our relay.
        let staying = match side {
            MediaLeg::Callee => Some(self.offer_text.clone()),
            MediaLeg::Caller => self.callee_sdp.clone(),
        };
        let relay = self.media.local_addr(side);
        // The partner's leg is keyed afresh, by its own policy, like a
        // callee's (no key is carried over from the other call).
        let security = self.partner_security(&partner);
        let crypto = security.crypto_lines();
        let offer = staying.and_then(|text| {
            describe_leg(
                &text,
                &LegDescription {
                    address: relay.ip(),
                    port: relay.port(),
                    protocol: Some(security.protocol),
                    crypto: &crypto,
                },
            )
            .ok()
        });
        if security.offers.is_empty() {
            self.media.set_srtp(side, None);
        } else {
            self.media.await_srtp(side);
        }
        release_transferor(transferor, true);
        self.shared.routes().insert(
            partner.call_id.clone(),
            DialogRoute {
                call: self.commands.clone(),
                peer: partner.peer,
            },
        );
        let (dialog, peer, number) = (partner.dialog.clone(), partner.peer, partner.number.clone());
        match side {
            MediaLeg::Callee => {
                self.legs[callee].state = LegState::Released;
                self.legs[callee].presence = None;
                self.legs.push(Leg {
                    dialog: partner.dialog,
                    call_id: partner.call_id,
                    target: partner.user.clone().unwrap_or(partner.number),
                    user: partner.user,
                    side: MediaLeg::Callee,
                    sent_offer: offer.clone().unwrap_or_default(),
                    security: OfferedSecurity::plain(),
                    negotiated: None,
                    state: LegState::Connected,
                    peer: partner.peer,
                    presence: partner.presence,
                    invite: None,
                });
                self.phase = Phase::Connected {
                    callee: self.legs.len() - 1,
                };
            }
            MediaLeg::Caller => {
                let transferor = self.caller.dialog.replace(SideDialog {
                    dialog: partner.dialog,
                    call_id: partner.call_id,
                });
                self.released.extend(transferor.map(|side| side.dialog));
                self.caller.number = partner.number;
                self.caller.user = partner.user;
                self.caller.peer = partner.peer;
                self.caller.presence = partner.presence;
                self.caller.sent_sdp = offer.clone();
            }
        }
        match offer {
            Some(offer) => match dialog
                .reinvite(Some(vec![super::sdp::sdp_type()]), Some(offer.into_bytes()))
                .await
            {
                Ok(Some(response)) => {
                    if let Ok(sdp) = Sdp::parse_bytes(&response.body) {
                        self.point(side, &sdp, peer);
                        let answered = sdp.audio().map(|audio| security.accept(audio));
                        match answered {
                            Some(Ok(negotiated)) => {
                                self.take_partner_security(side, security, negotiated)
                            }
                            Some(Err(refusal)) => {
                                tracing::warn!(call = %self.call_id, %refusal, "attended transfer: the partner's answer refused");
                                dialog.bye().await.ok();
                            }
                            None => {}
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!(call = %self.call_id, "attended transfer: the partner did not answer the re-INVITE");
                }
                Err(error) => {
                    tracing::warn!(call = %self.call_id, %error, "attended transfer: re-INVITE of the partner failed");
                }
            },
            None => {
                tracing::warn!(call = %self.call_id, "attended transfer: no SDP to offer the partner")
            }
        }
        events::emit(
            self.hooks.as_ref(),
            &self.call_id,
            EventKind::TRANSFERRED,
            Some(self.engine.party(&number)),
            "attended",
        );
    }
}

/// Tells a transferor how its REFER went and lets it go: the final NOTIFY
/// ends its dialog (its phone or the stack sends BYE, RFC 5589); if it is
/// still up after 2 s, we hang up.
fn release_transferor(transferor: InviteDialog, accepted: bool) {
    tokio::spawn(async move {
        // The 202 goes out on the REFER transaction's own task: let it leave
        // first, strict phones (and SIPp) want it before the NOTIFY.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = if accepted {
            StatusCode::OK
        } else {
            StatusCode::BusyHere
        };
        transferor
            .notify_refer(status, "terminated;reason=noresource")
            .await
            .ok();
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !matches!(transferor.state(), DialogState::Terminated(..)) {
            transferor.bye().await.ok();
        }
    });
}

impl Call {
    /// What an attended transfer's partner is offered: its own policy on
    /// the transport its phone (or the trunk) is registered over; plain
    /// where its policy cannot be met there (logged).
    fn partner_security(&self, partner: &Partner) -> OfferedSecurity {
        let transport = match (&partner.user, partner.peer) {
            (Some(user), DialogPeer::Host(ip)) => self
                .shared
                .live
                .registrar
                .bindings(user)
                .into_iter()
                .find(|binding| binding.source.ip() == ip)
                .map_or(rsipstack::sip::Transport::Udp, |binding| {
                    binding.transport.stack()
                }),
            _ => self
                .shared
                .config
                .trunk
                .as_ref()
                .map_or(rsipstack::sip::Transport::Udp, |trunk| {
                    trunk.transport.outgoing()
                }),
        };
        let srtp = &self.shared.config.srtp;
        OfferedSecurity::for_callee(
            srtp.policy(partner.user.as_deref()),
            srtp.keys_allowed(transport),
            transport,
        )
        .unwrap_or_else(|refusal| {
            tracing::warn!(call = %self.call_id, %refusal, "attended transfer: the partner is offered plain RTP");
            OfferedSecurity::plain()
        })
    }

    /// The partner answered our re-offer: its leg is keyed as it chose.
    fn take_partner_security(
        &mut self,
        side: MediaLeg,
        offered: OfferedSecurity,
        negotiated: LegSecurity,
    ) {
        self.media.set_srtp(side, negotiated.keys());
        match side {
            MediaLeg::Caller => {
                self.caller.protocol = offered.protocol.to_string();
                self.caller.security = negotiated;
            }
            MediaLeg::Callee => {
                if let Phase::Connected { callee } = self.phase {
                    self.legs[callee].security = offered;
                    self.legs[callee].negotiated = Some(negotiated);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_must_name_the_dialog_exactly() {
        let id = DialogId {
            call_id: "c@h".into(),
            local_tag: "ours".into(),
            remote_tag: "theirs".into(),
        };
        let replaces = |call_id: &str, to: &str, from: &str| Replaces {
            call_id: call_id.into(),
            to_tag: to.into(),
            from_tag: from.into(),
        };
        assert!(names_dialog(&id, &replaces("c@h", "ours", "theirs")));
        assert!(names_dialog(&id, &replaces("c@h", "theirs", "ours")));
        assert!(!names_dialog(&id, &replaces("c@h", "ours", "guessed")));
        assert!(!names_dialog(&id, &replaces("c@other", "ours", "theirs")));
    }
}
