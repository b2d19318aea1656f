//! Greets callers: prefixes the display of calls to chosen numbers.

use callhost_plugin_sdk::{
    config_error, export_module, serde_json::json, tracing, Action, CallSetup, ConfigError,
    Context, Decision, Module, Setup,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Put before the caller's name on the ringing phone.
    pub greeting: String,
    /// Only calls to these internal numbers are greeted (empty: all).
    pub numbers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            greeting: "Hello".into(),
            numbers: Vec::new(),
        }
    }
}

pub struct Hello {
    config: Config,
}

impl Module for Hello {
    type Config = Config;

    fn new(_ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        if config.greeting.trim().is_empty() {
            return Err(config_error("greeting", "must not be empty"));
        }
        if let Some(index) = config.numbers.iter().position(|n| n.is_empty()) {
            return Err(config_error(
                format!("numbers[{index}]"),
                "must not be empty",
            ));
        }
        Ok(Hello { config })
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        let callee = setup.callee.number.as_str();
        if !self.config.numbers.is_empty() && !self.config.numbers.iter().any(|n| n == callee) {
            return Setup::Ready(Decision::default());
        }
        tracing::debug!(callee, "greeting");
        Setup::Ready(Decision {
            display: Some(format!("{}: {}", self.config.greeting, setup.caller.label()).into())
                .into(),
            reason: Some("greeted".into()).into(),
            ..Decision::default()
        })
    }

    fn action(&self, name: &str, args: &[String]) -> Action {
        match name {
            "greet" => {
                let who = args.first().map(String::as_str).unwrap_or("world");
                Action::Ready(Ok(
                    json!({ "text": format!("{}, {who}!", self.config.greeting) }),
                ))
            }
            other => Action::Ready(Err(format!("unknown action `{other}`"))),
        }
    }
}

export_module! {
    module: Hello,
    id: "hello",
    name: "Hello",
    description: "Greets callers on the ringing phone's display.",
    hooks: [call_setup],
    actions: [{ name: "greet", usage: "[NAME]", help: "Answers with the configured greeting." }],
}
