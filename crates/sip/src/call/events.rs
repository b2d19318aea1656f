//! The one place that builds the `CallEvent`s modules see for SIP calls.

use abi_stable::std_types::ROption;
use callhost_pbx::engine::Hooks;
use callhost_plugin_abi::{CallEvent, EventKind, Party};

use super::Call;

/// Hands one event to the modules that want events (queued, never waits).
pub(super) fn emit(
    hooks: &dyn Hooks,
    call_id: &str,
    kind: EventKind,
    party: Option<Party>,
    detail: &str,
) {
    if !hooks.wants_events() {
        return;
    }
    hooks.call_event(&CallEvent {
        call_id: call_id.into(),
        kind,
        party: party.map_or(ROption::RNone, ROption::RSome),
        detail: detail.into(),
    });
}

impl Call {
    /// A key `who` pressed (RFC 4733 in the relay, or SIP INFO).
    pub(super) fn dtmf_event(&self, who: &str, digit: char) {
        emit(
            self.hooks.as_ref(),
            &self.call_id,
            EventKind::DTMF,
            Some(self.engine.party(who)),
            &digit.to_string(),
        );
    }
}
