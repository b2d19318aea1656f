//! The text the B2BUA parses itself inside a call: Refer-To and Replaces
//! (either party of a call writes them), percent escapes, SIP INFO DTMF
//! bodies, and what becomes of names and numbers we write into headers.
#![no_main]

use callhost_sip::identity::{safe_display, safe_number};
use callhost_sip::refer::{info_digit, parse_refer_to, parse_replaces, percent_decode, ReferTarget};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = info_digit(data);
    let text = String::from_utf8_lossy(data);
    match parse_refer_to(&text) {
        Ok(ReferTarget::Blind(number)) => assert!(!number.is_empty()),
        Ok(ReferTarget::Attended(replaces)) => {
            assert!(!replaces.call_id.is_empty() && !replaces.to_tag.is_empty());
        }
        Err(_) => {}
    }
    let _ = parse_replaces(&text);
    let decoded = percent_decode(&text);
    assert!(decoded.len() <= text.len() * 3);
    let display = safe_display(&text);
    assert!(!display.contains(['\r', '\n', '"', '\\']));
    assert!(display.chars().count() <= 64);
    let number = safe_number(&text);
    assert!(!number.is_empty() && number.len() <= 32);
});
