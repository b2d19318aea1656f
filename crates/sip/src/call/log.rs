//! The one line an administrator reads per call: `call ended` at INFO,
//! written when the call is over (answered or not), so it can say how the
//! call ended and how long it lasted, like a CDR. What happened on the way
//! (ringing, answered, forwarding, transfers, hold) is logged at DEBUG only.
//!
//! The line is `key=value` text: numbers, user ids, instance names and
//! counters as they are (they contain no spaces or quotes), anything a
//! caller or a module wrote (the display, reasons, the Call-ID) quoted and
//! escaped; fields without a value are left out. With `--log-format json`
//! the same fields are the JSON object's members, unquoted.

use std::fmt::{self, Display};
use std::time::Duration;

use callhost_media::relay::LegStats;
use callhost_pbx::engine::{CallOutcome, Ring};

use crate::identity::safe_display;
use crate::server::CallRecord;

/// What a call did besides its latest engine outcome, collected as it goes:
/// the phones that really rang (across forwards and transfers), the
/// displays they were sent, the transfers, and the forwards and module
/// decisions of placements a transfer replaced.
#[derive(Debug, Default)]
pub(super) struct CallLog {
    /// The calling directory user (none for the trunk).
    from_user: Option<String>,
    rang: Vec<String>,
    displays: Vec<String>,
    forwards: Vec<String>,
    modules: Vec<String>,
    transfers: Vec<String>,
}

impl CallLog {
    pub fn new(from_user: Option<&str>) -> CallLog {
        CallLog {
            from_user: from_user.map(str::to_string),
            ..CallLog::default()
        }
    }

    /// A ring that started at least one leg.
    pub fn rang(&mut self, ring: &Ring) {
        let who = match (&ring.user, ring.mobile) {
            (Some(user), false) => user.clone(),
            _ => ring.number.clone(),
        };
        if !self.rang.contains(&who) {
            self.rang.push(who);
        }
        let display = safe_display(&ring.display);
        if !self.displays.contains(&display) {
            self.displays.push(display);
        }
    }

    /// A transfer, as `blind:BY->TARGET` or `attended:BY->PARTY`.
    pub fn transfer(&mut self, kind: &str, by: &str, to: &str) {
        self.transfers.push(format!("{kind}:{by}->{to}"));
    }

    /// Keeps the forwards and decisions of `outcome` before a transfer
    /// replaces it (a no-answer forward does not: its outcome repeats the
    /// first hops).
    pub fn keep(&mut self, outcome: &CallOutcome) {
        self.forwards.extend(forwards(outcome));
        self.modules.extend(decisions(outcome));
    }
}

/// How a call ended, for its line.
pub(super) struct Ending {
    /// `answered`, `busy`, `rejected`, `unavailable`, `no-answer`,
    /// `cancelled` or `failed`.
    pub outcome: &'static str,
    /// Who or what ended an answered call (`caller`, `callee`, `shutdown`,
    /// `transferred`, `transfer-failed`, ...).
    pub end: Option<String>,
    /// The final status the caller got, for a call never answered.
    pub status: Option<u16>,
    /// Why it was not answered, in words.
    pub why: Option<&'static str>,
}

/// `kind:USER->TARGET` for every forward followed.
fn forwards(outcome: &CallOutcome) -> impl Iterator<Item = String> + '_ {
    outcome
        .forwards
        .iter()
        .map(|forward| format!("{}:{}->{}", forward.kind, forward.from_user, forward.to))
}

/// `INSTANCE:DECISION` for every instance at every hop (`@HOP` after the
/// first hop), `INSTANCE:error` for one that failed or ran out of time.
fn decisions(outcome: &CallOutcome) -> impl Iterator<Item = String> + '_ {
    let first_hop = outcome.decisions.first().map(|d| d.hop.clone());
    outcome.decisions.iter().map(move |decision| {
        let what: &str = if decision.error.is_some() {
            "error"
        } else {
            &decision.decision
        };
        let mut text = format!("{}:{what}", decision.source.instance);
        if first_hop.as_ref() != Some(&decision.hop) {
            text.push('@');
            text.push_str(&decision.hop);
        }
        text
    })
}

/// Items joined by commas; `None` when there are none.
fn list(items: Vec<String>) -> Option<String> {
    (!items.is_empty()).then(|| items.join(","))
}

/// A duration in whole seconds, rounded (`12s`).
fn seconds(duration: Duration) -> String {
    format!("{}s", (duration.as_millis() + 500) / 1000)
}

/// One leg's RTP counters: `in:N,out:N,lost:N,jitter:X.Yms`, then the
/// unusual ones only when they are not zero.
struct Rtp<'a>(&'a LegStats);

impl Display for Rtp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.0;
        write!(
            f,
            "in:{},out:{},lost:{},jitter:{:.1}ms",
            stats.packets_in, stats.packets_out, stats.packets_lost, stats.jitter_ms
        )?;
        let unusual = [
            ("foreign", stats.foreign_packets),
            ("invalid", stats.invalid_packets),
            ("not_forwarded", stats.packets_not_forwarded),
            ("send_errors", stats.send_errors),
            ("latch_changes", stats.latch_changes),
            ("prompt", stats.prompt_packets_out),
            ("dtmf", stats.dtmf_digits),
            ("tap_dropped", stats.tap_dropped),
            ("events_dropped", stats.events_dropped),
        ];
        for (name, count) in unusual {
            if count > 0 {
                write!(f, ",{name}:{count}")?;
            }
        }
        Ok(())
    }
}

/// Writes the call's line.
pub(super) fn log_call(
    record: &CallRecord,
    log: &CallLog,
    ending: &Ending,
    media: Option<&[LegStats; 2]>,
) {
    let CallLog {
        from_user,
        rang,
        displays,
        forwards: earlier_forwards,
        modules: earlier_modules,
        transfers,
    } = log;
    let forwards = list(
        earlier_forwards
            .iter()
            .cloned()
            .chain(self::forwards(&record.outcome))
            .collect(),
    );
    let modules = list(
        earlier_modules
            .iter()
            .cloned()
            .chain(decisions(&record.outcome))
            .collect(),
    );
    let rang = list(rang.clone());
    // (Not `display`: tracing's macros import a function of that name.)
    let sent = (!displays.is_empty()).then(|| displays.join(" | "));
    let transfers = list(transfers.clone());
    let duration = record.answered_for.map(seconds);
    let reason = record.outcome.reason.as_deref();
    let [caller_rtp, callee_rtp] = match media {
        Some([caller, callee]) => [Some(Rtp(caller)), Some(Rtp(callee))],
        None => [None, None],
    };
    tracing::info!(
        from = %record.request.from,
        from_user = from_user.as_ref().map(tracing::field::display),
        to = %record.request.to,
        rang = rang.as_ref().map(tracing::field::display),
        display = sent.as_deref(),
        forwards = forwards.as_ref().map(tracing::field::display),
        modules = modules.as_ref().map(tracing::field::display),
        transfers = transfers.as_ref().map(tracing::field::display),
        outcome = %ending.outcome,
        answered_by = record.answered_by.as_ref().map(tracing::field::display),
        duration = duration.as_ref().map(tracing::field::display),
        end = ending.end.as_ref().map(tracing::field::display),
        status = ending.status,
        why = ending.why,
        reason,
        call_id = record.request.call_id.as_str(),
        rtp_caller = caller_rtp.map(tracing::field::display),
        rtp_callee = callee_rtp.map(tracing::field::display),
        "call ended"
    );
    tracing::debug!(
        call = %record.request.call_id,
        media = record.media.as_deref(),
        "call media"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_counters_are_short_and_show_the_unusual_only_when_set() {
        let mut stats = LegStats {
            packets_in: 120,
            packets_out: 118,
            jitter_ms: 0.44,
            ..LegStats::default()
        };
        assert_eq!(
            Rtp(&stats).to_string(),
            "in:120,out:118,lost:0,jitter:0.4ms"
        );
        stats.foreign_packets = 25;
        assert_eq!(
            Rtp(&stats).to_string(),
            "in:120,out:118,lost:0,jitter:0.4ms,foreign:25"
        );
    }

    #[test]
    fn forwards_and_decisions_are_one_token_each() {
        use callhost_pbx::engine::{DecisionSource, ForwardTaken, Outcome, ReportedDecision};
        use std::sync::Arc;
        let source = |instance: &str| {
            Arc::new(DecisionSource {
                instance: instance.into(),
                module: "m".into(),
                version: "1".into(),
            })
        };
        let decision =
            |instance: &str, hop: &str, what: &'static str, error: bool| ReportedDecision {
                source: source(instance),
                hop: hop.into(),
                decision: what.into(),
                reason: None,
                error: error.then(|| "timed out".to_string()),
            };
        let outcome = CallOutcome {
            outcome: Outcome::Ringing,
            forwards: vec![ForwardTaken {
                kind: "no_answer",
                from_user: "erik".into(),
                to: "202".into(),
            }],
            decisions: vec![
                decision("bt", "erik", "bypass_dnd", false),
                decision("rd", "erik", "display+forward_display", false),
                decision("bt", "bert", "none", false),
                decision("rl", "bert", "none", true),
            ],
            ..CallOutcome::unavailable()
        };
        assert_eq!(
            forwards(&outcome).collect::<Vec<_>>(),
            ["no_answer:erik->202"]
        );
        assert_eq!(
            decisions(&outcome).collect::<Vec<_>>(),
            [
                "bt:bypass_dnd",
                "rd:display+forward_display",
                "bt:none@bert",
                "rl:error@bert"
            ]
        );
    }

    #[test]
    fn durations_are_whole_seconds() {
        assert_eq!(seconds(Duration::from_millis(12_400)), "12s");
        assert_eq!(seconds(Duration::from_millis(12_600)), "13s");
        assert_eq!(seconds(Duration::ZERO), "0s");
    }
}
