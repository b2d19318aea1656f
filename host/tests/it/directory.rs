//! P1–P3 and P8 through the CLI: directory load, call lists, scenario errors.

use crate::common;

use common::{Harness, OFFICE};

#[test]
fn a_bad_directory_is_refused_naming_the_field_and_the_old_one_stays() {
    let h = Harness::new();
    h.load_office();
    let bad = h.file(
        "bad.toml",
        &OFFICE.replace(
            "members = [\"sec\", \"clerk\", \"dev\"]",
            "members = [\"sec\", \"clerkk\"]",
        ),
    );
    let err = h.fails(&["directory", "load", bad.to_str().unwrap()]);
    assert!(
        err.contains("groups[0].members") && err.contains("clerkk"),
        "{err}"
    );
    // The stored directory still routes as before.
    let line = h
        .simulate("[[calls]]\nfrom = \"+49891234567\"\nto = \"300\"\n")
        .remove(0);
    assert_eq!(line["rang"].as_array().unwrap().len(), 2, "{line}");
}

#[test]
fn simulated_calls_fill_the_call_lists_and_reloads_keep_them() {
    let h = Harness::new();
    h.load_office();
    h.simulate("[[calls]]\nfrom = \"+49891234567\"\nto = \"202\"\n[[calls]]\nfrom = \"203\"\nto = \"202\"\n");
    let sec: serde_json::Value = serde_json::from_str(&h.ok(&["calls", "sec", "--json"])).unwrap();
    let entries = sec.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let numbers: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap(),
                e["number"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        numbers.contains(&("in", "0891234567", "Max Kunde")),
        "{numbers:?}"
    );
    assert!(
        numbers.contains(&("in", "203", "Carl Clerk")),
        "{numbers:?}"
    );
    let clerk: serde_json::Value =
        serde_json::from_str(&h.ok(&["calls", "clerk", "--json"])).unwrap();
    assert_eq!(clerk[0]["direction"], "out");
    assert_eq!(clerk[0]["number"], "202");
    assert_eq!(clerk[0]["name"], "Sarah Sekretariat");

    // Reloading the directory never loses call lists.
    h.load_office();
    let again: serde_json::Value =
        serde_json::from_str(&h.ok(&["calls", "sec", "--json"])).unwrap();
    assert_eq!(again.as_array().unwrap().len(), 2);
}

#[test]
fn what_if_scenarios_with_an_inline_directory_record_nothing() {
    let h = Harness::new();
    let lines = h.simulate(&format!(
        "{}\n[[calls]]\nfrom = \"203\"\nto = \"202\"\n",
        OFFICE
            .lines()
            .map(|line| match line.strip_prefix("[[") {
                Some(rest) => format!("[[directory.{rest}"),
                None => match line.strip_prefix('[') {
                    Some(rest) => format!("[directory.{rest}"),
                    None => line.to_string(),
                },
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("home_country", "[directory]\nhome_country", 1)
    ));
    assert_eq!(lines[0]["rang"][0]["user"], "sec");
    assert_eq!(h.ok(&["calls", "sec", "--json"]).trim(), "[]");
}

#[test]
fn scenario_errors_name_the_field() {
    let h = Harness::new();
    let path = h.file(
        "s.toml",
        "[[calls]]\nfrom = \"203\"\nto = \"202\"\nvia = \"attended-transfer\"\n",
    );
    let err = h.fails(&["simulate", path.to_str().unwrap()]);
    assert!(err.contains("calls[0].by"), "{err}");
    let path = h.file(
        "s2.toml",
        "[[calls]]\nfrom = \"203\"\nto = \"202\"\nvia = \"teleport\"\n",
    );
    let err = h.fails(&["simulate", path.to_str().unwrap()]);
    assert!(
        err.contains("calls[0].via") && err.contains("teleport"),
        "{err}"
    );
    let path = h.file("s4.toml", "[settings]\nsetup_budget_ms = 0\n");
    let err = h.fails(&["simulate", path.to_str().unwrap()]);
    assert!(err.contains("settings.setup_budget_ms"), "{err}");
    let path = h.file("s3.toml", "[[calls]]\nfrom = \"203\"\nto = \"202\"\n");
    let err = h.fails(&["simulate", path.to_str().unwrap()]);
    assert!(err.contains("no directory loaded"), "{err}");
}

#[test]
fn host_configuration_errors_name_the_field() {
    let h = Harness::new();
    h.file("callhost.toml", "[calls]\nsetup_budget_ms = 0\n");
    let err = h.fails(&["module", "list"]);
    assert!(err.contains("calls.setup_budget_ms"), "{err}");
    h.file("callhost.toml", "[calls]\nbudget = 5\n");
    let err = h.fails(&["module", "list"]);
    assert!(err.contains("budget"), "{err}");
}
