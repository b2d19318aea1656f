//! The SIP front end: a registrar and a back-to-back user agent on the
//! call engine (P2, P5–P7 in `docs/FEATURES.md`; `docs/ARCHITECTURE.md`).
//!
//! Phones register here with digest authentication and call through here;
//! every call is two SIP dialogs (caller leg, callee legs) with the media
//! anchored in `callhost-media` between them. The engine decides where a call
//! goes (modules included); this crate only turns that decision into SIP and
//! back.
//!
//! Everything that arrives is judged by its real source address
//! (`peer.rs`), never by a header the sender wrote: the trunk is recognised
//! by address, everyone else authenticates (`auth.rs`, `digest.rs`) under a
//! brute-force guard (`guard.rs`), and new calls pass the limits
//! (`limits.rs`) and the dial policy (`policy.rs`) before anything is
//! allocated for them.
//!
//! The SIP stack is `rsipstack` (transactions, dialogs, UDP/TCP). Its types
//! never leave this crate: the host sees [`SipServer`], [`SipConfig`],
//! [`CallControl`] and the engine's own types, so the stack can be replaced
//! here alone.

mod auth;
mod call;
mod config;
pub mod digest;
mod guard;
pub mod identity;
mod limits;
mod peer;
mod policy;
mod presence;
pub mod refer;
mod register;
mod registrar;
mod server;
mod srtp;
pub mod tls;

pub use call::originate::{CallRefusal, Telephony};
pub use config::{
    ConfigError, LatchingMode, LimitsConfig, MediaConfig, OutboundConfig, SipConfig, TlsConfig,
    TrunkConfig, TrunkTransport, UserOutbound, DEFAULT_TLS_PORT,
};
pub use digest::{AuthFailure, DigestCheck, DigestRequest, Nonces};
pub use guard::AuthGuard;
pub use presence::{LiveCalls, PresenceListener};
pub use registrar::{Binding, Registrar, SignalTransport};
pub use server::{CallControl, CallRecord, MediaSink, ServeError, SipServer};
pub use srtp::{SrtpConfig, SrtpPolicy};

/// Parses a SIP message; for the fuzz and property tests of the parsing the
/// server relies on. `Err` for anything that is not a SIP message.
pub fn parse_message(bytes: &[u8]) -> Result<String, String> {
    rsipstack::sip::SipMessage::try_from(bytes)
        .map(|message| message.start_line())
        .map_err(|error| error.to_string())
}
