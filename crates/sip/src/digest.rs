//! Digest authentication on the server side (RFC 7616 with MD5, RFC 3261
//! §22). Only HA1 hashes are known here, never passwords.
//!
//! Nonces are stateless: each carries the time it was issued and a MAC over
//! that time, a random part and the address it was issued to, under a key
//! that lives only in this process. So a challenge needs no table entry,
//! and a flood of challenges can never push out the pending challenges of
//! others. State is kept only for nonces that were answered correctly: the
//! last nonce count (`nc`) seen, so a replayed `nc` is refused, and for a
//! REGISTER the Contacts it was used with, so a captured REGISTER cannot be
//! replayed to move a phone's registration elsewhere. That table holds
//! only what authenticated users created and is bounded; a nonce whose
//! entry had to be dropped is treated as stale, never as fresh.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rsipstack::sip::typed::tokenizers::AuthTokenizer;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a nonce may be answered.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Answered nonces remembered at most; the oldest go first.
const MAX_USED: usize = 50_000;
/// Bytes of a nonce: issue time (8), random (8), MAC (16).
const NONCE_BYTES: usize = 32;

/// Why credentials were not accepted. `counts` says whether it is a
/// guess (wrong password, unknown user) that the brute-force guard counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("malformed credentials")]
    Malformed,
    #[error("credentials lack the `{0}` field")]
    MissingField(&'static str),
    #[error("scheme {0:?} is not Digest")]
    Scheme(String),
    #[error("algorithm {0:?} is not MD5")]
    Algorithm(String),
    #[error("qop {0:?} is not supported")]
    Qop(String),
    #[error("the digest uri {digest:?} is not the Request-URI {request:?}")]
    UriMismatch { digest: String, request: String },
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("user {0:?} has no SIP password")]
    NoPassword(String),
    #[error("wrong password for user {0:?}")]
    WrongPassword(String),
    #[error("replayed nonce count for user {0:?}")]
    ReplayedNonceCount(String),
    #[error("nonce of user {0:?} reused for a REGISTER with other Contacts")]
    ContactChanged(String),
}

impl AuthFailure {
    /// A password or user-name guess: counted by the brute-force guard.
    pub fn is_guess(&self) -> bool {
        matches!(
            self,
            AuthFailure::UnknownUser(_)
                | AuthFailure::NoPassword(_)
                | AuthFailure::WrongPassword(_)
        )
    }

    /// The user name the credentials claimed, if they got that far.
    pub fn user(&self) -> Option<&str> {
        match self {
            AuthFailure::UnknownUser(user)
            | AuthFailure::NoPassword(user)
            | AuthFailure::WrongPassword(user)
            | AuthFailure::ReplayedNonceCount(user)
            | AuthFailure::ContactChanged(user) => Some(user),
            _ => None,
        }
    }

    /// A replay of a valid answer: refused with a fresh challenge (a phone
    /// that really is who it says answers that at once).
    pub fn is_replay(&self) -> bool {
        matches!(
            self,
            AuthFailure::ReplayedNonceCount(_) | AuthFailure::ContactChanged(_)
        )
    }
}

/// What a request's credentials came to.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// No credentials for our realm: challenge.
    Missing,
    /// A nonce we did not issue to this address, or an expired one:
    /// challenge again with `stale=true`.
    Stale,
    /// Valid credentials of this user.
    Valid(String),
    /// Refused, and why.
    Invalid(AuthFailure),
}

/// The request being authenticated, as the transport and parser saw it.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    /// The Request-URI as parsed from the request line.
    pub uri: &'a rsipstack::sip::Uri,
    /// The real source address.
    pub source: IpAddr,
    /// For a REGISTER: its Contacts, normalised (the nonce is bound to them).
    pub contacts: Option<&'a str>,
}

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    started: Instant,
    used: Mutex<UsedNonces>,
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces {
            key: rand::random(),
            started: Instant::now(),
            used: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct UsedNonces {
    entries: HashMap<[u8; NONCE_BYTES], Used>,
    /// Answer order, for dropping the oldest (each nonce once).
    order: VecDeque<[u8; NONCE_BYTES]>,
    /// Nonces issued at or before this time (ms) that have no entry may have
    /// lost theirs to the bound: stale, not fresh.
    forgotten_up_to: Option<u64>,
}

struct Used {
    /// Highest `nc` accepted; `None`: answered without qop (single use).
    last_nc: Option<u32>,
    /// The Contacts of the REGISTER it was first used for.
    contacts: Option<String>,
}

type HmacSha256 = Hmac<Sha256>;

impl Nonces {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn mac(&self, issued: u64, random: &[u8], to: IpAddr) -> [u8; 16] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(&issued.to_be_bytes());
        mac.update(random);
        match to {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A fresh nonce for a challenge to `to`.
    pub fn issue(&self, to: IpAddr) -> String {
        let issued = self.now_ms();
        let random: [u8; 8] = rand::random();
        let mut bytes = [0u8; NONCE_BYTES];
        bytes[..8].copy_from_slice(&issued.to_be_bytes());
        bytes[8..16].copy_from_slice(&random);
        bytes[16..].copy_from_slice(&self.mac(issued, &random, to));
        hex::encode(bytes)
    }

    /// The `WWW-Authenticate` / `Proxy-Authenticate` value for a challenge.
    pub fn challenge(&self, to: IpAddr, stale: bool) -> String {
        format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
            callhost_pbx::directory::SIP_REALM,
            self.issue(to),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// The nonce's bytes and issue time if we issued it to `from` and it
    /// has not expired.
    fn verify_nonce(&self, nonce: &str, from: IpAddr) -> Option<([u8; NONCE_BYTES], u64)> {
        let mut bytes = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce, &mut bytes).ok()?;
        let issued = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let expected = self.mac(issued, &bytes[8..16], from);
        if !bool::from(expected.ct_eq(&bytes[16..])) {
            return None;
        }
        let now = self.now_ms();
        (issued <= now && now - issued < NONCE_LIFETIME.as_millis() as u64)
            .then_some((bytes, issued))
    }

    /// Checks an `Authorization` / `Proxy-Authorization` value for
    /// `request`. `ha1` gives a user's stored hash (`Ok(None)`: the user
    /// exists without a password; `Err(())`: no such user).
    pub fn check(
        &self,
        header: Option<&str>,
        request: DigestRequest<'_>,
        ha1: impl Fn(&str) -> Result<Option<String>, ()>,
    ) -> DigestCheck {
        let Some(header) = header else {
            return DigestCheck::Missing;
        };
        let invalid = DigestCheck::Invalid;
        let Ok(tokens) = AuthTokenizer::parse(header) else {
            return invalid(AuthFailure::Malformed);
        };
        if !tokens.scheme.eq_ignore_ascii_case("digest") {
            return invalid(AuthFailure::Scheme(tokens.scheme.to_string()));
        }
        let param = |name: &str| {
            tokens
                .params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim_matches('"'))
        };
        let required = |name: &'static str| param(name).ok_or(AuthFailure::MissingField(name));
        let fields = (|| {
            Ok::<_, AuthFailure>((
                required("username")?,
                required("realm")?,
                required("nonce")?,
                required("uri")?,
                required("response")?,
            ))
        })();
        let (username, realm, nonce, digest_uri, response) = match fields {
            Ok(fields) => fields,
            Err(failure) => return invalid(failure),
        };
        if realm != callhost_pbx::directory::SIP_REALM {
            return DigestCheck::Missing;
        }
        if let Some(algorithm) = param("algorithm").filter(|a| !a.eq_ignore_ascii_case("md5")) {
            return invalid(AuthFailure::Algorithm(algorithm.to_string()));
        }
        let Some((nonce_bytes, issued)) = self.verify_nonce(nonce, request.source) else {
            return DigestCheck::Stale;
        };
        if !uri_matches(digest_uri, request.uri) {
            return invalid(AuthFailure::UriMismatch {
                digest: digest_uri.to_string(),
                request: request.uri.to_string(),
            });
        }
        let qop = match param("qop") {
            None => None,
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (param("nc"), param("cnonce")) else {
                    return invalid(AuthFailure::MissingField("nc"));
                };
                let Some(count) = (nc.len() == 8)
                    .then(|| u32::from_str_radix(nc, 16).ok())
                    .flatten()
                else {
                    return invalid(AuthFailure::Malformed);
                };
                Some((nc, cnonce, qop, count))
            }
            Some(qop) => return invalid(AuthFailure::Qop(qop.to_string())),
        };
        let (known_user, ha1) = match ha1(username) {
            Ok(Some(ha1)) => (Ok(()), ha1),
            // Compare against a hash nobody has, so the answer takes as long
            // as for a real user.
            Ok(None) => (
                Err(AuthFailure::NoPassword(username.to_string())),
                md5_hex("no password"),
            ),
            Err(()) => (
                Err(AuthFailure::UnknownUser(username.to_string())),
                md5_hex("no user"),
            ),
        };
        let ha2 = md5_hex(&format!("{}:{digest_uri}", request.method));
        let expected = match qop {
            Some((nc, cnonce, qop, _)) => {
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        let matches: bool = expected
            .as_bytes()
            .ct_eq(response.to_ascii_lowercase().as_bytes())
            .into();
        if let Err(failure) = known_user {
            return invalid(failure);
        }
        if !matches {
            return invalid(AuthFailure::WrongPassword(username.to_string()));
        }
        match self.record_use(
            nonce_bytes,
            issued,
            qop.map(|(.., count)| count),
            request.contacts,
        ) {
            Use::Fresh => DigestCheck::Valid(username.to_string()),
            Use::Forgotten => DigestCheck::Stale,
            Use::ReplayedCount => invalid(AuthFailure::ReplayedNonceCount(username.to_string())),
            Use::OtherContacts => invalid(AuthFailure::ContactChanged(username.to_string())),
        }
    }

    /// Records a correct answer to a nonce; refuses replays.
    fn record_use(
        &self,
        nonce: [u8; NONCE_BYTES],
        issued: u64,
        count: Option<u32>,
        contacts: Option<&str>,
    ) -> Use {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let forgotten = used.forgotten_up_to.is_some_and(|t| issued <= t);
        match used.entries.get_mut(&nonce) {
            Some(entry) => {
                let replay = match (entry.last_nc, count) {
                    (Some(last), Some(count)) => count <= last,
                    // Without qop a nonce answers once; mixing forms is odd.
                    _ => true,
                };
                if replay {
                    return Use::ReplayedCount;
                }
                if let Some(contacts) = contacts {
                    match &entry.contacts {
                        Some(bound) if bound != contacts => return Use::OtherContacts,
                        Some(_) => {}
                        None => entry.contacts = Some(contacts.to_string()),
                    }
                }
                entry.last_nc = count;
                Use::Fresh
            }
            None if forgotten => Use::Forgotten,
            None => {
                if used.entries.len() >= MAX_USED {
                    if let Some(oldest) = used.order.pop_front() {
                        used.entries.remove(&oldest);
                        let oldest_issued =
                            u64::from_be_bytes(oldest[..8].try_into().expect("8 bytes"));
                        used.forgotten_up_to = used.forgotten_up_to.max(Some(oldest_issued));
                    }
                }
                used.entries.insert(
                    nonce,
                    Used {
                        last_nc: count,
                        contacts: contacts.map(str::to_string),
                    },
                );
                used.order.push_back(nonce);
                // Expired entries leave from the front as time goes on.
                let now = self.now_ms();
                while let Some(front) = used.order.front() {
                    let front_issued = u64::from_be_bytes(front[..8].try_into().expect("8 bytes"));
                    if now.saturating_sub(front_issued) < NONCE_LIFETIME.as_millis() as u64 {
                        break;
                    }
                    let front = used.order.pop_front().expect("front exists");
                    used.entries.remove(&front);
                }
                Use::Fresh
            }
        }
    }
}

enum Use {
    Fresh,
    Forgotten,
    ReplayedCount,
    OtherContacts,
}

/// The digest's `uri` names the same resource as the Request-URI (RFC 7616
/// §3.4.6): compared parsed, so equivalent spellings (case of the scheme
/// and host, parameter order) are equal; text that does not parse must be
/// the Request-URI's text exactly.
fn uri_matches(digest_uri: &str, request: &rsipstack::sip::Uri) -> bool {
    if digest_uri == request.to_string() {
        return true;
    }
    let Ok(parsed) = rsipstack::sip::Uri::try_from(digest_uri) else {
        return false;
    };
    let user = |uri: &rsipstack::sip::Uri| uri.auth.as_ref().map(|a| a.user.clone());
    let params = |uri: &rsipstack::sip::Uri| {
        let mut all: Vec<String> = uri
            .params
            .iter()
            .map(|p| p.to_string().to_ascii_lowercase())
            .collect();
        all.sort();
        all
    };
    parsed.scheme == request.scheme
        && user(&parsed) == user(request)
        && parsed
            .host_with_port
            .to_string()
            .eq_ignore_ascii_case(&request.host_with_port.to_string())
        && params(&parsed) == params(request)
}

pub(crate) fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_pbx::directory::digest_ha1;

    const URI: &str = "sip:127.0.0.1";

    fn answer(nonce: &str, password: &str, nc: Option<u32>, uri: &str) -> String {
        let ha1 = digest_ha1("anna", password);
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        match nc {
            Some(nc) => {
                let nc = format!("{nc:08x}");
                let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
                format!(
                    "Digest username=\"anna\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"abc\""
                )
            }
            None => {
                let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
                format!(
                    "Digest username=\"anna\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
                )
            }
        }
    }

    fn users(user: &str) -> Result<Option<String>, ()> {
        match user {
            "anna" => Ok(Some(digest_ha1("anna", "pw"))),
            "nopw" => Ok(None),
            _ => Err(()),
        }
    }

    fn uri() -> rsipstack::sip::Uri {
        rsipstack::sip::Uri::try_from(URI).unwrap()
    }

    fn request<'a>(uri: &'a rsipstack::sip::Uri, method: &'a str) -> DigestRequest<'a> {
        DigestRequest {
            method,
            uri,
            source: "192.0.2.7".parse().unwrap(),
            contacts: None,
        }
    }

    fn issued(nonces: &Nonces) -> String {
        nonces.issue("192.0.2.7".parse().unwrap())
    }

    #[test]
    fn right_and_wrong_passwords() {
        let nonces = Nonces::default();
        let uri = uri();
        let register = request(&uri, "REGISTER");
        let nonce = issued(&nonces);
        assert_eq!(
            nonces.check(Some(&answer(&nonce, "pw", Some(1), URI)), register, users),
            DigestCheck::Valid("anna".into())
        );
        let wrong = nonces.check(Some(&answer(&nonce, "x", Some(2), URI)), register, users);
        assert_eq!(
            wrong,
            DigestCheck::Invalid(AuthFailure::WrongPassword("anna".into()))
        );
        // Without qop, once.
        let plain = issued(&nonces);
        assert_eq!(
            nonces.check(Some(&answer(&plain, "pw", None, URI)), register, users),
            DigestCheck::Valid("anna".into())
        );
        assert!(matches!(
            nonces.check(Some(&answer(&plain, "pw", None, URI)), register, users),
            DigestCheck::Invalid(AuthFailure::ReplayedNonceCount(_))
        ));
        // Same answer, other method: the digest covers the method.
        let fresh = issued(&nonces);
        assert!(matches!(
            nonces.check(
                Some(&answer(&fresh, "pw", Some(1), URI)),
                request(&uri, "INVITE"),
                users
            ),
            DigestCheck::Invalid(AuthFailure::WrongPassword(_))
        ));
        assert_eq!(
            nonces.check(
                Some(&answer("not-issued", "pw", Some(1), URI)),
                register,
                users
            ),
            DigestCheck::Stale
        );
        assert_eq!(nonces.check(None, register, users), DigestCheck::Missing);
        assert!(matches!(
            nonces.check(Some("Digest garbage"), register, users),
            DigestCheck::Invalid(_)
        ));
        assert!(nonces
            .challenge("192.0.2.7".parse().unwrap(), true)
            .ends_with("stale=true"));
    }

    #[test]
    fn unknown_users_and_users_without_password_are_told_apart() {
        let nonces = Nonces::default();
        let uri = uri();
        let nonce = issued(&nonces);
        let as_user = |user: &str| answer(&nonce, "pw", Some(1), URI).replace("anna", user);
        assert_eq!(
            nonces.check(Some(&as_user("mallory")), request(&uri, "REGISTER"), users),
            DigestCheck::Invalid(AuthFailure::UnknownUser("mallory".into()))
        );
        assert_eq!(
            nonces.check(Some(&as_user("nopw")), request(&uri, "REGISTER"), users),
            DigestCheck::Invalid(AuthFailure::NoPassword("nopw".into()))
        );
        assert!(AuthFailure::UnknownUser("x".into()).is_guess());
        assert!(!AuthFailure::ReplayedNonceCount("x".into()).is_guess());
    }

    #[test]
    fn nonces_are_bound_to_the_address_they_were_issued_to() {
        let nonces = Nonces::default();
        let uri = uri();
        let nonce = nonces.issue("192.0.2.99".parse().unwrap());
        assert_eq!(
            nonces.check(
                Some(&answer(&nonce, "pw", Some(1), URI)),
                request(&uri, "REGISTER"),
                users
            ),
            DigestCheck::Stale
        );
        // A tampered nonce is not ours either.
        let mut tampered = issued(&nonces).into_bytes();
        tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            nonces.check(
                Some(&answer(&tampered, "pw", Some(1), URI)),
                request(&uri, "REGISTER"),
                users
            ),
            DigestCheck::Stale
        );
    }

    #[test]
    fn a_replayed_nonce_count_is_refused_and_a_higher_one_accepted() {
        let nonces = Nonces::default();
        let uri = uri();
        let register = request(&uri, "REGISTER");
        let nonce = issued(&nonces);
        let first = answer(&nonce, "pw", Some(1), URI);
        assert_eq!(
            nonces.check(Some(&first), register, users),
            DigestCheck::Valid("anna".into())
        );
        assert_eq!(
            nonces.check(Some(&first), register, users),
            DigestCheck::Invalid(AuthFailure::ReplayedNonceCount("anna".into()))
        );
        assert_eq!(
            nonces.check(Some(&answer(&nonce, "pw", Some(2), URI)), register, users),
            DigestCheck::Valid("anna".into())
        );
    }

    #[test]
    fn the_digest_uri_must_be_the_request_uri() {
        let nonces = Nonces::default();
        let uri = uri();
        let nonce = issued(&nonces);
        let other = answer(&nonce, "pw", Some(1), "sip:elsewhere.example");
        assert!(matches!(
            nonces.check(Some(&other), request(&uri, "REGISTER"), users),
            DigestCheck::Invalid(AuthFailure::UriMismatch { .. })
        ));
        // The same URI spelled with another case of the scheme is the same.
        let upper = answer(&nonce, "pw", Some(2), "SIP:127.0.0.1");
        assert_eq!(
            nonces.check(Some(&upper), request(&uri, "REGISTER"), users),
            DigestCheck::Valid("anna".into())
        );
    }

    #[test]
    fn a_register_nonce_cannot_be_replayed_with_other_contacts() {
        let nonces = Nonces::default();
        let uri = uri();
        let nonce = issued(&nonces);
        let with = |contacts: &'static str| DigestRequest {
            contacts: Some(contacts),
            ..request(&uri, "REGISTER")
        };
        assert_eq!(
            nonces.check(
                Some(&answer(&nonce, "pw", Some(1), URI)),
                with("<sip:anna@192.0.2.7:5070>"),
                users
            ),
            DigestCheck::Valid("anna".into())
        );
        assert_eq!(
            nonces.check(
                Some(&answer(&nonce, "pw", Some(2), URI)),
                with("<sip:anna@203.0.113.66:5070>"),
                users
            ),
            DigestCheck::Invalid(AuthFailure::ContactChanged("anna".into()))
        );
        assert_eq!(
            nonces.check(
                Some(&answer(&nonce, "pw", Some(3), URI)),
                with("<sip:anna@192.0.2.7:5070>"),
                users
            ),
            DigestCheck::Valid("anna".into())
        );
    }

    #[test]
    fn many_challenges_never_invalidate_a_pending_one() {
        let nonces = Nonces::default();
        let uri = uri();
        let pending = issued(&nonces);
        for i in 0..200_000u32 {
            nonces.issue(std::net::IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(
            nonces.check(
                Some(&answer(&pending, "pw", Some(1), URI)),
                request(&uri, "REGISTER"),
                users
            ),
            DigestCheck::Valid("anna".into())
        );
    }
}
