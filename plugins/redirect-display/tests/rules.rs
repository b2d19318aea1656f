//! Rule table for the redirect-display module: every RD rule and every
//! config error, with exact decisions.

use abi_stable::std_types::{ROption, RString, RVec};
use callhost_plugin_sdk::{
    abi::Transfer,
    testing::{context, external_de, party, user},
    CallSetup, ConfigError, Decision, Forward, ForwardKind, Module, Party, PartyKind, Setup,
    TransferKind, UserState,
};
use redirect_display::{Config, RedirectDisplay};

// ---------------------------------------------------------------- helpers

fn some(text: &str) -> ROption<RString> {
    ROption::RSome(RString::from(text))
}

fn boss() -> Party {
    user("boss", "Chef", "201")
}

fn secretary() -> Party {
    user("sek", "Sekretariat", "202")
}

fn carla() -> Party {
    user("carla", "Carla", "203")
}

fn member_of(mut party: Party, groups: &[&str], logged_in: &[&str]) -> Party {
    party.groups = groups.iter().map(|g| RString::from(*g)).collect();
    party.active_groups = logged_in.iter().map(|g| RString::from(*g)).collect();
    party
}

fn outsider() -> Party {
    external_de("0301234567")
}

use callhost_plugin_sdk::testing::setup;

/// The callee's `kind` forward to `to`: in its state, and pending unless
/// it is a no-answer forward.
fn with_forward(mut setup: CallSetup, kind: ForwardKind, to: Party) -> CallSetup {
    let mut state = setup.callee_state.clone().unwrap_or_default();
    let slot = match kind {
        ForwardKind::Always => &mut state.forward_always,
        ForwardKind::Busy => {
            state.busy = true;
            &mut state.forward_busy
        }
        ForwardKind::NoAnswer => &mut state.forward_no_answer,
    };
    *slot = ROption::RSome(to.number.clone());
    setup.callee_state = ROption::RSome(state);
    if kind != ForwardKind::NoAnswer {
        setup.pending_forward = ROption::RSome(Forward {
            kind,
            from: setup.callee.clone(),
            to,
        });
    }
    setup
}

fn always(setup: CallSetup, to: Party) -> CallSetup {
    with_forward(setup, ForwardKind::Always, to)
}

fn module(toml_text: &str) -> RedirectDisplay {
    let config: Config = toml::from_str(toml_text).expect("test config parses");
    RedirectDisplay::new(&context("redirect-display-test"), config).expect("test config is valid")
}

fn decide(module: &RedirectDisplay, setup: &CallSetup) -> Decision {
    match module.call_setup(setup) {
        Setup::Ready(decision) => decision,
        Setup::Later(_) => panic!("redirect-display must decide without I/O"),
    }
}

fn breaks_through(reason: &str) -> Decision {
    Decision {
        bypass_forward: true,
        reason: some(reason),
        ..Decision::default()
    }
}

fn marked(display: &str, reason: &str) -> Decision {
    Decision {
        forward_display: some(display),
        reason: some(reason),
        ..Decision::default()
    }
}

// ------------------------------------------------------------- RD1 / RD7

#[test]
fn rd1_the_forward_target_calls_through() {
    let m = module("");
    let s = always(setup(secretary(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's always forward (by primary number): break through"
        )
    );
}

#[test]
fn rd1_busy_and_no_answer_forwards_count_too() {
    let m = module("");
    let s = with_forward(setup(secretary(), boss()), ForwardKind::Busy, secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's busy forward (by primary number): break through"
        )
    );
    // A no-answer forward is never pending, but it is the boss's forward to
    // the secretary all the same: bypassing it keeps the call off her phone.
    let s = with_forward(
        setup(secretary(), boss()),
        ForwardKind::NoAnswer,
        secretary(),
    );
    assert!(s.pending_forward.is_none());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's no-answer forward (by primary number): break through"
        )
    );
    // A busy forward configured while the boss is free is still his forward.
    let mut s = setup(secretary(), boss());
    s.callee_state = ROption::RSome(UserState {
        forward_busy: some("202"),
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's busy forward (by primary number): break through"
        )
    );
}

#[test]
fn rd1_others_are_forwarded_and_marked() {
    let m = module("");
    let s = always(setup(carla(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Carla",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Carla\""
        )
    );
}

#[test]
fn no_forward_no_opinion() {
    let m = module("switchboard_users = [\"zentrale\"]");
    assert_eq!(decide(&m, &setup(secretary(), boss())), Decision::default());
    let zentrale = user("zentrale", "Zentrale", "100");
    assert_eq!(decide(&m, &setup(zentrale, boss())), Decision::default());
    assert_eq!(decide(&m, &setup(outsider(), boss())), Decision::default());
}

#[test]
fn rd7_only_the_primary_internal_number_counts() {
    let m = module("");
    // The boss forwards to the secretary's second number 252.
    let second = Party {
        number: "252".into(),
        ..secretary()
    };
    let s = always(setup(secretary(), boss()), second);
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Sekretariat",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Sekretariat\""
        )
    );
    // Forward to 202 while she calls from her second line 252: she is the
    // target by her primary number, whichever line she uses.
    let from_second_line = Party {
        number: "252".into(),
        ..secretary()
    };
    let s = always(setup(from_second_line, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's always forward (by primary number): break through"
        )
    );
}

// ------------------------------------------------------------------ RD2

#[test]
fn rd2_switchboard_users_call_through_any_forward() {
    let m = module("switchboard_users = [\"zentrale\"]");
    let zentrale = user("zentrale", "Zentrale", "100");
    let s = always(setup(zentrale, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through("caller Zentrale is switchboard user zentrale: break through")
    );
    // Carla is not one.
    let s = always(setup(carla(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Carla",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Carla\""
        )
    );
}

#[test]
fn rd2_switchboard_group_members_logged_in_or_not() {
    let m = module("switchboard_groups = [\"vermittlung\"]");
    let logged_out = member_of(user("op", "Operator", "110"), &["vermittlung"], &[]);
    let s = always(setup(logged_out, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Operator is a member of switchboard group vermittlung: break through"
        )
    );
    let logged_in = member_of(
        user("op2", "Operator 2", "111"),
        &["sales", "vermittlung"],
        &["sales", "vermittlung"],
    );
    let s = always(setup(logged_in, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Operator 2 is a member of switchboard group vermittlung: break through"
        )
    );
    // Member of another group only.
    let other = member_of(carla(), &["sales"], &["sales"]);
    let s = always(setup(other, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Carla",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Carla\""
        )
    );
}

// ------------------------------------------------------------------ RD3

#[test]
fn rd3_external_forward_target_calls_through() {
    let m = module("");
    let mobile = external_de("01711234567");
    let s = always(setup(mobile.clone(), boss()), mobile.clone());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller 01711234567 is the target of Chef's always forward (by number): break through"
        )
    );
    // The forward written in another form, with separators (no-answer).
    let mut s = setup(mobile, boss());
    s.callee_state = ROption::RSome(UserState {
        forward_no_answer: some("+49 171 1234567"),
        ..UserState::default()
    });
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller 01711234567 is the target of Chef's no-answer forward (by number): break through"
        )
    );
    // The resolved target signalled as +E.164 still matches the caller.
    let target = Party {
        number: "+491711234567".into(),
        ..external_de("01711234567")
    };
    let s = always(setup(external_de("01711234567"), boss()), target);
    assert!(decide(&m, &s).bypass_forward);
}

#[test]
fn rd3_configured_external_callers() {
    let m = module("external_callers = [\"*2515906850\", \"*301234567\"]");
    let s = always(setup(outsider(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "external caller 0301234567 matches external_callers pattern *301234567: break through"
        )
    );
    // Another external caller is forwarded and marked.
    let s = always(setup(external_de("0401234567"), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: 0401234567",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: 0401234567\""
        )
    );
    // The patterns are for external callers only.
    let m = module("external_callers = [\"20?\"]");
    let s = always(setup(carla(), boss()), secretary());
    assert!(!decide(&m, &s).bypass_forward);
}

// ------------------------------------------------------------------ RD4

#[test]
fn rd4_marking_uses_the_earlier_display_and_the_label() {
    let m = module("");
    let mut s = always(setup(outsider(), boss()), secretary());
    s.prior = Decision {
        display: some("Müller GmbH"),
        ..Decision::default()
    };
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Müller GmbH",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Müller GmbH\""
        )
    );
    let m = module("forward_label = \"Fwd for\"");
    let s = with_forward(setup(carla(), boss()), ForwardKind::Busy, secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Fwd for Chef: Carla",
            "busy forward of Chef to Sekretariat followed: marked \"Fwd for Chef: Carla\""
        )
    );
    // No name: the number.
    let nameless = Party {
        name: ROption::RNone,
        ..boss()
    };
    let s = always(setup(carla(), nameless), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Fwd for 201: Carla",
            "always forward of 201 to Sekretariat followed: marked \"Fwd for 201: Carla\""
        )
    );
}

#[test]
fn rd4_not_marked_when_off_bypassed_or_no_answer() {
    let s = always(setup(carla(), boss()), secretary());
    // Switched off.
    let m = module("mark_forwarded = false");
    assert_eq!(decide(&m, &s), Decision::default());
    // An earlier instance already bypasses the forward.
    let m = module("");
    let mut bypassed = s.clone();
    bypassed.prior = Decision {
        bypass_forward: true,
        ..Decision::default()
    };
    assert_eq!(decide(&m, &bypassed), Decision::default());
    // No-answer forwards are never pending: nothing to mark.
    let s = with_forward(setup(carla(), boss()), ForwardKind::NoAnswer, secretary());
    assert_eq!(decide(&m, &s), Decision::default());
}

// ------------------------------------------------------------------ RD5

#[test]
fn rd5_members_of_a_target_group_cannot_call_through() {
    let m = module("");
    let sales = Party {
        id: some("sales"),
        name: some("Vertrieb"),
        primary_number: some("600"),
        ..party(PartyKind::Group, "600")
    };
    let member = member_of(user("vera", "Vera", "204"), &["sales"], &["sales"]);
    let s = always(setup(member, boss()), sales);
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Vera",
            "always forward of Chef to Vertrieb followed: marked \"Uml. für Chef: Vera\""
        )
    );
}

#[test]
fn calls_to_groups_are_not_touched() {
    let m = module("switchboard_users = [\"boss\"]");
    let sales = Party {
        id: some("sales"),
        name: some("Vertrieb"),
        primary_number: some("600"),
        ..party(PartyKind::Group, "600")
    };
    let mut s = setup(boss(), sales);
    s.pending_forward = ROption::RSome(Forward {
        kind: ForwardKind::Always,
        from: s.callee.clone(),
        to: secretary(),
    });
    assert_eq!(decide(&m, &s), Decision::default());
}

// ------------------------------------------------------------------ RD6

#[test]
fn rd6_not_transitive() {
    // Boss → secretary → Carla; Carla calls the boss.
    let m = module("");
    let hop_boss = always(setup(carla(), boss()), secretary());
    assert_eq!(
        decide(&m, &hop_boss),
        marked(
            "Uml. für Chef: Carla",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Carla\""
        )
    );
    let mut hop_secretary = always(setup(carla(), secretary()), carla());
    hop_secretary.forwarded = RVec::from(vec![Forward {
        kind: ForwardKind::Always,
        from: boss(),
        to: secretary(),
    }]);
    assert_eq!(
        decide(&m, &hop_secretary),
        breaks_through(
            "caller Carla is the target of Sekretariat's always forward (by primary number): break through"
        )
    );
    // Someone else on the same chain: the second hop names the boss, whom
    // the call was for.
    let mut other = hop_secretary.clone();
    other.caller = outsider();
    assert_eq!(
        decide(&m, &other),
        marked(
            "Uml. für Chef: 0301234567",
            "always forward of Sekretariat to Carla followed: marked \"Uml. für Chef: 0301234567\""
        )
    );
}

// ------------------------------------------------------------------ RD8

#[test]
fn rd8_attended_transfer_by_the_target_calls_through() {
    let m = module("");
    // The secretary consults the boss (who forwards to her) with an outside
    // caller on hold: her consultation call rings the boss.
    let mut s = always(setup(secretary(), boss()), secretary());
    s.transfer = ROption::RSome(Transfer {
        kind: TransferKind::Attended,
        by: secretary(),
        original_caller: outsider(),
    });
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "caller Sekretariat is the target of Chef's always forward (by primary number): break through"
        )
    );
}

#[test]
fn rd8_blind_transfer_does_not() {
    let m = module("");
    let mut s = always(setup(outsider(), boss()), secretary());
    s.transfer = ROption::RSome(Transfer {
        kind: TransferKind::Blind,
        by: secretary(),
        original_caller: outsider(),
    });
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: 0301234567",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: 0301234567\""
        )
    );
}

#[test]
fn unknown_callers_are_never_entitled() {
    let m = module("external_callers = [\"*\"]");
    let stranger = party(PartyKind::Unknown, "299");
    let s = always(setup(stranger, boss()), party(PartyKind::Unknown, "299"));
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: 299",
            "always forward of Chef to 299 followed: marked \"Uml. für Chef: 299\""
        )
    );
}

// --------------------------------------------------------- configuration

/// Configures an instance the way the host does, answering the effective
/// configuration or the refusal.
fn configure(text: &str) -> Result<String, ConfigError> {
    callhost_plugin_sdk::testing::configure::<RedirectDisplay>(text)
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
    assert!(config.mark_forwarded);
    assert_eq!(config.forward_label, "Uml. für");
    assert!(config.switchboard_users.is_empty());
    assert!(config.switchboard_groups.is_empty());
    assert!(config.external_callers.is_empty());
    let full = "switchboard_users = [\"zentrale\"]\nswitchboard_groups = [\"vermittlung\"]\n\
                external_callers = [\"*301234567\"]\nforward_label = \"Fwd\"";
    let effective = configure(full).unwrap();
    let config: Config = toml::from_str(&effective).unwrap();
    assert_eq!(config, toml::from_str::<Config>(full).unwrap());
}

#[test]
fn config_errors_name_the_field() {
    let (field, message) = refused("switchboard_users = [\"zentrale\", \"\"]");
    assert_eq!(
        (field.as_str(), message.as_str()),
        ("switchboard_users[1]", "must not be empty")
    );

    let (field, message) = refused("switchboard_groups = [\" \"]");
    assert_eq!(
        (field.as_str(), message.as_str()),
        ("switchboard_groups[0]", "must not be empty")
    );

    let (field, message) = refused("external_callers = [\"*301\", \"abc\"]");
    assert_eq!(field, "external_callers[1]");
    assert!(message.contains("\"abc\""), "{message}");

    let (field, _) = refused("external_callers = [\"\"]");
    assert_eq!(field, "external_callers[0]");

    let (field, message) = refused("forward_label = \"  \"");
    assert_eq!(field, "forward_label");
    assert!(message.contains("mark_forwarded"), "{message}");

    let (field, _) = refused("mark_forwaded = false");
    assert_eq!(field, "mark_forwaded");

    let (field, _) = refused("switchboard_users = \"zentrale\"");
    assert_eq!(field, "switchboard_users");

    // Without marking, the label does not matter.
    configure("mark_forwarded = false\nforward_label = \"\"").unwrap();
}

// -------------------------------------------------------------- examples

#[test]
fn sample_configuration_works_as_documented() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/redirect-display.toml"
    ))
    .unwrap();
    configure(&text).expect("examples/redirect-display.toml is valid");
    let m = module(&text);
    let zentrale = user("zentrale", "Zentrale", "100");
    let s = always(setup(zentrale, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through("caller Zentrale is switchboard user zentrale: break through")
    );
    let operator = member_of(user("op", "Operator", "110"), &["vermittlung"], &[]);
    assert!(decide(&m, &always(setup(operator, boss()), secretary())).bypass_forward);
    let caller = Party {
        number: "+49702278968480".into(),
        ..external_de("0702278968480")
    };
    let s = always(setup(caller, boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        breaks_through(
            "external caller +49702278968480 matches external_callers pattern *70227896848?: break through"
        )
    );
    let s = always(setup(carla(), boss()), secretary());
    assert_eq!(
        decide(&m, &s),
        marked(
            "Uml. für Chef: Carla",
            "always forward of Chef to Sekretariat followed: marked \"Uml. für Chef: Carla\""
        )
    );
}
