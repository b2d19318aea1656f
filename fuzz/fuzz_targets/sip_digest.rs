//! Credentials as a phone sends them: arbitrary `Authorization` values,
//! some built around a nonce the server really issued (so the check gets
//! past the nonce to the fields, the uri, qop, nc and the table of
//! answered nonces). A check never panics and never accepts a response
//! that was not computed from the user's HA1.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use callhost_sip::{DigestCheck, DigestRequest, Nonces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let nonces = Nonces::default();
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let uri = rsipstack::sip::Uri::try_from("sip:201@127.0.0.1:5060").expect("valid");
    let request = DigestRequest {
        method: "INVITE",
        uri: &uri,
        source,
        contacts: Some("<sip:anna@127.0.0.1:5070>"),
    };
    // A hash nobody can answer without knowing it.
    let ha1 = |user: &str| match user {
        "anna" => Ok(Some("0123456789abcdef0123456789abcdef".to_string())),
        "nopw" => Ok(None),
        _ => Err(()),
    };
    let check = nonces.check(Some(text), request, ha1);
    assert!(!matches!(check, DigestCheck::Valid(_)), "{check:?}");
    let nonce = nonces.issue(source);
    for header in [
        format!("Digest realm=\"callhost\", nonce=\"{nonce}\", {text}"),
        format!("Digest {text}, realm=\"callhost\", nonce=\"{nonce}\", username=\"anna\", uri=\"sip:201@127.0.0.1:5060\""),
    ] {
        let check = nonces.check(Some(&header), request, ha1);
        assert!(!matches!(check, DigestCheck::Valid(_)), "{check:?}");
    }
});
