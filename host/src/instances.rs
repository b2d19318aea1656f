//! Instances: the live objects behind the `instances` table.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc, Mutex, MutexGuard, OnceLock, Weak,
    },
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use anyhow::{bail, Context as _, Result};
use arc_swap::ArcSwapOption;
use callhost_pbx::{
    directory::{digest_ha1, Contact, DirectoryIndex},
    engine::{CallRequest, Engine, Via},
    store::{CallDirection, CallListEntry, Store, StoreError},
};
use callhost_plugin_abi::{
    CallListDirection, CallListItem, CallSetup, Decision, Direction, FfiFuture, ForwardKind, Hooks,
    HostServices, HostServices_TO, InstanceBox, InstanceContext, LogLevel, ModuleError, NewContact,
    Party, PartyKind, PasswordCheck, UserPresence, UserState as AbiUserState,
};

use crate::{
    db::{Db, InstanceRow},
    dispatch::Dispatcher,
    instance_log::{parse_level, InstanceLog},
    loader::{Library, Loader},
    paths::DataDir,
};

/// The engine the host services answer directory questions from; swapped
/// when the directory is reloaded.
pub type EngineSlot = Arc<ArcSwapOption<Engine>>;

/// What a host process shares with the services of every instance it
/// runs: the engine of the moment, and where the process has them the
/// dispatcher (caller lookups, presence events) with its runtime and
/// `serve`'s telephony. Cheap to clone: every part is shared.
#[derive(Clone, Default)]
pub struct HostSlots {
    pub engine: EngineSlot,
    telephony: Arc<OnceLock<callhost_sip::Telephony>>,
    dispatcher: Arc<OnceLock<(Weak<Dispatcher>, tokio::runtime::Handle)>>,
    /// Held while the directory changes (a service, a reload), so that
    /// changes are applied one after the other and in order.
    directory: Arc<Mutex<DirectoryVersion>>,
    /// The engine's directory is not the stored one (a scenario's inline
    /// directory): users cannot be changed.
    inline_directory: Arc<AtomicBool>,
}

/// Which stored directory the engine in the slot was built from.
#[derive(Debug, Default)]
pub struct DirectoryVersion {
    /// The store's directory generation of the engine's directory; `None`
    /// when not known (nothing loaded yet, or an engine not from the store).
    pub generation: Option<i64>,
}

/// Why a call could not be placed outside `callhost serve`.
const NOT_SERVING: &str = "calls can be placed only by `callhost serve`";
/// Why a caller lookup could not run.
const NO_LOOKUPS: &str =
    "caller lookups run only where module instances are active: in `callhost serve` (or `callhost simulate`)";
/// Longest call list one `call_list` returns.
pub const CALL_LIST_LIMIT: u32 = 1000;

impl HostSlots {
    /// Slots with `engine` and nothing else.
    pub fn on(engine: EngineSlot) -> HostSlots {
        HostSlots {
            engine,
            ..HostSlots::default()
        }
    }

    /// `serve`'s telephony: from now on `originate` and `hang_up` place
    /// and end calls.
    pub fn set_telephony(&self, telephony: callhost_sip::Telephony) {
        let _ = self.telephony.set(telephony);
    }

    /// The dispatcher of this process, and the runtime its hooks run on.
    pub fn attach(&self, dispatcher: Weak<Dispatcher>, runtime: tokio::runtime::Handle) {
        let _ = self.dispatcher.set((dispatcher, runtime));
    }

    fn dispatcher(&self) -> Option<(Arc<Dispatcher>, tokio::runtime::Handle)> {
        let (dispatcher, runtime) = self.dispatcher.get()?;
        Some((dispatcher.upgrade()?, runtime.clone()))
    }

    /// The engine routes on a directory of its own (a scenario's), not the
    /// stored one: the services refuse to change users.
    pub fn set_inline_directory(&self) {
        self.inline_directory
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The directory lock, with the generation the engine is at.
    pub fn directory(&self) -> MutexGuard<'_, DirectoryVersion> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `engine`, built from the stored directory at `generation`, in
    /// the slot (the caller holds `version`, the directory lock) and tells
    /// presence listeners about every user whose stored presence changed.
    pub fn install(
        &self,
        version: &mut DirectoryVersion,
        engine: Arc<Engine>,
        generation: Option<i64>,
    ) {
        let before = self.engine.swap(Some(engine.clone()));
        version.generation = generation;
        if let (Some(before), Some((dispatcher, _))) = (before, self.dispatcher()) {
            if dispatcher.wants_presence() {
                dispatcher.note_presence(changed_users(before.directory(), engine.directory()));
            }
        }
    }

    /// Builds the engine again from the stored directory unless it is at
    /// the store's generation already (a change made by this process's
    /// services is); `make` builds an engine on a directory. Returns
    /// whether the engine changed.
    pub fn reload_directory(
        &self,
        store: &Store,
        make: impl FnOnce(Arc<DirectoryIndex>) -> Engine,
    ) -> Result<bool> {
        let current = store.directory_generation()?;
        let mut version = self.directory();
        if version.generation == Some(current) {
            return Ok(false);
        }
        let Some((directory, generation)) = store.directory_snapshot()? else {
            return Ok(false);
        };
        if version.generation == Some(generation) {
            return Ok(false);
        }
        match DirectoryIndex::new(directory) {
            Ok(index) => {
                self.install(
                    &mut version,
                    Arc::new(make(Arc::new(index))),
                    Some(generation),
                );
                Ok(true)
            }
            Err(error) => {
                // Not tried again until the directory changes once more.
                version.generation = Some(generation);
                Err(anyhow::Error::new(error)
                    .context("stored directory not usable, keeping the previous one"))
            }
        }
    }
}

/// Users whose stored presence (name, number, DND, forwards, groups and
/// logins) differs from `before` to `after`, and users new in `after`.
pub fn changed_users(before: &DirectoryIndex, after: &DirectoryIndex) -> Vec<String> {
    let stored = |index: &DirectoryIndex, id: &str| {
        index.user(id).map(|user| {
            let state = index.state(id);
            (
                user.name.clone(),
                user.primary_number().to_string(),
                state.dnd,
                state.forward_always,
                state.forward_busy,
                state.forward_no_answer,
                index
                    .groups_of(id)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                index
                    .active_groups_of(id)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        })
    };
    after
        .directory()
        .users
        .iter()
        .filter(|user| stored(before, &user.id) != stored(after, &user.id))
        .map(|user| user.id.clone())
        .collect()
}

/// A directory user's presence on `engine` now: the directory's state with
/// the engine's live presence (on `serve`: registrations and calls; else
/// the directory's simulated flags).
pub fn user_presence(engine: &Engine, user: &str) -> Option<UserPresence> {
    let index = engine.directory();
    let found = index.user(user)?;
    let state = engine.user_state(&found.id);
    let text = |value: &Option<String>| value.as_deref().map(RString::from).into();
    let ids = |ids: Vec<&str>| ids.into_iter().map(RString::from).collect();
    Some(UserPresence {
        user: found.id.as_str().into(),
        number: found.primary_number().into(),
        name: Some(found.name.trim())
            .filter(|name| !name.is_empty())
            .map(RString::from)
            .into(),
        registered: state.registered,
        in_call: state.busy,
        dnd: state.dnd,
        forward_always: text(&state.forward_always),
        forward_busy: text(&state.forward_busy),
        forward_no_answer: text(&state.forward_no_answer),
        groups: ids(index.groups_of(&found.id)),
        active_groups: ids(index.active_groups_of(&found.id)),
    })
}

/// A call-list entry as modules see it.
pub fn call_list_item(entry: &CallListEntry) -> CallListItem {
    CallListItem {
        user: entry.user_id.as_str().into(),
        time: entry.time.as_str().into(),
        direction: match entry.direction {
            CallDirection::In => CallListDirection::In,
            CallDirection::Out => CallListDirection::Out,
        },
        number: entry.number.as_str().into(),
        name: entry.name.as_deref().map(RString::from).into(),
        call_id: entry.call_id.as_str().into(),
    }
}

/// The setup a caller lookup runs: a call from `number` to `user` that
/// never rings (call id `lookup-<random>`), incoming when the number is
/// an outside one.
pub fn lookup_setup(engine: &Engine, user: &str, number: &str) -> Result<CallSetup, String> {
    let index = engine.directory();
    let callee_user = index
        .user(user)
        .ok_or_else(|| format!("user: no user {user:?} in the directory"))?;
    let number = number.trim();
    if number.is_empty() {
        return Err("number: must not be empty".into());
    }
    let call_id = format!("lookup-{}", hex::encode(rand::random::<[u8; 8]>()));
    let caller = match engine.party(number) {
        party if party.kind != PartyKind::Unknown => party,
        _ => {
            // Not the directory's: an outside number, if it is one.
            let request = CallRequest {
                call_id: call_id.clone(),
                from: number.to_string(),
                to: callee_user.primary_number().to_string(),
                via: Via::Direct,
                by: None,
                no_answer: false,
                external_caller: true,
            };
            let party = engine.caller_party(&request);
            if party.e164.is_none() {
                return Err(format!(
                    "number: {number:?} is neither a number of the directory nor a valid phone number"
                ));
            }
            party
        }
    };
    let direction = match caller.kind {
        PartyKind::User | PartyKind::Group => Direction::Internal,
        _ => Direction::Incoming,
    };
    let state = engine.user_state(&callee_user.id);
    let text = |value: &Option<String>| value.as_deref().map(RString::from).into();
    Ok(CallSetup {
        call_id: call_id.into(),
        direction,
        caller,
        callee: engine.party(callee_user.primary_number()),
        dialled: callee_user.primary_number().into(),
        transfer: ROption::RNone,
        callee_state: ROption::RSome(AbiUserState {
            dnd: state.dnd,
            call_waiting: state.call_waiting,
            busy: state.busy,
            forward_always: text(&state.forward_always),
            forward_busy: text(&state.forward_busy),
            forward_no_answer: text(&state.forward_no_answer),
        }),
        pending_forward: ROption::RNone,
        forwarded: RVec::new(),
        prior: Decision::default(),
    })
}

/// One change a module asks for on a user.
enum UserChange<'a> {
    Dnd(bool),
    /// A forward to this target, or none (empty).
    Forward(ForwardKind, &'a str),
    /// Logged in to (`true`) or out of this group.
    GroupLogin(&'a str, bool),
}

impl UserChange<'_> {
    /// For the log: what changed (no secrets here).
    fn describe(&self) -> String {
        match self {
            UserChange::Dnd(on) => format!("dnd {}", if *on { "on" } else { "off" }),
            UserChange::Forward(kind, target) => {
                let kind = forward_field(*kind);
                match target.trim() {
                    "" => format!("{kind} cleared"),
                    target => format!("{kind} {target}"),
                }
            }
            UserChange::GroupLogin(group, true) => format!("logged in to group {group}"),
            UserChange::GroupLogin(group, false) => format!("logged out of group {group}"),
        }
    }
}

/// A forward's field in the directory's `[state.<user>]`.
fn forward_field(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Always => "forward_always",
        ForwardKind::Busy => "forward_busy",
        ForwardKind::NoAnswer => "forward_no_answer",
    }
}

/// Ends the lookup task when its answer is no longer awaited.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the host gives one instance. Module code calls these; a panic in
/// them must not unwind back into the module, so each is guarded.
#[derive(Clone)]
struct InstanceHost {
    log: Arc<InstanceLog>,
    /// The instance's name, for the host's log.
    instance: Arc<str>,
    slots: HostSlots,
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
    /// Changes `user` as asked, stores it as `directory load` would and
    /// puts an engine with the change in the slot at once.
    fn change_user(&self, user: &str, change: UserChange<'_>) -> RResult<(), ModuleError> {
        match catch_unwind(AssertUnwindSafe(|| self.try_change_user(user, &change))) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(message)) => RResult::RErr(ModuleError::new(message)),
            Err(_) => RResult::RErr(ModuleError::new(format!(
                "changing user {user:?}: the host panicked"
            ))),
        }
    }

    fn try_change_user(&self, user: &str, change: &UserChange<'_>) -> Result<(), String> {
        if self
            .slots
            .inline_directory
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(
                "this run routes on a scenario's own directory: its users cannot be changed".into(),
            );
        }
        // One change at a time, and none while a reload is half done.
        let mut version = self.slots.directory();
        let engine = self.slots.engine.load_full().ok_or(
            "no directory is loaded (`callhost directory load FILE`): there are no users to change",
        )?;
        if engine.directory().user(user).is_none() {
            return Err(format!("user: no user {user:?} in the directory"));
        }
        // The change on the directory in force, checked by the directory's
        // own rules: a refusal names the field as a directory file would.
        let mut directory = engine.directory().directory().clone();
        let mut state = directory.state.get(user).cloned().unwrap_or_default();
        match change {
            UserChange::Dnd(on) => state.dnd = *on,
            UserChange::Forward(kind, target) => {
                let target = target.trim();
                let target = (!target.is_empty()).then(|| target.to_string());
                match kind {
                    ForwardKind::Always => state.forward_always = target,
                    ForwardKind::Busy => state.forward_busy = target,
                    ForwardKind::NoAnswer => state.forward_no_answer = target,
                }
            }
            UserChange::GroupLogin(group, logged_in) => {
                let found = directory
                    .groups
                    .iter_mut()
                    .find(|g| g.id == *group)
                    .ok_or_else(|| format!("group: no group {group:?} in the directory"))?;
                if !found.members.iter().any(|member| member == user) {
                    return Err(format!(
                        "group: user {user:?} is not a member of group {group:?}"
                    ));
                }
                found.inactive.retain(|member| member != user);
                if !logged_in {
                    found.inactive.push(user.to_string());
                }
            }
        }
        if !matches!(change, UserChange::GroupLogin(..)) {
            directory.state.insert(user.to_string(), state.clone());
        }
        directory
            .validate()
            .map_err(|error| crate::error_chain(&error))?;

        let mut store = Store::open(&self.database, self.sealer.clone())
            .map_err(|error| format!("opening the database: {}", crate::error_chain(&error)))?;
        match change {
            UserChange::GroupLogin(group, logged_in) => {
                store.set_group_login(group, user, *logged_in)
            }
            _ => store.set_user_state(user, &state),
        }
        .map_err(|error| format!("storing the change: {}", crate::error_chain(&error)))?;
        // The engine on what is stored now (other processes' changes
        // included), at the generation it has: the watcher of a running
        // `serve` sees it is current and leaves it.
        let stored = store
            .directory_snapshot()
            .map_err(|error| crate::error_chain(&error))
            .and_then(|snapshot| snapshot.ok_or_else(|| "no directory is stored".to_string()))
            .and_then(|(stored, generation)| {
                DirectoryIndex::new(stored)
                    .map(|index| (index, generation))
                    .map_err(|error| crate::error_chain(&error))
            });
        let (index, generation) = match stored {
            Ok((index, generation)) => (index, Some(generation)),
            Err(error) => {
                // Stored all the same; the change alone is known good.
                tracing::error!(
                    "reading the stored directory after a change: {error}; routing on the change alone"
                );
                let index = DirectoryIndex::new(directory).map_err(|e| crate::error_chain(&e))?;
                (index, None)
            }
        };
        self.slots.install(
            &mut version,
            Arc::new(engine.rebuilt(Arc::new(index))),
            generation,
        );
        drop(version);
        let what = change.describe();
        tracing::info!(instance = %self.instance, user, "user changed: {what}");
        self.log
            .write(LogLevel::Info, "callhost", &format!("user {user}: {what}"));
        Ok(())
    }

    /// Starts a caller lookup on the dispatcher's runtime.
    fn start_lookup(
        &self,
        user: &str,
        number: &str,
    ) -> Result<FfiFuture<RResult<Decision, ModuleError>>, String> {
        let (dispatcher, runtime) = self.slots.dispatcher().ok_or(NO_LOOKUPS)?;
        let engine = self
            .slots
            .engine
            .load_full()
            .ok_or("no directory is loaded")?;
        let setup = lookup_setup(&engine, user, number)?;
        // The hooks run on the host's runtime (the module's tokio is
        // another); the module only awaits the answer.
        let (answer, answered) = futures::channel::oneshot::channel();
        let task = runtime.spawn(async move {
            let _ = answer.send(dispatcher.lookup(setup).await);
        });
        let abort = AbortOnDrop(task.abort_handle());
        Ok(FfiFuture::new(async move {
            let _abort = abort;
            match answered.await {
                Ok(decision) => RResult::ROk(decision),
                Err(_) => RResult::RErr(ModuleError::new("the lookup ended without an answer")),
            }
        }))
    }

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
            self.slots
                .engine
                .load()
                .as_ref()
                .map(|engine| engine.party(number.as_str()))
        }))
        .ok()
        .flatten()
        .into()
    }

    fn home_country(&self) -> RString {
        if let Some(engine) = self.slots.engine.load().as_ref() {
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

    fn user_presence(&self, user: RStr<'_>) -> ROption<UserPresence> {
        catch_unwind(AssertUnwindSafe(|| {
            let engine = self.slots.engine.load_full()?;
            user_presence(&engine, user.as_str())
        }))
        .ok()
        .flatten()
        .into()
    }

    fn verify_password(&self, user: RStr<'_>, password: RStr<'_>) -> PasswordCheck {
        // The password is never logged, stored or kept: it is hashed here
        // and compared with the directory's HA1 in constant time.
        catch_unwind(AssertUnwindSafe(|| {
            let Some(engine) = self.slots.engine.load_full() else {
                return PasswordCheck::UnknownUser;
            };
            let Some(found) = engine.directory().user(user.as_str()) else {
                return PasswordCheck::UnknownUser;
            };
            let Some(stored) = found.digest_ha1() else {
                return PasswordCheck::NoPassword;
            };
            let given = digest_ha1(&found.id, password.as_str());
            let stored = stored.to_ascii_lowercase();
            if crate::http::same_bytes(stored.as_bytes(), given.as_bytes()) {
                PasswordCheck::Valid
            } else {
                PasswordCheck::Wrong
            }
        }))
        .unwrap_or(PasswordCheck::UnknownUser)
    }

    fn set_dnd(&self, user: RStr<'_>, on: bool) -> RResult<(), ModuleError> {
        self.change_user(user.as_str(), UserChange::Dnd(on))
    }

    fn set_forward(
        &self,
        user: RStr<'_>,
        kind: ForwardKind,
        target: RStr<'_>,
    ) -> RResult<(), ModuleError> {
        self.change_user(user.as_str(), UserChange::Forward(kind, target.as_str()))
    }

    fn set_group_login(
        &self,
        user: RStr<'_>,
        group: RStr<'_>,
        logged_in: bool,
    ) -> RResult<(), ModuleError> {
        self.change_user(
            user.as_str(),
            UserChange::GroupLogin(group.as_str(), logged_in),
        )
    }

    fn call_list(&self, user: RStr<'_>, limit: u32) -> RResult<RVec<CallListItem>, ModuleError> {
        let limit = limit.min(CALL_LIST_LIMIT);
        self.with_store("reading the call list", |store| {
            store
                .recent_calls(user.as_str(), limit)
                .map(|entries| entries.iter().map(call_list_item).collect())
        })
    }

    fn originate(&self, user: RStr<'_>, number: RStr<'_>) -> RResult<RString, ModuleError> {
        let Some(telephony) = self.slots.telephony.get() else {
            return RResult::RErr(ModuleError::new(NOT_SERVING));
        };
        match catch_unwind(AssertUnwindSafe(|| {
            telephony.originate(user.as_str(), number.as_str())
        })) {
            Ok(Ok(call_id)) => {
                tracing::info!(instance = %self.instance, user = %user, call = %call_id, "click-to-dial");
                RResult::ROk(call_id.into())
            }
            Ok(Err(refusal)) => RResult::RErr(ModuleError::new(refusal.to_string())),
            Err(_) => RResult::RErr(ModuleError::new("placing the call: the host panicked")),
        }
    }

    fn hang_up(&self, user: RStr<'_>, call_id: RStr<'_>) -> RResult<(), ModuleError> {
        let Some(telephony) = self.slots.telephony.get() else {
            return RResult::RErr(ModuleError::new(NOT_SERVING));
        };
        match catch_unwind(AssertUnwindSafe(|| {
            telephony.hang_up(user.as_str(), call_id.as_str())
        })) {
            Ok(Ok(())) => RResult::ROk(()),
            Ok(Err(refusal)) => RResult::RErr(ModuleError::new(refusal.to_string())),
            Err(_) => RResult::RErr(ModuleError::new("ending the call: the host panicked")),
        }
    }

    fn lookup_caller(
        &self,
        user: RStr<'_>,
        number: RStr<'_>,
    ) -> FfiFuture<RResult<Decision, ModuleError>> {
        let refused = |message: String| {
            FfiFuture::new(async move { RResult::RErr(ModuleError::new(message)) })
        };
        match catch_unwind(AssertUnwindSafe(|| {
            self.start_lookup(user.as_str(), number.as_str())
        })) {
            Ok(Ok(lookup)) => lookup,
            Ok(Err(message)) => refused(message),
            Err(_) => refused("looking up the caller: the host panicked".into()),
        }
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
    /// When the event delivery in progress started, and which hook it is
    /// (for the stall watchdog).
    event_since: std::sync::Mutex<Option<(std::time::Instant, &'static str)>>,
    /// Events and observations its full queue did not take.
    events_dropped: AtomicU64,
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

    /// Counts `what`, which its full event queue did not take, in its log:
    /// the first ten, then every thousandth (a slow module is told, its log
    /// is not flooded).
    pub fn event_dropped(&self, what: impl FnOnce() -> String) {
        let dropped = self
            .events_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if dropped <= 10 || dropped.is_multiple_of(1000) {
            self.log.write(
                LogLevel::Warn,
                "callhost",
                &format!(
                    "event queue full: {} dropped ({dropped} dropped so far)",
                    what()
                ),
            );
        }
    }

    /// How many events and observations were dropped so far.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the start (`Some`: when, and the hook) or the end (`None`) of
    /// an event delivery (`call_event`, `call_decided`, …).
    pub fn event_started(&self, running: Option<(std::time::Instant, &'static str)>) {
        *self.event_since.lock().unwrap_or_else(|p| p.into_inner()) = running;
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

    /// How long the event delivery in progress has been running, and its
    /// hook, if any.
    pub fn event_running_for(&self) -> Option<(std::time::Duration, &'static str)> {
        self.event_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(since, hook)| (since.elapsed(), hook))
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
            &HostSlots::default(),
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
            &HostSlots::on(engine.clone()),
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
    slots: &HostSlots,
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
        instance: row.name.as_str().into(),
        slots: slots.clone(),
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
        events_dropped: AtomicU64::new(0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_pbx::{directory::Directory, engine::EngineConfig};

    const DIRECTORY: &str = r#"
home_country = "DE"

[[users]]
id = "anna"
name = "Anna Alpha"
numbers = ["201", "+4930123456201"]
password = "anna-pw"

[[users]]
id = "bert"
name = "Bert Beta"
numbers = ["202"]

[[groups]]
id = "team"
name = "Team"
numbers = ["300"]
members = ["anna", "bert"]
inactive = ["bert"]

[[contacts]]
first_name = "Max"
last_name = "Kunde"
numbers = ["+49891234567"]
"#;

    fn engine(state: &str) -> Engine {
        let directory = Directory::from_toml_str(&format!("{DIRECTORY}\n{state}")).unwrap();
        Engine::new(
            Arc::new(DirectoryIndex::new(directory).unwrap()),
            EngineConfig::default(),
        )
    }

    /// The services an instance of `host` gets, on `slots`.
    fn services(host: &crate::Host, slots: &HostSlots) -> InstanceHost {
        InstanceHost {
            log: InstanceLog::new(host.data.instance_log("test"), LogLevel::Info),
            instance: "test".into(),
            slots: slots.clone(),
            database: host.data.database(),
            sealer: host.db.store.sealer().clone(),
            module_id: "test".into(),
            installation_id: "test".into(),
            progress: Arc::default(),
        }
    }

    #[test]
    fn presence_is_the_directorys_state_and_groups() {
        let engine =
            engine("[state.bert]\ndnd = true\nforward_busy = \"201\"\nregistered = false\n");
        let bert = user_presence(&engine, "bert").unwrap();
        assert_eq!(bert.number.as_str(), "202");
        assert_eq!(bert.name.as_ref().unwrap().as_str(), "Bert Beta");
        assert!(bert.dnd && !bert.registered && !bert.in_call);
        assert_eq!(bert.forward_busy.as_ref().unwrap().as_str(), "201");
        assert!(bert.forward_always.is_none());
        assert_eq!(bert.groups.len(), 1);
        assert!(bert.active_groups.is_empty(), "logged out of the team");
        let anna = user_presence(&engine, "anna").unwrap();
        assert_eq!(anna.active_groups[0].as_str(), "team");
        assert!(user_presence(&engine, "ghost").is_none());
    }

    #[test]
    fn changed_users_are_the_ones_whose_stored_presence_differs() {
        let before = engine("");
        let same = engine("");
        assert!(changed_users(before.directory(), same.directory()).is_empty());
        let dnd = engine("[state.bert]\ndnd = true\n");
        assert_eq!(changed_users(before.directory(), dnd.directory()), ["bert"]);
        // A setting presence does not show is no change.
        let quiet = engine("[state.bert]\nno_answer_seconds = 5\n");
        assert!(changed_users(before.directory(), quiet.directory()).is_empty());
        // A group login changes the member's presence.
        let logged_in = Directory::from_toml_str(
            &DIRECTORY.replace("inactive = [\"bert\"]", "inactive = [\"anna\"]"),
        )
        .unwrap();
        let logged_in = DirectoryIndex::new(logged_in).unwrap();
        let mut changed = changed_users(before.directory(), &logged_in);
        changed.sort();
        assert_eq!(changed, ["anna", "bert"]);
    }

    #[test]
    fn a_lookup_is_a_call_to_the_user_that_never_rings() {
        let engine = engine("[state.anna]\ndnd = true\n");
        let setup = lookup_setup(&engine, "anna", "089 1234567").unwrap();
        assert!(setup.call_id.starts_with("lookup-"), "{}", setup.call_id);
        assert_eq!(setup.call_id.len(), "lookup-".len() + 16);
        assert_eq!(setup.direction, Direction::Incoming);
        assert_eq!(setup.caller.kind, PartyKind::External);
        assert_eq!(setup.caller.e164.as_ref().unwrap().as_str(), "+49891234567");
        // The address book's name comes with the caller, as on a call.
        assert_eq!(setup.caller.name.as_ref().unwrap().as_str(), "Max Kunde");
        assert_eq!(setup.callee.id.as_ref().unwrap().as_str(), "anna");
        assert!(setup.callee_state.as_ref().unwrap().dnd);
        assert!(setup.prior.is_empty());
        // A colleague's number is an internal call; an unknown outside
        // number is still a caller.
        let internal = lookup_setup(&engine, "anna", "202").unwrap();
        assert_eq!(internal.direction, Direction::Internal);
        let outside = lookup_setup(&engine, "anna", "+4940555123").unwrap();
        assert_eq!(outside.direction, Direction::Incoming);
        assert!(outside.caller.name.is_none());
        assert_ne!(outside.call_id, setup.call_id);
        for (user, number, refusal) in [
            ("ghost", "+4940555123", "no user \"ghost\""),
            ("anna", " ", "number: must not be empty"),
            ("anna", "299", "neither a number of the directory"),
            ("anna", "not a number", "neither a number of the directory"),
        ] {
            let error = lookup_setup(&engine, user, number).unwrap_err();
            assert!(error.contains(refusal), "{user} {number:?}: {error}");
        }
    }

    #[test]
    fn a_change_is_stored_in_force_at_once_and_not_reloaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = crate::Host::open(dir.path()).unwrap();
        host.db
            .store
            .save_directory(&Directory::from_toml_str(DIRECTORY).unwrap())
            .unwrap();
        let slots = HostSlots::default();
        let make = |index: Arc<DirectoryIndex>| Engine::new(index, EngineConfig::default());
        assert!(slots.reload_directory(&host.db.store, make).unwrap());
        // At the store's generation: nothing to do.
        assert!(!slots.reload_directory(&host.db.store, make).unwrap());
        let services = services(&host, &slots);

        services.set_dnd("bert".into(), true).unwrap();
        services
            .set_forward("bert".into(), ForwardKind::Always, "089 1234567".into())
            .unwrap();
        services
            .set_group_login("bert".into(), "team".into(), true)
            .unwrap();
        // In force at once...
        let bert = services.user_presence("bert".into()).unwrap();
        assert!(bert.dnd);
        assert_eq!(
            bert.forward_always.as_ref().unwrap().as_str(),
            "089 1234567"
        );
        assert_eq!(bert.active_groups.len(), 1);
        // ... stored ...
        let stored = host.db.store.load_directory().unwrap().unwrap();
        assert!(stored.state["bert"].dnd);
        assert!(stored.groups[0].inactive.is_empty());
        // ... and the engine is at the store's generation: no reload.
        assert_eq!(
            slots.directory().generation,
            Some(host.db.store.directory_generation().unwrap())
        );
        assert!(!slots.reload_directory(&host.db.store, make).unwrap());
        // Another process's change is one to reload.
        let reloaded = Directory::from_toml_str(DIRECTORY).unwrap();
        host.db.store.save_directory(&reloaded).unwrap();
        assert!(slots.reload_directory(&host.db.store, make).unwrap());
        assert!(!services.user_presence("bert".into()).unwrap().dnd);

        // Refusals name the field; nothing changes.
        let refused = services
            .set_forward("bert".into(), ForwardKind::Busy, "299".into())
            .unwrap_err();
        assert!(
            refused.message.contains("state.bert.forward_busy")
                && refused.message.contains("\"299\""),
            "{}",
            refused.message
        );
        let refused = services
            .set_group_login("bert".into(), "nobody".into(), true)
            .unwrap_err();
        assert!(
            refused.message.contains("no group \"nobody\""),
            "{}",
            refused.message
        );
        let refused = services.set_dnd("ghost".into(), true).unwrap_err();
        assert!(
            refused.message.contains("no user \"ghost\""),
            "{}",
            refused.message
        );
        // An empty target clears; a run on a scenario's directory refuses.
        services
            .set_forward("bert".into(), ForwardKind::Always, "".into())
            .unwrap();
        slots.set_inline_directory();
        let refused = services.set_dnd("bert".into(), true).unwrap_err();
        assert!(refused.message.contains("scenario"), "{}", refused.message);
    }

    #[test]
    fn passwords_are_checked_against_the_directorys_hash() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::Host::open(dir.path()).unwrap();
        let slots = HostSlots::on(EngineSlot::default());
        let services = services(&host, &slots);
        // No directory: nobody is known.
        assert_eq!(
            services.verify_password("anna".into(), "anna-pw".into()),
            PasswordCheck::UnknownUser
        );
        slots.engine.store(Some(Arc::new(engine(""))));
        for (user, password, answer) in [
            ("anna", "anna-pw", PasswordCheck::Valid),
            ("anna", "Anna-pw", PasswordCheck::Wrong),
            ("anna", "", PasswordCheck::Wrong),
            ("bert", "", PasswordCheck::NoPassword),
            ("ghost", "anna-pw", PasswordCheck::UnknownUser),
        ] {
            assert_eq!(
                services.verify_password(user.into(), password.into()),
                answer,
                "{user} {password:?}"
            );
        }
    }

    #[test]
    fn calls_and_lookups_need_their_host() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::Host::open(dir.path()).unwrap();
        let slots = HostSlots::on(EngineSlot::default());
        slots.engine.store(Some(Arc::new(engine(""))));
        let services = services(&host, &slots);
        let refused = services.originate("anna".into(), "202".into()).unwrap_err();
        assert_eq!(refused.message.as_str(), NOT_SERVING);
        let refused = services.hang_up("anna".into(), "x".into()).unwrap_err();
        assert_eq!(refused.message.as_str(), NOT_SERVING);
        let lookup = services.lookup_caller("anna".into(), "+4940555123".into());
        let refused = futures::executor::block_on(lookup).unwrap_err();
        assert_eq!(refused.message.as_str(), NO_LOOKUPS);
    }

    #[test]
    fn call_list_items_say_whose_and_which_way() {
        let item = call_list_item(&CallListEntry {
            id: Some(3),
            user_id: "anna".into(),
            time: "2026-12-06T09:30:00Z".into(),
            direction: CallDirection::Out,
            number: "089 1234567".into(),
            name: Some("Max Kunde".into()),
            call_id: "c1".into(),
        });
        assert_eq!(item.user.as_str(), "anna");
        assert_eq!(item.direction, CallListDirection::Out);
        assert_eq!(item.name.as_ref().unwrap().as_str(), "Max Kunde");
        assert_eq!(item.call_id.as_str(), "c1");
    }
}
