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
    Party,
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
}
