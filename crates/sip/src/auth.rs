//! Authenticating a request: the brute-force guard first, then the digest.
//! Every outcome but success answers the request (a challenge or a 403)
//! and logs a refusal once.

use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use crate::digest::{AuthFailure, DigestCheck, DigestRequest};
use crate::guard::Verdict;
use crate::peer::Peer;
use crate::server::{log_refusal, Severity, Shared};

/// Which challenge a request gets: REGISTER is answered as the registrar
/// (401), calls as the proxy in front of the callee (407).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Challenge {
    Registrar,
    Proxy,
}

/// The user name credentials claim, before they are checked (for the guard).
fn claimed_user(header: &str) -> Option<String> {
    let tokens = rsipstack::sip::typed::tokenizers::AuthTokenizer::parse(header).ok()?;
    tokens
        .params
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("username"))
        .map(|(_, value)| value.trim_matches('"').to_string())
}

impl Shared {
    /// Checks the request's credentials; on anything but success answers
    /// it and returns `None`. `contacts` binds a REGISTER's nonce.
    pub async fn authenticate(
        &self,
        tx: &mut Transaction,
        peer: &Peer,
        challenge: Challenge,
        contacts: Option<&str>,
    ) -> Option<String> {
        let header = tx.original.headers.iter().find_map(|header| match header {
            Header::Authorization(h) if challenge == Challenge::Registrar => {
                Some(h.value().to_string())
            }
            Header::ProxyAuthorization(h) if challenge == Challenge::Proxy => {
                Some(h.value().to_string())
            }
            _ => None,
        });
        let source = peer.address.ip();
        if let Some(header) = &header {
            let claimed = claimed_user(header);
            // A block stops new attempts; a phone already registered from
            // this very address (IP and port) with that user goes on.
            let registered_here = claimed
                .as_deref()
                .is_some_and(|user| self.live.registrar.is_registered_at(user, peer.address));
            if !registered_here {
                match self.guard.verdict(source, claimed.as_deref()) {
                    Verdict::Allow => {}
                    Verdict::Refuse { dropped } => {
                        let why = format!(
                            "blocked after repeated authentication failures (user {:?}){}",
                            claimed.as_deref().unwrap_or("-"),
                            if dropped > 0 {
                                format!("; {dropped} more dropped unanswered since the last answer")
                            } else {
                                String::new()
                            }
                        );
                        self.refuse(
                            tx,
                            peer,
                            StatusCode::Forbidden,
                            Vec::new(),
                            Severity::Warn,
                            &why,
                        )
                        .await;
                        return None;
                    }
                    // Counted for the next answer's log line.
                    Verdict::Drop => return None,
                }
            }
        }
        let method = tx.original.method.to_string();
        let request = DigestRequest {
            method: &method,
            uri: &tx.original.uri,
            source,
            contacts,
        };
        let check = self
            .nonces
            .check(header.as_deref(), request, |user| self.ha1_of(user));
        match check {
            DigestCheck::Valid(user) => Some(user),
            DigestCheck::Missing | DigestCheck::Stale => {
                self.challenge(tx, challenge, source, check == DigestCheck::Stale)
                    .await;
                None
            }
            DigestCheck::Invalid(failure) => {
                self.auth_failed(tx, peer, challenge, failure).await;
                None
            }
        }
    }

    async fn challenge(
        &self,
        tx: &mut Transaction,
        challenge: Challenge,
        to: std::net::IpAddr,
        stale: bool,
    ) {
        let value = self.nonces.challenge(to, stale);
        let (status, header) = match challenge {
            Challenge::Proxy => (
                StatusCode::ProxyAuthenticationRequired,
                Header::ProxyAuthenticate(value.into()),
            ),
            Challenge::Registrar => (
                StatusCode::Unauthorized,
                Header::WwwAuthenticate(value.into()),
            ),
        };
        tx.reply_with(status, vec![header], None).await.ok();
    }

    async fn auth_failed(
        &self,
        tx: &mut Transaction,
        peer: &Peer,
        challenge: Challenge,
        failure: AuthFailure,
    ) {
        // The reason names the user, never the password or the digest.
        if failure.is_replay() {
            // A replay gets a fresh challenge: the real phone answers it.
            log_refusal(
                tx,
                peer,
                &StatusCode::Unauthorized,
                Severity::Warn,
                &failure,
            );
            self.challenge(tx, challenge, peer.address.ip(), true).await;
            return;
        }
        let mut why = failure.to_string();
        if failure.is_guess() {
            let blocked = self.guard.failed(peer.address.ip(), failure.user());
            if blocked.source {
                why.push_str(&format!(
                    "; source {} blocked for {} s",
                    peer.address.ip(),
                    self.config.auth_block_seconds
                ));
            }
            if blocked.user {
                why.push_str(&format!(
                    "; user blocked for {} s",
                    self.config.auth_block_seconds
                ));
            }
        }
        self.refuse(
            tx,
            peer,
            StatusCode::Forbidden,
            Vec::new(),
            Severity::Warn,
            &why,
        )
        .await;
    }
}
