//! Attacks on a real `callhost serve` over real sockets: toll fraud, brute
//! force, digest tricks, input meant to panic the server, transfers that
//! reach into other calls, forged caller identities, media hijacking and
//! floods. The attacker is a hand-written SIP client ([`HandPhone`]) that
//! can send from other loopback addresses (127.0.0.2 is another host to the
//! server), write any header and compute digests itself. Each test asserts
//! what the host did, so it fails if the protection it attacks is taken
//! away. A test ignored as `BUG: ...` shows a real problem and fails until
//! it is fixed; one ignored as `needs ...` waits for work in another crate.

use crate::sip_harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sip_harness::{
    digest, header, headers, nonce_of, sdp_at, status_of, Dialog, HandPhone, Serve, Setup,
    LOCALHOST, WAIT,
};

/// Four users, passwords `<id>-pw`. Nobody has call waiting: a user who
/// is (or wrongly stays) in a call makes the next caller busy, so a leaked
/// "in a call" shows as 486 instead of a ringing phone.
const DIRECTORY: &str = r#"
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

[state.anna]
call_waiting = false

[state.bert]
call_waiting = false

[state.carl]
call_waiting = false

[state.dora]
call_waiting = false
"#;

/// The DIDs the carrier dials.
const ANNA_DID: &str = "+4930123456201";
const BERT_DID: &str = "+4930123456202";
const CARL_DID: &str = "+4930123456203";
/// An outside caller on the trunk.
const OUTSIDE: &str = "+49891234567";
/// A premium-rate number abroad: what toll fraud dials.
const PREMIUM: &str = "00491901234567";
/// The same service, dialled nationally.
const PREMIUM_NATIONAL: &str = "01901234567";
/// What every form of those numbers contains.
const PREMIUM_CORE: &str = "1901234567";

/// A little time for anything the host might still send.
const SETTLE: Duration = Duration::from_millis(1500);

fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// A phone of `user` on 127.0.0.1 (a free port), registered.
fn phone_of(serve: &Serve, user: &str) -> HandPhone {
    phone_at(serve, LOCALHOST, user)
}

/// A phone of `user` on `ip` (a free port), registered.
fn phone_at(serve: &Serve, ip: &str, user: &str) -> HandPhone {
    let phone = HandPhone::bind_at(ip, 0, &serve.addr()).named(user);
    let response = phone.register(user, &password(user));
    assert_eq!(status_of(&response), 200, "{user} registers:\n{response}");
    phone
}

/// The carrier's side of the trunk: whatever sends from, or listens on, the
/// trunk's address. Calls out arrive here, calls in leave from here.
fn trunk(serve: &Serve) -> HandPhone {
    HandPhone::bind(serve.trunk_port, &serve.addr()).named("carrier")
}

/// `user` (authenticated) calls `number` from `phone`; the INVITE is sent,
/// the answer not waited for.
fn dial(phone: &HandPhone, user: &str, number: &str) -> sip_harness::Invite {
    phone
        .invite(number, user, Some((user, &password(user))))
        .unwrap_or_else(|refusal| panic!("{user} dialling {number} was not challenged:\n{refusal}"))
}

/// The final answer's status for an INVITE, ACKed.
fn final_status(phone: &HandPhone, invite: &sip_harness::Invite) -> (u16, String) {
    let (response, _) = phone.answer_of(invite, Duration::from_secs(30));
    (status_of(&response), response)
}

/// `caller` calls `number` as `user` and `callee` answers: both dialogs.
fn connect(caller: &HandPhone, user: &str, number: &str, callee: &HandPhone) -> (Dialog, Dialog) {
    let invite = dial(caller, user, number);
    let (_, callee_dialog) = callee.pick_up();
    let (response, dialog) = caller.answer_of(&invite, WAIT);
    let dialog = dialog.unwrap_or_else(|| panic!("the call was not answered:\n{response}"));
    (dialog, callee_dialog)
}

/// A trunk call to `did` that `callee` answers: both dialogs.
fn connect_from_trunk(
    trunk: &HandPhone,
    from: &str,
    did: &str,
    callee: &HandPhone,
) -> (Dialog, Dialog) {
    let invite = trunk.invite(did, from, None).unwrap();
    let (_, callee_dialog) = callee.pick_up();
    let (response, dialog) = trunk.answer_of(&invite, WAIT);
    let dialog = dialog.unwrap_or_else(|| panic!("the trunk call was not answered:\n{response}"));
    (dialog, callee_dialog)
}

/// Ends a call from `from`'s side: 200 for the BYE, and the other side
/// got the host's BYE.
fn hang_up(from: &HandPhone, dialog: &Dialog, other: &HandPhone) {
    let response = from.bye(dialog);
    assert_eq!(status_of(&response), 200, "BYE:\n{response}");
    other.expect_and_ok("BYE ");
}

/// Nothing reached `phone` as an INVITE (within a short wait).
fn assert_no_invite(phone: &HandPhone, who: &str) {
    phone.drain(SETTLE);
    let invites = phone.invites_seen();
    assert!(invites.is_empty(), "{who} got an INVITE:\n{invites:#?}");
}

/// The carrier (the trunk socket) got an INVITE for `number_core`; refuses
/// it busy so the call ends.
fn carrier_gets_call(carrier: &HandPhone, number_core: &str) -> String {
    let invite = carrier.expect("INVITE sip:");
    let first = invite.lines().next().unwrap_or_default();
    assert!(
        first.contains(number_core),
        "the carrier got {first}, not a call to {number_core}"
    );
    carrier.refuse(&invite, "486 Busy Here");
    invite
}

/// Log lines of refusals of requests from `source` (`IP:PORT`) that
/// contain `part`, once at least `expected` are there (the log arrives on
/// its own pipe, a little after the answers) and a moment has shown no more.
fn refusal_lines(serve: &Serve, source: &str, part: &str, expected: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        serve
            .log()
            .lines()
            .filter(|line| line.contains("request refused") && line.contains(part))
            .filter(|line| line.contains(&format!("source={source} ")))
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while lines().len() < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    lines()
}

/// Waits until `count` calls have ended, then a moment: a call lets go of
/// its users (presence, limits) just after it writes its record, so a call
/// placed at once could still find them busy.
fn calls_over(serve: &Serve, count: usize) {
    serve.wait_log_nth(&["call ended"], count - 1, WAIT);
    thread::sleep(Duration::from_millis(500));
}

/// The server did not panic anywhere.
fn assert_no_panic(serve: &Serve) {
    let log = serve.log();
    assert!(
        !log.contains("panicked") && !log.contains("the call's task failed"),
        "a panic in the server:\n{log}"
    );
}

/// A REGISTER for `user` with a wrong password, reusing `nonce`: what a
/// guessing attacker sends. `None`: no answer within 1.5 s.
fn wrong_password(attacker: &HandPhone, user: &str, nonce: &str, guess: u32) -> Option<String> {
    let (request, branch) = wrong_password_request(attacker, user, nonce, guess);
    attacker.try_transact(&request, &branch, Duration::from_millis(1500))
}

/// The REGISTER of [`wrong_password`] and its branch.
fn wrong_password_request(
    attacker: &HandPhone,
    user: &str,
    nonce: &str,
    guess: u32,
) -> (String, String) {
    let authorization = digest(
        user,
        &format!("guess-{guess}"),
        "REGISTER",
        &attacker.registrar_uri(),
        nonce,
        guess,
        &attacker.unique("cn"),
    );
    attacker.register_request(user, &[attacker.contact()], 3600, Some(&authorization))
}

/// A fresh registrar nonce for `phone` (from a 401).
fn registrar_nonce(phone: &HandPhone, user: &str) -> String {
    let (request, branch) = phone.register_request(user, &[phone.contact()], 3600, None);
    let challenge = phone.transact(&request, &branch);
    assert_eq!(status_of(&challenge), 401, "{challenge}");
    nonce_of(&challenge)
}

/// The guard answers a blocked source at most once a second: wait that out.
fn past_the_pacing() {
    thread::sleep(Duration::from_millis(1100));
}

// ---------------------------------------------------------------------------
// 1. Toll fraud

/// A raw INVITE to `number` that pretends to come from the trunk: its top
/// Via (and Contact, From) name the trunk's address.
fn forged_trunk_invite(serve: &Serve, transport: &str, via_params: &str, number: &str) -> String {
    let trunk = format!("{LOCALHOST}:{}", serve.trunk_port);
    let sdp = sdp_at(LOCALHOST, 4000);
    format!(
        "INVITE sip:{number}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {trunk};branch=z9hG4bKforged{via_params}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{OUTSIDE}@{trunk}>;tag=forged\r\n\
         To: <sip:{number}@{server}>\r\n\
         Call-ID: forged-{transport}@carrier\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{OUTSIDE}@{trunk}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        server = serve.addr(),
    )
}

/// Reads SIP responses from a TCP stream until a final one.
fn final_tcp_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    let mut buffer = [0u8; 8192];
    while Instant::now() < deadline {
        if let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        let finals = text
            .split("SIP/2.0 ")
            .skip(1)
            .map(|rest| format!("SIP/2.0 {rest}"))
            .find(|message| status_of(message) >= 200 && message.contains("\r\n\r\n"));
        if let Some(message) = finals {
            return message;
        }
    }
    panic!("no final response over TCP; got:\n{text}");
}

#[test]
fn toll_fraud_over_tcp_naming_the_trunk_in_via_is_challenged() {
    let serve = Serve::start(DIRECTORY, "");
    let carrier = trunk(&serve);
    let mut stream = TcpStream::connect(serve.addr()).expect("connect over TCP");
    let invite = forged_trunk_invite(&serve, "TCP", "", PREMIUM);
    stream.write_all(invite.as_bytes()).unwrap();
    let response = final_tcp_response(&mut stream);
    // The trunk is its real address: this TCP connection is not it.
    assert_eq!(status_of(&response), 407, "{response}");
    assert_no_invite(&carrier, "the carrier");
}

#[test]
fn toll_fraud_over_udp_from_another_address_with_forged_received_is_challenged() {
    let serve = Serve::start(DIRECTORY, "");
    let carrier = trunk(&serve);
    let attacker = HandPhone::bind_at("127.0.0.2", 0, &serve.addr());
    let params = format!(";received={LOCALHOST};rport={}", serve.trunk_port);
    let invite = forged_trunk_invite(&serve, "UDP", &params, PREMIUM);
    let response = attacker
        .try_transact(&invite, "z9hG4bKforged", WAIT)
        .unwrap_or_else(|| {
            panic!(
                "the attacker got no answer; the carrier got:\n{}",
                carrier.seen.borrow().join("\n----\n")
            )
        });
    assert_eq!(status_of(&response), 407, "{response}");
    // The answer went to the real source: the forged received/rport were
    // replaced.
    let via = header(&response, "Via");
    assert!(via.contains("received=127.0.0.2"), "{via}");
    assert_no_invite(&carrier, "the carrier");
    assert!(
        carrier.seen.borrow().is_empty(),
        "the carrier got something: {:?}",
        carrier.seen.borrow()
    );
}

#[test]
fn a_trunk_call_to_an_outside_number_is_refused_unless_transit_is_allowed() {
    // No transit by default: the carrier's caller cannot dial out again.
    let serve = Serve::start(DIRECTORY, "");
    let carrier = trunk(&serve);
    let (response, _) = carrier.call(PREMIUM, OUTSIDE, None);
    assert_eq!(status_of(&response), 403, "{response}");
    assert_no_invite(&carrier, "the carrier");
    serve.wait_log(&["request refused", "allow_transit"]);
    drop(serve);

    let serve = Serve::start_with(
        DIRECTORY,
        Setup {
            trunk: "allow_transit = true",
            ..Setup::default()
        },
    );
    let carrier = trunk(&serve);
    let invite = carrier.invite(PREMIUM, OUTSIDE, None).unwrap();
    carrier_gets_call(&carrier, PREMIUM_CORE);
    let (status, response) = final_status(&carrier, &invite);
    assert_eq!(status, 486, "{response}");
}

/// 0190 numbers are denied to everyone but Bert; `11*` would deny 112 too.
const OUTBOUND: &str = "[sip.outbound]\ndeny = [\"0190*\", \"11*\"]\n\
                        [sip.outbound.users.bert]\nallow = [\"01901234567\"]\n";

#[test]
fn outbound_patterns_deny_per_user_with_exceptions() {
    let serve = Serve::start(DIRECTORY, OUTBOUND);
    let carrier = trunk(&serve);
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let (status, response) = final_status(&anna, &dial(&anna, "anna", PREMIUM_NATIONAL));
    assert_eq!(status, 403, "{response}");
    assert_no_invite(&carrier, "the carrier");
    let refused = serve.wait_log(&["request refused", "0190*"]);
    assert!(refused.contains("anna"), "{refused}");

    // Bert's own exception lets him dial the number denied to everyone.
    let bert = HandPhone::bind(0, &serve.addr()).named("bert");
    let allowed = dial(&bert, "bert", PREMIUM_NATIONAL);
    carrier_gets_call(&carrier, PREMIUM_CORE);
    let (status, response) = final_status(&bert, &allowed);
    assert_eq!(status, 486, "{response}");
}

#[test]
fn emergency_numbers_always_go_out_even_when_a_pattern_denies_them() {
    let serve = Serve::start(DIRECTORY, OUTBOUND);
    let carrier = trunk(&serve);
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let emergency = dial(&anna, "anna", "112");
    carrier_gets_call(&carrier, "112");
    let (status, response) = final_status(&anna, &emergency);
    assert_eq!(status, 486, "112 reached the carrier:\n{response}");
}

// ---------------------------------------------------------------------------
// 2. Brute force

#[test]
fn a_guessing_softphone_is_blocked_and_the_phones_behind_its_address_go_on() {
    let serve = Serve::start(DIRECTORY, "auth_failures = 3");
    // Three softphones on this machine, each its own user and port.
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let carl = phone_of(&serve, "carl");

    // Another program on the same machine guesses Anna's password.
    let attacker = HandPhone::bind(0, &serve.addr());
    let nonce = registrar_nonce(&attacker, "anna");
    let mut refused = 0;
    for guess in 1..=3 {
        let response = wrong_password(&attacker, "anna", &nonce, guess)
            .unwrap_or_else(|| panic!("guess {guess} got no answer"));
        assert_eq!(status_of(&response), 403, "{response}");
        refused += 1;
    }
    serve.wait_log(&["WARN", "source 127.0.0.1 blocked"]);
    // Blocked: one 403 a second, the rest dropped unanswered.
    let blocked = wrong_password(&attacker, "anna", &nonce, 4).expect("the first blocked answer");
    assert_eq!(status_of(&blocked), 403, "{blocked}");
    refused += 1;
    // Three more right away, each sent once (a retransmission would be
    // another request to the guard).
    let mut unanswered = 0;
    for guess in 5..=7 {
        let (request, branch) = wrong_password_request(&attacker, "anna", &nonce, guess);
        match attacker.try_once(&request, &branch, Duration::from_millis(200)) {
            Some(response) => {
                assert_eq!(status_of(&response), 403, "{response}");
                refused += 1;
            }
            None => unanswered += 1,
        }
    }
    assert!(unanswered > 0, "every blocked guess was answered at once");
    past_the_pacing();
    let after = wrong_password(&attacker, "anna", &nonce, 8).expect("a paced answer");
    assert_eq!(status_of(&after), 403, "{after}");
    refused += 1;

    // The registered phones refresh and call as before.
    for (phone, user) in [(&anna, "anna"), (&bert, "bert"), (&carl, "carl")] {
        let response = phone.register(user, &password(user));
        assert_eq!(status_of(&response), 200, "{user} refreshes:\n{response}");
    }
    let (caller, _) = connect(&anna, "anna", "202", &bert);
    hang_up(&anna, &caller, &bert);
    let (caller, _) = connect(&bert, "bert", "203", &carl);
    hang_up(&bert, &caller, &carl);

    // A new program there, even with the right password, is refused.
    past_the_pacing();
    let newcomer = HandPhone::bind(0, &serve.addr()).named("dora");
    let response = newcomer.register("dora", "dora-pw");
    assert_eq!(status_of(&response), 403, "{response}");

    // Every refusal the attacker got is one log line; the dropped ones are
    // counted in the next line instead.
    let lines = refusal_lines(&serve, &attacker.addr(), "", refused);
    assert_eq!(lines.len(), refused, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains(&format!("{unanswered} more dropped unanswered"))),
        "no line counts the {unanswered} dropped guesses: {lines:#?}"
    );
    let newcomer_lines = refusal_lines(&serve, &newcomer.addr(), "", 1);
    assert_eq!(newcomer_lines.len(), 1, "{newcomer_lines:#?}");
    assert!(newcomer_lines[0].contains("blocked"), "{newcomer_lines:#?}");
}

#[test]
fn guesses_for_one_user_from_many_addresses_block_that_user_only() {
    let serve = Serve::start(DIRECTORY, "auth_failures_per_user = 3");
    let anna = phone_of(&serve, "anna");
    for (guess, ip) in (1..).zip(["127.0.0.2", "127.0.0.3", "127.0.0.4"]) {
        let attacker = HandPhone::bind_at(ip, 0, &serve.addr());
        let nonce = registrar_nonce(&attacker, "anna");
        let response = wrong_password(&attacker, "anna", &nonce, guess).expect("an answer");
        assert_eq!(status_of(&response), 403, "{response}");
    }
    serve.wait_log(&["request refused", "user blocked"]);

    // Anna from an address that never failed: refused all the same.
    let fresh = HandPhone::bind_at("127.0.0.5", 0, &serve.addr()).named("anna");
    let response = fresh.register("anna", "anna-pw");
    assert_eq!(status_of(&response), 403, "{response}");
    // Bert from there is nobody's suspect.
    let bert = phone_at(&serve, "127.0.0.5", "bert");
    // Anna's phone, registered before, goes on: it refreshes and calls.
    let response = anna.register("anna", "anna-pw");
    assert_eq!(status_of(&response), 200, "{response}");
    let (caller, _) = connect(&anna, "anna", "202", &bert);
    hang_up(&anna, &caller, &bert);
}

#[test]
fn failures_from_the_trunks_address_never_block_the_trunk() {
    let serve = Serve::start(DIRECTORY, "auth_failures = 2");
    let bert = phone_of(&serve, "bert");
    // Someone on the carrier's host (another port) guesses passwords.
    let attacker = HandPhone::bind(0, &serve.addr());
    let nonce = registrar_nonce(&attacker, "bert");
    for guess in 1..=2 {
        let response = wrong_password(&attacker, "bert", &nonce, guess).expect("an answer");
        assert_eq!(status_of(&response), 403, "{response}");
    }
    serve.wait_log(&["source 127.0.0.1 blocked"]);
    let blocked = wrong_password(&attacker, "bert", &nonce, 3).expect("an answer");
    assert_eq!(status_of(&blocked), 403, "{blocked}");
    serve.wait_log(&["request refused", "blocked after repeated"]);

    // The carrier's own calls still come in.
    let carrier = trunk(&serve);
    let (caller, _) = connect_from_trunk(&carrier, OUTSIDE, BERT_DID, &bert);
    hang_up(&carrier, &caller, &bert);
}

// ---------------------------------------------------------------------------
// 3. Digest

#[test]
fn a_digest_for_another_uri_is_refused() {
    let serve = Serve::start(DIRECTORY, "");
    let carrier = trunk(&serve);
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");

    // A valid digest for a call to 202, on an INVITE to a premium number.
    let sdp = anna.sdp(anna.media_port());
    let mut invite = anna.new_invite(PREMIUM, "anna");
    let challenge = anna.challenge(&invite, &sdp);
    assert_eq!(status_of(&challenge), 407, "{challenge}");
    let other_uri = format!("sip:202@{}", serve.addr());
    let authorization = digest(
        "anna",
        "anna-pw",
        "INVITE",
        &other_uri,
        &nonce_of(&challenge),
        1,
        "cn1",
    );
    anna.send_authorized(&mut invite, &authorization, &sdp);
    let (status, response) = final_status(&anna, &invite);
    assert_eq!(status, 403, "{response}");
    assert_no_invite(&carrier, "the carrier");
    serve.wait_log(&["request refused", "is not the Request-URI"]);

    // The same for a REGISTER: credentials for another registrar URI.
    let nonce = registrar_nonce(&anna, "anna");
    let authorization = digest(
        "anna",
        "anna-pw",
        "REGISTER",
        "sip:127.0.0.1:9",
        &nonce,
        1,
        "cn2",
    );
    let (request, branch) =
        anna.register_request("anna", &[anna.contact()], 3600, Some(&authorization));
    let response = anna.transact(&request, &branch);
    assert_eq!(status_of(&response), 403, "{response}");
}

/// A captured request sent again from `attacker`: only the branch and the
/// CSeq number differ.
fn replay(attacker: &HandPhone, captured: &str) -> String {
    let branch = attacker.unique("z9hG4bKreplay");
    let text: String = captured
        .split("\r\n")
        .map(|line| {
            if line.starts_with("Via:") {
                let old = line
                    .split("branch=")
                    .nth(1)
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap();
                line.replace(old, &branch)
            } else if line.starts_with("CSeq:") {
                "CSeq: 99 REGISTER".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    attacker.transact(&text, &branch)
}

/// A trunk call to `did` rings `expected` (which refuses it) and not
/// `elsewhere`: where the user's registration points.
fn registration_points_at(serve: &Serve, did: &str, expected: &HandPhone, elsewhere: &HandPhone) {
    let carrier = trunk(serve);
    let invite = carrier.invite(did, OUTSIDE, None).unwrap();
    let rang = expected.expect("INVITE ");
    expected.refuse(&rang, "486 Busy Here");
    let (status, response) = final_status(&carrier, &invite);
    assert_eq!(status, 486, "{response}");
    assert_no_invite(elsewhere, "the attacker");
}

#[test]
fn a_captured_register_replayed_verbatim_gets_a_fresh_challenge() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let captured = anna.register_with("anna", "anna-pw", &[anna.contact()], 3600);
    assert_eq!(status_of(&captured.response), 200, "{}", captured.response);

    // Replayed from another port of the same address (so the nonce, bound
    // to the address, is still one the server issued there).
    let attacker = HandPhone::bind(0, &serve.addr()).named("anna");
    let response = replay(&attacker, &captured.request);
    assert_eq!(status_of(&response), 401, "{response}");
    let fresh = nonce_of(&response);
    assert_ne!(fresh, nonce_of_authorization(&captured.authorization));
    assert!(
        header(&response, "WWW-Authenticate").contains("stale=true"),
        "{response}"
    );
    serve.wait_log(&["request refused", "replayed nonce count"]);
    registration_points_at(&serve, ANNA_DID, &anna, &attacker);
}

fn nonce_of_authorization(authorization: &str) -> String {
    authorization
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string()
}

#[test]
fn a_nonce_used_again_for_other_contacts_does_not_move_the_registration() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let captured = anna.register_with("anna", "anna-pw", &[anna.contact()], 3600);
    assert_eq!(status_of(&captured.response), 200, "{}", captured.response);
    let nonce = nonce_of_authorization(&captured.authorization);

    // A correct digest with the next nonce count, for the attacker's Contact.
    let attacker = HandPhone::bind(0, &serve.addr()).named("anna");
    let authorization = digest(
        "anna",
        "anna-pw",
        "REGISTER",
        &attacker.registrar_uri(),
        &nonce,
        2,
        "evil",
    );
    let (request, branch) =
        attacker.register_request("anna", &[attacker.contact()], 3600, Some(&authorization));
    let response = attacker.transact(&request, &branch);
    assert_eq!(status_of(&response), 401, "{response}");
    serve.wait_log(&[
        "request refused",
        "reused for a REGISTER with other Contacts",
    ]);
    registration_points_at(&serve, ANNA_DID, &anna, &attacker);

    // The phone itself goes on with that nonce and its own Contact.
    let authorization = digest(
        "anna",
        "anna-pw",
        "REGISTER",
        &anna.registrar_uri(),
        &nonce,
        2,
        "own",
    );
    let (request, branch) =
        anna.register_request("anna", &[anna.contact()], 3600, Some(&authorization));
    let response = anna.transact(&request, &branch);
    assert_eq!(status_of(&response), 200, "{response}");
}

#[test]
fn a_flood_of_challenges_does_not_invalidate_a_pending_one() {
    const SOCKETS: usize = 100;
    const TOTAL: usize = 20_000;
    let serve = Serve::start(DIRECTORY, "");
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let nonce = registrar_nonce(&anna, "anna");

    // Others ask for 20,000 challenges from 100 ports, a few hundred in
    // flight at a time so that the server really answers them.
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
            socket.set_nonblocking(true).unwrap();
            socket
        })
        .collect();
    let mut sent = 0;
    let mut challenges = 0;
    let mut buffer = [0u8; 4096];
    let mut read_all = |challenges: &mut usize| {
        for socket in &sockets {
            while let Ok(n) = socket.recv(&mut buffer) {
                if buffer[..n].starts_with(b"SIP/2.0 401") {
                    *challenges += 1;
                }
            }
        }
    };
    while sent < TOTAL {
        for (index, socket) in sockets.iter().enumerate() {
            let port = socket.local_addr().unwrap().port();
            let request = format!(
                "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bKflood{sent}\r\nMax-Forwards: 70\r\nFrom: <sip:user{index}@{server}>;tag=f{sent}\r\nTo: <sip:user{index}@{server}>\r\nCall-ID: flood-{sent}@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:user{index}@{LOCALHOST}:{port}>\r\nContent-Length: 0\r\n\r\n",
                server = serve.addr()
            );
            socket.send_to(request.as_bytes(), serve.addr()).unwrap();
            sent += 1;
        }
        let until = Instant::now() + Duration::from_millis(500);
        while challenges + 2 * SOCKETS < sent && Instant::now() < until {
            read_all(&mut challenges);
            thread::sleep(Duration::from_millis(2));
        }
    }
    let until = Instant::now() + Duration::from_secs(3);
    while challenges < sent && Instant::now() < until {
        read_all(&mut challenges);
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        challenges >= TOTAL * 9 / 10,
        "only {challenges} of {TOTAL} challenges came back"
    );

    // The first challenge still holds.
    let authorization = digest(
        "anna",
        "anna-pw",
        "REGISTER",
        &anna.registrar_uri(),
        &nonce,
        1,
        "late",
    );
    let (request, branch) =
        anna.register_request("anna", &[anna.contact()], 3600, Some(&authorization));
    let response = anna.transact(&request, &branch);
    assert_eq!(
        status_of(&response),
        200,
        "after {challenges} challenges to others:\n{response}"
    );
}

// ---------------------------------------------------------------------------
// 4. No panic reachable from the network

#[test]
fn malformed_refer_to_values_are_refused_and_the_call_goes_on() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let (anna_dialog, bert_dialog) = connect(&anna, "anna", "202", &bert);

    let long = format!("<sip:{}@{LOCALHOST}>", "2".repeat(5000));
    let nasty = [
        "<sip:201@h?Replaces=%é%3Bto-tag%3D€>".to_string(),
        "<sip:%€@h>".to_string(),
        long,
    ];
    for refer_to in &nasty {
        for (phone, dialog, who) in [
            (&anna, &anna_dialog, "caller"),
            (&bert, &bert_dialog, "callee"),
        ] {
            let response = phone.refer(dialog, refer_to);
            let status = status_of(&response);
            assert!(
                (400..500).contains(&status),
                "the {who}'s REFER to {:.60} got:\n{response}",
                refer_to
            );
        }
    }
    // Still connected: nobody got a BYE, and BYE still works.
    for phone in [&anna, &bert] {
        phone.drain(Duration::from_millis(300));
        assert!(
            !phone.seen.borrow().iter().any(|m| m.starts_with("BYE ")),
            "the call was ended"
        );
    }
    hang_up(&anna, &anna_dialog, &bert);
    calls_over(&serve, 1);
    assert_no_panic(&serve);

    // Bert is not left "in a call": the next call rings his phone.
    let carrier = trunk(&serve);
    let (caller, _) = connect_from_trunk(&carrier, OUTSIDE, BERT_DID, &bert);
    hang_up(&carrier, &caller, &bert);
    assert_no_panic(&serve);
}

/// A ringing phone's side of a call that ends before it answers: CANCEL
/// (200, then 487 for the INVITE) or BYE (200). Returns which came.
fn take_the_end(phone: &HandPhone, invite: &str, tag: &str) -> String {
    let end = phone
        .expect_where(
            |first| first.starts_with("CANCEL ") || first.starts_with("BYE "),
            WAIT,
        )
        .unwrap_or_else(|| panic!("the ringing phone got neither CANCEL nor BYE"));
    phone.send(&phone.response(&end, "200 OK", tag, ""));
    if end.starts_with("CANCEL ") {
        phone.send(&phone.response(invite, "487 Request Terminated", tag, ""));
        phone.expect("ACK ");
    }
    end.split(' ').next().unwrap().to_string()
}

#[test]
fn a_panicking_call_ends_cleanly_and_leaks_neither_presence_nor_ports() {
    let serve = Serve::start_with(
        DIRECTORY,
        Setup {
            // calls_per_user = 1: a call slot left behind would refuse
            // Anna's next call.
            sip: "[sip.limits]\ncalls_per_user = 1\n",
            env: &[("CALLHOST_SIP_PANIC_ON", BERT_DID)],
            ..Setup::default()
        },
    );
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    // The relay has 12 ports: three calls. Five failed calls in a row
    // would run out if any of them kept its ports.
    for round in 0..5 {
        let invite = dial(&anna, "anna", BERT_DID);
        let rang = bert.expect("INVITE ");
        let tag = bert.unique("pt");
        bert.ring(&rang, &tag);
        take_the_end(&bert, &rang, &tag);
        let (status, response) = final_status(&anna, &invite);
        assert!(
            (500..600).contains(&status),
            "round {round}: the caller got\n{response}"
        );
        serve.wait_log_nth(&["the call's task failed"], round, WAIT);
        calls_over(&serve, round + 1);
    }
    // Neither Bert nor Anna is busy, and there are ports for a call.
    // (Bert hangs up: Anna's phone takes the BYE.)
    let (_, callee) = connect(&anna, "anna", "202", &bert);
    hang_up(&bert, &callee, &anna);
    calls_over(&serve, 6);
    let carrier = trunk(&serve);
    let (caller, _) = connect_from_trunk(&carrier, OUTSIDE, ANNA_DID, &anna);
    hang_up(&carrier, &caller, &anna);
    serve.wait_log(&["call ended", "answered_by=anna"]);
}

// ---------------------------------------------------------------------------
// 5. Transfers

/// A Refer-To for an attended transfer that replaces `call_id` with these
/// tags.
fn replaces(call_id: &str, to_tag: &str, from_tag: &str) -> String {
    let escape = |text: &str| text.replace('@', "%40");
    format!(
        "<sip:201@{LOCALHOST}?Replaces={}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}>",
        escape(call_id)
    )
}

/// The REFER was refused: a 4xx, or 202 and then a NOTIFY whose sipfrag is
/// 481.
fn assert_transfer_refused(phone: &HandPhone, response: &str) {
    let status = status_of(response);
    if (400..500).contains(&status) {
        return;
    }
    assert_eq!(status, 202, "{response}");
    let notify = phone.expect_and_ok("NOTIFY ");
    assert!(
        notify.contains("SIP/2.0 481"),
        "the transfer was not refused:\n{notify}"
    );
}

/// No BYE or re-INVITE reached any of `phones`: their calls are as they were.
fn assert_calls_untouched(phones: &[&HandPhone]) {
    for phone in phones {
        phone.drain(SETTLE);
        let touched: Vec<String> = phone
            .seen
            .borrow()
            .iter()
            .filter(|m| m.starts_with("BYE ") || m.starts_with("INVITE "))
            .filter(|m| {
                headers(m, "To")
                    .first()
                    .is_some_and(|to| to.contains("tag="))
            })
            .cloned()
            .collect();
        let byes = phone
            .seen
            .borrow()
            .iter()
            .filter(|m| m.starts_with("BYE "))
            .count();
        assert!(
            touched.is_empty() && byes == 0,
            "{} was disturbed:\n{touched:#?}",
            phone.user
        );
    }
}

#[test]
fn replaces_naming_a_call_the_transferor_is_not_in_is_refused() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let carl = phone_of(&serve, "carl");
    let carrier = trunk(&serve);
    // Call 1: Anna and Bert. Call 2: an outside caller and Carl.
    let (anna_dialog, _) = connect(&anna, "anna", "202", &bert);
    let (carrier_dialog, carl_dialog) = connect_from_trunk(&carrier, OUTSIDE, CARL_DID, &carl);

    // Anna knows (guessed, sniffed) both dialogs of call 2 exactly.
    let targets = [
        replaces(
            &carl_dialog.call_id,
            carl_dialog.local_tag(),
            carl_dialog.remote_tag(),
        ),
        replaces(
            &carrier_dialog.call_id,
            carrier_dialog.remote_tag(),
            carrier_dialog.local_tag(),
        ),
    ];
    for target in &targets {
        let response = anna.refer(&anna_dialog, target);
        assert_transfer_refused(&anna, &response);
    }
    serve.wait_log(&[
        "attended transfer refused",
        "not from the replaced dialog's party",
    ]);
    assert_calls_untouched(&[&bert, &carl, &carrier]);
    hang_up(&carrier, &carrier_dialog, &carl);
    hang_up(&anna, &anna_dialog, &bert);
}

#[test]
fn replaces_with_a_wrong_tag_is_refused() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    // Bert is in two calls: the outside caller's, and one with Anna.
    let (carrier_dialog, bert_in_call1) = connect_from_trunk(&carrier, OUTSIDE, BERT_DID, &bert);
    let (bert_in_call2, anna_dialog) = connect(&bert, "bert", "201", &anna);

    let target = replaces(
        &bert_in_call2.call_id,
        "not-the-tag",
        bert_in_call2.local_tag(),
    );
    let response = bert.refer(&bert_in_call1, &target);
    assert_transfer_refused(&bert, &response);
    serve.wait_log(&["attended transfer refused", "does not name a dialog"]);
    assert_calls_untouched(&[&anna, &carrier]);
    hang_up(&anna, &anna_dialog, &bert);
    hang_up(&carrier, &carrier_dialog, &bert);
}

#[test]
fn the_trunk_side_cannot_transfer_a_user_to_an_outside_number_unless_allowed() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    let (carrier_dialog, _) = connect_from_trunk(&carrier, OUTSIDE, BERT_DID, &bert);
    let refer_to = format!("<sip:{PREMIUM}@{LOCALHOST}>");
    let response = carrier.refer(&carrier_dialog, &refer_to);
    assert_eq!(status_of(&response), 403, "{response}");
    assert_no_invite(&carrier, "the carrier");
    serve.wait_log(&["request refused", "allow_refer_out"]);
    // The call goes on.
    hang_up(&carrier, &carrier_dialog, &bert);
    drop(serve);

    let serve = Serve::start_with(
        DIRECTORY,
        Setup {
            trunk: "allow_refer_out = true",
            ..Setup::default()
        },
    );
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    let (carrier_dialog, _) = connect_from_trunk(&carrier, OUTSIDE, BERT_DID, &bert);
    let response = carrier.refer(&carrier_dialog, &refer_to);
    assert_eq!(status_of(&response), 202, "{response}");
    carrier_gets_call(&carrier, PREMIUM_CORE);
}

// ---------------------------------------------------------------------------
// 6. Caller identity

/// A user's stored call list.
fn call_list(serve: &Serve, user: &str) -> Vec<Value> {
    let text = sip_harness::callhost(&serve.data, &["calls", user, "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A trunk call from `from` to Bert's DID that Bert answers, then hung up
/// (the `round`th call of the test); Bert's INVITE and the Call-ID.
fn answered_trunk_call(
    serve: &Serve,
    carrier: &HandPhone,
    bert: &HandPhone,
    from: &str,
    round: usize,
) -> (String, String) {
    let invite = carrier.invite(BERT_DID, from, None).unwrap();
    let (rang, _) = bert.pick_up();
    let (response, dialog) = carrier.answer_of(&invite, WAIT);
    assert_eq!(status_of(&response), 200, "{response}");
    hang_up(carrier, &dialog.unwrap(), bert);
    calls_over(serve, round + 1);
    (rang, invite.call_id)
}

/// Bert's "in" entry for the call `call_id`.
fn incoming_entry(serve: &Serve, call_id: &str) -> Value {
    let calls = call_list(serve, "bert");
    calls
        .iter()
        .find(|entry| entry["call_id"] == call_id && entry["direction"] == "in")
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {call_id}: {calls:#?}"))
}

#[test]
fn a_trunk_caller_using_an_internal_number_is_not_taken_for_the_user() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    let mut calls = Vec::new();
    for (round, forged) in ["201", ANNA_DID].into_iter().enumerate() {
        let (rang, call_id) = answered_trunk_call(&serve, &carrier, &bert, forged, round);
        let from = header(&rang, "From");
        assert!(!from.contains("Anna"), "Bert's phone shows Anna: {from}");
        calls.push(call_id);
    }
    let anna_calls = call_list(&serve, "anna");
    assert!(
        anna_calls.iter().all(|entry| entry["direction"] != "out"),
        "Anna has calls she did not make: {anna_calls:#?}"
    );
    for call_id in &calls {
        let entry = incoming_entry(&serve, call_id);
        assert!(
            entry["name"]
                .as_str()
                .is_none_or(|name| !name.contains("Anna")),
            "an outside caller was shown as Anna: {entry}"
        );
    }
    // Anna's DID came in as the outside number it is (national form).
    let entry = incoming_entry(&serve, &calls[1]);
    assert_eq!(entry["number"], "030123456201", "{entry}");
}

/// Eve's name and an address book entry try to break the headers they
/// end up in.
const HOSTILE_NAMES: &str = r#"
home_country = "DE"

[[users]]
id = "bert"
name = "Bert Beta"
numbers = ["202", "+4930123456202"]
password = "bert-pw"

[[users]]
id = "eve"
name = "Eve \"Q\" \\ x\r\nP-Asserted-Identity: <sip:boss@evil>"
numbers = ["207"]
password = "eve-pw"

[[contacts]]
first_name = "Mal\"lory\r\nX-Injected: yes"
last_name = "\\"
numbers = ["+49891234567"]
"#;

/// The header lines of a message (its head, after the start line).
fn header_lines(message: &str) -> Vec<&str> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\r\n")
        .skip(1)
        .collect()
}

/// An INVITE whose caller shows as `expected` (reduced to safe text).
fn assert_safe_caller(invite: &str, expected: &str) {
    for line in header_lines(invite) {
        let name = line.split(':').next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a broken header line {line:?} in:\n{invite}"
        );
        assert!(!line.starts_with("X-Injected"), "{invite}");
    }
    let asserted = headers(invite, "P-Asserted-Identity");
    assert_eq!(asserted.len(), 1, "{invite}");
    for value in [header(invite, "From"), asserted[0]] {
        assert_eq!(value.matches('"').count(), 2, "unbalanced quotes: {value}");
        assert!(!value.contains('\\'), "{value}");
        let display = value.split('"').nth(1).unwrap_or_default();
        assert!(display.contains(expected), "{display:?} lacks {expected:?}");
    }
}

#[test]
fn hostile_display_names_reach_the_callee_as_safe_text() {
    let serve = Serve::start(HOSTILE_NAMES, "");
    let bert = phone_of(&serve, "bert");
    let eve = HandPhone::bind(0, &serve.addr()).named("eve");
    let invite = dial(&eve, "eve", "202");
    let rang = bert.expect("INVITE ");
    assert_safe_caller(&rang, "Eve");
    bert.refuse(&rang, "486 Busy Here");
    final_status(&eve, &invite);

    let carrier = trunk(&serve);
    let invite = carrier.invite(BERT_DID, OUTSIDE, None).unwrap();
    let rang = bert.expect("INVITE ");
    assert_safe_caller(&rang, "Mal");
    bert.refuse(&rang, "486 Busy Here");
    final_status(&carrier, &invite);
}

// ---------------------------------------------------------------------------
// 7. Media

/// An RTP packet (PCMA, 20 ms).
fn rtp(ssrc: u32, sequence: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 8];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(&[0xd5; 160]);
    packet
}

/// Sends `count` packets of `ssrc` from `socket` to `to`, 20 ms apart.
fn send_rtp(socket: &UdpSocket, to: &str, ssrc: u32, first: u16, count: u16) {
    for sequence in first..first + count {
        socket.send_to(&rtp(ssrc, sequence), to).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
}

/// Packets received on `socket` in `time`, by SSRC.
fn received_rtp(socket: &UdpSocket, time: Duration) -> BTreeMap<u32, usize> {
    let mut by_ssrc = BTreeMap::new();
    let until = Instant::now() + time;
    let mut buffer = [0u8; 2048];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buffer) {
            if n >= 12 {
                let ssrc = u32::from_be_bytes(buffer[8..12].try_into().unwrap());
                *by_ssrc.entry(ssrc).or_default() += 1;
            }
        }
    }
    by_ssrc
}

/// The audio port of a message's SDP.
fn sdp_port(message: &str) -> u16 {
    message
        .lines()
        .find_map(|line| line.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no audio port in:\n{message}"))
}

/// A counter of one leg in a "call ended" line (`leg` 0: caller, 1: callee).
fn leg_counter(line: &str, leg: usize, name: &str) -> Option<u64> {
    let key = ["rtp_caller=", "rtp_callee="][leg];
    let counters = line.split(key).nth(1)?.split_whitespace().next()?;
    counters
        .split(',')
        .find_map(|pair| pair.strip_prefix(&format!("{name}:")))?
        .parse()
        .ok()
}

#[test]
fn rtp_from_a_third_party_is_not_relayed_after_the_caller_latched() {
    const CALLER: u32 = 0x1111_1111;
    const INTRUDER: u32 = 0x6666_6666;
    const CALLEE: u32 = 0x2222_2222;
    let serve = Serve::start(DIRECTORY, "");
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    let invite = carrier.invite(BERT_DID, OUTSIDE, None).unwrap();
    let (rang, _) = bert.pick_up();
    let (answer, dialog) = carrier.answer_of(&invite, WAIT);
    let dialog = dialog.expect("answered");
    let caller_side = format!("{LOCALHOST}:{}", sdp_port(&answer));
    let callee_side = format!("{LOCALHOST}:{}", sdp_port(&rang));

    // The caller's stream latches; Bert hears it.
    send_rtp(&carrier.media, &caller_side, CALLER, 1, 25);
    let heard = received_rtp(&bert.media, Duration::from_millis(300));
    assert!(heard.get(&CALLER).copied().unwrap_or(0) >= 10, "{heard:?}");

    // Someone else sends to the caller's relay port.
    let intruder = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    intruder
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    send_rtp(&intruder, &caller_side, INTRUDER, 1000, 25);
    let heard = received_rtp(&bert.media, Duration::from_millis(300));
    assert_eq!(
        heard.get(&INTRUDER),
        None,
        "Bert heard the intruder: {heard:?}"
    );

    // Bert's answer still goes to the caller, not to the intruder.
    send_rtp(&bert.media, &callee_side, CALLEE, 1, 25);
    let caller_heard = received_rtp(&carrier.media, Duration::from_millis(300));
    let intruder_heard = received_rtp(&intruder, Duration::from_millis(100));
    assert!(
        caller_heard.get(&CALLEE).copied().unwrap_or(0) >= 10,
        "{caller_heard:?}"
    );
    assert!(
        intruder_heard.is_empty(),
        "the intruder got Bert's audio: {intruder_heard:?}"
    );

    hang_up(&carrier, &dialog, &bert);
    let ended = serve.wait_log(&["call ended"]);
    // Only the caller's 25 packets went out to Bert, and the intruder's
    // were counted as foreign.
    assert_eq!(leg_counter(&ended, 1, "out"), Some(25), "{ended}");
    let foreign = leg_counter(&ended, 0, "foreign");
    assert!(foreign.is_some_and(|n| n >= 25), "{ended}");
}

#[test]
fn an_sdp_pointing_the_relay_at_a_multicast_address_is_refused() {
    let serve = Serve::start(DIRECTORY, "");
    let bert = phone_of(&serve, "bert");
    let multicast = sdp_at("224.0.0.1", 4000);
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let invite = anna
        .invite_with_sdp("202", "anna", Some(("anna", "anna-pw")), &multicast)
        .expect("challenged");
    let (status, response) = final_status(&anna, &invite);
    assert_eq!(status, 488, "{response}");
    // From the trunk too.
    let carrier = trunk(&serve);
    let invite = carrier
        .invite_with_sdp(BERT_DID, OUTSIDE, None, &multicast)
        .unwrap();
    let (status, response) = final_status(&carrier, &invite);
    assert_eq!(status, 488, "{response}");
    assert_no_invite(&bert, "Bert");
    serve.wait_log(&["request refused", "SDP offer refused"]);
}

#[test]
fn relay_ports_of_consecutive_calls_are_not_consecutive() {
    let serve = Serve::start_with(
        DIRECTORY,
        Setup {
            rtp_ports: 200,
            ..Setup::default()
        },
    );
    let bert = phone_of(&serve, "bert");
    let carrier = trunk(&serve);
    let mut ports = Vec::new();
    for round in 0..4 {
        let invite = carrier.invite(BERT_DID, OUTSIDE, None).unwrap();
        let (rang, _) = bert.pick_up();
        let (answer, dialog) = carrier.answer_of(&invite, WAIT);
        ports.push((sdp_port(&answer), sdp_port(&rang)));
        hang_up(&carrier, &dialog.expect("answered"), &bert);
        calls_over(&serve, round + 1);
    }
    for (caller, callee) in &ports {
        for port in [caller, callee] {
            assert!(
                (serve.rtp.0..=serve.rtp.1).contains(port),
                "{port} not in {:?}",
                serve.rtp
            );
        }
    }
    // A sequential allocator gives each call the ports right after the
    // last call's: an eavesdropper's next guess.
    let predictable = ports
        .windows(2)
        .all(|pair| pair[1].0 == pair[0].1 + 2 || pair[1].0 == pair[0].0 + 2);
    assert!(!predictable, "relay ports in sequence: {ports:?}");
}

// ---------------------------------------------------------------------------
// 8. Limits

#[test]
fn a_users_second_call_is_refused_while_the_first_goes_on() {
    let serve = Serve::start(DIRECTORY, "[sip.limits]\ncalls_per_user = 1\n");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let carl = phone_of(&serve, "carl");
    let (anna_dialog, _) = connect(&anna, "anna", "202", &bert);
    let (status, response) = final_status(&anna, &dial(&anna, "anna", "203"));
    assert_eq!(status, 403, "{response}");
    assert_no_invite(&carl, "Carl");
    serve.wait_log(&["request refused", "calls_per_user"]);
    hang_up(&anna, &anna_dialog, &bert);
}

#[test]
fn an_invite_flood_gets_503_with_retry_after_and_the_server_keeps_serving() {
    const FLOOD: usize = 200;
    let serve = Serve::start(DIRECTORY, "");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    // 200 INVITEs to Bert from one socket on another host, as fast as it
    // can send them.
    let attacker = HandPhone::bind_at("127.0.0.2", 0, &serve.addr()).named("flood");
    let sdp = attacker.sdp(attacker.media_port());
    let invites: Vec<_> = (0..FLOOD)
        .map(|_| attacker.new_invite("202", "flood"))
        .collect();
    let requests: Vec<String> = invites
        .iter()
        .map(|invite| attacker.invite_request(invite, &[], &sdp))
        .collect();
    for request in &requests {
        attacker.send(request);
    }
    // What the kernel dropped on the way in is sent again (as a phone's
    // Timer A would) until everything has a final answer.
    let mut finals: BTreeMap<String, String> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(20);
    let mut resend = Instant::now() + Duration::from_millis(500);
    while finals.len() < FLOOD && Instant::now() < until {
        if Instant::now() >= resend {
            for (invite, request) in invites.iter().zip(&requests) {
                if !finals.contains_key(&invite.call_id) {
                    attacker.send(request);
                }
            }
            resend = Instant::now() + Duration::from_millis(500);
        }
        let Some(response) = attacker.expect_within("SIP/2.0 ", Duration::from_millis(100)) else {
            continue;
        };
        if status_of(&response) < 200 {
            continue;
        }
        let call_id = header(&response, "Call-ID").to_string();
        if let Some(invite) = invites.iter().find(|i| i.call_id == call_id) {
            attacker.ack_failure(invite, &response);
        }
        finals.entry(call_id).or_insert(response);
    }
    let busy: Vec<&String> = finals.values().filter(|r| status_of(r) == 503).collect();
    let challenged = finals.values().filter(|r| status_of(r) == 407).count();
    assert_eq!(finals.len(), FLOOD, "INVITEs without an answer");
    assert!(challenged >= 1, "no INVITE got through to a challenge");
    assert!(
        busy.len() >= FLOOD / 4,
        "{} of {FLOOD} got 503 ({challenged} challenged)",
        busy.len()
    );
    for response in &busy {
        assert!(
            headers(response, "Retry-After").len() == 1,
            "503 without Retry-After:\n{response}"
        );
    }
    assert_eq!(
        challenged + busy.len(),
        finals.len(),
        "other answers: {finals:#?}"
    );
    // Each refusal is logged once.
    let logged = refusal_lines(&serve, &attacker.addr(), "invites_per_second", busy.len());
    assert_eq!(logged.len(), busy.len());

    // Others still call (with relay ports to spare) and register.
    let (_, bert_dialog) = connect(&anna, "anna", "202", &bert);
    hang_up(&bert, &bert_dialog, &anna);
    phone_of(&serve, "carl");
    assert_no_panic(&serve);
}

#[test]
fn a_third_device_of_a_user_is_refused() {
    let serve = Serve::start(DIRECTORY, "[sip.limits]\nregistrations_per_user = 2\n");
    let first = phone_of(&serve, "anna");
    let second = phone_of(&serve, "anna");
    let third = HandPhone::bind(0, &serve.addr()).named("anna");
    let response = third.register("anna", "anna-pw");
    assert_eq!(status_of(&response), 403, "{response}");
    serve.wait_log(&["request refused", "registrations_per_user"]);
    // The two registered devices refresh.
    for phone in [&first, &second] {
        assert_eq!(status_of(&phone.register("anna", "anna-pw")), 200);
    }
}

#[test]
fn a_register_with_too_many_contacts_is_refused() {
    let serve = Serve::start(DIRECTORY, "[sip.limits]\ncontacts_per_register = 2\n");
    let phone = HandPhone::bind(0, &serve.addr()).named("anna");
    let contacts: Vec<String> = (1..=3)
        .map(|n| format!("<sip:anna@{LOCALHOST}:{}>", 40_000 + n))
        .collect();
    let registration = phone.register_with("anna", "anna-pw", &contacts, 3600);
    assert_eq!(
        status_of(&registration.response),
        400,
        "{}",
        registration.response
    );
    serve.wait_log(&["request refused", "contacts_per_register"]);
    // Two are fine.
    let registration = phone.register_with("anna", "anna-pw", &contacts[..2], 3600);
    assert_eq!(
        status_of(&registration.response),
        200,
        "{}",
        registration.response
    );
}

#[test]
fn an_unanswered_call_ends_after_the_ring_timeout() {
    let serve = Serve::start(DIRECTORY, "[sip.limits]\nring_timeout_seconds = 2\n");
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let bert = phone_of(&serve, "bert");
    let invite = dial(&anna, "anna", "202");
    let rang = bert.expect("INVITE ");
    let tag = bert.unique("rt");
    bert.ring(&rang, &tag);
    let (status, response) = final_status(&anna, &invite);
    assert_eq!(status, 480, "{response}");
    assert_eq!(take_the_end(&bert, &rang, &tag), "CANCEL");
    serve.wait_log(&["ring timeout"]);
}

// ---------------------------------------------------------------------------
// 9. Other people's dialogs and addresses

#[test]
fn a_bye_forged_from_another_address_does_not_end_the_call() {
    let serve = Serve::start(DIRECTORY, "");
    let anna = phone_of(&serve, "anna");
    let bert = phone_of(&serve, "bert");
    let (anna_dialog, _) = connect(&anna, "anna", "202", &bert);
    // Someone elsewhere who knows the dialog (Call-ID, both tags) hangs up
    // in Anna's name.
    let attacker = HandPhone::bind_at("127.0.0.2", 0, &serve.addr()).named("anna");
    let response = attacker.bye(&anna_dialog.clone());
    assert_eq!(status_of(&response), 403, "{response}");
    serve.wait_log(&["request refused", "for a dialog of another address"]);
    assert_calls_untouched(&[&anna, &bert]);
    hang_up(&anna, &anna_dialog, &bert);
}

#[test]
fn a_user_cannot_register_another_users_address() {
    let serve = Serve::start(DIRECTORY, "");
    // Anna's correct credentials on a REGISTER of Bert's address of record:
    // Bert's calls would come to her.
    let anna = HandPhone::bind(0, &serve.addr()).named("bert");
    let nonce = registrar_nonce(&anna, "bert");
    let authorization = digest(
        "anna",
        "anna-pw",
        "REGISTER",
        &anna.registrar_uri(),
        &nonce,
        1,
        "aor",
    );
    let (request, branch) =
        anna.register_request("bert", &[anna.contact()], 3600, Some(&authorization));
    let response = anna.transact(&request, &branch);
    assert_eq!(status_of(&response), 403, "{response}");
    serve.wait_log(&["request refused", "registering the address of"]);
    // Bert has no phone: his calls find nobody, and none reach Anna.
    let carrier = trunk(&serve);
    let (status, response) =
        final_status(&carrier, &carrier.invite(BERT_DID, OUTSIDE, None).unwrap());
    assert_eq!(status, 480, "{response}");
    assert_no_invite(&anna, "Anna");
}
