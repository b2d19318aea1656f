//! The HTTP admin API end to end: the real `callhost api serve` on a free
//! port, tokens made with the CLI, requests with a plain HTTP client.

use crate::common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::Harness;
use serde_json::{json, Value};
use sha2::Digest as _;

const HELLO: &str = "hello-0.1.0.cmod";
const BT: &str = "breakthrough-0.1.0.cmod";
const RL: &str = "reverse-lookup-0.1.0.cmod";

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A running `callhost api serve`; stopped with SIGTERM when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    /// Everything it wrote to stderr (its log).
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Server {
    pub(crate) fn start(h: &Harness) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
            .arg("--data")
            .arg(h.data())
            .args(["api", "serve", "--listen", "127.0.0.1:0"])
            .env_remove("CALLHOST_DATA")
            .env_remove("CALLHOST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start callhost api serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let base = loop {
            let line = lines
                .next()
                .expect("the server ended before listening")
                .unwrap();
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.trim().to_string();
            }
        };
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                collected.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Server {
            child,
            base,
            log,
            agent,
        }
    }

    /// GET `path` with `token` (if any): status and JSON body.
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        answer(request.call().expect("GET"))
    }

    /// POST `body` (or nothing) to `path` with `token`.
    fn post(&self, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"));
        let response = match body {
            Some(body) => request
                .header("Content-Type", "application/json")
                .send(body),
            None => request.send_empty(),
        };
        answer(response.expect("POST"))
    }

    /// Opens an SSE stream; its events arrive on the receiver, which
    /// disconnects when the stream ends. Returns once the headers are in.
    fn events(
        &self,
        path: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> std::sync::mpsc::Receiver<SseEvent> {
        // No overall timeout: the stream is open-ended.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.call().expect("GET the stream");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let (send, receive) = std::sync::mpsc::channel();
        let reader = BufReader::new(response.into_body().into_reader());
        std::thread::spawn(move || {
            let mut event = SseEvent::default();
            for line in reader.lines().map_while(Result::ok) {
                if line.is_empty() {
                    if !event.data.is_empty() && send.send(std::mem::take(&mut event)).is_err() {
                        return;
                    }
                    event = SseEvent::default();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    event.event = value.to_string();
                } else if let Some(value) = line.strip_prefix("id: ") {
                    event.id = Some(value.to_string());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    event.data.push_str(value);
                }
                // `:` lines are keep-alive comments.
            }
        });
        receive
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it contains `part` (at most 10 s): the host's log is
    /// written by a thread of its own and arrives on a pipe, a moment
    /// after the answer.
    pub(crate) fn log_with(&self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(part) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn answer(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, value)
}

pub(crate) fn token(h: &Harness, name: &str) -> String {
    let token = h.ok(&["api", "token", "create", name]).trim().to_string();
    assert_eq!(token.len(), 64, "32 bytes in hex: {token}");
    token
}

/// A data directory with a hello instance `hi` and a token.
fn with_hello() -> (Harness, String) {
    let h = Harness::new();
    h.install(HELLO);
    h.create("hello", "hi", "greeting = \"Ahoi\"\n");
    let token = token(&h, "ci");
    (h, token)
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let (h, token) = with_hello();
    let server = Server::start(&h);
    let (status, body) = server.get("/api/v1/instances", None);
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for bad in [wrong.as_str(), "", "not-a-token"] {
        let (status, body) = server.get("/api/v1/instances", Some(bad));
        assert_eq!(status, 401, "token {bad:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Also for actions and routes that do not exist: nothing without a token.
    let (status, _) = server.post("/api/v1/instances/hi/actions/greet", &wrong, None);
    assert_eq!(status, 401);
    let (status, _) = server.get("/api/v1/nothing-here", Some(&wrong));
    assert_eq!(status, 401);
    let (status, body) = server.get("/api/v1/nothing-here", Some(&token));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn instances_and_actions_answer_like_the_cli() {
    let (h, token) = with_hello();
    let server = Server::start(&h);

    let (status, listing) = server.get("/api/v1/instances", Some(&token));
    assert_eq!(status, 200);
    let cli: Value = serde_json::from_str(&h.ok(&["instance", "list", "--json"])).unwrap();
    assert_eq!(listing, cli);
    assert_eq!(listing[0]["name"], "hi");
    assert_eq!(listing[0]["module"], "hello");

    let greet = "/api/v1/instances/hi/actions/greet";
    let (status, body) = server.post(greet, &token, Some(r#"{"args": ["Bob"]}"#));
    assert_eq!((status, body), (200, json!({ "text": "Ahoi, Bob!" })));
    // The body is optional.
    let (status, body) = server.post(greet, &token, None);
    assert_eq!((status, body), (200, json!({ "text": "Ahoi, world!" })));
    let (status, body) = server.post(greet, &token, Some("{}"));
    assert_eq!((status, body), (200, json!({ "text": "Ahoi, world!" })));
    // The same answer as the CLI's.
    let cli: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "hi", "greet", "Bob"])).unwrap();
    assert_eq!(cli, json!({ "text": "Ahoi, Bob!" }));

    let (status, body) = server.post("/api/v1/instances/hi/actions/dance", &token, None);
    assert_eq!(status, 404, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("no action `dance`") && error.contains("greet [NAME]"),
        "{error}"
    );
    let (status, body) = server.post("/api/v1/instances/ghost/actions/greet", &token, None);
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`ghost`"),
        "{body}"
    );

    let (status, body) = server.post(greet, &token, Some(r#"{"args": "Bob"}"#));
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post(greet, &token, Some("not json"));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_module_error_is_a_422_with_the_modules_message() {
    let h = Harness::new();
    h.install(BT);
    h.create(
        "breakthrough",
        "bt",
        "bypass_dnd = true\n[called]\nactive_for = [\"2??\"]\n[callers]\nactive_for = [\"*\"]\n",
    );
    let token = token(&h, "ci");
    let server = Server::start(&h);
    let check = "/api/v1/instances/bt/actions/check";
    let (status, body) = server.post(check, &token, Some(r#"{"args": ["301"]}"#));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "usage: check CALLER CALLED");
    let (status, body) = server.post(check, &token, Some(r#"{"args": ["301", "201"]}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["caller_matches"], true);
    assert_eq!(body["called_matches"], true);
}

#[test]
fn a_revoked_token_is_refused_and_tokens_are_stored_hashed() {
    let (h, token) = with_hello();
    let other = self::token(&h, "other");
    assert_ne!(token, other);
    // A name is used once.
    let err = h.fails(&["api", "token", "create", "ci"]);
    assert!(err.contains("exists already"), "{err}");

    let listed: Value = serde_json::from_str(&h.ok(&["api", "token", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "other"]);
    for entry in listed.as_array().unwrap() {
        let mut keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["created_at", "name"], "only names and times");
    }
    let text = h.ok(&["api", "token", "list"]);
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    assert!(text.contains("ci") && !text.contains(&digest) && !text.contains(&token));

    // The database keeps the SHA-256, never the token.
    let db = rusqlite::Connection::open(h.data().join("callhost.db")).unwrap();
    let stored: String = db
        .query_row("SELECT sha256 FROM api_tokens WHERE name = 'ci'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, digest);
    let in_clear: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM api_tokens WHERE name = ?1 OR sha256 = ?1 OR created_at = ?1",
            [&token],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_clear, 0);

    let mut server = Server::start(&h);
    assert_eq!(server.get("/api/v1/instances", Some(&token)).0, 200);
    assert!(h
        .ok(&["api", "token", "revoke", "ci"])
        .contains("revoked API token ci"));
    let (status, body) = server.get("/api/v1/instances", Some(&token));
    assert_eq!(status, 401, "{body}");
    assert_eq!(server.get("/api/v1/instances", Some(&other)).0, 200);
    let err = h.fails(&["api", "token", "revoke", "ci"]);
    assert!(err.contains("no API token named `ci`"), "{err}");

    // Each request is logged, the tokens never.
    assert!(server.stop().success(), "SIGTERM stops the server cleanly");
    let log = server.log();
    assert!(
        log.contains("path=/api/v1/instances") && log.contains("status=401"),
        "{log}"
    );
    assert!(!log.contains(&token) && !log.contains(&other), "{log}");
}

#[test]
fn the_live_feed_needs_a_module_with_a_live_action() {
    let (h, token) = with_hello();
    let server = Server::start(&h);
    let (status, body) = server.get("/api/v1/instances/hi/live", Some(&token));
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no action `live`"),
        "{body}"
    );
    let (status, _) = server.get("/api/v1/instances/ghost/live", Some(&token));
    assert_eq!(status, 404);
    let (status, _) = server.get("/api/v1/instances/hi/live", None);
    assert_eq!(status, 401);
}

#[test]
fn the_live_feed_sends_each_lookup_and_actions_see_the_stored_directory() {
    let h = Harness::new();
    h.install(RL);
    h.load_office();
    h.create("reverse-lookup", "rl", "");
    let token = token(&h, "ui");
    let mut server = Server::start(&h);
    let live = "/api/v1/instances/rl/live";
    let feed = server.events(live, &token, None);

    // The customer is in the stored directory's address book: the host
    // service answers in actions, through the API and the CLI.
    let test = "/api/v1/instances/rl/actions/test";
    let (status, body) = server.post(test, &token, Some(r#"{"args": ["+49891234567"]}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display"], "Max Kunde", "{body}");
    let cli: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "rl", "test", "+49891234567"])).unwrap();
    assert_eq!(cli["display"], "Max Kunde", "{cli}");

    let wait = Duration::from_secs(20);
    let mut ids = Vec::new();
    for origin_of in ["API", "CLI"] {
        let event = feed
            .recv_timeout(wait)
            .unwrap_or_else(|e| panic!("no event for the {origin_of} lookup: {e}"));
        assert_eq!(event.event, "lookup", "{event:?}");
        let data: Value = serde_json::from_str(&event.data).expect("JSON data");
        assert_eq!(data["name"], "Max Kunde", "{data}");
        assert_eq!(data["number"], "+49891234567", "{data}");
        assert_eq!(event.id.as_deref(), Some(data["id"].to_string().as_str()));
        ids.push(data["id"].as_i64().unwrap());
    }
    assert!(ids[0] < ids[1], "{ids:?}");

    // A reconnecting client resumes after its Last-Event-ID.
    let resumed = server.events(live, &token, Some(&ids[0].to_string()));
    let event = resumed
        .recv_timeout(wait)
        .expect("the resumed feed's event");
    assert_eq!(event.id, Some(ids[1].to_string()));

    // SIGTERM ends the open streams and the server.
    assert!(server.stop().success(), "SIGTERM stops the server cleanly");
    for stream in [feed, resumed] {
        assert!(matches!(
            stream.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}

/// The body every request without a valid token gets.
const UNAUTHORIZED: &str = "not logged in: log in, or send `Authorization: Bearer <token>`";

#[test]
fn a_bad_token_is_refused_before_the_database_and_host_failures_show_no_detail() {
    let (h, token) = with_hello();
    let server = Server::start(&h);
    assert_eq!(server.get("/api/v1/instances", Some(&token)).0, 200);
    // The database becomes unreadable: a directory where the file was.
    let database = h.data().join("callhost.db");
    std::fs::rename(&database, h.data().join("callhost.db.away")).unwrap();
    std::fs::create_dir(&database).unwrap();
    let data = h.data().to_str().unwrap().to_string();
    for bad in [None, Some("not-a-token"), Some(&"0".repeat(64)[..])] {
        for path in ["/api/v1/instances", "/api/v1/instances/hi/live", "/nothing"] {
            let (status, body) = server.get(path, bad);
            assert_eq!(status, 401, "{path} with {bad:?}: {body}");
            assert_eq!(body, json!({ "error": UNAUTHORIZED }), "{path}");
        }
    }
    let (status, body) = server.post("/api/v1/instances/hi/actions/greet", "wrong", None);
    assert_eq!((status, body), (401, json!({ "error": UNAUTHORIZED })));

    // With a valid token the host's failure is a 500 with an id, no detail.
    let (status, body) = server.get("/api/v1/instances", Some(&token));
    assert_eq!(status, 500, "{body}");
    let text = body.to_string();
    for detail in [
        data.as_str(),
        "callhost.db",
        "/",
        "SQLite",
        "sqlite",
        "database",
        "open",
    ] {
        assert!(!text.contains(detail), "{detail:?} in {text}");
    }
    let id = body["error_id"].as_str().expect("an error id");
    assert!(body["error"].as_str().unwrap().contains(id), "{body}");
    // The log has the detail under that id.
    let log = server.log_with(id);
    let line = log
        .lines()
        .find(|line| line.contains(id))
        .unwrap_or_else(|| panic!("no log line with {id}:\n{log}"));
    assert!(line.contains(&data), "{line}");
}

#[test]
fn an_internal_error_names_no_file() {
    let (h, token) = with_hello();
    let versions = h.data().join("modules/hello");
    let library = std::fs::read_dir(&versions)
        .unwrap()
        .map(|e| e.unwrap().path().join("libhello_module.so"))
        .find(|p| p.exists())
        .unwrap();
    let mut bytes = std::fs::read(&library).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"rustc version")
        .unwrap();
    bytes[at] = b'R';
    std::fs::write(&library, bytes).unwrap();
    let server = Server::start(&h);
    let (status, body) = server.post("/api/v1/instances/hi/actions/greet", &token, None);
    assert_eq!(status, 500, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(h.data().to_str().unwrap()) && !text.contains(".so") && !text.contains('/'),
        "{text}"
    );
    let id = body["error_id"].as_str().unwrap();
    let log = server.log_with(id);
    assert!(
        log.lines()
            .any(|l| l.contains(id) && l.contains(library.to_str().unwrap())),
        "{log}"
    );
    // User errors keep their message.
    let (status, body) = server.post("/api/v1/instances/ghost/actions/greet", &token, None);
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("`ghost`"),
        "{body}"
    );
}

#[test]
fn a_live_feed_ends_when_its_token_is_revoked() {
    let h = Harness::new();
    h.install(RL);
    h.load_office();
    h.create("reverse-lookup", "rl", "");
    let token = token(&h, "ui");
    let other = self::token(&h, "other");
    let server = Server::start(&h);
    let feed = server.events("/api/v1/instances/rl/live", &token, None);
    let kept = server.events("/api/v1/instances/rl/live", &other, None);
    assert!(matches!(
        feed.recv_timeout(Duration::from_millis(500)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
    ));
    h.ok(&["api", "token", "revoke", "ui"]);
    let revoked = Instant::now();
    let event = feed
        .recv_timeout(Duration::from_secs(3))
        .expect("an event saying why the feed ends");
    assert_eq!(event.event, "error", "{event:?}");
    assert!(event.data.contains("revoked"), "{event:?}");
    assert!(matches!(
        feed.recv_timeout(Duration::from_secs(3)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    ));
    assert!(
        revoked.elapsed() < Duration::from_secs(3),
        "{:?}",
        revoked.elapsed()
    );
    // The other token's feed goes on.
    assert!(matches!(
        kept.recv_timeout(Duration::from_millis(300)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
    ));
    let (status, _) = server.get("/api/v1/instances/rl/live", Some(&token));
    assert_eq!(status, 401);
}

#[test]
fn a_token_created_while_serving_is_accepted_within_a_second() {
    let (h, _) = with_hello();
    let server = Server::start(&h);
    let late = token(&h, "late");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = server.get("/api/v1/instances", Some(&late));
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(Instant::now() < deadline, "the new token is still refused");
        std::thread::sleep(Duration::from_millis(50));
    }
}
