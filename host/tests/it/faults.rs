//! H7: a module that panics, hangs or is slow never takes the host or a
//! call down; the instance is marked faulted and says why in its log.

use crate::common;

use common::Harness;
use serde_json::Value;

/// Two calls with a misbehaving instance first and a good one after it.
fn run_with_fault(config: &str, budget_ms: u64) -> (Harness, Vec<Value>) {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.install("hello-0.1.0.cmod");
    h.load_office();
    h.create("fault-module", "bad", config);
    h.create("hello", "good", "greeting = \"Hi\"\n");
    let lines = h.simulate(&format!(
        "[settings]\nsetup_budget_ms = {budget_ms}\n[[calls]]\nfrom = \"203\"\nto = \"202\"\nrepeat = 2\n"
    ));
    (h, lines)
}

/// The call rang as it would without the faulty instance.
fn assert_call_went_on(line: &Value) {
    assert_eq!(line["outcome"], "ringing", "{line}");
    assert_eq!(line["rang"][0]["user"], "sec", "{line}");
    assert_eq!(line["rang"][0]["display"], "Hi: Carl Clerk", "{line}");
}

fn assert_faulted(h: &Harness, why: &str) {
    let bad = h.instance("bad");
    assert_eq!(bad["status"], "faulted", "{bad}");
    let fault = bad["fault"].as_str().unwrap();
    assert!(fault.contains(why), "fault {fault:?} should say {why:?}");
    let log = h.ok(&["instance", "log", "bad", "--level", "ERROR"]);
    assert!(log.contains("faulted") && log.contains(why), "log:\n{log}");
    assert_eq!(h.instance("good")["status"], "active");
}

fn decision<'a>(line: &'a Value, instance: &str) -> Option<&'a Value> {
    line["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["instance"] == instance)
}

#[test]
fn a_panic_in_call_setup_faults_the_instance_only() {
    let (h, lines) = run_with_fault("mode = \"panic\"\n", 700);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_call_went_on(line);
    }
    let first = decision(&lines[0], "bad").expect("bad ran on the first call");
    assert!(
        first["error"].as_str().unwrap().contains("panicked"),
        "{first}"
    );
    // Faulted instances are skipped from then on.
    assert!(decision(&lines[1], "bad").is_none(), "{}", lines[1]);
    assert_faulted(&h, "panics on purpose");
}

#[test]
fn a_panic_in_the_async_part_faults_the_instance_only() {
    let (h, lines) = run_with_fault("mode = \"panic-async\"\n", 700);
    for line in &lines {
        assert_call_went_on(line);
    }
    assert_faulted(&h, "panics on purpose, asynchronously");
}

#[test]
fn a_hook_that_blocks_forever_costs_one_budget_then_is_skipped() {
    let (h, lines) = run_with_fault("mode = \"hang\"\n", 300);
    for line in &lines {
        assert_call_went_on(line);
    }
    // An outcome within the budget (300 ms), with slack for a loaded machine.
    let first = lines[0]["setup_ms"].as_f64().unwrap();
    assert!(first < 1300.0, "setup took {first} ms");
    // The faulted instance is not asked again.
    assert!(decision(&lines[1], "bad").is_none(), "{}", lines[1]);
    assert_faulted(&h, "missed the call-setup deadline");
}

#[test]
fn a_future_that_never_completes_is_dropped_at_the_deadline() {
    let (h, lines) = run_with_fault("mode = \"hang-async\"\n", 300);
    for line in &lines {
        assert_call_went_on(line);
    }
    assert_faulted(&h, "missed the call-setup deadline");
}

#[test]
fn a_module_slower_than_the_budget_is_faulted() {
    let (h, lines) = run_with_fault("mode = \"slow\"\ndelay_ms = 5000\n", 300);
    for line in &lines {
        assert_call_went_on(line);
    }
    assert_faulted(&h, "missed the call-setup deadline");
}

#[test]
fn a_module_slow_but_within_the_budget_is_heard() {
    let (h, lines) = run_with_fault(
        "mode = \"slow\"\ndelay_ms = 30\ndisplay = \"late but fine\"\n",
        700,
    );
    // `good` runs after `bad` and overrides the display; `bad` was heard.
    for line in &lines {
        let bad = decision(line, "bad").expect("bad decided");
        assert_eq!(bad["decision"], "display", "{line}");
        assert!(bad.get("error").is_none(), "{line}");
    }
    assert_eq!(h.instance("bad")["status"], "active");
}

#[test]
fn activating_a_faulted_instance_gives_it_another_try() {
    let (h, _) = run_with_fault("mode = \"panic\"\n", 700);
    assert_eq!(h.instance("bad")["status"], "faulted");
    h.ok(&["instance", "activate", "bad"]);
    let bad = h.instance("bad");
    assert_eq!(bad["status"], "active");
    assert!(bad["fault"].is_null());
}

#[test]
fn an_abandoned_future_is_aborted_not_left_running() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.load_office();
    h.create(
        "fault-module",
        "bad",
        "mode = \"slow\"\ndelay_ms = 600\ncompleted_marker = true\n",
    );
    // The process lives on for well past the delay after the deadline.
    let lines = h.simulate(
        "[settings]\nsetup_budget_ms = 200\npause_ms = 700\n[[calls]]\nfrom = \"203\"\nto = \"202\"\nrepeat = 2\n",
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(h.instance("bad")["status"], "faulted");
    assert!(
        !h.data().join("instances/bad/completed").exists(),
        "the future ran on after its deadline"
    );
}

#[test]
fn a_hook_squeezed_by_earlier_hops_is_late_but_not_faulted() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.load_office();
    // 400 ms per hop; the boss forwards to sec, so the second hop has less
    // than half of the 700 ms budget left.
    h.create(
        "fault-module",
        "slowish",
        "mode = \"slow\"\ndelay_ms = 400\n",
    );
    let line = h
        .simulate("[[calls]]\nfrom = \"203\"\nto = \"201\"\n")
        .remove(0);
    let decisions = line["decisions"].as_array().unwrap();
    assert_eq!(decisions[0]["hop"], "boss");
    assert_eq!(decisions[0]["decision"], "display", "{line}");
    assert_eq!(decisions[1]["hop"], "sec");
    assert!(
        decisions[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("late: only"),
        "{line}"
    );
    assert_eq!(line["rang"][0]["user"], "sec");
    assert_eq!(h.instance("slowish")["status"], "active");
}

#[test]
fn faults_in_a_what_if_run_are_not_recorded() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.create("fault-module", "bad", "mode = \"panic\"\n");
    let lines = h.simulate(
        "[directory]\nhome_country = \"DE\"\n[[directory.users]]\nid = \"a\"\nname = \"A\"\nnumbers = [\"201\"]\n[[calls]]\nfrom = \"+4940555666\"\nto = \"201\"\nrepeat = 2\n",
    );
    assert!(lines[0]["decisions"][0]["error"]
        .as_str()
        .unwrap()
        .contains("panicked"));
    // Skipped for the rest of that run, but the stored instance stays active.
    assert!(lines[1]["decisions"].as_array().unwrap().is_empty());
    assert_eq!(h.instance("bad")["status"], "active");
}

#[test]
fn a_module_stuck_in_call_event_delays_nobody_else_and_is_faulted() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.load_office();
    h.create("fault-module", "stuck", "mode = \"hang-events\"\n");
    h.create("fault-module", "listener", "display = \"heard\"\n");
    let lines = h.simulate(
        "[settings]\npause_ms = 600\n[[calls]]\nfrom = \"203\"\nto = \"202\"\nrepeat = 6\n",
    );
    // Calls are not held by the stuck event handler.
    for line in &lines {
        assert_eq!(line["outcome"], "ringing", "{line}");
        assert_eq!(line["rang"][0]["display"], "heard", "{line}");
    }
    // The other instance heard every call's ringing.
    let log = h.ok(&["instance", "log", "listener"]);
    let heard = log.lines().filter(|l| l.contains("event ringing")).count();
    assert_eq!(heard, 6, "{log}");
    let stuck = h.instance("stuck");
    assert_eq!(stuck["status"], "faulted", "{stuck}");
    assert!(
        stuck["fault"]
            .as_str()
            .unwrap()
            .contains("call_event did not return"),
        "{stuck}"
    );
}

/// Calls to Sarah (202) with only `hello` (a `quick_setup` module) active
/// in `config`.
fn quick_calls(config: &str, calls: usize) -> (Harness, Vec<Value>) {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    h.load_office();
    h.create("hello", "quick", config);
    let lines = h.simulate(&"[[calls]]\nfrom = \"203\"\nto = \"202\"\n".repeat(calls));
    assert_eq!(lines.len(), calls);
    (h, lines)
}

const DEMOTED: &str = "runs on a thread of its own from now on";

#[test]
fn a_quick_hook_that_takes_time_runs_on_a_thread_of_its_own_from_then_on() {
    // 20 ms in call_setup breaks the promise of `quick_setup` (5 ms at most).
    let (h, lines) = quick_calls("greeting = \"Hi\"\nsetup_delay_ms = 20\n", 3);
    for line in &lines {
        assert_eq!(line["rang"][0]["display"], "Hi: Carl Clerk", "{line}");
    }
    let log = h.ok(&["instance", "log", "quick", "--level", "WARN"]);
    assert_eq!(
        log.matches(DEMOTED).count(),
        1,
        "demoted once, after the second slow call in a row:\n{log}"
    );
    assert!(log.contains("2 times in a row"), "{log}");
    assert_eq!(h.instance("quick")["status"], "active");
}

#[test]
fn one_slow_quick_call_is_no_proof_and_does_not_demote() {
    // Only the first call is slow (a preempted thread looks the same).
    let (h, lines) = quick_calls(
        "greeting = \"Hi\"\nsetup_delay_ms = 20\nsetup_delay_calls = 1\n",
        3,
    );
    for line in &lines {
        assert_eq!(line["rang"][0]["display"], "Hi: Carl Clerk", "{line}");
    }
    let log = h.ok(&["instance", "log", "quick", "--level", "WARN"]);
    assert!(!log.contains(DEMOTED), "{log}");
}

#[test]
fn a_quick_hook_that_blocks_a_call_thread_is_faulted_by_the_watchdog() {
    // Blocks its call's thread for 1.5 s: the watchdog faults it after 1 s,
    // so the second call does not ask it any more.
    let (h, lines) = quick_calls("greeting = \"Hi\"\nsetup_delay_ms = 1500\n", 2);
    assert!(decision(&lines[1], "quick").is_none(), "{}", lines[1]);
    assert_eq!(lines[1]["rang"][0]["display"], "Carl Clerk", "{}", lines[1]);
    let quick = h.instance("quick");
    assert_eq!(quick["status"], "faulted", "{quick}");
    assert!(
        quick["fault"]
            .as_str()
            .unwrap()
            .contains("blocked a call thread"),
        "{quick}"
    );
}

#[test]
fn a_quick_hook_that_keeps_its_word_is_not_demoted() {
    let (h, lines) = quick_calls("greeting = \"Hi\"\n", 2);
    for line in &lines {
        assert_eq!(line["rang"][0]["display"], "Hi: Carl Clerk", "{line}");
    }
    let log = h.ok(&["instance", "log", "quick", "--level", "WARN"]);
    assert!(!log.contains(DEMOTED), "{log}");
}
