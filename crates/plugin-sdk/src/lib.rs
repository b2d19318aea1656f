//! Write a callhost module as a plain Rust type.
//!
//! A module implements [`Module`] and declares itself once with
//! [`export_module!`]: id, name, hooks and admin actions (each bound to its
//! handler) in one place. The SDK does the rest at the boundary:
//! - every entry point runs under a panic guard (an unwind across the FFI
//!   boundary would abort the host);
//! - asynchronous work runs on the module's own tokio runtime (each library
//!   links its own tokio), and the host only waits on it; dropping the wait
//!   aborts the task;
//! - configuration is TOML parsed into the module's own `Config` type; errors
//!   name the field;
//! - `tracing` events inside the module go to the instance's log in the host,
//!   filtered by the level the administrator set.

mod config;
mod hosted;
mod logging;
mod runtime;
pub mod settings;
pub mod template;
pub mod testing;

pub use abi_stable;
pub use callhost_plugin_abi as abi;
pub use callhost_plugin_abi::{
    CallEvent, CallListDirection, CallListItem, CallSetup, ConfigError, Decision, Direction,
    EventKind, Forward, ForwardKind, MediaFrame, NewContact, Party, PartyKind, PasswordCheck,
    TapRequest, TransferKind, UserPresence, UserState,
};
pub use schemars;
pub use serde;
pub use serde_json;
pub use tracing;

#[doc(hidden)]
pub use hosted::{config_schema, guarded_manifest, new_instance};
#[doc(hidden)]
pub use runtime::shutdown as shutdown_runtime;

use std::{future::Future, path::PathBuf, pin::Pin};

use abi_stable::std_types::RString;
use callhost_plugin_abi::{rstr, HostServicesBox, LogLevel};

/// The host version range this SDK's modules work with.
pub const HOST_VERSION_REQ: &str = ">=0.1, <0.2";

/// A boxed future that runs on the module's runtime.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One configured instance of a module. A new configuration builds a new
/// value (`new`), so a module never sees a half-applied configuration.
pub trait Module: Sized + Send + Sync + 'static {
    /// The instance configuration; `Default` gives the defaults of every
    /// field. Its JSON Schema (derive `schemars::JsonSchema`; doc comments
    /// become the help texts) is what the host's web UI builds the form
    /// from: mark expert settings with [`settings::EXPERT`] and use
    /// [`settings::Secret`] for credentials.
    type Config: serde::Serialize
        + serde::de::DeserializeOwned
        + schemars::JsonSchema
        + Default
        + Send
        + Sync
        + 'static;

    /// Validates the configuration and builds the instance. Refuse with
    /// [`ConfigError`] naming the field (see [`config_error`]).
    fn new(ctx: &Context, config: Self::Config) -> Result<Self, ConfigError>;

    /// Decide for one hop of call setup. Return [`Setup::Ready`] when no I/O
    /// is needed: it costs nanoseconds, a runtime hop costs microseconds.
    fn call_setup(&self, _setup: &CallSetup) -> Setup {
        Setup::Ready(Decision::default())
    }

    /// Learn what happened to a call. Must return quickly; spawn for I/O.
    fn call_event(&self, _event: &CallEvent) {}

    /// A media frame of a call this module tapped (declare `media` among
    /// the hooks and set `Decision::tap`). Runs on the instance's media
    /// thread; a slow module loses frames, never delays the call.
    fn media(&self, _frame: &MediaFrame<'_>) {}

    /// `frames` frames of `leg` were dropped on their way here (a queue was
    /// full): the host's count, in order before the frame that follows them.
    fn media_gap(&self, _call_id: &str, _leg: TapRequest, _frames: u32) {}

    /// Every frame of `call_id` has been delivered: its media is over.
    fn media_end(&self, _call_id: &str) {}

    /// (hook `call_details`) Every instance decided this hop; `decision`
    /// is what the call shows and does. Must return at once.
    fn call_decided(&self, _setup: &CallSetup, _decision: &Decision) {}

    /// (hook `call_details`) An ended call made this call-list entry.
    /// Must return at once.
    fn call_listed(&self, _entry: &CallListItem) {}

    /// (hook `presence`) A user's presence changed; this is the state now.
    /// Must return at once.
    fn presence_changed(&self, _presence: &UserPresence) {}

    fn activate(&self) {}
    fn deactivate(&self) {}
    /// The instance is deleted for good: remove what only it needed.
    fn uninstall(&self) {}
}

/// The answer of [`Module::call_setup`].
// `Ready` is large on purpose: the common path allocates nothing.
#[allow(clippy::large_enum_variant)]
pub enum Setup {
    Ready(Decision),
    /// Runs on the module's runtime; the host drops it at the deadline.
    Later(BoxFuture<Decision>),
}

/// The answer of an admin action: JSON for the CLI and the HTTP API.
pub enum Action {
    Ready(Result<serde_json::Value, String>),
    Later(BoxFuture<Result<serde_json::Value, String>>),
}

/// An answer ready at once.
impl From<Result<serde_json::Value, String>> for Action {
    fn from(answer: Result<serde_json::Value, String>) -> Action {
        Action::Ready(answer)
    }
}

/// One admin action of a module: what `instance action` lists, and the
/// method that runs it.
pub struct ActionEntry<M> {
    pub name: &'static str,
    /// Argument synopsis, e.g. `FROM TO`.
    pub usage: &'static str,
    pub help: &'static str,
    pub handler: fn(&M, &[String]) -> Action,
}

/// A module's admin actions, each bound to its handler. [`export_module!`]
/// implements it from the `actions` it declares; the manifest the host
/// reads and the dispatch both come from this one table.
pub trait Actions: Sized + 'static {
    const ACTIONS: &'static [ActionEntry<Self>];

    /// Runs the declared action `name`.
    fn action(&self, name: &str, args: &[String]) -> Action {
        match Self::ACTIONS.iter().find(|entry| entry.name == name) {
            Some(entry) => (entry.handler)(self, args),
            None => Action::Ready(Err(format!("unknown action `{name}`"))),
        }
    }
}

/// A configuration error for `field` (a dotted path like `called.active_for[1]`).
pub fn config_error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: RString::from(field.into()),
        message: RString::from(message.into()),
    }
}

/// What the host gives an instance.
#[derive(Clone)]
pub struct Context {
    pub instance: String,
    /// The instance's own directory, created by the host.
    pub data_dir: PathBuf,
    /// A directory shared by all instances of this module.
    pub module_dir: PathBuf,
    /// The package's `assets/` for the running version (read-only).
    pub assets_dir: PathBuf,
    host: HostServicesBox,
    /// The instance's log subscriber, made once: building a `Dispatch`
    /// re-registers every callsite under a global lock, far too slow per
    /// spawned task.
    dispatch: tracing::Dispatch,
}

impl Context {
    /// Looks a number up in the host's directory and address book.
    pub fn lookup_number(&self, number: &str) -> Option<Party> {
        self.host.lookup_number(rstr(number)).into_option()
    }

    /// The PBX's home country (ISO 3166 alpha-2).
    pub fn home_country(&self) -> String {
        self.host.home_country().into_string()
    }

    /// Adds a contact to the host's address book.
    pub fn add_contact(&self, contact: &NewContact) -> Result<(), String> {
        message(self.host.add_contact(contact))
    }

    /// Call-list numbers that have no name yet (any user).
    pub fn unresolved_call_list_numbers(&self) -> Result<Vec<String>, String> {
        message(self.host.unresolved_call_list_numbers())
            .map(|numbers| numbers.into_iter().map(RString::into_string).collect())
    }

    /// Names every call-list entry of `number`; returns how many changed.
    pub fn set_call_list_name(&self, number: &str, name: &str) -> Result<u64, String> {
        message(self.host.set_call_list_name(rstr(number), rstr(name)))
    }

    /// The host's version.
    pub fn host_version(&self) -> String {
        self.host.host_version().into_string()
    }

    /// The installation's id (made once per data directory).
    pub fn installation_id(&self) -> String {
        self.host.installation_id().into_string()
    }

    /// 32 bytes the host derives from its secret key for this module and
    /// `purpose`, stable across restarts and upgrades; `None` from a host
    /// that offers none.
    pub fn module_secret(&self, purpose: &str) -> Option<Vec<u8>> {
        let secret = self.host.module_secret(rstr(purpose)).into_vec();
        (!secret.is_empty()).then_some(secret)
    }

    /// Tells the host how far the admin action in progress is: `done` of
    /// `total` steps (the web UI shows a progress bar).
    pub fn report_progress(&self, done: u64, total: u64) {
        self.host.action_progress(done, total);
    }

    /// The level the administrator set for this instance.
    pub fn log_level(&self) -> LogLevel {
        self.host.log_level()
    }

    /// A directory user's presence now (`None`: no such user).
    pub fn user_presence(&self, user: &str) -> Option<UserPresence> {
        self.host.user_presence(rstr(user)).into_option()
    }

    /// Checks `user`'s SIP password on the host (the hash stays there).
    /// Blocks briefly: call it off the call path.
    pub fn verify_password(&self, user: &str, password: &str) -> PasswordCheck {
        self.host.verify_password(rstr(user), rstr(password))
    }

    /// Sets a user's DND (stored, routed on at once). Writes the host's
    /// database: call it from `spawn_blocking`.
    pub fn set_dnd(&self, user: &str, on: bool) -> Result<(), String> {
        message(self.host.set_dnd(rstr(user), on))
    }

    /// Sets (`Some`) or clears a user's forward of `kind`. Writes the
    /// host's database: call it from `spawn_blocking`.
    pub fn set_forward(
        &self,
        user: &str,
        kind: ForwardKind,
        target: Option<&str>,
    ) -> Result<(), String> {
        message(
            self.host
                .set_forward(rstr(user), kind, rstr(target.unwrap_or(""))),
        )
    }

    /// Logs `user` in to or out of `group`. Writes the host's database:
    /// call it from `spawn_blocking`.
    pub fn set_group_login(&self, user: &str, group: &str, logged_in: bool) -> Result<(), String> {
        message(
            self.host
                .set_group_login(rstr(user), rstr(group), logged_in),
        )
    }

    /// A user's call list, newest first. Reads the host's database: call it
    /// from `spawn_blocking`.
    pub fn call_list(&self, user: &str, limit: u32) -> Result<Vec<CallListItem>, String> {
        message(self.host.call_list(rstr(user), limit)).map(|entries| entries.into_vec())
    }

    /// Click-to-dial (see `HostServices::originate`): the call's id.
    pub fn originate(&self, user: &str, number: &str) -> Result<String, String> {
        message(self.host.originate(rstr(user), rstr(number))).map(RString::into_string)
    }

    /// Ends the call `call_id` if `user` is one of its parties.
    pub fn hang_up(&self, user: &str, call_id: &str) -> Result<(), String> {
        message(self.host.hang_up(rstr(user), rstr(call_id)))
    }

    /// What the reverse-lookup instances would show `user` for a call from
    /// `number`.
    pub fn lookup_caller(&self, user: &str, number: &str) -> BoxFuture<Result<Decision, String>> {
        let pending = self.host.lookup_caller(rstr(user), rstr(number));
        Box::pin(async move { message(pending.await) })
    }

    /// Spawns work on the module's runtime (for events and background jobs);
    /// a host that exits waits for it (`settle`).
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        runtime::spawn_detached(self.guarded(future));
    }

    /// Runs blocking work (disk, hashing, signing) on the module runtime's
    /// blocking threads, with the instance's log; a host that exits waits
    /// for it (`settle`).
    pub fn spawn_blocking(&self, work: impl FnOnce() + Send + 'static) {
        let dispatch = self.dispatch.clone();
        self.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&dispatch, work)
            })
            .await;
        });
    }

    /// Spawns a task that lives as long as the instance (a timer, a
    /// writer that ends when its owner goes): `settle` does not wait for
    /// it, so it must leave nothing unwritten when the process ends.
    pub fn spawn_service(&self, future: impl Future<Output = ()> + Send + 'static) {
        runtime::spawn_service(self.guarded(future));
    }

    /// `future` with its panics logged (never lost in silence) and its
    /// events in the instance's log.
    fn guarded(
        &self,
        future: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        use futures::FutureExt as _;
        let guarded = std::panic::AssertUnwindSafe(future)
            .catch_unwind()
            .map(|result| {
                if let Err(panic) = result {
                    tracing::error!("background task panicked: {}", hosted::panic_message(panic));
                }
            });
        tracing::instrument::WithSubscriber::with_subscriber(guarded, self.dispatch.clone())
    }
}

/// Declares a module: the one place that says what it is, which hooks it
/// has and which admin actions, each bound to the method that runs it
/// (`examples/hello-module` is the complete, compiled example):
///
/// ```text
/// callhost_plugin_sdk::export_module! {
///     module: Hello,
///     id: "hello",
///     name: "Hello",
///     description: "Greets callers",
///     hooks: [call_setup],
///     actions: [
///         { name: "greet", usage: "NAME", help: "Says hello", handler: Hello::greet },
///     ],
/// }
/// ```
///
/// A handler is a `fn(&Module, &[String]) -> R`, where `R` is an [`Action`]
/// or, for an answer ready at once, a `Result<serde_json::Value, String>`.
/// The macro implements [`Actions`] for the module.
///
/// The version is the crate's `CARGO_PKG_VERSION`, or
/// `CALLHOST_MODULE_VERSION` when set at build time (tests build a "v2" of
/// the same source that way). The module crate needs `abi_stable` as a direct
/// dependency: its export attribute names the crate by absolute path.
#[macro_export]
macro_rules! export_module {
    (
        module: $module:ty,
        id: $id:expr,
        name: $name:expr,
        description: $description:expr,
        hooks: [$($hook:ident),* $(,)?],
        actions: [$({
            name: $action:expr,
            usage: $usage:expr,
            help: $help:expr,
            handler: $handler:expr $(,)?
        }),* $(,)?] $(,)?
    ) => {
        impl $crate::Actions for $module {
            const ACTIONS: &'static [$crate::ActionEntry<Self>] = &[$($crate::ActionEntry {
                name: $action,
                usage: $usage,
                help: $help,
                handler: |module: &$module, args: &[::std::string::String]| {
                    $crate::Action::from(($handler)(module, args))
                },
            }),*];
        }

        /// Our own ABI number, read by the host before abi_stable's layout check.
        #[no_mangle]
        pub extern "C" fn callhost_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        #[$crate::abi_stable::export_root_module]
        pub fn callhost_root_module() -> $crate::abi::ModuleRootRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn manifest() -> $crate::abi::ModuleManifest {
                $crate::guarded_manifest::<$module>(|| $crate::__manifest_parts {
                    id: $id,
                    name: $name,
                    version: match option_env!("CALLHOST_MODULE_VERSION") {
                        Some(version) => version,
                        None => env!("CARGO_PKG_VERSION"),
                    },
                    description: $description,
                    hooks: $crate::abi::Hooks(0)$(.union($crate::__hook!($hook)))*,
                })
            }
            extern "C" fn new_instance(
                context: $crate::abi::InstanceContext,
            ) -> $crate::abi_stable::std_types::RResult<$crate::abi::InstanceBox, $crate::abi::ModuleError> {
                $crate::new_instance::<$module>(context)
            }
            extern "C" fn shutdown() {
                $crate::shutdown_runtime()
            }
            extern "C" fn config_schema() -> $crate::abi_stable::std_types::RString {
                $crate::config_schema::<$module>()
            }
            $crate::abi::ModuleRoot { manifest, new_instance, shutdown, config_schema }
                .leak_into_prefix()
        }
    };
}

/// A host answer with its error reduced to the message.
fn message<T>(
    answer: abi_stable::std_types::RResult<T, callhost_plugin_abi::ModuleError>,
) -> Result<T, String> {
    answer.into_result().map_err(|e| e.message.into_string())
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hook {
    (call_setup) => {
        $crate::abi::Hooks::CALL_SETUP
    };
    // `call_setup` whose synchronous part only computes (see
    // `Hooks::QUICK_SETUP`): the host runs it without a thread hop.
    (quick_setup) => {
        $crate::abi::Hooks::CALL_SETUP.union($crate::abi::Hooks::QUICK_SETUP)
    };
    (call_event) => {
        $crate::abi::Hooks::CALL_EVENT
    };
    (media) => {
        $crate::abi::Hooks::MEDIA
    };
    (call_details) => {
        $crate::abi::Hooks::CALL_DETAILS
    };
    (presence) => {
        $crate::abi::Hooks::PRESENCE
    };
    (lookup) => {
        $crate::abi::Hooks::LOOKUP
    };
}

/// What [`export_module!`] collects; not for direct use.
#[doc(hidden)]
#[allow(non_camel_case_types)]
pub struct __manifest_parts {
    pub id: &'static str,
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub hooks: abi::Hooks,
}
