//! BT1–BT5 and RD1–RD8 end to end: the shipped `breakthrough` and
//! `redirect-display` packages installed into a fresh data directory, their
//! instances created through the CLI, and scripted calls placed through the
//! real engine with `callhost simulate`. Every test asserts the exact
//! outcome, the phones that rang with their displays, the forwards followed
//! and each instance's decision per hop.

use crate::common;

use common::Harness;
use serde_json::Value;

const BT: &str = "breakthrough-0.1.0.cmod";
const RD: &str = "redirect-display-0.1.0.cmod";

/// The plant's alarm line (national form `02515906850`).
const ALARM: &str = "+492515906850";
/// An outside number nobody configured (national form `03012345678`).
const STRANGER: &str = "+493012345678";
/// A mobile phone (national form `01701234567`).
const MOBILE: &str = "+491701234567";
/// The customer in the address book ("Max Kunde").
const CUSTOMER: &str = "+49891234567";

/// The directory every inline scenario starts from; tests append
/// `[directory.state.<user>]` tables and their calls.
const DIRECTORY: &str = r#"
[directory]
home_country = "DE"

[[directory.users]]
id = "boss"
name = "Anna Boss"
numbers = ["201", "+4930123456201"]

[[directory.users]]
id = "sek"
name = "Sarah Sekretariat"
numbers = ["202", "252", "+4930123456202"]

[[directory.users]]
id = "carla"
name = "Carla Clerk"
numbers = ["203"]

[[directory.users]]
id = "dora"
name = "Dora Dev"
numbers = ["204"]

[[directory.users]]
id = "nameless"
name = ""
numbers = ["205"]

[[directory.users]]
id = "wide"
name = "Willi Weit"
numbers = ["2050"]

[[directory.users]]
id = "md"
name = "Max Direktor"
numbers = ["299"]

[[directory.users]]
id = "lead"
name = "Lars Lead"
numbers = ["301"]

[[directory.users]]
id = "kim"
name = "Kim Kollege"
numbers = ["302"]

[[directory.users]]
id = "ute"
name = "Ute Umbau"
numbers = ["303"]

[[directory.users]]
id = "otto"
name = "Otto Ops"
numbers = ["401"]

[[directory.users]]
id = "zentrale"
name = "Zentrale"
numbers = ["100"]

[[directory.users]]
id = "olga"
name = "Olga Operator"
numbers = ["110"]

[[directory.groups]]
id = "team"
name = "Team"
numbers = ["200"]
members = ["carla", "dora"]

[[directory.groups]]
id = "vermittlung"
name = "Vermittlung"
numbers = ["500"]
members = ["olga"]
inactive = ["olga"]

[[directory.groups]]
id = "sekgrp"
name = "Sekretariate"
numbers = ["600"]
members = ["sek", "carla"]
inactive = ["carla"]

[[directory.contacts]]
first_name = "Max"
last_name = "Kunde"
numbers = ["+49891234567"]
"#;

// ---------------------------------------------------------------- scenario helpers

/// A direct call.
fn call(from: &str, to: &str) -> String {
    format!("[[calls]]\nfrom = \"{from}\"\nto = \"{to}\"\n")
}

/// A direct call nobody answers (no-answer forwards apply).
fn unanswered(from: &str, to: &str) -> String {
    format!("{}no_answer = true\n", call(from, to))
}

/// `from` is connected to `to` by `by` (`via` is "attended-transfer" or "blind-transfer").
fn transfer(from: &str, to: &str, via: &str, by: &str) -> String {
    format!("{}via = \"{via}\"\nby = \"{by}\"\n", call(from, to))
}

/// The shared directory with `state` appended, then the calls.
fn scenario(state: &str, calls: &[String]) -> String {
    format!("{DIRECTORY}\n{state}\n{}", calls.concat())
}

/// A harness with `packages` installed.
fn harness(packages: &[&str]) -> Harness {
    let h = Harness::new();
    for package in packages {
        h.install(package);
    }
    h
}

/// A harness with one breakthrough instance `bt` configured by `config`.
fn with_bt(config: &str) -> Harness {
    let h = harness(&[BT]);
    h.create("breakthrough", "bt", config);
    h
}

/// A harness with one redirect-display instance `rd` configured by `config`.
fn with_rd(config: &str) -> Harness {
    let h = harness(&[RD]);
    h.create("redirect-display", "rd", config);
    h
}

/// Runs `scenario`, checking one line per call.
fn run(h: &Harness, scenario: &str, calls: usize) -> Vec<Value> {
    let lines = h.simulate(scenario);
    assert_eq!(lines.len(), calls, "one line per call: {lines:#?}");
    lines
}

// ---------------------------------------------------------------- output helpers

fn outcome(line: &Value) -> &str {
    line["outcome"].as_str().expect("outcome")
}

/// Why the call did not ring (`reason` of the call), if given.
fn why(line: &Value) -> Option<&str> {
    line["reason"].as_str()
}

fn rings(line: &Value) -> &Vec<Value> {
    line["rang"].as_array().expect("rang")
}

/// Who rang: the user id, or the number for an outside phone.
fn rang(line: &Value) -> Vec<&str> {
    rings(line)
        .iter()
        .map(|ring| {
            ring["user"]
                .as_str()
                .unwrap_or_else(|| ring["number"].as_str().expect("number"))
        })
        .collect()
}

/// What each ringing phone showed.
fn displays(line: &Value) -> Vec<&str> {
    rings(line)
        .iter()
        .map(|ring| ring["display"].as_str().expect("display"))
        .collect()
}

/// Whether each ringing phone rang as a waiting call.
fn waiting(line: &Value) -> Vec<bool> {
    rings(line)
        .iter()
        .map(|ring| ring["waiting"].as_bool().expect("waiting"))
        .collect()
}

/// The group each ringing phone rang through.
fn via_group(line: &Value) -> Vec<Option<&str>> {
    rings(line)
        .iter()
        .map(|ring| ring["group"].as_str())
        .collect()
}

fn forward_text(forward: &Value) -> String {
    format!(
        "{} {}->{}",
        forward["kind"].as_str().expect("kind"),
        forward["from_user"].as_str().expect("from_user"),
        forward["to"].as_str().expect("to")
    )
}

/// The forwards followed as `kind from_user->to`; checks that `forwarded`
/// is the first of them (or null).
fn forwards(line: &Value) -> Vec<String> {
    let all: Vec<String> = line["forwards"]
        .as_array()
        .expect("forwards")
        .iter()
        .map(forward_text)
        .collect();
    match all.first() {
        Some(first) => assert_eq!(&forward_text(&line["forwarded"]), first, "{line}"),
        None => assert!(line["forwarded"].is_null(), "{line}"),
    }
    all
}

/// `(instance, hop, effects)` for every decision, in order; no decision may
/// carry an error.
fn decisions(line: &Value) -> Vec<(&str, &str, &str)> {
    line["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            assert!(d.get("error").is_none(), "hook error: {d}");
            (
                d["instance"].as_str().expect("instance"),
                d["hop"].as_str().expect("hop"),
                d["decision"].as_str().expect("decision"),
            )
        })
        .collect()
}

/// The reason of `instance`'s decision at `hop`.
fn reason<'a>(line: &'a Value, instance: &str, hop: &str) -> Option<&'a str> {
    let found: Vec<&Value> = line["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["instance"] == instance && d["hop"] == hop)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one decision of {instance} at {hop}: {line}"
    );
    found[0]["reason"].as_str()
}

/// Asserts a plain ringing call of one user, no forward.
fn assert_rings(line: &Value, user: &str, display: &str) {
    assert_eq!(outcome(line), "ringing", "{line}");
    assert_eq!(rang(line), [user], "{line}");
    assert_eq!(displays(line), [display], "{line}");
    assert_eq!(waiting(line), [false], "{line}");
    assert_eq!(forwards(line), Vec::<String>::new(), "{line}");
}

/// Asserts a call that did not ring anybody, with the engine's reason.
fn assert_busy(line: &Value, reason: &str) {
    assert_eq!(outcome(line), "busy", "{line}");
    assert_eq!(rang(line), Vec::<&str>::new(), "{line}");
    assert_eq!(forwards(line), Vec::<String>::new(), "{line}");
    assert_eq!(why(line), Some(reason), "{line}");
}

/// The text of an instance log (all levels).
fn log(h: &Harness, instance: &str) -> String {
    h.ok(&["instance", "log", instance])
}

/// Instance names in execution order.
fn order(h: &Harness) -> Vec<String> {
    let mut instances = h.instances();
    instances.sort_by_key(|i| i["position"].as_u64().expect("position"));
    instances
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}

// ---------------------------------------------------------------- BT1

#[test]
fn bt1_called_and_caller_patterns_with_wildcards_exceptions_and_and() {
    let h = with_bt(
        r#"
bypass_dnd = true
forward_display = ""
[called]
active_for = ["2??"]
exceptions = ["299"]
[callers]
active_for = ["30*"]
exceptions = ["302"]
"#,
    );
    let state = r#"
[directory.state.dora]
dnd = true
[directory.state.md]
dnd = true
[directory.state.wide]
dnd = true
[directory.state.otto]
dnd = true
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("301", "204"),  // both match
                call("303", "204"),  // `30*` covers 303 too
                call("302", "204"),  // caller exception
                call("301", "299"),  // called exception
                call("301", "2050"), // `?` is exactly one digit
                call("203", "204"),  // callee matches, caller does not: AND
                call("301", "401"),  // caller matches, callee does not: AND
            ],
        ),
        7,
    );

    assert_rings(&lines[0], "dora", "Lars Lead");
    assert_eq!(decisions(&lines[0]), [("bt", "dora", "bypass_dnd")]);
    assert_eq!(
        reason(&lines[0], "bt", "dora"),
        Some("breakthrough rule matched: bypass DND")
    );

    assert_rings(&lines[1], "dora", "Ute Umbau");
    assert_eq!(decisions(&lines[1]), [("bt", "dora", "bypass_dnd")]);

    let nothing = |line: &Value, hop: &str, engine_reason: &str| {
        assert_busy(line, engine_reason);
        assert_eq!(decisions(line), [("bt", hop, "none")], "{line}");
        assert_eq!(reason(line, "bt", hop), None, "{line}");
    };
    nothing(&lines[2], "dora", "dora: do not disturb");
    nothing(&lines[3], "md", "md: do not disturb");
    nothing(&lines[4], "wide", "wide: do not disturb");
    nothing(&lines[5], "dora", "dora: do not disturb");
    nothing(&lines[6], "otto", "otto: do not disturb");
}

#[test]
fn bt1_external_caller_matches_in_every_signalled_form() {
    let h = harness(&[BT]);
    // The recommended leading `*`, and one pattern per written form: every
    // form of the caller's number is tried, so each instance matches each call.
    for (name, pattern) in [
        ("star", "*2515906850"),
        ("e164", "+492515906850"),
        ("intl", "00492515906850"),
        ("national", "02515906850"),
    ] {
        h.create(
            "breakthrough",
            name,
            &format!(
                "bypass_dnd = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"{pattern}\"]\n"
            ),
        );
    }
    let state = "[directory.state.dora]\ndnd = true\n";
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("+492515906850", "204"),
                call("00492515906850", "204"),
                call("02515906850", "204"),
                call("0251 5906850", "204"),
                call("+492515906851", "204"), // one digit off
            ],
        ),
        5,
    );
    let all = |effect| {
        vec![
            ("star", "dora", effect),
            ("e164", "dora", effect),
            ("intl", "dora", effect),
            ("national", "dora", effect),
        ]
    };
    for line in &lines[..4] {
        assert_rings(line, "dora", "02515906850");
        assert_eq!(decisions(line), all("bypass_dnd"), "{line}");
    }
    assert_busy(&lines[4], "dora: do not disturb");
    assert_eq!(decisions(&lines[4]), all("none"));
}

// ---------------------------------------------------------------- BT2

#[test]
fn bt2_bypass_dnd_only_for_matching_callers() {
    let h = harness(&[BT]);
    let state = r#"
[directory.state.dora]
dnd = true
[directory.state.otto]
dnd = true
forward_busy = "202"
"#;
    let calls = [call("301", "204"), call("302", "204"), call("302", "401")];
    // Without an instance DND holds for everybody (and counts as busy).
    let lines = run(&h, &scenario(state, &calls), 3);
    assert_busy(&lines[0], "dora: do not disturb");
    assert_eq!(decisions(&lines[0]), []);
    assert_busy(&lines[1], "dora: do not disturb");

    h.create(
        "breakthrough",
        "bt",
        r#"
bypass_dnd = true
forward_display = ""
[called]
active_for = ["204", "401"]
[callers]
active_for = ["301"]
"#,
    );
    let mut calls = calls.to_vec();
    calls.push(call("301", "401"));
    let lines = run(&h, &scenario(state, &calls), 4);
    assert_rings(&lines[0], "dora", "Lars Lead");
    assert_eq!(decisions(&lines[0]), [("bt", "dora", "bypass_dnd")]);
    // A caller outside the rule still hits DND.
    assert_busy(&lines[1], "dora: do not disturb");
    assert_eq!(decisions(&lines[1]), [("bt", "dora", "none")]);
    // DND with a busy forward: others are forwarded ...
    assert_eq!(outcome(&lines[2]), "ringing");
    assert_eq!(forwards(&lines[2]), ["busy otto->202"]);
    assert_eq!(rang(&lines[2]), ["sek"]);
    assert_eq!(displays(&lines[2]), ["Kim Kollege"]);
    assert_eq!(
        decisions(&lines[2]),
        [("bt", "otto", "none"), ("bt", "sek", "none")]
    );
    // ... the matching caller rings through, the busy forward is not needed.
    assert_rings(&lines[3], "otto", "Lars Lead");
    assert_eq!(decisions(&lines[3]), [("bt", "otto", "bypass_dnd")]);
}

#[test]
fn bt2_bypass_forwards_skips_always_busy_and_no_answer_forwards() {
    let h = with_bt(
        r#"
bypass_forwards = true
forward_display = ""
[called]
active_for = ["201", "203", "204"]
[callers]
active_for = ["301"]
"#,
    );
    let state = r#"
[directory.state.boss]
forward_always = "202"
[directory.state.dora]
busy = true
call_waiting = false
forward_busy = "202"
[directory.state.carla]
forward_no_answer = "202"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("301", "201"),
                call("302", "201"),
                call("301", "204"),
                call("302", "204"),
                unanswered("301", "203"),
                unanswered("302", "203"),
            ],
        ),
        6,
    );

    // Always forward.
    assert_rings(&lines[0], "boss", "Lars Lead");
    assert_eq!(decisions(&lines[0]), [("bt", "boss", "bypass_forward")]);
    assert_eq!(
        reason(&lines[0], "bt", "boss"),
        Some("breakthrough rule matched: bypass forwards")
    );
    assert_eq!(outcome(&lines[1]), "ringing");
    assert_eq!(forwards(&lines[1]), ["always boss->202"]);
    assert_eq!(rang(&lines[1]), ["sek"]);
    assert_eq!(displays(&lines[1]), ["Kim Kollege"]);
    assert_eq!(
        decisions(&lines[1]),
        [("bt", "boss", "none"), ("bt", "sek", "none")]
    );

    // Busy forward: bypassed, and without call waiting the user is busy.
    assert_busy(&lines[2], "dora: busy");
    assert_eq!(decisions(&lines[2]), [("bt", "dora", "bypass_forward")]);
    assert_eq!(forwards(&lines[3]), ["busy dora->202"]);
    assert_eq!(rang(&lines[3]), ["sek"]);

    // No-answer forward: bypassed, only carla's phone rang.
    assert_rings(&lines[4], "carla", "Lars Lead");
    assert_eq!(decisions(&lines[4]), [("bt", "carla", "bypass_forward")]);
    assert_eq!(outcome(&lines[5]), "ringing");
    assert_eq!(rang(&lines[5]), ["carla", "sek"]);
    assert_eq!(displays(&lines[5]), ["Kim Kollege", "Kim Kollege"]);
    assert_eq!(forwards(&lines[5]), ["no_answer carla->202"]);
    assert_eq!(
        decisions(&lines[5]),
        [("bt", "carla", "none"), ("bt", "sek", "none")]
    );
}

#[test]
fn bt2_bypass_forward_to_self_only_lets_the_forward_target_through() {
    let h = with_bt(
        r#"
bypass_forwards = true
bypass_forward_to_self = true
[called]
active_for = ["201", "204"]
[callers]
active_for = ["*"]
"#,
    );
    let state = format!(
        "[directory.state.boss]\nforward_always = \"202\"\n[directory.state.dora]\nforward_always = \"{MOBILE}\"\n"
    );
    let lines = run(
        &h,
        &scenario(
            &state,
            &[
                call("202", "201"),         // the forward's target
                call("252", "201"),         // the target on her second line
                call("203", "201"),         // matches the rule, is not the target
                call("301", "201"),         // likewise
                call("01701234567", "204"), // an outside target, national form
                call(STRANGER, "204"),
            ],
        ),
        6,
    );
    let through =
        "breakthrough rule matched: bypass forwards (always forward points to the caller)";

    assert_rings(&lines[0], "boss", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[0]), [("bt", "boss", "bypass_forward")]);
    assert_eq!(reason(&lines[0], "bt", "boss"), Some(through));
    assert_rings(&lines[1], "boss", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[1]), [("bt", "boss", "bypass_forward")]);

    for (line, caller) in [(&lines[2], "Carla Clerk"), (&lines[3], "Lars Lead")] {
        let shown = format!("{caller} (für Anna Boss)");
        assert_eq!(outcome(line), "ringing");
        assert_eq!(forwards(line), ["always boss->202"]);
        assert_eq!(rang(line), ["sek"]);
        assert_eq!(displays(line), [shown.as_str()]);
        assert_eq!(
            decisions(line),
            [("bt", "boss", "forward_display"), ("bt", "sek", "none")]
        );
        assert_eq!(
            reason(line, "bt", "boss"),
            Some(format!("breakthrough rule matched: forward display \"{shown}\"").as_str())
        );
    }

    assert_rings(&lines[4], "dora", "01701234567");
    assert_eq!(decisions(&lines[4]), [("bt", "dora", "bypass_forward")]);
    assert_eq!(reason(&lines[4], "bt", "dora"), Some(through));

    assert_eq!(outcome(&lines[5]), "ringing");
    assert_eq!(forwards(&lines[5]), [format!("always dora->{MOBILE}")]);
    assert_eq!(rang(&lines[5]), [MOBILE]);
    assert_eq!(rings(&lines[5])[0]["user"], Value::Null);
    assert_eq!(displays(&lines[5]), ["03012345678 (für Dora Dev)"]);
    assert_eq!(
        decisions(&lines[5]),
        [
            ("bt", "dora", "forward_display"),
            ("bt", "01701234567", "none")
        ]
    );
}

#[test]
fn bt2_force_call_waiting_knocks_on_a_busy_user() {
    let h = with_bt(
        r#"
force_call_waiting = true
forward_display = ""
[called]
active_for = ["204"]
[callers]
active_for = ["301"]
"#,
    );
    let state = r#"
[directory.state.dora]
busy = true
call_waiting = false
[directory.state.carla]
busy = true
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[call("301", "204"), call("302", "204"), call("302", "203")],
        ),
        3,
    );
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(rang(&lines[0]), ["dora"]);
    assert_eq!(waiting(&lines[0]), [true]);
    assert_eq!(displays(&lines[0]), ["Lars Lead"]);
    assert_eq!(decisions(&lines[0]), [("bt", "dora", "force_call_waiting")]);
    assert_eq!(
        reason(&lines[0], "bt", "dora"),
        Some("breakthrough rule matched: force call waiting")
    );

    assert_busy(&lines[1], "dora: busy");
    assert_eq!(decisions(&lines[1]), [("bt", "dora", "none")]);

    // Carla has call waiting on herself: waiting without the module's help.
    assert_eq!(outcome(&lines[2]), "ringing");
    assert_eq!(rang(&lines[2]), ["carla"]);
    assert_eq!(waiting(&lines[2]), [true]);
    assert_eq!(decisions(&lines[2]), [("bt", "carla", "none")]);
}

#[test]
fn bt2_rules_are_evaluated_per_hop() {
    let h = with_bt(
        "bypass_dnd = true\n[called]\nactive_for = [\"201\", \"203\", \"205\"]\n[callers]\nactive_for = [\"301\"]\n",
    );
    let state = r#"
[directory.state.boss]
forward_always = "203"
[directory.state.carla]
dnd = true
[directory.state.nameless]
forward_always = "204"
[directory.state.dora]
dnd = true
"#;
    let lines = run(
        &h,
        &scenario(state, &[call("301", "201"), call("301", "205")]),
        2,
    );
    // Reached through the boss's forward, Carla's DND is bypassed at her hop.
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(forwards(&lines[0]), ["always boss->203"]);
    assert_eq!(rang(&lines[0]), ["carla"]);
    assert_eq!(displays(&lines[0]), ["Lars Lead (für Anna Boss)"]);
    assert_eq!(
        decisions(&lines[0]),
        [
            ("bt", "boss", "bypass_dnd+forward_display"),
            ("bt", "carla", "bypass_dnd")
        ]
    );
    // The rule matched at 205, not at Dora's hop: the bypass of the first
    // hop does not carry over, Dora's DND holds.
    assert_eq!(outcome(&lines[1]), "busy");
    assert_eq!(forwards(&lines[1]), ["always nameless->204"]);
    assert_eq!(rang(&lines[1]), Vec::<&str>::new());
    assert_eq!(why(&lines[1]), Some("dora: do not disturb"));
    assert_eq!(
        decisions(&lines[1]),
        [
            ("bt", "nameless", "bypass_dnd+forward_display"),
            ("bt", "dora", "none")
        ]
    );
}

// ---------------------------------------------------------------- BT3

#[test]
fn bt3_group_calls_are_left_alone_even_when_the_number_matches() {
    let h = with_bt(
        r#"
bypass_dnd = true
bypass_forwards = true
force_call_waiting = true
[called]
active_for = ["2??"]
[callers]
active_for = ["*"]
"#,
    );
    // The group's number is in the rule as far as the patterns go.
    let check: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "bt", "check", "301", "200"]))
            .expect("JSON");
    assert_eq!(
        check,
        serde_json::json!({
            "caller_matches": true,
            "called_matches": true,
            "would_apply": ["bypass_dnd", "bypass_forwards", "force_call_waiting", "forward_display"],
        })
    );

    let state = r#"
[directory.state.dora]
dnd = true
[directory.state.otto]
forward_always = "200"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[call("301", "200"), call("301", "401"), call("301", "204")],
        ),
        3,
    );
    // Dora's DND holds for the group call: only Carla rings.
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(rang(&lines[0]), ["carla"]);
    assert_eq!(via_group(&lines[0]), [Some("team")]);
    assert_eq!(displays(&lines[0]), ["Lars Lead"]);
    assert_eq!(decisions(&lines[0]), [("bt", "team", "none")]);
    assert_eq!(reason(&lines[0], "bt", "team"), None);

    // Reached through a forward, the group hop is left alone too.
    assert_eq!(outcome(&lines[1]), "ringing");
    assert_eq!(forwards(&lines[1]), ["always otto->200"]);
    assert_eq!(rang(&lines[1]), ["carla"]);
    assert_eq!(
        decisions(&lines[1]),
        [("bt", "otto", "none"), ("bt", "team", "none")]
    );

    // The same caller to a user of the group: the rule acts.
    assert_rings(&lines[2], "dora", "Lars Lead");
    assert_eq!(
        decisions(&lines[2]),
        [("bt", "dora", "bypass_dnd+bypass_forward+force_call_waiting")]
    );
    assert_eq!(
        reason(&lines[2], "bt", "dora"),
        Some("breakthrough rule matched: bypass DND, force call waiting, bypass forwards")
    );
}

// ---------------------------------------------------------------- BT4

#[test]
fn bt4_forward_target_shows_for_whom_the_call_was() {
    let h = with_bt(
        r#"
bypass_dnd = true
[called]
active_for = ["201", "204"]
[callers]
active_for = ["301", "*2515906850"]
"#,
    );
    let state = r#"
[directory.state.boss]
forward_always = "202"
[directory.state.dora]
busy = true
call_waiting = false
forward_busy = "203"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("301", "201"),
                call(ALARM, "201"),
                call("302", "201"),
                call("301", "204"),
                call("301", "+4930123456201"),
            ],
        ),
        5,
    );
    let marked = |line: &Value, forward: &str, to: &str, hop: &str, shown: &str| {
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), [forward], "{line}");
        assert_eq!(rang(line), [to], "{line}");
        assert_eq!(displays(line), [shown], "{line}");
        assert_eq!(
            decisions(line),
            [
                ("bt", hop, "bypass_dnd+forward_display"),
                ("bt", to, "none")
            ],
            "{line}"
        );
        assert_eq!(
            reason(line, "bt", hop),
            Some(
                format!("breakthrough rule matched: bypass DND, forward display \"{shown}\"")
                    .as_str()
            ),
            "{line}"
        );
    };
    marked(
        &lines[0],
        "always boss->202",
        "sek",
        "boss",
        "Lars Lead (für Anna Boss)",
    );
    marked(
        &lines[1],
        "always boss->202",
        "sek",
        "boss",
        "02515906850 (für Anna Boss)",
    );
    // Not in the rule: the caller's own display.
    assert_eq!(forwards(&lines[2]), ["always boss->202"]);
    assert_eq!(displays(&lines[2]), ["Kim Kollege"]);
    assert_eq!(
        decisions(&lines[2]),
        [("bt", "boss", "none"), ("bt", "sek", "none")]
    );
    // A busy forward is marked too.
    marked(
        &lines[3],
        "busy dora->203",
        "carla",
        "dora",
        "Lars Lead (für Dora Dev)",
    );
    // Dialled by DID: the same user.
    marked(
        &lines[4],
        "always boss->202",
        "sek",
        "boss",
        "Lars Lead (für Anna Boss)",
    );
}

#[test]
fn bt4_template_placeholders_and_the_later_instance_wins() {
    let h = harness(&[BT]);
    // Only a display configured: nothing else to do, so no decision without a forward.
    h.create(
        "breakthrough",
        "plain",
        "[called]\nactive_for = [\"201\", \"205\"]\n[callers]\nactive_for = [\"*\"]\n",
    );
    h.create(
        "breakthrough",
        "custom",
        r#"
forward_display = "{{{caller_number}}} an {callee} ({callee_number})"
[called]
active_for = ["201", "205"]
[callers]
active_for = ["*"]
"#,
    );
    let state = r#"
[directory.state.boss]
forward_always = "202"
[directory.state.nameless]
forward_always = "202"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call(ALARM, "201"),
                call("301", "205"),
                call(ALARM, "+4930123456201"),
                call("301", "204"),
            ],
        ),
        4,
    );
    let cases = [
        (
            &lines[0],
            "boss",
            "02515906850 (für Anna Boss)",
            "{02515906850} an Anna Boss (201)",
        ),
        (
            &lines[1],
            "nameless",
            "Lars Lead (für 205)",
            "{301} an 205 (205)",
        ),
        (
            &lines[2],
            "boss",
            "02515906850 (für Anna Boss)",
            "{02515906850} an Anna Boss (+4930123456201)",
        ),
    ];
    for (line, hop, plain, custom) in cases {
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), [format!("always {hop}->202")], "{line}");
        assert_eq!(rang(line), ["sek"], "{line}");
        // Both set a forward display; the later instance's wins.
        assert_eq!(displays(line), [custom], "{line}");
        assert_eq!(
            decisions(line),
            [
                ("plain", hop, "forward_display"),
                ("custom", hop, "forward_display"),
                ("plain", "sek", "none"),
                ("custom", "sek", "none"),
            ],
            "{line}"
        );
        assert_eq!(
            reason(line, "plain", hop),
            Some(format!("breakthrough rule matched: forward display \"{plain}\"").as_str())
        );
        assert_eq!(
            reason(line, "custom", hop),
            Some(format!("breakthrough rule matched: forward display \"{custom}\"").as_str())
        );
    }
    // No forward pending: the rule has nothing to do.
    assert_rings(&lines[3], "dora", "Lars Lead");
    assert_eq!(
        decisions(&lines[3]),
        [("plain", "dora", "none"), ("custom", "dora", "none")]
    );
}

// ---------------------------------------------------------------- BT5

#[test]
fn bt5_two_instances_with_different_rules_both_act() {
    let h = harness(&[BT]);
    h.create(
        "breakthrough",
        "bt-dnd",
        "bypass_dnd = true\nforward_display = \"\"\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"30?\"]\n",
    );
    h.create(
        "breakthrough",
        "bt-cw",
        "force_call_waiting = true\nforward_display = \"\"\n[called]\nactive_for = [\"20?\"]\n[callers]\nactive_for = [\"301\"]\n",
    );
    assert_eq!(order(&h), ["bt-dnd", "bt-cw"]);
    let state = r#"
[directory.state.dora]
dnd = true
busy = true
call_waiting = false
"#;
    let calls = [call("301", "204"), call("302", "204"), call("203", "204")];
    let lines = run(&h, &scenario(state, &calls), 3);
    // Both match: DND bypassed and the call knocks.
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(rang(&lines[0]), ["dora"]);
    assert_eq!(waiting(&lines[0]), [true]);
    assert_eq!(
        decisions(&lines[0]),
        [
            ("bt-dnd", "dora", "bypass_dnd"),
            ("bt-cw", "dora", "force_call_waiting")
        ]
    );
    // Only the first: past DND, but busy without call waiting.
    assert_busy(&lines[1], "dora: busy");
    assert_eq!(
        decisions(&lines[1]),
        [("bt-dnd", "dora", "bypass_dnd"), ("bt-cw", "dora", "none")]
    );
    assert_busy(&lines[2], "dora: do not disturb");
    assert_eq!(
        decisions(&lines[2]),
        [("bt-dnd", "dora", "none"), ("bt-cw", "dora", "none")]
    );

    // Without the DND instance the knocking alone does not get through.
    h.ok(&["instance", "deactivate", "bt-dnd"]);
    let lines = run(&h, &scenario(state, &calls[..1]), 1);
    assert_busy(&lines[0], "dora: do not disturb");
    assert_eq!(
        decisions(&lines[0]),
        [("bt-cw", "dora", "force_call_waiting")]
    );
}

#[test]
fn bt5_each_instance_logs_at_its_own_level() {
    let h = harness(&[BT]);
    let config =
        "bypass_dnd = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"301\"]\n";
    h.create("breakthrough", "bt-a", config);
    h.create("breakthrough", "bt-b", config);
    let state = "[directory.state.dora]\ndnd = true\n";
    let calls = [call("301", "204"), call("302", "204")];
    let matched = "breakthrough rule matched: bypass DND";

    // At INFO (the default) a decision writes nothing.
    let lines = run(&h, &scenario(state, &calls), 2);
    assert_rings(&lines[0], "dora", "Lars Lead");
    for name in ["bt-a", "bt-b"] {
        assert_eq!(h.instance(name)["log_level"], "INFO");
        let text = log(&h, name);
        assert!(text.contains("running on breakthrough 0.1.0"), "{text}");
        assert!(!text.contains("DEBUG"), "{name} at INFO:\n{text}");
        assert!(!text.contains(matched), "{name} at INFO:\n{text}");
    }

    assert_eq!(
        h.ok(&["instance", "set-level", "bt-a", "DEBUG"]).trim(),
        "bt-a logs at DEBUG"
    );
    assert_eq!(h.instance("bt-a")["log_level"], "DEBUG");
    assert_eq!(h.instance("bt-b")["log_level"], "INFO");
    let lines = run(&h, &scenario(state, &calls), 2);
    assert_rings(&lines[0], "dora", "Lars Lead");
    assert_busy(&lines[1], "dora: do not disturb");

    let text = log(&h, "bt-a");
    let decided: Vec<&str> = text.lines().filter(|l| l.contains(matched)).collect();
    assert_eq!(decided.len(), 1, "{text}");
    // Call ids are `sim-<process>-<n>`: unique across runs.
    let line = decided[0];
    assert!(
        line.contains(&format!(" DEBUG breakthrough: {matched} call_id=sim-"))
            && line.ends_with("-1 caller=301 callee=204"),
        "{text}"
    );
    let no_match: Vec<&str> = text.lines().filter(|l| l.contains("no match")).collect();
    assert_eq!(no_match.len(), 1, "{text}");
    assert!(
        no_match[0].ends_with("-2 caller=302 callee=204 caller_matches=false called_matches=true"),
        "{text}"
    );
    // The log can be read down to a level.
    let info = h.ok(&["instance", "log", "bt-a", "--level", "INFO"]);
    assert!(!info.contains("DEBUG"), "{info}");
    assert!(info.contains("running on breakthrough 0.1.0"), "{info}");

    let text = log(&h, "bt-b");
    assert!(!text.contains("DEBUG"), "bt-b stays at INFO:\n{text}");
}

// ---------------------------------------------------------------- RD1, RD4

#[test]
fn rd1_secretary_breaks_through_everybody_else_is_forwarded_and_marked() {
    let h = with_rd(""); // no configuration needed
    let state = "[directory.state.boss]\nforward_always = \"202\"\n";
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("202", "201"),
                call("203", "201"),
                call(CUSTOMER, "+4930123456201"),
                call(STRANGER, "201"),
                call("203", "204"),
            ],
        ),
        5,
    );
    assert_rings(&lines[0], "boss", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[0]), [("rd", "boss", "bypass_forward")]);
    assert_eq!(
        reason(&lines[0], "rd", "boss"),
        Some("caller Sarah Sekretariat is the target of Anna Boss's always forward (by primary number): break through")
    );

    for (line, caller) in [
        (&lines[1], "Carla Clerk"),
        (&lines[2], "Max Kunde"),
        (&lines[3], "03012345678"),
    ] {
        let shown = format!("Uml. für Anna Boss: {caller}");
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), ["always boss->202"], "{line}");
        assert_eq!(rang(line), ["sek"], "{line}");
        assert_eq!(displays(line), [shown.as_str()], "{line}");
        assert_eq!(
            decisions(line),
            [("rd", "boss", "forward_display"), ("rd", "sek", "none")],
            "{line}"
        );
        assert_eq!(
            reason(line, "rd", "boss"),
            Some(
                format!(
                    "always forward of Anna Boss to Sarah Sekretariat followed: marked \"{shown}\""
                )
                .as_str()
            )
        );
        assert_eq!(reason(line, "rd", "sek"), None);
    }
    // Nobody with a forward: nothing to do.
    assert_rings(&lines[4], "dora", "Carla Clerk");
    assert_eq!(decisions(&lines[4]), [("rd", "dora", "none")]);
}

#[test]
fn rd4_busy_forwards_are_marked_no_answer_forwards_are_not() {
    let h = with_rd("");
    let state = r#"
[directory.state.boss]
busy = true
call_waiting = false
forward_busy = "202"
forward_no_answer = "204"
[directory.state.md]
forward_no_answer = "202"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("203", "201"),
                unanswered("203", "299"),
                unanswered("202", "299"),
                call("204", "201"),
            ],
        ),
        4,
    );
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(forwards(&lines[0]), ["busy boss->202"]);
    assert_eq!(rang(&lines[0]), ["sek"]);
    assert_eq!(displays(&lines[0]), ["Uml. für Anna Boss: Carla Clerk"]);
    assert_eq!(
        decisions(&lines[0]),
        [("rd", "boss", "forward_display"), ("rd", "sek", "none")]
    );
    assert_eq!(
        reason(&lines[0], "rd", "boss"),
        Some("busy forward of Anna Boss to Sarah Sekretariat followed: marked \"Uml. für Anna Boss: Carla Clerk\"")
    );

    // The no-answer forward is followed but not marked.
    assert_eq!(outcome(&lines[1]), "ringing");
    assert_eq!(forwards(&lines[1]), ["no_answer md->202"]);
    assert_eq!(rang(&lines[1]), ["md", "sek"]);
    assert_eq!(displays(&lines[1]), ["Carla Clerk", "Carla Clerk"]);
    assert_eq!(
        decisions(&lines[1]),
        [("rd", "md", "none"), ("rd", "sek", "none")]
    );

    // It still entitles its target to break through.
    assert_rings(&lines[2], "md", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[2]), [("rd", "md", "bypass_forward")]);
    assert_eq!(
        reason(&lines[2], "rd", "md"),
        Some("caller Sarah Sekretariat is the target of Max Direktor's no-answer forward (by primary number): break through")
    );
    // Dora, the target of the boss's no-answer forward, gets past the busy
    // forward, to a boss who is busy without call waiting.
    assert_busy(&lines[3], "boss: busy");
    assert_eq!(decisions(&lines[3]), [("rd", "boss", "bypass_forward")]);
}

#[test]
fn rd4_label_is_configurable_and_marking_can_be_switched_off() {
    let h = with_rd("forward_label = \"Fwd for\"\n");
    let state = "[directory.state.boss]\nforward_always = \"202\"\n";
    let calls = [call("203", "201"), call("202", "201")];
    let lines = run(&h, &scenario(state, &calls), 2);
    assert_eq!(displays(&lines[0]), ["Fwd for Anna Boss: Carla Clerk"]);
    assert_rings(&lines[1], "boss", "Sarah Sekretariat");

    let off = h.file("off.toml", "mark_forwarded = false\nforward_label = \"\"\n");
    h.ok(&["instance", "configure", "rd", off.to_str().unwrap()]);
    let lines = run(&h, &scenario(state, &calls), 2);
    assert_eq!(forwards(&lines[0]), ["always boss->202"]);
    assert_eq!(rang(&lines[0]), ["sek"]);
    assert_eq!(displays(&lines[0]), ["Carla Clerk"]);
    assert_eq!(
        decisions(&lines[0]),
        [("rd", "boss", "none"), ("rd", "sek", "none")]
    );
    // Breaking through does not depend on marking.
    assert_rings(&lines[1], "boss", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[1]), [("rd", "boss", "bypass_forward")]);
}

// ---------------------------------------------------------------- RD2

#[test]
fn rd2_switchboard_user_and_group_member_break_through_any_forward() {
    let h = with_rd("switchboard_users = [\"zentrale\"]\nswitchboard_groups = [\"vermittlung\"]\n");
    let state = format!(
        r#"
[directory.state.boss]
forward_always = "202"
[directory.state.dora]
forward_always = "{MOBILE}"
[directory.state.carla]
busy = true
call_waiting = false
forward_busy = "202"
"#
    );
    let lines = run(
        &h,
        &scenario(
            &state,
            &[
                call("100", "201"),
                call("110", "201"), // logged out of the group: still a member
                call("100", "204"),
                call("110", "204"),
                call("303", "201"),
                call("100", "203"),
            ],
        ),
        6,
    );
    let user = "caller Zentrale is switchboard user zentrale: break through";
    let member = "caller Olga Operator is a member of switchboard group vermittlung: break through";
    for (line, callee, hop, shown, why) in [
        (&lines[0], "boss", "boss", "Zentrale", user),
        (&lines[1], "boss", "boss", "Olga Operator", member),
        (&lines[2], "dora", "dora", "Zentrale", user),
        (&lines[3], "dora", "dora", "Olga Operator", member),
    ] {
        assert_rings(line, callee, shown);
        assert_eq!(decisions(line), [("rd", hop, "bypass_forward")], "{line}");
        assert_eq!(reason(line, "rd", hop), Some(why), "{line}");
    }
    assert_eq!(forwards(&lines[4]), ["always boss->202"]);
    assert_eq!(rang(&lines[4]), ["sek"]);
    assert_eq!(displays(&lines[4]), ["Uml. für Anna Boss: Ute Umbau"]);
    // The busy forward is bypassed too: Carla is busy, so the call is.
    assert_busy(&lines[5], "carla: busy");
    assert_eq!(decisions(&lines[5]), [("rd", "carla", "bypass_forward")]);
}

// ---------------------------------------------------------------- RD3

#[test]
fn rd3_external_forward_target_and_configured_callers_break_through() {
    let h = with_rd("external_callers = [\"*70227896848?\"]\n");
    let state = format!("[directory.state.boss]\nforward_always = \"{MOBILE}\"\n");
    let lines = run(
        &h,
        &scenario(
            &state,
            &[
                call("01701234567", "201"),
                call("0049 170 1234567", "201"),
                call("+49702278968480", "201"),
                call("+4970227896848", "201"), // `?` needs one more digit
                call(STRANGER, "201"),
                call("303", "201"),
            ],
        ),
        6,
    );
    let target =
        "caller 01701234567 is the target of Anna Boss's always forward (by number): break through";
    assert_rings(&lines[0], "boss", "01701234567");
    assert_eq!(decisions(&lines[0]), [("rd", "boss", "bypass_forward")]);
    assert_eq!(reason(&lines[0], "rd", "boss"), Some(target));
    assert_rings(&lines[1], "boss", "01701234567");
    assert_eq!(reason(&lines[1], "rd", "boss"), Some(target));

    assert_rings(&lines[2], "boss", "0702278968480");
    assert_eq!(decisions(&lines[2]), [("rd", "boss", "bypass_forward")]);
    assert_eq!(
        reason(&lines[2], "rd", "boss"),
        Some("external caller 0702278968480 matches external_callers pattern *70227896848?: break through")
    );

    for (line, caller) in [
        (&lines[3], "070227896848"),
        (&lines[4], "03012345678"),
        (&lines[5], "Ute Umbau"),
    ] {
        let shown = format!("Uml. für Anna Boss: {caller}");
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), [format!("always boss->{MOBILE}")], "{line}");
        assert_eq!(rang(line), [MOBILE], "{line}");
        assert_eq!(rings(line)[0]["user"], Value::Null, "{line}");
        assert_eq!(displays(line), [shown.as_str()], "{line}");
        assert_eq!(
            decisions(line),
            [
                ("rd", "boss", "forward_display"),
                ("rd", "01701234567", "none")
            ],
            "{line}"
        );
    }
}

// ---------------------------------------------------------------- RD5

#[test]
fn rd5_forward_to_a_group_members_are_still_forwarded() {
    let h = with_rd("");
    // Group 600: Sarah logged in, Carla logged out.
    let state = "[directory.state.boss]\nforward_always = \"600\"\n";
    let lines = run(
        &h,
        &scenario(state, &[call("203", "201"), call(STRANGER, "201")]),
        2,
    );
    for (line, caller) in [(&lines[0], "Carla Clerk"), (&lines[1], "03012345678")] {
        let shown = format!("Uml. für Anna Boss: {caller}");
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), ["always boss->600"], "{line}");
        assert_eq!(rang(line), ["sek"], "{line}");
        assert_eq!(via_group(line), [Some("sekgrp")], "{line}");
        assert_eq!(displays(line), [shown.as_str()], "{line}");
        assert_eq!(
            decisions(line),
            [("rd", "boss", "forward_display"), ("rd", "sekgrp", "none")],
            "{line}"
        );
        assert_eq!(
            reason(line, "rd", "boss"),
            Some(
                format!("always forward of Anna Boss to Sekretariate followed: marked \"{shown}\"")
                    .as_str()
            )
        );
    }
}

// ---------------------------------------------------------------- RD6

#[test]
fn rd6_chain_lets_c_through_b_but_not_a() {
    let h = with_rd("");
    let state = r#"
[directory.state.boss]
forward_always = "202"
[directory.state.sek]
forward_always = "203"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                call("203", "201"),
                call("202", "201"),
                call(STRANGER, "201"),
                call("203", "202"),
            ],
        ),
        4,
    );
    // C calls A: forwarded to B (marked for A), breaks B's forward: B rings.
    assert_eq!(outcome(&lines[0]), "ringing");
    assert_eq!(forwards(&lines[0]), ["always boss->202"]);
    assert_eq!(rang(&lines[0]), ["sek"]);
    assert_eq!(displays(&lines[0]), ["Uml. für Anna Boss: Carla Clerk"]);
    assert_eq!(
        decisions(&lines[0]),
        [
            ("rd", "boss", "forward_display"),
            ("rd", "sek", "bypass_forward")
        ]
    );
    assert_eq!(
        reason(&lines[0], "rd", "sek"),
        Some("caller Carla Clerk is the target of Sarah Sekretariat's always forward (by primary number): break through")
    );

    // B calls A: breaks A's forward.
    assert_rings(&lines[1], "boss", "Sarah Sekretariat");
    assert_eq!(decisions(&lines[1]), [("rd", "boss", "bypass_forward")]);

    // An outsider goes down the whole chain; both hops mark it for A.
    assert_eq!(outcome(&lines[2]), "ringing");
    assert_eq!(forwards(&lines[2]), ["always boss->202", "always sek->203"]);
    assert_eq!(rang(&lines[2]), ["carla"]);
    assert_eq!(displays(&lines[2]), ["Uml. für Anna Boss: 03012345678"]);
    assert_eq!(
        decisions(&lines[2]),
        [
            ("rd", "boss", "forward_display"),
            ("rd", "sek", "forward_display"),
            ("rd", "carla", "none")
        ]
    );
    assert_eq!(
        reason(&lines[2], "rd", "sek"),
        Some("always forward of Sarah Sekretariat to Carla Clerk followed: marked \"Uml. für Anna Boss: 03012345678\"")
    );

    // C calls B directly: breaks B's forward.
    assert_rings(&lines[3], "sek", "Carla Clerk");
    assert_eq!(decisions(&lines[3]), [("rd", "sek", "bypass_forward")]);
}

// ---------------------------------------------------------------- RD7

#[test]
fn rd7_only_the_primary_internal_number_entitles() {
    let h = with_rd("");
    let state = r#"
[directory.state.boss]
forward_always = "252"
[directory.state.md]
forward_always = "202"
"#;
    let lines = run(
        &h,
        &scenario(
            state,
            &[call("202", "201"), call("252", "299"), call("202", "299")],
        ),
        3,
    );
    // The boss forwards to Sarah's second number: she is not entitled, the
    // call is marked and would come back to her own phone.
    assert_eq!(
        decisions(&lines[0]),
        [("rd", "boss", "forward_display")],
        "{}",
        lines[0]
    );
    assert_eq!(
        reason(&lines[0], "rd", "boss"),
        Some("always forward of Anna Boss to Sarah Sekretariat followed: marked \"Uml. für Anna Boss: Sarah Sekretariat\"")
    );
    assert!(!rang(&lines[0]).contains(&"boss"), "{}", lines[0]);
    assert_busy(&lines[0], "the forward of boss points back to the caller");

    // To her primary number: entitled, whichever of her lines she calls from.
    for (line, shown) in [
        (&lines[1], "Sarah Sekretariat"),
        (&lines[2], "Sarah Sekretariat"),
    ] {
        assert_rings(line, "md", shown);
        assert_eq!(decisions(line), [("rd", "md", "bypass_forward")], "{line}");
    }
}

// ---------------------------------------------------------------- RD8

#[test]
fn rd8_attended_transfer_by_the_target_breaks_through_blind_does_not() {
    let h = with_rd("");
    let state = "[directory.state.boss]\nforward_always = \"202\"\n";
    let lines = run(
        &h,
        &scenario(
            state,
            &[
                transfer(CUSTOMER, "201", "attended-transfer", "sek"),
                transfer(CUSTOMER, "201", "attended-transfer", "202"),
                transfer(CUSTOMER, "201", "blind-transfer", "sek"),
                transfer(CUSTOMER, "201", "attended-transfer", "carla"),
            ],
        ),
        4,
    );
    for line in &lines[..2] {
        assert_eq!(line["via"], "attended-transfer");
        assert_rings(line, "boss", "Sarah Sekretariat");
        assert_eq!(
            decisions(line),
            [("rd", "boss", "bypass_forward")],
            "{line}"
        );
    }
    for (line, via, shown) in [
        (&lines[2], "blind-transfer", "Uml. für Anna Boss: Max Kunde"),
        (
            &lines[3],
            "attended-transfer",
            "Uml. für Anna Boss: Carla Clerk",
        ),
    ] {
        assert_eq!(line["via"], via);
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), ["always boss->202"], "{line}");
        assert_eq!(rang(line), ["sek"], "{line}");
        assert_eq!(displays(line), [shown], "{line}");
        assert_eq!(
            decisions(line),
            [("rd", "boss", "forward_display"), ("rd", "sek", "none")],
            "{line}"
        );
    }
}

// ---------------------------------------------------------------- both modules

#[test]
fn both_modules_instance_order_decides_which_forward_display_wins() {
    let h = harness(&[BT, RD]);
    h.create(
        "breakthrough",
        "bt",
        "[called]\nactive_for = [\"201\"]\n[callers]\nactive_for = [\"*\"]\n",
    );
    h.create("redirect-display", "rd", "");
    assert_eq!(order(&h), ["bt", "rd"]);
    let state = "[directory.state.boss]\nforward_always = \"202\"\n";
    let calls = [call("203", "201")];

    let lines = run(&h, &scenario(state, &calls), 1);
    assert_eq!(forwards(&lines[0]), ["always boss->202"]);
    assert_eq!(rang(&lines[0]), ["sek"]);
    assert_eq!(displays(&lines[0]), ["Uml. für Anna Boss: Carla Clerk"]);
    assert_eq!(
        decisions(&lines[0]),
        [
            ("bt", "boss", "forward_display"),
            ("rd", "boss", "forward_display"),
            ("bt", "sek", "none"),
            ("rd", "sek", "none"),
        ]
    );

    h.ok(&["instance", "order", "rd", "1"]);
    assert_eq!(order(&h), ["rd", "bt"]);
    let lines = run(&h, &scenario(state, &calls), 1);
    assert_eq!(forwards(&lines[0]), ["always boss->202"]);
    assert_eq!(rang(&lines[0]), ["sek"]);
    assert_eq!(displays(&lines[0]), ["Carla Clerk (für Anna Boss)"]);
    assert_eq!(
        decisions(&lines[0]),
        [
            ("rd", "boss", "forward_display"),
            ("bt", "boss", "forward_display"),
            ("rd", "sek", "none"),
            ("bt", "sek", "none"),
        ]
    );
}

#[test]
fn both_modules_an_earlier_bypass_suppresses_the_mark() {
    let h = harness(&[BT, RD]);
    h.create(
        "breakthrough",
        "bt",
        "bypass_forwards = true\nforward_display = \"\"\n[called]\nactive_for = [\"201\"]\n[callers]\nactive_for = [\"301\"]\n",
    );
    h.create("redirect-display", "rd", "");
    let state = "[directory.state.boss]\nforward_always = \"202\"\n";
    let calls = [call("301", "201"), call("203", "201")];

    let lines = run(&h, &scenario(state, &calls), 2);
    assert_rings(&lines[0], "boss", "Lars Lead");
    assert_eq!(
        decisions(&lines[0]),
        [("bt", "boss", "bypass_forward"), ("rd", "boss", "none")]
    );
    assert_eq!(displays(&lines[1]), ["Uml. für Anna Boss: Carla Clerk"]);
    assert_eq!(
        decisions(&lines[1]),
        [
            ("bt", "boss", "none"),
            ("rd", "boss", "forward_display"),
            ("bt", "sek", "none"),
            ("rd", "sek", "none"),
        ]
    );

    // Marking first: the mark is decided, but the later bypass wins and the
    // boss's phone shows the caller.
    h.ok(&["instance", "order", "rd", "1"]);
    let lines = run(&h, &scenario(state, &calls), 2);
    assert_rings(&lines[0], "boss", "Lars Lead");
    assert_eq!(
        decisions(&lines[0]),
        [
            ("rd", "boss", "forward_display"),
            ("bt", "boss", "bypass_forward")
        ]
    );
    assert_eq!(displays(&lines[1]), ["Uml. für Anna Boss: Carla Clerk"]);
}

// ---------------------------------------------------------------- configuration

#[test]
fn breakthrough_refuses_bad_configurations_naming_the_field() {
    let h = harness(&[BT]);
    let refused = |config: &str, field: &str, detail: &str| {
        let file = h.file("bad.toml", config);
        let err = h.fails(&[
            "instance",
            "create",
            "breakthrough",
            "x",
            "--config",
            file.to_str().unwrap(),
        ]);
        assert!(
            err.contains(&format!("instance `x`: field `{field}`")),
            "{config:?} should name `{field}`:\n{err}"
        );
        assert!(
            err.contains(detail),
            "{config:?} should say {detail:?}:\n{err}"
        );
    };
    refused(
        "[called]\nactive_for = [\"2??\", \"2a1\"]\n",
        "called.active_for[1]",
        "2a1",
    );
    refused(
        "[called]\nactive_for = [\"\"]\n",
        "called.active_for[0]",
        "empty pattern",
    );
    refused(
        "[callers]\nexceptions = [\"30#\"]\n",
        "callers.exceptions[0]",
        "30#",
    );
    refused(
        "bypass_forward_to_self = true\n",
        "bypass_forward_to_self",
        "bypass_forwards",
    );
    refused("bypass_dnt = true\n", "bypass_dnt", "unknown field");
    refused(
        "[callers]\nactive_fro = []\n",
        "callers.active_fro",
        "unknown field",
    );
    refused("bypass_dnd = \"yes\"\n", "bypass_dnd", "invalid type");
    refused(
        "forward_display = \"{who} ruft\"\n",
        "forward_display",
        "{who}",
    );
    refused(
        "forward_display = \"{caller\"\n",
        "forward_display",
        "unclosed",
    );
    assert_eq!(h.instances(), Vec::<Value>::new());
}

#[test]
fn redirect_display_refuses_bad_configurations_naming_the_field() {
    let h = harness(&[RD]);
    let refused = |config: &str, field: &str| {
        let file = h.file("bad.toml", config);
        let err = h.fails(&[
            "instance",
            "create",
            "redirect-display",
            "x",
            "--config",
            file.to_str().unwrap(),
        ]);
        assert!(
            err.contains(&format!("instance `x`: field `{field}`")),
            "{config:?} should name `{field}`:\n{err}"
        );
    };
    refused(
        "switchboard_users = [\"zentrale\", \" \"]\n",
        "switchboard_users[1]",
    );
    refused("switchboard_groups = [\"\"]\n", "switchboard_groups[0]");
    refused("external_callers = [\"abc\"]\n", "external_callers[0]");
    refused("forward_label = \" \"\n", "forward_label");
    refused("switchbord_users = []\n", "switchbord_users");
    refused("mark_forwarded = 1\n", "mark_forwarded");
    assert_eq!(h.instances(), Vec::<Value>::new());
    // Without marking the label may be empty.
    h.create(
        "redirect-display",
        "rd",
        "mark_forwarded = false\nforward_label = \"\"\n",
    );
    assert_eq!(h.instance("rd")["status"], "active");
}

#[test]
fn configure_changes_behaviour_on_the_next_simulation() {
    let h = with_bt(
        "bypass_dnd = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"301\"]\n",
    );
    let state = "[directory.state.dora]\ndnd = true\n";
    let text = scenario(state, &[call("301", "204"), call("302", "204")]);

    let lines = run(&h, &text, 2);
    assert_rings(&lines[0], "dora", "Lars Lead");
    assert_busy(&lines[1], "dora: do not disturb");

    let other = h.file(
        "other.toml",
        "bypass_dnd = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"302\"]\n",
    );
    assert_eq!(
        h.ok(&["instance", "configure", "bt", other.to_str().unwrap()])
            .trim(),
        "configured bt"
    );
    let lines = run(&h, &text, 2);
    assert_busy(&lines[0], "dora: do not disturb");
    assert_eq!(decisions(&lines[0]), [("bt", "dora", "none")]);
    assert_rings(&lines[1], "dora", "Kim Kollege");
    assert_eq!(decisions(&lines[1]), [("bt", "dora", "bypass_dnd")]);

    // A refused configuration leaves the one in force alone.
    let bad = h.file(
        "bad.toml",
        "bypass_forward_to_self = true\n[called]\nactive_for = [\"204\"]\n[callers]\nactive_for = [\"301\"]\n",
    );
    let err = h.fails(&["instance", "configure", "bt", bad.to_str().unwrap()]);
    assert!(err.contains("field `bypass_forward_to_self`"), "{err}");
    let lines = run(&h, &text, 2);
    assert_busy(&lines[0], "dora: do not disturb");
    assert_rings(&lines[1], "dora", "Kim Kollege");
}

// ---------------------------------------------------------------- the demo

#[test]
fn demo_scenario_gives_the_documented_outcomes() {
    let h = harness(&[BT, RD]);
    h.load_office();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let example = |name: &str| examples.join(name).to_str().unwrap().to_string();
    h.ok(&[
        "instance",
        "create",
        "breakthrough",
        "bt-management",
        "--config",
        &example("demo-breakthrough.toml"),
    ]);
    h.ok(&[
        "instance",
        "create",
        "redirect-display",
        "rd",
        "--config",
        &example("redirect-display.toml"),
    ]);
    let demo = std::fs::read_to_string(examples.join("demo.toml")).expect("demo.toml");
    let lines = run(&h, &demo, 8);

    let forwarded_to_sec = |line: &Value, shown: &str| {
        assert_eq!(outcome(line), "ringing", "{line}");
        assert_eq!(forwards(line), ["always boss->202"], "{line}");
        assert_eq!(rang(line), ["sec"], "{line}");
        assert_eq!(displays(line), [shown], "{line}");
        assert_eq!(
            decisions(line),
            [
                ("bt-management", "boss", "none"),
                ("rd", "boss", "forward_display"),
                ("bt-management", "sec", "none"),
                ("rd", "sec", "none"),
            ],
            "{line}"
        );
    };
    let breaks_through = |line: &Value| {
        assert_rings(line, "boss", "Sarah Sekretariat");
        assert_eq!(
            decisions(line),
            [
                ("bt-management", "boss", "none"),
                ("rd", "boss", "bypass_forward")
            ],
            "{line}"
        );
        assert_eq!(
            reason(line, "rd", "boss"),
            Some("caller Sarah Sekretariat is the target of Anna Boss's always forward (by primary number): break through")
        );
    };

    // 1. A colleague: forwarded, marked for the boss (RD4).
    forwarded_to_sec(&lines[0], "Uml. für Anna Boss: Carl Clerk");
    // 2. The secretariat breaks through (RD1).
    breaks_through(&lines[1]);
    // 3. A customer on the DID: forwarded, marked with the address book name.
    assert_eq!(lines[2]["to"], "+4930123456201");
    forwarded_to_sec(&lines[2], "Uml. für Anna Boss: Max Kunde");
    // 4. Attended transfer by the secretariat breaks through (RD8) ...
    assert_eq!(lines[3]["via"], "attended-transfer");
    breaks_through(&lines[3]);
    // 5. ... a blind transfer comes back to the secretariat, marked.
    assert_eq!(lines[4]["via"], "blind-transfer");
    forwarded_to_sec(&lines[4], "Uml. für Anna Boss: Max Kunde");
    // 6. Dora in DND: a colleague gets busy ...
    assert_busy(&lines[5], "dev: do not disturb");
    assert_eq!(
        decisions(&lines[5]),
        [("bt-management", "dev", "none"), ("rd", "dev", "none")]
    );
    // 7. ... the team lead breaks through (BT2).
    assert_rings(&lines[6], "dev", "Lars Lead");
    assert_eq!(
        decisions(&lines[6]),
        [
            ("bt-management", "dev", "bypass_dnd+force_call_waiting"),
            ("rd", "dev", "none")
        ]
    );
    assert_eq!(
        reason(&lines[6], "bt-management", "dev"),
        Some("breakthrough rule matched: bypass DND, force call waiting")
    );
    // 8. The office group rings its logged-in members (Dora is logged out).
    assert_eq!(outcome(&lines[7]), "ringing");
    assert_eq!(rang(&lines[7]), ["sec", "clerk"]);
    assert_eq!(via_group(&lines[7]), [Some("office"), Some("office")]);
    assert_eq!(displays(&lines[7]), ["Max Kunde", "Max Kunde"]);
    assert_eq!(waiting(&lines[7]), [false, false]);
    assert_eq!(forwards(&lines[7]), Vec::<String>::new());
    assert_eq!(
        decisions(&lines[7]),
        [
            ("bt-management", "office", "none"),
            ("rd", "office", "none")
        ]
    );
}
