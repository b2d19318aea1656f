//! The host services of ABI 5 (what a client API needs) end to end: the
//! fault module's actions call each service through the loaded library;
//! on the command line they act on the stored directory, and relayed
//! (`instance action ft serve …`) they run inside a real `callhost serve`,
//! with hand-written phones and SIPp on real SIP. The module's record
//! (`record = true`) is what its observation hooks heard: events, every
//! hop's decision, call-list entries and presence changes, in the order
//! they came.

use crate::common;
use crate::reverse_lookup::{crm_instance, HARBOUR, RL};
use crate::sip::{media_port, trunk_call, trunk_caller};
use crate::sip_harness;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use serde_json::Value;
use sip_harness::{status_of, HandPhone, Serve, Sipp, LOCALHOST};

const FAULT: &str = "fault-module-0.1.0.cmod";

/// Every password is `<id>-pw`, except Nora's: she has none. Bert is
/// logged out of the team.
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

[[users]]
id = "nora"
name = "Nora Nopass"
numbers = ["205"]

[[groups]]
id = "team"
name = "Team"
numbers = ["300", "+4930123456300"]
members = ["anna", "bert"]
inactive = ["bert"]
"#;

const BERT: &str = "+4930123456202";
const CARL: &str = "+4930123456203";
const DORA: &str = "+4930123456204";
const TEAM: &str = "+4930123456300";
/// An outside caller nobody knows.
const OUTSIDE: &str = "+493012345678";

/// The instance `ft`: no opinion on calls, records what it hears, answers
/// relayed actions when active.
fn services_instance(h: &Harness) {
    h.create(
        "fault-module",
        "ft",
        "display = \"\"\nrecord = true\nrelay = true\n",
    );
}

/// `instance action ft ARGS…` on the command line, as JSON (a text answer
/// is printed as its text: a JSON string here).
fn action(h: &Harness, args: &[&str]) -> Value {
    let mut all = vec!["instance", "action", "ft"];
    all.extend_from_slice(args);
    let out = h.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|_| Value::String(out.trim_end().to_string()))
}

/// The refusal of `instance action ft ARGS…`.
fn action_fails(h: &Harness, args: &[&str]) -> String {
    let mut all = vec!["instance", "action", "ft"];
    all.extend_from_slice(args);
    h.fails(&all)
}

/// `ARGS…` run by the instance inside the running `serve`.
fn served(h: &Harness, args: &[&str]) -> Value {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    action(h, &all)
}

fn served_fails(h: &Harness, args: &[&str]) -> String {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    action_fails(h, &all)
}

fn observed(h: &Harness) -> Vec<Value> {
    action(h, &["observed"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (10 s at most) until the record has a line for which `wanted`
/// holds; returns the whole record then.
fn wait_observed(h: &Harness, what: &str, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = observed(h);
        if lines.iter().any(&wanted) {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "no {what} in the record within 10 s:\n{lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The record's presence lines of `user`.
fn presences<'a>(lines: &'a [Value], user: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| line["hook"] == "presence" && line["user"] == user)
        .collect()
}

/// A hand phone registered as `user` on the server at `addr`.
fn phone(addr: &str, user: &str) -> HandPhone {
    let phone = HandPhone::bind(0, addr).named(user);
    let answer = phone.register(user, &format!("{user}-pw"));
    assert_eq!(status_of(&answer), 200, "{answer}");
    phone
}

/// A call from `caller` on the trunk to `number` (any final answer
/// passes; an answered call lasts `ms`).
fn trunk_from(serve: &Serve, caller: &str, number: &str, ms: &str) -> Sipp {
    let file = trunk_caller(serve, caller);
    trunk_call(serve, "t_uac_any.xml", number, &["-inf", &file, "-d", ms])
}

/// The final status a call from the trunk to `number` got.
fn final_status(serve: &Serve, number: &str) -> Option<u16> {
    let run = trunk_from(serve, OUTSIDE, number, "100").wait();
    run.assert_ok();
    run.final_invite_status()
}

#[test]
fn services_answer_on_the_command_line_from_the_stored_directory() {
    let h = Harness::new();
    h.install(FAULT);
    let path = h.file("directory.toml", DIRECTORY);
    h.ok(&["directory", "load", path.to_str().unwrap()]);
    services_instance(&h);

    // Presence: the directory's, with its simulated flags off `serve`.
    let anna = action(&h, &["presence", "anna"]);
    assert_eq!(anna["number"], "201", "{anna:#}");
    assert_eq!(anna["name"], "Anna Alpha");
    assert_eq!(anna["groups"], serde_json::json!(["team"]));
    assert_eq!(anna["active_groups"], serde_json::json!(["team"]));
    assert_eq!(anna["dnd"], false);
    assert_eq!(
        action(&h, &["presence", "bert"])["active_groups"],
        serde_json::json!([])
    );
    assert!(action(&h, &["presence", "ghost"]).is_null());

    // Passwords, checked against the stored HA1.
    for (user, password, answer) in [
        ("anna", "anna-pw", "valid"),
        ("anna", "bert-pw", "wrong"),
        ("anna", "", "wrong"),
        ("ghost", "anna-pw", "unknown-user"),
        ("nora", "anything", "no-password"),
    ] {
        assert_eq!(
            action(&h, &["verify", user, password]),
            answer,
            "{user} {password:?}"
        );
    }

    // Changes are stored: the next process sees them.
    action(&h, &["dnd", "bert", "on"]);
    action(&h, &["forward", "bert", "busy", "0891234567"]);
    action(&h, &["group", "bert", "team", "in"]);
    action(&h, &["group", "anna", "team", "out"]);
    let bert = action(&h, &["presence", "bert"]);
    assert_eq!(bert["dnd"], true, "{bert:#}");
    assert_eq!(bert["forward_busy"], "0891234567");
    assert_eq!(bert["active_groups"], serde_json::json!(["team"]));
    assert_eq!(
        action(&h, &["presence", "anna"])["active_groups"],
        serde_json::json!([])
    );
    // ... and calls route on them.
    let outcome = &h.simulate("[[calls]]\nfrom = \"203\"\nto = \"300\"\n")[0];
    let rang: Vec<&str> = outcome["rang"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ring| ring["user"].as_str().unwrap())
        .collect();
    // Bert is the only one logged in, and in DND: nobody rings.
    assert!(rang.is_empty(), "{outcome:#}");
    let outcome = &h.simulate("[[calls]]\nfrom = \"203\"\nto = \"202\"\n")[0];
    assert_eq!(outcome["forwarded"]["to"], "0891234567", "{outcome:#}");
    // An empty target clears the forward.
    action(&h, &["forward", "bert", "busy"]);
    assert!(action(&h, &["presence", "bert"])["forward_busy"].is_null());

    // Refusals name the field and the value, as a directory file's would.
    let refused = action_fails(&h, &["forward", "bert", "always", "299"]);
    assert!(
        refused.contains("state.bert.forward_always") && refused.contains("\"299\""),
        "{refused}"
    );
    let refused = action_fails(&h, &["forward", "bert", "no-answer", "not a number"]);
    assert!(
        refused.contains("state.bert.forward_no_answer") && refused.contains("not a number"),
        "{refused}"
    );
    let refused = action_fails(&h, &["group", "carl", "team", "in"]);
    assert!(
        refused.contains("\"carl\" is not a member of group \"team\""),
        "{refused}"
    );
    let refused = action_fails(&h, &["group", "anna", "ghosts", "in"]);
    assert!(refused.contains("no group \"ghosts\""), "{refused}");
    let refused = action_fails(&h, &["dnd", "ghost", "on"]);
    assert!(refused.contains("no user \"ghost\""), "{refused}");
    // A refusal changed nothing.
    assert!(action(&h, &["presence", "bert"])["forward_always"].is_null());

    // Call lists: newest first, at most the limit, never more than 1000.
    let mut conn = rusqlite::Connection::open(h.data().join("callhost.db")).unwrap();
    let batch = conn.transaction().unwrap();
    for i in 0..1005 {
        batch
            .execute(
                "INSERT INTO call_list (user_id, time, direction, number, name, call_id)
             VALUES ('nora', ?1, 'in', '0891234567', NULL, ?2)",
                rusqlite::params![
                    format!(
                        "2026-01-01T{:02}:{:02}:{:02}Z",
                        i / 3600,
                        i / 60 % 60,
                        i % 60
                    ),
                    format!("c{i}")
                ],
            )
            .unwrap();
    }
    batch.commit().unwrap();
    drop(conn);
    let newest = action(&h, &["calls", "nora", "2"]);
    let ids: Vec<&str> = newest
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1004", "c1003"], "{newest:#}");
    assert_eq!(newest[0]["direction"], "in");
    assert_eq!(newest[0]["user"], "nora");
    let capped = action(&h, &["calls", "nora", "5000"]);
    assert_eq!(capped.as_array().unwrap().len(), 1000);
    assert_eq!(action(&h, &["calls", "ghost", "10"]), serde_json::json!([]));

    // Calls and lookups need the running server.
    for args in [
        &["originate", "anna", "202"][..],
        &["hangup", "anna", "some-call"][..],
    ] {
        let refused = action_fails(&h, args);
        assert!(
            refused.contains("calls can be placed only by `callhost serve`"),
            "{args:?}: {refused}"
        );
    }
    let refused = action_fails(&h, &["lookup", "anna", HARBOUR]);
    assert!(refused.contains("callhost serve"), "{refused}");
}

#[test]
fn changes_by_a_module_are_routed_at_once_and_survive_a_restart() {
    let h = Harness::new();
    h.install(FAULT);
    services_instance(&h);
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    let addr = serve.addr();
    let (anna, bert, dora) = (
        phone(&addr, "anna"),
        phone(&addr, "bert"),
        phone(&addr, "dora"),
    );

    // DND: the very next call finds Dora busy, no second passes.
    served(&h, &["dnd", "dora", "on"]);
    let changed = Instant::now();
    assert_eq!(final_status(&serve, DORA), Some(486));
    assert!(
        changed.elapsed() < Duration::from_secs(1),
        "DND took {:?} to reach the routing",
        changed.elapsed()
    );
    dora.drain(Duration::from_millis(200));
    assert!(dora.invites_seen().is_empty(), "Dora's phone rang");

    // A forward is followed: Carl's calls ring Bert.
    served(&h, &["forward", "carl", "always", "202"]);
    let caller = trunk_from(&serve, OUTSIDE, CARL, "100");
    let invite = bert.expect("INVITE ");
    bert.refuse(&invite, "486 Busy Here");
    caller.wait().assert_ok();

    // Group logins change who rings: Bert in, Anna out.
    served(&h, &["group", "bert", "team", "in"]);
    served(&h, &["group", "anna", "team", "out"]);
    let caller = trunk_from(&serve, OUTSIDE, TEAM, "100");
    let invite = bert.expect("INVITE ");
    bert.refuse(&invite, "486 Busy Here");
    caller.wait().assert_ok();
    anna.drain(Duration::from_millis(200));
    assert!(anna.invites_seen().is_empty(), "Anna rang while logged out");

    // The server made the changes itself: its watcher saw nothing to
    // reload (a reload would be one second late and could undo a change).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !serve.log().contains("directory reloaded"),
        "{}",
        serve.log()
    );
    assert!(
        serve.log().contains("user changed: dnd on"),
        "{}",
        serve.log()
    );

    // Invalid changes are refused by the running server too.
    let refused = served_fails(&h, &["forward", "dora", "busy", "299"]);
    assert!(
        refused.contains("state.dora.forward_busy") && refused.contains("299"),
        "{refused}"
    );

    // Stored: a restarted server routes the same way.
    assert!(serve.stop().success());
    drop((anna, bert, dora));
    let restarted = Restarted::start(h.data());
    let addr = restarted.addr();
    let (anna, bert, _dora) = (
        phone(&addr, "anna"),
        phone(&addr, "bert"),
        phone(&addr, "dora"),
    );
    assert_eq!(restarted.final_status(DORA), Some(486));
    let caller = restarted.call(CARL);
    let invite = bert.expect("INVITE ");
    bert.refuse(&invite, "486 Busy Here");
    caller.wait().assert_ok();
    let caller = restarted.call(TEAM);
    let invite = bert.expect("INVITE ");
    bert.refuse(&invite, "486 Busy Here");
    caller.wait().assert_ok();
    anna.drain(Duration::from_millis(200));
    assert!(
        anna.invites_seen().is_empty(),
        "Anna rang after the restart"
    );
}

#[test]
fn modules_hear_presence_decisions_and_call_lists_in_order() {
    let h = Harness::new();
    h.install(RL);
    h.install(FAULT);
    // The CRM stand-in names the harbour; `ft` observes after it.
    crm_instance(&h, "");
    services_instance(&h);
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let addr = serve.addr();

    // A phone registers.
    let bert = phone(&addr, "bert");
    let lines = wait_observed(&h, "Bert's registration", |line| {
        line["hook"] == "presence" && line["user"] == "bert" && line["registered"] == true
    });
    let first = presences(&lines, "bert")[0];
    assert_eq!(first["in_call"], false, "{first:#}");
    assert_eq!(first["number"], "202");
    // Live presence for the services too.
    let live = served(&h, &["presence", "bert"]);
    assert_eq!(live["registered"], true, "{live:#}");
    assert_eq!(served(&h, &["presence", "carl"])["registered"], false);

    // A call from the harbour: reverse lookup names it, Bert answers, the
    // caller hangs up.
    let caller = trunk_from(&serve, HARBOUR, BERT, "300");
    bert.pick_up();
    bert.expect_and_ok("BYE ");
    caller.wait().assert_ok();
    let lines = wait_observed(&h, "the hangup", |line| {
        line["hook"] == "event" && line["kind"] == "hangup"
    });
    let position = |wanted: &dyn Fn(&Value) -> bool| lines.iter().position(wanted);
    let decided = position(&|line| line["hook"] == "call_decided" && line["callee"] == "bert")
        .unwrap_or_else(|| panic!("no decision in {lines:#?}"));
    let decision = &lines[decided]["decision"];
    assert_eq!(decision["first_name"], "Hanna", "{decision:#}");
    assert_eq!(decision["last_name"], "Hafen");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("crm"),
        "{decision:#}"
    );
    let hangup = position(&|line| line["hook"] == "event" && line["kind"] == "hangup").unwrap();
    let call = lines[hangup]["call_id"].as_str().unwrap().to_string();
    let listed = position(&|line| line["hook"] == "call_listed" && line["user"] == "bert")
        .unwrap_or_else(|| panic!("no call-list entry in {lines:#?}"));
    assert!(
        listed < hangup,
        "the entry came after the hangup: {lines:#?}"
    );
    assert!(decided < listed, "{lines:#?}");
    let entry = &lines[listed];
    assert_eq!(entry["call_id"], call.as_str());
    assert_eq!(entry["direction"], "in");
    assert_eq!(entry["name"], "Hanna Hafen", "{entry:#}");
    assert_eq!(lines[decided]["call_id"], call.as_str());
    let ringing = position(&|line| line["hook"] == "event" && line["kind"] == "ringing").unwrap();
    assert!(decided < ringing, "{lines:#?}");
    // In a call while it lasted.
    let bert_in_call: Vec<bool> = presences(&lines, "bert")
        .iter()
        .map(|line| line["in_call"] == true)
        .collect();
    assert!(
        bert_in_call.windows(2).any(|pair| pair == [true, false]),
        "{bert_in_call:?} in {lines:#?}"
    );

    // The call list the services read has it (written shortly after).
    let until = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = served(&h, &["calls", "bert", "10"]);
        if !list.as_array().unwrap().is_empty() || Instant::now() > until {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(list[0]["call_id"], call.as_str(), "{list:#}");
    assert_eq!(list[0]["name"], "Hanna Hafen");

    // A lookup without a call: reverse lookup's name for the harbour.
    let looked_up = served(&h, &["lookup", "bert", HARBOUR]);
    assert_eq!(looked_up["first_name"], "Hanna", "{looked_up:#}");
    assert_eq!(looked_up["last_name"], "Hafen");
    // A number nobody knows gets no name; no number at all is refused.
    assert!(served(&h, &["lookup", "bert", OUTSIDE])["first_name"].is_null());
    let refused = served_fails(&h, &["lookup", "ghost", HARBOUR]);
    assert!(refused.contains("no user \"ghost\""), "{refused}");

    // DND set by a module is a presence change.
    served(&h, &["dnd", "bert", "on"]);
    wait_observed(&h, "Bert's DND", |line| {
        line["hook"] == "presence" && line["user"] == "bert" && line["dnd"] == true
    });
    // A directory loaded by another process: the users whose state
    // changed are told.
    let reloaded = h.file(
        "reloaded.toml",
        &format!("{DIRECTORY}\n[state.carl]\nforward_always = \"201\"\n"),
    );
    h.ok(&["directory", "load", reloaded.to_str().unwrap()]);
    let lines = wait_observed(&h, "Carl's forward", |line| {
        line["hook"] == "presence" && line["user"] == "carl" && line["forward_always"] == "201"
    });
    // Bert's DND went with the reload (the file has none): he is told.
    assert_eq!(presences(&lines, "bert").last().unwrap()["dnd"], false);
    assert!(presences(&lines, "anna").is_empty(), "{lines:#?}");

    // The phone unregisters.
    let gone = bert.register_with("bert", "bert-pw", &["*".to_string()], 0);
    assert_eq!(status_of(&gone.response), 200, "{}", gone.response);
    wait_observed(&h, "Bert's unregistration", |line| {
        line["hook"] == "presence" && line["user"] == "bert" && line["registered"] == false
    });
}

#[test]
fn click_to_dial_rings_the_users_phone_and_hang_up_ends_it() {
    let h = Harness::new();
    h.install(FAULT);
    services_instance(&h);
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let addr = serve.addr();
    // Nobody to ring yet: refused with the telephony's own words.
    let refused = served_fails(&h, &["originate", "anna", "202"]);
    assert!(refused.contains("has no phone registered"), "{refused}");
    let refused = served_fails(&h, &["originate", "ghost", "202"]);
    assert!(refused.contains("ghost"), "{refused}");

    let anna = phone(&addr, "anna");
    let placed = served(&h, &["originate", "anna", "202"]);
    let call_id = placed["call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed:#}"));
    // Anna's own phone rings first.
    let invite = anna.expect("INVITE ");
    anna.ring(&invite, &anna.unique("rt"));
    // Only a party may end it; Anna may.
    let refused = served_fails(&h, &["hangup", "bert", call_id]);
    assert!(refused.contains("bert"), "{refused}");
    served(&h, &["hangup", "anna", call_id]);
    anna.expect_and_ok("CANCEL ");
    let refused = served_fails(&h, &["hangup", "anna", "no-such-call"]);
    assert!(refused.contains("no-such-call"), "{refused}");
    let _ = serve;
}

/// `callhost serve` started again in a data directory the harness set up
/// (its configuration and ports kept; the directory is not loaded again).
struct Restarted {
    child: Child,
    data: std::path::PathBuf,
    port: u16,
    trunk_port: u16,
}

impl Restarted {
    fn start(data: &Path) -> Restarted {
        let config = std::fs::read_to_string(data.join("callhost.toml")).unwrap();
        let port_after = |prefix: &str| -> u16 {
            let line = config
                .lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {config}"));
            line.trim_end_matches('"')
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (port, trunk_port) = (port_after("listen = "), port_after("peer = "));
        let mut child = Command::new(env!("CARGO_BIN_EXE_callhost"))
            .arg("--data")
            .arg(data)
            .arg("serve")
            .env_remove("CALLHOST_DATA")
            .env("CALLHOST_LOG", sip_harness::TEST_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.join("restarted.log")).unwrap())
            .spawn()
            .expect("start callhost serve again");
        let stdout = child.stdout.take().unwrap();
        let (lines, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = ready.recv_timeout(left).expect("serve came up again");
            if line.contains("active module instance") {
                break;
            }
        }
        Restarted {
            child,
            data: data.to_path_buf(),
            port,
            trunk_port,
        }
    }

    fn addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.port)
    }

    /// A call from the trunk to `number` (any final answer passes).
    fn call(&self, number: &str) -> Sipp {
        let file = self.data.join("restarted-caller.csv");
        std::fs::write(&file, format!("SEQUENTIAL\n{OUTSIDE};\n")).unwrap();
        let media = media_port();
        Sipp::start(
            &format!("trunk -> {number} (restarted)"),
            "t_uac_any.xml",
            Some(&self.addr()),
            self.trunk_port,
            &[
                "-s",
                number,
                "-mi",
                LOCALHOST,
                "-mp",
                &media,
                "-inf",
                file.to_str().unwrap(),
                "-d",
                "100",
            ],
        )
    }

    fn final_status(&self, number: &str) -> Option<u16> {
        let run = self.call(number).wait();
        run.assert_ok();
        run.final_invite_status()
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data.join("restarted.log")).unwrap_or_default();
            eprintln!("--- restarted callhost serve log ---\n{log}");
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
