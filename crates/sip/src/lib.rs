//! The SIP front end: a registrar and a back-to-back user agent on the
//! call engine (SPEC P2, P5–P7; DESIGN "Calls").
//!
//! Phones register here with digest authentication and call through here;
//! every call is two SIP dialogs (caller leg, callee legs) with the media
//! anchored in `callhost-media` between them. The engine decides where a call
//! goes (modules included); this crate only turns that decision into SIP and
//! back.
//!
//! The SIP stack is `rsipstack` (transactions, dialogs, UDP/TCP). Its types
//! never leave this crate: the host sees [`SipServer`], [`SipConfig`],
//! [`CallControl`] and the engine's own types, so the stack can be replaced
//! here alone.

mod call;
mod config;
mod digest;
mod guard;
mod registrar;
mod server;

pub use config::{ConfigError, MediaConfig, SipConfig, TrunkConfig};
pub use digest::{DigestCheck, Nonces};
pub use guard::AuthGuard;
pub use registrar::{Binding, Registrar};
pub use server::{CallControl, CallRecord, LiveCalls, MediaSink, ServeError, SipServer};

/// Parses a SIP message; for the fuzz and property tests of the parsing the
/// server relies on. `Err` for anything that is not a SIP message.
pub fn parse_message(bytes: &[u8]) -> Result<String, String> {
    rsipstack::sip::SipMessage::try_from(bytes)
        .map(|message| message.start_line())
        .map_err(|error| error.to_string())
}
