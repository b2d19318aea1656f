//! The two trait objects that cross the boundary.
//!
//! `#[sabi_trait]` expands to impls that trip `non_local_definitions`; an
//! allow on the trait does not reach them, an allow on this module does.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    std_types::{ROption, RResult, RStr, RString, RVec},
};
use async_ffi::FfiFuture;

use crate::{
    CallEvent, CallListItem, CallSetup, ConfigError, Decision, ForwardKind, LogLevel, MediaFrame,
    ModuleError, NewContact, Party, PasswordCheck, TapRequest, UserPresence,
};

/// One configured instance of a module.
#[sabi_trait]
pub trait Instance: Send + Sync {
    /// Validates and applies a TOML configuration (an empty string means
    /// defaults). A refusal leaves the previous configuration in force.
    fn configure(&self, config: RStr<'_>) -> RResult<(), ConfigError>;

    fn activate(&self) -> RResult<(), ModuleError>;

    fn deactivate(&self) -> RResult<(), ModuleError>;

    /// The instance is being deleted for good.
    fn uninstall(&self) -> RResult<(), ModuleError>;

    /// Decide for one hop of call setup. The host awaits this under the
    /// call-setup deadline and drops it when the deadline passes.
    fn call_setup(&self, setup: &CallSetup) -> FfiFuture<RResult<Decision, ModuleError>>;

    /// Learn what happened; returns at once.
    fn call_event(&self, event: &CallEvent);

    /// Run a named admin action; the answer is JSON.
    fn action(
        &self,
        name: RStr<'_>,
        args: RVec<RString>,
    ) -> FfiFuture<RResult<RString, ModuleError>>;

    /// The configuration in force, defaults filled in, as TOML.
    fn effective_config(&self) -> RString;
    /// Waits up to `timeout_ms` for background work the module started
    /// (history and contact writes, say); true when none is left. A
    /// short-lived host process (simulate, CLI) calls it before it exits.
    fn settle(&self, timeout_ms: u64) -> bool;

    /// One media frame of a call this instance asked to tap (its decision's
    /// `tap`), from call setup to hangup (the `hangup` event ends it). Runs
    /// on the instance's own media thread; frames it is too slow for are
    /// dropped, never the call's audio.
    #[sabi(last_prefix_field)]
    fn media(&self, frame: &MediaFrame<'_>);

    // Appended after the prefix: a library built before them lacks them,
    // and the host then runs these defaults (abi_stable's fallback).

    /// `frames` frames of `leg` of a tapped call were dropped on their way
    /// to this instance (a queue was full); delivered on the media thread in
    /// order, before the frame that follows them or before `media_end`.
    fn media_gap(&self, call_id: RStr<'_>, leg: TapRequest, frames: u32) {
        let _ = (call_id, leg, frames);
    }

    /// Every frame of the tapped call `call_id` has been delivered (or
    /// counted by `media_gap`): its media is over. On the media thread,
    /// after the call's last frame.
    fn media_end(&self, call_id: RStr<'_>) {
        let _ = call_id;
    }

    /// (`Hooks::CALL_DETAILS`) Every instance has decided this hop of
    /// `setup`: `decision` is what the call shows and does. Returns at once.
    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        let _ = (setup, decision);
    }

    /// (`Hooks::CALL_DETAILS`) A call that ended made this entry in its
    /// user's call list (handed to the host's writer, stored shortly
    /// after). Returns at once.
    fn call_listed(&self, entry: &CallListItem) {
        let _ = entry;
    }

    /// (`Hooks::PRESENCE`) A user's presence changed (a phone registered
    /// or expired, a call began or ended, DND, a forward or a group login
    /// changed); `presence` is the state now. Returns at once.
    fn presence_changed(&self, presence: &UserPresence) {
        let _ = presence;
    }
}

/// What the host offers every instance.
#[sabi_trait]
pub trait HostServices: Send + Sync + Clone {
    /// Writes to the instance's log (the host filters by its level).
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);

    /// The instance's log level, set by the administrator.
    fn log_level(&self) -> LogLevel;

    /// Looks a number up in the directory and the address book.
    fn lookup_number(&self, number: RStr<'_>) -> ROption<Party>;
    /// The PBX's home country (ISO 3166 alpha-2), for reading numbers
    /// typed in national form.
    fn home_country(&self) -> RString;
    /// Adds a contact to the host's address book.
    fn add_contact(&self, contact: &NewContact) -> RResult<(), ModuleError>;
    /// Distinct call-list numbers (any user) that have no name yet: none,
    /// empty, or the number itself.
    fn unresolved_call_list_numbers(&self) -> RResult<RVec<RString>, ModuleError>;
    /// Names every call-list entry of `number`, for all users; returns how
    /// many entries changed.
    #[sabi(last_prefix_field)]
    fn set_call_list_name(&self, number: RStr<'_>, name: RStr<'_>) -> RResult<u64, ModuleError>;

    // Appended after the prefix (a host built before them runs these
    // defaults).

    /// The host's version.
    fn host_version(&self) -> RString {
        RString::from("unknown")
    }

    /// This installation's id: made once per data directory, never changes.
    fn installation_id(&self) -> RString {
        RString::new()
    }

    /// 32 bytes derived from the host's secret key for this module and
    /// `purpose` (the same every time, different per module and purpose),
    /// e.g. to encrypt the module's own secrets at rest. The host's key
    /// itself never crosses. Empty when the host has none.
    fn module_secret(&self, purpose: RStr<'_>) -> RVec<u8> {
        let _ = purpose;
        RVec::new()
    }

    /// The admin action in progress on this instance has done `done` of
    /// `total` steps (the web UI shows a progress bar). Cheap; call it as
    /// often as is useful.
    fn action_progress(&self, done: u64, total: u64) {
        let _ = (done, total);
    }

    // ABI 5: what a client API needs. The defaults are those of a host
    // without them: nothing known, everything refused.

    /// A directory user's presence now; `None` for an unknown user.
    fn user_presence(&self, user: RStr<'_>) -> ROption<UserPresence> {
        let _ = user;
        ROption::RNone
    }

    /// Whether `password` is `user`'s SIP password, checked against the
    /// stored digest (HA1) in constant time; the hash never crosses.
    fn verify_password(&self, user: RStr<'_>, password: RStr<'_>) -> PasswordCheck {
        let _ = (user, password);
        PasswordCheck::UnknownUser
    }

    /// Sets a user's do-not-disturb, stored like `directory load` does and
    /// routed on at once.
    fn set_dnd(&self, user: RStr<'_>, on: bool) -> RResult<(), ModuleError> {
        let _ = (user, on);
        RResult::RErr(ModuleError::new("this host cannot change users"))
    }

    /// Sets (`target` a number) or clears (`target` empty) one of a user's
    /// forwards; the target is checked like the directory's own.
    fn set_forward(
        &self,
        user: RStr<'_>,
        kind: ForwardKind,
        target: RStr<'_>,
    ) -> RResult<(), ModuleError> {
        let _ = (user, kind, target);
        RResult::RErr(ModuleError::new("this host cannot change users"))
    }

    /// Logs a member in to (`true`) or out of a group.
    fn set_group_login(
        &self,
        user: RStr<'_>,
        group: RStr<'_>,
        logged_in: bool,
    ) -> RResult<(), ModuleError> {
        let _ = (user, group, logged_in);
        RResult::RErr(ModuleError::new("this host cannot change users"))
    }

    /// A user's call list, newest first, at most `limit` entries.
    fn call_list(&self, user: RStr<'_>, limit: u32) -> RResult<RVec<CallListItem>, ModuleError> {
        let _ = (user, limit);
        RResult::RErr(ModuleError::new("this host keeps no call lists"))
    }

    /// Click-to-dial: rings `user`'s own phones first; when one answers,
    /// calls `number` as if the user had dialled it (modules, dial policy
    /// and limits as for any call) and connects both. Returns the call's
    /// id while the user's phone rings; the rest comes as call events.
    fn originate(&self, user: RStr<'_>, number: RStr<'_>) -> RResult<RString, ModuleError> {
        let _ = (user, number);
        RResult::RErr(ModuleError::new("this host places no calls"))
    }

    /// Ends the call `call_id` if `user` is one of its parties.
    fn hang_up(&self, user: RStr<'_>, call_id: RStr<'_>) -> RResult<(), ModuleError> {
        let _ = (user, call_id);
        RResult::RErr(ModuleError::new("this host places no calls"))
    }

    /// What the active instances with `Hooks::LOOKUP` (reverse lookup)
    /// would show `user` for a call from `number`: their merged decision.
    fn lookup_caller(
        &self,
        user: RStr<'_>,
        number: RStr<'_>,
    ) -> FfiFuture<RResult<Decision, ModuleError>> {
        let _ = (user, number);
        FfiFuture::new(async { RResult::ROk(Decision::default()) })
    }
}
