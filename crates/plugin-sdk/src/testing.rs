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

#[derive(Clone)]
struct TestHost;

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
        let mut secret = [0u8; 32];
        for (index, byte) in purpose.as_str().bytes().enumerate() {
            secret[index % 32] ^= byte;
        }
        RVec::from(secret.to_vec())
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
    let dir = dir.to_path_buf();
    let _ = std::fs::create_dir_all(&dir);
    let host = HostServices_TO::from_ptr(RArc::new(TestHost), TD_Opaque);
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
