//! `callhost serve` end to end on real SIP: the built `callhost` binary
//! serving on loopback, SIPp (tests/sipp/*.xml) as phones and as the
//! carrier's trunk, and baresip as a real RTP endpoint. Every test has its
//! own data directory, ports and server process; assertions are on SIPp's
//! exit codes and on the SIP messages in its trace (printed on failure,
//! with the server's log).

use crate::common;
use crate::sip_harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sip_harness::{
    free_port, free_ports, header, leg_packets, md5_hex, sipp, tag_of, Baresip, HandPhone, Message,
    Serve, SilentPhone, Sipp, SippRun, LOCALHOST,
};

/// Five users; every password is `<id>-pw`. Carl forwards everything to
/// Bert, Dora is in DND, Erik forwards to Bert after a second of ringing.
pub(crate) const DIRECTORY: &str = r#"
home_country = "DE"

[[users]]
id = "anna"
name = "Anna Alpha"
numbers = ["201", "+4930123456201"]
password = "anna-pw"

[[users]]
id = "bert"
name = "Bert Beta"
numbers = ["202", "+4930123456202"]
password = "bert-pw"

[[users]]
id = "carl"
name = "Carl Gamma"
numbers = ["203", "+4930123456203"]
password = "carl-pw"

[[users]]
id = "dora"
name = "Dora Delta"
numbers = ["204", "+4930123456204"]
password = "dora-pw"

[[users]]
id = "erik"
name = "Erik Epsilon"
numbers = ["205", "+4930123456205"]
password = "erik-pw"

[state.carl]
forward_always = "202"

[state.dora]
dnd = true

[state.erik]
forward_no_answer = "202"
no_answer_seconds = 1
"#;

/// The DIDs (what the carrier dials).
pub(crate) const BERT: &str = "+4930123456202";
const CARL: &str = "+4930123456203";
const DORA: &str = "+4930123456204";
const ERIK: &str = "+4930123456205";
/// An outside caller on the trunk.
pub(crate) const OUTSIDE: &str = "+49891234567";

/// A SIPp CSV file in the server's data directory.
pub(crate) fn csv(serve: &Serve, name: &str, row: &str) -> String {
    let path = serve.data.join(name);
    std::fs::write(&path, format!("SEQUENTIAL\n{row}\n")).expect("write CSV");
    path.to_str().unwrap().to_string()
}

/// `[field0]` = user, `[field1]` = credentials (right or wrong password).
pub(crate) fn credentials(serve: &Serve, user: &str, password: &str) -> String {
    csv(
        serve,
        &format!("{user}-{password}.csv"),
        &format!("{user};[authentication username={user} password={password}]"),
    )
}

/// `[field0]` = the calling number on the trunk, no credentials.
pub(crate) fn trunk_caller(serve: &Serve, number: &str) -> String {
    csv(serve, &format!("caller{number}.csv"), &format!("{number};"))
}

/// Registers `user` (right password) with Contact 127.0.0.1:`port`.
pub(crate) fn register(serve: &Serve, user: &str, port: u16) -> SippRun {
    let run = sipp(
        &format!("register {user}"),
        "register.xml",
        Some(&serve.addr()),
        port,
        &["-inf", &credentials(serve, user, &format!("{user}-pw"))],
    );
    run.assert_ok();
    run
}

/// A fresh SIPp media port (SIPp uses a few above it).
pub(crate) fn media_port() -> String {
    free_ports(4).to_string()
}

/// A phone that answers (uas.xml) on `port`.
pub(crate) fn answering_phone(name: &str, port: u16) -> Sipp {
    Sipp::start(
        name,
        "uas.xml",
        None,
        port,
        &["-mi", LOCALHOST, "-mp", &media_port()],
    )
}

/// A call from the trunk peer with `scenario` to `number`.
pub(crate) fn trunk_call(serve: &Serve, scenario: &str, number: &str, extra: &[&str]) -> Sipp {
    let media = media_port();
    let mut args = vec!["-s", number, "-mi", LOCALHOST, "-mp", &media];
    args.extend_from_slice(extra);
    Sipp::start(
        &format!("trunk {scenario} -> {number}"),
        scenario,
        Some(&serve.addr()),
        serve.trunk_port,
        &args,
    )
}

/// A trunk call from `caller` with t_uac_any.xml: any final answer passes;
/// returns the run (status from [`SippRun::final_invite_status`]).
fn trunk_call_from(serve: &Serve, caller: &str, number: &str) -> SippRun {
    let file = trunk_caller(serve, caller);
    let run = trunk_call(serve, "t_uac_any.xml", number, &["-inf", &file]).wait();
    run.assert_ok();
    run
}

fn in_range(port: Option<u16>, range: (u16, u16)) -> bool {
    port.is_some_and(|p| p >= range.0 && p <= range.1)
}

// ---------------------------------------------------------------------------
// 1. Registration

#[test]
fn register_wrong_password_and_blocking_after_repeated_failures() {
    let serve = Serve::start(DIRECTORY, "auth_failures = 3");
    let phone = free_port();

    let ok = register(&serve, "anna", phone);
    assert_eq!(ok.received_statuses(), [401, 200], "{}", ok.context());
    let challenge = ok.received()[0].clone();
    let www = challenge.header("WWW-Authenticate").unwrap_or_default();
    assert!(www.contains("realm=\"callhost\""), "{}", ok.context());
    serve.wait_log(&["device registered", "user=anna"]);

    // Three wrong passwords from the same source: 403 each time.
    let attacker = free_port();
    let wrong = credentials(&serve, "anna", "not-the-password");
    for attempt in 1..=3 {
        let run = sipp(
            &format!("wrong password #{attempt}"),
            "register_wrong.xml",
            Some(&serve.addr()),
            attacker,
            &["-inf", &wrong],
        );
        run.assert_ok();
        let statuses = run.received_statuses();
        assert_eq!(statuses.last(), Some(&403), "{}", run.context());
        assert!(!statuses.contains(&200), "{}", run.context());
    }

    // A new phone at that address is refused now, even with the right
    // password; the phone already registered from there goes on.
    let right = credentials(&serve, "anna", "anna-pw");
    let blocked = sipp(
        "right password from a new port while blocked",
        "t_register_blocked.xml",
        Some(&serve.addr()),
        free_port(),
        &["-inf", &right],
    );
    blocked.assert_ok();
    assert_eq!(
        blocked.received_statuses().last(),
        Some(&403),
        "{}",
        blocked.context()
    );
    assert!(
        !blocked.received_statuses().contains(&200),
        "{}",
        blocked.context()
    );
    let refresh = register(&serve, "anna", phone);
    assert_eq!(
        refresh.received_statuses(),
        [401, 200],
        "{}",
        refresh.context()
    );

    let warning = serve.wait_log(&["WARN", "source 127.0.0.1 blocked"]);
    assert!(warning.contains("wrong password"), "{warning}");
    serve.wait_log(&[
        "request refused",
        "blocked after repeated authentication failures",
    ]);
    let failures = serve
        .log()
        .lines()
        .filter(|l| l.contains("request refused") && l.contains("wrong password for user"))
        .count();
    assert_eq!(failures, 3, "{}", serve.log());
}

#[test]
fn register_over_tcp() {
    let serve = Serve::start(DIRECTORY, "");
    let run = sipp(
        "register over TCP",
        "register.xml",
        Some(&serve.addr()),
        free_port(),
        &["-t", "t1", "-inf", &credentials(&serve, "bert", "bert-pw")],
    );
    run.assert_ok();
    assert_eq!(run.received_statuses(), [401, 200], "{}", run.context());
    assert!(run.trace.contains("TCP message sent"), "{}", run.context());
    serve.wait_log(&["device registered", "user=bert"]);
}

// ---------------------------------------------------------------------------
// 2. Trunk to a DID, media anchored

#[test]
fn trunk_call_to_a_did_is_answered_and_media_goes_through_the_relay() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let (callee_media, caller_media) = (media_port(), media_port());
    let phone = Sipp::start(
        "bert answers",
        "uas.xml",
        None,
        bert,
        &["-mi", LOCALHOST, "-mp", &callee_media],
    );
    let caller = Sipp::start(
        "trunk caller",
        "uac.xml",
        Some(&serve.addr()),
        serve.trunk_port,
        &[
            "-s",
            BERT,
            "-mi",
            LOCALHOST,
            "-mp",
            &caller_media,
            "-d",
            "1000",
        ],
    )
    .wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();

    // The phone sees the relay's callee side, never the caller's own port.
    let invite = phone
        .received_request("INVITE")
        .expect("INVITE at the phone");
    let offered = invite.sdp_audio_port();
    assert!(
        in_range(offered, serve.rtp),
        "offer port {offered:?} not in {:?}:\n{}",
        serve.rtp,
        phone.context()
    );
    assert_ne!(offered, caller_media.parse().ok(), "{}", phone.context());
    assert_eq!(
        invite.sdp_connection(),
        Some("127.0.0.1"),
        "{}",
        phone.context()
    );
    // And the caller sees the relay's caller side in the answer.
    let answer = caller
        .received()
        .into_iter()
        .find(|m| {
            m.status() == Some(200) && m.header("CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .expect("200 for the INVITE");
    let answered = answer.sdp_audio_port();
    assert!(
        in_range(answered, serve.rtp),
        "answer port {answered:?}:\n{}",
        caller.context()
    );
    assert_ne!(answered, callee_media.parse().ok(), "{}", caller.context());
    assert_ne!(answered, offered, "one relay port per side");

    // The caller's BYE reached the phone.
    assert!(
        phone.received_request("BYE").is_some(),
        "{}",
        phone.context()
    );
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("answered_by=bert"), "{ended}");
    assert!(ended.contains("end=caller"), "{ended}");
    let legs = leg_packets(&ended);
    assert_eq!(legs.len(), 2, "{ended}");
    assert!(
        legs[0].0 > 0 && legs[1].0 > 0,
        "RTP from both sides: {ended}"
    );
}

#[test]
fn the_callee_hangs_up_and_the_caller_gets_the_bye() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = Sipp::start(
        "bert answers and hangs up",
        "t_uas_hangup.xml",
        None,
        bert,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-d", "500"],
    );
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", BERT, &[]).wait();
    let phone = phone.wait();
    phone.assert_ok();
    caller.assert_ok();
    assert!(
        caller.received_request("BYE").is_some(),
        "{}",
        caller.context()
    );
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("end=callee"), "{ended}");
}

// ---------------------------------------------------------------------------
// 3. User to user, with digest authentication on the INVITE

#[test]
fn user_to_user_call_is_challenged_and_shows_the_callers_name() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let auth_uri = format!("202@{}", serve.addr());
    let caller = Sipp::start(
        "anna calls 202",
        "uac_auth.xml",
        Some(&serve.addr()),
        free_port(),
        &[
            "-inf",
            &credentials(&serve, "anna", "anna-pw"),
            "-s",
            "202",
            "-auth_uri",
            &auth_uri,
            "-mi",
            LOCALHOST,
            "-mp",
            &media_port(),
        ],
    )
    .wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();

    let statuses = caller.received_statuses();
    assert_eq!(statuses.first(), Some(&407), "{}", caller.context());
    assert!(statuses.contains(&200), "{}", caller.context());
    let challenge = caller
        .received()
        .into_iter()
        .find(|m| m.status() == Some(407))
        .unwrap();
    assert!(
        challenge
            .header("Proxy-Authenticate")
            .is_some_and(|h| h.contains("realm=\"callhost\"")),
        "{}",
        caller.context()
    );

    let invite = phone
        .received_request("INVITE")
        .expect("INVITE at Bert's phone");
    let from = invite.header("From").unwrap_or_default();
    assert!(
        from.starts_with("\"Anna Alpha\""),
        "From: {from}\n{}",
        phone.context()
    );
    assert!(from.contains("sip:201@"), "From: {from}");
    let asserted = invite
        .header("P-Asserted-Identity")
        .unwrap_or_else(|| panic!("no P-Asserted-Identity:\n{}", phone.context()));
    assert!(
        asserted.contains("Anna Alpha") && asserted.contains("sip:201@"),
        "{asserted}"
    );
}

// ---------------------------------------------------------------------------
// 4. Busy, not found, cancel

#[test]
fn a_busy_phone_makes_the_caller_busy() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = Sipp::start("bert is busy", "uas_busy.xml", None, bert, &[]);
    let caller = trunk_call(&serve, "uac_busy.xml", BERT, &[]).wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();
    assert_eq!(
        caller.final_invite_status(),
        Some(486),
        "{}",
        caller.context()
    );
    assert!(phone.received_request("INVITE").is_some());
}

#[test]
fn an_unknown_internal_number_is_not_found() {
    let serve = Serve::start(DIRECTORY, "");
    let caller = Sipp::start(
        "anna dials 299",
        "t_uac_any.xml",
        Some(&serve.addr()),
        free_port(),
        &[
            "-inf",
            &credentials(&serve, "anna", "anna-pw"),
            "-s",
            "299",
            "-auth_uri",
            &format!("299@{}", serve.addr()),
            "-mi",
            LOCALHOST,
            "-mp",
            &media_port(),
        ],
    )
    .wait();
    caller.assert_ok();
    assert_eq!(
        caller.received_statuses().first(),
        Some(&407),
        "{}",
        caller.context()
    );
    assert_eq!(
        caller.final_invite_status(),
        Some(404),
        "{}",
        caller.context()
    );
}

#[test]
fn the_caller_cancels_while_it_rings() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = Sipp::start("bert rings", "uas_ring.xml", None, bert, &[]);
    let caller = trunk_call(&serve, "uac_cancel.xml", BERT, &["-d", "500"]).wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();
    assert_eq!(
        caller.final_invite_status(),
        Some(487),
        "{}",
        caller.context()
    );
    assert!(
        phone.received_request("CANCEL").is_some(),
        "{}",
        phone.context()
    );
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("outcome=cancelled"), "{ended}");
}

// ---------------------------------------------------------------------------
// 5. DND and forwards

#[test]
fn dnd_user_gets_no_invite_and_the_caller_is_busy() {
    let serve = Serve::start(DIRECTORY, "");
    let dora = free_port();
    register(&serve, "dora", dora);
    let phone = SilentPhone::listen(dora);
    let caller = trunk_call(&serve, "uac_busy.xml", DORA, &[]).wait();
    caller.assert_ok();
    assert_eq!(
        caller.final_invite_status(),
        Some(486),
        "{}",
        caller.context()
    );
    thread::sleep(Duration::from_millis(200));
    assert!(
        phone.invites().is_empty(),
        "Dora's phone rang: {:?}",
        phone.invites()
    );
}

#[test]
fn forward_always_rings_the_target() {
    let serve = Serve::start(DIRECTORY, "");
    let (bert, carl) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "carl", carl);
    let carls_phone = SilentPhone::listen(carl);
    let berts_phone = answering_phone("bert answers", bert);
    let caller = trunk_call(&serve, "uac.xml", CARL, &[]).wait();
    let berts_phone = berts_phone.wait();
    caller.assert_ok();
    berts_phone.assert_ok();
    assert!(
        carls_phone.invites().is_empty(),
        "Carl's phone rang: {:?}",
        carls_phone.invites()
    );
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("answered_by=bert"), "{ended}");
}

#[test]
fn no_answer_forward_cancels_the_first_phone_and_rings_the_target() {
    let serve = Serve::start(DIRECTORY, "");
    let (bert, erik) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "erik", erik);
    let eriks_phone = Sipp::start("erik rings", "uas_ring.xml", None, erik, &[]);
    let berts_phone = answering_phone("bert answers", bert);
    let started = Instant::now();
    let caller = trunk_call(&serve, "uac.xml", ERIK, &[]).wait();
    let (eriks_phone, berts_phone) = (eriks_phone.wait(), berts_phone.wait());
    caller.assert_ok();
    eriks_phone.assert_ok();
    berts_phone.assert_ok();
    assert!(eriks_phone.received_request("INVITE").is_some());
    assert!(
        eriks_phone.received_request("CANCEL").is_some(),
        "{}",
        eriks_phone.context()
    );
    assert!(berts_phone.received_request("INVITE").is_some());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "forwarded before no_answer_seconds"
    );
    serve.wait_log(&["no answer: forwarding"]);
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("answered_by=bert"), "{ended}");
}

// ---------------------------------------------------------------------------
// 6. The simulator and SIP agree

/// What the caller's final status means in the simulator's words.
fn outcome_of(status: Option<u16>) -> &'static str {
    match status {
        Some(200) => "ringing",
        Some(486) => "busy",
        Some(603) => "rejected",
        Some(404 | 480) => "unavailable",
        _ => "other",
    }
}

/// Places one trunk call over SIP; every phone in `phones` either answers
/// (if `expected` says it rings) or stays silent. Returns the outcome and
/// the users whose phones got an INVITE.
fn sip_outcome(
    serve: &Serve,
    caller: &str,
    to: &str,
    phones: &[(&str, u16)],
    expected: &BTreeSet<String>,
) -> (String, BTreeSet<String>) {
    let mut answering = Vec::new();
    let mut silent = Vec::new();
    for (user, port) in phones {
        if expected.contains(*user) {
            answering.push((user.to_string(), answering_phone(user, *port)));
        } else {
            silent.push((user.to_string(), SilentPhone::listen(*port)));
        }
    }
    let run = trunk_call_from(serve, caller, to);
    let mut rang = BTreeSet::new();
    for (user, phone) in answering {
        let phone = phone.wait();
        if phone.received_request("INVITE").is_some() {
            rang.insert(user);
        }
    }
    thread::sleep(Duration::from_millis(200));
    for (user, phone) in silent {
        if !phone.invites().is_empty() {
            rang.insert(user);
        }
    }
    (outcome_of(run.final_invite_status()).to_string(), rang)
}

#[test]
fn simulate_and_sip_agree_on_who_rings() {
    let serve = Serve::start(DIRECTORY, "");
    let calls = [BERT, DORA, CARL]; // plain, DND busy, forward always
    let scenario: String = calls
        .iter()
        .map(|to| format!("[[calls]]\nfrom = \"{OUTSIDE}\"\nto = \"{to}\"\n\n"))
        .collect();
    let file = serve.data.join("sip-scenario.toml");
    std::fs::write(&file, scenario).unwrap();
    let simulated: Vec<Value> =
        sip_harness::callhost(&serve.data, &["simulate", file.to_str().unwrap()])
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect();
    assert_eq!(simulated.len(), calls.len());

    let phones = [
        ("bert", free_port()),
        ("carl", free_port()),
        ("dora", free_port()),
    ];
    for (user, port) in phones {
        register(&serve, user, port);
    }
    let expected_outcomes = ["ringing", "busy", "ringing"];
    for ((to, simulated), expected_outcome) in calls.iter().zip(&simulated).zip(expected_outcomes) {
        let outcome = simulated["outcome"].as_str().unwrap().to_string();
        let rang: BTreeSet<String> = simulated["rang"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ring| ring["user"].as_str().unwrap().to_string())
            .collect();
        // The simulator itself is right about these three.
        assert_eq!(outcome, expected_outcome, "{simulated}");
        let over_sip = sip_outcome(&serve, OUTSIDE, to, &phones, &rang);
        assert_eq!(
            over_sip,
            (outcome, rang),
            "call to {to}: SIP vs simulate {simulated}"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Module decisions on SIP

#[test]
fn breakthrough_module_rings_a_dnd_phone_over_sip() {
    let h = common::Harness::new();
    h.install("breakthrough-0.1.0.cmod");
    h.create(
        "breakthrough",
        "bt",
        "bypass_dnd = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"*891234567\"]\n",
    );
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    assert!(
        serve.banner.contains("1 active module instance(s) bt"),
        "{}",
        serve.banner
    );
    let dora = free_port();
    register(&serve, "dora", dora);

    // The rule's caller gets through DND.
    let phone = answering_phone("dora answers", dora);
    let run = trunk_call_from(&serve, OUTSIDE, DORA);
    let phone = phone.wait();
    phone.assert_ok();
    assert_eq!(run.final_invite_status(), Some(200), "{}", run.context());
    assert!(phone.received_request("INVITE").is_some());
    serve.wait_log(&["call ended", "answered_by=dora", "modules=bt:bypass_dnd"]);

    // Anybody else still finds her busy.
    let phone = SilentPhone::listen(dora);
    let run = trunk_call_from(&serve, "+493012345678", DORA);
    assert_eq!(run.final_invite_status(), Some(486), "{}", run.context());
    thread::sleep(Duration::from_millis(200));
    assert!(phone.invites().is_empty(), "{:?}", phone.invites());
}

// ---------------------------------------------------------------------------
// 8. Real RTP both ways: baresip answers, SIPp plays from the trunk

/// baresip registered as `user` over UDP, answering automatically.
fn baresip(serve: &Serve, dir: &Path, user: &str) -> Baresip {
    Baresip::start(
        dir,
        &format!(
            "<sip:{user}@{};transport=udp>;auth_pass={user}-pw;answermode=auto;regint=60",
            serve.addr()
        ),
        "",
        &[],
    )
}

#[test]
fn baresip_and_sipp_exchange_rtp_through_the_relay() {
    assert!(
        Command::new("baresip").arg("-h").output().is_ok(),
        "baresip is not installed: `cargo xtask test` installs it (as root), or apt-get install baresip"
    );
    let serve = Serve::start(DIRECTORY, "");
    let dir = tempfile::tempdir().unwrap();
    let _phone = baresip(&serve, dir.path(), "bert");
    serve.wait_log(&["device registered", "user=bert"]);

    let caller = trunk_call(&serve, "uac.xml", BERT, &["-d", "3000"]).wait();
    caller.assert_ok();
    let ended = serve.wait_log(&["call ended"]);
    assert!(ended.contains("answered_by=bert"), "{ended}");
    let legs = leg_packets(&ended);
    assert_eq!(legs.len(), 2, "{ended}");
    let ((caller_in, caller_out), (callee_in, callee_out)) = (legs[0], legs[1]);
    // SIPp's g711a.pcap is a few seconds of audio; baresip sends for as
    // long as the call lasts (3 s = 150 packets).
    assert!(caller_in >= 50, "from SIPp into the relay: {ended}");
    assert!(callee_out >= 50, "from the relay to baresip: {ended}");
    assert!(callee_in >= 50, "from baresip into the relay: {ended}");
    assert!(caller_out >= 50, "from the relay to SIPp: {ended}");
}

// ---------------------------------------------------------------------------
// 9. SIGTERM ends calls cleanly

#[test]
fn sigterm_during_a_call_sends_bye_to_both_sides_and_exits_zero() {
    let mut serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", BERT, &[]);
    serve.wait_log(&["answered", "answered_by=bert"]);
    thread::sleep(Duration::from_millis(300));
    let status = serve.stop();
    let (caller, phone) = (caller.wait(), phone.wait());
    caller.assert_ok();
    phone.assert_ok();
    assert!(
        caller.received_request("BYE").is_some(),
        "{}",
        caller.context()
    );
    assert!(
        phone.received_request("BYE").is_some(),
        "{}",
        phone.context()
    );
    assert!(
        status.success(),
        "serve exited with {status:?}:\n{}",
        serve.log()
    );
    let log = serve.log();
    assert!(log.contains("end=shutdown"), "{log}");
    assert!(!log.contains("still open after the grace period"), "{log}");
}

#[test]
fn sigterm_while_ringing_cancels_the_phone_and_refuses_the_caller() {
    let mut serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = Sipp::start("bert rings", "uas_ring.xml", None, bert, &[]);
    let file = trunk_caller(&serve, OUTSIDE);
    let caller = trunk_call(&serve, "t_uac_any.xml", BERT, &["-inf", &file]);
    assert!(
        caller.wait_trace("SIP/2.0 180 Ringing", Duration::from_secs(10)),
        "the caller never heard it ring"
    );
    let status = serve.stop();
    let (caller, phone) = (caller.wait(), phone.wait());
    caller.assert_ok();
    phone.assert_ok();
    assert_eq!(
        caller.final_invite_status(),
        Some(503),
        "{}",
        caller.context()
    );
    assert!(
        phone.received_request("CANCEL").is_some(),
        "{}",
        phone.context()
    );
    assert!(
        status.success(),
        "serve exited with {status:?}:\n{}",
        serve.log()
    );
}

// ---------------------------------------------------------------------------
// Outside numbers go out on the trunk

#[test]
fn a_user_calling_an_outside_number_goes_out_on_the_trunk() {
    let serve = Serve::start(DIRECTORY, "");
    let carrier = Sipp::start(
        "carrier answers",
        "uas.xml",
        None,
        serve.trunk_port,
        &["-mi", LOCALHOST, "-mp", &media_port()],
    );
    let caller = Sipp::start(
        "anna dials 030 12345678",
        "t_uac_any.xml",
        Some(&serve.addr()),
        free_port(),
        &[
            "-inf",
            &credentials(&serve, "anna", "anna-pw"),
            "-s",
            "03012345678",
            "-auth_uri",
            &format!("03012345678@{}", serve.addr()),
            "-mi",
            LOCALHOST,
            "-mp",
            &media_port(),
        ],
    )
    .wait();
    let carrier = carrier.wait();
    caller.assert_ok();
    carrier.assert_ok();
    assert_eq!(
        caller.final_invite_status(),
        Some(200),
        "{}",
        caller.context()
    );
    let invite = carrier
        .received_request("INVITE")
        .expect("INVITE on the trunk");
    assert!(
        invite.start_line().starts_with(&format!(
            "INVITE sip:+493012345678@127.0.0.1:{} ",
            serve.trunk_port
        )),
        "{}",
        carrier.context()
    );
    // The carrier sees the user's number, not the user id.
    let from = invite.header("From").unwrap_or_default();
    assert!(from.contains("sip:201@"), "{}", carrier.context());
    assert!(
        in_range(invite.sdp_audio_port(), serve.rtp),
        "{}",
        carrier.context()
    );
    assert!(carrier.received_request("BYE").is_some());
}

// ---------------------------------------------------------------------------
// 10. Transfers, hold, prompts and taps, reloads, bad input

/// `[field0]` = the transfer target (uas_transfer.xml, uac_refer.xml).
fn transfer_target(serve: &Serve, number: &str) -> String {
    csv(serve, &format!("target{number}.csv"), number)
}

#[test]
fn the_callee_transfers_the_caller_blind() {
    let serve = Serve::start(DIRECTORY, "");
    let (bert, anna) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "anna", anna);
    let target = transfer_target(&serve, "201");
    let transferor = Sipp::start(
        "bert transfers to 201",
        "uas_transfer.xml",
        None,
        bert,
        &["-inf", &target, "-mi", LOCALHOST, "-mp", &media_port()],
    );
    let anna_phone = Sipp::start(
        "anna takes the transfer",
        "t_uas_hangup.xml",
        None,
        anna,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-d", "500"],
    );
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", BERT, &[]).wait();
    let transferor = transferor.wait();
    let anna_phone = anna_phone.wait();
    caller.assert_ok();
    transferor.assert_ok();
    anna_phone.assert_ok();
    // Bert got 202 and the final NOTIFY; Anna's phone shows the outside caller.
    assert!(
        transferor.received_statuses().contains(&202),
        "{}",
        transferor.context()
    );
    let notify = transferor.received_request("NOTIFY").expect("NOTIFY");
    assert!(notify.header("Event").is_some_and(|e| e.contains("refer")));
    // Anna's phone shows the original caller, not Bert.
    let invite = anna_phone
        .received_request("INVITE")
        .expect("INVITE at anna");
    assert!(
        invite
            .header("From")
            .is_some_and(|f| f.contains("sip:sipp@")),
        "{}",
        anna_phone.context()
    );
    let log = serve.wait_log(&["call ended", "answered_by=anna"]);
    assert!(serve.log().contains("blind transfer"), "{log}");
}

#[test]
fn the_caller_transfers_the_callee_blind() {
    let serve = Serve::start(DIRECTORY, "");
    let (bert, anna) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "anna", anna);
    let bert_phone = answering_phone("bert answers, then waits", bert);
    let anna_phone = Sipp::start(
        "anna takes the transfer",
        "t_uas_hangup.xml",
        None,
        anna,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-d", "500"],
    );
    let target = transfer_target(&serve, "201");
    let caller = trunk_call(&serve, "uac_refer.xml", BERT, &["-inf", &target]).wait();
    let anna_phone = anna_phone.wait();
    let bert_phone = bert_phone.wait();
    caller.assert_ok();
    anna_phone.assert_ok();
    bert_phone.assert_ok();
    // Bert stayed on the line; Anna took the caller's place, so her hangup
    // ends the call from the caller's side and Bert gets the BYE.
    assert!(
        bert_phone.received_request("BYE").is_some(),
        "{}",
        bert_phone.context()
    );
    let invite = anna_phone
        .received_request("INVITE")
        .expect("INVITE at anna");
    assert!(
        invite.header("From").is_some_and(|f| f.contains("202")),
        "the target sees the transferee:\n{}",
        anna_phone.context()
    );
    serve.wait_log(&["blind transfer", "from=202", "by=sipp", "to=201"]);
    serve.wait_log(&["call ended", "end=caller"]);
}

#[test]
fn hold_is_answered_recvonly_and_the_call_goes_on() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let caller = trunk_call(&serve, "uac_hold.xml", BERT, &["-d", "300"]).wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();
    let answers: Vec<_> = caller
        .received()
        .into_iter()
        .filter(|m| {
            m.status() == Some(200) && m.header("CSeq").is_some_and(|c| c.contains("2 INVITE"))
        })
        .collect();
    assert_eq!(answers.len(), 1, "{}", caller.context());
    // The relay's port stays the same; only the direction changes.
    assert!(
        in_range(answers[0].sdp_audio_port(), serve.rtp),
        "{}",
        caller.context()
    );
    serve.wait_log(&["re-offer answered", "direction=recvonly"]);
}

#[test]
fn a_modules_prompt_plays_first_and_its_tap_gets_both_legs() {
    let h = common::Harness::new();
    h.install("hello-0.1.0.cmod");
    h.create(
        "hello",
        "hi",
        "greeting = \"Hi\"\ntap = \"both\"\nprompt = \"hello.wav\"\n",
    );
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let caller = trunk_call(&serve, "uac.xml", BERT, &["-d", "1500"]).wait();
    let phone = phone.wait();
    caller.assert_ok();
    phone.assert_ok();
    // The prompt is early media: 183 with the relay's SDP before the 200.
    let statuses = caller.received_statuses();
    let early = statuses.iter().position(|s| *s == 183);
    let answered = statuses.iter().position(|s| *s == 200);
    assert!(
        early.is_some() && early < answered,
        "{statuses:?}\n{}",
        caller.context()
    );
    serve.wait_log(&["prompt played", "asset=hello.wav", "packets=20"]);
    // The module's display reached the phone.
    let invite = phone.received_request("INVITE").unwrap();
    assert!(
        invite.header("From").is_some_and(|f| f.contains("Hi: ")),
        "{}",
        phone.context()
    );
    // The module counted frames of both legs (written at hangup).
    serve.wait_log(&["call ended"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Value =
            serde_json::from_str(&h.ok(&["instance", "action", "hi", "media"])).unwrap();
        let call = counts
            .as_object()
            .and_then(|calls| calls.values().next().cloned());
        if let Some(call) = call {
            assert!(call["caller_frames"].as_u64().unwrap() > 10, "{counts}");
            assert!(call["callee_frames"].as_u64().unwrap() > 10, "{counts}");
            break;
        }
        assert!(Instant::now() < deadline, "no tapped frames: {counts}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_directory_reload_reaches_the_running_server() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let dnd = format!("{DIRECTORY}\n[state.bert]\ndnd = true\n");
    let file = serve.data.join("reloaded.toml");
    std::fs::write(&file, dnd).unwrap();
    sip_harness::callhost(&serve.data, &["directory", "load", file.to_str().unwrap()]);
    thread::sleep(Duration::from_millis(1200));
    let phone = SilentPhone::listen(bert);
    let run = trunk_call_from(&serve, OUTSIDE, BERT);
    assert_eq!(run.final_invite_status(), Some(486), "{}", run.context());
    assert!(phone.invites().is_empty(), "{:?}", phone.invites());
    serve.wait_log(&["directory reloaded"]);
    // The registration survived the reload: without DND he rings again.
    std::fs::write(&file, DIRECTORY).unwrap();
    sip_harness::callhost(&serve.data, &["directory", "load", file.to_str().unwrap()]);
    thread::sleep(Duration::from_millis(1200));
    drop(phone);
    let phone = answering_phone("bert answers", bert);
    let run = trunk_call_from(&serve, OUTSIDE, BERT);
    phone.wait().assert_ok();
    assert_eq!(run.final_invite_status(), Some(200), "{}", run.context());
}

#[test]
fn bad_sip_is_dropped_or_refused_and_the_server_keeps_serving() {
    use std::io::Write as _;
    let serve = Serve::start(DIRECTORY, "");
    let target = format!("{LOCALHOST}:{}", serve.port);
    let socket = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02\xff\xfe",
        b"INVITE sip:201@x SIP/2.0\r\n\r\n",
        b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 99999\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
        b"INVITE sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: one INVITE\r\nContent-Length: 0\r\n\r\n",
        &[b'A'; 60_000],
    ];
    for bytes in garbage {
        socket.send_to(bytes, &target).unwrap();
    }
    let mut tcp = std::net::TcpStream::connect(&target).unwrap();
    tcp.write_all(b"OPTIONS garbage\r\n\r\n\x00\xff").ok();
    drop(tcp);
    thread::sleep(Duration::from_millis(300));
    // Still serving: a phone registers and a call goes through.
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let run = trunk_call_from(&serve, OUTSIDE, BERT);
    phone.wait().assert_ok();
    assert_eq!(run.final_invite_status(), Some(200), "{}", run.context());
}

#[test]
fn rfc4733_keys_reach_the_modules_as_dtmf_events() {
    let h = common::Harness::new();
    h.install("hello-0.1.0.cmod");
    h.create("hello", "hi", "greeting = \"Hi\"\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = answering_phone("bert answers", bert);
    let caller = trunk_call(&serve, "uac_dtmf.xml", BERT, &["-d", "300"]).wait();
    phone.wait().assert_ok();
    caller.assert_ok();
    serve.wait_log(&["call ended"]);
    // dtmf_2833_1.pcap then dtmf_2833_5.pcap: one event per key press,
    // however many packets (and end retransmissions) each press had.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts: Value =
            serde_json::from_str(&h.ok(&["instance", "action", "hi", "media"])).unwrap();
        let keys = counts
            .as_object()
            .and_then(|calls| calls.values().next())
            .map(|call| call["dtmf"].as_str().unwrap_or_default().to_string());
        if let Some(keys) = keys {
            assert_eq!(keys, "15", "{counts}");
            break;
        }
        assert!(Instant::now() < deadline, "no DTMF recorded: {counts}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Anna has no call waiting and forwards to Fred when busy; Bert keeps
/// call waiting (the default); the group rings Anna and Bert, not Fred.
const BUSY_DIRECTORY: &str = r#"
home_country = "DE"

[[users]]
id = "anna"
name = "Anna Alpha"
numbers = ["201", "+4930123456201"]
password = "anna-pw"

[[users]]
id = "bert"
name = "Bert Beta"
numbers = ["202", "+4930123456202"]
password = "bert-pw"

[[users]]
id = "fred"
name = "Fred Phi"
numbers = ["206", "+4930123456206"]
password = "fred-pw"

[[groups]]
id = "team"
name = "Team"
numbers = ["300", "+4930123456300"]
members = ["anna", "bert", "fred"]
inactive = ["fred"]

[state.anna]
call_waiting = false
forward_busy = "206"
"#;

/// A trunk call that `phone` answers and that lasts `ms`; returns once the
/// host logged the answer, with the caller still running.
fn call_in_progress(serve: &Serve, number: &str, user: &str, port: u16, ms: &str) -> (Sipp, Sipp) {
    let phone = answering_phone(&format!("{user} answers the first call"), port);
    let caller = trunk_call(serve, "uac.xml", number, &["-d", ms]);
    serve.wait_log(&["answered", &format!("answered_by={user}")]);
    (phone, caller)
}

/// `user` (authenticated) calls `number`; any final answer passes.
pub(crate) fn user_call(serve: &Serve, user: &str, number: &str) -> SippRun {
    let auth_uri = format!("{number}@{}", serve.addr());
    let run = Sipp::start(
        &format!("{user} calls {number}"),
        "t_uac_any.xml",
        Some(&serve.addr()),
        free_port(),
        &[
            "-inf",
            &credentials(serve, user, &format!("{user}-pw")),
            "-s",
            number,
            "-auth_uri",
            &auth_uri,
            "-mi",
            LOCALHOST,
            "-mp",
            &media_port(),
        ],
    )
    .wait();
    run.assert_ok();
    run
}

#[test]
fn a_group_rings_every_active_member() {
    let serve = Serve::start(BUSY_DIRECTORY, "");
    let (anna, bert, fred) = (free_port(), free_port(), free_port());
    register(&serve, "anna", anna);
    register(&serve, "bert", bert);
    register(&serve, "fred", fred);
    let fred_phone = SilentPhone::listen(fred);
    let bert_phone = Sipp::start(
        "bert rings until cancelled",
        "uas_ring.xml",
        None,
        bert,
        &["-mi", LOCALHOST, "-mp", &media_port()],
    );
    let anna_phone = answering_phone("anna answers", anna);
    let caller = trunk_call(&serve, "uac.xml", "+4930123456300", &["-d", "300"]).wait();
    caller.assert_ok();
    anna_phone.wait().assert_ok();
    let bert_phone = bert_phone.wait();
    bert_phone.assert_ok();
    assert!(
        bert_phone.received_request("CANCEL").is_some(),
        "{}",
        bert_phone.context()
    );
    assert!(
        fred_phone.invites().is_empty(),
        "inactive member rang: {:?}",
        fred_phone.invites()
    );
    serve.wait_log(&["call ended", "answered_by=anna"]);
}

#[test]
fn a_user_in_a_call_gets_a_knock_or_the_busy_forward() {
    let serve = Serve::start(BUSY_DIRECTORY, "");
    let (bert, anna, fred) = (free_port(), free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "anna", anna);
    register(&serve, "fred", fred);

    // Bert is in a call; with call waiting a second call still reaches his
    // phone, which takes it too (SIPp answers a second call).
    let phone = Sipp::start(
        "bert answers two calls",
        "uas.xml",
        None,
        bert,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-m", "2"],
    );
    let first_caller = trunk_call(&serve, "uac.xml", "+4930123456202", &["-d", "4000"]);
    serve.wait_log(&["answered", "answered_by=bert"]);
    let run = user_call(&serve, "fred", "202");
    assert_eq!(run.final_invite_status(), Some(200), "{}", run.context());
    first_caller.wait().assert_ok();
    let phone = phone.wait();
    phone.assert_ok();
    let invites = phone
        .received()
        .into_iter()
        .filter(|m| m.start_line().starts_with("INVITE"))
        .count();
    assert_eq!(invites, 2, "{}", phone.context());

    // Anna is in a call without call waiting: the busy forward to Fred.
    let (first_phone, first_caller) =
        call_in_progress(&serve, "+4930123456201", "anna", anna, "4000");
    let fred_phone = answering_phone("fred takes the busy forward", fred);
    let run = user_call(&serve, "bert", "201");
    fred_phone.wait().assert_ok();
    assert_eq!(run.final_invite_status(), Some(200), "{}", run.context());
    serve.wait_log(&["call ended", "answered_by=fred"]);
    first_caller.wait().assert_ok();
    first_phone.wait().assert_ok();
}

// ---------------------------------------------------------------------------
// 11. Attended transfer: a hand-written phone (no SIPp scenario can hold two
// calls and put one's dialog into the other's REFER)

#[test]
fn attended_transfer_connects_the_caller_with_the_consulted_user() {
    let serve = Serve::start(DIRECTORY, "");
    let (bert, anna) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "anna", anna);
    let phone = HandPhone::bind(bert, &serve.addr()).named("bert");

    // Call 1: an outside caller reaches Bert (the transferor).
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", BERT, &[]);
    let invite = phone.expect("INVITE ");
    let contact1 = header(&invite, "Contact")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    phone.send(&phone.response(&invite, "200 OK", "hand1", &phone.sdp(free_ports(2))));
    phone.expect("ACK ");
    let (call1_id, host_tag1) = (
        header(&invite, "Call-ID").to_string(),
        tag_of(header(&invite, "From")).to_string(),
    );
    let call1_to = format!("{};tag=hand1", header(&invite, "To"));
    let call1_from = header(&invite, "From").to_string();

    // Call 2: Bert consults Anna (digest challenge on the INVITE).
    let anna_phone = Sipp::start(
        "anna is consulted, then moved",
        "uas_reinvite.xml",
        None,
        anna,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-d", "800"],
    );
    let call2_id = "consult-1@hand";
    let uri = format!("sip:201@{}", serve.addr());
    let sdp = phone.sdp(free_ports(2));
    let invite2 = |cseq: u32, branch: &str, auth: &str| {
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{bert};branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bert@{LOCALHOST}>;tag=hand2\r\nTo: <{uri}>\r\nCall-ID: {call2_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:bert@{LOCALHOST}:{bert}>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    phone.send(&invite2(1, "c2a", ""));
    let challenge = phone.expect("407");
    phone.send(&format!(
        "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{bert};branch=z9hG4bKc2a;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bert@{LOCALHOST}>;tag=hand2\r\nTo: {}\r\nCall-ID: {call2_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&challenge, "To")
    ));
    let nonce = header(&challenge, "Proxy-Authenticate")
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let ha1 = callhost_pbx::directory::digest_ha1("bert", "bert-pw");
    let response = md5_hex(&format!(
        "{ha1}:{nonce}:00000001:hand:auth:{}",
        md5_hex(&format!("INVITE:{uri}"))
    ));
    let auth = format!(
        "Proxy-Authorization: Digest username=\"bert\", realm=\"callhost\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"hand\"\r\n"
    );
    phone.send(&invite2(2, "c2b", &auth));
    let ok2 = phone.expect("200 OK");
    let host_tag2 = tag_of(header(&ok2, "To")).to_string();
    let contact2 = header(&ok2, "Contact")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    phone.send(&format!(
        "ACK {contact2} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{bert};branch=z9hG4bKc2ack;rport\r\nMax-Forwards: 70\r\nFrom: <sip:bert@{LOCALHOST}>;tag=hand2\r\nTo: {}\r\nCall-ID: {call2_id}\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok2, "To")
    ));

    // Bert transfers: REFER in call 1, Replaces naming his dialog of call 2.
    let replaces = format!("consult-1%40hand%3Bto-tag%3D{host_tag2}%3Bfrom-tag%3Dhand2");
    phone.send(&format!(
        "REFER {contact1} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{bert};branch=z9hG4bKref;rport\r\nMax-Forwards: 70\r\nFrom: {call1_to}\r\nTo: {call1_from}\r\nCall-ID: {call1_id}\r\nCSeq: 1 REFER\r\nContact: <sip:bert@{LOCALHOST}:{bert}>\r\nRefer-To: <sip:201@{LOCALHOST}?Replaces={replaces}>\r\nContent-Length: 0\r\n\r\n"
    ));
    phone.expect("202");
    let _ = host_tag1;

    // Anna was moved onto call 1's media (re-INVITE), then hangs up; the
    // outside caller gets the BYE.
    let anna_phone = anna_phone.wait();
    anna_phone.assert_ok();
    let reinvite = anna_phone
        .received()
        .into_iter()
        .filter(|m| m.start_line().starts_with("INVITE"))
        .nth(1)
        .unwrap_or_else(|| panic!("no re-INVITE at anna:\n{}", anna_phone.context()));
    assert!(
        in_range(reinvite.sdp_audio_port(), serve.rtp),
        "{}",
        anna_phone.context()
    );
    caller.wait().assert_ok();
    serve.wait_log(&["attended transfer", "partner=anna"]);
    serve.wait_log(&["call ended", "end=callee"]);
    // Bert got the NOTIFY of call 1 and the host ended both of his dialogs:
    // the replaced consultation (RFC 3891) and the transferred call.
    phone.drain(Duration::from_secs(3));
    let seen = phone.seen.borrow();
    let byes: Vec<&str> = seen
        .iter()
        .filter(|m| m.starts_with("BYE "))
        .map(|m| header(m, "Call-ID"))
        .collect();
    assert!(byes.contains(&call2_id), "{byes:?}");
    assert!(byes.contains(&call1_id.as_str()), "{byes:?}");
    assert!(
        seen.iter()
            .any(|m| m.starts_with("NOTIFY ") && m.contains("SIP/2.0 200")),
        "no final NOTIFY"
    );
}

#[test]
fn a_modules_reject_declines_the_call_with_603() {
    let h = common::Harness::new();
    h.install("hello-0.1.0.cmod");
    h.create(
        "hello",
        "hi",
        "numbers = [\"+4930123456202\"]\nreject = \"no calls today\"\n",
    );
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    let phone = SilentPhone::listen(bert);
    let run = trunk_call_from(&serve, OUTSIDE, BERT);
    assert_eq!(run.final_invite_status(), Some(603), "{}", run.context());
    thread::sleep(Duration::from_millis(200));
    assert!(phone.invites().is_empty(), "{:?}", phone.invites());
    // The call's one line says who decided, and why.
    serve.wait_log(&[
        "call ended",
        "outcome=rejected",
        "status=603",
        "modules=hi:reject",
        "reason=\"no calls today\"",
    ]);
}

#[test]
fn an_instance_created_while_serving_acts_on_the_next_call() {
    let h = common::Harness::new();
    h.install("hello-0.1.0.cmod");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let bert = free_port();
    register(&serve, "bert", bert);
    // No call has ended since the server started: the change must be
    // picked up on its own, not after a call.
    h.create(
        "hello",
        "hi",
        "numbers = [\"+4930123456202\"]\nreject = \"closed\"\n",
    );
    thread::sleep(Duration::from_millis(1200));
    let phone = SilentPhone::listen(bert);
    let run = trunk_call_from(&serve, OUTSIDE, BERT);
    assert_eq!(run.final_invite_status(), Some(603), "{}", run.context());
    assert!(phone.invites().is_empty(), "{:?}", phone.invites());
}

// ---------------------------------------------------------------------------
// 12. Overload

#[test]
fn past_its_setup_limit_the_host_answers_503_and_leaves_no_call_half_open() {
    // A module that takes 300 ms per call and room for three setups at
    // once: a burst of 30 calls is more than the host can set up.
    let h = common::Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.create("fault-module", "slow", "mode = \"slow\"\ndelay_ms = 300\n");
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "[sip.limits]\nmax_setups = 3\n");
    let bert = free_port();
    register(&serve, "bert", bert);
    let _phone = Sipp::start(
        "bert answers every call",
        "uas.xml",
        None,
        bert,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-m", "100"],
    );
    let file = trunk_caller(&serve, OUTSIDE);
    let calls = 30;
    let run = trunk_call(
        &serve,
        "t_uac_any.xml",
        BERT,
        &[
            "-inf",
            &file,
            "-m",
            &calls.to_string(),
            "-r",
            "100",
            "-l",
            "30",
            "-d",
            "200",
        ],
    )
    .wait();
    // Every call got its final answer (none timed out or was left open).
    run.assert_ok();
    let finals: Vec<Message> = run
        .received()
        .into_iter()
        .filter(|m| {
            m.header("CSeq").is_some_and(|c| c.contains("INVITE"))
                && m.status().is_some_and(|s| s >= 200)
        })
        .collect();
    let answered = finals.iter().filter(|m| m.status() == Some(200)).count();
    let refused: Vec<&Message> = finals.iter().filter(|m| m.status() == Some(503)).collect();
    assert_eq!(answered + refused.len(), calls, "{}", run.context());
    assert!(answered >= 3, "{answered} answered\n{}", run.context());
    assert!(!refused.is_empty(), "nothing refused\n{}", run.context());
    for message in &refused {
        assert!(message.header("Retry-After").is_some(), "{}", message.text);
    }
    serve.wait_log(&["request refused", "sip.limits.max_setups"]);
    // Every answered call ended in the host too; then it stops with none left.
    serve.wait_log_nth(
        &["call ended", "end="],
        answered - 1,
        Duration::from_secs(20),
    );
    let status = serve.stop();
    assert!(status.success(), "{status:?}");
    assert!(!serve.log().contains("calls still open"), "{}", serve.log());
    // Ended calls leave no dialog and no route behind.
    let stopped = serve.wait_log(&["SIP stopped"]);
    assert!(
        stopped.contains("dialogs=0") && stopped.contains("routes=0"),
        "{stopped}"
    );
}
