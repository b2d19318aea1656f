//! Call recording's files, without any module glue.
//!
//! - [`audio`]: one call's audio from tapped RTP frames to WAV files,
//!   channels kept in sync by RTP timestamp, written as it arrives and
//!   repaired after a crash.
//! - [`evidence`]: the installation's key pair and certificate, checksum
//!   files, signatures, and the checks `verify` runs.

pub mod audio;
pub mod evidence;
