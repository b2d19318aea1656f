//! The engine's routing rules, with hooks scripted in the test.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use abi_stable::std_types::ROption;
use callhost_pbx::{
    directory::{Directory, DirectoryIndex},
    engine::{
        CallOutcome, CallRequest, DecisionSource, Engine, EngineConfig, HookDecision, Hooks,
        NoHooks, Outcome, Via,
    },
};
use callhost_plugin_abi::{
    CallEvent, CallSetup, Decision, EventKind, ForwardKind, PartyKind, TransferKind,
};

const DIRECTORY: &str = r#"
home_country = "DE"
[[users]]
id = "boss"
name = "Anna Boss"
numbers = ["201", "+4930123456201"]
[[users]]
id = "sec"
name = "Sarah Sec"
numbers = ["202"]
[[users]]
id = "clerk"
name = "Carl Clerk"
numbers = ["203"]
[[users]]
id = "dev"
name = "Dora Dev"
numbers = ["204"]
[[groups]]
id = "office"
name = "Office"
numbers = ["300"]
members = ["sec", "clerk", "dev"]
inactive = ["dev"]
[[contacts]]
first_name = "Max"
last_name = "Kunde"
numbers = ["+49891234567"]
"#;

/// `DIRECTORY` plus per-user state given as TOML `[state.x]` tables.
fn engine(state: &str) -> Engine {
    let directory = Directory::from_toml_str(&format!("{DIRECTORY}\n{state}")).unwrap();
    Engine::new(
        Arc::new(DirectoryIndex::new(directory).unwrap()),
        EngineConfig::default(),
    )
}

/// Hooks that answer with a scripted decision and remember what they saw.
struct Scripted {
    decide: Box<dyn Fn(&CallSetup) -> Decision + Send + Sync>,
    seen: Mutex<Vec<CallSetup>>,
    events: Mutex<Vec<(EventKind, String)>>,
    /// `call_decided` per hop (the callee's id, the merged decision) and
    /// the events in between, in the order they came.
    decided: Mutex<Vec<(String, Decision)>>,
    order: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(decide: impl Fn(&CallSetup) -> Decision + Send + Sync + 'static) -> Scripted {
        Scripted {
            decide: Box::new(decide),
            seen: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            decided: Mutex::new(Vec::new()),
            order: Mutex::new(Vec::new()),
        }
    }
}

impl Hooks for Scripted {
    fn call_setup<'a>(
        &'a self,
        setup: &'a mut CallSetup,
        _deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Vec<HookDecision>> + Send + 'a>> {
        let decision = (self.decide)(setup);
        self.seen.lock().unwrap().push(setup.clone());
        Box::pin(async move {
            vec![HookDecision {
                source: Arc::new(DecisionSource {
                    instance: "scripted".into(),
                    module: "test".into(),
                    version: "0".into(),
                }),
                decision,
                error: None,
                elapsed: Default::default(),
            }]
        })
    }

    fn call_event(&self, event: &CallEvent) {
        self.order
            .lock()
            .unwrap()
            .push(event.kind.name().to_string());
        self.events
            .lock()
            .unwrap()
            .push((event.kind, event.detail.to_string()));
    }

    fn call_decided(&self, setup: &CallSetup, decision: &Decision) {
        let callee = setup.callee.id.as_ref().map_or("-", |id| id.as_str());
        self.order.lock().unwrap().push(format!("decided {callee}"));
        self.decided
            .lock()
            .unwrap()
            .push((callee.to_string(), decision.clone()));
    }
}

fn call(from: &str, to: &str) -> CallRequest {
    CallRequest {
        call_id: "t".into(),
        from: from.into(),
        to: to.into(),
        via: Via::Direct,
        by: None,
        no_answer: false,
        external_caller: false,
    }
}

fn place(engine: &Engine, request: &CallRequest, hooks: &dyn Hooks) -> CallOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(engine.place(request, hooks))
}

fn rang(outcome: &CallOutcome) -> Vec<(&str, &str, bool)> {
    outcome
        .rang
        .iter()
        .map(|r| {
            (
                r.user.as_deref().unwrap_or("-"),
                r.display.as_str(),
                r.waiting,
            )
        })
        .collect()
}

#[test]
fn a_plain_call_rings_with_the_caller_name() {
    let e = engine("");
    let out = place(&e, &call("203", "201"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Ringing);
    assert_eq!(rang(&out), [("boss", "Carl Clerk", false)]);
    // The DID reaches the same user; an address-book caller shows by name.
    let out = place(&e, &call("089 1234567", "+4930123456201"), &NoHooks);
    assert_eq!(rang(&out), [("boss", "Max Kunde", false)]);
    // An unknown external caller shows the number as one would dial it back.
    let out = place(&e, &call("+4940555666", "201"), &NoHooks);
    assert_eq!(rang(&out), [("boss", "040555666", false)]);
}

#[test]
fn a_caller_from_the_trunk_is_outside_whatever_number_it_claims() {
    let e = engine("");
    for claimed in ["201", "+4930123456201", "089 1234567"] {
        let hooks = Scripted::new(|_| Decision::default());
        let request = CallRequest {
            external_caller: true,
            ..call(claimed, "203")
        };
        let out = place(&e, &request, &hooks);
        assert_eq!(out.outcome, Outcome::Ringing, "{claimed}");
        let seen = hooks.seen.lock().unwrap();
        let caller = &seen[0].caller;
        assert_eq!(caller.kind, PartyKind::External, "{claimed}");
        assert!(caller.id.is_none(), "{claimed} was taken for a user");
        assert_eq!(
            seen[0].direction,
            callhost_plugin_abi::Direction::Incoming,
            "{claimed}"
        );
        assert_eq!(e.caller_party(&request).kind, PartyKind::External);
    }
    // Without the flag the same number is the user (internal calls).
    assert_eq!(e.caller_party(&call("201", "203")).kind, PartyKind::User);
    // An address-book number keeps its name.
    let request = CallRequest {
        external_caller: true,
        ..call("089 1234567", "203")
    };
    assert_eq!(
        e.caller_party(&request)
            .name
            .into_option()
            .unwrap()
            .as_str(),
        "Max Kunde"
    );
}

#[test]
fn unknown_numbers_are_unavailable() {
    let out = place(&engine(""), &call("203", "299"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Unavailable);
    assert!(out.reason.unwrap().contains("299"));
}

#[test]
fn always_forward_is_followed_and_set_up_again_for_the_target() {
    let e = engine("[state.boss]\nforward_always = \"202\"\n");
    let hooks = Scripted::new(|_| Decision::default());
    let out = place(&e, &call("203", "201"), &hooks);
    assert_eq!(rang(&out), [("sec", "Carl Clerk", false)]);
    assert_eq!(out.forwards.len(), 1);
    assert_eq!(
        (
            out.forwards[0].kind,
            out.forwards[0].from_user.as_str(),
            out.forwards[0].to.as_str()
        ),
        ("always", "boss", "202")
    );
    let seen = hooks.seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one setup per hop");
    let first = &seen[0];
    let pending = first.pending_forward.as_ref().unwrap();
    assert_eq!(pending.kind, ForwardKind::Always);
    assert_eq!(pending.to.id.as_ref().unwrap().as_str(), "sec");
    assert_eq!(seen[1].callee.id.as_ref().unwrap().as_str(), "sec");
    assert_eq!(seen[1].forwarded.len(), 1);
    assert_eq!(
        seen[1].forwarded[0].from.id.as_ref().unwrap().as_str(),
        "boss"
    );
    assert!(hooks
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|(kind, detail)| *kind == EventKind::FORWARDED && detail == "always"));
}

#[test]
fn every_hop_reports_its_merged_decision_before_its_events() {
    let e = engine("[state.boss]\nforward_always = \"202\"\n");
    // The first hop's name is carried; the second hop adds a flag.
    let hooks = Scripted::new(
        |setup| match setup.callee.id.as_ref().map(|id| id.as_str()) {
            ROption::RSome("boss") => Decision {
                first_name: ROption::RSome("Max".into()),
                reason: ROption::RSome("named".into()),
                ..Decision::default()
            },
            _ => Decision {
                flag: ROption::RSome("checked".into()),
                ..Decision::default()
            },
        },
    );
    let out = place(&e, &call("203", "201"), &hooks);
    assert_eq!(rang(&out), [("sec", "Max", false)]);
    let decided = hooks.decided.lock().unwrap();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(decided[0].0, "boss");
    assert_eq!(decided[0].1.first_name.as_ref().unwrap().as_str(), "Max");
    assert_eq!(decided[1].0, "sec");
    // Merged: what the earlier hop decided for the call, and this hop's own.
    assert_eq!(decided[1].1.first_name.as_ref().unwrap().as_str(), "Max");
    assert_eq!(decided[1].1.flag.as_ref().unwrap().as_str(), "checked");
    assert_eq!(
        *hooks.order.lock().unwrap(),
        ["decided boss", "forwarded", "decided sec", "ringing"]
    );
    // No hop, no decision: an unknown number reports none.
    let hooks = Scripted::new(|_| Decision::default());
    place(&e, &call("203", "299"), &hooks);
    assert!(hooks.decided.lock().unwrap().is_empty());
}

#[test]
fn bypass_forward_rings_the_dialled_user() {
    let e = engine("[state.boss]\nforward_always = \"202\"\n");
    let hooks = Scripted::new(|_| Decision {
        bypass_forward: true,
        ..Decision::default()
    });
    let out = place(&e, &call("203", "201"), &hooks);
    assert_eq!(rang(&out), [("boss", "Carl Clerk", false)]);
    assert!(out.forwards.is_empty());
}

#[test]
fn forward_display_shows_on_the_target_only_for_always_and_busy() {
    let mark = |setup: &CallSetup| Decision {
        forward_display: if setup.pending_forward.is_some() {
            ROption::RSome("marked".into())
        } else {
            ROption::RNone
        },
        ..Decision::default()
    };
    let e = engine("[state.boss]\nforward_always = \"202\"\n");
    let out = place(&e, &call("203", "201"), &Scripted::new(mark));
    assert_eq!(rang(&out), [("sec", "marked", false)]);

    let e = engine("[state.boss]\nbusy = true\ncall_waiting = false\nforward_busy = \"202\"\n");
    let out = place(&e, &call("203", "201"), &Scripted::new(mark));
    assert_eq!(rang(&out), [("sec", "marked", false)]);
    assert_eq!(out.forwards[0].kind, "busy");

    // No-answer forwards cannot be predicted: the display is not marked.
    let e = engine("[state.boss]\nforward_no_answer = \"202\"\n");
    let mut request = call("203", "201");
    request.no_answer = true;
    let out = place(&e, &request, &Scripted::new(mark));
    assert_eq!(
        rang(&out),
        [("boss", "Carl Clerk", false), ("sec", "Carl Clerk", false)]
    );
    assert_eq!(out.forwards[0].kind, "no_answer");
}

#[test]
fn dnd_is_busy_unless_bypassed_and_leads_to_the_busy_forward() {
    let e = engine("[state.dev]\ndnd = true\n");
    let out = place(&e, &call("203", "204"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
    assert!(out.reason.unwrap().contains("do not disturb"));
    let bypass = Scripted::new(|_| Decision {
        bypass_dnd: true,
        ..Decision::default()
    });
    let out = place(&e, &call("203", "204"), &bypass);
    assert_eq!(rang(&out), [("dev", "Carl Clerk", false)]);

    let e = engine("[state.dev]\ndnd = true\nforward_busy = \"202\"\n");
    let out = place(&e, &call("203", "204"), &NoHooks);
    assert_eq!(rang(&out), [("sec", "Carl Clerk", false)]);
}

#[test]
fn busy_users_get_call_waiting_or_busy() {
    let e = engine("[state.boss]\nbusy = true\n");
    let out = place(&e, &call("203", "201"), &NoHooks);
    assert_eq!(
        rang(&out),
        [("boss", "Carl Clerk", true)],
        "call waiting is on by default"
    );

    let e = engine("[state.boss]\nbusy = true\ncall_waiting = false\n");
    let out = place(&e, &call("203", "201"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
    let force = Scripted::new(|_| Decision {
        force_call_waiting: true,
        ..Decision::default()
    });
    let out = place(&e, &call("203", "201"), &force);
    assert_eq!(rang(&out), [("boss", "Carl Clerk", true)]);
}

#[test]
fn offline_users_are_unavailable_or_go_to_the_no_answer_forward() {
    let e = engine("[state.boss]\nregistered = false\n");
    assert_eq!(
        place(&e, &call("203", "201"), &NoHooks).outcome,
        Outcome::Unavailable
    );
    let e = engine("[state.boss]\nregistered = false\nforward_no_answer = \"202\"\n");
    let out = place(&e, &call("203", "201"), &NoHooks);
    assert_eq!(rang(&out), [("sec", "Carl Clerk", false)]);
}

#[test]
fn reject_ends_the_call_with_the_reason() {
    let e = engine("");
    let hooks = Scripted::new(|_| Decision {
        reject: ROption::RSome("spam score 9".into()),
        ..Decision::default()
    });
    let out = place(&e, &call("+4940555666", "201"), &hooks);
    assert_eq!(out.outcome, Outcome::Rejected);
    assert_eq!(out.reason.as_deref(), Some("spam score 9"));
    assert!(out.rang.is_empty());
}

#[test]
fn decided_names_make_the_display() {
    let e = engine("");
    let hooks = Scripted::new(|_| Decision {
        first_name: ROption::RSome("Erika".into()),
        last_name: ROption::RSome("Muster".into()),
        ..Decision::default()
    });
    let out = place(&e, &call("+4940555666", "201"), &hooks);
    assert_eq!(rang(&out), [("boss", "Erika Muster", false)]);
}

/// The display and the call list's name follow the one shared rule: parts
/// trimmed, a blank part missing, the company when no person is named.
#[test]
fn decided_names_are_trimmed_and_blank_ones_skipped() {
    let e = engine("");
    let hooks = Scripted::new(|_| Decision {
        first_name: ROption::RSome(" Erika ".into()),
        last_name: ROption::RSome("  ".into()),
        ..Decision::default()
    });
    let out = place(&e, &call("+4940555666", "201"), &hooks);
    assert_eq!(rang(&out), [("boss", "Erika", false)]);
    assert_eq!(out.caller_name.as_deref(), Some("Erika"));

    let hooks = Scripted::new(|_| Decision {
        first_name: ROption::RSome(" ".into()),
        company: ROption::RSome(" Acme AG ".into()),
        ..Decision::default()
    });
    let out = place(&e, &call("+4940555666", "201"), &hooks);
    assert_eq!(rang(&out), [("boss", "Acme AG", false)]);
    assert_eq!(out.caller_name.as_deref(), Some("Acme AG"));
}

#[test]
fn groups_ring_logged_in_members_who_can_take_the_call() {
    let e = engine("[state.clerk]\nforward_always = \"201\"\n");
    let out = place(&e, &call("+49891234567", "300"), &NoHooks);
    // dev is logged out; clerk's personal forward does not apply to group calls.
    let users: Vec<&str> = out
        .rang
        .iter()
        .map(|r| r.user.as_deref().unwrap())
        .collect();
    assert_eq!(users, ["sec", "clerk"]);
    assert!(out
        .rang
        .iter()
        .all(|r| r.group.as_deref() == Some("office") && r.display == "Max Kunde"));

    let e = engine("[state.sec]\ndnd = true\n[state.clerk]\nbusy = true\ncall_waiting = false\n");
    let out = place(&e, &call("+49891234567", "300"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
}

#[test]
fn forward_chains_loops_and_forwards_back_to_the_caller() {
    let e =
        engine("[state.boss]\nforward_always = \"202\"\n[state.sec]\nforward_always = \"203\"\n");
    let out = place(&e, &call("+49891234567", "201"), &NoHooks);
    assert_eq!(rang(&out), [("clerk", "Max Kunde", false)]);
    assert_eq!(out.forwards.len(), 2);

    // A loop rings where it stops instead of going round.
    let e =
        engine("[state.boss]\nforward_always = \"202\"\n[state.sec]\nforward_always = \"201\"\n");
    let out = place(&e, &call("+49891234567", "201"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Ringing);
    assert_eq!(rang(&out), [("sec", "Max Kunde", false)]);
    assert!(out.reason.unwrap().contains("loop"));

    // Forwarded back to the caller: busy, not the caller's own phone.
    let e = engine("[state.boss]\nforward_always = \"202\"\n");
    let out = place(&e, &call("202", "201"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
    assert!(out.reason.unwrap().contains("points back to the caller"));
}

#[test]
fn external_forward_targets_ring_on_the_trunk() {
    let e = engine("[state.boss]\nforward_always = \"+491701234567\"\n");
    let out = place(&e, &call("203", "201"), &NoHooks);
    assert_eq!(rang(&out), [("-", "Carl Clerk", false)]);
    assert_eq!(out.rang[0].number, "+491701234567");
}

#[test]
fn transfers_present_the_right_caller_to_the_modules() {
    let e = engine("");
    let hooks = Scripted::new(|_| Decision::default());
    let mut request = call("+49891234567", "201");
    request.via = Via::AttendedTransfer;
    request.by = Some("sec".into());
    let out = place(&e, &request, &hooks);
    // The attended transfer's ringing is the consultation call from `sec`.
    assert_eq!(rang(&out), [("boss", "Sarah Sec", false)]);
    request.via = Via::BlindTransfer;
    let out = place(&e, &request, &hooks);
    assert_eq!(rang(&out), [("boss", "Max Kunde", false)]);
    let seen = hooks.seen.lock().unwrap();
    assert_eq!(seen[0].caller.id.as_ref().unwrap().as_str(), "sec");
    let transfer = seen[0].transfer.as_ref().unwrap();
    assert_eq!(transfer.kind, TransferKind::Attended);
    assert_eq!(transfer.original_caller.kind, PartyKind::External);
    assert_eq!(seen[1].caller.kind, PartyKind::External);
    assert_eq!(seen[1].transfer.as_ref().unwrap().kind, TransferKind::Blind);
}

#[test]
fn a_group_does_not_ring_the_calling_member() {
    let e = engine("[state.boss]\nforward_always = \"300\"\n");
    let out = place(&e, &call("202", "201"), &NoHooks);
    let users: Vec<&str> = out
        .rang
        .iter()
        .map(|r| r.user.as_deref().unwrap())
        .collect();
    assert_eq!(users, ["clerk"], "sec called; only the other member rings");
}

#[test]
fn forward_followed_predicts_the_engine() {
    // A busy forward is announced as pending but is not followed once a
    // module bypasses DND or forces call waiting: modules must not mark it.
    let e = engine("[state.dev]\ndnd = true\nforward_busy = \"202\"\n");
    let hooks = Scripted::new(|setup| {
        let bypass = Decision {
            bypass_dnd: true,
            ..Decision::default()
        };
        assert!(setup.forward_followed(&Decision::default()).is_some());
        assert!(setup.forward_followed(&bypass).is_none());
        bypass
    });
    let out = place(&e, &call("203", "204"), &hooks);
    assert_eq!(rang(&out), [("dev", "Carl Clerk", false)]);

    let e = engine("[state.boss]\nbusy = true\ncall_waiting = false\nforward_busy = \"202\"\n");
    let hooks = Scripted::new(|setup| {
        let knock = Decision {
            force_call_waiting: true,
            ..Decision::default()
        };
        assert!(setup.forward_followed(&knock).is_none());
        knock
    });
    let out = place(&e, &call("203", "201"), &hooks);
    assert_eq!(rang(&out), [("boss", "Carl Clerk", true)]);
}

#[test]
fn a_group_reached_after_ringing_reports_its_own_outcome() {
    // The boss's phone rang, nobody answered, the group behind it is all busy.
    let e = engine(
        "[state.boss]\nforward_no_answer = \"300\"\n[state.sec]\ndnd = true\n[state.clerk]\ndnd = true\n",
    );
    let mut request = call("+49891234567", "201");
    request.no_answer = true;
    let out = place(&e, &request, &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
    assert_eq!(rang(&out), [("boss", "Max Kunde", false)]);
}

#[test]
fn the_loop_fallback_respects_the_users_state() {
    let e = engine("[state.boss]\nforward_always = \"202\"\n[state.sec]\nforward_always = \"201\"\ndnd = true\n");
    let out = place(&e, &call("+49891234567", "201"), &NoHooks);
    assert_eq!(out.outcome, Outcome::Busy);
    assert!(out.rang.is_empty());
    let reason = out.reason.unwrap();
    assert!(
        reason.contains("loop") && reason.contains("do not disturb"),
        "{reason}"
    );
}

#[test]
fn a_no_answer_loop_rings_each_phone_once() {
    let e = engine(
        "[state.boss]\nforward_no_answer = \"202\"\n[state.sec]\nforward_no_answer = \"201\"\n",
    );
    let mut request = call("+49891234567", "201");
    request.no_answer = true;
    let out = place(&e, &request, &NoHooks);
    assert_eq!(
        rang(&out),
        [("boss", "Max Kunde", false), ("sec", "Max Kunde", false)]
    );
    assert!(out.reason.unwrap().contains("loop"));
}

#[test]
fn the_mobile_rings_along_when_asked_and_alone_when_no_phone_is_online() {
    let mobile_user = "[state.boss]\nring_mobile = true\n";
    let with_mobile = |state: &str| {
        let text = DIRECTORY.replace(
            "numbers = [\"201\", \"+4930123456201\"]",
            "numbers = [\"201\", \"+4930123456201\"]\nmobile = \"0170 1234567\"",
        );
        let directory = Directory::from_toml_str(&format!("{text}\n{state}")).unwrap();
        Engine::new(
            Arc::new(DirectoryIndex::new(directory).unwrap()),
            EngineConfig::default(),
        )
    };
    let out = place(&with_mobile(mobile_user), &call("203", "201"), &NoHooks);
    let rings: Vec<(&str, &str, bool)> = out
        .rang
        .iter()
        .map(|r| (r.user.as_deref().unwrap(), r.number.as_str(), r.mobile))
        .collect();
    assert_eq!(
        rings,
        [("boss", "201", false), ("boss", "+491701234567", true)]
    );
    assert!(out.rang.iter().all(|r| r.display == "Carl Clerk"));

    // No desk phone online: the mobile alone.
    let out = place(
        &with_mobile("[state.boss]\nring_mobile = true\nregistered = false\n"),
        &call("203", "201"),
        &NoHooks,
    );
    assert_eq!(out.outcome, Outcome::Ringing);
    assert_eq!(out.rang.len(), 1);
    assert!(out.rang[0].mobile);

    // DND stops the mobile too; without the flag the mobile stays quiet.
    let out = place(
        &with_mobile("[state.boss]\nring_mobile = true\ndnd = true\n"),
        &call("203", "201"),
        &NoHooks,
    );
    assert_eq!(out.outcome, Outcome::Busy);
    let out = place(&with_mobile(""), &call("203", "201"), &NoHooks);
    assert_eq!(out.rang.len(), 1);

    // The flag needs a mobile number.
    let err = Directory::from_toml_str(&format!("{DIRECTORY}\n[state.sec]\nring_mobile = true\n"))
        .and_then(DirectoryIndex::new)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("state.sec.ring_mobile") && err.contains("mobile"),
        "{err}"
    );
}
