//! H1 + H7: install v2 over v1 while calls are running. No call fails, both
//! configurations survive, new calls use v2.

use crate::common;

use common::Harness;

#[test]
fn upgrade_during_a_simulation_drops_no_call_and_keeps_configurations() {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    h.load_office();
    h.create("hello", "one", "greeting = \"Moin\"\n");
    h.create(
        "hello",
        "two",
        "greeting = \"Servus\"\nnumbers = [\"999\"]\n",
    );
    let exports_before = (
        h.ok(&["instance", "export", "one"]),
        h.ok(&["instance", "export", "two"]),
    );

    let calls = 400;
    // Install v2 while calls keep coming.
    let lines = h.simulate_while(
        &format!("[settings]\npause_ms = 15\n[[calls]]\nfrom = \"203\"\nto = \"202\"\nrepeat = {calls}\n"),
        20,
        || {
            let out = h.install("hello-0.2.0.cmod");
            assert!(out.contains("replaced hello 0.1.0 with 0.2.0"), "{out}");
        },
    );

    assert_eq!(lines.len(), calls);
    let mut versions = Vec::new();
    for line in &lines {
        assert_eq!(line["outcome"], "ringing", "{line}");
        assert_eq!(line["rang"][0]["display"], "Moin: Carl Clerk", "{line}");
        let decisions = line["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), 2, "both instances decided: {line}");
        assert!(decisions.iter().all(|d| d.get("error").is_none()), "{line}");
        versions.push(decisions[0]["version"].as_str().unwrap().to_string());
    }
    assert_eq!(versions[0], "0.1.0");
    assert_eq!(versions.last().unwrap(), "0.2.0", "new calls use v2");
    // Once switched, never back.
    let switch = versions.iter().position(|v| v == "0.2.0").unwrap();
    assert!(
        versions[switch..].iter().all(|v| v == "0.2.0"),
        "{versions:?}"
    );

    let exports_after = (
        h.ok(&["instance", "export", "one"]),
        h.ok(&["instance", "export", "two"]),
    );
    assert_eq!(
        exports_before.0.replace("0.1.0", "0.2.0"),
        exports_after.0,
        "configuration of `one` changed"
    );
    assert_eq!(exports_before.1.replace("0.1.0", "0.2.0"), exports_after.1);
}

#[test]
fn a_configuration_the_new_version_refuses_is_kept_and_only_that_instance_is_marked() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.create("fault-module", "keeps", "display = \"fine\"\n");
    h.create(
        "fault-module",
        "refused",
        "display = \"old\"\nrefuse_in_version = \"0.2.0\"\n",
    );
    h.create("fault-module", "also-keeps", "display = \"fine too\"\n");
    let before = h.ok(&["instance", "export", "refused"]);

    let out = h.install("fault-module-0.2.0.cmod");
    // The refusal names the instance (once).
    assert!(
        out.contains("warning") && out.contains("instance `refused`: field "),
        "{out}"
    );
    assert_eq!(out.matches("refused`").count(), 1, "{out}");
    assert!(!out.contains("keeps"), "{out}");
    assert_eq!(h.instance("keeps")["status"], "active");
    assert_eq!(h.instance("also-keeps")["status"], "active");
    let refused = h.instance("refused");
    assert_eq!(refused["status"], "faulted");
    let fault = refused["fault"].as_str().unwrap();
    assert!(
        fault.contains("refused by fault-module 0.2.0") && fault.contains("refuse_in_version"),
        "{fault}"
    );
    // Kept word for word.
    assert_eq!(
        h.ok(&["instance", "export", "refused"]),
        before.replace("0.1.0", "0.2.0")
    );
    // Back to the old version, the administrator can bring it back.
    h.install("fault-module-0.1.0.cmod");
    h.ok(&["instance", "activate", "refused"]);
    assert_eq!(h.instance("refused")["status"], "active");
}

#[test]
fn calls_in_progress_finish_on_the_old_version_while_new_calls_use_the_new_one() {
    let h = Harness::new();
    h.install("fault-module-0.1.0.cmod");
    h.load_office();
    // Every hook takes 150 ms on the module's runtime, four calls at a time:
    // whenever the upgrade lands, calls are half-way through a v1 hook.
    h.create(
        "fault-module",
        "slow",
        "mode = \"slow\"\ndelay_ms = 150\ndisplay = \"from the module\"\n",
    );
    let calls = 120;
    let lines = h.simulate_while(
        &format!("[settings]\nconcurrency = 4\npause_ms = 10\n[[calls]]\nfrom = \"203\"\nto = \"202\"\nrepeat = {calls}\n"),
        10,
        || {
            h.install("fault-module-0.2.0.cmod");
        },
    );

    assert_eq!(lines.len(), calls);
    let mut versions = Vec::new();
    for line in &lines {
        // No call lost its module's answer: not the old version retiring
        // under it, not the new one starting.
        assert_eq!(line["outcome"], "ringing", "{line}");
        assert_eq!(line["rang"][0]["display"], "from the module", "{line}");
        let decision = &line["decisions"][0];
        assert!(decision.get("error").is_none(), "{line}");
        versions.push(decision["version"].as_str().unwrap().to_string());
    }
    assert_eq!(versions[0], "0.1.0");
    assert_eq!(versions.last().unwrap(), "0.2.0");
    let switch = versions.iter().position(|v| v == "0.2.0").unwrap();
    assert!(
        versions[switch..].iter().all(|v| v == "0.2.0"),
        "{versions:?}"
    );
    assert_eq!(h.instance("slow")["status"], "active");
}
