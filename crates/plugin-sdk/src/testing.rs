//! In-process helpers for a module's own unit tests. Tests through the real
//! loaded library live in the host's test suite; these are for rule tables.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use callhost_plugin_abi::{
    HostServices, HostServices_TO, LogLevel, ModuleError, NewContact, Party, PartyKind,
};

use crate::Context;

/// The JSON Schema of `C` exactly as the host receives it, for a module's
/// test that its schema names the documented options.
pub fn config_schema<C: schemars::JsonSchema>() -> serde_json::Value {
    crate::config::schema::<C>()
}

/// [`config_schema`], asserting that its top level has every option in
/// `names` (the documented ones), each with a help text.
pub fn config_schema_naming<C: schemars::JsonSchema>(names: &[&str]) -> serde_json::Value {
    let schema = config_schema::<C>();
    for name in names {
        let help = schema["properties"][name]["description"].as_str();
        assert!(
            help.is_some_and(|help| !help.trim().is_empty()),
            "option `{name}` missing from the schema or without a help text: {schema}"
        );
    }
    schema
}

/// The host a test context talks to. [`TestHost::new`] knows nobody (like
/// a host that is only checking a configuration) and offers a module
/// secret; [`TestHost::default`] offers none either. Fill in what a test
/// needs (users with passwords and presence, call lists, the answers
/// to click-to-dial and lookups) and read back what the module asked for
/// ([`TestHost::requests`]). Clones share one state, so a test keeps one
/// clone and hands another to [`context_with`].
#[derive(Clone, Default)]
pub struct TestHost {
    state: std::sync::Arc<std::sync::Mutex<TestHostState>>,
}

/// What a [`TestHost`] knows and what it was asked.
#[derive(Default)]
pub struct TestHostState {
    /// Directory users by id: their password (`None`: no password set)
    /// and presence.
    pub users: std::collections::BTreeMap<String, TestUser>,
    /// Call-list entries, newest first (any user's; filtered per user).
    pub call_list: Vec<callhost_plugin_abi::CallListItem>,
    /// What `lookup_caller` answers, by number (otherwise no opinion).
    pub lookups: std::collections::BTreeMap<String, callhost_plugin_abi::Decision>,
    /// The call id `originate` answers with (otherwise `test-call-<n>`).
    pub originate_answer: Option<Result<String, String>>,
    /// When set, every service that changes something (`set_*`,
    /// `originate`, `hang_up`) fails with this message.
    pub refuse_changes: Option<String>,
    /// The secret `module_secret` derives from; `None`: the host has none.
    pub secret: Option<[u8; 32]>,
    /// Every service call that changes something, in order, e.g.
    /// `set_dnd anna true` or `originate anna 0301234567`.
    pub requests: Vec<String>,
}

/// A directory user of a [`TestHost`].
#[derive(Debug, Clone)]
pub struct TestUser {
    pub password: Option<String>,
    pub presence: callhost_plugin_abi::UserPresence,
}

impl TestHost {
    /// A host without users whose `module_secret` is derived from a fixed
    /// test secret (like the host's, stable per purpose).
    pub fn new() -> TestHost {
        let host = TestHost::default();
        host.with_state(|state| state.secret = Some([0u8; 32]));
        host
    }

    /// Runs `change` on the shared state (add users, set answers).
    pub fn with_state<T>(&self, change: impl FnOnce(&mut TestHostState) -> T) -> T {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds (or replaces) a user with `password` and a default presence:
    /// registered, not in a call, no DND, no forwards, primary `number`.
    pub fn add_user(&self, id: &str, name: &str, number: &str, password: Option<&str>) {
        let presence = callhost_plugin_abi::UserPresence {
            user: id.into(),
            number: number.into(),
            name: ROption::RSome(name.into()),
            registered: true,
            in_call: false,
            dnd: false,
            forward_always: ROption::RNone,
            forward_busy: ROption::RNone,
            forward_no_answer: ROption::RNone,
            groups: RVec::new(),
            active_groups: RVec::new(),
        };
        self.with_state(|state| {
            state.users.insert(
                id.to_string(),
                TestUser {
                    password: password.map(str::to_string),
                    presence,
                },
            )
        });
    }

    /// The user's presence as the host holds it now.
    pub fn presence(&self, user: &str) -> Option<callhost_plugin_abi::UserPresence> {
        self.with_state(|state| state.users.get(user).map(|u| u.presence.clone()))
    }

    /// The changing service calls made so far (see [`TestHostState::requests`]).
    pub fn requests(&self) -> Vec<String> {
        self.with_state(|state| state.requests.clone())
    }

    /// Records a changing request; the refusal if changes are refused.
    fn change(&self, request: String) -> Result<(), ModuleError> {
        self.with_state(|state| {
            state.requests.push(request);
            match &state.refuse_changes {
                Some(message) => Err(ModuleError::new(message.as_str())),
                None => Ok(()),
            }
        })
    }

    /// Changes a known user's presence, or fails naming the user.
    fn change_user(
        &self,
        user: &str,
        change: impl FnOnce(&mut callhost_plugin_abi::UserPresence),
    ) -> RResult<(), ModuleError> {
        self.with_state(|state| match state.users.get_mut(user) {
            Some(known) => {
                change(&mut known.presence);
                RResult::ROk(())
            }
            None => RResult::RErr(ModuleError::new(format!("no user {user:?}"))),
        })
    }
}

impl HostServices for TestHost {
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        eprintln!("[{level:?}] {target}: {message}");
    }

    fn log_level(&self) -> LogLevel {
        LogLevel::Debug
    }

    fn lookup_number(&self, _number: RStr<'_>) -> ROption<Party> {
        ROption::RNone
    }

    fn home_country(&self) -> RString {
        "DE".into()
    }

    fn add_contact(&self, _contact: &NewContact) -> RResult<(), ModuleError> {
        RResult::RErr(ModuleError::new("the test host has no address book"))
    }

    fn unresolved_call_list_numbers(&self) -> RResult<RVec<RString>, ModuleError> {
        RResult::ROk(RVec::new())
    }

    fn set_call_list_name(&self, _number: RStr<'_>, _name: RStr<'_>) -> RResult<u64, ModuleError> {
        RResult::ROk(0)
    }

    fn host_version(&self) -> RString {
        "0.0.0-test".into()
    }

    fn installation_id(&self) -> RString {
        "test-installation".into()
    }

    /// Stable per purpose, like the host's (not secret: tests only).
    fn module_secret(&self, purpose: RStr<'_>) -> RVec<u8> {
        let Some(mut secret) = self.with_state(|state| state.secret) else {
            return RVec::new();
        };
        for (index, byte) in purpose.as_str().bytes().enumerate() {
            secret[index % 32] ^= byte;
        }
        RVec::from(secret.to_vec())
    }

    fn user_presence(&self, user: RStr<'_>) -> ROption<callhost_plugin_abi::UserPresence> {
        self.presence(user.as_str()).into()
    }

    fn verify_password(
        &self,
        user: RStr<'_>,
        password: RStr<'_>,
    ) -> callhost_plugin_abi::PasswordCheck {
        use callhost_plugin_abi::PasswordCheck;
        self.with_state(|state| match state.users.get(user.as_str()) {
            None => PasswordCheck::UnknownUser,
            Some(TestUser { password: None, .. }) => PasswordCheck::NoPassword,
            Some(TestUser {
                password: Some(known),
                ..
            }) if known == password.as_str() => PasswordCheck::Valid,
            Some(_) => PasswordCheck::Wrong,
        })
    }

    fn set_dnd(&self, user: RStr<'_>, on: bool) -> RResult<(), ModuleError> {
        if let Err(refused) = self.change(format!("set_dnd {user} {on}")) {
            return RResult::RErr(refused);
        }
        self.change_user(user.as_str(), |presence| presence.dnd = on)
    }

    fn set_forward(
        &self,
        user: RStr<'_>,
        kind: callhost_plugin_abi::ForwardKind,
        target: RStr<'_>,
    ) -> RResult<(), ModuleError> {
        use callhost_plugin_abi::ForwardKind;
        if let Err(refused) = self.change(format!("set_forward {user} {kind:?} {target}")) {
            return RResult::RErr(refused);
        }
        let target: ROption<RString> = if target.is_empty() {
            ROption::RNone
        } else {
            ROption::RSome(target.into())
        };
        self.change_user(user.as_str(), |presence| match kind {
            ForwardKind::Always => presence.forward_always = target,
            ForwardKind::Busy => presence.forward_busy = target,
            ForwardKind::NoAnswer => presence.forward_no_answer = target,
        })
    }

    fn set_group_login(
        &self,
        user: RStr<'_>,
        group: RStr<'_>,
        logged_in: bool,
    ) -> RResult<(), ModuleError> {
        if let Err(refused) = self.change(format!("set_group_login {user} {group} {logged_in}")) {
            return RResult::RErr(refused);
        }
        self.change_user(user.as_str(), |presence| {
            presence
                .active_groups
                .retain(|g| g.as_str() != group.as_str());
            if logged_in {
                presence.active_groups.push(group.into());
            }
        })
    }

    fn call_list(
        &self,
        user: RStr<'_>,
        limit: u32,
    ) -> RResult<RVec<callhost_plugin_abi::CallListItem>, ModuleError> {
        self.with_state(|state| {
            RResult::ROk(
                state
                    .call_list
                    .iter()
                    .filter(|entry| entry.user.as_str() == user.as_str())
                    .take(limit as usize)
                    .cloned()
                    .collect(),
            )
        })
    }

    fn originate(&self, user: RStr<'_>, number: RStr<'_>) -> RResult<RString, ModuleError> {
        if let Err(refused) = self.change(format!("originate {user} {number}")) {
            return RResult::RErr(refused);
        }
        self.with_state(|state| match &state.originate_answer {
            Some(Ok(call_id)) => RResult::ROk(call_id.as_str().into()),
            Some(Err(message)) => RResult::RErr(ModuleError::new(message.as_str())),
            None => RResult::ROk(format!("test-call-{}", state.requests.len()).into()),
        })
    }

    fn hang_up(&self, user: RStr<'_>, call_id: RStr<'_>) -> RResult<(), ModuleError> {
        self.change(format!("hang_up {user} {call_id}")).into()
    }

    fn lookup_caller(
        &self,
        _user: RStr<'_>,
        number: RStr<'_>,
    ) -> callhost_plugin_abi::FfiFuture<RResult<callhost_plugin_abi::Decision, ModuleError>> {
        let decision = self.with_state(|state| {
            state
                .lookups
                .get(number.as_str())
                .cloned()
                .unwrap_or_default()
        });
        callhost_plugin_abi::FfiFuture::new(async move { RResult::ROk(decision) })
    }
}

/// A context whose log goes to stderr and whose directory is empty.
pub fn context(instance: &str) -> Context {
    context_in(
        instance,
        &std::env::temp_dir().join(format!("callhost-test-{instance}")),
    )
}

/// A context whose directories are `dir` (e.g. a fresh temporary one, for
/// a module that keeps files).
pub fn context_in(instance: &str, dir: &std::path::Path) -> Context {
    context_with(instance, dir, TestHost::new())
}

/// A context in `dir` whose host services are `host`: keep a clone of it
/// to set the fake data and read the requests.
pub fn context_with(instance: &str, dir: &std::path::Path, host: TestHost) -> Context {
    let dir = dir.to_path_buf();
    let _ = std::fs::create_dir_all(&dir);
    let host = HostServices_TO::from_ptr(RArc::new(host), TD_Opaque);
    Context {
        instance: instance.to_string(),
        data_dir: dir.clone(),
        module_dir: dir.clone(),
        assets_dir: dir,
        dispatch: crate::logging::dispatch(&host),
        host,
    }
}

/// Configures a fresh instance of `M` the way the host does (TOML text
/// through the SDK's parser and `Module::new`): the configuration in force
/// with defaults filled in, or the refusal naming the field.
pub fn configure<M: crate::Module + crate::Actions>(
    text: &str,
) -> Result<String, callhost_plugin_abi::ConfigError> {
    let ctx = context("configure");
    let instance = crate::new_instance::<M>(callhost_plugin_abi::InstanceContext {
        instance_name: ctx.instance.as_str().into(),
        data_dir: ctx.data_dir.display().to_string().into(),
        module_dir: ctx.module_dir.display().to_string().into(),
        assets_dir: ctx.assets_dir.display().to_string().into(),
        host: ctx.host.clone(),
    })
    .into_result()
    .map_err(|error| crate::config_error("(module)", error.message.into_string()))?;
    instance
        .configure(RStr::from_str(text))
        .into_result()
        .map(|()| instance.effective_config().into_string())
}

/// A bare party of `kind` with `number`; set the other fields as needed.
pub fn party(kind: PartyKind, number: &str) -> Party {
    Party::new(kind, number)
}

/// An outside caller from Germany, shaped as the engine shapes it: every
/// form filled in, and the national form (what a phone here dials back) as
/// its number. `national` is like `"0301234567"`.
pub fn external_de(national: &str) -> Party {
    let significant = national.trim_start_matches('0');
    Party {
        international: ROption::RSome(format!("0049{significant}").into()),
        e164: ROption::RSome(format!("+49{significant}").into()),
        national: ROption::RSome(national.into()),
        ..Party::new(PartyKind::External, national)
    }
}

/// An internal user with id, name and primary number.
pub fn user(id: &str, name: &str, number: &str) -> Party {
    Party {
        id: ROption::RSome(RString::from(id)),
        name: ROption::RSome(RString::from(name)),
        primary_number: ROption::RSome(RString::from(number)),
        ..party(PartyKind::User, number)
    }
}

/// One hop's setup as the engine builds it for a first call from `caller`
/// to `callee`: the direction from the parties' kinds, a default state for
/// a called user, nothing forwarded or decided yet.
pub fn setup(caller: Party, callee: Party) -> callhost_plugin_abi::CallSetup {
    use callhost_plugin_abi::{Direction, UserState};
    let direction = match (caller.kind, callee.kind) {
        (PartyKind::External, _) => Direction::Incoming,
        (_, PartyKind::External) => Direction::Outgoing,
        _ => Direction::Internal,
    };
    let callee_state = if callee.kind == PartyKind::User {
        ROption::RSome(UserState::default())
    } else {
        ROption::RNone
    };
    callhost_plugin_abi::CallSetup {
        call_id: "call-1".into(),
        direction,
        dialled: callee.number.clone(),
        caller,
        callee,
        transfer: ROption::RNone,
        callee_state,
        pending_forward: ROption::RNone,
        forwarded: RVec::new(),
        prior: callhost_plugin_abi::Decision::default(),
    }
}
