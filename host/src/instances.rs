//! Instances: the live objects behind the `instances` table.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::AtomicBool, Arc},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use anyhow::{bail, Context as _, Result};
use arc_swap::ArcSwapOption;
use callhost_pbx::{
    directory::Contact,
    engine::Engine,
    store::{Store, StoreError},
};
use callhost_plugin_abi::{
    Hooks, HostServices, HostServices_TO, InstanceBox, InstanceContext, LogLevel, ModuleError,
    NewContact, Party,
};

use crate::{
    db::{Db, InstanceRow},
    instance_log::{parse_level, InstanceLog},
    loader::{Library, Loader},
    paths::DataDir,
};

/// The engine the host services answer directory questions from; swapped
/// when the directory is reloaded.
pub type EngineSlot = Arc<ArcSwapOption<Engine>>;

/// What the host gives one instance. Module code calls these; a panic in
/// them must not unwind back into the module, so each is guarded.
#[derive(Clone)]
struct InstanceHost {
    log: Arc<InstanceLog>,
    engine: EngineSlot,
    /// The host database, opened per request: these are background and
    /// admin paths, never call setup.
    database: std::path::PathBuf,
    sealer: Arc<callhost_seal::Sealer>,
    module_id: Arc<str>,
    installation_id: Arc<str>,
    progress: Arc<ActionProgress>,
}

/// How far an admin action of a live instance is, as the module reports it.
#[derive(Debug, Default)]
pub struct ActionProgress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
    /// Bumped on every report: whether anything changed since a look.
    reports: std::sync::atomic::AtomicU64,
}

impl ActionProgress {
    /// `(done, total, reports so far)`; `reports` 0: nothing reported.
    pub fn read(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Acquire;
        (
            self.done.load(Acquire),
            self.total.load(Acquire),
            self.reports.load(Acquire),
        )
    }

    fn report(&self, done: u64, total: u64) {
        use std::sync::atomic::Ordering::Release;
        self.total.store(total, Release);
        self.done.store(done.min(total), Release);
        self.reports.fetch_add(1, Release);
    }
}

impl InstanceHost {
    /// Runs `work` on the store, panics and errors turned into a module error.
    fn with_store<T>(
        &self,
        what: &str,
        work: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> RResult<T, ModuleError> {
        let result = catch_unwind(AssertUnwindSafe(|| {
            Store::open(&self.database, self.sealer.clone()).and_then(|store| work(&store))
        }));
        match result {
            Ok(Ok(value)) => RResult::ROk(value),
            Ok(Err(error)) => RResult::RErr(ModuleError::new(format!(
                "{what}: {}",
                crate::error_chain(&error)
            ))),
            Err(_) => RResult::RErr(ModuleError::new(format!("{what}: the host panicked"))),
        }
    }
}

impl HostServices for InstanceHost {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.log.write(level, target.as_str(), message.as_str())
        }));
    }

    fn log_level(&self) -> LogLevel {
        self.log.level()
    }

    fn lookup_number(&self, number: RStr<'_>) -> ROption<Party> {
        catch_unwind(AssertUnwindSafe(|| {
            self.engine
                .load()
                .as_ref()
                .map(|engine| engine.party(number.as_str()))
        }))
        .ok()
        .flatten()
        .into()
    }

    fn home_country(&self) -> RString {
        if let Some(engine) = self.engine.load().as_ref() {
            return engine.directory().directory().home_country.as_str().into();
        }
        self.with_store("reading the home country", |store| store.home_country())
            .into_result()
            .ok()
            .flatten()
            .unwrap_or_else(|| DEFAULT_HOME_COUNTRY.to_string())
            .into()
    }

    fn add_contact(&self, contact: &NewContact) -> RResult<(), ModuleError> {
        let field = |f: &ROption<RString>| f.as_ref().map(RString::to_string).into_option();
        let contact = Contact {
            first_name: field(&contact.first_name),
            last_name: field(&contact.last_name),
            company: field(&contact.company),
            numbers: vec![contact.number.to_string()],
        };
        // A number already in the address book is not added again.
        self.with_store("adding a contact", |store| {
            let known = store
                .contacts()?
                .iter()
                .any(|c| c.numbers.iter().any(|n| contact.numbers.contains(n)));
            if known {
                return Ok(());
            }
            store.add_contact(&contact).map(drop)
        })
    }

    fn unresolved_call_list_numbers(&self) -> RResult<RVec<RString>, ModuleError> {
        self.with_store("reading the call lists", |store| {
            store
                .unresolved_call_list_numbers()
                .map(|numbers| numbers.into_iter().map(RString::from).collect())
        })
    }

    fn set_call_list_name(&self, number: RStr<'_>, name: RStr<'_>) -> RResult<u64, ModuleError> {
        self.with_store("updating the call lists", |store| {
            store
                .set_call_list_name(number.as_str(), name.as_str())
                .map(|changed| changed as u64)
        })
    }

    fn host_version(&self) -> RString {
        env!("CARGO_PKG_VERSION").into()
    }

    fn installation_id(&self) -> RString {
        self.installation_id.as_ref().into()
    }

    fn module_secret(&self, purpose: RStr<'_>) -> RVec<u8> {
        // Per module: one module cannot derive another's secrets.
        let purpose = format!("module:{}:{}", self.module_id, purpose.as_str());
        RVec::from(self.sealer.derive(&purpose).to_vec())
    }

    fn action_progress(&self, done: u64, total: u64) {
        self.progress.report(done, total);
    }
}

/// The installation's id in `<data>/installation-id`, made (random, 128
/// bits) the first time it is asked for.
pub fn installation_id(data: &DataDir) -> Result<String> {
    let path = data.installation_id_file();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let staging = path.with_extension(format!("{id}.tmp"));
    std::fs::write(&staging, format!("{id}\n"))
        .with_context(|| format!("writing {}", staging.display()))?;
    // A link never replaces: whoever links first made the id, the others
    // read theirs.
    let linked = std::fs::hard_link(&staging, &path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(id),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(text.trim().to_string())
        }
        Err(error) => Err(error).with_context(|| format!("writing {}", path.display())),
    }
}

/// The home country when no directory has been loaded yet.
const DEFAULT_HOME_COUNTRY: &str = "DE";

/// A configured instance on a loaded library. Field order matters: the
/// instance is dropped before the library handle that may stop its runtime.
/// The time base of [`LiveInstance::begin_inline`].
static INLINE_EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

pub struct LiveInstance {
    pub instance: InstanceBox,
    pub name: String,
    pub module_id: String,
    pub version: String,
    /// The three above, as decisions report them.
    pub source: Arc<callhost_pbx::engine::DecisionSource>,
    pub hooks: Hooks,
    pub log: Arc<InstanceLog>,
    pub faulted: AtomicBool,
    /// This instance's event queue (only for modules with the event hook).
    pub events: std::sync::OnceLock<std::sync::mpsc::SyncSender<crate::dispatch::EventJob>>,
    /// This instance's media frame queue (only for modules with the media hook).
    pub media: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::dispatch::MediaJob>>,
    /// The installed version's `assets/` (prompts).
    pub assets_dir: std::path::PathBuf,
    /// The instance's own assets (`instance/<file>` in a prompt).
    pub instance_assets_dir: std::path::PathBuf,
    /// When the `call_event` in progress started (for the stall watchdog).
    event_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// The synchronous part of `call_setup` runs on the call's own thread
    /// (the module declared `quick_setup`, and it kept its word so far).
    quick: AtomicBool,
    /// When the inline `call_setup` in progress started (ns since
    /// [`INLINE_EPOCH`]); 0: none. One at a time per instance, so a module
    /// that breaks its word can hold at most one call thread.
    inline_since: std::sync::atomic::AtomicU64,
    /// Inline `call_setup`s in a row slower than the quick limit.
    slow_in_a_row: std::sync::atomic::AtomicU32,
    /// The configuration text it was built from.
    pub config: String,
    /// The library path as stored (relative to the data directory).
    pub stored_library: String,
    pub library: Arc<Library>,
    /// How far its admin action in progress is.
    pub progress: Arc<ActionProgress>,
}

impl LiveInstance {
    pub fn is_faulted(&self) -> bool {
        self.faulted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the start (`Some`) or the end (`None`) of a `call_event`.
    pub fn event_started(&self, at: Option<std::time::Instant>) {
        *self.event_since.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Whether `call_setup` may run inline now: the instance is quick and
    /// no other inline call of it is in progress. On `true` the caller must
    /// call [`LiveInstance::inline_done`]. `now`: when the hook starts.
    pub fn begin_inline(&self, now: std::time::Instant) -> bool {
        use std::sync::atomic::Ordering;
        if !self.quick.load(Ordering::Relaxed) {
            return false;
        }
        let now = (now.saturating_duration_since(*INLINE_EPOCH).as_nanos() as u64).max(1);
        self.inline_since
            .compare_exchange(0, now, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends an inline `call_setup`; returns how long it took.
    pub fn inline_done(&self) -> std::time::Duration {
        use std::sync::atomic::Ordering;
        let since = self.inline_since.swap(0, Ordering::Release);
        let now = INLINE_EPOCH.elapsed().as_nanos() as u64;
        std::time::Duration::from_nanos(now.saturating_sub(since))
    }

    /// How long the inline `call_setup` in progress has run, if any.
    pub fn inline_running_for(&self) -> Option<std::time::Duration> {
        let since = self.inline_since.load(std::sync::atomic::Ordering::Acquire);
        (since != 0).then(|| {
            let now = INLINE_EPOCH.elapsed().as_nanos() as u64;
            std::time::Duration::from_nanos(now.saturating_sub(since))
        })
    }

    /// Counts an inline `call_setup` against the quick limit; returns how
    /// many in a row were slower (0 after a fast one). One slow call is no
    /// proof: the thread may have been preempted, or a first call started
    /// something once.
    pub fn inline_slow(&self, slow: bool) -> u32 {
        use std::sync::atomic::Ordering;
        if slow {
            self.slow_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            if self.slow_in_a_row.load(Ordering::Relaxed) != 0 {
                self.slow_in_a_row.store(0, Ordering::Relaxed);
            }
            0
        }
    }

    /// From now on `call_setup` runs on a thread of its own.
    pub fn demote(&self) {
        self.quick
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_quick(&self) -> bool {
        self.quick.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the `call_event` in progress has been running, if any.
    pub fn event_running_for(&self) -> Option<std::time::Duration> {
        self.event_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }
}

/// Creates and checks instances against the module library.
pub struct Instances<'a> {
    data: &'a DataDir,
    db: &'a Db,
    loader: &'a Loader,
}

/// A module's library, loaded, with its path as stored.
pub struct ModuleLibrary {
    pub library: Arc<Library>,
    pub stored_path: String,
}

impl<'a> Instances<'a> {
    pub fn new(data: &'a DataDir, db: &'a Db, loader: &'a Loader) -> Instances<'a> {
        Instances { data, db, loader }
    }

    /// The module's installed library, loaded only if its file still has
    /// the checksum recorded at install.
    pub fn library_of(&self, module_id: &str) -> Result<ModuleLibrary> {
        let module = self
            .db
            .module(module_id)?
            .ok_or_else(|| Refusal::NotInstalled {
                module: module_id.to_string(),
            })?;
        let path = self.data.resolve(&module.library_path);
        let Some(sha256) = &module.library_sha256 else {
            bail!(
                "module `{module_id}` was installed before callhost recorded library checksums \
                 and {} could not be verified then: install its package again",
                path.display()
            );
        };
        let library = self.loader.load(&path, sha256)?;
        Ok(ModuleLibrary {
            library,
            stored_path: module.library_path,
        })
    }

    /// Refuses `config` for `row` with a message naming the field.
    pub fn check_config_with(
        &self,
        library: &ModuleLibrary,
        row: &InstanceRow,
        config: &str,
    ) -> Result<()> {
        let sealer = self.db.store.sealer();
        live_instance(
            self.data,
            sealer,
            library,
            row,
            config,
            &EngineSlot::default(),
        )
        .map(drop)
    }

    pub fn check_config(&self, row: &InstanceRow, config: &str) -> Result<()> {
        self.check_config_with(&self.library_of(&row.module_id)?, row, config)
    }

    /// A live instance of a stored row (for actions and commands).
    pub fn live(&self, row: &InstanceRow, engine: &EngineSlot) -> Result<LiveInstance> {
        if let Some(error) = &row.config_error {
            bail!("{error}");
        }
        let library = self.library_of(&row.module_id)?;
        live_instance(
            self.data,
            self.db.store.sealer(),
            &library,
            row,
            &row.config,
            engine,
        )
    }
}

/// Builds a live instance of `row` with `config` on `library`. Runs module
/// code (`new_instance`, `configure`); the dispatcher calls it on a thread
/// of its own with a time limit.
pub fn live_instance(
    data: &DataDir,
    sealer: &Arc<callhost_seal::Sealer>,
    library: &ModuleLibrary,
    row: &InstanceRow,
    config: &str,
    engine: &EngineSlot,
) -> Result<LiveInstance> {
    let level = parse_level(&row.log_level)?;
    let log = InstanceLog::new(data.instance_log(&row.name), level);
    let instance_dir = data.instance_dir(&row.name);
    let shared_dir = data.module_shared_dir(&row.module_id);
    for dir in [&instance_dir, &shared_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let progress = Arc::new(ActionProgress::default());
    let host = InstanceHost {
        log: log.clone(),
        engine: engine.clone(),
        database: data.database(),
        sealer: sealer.clone(),
        module_id: row.module_id.as_str().into(),
        installation_id: installation_id(data)?.into(),
        progress: progress.clone(),
    };
    let assets = library
        .library
        .path
        .parent()
        .map(|version_dir| version_dir.join("assets"))
        .unwrap_or_default();
    let context = InstanceContext {
        instance_name: row.name.as_str().into(),
        data_dir: instance_dir.display().to_string().into(),
        module_dir: shared_dir.display().to_string().into(),
        assets_dir: assets.display().to_string().into(),
        host: HostServices_TO::from_ptr(RArc::new(host), TD_Opaque),
    };
    let instance = match (library.library.root.new_instance())(context) {
        RResult::ROk(instance) => instance,
        RResult::RErr(error) => {
            return Err(Refusal::Create {
                module: row.module_id.clone(),
                message: error.message.into_string(),
            }
            .into())
        }
    };
    if let RResult::RErr(error) = instance.configure(RStr::from_str(config)) {
        return Err(Refusal::Config {
            instance: row.name.clone(),
            field: error.field.into_string(),
            message: error.message.into_string(),
        }
        .into());
    }
    let manifest = &library.library.manifest;
    // The time base of inline hooks starts before any of its hooks do.
    std::sync::LazyLock::force(&INLINE_EPOCH);
    Ok(LiveInstance {
        instance,
        name: row.name.clone(),
        module_id: row.module_id.clone(),
        version: manifest.version.to_string(),
        source: Arc::new(callhost_pbx::engine::DecisionSource {
            instance: row.name.clone(),
            module: row.module_id.clone(),
            version: manifest.version.to_string(),
        }),
        hooks: manifest.hooks,
        log,
        faulted: AtomicBool::new(false),
        events: std::sync::OnceLock::new(),
        media: std::sync::OnceLock::new(),
        assets_dir: assets,
        instance_assets_dir: data.instance_assets(&row.name),
        event_since: std::sync::Mutex::new(None),
        quick: AtomicBool::new(manifest.hooks.contains(Hooks::QUICK_SETUP)),
        inline_since: std::sync::atomic::AtomicU64::new(0),
        slow_in_a_row: std::sync::atomic::AtomicU32::new(0),
        config: config.to_string(),
        stored_library: library.stored_path.clone(),
        library: library.library.clone(),
        progress,
    })
}

/// Why an instance cannot be built for reasons of the module or the
/// administrator's input (as opposed to the host failing): the HTTP API
/// answers these with their message.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("module `{module}` could not create an instance: {message}")]
    Create { module: String, message: String },
    #[error("instance `{instance}`: field `{field}`: {message}")]
    Config {
        instance: String,
        field: String,
        message: String,
    },
    /// [`Refusal::Config`] of a configuration read from a file: the field
    /// as it is spelled in that file.
    #[error("{}: instance `{instance}`: field `{field}`: {message}", file.display())]
    ConfigFile {
        file: std::path::PathBuf,
        instance: String,
        field: String,
        message: String,
    },
    #[error("no module `{module}` is installed (see `callhost module list`)")]
    NotInstalled { module: String },
    /// A configuration that is not TOML.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    /// A directory that `directory load` refuses.
    #[error("{origin}: {message}")]
    Directory { origin: String, message: String },
}

impl Refusal {
    /// A configuration refusal names `file`, where the configuration came
    /// from, with the field under `table` of that file (empty: the top
    /// level). Other errors pass unchanged.
    pub fn in_file(error: anyhow::Error, file: &std::path::Path, table: &str) -> anyhow::Error {
        match error.downcast::<Refusal>() {
            Ok(Refusal::Config {
                instance,
                field,
                message,
            }) => Refusal::ConfigFile {
                file: file.to_path_buf(),
                instance,
                field: match (table, field.as_str()) {
                    ("", _) => field,
                    (table, "(top level)") => table.to_string(),
                    // "(module)" and the like are no path in the file.
                    (_, other) if other.starts_with('(') => field,
                    (table, other) => format!("{table}.{other}"),
                },
                message,
            }
            .into(),
            Ok(other) => other.into(),
            Err(error) => error,
        }
    }
}

/// Why an admin action gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The module has no such action; the message lists the ones it has.
    #[error("{0}")]
    Unknown(String),
    /// The module answered with an error (or with invalid JSON).
    #[error("{0}")]
    Failed(String),
}

/// A started action's answer; dropping it aborts the action.
pub type ActionFuture = callhost_plugin_abi::FfiFuture<RResult<RString, ModuleError>>;

/// Runs an admin action and returns its JSON answer.
pub async fn run_action(
    live: &LiveInstance,
    action: &str,
    args: Vec<String>,
) -> Result<serde_json::Value> {
    Ok(action_answer(start_action(live, action, args)?).await?)
}

/// Starts an admin action. This runs the module's synchronous part, so an
/// async caller runs it on a blocking thread.
pub fn start_action(
    live: &LiveInstance,
    action: &str,
    args: Vec<String>,
) -> Result<ActionFuture, ActionError> {
    let actions = &live.library.manifest.actions;
    if !actions.iter().any(|a| a.name.as_str() == action) {
        let names: Vec<String> = actions
            .iter()
            .map(|a| format!("{} {}", a.name, a.usage).trim().to_string())
            .collect();
        return Err(ActionError::Unknown(format!(
            "module `{}` has no action `{action}`; it has: {}",
            live.module_id,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    let args: RVec<RString> = args.into_iter().map(RString::from).collect();
    Ok(live.instance.action(RStr::from_str(action), args))
}

/// Waits for a started action and parses its JSON answer.
pub async fn action_answer(future: ActionFuture) -> Result<serde_json::Value, ActionError> {
    match future.await {
        RResult::ROk(json) => serde_json::from_str(json.as_str())
            .map_err(|e| ActionError::Failed(format!("module answered with invalid JSON: {e}"))),
        RResult::RErr(error) => Err(ActionError::Failed(error.message.into_string())),
    }
}
