//! RL end to end through the shipped `reverse-lookup` package: the real
//! library loaded by the host, the stored office directory, calls placed by
//! `callhost simulate`, and actions through the CLI. The provider is an
//! SQLite database, so no server is needed here (the other provider kinds
//! are tested against real servers in plugins/reverse-lookup/tests).

use crate::common;

use common::Harness;
use serde_json::Value;

pub(crate) const RL: &str = "reverse-lookup-0.1.0.cmod";

/// An outside caller the address book does not know.
pub(crate) const HARBOUR: &str = "+4940555123";
/// Max Kunde, in the office directory's address book.
const CUSTOMER: &str = "+49891234567";

/// A CRM database with one contact, and an instance that asks it.
fn setup(h: &Harness, extra: &str) {
    h.install(RL);
    h.load_office();
    crm_instance(h, extra);
}

/// The instance `rl` asking a CRM database (SQLite) that knows Hanna
/// Hafen at [`HARBOUR`]; `extra` goes before its providers.
pub(crate) fn crm_instance(h: &Harness, extra: &str) {
    let db = h.data().join("crm.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE contacts (phone TEXT, first_name TEXT, last_name TEXT, company TEXT);
         INSERT INTO contacts VALUES ('+4940555123', 'Hanna', 'Hafen', 'Hafen KG');",
    )
    .unwrap();
    h.create(
        "reverse-lookup",
        "rl",
        &format!(
            r#"{extra}
[[providers]]
id = "crm"
kind = "sql"
driver = "sqlite"
url = "sqlite://{}"
query = "SELECT first_name, last_name, company FROM contacts WHERE phone = {{tel}}"
tel_format = "e164"
"#,
            db.display()
        ),
    );
}

fn call(h: &Harness, from: &str, to: &str) -> Value {
    h.simulate(&format!("[[calls]]\nfrom = \"{from}\"\nto = \"{to}\"\n"))
        .remove(0)
}

fn displays(outcome: &Value) -> Vec<String> {
    outcome["rang"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["display"].as_str().unwrap().to_string())
        .collect()
}

fn action(h: &Harness, args: &[&str]) -> Value {
    let mut all = vec!["instance", "action", "rl"];
    all.extend_from_slice(args);
    serde_json::from_str(&h.ok(&all)).expect("JSON")
}

#[test]
fn a_caller_is_named_from_the_database_and_the_call_list_keeps_it() {
    let h = Harness::new();
    setup(&h, "");
    let outcome = call(&h, HARBOUR, "202");
    assert_eq!(displays(&outcome), ["Hanna Hafen"], "{outcome:#}");
    let decision = &outcome["decisions"][0];
    assert_eq!(decision["instance"], "rl");
    assert!(
        decision["reason"].as_str().unwrap().contains("crm"),
        "{decision}"
    );

    let list: Value = serde_json::from_str(&h.ok(&["calls", "sec", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "Hanna Hafen", "{list:#}");

    // The address book comes first: the provider is not asked for Max.
    let outcome = call(&h, CUSTOMER, "202");
    assert_eq!(displays(&outcome), ["Max Kunde"]);
    let history = action(&h, &["history"]);
    let last = history["lookups"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "address_book", "{history:#}");
    assert_eq!(last["number"], CUSTOMER);
}

#[test]
fn outgoing_calls_name_the_called_number_in_the_callers_list() {
    let h = Harness::new();
    setup(&h, "");
    let outcome = call(&h, "203", &format!("0{}", &HARBOUR[3..]));
    // The trunk gets the user's own display, not the resolved name.
    assert!(!displays(&outcome).contains(&"Hanna Hafen".to_string()));
    let list: Value = serde_json::from_str(&h.ok(&["calls", "clerk", "--json"])).unwrap();
    assert_eq!(list[0]["direction"], "out");
    assert_eq!(list[0]["name"], "Hanna Hafen", "{list:#}");
}

#[test]
fn refresh_call_lists_names_old_entries_for_every_user() {
    let h = Harness::new();
    setup(&h, "");
    // Calls while the module is off leave entries without a name.
    h.ok(&["instance", "deactivate", "rl"]);
    call(&h, HARBOUR, "300"); // the office group: sec and clerk ring
    call(&h, HARBOUR, "202");
    let before: Value = serde_json::from_str(&h.ok(&["calls", "sec", "--json"])).unwrap();
    assert!(before[0]["name"].is_null(), "{before:#}");

    h.ok(&["instance", "activate", "rl"]);
    let result = action(&h, &["refresh-call-lists"]);
    assert_eq!(result["resolved"], 1, "{result:#}");
    assert_eq!(result["entries_updated"], 3, "{result:#}");
    for user in ["sec", "clerk"] {
        let list: Value = serde_json::from_str(&h.ok(&["calls", user, "--json"])).unwrap();
        for entry in list.as_array().unwrap() {
            assert_eq!(entry["name"], "Hanna Hafen", "{user}: {list:#}");
        }
    }
    // Nothing is left to do the second time.
    assert_eq!(action(&h, &["refresh-call-lists"])["numbers"], 0);
}

#[test]
fn resolved_callers_become_contacts_when_asked() {
    let h = Harness::new();
    setup(&h, "create_contacts = true\ncache.enabled = false");
    call(&h, HARBOUR, "202");
    // The next call finds the new contact in the address book first.
    let outcome = call(&h, HARBOUR, "202");
    assert_eq!(displays(&outcome), ["Hanna Hafen"]);
    let history = action(&h, &["history"]);
    let sources: Vec<&str> = history["lookups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["provider", "address_book"], "{history:#}");
}

#[test]
fn secrets_stay_out_of_show_and_log() {
    let h = Harness::new();
    setup(&h, "");
    h.create(
        "reverse-lookup",
        "ch",
        "[[providers]]\nid = \"ch\"\ntemplate = \"tel-search-ch\"\nsecrets.api_key = \"VERY-SECRET-KEY\"\n",
    );
    let shown = h.ok(&["instance", "show", "ch"]);
    assert!(shown.contains("template = \"tel-search-ch\""), "{shown}");
    assert!(!shown.contains("VERY-SECRET-KEY"), "{shown}");
    // At rest the configuration is sealed: not in the database in clear.
    let conn = rusqlite::Connection::open(h.data().join("callhost.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT config FROM instances WHERE name = 'ch'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(stored.starts_with("sealed:v2:"), "{stored}");
    drop(conn);
    for file in ["callhost.db", "callhost.db-wal"] {
        if let Ok(bytes) = std::fs::read(h.data().join(file)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("VERY-SECRET-KEY"),
                "{file} holds the key in clear"
            );
        }
    }
    let refused = h.fails(&[
        "instance",
        "configure",
        "ch",
        h.file(
            "bad.toml",
            "[[providers]]\nid = \"ch\"\ntemplate = \"tel-search-ch\"\n",
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(
        refused.contains("providers[0].secrets.api_key"),
        "{refused}"
    );
}
