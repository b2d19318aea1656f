//! `a=crypto` values a party writes, and the SRTP datagrams it sends on a
//! leg keyed with them: no panic; what parses formats back to the same
//! key; a datagram that decrypts was protected with the leg's key, and
//! the relay's state stays bounded.
#![no_main]

use callhost_media::sdes::{CryptoAttribute, CryptoSuite, KeyMaterial};
use callhost_media::srtp::{LegSrtp, SrtpKeys, MAX_STREAMS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<Vec<u8>>)| {
    let (value, datagrams) = input;
    if let Ok(attribute) = CryptoAttribute::parse(value) {
        let again = CryptoAttribute::parse(&attribute.value()).expect("our own line parses");
        assert_eq!(again, attribute);
    }
    // Datagrams of any shape on a leg whose key the sender does not have.
    let suite = CryptoSuite::ALL[datagrams.len() % CryptoSuite::ALL.len()];
    let mut leg = LegSrtp::new(SrtpKeys {
        receive: KeyMaterial::generate(suite),
        send: KeyMaterial::generate(suite),
    });
    for datagram in datagrams.iter().take(256) {
        assert!(leg.unprotect(datagram).is_err(), "forged SRTP authenticated");
        let _ = leg.protect(datagram);
    }
    assert!(leg.receiving_streams() <= MAX_STREAMS);
});
