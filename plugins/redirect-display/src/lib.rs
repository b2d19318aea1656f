//! Redirect display (RD1–RD8): the target of a forward may call through it,
//! switchboards may call through any forward, and calls that follow an
//! always or busy forward are marked on the target's display.
//!
//! Per hop, and only for calls to users:
//! - the caller is *entitled* to break through the callee's forwards when it
//!   is the direct target of one of them (an internal user by their primary
//!   internal number, an external caller by any form of its number), when it
//!   is a switchboard user or a member of a switchboard group, or when it is
//!   an external caller matching `external_callers`; the decision is then
//!   `bypass_forward`;
//! - otherwise, when an always or busy forward will be followed, the forward
//!   target's phone shows `<forward_label> <originally called>: <caller>`.
//!
//! See `docs/modules/redirect-display.md`.

use callhost_numbers::{cleaned, Pattern};
use callhost_plugin_sdk::{
    config_error, export_module, tracing, CallSetup, ConfigError, Context, Decision, ForwardKind,
    Module, Party, PartyKind, Setup,
};
use serde::{Deserialize, Serialize};

/// The default marker put before a forwarded call's display (RD4).
pub const DEFAULT_FORWARD_LABEL: &str = "Uml. für";

/// Who may break through forwards, and how forwarded calls are marked.
/// The target of a forward may always break through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// User ids that may break through any forward (RD2).
    #[schemars(title = "Switchboard users")]
    pub switchboard_users: Vec<String>,
    /// Group ids whose members (logged in or not) may break through any
    /// forward (RD2).
    #[schemars(title = "Switchboard groups")]
    pub switchboard_groups: Vec<String>,
    /// External caller IDs that may break through any forward (RD3):
    /// patterns, `?` one digit, `*` any digits, tried on every form of the
    /// number.
    #[schemars(title = "External callers", with = "Vec<String>")]
    pub external_callers: Vec<Pattern>,
    /// Mark calls that follow an always or busy forward on the target's
    /// display (RD4).
    #[schemars(title = "Mark forwarded calls")]
    pub mark_forwarded: bool,
    /// The marker: the display becomes `<forward_label> <for whom>: <caller>`.
    #[schemars(title = "Forward label")]
    pub forward_label: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            switchboard_users: Vec::new(),
            switchboard_groups: Vec::new(),
            external_callers: Vec::new(),
            mark_forwarded: true,
            forward_label: DEFAULT_FORWARD_LABEL.to_string(),
        }
    }
}

fn check_ids(field: &str, ids: &[String]) -> Result<(), ConfigError> {
    match ids.iter().position(|id| id.trim().is_empty()) {
        Some(index) => Err(config_error(
            format!("{field}[{index}]"),
            "must not be empty",
        )),
        None => Ok(()),
    }
}

/// Whether two forward targets are the same number: equal once cleaned;
/// numbers that do not clean compare as written (trimmed). A cleaned
/// number never equals one that does not clean.
fn same_number(a: &str, b: &str) -> bool {
    match (cleaned(a), cleaned(b)) {
        (Ok(a), Ok(b)) => a.eq(b),
        (Err(_), Err(_)) => {
            let a = a.trim();
            !a.is_empty() && a == b.trim()
        }
        _ => false,
    }
}

fn kind_name(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Always => "always",
        ForwardKind::Busy => "busy",
        ForwardKind::NoAnswer => "no-answer",
    }
}

/// One of the callee's forwards: where it points as configured, and the
/// resolved target when the host resolved it (the pending forward).
struct Target<'a> {
    kind: ForwardKind,
    number: &'a str,
    party: Option<&'a Party>,
}

/// The callee's forwards: the pending one, then the configured ones.
fn forward_targets(setup: &CallSetup) -> Vec<Target<'_>> {
    let mut targets = Vec::new();
    if let Some(forward) = setup.pending_forward.as_ref().into_option() {
        targets.push(Target {
            kind: forward.kind,
            number: forward.to.number.as_str(),
            party: Some(&forward.to),
        });
    }
    if let Some(state) = setup.callee_state.as_ref().into_option() {
        for (kind, target) in [
            (ForwardKind::Always, &state.forward_always),
            (ForwardKind::Busy, &state.forward_busy),
            (ForwardKind::NoAnswer, &state.forward_no_answer),
        ] {
            if let Some(number) = target.as_ref().into_option() {
                targets.push(Target {
                    kind,
                    number: number.as_str(),
                    party: None,
                });
            }
        }
    }
    targets
}

/// Which of the callee's forwards points at the caller, if any.
///
/// An internal user counts only when the forward names their primary
/// internal number (RD7); a forward to a group names the group, not its
/// members (RD5). An external caller counts by any form of its number (RD3).
fn targeted_forward(setup: &CallSetup) -> Option<ForwardKind> {
    let caller = &setup.caller;
    let targets = forward_targets(setup);
    match caller.kind {
        PartyKind::User => {
            let primary = caller.primary_number.as_ref().into_option()?;
            targets
                .into_iter()
                .find(|target| same_number(target.number, primary))
                .map(|target| target.kind)
        }
        PartyKind::External => targets
            .into_iter()
            .find(|target| {
                let mut numbers: Vec<&str> = vec![target.number];
                if let Some(party) = target.party {
                    numbers.extend(party.number_forms());
                }
                numbers
                    .iter()
                    .any(|number| caller.number_forms().any(|form| same_number(number, form)))
            })
            .map(|target| target.kind),
        PartyKind::Group | PartyKind::Unknown => None,
    }
}

pub struct RedirectDisplay {
    config: Config,
}

impl RedirectDisplay {
    /// Why the caller may break through the callee's forwards, if it may.
    fn entitlement(&self, setup: &CallSetup) -> Option<String> {
        let caller = &setup.caller;
        let callee = setup.callee.label();
        if let Some(kind) = targeted_forward(setup) {
            let how = if caller.kind == PartyKind::User {
                "primary number"
            } else {
                "number"
            };
            return Some(format!(
                "caller {} is the target of {callee}'s {} forward (by {how}): break through",
                caller.label(),
                kind_name(kind)
            ));
        }
        if caller.kind == PartyKind::User {
            if let Some(id) = caller.id.as_ref().into_option() {
                if self
                    .config
                    .switchboard_users
                    .iter()
                    .any(|u| u == id.as_str())
                {
                    return Some(format!(
                        "caller {} is switchboard user {id}: break through",
                        caller.label()
                    ));
                }
            }
            if let Some(group) = self
                .config
                .switchboard_groups
                .iter()
                .find(|group| caller.groups.iter().any(|g| g == group.as_str()))
            {
                return Some(format!(
                    "caller {} is a member of switchboard group {group}: break through",
                    caller.label()
                ));
            }
        }
        if caller.kind == PartyKind::External {
            if let Some(pattern) = self
                .config
                .external_callers
                .iter()
                .find(|pattern| caller.number_forms().any(|form| pattern.matches(form)))
            {
                return Some(format!(
                    "external caller {} matches external_callers pattern {pattern}: break through",
                    caller.number
                ));
            }
        }
        None
    }

    /// The decision for one hop; empty when the call does not concern us.
    pub fn decide(&self, setup: &CallSetup) -> Decision {
        let call_id = setup.call_id.as_str();
        if setup.callee.kind != PartyKind::User {
            tracing::debug!(call_id, callee = %setup.callee.number, "not a user: ignored");
            return Decision::default();
        }
        if forward_targets(setup).is_empty() {
            tracing::debug!(call_id, callee = %setup.callee.number, "callee has no forward: ignored");
            return Decision::default();
        }

        if let Some(reason) = self.entitlement(setup) {
            tracing::debug!(call_id, "{reason}");
            return Decision {
                bypass_forward: true,
                reason: Some(reason.into()).into(),
                ..Decision::default()
            };
        }

        let Some(forward) = setup.forward_followed(&setup.prior) else {
            tracing::debug!(
                call_id,
                "not entitled; no always or busy forward will be followed"
            );
            return Decision::default();
        };
        if !self.config.mark_forwarded {
            tracing::debug!(call_id, "not entitled; forward not marked");
            return Decision::default();
        }
        // The user the call was for: the first hop's callee.
        let for_whom = match setup.forwarded.first() {
            Some(first) if !first.from.label().is_empty() => first.from.label(),
            _ => setup.callee.label(),
        };
        let caller = match setup.prior.display.as_ref().into_option() {
            Some(display) if !display.is_empty() => display.as_str(),
            _ => setup.caller.label(),
        };
        let label = &self.config.forward_label;
        let display = format!("{label} {for_whom}: {caller}");
        let reason = format!(
            "{} forward of {} to {} followed: marked \"{display}\"",
            kind_name(forward.kind),
            setup.callee.label(),
            forward.to.label()
        );
        tracing::debug!(call_id, "{reason}");
        Decision {
            forward_display: Some(display.into()).into(),
            reason: Some(reason.into()).into(),
            ..Decision::default()
        }
    }
}

impl Module for RedirectDisplay {
    type Config = Config;

    fn new(_ctx: &Context, config: Config) -> Result<Self, ConfigError> {
        check_ids("switchboard_users", &config.switchboard_users)?;
        check_ids("switchboard_groups", &config.switchboard_groups)?;
        if config.mark_forwarded && config.forward_label.trim().is_empty() {
            return Err(config_error(
                "forward_label",
                "must not be empty while mark_forwarded = true",
            ));
        }
        Ok(RedirectDisplay { config })
    }

    fn call_setup(&self, setup: &CallSetup) -> Setup {
        Setup::Ready(self.decide(setup))
    }
}

export_module! {
    module: RedirectDisplay,
    id: "redirect-display",
    name: "Redirect display",
    description: "Lets the target of a forward (and switchboards) call through it, and marks calls that follow an always or busy forward on the target's display.",
    hooks: [quick_setup],
    actions: [],
}

#[cfg(test)]
mod tests {
    use super::{same_number, Config};

    #[test]
    fn config_schema_describes_the_documented_options() {
        let schema = callhost_plugin_sdk::testing::config_schema_naming::<Config>(&[
            "switchboard_users",
            "switchboard_groups",
            "external_callers",
            "mark_forwarded",
            "forward_label",
        ]);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false);
        let users = &properties["switchboard_users"];
        assert!(users["description"]
            .as_str()
            .is_some_and(|d| d.contains("break through")));
        assert_eq!(users["title"], "Switchboard users");
        let patterns = &properties["external_callers"];
        assert_eq!(patterns["type"], "array");
        assert_eq!(patterns["items"]["type"], "string");
        assert_eq!(properties["mark_forwarded"]["default"], true);
        assert_eq!(
            properties["forward_label"]["default"],
            super::DEFAULT_FORWARD_LABEL
        );
    }

    #[test]
    fn numbers_compare_cleaned_or_as_written() {
        assert!(same_number("+49 30 1234-56", "+4930123456"));
        assert!(same_number("(030) 123456", "030123456"));
        assert!(!same_number("030123456", "0301234567"));
        // Neither cleans: compared as written, trimmed.
        assert!(same_number(" sip-trunk ", "sip-trunk"));
        assert!(!same_number("", " "));
        // One cleans, the other does not: never equal.
        assert!(!same_number("123", "123x"));
    }
}
