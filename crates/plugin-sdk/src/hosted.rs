//! The glue between a [`Module`] and the ABI's `Instance` trait.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{Arc, RwLock},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};
use callhost_plugin_abi::{
    ActionSpec, CallEvent, CallSetup, ConfigError, Decision, Instance, InstanceBox,
    InstanceContext, Instance_TO, MediaFrame, ModuleError, ModuleManifest, TapRequest, ABI_VERSION,
};

use crate::{__manifest_parts, config, logging, runtime, Action, Actions, Context, Module, Setup};

/// Runs `work` so that a panic becomes an error message instead of an
/// unwind into the host.
pub(crate) fn guard<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(panic_message)
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

pub fn guarded_manifest<M: Actions>(parts: impl FnOnce() -> __manifest_parts) -> ModuleManifest {
    let parts = match guard(parts) {
        Ok(parts) => parts,
        // Unreachable in practice (the parts are literals), but never unwind.
        Err(_) => std::process::abort(),
    };
    ModuleManifest {
        id: parts.id.into(),
        name: parts.name.into(),
        version: parts.version.into(),
        description: parts.description.into(),
        abi_version: ABI_VERSION,
        host_version_req: crate::HOST_VERSION_REQ.into(),
        hooks: parts.hooks,
        actions: M::ACTIONS
            .iter()
            .map(|entry| ActionSpec {
                name: entry.name.into(),
                usage: entry.usage.into(),
                help: entry.help.into(),
            })
            .collect(),
    }
}

/// The configuration's JSON Schema as text (see `config::schema`); `"{}"`
/// (anything goes) if generating it panicked.
pub fn config_schema<M: Module>() -> RString {
    let schema = guard(|| config::schema::<M::Config>().to_string());
    RString::from(schema.unwrap_or_else(|_| "{}".into()))
}

pub fn new_instance<M: Module + Actions>(
    context: InstanceContext,
) -> RResult<InstanceBox, ModuleError> {
    guard(move || {
        crate::runtime::start();
        let dispatch = logging::dispatch(&context.host);
        let hosted = Hosted::<M> {
            context: Context {
                instance: context.instance_name.into_string(),
                data_dir: PathBuf::from(context.data_dir.into_string()),
                module_dir: PathBuf::from(context.module_dir.into_string()),
                assets_dir: PathBuf::from(context.assets_dir.into_string()),
                host: context.host,
                dispatch,
            },
            id: NEXT_INSTANCE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            current: RwLock::new(None),
        };
        Instance_TO::from_value(hosted, TD_Opaque)
    })
    .map_err(|panic| ModuleError::panicked(format!("panicked while creating an instance: {panic}")))
    .into()
}

struct Configured<M> {
    module: Arc<M>,
    effective: String,
}

struct Hosted<M: Module> {
    /// Also holds the instance's log subscriber (`context.dispatch`).
    context: Context,
    /// Tells this instance's logger apart on a thread (see `enter`).
    id: u64,
    current: RwLock<Option<Configured<M>>>,
}

static NEXT_INSTANCE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    /// The instance logger this thread last entered with, left in place:
    /// the host calls the same instance again and again from the same
    /// threads, and keeping it costs a comparison where setting and
    /// resetting it each time was the dearest part of a quick hook. Only
    /// this module's own code logs through this library's `tracing`, and
    /// every entry point sets its instance first.
    static ENTERED: std::cell::RefCell<Option<(u64, tracing::dispatcher::DefaultGuard)>> =
        const { std::cell::RefCell::new(None) };
}

impl<M: Module> Hosted<M> {
    fn module(&self) -> Result<Arc<M>, ModuleError> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current
            .as_ref()
            .map(|configured| configured.module.clone())
            .ok_or_else(|| ModuleError::new("the instance has no configuration yet"))
    }

    /// Hands something observed to the module, which returns at once; a
    /// panic is logged (observations never fail a call).
    fn observe(&self, what: &str, work: impl FnOnce(&M)) {
        if let Ok(module) = self.module() {
            if let Err(panic) = self.enter(|| work(&module)) {
                tracing::dispatcher::with_default(&self.context.dispatch, || {
                    tracing::error!("panicked while handling {what}: {panic}")
                });
            }
        }
    }

    /// Runs a synchronous entry point with the instance's logger, under the guard.
    fn enter<T>(&self, work: impl FnOnce() -> T) -> Result<T, String> {
        let _ = ENTERED.try_with(|entered| {
            let mut entered = entered.borrow_mut();
            if entered.as_ref().map(|(id, _)| *id) != Some(self.id) {
                // The previous guard goes first: guards restore in order.
                *entered = None;
                *entered = Some((
                    self.id,
                    tracing::dispatcher::set_default(&self.context.dispatch),
                ));
            }
        });
        guard(work)
    }

    fn lifecycle(&self, step: impl FnOnce(&M)) -> RResult<(), ModuleError> {
        let result = self.module().and_then(|module| {
            self.enter(|| step(&module))
                .map_err(|panic| ModuleError::panicked(format!("panicked: {panic}")))
        });
        result.into()
    }
}

fn ready<T: Send + 'static>(value: T) -> FfiFuture<T> {
    async move { value }.into_ffi()
}

fn later<T: Send + 'static>(
    dispatch: &tracing::Dispatch,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> FfiFuture<RResult<T, ModuleError>> {
    use tracing::instrument::WithSubscriber;
    match runtime::spawn_joined(future.with_subscriber(dispatch.clone())) {
        Ok(joined) => async move { joined.await.into() }.into_ffi(),
        Err(error) => ready(RResult::RErr(error)),
    }
}

impl<M: Module> Drop for Hosted<M> {
    fn drop(&mut self) {
        let current = self
            .current
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // Runs inside the host's call into the instance's destructor.
        let _ = guard(move || drop(current));
    }
}

impl<M: Module + Actions> Instance for Hosted<M> {
    fn configure(&self, text: RStr<'_>) -> RResult<(), ConfigError> {
        let outcome = self.enter(|| {
            let config: M::Config = config::parse(text.as_str())?;
            let effective = toml::to_string(&config).unwrap_or_default();
            let module = M::new(&self.context, config)?;
            Ok::<_, ConfigError>(Configured {
                module: Arc::new(module),
                effective,
            })
        });
        match outcome {
            Ok(Ok(configured)) => {
                let previous = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .replace(configured);
                // The old value's `Drop` is module code: guard it too.
                let _ = self.enter(move || drop(previous));
                RResult::ROk(())
            }
            Ok(Err(refused)) => RResult::RErr(refused),
            Err(panic) => RResult::RErr(crate::config_error(
                "(module)",
                format!("the module panicked while reading its configuration: {panic}"),
            )),
        }
    }

    fn activate(&self) -> RResult<(), ModuleError> {
        self.lifecycle(M::activate)
    }

    fn deactivate(&self) -> RResult<(), ModuleError> {
        self.lifecycle(M::deactivate)
    }

    fn uninstall(&self) -> RResult<(), ModuleError> {
        self.lifecycle(M::uninstall)
    }

    fn call_setup(&self, setup: &CallSetup) -> FfiFuture<RResult<Decision, ModuleError>> {
        let module = match self.module() {
            Ok(module) => module,
            Err(error) => return ready(RResult::RErr(error)),
        };
        match self.enter(|| module.call_setup(setup)) {
            Ok(Setup::Ready(decision)) => ready(RResult::ROk(decision)),
            Ok(Setup::Later(future)) => later(&self.context.dispatch, future),
            Err(panic) => ready(RResult::RErr(ModuleError::panicked(format!(
                "panicked: {panic}"
            )))),
        }
    }

    fn call_event(&self, event: &CallEvent) {
        if let Ok(module) = self.module() {
            // A panic here is already logged by the guard's caller; events never fail a call.
            if let Err(panic) = self.enter(|| module.call_event(event)) {
                tracing::dispatcher::with_default(&self.context.dispatch, || {
                    tracing::error!("panicked while handling a call event: {panic}")
                });
            }
        }
    }

    fn action(
        &self,
        name: RStr<'_>,
        args: RVec<RString>,
    ) -> FfiFuture<RResult<RString, ModuleError>> {
        let module = match self.module() {
            Ok(module) => module,
            Err(error) => return ready(RResult::RErr(error)),
        };
        let args: Vec<String> = args.into_iter().map(RString::into_string).collect();
        let to_json = |result: Result<serde_json::Value, String>| -> RResult<RString, ModuleError> {
            result
                .map(|value| RString::from(value.to_string()))
                .map_err(ModuleError::new)
                .into()
        };
        match self.enter(|| module.action(name.as_str(), &args)) {
            Ok(Action::Ready(result)) => ready(to_json(result)),
            Ok(Action::Later(future)) => {
                let joined = later(&self.context.dispatch, future);
                async move {
                    match joined.await {
                        RResult::ROk(result) => to_json(result),
                        RResult::RErr(error) => RResult::RErr(error),
                    }
                }
                .into_ffi()
            }
            Err(panic) => ready(RResult::RErr(ModuleError::panicked(format!(
                "panicked: {panic}"
            )))),
        }
    }

    fn media(&self, frame: &MediaFrame<'_>) {
        if let Ok(module) = self.module() {
            if let Err(panic) = self.enter(|| module.media(frame)) {
                tracing::dispatcher::with_default(&self.context.dispatch, || {
                    tracing::error!("panicked while handling a media frame: {panic}")
                });
            }
        }
    }

    fn media_gap(&self, call_id: RStr<'_>, leg: TapRequest, frames: u32) {
        if let Ok(module) = self.module() {
            if let Err(panic) = self.enter(|| module.media_gap(call_id.as_str(), leg, frames)) {
                tracing::dispatcher::with_default(&self.context.dispatch, || {
                    tracing::error!("panicked while handling a media gap: {panic}")
                });
            }
        }
    }

    fn media_end(&self, call_id: RStr<'_>) {
        if let Ok(module) = self.module() {
            if let Err(panic) = self.enter(|| module.media_end(call_id.as_str())) {
                tracing::dispatcher::with_default(&self.context.dispatch, || {
                    tracing::error!("panicked while ending a call's media: {panic}")
                });
            }
        }
    }

    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        self.observe("a call's decision", |module| {
            module.call_decided(setup, decision)
        });
    }

    fn call_listed(&self, entry: &callhost_plugin_abi::CallListItem) {
        self.observe("a call-list entry", |module| module.call_listed(entry));
    }

    fn presence_changed(&self, presence: &callhost_plugin_abi::UserPresence) {
        self.observe("a presence change", |module| {
            module.presence_changed(presence)
        });
    }

    fn settle(&self, timeout_ms: u64) -> bool {
        crate::runtime::settle(std::time::Duration::from_millis(timeout_ms))
    }

    fn effective_config(&self) -> RString {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current
            .as_ref()
            .map(|configured| RString::from(configured.effective.as_str()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use callhost_plugin_abi::{ModuleErrorKind, PartyKind};

    use super::*;
    use crate::{testing, ActionEntry, ConfigError};

    /// Panics in call setup, now or later, as configured.
    struct Panicky {
        later: bool,
    }

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
    struct PanickyConfig {
        /// Panic in the returned future instead of at once.
        #[serde(default)]
        #[schemars(extend("x-expert" = true))]
        later: bool,
    }

    #[test]
    fn the_config_schema_is_json_with_the_fields_help_and_markers() {
        let schema: serde_json::Value =
            serde_json::from_str(config_schema::<Panicky>().as_str()).unwrap();
        let later = &schema["properties"]["later"];
        assert_eq!(later["type"], "boolean", "{schema}");
        assert_eq!(later["x-expert"], true, "{schema}");
        assert!(
            later["description"].as_str().unwrap().contains("future"),
            "{schema}"
        );
    }

    impl Module for Panicky {
        type Config = PanickyConfig;

        fn new(_ctx: &Context, config: PanickyConfig) -> Result<Self, ConfigError> {
            Ok(Panicky {
                later: config.later,
            })
        }

        fn call_setup(&self, _setup: &CallSetup) -> Setup {
            if self.later {
                Setup::Later(Box::pin(async { panic!("later") }))
            } else {
                panic!("now")
            }
        }
    }

    impl Panicky {
        fn echo(&self, args: &[String]) -> Result<serde_json::Value, String> {
            Ok(serde_json::json!(args))
        }

        fn explode(&self, _args: &[String]) -> Action {
            panic!("in an action")
        }

        fn failing(&self, _args: &[String]) -> Result<serde_json::Value, String> {
            Err("panicked is just a word here".into())
        }
    }

    impl Actions for Panicky {
        const ACTIONS: &'static [ActionEntry<Self>] = &[
            ActionEntry {
                name: "echo",
                usage: "ARGS…",
                help: "Answers its arguments.",
                handler: |module: &Panicky, args: &[String]| Action::from(module.echo(args)),
            },
            ActionEntry {
                name: "explode",
                usage: "",
                help: "Panics.",
                handler: Panicky::explode,
            },
            ActionEntry {
                name: "failing",
                usage: "",
                help: "Fails.",
                handler: |module: &Panicky, args: &[String]| Action::from(module.failing(args)),
            },
        ];
    }

    fn instance(config: &str) -> InstanceBox {
        let ctx = testing::context("sdk-hosted");
        let instance = new_instance::<Panicky>(InstanceContext {
            instance_name: ctx.instance.as_str().into(),
            data_dir: ctx.data_dir.display().to_string().into(),
            module_dir: ctx.module_dir.display().to_string().into(),
            assets_dir: ctx.assets_dir.display().to_string().into(),
            host: ctx.host.clone(),
        })
        .unwrap();
        instance.configure(RStr::from_str(config)).unwrap();
        instance
    }

    fn setup_error(config: &str) -> ModuleError {
        let setup = testing::setup(
            testing::party(PartyKind::External, "0301234567"),
            testing::user("u", "U", "201"),
        );
        futures::executor::block_on(instance(config).call_setup(&setup))
            .into_result()
            .unwrap_err()
    }

    fn action(name: &str, args: &[&str]) -> RResult<RString, ModuleError> {
        let args = args.iter().map(|a| RString::from(*a)).collect();
        futures::executor::block_on(instance("").action(RStr::from_str(name), args))
    }

    #[test]
    fn a_panic_in_call_setup_is_an_error_of_kind_panicked() {
        let now = setup_error("");
        assert_eq!(now.kind, ModuleErrorKind::Panicked);
        assert_eq!(now.message.as_str(), "panicked: now");
        let later = setup_error("later = true");
        assert_eq!(later.kind, ModuleErrorKind::Panicked);
        assert_eq!(later.message.as_str(), "panicked: later");
    }

    #[test]
    fn actions_run_the_handler_declared_for_their_name() {
        assert_eq!(
            action("echo", &["a", "b"]).unwrap().as_str(),
            r#"["a","b"]"#
        );
        let exploded = action("explode", &[]).unwrap_err();
        assert_eq!(exploded.kind, ModuleErrorKind::Panicked);
        let failed = action("failing", &[]).unwrap_err();
        assert_eq!(
            (failed.kind, failed.message.as_str()),
            (ModuleErrorKind::Failed, "panicked is just a word here")
        );
        let unknown = action("nope", &[]).unwrap_err();
        assert_eq!(unknown.message.as_str(), "unknown action `nope`");
    }

    #[test]
    fn the_manifest_lists_the_declared_actions() {
        let manifest = guarded_manifest::<Panicky>(|| crate::__manifest_parts {
            id: "panicky",
            name: "Panicky",
            version: "0.1.0",
            description: "",
            hooks: callhost_plugin_abi::Hooks::CALL_SETUP,
        });
        let listed: Vec<(&str, &str)> = manifest
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.usage.as_str()))
            .collect();
        assert_eq!(
            listed,
            [("echo", "ARGS…"), ("explode", ""), ("failing", "")]
        );
    }
}
