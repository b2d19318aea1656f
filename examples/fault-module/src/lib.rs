//! Misbehaves on purpose so the host's fault handling can be tested for
//! real: through the loaded library, the same way a broken module would.

use std::time::Duration;

use callhost_plugin_sdk::{
    config_error, export_module, tracing, CallEvent, CallSetup, ConfigError, Context, Decision,
    Module, Setup,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Ok,
            delay_ms: 2000,
            display: "fault-module was here".into(),
            refuse_in_version: String::new(),
            completed_marker: false,
        }
    }
}

pub struct Faulty {
    config: Config,
    marker: std::path::PathBuf,
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
        Ok(Faulty {
            config,
            marker: ctx.data_dir.join("completed"),
        })
    }

    fn call_setup(&self, _setup: &CallSetup) -> Setup {
        let display = Decision {
            display: Some(self.config.display.as_str().into()).into(),
            reason: Some("fault-module behaved".into()).into(),
            ..Decision::default()
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
    }
}

export_module! {
    module: Faulty,
    id: "fault-module",
    name: "Fault module",
    description: "Misbehaves on purpose; for tests only.",
    hooks: [call_setup, call_event],
    actions: [],
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
