//! Calls the host places itself (click-to-dial for a client API): the
//! user's own phones ring first, on the caller's side of the relay; the
//! one that answers becomes the call's calling side, and the call goes on
//! as if the user had dialled the number.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use callhost_media::relay::{CallMedia, Leg as MediaLeg};
use callhost_pbx::engine::{CallOutcome, CallRequest, Engine, Ring, Via};
use callhost_plugin_abi::PartyKind;
use futures::FutureExt as _;
use rsipstack::sip::StatusCode;

use super::legs::{self, LegPlan};
use super::log::CallLog;
use super::{conclude, refusal_of, Call, CallCommand, CallerSide, End, Flow, Origin, Phase};
use crate::identity::safe_number;
use crate::limits::CallSlot;
use crate::policy::Dialler;
use crate::server::{DialogPeer, DialogRoute, Shared};
use crate::srtp::LegSecurity;

/// Places and ends calls for the host's services. Cheap to clone; it does
/// something once `SipServer::serve` runs (before that, and after, every
/// request is refused with [`CallRefusal::NotServing`]).
#[derive(Clone, Default)]
pub struct Telephony {
    serving: Arc<OnceLock<Serving>>,
}

struct Serving {
    shared: Weak<Shared>,
    runtime: tokio::runtime::Handle,
}

/// Why a call was not placed or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefusal {
    #[error("no SIP server is running")]
    NotServing,
    #[error("no user {0:?} in the directory")]
    UnknownUser(String),
    #[error("user {0:?} has no phone registered")]
    NotRegistered(String),
    #[error("unknown number {0:?}")]
    UnknownNumber(String),
    #[error("{0}")]
    Refused(String),
    #[error("no call {0:?} in progress")]
    NoSuchCall(String),
    #[error("user {user:?} is not a party of call {call:?}")]
    NotAParty { user: String, call: String },
}

impl Telephony {
    /// Called by `serve` once its shared state exists.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        let _ = self.serving.set(Serving {
            shared: Arc::downgrade(shared),
            runtime: tokio::runtime::Handle::current(),
        });
    }

    fn shared(&self) -> Result<(Arc<Shared>, tokio::runtime::Handle), CallRefusal> {
        let serving = self.serving.get().ok_or(CallRefusal::NotServing)?;
        let shared = serving.shared.upgrade().ok_or(CallRefusal::NotServing)?;
        if shared.shutdown.is_cancelled() {
            return Err(CallRefusal::NotServing);
        }
        Ok((shared, serving.runtime.clone()))
    }

    /// Rings `user`'s phones; when one answers, calls `number` for them and
    /// connects both. Returns the call's id while the phones ring. Checked
    /// before anything rings: the user, a registered phone, the number, the
    /// dial policy and the limits, as for a call the user dials.
    pub fn originate(&self, user: &str, number: &str) -> Result<String, CallRefusal> {
        let (shared, runtime) = self.shared()?;
        super::originated(shared, runtime, user, number)
    }

    /// Ends the call `call_id` (the id `originate` returned, or a call's
    /// id in the modules' events) if `user` is one of its parties.
    pub fn hang_up(&self, user: &str, call_id: &str) -> Result<(), CallRefusal> {
        let (shared, _) = self.shared()?;
        super::hang_up(&shared, user, call_id)
    }
}

/// What the user's phones are offered: the relay's caller side (the
/// address and port are put in by `describe_leg`), the codecs the relay
/// passes through and RFC 4733 events. The answer chosen from it is what
/// the called party is offered.
const ORIGIN_OFFER: &str = "v=0\r\n\
o=callhost 1 1 IN IP4 0.0.0.0\r\n\
s=callhost\r\n\
c=IN IP4 0.0.0.0\r\n\
t=0 0\r\n\
m=audio 9 RTP/AVP 8 0 9 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// How long a party's request to end a call waits for the call's answer.
const HANG_UP_ANSWER: Duration = Duration::from_secs(2);

/// No SIP peer has this address: the route of a click-to-dial call's own
/// id (by which it is ended) takes no in-dialog request.
const NOBODY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Checks a click-to-dial request and starts its call on the SIP runtime.
pub(crate) fn originated(
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    user: &str,
    number: &str,
) -> Result<String, CallRefusal> {
    let engine = shared
        .control
        .engine()
        .ok_or_else(|| CallRefusal::Refused("no directory loaded".into()))?;
    let own_number = engine
        .directory()
        .user(user)
        .map(|entry| entry.primary_number().to_string())
        .ok_or_else(|| CallRefusal::UnknownUser(safe_number(user)))?;
    if !shared.live.registrar.is_registered(user) {
        return Err(CallRefusal::NotRegistered(user.to_string()));
    }
    let number = number.trim();
    let callee = engine.party(number);
    if number.is_empty() || safe_number(number) != number || callee.kind == PartyKind::Unknown {
        return Err(CallRefusal::UnknownNumber(safe_number(number)));
    }
    shared
        .policy
        .check_call(
            Dialler::User(user),
            number,
            &callee,
            engine.directory().is_emergency(number),
        )
        .map_err(|refusal| CallRefusal::Refused(refusal.to_string()))?;
    let mut slot = shared
        .limits
        .admit(None)
        .map_err(|refusal| CallRefusal::Refused(refusal.to_string()))?;
    slot.take_user(user)
        .map_err(|refusal| CallRefusal::Refused(format!("user {user:?}: {refusal}")))?;
    let media = shared
        .relay
        .allocate()
        .map_err(|error| CallRefusal::Refused(format!("no media ports: {error}")))?;
    let call_id = format!("{}@callhost", hex::encode(rand::random::<[u8; 12]>()));
    let target_label = callee.label().to_string();
    let origin = Originated {
        call_id: call_id.clone(),
        user: user.to_string(),
        own_number,
        number: number.to_string(),
        target_label,
    };
    runtime.spawn(run(shared, engine, slot, media, origin));
    Ok(call_id)
}

/// A click-to-dial call as asked for.
struct Originated {
    call_id: String,
    user: String,
    own_number: String,
    number: String,
    /// What the user's phone shows while it rings: the target's name or
    /// number.
    target_label: String,
}

/// The click-to-dial call's task: the user's phones ring; the rest is the
/// call's state machine, from [`Phase::Originating`].
async fn run(
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    slot: CallSlot,
    media: CallMedia,
    origin: Originated,
) {
    let (state_sender, mut states) = shared.dialogs.new_dialog_state_channel();
    let (commands, command_receiver) = tokio::sync::mpsc::unbounded_channel();
    shared.routes().insert(
        origin.call_id.clone(),
        DialogRoute {
            call: commands.clone(),
            peer: DialogPeer::Host(NOBODY),
        },
    );
    let request = CallRequest {
        call_id: origin.call_id.clone(),
        from: origin.own_number.clone(),
        to: origin.number.clone(),
        via: Via::Direct,
        by: None,
        no_answer: false,
        external_caller: false,
    };
    let hooks = shared.control.hooks();
    tracing::info!(call = %origin.call_id, user = %origin.user, to = %origin.number, "click-to-dial: ringing the user's phones");
    let mut call = Call {
        shared: shared.clone(),
        origin: Origin::ClickToDial,
        engine,
        hooks,
        call_id: origin.call_id.clone(),
        request,
        outcome: CallOutcome::unavailable(),
        rung: HashSet::new(),
        caller: CallerSide {
            dialog: None,
            number: origin.own_number.clone(),
            user: Some(origin.user.clone()),
            presence: None,
            peer: DialogPeer::Host(NOBODY),
            sent_sdp: None,
            security: LegSecurity::Plain,
            protocol: "RTP/AVP".to_string(),
        },
        legs: Vec::new(),
        phase: Phase::Originating,
        media,
        offer_text: String::new(),
        callee_sdp: None,
        state_sender,
        commands,
        command_receiver,
        answered_at: None,
        no_answer_at: None,
        ring_deadline: None,
        slot: Some(slot),
        released: Vec::new(),
        log: CallLog::new(Some(&origin.user)),
    };
    let own = Ring {
        user: Some(origin.user.clone()),
        number: origin.own_number.clone(),
        display: origin.target_label.clone(),
        waiting: false,
        group: None,
        mobile: false,
    };
    let plan = LegPlan {
        side: MediaLeg::Caller,
        offer: ORIGIN_OFFER.to_string(),
        from_number: origin.number.clone(),
    };
    call.ring_with(&[own], &plan).await;
    let ended = if call.legs.is_empty() {
        Ok(End::NotConnected(
            Some(StatusCode::TemporarilyUnavailable),
            "no phone of the user to ring",
        ))
    } else {
        std::panic::AssertUnwindSafe(call.connect(&mut states))
            .catch_unwind()
            .await
    };
    conclude(call, states, ended);
}

impl Call {
    /// One of the user's phones answered a click-to-dial call: it is the
    /// caller's side; its answer is what the number will be offered.
    pub(super) fn origin_answered(&mut self, index: usize, response: &rsipstack::sip::Response) {
        tracing::debug!(call = %self.call_id, answered_by = %self.legs[index].target, "click-to-dial: the user answered");
        self.take_caller_side(index, response);
        self.offer_text = String::from_utf8_lossy(&response.body).into_owned();
        self.ring_deadline = None;
        self.drop_legs_on(MediaLeg::Caller);
        self.phase = Phase::OriginAnswered;
    }

    /// Places the click-to-dial call's number, as if the user had dialled
    /// it: the engine (and the modules) decide, the callees ring.
    pub(super) async fn place_originated(&mut self) -> Flow {
        let placed =
            std::panic::AssertUnwindSafe(self.engine.place(&self.request, self.hooks.as_ref()))
                .catch_unwind()
                .await;
        if let Some(slot) = &mut self.slot {
            slot.setup_done();
        }
        let Ok(outcome) = placed else {
            return ControlFlow::Break(
                self.refuse(StatusCode::ServerInternalError, "call setup failed"),
            );
        };
        self.outcome = outcome;
        if let Some((status, why)) = refusal_of(self.outcome.outcome) {
            return ControlFlow::Break(self.refuse(status, why));
        }
        self.shared
            .control
            .call_started(&self.request, &self.outcome);
        self.no_answer_at =
            legs::no_answer_delay(&self.engine, &self.outcome).map(|delay| Instant::now() + delay);
        self.start_taps();
        // The user's phone is answered: nothing is sent to it while the
        // number rings.
        self.phase = Phase::Ringing { alerted: true };
        let rings = self.outcome.rang.clone();
        self.ring(&rings).await;
        if self.live_legs() == 0 {
            return ControlFlow::Break(
                self.refuse(StatusCode::TemporarilyUnavailable, "nobody to ring"),
            );
        }
        ControlFlow::Continue(())
    }
}

/// Asks the call `call_id` to end for `user`, and waits briefly for its
/// answer (called from the host's services, off the SIP runtime).
pub(crate) fn hang_up(shared: &Shared, user: &str, call_id: &str) -> Result<(), CallRefusal> {
    let no_call = || CallRefusal::NoSuchCall(safe_number(call_id));
    let call = shared
        .routes()
        .get(call_id)
        .map(|route| route.call.clone())
        .ok_or_else(no_call)?;
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    call.send(CallCommand::HangUp {
        user: user.to_string(),
        reply,
    })
    .map_err(|_| no_call())?;
    answer.recv_timeout(HANG_UP_ANSWER).map_err(|_| no_call())?
}
