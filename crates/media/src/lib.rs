//! callhost's media layer: the pure RTP/DTMF/G.711 core and the anchored relay.
//!
//! The host anchors RTP for SIP calls so that modules can record calls, play
//! announcements and see DTMF. These modules are the part of that job which
//! needs no socket, clock or runtime, so they can be tested byte for byte:
//!
//! - [`rtp`]: zero-copy RTP packet view and header writer (RFC 3550 §5.1).
//! - [`stats`]: per-leg receive statistics, i.e. sequence validation, loss,
//!   fraction lost and interarrival jitter (RFC 3550 appendix A.1, A.3, A.8).
//! - [`g711`]: A-law and µ-law sample conversion (ITU-T G.711).
//! - [`dtmf`]: RFC 4733 telephone-event payloads and a detector that reports
//!   each key press exactly once.
//! - [`wav`]: a streaming WAV writer that keeps the call's own codec (A-law,
//!   µ-law, 16-bit PCM), one party per channel, and switches to RF64
//!   (EBU Tech 3306) in place when the file outgrows 4 GiB.
//! - [`ring`]: a small ring of recently seen sequence numbers for cheap
//!   duplicate detection.
//!
//! The parts that touch the outside world build on those and keep protocol
//! logic in them:
//!
//! - [`sdp`]: the audio facts of an SDP offer/answer, checking its connection
//!   addresses, and rewriting them to the relay's, byte-identical otherwise.
//! - [`latch`]: which source a relay leg accepts RTP from (strict latching
//!   to the signalled address or the first source, moves only with the same
//!   SSRC), as a pure state machine.
//! - [`relay`]: [`MediaRelay`] hands out [`CallMedia`], a UDP socket pair per
//!   call on random ports and one task relaying RTP unchanged between them,
//!   with strict latching, per-leg statistics, DTMF events and zero-copy taps.
//! - [`sdes`]: SDP security descriptions (`a=crypto`, RFC 4568): SRTP
//!   master keys in the SDP, parsed strictly.
//! - [`srtp`]: SRTP terminated per leg (decrypt from the party, encrypt to
//!   it), bounded against forged SSRCs.
//! - [`prompt`]: announcements decoded with symphonia and played into a leg
//!   as paced G.711.
//!
//! ```
//! use callhost_media::{DtmfDetector, RtpHeader, RtpPacket, TelephoneEvent};
//!
//! // The end report of a '*' key press (RFC 4733 event 10), as a phone sends it.
//! let event = TelephoneEvent { event: 10, end: true, volume: 10, duration: 800 };
//! let mut buf = [0u8; 64];
//! let len = RtpHeader::new(101, 7, 16_000, 0x1234_5678)
//!     .write_packet(&event.to_bytes(), 0, &mut buf)
//!     .unwrap();
//!
//! let packet = RtpPacket::parse(&buf[..len]).unwrap();
//! let mut dtmf = DtmfDetector::new();
//! let presses = dtmf
//!     .push(packet.payload(), packet.timestamp(), packet.marker())
//!     .unwrap();
//! assert_eq!(presses[0].digit.to_char(), '*');
//! ```

#![warn(missing_docs)]

pub mod dtmf;
mod error;
pub mod g711;
pub mod latch;
pub mod prompt;
pub mod relay;
pub mod ring;
pub mod rtp;
pub mod sdes;
pub mod sdp;
pub mod srtp;
pub mod stats;
pub mod wav;

pub use dtmf::{DtmfDetector, DtmfDigit, DtmfError, DtmfPress, TelephoneEvent};
pub use error::MediaError;
pub use g711::Law;
pub use latch::Latching;
pub use prompt::Prompt;
pub use relay::{
    CallMedia, Leg, LegReceiver, LegStats, MediaEvent, MediaRelay, Reception, RelayConfig,
    TapFrame, TapLegs, TapReceiver,
};
pub use ring::{PacketRing, Seen};
pub use rtp::{RtpError, RtpExtension, RtpHeader, RtpPacket};
pub use sdp::{
    rewrite_connection, AddressClass, AddressPolicy, AudioStream, Codec, Direction, PayloadFormat,
    Sdp, SdpError,
};
pub use stats::{ReceiveStats, ReceptionReport, SeqOutcome};
pub use wav::{wav_header_is_valid, WavError, WavFormat, WavInfo, WavSpec, WavWriter};
