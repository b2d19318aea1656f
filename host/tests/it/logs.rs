//! What an administrator reads in `callhost serve`'s log, with the default
//! filter and stderr a pipe (as under systemd): one INFO line per call and
//! per registration change, every refused request once with its reason (an
//! unknown user as unknown), no Rust debug text and no colour codes, and
//! with `--log-format json` one JSON object a line. The phones are
//! hand-written ([`HandPhone`]), so every request is one the test sent.

use crate::sip_harness;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sip_harness::{status_of, HandPhone, Serve, Setup, WAIT};

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

[state.carl]
forward_always = "202"
"#;

const BERT_DID: &str = "+4930123456202";
const OUTSIDE: &str = "+49891234567";

/// The host's default filter (`CALLHOST_LOG=` is the default) and colours
/// as the host decides them (`NO_COLOR=` is unset): stderr is a pipe here.
const DEFAULT_LOG: &[(&str, &str)] = &[("CALLHOST_LOG", ""), ("NO_COLOR", "")];

/// Registrations as short as a second, for the expiry.
const SIP: &str = "min_expires = 1";

fn serve() -> Serve {
    Serve::start_with(
        DIRECTORY,
        Setup {
            sip: SIP,
            env: DEFAULT_LOG,
            ..Setup::default()
        },
    )
}

fn registered(serve: &Serve, user: &str) -> HandPhone {
    let phone = HandPhone::bind(0, &serve.addr()).named(user);
    let response = phone.register(user, &format!("{user}-pw"));
    assert_eq!(status_of(&response), 200, "{user} registers:\n{response}");
    phone
}

/// The log's lines with every one of `parts`, once there are at least
/// `expected` and a moment has shown no more (the log comes on its own
/// pipe, a little after the answers).
fn lines_with(serve: &Serve, parts: &[&str], expected: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        serve
            .log()
            .lines()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while lines().len() < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    lines()
}

/// No colour codes and no Rust debug formatting anywhere in the log.
fn assert_readable(log: &str) {
    assert!(
        !log.contains("\x1b["),
        "ANSI escapes in a piped log:\n{log}"
    );
    for debug in ["Some(", "None", "{ ", "LegStats", "Ok(", "Err("] {
        assert!(
            !log.contains(debug),
            "debug text {debug:?} in the log:\n{log}"
        );
    }
}

#[test]
fn a_call_is_one_info_line_with_who_called_whom_who_rang_and_the_display() {
    let serve = serve();
    let bert = registered(&serve, "bert");
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");

    // Anna dials Carl, who forwards everything to Bert; Bert answers, Anna
    // hangs up after a second.
    let invite = anna
        .invite("203", "anna", Some(("anna", "anna-pw")))
        .expect("challenged");
    let (_, bert_dialog) = bert.pick_up();
    let (answer, dialog) = anna.answer_of(&invite, WAIT);
    let dialog = dialog.unwrap_or_else(|| panic!("not answered:\n{answer}"));
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(status_of(&anna.bye(&dialog)), 200);
    bert.expect_and_ok("BYE ");
    drop(bert_dialog);

    let calls = lines_with(&serve, &["call ended"], 1);
    assert_eq!(calls.len(), 1, "{}", serve.log());
    let line = &calls[0];
    for part in [
        " INFO ",
        "from=201 ",
        "from_user=anna ",
        "to=203 ",
        "rang=bert ",
        "display=\"Anna Alpha\" ",
        "forwards=always:carl->202 ",
        "outcome=answered ",
        "answered_by=bert ",
        "end=caller ",
        "rtp_caller=in:",
    ] {
        assert!(
            line.contains(part),
            "no `{part}` in the call's line:\n{line}"
        );
    }
    assert!(
        line.contains("duration=1s ") || line.contains("duration=2s "),
        "{line}"
    );
    // Nothing else about the call at INFO: ringing, the answer and the
    // forward are DEBUG.
    let log = serve.log();
    let call_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" INFO ") && line.contains("callhost_sip::call"))
        .collect();
    assert_eq!(call_lines.len(), 1, "{log}");
    assert_readable(&log);
}

#[test]
fn a_call_that_is_not_answered_says_why_in_its_one_line() {
    let serve = serve();
    let bert = registered(&serve, "bert");
    let carrier = HandPhone::bind(serve.trunk_port, &serve.addr()).named("carrier");
    let invite = carrier.invite(BERT_DID, OUTSIDE, None).unwrap();
    let ringing = bert.expect("INVITE ");
    bert.refuse(&ringing, "486 Busy Here");
    let (answer, _) = carrier.answer_of(&invite, WAIT);
    assert_eq!(status_of(&answer), 486, "{answer}");

    let calls = lines_with(&serve, &["call ended"], 1);
    assert_eq!(calls.len(), 1, "{}", serve.log());
    let line = &calls[0];
    for part in [
        &format!("from={OUTSIDE} "),
        &format!("to={BERT_DID} "),
        "rang=bert ",
        // The outside number as a phone here dials it back.
        "display=\"0891234567\" ",
        "outcome=busy ",
        "status=486 ",
        "why=\"every phone refused\"",
    ] {
        assert!(line.contains(part), "no `{part}` in:\n{line}");
    }
    assert!(!line.contains("from_user="), "{line}");
    assert!(!line.contains("answered_by="), "{line}");
    assert_readable(&serve.log());
}

#[test]
fn every_registration_change_is_one_line_and_a_refresh_none() {
    let serve = serve();
    let bert = registered(&serve, "bert");
    assert_eq!(
        lines_with(&serve, &["device registered", "user=bert "], 1).len(),
        1
    );
    // A refresh is not news.
    assert_eq!(status_of(&bert.register("bert", "bert-pw")), 200);
    // The same phone (same Call-ID) under a new Contact.
    let moved = format!("<sip:bert-moved@{}>", bert.addr());
    let again = bert.register_with("bert", "bert-pw", std::slice::from_ref(&moved), 3600);
    assert_eq!(status_of(&again.response), 200, "{}", again.response);
    let changed = lines_with(&serve, &["device re-registered", "user=bert "], 1);
    assert_eq!(changed.len(), 1, "{}", serve.log());
    assert!(
        changed[0].contains("previous_contact=sip:bert@"),
        "{}",
        changed[0]
    );
    // Taken back.
    let gone = bert.register_with("bert", "bert-pw", &[moved], 0);
    assert_eq!(status_of(&gone.response), 200, "{}", gone.response);
    assert_eq!(
        lines_with(&serve, &["device unregistered", "user=bert "], 1).len(),
        1,
        "{}",
        serve.log()
    );
    // A phone that stops refreshing expires.
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    let short = anna.register_with("anna", "anna-pw", &[anna.contact()], 1);
    assert_eq!(status_of(&short.response), 200, "{}", short.response);
    assert_eq!(
        lines_with(&serve, &["registration expired", "user=anna "], 1).len(),
        1,
        "{}",
        serve.log()
    );

    // One INFO line per change, nothing for the refresh.
    let log = serve.log();
    let registrations: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" INFO ") && line.contains("callhost_sip::register"))
        .collect();
    assert_eq!(registrations.len(), 5, "{log}");
    assert!(
        registrations[0].contains("device registered")
            && registrations[0].contains("expires=3600s"),
        "{log}"
    );
    assert_readable(&log);
}

#[test]
fn a_refused_request_is_one_line_with_its_reason_and_an_unknown_user_is_unknown() {
    let serve = serve();
    // A wrong password: 401, then 403.
    let anna = HandPhone::bind(0, &serve.addr()).named("anna");
    assert_eq!(status_of(&anna.register("anna", "not-her-password")), 403);
    let source = format!("source={} ", anna.addr());
    let refused = lines_with(&serve, &["request refused", &source], 1);
    assert_eq!(refused.len(), 1, "{}", serve.log());
    assert!(
        refused[0].contains(" WARN ")
            && refused[0].contains("method=REGISTER status=403 ")
            && refused[0].contains("reason=wrong password for user \"anna\""),
        "{}",
        refused[0]
    );

    // A user the directory does not have.
    let zoe = HandPhone::bind(0, &serve.addr()).named("zoe");
    assert_eq!(status_of(&zoe.register("zoe", "guess")), 403);
    let source = format!("source={} ", zoe.addr());
    let refused = lines_with(&serve, &["request refused", &source], 1);
    assert_eq!(refused.len(), 1, "{}", serve.log());
    assert!(
        refused[0].contains("reason=unknown user \"zoe\""),
        "{}",
        refused[0]
    );
    assert!(!refused[0].contains("password"), "{}", refused[0]);

    // A call to a number nobody has: refused before it is a call, so no
    // call line.
    let caller = HandPhone::bind(0, &serve.addr()).named("anna");
    let (answer, _) = caller.call("299", "anna", Some(("anna", "anna-pw")));
    assert_eq!(status_of(&answer), 404, "{answer}");
    let source = format!("source={} ", caller.addr());
    let refused = lines_with(&serve, &["request refused", &source], 1);
    assert_eq!(refused.len(), 1, "{}", serve.log());
    assert!(
        refused[0].contains("method=INVITE status=404 ")
            && refused[0].contains("reason=unknown number \"299\""),
        "{}",
        refused[0]
    );
    assert!(!serve.log().contains("call ended"), "{}", serve.log());
    assert_readable(&serve.log());
}

#[test]
fn with_log_format_json_every_line_is_a_json_object() {
    let mut serve = Serve::start_with(
        DIRECTORY,
        Setup {
            env: DEFAULT_LOG,
            args: &["--log-format", "json"],
            ..Setup::default()
        },
    );
    let bert = registered(&serve, "bert");
    let carrier = HandPhone::bind(serve.trunk_port, &serve.addr()).named("carrier");
    let invite = carrier.invite(BERT_DID, OUTSIDE, None).unwrap();
    let (_, _bert_dialog) = bert.pick_up();
    let (answer, dialog) = carrier.answer_of(&invite, WAIT);
    let dialog = dialog.unwrap_or_else(|| panic!("not answered:\n{answer}"));
    assert_eq!(status_of(&carrier.bye(&dialog)), 200);
    bert.expect_and_ok("BYE ");
    let zoe = HandPhone::bind(0, &serve.addr()).named("zoe");
    assert_eq!(status_of(&zoe.register("zoe", "guess")), 403);
    serve.wait_log(&["\"message\":\"call ended\""]);
    serve.wait_log(&["unknown user"]);
    assert!(serve.stop().success());

    let log = serve.log();
    let objects: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(objects.len() >= 4, "{log}");
    for object in &objects {
        assert!(object.is_object(), "{object}");
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.get(key).is_some(), "no {key} in {object}");
        }
    }
    let message = |text: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|object| object["message"] == text)
            .collect()
    };
    let calls = message("call ended");
    assert_eq!(calls.len(), 1, "{log}");
    let call = calls[0];
    assert_eq!(call["level"], "INFO", "{call}");
    assert_eq!(call["from"], OUTSIDE, "{call}");
    assert_eq!(call["to"], BERT_DID, "{call}");
    assert_eq!(call["rang"], "bert", "{call}");
    assert_eq!(call["display"], "0891234567", "{call}");
    assert_eq!(call["outcome"], "answered", "{call}");
    assert_eq!(call["answered_by"], "bert", "{call}");
    assert_eq!(call["end"], "caller", "{call}");
    let registered = message("device registered");
    assert_eq!(registered.len(), 1, "{log}");
    assert_eq!(registered[0]["user"], "bert", "{log}");
    let refused = message("request refused");
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(refused[0]["status"], 403, "{log}");
    assert_eq!(refused[0]["reason"], "unknown user \"zoe\"", "{log}");
    assert!(message("stopped").len() == 1, "{log}");
}
