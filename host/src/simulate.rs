//! `callhost simulate`: scripted calls through the real engine and the
//! active module instances, one JSON object per call on stdout.
//! The format is public: see `docs/simulator.md`.

use std::{io::Write, sync::Arc, time::Instant};

use abi_stable::std_types::ROption;
use anyhow::{Context as _, Result};
use callhost_pbx::{
    directory::Directory,
    engine::{CallOutcome, CallRequest, Engine, Via},
    store::{rfc3339_utc, CallDirection, CallListEntry},
};
use callhost_plugin_abi::{Party, PartyKind};
use serde::{Deserialize, Serialize};

use crate::{config::parse_toml, db::Invalid, dispatch::Dispatcher, Host};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// An inline directory (same schema as `directory load`); without it the
    /// stored directory is used.
    pub directory: Option<toml::Value>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub calls: Vec<ScenarioCall>,
    /// The file it was read from (named by warnings); empty if none.
    #[serde(skip)]
    pub path: std::path::PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub setup_budget_ms: Option<u64>,
    /// Wait between call starts (lets an upgrade land during a run).
    #[serde(default)]
    pub pause_ms: u64,
    /// Calls in progress at once (default 1: one after the other).
    #[serde(default)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioCall {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub via: Via,
    pub by: Option<String>,
    /// Nobody answers: no-answer forwards apply.
    #[serde(default)]
    pub no_answer: bool,
    /// Place this call this many times.
    #[serde(default = "one")]
    pub repeat: u32,
}

fn one() -> u32 {
    1
}

/// One output line.
#[derive(Debug, Serialize)]
pub struct CallLine<'a> {
    pub call: u64,
    pub from: &'a str,
    pub to: &'a str,
    pub via: Via,
    #[serde(flatten)]
    pub result: &'a CallOutcome,
    /// The first forward followed, or null.
    pub forwarded: Option<&'a callhost_pbx::engine::ForwardTaken>,
    pub setup_ms: f64,
}

impl Scenario {
    pub fn load(path: &std::path::Path) -> Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut scenario: Scenario = parse_toml(&text, &path.display().to_string())?;
        scenario.path = path.to_path_buf();
        if let Some(budget) = scenario.settings.setup_budget_ms {
            if budget == 0 || budget > 10_000 {
                return Err(Invalid(format!(
                    "{}: field `settings.setup_budget_ms`: {budget} is outside 1..=10000",
                    path.display()
                ))
                .into());
            }
        }
        for (index, call) in scenario.calls.iter().enumerate() {
            if call.via != Via::Direct && call.by.is_none() {
                return Err(Invalid(format!(
                    "{}: field `calls[{index}].by`: a transfer needs the transferring party",
                    path.display()
                ))
                .into());
            }
            if call.repeat == 0 {
                return Err(Invalid(format!(
                    "{}: field `calls[{index}].repeat`: must be at least 1",
                    path.display()
                ))
                .into());
            }
        }
        Ok(scenario)
    }
}

/// Calls whose parties the directory does not know still run (an unknown
/// caller, a transfer by an outsider), but such a value is more often a
/// slip, such as a user id where a number belongs: one line each, naming
/// the value.
pub fn warnings(scenario: &Scenario, engine: &Engine) -> Vec<String> {
    let directory = engine.directory();
    let mut lines = Vec::new();
    let place = if scenario.path.as_os_str().is_empty() {
        "scenario".to_string()
    } else {
        scenario.path.display().to_string()
    };
    for (index, call) in scenario.calls.iter().enumerate() {
        if engine.party(&call.from).kind == PartyKind::Unknown {
            let what = if callhost_numbers::clean(&call.from).is_err() {
                "is not a number"
            } else {
                "is not a number: neither one of the directory's nor a valid phone number"
            };
            let hint = if directory.user(call.from.trim()).is_some() {
                " (it is a user id: give one of the user's numbers)"
            } else {
                ""
            };
            lines.push(format!(
                "warning: {place}: field `calls[{index}].from`: {:?} {what}{hint}; the call is placed with an unknown caller",
                call.from
            ));
        }
        if let (true, Some(by)) = (call.via != Via::Direct, &call.by) {
            let user = directory.user(by).is_some() || engine.party(by).kind == PartyKind::User;
            if !user {
                lines.push(format!(
                    "warning: {place}: field `calls[{index}].by`: {by:?} is not a directory user (neither a user id nor a user's number)"
                ));
            }
        }
    }
    lines
}

/// Runs a scenario and writes JSON lines to `out`, warnings (see
/// [`warnings`]) to `warn` before the first call.
pub fn run(
    host: &Host,
    scenario: &Scenario,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<()> {
    // Calls on the stored directory are real traffic and land in the users'
    // call lists; an inline directory is a what-if and records nothing.
    let record = scenario.directory.is_none();
    if scenario.settings.concurrency > 1000 {
        return Err(Invalid(format!(
            "scenario: field `settings.concurrency`: {} is more than 1000",
            scenario.settings.concurrency
        ))
        .into());
    }
    let directory = match &scenario.directory {
        Some(inline) => Directory::from_value(inline.clone()).map_err(|error| {
            Invalid(format!(
                "scenario: field `directory`: {}",
                crate::error_chain(&error)
            ))
        })?,
        None => host.stored_directory()?.ok_or_else(|| {
            Invalid(
                "no directory loaded: run `callhost directory load FILE` or put a [directory] table in the scenario"
                    .into(),
            )
        })?,
    };
    let mut engine_config = host.config.engine();
    if let Some(budget) = scenario.settings.setup_budget_ms {
        engine_config.setup_budget = std::time::Duration::from_millis(budget);
    }
    let engine = crate::engine_on(directory, engine_config)
        .map_err(|error| Invalid(format!("scenario: field `directory`: {error:#}")))?;
    for line in warnings(scenario, &engine) {
        writeln!(warn, "{line}")?;
    }
    let mut dispatcher = Dispatcher::new(Default::default(), host.config.hook_reserve());
    dispatcher.set_persist_faults(record);
    let dispatcher = Arc::new(dispatcher);
    if record {
        let generation = host.db.store.directory_generation()?;
        let mut at = dispatcher.slots.directory();
        dispatcher
            .slots
            .install(&mut at, engine.clone(), Some(generation));
    } else {
        // A what-if: the services must not change the stored users after it.
        dispatcher.slots.set_inline_directory();
        dispatcher.engine.store(Some(engine.clone()));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    dispatcher.attach(runtime.handle().clone());
    let concurrency = scenario.settings.concurrency.max(1);
    let requests = scenario
        .calls
        .iter()
        .flat_map(|call| std::iter::repeat_n(call, call.repeat as usize));
    // Calls start in order, up to `concurrency` at a time; lines come out in
    // call order. The instance set is refreshed before each call starts, so
    // an upgrade during the run reaches new calls while calls in progress
    // finish on the code they started with.
    let mut running = tokio::task::JoinSet::new();
    let mut finished = std::collections::BTreeMap::new();
    let mut next_to_print = 1u64;
    let print = |finished: &mut std::collections::BTreeMap<
        u64,
        (ScenarioCall, CallRequest, CallOutcome, f64),
    >,
                 next_to_print: &mut u64,
                 out: &mut dyn Write|
     -> Result<()> {
        while let Some((call, request, outcome, setup_ms)) = finished.remove(next_to_print) {
            if record {
                for entry in record_call_lists(host, &engine, &request, &outcome)? {
                    dispatcher.call_listed(&crate::instances::call_list_item(&entry));
                }
            }
            let line = CallLine {
                call: *next_to_print,
                from: &call.from,
                to: &call.to,
                via: call.via,
                forwarded: outcome.forwards.first(),
                result: &outcome,
                setup_ms,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            out.flush()?;
            *next_to_print += 1;
        }
        Ok(())
    };
    for (index, call) in requests.enumerate() {
        let number = index as u64 + 1;
        while running.len() >= concurrency {
            let (n, done) = runtime
                .block_on(running.join_next())
                .expect("a call is running")?;
            finished.insert(n, done);
            print(&mut finished, &mut next_to_print, out)?;
        }
        dispatcher.refresh(&host.data, &host.db, &host.loader)?;
        let request = CallRequest {
            call_id: format!("sim-{}-{number}", std::process::id()),
            from: call.from.clone(),
            to: call.to.clone(),
            via: call.via,
            by: call.by.clone(),
            no_answer: call.no_answer,
            external_caller: false,
        };
        let (engine, dispatcher, call) = (engine.clone(), dispatcher.clone(), call.clone());
        running.spawn_on(
            async move {
                let started = Instant::now();
                let outcome = engine.place(&request, dispatcher.as_ref()).await;
                let setup_ms = started.elapsed().as_secs_f64() * 1000.0;
                (number, (call, request, outcome, setup_ms))
            },
            runtime.handle(),
        );
        if scenario.settings.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(scenario.settings.pause_ms));
        }
    }
    while let Some(joined) = runtime.block_on(running.join_next()) {
        let (n, done) = joined?;
        finished.insert(n, done);
    }
    print(&mut finished, &mut next_to_print, out)?;
    dispatcher.flush_events(std::time::Duration::from_secs(2));
    dispatcher.record_faults(&host.db);
    // Hooks stuck in a module must not keep the process alive.
    runtime.shutdown_background();
    Ok(())
}

/// Adds the call to the call lists (see [`call_list_entries`]); returns
/// the entries it added.
pub(crate) fn record_call_lists(
    host: &Host,
    engine: &Engine,
    request: &CallRequest,
    outcome: &CallOutcome,
) -> Result<Vec<CallListEntry>> {
    let time = rfc3339_utc(std::time::SystemTime::now());
    let entries = call_list_entries(engine, request, outcome, &time);
    host.db.store.add_call_list_entries(&entries)?;
    Ok(entries)
}

/// What a call adds to the call lists: an incoming entry for every user
/// whose phone rang, an outgoing one for a calling user. A module's
/// resolved name beats the address book's. Pure: no I/O.
pub(crate) fn call_list_entries(
    engine: &Engine,
    request: &CallRequest,
    outcome: &CallOutcome,
    time: &str,
) -> Vec<CallListEntry> {
    let entry = |user: &str, direction: CallDirection, other: &Party, resolved: &Option<String>| {
        CallListEntry {
            id: None,
            user_id: user.to_string(),
            time: time.to_string(),
            direction,
            number: other.number.to_string(),
            name: resolved.clone().or_else(|| {
                other
                    .name
                    .as_ref()
                    .map(|name| name.to_string())
                    .into_option()
            }),
            call_id: request.call_id.clone(),
        }
    };
    let caller = engine.caller_party(request);
    let mut entries: Vec<CallListEntry> = outcome
        .rang
        .iter()
        .filter_map(|ring| ring.user.as_deref())
        .map(|user| entry(user, CallDirection::In, &caller, &outcome.caller_name))
        .collect();
    if let (PartyKind::User, ROption::RSome(user)) = (caller.kind, &caller.id) {
        entries.push(entry(
            user,
            CallDirection::Out,
            &engine.party(&request.to),
            &outcome.callee_name,
        ));
    }
    entries
}
