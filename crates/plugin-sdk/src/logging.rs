//! A `tracing` subscriber that hands events to the host's per-instance log.
//!
//! Deliberately minimal: spans are not recorded (the host's log is a flat
//! list of lines), and the level is asked from the host on every event so a
//! level change by the administrator applies at once.

use std::fmt::Write as _;

use callhost_plugin_abi::{rstr, HostServicesBox, LogLevel};
use tracing::{
    field::{Field, Visit},
    span,
    subscriber::Interest,
    Event, Level, Metadata, Subscriber,
};

pub(crate) fn dispatch(host: &HostServicesBox) -> tracing::Dispatch {
    tracing::Dispatch::new(HostSubscriber { host: host.clone() })
}

struct HostSubscriber {
    host: HostServicesBox,
}

fn to_host_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

impl Subscriber for HostSubscriber {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // The level can change at any time: ask `enabled` every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && to_host_level(metadata.level()) <= self.host.log_level()
    }

    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}

    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let metadata = event.metadata();
        self.host.log(
            to_host_level(metadata.level()),
            rstr(metadata.target()),
            rstr(&line.text),
        );
    }

    fn enter(&self, _span: &span::Id) {}

    fn exit(&self, _span: &span::Id) {}
}

/// The message first, then `key=value` for every other field.
#[derive(Default)]
struct Line {
    text: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.text);
            let _ = write!(self.text, "{value:?}");
            if !rest.is_empty() {
                self.text.push(' ');
                self.text.push_str(&rest);
            }
        } else {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let _ = write!(self.text, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let _ = write!(self.text, "{}={value}", field.name());
        }
    }
}
