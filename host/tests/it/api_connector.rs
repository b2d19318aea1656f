//! The api-connector module end to end: the shipped package in a real
//! `callhost serve`, real WebSocket clients (tungstenite) signing in with
//! the installation key and directory passwords, SIPp phones that ring and
//! answer, and the instance's actions through the CLI.

use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::common::Harness;
use crate::sip::{answering_phone, register, trunk_call, DIRECTORY};
use crate::sip_harness::{free_port, Serve, Sipp, LOCALHOST};

pub(crate) const PACKAGE: &str = "api-connector-0.1.0.cmod";

/// The SIP tests' directory, a group, and a user without a password.
fn directory() -> String {
    format!(
        "{DIRECTORY}\n\
         [[users]]\nid = \"fritz\"\nname = \"Fritz Nopass\"\nnumbers = [\"206\"]\n\n\
         [[groups]]\nid = \"sales\"\nname = \"Sales\"\nnumbers = [\"300\"]\nmembers = [\"anna\", \"bert\"]\n"
    )
}

/// A data directory with the module installed and an instance `api` on a
/// free loopback port with `extra` configuration; returns it and its URL.
pub(crate) fn connector(extra: &str) -> (Harness, String) {
    let h = Harness::new();
    h.install(PACKAGE);
    let port = free_port();
    h.create(
        "api-connector",
        "api",
        &format!("listen = \"{LOCALHOST}:{port}\"\n{extra}"),
    );
    (h, format!("ws://{LOCALHOST}:{port}/"))
}

/// `callhost serve` on the harness's data directory, with the test
/// directory; back once the connector accepts connections.
fn serve(h: &Harness) -> Serve {
    let serve = Serve::start_in(h.data(), &directory(), "");
    let config = h.ok(&["instance", "show", "api"]);
    let listen = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("listen = "))
        .map(|value| value.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no listen in {config}"));
    wait_until("the connector listening", Duration::from_secs(10), || {
        TcpStream::connect(&listen).is_ok()
    });
    serve
}

/// The installation key, as the `key` action shows it.
pub(crate) fn key(h: &Harness) -> String {
    let shown: Value = serde_json::from_str(&h.ok(&["instance", "action", "api", "key"])).unwrap();
    shown["key"].as_str().expect("a key").to_string()
}

/// One WebSocket client of the connector.
pub(crate) struct Client {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Messages read while waiting for something else.
    pending: Vec<Value>,
    next_id: u64,
    /// The close frame, once the server closed.
    pub closed: Option<(u16, String)>,
}

impl Client {
    pub(crate) fn connect(url: &str) -> Client {
        let address = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_string();
        let stream = TcpStream::connect(&address).expect("connect to the connector");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (socket, _) = tungstenite::client(url, MaybeTlsStream::Plain(stream))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        Client {
            socket,
            pending: Vec::new(),
            next_id: 1,
            closed: None,
        }
    }

    /// Connects and says hello; the server's first answer.
    pub(crate) fn sign_in(url: &str, key: &str, user: &str, password: &str) -> (Client, Value) {
        let mut client = Client::connect(url);
        client.send(json!({
            "type": "hello", "version": 1, "key": key, "user": user, "password": password,
            "client": {"name": "it-tests", "version": "1.0"}
        }));
        let first = client
            .next(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no answer to hello (closed: {:?})", client.closed));
        (client, first)
    }

    /// Signs in and asserts it worked; the user's own presence, which
    /// follows the welcome, is read too.
    pub(crate) fn signed_in(url: &str, key: &str, user: &str, password: &str) -> Client {
        let (mut client, welcome) = Client::sign_in(url, key, user, password);
        assert_eq!(welcome["type"], "welcome", "{user}: {welcome}");
        let own = client.event(|m| m["type"] == "presence", Duration::from_secs(5));
        assert_eq!(own["user"]["user"], user, "{own}");
        client
    }

    pub(crate) fn send(&mut self, message: Value) {
        self.send_text(message.to_string());
    }

    pub(crate) fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::text(text))
            .expect("send to the connector");
    }

    /// The next JSON message within `timeout` (pending ones first); `None`
    /// on timeout or close (then `closed` says how).
    pub(crate) fn next(&mut self, timeout: Duration) -> Option<Value> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        self.read(timeout)
    }

    fn read(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("the connector sends JSON"))
                }
                Ok(Message::Close(frame)) => {
                    self.closed = Some(
                        frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    self.closed.get_or_insert((1006, String::new()));
                }
                Err(e) => {
                    self.closed.get_or_insert((1006, e.to_string()));
                }
            }
        }
        None
    }

    /// Sends a command and returns its answer (`result` or `error`);
    /// events read meanwhile are kept for [`Client::event`].
    pub(crate) fn command(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send(command.clone());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = self.read(left) else {
                panic!("no answer to {command} (closed: {:?})", self.closed);
            };
            if message["id"] == json!(id) {
                return message;
            }
            self.pending.push(message);
        }
    }

    /// A command that must succeed.
    pub(crate) fn ok(&mut self, command: Value) -> Value {
        let answer = self.command(command.clone());
        assert_eq!(answer["type"], "result", "{command} → {answer}");
        assert_eq!(answer["ok"], true, "{command} → {answer}");
        answer
    }

    /// The first message (pending or new) that `wanted` accepts, within
    /// `timeout`; the others stay pending.
    pub(crate) fn event(&mut self, wanted: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(index) = self.pending.iter().position(&wanted) {
            return self.pending.remove(index);
        }
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Some(message) if wanted(&message) => {
                    self.pending.extend(seen);
                    return message;
                }
                Some(message) => seen.push(message),
                None => panic!(
                    "no such message within {timeout:?}; got: {seen:#?} (closed: {:?})",
                    self.closed
                ),
            }
        }
    }

    /// Waits for the server to close; its close code and reason.
    pub(crate) fn wait_closed(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() && Instant::now() < deadline {
            if let Some(message) = self.read(Duration::from_millis(200)) {
                self.pending.push(message);
            }
        }
        self.closed
            .clone()
            .unwrap_or_else(|| panic!("not closed within {timeout:?}"))
    }

    /// Drops the TCP connection without a close handshake (a client that
    /// crashed or lost its network).
    pub(crate) fn vanish(self) {
        if let MaybeTlsStream::Plain(stream) = self.socket.get_ref() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn is_call(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |m: &Value| m["type"] == "call" && m["event"] == event
}

fn seats(h: &Harness) -> Value {
    serde_json::from_str(&h.ok(&["instance", "action", "api", "seats", "--json"])).unwrap()
}

fn holders(h: &Harness) -> Vec<String> {
    let mut users: Vec<String> = seats(h)["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|holder| holder["user"].as_str().unwrap().to_string())
        .collect();
    users.sort();
    users
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sign_in_refusals_say_exactly_what_is_wrong() {
    let (h, url) = connector("");
    let _serve = serve(&h);
    let key = key(&h);

    let refusal = |key: &str, user: &str, password: &str| {
        let (mut client, answer) = Client::sign_in(&url, key, user, password);
        assert_eq!(answer["type"], "error", "{answer}");
        let closed = client.wait_closed(Duration::from_secs(5));
        (
            answer["code"].as_str().unwrap().to_string(),
            answer["message"].as_str().unwrap().to_string(),
            closed,
        )
    };
    let (code, message, closed) = refusal("wrong-key-123", "anna", "anna-pw");
    assert_eq!(code, "bad_key");
    assert!(
        message.contains("wron") && !message.contains("wrong-key-123"),
        "{message}"
    );
    assert_eq!(closed.0, 4002);
    assert_eq!(
        refusal(&key, "anna", "not-her-password").0,
        "wrong_password"
    );
    assert_eq!(refusal(&key, "nobody", "x").0, "unknown_user");
    assert_eq!(refusal(&key, "fritz", "").0, "no_password");

    // Not a hello, not JSON, a future version.
    let mut client = Client::connect(&url);
    client.send_text("{not json".into());
    let answer = client.next(Duration::from_secs(5)).unwrap();
    assert_eq!(answer["code"], "bad_message", "{answer}");
    let mut client = Client::connect(&url);
    client.send(
        json!({"type": "hello", "version": 99, "key": key, "user": "anna", "password": "anna-pw"}),
    );
    assert_eq!(
        client.next(Duration::from_secs(5)).unwrap()["code"],
        "unsupported_version"
    );

    // The right key and password: welcome, with the user's own presence.
    let (_anna, welcome) = Client::sign_in(&url, &key, "anna", "anna-pw");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["user"]["user"], "anna", "{welcome}");
    assert_eq!(welcome["user"]["number"], "201", "{welcome}");

    let log = std::fs::read_to_string(h.data().join("instances/api/instance.log")).unwrap();
    for secret in ["anna-pw", "not-her-password", &key] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }

    // More than five failures from one address: refused without a check.
    for _ in 0..5 {
        refusal(&key, "bert", "guess");
    }
    assert_eq!(refusal(&key, "bert", "bert-pw").0, "too_many_failures");
}

#[test]
fn floating_seats_run_full_and_are_freed_by_sign_out_drop_and_revoke() {
    let (h, url) = connector("seats = 2\nfixed_users = [\"dora\"]\ngrace_seconds = 2\n");
    let _serve = serve(&h);
    let key = key(&h);

    let mut anna = Client::signed_in(&url, &key, "anna", "anna-pw");
    // A second client of the same user shares her seat.
    let _anna_desk = Client::signed_in(&url, &key, "anna", "anna-pw");
    let mut bert = Client::signed_in(&url, &key, "bert", "bert-pw");
    // A fixed user never takes from the pool.
    let (_dora, welcome) = Client::sign_in(&url, &key, "dora", "dora-pw");
    assert_eq!(welcome["seat"]["kind"], "fixed", "{welcome}");

    let (_, refused) = Client::sign_in(&url, &key, "carl", "carl-pw");
    assert_eq!(refused["code"], "no_seat", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains('2'),
        "{refused}"
    );
    assert_eq!(holders(&h), ["anna", "bert", "dora"]);
    let listed = seats(&h);
    let anna_seat = listed["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|holder| holder["user"] == "anna")
        .unwrap();
    assert_eq!(
        anna_seat["clients"].as_array().unwrap().len(),
        2,
        "{listed:#}"
    );
    assert_eq!(anna_seat["clients"][0]["name"], "it-tests", "{listed:#}");

    // Sign-out frees the seat at once.
    bert.ok(json!({"type": "sign_out"}));
    assert_eq!(bert.wait_closed(Duration::from_secs(5)).0, 1000);
    let carl = Client::signed_in(&url, &key, "carl", "carl-pw");

    // A dropped connection keeps its seat for the grace period, then not.
    carl.vanish();
    let (_, refused) = Client::sign_in(&url, &key, "bert", "bert-pw");
    assert_eq!(refused["code"], "no_seat", "held during grace: {refused}");
    wait_until(
        "carl's seat freed after grace",
        Duration::from_secs(10),
        || !holders(&h).contains(&"carl".to_string()),
    );
    let _bert = Client::signed_in(&url, &key, "bert", "bert-pw");

    // The administrator revokes a seat: the client is told why.
    h.ok(&[
        "instance", "action", "api", "revoke", "anna", "shift", "over",
    ]);
    let revoked = anna.event(|m| m["type"] == "revoked", Duration::from_secs(5));
    assert_eq!(revoked["reason"], "shift over", "{revoked}");
    assert_eq!(anna.wait_closed(Duration::from_secs(5)).0, 4008);
    wait_until("anna's seat freed", Duration::from_secs(5), || {
        !holders(&h).contains(&"anna".to_string())
    });
    let _carl = Client::signed_in(&url, &key, "carl", "carl-pw");

    let log = std::fs::read_to_string(h.data().join("instances/api/instance.log")).unwrap();
    for line in ["anna", "revoked", "bert", "signed out", "carl"] {
        assert!(
            log.contains(line),
            "no {line:?} in the instance log:\n{log}"
        );
    }
}

#[test]
fn click_to_dial_rings_the_users_phone_first_then_the_number() {
    let (h, url) = connector("");
    let serve = serve(&h);
    let key = key(&h);
    let anna_port = free_port();
    let bert_port = free_port();
    register(&serve, "anna", anna_port);
    register(&serve, "bert", bert_port);
    let mut client = Client::signed_in(&url, &key, "anna", "anna-pw");

    // Anna's phone rings and she does not answer: nobody else rings, and
    // hanging up from the client stops her phone.
    let ringing = Sipp::start("anna rings", "uas_ring.xml", None, anna_port, &[]);
    let bert_idle = Sipp::start("bert idle", "uas.xml", None, bert_port, &["-timeout", "4s"]);
    let dialled = client.ok(json!({"type": "dial", "number": "202"}));
    let call_id = dialled["call_id"].as_str().expect("a call id").to_string();
    assert!(
        ringing.wait_trace("INVITE sip:", Duration::from_secs(5)),
        "anna's phone never rang"
    );
    thread::sleep(Duration::from_millis(500));
    client.ok(json!({"type": "hang_up", "call_id": call_id}));
    let ringing = ringing.wait();
    ringing.assert_ok();
    let invite = ringing.received_request("INVITE").unwrap();
    assert!(
        invite.header("From").unwrap().contains("sip:202@"),
        "{}",
        invite.text
    );
    assert!(
        bert_idle.wait().received_request("INVITE").is_none(),
        "bert rang before anna answered"
    );

    // She answers: then Bert's phone rings, as if she had dialled him.
    let anna_phone = answering_phone("anna answers", anna_port);
    let bert_phone = Sipp::start(
        "bert answers and hangs up",
        "t_uas_hangup.xml",
        None,
        bert_port,
        &[
            "-mi",
            LOCALHOST,
            "-mp",
            &crate::sip::media_port(),
            "-d",
            "1000",
        ],
    );
    let dialled = client.ok(json!({"type": "dial", "number": "202"}));
    let call_id = dialled["call_id"].as_str().unwrap().to_string();
    let bert_run = bert_phone.wait();
    bert_run.assert_ok();
    anna_phone.wait().assert_ok();
    let invite = bert_run.received_request("INVITE").unwrap();
    assert!(
        invite.header("From").unwrap().contains("sip:201@"),
        "Bert sees Anna calling: {}",
        invite.text
    );
    // Anna's client saw her call: it rang Bert, was answered, ended, with
    // her call-list entry.
    let rang = client.event(
        |m| is_call("ringing")(m) && m["call_id"] == json!(call_id),
        Duration::from_secs(5),
    );
    assert_eq!(rang["callee"]["number"], "202", "{rang}");
    client.event(
        |m| is_call("answered")(m) && m["call_id"] == json!(call_id),
        Duration::from_secs(5),
    );
    let ended = client.event(
        |m| is_call("ended")(m) && m["call_id"] == json!(call_id),
        Duration::from_secs(5),
    );
    assert_eq!(ended["entry"]["direction"], "out", "{ended}");
    assert_eq!(ended["entry"]["number"], "202", "{ended}");
    serve.wait_log(&["call ended", &call_id]);

    // Refusals are precise: no phone registered, unknown number.
    let mut carl = Client::signed_in(&url, &key, "carl", "carl-pw");
    let refused = carl.command(json!({"type": "dial", "number": "202"}));
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no phone registered"),
        "{refused}"
    );
    let refused = client.command(json!({"type": "dial", "number": "999"}));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("unknown number"),
        "{refused}"
    );
}

#[test]
fn a_ringing_event_carries_the_reverse_lookup_name_and_lookup_answers() {
    let (h, url) = connector("");
    h.install(crate::reverse_lookup::RL);
    crate::reverse_lookup::crm_instance(&h, "");
    let serve = serve(&h);
    let key = key(&h);
    let bert_port = free_port();
    register(&serve, "bert", bert_port);
    let mut bert = Client::signed_in(&url, &key, "bert", "bert-pw");

    let looked_up = bert.ok(json!({"type": "lookup", "number": crate::reverse_lookup::HARBOUR}));
    assert_eq!(looked_up["last_name"], "Hafen", "{looked_up}");

    let phone = answering_phone("bert answers", bert_port);
    let file = crate::sip::trunk_caller(&serve, crate::reverse_lookup::HARBOUR);
    let caller = trunk_call(
        &serve,
        "t_uac_any.xml",
        crate::sip::BERT,
        &["-inf", &file, "-d", "500"],
    );
    let ringing = bert.event(is_call("ringing"), Duration::from_secs(10));
    assert_eq!(ringing["first_name"], "Hanna", "{ringing}");
    assert_eq!(ringing["company"], "Hafen KG", "{ringing}");
    assert!(
        ringing["display"].as_str().unwrap().contains("Hafen"),
        "{ringing}"
    );
    caller.wait().assert_ok();
    phone.wait().assert_ok();
    let ended = bert.event(is_call("ended"), Duration::from_secs(10));
    assert_eq!(ended["entry"]["direction"], "in", "{ended}");
    assert_eq!(ended["entry"]["name"], "Hanna Hafen", "{ended}");
}

#[test]
fn commands_change_the_users_state_and_colleagues_see_it() {
    let (h, url) = connector("");
    let serve = serve(&h);
    let key = key(&h);
    let mut anna = Client::signed_in(&url, &key, "anna", "anna-pw");
    let mut bert = Client::signed_in(&url, &key, "bert", "bert-pw");
    let watched = bert.ok(json!({"type": "subscribe", "users": ["anna"]}));
    assert_eq!(watched["users"][0]["user"], "anna", "{watched}");
    assert_eq!(watched["users"][0]["registered"], false, "{watched}");

    // Her phone registers: Bert sees it.
    let anna_port = free_port();
    register(&serve, "anna", anna_port);
    bert.event(
        |m| {
            m["type"] == "presence"
                && m["user"]["user"] == "anna"
                && m["user"]["registered"] == true
        },
        Duration::from_secs(5),
    );

    // DND: Bert sees it, and a call to her is refused at once.
    anna.ok(json!({"type": "set_dnd", "on": true}));
    bert.event(
        |m| m["type"] == "presence" && m["user"]["dnd"] == true,
        Duration::from_secs(5),
    );
    let outside = crate::sip::trunk_caller(&serve, crate::sip::OUTSIDE);
    let busy = trunk_call(
        &serve,
        "t_uac_any.xml",
        "+4930123456201",
        &["-inf", &outside],
    )
    .wait();
    busy.assert_ok();
    assert_eq!(busy.final_invite_status(), Some(486), "DND at once");
    anna.ok(json!({"type": "set_dnd", "on": false}));

    // A forward is followed, and a bad target named.
    anna.ok(json!({"type": "set_forward", "kind": "always", "target": "202"}));
    let bert_port = free_port();
    register(&serve, "bert", bert_port);
    let phone = answering_phone("bert takes anna's call", bert_port);
    let forwarded = trunk_call(
        &serve,
        "t_uac_any.xml",
        "+4930123456201",
        &["-inf", &outside, "-d", "200"],
    )
    .wait();
    forwarded.assert_ok();
    phone.wait().assert_ok();
    let refused =
        anna.command(json!({"type": "set_forward", "kind": "busy", "target": "not a number"}));
    assert_eq!(refused["type"], "error", "{refused}");
    anna.ok(json!({"type": "set_forward", "kind": "always", "target": null}));

    // Group login and logout, persisted in the directory.
    anna.ok(json!({"type": "group_login", "group": "sales", "logged_in": false}));
    let stored = rusqlite::Connection::open(h.data().join("callhost.db")).unwrap();
    let active: i64 = stored
        .query_row(
            "SELECT active FROM group_members WHERE group_id = 'sales' AND user_id = 'anna'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(active, 0, "stored as logged out");
    let refused =
        anna.command(json!({"type": "group_login", "group": "nosuch", "logged_in": true}));
    assert_eq!(refused["type"], "error", "{refused}");
    anna.ok(json!({"type": "group_login", "group": "sales", "logged_in": true}));

    // Bert's call list (he took her forwarded call; she never rang):
    // written in the background, newest first.
    let mut list = Value::Null;
    wait_until("bert's call-list entry", Duration::from_secs(5), || {
        list = bert.ok(json!({"type": "call_list", "limit": 1}));
        !list["entries"].as_array().unwrap().is_empty()
    });
    assert_eq!(list["entries"][0]["direction"], "in", "{list}");
    // The number as Bert dials it back.
    assert_eq!(list["entries"][0]["number"], "0891234567", "{list}");
    drop(serve);
}

#[test]
fn hostile_clients_are_answered_limited_and_cut_off() {
    let (h, url) = connector("commands_per_second = 5\nmax_message_bytes = 4096\n");
    let _serve = serve(&h);
    let key = key(&h);

    // Malformed and unknown commands after sign-in.
    let mut anna = Client::signed_in(&url, &key, "anna", "anna-pw");
    anna.send_text("[1,2,3]".into());
    assert_eq!(
        anna.next(Duration::from_secs(5)).unwrap()["code"],
        "bad_message"
    );
    let answer = anna.command(json!({"type": "format_disk"}));
    assert_eq!(answer["code"], "unknown_command", "{answer}");
    let answer = anna.command(json!({"type": "dial"}));
    assert_eq!(answer["code"], "bad_message", "{answer}");

    // A flood is rate-limited, and the connection survives it.
    thread::sleep(Duration::from_secs(2));
    for id in 0..40 {
        anna.send(json!({"type": "call_list", "id": format!("flood-{id}"), "limit": 1}));
    }
    let limited = anna.event(|m| m["code"] == "rate_limited", Duration::from_secs(5));
    assert!(
        limited["id"].as_str().unwrap().starts_with("flood-"),
        "{limited}"
    );
    thread::sleep(Duration::from_secs(2));
    anna.ok(json!({"type": "call_list", "limit": 1}));

    // An oversized message closes the connection (1009).
    anna.send_text(format!(
        "{{\"type\":\"lookup\",\"number\":\"{}\"}}",
        "1".repeat(8000)
    ));
    assert_eq!(anna.wait_closed(Duration::from_secs(5)).0, 1009);

    // A connection that never says hello is closed after 10 s.
    let mut silent = Client::connect(&url);
    let closed = silent.wait_closed(Duration::from_secs(15));
    assert_eq!(closed.0, 4009, "{closed:?}");
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_host_stays_bounded() {
    let (h, url) = connector("grace_seconds = 1\ncommands_per_second = 10000\n");
    let serve = serve(&h);
    let key = key(&h);
    let mut reader = Client::signed_in(&url, &key, "anna", "anna-pw");
    reader.ok(json!({"type": "subscribe", "users": ["bert"]}));
    // The stuck client: subscribes, then never reads again; a tiny
    // receive buffer makes its TCP window close quickly.
    let stuck_stream = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let address: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        socket.connect(&address.into()).unwrap();
        TcpStream::from(socket)
    };
    let (mut stuck, _) =
        tungstenite::client(url.as_str(), MaybeTlsStream::Plain(stuck_stream)).unwrap();
    stuck
        .send(Message::text(
            json!({"type": "hello", "version": 1, "key": key, "user": "carl", "password": "carl-pw"}).to_string(),
        ))
        .unwrap();
    stuck
        .send(Message::text(
            json!({"type": "subscribe", "id": 1, "users": ["bert"]}).to_string(),
        ))
        .unwrap();
    let rss_before = rss_kib(serve.pid().unwrap());

    // Bert's presence changes thousands of times (DND on and off).
    let mut bert = Client::signed_in(&url, &key, "bert", "bert-pw");
    let mut toggles = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) && holders(&h).contains(&"carl".to_string()) {
        for _ in 0..100 {
            for on in [true, false] {
                bert.ok(json!({"type": "set_dnd", "on": on}));
                toggles += 1;
            }
        }
        bert.pending.clear();
        // Who reads keeps getting everything.
        reader.event(
            |m| m["type"] == "presence" && m["user"]["dnd"] == false,
            Duration::from_secs(5),
        );
        reader.pending.clear();
    }
    assert!(
        !holders(&h).contains(&"carl".to_string()),
        "the stuck client still holds a seat after {toggles} changes"
    );
    let rss_after = rss_kib(serve.pid().unwrap());
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Dropped because its queue filled ("too slow") or because it read
    // no ping ("no pong"), whichever comes first.
    let log = std::fs::read_to_string(h.data().join("instances/api/instance.log")).unwrap();
    assert!(
        log.lines().any(|line| line.contains("user=carl")
            && (line.contains("too slow") || line.contains("no pong"))),
        "{log}"
    );
}

#[test]
fn tls_is_required_off_loopback_and_served_with_the_configured_certificate() {
    let h = Harness::new();
    h.install(PACKAGE);
    // Plain WebSocket on an address other than loopback: refused, named.
    let refused = h.fails(&[
        "instance",
        "create",
        "api-connector",
        "api",
        "--config",
        h.file("plain.toml", "listen = \"0.0.0.0:9\"\n")
            .to_str()
            .unwrap(),
    ]);
    assert!(refused.contains("certificate"), "{refused}");

    // With a certificate: wss, and the certificate is the configured one.
    let dir = h.data().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .status()
        .unwrap();
    assert!(status.success());
    let port = free_port();
    h.create(
        "api-connector",
        "api",
        &format!(
            "listen = \"{LOCALHOST}:{port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    );
    let _serve = serve(&h);
    let key = key(&h);
    let hello =
        json!({"type": "hello", "version": 1, "key": key, "user": "anna", "password": "anna-pw"});
    let welcome = wss_first_answer(port, &dir.join("cert.pem"), &hello.to_string());
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let shown: Value = serde_json::from_str(&h.ok(&["instance", "action", "api", "key"])).unwrap();
    assert!(
        shown["url"].as_str().unwrap().starts_with("wss://"),
        "{shown}"
    );
}

/// Connects with TLS trusting only `ca`, says `hello`, returns the answer.
fn wss_first_answer(port: u16, ca: &Path, hello: &str) -> Value {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect((LOCALHOST, port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let tls = rustls::StreamOwned::new(connection, tcp);
    let (mut socket, _) = tungstenite::client(format!("wss://127.0.0.1:{port}/"), tls).unwrap();
    socket.send(Message::text(hello.to_string())).unwrap();
    loop {
        match socket.read().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.unwrap())
        .collect()
}

/// The resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[test]
fn seats_survive_a_module_upgrade() {
    let (h, url) = connector("seats = 1\ngrace_seconds = 30\n");
    let _serve = serve(&h);
    let key = key(&h);
    let mut anna = Client::signed_in(&url, &key, "anna", "anna-pw");

    let out = h.install("api-connector-0.2.0.cmod");
    assert!(out.contains("with 0.2.0"), "{out}");
    // The old version stops: its clients are told so.
    let (code, _) = anna.wait_closed(Duration::from_secs(20));
    assert_eq!(code, 1001, "closed for the upgrade");
    // The new version serves the same key, and Anna's seat is hers again
    // before anyone else's.
    wait_until(
        "the upgraded connector listening",
        Duration::from_secs(20),
        || TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/')).is_ok(),
    );
    let (_, refused) = Client::sign_in(&url, &key, "bert", "bert-pw");
    assert_eq!(
        refused["code"], "no_seat",
        "anna's seat was kept: {refused}"
    );
    let _anna = Client::signed_in(&url, &key, "anna", "anna-pw");
    assert_eq!(holders(&h), ["anna"]);
    let log = std::fs::read_to_string(h.data().join("instances/api/instance.log")).unwrap();
    assert!(log.contains("0.2.0") || log.contains("restored"), "{log}");
}

#[test]
fn what_strangers_send_cannot_flood_or_forge_the_instance_log() {
    let (h, url) = connector("");
    let _serve = serve(&h);
    let key = key(&h);
    let log = || std::fs::read_to_string(h.data().join("instances/api/instance.log")).unwrap();

    // A name that turns the rest of its log line around, one that breaks
    // it: refused before anything is checked, never written.
    for user in ["anna\u{202E}nimda", "anna\u{2028}seat taken: boss"] {
        let (_client, answer) = Client::sign_in(&url, &key, user, "x");
        assert_eq!(answer["code"], "bad_message", "{user:?}: {answer}");
    }
    // A client name with them is shown tidied.
    let mut anna = Client::connect(&url);
    anna.send(json!({
        "type": "hello", "version": 1, "key": key, "user": "anna", "password": "anna-pw",
        "client": {"name": "CRM\u{202E}exe.txt", "version": "1"}
    }));
    let welcome = anna.next(Duration::from_secs(10)).unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let listed = seats(&h);
    assert_eq!(
        listed["holders"][0]["clients"][0]["name"], "CRM?exe.txt",
        "{listed}"
    );

    // An address locked out for its failures gets its refusal at any
    // rate; the log says so once per 10 s, with a count.
    for _ in 0..5 {
        let (_client, answer) = Client::sign_in(&url, &key, "bert", "guess");
        assert_eq!(answer["code"], "wrong_password", "{answer}");
    }
    for _ in 0..60 {
        let (_client, answer) = Client::sign_in(&url, &key, "bert", "guess");
        assert_eq!(answer["code"], "too_many_failures", "{answer}");
    }
    thread::sleep(Duration::from_millis(500));
    let log = log();
    let refusals = log
        .lines()
        .filter(|line| line.contains("too many failed sign-ins"))
        .count();
    assert!(
        (1..=2).contains(&refusals),
        "{refusals} lines for 60 refusals:\n{log}"
    );
    for forged in ['\u{202E}', '\u{2028}'] {
        assert!(!log.contains(forged), "{forged:?} in the log:\n{log}");
    }
}

#[test]
fn a_blind_transfer_is_an_event_for_both_users() {
    let (h, url) = connector("");
    let serve = serve(&h);
    let key = key(&h);
    let (bert_port, anna_port) = (free_port(), free_port());
    register(&serve, "bert", bert_port);
    register(&serve, "anna", anna_port);
    let mut bert = Client::signed_in(&url, &key, "bert", "bert-pw");
    let mut anna = Client::signed_in(&url, &key, "anna", "anna-pw");

    // Bert answers an outside call and sends it on to Anna (201).
    let target = crate::sip::csv(&serve, "target201.csv", "201");
    let transferor = Sipp::start(
        "bert transfers to 201",
        "uas_transfer.xml",
        None,
        bert_port,
        &[
            "-inf",
            &target,
            "-mi",
            LOCALHOST,
            "-mp",
            &crate::sip::media_port(),
        ],
    );
    let anna_phone = Sipp::start(
        "anna takes the transfer",
        "t_uas_hangup.xml",
        None,
        anna_port,
        &[
            "-mi",
            LOCALHOST,
            "-mp",
            &crate::sip::media_port(),
            "-d",
            "500",
        ],
    );
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", crate::sip::BERT, &[]).wait();
    caller.assert_ok();
    transferor.wait().assert_ok();
    anna_phone.wait().assert_ok();

    let answered = bert.event(is_call("answered"), Duration::from_secs(10));
    let call_id = answered["call_id"].clone();
    let transferred = bert.event(
        |m| is_call("transferred")(m) && m["call_id"] == call_id,
        Duration::from_secs(10),
    );
    assert_eq!(transferred["party"]["number"], "201", "{transferred}");
    assert_eq!(transferred["transfer"], "blind", "{transferred}");
    // Anna's phone rang with the same call, showing the outside caller.
    let rang = anna.event(
        |m| is_call("ringing")(m) && m["call_id"] == call_id,
        Duration::from_secs(10),
    );
    assert_eq!(rang["callee"]["user"], "anna", "{rang}");
    anna.event(
        |m| is_call("ended")(m) && m["call_id"] == call_id,
        Duration::from_secs(10),
    );
}
