//! Who may use the HTTP side, and how that is checked.
//!
//! - **Scripts** send `Authorization: Bearer <token>` (tokens from
//!   `callhost api token create`; the database keeps their SHA-256).
//! - **Administrators** log in with a name and password
//!   (`callhost admin add`; argon2id PHC strings in the database) and get a
//!   session cookie: random, HttpOnly, SameSite=Strict, Secure under HTTPS.
//!   Sessions live in this process's memory (a restart logs everyone out)
//!   and end after `session_idle_minutes` without a request, after
//!   `session_hours` in any case, and at once when the administrator is
//!   removed or their password changes.
//! - **CSRF**: a session has a random token of its own, handed out with the
//!   login and by `GET /api/v1/session`; every request that changes
//!   something and comes with the cookie must carry it in `X-CSRF-Token`.
//!   Bearer tokens are not sent by browsers on their own, so requests with
//!   one need no CSRF token.
//! - **Logins** are limited per source address and per name (failures in a
//!   window); a refused login costs as much time whether or not the name
//!   exists (the password is checked against a dummy hash).
//!
//! Credentials (tokens, administrators) are read again when another
//! process committed to `callhost.db` (`PRAGMA data_version`), before every
//! authenticated request: a revocation applies at once.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Argon2,
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::{watch, Semaphore};

/// Shortest password `callhost admin add` takes.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest (argon2 takes any length; a megabyte would only cost time).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Failed logins one source address may have per window (any names).
const SOURCE_FAILURES: u32 = 10;
/// Failed logins for one name from one address per window.
const NAME_FAILURES: u32 = 5;
/// Failed logins for one name from anywhere per window: high enough that
/// one guesser cannot lock an administrator out, low enough to stop a
/// spread-out guess.
const NAME_FAILURES_ANYWHERE: u32 = 100;
/// The window of both limits.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Addresses and names counted at once; the oldest window goes first.
const MAX_COUNTED: usize = 10_000;
/// Sessions at once; the least recently used goes first.
const MAX_SESSIONS: usize = 1_000;
/// Password checks at once (argon2 takes tens of milliseconds and 19 MiB
/// each): a login flood waits here instead of taking the machine.
const PARALLEL_CHECKS: usize = 2;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "callhost_session";

/// 32 random bytes, hex: tokens, session ids, CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is kept of a token or session id.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares without stopping at the first difference.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A password an administrator may have; the error names what is wrong.
pub fn check_password_rules(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.trim().is_empty() {
        return Err("the password must not be only spaces".into());
    }
    Ok(())
}

/// The argon2id PHC string of `password` (a fresh salt each time).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))?
        .to_string())
}

/// Whether `password` matches the PHC string (false for a malformed one).
fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Checked when the name is unknown, so that a refusal costs the same.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// The tokens and administrators as last read.
#[derive(Default)]
pub struct Known {
    tokens: Vec<(String, [u8; 32])>,
    /// Administrator name → PHC string.
    admins: HashMap<String, String>,
}

impl Known {
    fn read(conn: &rusqlite::Connection) -> rusqlite::Result<Known> {
        let mut tokens = Vec::new();
        for (name, stored) in crate::db::api_token_hashes(conn)? {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&stored, &mut digest).is_ok() {
                tokens.push((name, digest));
            }
        }
        let admins = crate::db::admin_hashes(conn)?.into_iter().collect();
        Ok(Known { tokens, admins })
    }

    /// The name of the token with `digest`; every entry is compared, each
    /// in constant time.
    pub fn token_name(&self, digest: &[u8; 32]) -> Option<&str> {
        let mut found = None;
        for (name, stored) in &self.tokens {
            if same_bytes(stored, digest) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Whether `admin` still has the password hash `phc`.
    fn admin_unchanged(&self, admin: &str, phc: &str) -> bool {
        self.admins.get(admin).is_some_and(|now| now == phc)
    }
}

/// The credentials in memory, with a connection of their own to
/// `callhost.db` to notice other processes' commits.
pub struct Credentials {
    conn: Mutex<(rusqlite::Connection, i64)>,
    current: watch::Sender<Arc<Known>>,
}

impl Credentials {
    pub fn open(database: &std::path::Path) -> Result<Credentials> {
        let conn = rusqlite::Connection::open(database)
            .with_context(|| format!("opening {}", database.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version = data_version(&conn)?;
        let known = Known::read(&conn).context("reading the API tokens and administrators")?;
        Ok(Credentials {
            conn: Mutex::new((conn, version)),
            current: watch::Sender::new(Arc::new(known)),
        })
    }

    pub fn current(&self) -> Arc<Known> {
        self.current.borrow().clone()
    }

    /// Changes of the credentials (live feeds end when theirs goes).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Known>> {
        self.current.subscribe()
    }

    /// Reads the credentials again if another process committed since the
    /// last read (blocking; cheap when nothing changed).
    pub fn refresh(&self) -> rusqlite::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (conn, seen) = &mut *guard;
        let version = data_version(conn)?;
        if version == *seen {
            return Ok(());
        }
        // A commit between the two reads is seen again next time.
        let known = Known::read(conn)?;
        *seen = version;
        self.current.send_replace(Arc::new(known));
        Ok(())
    }
}

fn data_version(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin(String),
    Token(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin(name) => write!(f, "admin:{name}"),
            Actor::Token(name) => write!(f, "token:{name}"),
        }
    }
}

struct Session {
    admin: String,
    /// The administrator's PHC string at login: a new password ends the
    /// session.
    password_hash: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// A session found for a request.
pub struct SessionView {
    pub admin: String,
    pub csrf: String,
}

/// The browser sessions of this process, by the SHA-256 of their id.
pub struct Sessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            sessions: Mutex::default(),
            idle,
            absolute,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `admin`; returns its id (the cookie) and CSRF token.
    pub fn create(&self, admin: &str, password_hash: &str) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, session| self.alive(session, now));
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token_digest(&id),
            Session {
                admin: admin.to_string(),
                password_hash: password_hash.to_string(),
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (id, csrf)
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.idle
            && now.duration_since(session.created) < self.absolute
    }

    /// The session with cookie `id`, if it is still valid for `known`
    /// (marked as used); an expired or outdated one is removed.
    pub fn find(&self, id: &str, known: &Known) -> Option<SessionView> {
        let key = token_digest(id);
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !self.alive(session, now)
            || !known.admin_unchanged(&session.admin, &session.password_hash)
        {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(SessionView {
            admin: session.admin.clone(),
            csrf: session.csrf.clone(),
        })
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(&token_digest(id));
    }
}

/// What a login attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    Source(IpAddr),
    NameFrom(String, IpAddr),
    Name(String),
}

/// Failed logins per source and per name, in fixed windows.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Counted, (Instant, u32)>>,
}

/// Why a login was refused before the password was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFailures {
    pub retry_after: Duration,
}

impl LoginLimiter {
    fn keys(source: IpAddr, name: &str) -> [(Counted, u32); 3] {
        // Names are counted as typed, cut short: a flood of long names
        // cannot make the table large.
        let name: String = name.chars().take(64).collect();
        [
            (Counted::Source(source), SOURCE_FAILURES),
            (Counted::NameFrom(name.clone(), source), NAME_FAILURES),
            (Counted::Name(name), NAME_FAILURES_ANYWHERE),
        ]
    }

    /// Refused while either count is at its limit.
    pub fn check(&self, source: IpAddr, name: &str) -> Result<(), TooManyFailures> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (key, limit) in Self::keys(source, name) {
            if let Some((since, count)) = failures.get(&key) {
                let age = now.duration_since(*since);
                if age < FAILURE_WINDOW && *count >= limit {
                    wait = wait.max(FAILURE_WINDOW - age);
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(TooManyFailures { retry_after: wait })
        }
    }

    pub fn failed(&self, source: IpAddr, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_COUNTED {
            failures.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        for (key, _) in Self::keys(source, name) {
            if failures.len() >= MAX_COUNTED && !failures.contains_key(&key) {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
            let entry = failures.entry(key).or_insert((now, 0));
            if now.duration_since(entry.0) >= FAILURE_WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }

    /// A successful login clears its name's count from that address (not
    /// the address's, nor the name's from anywhere).
    pub fn succeeded(&self, source: IpAddr, name: &str) {
        let name: String = name.chars().take(64).collect();
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Counted::NameFrom(name, source));
    }
}

/// Checks passwords off the async workers, a few at a time.
pub struct PasswordChecker {
    permits: Semaphore,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        PasswordChecker {
            permits: Semaphore::new(PARALLEL_CHECKS),
        }
    }
}

impl PasswordChecker {
    /// The PHC string of `name` when `password` is theirs. Takes as long
    /// for an unknown name.
    pub async fn check(&self, known: &Known, name: &str, password: String) -> Option<String> {
        let _permit = self.permits.acquire().await.ok()?;
        let stored = known.admins.get(name).cloned();
        let against = stored.clone().unwrap_or_else(|| dummy_hash().to_string());
        let matched = tokio::task::spawn_blocking(move || password_matches(&password, &against))
            .await
            .unwrap_or(false);
        stored.filter(|_| matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(password_matches("correct horse battery", &phc));
        assert!(!password_matches("correct horse batterY", &phc));
        assert!(!password_matches("anything", "not a phc string"));
    }

    #[test]
    fn password_rules_name_what_is_wrong() {
        assert!(check_password_rules("short")
            .unwrap_err()
            .contains("at least 10"));
        assert!(check_password_rules(&" ".repeat(12))
            .unwrap_err()
            .contains("spaces"));
        assert!(check_password_rules(&"x".repeat(2000))
            .unwrap_err()
            .contains("at most"));
        assert!(check_password_rules("long enough pass").is_ok());
    }

    #[test]
    fn failures_lock_a_name_from_an_address_and_an_address_for_the_window() {
        let limiter = LoginLimiter::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..NAME_FAILURES {
            assert!(limiter.check(a, "root").is_ok());
            limiter.failed(a, "root");
        }
        // The name is locked from `a`, not from elsewhere: one guesser
        // cannot lock the administrator out.
        let refused = limiter.check(a, "root").unwrap_err();
        assert!(refused.retry_after <= FAILURE_WINDOW && !refused.retry_after.is_zero());
        assert!(limiter.check(b, "root").is_ok());
        // Other names from `a`, up to the address's limit.
        assert!(limiter.check(a, "anna").is_ok());
        for _ in NAME_FAILURES..SOURCE_FAILURES {
            limiter.failed(a, "anna");
        }
        assert!(limiter.check(a, "bert").is_err());
        assert!(limiter.check(b, "bert").is_ok());
        // A guess spread over many addresses is stopped by the name's
        // count from anywhere.
        for index in 0..NAME_FAILURES_ANYWHERE {
            let source = IpAddr::from([10, 1, (index / 250) as u8, (index % 250) as u8]);
            limiter.failed(source, "carl");
        }
        assert!(limiter.check("10.9.9.9".parse().unwrap(), "carl").is_err());
    }

    #[test]
    fn sessions_end_when_idle_or_when_the_password_changes() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let mut known = Known::default();
        known.admins.insert("anna".into(), "phc-1".into());
        let (id, csrf) = sessions.create("anna", "phc-1");
        let found = sessions.find(&id, &known).unwrap();
        assert_eq!(
            (found.admin.as_str(), found.csrf.as_str()),
            ("anna", csrf.as_str())
        );
        assert!(sessions.find("another id", &known).is_none());
        known.admins.insert("anna".into(), "phc-2".into());
        assert!(
            sessions.find(&id, &known).is_none(),
            "a new password ends it"
        );
        let (id, _) = sessions.create("anna", "phc-2");
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.find(&id, &known).is_none(), "idle too long");
    }
}
