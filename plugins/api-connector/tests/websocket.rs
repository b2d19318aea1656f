//! The connector over real WebSocket connections (tokio-tungstenite as
//! the client), in-process, against the SDK's test host: sign-in and its
//! refusals, the seats running full and freed (sign-out, a dropped
//! connection after grace, revoke), floods, oversized messages, a client
//! that never reads, TLS, reconfiguration and a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use abi_stable::std_types::{ROption, RString, RVec};
use api_connector::config::Config;
use api_connector::ApiConnector;
use callhost_plugin_sdk::testing::{self, TestHost};
use callhost_plugin_sdk::{
    Action, Actions as _, CallEvent, CallListDirection, CallListItem, Decision, EventKind, Module,
};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    host: TestHost,
    module: ApiConnector,
    address: SocketAddr,
    key: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.module.deactivate();
    }
}

fn config(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    change(&mut config);
    config
}

fn host() -> TestHost {
    let host = TestHost::new();
    for (id, name, number) in [
        ("anna", "Anna Albers", "201"),
        ("bert", "Bert Berg", "202"),
        ("carl", "Carl Clerk", "203"),
        ("dora", "Dora Dahl", "204"),
    ] {
        host.add_user(id, name, number, Some(&format!("{id}-pw")));
    }
    host.add_user("nopass", "No Password", "209", None);
    host
}

async fn start(config: Config) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, host(), config).await
}

async fn start_in(dir: tempfile::TempDir, host: TestHost, config: Config) -> Fixture {
    let path = dir.path().to_path_buf();
    let ctx = testing::context_with("crm", &path, host.clone());
    let module = ApiConnector::new(&ctx, config).expect("valid configuration");
    module.activate();
    let address = module.listening(WAIT).await.expect("listening");
    let key = module.current_key().unwrap();
    Fixture {
        _dir: dir,
        dir: path,
        host,
        module,
        address,
        key,
    }
}

type Client = WebSocketStream<TcpStream>;

async fn connect(address: SocketAddr) -> Client {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (websocket, _) = tokio_tungstenite::client_async(format!("ws://{address}/"), tcp)
        .await
        .expect("upgrade");
    websocket
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(client: &mut WebSocketStream<S>, message: Value) {
    client
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

fn hello(key: &str, user: &str, password: &str) -> Value {
    json!({
        "type": "hello", "version": 1, "key": key, "user": user, "password": password,
        "client": { "name": "CRM", "version": "2.1" },
    })
}

/// The next text message as JSON (pings skipped); panics on a close.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(client: &mut WebSocketStream<S>) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("readable");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// The next message of `type`, skipping others (presence, call events).
async fn next_of<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
    kind: &str,
) -> Value {
    loop {
        let message = next(client).await;
        if message["type"] == kind {
            return message;
        }
    }
}

/// Reads to the close frame: its code (texts before it are returned too).
async fn closed<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut WebSocketStream<S>,
) -> (Option<u16>, Vec<Value>) {
    let mut texts = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("closed in time");
        match message {
            Some(Ok(Message::Text(text))) => texts.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (frame.map(|f: CloseFrame| u16::from(f.code)), texts)
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return (None, texts),
        }
    }
}

/// Signs `user` in: the welcome.
async fn sign_in(fixture: &Fixture, user: &str) -> (Client, Value) {
    let mut client = connect(fixture.address).await;
    send(
        &mut client,
        hello(&fixture.key, user, &format!("{user}-pw")),
    )
    .await;
    let welcome = next(&mut client).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// A hello that is refused: the error and the close code.
async fn refused(fixture: &Fixture, hello: Value) -> (Value, Option<u16>) {
    let mut client = connect(fixture.address).await;
    send(&mut client, hello).await;
    let (code, texts) = closed(&mut client).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    (texts[0].clone(), code)
}

async fn action(module: &ApiConnector, name: &str, args: &[&str]) -> Result<Value, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match module.action(name, &args) {
        Action::Ready(answer) => answer,
        Action::Later(future) => future.await,
    }
}

async fn command(client: &mut Client, message: Value) -> Value {
    let id = message["id"].clone();
    send(client, message).await;
    loop {
        let answer = next(client).await;
        if (answer["type"] == "result" || answer["type"] == "error") && answer["id"] == id {
            return answer;
        }
    }
}

#[tokio::test]
async fn a_user_signs_in_and_uses_the_commands() {
    let fixture = start(config(|_| {})).await;
    fixture.host.with_state(|state| {
        state.call_list.push(CallListItem {
            user: "anna".into(),
            time: "2026-12-06T09:30:00Z".into(),
            direction: CallListDirection::In,
            number: "0301234567".into(),
            name: ROption::RSome("Max Kunde".into()),
            call_id: "old-1".into(),
        });
        state.lookups.insert(
            "0301234567".into(),
            Decision {
                first_name: ROption::RSome("Max".into()),
                last_name: ROption::RSome("Kunde".into()),
                company: ROption::RSome("Kunde GmbH".into()),
                reason: ROption::RSome("crm".into()),
                ..Decision::default()
            },
        );
    });
    let (mut anna, welcome) = sign_in(&fixture, "anna").await;
    assert_eq!(welcome["version"], 1);
    assert_eq!(welcome["user"]["user"], "anna");
    assert_eq!(welcome["user"]["number"], "201");
    assert_eq!(welcome["seat"]["kind"], "floating");
    assert!(welcome["seat"]["since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(welcome["instance"], "crm");
    let own = next(&mut anna).await;
    assert_eq!(
        (own["type"].as_str(), own["user"]["user"].as_str()),
        (Some("presence"), Some("anna"))
    );

    let dialled = command(
        &mut anna,
        json!({"type":"dial","id":1,"number":"0301234567"}),
    )
    .await;
    assert_eq!(dialled["ok"], true, "{dialled}");
    assert!(dialled["call_id"]
        .as_str()
        .unwrap()
        .starts_with("test-call-"));
    let dnd = command(&mut anna, json!({"type":"set_dnd","id":"two","on":true})).await;
    assert_eq!(dnd, json!({"type":"result","id":"two","ok":true}));
    command(
        &mut anna,
        json!({"type":"set_forward","id":3,"kind":"busy","target":"202"}),
    )
    .await;
    command(
        &mut anna,
        json!({"type":"set_forward","id":4,"kind":"always","target":null}),
    )
    .await;
    command(
        &mut anna,
        json!({"type":"group_login","id":5,"group":"sales","logged_in":true}),
    )
    .await;
    command(
        &mut anna,
        json!({"type":"hang_up","id":6,"call_id":"test-call-1"}),
    )
    .await;
    assert_eq!(
        fixture.host.requests(),
        [
            "originate anna 0301234567",
            "set_dnd anna true",
            "set_forward anna Busy 202",
            "set_forward anna Always ",
            "set_group_login anna sales true",
            "hang_up anna test-call-1",
        ]
    );
    let lookup = command(
        &mut anna,
        json!({"type":"lookup","id":7,"number":"0301234567"}),
    )
    .await;
    assert_eq!(lookup["display"], "Max Kunde");
    assert_eq!(lookup["company"], "Kunde GmbH");
    assert_eq!(lookup["reason"], "crm");
    let list = command(&mut anna, json!({"type":"call_list","id":8,"limit":10})).await;
    assert_eq!(list["entries"][0]["name"], "Max Kunde");
    assert_eq!(list["entries"][0]["direction"], "in");

    // A failing host service is the client's `failed` error, with why.
    fixture
        .host
        .with_state(|state| state.refuse_changes = Some("no such forward target".into()));
    let refused = command(
        &mut anna,
        json!({"type":"set_forward","id":9,"kind":"busy","target":"999"}),
    )
    .await;
    assert_eq!(refused["code"], "failed");
    assert_eq!(refused["message"], "no such forward target");

    // Colleagues' presence: answered at once, then as it changes.
    let subscribed = command(
        &mut anna,
        json!({"type":"subscribe","id":10,"users":["bert","ghost"]}),
    )
    .await;
    assert_eq!(subscribed["users"][0]["user"], "bert");
    assert_eq!(subscribed["unknown"], json!(["ghost"]));
    let mut bert = fixture.host.presence("bert").unwrap();
    bert.in_call = true;
    fixture.module.presence_changed(&bert);
    let event = next_of(&mut anna, "presence").await;
    assert_eq!(
        (
            event["user"]["user"].as_str(),
            event["user"]["in_call"].as_bool()
        ),
        (Some("bert"), Some(true))
    );
    let left = command(
        &mut anna,
        json!({"type":"unsubscribe","id":11,"users":["bert"]}),
    )
    .await;
    assert_eq!(left["users"], json!([]));

    // Bad commands get their own codes and the connection stays.
    let unknown = command(&mut anna, json!({"type":"fly","id":12})).await;
    assert_eq!(unknown["code"], "unknown_command");
    send(&mut anna, json!("not an object")).await;
    assert_eq!(next_of(&mut anna, "error").await["code"], "bad_message");
    anna.send(Message::text("{broken")).await.unwrap();
    assert_eq!(next_of(&mut anna, "error").await["code"], "bad_message");
    let still = command(&mut anna, json!({"type":"set_dnd","id":13,"on":false})).await;
    assert_eq!(
        still["code"], "failed",
        "host still refusing changes: {still}"
    );
}

#[tokio::test]
async fn a_ringing_call_carries_the_decided_names_and_ends_with_the_entry() {
    let fixture = start(config(|_| {})).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    next_of(&mut anna, "presence").await;
    let caller = testing::external_de("0301234567");
    let callee = testing::user("anna", "Anna Albers", "201");
    let mut setup = testing::setup(caller, callee.clone());
    setup.call_id = "call-9".into();
    let decision = Decision {
        display: ROption::RSome("Max Kunde (Kunde GmbH)".into()),
        first_name: ROption::RSome("Max".into()),
        last_name: ROption::RSome("Kunde".into()),
        company: ROption::RSome("Kunde GmbH".into()),
        ..Decision::default()
    };
    fixture.module.call_decided(&setup, &decision);
    let event = |kind, party: Option<callhost_plugin_sdk::Party>, detail: &str| CallEvent {
        call_id: "call-9".into(),
        kind,
        party: party.into(),
        detail: detail.into(),
    };
    fixture.module.call_event(&event(
        EventKind::RINGING,
        Some(callee.clone()),
        "Max Kunde",
    ));
    let ringing = next_of(&mut anna, "call").await;
    assert_eq!(ringing["event"], "ringing");
    assert_eq!(ringing["call_id"], "call-9");
    assert_eq!(ringing["direction"], "incoming");
    assert_eq!(ringing["display"], "Max Kunde (Kunde GmbH)");
    assert_eq!(ringing["last_name"], "Kunde");
    assert_eq!(ringing["caller"]["number"], "0301234567");
    fixture
        .module
        .call_event(&event(EventKind::ANSWERED, Some(callee), ""));
    assert_eq!(next_of(&mut anna, "call").await["event"], "answered");
    fixture.module.call_listed(&CallListItem {
        user: "anna".into(),
        time: "2026-12-06T09:31:00Z".into(),
        direction: CallListDirection::In,
        number: "0301234567".into(),
        name: ROption::RSome("Max Kunde".into()),
        call_id: "call-9".into(),
    });
    fixture
        .module
        .call_event(&event(EventKind::HANGUP, None, "caller"));
    let ended = next_of(&mut anna, "call").await;
    assert_eq!(ended["event"], "ended");
    assert_eq!(ended["reason"], "caller");
    assert_eq!(ended["entry"]["time"], "2026-12-06T09:31:00Z");
    assert_eq!(ended["entry"]["name"], "Max Kunde");
}

#[tokio::test]
async fn every_refused_sign_in_has_its_own_code_and_close_code() {
    let fixture = start(config(|_| {})).await;
    let wrong_key = format!("beef{}", &fixture.key[4..]);
    let (error, code) = refused(&fixture, hello(&wrong_key, "anna", "anna-pw")).await;
    assert_eq!(
        (error["code"].as_str(), code),
        (Some("bad_key"), Some(4002))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("No open connection to this PBX with key beef…"),
        "{message}"
    );
    assert!(
        !message.contains(&wrong_key[4..]),
        "only the first four characters show"
    );

    let cases = [
        (hello(&fixture.key, "anna", "nope"), "wrong_password", 4004),
        (hello(&fixture.key, "bert", "nope"), "wrong_password", 4004),
        (hello(&fixture.key, "ghost", "x"), "unknown_user", 4003),
        (hello(&fixture.key, "nopass", ""), "no_password", 4005),
        (
            json!({"type":"hello","version":2}),
            "unsupported_version",
            4001,
        ),
        (
            json!({"type":"dial","id":1,"number":"1"}),
            "bad_message",
            4000,
        ),
    ];
    for (hello, want, want_close) in cases {
        let (error, code) = refused(&fixture, hello).await;
        assert_eq!(
            (error["code"].as_str(), code),
            (Some(want), Some(want_close)),
            "{error}"
        );
        assert_eq!(error["type"], "error");
    }
    // That was five failures from this address within the minute (the
    // version and the malformed hello are no guesses): even the right
    // password is now answered without checking.
    let (error, code) = refused(&fixture, hello(&fixture.key, "anna", "anna-pw")).await;
    assert_eq!(
        (error["code"].as_str(), code),
        (Some("too_many_failures"), Some(4007))
    );
}

#[tokio::test]
async fn the_pool_runs_full_and_a_sign_out_frees_a_seat() {
    let fixture = start(config(|c| c.seats = 1)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let (error, code) = refused(&fixture, hello(&fixture.key, "bert", "bert-pw")).await;
    assert_eq!(
        (error["code"].as_str(), code),
        (Some("no_seat"), Some(4006))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("all 1 floating seats are taken (by 1 user(s))"),
        "{error}"
    );
    // anna's second client shares her seat.
    let (mut second, welcome) = sign_in(&fixture, "anna").await;
    assert_eq!(welcome["seat"]["kind"], "floating");
    send(&mut second, json!({"type":"sign_out","id":"bye"})).await;
    let (code, texts) = closed(&mut second).await;
    assert_eq!(code, Some(1000));
    assert!(
        texts
            .iter()
            .any(|t| t["type"] == "result" && t["id"] == "bye"),
        "{texts:?}"
    );
    // Still anna's: her first client holds it.
    assert_eq!(
        refused(&fixture, hello(&fixture.key, "bert", "bert-pw"))
            .await
            .0["code"],
        "no_seat"
    );
    send(&mut anna, json!({"type":"sign_out"})).await;
    assert_eq!(closed(&mut anna).await.0, Some(1000));
    let (_bert, _) = sign_in(&fixture, "bert").await;
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    assert_eq!(seats["holders"][0]["user"], "bert");
    assert_eq!(seats["free"], 0);
}

#[tokio::test]
async fn a_dropped_connection_frees_its_seat_after_the_grace_period() {
    let fixture = start(config(|c| {
        c.seats = 1;
        c.grace_seconds = 1;
    }))
    .await;
    let (anna, _) = sign_in(&fixture, "anna").await;
    drop(anna);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    assert_eq!(seats["holders"][0]["state"], "held", "{seats}");
    assert_eq!(
        refused(&fixture, hello(&fixture.key, "bert", "bert-pw"))
            .await
            .0["code"],
        "no_seat"
    );
    // anna comes back within the grace period: her seat again.
    let (anna, _) = sign_in(&fixture, "anna").await;
    drop(anna);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_bert, _) = sign_in(&fixture, "bert").await;
}

#[tokio::test]
async fn revoke_closes_the_users_connections_with_the_reason() {
    let fixture = start(config(|c| c.seats = 1)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    let holder = &seats["holders"][0];
    assert_eq!(holder["user"], "anna");
    assert_eq!(holder["kind"], "floating");
    assert_eq!(holder["clients"][0]["name"], "CRM");
    assert_eq!(holder["clients"][0]["version"], "2.1");
    assert!(holder["clients"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(
        (seats["pool"].as_u64(), seats["free"].as_u64()),
        (Some(1), Some(0))
    );

    let answer = action(&fixture.module, "revoke", &["anna", "shift", "over"])
        .await
        .unwrap();
    assert_eq!(answer["clients_closed"], 1);
    let (code, texts) = closed(&mut anna).await;
    assert_eq!(code, Some(4008));
    assert!(
        texts.contains(&json!({"type":"revoked","reason":"shift over"})),
        "{texts:?}"
    );
    let (_bert, _) = sign_in(&fixture, "bert").await;
    let error = action(&fixture.module, "revoke", &["anna"])
        .await
        .unwrap_err();
    assert!(error.contains("holds no seat"), "{error}");
}

#[tokio::test]
async fn fixed_users_sign_in_with_the_pool_full() {
    let fixture = start(config(|c| {
        c.seats = 1;
        c.fixed_users = vec!["carl".into()];
    }))
    .await;
    let (_anna, _) = sign_in(&fixture, "anna").await;
    let (_carl, welcome) = sign_in(&fixture, "carl").await;
    assert_eq!(welcome["seat"]["kind"], "fixed");
}

#[tokio::test]
async fn a_flood_of_commands_is_rate_limited_then_disconnected() {
    let fixture = start(config(|c| c.commands_per_second = 1)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    for id in 0..5 {
        send(&mut anna, json!({"type":"unsubscribe","id":id,"users":[]})).await;
    }
    let mut limited = 0;
    let mut answered = 0;
    while answered + limited < 5 {
        let message = next(&mut anna).await;
        match (message["type"].as_str(), message["code"].as_str()) {
            (Some("result"), _) => answered += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => {}
        }
    }
    assert_eq!((answered, limited), (2, 3), "a burst of two");
    for id in 0..120 {
        if anna
            .send(Message::text(
                json!({"type":"unsubscribe","id":id,"users":[]}).to_string(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = closed(&mut anna).await;
    assert_eq!(code, Some(4010));
}

#[tokio::test]
async fn an_oversized_message_closes_the_connection() {
    let fixture = start(config(|c| c.max_message_bytes = 1024)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let huge = json!({"type":"subscribe","id":1,"users":["x".repeat(2000)]});
    send(&mut anna, huge).await;
    assert_eq!(closed(&mut anna).await.0, Some(1009));
    // Before sign-in too.
    let mut client = connect(fixture.address).await;
    client.send(Message::text("x".repeat(5000))).await.unwrap();
    assert_eq!(closed(&mut client).await.0, Some(1009));
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let fixture = start(config(|_| {})).await;
    // A small receive window, so the kernel buffers fill soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(fixture.address).await.unwrap();
    let (mut lazy, _) = tokio_tungstenite::client_async(format!("ws://{}/", fixture.address), tcp)
        .await
        .unwrap();
    send(&mut lazy, hello(&fixture.key, "anna", "anna-pw")).await;
    assert_eq!(next(&mut lazy).await["type"], "welcome");
    // From now on it reads nothing. Its user's presence keeps changing,
    // each change a few kilobytes.
    let mut presence = fixture.host.presence("anna").unwrap();
    presence.groups = (0..100)
        .map(|n| RString::from(format!("group-with-a-long-name-{n:04}")))
        .collect::<RVec<_>>();
    let mut longest = 0;
    let mut dropped = false;
    for round in 0..200 {
        for _ in 0..50 {
            presence.dnd = !presence.dnd;
            fixture.module.presence_changed(&presence);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (clients, queue) = fixture.module.client_statistics().unwrap();
        longest = longest.max(queue);
        if clients == 0 {
            dropped = true;
            eprintln!("dropped after {} events", (round + 1) * 50);
            break;
        }
    }
    for _ in 0..100 {
        if dropped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (clients, queue) = fixture.module.client_statistics().unwrap();
        longest = longest.max(queue);
        dropped = clients == 0;
    }
    assert!(dropped, "the client that never reads is still connected");
    assert!(
        longest <= api_connector::hub::OUTGOING_QUEUE,
        "queue grew to {longest}"
    );
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    assert_eq!(
        seats["holders"][0]["state"], "held",
        "dropped, not signed out: {seats}"
    );
    drop(lazy);
}

#[tokio::test]
async fn tls_serves_wss_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let certificate = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&certificate, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let fixture = start_in(
        dir,
        host(),
        config(|c| {
            c.certificate = Some(certificate.display().to_string());
            c.private_key = Some(key.display().to_string());
        }),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(fixture.address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut client, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/", fixture.address.port()),
        tls,
    )
    .await
    .expect("upgrade");
    send(&mut client, hello(&fixture.key, "anna", "anna-pw")).await;
    assert_eq!(next(&mut client).await["type"], "welcome");
    let key = action(&fixture.module, "key", &[]).await.unwrap();
    assert!(
        key["url"].as_str().unwrap().starts_with("wss://127.0.0.1:"),
        "{key}"
    );
    // Plain WebSocket on the TLS port gets nowhere.
    let tcp = TcpStream::connect(fixture.address).await.unwrap();
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{}/", fixture.address), tcp),
    )
    .await
    .expect("refused in time");
    assert!(plain.is_err());
}

#[tokio::test]
async fn a_reconfiguration_keeps_the_signed_in_clients() {
    let fixture = start(config(|c| c.seats = 1)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    // The host builds a new value with the new configuration, activates
    // it, then deactivates the old one.
    let ctx = testing::context_with("crm", &fixture.dir, fixture.host.clone());
    let listen = fixture.address.to_string();
    let bigger = ApiConnector::new(
        &ctx,
        config(|c| {
            c.seats = 2;
            c.listen = listen;
        }),
    )
    .expect("the address in use is this instance's own");
    bigger.activate();
    fixture.module.deactivate();
    let answer = command(&mut anna, json!({"type":"unsubscribe","id":1,"users":[]})).await;
    assert_eq!(answer["ok"], true);
    let (_bert, _) = sign_in(&fixture, "bert").await;
    let seats = action(&bigger, "seats", &[]).await.unwrap();
    assert_eq!(
        (seats["pool"].as_u64(), seats["free"].as_u64()),
        (Some(2), Some(0))
    );
    bigger.deactivate();
    assert_eq!(closed(&mut anna).await.0, Some(1001), "stopping at last");
}

#[tokio::test]
async fn after_a_restart_the_previous_holders_get_their_seats_back_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let host = host();
    let first = start_in(dir, host.clone(), config(|c| c.seats = 1)).await;
    let (mut anna, _) = sign_in(&first, "anna").await;
    // The old version stops (an upgrade): anna is told, and reconnects.
    first.module.deactivate();
    assert_eq!(closed(&mut anna).await.0, Some(1001));
    let ctx = testing::context_with("crm", &path, host);
    let second = ApiConnector::new(&ctx, config(|c| c.seats = 1)).unwrap();
    second.activate();
    let address = second.listening(WAIT).await.unwrap();
    let key = second.current_key().unwrap();
    let mut bert = connect(address).await;
    send(&mut bert, hello(&key, "bert", "bert-pw")).await;
    let (_, texts) = closed(&mut bert).await;
    assert_eq!(texts[0]["code"], "no_seat", "anna's seat is kept for her");
    let mut anna = connect(address).await;
    send(&mut anna, hello(&key, "anna", "anna-pw")).await;
    assert_eq!(next(&mut anna).await["type"], "welcome");
    second.deactivate();
    drop(first);
}

#[tokio::test]
async fn a_rotated_key_keeps_clients_and_refuses_the_old_key() {
    let fixture = start(config(|_| {})).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let rotated = action(&fixture.module, "rotate-key", &[]).await.unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, fixture.key);
    let answer = command(&mut anna, json!({"type":"unsubscribe","id":1,"users":[]})).await;
    assert_eq!(answer["ok"], true, "still signed in");
    let (error, _) = refused(&fixture, hello(&fixture.key, "bert", "bert-pw")).await;
    assert_eq!(error["code"], "bad_key");
    let mut bert = connect(fixture.address).await;
    send(&mut bert, hello(&new_key, "bert", "bert-pw")).await;
    assert_eq!(next(&mut bert).await["type"], "welcome");
    let file = action(&fixture.module, "key-file", &[]).await.unwrap();
    assert_eq!(file["key"], new_key);
}

#[tokio::test]
async fn another_process_reaches_the_running_connector_over_its_control_socket() {
    use api_connector::control::{ask, ControlAnswer, ControlRequest};
    let fixture = start(config(|_| {})).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    // What the CLI's action does when the connector runs in `serve`.
    let Ok(ControlAnswer::Ok(seats)) = ask(&fixture.dir, &ControlRequest::Seats).await else {
        panic!("no answer from the control socket");
    };
    assert_eq!(seats["running"], true);
    assert_eq!(seats["holders"][0]["user"], "anna");
    let revoke = ControlRequest::Revoke {
        user: "anna".into(),
        reason: "from the CLI".into(),
    };
    let Ok(ControlAnswer::Ok(answer)) = ask(&fixture.dir, &revoke).await else {
        panic!("revoke not answered");
    };
    assert_eq!(answer["clients_closed"], 1);
    let (code, texts) = closed(&mut anna).await;
    assert_eq!(code, Some(4008));
    assert_eq!(texts.last().unwrap()["reason"], "from the CLI");
    assert!(matches!(
        ask(&fixture.dir, &revoke).await,
        Ok(ControlAnswer::Err(message)) if message.contains("holds no seat")
    ));
    // Only the host's own user may use the socket.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(fixture.dir.join(api_connector::control::SOCKET))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn pongs_keep_a_connection_and_silence_ends_it() {
    let fixture = start(config(|c| c.ping_seconds = 1)).await;
    let (mut awake, _) = sign_in(&fixture, "anna").await;
    let (mut asleep, _) = sign_in(&fixture, "bert").await;
    // Reading answers the pings (tungstenite's client does so by itself).
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(message) = tokio::time::timeout_at(until, awake.next()).await {
        assert!(
            !matches!(message, Some(Ok(Message::Close(_))) | None),
            "{message:?}"
        );
    }
    let answer = command(&mut awake, json!({"type":"unsubscribe","id":1,"users":[]})).await;
    assert_eq!(answer["ok"], true, "still signed in");
    // The other read nothing meanwhile: no pongs, dropped.
    assert_eq!(closed(&mut asleep).await.0, Some(4012));
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    let bert = seats["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["user"] == "bert")
        .cloned()
        .unwrap();
    assert_eq!(bert["state"], "held", "kept for the grace period: {seats}");
}

#[tokio::test]
async fn before_the_sign_in_a_client_may_send_only_a_hello_sized_message() {
    // An administrator allows large messages; a stranger still may not
    // make the connector hold that much for each of its connections.
    let fixture = start(config(|c| c.max_message_bytes = 1 << 20)).await;
    let mut padded = hello(&fixture.key, "anna", "anna-pw");
    padded["padding"] = json!("x".repeat(40_000));
    let mut client = connect(fixture.address).await;
    send(&mut client, padded).await;
    let (code, texts) = closed(&mut client).await;
    assert_eq!(code, Some(1009), "{texts:?}");
    assert!(texts.is_empty(), "not signed in: {texts:?}");
    // Signed in, the configured size applies.
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let answer = command(
        &mut anna,
        json!({"type":"unsubscribe","id":1,"users":[],"padding":"x".repeat(100_000)}),
    )
    .await;
    assert_eq!(answer["ok"], true, "{answer}");
}

/// Connects from `source` (any 127.0.0.0/8 address is this machine) and
/// says `hello`: the code of the answer.
async fn sign_in_from(fixture: &Fixture, source: std::net::Ipv4Addr, hello: Value) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let tcp = socket.connect(fixture.address).await.unwrap();
    let (mut client, _) =
        tokio_tungstenite::client_async(format!("ws://{}/", fixture.address), tcp)
            .await
            .unwrap();
    send(&mut client, hello).await;
    let answer = next(&mut client).await;
    match answer["type"].as_str() {
        Some("welcome") => "welcome".into(),
        _ => answer["code"].as_str().unwrap_or("?").to_string(),
    }
}

#[tokio::test]
async fn wrong_passwords_for_one_user_from_many_addresses_lock_only_that_user() {
    let fixture = start(config(|_| {})).await;
    let mut wrong = 0;
    let mut blocked = false;
    'guessing: for n in 2..40u8 {
        for _ in 0..5 {
            let guess = hello(&fixture.key, "anna", "guess");
            match sign_in_from(&fixture, [127, 0, 0, n].into(), guess)
                .await
                .as_str()
            {
                "wrong_password" => wrong += 1,
                "too_many_failures" if wrong == 100 => {
                    blocked = true;
                    break 'guessing;
                }
                other => panic!("after {wrong} wrong passwords: {other}"),
            }
        }
    }
    assert!(
        blocked,
        "{wrong} wrong passwords for anna, spread over addresses, and still guessing"
    );
    // Not even her own password, from an address that never failed...
    let right = hello(&fixture.key, "anna", "anna-pw");
    assert_eq!(
        sign_in_from(&fixture, [127, 0, 0, 100].into(), right).await,
        "too_many_failures"
    );
    // ...while everybody else signs in as ever, from there too.
    let bert = hello(&fixture.key, "bert", "bert-pw");
    assert_eq!(
        sign_in_from(&fixture, [127, 0, 0, 100].into(), bert).await,
        "welcome"
    );
}

#[test]
fn a_revoke_racing_sign_ins_closes_every_client_whose_seat_it_frees() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = runtime.block_on(start(config(|c| c.seats = 1)));
    let revoking = AtomicBool::new(true);
    let mut slipped = 0;
    std::thread::scope(|scope| {
        // An administrator revoking anna over and over.
        scope.spawn(|| {
            while revoking.load(Ordering::Relaxed) {
                let _ = fixture.module.action("revoke", &["anna".to_string()]);
            }
        });
        runtime.block_on(async {
            for _ in 0..60 {
                let mut client = connect(fixture.address).await;
                send(&mut client, hello(&fixture.key, "anna", "anna-pw")).await;
                // Every client that got a seat loses it to the next
                // revoke, and must then be told and closed.
                let closed_in_time = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match client.next().await {
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await;
                if closed_in_time.is_err() {
                    slipped += 1;
                }
            }
        });
        revoking.store(false, Ordering::Relaxed);
    });
    let seats = runtime
        .block_on(action(&fixture.module, "seats", &[]))
        .unwrap();
    assert_eq!(
        slipped, 0,
        "clients signed in whose seat a revoke freed without closing them: {seats}"
    );
    drop(fixture);
    drop(runtime);
}

#[tokio::test]
async fn another_user_is_refused_on_the_control_socket_whatever_its_mode() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let probe = tempfile::NamedTempFile::new().unwrap();
    let python = std::path::Path::new("/usr/bin/python3");
    // The test command runs as root (it installs packages); connecting as
    // another user needs it, so anything else is a setup error, not a pass.
    assert_eq!(
        probe.as_file().metadata().unwrap().uid(),
        0,
        "this test must run as root, to connect as another user"
    );
    assert!(
        python.exists(),
        "/usr/bin/python3 is needed to connect as another user"
    );
    let fixture = start(config(|_| {})).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    // As a loose umask, or a moment before the connector's chmod, would
    // leave it: anyone could connect.
    let socket = fixture.dir.join(api_connector::control::SOCKET);
    std::fs::set_permissions(&fixture.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  answer = b''\n\
                  try:\n\
                  \x20   s.sendall(b'{\"action\":\"revoke\",\"user\":\"anna\",\"reason\":\"by nobody\"}\\n')\n\
                  \x20   while True:\n\
                  \x20       part = s.recv(65536)\n\
                  \x20       if not part: break\n\
                  \x20       answer += part\n\
                  except (BrokenPipeError, ConnectionResetError):\n\
                  \x20   pass\n\
                  print('answer:', answer.decode())\n";
    let output = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            std::process::Command::new(python)
                .arg("-c")
                .arg(script)
                .arg(&socket)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        printed.contains("answer:") && !printed.contains("revoked"),
        "{printed} {errors}"
    );
    let answer = command(&mut anna, json!({"type":"unsubscribe","id":1,"users":[]})).await;
    assert_eq!(answer["ok"], true, "anna still signed in: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_of_a_client_that_left_do_not_run_after_it() {
    let fixture = start(config(|_| {})).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    let (mut bert, _) = sign_in(&fixture, "bert").await;
    // The host stops answering for a while (a slow database, say)...
    let (held, hold) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let host = fixture.host.clone();
    let holder = std::thread::spawn(move || {
        host.with_state(|_| {
            held.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(10));
        })
    });
    hold.recv().unwrap();
    // ...bert's commands take every place for host calls...
    for id in 0..16 {
        send(&mut bert, json!({"type":"set_dnd","id":id,"on":true})).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and anna's wait for one when she leaves.
    for id in 0..3 {
        send(&mut anna, json!({"type":"set_dnd","id":id,"on":true})).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    anna.close(None).await.unwrap();
    drop(anna);
    for _ in 0..100 {
        if fixture.module.client_statistics().unwrap().0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fixture.module.client_statistics().unwrap().0,
        1,
        "anna gone"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    // Bert's commands are answered; anna's never reach the host.
    for _ in 0..16 {
        assert_eq!(next_of(&mut bert, "result").await["ok"], true);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = fixture.host.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("set_dnd bert"))
            .count(),
        16
    );
    assert!(
        !requests.iter().any(|r| r.starts_with("set_dnd anna")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn the_user_signed_in_is_the_one_the_host_names_not_what_the_client_wrote() {
    // A host that finds a user under another spelling (a case-blind
    // directory, say): "ANNA" with anna's password is anna.
    let host = host();
    host.with_state(|state| {
        let anna = state.users["anna"].clone();
        state.users.insert("ANNA".into(), anna);
    });
    let dir = tempfile::tempdir().unwrap();
    let fixture = start_in(dir, host, config(|c| c.seats = 1)).await;
    let (_anna, _) = sign_in(&fixture, "anna").await;
    let mut alias = connect(fixture.address).await;
    send(&mut alias, hello(&fixture.key, "ANNA", "anna-pw")).await;
    let welcome = next(&mut alias).await;
    assert_eq!(welcome["type"], "welcome", "her seat, shared: {welcome}");
    assert_eq!(welcome["user"]["user"], "anna");
    command(&mut alias, json!({"type":"set_dnd","id":1,"on":true})).await;
    assert_eq!(fixture.host.requests(), ["set_dnd anna true"]);
    let seats = action(&fixture.module, "seats", &[]).await.unwrap();
    assert_eq!(seats["holders"].as_array().unwrap().len(), 1, "{seats}");
}

#[tokio::test]
async fn fragments_cannot_build_a_message_past_the_limit() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let fixture = start(config(|c| c.max_message_bytes = 1024)).await;
    let (mut anna, _) = sign_in(&fixture, "anna").await;
    // Each fragment is small; together they are over 1 KiB.
    let mut opcode = OpCode::Data(Data::Text);
    for _ in 0..8 {
        let fragment = Frame::message(" ".repeat(200), opcode, false);
        if anna.send(Message::Frame(fragment)).await.is_err() {
            break;
        }
        opcode = OpCode::Data(Data::Continue);
    }
    assert_eq!(closed(&mut anna).await.0, Some(1009));
}

#[tokio::test]
async fn connections_that_never_finish_the_upgrade_are_limited_and_let_go() {
    let fixture = start(config(|c| c.max_clients = 3)).await;
    // Three connect and say nothing (a slow-loris); they hold every place.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(fixture.address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = TcpStream::connect(fixture.address).await.unwrap();
    let refused = tokio_tungstenite::client_async(format!("ws://{}/", fixture.address), tcp).await;
    assert!(refused.is_err(), "a fourth is closed unanswered");
    // Ten seconds after they connected, the silent ones are closed.
    for stream in &mut silent {
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(12),
            tokio::io::AsyncReadExt::read(stream, &mut buffer),
        )
        .await
        .expect("closed within the handshake time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let (_anna, _) = sign_in(&fixture, "anna").await;
}

/// Holds the test host still (as a slow host would be) until the sender
/// is dropped or sends.
fn hold_the_host(host: &TestHost) -> std::sync::mpsc::Sender<()> {
    let (held, hold) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let host = host.clone();
    std::thread::spawn(move || {
        host.with_state(|_| {
            held.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(10));
        })
    });
    hold.recv().unwrap();
    release
}

/// `hellos` said at once, each on a connection of its own; the codes of
/// the answers (`welcome` for a welcome) in any order, once `release` let
/// the host go on after a moment.
async fn at_once(
    fixture: &Fixture,
    hellos: Vec<Value>,
    release: std::sync::mpsc::Sender<()>,
) -> Vec<String> {
    let mut clients = Vec::new();
    for hello in hellos {
        let mut client = connect(fixture.address).await;
        send(&mut client, hello).await;
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(release);
    let mut codes = Vec::new();
    for client in &mut clients {
        let answer = next(client).await;
        codes.push(match answer["type"].as_str() {
            Some("welcome") => "welcome".to_string(),
            _ => answer["code"].as_str().unwrap_or("?").to_string(),
        });
    }
    codes.sort();
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_behind_one_address_sign_in_at_once() {
    // An office's clients behind one NAT reconnecting together (after a
    // restart, say) while the host is slow: none has failed, none is
    // refused.
    let fixture = start(config(|_| {})).await;
    let release = hold_the_host(&fixture.host);
    let hellos = (0..12)
        .map(|_| hello(&fixture.key, "anna", "anna-pw"))
        .collect();
    let codes = at_once(&fixture, hellos, release).await;
    assert_eq!(codes, vec!["welcome"; 12]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_at_once_are_checked_no_more_than_the_limit_allows() {
    let fixture = start(config(|_| {})).await;
    let release = hold_the_host(&fixture.host);
    let hellos = (0..10)
        .map(|n| hello(&fixture.key, "bert", &format!("guess-{n}")))
        .collect();
    let codes = at_once(&fixture, hellos, release).await;
    let mut expected = vec!["too_many_failures"; 5];
    expected.extend(vec!["wrong_password"; 5]);
    assert_eq!(codes, expected);
}
