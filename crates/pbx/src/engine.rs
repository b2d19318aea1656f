//! The call engine: one call's setup from dialled number to ringing phones.
//!
//! Every front end drives this engine: the simulator today, the SIP B2BUA
//! next. A front end resolves nothing itself; it hands a [`CallRequest`] in
//! and gets a [`CallOutcome`] back, then acts on it (rings phones, sends
//! 486…). Modules are reached only through [`Hooks`], so the engine knows
//! nothing of libraries or deadlines beyond passing the deadline on.
//!
//! The payloads modules see are the ABI's own types (`CallSetup`,
//! `Decision`): the engine builds them once, no conversion layer in between.
//!
//! Routing per hop, after the hooks decided:
//! 1. a reject ends the call;
//! 2. an always forward is followed unless bypassed;
//! 3. no phone online: the no-answer forward, else `unavailable`;
//! 4. DND (not bypassed) counts as busy;
//! 5. busy: call waiting (own or forced) rings with `waiting`, else the busy
//!    forward, else `busy`;
//! 6. otherwise the phone rings; if nobody answers, the no-answer forward.
//!
//! A forward to a user or group is a new hop, set up again with the hooks.
//! A forward back to the calling user ends the call as busy; a loop or a
//! chain longer than `max_forwards` rings the user where it stopped.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::std_types::{ROption, RString, RVec};
use callhost_numbers::ExternalNumber;
use callhost_plugin_abi::{
    Availability, CallEvent, CallSetup, Decision, Direction, EventKind, Forward, ForwardKind,
    Party, PartyKind, TapRequest, Transfer, TransferKind, UserState as AbiUserState,
};
use serde::Serialize;

use crate::directory::{Contact, DirectoryIndex, Group, Resolved, User, UserState};

/// How the call came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    #[default]
    Direct,
    /// `by` consulted the callee first, then connected `from`.
    AttendedTransfer,
    /// `by` sent `from` to the callee unannounced.
    BlindTransfer,
}

/// One call to set up.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub via: Via,
    /// The transferring party's number or user id, for the transfer kinds.
    pub by: Option<String>,
    /// Nobody picks up: no-answer forwards apply after ringing.
    pub no_answer: bool,
    /// `from` came in on the trunk: an outside caller, even when the number
    /// looks like an internal one or a user's DID (a carrier's `From` is
    /// whatever the other end wrote).
    pub external_caller: bool,
}

/// Who made a decision: the instance, its module and the module's version
/// (shared, so that reporting a decision copies no text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionSource {
    pub instance: String,
    pub module: String,
    pub version: String,
}

/// What one instance decided at one hop.
#[derive(Debug, Clone)]
pub struct HookDecision {
    pub source: Arc<DecisionSource>,
    pub decision: Decision,
    /// Set when the hook failed, panicked or missed the deadline.
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// How the engine reaches the modules.
pub trait Hooks: Send + Sync {
    /// Runs the setup hook of every active instance for this hop, in order,
    /// each seeing the merged decisions before it (in `setup.prior`, which
    /// is left merged); returns within `deadline`. Borrowed, not moved: the
    /// setup is large and the future is allocated per hop.
    fn call_setup<'a>(
        &'a self,
        setup: &'a mut CallSetup,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Vec<HookDecision>> + Send + 'a>>;

    /// Tells every instance that wants events; must not block.
    fn call_event(&self, event: &CallEvent);

    /// Whether anyone listens: events are not even built otherwise.
    fn wants_events(&self) -> bool {
        true
    }

    /// Every instance has decided this hop: `decision` is the hop's merged
    /// decision, what the call shows and does from here. Called once per
    /// hop, before the hop's routing and its events; must not block.
    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        let _ = (setup, decision);
    }
}

/// No modules at all.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn call_setup<'a>(
        &'a self,
        _setup: &'a mut CallSetup,
        _deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Vec<HookDecision>> + Send + 'a>> {
        Box::pin(async { Vec::new() })
    }

    fn call_event(&self, _event: &CallEvent) {}

    fn wants_events(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ringing,
    Rejected,
    Busy,
    Unavailable,
}

/// A phone that rang.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ring {
    /// The user, or `None` for an external number (trunk).
    pub user: Option<String>,
    pub number: String,
    /// Exactly what the phone shows.
    pub display: String,
    /// Rang as a waiting call during another call.
    pub waiting: bool,
    /// The group this ring came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The user's mobile, rung along with their phone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mobile: bool,
}

/// A forward that was followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardTaken {
    pub kind: &'static str,
    pub from_user: String,
    pub to: String,
}

/// A decision as reported, with the hop it was made for.
#[derive(Debug, Clone, Serialize)]
pub struct ReportedDecision {
    #[serde(flatten)]
    pub source: Arc<DecisionSource>,
    /// The callee of the hop (user or group id, or number).
    pub hop: Arc<str>,
    /// `+`-joined effects, `none` when the instance had no opinion.
    pub decision: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallOutcome {
    pub outcome: Outcome,
    pub rang: Vec<Ring>,
    /// The forwards followed, first first.
    pub forwards: Vec<ForwardTaken>,
    pub decisions: Vec<ReportedDecision>,
    /// Why the call did not ring, or what was unusual on the way (a
    /// forward not followed because of a loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time spent in module hooks.
    pub hook_micros: u64,
    /// The caller's name as modules resolved it (name fields of the last
    /// hop's decisions), for the called users' call lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// The called party's name on an outgoing call, as modules resolved it,
    /// for the calling user's call list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callee_name: Option<String>,
    /// Instances that asked for the call's media, and which legs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taps: Vec<MediaTap>,
    /// The first prompt an instance asked to play to the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<MediaPrompt>,
}

impl CallOutcome {
    /// Nothing rang, nothing decided yet: where every call's outcome starts.
    pub fn unavailable() -> CallOutcome {
        CallOutcome {
            outcome: Outcome::Unavailable,
            rang: Vec::new(),
            forwards: Vec::new(),
            decisions: Vec::new(),
            reason: None,
            hook_micros: 0,
            caller_name: None,
            callee_name: None,
            taps: Vec::new(),
            prompt: None,
        }
    }
}

/// An instance's request for a call's media frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaTap {
    pub instance: String,
    #[serde(serialize_with = "tap_legs")]
    pub legs: TapRequest,
}

fn tap_legs<S: serde::Serializer>(legs: &TapRequest, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match legs {
        TapRequest::None => "none",
        TapRequest::Caller => "caller",
        TapRequest::Callee => "callee",
        TapRequest::Both => "both",
    })
}

/// An instance's prompt for the caller: a path in its module's assets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaPrompt {
    pub instance: String,
    pub asset: String,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Total time all hooks of one call may take.
    pub setup_budget: Duration,
    /// Forwards followed at most per call (loops end earlier).
    pub max_forwards: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            setup_budget: Duration::from_millis(700),
            max_forwards: 5,
        }
    }
}

/// Live facts about users that only a front end knows: whether a phone is
/// registered and whether the user is in a call. The simulator has none and
/// uses the directory's simulated `registered` and `busy` flags.
pub trait Presence: Send + Sync {
    fn registered(&self, user_id: &str) -> bool;
    fn busy(&self, user_id: &str) -> bool;
}

pub struct Engine {
    directory: Arc<DirectoryIndex>,
    config: EngineConfig,
    presence: Option<Arc<dyn Presence>>,
}

/// Records which instance asked for taps or a prompt: the front end needs
/// to know whom to give the frames and whose assets hold the prompt.
fn note_media_requests(outcome: &mut CallOutcome, made: &HookDecision) {
    if made.decision.tap != TapRequest::None {
        match outcome
            .taps
            .iter_mut()
            .find(|t| t.instance == made.source.instance)
        {
            Some(tap) if tap.legs != made.decision.tap => tap.legs = TapRequest::Both,
            Some(_) => {}
            None => outcome.taps.push(MediaTap {
                instance: made.source.instance.clone(),
                legs: made.decision.tap,
            }),
        }
    }
    if let (ROption::RSome(asset), None) = (&made.decision.prompt, &outcome.prompt) {
        outcome.prompt = Some(MediaPrompt {
            instance: made.source.instance.clone(),
            asset: asset.to_string(),
        });
    }
}

/// Where a hop leads.
enum Next {
    Done(Outcome, Option<String>),
    Follow(ForwardKind, String),
}

/// Per-call state carried across hops.
struct CallState<'r> {
    request: &'r CallRequest,
    deadline: Instant,
    direction: Direction,
    caller: Party,
    transfer: ROption<Transfer>,
    forwards: Vec<Forward>,
    /// Decisions that hold for the whole call (names, flags, taps).
    carried: Decision,
    /// What the next phone shows when set by an always/busy forward.
    forwarded_display: Option<String>,
    /// The merged decisions of the latest hop (its bypass flags included).
    last_hop: Decision,
    visited: HashSet<String>,
    outcome: CallOutcome,
}

impl Engine {
    pub fn new(directory: Arc<DirectoryIndex>, config: EngineConfig) -> Engine {
        Engine {
            directory,
            config,
            presence: None,
        }
    }

    /// The same engine answering `registered` and `busy` from `presence`.
    pub fn with_presence(mut self, presence: Arc<dyn Presence>) -> Engine {
        self.presence = Some(presence);
        self
    }

    /// An engine on `directory` with this one's settings and live presence
    /// (a changed directory, the rest as it was).
    pub fn rebuilt(&self, directory: Arc<DirectoryIndex>) -> Engine {
        Engine {
            directory,
            config: self.config.clone(),
            presence: self.presence.clone(),
        }
    }

    /// A user's state: the directory's, with live presence laid over it.
    pub fn user_state(&self, user_id: &str) -> UserState {
        let mut state = self.directory.state(user_id);
        if let Some(presence) = &self.presence {
            state.registered = presence.registered(user_id);
            state.busy = presence.busy(user_id);
        }
        state
    }

    pub fn directory(&self) -> &Arc<DirectoryIndex> {
        &self.directory
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Resolves a number into the party modules see.
    pub fn party(&self, number: &str) -> Party {
        match self.directory.resolve(number) {
            Resolved::User(user) => self.user_party(user, number),
            Resolved::Group(group) => group_party(group, number),
            Resolved::External(external, contact) => external_party(&external, contact),
            Resolved::Unknown => Party::new(PartyKind::Unknown, number),
        }
    }

    /// The calling party of `request`: resolved like any number, except
    /// that a caller from the trunk is always an outside party.
    pub fn caller_party(&self, request: &CallRequest) -> Party {
        if !request.external_caller {
            return self.party(&request.from);
        }
        match self.directory.plan().normalize(&request.from) {
            Ok(external) => {
                let contact = self.directory.contact_by_number(&external.international);
                external_party(&external, contact)
            }
            Err(_) => Party::new(PartyKind::External, &request.from),
        }
    }

    /// A user id or a number.
    fn party_by_id_or_number(&self, who: &str) -> Party {
        match self.directory.user(who) {
            Some(user) => self.user_party(user, user.primary_number()),
            None => self.party(who),
        }
    }

    fn user_party(&self, user: &User, signalled: &str) -> Party {
        Party {
            id: ROption::RSome(user.id.as_str().into()),
            name: ROption::RSome(user.name.as_str().into()),
            primary_number: ROption::RSome(user.primary_number().into()),
            groups: self
                .directory
                .groups_of(&user.id)
                .into_iter()
                .map(RString::from)
                .collect(),
            active_groups: self
                .directory
                .active_groups_of(&user.id)
                .into_iter()
                .map(RString::from)
                .collect(),
            ..Party::new(PartyKind::User, signalled)
        }
    }

    /// Sets one call up. Never fails: every problem is an outcome.
    pub async fn place(&self, request: &CallRequest, hooks: &dyn Hooks) -> CallOutcome {
        let events = hooks.wants_events();
        let started = Instant::now();
        let original_caller = self.caller_party(request);
        let (caller, transfer) = match (request.via, &request.by) {
            (Via::Direct, _) | (_, None) => (original_caller, ROption::RNone),
            (via, Some(by)) => {
                let by = self.party_by_id_or_number(by);
                let kind = if via == Via::AttendedTransfer {
                    TransferKind::Attended
                } else {
                    TransferKind::Blind
                };
                // The attended transfer's ringing is the consultation call.
                let caller = if kind == TransferKind::Attended {
                    by.clone()
                } else {
                    original_caller.clone()
                };
                let transfer = Transfer {
                    kind,
                    by,
                    original_caller,
                };
                (caller, ROption::RSome(transfer))
            }
        };
        let callee = self.party(&request.to);
        let internal_caller = caller.kind == PartyKind::User;
        let direction = match (internal_caller, callee.kind) {
            (true, PartyKind::External) => Direction::Outgoing,
            (true, _) => Direction::Internal,
            (false, _) => Direction::Incoming,
        };
        let mut call = CallState {
            request,
            deadline: started + self.config.setup_budget,
            direction,
            caller,
            transfer,
            forwards: Vec::new(),
            carried: Decision::default(),
            forwarded_display: None,
            last_hop: Decision::default(),
            visited: HashSet::new(),
            outcome: CallOutcome::unavailable(),
        };

        let mut target = callee;
        loop {
            let next = self.hop(&mut call, &target, hooks).await;
            match next {
                Next::Done(outcome, reason) => {
                    call.outcome.outcome = outcome;
                    call.outcome.reason = reason;
                    break;
                }
                Next::Follow(kind, to) => {
                    let to_party = self.party(&to);
                    let to_caller = call.caller.kind == PartyKind::User
                        && to_party.id.is_some()
                        && to_party.id == call.caller.id;
                    if to_caller {
                        // Ringing the caller's own phone helps nobody.
                        call.outcome.outcome = Outcome::Busy;
                        call.outcome.reason = Some(format!(
                            "the forward of {} points back to the caller",
                            target
                                .id
                                .as_ref()
                                .map(RString::as_str)
                                .unwrap_or(&target.number)
                        ));
                        break;
                    }
                    let looped = to_party
                        .id
                        .as_ref()
                        .map(|id| call.visited.contains(id.as_str()))
                        .unwrap_or(false);
                    if looped || call.forwards.len() >= self.config.max_forwards {
                        // A loop or a long chain: ring where we are instead,
                        // if that user can take the call.
                        let why = if looped { "loop" } else { "too many forwards" };
                        let (outcome, reason) = self.ring_user_here(&mut call, &target);
                        call.outcome.outcome = outcome;
                        call.outcome.reason = Some(match reason {
                            Some(reason) => {
                                format!("forward to {to} not followed ({why}); {reason}")
                            }
                            None => format!("forward to {to} not followed: {why}"),
                        });
                        break;
                    }
                    call.outcome.forwards.push(ForwardTaken {
                        kind: forward_kind_name(kind),
                        from_user: target.id.as_ref().map(RString::as_str).unwrap_or("").into(),
                        to: to.clone(),
                    });
                    if events {
                        hooks.call_event(&CallEvent {
                            call_id: request.call_id.as_str().into(),
                            kind: EventKind::FORWARDED,
                            party: ROption::RSome(to_party.clone()),
                            detail: forward_kind_name(kind).into(),
                        });
                    }
                    call.forwards.push(Forward {
                        kind,
                        from: target,
                        to: to_party.clone(),
                    });
                    target = to_party;
                }
            }
        }
        let rang = if events {
            call.outcome.rang.as_slice()
        } else {
            &[]
        };
        for ring in rang {
            hooks.call_event(&CallEvent {
                call_id: request.call_id.as_str().into(),
                kind: EventKind::RINGING,
                party: ROption::RSome(self.party(&ring.number)),
                detail: ring.display.as_str().into(),
            });
        }
        if events && call.outcome.outcome != Outcome::Ringing {
            hooks.call_event(&CallEvent {
                call_id: request.call_id.as_str().into(),
                kind: EventKind::REJECTED,
                party: ROption::RNone,
                detail: call.outcome.reason.clone().unwrap_or_default().into(),
            });
        }
        call.outcome
    }

    /// Runs the hooks for one hop and decides where the call goes.
    async fn hop(&self, call: &mut CallState<'_>, target: &Party, hooks: &dyn Hooks) -> Next {
        if let ROption::RSome(id) = &target.id {
            call.visited.insert(id.to_string());
        }
        let user = target
            .id
            .as_ref()
            .into_option()
            .filter(|_| target.kind == PartyKind::User)
            .and_then(|id| self.directory.user(id));
        let state = user.map(|user| self.user_state(&user.id));

        if matches!(target.kind, PartyKind::Unknown) {
            return Next::Done(
                Outcome::Unavailable,
                Some(format!("{} is not a known number", target.number)),
            );
        }

        // Built once per hop: for the modules and for the routing rule.
        let abi_user = state.as_ref().map(abi_state);
        let mut setup = CallSetup {
            call_id: call.request.call_id.as_str().into(),
            direction: call.direction,
            caller: call.caller.clone(),
            callee: target.clone(),
            dialled: call.request.to.as_str().into(),
            transfer: call.transfer.clone(),
            callee_state: abi_user.clone().into(),
            pending_forward: state
                .as_ref()
                .zip(abi_user.as_ref())
                .and_then(|(state, abi)| self.pending_forward(target, state, abi))
                .into(),
            forwarded: call.forwards.iter().cloned().collect::<RVec<_>>(),
            prior: call.carried.clone(),
        };
        let hook_started = Instant::now();
        let decisions = hooks.call_setup(&mut setup, call.deadline).await;
        call.outcome.hook_micros += hook_started.elapsed().as_micros() as u64;

        let mut hop = call.carried.clone();
        let hop_label: Arc<str> = target
            .id
            .as_ref()
            .map(RString::as_str)
            .unwrap_or(&target.number)
            .into();
        for made in decisions {
            hop.merge(&made.decision);
            note_media_requests(&mut call.outcome, &made);
            let effects = made.decision.effects();
            call.outcome.decisions.push(ReportedDecision {
                source: made.source,
                hop: hop_label.clone(),
                decision: match effects.as_slice() {
                    [] => "none".into(),
                    [one] => (*one).into(),
                    more => more.join("+").into(),
                },
                reason: made
                    .decision
                    .reason
                    .as_ref()
                    .map(RString::to_string)
                    .into_option(),
                error: made.error,
            });
        }
        hooks.call_decided(&setup, &hop);
        call.last_hop = hop.clone();
        call.outcome.caller_name = hop.display_name();
        if let ROption::RSome(name) = &hop.callee_name {
            call.outcome.callee_name = Some(name.to_string());
        }
        // What holds for the rest of the call; hop-specific choices do not.
        call.carried = Decision {
            bypass_dnd: false,
            bypass_forward: false,
            force_call_waiting: false,
            forward_display: ROption::RNone,
            reason: ROption::RNone,
            ..hop.clone()
        };

        if let ROption::RSome(reason) = &hop.reject {
            return Next::Done(Outcome::Rejected, Some(reason.to_string()));
        }
        let display = call
            .forwarded_display
            .clone()
            .unwrap_or_else(|| caller_display(&hop, &call.caller));

        match target.kind {
            PartyKind::User => {
                let (Some(user), Some(state)) = (user, state) else {
                    return Next::Done(Outcome::Unavailable, Some("unknown user".into()));
                };
                let bypass = hop.bypass_forward;
                let follow = |kind: ForwardKind, to: &Option<String>, call: &mut CallState| {
                    let to = to.as_ref().filter(|_| !bypass)?;
                    if kind != ForwardKind::NoAnswer {
                        if let ROption::RSome(marked) = &hop.forward_display {
                            call.forwarded_display = Some(marked.to_string());
                        }
                    }
                    Some(Next::Follow(kind, to.clone()))
                };
                if let Some(next) = follow(ForwardKind::Always, &state.forward_always, call) {
                    return next;
                }
                if !state.registered {
                    // The mobile still rings; no desk phone to ring.
                    self.ring_mobile(call, user, &state, &display);
                    let mobile_rang = state.ring_mobile && user.mobile.is_some();
                    if mobile_rang && !call.request.no_answer {
                        return Next::Done(Outcome::Ringing, None);
                    }
                    return follow(ForwardKind::NoAnswer, &state.forward_no_answer, call)
                        .unwrap_or(if mobile_rang {
                            Next::Done(Outcome::Ringing, None)
                        } else {
                            Next::Done(
                                Outcome::Unavailable,
                                Some(format!("{} has no phone online", user.id)),
                            )
                        });
                }
                let availability = abi_user
                    .as_ref()
                    .map_or(Availability::Free, |abi| abi.availability(&hop));
                if let Availability::Busy | Availability::DoNotDisturb = availability {
                    return follow(ForwardKind::Busy, &state.forward_busy, call).unwrap_or_else(
                        || {
                            let why = if availability == Availability::DoNotDisturb {
                                "do not disturb"
                            } else {
                                "busy"
                            };
                            Next::Done(Outcome::Busy, Some(format!("{}: {why}", user.id)))
                        },
                    );
                }
                let waiting = availability == Availability::Waiting;
                let mobile_display = display.clone();
                self.ring(call, user, display, waiting, None);
                self.ring_mobile(call, user, &state, &mobile_display);
                if call.request.no_answer {
                    if let Some(next) =
                        follow(ForwardKind::NoAnswer, &state.forward_no_answer, call)
                    {
                        return next;
                    }
                }
                Next::Done(Outcome::Ringing, None)
            }
            PartyKind::Group => {
                let Some(group) = target
                    .id
                    .as_ref()
                    .into_option()
                    .and_then(|id| self.directory.group(id))
                else {
                    return Next::Done(Outcome::Unavailable, Some("unknown group".into()));
                };
                self.ring_group(call, group, display)
            }
            PartyKind::External => {
                call.outcome.rang.push(Ring {
                    user: None,
                    number: target
                        .e164
                        .as_ref()
                        .map(RString::to_string)
                        .unwrap_or_else(|| target.number.to_string()),
                    display,
                    waiting: false,
                    group: None,
                    mobile: false,
                });
                Next::Done(Outcome::Ringing, None)
            }
            PartyKind::Unknown => unreachable!("handled above"),
        }
    }

    /// The always or busy forward that applies unless a module bypasses it.
    fn pending_forward(
        &self,
        target: &Party,
        state: &UserState,
        abi: &AbiUserState,
    ) -> Option<Forward> {
        let undecided = abi.availability(&Decision::default());
        let (kind, to) = if let Some(to) = &state.forward_always {
            (ForwardKind::Always, to)
        } else if let Availability::Busy | Availability::DoNotDisturb = undecided {
            (ForwardKind::Busy, state.forward_busy.as_ref()?)
        } else {
            return None;
        };
        Some(Forward {
            kind,
            from: target.clone(),
            to: self.party(to),
        })
    }

    fn ring(
        &self,
        call: &mut CallState<'_>,
        user: &User,
        display: String,
        waiting: bool,
        group: Option<&Group>,
    ) {
        call.outcome.rang.push(Ring {
            user: Some(user.id.clone()),
            number: user.primary_number().into(),
            display,
            waiting,
            group: group.map(|g| g.id.clone()),
            mobile: false,
        });
    }

    /// Rings the user's mobile too when they asked for it (iFMC-like).
    fn ring_mobile(&self, call: &mut CallState<'_>, user: &User, state: &UserState, display: &str) {
        let Some(mobile) = user.mobile.as_deref().filter(|_| state.ring_mobile) else {
            return;
        };
        let number = self
            .directory
            .plan()
            .normalize(mobile)
            .map_or_else(|_| mobile.to_string(), |external| external.e164);
        call.outcome.rang.push(Ring {
            user: Some(user.id.clone()),
            number,
            display: display.to_string(),
            waiting: false,
            group: None,
            mobile: true,
        });
    }

    /// Rings the user of `target` without following forwards (the loop and
    /// chain fallback), if their phone can take the call.
    fn ring_user_here(
        &self,
        call: &mut CallState<'_>,
        target: &Party,
    ) -> (Outcome, Option<String>) {
        let user = target
            .id
            .as_ref()
            .into_option()
            .filter(|_| target.kind == PartyKind::User)
            .and_then(|id| self.directory.user(id));
        let Some(user) = user else {
            return (
                Outcome::Unavailable,
                Some(format!("{} cannot ring", target.number)),
            );
        };
        if call
            .outcome
            .rang
            .iter()
            .any(|ring| ring.user.as_deref() == Some(user.id.as_str()))
        {
            // Its phone rang already in this call (a no-answer loop).
            return (Outcome::Ringing, None);
        }
        let state = self.user_state(&user.id);
        if !state.registered {
            return (
                Outcome::Unavailable,
                Some(format!("{} has no phone online", user.id)),
            );
        }
        let waiting = match abi_state(&state).availability(&call.last_hop) {
            Availability::Free => false,
            Availability::Waiting => true,
            Availability::Busy => return (Outcome::Busy, Some(format!("{}: busy", user.id))),
            Availability::DoNotDisturb => {
                return (Outcome::Busy, Some(format!("{}: do not disturb", user.id)))
            }
        };
        let display = call
            .forwarded_display
            .clone()
            .unwrap_or_else(|| caller_display(&call.last_hop, &call.caller));
        self.ring(call, user, display, waiting, None);
        (Outcome::Ringing, None)
    }

    /// Group calls ring every logged-in member who can take a call; members'
    /// own forwards do not apply (the group is the target, not the member).
    fn ring_group(&self, call: &mut CallState<'_>, group: &Group, display: String) -> Next {
        let rang_before = call.outcome.rang.len();
        let mut any_member = false;
        for member in group.active_members() {
            let Some(user) = self.directory.user(member) else {
                continue;
            };
            any_member = true;
            if call.caller.kind == PartyKind::User
                && call.caller.id.as_ref().map(RString::as_str).into_option() == Some(member)
            {
                // The caller does not ring their own phone through a group.
                continue;
            }
            let state = self.user_state(member);
            if !state.registered || state.dnd || (state.busy && !state.call_waiting) {
                continue;
            }
            self.ring(call, user, display.clone(), state.busy, Some(group));
        }
        if call.outcome.rang.len() > rang_before {
            Next::Done(Outcome::Ringing, None)
        } else if any_member {
            Next::Done(
                Outcome::Busy,
                Some(format!("every member of {} is busy or in DND", group.id)),
            )
        } else {
            Next::Done(
                Outcome::Unavailable,
                Some(format!("nobody is logged in to {}", group.id)),
            )
        }
    }
}

fn forward_kind_name(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Always => "always",
        ForwardKind::Busy => "busy",
        ForwardKind::NoAnswer => "no_answer",
    }
}

/// The display from decisions (or their name fields), else the caller's own label.
fn caller_display(decision: &Decision, caller: &Party) -> String {
    if let ROption::RSome(display) = &decision.display {
        return display.to_string();
    }
    decision
        .display_name()
        .unwrap_or_else(|| caller.label().to_string())
}

fn abi_state(state: &UserState) -> AbiUserState {
    let text = |value: &Option<String>| value.as_deref().map(RString::from).into();
    AbiUserState {
        dnd: state.dnd,
        call_waiting: state.call_waiting,
        busy: state.busy,
        forward_always: text(&state.forward_always),
        forward_busy: text(&state.forward_busy),
        forward_no_answer: text(&state.forward_no_answer),
    }
}

fn group_party(group: &Group, signalled: &str) -> Party {
    Party {
        id: ROption::RSome(group.id.as_str().into()),
        name: ROption::RSome(group.name.as_str().into()),
        primary_number: ROption::RSome(group.primary_number().into()),
        ..Party::new(PartyKind::Group, signalled)
    }
}

/// External parties carry the form a phone here dials back (national for
/// home-country numbers, `00…` for foreign ones) as their number.
fn external_party(external: &ExternalNumber, contact: Option<&Contact>) -> Party {
    let name = contact
        .map(Contact::display_name)
        .filter(|name| !name.is_empty());
    Party {
        international: ROption::RSome(external.international.as_str().into()),
        e164: ROption::RSome(external.e164.as_str().into()),
        national: ROption::RSome(external.national.as_str().into()),
        name: name.map(RString::from).into(),
        ..Party::new(PartyKind::External, &external.national)
    }
}
