//! Breakthrough (BT1–BT5): chosen callers break through do-not-disturb and
//! forwards of chosen users, and may force call waiting.
//!
//! A rule is two number filters joined by AND: the called user (any number
//! form) must match `called`, and the caller (any number form) must match
//! `callers`. A filter matches when some `active_for` pattern matches and no
//! `exceptions` pattern does; an empty `active_for` matches nothing, so an
//! unconfigured instance does nothing. Only calls to users are handled,
//! never calls to groups (BT3). See `docs/modules/breakthrough.md`.

use callhost_numbers::{any_matches, clean, Pattern};
use callhost_plugin_sdk::{
    config_error, export_module,
    serde_json::{self, json},
    template::Template,
    tracing, CallSetup, ConfigError, Context, Decision, ForwardKind, Module, Party, PartyKind,
    Setup,
};
use serde::{Deserialize, Serialize};

/// The default text shown on the forward target's phone (BT4).
pub const DEFAULT_FORWARD_DISPLAY: &str = "{caller} (für {callee})";

/// One number filter: `active_for` minus `exceptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Numbers {
    /// Patterns the number must match (`?` one digit, `*` any digits);
    /// every form of the number is tried. Empty matches nothing; `*`
    /// matches every number.
    #[schemars(title = "Active for", with = "Vec<String>")]
    pub active_for: Vec<Pattern>,
    /// Patterns that take a number out again (they win over `active_for`).
    #[schemars(with = "Vec<String>")]
    pub exceptions: Vec<Pattern>,
}

impl Numbers {
    /// Some form matches `active_for` and no form matches `exceptions`.
    pub fn matches(&self, forms: &[&str]) -> bool {
        any_matches(&self.active_for, forms.iter().copied())
            && !any_matches(&self.exceptions, forms.iter().copied())
    }
}

/// One rule: callers matching `callers` calling users matching `called`
/// get the options ticked here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Ring through the called user's do-not-disturb.
    #[schemars(title = "Bypass do-not-disturb")]
    pub bypass_dnd: bool,
    /// Skip the called user's forwards (always, busy and no-answer).
    #[schemars(title = "Bypass forwards")]
    pub bypass_forwards: bool,
    /// Narrows `bypass_forwards`: skip them only when one of the called
    /// user's forwards points to the caller. Needs `bypass_forwards`.
    #[schemars(title = "Only forwards to the caller")]
    pub bypass_forward_to_self: bool,
    /// Let the call knock on a busy user even when the called user has call
    /// waiting off.
    #[schemars(title = "Force call waiting")]
    pub force_call_waiting: bool,
    /// What the forward target's phone shows when a forward is followed;
    /// `{caller}`, `{callee}`, `{caller_number}`, `{callee_number}`. Empty: off.
    #[schemars(title = "Forward target's display")]
    pub forward_display: String,
    /// Called numbers: the users this rule is for.
    #[schemars(title = "Called users")]
    pub called: Numbers,
    /// Caller numbers: who may break through.
    pub callers: Numbers,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bypass_dnd: false,
            bypass_forwards: false,
            bypass_forward_to_self: false,
            force_call_waiting: false,
            forward_display: DEFAULT_FORWARD_DISPLAY.to_string(),
            called: Numbers::default(),
            callers: Numbers::default(),
        }
    }
}

callhost_plugin_sdk::placeholders! {
    /// The placeholders of `forward_display`.
    enum ForwardDisplayField {
        Caller = "caller",
        Callee = "callee",
        CallerNumber = "caller_number",
        CalleeNumber = "callee_number",
    }
}

/// Fills a parsed `forward_display` for this call.
fn render(template: &Template<ForwardDisplayField>, setup: &CallSetup) -> String {
    template.render(|placeholder| match placeholder {
        ForwardDisplayField::Caller => caller_display(setup),
        ForwardDisplayField::Callee => setup.callee.label(),
        ForwardDisplayField::CallerNumber => &setup.caller.number,
        ForwardDisplayField::CalleeNumber => &setup.callee.number,
    })
}

/// What an earlier instance (e.g. a reverse lookup) found, else the caller's label.
fn caller_display(setup: &CallSetup) -> &str {
    match setup.prior.display.as_ref().into_option() {
        Some(display) if !display.is_empty() => display.as_str(),
        _ => setup.caller.label(),
    }
}

/// A number without separators, for comparing forward targets.
fn normalised(number: &str) -> String {
    clean(number).unwrap_or_else(|_| number.trim().to_string())
}

/// Does `target` (a forward's number) name one of `party`'s numbers?
fn number_is_party(target: &str, party: &Party) -> bool {
    let target = normalised(target);
    !target.is_empty()
        && party
            .number_forms()
            .filter(|form| !form.is_empty())
            .any(|form| normalised(form) == target)
}

/// Is `to` (a resolved forward target) the same party as `caller`?
fn party_is_party(to: &Party, caller: &Party) -> bool {
    let same_id = to.kind == caller.kind
        && matches!(
            (to.id.as_ref().into_option(), caller.id.as_ref().into_option()),
            (Some(a), Some(b)) if !a.is_empty() && a == b
        );
    same_id
        || to
            .number_forms()
            .filter(|form| !form.is_empty())
            .any(|form| number_is_party(form, caller))
}

fn kind_name(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Always => "always",
        ForwardKind::Busy => "busy",
        ForwardKind::NoAnswer => "no-answer",
    }
}

/// Which of the callee's forwards points to the caller, if any.
fn forward_to_caller(setup: &CallSetup) -> Option<&'static str> {
    let caller = &setup.caller;
    if let Some(forward) = setup.pending_forward.as_ref().into_option() {
        if party_is_party(&forward.to, caller) {
            return Some(kind_name(forward.kind));
        }
    }
    let state = setup.callee_state.as_ref().into_option()?;
    [
        (ForwardKind::Always, &state.forward_always),
        (ForwardKind::Busy, &state.forward_busy),
        (ForwardKind::NoAnswer, &state.forward_no_answer),
    ]
    .into_iter()
    .find_map(|(kind, target)| match target.as_ref().into_option() {
        Some(target) if number_is_party(target, caller) => Some(kind_name(kind)),
        _ => None,
    })
}

pub struct Breakthrough {
    config: Config,
    /// `None` when `forward_display` is empty.
    template: Option<Template<ForwardDisplayField>>,
}

impl Breakthrough {
    /// The decision for one hop; empty when the call does not concern us.
    pub fn decide(&self, setup: &CallSetup) -> Decision {
        let config = &self.config;
        let call_id = setup.call_id.as_str();
        if setup.callee.kind != PartyKind::User {
            tracing::debug!(call_id, callee = %setup.callee.number, "not a user: ignored");
            return Decision::default();
        }
        // `number_forms()` is not `Clone`; the pattern lists need two passes.
        let callee_forms: Vec<&str> = setup.callee.number_forms().collect();
        let caller_forms: Vec<&str> = setup.caller.number_forms().collect();
        let called = config.called.matches(&callee_forms);
        let caller = config.callers.matches(&caller_forms);
        if !(called && caller) {
            tracing::debug!(
                call_id,
                caller = %setup.caller.number,
                callee = %setup.callee.number,
                caller_matches = caller,
                called_matches = called,
                "no match"
            );
            return Decision::default();
        }

        let mut decision = Decision::default();
        let mut effects: Vec<String> = Vec::new();
        if config.bypass_dnd {
            decision.bypass_dnd = true;
            effects.push("bypass DND".into());
        }
        if config.force_call_waiting {
            decision.force_call_waiting = true;
            effects.push("force call waiting".into());
        }
        if config.bypass_forwards {
            if !config.bypass_forward_to_self {
                decision.bypass_forward = true;
                effects.push("bypass forwards".into());
            } else if let Some(kind) = forward_to_caller(setup) {
                decision.bypass_forward = true;
                effects.push(format!(
                    "bypass forwards ({kind} forward points to the caller)"
                ));
            }
        }
        let mut decided = setup.prior.clone();
        decided.merge(&decision);
        let forward_followed = setup.forward_followed(&decided).is_some();
        if let (Some(template), true) = (&self.template, forward_followed) {
            let text = render(template, setup);
            effects.push(format!("forward display \"{text}\""));
            decision.forward_display = Some(text.into()).into();
        }

        if effects.is_empty() {
            tracing::debug!(call_id, "rule matched, nothing to do for this hop");
            return Decision::default();
        }
        let reason = format!("breakthrough rule matched: {}", effects.join(", "));
        tracing::debug!(
            call_id,
            caller = %setup.caller.number,
            callee = %setup.callee.number,
            "{reason}"
        );
        decision.reason = Some(reason.into()).into();
        decision
    }

    /// `check CALLER CALLED`: the rule evaluated on patterns only.
    fn check(&self, args: &[String]) -> Result<serde_json::Value, String> {
        let [caller, called] = args else {
            return Err("usage: check CALLER CALLED".into());
        };
        let forms = |number: &str| {
            let mut forms = vec![number.to_string()];
            if let Ok(cleaned) = clean(number) {
                if cleaned != number {
                    forms.push(cleaned);
                }
            }
            forms
        };
        let caller_forms = forms(caller);
        let called_forms = forms(called);
        let caller_forms: Vec<&str> = caller_forms.iter().map(String::as_str).collect();
        let called_forms: Vec<&str> = called_forms.iter().map(String::as_str).collect();
        let caller_matches = self.config.callers.matches(&caller_forms);
        let called_matches = self.config.called.matches(&called_forms);
        let mut would_apply: Vec<&str> = Vec::new();
        if caller_matches && called_matches {
            let config = &self.config;
            if config.bypass_dnd {
                would_apply.push("bypass_dnd");
            }
            if config.bypass_forwards {
                would_apply.push(if config.bypass_forward_to_self {
                    "bypass_forward_to_self"
                } else {
                    "bypass_forwards"
                });
            }
            if config.force_call_waiting {
                would_apply.push("force_call_waiting");
            }
            if self.template.is_some() {
                would_apply.push("forward_display");
            }
        }
        Ok(json!({
            "caller_matches": caller_matches,
            "called_matches": called_matches,
            "would_apply": would_apply,
        }))
    }
}

impl Module for Breakthrough {
    type Config = Config;

    fn new(_ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        if config.bypass_forward_to_self && !config.bypass_forwards {
            return Err(config_error(
                "bypass_forward_to_self",
                "needs bypass_forwards = true (it narrows which forwards are bypassed)",
            ));
        }
        let template = if config.forward_display.is_empty() {
            None
        } else {
            Some(
                Template::parse(&config.forward_display)
                    .map_err(|message| config_error("forward_display", message))?,
            )
        };
        Ok(Breakthrough { config, template })
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        Setup::Ready(self.decide(setup))
    }
}

export_module! {
    module: Breakthrough,
    id: "breakthrough",
    name: "Breakthrough",
    description: "Lets chosen callers break through do-not-disturb and forwards of chosen users, and force call waiting.",
    hooks: [quick_setup],
    actions: [{
        name: "check",
        usage: "CALLER CALLED",
        help: "Says whether the caller and called numbers match the rule (patterns only, no directory lookup) and which options would apply.",
        handler: Breakthrough::check,
    }],
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn config_schema_describes_the_documented_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "bypass_dnd",
            "bypass_forwards",
            "bypass_forward_to_self",
            "force_call_waiting",
            "forward_display",
            "called",
            "callers",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false);
        let dnd = &properties["bypass_dnd"];
        assert!(dnd["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(dnd["type"], "boolean");
        assert_eq!(dnd["title"], "Bypass do-not-disturb");
        assert_eq!(
            properties["forward_display"]["default"],
            super::DEFAULT_FORWARD_DISPLAY
        );
        // The filters are inlined, their patterns plain strings.
        let active_for = &properties["callers"]["properties"]["active_for"];
        assert_eq!(active_for["type"], "array");
        assert_eq!(active_for["items"]["type"], "string");
        assert!(active_for["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        assert_eq!(properties["called"]["additionalProperties"], false);
    }
}
