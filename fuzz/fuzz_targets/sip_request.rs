//! A datagram on the SIP port, read as the server and the B2BUA read it:
//! the message, then every header they take a value from (To tag,
//! Call-ID, From user, Contacts and Expires of a REGISTER, Refer-To,
//! the credentials' user name) and the SDP body.
#![no_main]

use callhost_media::sdp::{AddressPolicy, Sdp};
use libfuzzer_sys::fuzz_target;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, SipMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(SipMessage::Request(request)) = SipMessage::try_from(data) else {
        return;
    };
    let _ = request.to_header().ok().and_then(|to| to.tag().ok().flatten());
    let _ = request.call_id_header().map(|h| h.value().to_string());
    if let Some(user) = request
        .from_header()
        .ok()
        .and_then(|from| from.uri().ok())
        .and_then(|uri| uri.auth.map(|auth| auth.user))
    {
        let number = callhost_sip::identity::safe_number(&user);
        assert!(number.len() <= 32);
    }
    let contacts = request.typed_contact_headers().unwrap_or_default();
    for contact in &contacts {
        let _ = contact.expires();
        let _ = contact.uri.to_string();
    }
    let _ = request.contact_header().map(|h| h.value().trim() == "*");
    let _ = request
        .expires_header()
        .and_then(|h| h.value().trim().parse::<u32>().ok());
    if let Some(refer_to) = request.refer_to_header() {
        let _ = callhost_sip::refer::parse_refer_to(refer_to.value());
    }
    for header in request.headers.iter() {
        let value = match header {
            Header::Authorization(h) => h.value().to_string(),
            Header::ProxyAuthorization(h) => h.value().to_string(),
            _ => continue,
        };
        let _ = rsipstack::sip::typed::tokenizers::AuthTokenizer::parse(&value);
    }
    let _ = request.uri.auth.as_ref().map(|auth| auth.user.clone());
    let _ = callhost_sip::refer::info_digit(&request.body);
    if let Ok(sdp) = Sdp::parse_bytes(&request.body) {
        let _ = sdp.check_addresses(std::net::Ipv4Addr::LOCALHOST.into(), AddressPolicy::Strict);
        let _ = sdp.audio_endpoint();
    }
});
