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
    CallEvent, CallSetup, ConfigError, Decision, LogLevel, MediaFrame, ModuleError, NewContact,
    Party, TapRequest,
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
}
