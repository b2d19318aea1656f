//! Rule table for the breakthrough module: every BT rule and every config
//! error, with exact decisions.

use abi_stable::std_types::{ROption, RString, RVec};
use breakthrough::{Breakthrough, Config};
use callhost_plugin_sdk::{
    abi::Transfer,
    serde_json::json,
    testing::{context, external_de, party, user},
    Action, Actions, CallSetup, ConfigError, Decision, Forward, ForwardKind, Module, Party,
    PartyKind, Setup, TransferKind, UserState,
};

// ---------------------------------------------------------------- helpers

fn some(text: &str) -> ROption<RString> {
    ROption::RSome(RString::from(text))
}

fn boss() -> Party {
    user("boss", "Chef", "201")
}

fn lead() -> Party {
    user("lead", "Teamleiter", "301")
}

fn secretary() -> Party {
    user("sek", "Sekretariat", "203")
}

use callhost_plugin_sdk::testing::setup;

/// The callee has an always forward to `to` (pending and in its state).
fn forwarded_always(mut setup: CallSetup, to: Party) -> CallSetup {
    let mut state = setup.callee_state.clone().unwrap_or_default();
    state.forward_always = ROption::RSome(to.number.clone());
    setup.callee_state = ROption::RSome(state);
    setup.pending_forward = ROption::RSome(Forward {
        kind: ForwardKind::Always,
        from: setup.callee.clone(),
        to,
    });
    setup
}

fn module(toml_text: &str) -> Breakthrough {
    let config: Config = toml::from_str(toml_text).expect("test config parses");
    Breakthrough::new(&context("breakthrough-test"), config).expect("test config is valid")
}

fn decide(module: &Breakthrough, setup: &CallSetup) -> Decision {
    match module.call_setup(setup) {
        Setup::Ready(decision) => decision,
        Setup::Later(_) => panic!("breakthrough must decide without I/O"),
    }
}

fn decision(reason: &str) -> Decision {
    Decision {
        reason: some(reason),
        ..Decision::default()
    }
}

const RULE: &str = r#"
bypass_dnd = true
force_call_waiting = true
[called]
active_for = ["20?"]
exceptions = ["209"]
[callers]
active_for = ["*2515906850", "3??"]
exceptions = ["399"]
"#;

fn dnd_and_waiting() -> Decision {
    Decision {
        bypass_dnd: true,
        force_call_waiting: true,
        ..decision("breakthrough rule matched: bypass DND, force call waiting")
    }
}

// ------------------------------------------------------------------ BT1

#[test]
fn bt1_both_filters_match() {
    let m = module(RULE);
    assert_eq!(
        decide(&m, &setup(external_de("02515906850"), boss())),
        dnd_and_waiting()
    );
    assert_eq!(decide(&m, &setup(lead(), boss())), dnd_and_waiting());
}

#[test]
fn bt1_any_number_form_counts() {
    let m = module(RULE);
    // Signalled as +E.164: `*2515906850` cannot match the `+`, the 00 form does.
    let caller = Party {
        number: "+492515906850".into(),
        ..external_de("02515906850")
    };
    assert_eq!(decide(&m, &setup(caller, boss())), dnd_and_waiting());
    // The callee reached by its DID: the primary internal number matches.
    let callee = Party {
        number: "00492515906201".into(),
        ..boss()
    };
    assert_eq!(decide(&m, &setup(lead(), callee)), dnd_and_waiting());
}

#[test]
fn bt1_exceptions_and_non_matching_numbers_are_ignored() {
    let m = module(RULE);
    let cases = [
        (lead(), user("u209", "Excepted", "209")), // called exception
        (lead(), user("u210", "Outside", "210")),  // called not active
        (user("u399", "Excepted", "399"), boss()), // caller exception
        (external_de("0301234567"), boss()),       // caller not active
        (user("u30", "Short", "30"), boss()),      // `3??` needs three digits
    ];
    for (caller, callee) in cases {
        let label = format!("{} -> {}", caller.number, callee.number);
        assert_eq!(
            decide(&m, &setup(caller, callee)),
            Decision::default(),
            "{label}"
        );
    }
}

#[test]
fn bt1_and_an_empty_active_for_matches_nothing() {
    // Unconfigured: nothing at all.
    let m = module("");
    let mut s = setup(lead(), boss());
    s.callee_state = ROption::RSome(UserState {
        dnd: true,
        ..UserState::default()
    });
    assert_eq!(decide(&m, &s), Decision::default());
    // Only the called side configured: the caller side matches nothing.
    let m = module("bypass_dnd = true\n[called]\nactive_for = [\"*\"]");
    assert_eq!(decide(&m, &s), Decision::default());
    // Both sides: now it applies.
    let m = module(
        "bypass_dnd = true\n[called]\nactive_for = [\"*\"]\n[callers]\nactive_for = [\"*\"]",
    );
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_dnd: true,
            ..decision("breakthrough rule matched: bypass DND")
        }
    );
}

// ------------------------------------------------------------------ BT3

#[test]
fn bt3_group_calls_are_never_touched() {
    let m = module(
        "bypass_dnd = true\nbypass_forwards = true\n[called]\nactive_for = [\"*\"]\n[callers]\nactive_for = [\"*\"]",
    );
    let group = Party {
        id: some("sales"),
        name: some("Vertrieb"),
        primary_number: some("200"),
        ..party(PartyKind::Group, "200")
    };
    assert_eq!(decide(&m, &setup(lead(), group)), Decision::default());
    // Nor calls to outside numbers.
    assert_eq!(
        decide(&m, &setup(lead(), external_de("0301234567"))),
        Decision::default()
    );
}

// ------------------------------------------------------------------ BT2

const ALL: &str = "[called]\nactive_for = [\"*\"]\n[callers]\nactive_for = [\"*\"]\n";

#[test]
fn bt2_bypass_forwards() {
    let m = module(&format!("bypass_forwards = true\n{ALL}"));
    let s = forwarded_always(setup(lead(), boss()), secretary());
    // Bypassed: nothing follows, so no forward display either.
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_forward: true,
            ..decision("breakthrough rule matched: bypass forwards")
        }
    );
}

#[test]
fn bt2_forward_to_self_by_pending_forward() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\n{ALL}"
    ));
    let s = forwarded_always(setup(secretary(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_forward: true,
            ..decision(
                "breakthrough rule matched: bypass forwards (always forward points to the caller)"
            )
        }
    );
}

#[test]
fn bt2_forward_to_self_by_id_of_another_number() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\nforward_display = \"\"\n{ALL}"
    ));
    // The boss forwards to the secretary's second number 253 (only the id
    // tells it is hers).
    let second = Party {
        number: "253".into(),
        primary_number: ROption::RNone,
        ..secretary()
    };
    let mut s = setup(secretary(), boss());
    s.pending_forward = ROption::RSome(Forward {
        kind: ForwardKind::Busy,
        from: boss(),
        to: second,
    });
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_forward: true,
            ..decision(
                "breakthrough rule matched: bypass forwards (busy forward points to the caller)"
            )
        }
    );
}

#[test]
fn bt2_forward_to_self_by_no_answer_forward() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\n{ALL}"
    ));
    let mut s = setup(lead(), boss());
    s.callee_state = ROption::RSome(UserState {
        forward_no_answer: some("301"),
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_forward: true,
            ..decision(
                "breakthrough rule matched: bypass forwards (no-answer forward points to the caller)"
            )
        }
    );
}

#[test]
fn bt2_forward_to_self_external_number_written_differently() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\n{ALL}"
    ));
    let mut s = setup(external_de("02515906850"), boss());
    s.callee_state = ROption::RSome(UserState {
        busy: true,
        forward_busy: some("+49 251 5906850"),
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &s),
        Decision {
            bypass_forward: true,
            ..decision(
                "breakthrough rule matched: bypass forwards (busy forward points to the caller)"
            )
        }
    );
}

#[test]
fn bt2_forward_to_self_narrows_other_forwards_stay() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\n{ALL}"
    ));
    // The boss forwards to the secretary; the team lead calls: the forward
    // stays and the secretary's phone says who it was for (BT4).
    let s = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        Decision {
            forward_display: some("Teamleiter (für Chef)"),
            ..decision("breakthrough rule matched: forward display \"Teamleiter (für Chef)\"")
        }
    );
    // Without a forward to the caller and with no display, nothing at all.
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\nforward_display = \"\"\n{ALL}"
    ));
    assert_eq!(decide(&m, &s), Decision::default());
}

#[test]
fn bt2_force_call_waiting_alone() {
    let m = module(&format!("force_call_waiting = true\n{ALL}"));
    let mut s = setup(lead(), boss());
    s.callee_state = ROption::RSome(UserState {
        busy: true,
        call_waiting: false,
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &s),
        Decision {
            force_call_waiting: true,
            ..decision("breakthrough rule matched: force call waiting")
        }
    );
}

#[test]
fn bt2_applies_per_hop_to_the_forward_target() {
    // Boss forwards to the secretary, who is in DND; the rule covers 203.
    let m = module(
        "bypass_dnd = true\nforward_display = \"\"\n[called]\nactive_for = [\"203\"]\n[callers]\nactive_for = [\"*\"]",
    );
    let mut hop2 = setup(lead(), secretary());
    hop2.forwarded = RVec::from(vec![Forward {
        kind: ForwardKind::Always,
        from: boss(),
        to: secretary(),
    }]);
    hop2.callee_state = ROption::RSome(UserState {
        dnd: true,
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &hop2),
        Decision {
            bypass_dnd: true,
            ..decision("breakthrough rule matched: bypass DND")
        }
    );
    // Hop 1 (the boss, 201) is not covered.
    let hop1 = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(decide(&m, &hop1), Decision::default());
}

// ------------------------------------------------------------------ BT4

#[test]
fn bt4_forward_display_names_the_called_user() {
    let m = module(ALL);
    let s = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        Decision {
            forward_display: some("Teamleiter (für Chef)"),
            ..decision("breakthrough rule matched: forward display \"Teamleiter (für Chef)\"")
        }
    );
}

#[test]
fn bt4_without_a_name_the_number_is_shown() {
    let m = module(ALL);
    let nameless = Party {
        name: ROption::RNone,
        ..boss()
    };
    let s = forwarded_always(setup(external_de("02515906850"), nameless), secretary());
    assert_eq!(
        decide(&m, &s),
        Decision {
            forward_display: some("02515906850 (für 201)"),
            ..decision("breakthrough rule matched: forward display \"02515906850 (für 201)\"")
        }
    );
}

#[test]
fn bt4_prefers_an_earlier_instances_display() {
    let m = module(ALL);
    let mut s = forwarded_always(setup(external_de("02515906850"), boss()), secretary());
    s.prior = Decision {
        display: some("Müller GmbH"),
        ..Decision::default()
    };
    assert_eq!(
        decide(&m, &s),
        Decision {
            forward_display: some("Müller GmbH (für Chef)"),
            ..decision("breakthrough rule matched: forward display \"Müller GmbH (für Chef)\"")
        }
    );
}

#[test]
fn bt4_custom_template_with_numbers_and_braces() {
    let m = module(&format!(
        "forward_display = \"{{{{{{caller_number}}}}}} → {{callee_number}} {{callee}}\"\n{ALL}"
    ));
    let s = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        Decision {
            forward_display: some("{301} → 201 Chef"),
            ..decision("breakthrough rule matched: forward display \"{301} → 201 Chef\"")
        }
    );
}

/// Each placeholder is filled with its own value, whatever order the
/// template names them in.
#[test]
fn bt4_every_placeholder_is_filled_by_its_name() {
    let m = module(&format!(
        "forward_display = \"{{callee_number}}|{{caller_number}}|{{callee}}|{{caller}}\"\n{ALL}"
    ));
    let s = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(
        decide(&m, &s).forward_display,
        some("201|301|Chef|Teamleiter")
    );
}

#[test]
fn bt4_no_display_when_nothing_is_followed_or_display_is_off() {
    let m = module(ALL);
    // No pending forward.
    assert_eq!(decide(&m, &setup(lead(), boss())), Decision::default());
    // An earlier instance already bypasses the forward.
    let mut s = forwarded_always(setup(lead(), boss()), secretary());
    s.prior = Decision {
        bypass_forward: true,
        ..Decision::default()
    };
    assert_eq!(decide(&m, &s), Decision::default());
    // Display switched off.
    let m = module(&format!("forward_display = \"\"\n{ALL}"));
    let s = forwarded_always(setup(lead(), boss()), secretary());
    assert_eq!(decide(&m, &s), Decision::default());
    // Not matching the rule: no display either.
    let m = module(RULE);
    let s = forwarded_always(setup(external_de("0301234567"), boss()), secretary());
    assert_eq!(decide(&m, &s), Decision::default());
}

#[test]
fn transfers_use_whoever_rings_now() {
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\n{ALL}"
    ));
    let outside = external_de("0301234567");
    // Attended: the secretary consults the boss, who forwards to her.
    let mut attended = forwarded_always(setup(secretary(), boss()), secretary());
    attended.transfer = ROption::RSome(Transfer {
        kind: TransferKind::Attended,
        by: secretary(),
        original_caller: outside.clone(),
    });
    assert!(decide(&m, &attended).bypass_forward);
    // Blind: the outside caller rings the boss; the forward is not to them.
    let mut blind = forwarded_always(setup(outside.clone(), boss()), secretary());
    blind.transfer = ROption::RSome(Transfer {
        kind: TransferKind::Blind,
        by: secretary(),
        original_caller: outside,
    });
    assert_eq!(
        decide(&m, &blind),
        Decision {
            forward_display: some("0301234567 (für Chef)"),
            ..decision("breakthrough rule matched: forward display \"0301234567 (für Chef)\"")
        }
    );
}

// --------------------------------------------------------------- action

fn check(
    m: &Breakthrough,
    args: &[&str],
) -> Result<callhost_plugin_sdk::serde_json::Value, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    match m.action("check", &args) {
        Action::Ready(result) => result,
        Action::Later(_) => panic!("check must answer at once"),
    }
}

#[test]
fn check_action() {
    let m = module(RULE);
    assert_eq!(
        check(&m, &["00492515906850", "201"]).unwrap(),
        json!({"caller_matches": true, "called_matches": true,
               "would_apply": ["bypass_dnd", "force_call_waiting", "forward_display"]})
    );
    assert_eq!(
        check(&m, &["0049 251 5906850", "209"]).unwrap(),
        json!({"caller_matches": true, "called_matches": false, "would_apply": []})
    );
    assert_eq!(
        check(&m, &["399", "201"]).unwrap(),
        json!({"caller_matches": false, "called_matches": true, "would_apply": []})
    );
    let m = module(&format!(
        "bypass_forwards = true\nbypass_forward_to_self = true\nforward_display = \"\"\n{ALL}"
    ));
    assert_eq!(
        check(&m, &["1", "2"]).unwrap(),
        json!({"caller_matches": true, "called_matches": true,
               "would_apply": ["bypass_forward_to_self"]})
    );
    assert_eq!(check(&m, &["1"]).unwrap_err(), "usage: check CALLER CALLED");
    let other = match m.action("nope", &[]) {
        Action::Ready(result) => result.unwrap_err(),
        Action::Later(_) => unreachable!(),
    };
    assert_eq!(other, "unknown action `nope`");
}

// --------------------------------------------------------- configuration

/// Configures an instance the way the host does, answering the effective
/// configuration or the refusal.
fn configure(text: &str) -> Result<String, ConfigError> {
    callhost_plugin_sdk::testing::configure::<Breakthrough>(text)
}

fn refused(text: &str) -> (String, String) {
    let error = configure(text).expect_err("configuration must be refused");
    (error.field.into_string(), error.message.into_string())
}

#[test]
fn config_defaults() {
    let effective = configure("").unwrap();
    let config: Config = toml::from_str(&effective).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.forward_display, "{caller} (für {callee})");
    assert!(config.called.active_for.is_empty() && config.callers.active_for.is_empty());
    assert!(!config.bypass_dnd && !config.bypass_forwards && !config.bypass_forward_to_self);
    assert!(!config.force_call_waiting);
    // A full configuration round-trips through the effective TOML.
    let effective = configure(RULE).unwrap();
    let config: Config = toml::from_str(&effective).unwrap();
    assert_eq!(config, toml::from_str::<Config>(RULE).unwrap());
}

#[test]
fn config_errors_name_the_field() {
    let (field, message) = refused("[called]\nactive_for = [\"20?\", \"2x1\"]");
    assert_eq!(field, "called.active_for[1]");
    assert!(message.contains("\"2x1\""), "{message}");

    let (field, message) = refused("[callers]\nexceptions = [\"\"]");
    assert_eq!(field, "callers.exceptions[0]");
    assert!(message.contains("empty pattern"), "{message}");

    let (field, _) = refused("[callers]\nactive_for = [\"1\", \"2\", \"3#\"]");
    assert_eq!(field, "callers.active_for[2]");

    let (field, _) = refused("[called]\nexceptions = [\"+49 30\"]");
    assert_eq!(field, "called.exceptions[0]");

    let (field, message) = refused("bypass_forward_to_self = true");
    assert_eq!(field, "bypass_forward_to_self");
    assert!(message.contains("bypass_forwards"), "{message}");

    let (field, message) = refused("forward_display = \"{caller} für {who}\"");
    assert_eq!(field, "forward_display");
    assert!(message.contains("{who}"), "{message}");

    let (field, message) = refused("forward_display = \"{caller\"");
    assert_eq!(field, "forward_display");
    assert!(message.contains("unclosed"), "{message}");

    let (field, _) = refused("bypass_dnt = true");
    assert_eq!(field, "bypass_dnt");

    let (field, _) = refused("[called]\nactiv_for = []");
    assert_eq!(field, "called.activ_for");

    let (field, _) = refused("bypass_dnd = \"yes\"");
    assert_eq!(field, "bypass_dnd");

    // Valid edge cases are accepted.
    configure("forward_display = \"\"").unwrap();
    configure("bypass_forwards = true\nbypass_forward_to_self = true").unwrap();
    configure("forward_display = \"{{literal}} {caller}\"").unwrap();
}

// -------------------------------------------------------------- examples

#[test]
fn sample_configuration_works_as_documented() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/breakthrough.toml"
    ))
    .unwrap();
    configure(&text).expect("examples/breakthrough.toml is valid");
    let m = module(&text);
    let all = Decision {
        bypass_dnd: true,
        bypass_forward: true,
        force_call_waiting: true,
        ..decision("breakthrough rule matched: bypass DND, force call waiting, bypass forwards")
    };
    let alarm = Party {
        number: "+492515906850".into(),
        ..external_de("02515906850")
    };
    assert_eq!(decide(&m, &setup(alarm, boss())), all);
    let s = forwarded_always(setup(lead(), boss()), user("mueller", "Müller", "202"));
    assert_eq!(decide(&m, &s), all);
    let director = user("md", "Geschäftsführung", "299");
    assert_eq!(decide(&m, &setup(lead(), director)), Decision::default());
    let colleague = user("u302", "Kollege", "302");
    assert_eq!(decide(&m, &setup(colleague, boss())), Decision::default());
}
