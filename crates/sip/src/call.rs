//! One call through the back-to-back user agent.
//!
//! The caller's INVITE becomes a server dialog (the A leg). The engine
//! decides who rings; every device of every ringing user, and every
//! external number (through the trunk), gets its own client dialog (a B
//! leg) with its own Call-ID. The first B leg to answer is connected, the
//! others are cancelled. Media runs through one relay per call: the caller
//! sees only the relay's caller-facing port, the callees only its
//! callee-facing one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use callhost_media::prompt::Prompt;
use callhost_media::relay::{CallMedia, Leg as MediaLeg, MediaEvent, TapLegs};
use callhost_media::sdp::{reanswer, rewrite_connection, Codec, Direction, Sdp};
use callhost_pbx::engine::{CallOutcome, CallRequest, Engine, Outcome, Ring, Via};
use callhost_plugin_abi::{CallEvent, EventKind, PartyKind, TapRequest};
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, DialogStateSender, TerminatedReason,
};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, HostWithPort, StatusCode, Transport, Uri};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;

use crate::server::{CallRecord, Shared};

/// Orders one call takes from another.
pub(crate) enum CallCommand {
    /// An attended transfer elsewhere replaces the dialog `replaced` of this
    /// call: hand over the party on the other side of it (its dialog's
    /// states go to `states` from now on), end `replaced`, and stop.
    HandOver {
        replaced: String,
        states: DialogStateSender,
        reply: tokio::sync::oneshot::Sender<Option<Partner>>,
    },
}

pub(crate) type CallCommands = tokio::sync::mpsc::UnboundedSender<CallCommand>;

/// The party a call hands over in an attended transfer.
pub(crate) struct Partner {
    dialog: InviteDialog,
    call_id: String,
    user: Option<String>,
    number: String,
}

/// Who is calling, once authenticated.
struct Caller {
    /// The number the engine sees (a user's primary number, or the
    /// carrier's calling number).
    number: String,
    /// The directory user, for an internal caller.
    user: Option<String>,
}

/// A new INVITE outside any dialog.
pub(crate) async fn incoming(shared: Arc<Shared>, mut tx: Transaction, source: SocketAddr) {
    let from_trunk = shared
        .config
        .trunk
        .as_ref()
        .is_some_and(|trunk| trunk.peer == source);
    let Some(engine) = shared.control.engine() else {
        tx.reply(StatusCode::ServiceUnavailable).await.ok();
        return;
    };
    let caller = if from_trunk {
        let number = tx
            .original
            .from_header()
            .ok()
            .and_then(|from| from.uri().ok())
            .and_then(|uri| uri.auth.map(|auth| auth.user))
            .unwrap_or_else(|| "anonymous".into());
        Caller { number, user: None }
    } else {
        let Some(user) = shared.authenticate(&mut tx, source, true).await else {
            return;
        };
        let number = engine
            .directory()
            .user(&user)
            .map(|u| u.primary_number().to_string())
            .unwrap_or_else(|| user.clone());
        Caller {
            number,
            user: Some(user),
        }
    };
    let Some(dialed) = tx.original.uri.auth.as_ref().map(|auth| auth.user.clone()) else {
        tx.reply(StatusCode::NotFound).await.ok();
        return;
    };
    // An internal caller dialling a number the directory does not know and
    // that is not an outside number has misdialled.
    if engine.party(&dialed).kind == PartyKind::Unknown {
        tracing::info!(to = %dialed, "call to an unknown number");
        tx.reply(StatusCode::NotFound).await.ok();
        return;
    }
    let offer_text = String::from_utf8_lossy(&tx.original.body).into_owned();
    let offer = match Sdp::parse_bytes(&tx.original.body) {
        Ok(offer) => offer,
        Err(error) => {
            // No offer (late offer) or one we cannot relay.
            tracing::info!(%error, "INVITE without a usable SDP offer");
            tx.reply(StatusCode::NotAcceptableHere).await.ok();
            return;
        }
    };
    let media = match shared.relay.allocate() {
        Ok(media) => media,
        Err(error) => {
            tracing::error!(%error, "no media ports for a call");
            tx.reply(StatusCode::ServiceUnavailable).await.ok();
            return;
        }
    };
    point_relay(&media, MediaLeg::Caller, &offer);

    let (state_sender, state_receiver) = shared.dialogs.new_dialog_state_channel();
    let a = match shared.dialogs.get_or_create_server_invite(
        &tx,
        state_sender.clone(),
        None,
        Some(contact_uri(&shared, None)),
    ) {
        Ok(dialog) => dialog,
        Err(error) => {
            tracing::warn!(%error, "cannot create the caller's dialog");
            tx.reply(StatusCode::ServerInternalError).await.ok();
            return;
        }
    };
    let call_id = a.id().call_id.clone();
    shared
        .calls
        .lock()
        .expect("calls")
        .insert(call_id.clone(), ());
    let (commands, command_receiver) = tokio::sync::mpsc::unbounded_channel();
    shared
        .dialogs_to_calls
        .lock()
        .expect("dialogs")
        .insert(call_id.clone(), commands.clone());
    // The INVITE transaction lives on its own task: it answers CANCEL,
    // retransmits our final answer and waits for the ACK.
    let mut transaction_dialog = a.clone();
    tokio::spawn(async move {
        transaction_dialog.handle(&mut tx).await.ok();
    });
    let mut call = Call {
        shared: shared.clone(),
        engine,
        call_id: call_id.clone(),
        caller,
        dialed,
        a,
        offer_text,
        media,
        state_sender,
        legs: Vec::new(),
        answered: None,
        rang_caller: false,
        answered_at: None,
        connected: false,
        transfers: 0,
        a_leg_call_id: call_id.clone(),
        callee_sdp: None,
        sent_to_caller: None,
        commands,
        command_receiver,
    };
    call.run(state_receiver).await;
    shared.calls.lock().expect("calls").remove(&call_id);
    // Only this call's entries: a party handed over to another call is
    // registered there by now.
    let mut dialogs = shared.dialogs_to_calls.lock().expect("dialogs");
    dialogs.retain(|_, commands| !commands.same_channel(&call.commands));
}

/// A callee leg.
struct Leg {
    dialog: InviteDialog,
    call_id: String,
    /// The directory user it rings, `None` for a number on the trunk.
    user: Option<String>,
    /// The number or user id, for logs and records.
    target: String,
    /// Ended (answered legs stay until they hang up).
    gone: bool,
    /// The status it ended with, if it failed.
    failure: Option<StatusCode>,
    /// The relay side it is on: callees ring on `Callee`; a target the
    /// caller's side transferred to rings on `Caller`.
    side: MediaLeg,
    /// The SDP we offered it (our side of its session, for re-INVITEs).
    sent_offer: String,
    /// It answered once; later `Confirmed` states (after a REFER or a
    /// re-INVITE) are not answers.
    connected: bool,
}

struct Call {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    call_id: String,
    caller: Caller,
    dialed: String,
    a: InviteDialog,
    offer_text: String,
    media: CallMedia,
    state_sender: DialogStateSender,
    legs: Vec<Leg>,
    /// Index into `legs` of the leg that answered.
    answered: Option<usize>,
    rang_caller: bool,
    answered_at: Option<Instant>,
    /// The caller's leg got its 200: later answers (after a transfer) only
    /// move the relay.
    connected: bool,
    transfers: u32,
    /// The Call-ID of the dialog on the caller's side (the caller's own,
    /// until the caller transfers and the target answers).
    a_leg_call_id: String,
    /// The answered callee's SDP: the offer when the caller's side
    /// transfers the callee elsewhere.
    callee_sdp: Option<String>,
    /// The SDP we last gave the caller's side (for its re-INVITEs).
    sent_to_caller: Option<String>,
    /// This call's own command channel (registered for its dialogs).
    commands: CallCommands,
    command_receiver: tokio::sync::mpsc::UnboundedReceiver<CallCommand>,
}

/// How the call ended, for the record and the caller's final answer.
enum End {
    /// Connected, then one side hung up.
    HungUp(&'static str),
    /// Never connected; the caller got this status (or had cancelled).
    NotConnected(Option<StatusCode>),
    /// Handed its remaining party to another call (attended transfer);
    /// that party's dialog states go on to `states`.
    HandedOver {
        states: DialogStateSender,
        partner_call_id: String,
    },
}

impl Call {
    async fn run(&mut self, mut states: DialogStateReceiver) {
        let hooks = self.shared.control.hooks();
        let request = CallRequest {
            call_id: self.call_id.clone(),
            from: self.caller.number.clone(),
            to: self.dialed.clone(),
            via: Via::Direct,
            by: None,
            no_answer: false,
        };
        if let Some(user) = &self.caller.user {
            self.shared.live.enter(user);
        }
        let mut outcome = self.engine.place(&request, hooks.as_ref()).await;
        self.start_taps(&outcome);
        let end = match outcome.outcome {
            Outcome::Ringing if !self.play_prompt(&outcome, &mut states).await => {
                End::NotConnected(None)
            }
            Outcome::Ringing => {
                let mut rung = HashSet::new();
                self.ring(&outcome.rang, &mut rung).await;
                if self.legs.is_empty() {
                    self.refuse(StatusCode::TemporarilyUnavailable, "nobody to ring");
                    End::NotConnected(Some(StatusCode::TemporarilyUnavailable))
                } else {
                    self.connect(&mut states, &request, &mut outcome, &mut rung)
                        .await
                }
            }
            Outcome::Rejected => {
                self.refuse(StatusCode::Decline, "rejected");
                End::NotConnected(Some(StatusCode::Decline))
            }
            Outcome::Busy => {
                self.refuse(StatusCode::BusyHere, "busy");
                End::NotConnected(Some(StatusCode::BusyHere))
            }
            Outcome::Unavailable => {
                self.refuse(StatusCode::TemporarilyUnavailable, "unavailable");
                End::NotConnected(Some(StatusCode::TemporarilyUnavailable))
            }
        };
        if let Some(user) = &self.caller.user {
            self.shared.live.leave(user);
        }
        let answered_by = self.answered.map(|i| self.legs[i].target.clone());
        if let Some(user) = self.answered.and_then(|i| self.legs[i].user.clone()) {
            self.shared.live.leave(&user);
        }
        let cause = match &end {
            End::HungUp(side) => side.to_string(),
            End::HandedOver { .. } => "transferred".to_string(),
            End::NotConnected(Some(status)) => {
                format!("not connected: {}", u16::from(status.clone()))
            }
            End::NotConnected(None) => "cancelled".to_string(),
        };
        if hooks.wants_events() {
            hooks.call_event(&CallEvent {
                call_id: self.call_id.as_str().into(),
                kind: EventKind::HANGUP,
                party: ROption::RNone,
                detail: cause.as_str().into(),
            });
        }
        // The relay stops when the call (and its media) is dropped.
        let stats = self.media.stats();
        tracing::info!(
            call = %self.call_id,
            from = %self.caller.number,
            to = %self.dialed,
            answered_by = ?answered_by,
            end = %cause,
            media = ?stats,
            "call ended"
        );
        self.shared.control.call_ended(CallRecord {
            request,
            outcome,
            answered_by,
            answered_for: self.answered_at.map(|at| at.elapsed()),
            media: serde_json::to_string(&stats).ok(),
        });
        if let End::HandedOver {
            states: target,
            partner_call_id,
        } = end
        {
            // The partner's dialog was created on this call's channel: its
            // states (BYE, re-INVITE, REFER) now belong to the other call.
            tokio::spawn(async move {
                while let Some(state) = states.recv().await {
                    let id = match &state {
                        DialogState::Calling(id)
                        | DialogState::Trying(id)
                        | DialogState::Early(id, _)
                        | DialogState::WaitAck(id, _)
                        | DialogState::Confirmed(id, _)
                        | DialogState::Updated(id, _, _)
                        | DialogState::Publish(id, _, _)
                        | DialogState::Notify(id, _, _)
                        | DialogState::Refer(id, _, _)
                        | DialogState::Message(id, _, _)
                        | DialogState::Info(id, _, _)
                        | DialogState::Options(id, _, _)
                        | DialogState::Terminated(id, _) => id.call_id.clone(),
                    };
                    if id != partner_call_id {
                        continue;
                    }
                    let last = matches!(state, DialogState::Terminated(..));
                    if target.send(state).is_err() || last {
                        break;
                    }
                }
            });
        }
    }

    /// Gives every instance that tapped the call its frames, from now (call
    /// setup) until the media closes at hangup.
    fn start_taps(&self, outcome: &CallOutcome) {
        let call_id: Arc<str> = self.call_id.as_str().into();
        for tap in &outcome.taps {
            let Some(sink) = self.shared.control.media_sink(&tap.instance) else {
                tracing::warn!(instance = %tap.instance, "tap requested by an instance without the media hook");
                continue;
            };
            let legs = match tap.legs {
                TapRequest::Caller => TapLegs::Caller,
                TapRequest::Callee => TapLegs::Callee,
                _ => TapLegs::Both,
            };
            let mut frames = self.media.tap(legs, TAP_QUEUE);
            let call_id = call_id.clone();
            tokio::spawn(async move {
                while let Some(frame) = frames.recv().await {
                    sink.frame(&call_id, &frame);
                }
            });
        }
    }

    /// Plays the prompt an instance asked for to the caller as early media
    /// (183 with our SDP) before any phone rings. False when the caller
    /// hung up meanwhile.
    async fn play_prompt(
        &mut self,
        outcome: &CallOutcome,
        states: &mut DialogStateReceiver,
    ) -> bool {
        let Some(request) = &outcome.prompt else {
            return true;
        };
        let Some(path) = self
            .shared
            .control
            .prompt_file(&request.instance, &request.asset)
        else {
            tracing::warn!(instance = %request.instance, asset = %request.asset, "prompt not found");
            return true;
        };
        let prompt = match tokio::task::spawn_blocking(move || Prompt::load(path)).await {
            Ok(Ok(prompt)) => prompt,
            Ok(Err(error)) => {
                tracing::warn!(instance = %request.instance, %error, "prompt not playable");
                return true;
            }
            Err(_) => return true,
        };
        let Ok(offer) = Sdp::parse(&self.offer_text) else {
            return true;
        };
        let Some(audio) = offer.audio() else {
            return true;
        };
        let Some(format) = audio
            .formats
            .iter()
            .find(|f| matches!(f.codec(), Codec::Pcmu | Codec::Pcma))
        else {
            tracing::warn!(call = %self.call_id, "prompt skipped: the caller offers no G.711");
            return true;
        };
        let caller_side = self.media.local_addr(MediaLeg::Caller);
        let answer = early_answer(
            caller_side,
            format.payload_type,
            format.codec(),
            audio.telephone_event_payload_type(),
        );
        self.rang_caller = true;
        self.sent_to_caller = Some(answer.clone());
        self.a
            .ringing(Some(vec![sdp_type()]), Some(answer.into_bytes()))
            .ok();
        let playing = self
            .media
            .play_prompt(MediaLeg::Caller, &prompt, format.codec());
        tokio::pin!(playing);
        loop {
            tokio::select! {
                played = &mut playing => {
                    tracing::info!(call = %self.call_id, instance = %request.instance, asset = %request.asset, result = ?played.as_ref().map_err(|e| e.to_string()), "prompt played");
                    return true;
                }
                state = states.recv() => match state {
                    Some(DialogState::Terminated(id, _)) if id.call_id == self.call_id => return false,
                    None => return false,
                    _ => {}
                }
            }
        }
    }

    /// Answers the caller with a final failure.
    fn refuse(&self, status: StatusCode, why: &str) {
        tracing::info!(call = %self.call_id, status = u16::from(status.clone()), why, "call not connected");
        self.a.reject(Some(status), None).ok();
    }

    /// Starts a B leg for every device of every ring not rung yet.
    async fn ring(&mut self, rings: &[Ring], rung: &mut HashSet<String>) {
        let plan = LegPlan {
            side: MediaLeg::Callee,
            offer: self.offer_text.clone(),
            from_number: self.caller.number.clone(),
        };
        self.ring_with(rings, rung, &plan).await;
    }

    async fn ring_with(&mut self, rings: &[Ring], rung: &mut HashSet<String>, plan: &LegPlan) {
        for ring in rings {
            let key = format!("{:?}/{}", ring.user, ring.number);
            if !rung.insert(key) {
                continue;
            }
            let targets: Vec<(Uri, SipAddr, Option<String>)> = match (&ring.user, ring.mobile) {
                (Some(user), false) => self
                    .shared
                    .live
                    .registrar
                    .bindings(user)
                    .into_iter()
                    .filter_map(|binding| {
                        let uri = Uri::try_from(binding.contact.as_str()).ok()?;
                        let transport = if binding.reliable {
                            Transport::Tcp
                        } else {
                            Transport::Udp
                        };
                        Some((
                            uri,
                            SipAddr::new(transport, HostWithPort::from(binding.source)),
                            Some(user.clone()),
                        ))
                    })
                    .collect(),
                _ => match &self.shared.config.trunk {
                    Some(trunk) => {
                        let uri =
                            Uri::try_from(format!("sip:{}@{}", ring.number, trunk.peer).as_str());
                        match uri {
                            Ok(uri) => vec![(
                                uri,
                                SipAddr::new(Transport::Udp, HostWithPort::from(trunk.peer)),
                                None,
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
            for (uri, destination, user) in targets {
                self.start_leg(ring, uri, destination, user, plan).await;
            }
        }
    }

    async fn start_leg(
        &mut self,
        ring: &Ring,
        callee: Uri,
        destination: SipAddr,
        user: Option<String>,
        plan: &LegPlan,
    ) {
        let leg_call_id = format!("{}@callhost", hex::encode(rand::random::<[u8; 12]>()));
        let relay_side = self.media.local_addr(plan.side);
        let offer = match rewrite_connection(&plan.offer, relay_side.ip(), relay_side.port()) {
            Ok(offer) => offer,
            Err(error) => {
                tracing::warn!(%error, "cannot rewrite the offer");
                return;
            }
        };
        let host = self.shared.local;
        let caller_uri = Uri::try_from(format!("sip:{}@{}", plan.from_number, host).as_str());
        let Ok(caller_uri) = caller_uri else {
            return;
        };
        // The display the modules decided, in From and P-Asserted-Identity.
        let display = ring.display.replace('"', "'");
        let asserted = format!("\"{display}\" <sip:{}@{host}>", plan.from_number);
        let sent_offer = offer.clone();
        let option = InviteOption {
            caller_display_name: Some(display.clone()),
            caller: caller_uri,
            callee,
            destination: Some(destination),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            contact: contact_uri(&self.shared, Some(&plan.from_number)),
            headers: Some(vec![Header::PAssertedIdentity(asserted.into())]),
            call_id: Some(leg_call_id.clone()),
            ..Default::default()
        };
        match self
            .shared
            .dialogs
            .do_invite_async(option, self.state_sender.clone())
        {
            Ok((dialog, _handle)) => {
                tracing::debug!(call = %self.call_id, leg = %leg_call_id, target = %ring.number, "ringing");
                self.legs.push(Leg {
                    dialog,
                    call_id: leg_call_id,
                    target: user.clone().unwrap_or_else(|| ring.number.clone()),
                    user,
                    gone: false,
                    failure: None,
                    side: plan.side,
                    sent_offer,
                    connected: false,
                });
                self.shared
                    .dialogs_to_calls
                    .lock()
                    .expect("dialogs")
                    .insert(
                        self.legs.last().expect("pushed").call_id.clone(),
                        self.commands.clone(),
                    );
            }
            Err(error) => tracing::warn!(%error, target = %ring.number, "cannot ring"),
        }
    }

    fn leg_index(&self, call_id: &str) -> Option<usize> {
        self.legs.iter().position(|leg| leg.call_id == call_id)
    }

    fn live_legs(&self) -> usize {
        self.legs.iter().filter(|leg| !leg.gone).count()
    }

    /// Cancels (or, if answered meanwhile, hangs up) every leg but `keep`.
    fn drop_legs(&mut self, keep: Option<usize>) {
        for (index, leg) in self.legs.iter_mut().enumerate() {
            if Some(index) == keep || leg.gone {
                continue;
            }
            leg.gone = true;
            let dialog = leg.dialog.clone();
            tokio::spawn(async move {
                if dialog.cancel().await.is_err() {
                    dialog.hangup().await.ok();
                }
            });
        }
    }

    /// The caller's status when every leg failed.
    fn failure_status(&self) -> StatusCode {
        let failures: Vec<&StatusCode> = self
            .legs
            .iter()
            .filter_map(|l| l.failure.as_ref())
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

    /// Rings until someone answers, the caller gives up or every leg
    /// fails; then relays until one side hangs up.
    async fn connect(
        &mut self,
        states: &mut DialogStateReceiver,
        request: &CallRequest,
        outcome: &mut CallOutcome,
        rung: &mut HashSet<String>,
    ) -> End {
        let hooks = self.shared.control.hooks();
        let mut media_events = self.media.events();
        let no_answer = no_answer_delay(&self.engine, outcome);
        let no_answer_at =
            tokio::time::Instant::now() + no_answer.unwrap_or(Duration::from_secs(86_400 * 365));
        let mut no_answer_pending = no_answer.is_some();
        loop {
            tokio::select! {
                state = states.recv() => {
                    let Some(state) = state else { return End::NotConnected(None) };
                    match state {
                        DialogState::Terminated(id, reason) if id.call_id == self.a_leg_call_id => {
                            // The caller hung up or cancelled.
                            let answered = self.answered;
                            self.drop_legs(answered);
                            if let Some(index) = answered {
                                let dialog = self.legs[index].dialog.clone();
                                dialog.bye().await.ok();
                                return End::HungUp("caller");
                            }
                            tracing::debug!(call = %self.call_id, ?reason, "caller gave up");
                            return End::NotConnected(None);
                        }
                        DialogState::Early(id, response) => {
                            let Some(index) = self.leg_index(&id.call_id) else { continue };
                            if self.legs[index].gone || self.answered.is_some() {
                                continue;
                            }
                            self.early(&response).await;
                        }
                        DialogState::Confirmed(id, response) if id.call_id != self.a_leg_call_id => {
                            let Some(index) = self.leg_index(&id.call_id) else { continue };
                            if std::mem::replace(&mut self.legs[index].connected, true) {
                                // Back to confirmed after an in-dialog request.
                                continue;
                            }
                            if self.legs[index].side == MediaLeg::Caller && !self.legs[index].gone {
                                self.caller_side_answered(index, &response);
                                continue;
                            }
                            if self.answered.is_some() || self.legs[index].gone {
                                // A second answer (forked or late): not wanted.
                                let dialog = self.legs[index].dialog.clone();
                                tokio::spawn(async move { dialog.bye().await.ok() });
                                continue;
                            }
                            self.answer(index, &response);
                            let answering = self.legs[index].user.clone().unwrap_or_else(|| self.legs[index].target.clone());
                            if hooks.wants_events() {
                                hooks.call_event(&CallEvent {
                                    call_id: self.call_id.as_str().into(),
                                    kind: EventKind::ANSWERED,
                                    party: ROption::RSome(self.engine.party(&answering)),
                                    detail: RString::new(),
                                });
                            }
                            no_answer_pending = false;
                        }
                        DialogState::Terminated(id, reason) => {
                            let Some(index) = self.leg_index(&id.call_id) else { continue };
                            if Some(index) == self.answered {
                                // The callee hung up.
                                self.a.bye().await.ok();
                                return End::HungUp("callee");
                            }
                            let leg = &mut self.legs[index];
                            if leg.gone {
                                continue;
                            }
                            leg.gone = true;
                            leg.failure = Some(status_of(&reason));
                            let side = leg.side;
                            tracing::debug!(call = %self.call_id, leg = %leg.call_id, ?reason, "leg failed");
                            if side == MediaLeg::Caller {
                                if !self.legs.iter().any(|l| l.side == MediaLeg::Caller && !l.gone) {
                                    // Nobody took the caller's transfer: release the callee.
                                    if let Some(answered) = self.answered {
                                        let dialog = self.legs[answered].dialog.clone();
                                        dialog.bye().await.ok();
                                    }
                                    return End::HungUp("transfer failed");
                                }
                                continue;
                            }
                            if self.answered.is_none() && self.live_legs() == 0 && self.connected {
                                // The transfer target did not take the call.
                                self.a.bye().await.ok();
                                return End::HungUp("transfer failed");
                            }
                            if self.answered.is_none() && self.live_legs() == 0 {
                                let status = self.failure_status();
                                self.refuse(status.clone(), "every phone refused");
                                return End::NotConnected(Some(status));
                            }
                        }
                        DialogState::Refer(id, refer, handle) => {
                            let by_callee = self.answered.filter(|&i| self.legs[i].call_id == id.call_id);
                            let by_caller = id.call_id == self.a_leg_call_id && self.answered.is_some();
                            let target = refer
                                .refer_to_header()
                                .map(|h| transfer_target(h.value()))
                                .unwrap_or(Err(StatusCode::BadRequest));
                            if let Some(replaces) = refer.refer_to_header().and_then(|h| replaces_call_id(h.value())) {
                                if by_callee.is_none() && !by_caller {
                                    handle.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
                                    continue;
                                }
                                handle.reply(StatusCode::Accepted).await.ok();
                                let side = if by_callee.is_some() { MediaLeg::Callee } else { MediaLeg::Caller };
                                self.attended_transfer(side, &replaces).await;
                                continue;
                            }
                            match (by_callee, target) {
                                (Some(index), Ok(target)) => {
                                    handle.reply(StatusCode::Accepted).await.ok();
                                    if let Some(end) = self.blind_transfer(index, &target, outcome, rung).await {
                                        return end;
                                    }
                                }
                                (None, Ok(target)) if by_caller => {
                                    handle.reply(StatusCode::Accepted).await.ok();
                                    if let Some(end) = self.caller_side_transfer(&target, outcome, rung).await {
                                        return end;
                                    }
                                }
                                (None, _) => {
                                    tracing::info!(call = %self.call_id, "REFER outside an answered call refused");
                                    handle.reply(StatusCode::CallTransactionDoesNotExist).await.ok();
                                }
                                (_, Err(status)) => {
                                    handle.reply(status).await.ok();
                                }
                            }
                        }
                        DialogState::Updated(id, offer, handle) => {
                            self.reoffer(&id.call_id, &offer, handle).await;
                        }
                        DialogState::Info(id, info, handle) => {
                            handle.reply(StatusCode::OK).await.ok();
                            if let Some(digit) = info_digit(&info.body) {
                                let who = if id.call_id == self.a_leg_call_id {
                                    self.caller.number.clone()
                                } else {
                                    self.answered.map(|i| self.legs[i].target.clone()).unwrap_or_default()
                                };
                                if hooks.wants_events() {
                                    hooks.call_event(&CallEvent {
                                        call_id: self.call_id.as_str().into(),
                                        kind: EventKind::DTMF,
                                        party: ROption::RSome(self.engine.party(&who)),
                                        detail: digit.to_string().into(),
                                    });
                                }
                            }
                        }
                        DialogState::Options(_, _, handle)
                        | DialogState::Notify(_, _, handle)
                        | DialogState::Message(_, _, handle) => {
                            handle.reply(StatusCode::OK).await.ok();
                        }
                        _ => {}
                    }
                }
                command = self.command_receiver.recv() => {
                    let Some(CallCommand::HandOver { replaced, states: target, reply }) = command else { continue };
                    if let Some((partner, transferor)) = self.hand_over(&replaced) {
                        let partner_call_id = partner.call_id.clone();
                        if reply.send(Some(partner)).is_ok() {
                            // RFC 3891: the replaced dialog ends. Not awaited:
                            // the partner's states must be forwarded at once,
                            // however long the transferor takes to answer.
                            tokio::spawn(async move { transferor.bye().await.ok() });
                            return End::HandedOver { states: target, partner_call_id };
                        }
                    } else {
                        let _ = reply.send(None);
                    }
                }
                _ = tokio::time::sleep_until(no_answer_at), if no_answer_pending => {
                    no_answer_pending = false;
                    // Ask the engine where an unanswered call goes (modules
                    // included, exactly as `simulate --no-answer`).
                    let again = CallRequest { no_answer: true, ..request.clone() };
                    let next = self.engine.place(&again, hooks.as_ref()).await;
                    if next.outcome == Outcome::Ringing && !next.forwards.is_empty() {
                        tracing::info!(call = %self.call_id, to = ?next.forwards.last().map(|f| &f.to), "no answer: forwarding");
                        self.drop_legs(None);
                        let before = self.legs.len();
                        self.ring(&next.rang, rung).await;
                        *outcome = next;
                        if self.legs.len() == before {
                            self.refuse(StatusCode::TemporarilyUnavailable, "forward target not reachable");
                            return End::NotConnected(Some(StatusCode::TemporarilyUnavailable));
                        }
                    }
                }
                event = async {
                    match media_events.as_mut() {
                        Some(events) => events.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(MediaEvent::Dtmf { leg, digit, .. }) = event {
                        if hooks.wants_events() {
                            let who = match leg {
                                MediaLeg::Caller => self.caller.number.clone(),
                                MediaLeg::Callee => self.answered.map(|i| self.legs[i].target.clone()).unwrap_or_default(),
                            };
                            hooks.call_event(&CallEvent {
                                call_id: self.call_id.as_str().into(),
                                kind: EventKind::DTMF,
                                party: ROption::RSome(self.engine.party(&who)),
                                detail: digit.to_string().into(),
                            });
                        }
                    }
                }
                _ = self.shared.shutdown.cancelled() => {
                    // The host is stopping: end the call cleanly.
                    let answered = self.answered;
                    self.drop_legs(answered);
                    if let Some(index) = answered {
                        let dialog = self.legs[index].dialog.clone();
                        let (a, b) = (self.a.bye(), dialog.bye());
                        let _ = tokio::join!(a, b);
                        return End::HungUp("shutdown");
                    }
                    self.refuse(StatusCode::ServiceUnavailable, "host stopping");
                    return End::NotConnected(Some(StatusCode::ServiceUnavailable));
                }
            }
        }
    }

    /// The answered callee (leg `index`) sent the caller on to `target`
    /// (REFER, RD8): the engine sets the transfer up as a blind transfer by
    /// that user, the transferor is told (NOTIFY) and released, and the
    /// target's phones ring with the caller's media path unchanged.
    /// Returns how the call ended if it ended.
    async fn blind_transfer(
        &mut self,
        index: usize,
        target: &str,
        outcome: &mut CallOutcome,
        rung: &mut HashSet<String>,
    ) -> Option<End> {
        let by = self.legs[index]
            .user
            .clone()
            .unwrap_or_else(|| self.legs[index].target.clone());
        let from = self.caller.number.clone();
        let next = self.place_blind_transfer(&from, target, &by).await;
        let accepted = next.outcome == Outcome::Ringing;
        release_transferor(self.legs[index].dialog.clone(), accepted);
        self.legs[index].gone = true;
        self.answered = None;
        if let Some(user) = &self.legs[index].user {
            self.shared.live.leave(user);
        }
        if !accepted {
            self.a.bye().await.ok();
            *outcome = next;
            return Some(End::HungUp("transfer failed"));
        }
        let before = self.legs.len();
        self.ring(&next.rang, rung).await;
        *outcome = next;
        if self.legs.len() == before {
            self.a.bye().await.ok();
            return Some(End::HungUp("transfer target not reachable"));
        }
        None
    }

    /// Asks the engine (and so the modules) where `from`, sent on by `by`,
    /// rings at `target`: the engine's blind transfer.
    async fn place_blind_transfer(&mut self, from: &str, target: &str, by: &str) -> CallOutcome {
        self.transfers += 1;
        let transfer = CallRequest {
            call_id: format!("{}-transfer-{}", self.call_id, self.transfers),
            from: from.to_string(),
            to: target.to_string(),
            via: Via::BlindTransfer,
            by: Some(by.to_string()),
            no_answer: false,
        };
        let hooks = self.shared.control.hooks();
        let next = self.engine.place(&transfer, hooks.as_ref()).await;
        tracing::info!(call = %self.call_id, from = %from, by = %by, to = %target, outcome = ?next.outcome, "blind transfer");
        next
    }

    /// The caller's side sent the answered callee on to `target` (REFER
    /// from the caller, a blind transfer by the caller): the target rings on
    /// the relay's caller side with the callee's SDP as the offer, and takes
    /// the caller's place when it answers.
    async fn caller_side_transfer(
        &mut self,
        target: &str,
        outcome: &mut CallOutcome,
        rung: &mut HashSet<String>,
    ) -> Option<End> {
        let index = self.answered?;
        let transferee = self.legs[index].target.clone();
        let transferee_number = match &self.legs[index].user {
            Some(user) => self
                .engine
                .directory()
                .user(user)
                .map(|u| u.primary_number().to_string())
                .unwrap_or_else(|| user.clone()),
            None => transferee.clone(),
        };
        let by = self
            .caller
            .user
            .clone()
            .unwrap_or_else(|| self.caller.number.clone());
        let next = self
            .place_blind_transfer(&transferee_number, target, &by)
            .await;
        let accepted = next.outcome == Outcome::Ringing;
        release_transferor(self.a.clone(), accepted);
        // The transferor's hangup no longer ends the call.
        self.a_leg_call_id.clear();
        if let Some(user) = self.caller.user.take() {
            self.shared.live.leave(&user);
        }
        let release_callee = |call: &Call| {
            let dialog = call.legs[index].dialog.clone();
            tokio::spawn(async move { dialog.bye().await.ok() });
        };
        let Some(offer) = self.callee_sdp.clone().filter(|_| accepted) else {
            release_callee(self);
            *outcome = next;
            return Some(End::HungUp("transfer failed"));
        };
        let plan = LegPlan {
            side: MediaLeg::Caller,
            offer,
            from_number: transferee_number,
        };
        let before = self.legs.len();
        self.ring_with(&next.rang, rung, &plan).await;
        *outcome = next;
        if self.legs.len() == before {
            release_callee(self);
            return Some(End::HungUp("transfer target not reachable"));
        }
        None
    }

    /// The target of a caller-side transfer answered: it is the caller's
    /// side from now on.
    fn caller_side_answered(&mut self, index: usize, response: &rsipstack::sip::Response) {
        let leg = &mut self.legs[index];
        leg.gone = true;
        tracing::info!(call = %self.call_id, answered_by = %leg.target, "transfer target answered");
        if let Ok(sdp) = Sdp::parse_bytes(&response.body) {
            point_relay(&self.media, MediaLeg::Caller, &sdp);
        }
        self.a = leg.dialog.clone();
        self.a_leg_call_id = leg.call_id.clone();
        self.sent_to_caller = Some(leg.sent_offer.clone());
        if let Some(user) = leg.user.clone() {
            self.shared.live.enter(&user);
            self.caller.user = Some(user);
        }
        // Other phones of the target stop ringing.
        for other in self.legs.iter_mut() {
            if other.side == MediaLeg::Caller && !other.gone {
                other.gone = true;
                let dialog = other.dialog.clone();
                tokio::spawn(async move {
                    if dialog.cancel().await.is_err() {
                        dialog.hangup().await.ok();
                    }
                });
            }
        }
    }

    /// Another call's attended transfer replaces `replaced`, one of this
    /// call's answered dialogs: the party on the other side of it, and the
    /// replaced dialog (the transferor's).
    fn hand_over(&self, replaced: &str) -> Option<(Partner, InviteDialog)> {
        let index = self.answered?;
        let leg = &self.legs[index];
        if replaced == self.a_leg_call_id {
            let partner = Partner {
                dialog: leg.dialog.clone(),
                call_id: leg.call_id.clone(),
                user: leg.user.clone(),
                number: leg.target.clone(),
            };
            Some((partner, self.a.clone()))
        } else if replaced == leg.call_id {
            let partner = Partner {
                dialog: self.a.clone(),
                call_id: self.a_leg_call_id.clone(),
                user: self.caller.user.clone(),
                number: self.caller.number.clone(),
            };
            Some((partner, leg.dialog.clone()))
        } else {
            None
        }
    }

    /// An attended transfer (REFER with Replaces, RFC 3891) from this call's
    /// `side`: the transferor's other call hands over its party, who takes
    /// the transferor's place here (re-INVITEd onto this call's relay).
    async fn attended_transfer(&mut self, side: MediaLeg, replaced: &str) {
        let Some(index) = self.answered else { return };
        let transferor = match side {
            MediaLeg::Callee => self.legs[index].dialog.clone(),
            MediaLeg::Caller => self.a.clone(),
        };
        let other_call = self
            .shared
            .dialogs_to_calls
            .lock()
            .expect("dialogs")
            .get(replaced)
            .cloned();
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
        let Some(other_call) = other_call.filter(|other| !other.same_channel(&self.commands))
        else {
            tracing::info!(call = %self.call_id, replaced, "attended transfer: no other call with that dialog");
            refuse(transferor);
            return;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = other_call.send(CallCommand::HandOver {
            replaced: replaced.to_string(),
            states: self.state_sender.clone(),
            reply,
        });
        let partner = match (
            asked,
            tokio::time::timeout(Duration::from_secs(2), answer).await,
        ) {
            (Ok(()), Ok(Ok(Some(partner)))) => partner,
            _ => {
                tracing::info!(call = %self.call_id, replaced, "attended transfer: the other call did not hand over");
                refuse(transferor);
                return;
            }
        };
        tracing::info!(call = %self.call_id, side = ?side, partner = %partner.number, "attended transfer");
        // What the partner is offered: the staying party's SDP at our relay.
        let staying = match side {
            MediaLeg::Callee => Some(self.offer_text.clone()),
            MediaLeg::Caller => self.callee_sdp.clone(),
        };
        let relay = self.media.local_addr(side);
        let offer =
            staying.and_then(|text| rewrite_connection(&text, relay.ip(), relay.port()).ok());
        release_transferor(transferor, true);
        match side {
            MediaLeg::Callee => {
                self.legs[index].gone = true;
                if let Some(user) = &self.legs[index].user {
                    self.shared.live.leave(user);
                }
                self.legs.push(Leg {
                    dialog: partner.dialog.clone(),
                    call_id: partner.call_id.clone(),
                    target: partner
                        .user
                        .clone()
                        .unwrap_or_else(|| partner.number.clone()),
                    user: partner.user.clone(),
                    gone: false,
                    failure: None,
                    side: MediaLeg::Callee,
                    sent_offer: offer.clone().unwrap_or_default(),
                    connected: true,
                });
                self.answered = Some(self.legs.len() - 1);
            }
            MediaLeg::Caller => {
                if let Some(user) = self.caller.user.take() {
                    self.shared.live.leave(&user);
                }
                self.a = partner.dialog.clone();
                self.a_leg_call_id = partner.call_id.clone();
                self.caller.user = partner.user.clone();
                self.sent_to_caller = offer.clone();
            }
        }
        if let Some(user) = &partner.user {
            self.shared.live.enter(user);
        }
        self.shared
            .dialogs_to_calls
            .lock()
            .expect("dialogs")
            .insert(partner.call_id.clone(), self.commands.clone());
        match offer {
            Some(offer) => match partner
                .dialog
                .reinvite(Some(vec![sdp_type()]), Some(offer.into_bytes()))
                .await
            {
                Ok(Some(response)) => {
                    if let Ok(sdp) = Sdp::parse_bytes(&response.body) {
                        point_relay(&self.media, side, &sdp);
                    }
                }
                other => {
                    tracing::warn!(call = %self.call_id, result = ?other.map(|r| r.map(|r| r.status_code)), "attended transfer: re-INVITE of the partner failed");
                }
            },
            None => {
                tracing::warn!(call = %self.call_id, "attended transfer: no SDP to offer the partner")
            }
        }
        let hooks = self.shared.control.hooks();
        if hooks.wants_events() {
            hooks.call_event(&CallEvent {
                call_id: self.call_id.as_str().into(),
                kind: EventKind::TRANSFERRED,
                party: ROption::RSome(self.engine.party(&partner.number)),
                detail: "attended".into(),
            });
        }
    }

    /// A re-INVITE or UPDATE from one side (hold, resume, a new address):
    /// the relay follows the new address; the answer is our earlier SDP for
    /// that side with the answering direction and a new session version.
    /// The other side is not bothered: the relay carries on.
    async fn reoffer(
        &mut self,
        dialog_call_id: &str,
        offer: &rsipstack::sip::Request,
        handle: rsipstack::dialog::dialog::TransactionHandle,
    ) {
        let answered = self
            .answered
            .filter(|&i| self.legs[i].call_id == dialog_call_id);
        let (side, previous) = if dialog_call_id == self.a_leg_call_id {
            (MediaLeg::Caller, self.sent_to_caller.clone())
        } else if let Some(index) = answered {
            (MediaLeg::Callee, Some(self.legs[index].sent_offer.clone()))
        } else {
            handle
                .reply(StatusCode::CallTransactionDoesNotExist)
                .await
                .ok();
            return;
        };
        let Some(previous) = previous else {
            handle.reply(StatusCode::NotAcceptableHere).await.ok();
            return;
        };
        let mut direction = Direction::SendRecv;
        if !offer.body.is_empty() {
            let Ok(sdp) = Sdp::parse_bytes(&offer.body) else {
                handle.reply(StatusCode::NotAcceptableHere).await.ok();
                return;
            };
            if let Some(audio) = sdp.audio() {
                direction = audio.direction.answer();
            }
            point_relay(&self.media, side, &sdp);
        }
        match reanswer(&previous, direction) {
            Ok(answer) => {
                tracing::info!(call = %self.call_id, side = ?side, %direction, "re-offer answered");
                match side {
                    MediaLeg::Caller => self.sent_to_caller = Some(answer.clone()),
                    MediaLeg::Callee => {
                        if let Some(index) = answered {
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
                tracing::warn!(call = %self.call_id, %error, "cannot answer a re-offer");
                handle.reply(StatusCode::NotAcceptableHere).await.ok();
            }
        }
    }

    /// A leg is ringing (180) or sends early media (183 with SDP).
    async fn early(&mut self, response: &rsipstack::sip::Response) {
        if self.connected {
            return;
        }
        if response.body.is_empty() {
            if !self.rang_caller {
                self.rang_caller = true;
                self.a.ringing(None, None).ok();
            }
            return;
        }
        if let Some(answer) = self.relay_answer(&response.body) {
            self.rang_caller = true;
            self.sent_to_caller = Some(String::from_utf8_lossy(&answer).into_owned());
            self.a.ringing(Some(vec![sdp_type()]), Some(answer)).ok();
        }
    }

    /// Leg `index` answered: connect it.
    fn answer(&mut self, index: usize, response: &rsipstack::sip::Response) {
        self.answered = Some(index);
        self.answered_at = Some(Instant::now());
        if let Some(user) = &self.legs[index].user {
            self.shared.live.enter(user);
        }
        self.drop_legs(Some(index));
        tracing::info!(call = %self.call_id, answered_by = %self.legs[index].target, "answered");
        if self.connected {
            // A transfer target answered: the caller keeps its media path.
            if self.relay_answer(&response.body).is_none() {
                tracing::warn!(call = %self.call_id, "transfer target answered without usable SDP");
            }
            return;
        }
        self.connected = true;
        self.callee_sdp = std::str::from_utf8(&response.body).ok().map(str::to_string);
        match self.relay_answer(&response.body) {
            Some(answer) => {
                self.sent_to_caller = Some(String::from_utf8_lossy(&answer).into_owned());
                self.a.accept(Some(vec![sdp_type()]), Some(answer)).ok();
            }
            None => {
                tracing::warn!(call = %self.call_id, "answer without usable SDP");
                self.a.accept(None, None).ok();
            }
        }
    }

    /// Points the relay's callee side at the SDP's address and returns the
    /// same SDP pointing at the relay's caller side.
    fn relay_answer(&self, body: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(body).ok()?;
        let sdp = Sdp::parse(text).ok()?;
        point_relay(&self.media, MediaLeg::Callee, &sdp);
        let caller_side = self.media.local_addr(MediaLeg::Caller);
        rewrite_connection(text, caller_side.ip(), caller_side.port())
            .ok()
            .map(String::into_bytes)
    }
}

/// What new legs offer and on which relay side they ring.
struct LegPlan {
    side: MediaLeg,
    /// The SDP to offer (rewritten to the relay's `side`).
    offer: String,
    /// The calling number the new legs show.
    from_number: String,
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

/// The key of a SIP INFO DTMF (`application/dtmf-relay`: `Signal=5`).
fn info_digit(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("signal") {
            return None;
        }
        let digit = value.trim().chars().next()?.to_ascii_uppercase();
        matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D').then_some(digit)
    })
}

/// Frames a tap may queue before the relay drops them for that tap.
const TAP_QUEUE: usize = 512;

/// Our own SDP answer for early media (a prompt before anyone answered):
/// the relay's caller side, the caller's G.711 choice and its DTMF type.
fn early_answer(relay: SocketAddr, payload_type: u8, codec: Codec, dtmf: Option<u8>) -> String {
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

/// Points the relay's `side` at where an SDP says that party receives,
/// with its DTMF payload type. `c=0.0.0.0` (the old way to say hold) or
/// port 0 keeps the previous address.
fn point_relay(media: &CallMedia, side: MediaLeg, sdp: &Sdp) {
    if let Ok(endpoint) = sdp.audio_endpoint() {
        if !endpoint.ip().is_unspecified() && endpoint.port() != 0 {
            media.set_remote(side, endpoint);
        }
    }
    media.set_dtmf_payload_type(
        side,
        sdp.audio().and_then(|a| a.telephone_event_payload_type()),
    );
}

fn sdp_type() -> Header {
    Header::ContentType("application/sdp".into())
}

/// The status a failed leg ended with.
fn status_of(reason: &TerminatedReason) -> StatusCode {
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
fn no_answer_delay(engine: &Engine, outcome: &CallOutcome) -> Option<Duration> {
    let user = outcome.rang.iter().find_map(|ring| ring.user.as_deref())?;
    let state = engine.user_state(user);
    state.forward_no_answer.as_ref()?;
    Some(Duration::from_secs(u64::from(
        state.no_answer_seconds.max(1),
    )))
}

/// Our Contact URI (with a user part where the other side shows it).
pub(crate) fn contact_uri(shared: &Shared, user: Option<&str>) -> Uri {
    let text = match user {
        Some(user) => format!("sip:{user}@{}", shared.local),
        None => format!("sip:{}", shared.local),
    };
    Uri::try_from(text.as_str()).expect("a SIP URI from a socket address")
}

/// The Call-ID in a `Refer-To`'s `Replaces` header (attended transfer,
/// RFC 3891): `<sip:201@host?Replaces=CALLID%3Bto-tag%3DA%3Bfrom-tag%3DB>`.
fn replaces_call_id(refer_to: &str) -> Option<String> {
    let lower = refer_to.to_ascii_lowercase();
    let start = lower.find("replaces=")? + "replaces=".len();
    let value = &refer_to[start..];
    let end = value.find(['&', '>']).unwrap_or(value.len());
    let decoded = percent_decode(&value[..end]);
    let call_id = decoded.split(';').next()?.trim();
    (!call_id.is_empty()).then(|| call_id.to_string())
}

/// `%XX` escapes of a URI header value.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The number a `Refer-To` names.
fn transfer_target(refer_to: &str) -> Result<String, StatusCode> {
    let inner = refer_to
        .trim()
        .trim_start_matches(|c| c != '<')
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or(refer_to)
        .trim();
    let inner = if inner.is_empty() {
        refer_to.trim()
    } else {
        inner
    };
    if inner.to_ascii_lowercase().contains("replaces=") {
        return Err(StatusCode::NotImplemented);
    }
    let without_headers = inner.split('?').next().unwrap_or(inner);
    // Only the user part matters (the target is on this PBX), so a URI
    // with an odd host part still transfers.
    let user = match Uri::try_from(without_headers) {
        Ok(uri) => uri.auth.map(|auth| auth.user),
        Err(_) => without_headers
            .split_once(':')
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(user, _)| user.to_string()),
    };
    user.filter(|user| !user.is_empty() && !user.contains(['<', '>', ' ']))
        .ok_or(StatusCode::BadRequest)
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

    #[test]
    fn info_dtmf_bodies() {
        assert_eq!(info_digit(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit(b"signal= #\nDuration=100"), Some('#'));
        assert_eq!(info_digit(b"Duration=100"), None);
        assert_eq!(info_digit(b"Signal=x"), None);
    }

    #[test]
    fn transfer_targets() {
        assert_eq!(transfer_target("<sip:201@127.0.0.1>").unwrap(), "201");
        assert_eq!(
            transfer_target("sip:boss@pbx.example;user=phone").unwrap(),
            "boss"
        );
        assert_eq!(
            replaces_call_id("<sip:201@h?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>")
                .as_deref(),
            Some("abc@host")
        );
        assert_eq!(replaces_call_id("<sip:201@h>"), None);
        assert_eq!(
            replaces_call_id("<sip:201@h?replaces=%"),
            Some("%".to_string())
        );
        assert_eq!(transfer_target("<sip:101@:5060>").unwrap(), "101");
        assert_eq!(
            transfer_target("<sip:host.example>"),
            Err(StatusCode::BadRequest)
        );
    }
}
