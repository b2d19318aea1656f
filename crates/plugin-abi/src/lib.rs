//! The boundary between the `callhost` host and a module library.
//!
//! Types only: no I/O, no runtime, no serde. Everything here is `StableAbi`,
//! so a library built against this crate is checked field by field when the
//! host loads it. Growth rules (see `docs/ARCHITECTURE.md`):
//! - the root module and both traits are prefix types: new functions are
//!   appended after the `last_prefix_field` marker, never inserted. That
//!   lets a newer module run on an older host (the host never calls what it
//!   does not know; a module calling a host function the host lacks gets
//!   its default), but abi_stable refuses a module whose prefix types have
//!   fewer fields than the host's, so an addition also bumps
//!   [`ABI_VERSION`] and every module is rebuilt;
//! - plain structs and enums change only in a breaking change; new kinds of
//!   events are new codes of [`EventKind`], not new enum variants;
//! - a breaking change (a plain type's layout, say) bumps [`ABI_VERSION`],
//!   which the host checks before abi_stable's layout check so the user
//!   reads one clear line; every module is then rebuilt against it.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
pub use async_ffi::FfiFuture;

mod traits;
pub use traits::{HostServices, HostServices_TO, Instance, Instance_TO};

/// Our own ABI number. Checked first, from [`ABI_VERSION_SYMBOL`] and from the
/// package manifest, before any module code runs. 2: [`ModuleError`] carries
/// a [`ModuleErrorKind`]. 3: `Instance::media_gap` and `media_end`,
/// `HostServices::host_version`, `installation_id` and `module_secret`.
/// 4: `ModuleRoot::config_schema`, `HostServices::action_progress`.
/// 5: what a client API needs (`api-connector`): `Instance::call_decided`,
/// `call_listed`, `presence_changed`; `HostServices::user_presence`,
/// `verify_password`, `set_dnd`, `set_forward`, `set_group_login`,
/// `call_list`, `originate`, `hang_up`, `lookup_caller`.
pub const ABI_VERSION: u32 = 5;

/// Name of the plain `extern "C" fn() -> u32` every module exports.
pub const ABI_VERSION_SYMBOL: &str = "callhost_abi_version";

/// An instance as the host holds it.
pub type InstanceBox = Instance_TO<'static, abi_stable::std_types::RBox<()>>;
/// The host's services as an instance holds them (cheap to clone).
pub type HostServicesBox = HostServices_TO<'static, abi_stable::std_types::RArc<()>>;

/// The root of every module library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ModuleRootRef)))]
pub struct ModuleRoot {
    pub manifest: extern "C" fn() -> ModuleManifest,
    pub new_instance: extern "C" fn(InstanceContext) -> RResult<InstanceBox, ModuleError>,
    /// Stops the module's runtime: called when a newer version replaces this
    /// library (its code stays mapped until the process ends).
    #[sabi(last_prefix_field)]
    pub shutdown: extern "C" fn(),
    /// The instance configuration's JSON Schema (draft 2020-12), as JSON
    /// text: titles and help from the config types' doc comments, defaults,
    /// `writeOnly: true` on secrets and `x-expert: true` on expert settings.
    /// The host builds its configuration forms from it.
    pub config_schema: extern "C" fn() -> RString,
}

impl RootModule for ModuleRootRef {
    declare_root_module_statics! {ModuleRootRef}
    const BASE_NAME: &'static str = "callhost_module";
    const NAME: &'static str = "callhost_module";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// What a module says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ModuleManifest {
    pub id: RString,
    pub name: RString,
    pub version: RString,
    pub description: RString,
    pub abi_version: u32,
    /// Semver requirement on the host version, e.g. `>=0.1, <0.2`.
    pub host_version_req: RString,
    pub hooks: Hooks,
    pub actions: RVec<ActionSpec>,
}

/// Which hooks a module implements; the host calls no others.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hooks(pub u32);

impl Hooks {
    pub const CALL_SETUP: Hooks = Hooks(1);
    pub const CALL_EVENT: Hooks = Hooks(2);
    pub const MEDIA: Hooks = Hooks(4);
    /// The synchronous part of `call_setup` only computes (no I/O, no
    /// sleeping, no lock held for long; slow work goes into the returned
    /// future), so the host may run it on the call's own thread instead of
    /// handing it to another. A module that breaks this is run on a thread
    /// of its own again, or faulted when it blocks.
    pub const QUICK_SETUP: Hooks = Hooks(8);
    /// `call_decided` (every hop's merged decision) and `call_listed` (the
    /// call-list entries a call made).
    pub const CALL_DETAILS: Hooks = Hooks(16);
    /// `presence_changed` for every user whose presence changes.
    pub const PRESENCE: Hooks = Hooks(32);
    /// `call_setup` may also be run for a lookup without a call
    /// (`HostServices::lookup_caller`): it only names the caller and keeps
    /// no state per call id.
    pub const LOOKUP: Hooks = Hooks(64);

    pub const fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A named admin action (`callhost instance action NAME ACTION ARGS…`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ActionSpec {
    pub name: RString,
    /// Argument synopsis, e.g. `FROM TO`.
    pub usage: RString,
    pub help: RString,
}

/// Handed to `new_instance`.
#[repr(C)]
#[derive(StableAbi)]
pub struct InstanceContext {
    pub instance_name: RString,
    /// `<data>/instances/<instance>/`, created by the host.
    pub data_dir: RString,
    /// `<data>/modules/<module id>/shared/`, for state all instances share.
    pub module_dir: RString,
    /// The installed version's `assets/` from the package (prompts,
    /// templates); read-only.
    pub assets_dir: RString,
    pub host: HostServicesBox,
}

/// A failure across the boundary: the receiver acts on `kind`, the message
/// is for people.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    pub kind: ModuleErrorKind,
    pub message: RString,
}

/// What went wrong, for the receiver of a [`ModuleError`] to act on. A new
/// kind changes the layout: it bumps [`ABI_VERSION`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModuleErrorKind {
    /// The work failed and said why.
    #[default]
    Failed,
    /// Code panicked; the SDK caught the unwind at the boundary. The host
    /// faults an instance whose call setup panics.
    Panicked,
}

impl ModuleError {
    /// A failure ([`ModuleErrorKind::Failed`]).
    pub fn new(message: impl Into<RString>) -> Self {
        ModuleError {
            kind: ModuleErrorKind::Failed,
            message: message.into(),
        }
    }

    /// A caught panic ([`ModuleErrorKind::Panicked`]).
    pub fn panicked(message: impl Into<RString>) -> Self {
        ModuleError {
            kind: ModuleErrorKind::Panicked,
            message: message.into(),
        }
    }
}

/// A refused configuration: `field` is the dotted path of the culprit.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: RString,
    pub message: RString,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// What a party of a call is in the directory.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyKind {
    User,
    Group,
    External,
    /// An internal-looking number nobody owns.
    Unknown,
}

/// One side of a call, resolved against the directory.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Party {
    pub kind: PartyKind,
    /// The number as signalled; for external parties the form a phone here
    /// dials back (national for the home country, `00…` otherwise).
    pub number: RString,
    /// International form with `00`, for external numbers.
    pub international: ROption<RString>,
    /// `+E.164`, for external numbers.
    pub e164: ROption<RString>,
    /// National form with trunk prefix, for external numbers.
    pub national: ROption<RString>,
    /// User or group id.
    pub id: ROption<RString>,
    /// Name from the directory or the address book.
    pub name: ROption<RString>,
    /// The primary internal number of a user or group.
    pub primary_number: ROption<RString>,
    /// Groups the user belongs to (logged in or not).
    pub groups: RVec<RString>,
    /// Groups the user is logged in to.
    pub active_groups: RVec<RString>,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// User to user or group.
    Internal,
    /// From outside to a user or group.
    Incoming,
    /// From a user to outside.
    Outgoing,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Consultation first: the transferring party calls the target itself.
    Attended,
    /// The original caller is sent to the target unannounced.
    Blind,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Transfer {
    pub kind: TransferKind,
    pub by: Party,
    pub original_caller: Party,
}

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    Always,
    Busy,
    NoAnswer,
}

#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Forward {
    pub kind: ForwardKind,
    /// The user whose forward it is.
    pub from: Party,
    /// Where it points.
    pub to: Party,
}

/// The called user's state at setup time.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default)]
pub struct UserState {
    pub dnd: bool,
    pub call_waiting: bool,
    pub busy: bool,
    pub forward_always: ROption<RString>,
    pub forward_busy: ROption<RString>,
    pub forward_no_answer: ROption<RString>,
}

/// One hop of call setup: the host asks every active instance, in order.
///
/// A forwarded call is set up again for its target (a new hop), so a module
/// sees every user the call reaches; `forwarded` lists the hops before.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct CallSetup {
    pub call_id: RString,
    pub direction: Direction,
    /// Whose call rings now: for an attended transfer the transferring party
    /// (it is their consultation call), otherwise the caller.
    pub caller: Party,
    /// The user or group this hop sets up.
    pub callee: Party,
    /// The number first dialled.
    pub dialled: RString,
    pub transfer: ROption<Transfer>,
    /// Present when the callee is a user.
    pub callee_state: ROption<UserState>,
    /// The always or busy forward that applies unless bypassed. No-answer
    /// forwards cannot be known in advance and never show up here.
    pub pending_forward: ROption<Forward>,
    /// Forwards already followed to reach this hop, first one first.
    pub forwarded: RVec<Forward>,
    /// Merged decisions of the instances that ran before this one.
    pub prior: Decision,
}

/// Which leg's media a module wants.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TapRequest {
    #[default]
    None,
    Caller,
    Callee,
    Both,
}

/// What one instance decides for one hop. Empty means "no opinion".
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The display string for the ringing phone.
    pub display: ROption<RString>,
    pub first_name: ROption<RString>,
    pub last_name: ROption<RString>,
    pub company: ROption<RString>,
    /// Shown instead of the display when an always or busy forward is
    /// followed from this hop.
    pub forward_display: ROption<RString>,
    pub bypass_dnd: bool,
    pub bypass_forward: bool,
    pub force_call_waiting: bool,
    /// Reject the call, with the reason.
    pub reject: ROption<RString>,
    /// Let it ring but mark it (e.g. suspected spam).
    pub flag: ROption<RString>,
    pub tap: TapRequest,
    /// A prompt (asset path) to play to the caller before connecting.
    pub prompt: ROption<RString>,
    /// Why, in a few words, for logs and the simulator.
    pub reason: ROption<RString>,
    /// The called party's name on an outgoing call (e.g. resolved from a
    /// phone book): shown to the calling user and written to their call
    /// list. Never sent to the called party.
    pub callee_name: ROption<RString>,
}

/// One RTP payload of a tapped call, borrowed for the duration of the
/// `media` call (copy what you keep).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MediaFrame<'a> {
    pub call_id: RStr<'a>,
    /// `Caller` or `Callee`: whose audio this is.
    pub leg: TapRequest,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: RSlice<'a, u8>,
}

/// A contact a module asks the host to add to its address book.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq, Eq)]
pub struct NewContact {
    pub first_name: ROption<RString>,
    pub last_name: ROption<RString>,
    pub company: ROption<RString>,
    /// In `+E.164` form.
    pub number: RString,
}

/// Something that happened to a call; never delays it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct CallEvent {
    pub call_id: RString,
    pub kind: EventKind,
    /// The party the event is about (who rang, answered, pressed a key…).
    pub party: ROption<Party>,
    /// Kind-specific text: the DTMF digit, the transfer target, the hangup cause.
    pub detail: RString,
}

/// Event codes; new kinds are new constants, so old modules keep loading.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKind(pub u32);

impl EventKind {
    pub const RINGING: EventKind = EventKind(1);
    pub const ANSWERED: EventKind = EventKind(2);
    pub const FORWARDED: EventKind = EventKind(3);
    pub const TRANSFERRED: EventKind = EventKind(4);
    pub const DTMF: EventKind = EventKind(5);
    pub const HANGUP: EventKind = EventKind(6);
    pub const REJECTED: EventKind = EventKind(7);
    /// The prompt an instance asked for is over (before any phone rang);
    /// `detail` is `<instance>/<asset>: played` or `…: not played: why`.
    /// A new value, not a new layout: modules that do not know it ignore it.
    pub const PROMPT_ENDED: EventKind = EventKind(8);

    pub fn name(self) -> &'static str {
        match self {
            Self::RINGING => "ringing",
            Self::ANSWERED => "answered",
            Self::FORWARDED => "forwarded",
            Self::TRANSFERRED => "transferred",
            Self::DTMF => "dtmf",
            Self::HANGUP => "hangup",
            Self::REJECTED => "rejected",
            Self::PROMPT_ENDED => "prompt-ended",
            _ => "unknown",
        }
    }
}

impl Party {
    /// A party of `kind` with `number` and nothing else known.
    pub fn new(kind: PartyKind, number: &str) -> Party {
        Party {
            kind,
            number: number.into(),
            international: ROption::RNone,
            e164: ROption::RNone,
            national: ROption::RNone,
            id: ROption::RNone,
            name: ROption::RNone,
            primary_number: ROption::RNone,
            groups: RVec::new(),
            active_groups: RVec::new(),
        }
    }

    /// Every form this party's number is known by, for pattern matching.
    pub fn number_forms(&self) -> impl Iterator<Item = &str> + Clone {
        std::iter::once(self.number.as_str())
            .chain(
                self.international
                    .as_ref()
                    .map(RString::as_str)
                    .into_option(),
            )
            .chain(self.e164.as_ref().map(RString::as_str).into_option())
            .chain(self.national.as_ref().map(RString::as_str).into_option())
            .chain(
                self.primary_number
                    .as_ref()
                    .map(RString::as_str)
                    .into_option(),
            )
    }

    /// The party's name, when it has one that is not empty.
    pub fn known_name(&self) -> Option<&str> {
        match &self.name {
            ROption::RSome(name) if !name.is_empty() => Some(name.as_str()),
            _ => None,
        }
    }

    /// What a phone shows for this party when nothing else is known.
    pub fn label(&self) -> &str {
        self.known_name().unwrap_or(self.number.as_str())
    }
}

/// How a user can take a call once the decisions are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Free,
    /// Busy, but the call knocks (call waiting, own or forced).
    Waiting,
    Busy,
    DoNotDisturb,
}

impl UserState {
    /// The engine's rule, shared so modules predict exactly what it does:
    /// DND (unless bypassed) counts as busy; a busy user with call waiting
    /// (or forced call waiting) gets a waiting call.
    pub fn availability(&self, decided: &Decision) -> Availability {
        if self.dnd && !decided.bypass_dnd {
            Availability::DoNotDisturb
        } else if !self.busy {
            Availability::Free
        } else if self.call_waiting || decided.force_call_waiting {
            Availability::Waiting
        } else {
            Availability::Busy
        }
    }
}

impl CallSetup {
    /// The always or busy forward the engine will follow if `decided` (the
    /// decisions merged so far, one's own included) stands.
    pub fn forward_followed(&self, decided: &Decision) -> Option<&Forward> {
        let forward = self.pending_forward.as_ref().into_option()?;
        if decided.bypass_forward {
            return None;
        }
        if forward.kind == ForwardKind::Busy {
            let state = self.callee_state.as_ref().into_option()?;
            let busy = matches!(
                state.availability(decided),
                Availability::Busy | Availability::DoNotDisturb
            );
            return busy.then_some(forward);
        }
        Some(forward)
    }
}

/// How a directory or address-book entry is shown: "First Last" (the parts
/// there are), else the company; `None` when nothing is left. Every part is
/// trimmed and a blank part counts as missing. Shared, so the directory, the
/// engine and modules show the same entry the same way.
pub fn display_name(
    first_name: Option<&str>,
    last_name: Option<&str>,
    company: Option<&str>,
) -> Option<String> {
    fn present(part: Option<&str>) -> Option<&str> {
        part.map(str::trim).filter(|part| !part.is_empty())
    }
    let person: Vec<&str> = [first_name, last_name]
        .into_iter()
        .filter_map(present)
        .collect();
    if !person.is_empty() {
        return Some(person.join(" "));
    }
    present(company).map(str::to_owned)
}

/// Whether `name` may name an instance's asset (`instance/<name>` in a
/// prompt): a plain file name of letters, digits, `.`, `-` and `_`, not
/// starting with `.`. Shared, so the host that stores assets and the
/// modules that name them agree.
pub fn is_asset_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl Decision {
    /// The name the decision's `first_name`, `last_name` and `company` give
    /// (see [`display_name`]).
    pub fn display_name(&self) -> Option<String> {
        fn part(field: &ROption<RString>) -> Option<&str> {
            field.as_ref().map(RString::as_str).into_option()
        }
        display_name(
            part(&self.first_name),
            part(&self.last_name),
            part(&self.company),
        )
    }

    /// Is there any opinion at all?
    pub fn is_empty(&self) -> bool {
        *self == Decision::default()
    }

    /// Folds `later` over `self`: later values win, flags accumulate.
    pub fn merge(&mut self, later: &Decision) {
        fn over(slot: &mut ROption<RString>, later: &ROption<RString>) {
            if later.is_some() {
                *slot = later.clone();
            }
        }
        over(&mut self.display, &later.display);
        over(&mut self.first_name, &later.first_name);
        over(&mut self.last_name, &later.last_name);
        over(&mut self.company, &later.company);
        over(&mut self.forward_display, &later.forward_display);
        over(&mut self.reject, &later.reject);
        over(&mut self.flag, &later.flag);
        over(&mut self.prompt, &later.prompt);
        over(&mut self.reason, &later.reason);
        over(&mut self.callee_name, &later.callee_name);
        self.bypass_dnd |= later.bypass_dnd;
        self.bypass_forward |= later.bypass_forward;
        self.force_call_waiting |= later.force_call_waiting;
        self.tap = match (self.tap, later.tap) {
            (a, TapRequest::None) => a,
            (TapRequest::None, b) => b,
            (a, b) if a == b => a,
            _ => TapRequest::Both,
        };
    }

    /// Short names of what this decision does, e.g. `["bypass_dnd", "display"]`.
    pub fn effects(&self) -> Vec<&'static str> {
        let mut effects = Vec::new();
        let flags = [
            (self.reject.is_some(), "reject"),
            (self.bypass_dnd, "bypass_dnd"),
            (self.bypass_forward, "bypass_forward"),
            (self.force_call_waiting, "force_call_waiting"),
            (self.display.is_some(), "display"),
            (self.forward_display.is_some(), "forward_display"),
            (
                self.first_name.is_some() || self.last_name.is_some() || self.company.is_some(),
                "name_fields",
            ),
            (self.flag.is_some(), "flag"),
            (self.callee_name.is_some(), "callee_name"),
            (self.tap != TapRequest::None, "tap"),
            (self.prompt.is_some(), "prompt"),
        ];
        for (on, name) in flags {
            if on {
                effects.push(name);
            }
        }
        effects
    }
}

/// A user's presence as colleagues and clients see it: live state (a phone
/// registered, in a call) and the stored one (DND, forwards, groups).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    /// The user's id.
    pub user: RString,
    /// Their primary internal number.
    pub number: RString,
    pub name: ROption<RString>,
    /// At least one phone registered.
    pub registered: bool,
    /// In at least one call (ringing out, connected).
    pub in_call: bool,
    pub dnd: bool,
    pub forward_always: ROption<RString>,
    pub forward_busy: ROption<RString>,
    pub forward_no_answer: ROption<RString>,
    /// Groups the user belongs to.
    pub groups: RVec<RString>,
    /// Groups the user is logged in to.
    pub active_groups: RVec<RString>,
}

/// Which way a call-list entry went, for its user.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallListDirection {
    In,
    Out,
}

/// One entry of a user's call list.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CallListItem {
    /// Whose list it is in.
    pub user: RString,
    /// RFC 3339 UTC, e.g. `2026-12-06T09:30:00Z`.
    pub time: RString,
    pub direction: CallListDirection,
    /// The other party's number.
    pub number: RString,
    pub name: ROption<RString>,
    pub call_id: RString,
}

/// What `HostServices::verify_password` found. A new answer changes the
/// layout: it bumps [`ABI_VERSION`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Valid,
    Wrong,
    /// No such user in the directory.
    UnknownUser,
    /// The user has no SIP password set: nobody can sign in as them.
    NoPassword,
}

/// Borrowed string helper for hosts and modules alike.
pub fn rstr(s: &str) -> RStr<'_> {
    RStr::from_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_is_the_person_else_the_company() {
        let cases = [
            (
                (Some("Max"), Some("Kunde"), Some("K GmbH")),
                Some("Max Kunde"),
            ),
            ((None, Some("Kunde"), Some("K GmbH")), Some("Kunde")),
            ((Some("Max"), None, None), Some("Max")),
            ((None, None, Some("K GmbH")), Some("K GmbH")),
            ((None, None, None), None),
        ];
        for ((first, last, company), want) in cases {
            assert_eq!(
                display_name(first, last, company).as_deref(),
                want,
                "{first:?} {last:?} {company:?}"
            );
        }
    }

    #[test]
    fn display_name_trims_and_skips_blank_parts() {
        let cases = [
            ((Some(" Max "), Some("\tKunde\n"), None), Some("Max Kunde")),
            ((Some("  "), Some("Kunde"), None), Some("Kunde")),
            ((Some(""), Some(" "), Some(" K GmbH ")), Some("K GmbH")),
            ((Some(" "), None, Some("")), None),
            ((None, None, Some("   ")), None),
        ];
        for ((first, last, company), want) in cases {
            assert_eq!(
                display_name(first, last, company).as_deref(),
                want,
                "{first:?} {last:?} {company:?}"
            );
        }
    }

    #[test]
    fn a_decision_is_named_by_its_name_fields() {
        let named = Decision {
            first_name: ROption::RSome(" Erika ".into()),
            last_name: ROption::RSome("".into()),
            company: ROption::RSome("Acme".into()),
            ..Decision::default()
        };
        assert_eq!(named.display_name().as_deref(), Some("Erika"));
        assert_eq!(Decision::default().display_name(), None);
    }

    #[test]
    fn module_errors_say_their_kind() {
        assert_eq!(
            ModuleError::new("panicked: no").kind,
            ModuleErrorKind::Failed
        );
        assert_eq!(
            ModuleError::panicked("boom").kind,
            ModuleErrorKind::Panicked
        );
    }
}
