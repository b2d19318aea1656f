//! The host's integration tests, one binary: each module is one area, run
//! against the built `callhost` binary with the packages `cargo xtask test`
//! makes. `common` holds the CLI harness, `sip_harness` the SIP one
//! (`callhost serve` as a child, SIPp, hand-written phones).

mod common;
mod sip_harness;

mod api;
mod api_connector;
mod attacks;
mod directory;
mod errors;
mod faults;
mod host_services;
mod instances;
mod library;
mod logs;
mod modules;
mod recording;
mod recording_audio;
mod reverse_lookup;
mod secrets;
mod simulate;
mod sip;
mod sip_tls;
mod upgrade;
mod web;
mod web_ui;
