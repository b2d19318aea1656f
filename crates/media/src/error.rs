//! Errors of the parts that touch sockets and files.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::relay::Leg;
use crate::sdp::Codec;

/// What went wrong allocating, running or playing into call media. These
/// end up in single log lines and call outcomes, so a message carries its
/// operating-system cause itself (as `error`, deliberately not a `source`:
/// a chain printer would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Every even port of the relay's range is taken (in use, freed too
    /// recently, or bound by another process).
    #[error("no free pair of even RTP ports on {address} in {first}-{last}")]
    PortsExhausted {
        /// The relay's address.
        address: IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// Binding a port failed for a reason other than the port being taken
    /// (e.g. the address is not one of this machine's).
    #[error("cannot bind RTP socket {address}: {error}")]
    Bind {
        /// The address that was tried.
        address: SocketAddr,
        /// The operating system's error.
        error: io::Error,
    },
    /// [`crate::MediaRelay::allocate`] was called outside a tokio runtime.
    #[error("media relay needs a tokio runtime: allocate() was called outside one")]
    NoRuntime,
    /// A prompt was to be played to a leg whose remote address is unknown.
    #[error("{leg:?} leg has no remote address yet (no SDP)")]
    NoRemote {
        /// The leg.
        leg: Leg,
    },
    /// Prompts are encoded with G.711 only; a call that negotiated only
    /// G.722 (or another codec) cannot be played to.
    #[error("prompts can be played as PCMU or PCMA only, not {0:?}")]
    PromptCodecUnsupported(Codec),
    /// The prompt file cannot be read.
    #[error("cannot open prompt {path}: {error}")]
    PromptOpen {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The prompt file is not audio symphonia can decode.
    #[error("cannot decode prompt {path}: {reason}")]
    PromptDecode {
        /// The file.
        path: PathBuf,
        /// Symphonia's explanation.
        reason: String,
    },
    /// Sending a prompt packet failed.
    #[error("sending prompt to the {leg:?} leg failed: {error}")]
    Send {
        /// The leg.
        leg: Leg,
        /// The operating system's error.
        error: io::Error,
    },
    /// The call's media was closed while a prompt was playing.
    #[error("call media closed")]
    Closed,
}
