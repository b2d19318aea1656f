//! One call through the back-to-back user agent.
//!
//! The caller's INVITE is admitted (`admit`: limits, authentication, dial
//! policy, the offer), becomes a server dialog (the A leg) and asks the
//! engine who rings. Only a call that rings gets relay ports; every device
//! of every ringing user, and every outside number (through the trunk),
//! gets its own client dialog (a B leg, `legs.rs`). The first B leg to
//! answer is connected, the others are cancelled. Media runs through one
//! relay per call (`sdp.rs`): the caller sees only the relay's caller-facing
//! port, the callees only its callee-facing one. Transfers are in
//! `transfer.rs`, the events modules see in `events.rs`.
//!
//! [`Call`] is a state machine: its [`Phase`] says where the call is, and
//! each input (a dialog state, a command from another call, a timer, a
//! media event, shutdown) has one handler that returns whether the call
//! goes on. Users are counted as in a call by [`PresenceGuard`]s and the
//! call's share of the limits by a [`CallSlot`], so however the task ends
//! (a panic included) nobody is left busy.

mod events;
mod legs;
mod log;
pub(crate) mod originate;
pub(crate) use originate::{hang_up, originated};
mod sdp;
mod transfer;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callhost_media::relay::{CallMedia, Leg as MediaLeg, MediaEvent};
use callhost_media::sdp::Sdp;
use callhost_pbx::engine::{CallOutcome, CallRequest, Engine, Hooks, Outcome, Via};
use callhost_plugin_abi::{EventKind, PartyKind};
use futures::FutureExt as _;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode, Uri};
use rsipstack::transaction::transaction::Transaction;

use crate::auth::Challenge;
use crate::identity::safe_number;
use crate::limits::{CallSlot, LimitRefusal};
use crate::peer::Peer;
use crate::policy::Dialler;
use crate::presence::PresenceGuard;
use crate::refer::Replaces;
use crate::server::{CallRecord, DialogPeer, DialogRoute, Severity, Shared};
use crate::srtp::LegSecurity;

use legs::{Leg, LegState};
use log::{CallLog, Ending};

/// Orders one call takes from another.
pub(crate) enum CallCommand {
    /// An attended transfer elsewhere replaces the dialog `replaces` names:
    /// if it is one of this call's and `transferor` is its party, hand over
    /// the party on the other side of it (its dialog's states go to
    /// `states` from now on), end the replaced dialog, and stop.
    HandOver {
        replaces: Replaces,
        transferor: Option<String>,
        states: DialogStateSender,
        /// The partner, or why not (logged once, by the asking call).
        reply: tokio::sync::oneshot::Sender<Result<Partner, &'static str>>,
    },
    /// End the call for `user`, if they are one of its parties.
    HangUp {
        user: String,
        reply: std::sync::mpsc::SyncSender<Result<(), originate::CallRefusal>>,
    },
}

pub(crate) type CallCommands = tokio::sync::mpsc::UnboundedSender<CallCommand>;

/// The party a call hands over in an attended transfer, with its presence.
pub(crate) struct Partner {
    dialog: InviteDialog,
    call_id: String,
    user: Option<String>,
    number: String,
    peer: DialogPeer,
    presence: Option<PresenceGuard>,
}

/// The calling side of the call: the caller, or whoever took its place in
/// a transfer.
struct CallerSide {
    /// The dialog on the caller's side; `None` while the caller's side has
    /// transferred the callee and the target still rings.
    dialog: Option<SideDialog>,
    /// The number the engine sees (a user's primary number, or the
    /// carrier's calling number).
    number: String,
    /// The directory user, for an internal caller.
    user: Option<String>,
    presence: Option<PresenceGuard>,
    /// Where the caller's side signals from (its SDP addresses are judged
    /// against it).
    peer: DialogPeer,
    /// The SDP we last gave this side (for its re-INVITEs).
    sent_sdp: Option<String>,
    /// Its leg's SRTP, and the profile its offer stated (our answers state
    /// the same).
    security: LegSecurity,
    protocol: String,
}

struct SideDialog {
    dialog: InviteDialog,
    call_id: String,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Phones ring; nobody answered. `alerted`: the caller got a 180/183.
    Ringing { alerted: bool },
    /// The caller got its 200 and leg `callee` is connected.
    Connected { callee: usize },
    /// The connected callee sent the caller elsewhere (blind transfer):
    /// the target rings, the caller keeps its media path.
    CalleeTransferring,
    /// The caller's side sent the callee elsewhere: the target rings on the
    /// caller's side of the relay, leg `callee` waits.
    CallerTransferring { callee: usize },
    /// Click-to-dial: the user's own phones ring on the caller's side of
    /// the relay; nobody else rings yet.
    Originating,
    /// Click-to-dial: one of the user's phones answered and is the caller's
    /// side now; the number is about to be placed.
    OriginAnswered,
}

/// How the call ended, for the record and the caller's final answer.
enum End {
    /// Connected, then one side hung up (or the call was ended for it).
    HungUp(&'static str),
    /// Never connected; the caller got this status (or had cancelled),
    /// and why.
    NotConnected(Option<StatusCode>, &'static str),
    /// Handed its remaining party to another call (attended transfer);
    /// that party's dialog states go on to `states`.
    HandedOver {
        states: DialogStateSender,
        partner_call_id: String,
    },
    /// The call's task panicked; every leg was ended.
    Failed,
}

impl End {
    fn cause(&self) -> String {
        match self {
            End::HungUp(side) => side.to_string(),
            End::HandedOver { .. } => "transferred".to_string(),
            End::NotConnected(Some(status), _) => {
                format!("not connected: {}", u16::from(status.clone()))
            }
            End::NotConnected(None, _) => "cancelled".to_string(),
            End::Failed => "internal error".to_string(),
        }
    }

    /// The call line's outcome, end, status and reason.
    fn ending(&self) -> Ending {
        let answered = |end: &str| Ending {
            outcome: "answered",
            end: Some(end.replace(' ', "-")),
            status: None,
            why: None,
        };
        match self {
            End::HungUp(side) => answered(side),
            End::HandedOver { .. } => answered("transferred"),
            End::NotConnected(status, why) => {
                let code = status.clone().map(u16::from);
                let outcome = match code {
                    None => "cancelled",
                    Some(486 | 600) => "busy",
                    Some(603) => "rejected",
                    Some(480) if *why == "ring timeout" => "no-answer",
                    Some(404 | 480 | 410) => "unavailable",
                    Some(_) => "failed",
                };
                Ending {
                    outcome,
                    end: None,
                    status: code,
                    why: Some(*why),
                }
            }
            End::Failed => Ending {
                outcome: "failed",
                end: None,
                status: Some(500),
                why: Some("internal error"),
            },
        }
    }
}

/// Who is calling, once admitted.
struct Admitted {
    slot: CallSlot,
    engine: Arc<Engine>,
    number: String,
    user: Option<String>,
    from_trunk: bool,
    dialed: String,
    offer_text: String,
    caller_security: LegSecurity,
    caller_protocol: String,
}

/// A new INVITE outside any dialog.
pub(crate) async fn incoming(shared: Arc<Shared>, mut tx: Transaction, peer: Peer) {
    let Some(admitted) = admit(&shared, &mut tx, &peer).await else {
        return;
    };
    let (state_sender, mut states) = shared.dialogs.new_dialog_state_channel();
    let a = match shared.dialogs.get_or_create_server_invite(
        &tx,
        state_sender.clone(),
        None,
        Some(contact_uri(
            &shared,
            None,
            peer.transport,
            tx.original.uri.scheme == Some(rsipstack::sip::Scheme::Sips),
        )),
    ) {
        Ok(dialog) => dialog,
        Err(error) => {
            let why = format!("cannot create the caller's dialog: {error}");
            shared
                .refuse(
                    &mut tx,
                    &peer,
                    StatusCode::ServerInternalError,
                    Vec::new(),
                    Severity::Warn,
                    &why,
                )
                .await;
            return;
        }
    };
    let call_id = a.id().call_id.clone();
    let (commands, command_receiver) = tokio::sync::mpsc::unbounded_channel();
    let caller_peer = shared.dialog_peer(&peer);
    shared.routes().insert(
        call_id.clone(),
        DialogRoute {
            call: commands.clone(),
            peer: caller_peer,
        },
    );
    // The INVITE transaction lives on its own task: it answers CANCEL,
    // retransmits our final answer and waits for the ACK.
    let mut transaction_dialog = a.clone();
    tokio::spawn(async move {
        transaction_dialog.handle(&mut tx).await.ok();
    });

    let Admitted {
        mut slot,
        engine,
        number,
        user,
        from_trunk,
        dialed,
        offer_text,
        caller_security,
        caller_protocol,
    } = admitted;
    let presence = user
        .as_deref()
        .map(|user| PresenceGuard::enter(&shared.live, user));
    let request = CallRequest {
        call_id: call_id.clone(),
        from: number.clone(),
        to: dialed,
        via: Via::Direct,
        by: None,
        no_answer: false,
        external_caller: from_trunk,
    };
    let hooks = shared.control.hooks();
    let placed = std::panic::AssertUnwindSafe(engine.place(&request, hooks.as_ref()))
        .catch_unwind()
        .await;
    slot.setup_done();
    let refusal = match placed.as_ref() {
        Ok(outcome) => refusal_of(outcome.outcome),
        Err(_) => Some((StatusCode::ServerInternalError, "call setup failed")),
    };
    let media = match refusal {
        None => shared.relay.allocate().map_err(|error| {
            tracing::error!(call = %call_id, %error, "no media ports for a call");
        }),
        Some(_) => Err(()),
    };
    let Ok(outcome) = placed else {
        refuse_caller(
            &a,
            &call_id,
            StatusCode::ServerInternalError,
            "call setup failed",
        );
        shared.dialogs.remove_dialog(&a.id());
        drop_routes(&shared, &commands, std::slice::from_ref(&call_id));
        return;
    };
    let media = match (refusal, media) {
        (None, Ok(media)) => media,
        (refusal, _) => {
            let (status, why) =
                refusal.unwrap_or((StatusCode::ServiceUnavailable, "no media ports"));
            refuse_caller(&a, &call_id, status.clone(), why);
            let record = CallRecord {
                request,
                outcome,
                answered_by: None,
                answered_for: None,
                media: None,
            };
            finish(
                &shared,
                &call_id,
                &End::NotConnected(Some(status), why),
                record,
                &CallLog::new(user.as_deref()),
                None,
            );
            shared.dialogs.remove_dialog(&a.id());
            drop_routes(&shared, &commands, std::slice::from_ref(&call_id));
            return;
        }
    };
    shared.control.call_started(&request, &outcome);
    let no_answer_at = legs::no_answer_delay(&engine, &outcome).map(|delay| Instant::now() + delay);
    let call_log = CallLog::new(user.as_deref());
    let mut call = Call {
        shared: shared.clone(),
        origin: Origin::Dialled,
        engine,
        hooks,
        call_id: call_id.clone(),
        request,
        outcome,
        rung: HashSet::new(),
        caller: CallerSide {
            dialog: Some(SideDialog {
                dialog: a,
                call_id: call_id.clone(),
            }),
            number,
            user,
            presence,
            peer: caller_peer,
            sent_sdp: None,
            security: caller_security,
            protocol: caller_protocol,
        },
        legs: Vec::new(),
        phase: Phase::Ringing { alerted: false },
        media,
        offer_text,
        callee_sdp: None,
        state_sender,
        commands,
        command_receiver,
        answered_at: None,
        no_answer_at,
        ring_deadline: None,
        slot: Some(slot),
        released: Vec::new(),
        log: call_log,
    };
    let ended = std::panic::AssertUnwindSafe(call.run(&mut states))
        .catch_unwind()
        .await;
    conclude(call, states, ended);
}

/// The end of a call's task, however its state machine ended (a panic
/// included): every leg ended, the call recorded, its routes dropped.
fn conclude(mut call: Call, states: DialogStateReceiver, ended: std::thread::Result<End>) {
    let call_id = call.call_id.clone();
    let shared = call.shared.clone();
    let end = match ended {
        Ok(end) => end,
        Err(_) => {
            tracing::error!(call = %call_id, "the call's task failed: ending every leg");
            call.abort();
            End::Failed
        }
    };
    let commands = call.commands.clone();
    let mut keys: Vec<String> = vec![call_id.clone()];
    keys.extend(call.legs.iter().map(|leg| leg.call_id.clone()));
    keys.extend(call.caller.dialog.iter().map(|side| side.call_id.clone()));
    keys.extend(call.released.iter().map(|dialog| dialog.id().call_id));
    call.finish(end, states);
    drop_routes(&shared, &commands, &keys);
}

/// The caller's final status (and why) when the engine's outcome is not a
/// ringing call.
fn refusal_of(outcome: Outcome) -> Option<(StatusCode, &'static str)> {
    match outcome {
        Outcome::Ringing => None,
        Outcome::Rejected => Some((StatusCode::Decline, "rejected")),
        Outcome::Busy => Some((StatusCode::BusyHere, "busy")),
        Outcome::Unavailable => Some((StatusCode::TemporarilyUnavailable, "unavailable")),
    }
}

/// Removes this call's dialogs (`keys`) from the routes, each only while it
/// is still this call's: a party handed over to another call is
/// registered there by now.
fn drop_routes(shared: &Shared, commands: &CallCommands, keys: &[String]) {
    let mut routes = shared.routes();
    for key in keys {
        if routes
            .get(key)
            .is_some_and(|route| route.call.same_channel(commands))
        {
            routes.remove(key);
        }
    }
}

/// Answers the caller's INVITE with a final failure (the call's line says
/// so when it ends).
fn refuse_caller(a: &InviteDialog, call_id: &str, status: StatusCode, why: &str) {
    tracing::debug!(call = %call_id, status = u16::from(status.clone()), why, "call not connected");
    a.reject(Some(status), None).ok();
}

/// The admission of a new call: the host's limits, the caller's identity
/// (the trunk by its real address, everyone else by digest), the number
/// and the dial policy, the offer. Answers and logs every refusal.
async fn admit(shared: &Shared, tx: &mut Transaction, peer: &Peer) -> Option<Admitted> {
    let from_trunk = shared.trunk.is_trunk(peer);
    let mut slot = match shared
        .limits
        .admit((!from_trunk).then(|| peer.address.ip()))
    {
        Ok(slot) => slot,
        Err(refusal) => {
            let severity = match refusal {
                LimitRefusal::HostFull(_) => Severity::Info,
                _ => Severity::Warn,
            };
            let retry = Header::RetryAfter("5".into());
            shared
                .refuse(
                    tx,
                    peer,
                    StatusCode::ServiceUnavailable,
                    vec![retry],
                    severity,
                    &refusal,
                )
                .await;
            return None;
        }
    };
    let Some(engine) = shared.control.engine() else {
        shared
            .refuse(
                tx,
                peer,
                StatusCode::ServiceUnavailable,
                Vec::new(),
                Severity::Warn,
                &"no directory loaded",
            )
            .await;
        return None;
    };
    let (number, user) = if from_trunk {
        let from = tx
            .original
            .from_header()
            .ok()
            .and_then(|from| from.uri().ok())
            .and_then(|uri| uri.auth.map(|auth| auth.user))
            .unwrap_or_default();
        (safe_number(&from), None)
    } else {
        let user = shared
            .authenticate(tx, peer, Challenge::Proxy, None)
            .await?;
        if let Err(refusal) = slot.take_user(&user) {
            let why = format!("user {user:?}: {refusal}");
            shared
                .refuse(
                    tx,
                    peer,
                    StatusCode::Forbidden,
                    Vec::new(),
                    Severity::Warn,
                    &why,
                )
                .await;
            return None;
        }
        let number = engine
            .directory()
            .user(&user)
            .map(|u| u.primary_number().to_string())
            .unwrap_or_else(|| user.clone());
        (number, Some(user))
    };
    let dialed = tx
        .original
        .uri
        .auth
        .as_ref()
        .map(|auth| auth.user.clone())
        .unwrap_or_default();
    let callee = engine.party(&dialed);
    if dialed.is_empty() || safe_number(&dialed) != dialed || callee.kind == PartyKind::Unknown {
        let why = format!("unknown number {:?}", safe_number(&dialed));
        shared
            .refuse(
                tx,
                peer,
                StatusCode::NotFound,
                Vec::new(),
                Severity::Info,
                &why,
            )
            .await;
        return None;
    }
    let dialler = match &user {
        Some(user) => Dialler::User(user),
        None => Dialler::Trunk,
    };
    if let Err(refusal) = shared.policy.check_call(
        dialler,
        &dialed,
        &callee,
        engine.directory().is_emergency(&dialed),
    ) {
        shared
            .refuse(
                tx,
                peer,
                StatusCode::Forbidden,
                Vec::new(),
                Severity::Warn,
                &refusal,
            )
            .await;
        return None;
    }
    // The offer, parsed once: its addresses checked, then its SRTP against
    // the caller's policy (both refusals are 488).
    let srtp = &shared.config.srtp;
    let negotiated = Sdp::parse_bytes(&tx.original.body)
        .map_err(|error| format!("no usable SDP offer: {error}"))
        .and_then(|offer| {
            offer
                .check_addresses(peer.address.ip(), shared.address_policy)
                .map_err(|error| format!("SDP offer refused: {error}"))?;
            match offer.audio() {
                Some(audio) => crate::srtp::caller_leg(
                    audio,
                    srtp.policy(if from_trunk { None } else { user.as_deref() }),
                    srtp.keys_allowed(peer.transport),
                    peer.transport,
                )
                .map(|security| (security, audio.protocol.clone()))
                .map_err(|refusal| refusal.to_string()),
                None => Ok((LegSecurity::Plain, "RTP/AVP".to_string())),
            }
        });
    let (caller_security, caller_protocol) = match negotiated {
        Ok(negotiated) => negotiated,
        Err(why) => {
            shared
                .refuse(
                    tx,
                    peer,
                    StatusCode::NotAcceptableHere,
                    Vec::new(),
                    Severity::Info,
                    &why,
                )
                .await;
            return None;
        }
    };
    let offer_text = String::from_utf8_lossy(&tx.original.body).into_owned();
    Some(Admitted {
        slot,
        engine,
        number,
        user,
        from_trunk,
        dialed,
        offer_text,
        caller_security,
        caller_protocol,
    })
}

/// How a call began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A phone or the trunk sent an INVITE: the caller's side is the
    /// server dialog of that INVITE, answered once a callee answers.
    Dialled,
    /// The host placed it for a user (click-to-dial): the caller's side is
    /// the user's phone, which answered before anyone else rang.
    ClickToDial,
}

/// A ringing call: its dialogs, relay and state, owned by the call's task.
struct Call {
    shared: Arc<Shared>,
    origin: Origin,
    engine: Arc<Engine>,
    hooks: Arc<dyn Hooks>,
    call_id: String,
    /// The caller's request, as recorded.
    request: CallRequest,
    /// The engine's latest answer (after forwards and transfers).
    outcome: CallOutcome,
    /// Rings already started (`user/number`), so a forward never rings a
    /// phone twice.
    rung: HashSet<String>,
    caller: CallerSide,
    legs: Vec<Leg>,
    phase: Phase,
    media: CallMedia,
    /// The caller's original offer.
    offer_text: String,
    /// The answered callee's SDP: the offer when the caller's side
    /// transfers the callee elsewhere.
    callee_sdp: Option<String>,
    state_sender: DialogStateSender,
    /// This call's own command channel (registered for its dialogs).
    commands: CallCommands,
    command_receiver: tokio::sync::mpsc::UnboundedReceiver<CallCommand>,
    answered_at: Option<Instant>,
    /// When the no-answer forward is due.
    no_answer_at: Option<Instant>,
    /// When ringing phones are given up (`sip.limits.ring_timeout_seconds`).
    ring_deadline: Option<Instant>,
    /// The call's share of the limits (given back as the call ends).
    slot: Option<CallSlot>,
    /// Dialogs that were the caller's side and were let go (transferors).
    released: Vec<InviteDialog>,
    /// What the call's log line tells beyond the engine's outcome.
    log: CallLog,
}

type Flow = ControlFlow<End>;

impl Call {
    async fn run(&mut self, states: &mut DialogStateReceiver) -> End {
        self.start_taps();
        if let Ok(sdp) = Sdp::parse(&self.offer_text) {
            let peer = self.caller.peer;
            self.point(MediaLeg::Caller, &sdp, peer);
        }
        self.media
            .set_srtp(MediaLeg::Caller, self.caller.security.keys());
        if !self.play_prompt(states).await {
            return End::NotConnected(None, "the caller hung up during the prompt");
        }
        let rings = self.outcome.rang.clone();
        self.ring(&rings).await;
        if self.legs.is_empty() {
            return self.refuse(StatusCode::TemporarilyUnavailable, "nobody to ring");
        }
        fault_injection(&self.request.to);
        self.connect(states).await
    }

    /// Rings until someone answers, the caller gives up or every leg
    /// fails; then relays until one side hangs up.
    async fn connect(&mut self, states: &mut DialogStateReceiver) -> End {
        let mut media_events = self.media.events();
        let shutdown = self.shared.shutdown.clone();
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            let no_answer_at = self.no_answer_at.map(tokio::time::Instant::from_std);
            let ring_deadline = self.ring_deadline.map(tokio::time::Instant::from_std);
            let flow = tokio::select! {
                state = states.recv() => match state {
                    Some(state) => self.on_state(state).await,
                    None => ControlFlow::Break(End::NotConnected(None, "the caller's dialog is gone")),
                },
                command = self.command_receiver.recv() => match command {
                    Some(CallCommand::HangUp { user, reply }) => self.on_hang_up(user, reply).await,
                    Some(command) => self.on_command(command),
                    None => ControlFlow::Continue(()),
                },
                _ = tokio::time::sleep_until(no_answer_at.unwrap_or_else(far)), if no_answer_at.is_some() => {
                    self.on_no_answer().await
                }
                _ = tokio::time::sleep_until(ring_deadline.unwrap_or_else(far)), if ring_deadline.is_some() => {
                    self.on_ring_timeout().await
                }
                event = async {
                    match media_events.as_mut() {
                        Some(events) => events.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match event {
                        Some(event) => self.on_media_event(event),
                        None => {
                            media_events = None;
                            ControlFlow::Continue(())
                        }
                    }
                }
                _ = shutdown.cancelled() => self.on_shutdown().await,
            };
            if let ControlFlow::Break(end) = flow {
                return end;
            }
        }
    }

    /// One dialog state of any of the call's dialogs.
    async fn on_state(&mut self, state: DialogState) -> Flow {
        match state {
            DialogState::Terminated(id, reason) => self.on_terminated(&id.call_id, &reason).await,
            DialogState::Early(id, response) => {
                self.on_early(&id.call_id, &response);
                ControlFlow::Continue(())
            }
            DialogState::Confirmed(id, response) => {
                self.on_confirmed(&id.call_id, &response);
                if self.phase == Phase::OriginAnswered {
                    return self.place_originated().await;
                }
                ControlFlow::Continue(())
            }
            DialogState::Refer(id, refer, handle) => self.on_refer(&id, &refer, handle).await,
            DialogState::Updated(id, offer, handle) => {
                self.on_reoffer(&id.call_id, &offer, handle).await;
                ControlFlow::Continue(())
            }
            DialogState::Info(id, info, handle) => {
                handle.reply(StatusCode::OK).await.ok();
                if let Some(digit) = crate::refer::info_digit(&info.body) {
                    let who = self.party_of_dialog(&id.call_id);
                    self.dtmf_event(&who, digit);
                }
                ControlFlow::Continue(())
            }
            DialogState::Options(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Message(_, _, handle) => {
                handle.reply(StatusCode::OK).await.ok();
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// The caller's side dialog has this Call-ID.
    fn is_caller_dialog(&self, call_id: &str) -> bool {
        self.caller
            .dialog
            .as_ref()
            .is_some_and(|side| side.call_id == call_id)
    }

    /// The connected callee leg, if any.
    fn callee(&self) -> Option<usize> {
        match self.phase {
            Phase::Connected { callee } | Phase::CallerTransferring { callee } => Some(callee),
            Phase::Ringing { .. }
            | Phase::CalleeTransferring
            | Phase::Originating
            | Phase::OriginAnswered => None,
        }
    }

    /// The number of whoever is on the dialog `call_id`, for events.
    fn party_of_dialog(&self, call_id: &str) -> String {
        if self.is_caller_dialog(call_id) {
            return self.caller.number.clone();
        }
        self.callee()
            .map(|index| self.legs[index].target.clone())
            .unwrap_or_default()
    }

    /// A dialog ended: the caller hung up or cancelled, the callee hung up,
    /// or a ringing phone refused.
    async fn on_terminated(
        &mut self,
        call_id: &str,
        reason: &rsipstack::dialog::dialog::TerminatedReason,
    ) -> Flow {
        if self.is_caller_dialog(call_id) {
            return ControlFlow::Break(self.caller_hung_up(reason).await);
        }
        let Some(index) = self.leg_index(call_id) else {
            return ControlFlow::Continue(());
        };
        if Some(index) == self.callee() {
            // The callee hung up.
            self.drop_legs(Some(index));
            self.bye_caller().await;
            return ControlFlow::Break(End::HungUp("callee"));
        }
        if !self.legs[index].is_live() {
            return ControlFlow::Continue(());
        }
        let status = legs::status_of(reason);
        tracing::debug!(call = %self.call_id, leg = %self.legs[index].call_id, ?reason, "leg failed");
        self.legs[index].state = LegState::Failed(status);
        let side = self.legs[index].side;
        match self.phase {
            Phase::CallerTransferring { callee }
                if side == MediaLeg::Caller && self.live_legs_on(MediaLeg::Caller) == 0 =>
            {
                // Nobody took the caller's transfer: release the callee.
                self.legs[callee].dialog.bye().await.ok();
                return ControlFlow::Break(End::HungUp("transfer failed"));
            }
            Phase::CalleeTransferring if self.live_legs() == 0 => {
                // The transfer target did not take the call.
                self.bye_caller().await;
                return ControlFlow::Break(End::HungUp("transfer failed"));
            }
            Phase::Ringing { .. } if self.live_legs() == 0 => {
                let status = self.failure_status();
                return ControlFlow::Break(self.refuse(status, "every phone refused"));
            }
            Phase::Originating if self.live_legs() == 0 => {
                let status = self.failure_status();
                return ControlFlow::Break(End::NotConnected(
                    Some(status),
                    "the user's phone did not answer",
                ));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// The caller's side hung up (or cancelled while it rang).
    async fn caller_hung_up(
        &mut self,
        reason: &rsipstack::dialog::dialog::TerminatedReason,
    ) -> End {
        let callee = self.callee();
        self.drop_legs(callee);
        match (self.phase, callee) {
            (_, Some(index)) => {
                self.legs[index].dialog.bye().await.ok();
                End::HungUp("caller")
            }
            (Phase::CalleeTransferring, None) => End::HungUp("caller"),
            _ => {
                tracing::debug!(call = %self.call_id, ?reason, "caller gave up");
                End::NotConnected(None, "the caller hung up")
            }
        }
    }

    /// Ends the caller's side dialog with a BYE (if there is one).
    async fn bye_caller(&self) {
        if let Some(side) = &self.caller.dialog {
            side.dialog.bye().await.ok();
        }
    }

    /// Refuses an in-dialog request (REFER, re-INVITE) and logs why, once.
    async fn refuse_request(
        &self,
        handle: rsipstack::dialog::dialog::TransactionHandle,
        status: StatusCode,
        why: &str,
    ) {
        self.refuse_request_as(handle, status, why, Severity::Info)
            .await;
    }

    /// [`Call::refuse_request`], as loud as `severity` says.
    async fn refuse_request_as(
        &self,
        handle: rsipstack::dialog::dialog::TransactionHandle,
        status: StatusCode,
        why: &str,
        severity: Severity,
    ) {
        let code = u16::from(status.clone());
        match severity {
            Severity::Info => {
                tracing::info!(call = %self.call_id, status = code, reason = %why, "request refused")
            }
            Severity::Warn => {
                tracing::warn!(call = %self.call_id, status = code, reason = %why, "request refused")
            }
        }
        handle.reply(status).await.ok();
    }

    /// Answers the caller with a final failure (a click-to-dial user's
    /// phone, which answered already, gets a BYE); the call is not
    /// connected.
    fn refuse(&self, status: StatusCode, why: &'static str) -> End {
        if let Some(side) = &self.caller.dialog {
            match self.origin {
                Origin::Dialled => refuse_caller(&side.dialog, &self.call_id, status.clone(), why),
                Origin::ClickToDial => {
                    let dialog = side.dialog.clone();
                    tokio::spawn(async move { dialog.bye().await.ok() });
                }
            }
        }
        End::NotConnected(Some(status), why)
    }

    /// The no-answer time passed: the engine is asked where an unanswered
    /// call goes (modules included, exactly as `simulate --no-answer`).
    async fn on_no_answer(&mut self) -> Flow {
        self.no_answer_at = None;
        if !matches!(self.phase, Phase::Ringing { .. }) {
            return ControlFlow::Continue(());
        }
        let again = CallRequest {
            no_answer: true,
            ..self.request.clone()
        };
        let next = self.engine.place(&again, self.hooks.as_ref()).await;
        if next.outcome == Outcome::Ringing && !next.forwards.is_empty() {
            let to = next
                .forwards
                .last()
                .map_or("", |forward| forward.to.as_str());
            tracing::debug!(call = %self.call_id, to, "no answer: forwarding");
            self.drop_legs(None);
            let before = self.legs.len();
            let rings = next.rang.clone();
            self.outcome = next;
            self.ring(&rings).await;
            if self.legs.len() == before {
                return ControlFlow::Break(self.refuse(
                    StatusCode::TemporarilyUnavailable,
                    "forward target not reachable",
                ));
            }
        }
        ControlFlow::Continue(())
    }

    /// Phones rang for `sip.limits.ring_timeout_seconds` without an answer.
    async fn on_ring_timeout(&mut self) -> Flow {
        self.ring_deadline = None;
        tracing::debug!(call = %self.call_id, phase = ?self.phase, "ring timeout: giving up");
        match self.phase {
            Phase::Ringing { .. } => {
                self.drop_legs(None);
                ControlFlow::Break(self.refuse(StatusCode::TemporarilyUnavailable, "ring timeout"))
            }
            Phase::CalleeTransferring => {
                self.drop_legs(None);
                self.bye_caller().await;
                ControlFlow::Break(End::HungUp("transfer not answered"))
            }
            Phase::CallerTransferring { callee } => {
                self.drop_legs(Some(callee));
                self.legs[callee].dialog.bye().await.ok();
                ControlFlow::Break(End::HungUp("transfer not answered"))
            }
            Phase::Originating => {
                self.drop_legs(None);
                ControlFlow::Break(End::NotConnected(None, "the user's phone did not answer"))
            }
            Phase::Connected { .. } | Phase::OriginAnswered => ControlFlow::Continue(()),
        }
    }

    fn on_media_event(&self, event: MediaEvent) -> Flow {
        if let MediaEvent::Dtmf { leg, digit, .. } = event {
            let who = match leg {
                MediaLeg::Caller => self.caller.number.clone(),
                MediaLeg::Callee => self
                    .callee()
                    .map(|i| self.legs[i].target.clone())
                    .unwrap_or_default(),
            };
            self.dtmf_event(&who, digit);
        }
        ControlFlow::Continue(())
    }

    /// The host is stopping: end the call cleanly.
    async fn on_shutdown(&mut self) -> Flow {
        self.end_now("shutdown", StatusCode::ServiceUnavailable, "host stopping")
            .await
    }

    /// A party asked (through the host's services) to end the call.
    async fn on_hang_up(
        &mut self,
        user: String,
        reply: std::sync::mpsc::SyncSender<Result<(), originate::CallRefusal>>,
    ) -> Flow {
        let party = self.caller.user.as_deref() == Some(user.as_str())
            || self
                .legs
                .iter()
                .any(|leg| leg.is_live() && leg.user.as_deref() == Some(user.as_str()));
        if !party {
            let _ = reply.send(Err(originate::CallRefusal::NotAParty {
                user,
                call: self.call_id.clone(),
            }));
            return ControlFlow::Continue(());
        }
        let _ = reply.send(Ok(()));
        tracing::debug!(call = %self.call_id, user = %user, "hung up for a party");
        self.end_now(
            "hung up",
            StatusCode::RequestTerminated,
            "hung up for a party",
        )
        .await
    }

    /// Ends every dialog of the call now: BYE to connected parties, CANCEL
    /// to ringing phones, `unanswered` to a caller still waiting.
    async fn end_now(
        &mut self,
        ending: &'static str,
        unanswered: StatusCode,
        why: &'static str,
    ) -> Flow {
        let callee = self.callee();
        self.drop_legs_and_wait(callee).await;
        if let Some(index) = callee {
            let leg = self.legs[index].dialog.clone();
            let caller = self.caller.dialog.as_ref().map(|side| side.dialog.clone());
            let bye_caller = async {
                if let Some(caller) = caller {
                    caller.bye().await.ok();
                }
            };
            let _ = tokio::join!(bye_caller, leg.bye());
            return ControlFlow::Break(End::HungUp(ending));
        }
        match self.phase {
            Phase::CalleeTransferring => {
                self.bye_caller().await;
                ControlFlow::Break(End::HungUp(ending))
            }
            Phase::Originating => ControlFlow::Break(End::NotConnected(None, why)),
            _ => ControlFlow::Break(self.refuse(unanswered, why)),
        }
    }

    /// After a panic in the call's task: every dialog still up is ended
    /// (CANCEL or BYE; the caller gets 500 if it was never answered).
    fn abort(&mut self) {
        if let Some(side) = &self.caller.dialog {
            let dialog = side.dialog.clone();
            if dialog.state().is_confirmed() {
                tokio::spawn(async move { dialog.bye().await.ok() });
            } else {
                dialog
                    .reject(Some(StatusCode::ServerInternalError), None)
                    .ok();
            }
        }
        for leg in &mut self.legs {
            if leg.is_live() {
                leg.state = LegState::Cancelled;
                let dialog = leg.dialog.clone();
                tokio::spawn(async move { dialog.hangup().await.ok() });
            }
        }
    }

    /// The call is over: modules hear it, the host records it, and a party
    /// handed over to another call keeps its dialog there.
    fn finish(mut self, end: End, mut states: DialogStateReceiver) {
        // Free first: a user whose phone just hung up may be called again
        // at once, before the record is written.
        self.caller.presence = None;
        for leg in &mut self.legs {
            leg.presence = None;
        }
        self.slot = None;
        let answered_by = self.callee().map(|i| self.legs[i].target.clone());
        let stats = self.media.stats();
        let record = CallRecord {
            request: self.request.clone(),
            outcome: std::mem::replace(&mut self.outcome, CallOutcome::unavailable()),
            answered_by,
            answered_for: self.answered_at.map(|at| at.elapsed()),
            media: serde_json::to_string(&stats).ok(),
        };
        finish(
            &self.shared,
            &self.call_id,
            &end,
            record,
            &self.log,
            Some(&stats),
        );
        self.forget_dialogs(&end);
        if let End::HandedOver {
            states: target,
            partner_call_id,
        } = end
        {
            // The partner's dialog was created on this call's channel: its
            // states (BYE, re-INVITE, REFER) now belong to the other call.
            tokio::spawn(async move {
                while let Some(state) = states.recv().await {
                    if state.id().call_id != partner_call_id {
                        continue;
                    }
                    let last = state.is_terminated();
                    if target.send(state).is_err() || last {
                        break;
                    }
                }
            });
        }
    }
}

impl Call {
    /// Takes this call's dialogs out of the stack's dialog registry, which
    /// keeps every confirmed dialog until told (a leak per call otherwise);
    /// not a party's handed over to another call.
    fn forget_dialogs(&self, end: &End) {
        let handed_over = match end {
            End::HandedOver {
                partner_call_id, ..
            } => Some(partner_call_id.as_str()),
            _ => None,
        };
        let dialogs = self
            .caller
            .dialog
            .iter()
            .map(|side| &side.dialog)
            .chain(self.legs.iter().map(|leg| &leg.dialog))
            .chain(self.released.iter());
        for dialog in dialogs {
            let id = dialog.id();
            if Some(id.call_id.as_str()) != handed_over {
                self.shared.dialogs.remove_dialog(&id);
            }
        }
    }
}

/// The end of every call, ringing or not: the hangup event, the call's
/// one log line, the record.
fn finish(
    shared: &Shared,
    call_id: &str,
    end: &End,
    record: CallRecord,
    call_log: &CallLog,
    media: Option<&[callhost_media::relay::LegStats; 2]>,
) {
    let cause = end.cause();
    let hooks = shared.control.hooks();
    log::log_call(&record, call_log, &end.ending(), media);
    // Recorded first, so that modules hear of the call-list entries
    // (`call_listed`) before the hangup.
    shared.control.call_ended(record);
    events::emit(hooks.as_ref(), call_id, EventKind::HANGUP, None, &cause);
}

/// Our Contact URI for a dialog on `transport` (with a user part where
/// the other side shows it): the peer sends its in-dialog requests there,
/// so it names the transport and, for TLS, the TLS port. A dialog the
/// peer set up with a `sips:` URI gets a `sips:` Contact (RFC 3261
/// §12.1.1), on TLS only.
pub(crate) fn contact_uri(
    shared: &Shared,
    user: Option<&str>,
    transport: rsipstack::sip::Transport,
    sips: bool,
) -> Uri {
    let (address, parameter) = match transport {
        rsipstack::sip::Transport::Tls => {
            (shared.tls_local.unwrap_or(shared.local), ";transport=tls")
        }
        rsipstack::sip::Transport::Tcp => (shared.local, ";transport=tcp"),
        _ => (shared.local, ""),
    };
    let (scheme, parameter) = match transport {
        rsipstack::sip::Transport::Tls if sips => ("sips", ""),
        _ => ("sip", parameter),
    };
    let text = match user {
        Some(user) => format!("{scheme}:{}@{address}{parameter}", safe_number(user)),
        None => format!("{scheme}:{address}{parameter}"),
    };
    Uri::try_from(text.as_str()).expect("a SIP URI from a socket address")
}

/// Test builds only: a call to the number in `CALLHOST_SIP_PANIC_ON`
/// panics inside its task, so the tests can show that a failing call ends
/// cleanly. Release builds have no such switch.
fn fault_injection(dialled: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("CALLHOST_SIP_PANIC_ON").is_ok_and(|number| number == dialled) {
        panic!("fault injection: CALLHOST_SIP_PANIC_ON={dialled}");
    }
    #[cfg(not(debug_assertions))]
    let _ = dialled;
}
