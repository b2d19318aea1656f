//! Greets callers: prefixes the display of calls to chosen numbers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use callhost_plugin_sdk::{
    config_error, export_module, serde_json, serde_json::json, tracing, CallEvent, CallSetup,
    ConfigError, Context, Decision, EventKind, MediaFrame, Module, Setup, TapRequest,
};
use serde::{Deserialize, Serialize};

/// Greets callers: puts a greeting before the caller's name on the
/// ringing phone of chosen numbers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Put before the caller's name on the ringing phone.
    pub greeting: String,
    /// Only calls to these internal numbers are greeted (empty: all).
    #[schemars(title = "Greeted numbers")]
    pub numbers: Vec<String>,
    /// Ask for the greeted calls' media: `caller`, `callee` or `both`.
    /// The frames are only counted (see the `media` action).
    #[schemars(title = "Media tap")]
    pub tap: Option<String>,
    /// A prompt from the package's `assets/` played to the caller first.
    pub prompt: Option<String>,
    /// Reject the greeted calls instead, with this reason (a module's
    /// reject: callers get 603 Decline on SIP).
    #[schemars(title = "Reject with reason")]
    pub reject: Option<String>,
    /// Test switch for the host's quick-hook rules: sleep this long in
    /// `call_setup`, which a module declaring `quick_setup` must never do.
    #[schemars(title = "Setup delay (ms)", extend("x-expert" = true))]
    pub setup_delay_ms: u64,
    /// Only the first this many calls sleep (0: every call).
    #[schemars(title = "Delayed calls", extend("x-expert" = true))]
    pub setup_delay_calls: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            greeting: "Hello".into(),
            numbers: Vec::new(),
            tap: None,
            prompt: None,
            reject: None,
            setup_delay_ms: 0,
            setup_delay_calls: 0,
        }
    }
}

pub struct Hello {
    config: Config,
    tap: TapRequest,
    /// Frames and payload bytes seen per call and leg.
    media: Mutex<BTreeMap<String, MediaCount>>,
    /// Where the counts of finished calls are kept: the `media` action
    /// runs in whichever process asks (CLI, API), not in `callhost serve`.
    counts_file: std::path::PathBuf,
    /// `call_setup`s so far (for `setup_delay_calls`).
    setup_calls: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct MediaCount {
    caller_frames: u64,
    callee_frames: u64,
    payload_bytes: u64,
    /// Keys pressed during the call (DTMF events), in order.
    #[serde(default)]
    dtmf: String,
}

impl Hello {
    /// `greet [NAME]`.
    fn greet(&self, args: &[String]) -> Result<serde_json::Value, String> {
        let greeting = &self.config.greeting;
        let who = args.first().map(String::as_str).unwrap_or("world");
        Ok(json!({ "text": format!("{greeting}, {who}!") }))
    }

    /// `media`: the counts of finished calls.
    fn media_counts(&self, _args: &[String]) -> Result<serde_json::Value, String> {
        Ok(json!(self.stored_counts()))
    }

    fn stored_counts(&self) -> BTreeMap<String, MediaCount> {
        std::fs::read_to_string(&self.counts_file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }
}

impl Module for Hello {
    type Config = Config;

    fn new(ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        if config.greeting.trim().is_empty() {
            return Err(config_error("greeting", "must not be empty"));
        }
        if let Some(index) = config.numbers.iter().position(|n| n.is_empty()) {
            return Err(config_error(
                format!("numbers[{index}]"),
                "must not be empty",
            ));
        }
        let tap = match config.tap.as_deref() {
            None => TapRequest::None,
            Some("caller") => TapRequest::Caller,
            Some("callee") => TapRequest::Callee,
            Some("both") => TapRequest::Both,
            Some(other) => {
                return Err(config_error(
                    "tap",
                    format!("{other:?} is not caller, callee or both"),
                ))
            }
        };
        Ok(Hello {
            config,
            tap,
            media: Mutex::default(),
            counts_file: ctx.data_dir.join("media.json"),
            setup_calls: Default::default(),
        })
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        let call = self
            .setup_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delays = self.config.setup_delay_calls;
        if self.config.setup_delay_ms > 0 && (delays == 0 || call < delays) {
            std::thread::sleep(std::time::Duration::from_millis(self.config.setup_delay_ms));
        }
        let callee = setup.callee.number.as_str();
        if !self.config.numbers.is_empty() && !self.config.numbers.iter().any(|n| n == callee) {
            return Setup::Ready(Decision::default());
        }
        tracing::debug!(callee, "greeting");
        let (greeting, caller) = (&self.config.greeting, setup.caller.label());
        Setup::Ready(Decision {
            display: Some(format!("{greeting}: {caller}").into()).into(),
            reason: Some("greeted".into()).into(),
            tap: self.tap,
            prompt: self.config.prompt.as_deref().map(Into::into).into(),
            reject: self.config.reject.as_deref().map(Into::into).into(),
            ..Decision::default()
        })
    }

    fn media(&self, frame: &MediaFrame<'_>) {
        let mut media = self.media.lock().unwrap_or_else(|p| p.into_inner());
        let count = media.entry(frame.call_id.to_string()).or_default();
        match frame.leg {
            TapRequest::Caller => count.caller_frames += 1,
            _ => count.callee_frames += 1,
        }
        count.payload_bytes += frame.payload.len() as u64;
    }

    fn call_event(&self, event: &CallEvent) {
        if event.kind == EventKind::DTMF {
            let mut media = self.media.lock().unwrap_or_else(|p| p.into_inner());
            let count = media.entry(event.call_id.to_string()).or_default();
            count.dtmf.push_str(event.detail.as_str());
            return;
        }
        if event.kind != EventKind::HANGUP {
            return;
        }
        let Some(count) = self
            .media
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(event.call_id.as_str())
        else {
            return;
        };
        let mut all = self.stored_counts();
        all.insert(event.call_id.to_string(), count);
        if let Ok(text) = serde_json::to_string(&all) {
            let _ = std::fs::write(&self.counts_file, text);
        }
    }
}

export_module! {
    module: Hello,
    id: "hello",
    name: "Hello",
    description: "Greets callers on the ringing phone's display.",
    hooks: [quick_setup, call_event, media],
    actions: [
        { name: "greet", usage: "[NAME]", help: "Answers with the configured greeting.", handler: Hello::greet },
        { name: "media", usage: "", help: "Frames and keys counted per finished call.", handler: Hello::media_counts },
    ],
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn config_schema_describes_the_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "greeting",
            "numbers",
            "tap",
            "prompt",
            "reject",
            "setup_delay_ms",
            "setup_delay_calls",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(properties["greeting"]["default"], "Hello");
        assert_eq!(properties["setup_delay_ms"]["x-expert"], true);
        assert_eq!(properties["setup_delay_ms"]["title"], "Setup delay (ms)");
        assert!(properties["greeting"].get("x-expert").is_none());
    }
}
