//! Property tests of the SIP parsing the server relies on: whatever arrives
//! on the wire, parsing returns an answer and never panics. The case count
//! comes from PROPTEST_CASES (the note records how many ran).

use proptest::prelude::*;

const INVITE: &str = "INVITE sip:201@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Anna\" <sip:203@127.0.0.1>;tag=abc\r\n\
To: <sip:201@127.0.0.1>\r\n\
Call-ID: 1@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:203@127.0.0.1:5070>\r\n\
Proxy-Authorization: Digest username=\"clerk\", realm=\"callhost\", nonce=\"n\", uri=\"sip:201@127.0.0.1\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"c\"\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = callhost_sip::parse_message(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(
        cut in 0..INVITE.len(),
        insert in proptest::collection::vec(any::<u8>(), 0..64),
        replace_at in 0..INVITE.len(),
    ) {
        let mut bytes = INVITE.as_bytes().to_vec();
        bytes.splice(replace_at..replace_at, insert.iter().copied());
        let _ = callhost_sip::parse_message(&bytes);
        let _ = callhost_sip::parse_message(&INVITE.as_bytes()[..cut]);
    }

    #[test]
    fn credential_headers_never_panic(value in "[ -~]{0,300}") {
        let nonces = callhost_sip::Nonces::default();
        let uri = rsipstack::sip::Uri::try_from("sip:127.0.0.1").unwrap();
        let request = |method| callhost_sip::DigestRequest {
            method,
            uri: &uri,
            source: std::net::Ipv4Addr::LOCALHOST.into(),
            contacts: None,
        };
        let _ = nonces.check(Some(&value), request("INVITE"), |_| Ok(Some("00".repeat(16))));
        let _ = nonces.check(Some(&format!("Digest {value}")), request("REGISTER"), |_| Err(()));
        // With a nonce we issued, the check goes on to the fields.
        let nonce = nonces.issue(std::net::Ipv4Addr::LOCALHOST.into());
        let with_nonce = format!("Digest nonce=\"{nonce}\", realm=\"callhost\", {value}");
        let _ = nonces.check(Some(&with_nonce), request("REGISTER"), |_| Ok(None));
    }

    #[test]
    fn refer_to_values_never_panic(value in any::<String>()) {
        let _ = callhost_sip::refer::parse_refer_to(&value);
        let _ = callhost_sip::refer::percent_decode(&value);
        let _ = callhost_sip::refer::parse_replaces(&value);
        let _ = callhost_sip::refer::info_digit(value.as_bytes());
        let display = callhost_sip::identity::safe_display(&value);
        prop_assert!(!display.contains(['\r', '\n', '"', '\\']));
        let number = callhost_sip::identity::safe_number(&value);
        prop_assert!(number.chars().all(|c| c.is_ascii_alphanumeric() || "+*._-".contains(c)));
    }
}

#[test]
fn the_sample_request_parses() {
    assert_eq!(
        callhost_sip::parse_message(INVITE.as_bytes()).unwrap(),
        "INVITE sip:201@127.0.0.1:5060 SIP/2.0"
    );
    assert!(callhost_sip::parse_message(b"\x00\xffgarbage").is_err());
}
