//! Digest authentication on the server side (RFC 7616 with MD5, RFC 3261
//! §22). Only HA1 hashes are known here, never passwords.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rsipstack::sip::typed::tokenizers::AuthTokenizer;

/// How long a nonce may be answered.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Nonces kept at most; the oldest go first (a flood cannot grow memory).
const MAX_NONCES: usize = 10_000;

/// The nonces this server handed out, so a response to any other (or an
/// expired one) is refused.
#[derive(Default)]
pub struct Nonces {
    issued: Mutex<HashMap<String, Instant>>,
}

/// What a request's credentials came to.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// No credentials for our realm: challenge.
    Missing,
    /// A nonce we no longer know: challenge again with `stale=true`.
    Stale,
    /// Valid credentials of this user.
    Valid(String),
    /// Wrong password, unknown user or malformed: refuse (and count).
    Invalid(String),
}

impl Nonces {
    /// A fresh nonce to challenge with.
    pub fn issue(&self) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut issued = self.issued.lock().expect("nonce table");
        if issued.len() >= MAX_NONCES {
            let now = Instant::now();
            issued.retain(|_, at| now.duration_since(*at) < NONCE_LIFETIME);
            if issued.len() >= MAX_NONCES {
                issued.clear();
            }
        }
        issued.insert(nonce.clone(), Instant::now());
        nonce
    }

    /// The `WWW-Authenticate` / `Proxy-Authenticate` value for a challenge.
    pub fn challenge(&self, stale: bool) -> String {
        format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
            callhost_pbx::directory::SIP_REALM,
            self.issue(),
            if stale { ", stale=true" } else { "" }
        )
    }

    fn known(&self, nonce: &str) -> bool {
        let issued = self.issued.lock().expect("nonce table");
        issued
            .get(nonce)
            .is_some_and(|at| at.elapsed() < NONCE_LIFETIME)
    }

    /// Checks an `Authorization` / `Proxy-Authorization` value for `method`.
    /// `ha1` gives a user's stored hash (`None`: no such user or no password).
    pub fn check(
        &self,
        header: Option<&str>,
        method: &str,
        ha1: impl Fn(&str) -> Option<String>,
    ) -> DigestCheck {
        let Some(header) = header else {
            return DigestCheck::Missing;
        };
        let Ok(tokens) = AuthTokenizer::parse(header) else {
            return DigestCheck::Invalid("malformed credentials".into());
        };
        if !tokens.scheme.eq_ignore_ascii_case("digest") {
            return DigestCheck::Invalid(format!("scheme {} is not Digest", tokens.scheme));
        }
        let param = |name: &str| {
            tokens
                .params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim_matches('"'))
        };
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            param("username"),
            param("realm"),
            param("nonce"),
            param("uri"),
            param("response"),
        ) else {
            return DigestCheck::Invalid("credentials lack a field".into());
        };
        if realm != callhost_pbx::directory::SIP_REALM {
            return DigestCheck::Missing;
        }
        if param("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
            return DigestCheck::Invalid("algorithm is not MD5".into());
        }
        if !self.known(nonce) {
            return DigestCheck::Stale;
        }
        let Some(ha1) = ha1(username) else {
            return DigestCheck::Invalid(format!("no password for user {username:?}"));
        };
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = match param("qop") {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (param("nc"), param("cnonce")) else {
                    return DigestCheck::Invalid("qop=auth without nc and cnonce".into());
                };
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            Some(qop) => return DigestCheck::Invalid(format!("qop {qop:?} is not supported")),
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if expected.eq_ignore_ascii_case(response) {
            DigestCheck::Valid(username.to_string())
        } else {
            DigestCheck::Invalid(format!("wrong password for user {username:?}"))
        }
    }
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_pbx::directory::digest_ha1;

    fn answer(nonce: &str, password: &str, qop: bool) -> String {
        let ha1 = digest_ha1("anna", password);
        let ha2 = md5_hex("REGISTER:sip:127.0.0.1");
        if qop {
            let response = md5_hex(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
            format!(
                "Digest username=\"anna\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\""
            )
        } else {
            let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
            format!(
                "Digest username=\"anna\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{response}\""
            )
        }
    }

    #[test]
    fn right_and_wrong_passwords() {
        let nonces = Nonces::default();
        let ha1 = |user: &str| (user == "anna").then(|| digest_ha1("anna", "pw"));
        let nonce = nonces.issue();
        for qop in [true, false] {
            assert_eq!(
                nonces.check(Some(&answer(&nonce, "pw", qop)), "REGISTER", ha1),
                DigestCheck::Valid("anna".into())
            );
            assert!(matches!(
                nonces.check(Some(&answer(&nonce, "wrong", qop)), "REGISTER", ha1),
                DigestCheck::Invalid(_)
            ));
        }
        // Same answer, other method: the digest covers the method.
        assert!(matches!(
            nonces.check(Some(&answer(&nonce, "pw", true)), "INVITE", ha1),
            DigestCheck::Invalid(_)
        ));
        assert_eq!(
            nonces.check(Some(&answer("not-issued", "pw", true)), "REGISTER", ha1),
            DigestCheck::Stale
        );
        assert_eq!(nonces.check(None, "REGISTER", ha1), DigestCheck::Missing);
        assert!(matches!(
            nonces.check(Some("Digest garbage"), "REGISTER", ha1),
            DigestCheck::Invalid(_)
        ));
        assert!(nonces.challenge(true).ends_with("stale=true"));
    }
}
