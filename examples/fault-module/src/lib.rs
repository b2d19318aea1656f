//! Misbehaves on purpose so the host's fault handling can be tested for
//! real: through the loaded library, the same way a broken module would.
//!
//! It is also the host services' test module: its actions call each
//! service of ABI 5 (presence, passwords, DND, forwards, group logins,
//! call lists, click-to-dial, caller lookups), `record = true` writes what
//! its observation hooks hear to `observed.jsonl` in its directory (the
//! `observed` action reads it), and `relay = true` lets `callhost instance
//! action NAME serve ACTION ARGS…` run an action in the instance of a
//! running `callhost serve` (through files in its directory), where the
//! services act on the live server.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use callhost_plugin_sdk::{
    config_error, export_module,
    serde_json::{self, json, Value},
    tracing, Action, BoxFuture, CallEvent, CallListDirection, CallListItem, CallSetup, ConfigError,
    Context, Decision, ForwardKind, Module, PasswordCheck, Setup, UserPresence,
};
use serde::{Deserialize, Serialize};

/// How the module misbehaves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Behaves: sets the display to `display`.
    #[default]
    Ok,
    /// Panics in the synchronous part of call setup.
    Panic,
    /// Panics inside its asynchronous task.
    PanicAsync,
    /// Blocks the calling thread forever.
    Hang,
    /// Returns a future that never completes.
    HangAsync,
    /// Answers after `delay_ms` on its runtime.
    Slow,
    /// Behaves in call setup, blocks forever in `call_event`.
    HangEvents,
}

/// Misbehaves on purpose, for the host's fault tests.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What the module does in call setup (and in `call_event`).
    pub mode: Mode,
    /// In mode "slow": how long the answer takes, in milliseconds.
    #[schemars(title = "Delay (ms)", extend("x-expert" = true))]
    pub delay_ms: u64,
    /// The display set when the module behaves (modes "ok", "slow" and
    /// "hang-events").
    pub display: String,
    /// This version refuses the configuration: stands in for a newer
    /// release that no longer accepts what an older one did.
    #[schemars(title = "Refuse in version", extend("x-expert" = true))]
    pub refuse_in_version: String,
    /// In mode "slow": write `completed` into the instance directory when
    /// the delay is over (proves whether an abandoned future was aborted).
    #[schemars(title = "Write completion marker", extend("x-expert" = true))]
    pub completed_marker: bool,
    /// Write every event, decision, call-list entry and presence change
    /// the instance hears to `observed.jsonl` in its directory.
    #[schemars(extend("x-expert" = true))]
    pub record: bool,
    /// When active (in `callhost serve`), run the actions that `serve`
    /// relays from the command line.
    #[schemars(extend("x-expert" = true))]
    pub relay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Ok,
            delay_ms: 2000,
            display: "fault-module was here".into(),
            refuse_in_version: String::new(),
            completed_marker: false,
            record: false,
            relay: false,
        }
    }
}

pub struct Faulty {
    config: Config,
    marker: std::path::PathBuf,
    services: Arc<Services>,
    /// Ends the relay when the instance is deactivated.
    stop: Arc<AtomicBool>,
}

/// The host services, as the actions call them, and the record.
struct Services {
    ctx: Context,
    /// `observed.jsonl`, when recording.
    record: Option<PathBuf>,
    /// One line at a time.
    writing: Mutex<()>,
}

/// Where relayed requests and their answers go.
fn relay_dir(ctx: &Context) -> PathBuf {
    ctx.data_dir.join("relay")
}

/// How long the command line waits for the server's answer.
const RELAY_WAIT: Duration = Duration::from_secs(20);

impl Services {
    /// Appends one observation.
    fn observe(&self, line: Value) {
        use std::io::Write as _;
        let Some(path) = &self.record else { return };
        let _held = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            tracing::warn!("cannot record to {}: {error}", path.display());
        }
    }

    /// Runs the host-service action `name`.
    fn run(self: Arc<Self>, name: String, args: Vec<String>) -> BoxFuture<Result<Value, String>> {
        Box::pin(async move {
            let arg = |i: usize| -> Result<String, String> {
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{name}: argument {} is missing", i + 1))
            };
            let ctx = self.ctx.clone();
            // Those that reach the host's database run off the runtime.
            let blocking = |work: Box<dyn FnOnce() -> Result<Value, String> + Send>| async move {
                tokio::task::spawn_blocking(work)
                    .await
                    .map_err(|e| format!("the blocking task failed: {e}"))?
            };
            match name.as_str() {
                "presence" => Ok(ctx
                    .user_presence(&arg(0)?)
                    .map_or(Value::Null, |p| presence_json(&p))),
                "verify" => {
                    let (user, password) = (arg(0)?, arg(1)?);
                    let check = blocking(Box::new(move || {
                        Ok(json!(match ctx.verify_password(&user, &password) {
                            PasswordCheck::Valid => "valid",
                            PasswordCheck::Wrong => "wrong",
                            PasswordCheck::UnknownUser => "unknown-user",
                            PasswordCheck::NoPassword => "no-password",
                        }))
                    }));
                    check.await
                }
                "dnd" => {
                    let (user, on) = (arg(0)?, arg(1)?);
                    let on = match on.as_str() {
                        "on" => true,
                        "off" => false,
                        other => return Err(format!("dnd: {other:?} is neither on nor off")),
                    };
                    blocking(Box::new(move || {
                        ctx.set_dnd(&user, on).map(|()| json!({ "ok": true }))
                    }))
                    .await
                }
                "forward" => {
                    let (user, kind) = (arg(0)?, arg(1)?);
                    let target = args.get(2).cloned();
                    let kind = match kind.as_str() {
                        "always" => ForwardKind::Always,
                        "busy" => ForwardKind::Busy,
                        "no-answer" => ForwardKind::NoAnswer,
                        other => return Err(format!("forward: unknown kind {other:?}")),
                    };
                    blocking(Box::new(move || {
                        ctx.set_forward(&user, kind, target.as_deref())
                            .map(|()| json!({ "ok": true }))
                    }))
                    .await
                }
                "group" => {
                    let (user, group, login) = (arg(0)?, arg(1)?, arg(2)?);
                    let login = match login.as_str() {
                        "in" => true,
                        "out" => false,
                        other => return Err(format!("group: {other:?} is neither in nor out")),
                    };
                    blocking(Box::new(move || {
                        ctx.set_group_login(&user, &group, login)
                            .map(|()| json!({ "ok": true }))
                    }))
                    .await
                }
                "calls" => {
                    let user = arg(0)?;
                    let limit: u32 = arg(1)?
                        .parse()
                        .map_err(|e| format!("calls: the limit: {e}"))?;
                    blocking(Box::new(move || {
                        ctx.call_list(&user, limit)
                            .map(|list| list.iter().map(item_json).collect())
                    }))
                    .await
                }
                "originate" => {
                    let (user, number) = (arg(0)?, arg(1)?);
                    blocking(Box::new(move || {
                        ctx.originate(&user, &number)
                            .map(|call_id| json!({ "call_id": call_id }))
                    }))
                    .await
                }
                "hangup" => {
                    let (user, call_id) = (arg(0)?, arg(1)?);
                    blocking(Box::new(move || {
                        ctx.hang_up(&user, &call_id).map(|()| json!({ "ok": true }))
                    }))
                    .await
                }
                "lookup" => {
                    let (user, number) = (arg(0)?, arg(1)?);
                    ctx.lookup_caller(&user, &number)
                        .await
                        .map(|decision| decision_json(&decision))
                }
                other => Err(format!("{other}: not a host-service action")),
            }
        })
    }

    /// Answers the relayed requests in the relay directory until `stop`.
    async fn relay(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let dir = relay_dir(&self.ctx);
        let _ = std::fs::create_dir_all(&dir);
        while !stop.load(Ordering::Relaxed) {
            let requests: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "request"))
                .collect();
            for request in requests {
                let Ok(text) = std::fs::read_to_string(&request) else {
                    continue;
                };
                let _ = std::fs::remove_file(&request);
                let answer = match serde_json::from_str::<(String, Vec<String>)>(&text) {
                    Ok((name, args)) => self.clone().run(name, args).await,
                    Err(error) => Err(format!("a relayed request that is no request: {error}")),
                };
                let answer = match answer {
                    Ok(value) => json!({ "ok": value }),
                    Err(message) => json!({ "error": message }),
                };
                let staged = request.with_extension("staged");
                let _ = std::fs::write(&staged, answer.to_string());
                let _ = std::fs::rename(&staged, request.with_extension("answer"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn presence_json(p: &UserPresence) -> Value {
    let text = |v: &callhost_plugin_sdk::abi_stable::std_types::ROption<
        callhost_plugin_sdk::abi_stable::std_types::RString,
    >| v.as_ref().map(|v| v.to_string()).into_option();
    json!({
        "user": p.user.as_str(),
        "number": p.number.as_str(),
        "name": text(&p.name),
        "registered": p.registered,
        "in_call": p.in_call,
        "dnd": p.dnd,
        "forward_always": text(&p.forward_always),
        "forward_busy": text(&p.forward_busy),
        "forward_no_answer": text(&p.forward_no_answer),
        "groups": p.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "active_groups": p.active_groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
    })
}

fn item_json(item: &CallListItem) -> Value {
    json!({
        "user": item.user.as_str(),
        "time": item.time.as_str(),
        "direction": match item.direction {
            CallListDirection::In => "in",
            CallListDirection::Out => "out",
        },
        "number": item.number.as_str(),
        "name": item.name.as_ref().map(|n| n.to_string()).into_option(),
        "call_id": item.call_id.as_str(),
    })
}

fn decision_json(d: &Decision) -> Value {
    let text = |v: &callhost_plugin_sdk::abi_stable::std_types::ROption<
        callhost_plugin_sdk::abi_stable::std_types::RString,
    >| v.as_ref().map(|v| v.to_string()).into_option();
    json!({
        "display": text(&d.display),
        "first_name": text(&d.first_name),
        "last_name": text(&d.last_name),
        "company": text(&d.company),
        "reject": text(&d.reject),
        "flag": text(&d.flag),
        "reason": text(&d.reason),
        "callee_name": text(&d.callee_name),
        "bypass_dnd": d.bypass_dnd,
        "bypass_forward": d.bypass_forward,
    })
}

/// The admin actions.
impl Faulty {
    fn service(&self, name: &str, args: &[String]) -> Action {
        Action::Later(self.services.clone().run(name.into(), args.to_vec()))
    }

    fn presence(&self, args: &[String]) -> Action {
        self.service("presence", args)
    }

    fn verify(&self, args: &[String]) -> Action {
        self.service("verify", args)
    }

    fn dnd(&self, args: &[String]) -> Action {
        self.service("dnd", args)
    }

    fn forward(&self, args: &[String]) -> Action {
        self.service("forward", args)
    }

    fn group(&self, args: &[String]) -> Action {
        self.service("group", args)
    }

    fn calls(&self, args: &[String]) -> Action {
        self.service("calls", args)
    }

    fn originate(&self, args: &[String]) -> Action {
        self.service("originate", args)
    }

    fn hangup(&self, args: &[String]) -> Action {
        self.service("hangup", args)
    }

    fn lookup(&self, args: &[String]) -> Action {
        self.service("lookup", args)
    }

    /// Everything recorded so far, one value per line.
    fn observed(&self, _args: &[String]) -> Result<Value, String> {
        let path = self.services.ctx.data_dir.join("observed.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).map_err(|e| format!("{line}: {e}")))
            .collect()
    }

    /// Hands `ACTION ARGS…` to the instance in `callhost serve` and waits
    /// for its answer.
    fn relay(&self, args: &[String]) -> Action {
        let Some((action, rest)) = args.split_first() else {
            return Action::Ready(Err("usage: serve ACTION [ARGS…]".into()));
        };
        let dir = relay_dir(&self.services.ctx);
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos())
        );
        let request = dir.join(format!("{id}.request"));
        let staged = dir.join(format!("{id}.staging"));
        let text = json!([action, rest]).to_string();
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&staged, text))
            .and_then(|()| std::fs::rename(&staged, &request));
        if let Err(error) = written {
            return Action::Ready(Err(format!("{}: {error}", request.display())));
        }
        let answer = request.with_extension("answer");
        Action::Later(Box::pin(async move {
            let until = std::time::Instant::now() + RELAY_WAIT;
            while std::time::Instant::now() < until {
                if let Ok(text) = std::fs::read_to_string(&answer) {
                    let _ = std::fs::remove_file(&answer);
                    let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    return match value.get("error") {
                        Some(message) => Err(message.as_str().unwrap_or_default().to_string()),
                        None => Ok(value["ok"].clone()),
                    };
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = std::fs::remove_file(&request);
            Err(format!(
                "no answer within {} s: is `callhost serve` running with this instance active and `relay = true`?",
                RELAY_WAIT.as_secs()
            ))
        }))
    }
}

impl Module for Faulty {
    type Config = Config;

    fn new(ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        let version = option_env!("CALLHOST_MODULE_VERSION").unwrap_or(env!("CARGO_PKG_VERSION"));
        if config.refuse_in_version == version {
            return Err(config_error(
                "refuse_in_version",
                format!("version {version} refuses this configuration"),
            ));
        }
        if config.mode == Mode::Slow && config.delay_ms == 0 {
            return Err(config_error(
                "delay_ms",
                "must be more than 0 for mode \"slow\"",
            ));
        }
        let services = Arc::new(Services {
            ctx: ctx.clone(),
            record: config.record.then(|| ctx.data_dir.join("observed.jsonl")),
            writing: Mutex::new(()),
        });
        Ok(Faulty {
            config,
            marker: ctx.data_dir.join("completed"),
            services,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    fn activate(&self) {
        if self.config.relay {
            let relay = self.services.clone().relay(self.stop.clone());
            self.services.ctx.spawn_service(relay);
        }
    }

    fn deactivate(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn call_setup(&self, _setup: &CallSetup) -> Setup {
        // An empty display: no opinion (the instance only observes).
        let display = if self.config.display.is_empty() {
            Decision::default()
        } else {
            Decision {
                display: Some(self.config.display.as_str().into()).into(),
                reason: Some("fault-module behaved".into()).into(),
                ..Decision::default()
            }
        };
        match self.config.mode {
            Mode::Ok | Mode::HangEvents => Setup::Ready(display),
            Mode::Panic => panic!("fault-module panics on purpose"),
            Mode::PanicAsync => Setup::Later(Box::pin(async {
                tokio::task::yield_now().await;
                panic!("fault-module panics on purpose, asynchronously")
            })),
            Mode::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Mode::HangAsync => Setup::Later(Box::pin(std::future::pending())),
            Mode::Slow => {
                let delay = Duration::from_millis(self.config.delay_ms);
                let marker = self.config.completed_marker.then(|| self.marker.clone());
                Setup::Later(Box::pin(async move {
                    tracing::info!("answering after {} ms", delay.as_millis());
                    tokio::time::sleep(delay).await;
                    if let Some(marker) = marker {
                        let _ = std::fs::write(marker, b"completed");
                    }
                    display
                }))
            }
        }
    }

    fn call_event(&self, event: &CallEvent) {
        if self.config.mode == Mode::HangEvents {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        tracing::info!(call = %event.call_id, detail = %event.detail, "event {}", event.kind.name());
        self.services.observe(json!({
            "hook": "event",
            "kind": event.kind.name(),
            "call_id": event.call_id.as_str(),
            "detail": event.detail.as_str(),
            "party": event.party.as_ref().map(|p| p.number.to_string()).into_option(),
        }));
    }

    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        self.services.observe(json!({
            "hook": "call_decided",
            "call_id": setup.call_id.as_str(),
            "caller": setup.caller.number.as_str(),
            "callee": setup.callee.id.as_ref().map(|id| id.to_string()).into_option()
                .unwrap_or_else(|| setup.callee.number.to_string()),
            "decision": decision_json(decision),
        }));
    }

    fn call_listed(&self, entry: &CallListItem) {
        let mut line = item_json(entry);
        line["hook"] = json!("call_listed");
        self.services.observe(line);
    }

    fn presence_changed(&self, presence: &UserPresence) {
        let mut line = presence_json(presence);
        line["hook"] = json!("presence");
        self.services.observe(line);
    }
}

export_module! {
    module: Faulty,
    id: "fault-module",
    name: "Fault module",
    description: "Misbehaves on purpose; for tests only.",
    hooks: [call_setup, call_event, call_details, presence],
    actions: [
        { name: "presence", usage: "USER", help: "The user's presence (host service user_presence).", handler: Faulty::presence },
        { name: "verify", usage: "USER PASSWORD", help: "Checks a SIP password (verify_password).", handler: Faulty::verify },
        { name: "dnd", usage: "USER on|off", help: "Sets DND (set_dnd).", handler: Faulty::dnd },
        { name: "forward", usage: "USER always|busy|no-answer [TARGET]", help: "Sets or clears a forward (set_forward).", handler: Faulty::forward },
        { name: "group", usage: "USER GROUP in|out", help: "Logs in to or out of a group (set_group_login).", handler: Faulty::group },
        { name: "calls", usage: "USER LIMIT", help: "The newest call-list entries (call_list).", handler: Faulty::calls },
        { name: "originate", usage: "USER NUMBER", help: "Click-to-dial (originate).", handler: Faulty::originate },
        { name: "hangup", usage: "USER CALL_ID", help: "Ends a call (hang_up).", handler: Faulty::hangup },
        { name: "lookup", usage: "USER NUMBER", help: "The lookup instances' decision (lookup_caller).", handler: Faulty::lookup },
        { name: "observed", usage: "", help: "What the instance recorded (record = true).", handler: Faulty::observed },
        { name: "serve", usage: "ACTION [ARGS…]", help: "Runs ACTION in the instance of a running serve (relay = true).", handler: Faulty::relay },
    ],
}

#[cfg(test)]
mod tests {
    use super::Config;
    use callhost_plugin_sdk::serde_json;

    #[test]
    fn config_schema_describes_the_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "mode",
            "delay_ms",
            "display",
            "refuse_in_version",
            "completed_marker",
            "record",
            "relay",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        // The modes as written in the configuration (kebab-case).
        let modes = serde_json::to_string(&properties["mode"]).unwrap();
        for mode in ["\"ok\"", "\"panic-async\"", "\"hang-events\""] {
            assert!(modes.contains(mode), "{mode} in {modes}");
        }
        assert_eq!(properties["delay_ms"]["x-expert"], true);
        assert!(properties["mode"].get("x-expert").is_none());
    }
}
