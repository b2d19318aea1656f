//! Store tests against real SQLite files in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use callhost_pbx::{
    CallDirection, CallListEntry, Contact, Directory, DirectoryIndex, Resolved, SealError, Sealer,
    Store, StoreError, UserState,
};
use tempfile::TempDir;

const DIRECTORY: &str = r#"
home_country = "DE"

[[users]]
id = "boss"
name = "Anna Boss"
first_name = "Anna"
last_name = "Boss"
numbers = ["201", "+4930123456201"]
mobile = "+491701234567"
password = "secret"

[[users]]
id = "sec"
name = "Sekretariat"
numbers = ["202", "0049 30 123456202", "2020"]

[[users]]
id = "clerk"
name = "Clerk"
numbers = ["203"]

[[groups]]
id = "office"
name = "Office"
numbers = ["300", "030 123456300"]
members = ["sec", "clerk"]
inactive = ["clerk"]

[[groups]]
id = "empty"
name = "Nobody"
numbers = ["301"]

[[contacts]]
first_name = "Max"
last_name = "Kunde"
company = "Kunde GmbH"
numbers = ["+49891234567", "0170 7654321"]

[[contacts]]
company = "Lieferant AG"
numbers = ["+43 1 5123456"]

[state.boss]
dnd = true
forward_always = "202"
forward_busy = "202"
forward_no_answer = "+491701234567"
no_answer_seconds = 15

[state.clerk]
registered = false
busy = true
call_waiting = false
"#;

/// `dir` as the store gives it back: the digest hash, never the password (P2).
fn as_stored(dir: &Directory) -> Directory {
    let mut stored = dir.clone();
    for user in &mut stored.users {
        user.sip_ha1 = user.digest_ha1();
        user.password = None;
    }
    stored
}

/// The store at `path`, sealing with a key next to it (as the host does).
fn try_open(path: &Path) -> Result<Store, StoreError> {
    let data = path.parent().unwrap();
    std::fs::create_dir_all(data).unwrap();
    Store::open(path, Arc::new(Sealer::open(data)?))
}

fn open(path: &Path) -> Store {
    try_open(path).unwrap()
}

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("callhost.db");
    (dir, path)
}

fn directory() -> Directory {
    Directory::from_toml_str(DIRECTORY).unwrap()
}

fn entry(
    user: &str,
    time: &str,
    dir: CallDirection,
    number: &str,
    name: Option<&str>,
) -> CallListEntry {
    CallListEntry {
        id: None,
        user_id: user.into(),
        time: time.into(),
        direction: dir,
        number: number.into(),
        name: name.map(Into::into),
        call_id: format!("call-{user}-{time}"),
    }
}

#[test]
fn fresh_database_has_no_directory() {
    let (_tmp, path) = temp_db();
    let store = open(&path);
    assert!(store.load_directory().unwrap().is_none());
    assert!(store.contacts().unwrap().is_empty());
    let mode: String = store
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn toml_round_trip_through_the_store() {
    let (_tmp, path) = temp_db();
    let dir = directory();
    {
        let mut store = open(&path);
        store.save_directory(&dir).unwrap();
    }
    // A new connection, as another process would open it.
    let store = open(&path);
    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(loaded, as_stored(&dir));
    assert_eq!(
        loaded.users[0].digest_ha1().unwrap(),
        callhost_pbx::directory::digest_ha1(&dir.users[0].id, "secret")
    );
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(
            !file.windows(6).any(|w| w == b"secret"),
            "the clear password is in the database file"
        );
    }
    let text = toml::to_string(&loaded).unwrap();
    assert_eq!(
        Directory::from_toml_str(&text).unwrap().users.len(),
        dir.users.len()
    );
}

#[test]
fn migrations_are_idempotent() {
    let (_tmp, path) = temp_db();
    let count = |store: &Store| -> i64 {
        store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM schema_migrations WHERE component = 'pbx'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let mut first = open(&path);
    first.save_directory(&directory()).unwrap();
    assert_eq!(
        count(&first),
        callhost_pbx::store::PBX_MIGRATIONS.len() as i64
    );
    // Opening again (while the first connection is still open) applies nothing.
    let second = open(&path);
    assert_eq!(
        count(&second),
        callhost_pbx::store::PBX_MIGRATIONS.len() as i64
    );
    assert!(second.load_directory().unwrap().is_some());
    drop(first);
    drop(second);
    let third = open(&path);
    assert_eq!(
        count(&third),
        callhost_pbx::store::PBX_MIGRATIONS.len() as i64
    );
}

#[test]
fn concurrent_first_opens_migrate_once() {
    let (_tmp, path) = temp_db();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || try_open(&path).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let store = open(&path);
    let n: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    // Every step once, though four processes opened the new file at once.
    assert_eq!(n, callhost_pbx::store::PBX_MIGRATIONS.len() as i64);
}

#[test]
fn host_reuses_migrate_for_its_own_component() {
    let (_tmp, path) = temp_db();
    let store = open(&path);
    let steps = [
        "CREATE TABLE modules (id TEXT PRIMARY KEY)",
        "ALTER TABLE modules ADD COLUMN version TEXT",
    ];
    callhost_pbx::migrate(store.conn(), "host", &steps[..1]).unwrap();
    callhost_pbx::migrate(store.conn(), "host", &steps).unwrap();
    callhost_pbx::migrate(store.conn(), "host", &steps).unwrap();
    let versions: Vec<(String, i64)> = store
        .conn()
        .prepare("SELECT component, version FROM schema_migrations ORDER BY component, version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut expected = vec![("host".to_string(), 1), ("host".to_string(), 2)];
    expected.extend(
        (1..=callhost_pbx::store::PBX_MIGRATIONS.len() as i64).map(|v| ("pbx".to_string(), v)),
    );
    assert_eq!(versions, expected);
    let applied_at: String = store
        .conn()
        .query_row(
            "SELECT applied_at FROM schema_migrations WHERE component = 'host' AND version = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        applied_at.ends_with('Z') && applied_at.contains('T'),
        "{applied_at}"
    );
}

#[test]
fn invalid_directory_is_not_saved() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    let good = directory();
    store.save_directory(&good).unwrap();

    let mut bad = good.clone();
    bad.users.truncate(1);
    bad.groups[0].members.push("ghost".into());
    let e = store.save_directory(&bad).unwrap_err();
    assert!(matches!(e, StoreError::Directory(_)), "{e}");
    // The message says what failed, the source why (said once).
    assert_eq!(e.to_string(), "invalid directory");
    assert!(chain(&e).contains(r#"unknown user "sec""#), "{e}");
    assert_eq!(store.load_directory().unwrap().unwrap(), as_stored(&good));
}

#[test]
fn failing_save_rolls_back_everything() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    let good = directory();
    store.save_directory(&good).unwrap();

    // A valid directory whose write fails half-way: the trigger aborts the
    // group insert after users were already deleted and re-inserted.
    store
        .conn()
        .execute_batch(
            "CREATE TRIGGER fail_groups BEFORE INSERT ON groups WHEN NEW.name = 'boom'
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
        )
        .unwrap();
    let mut next = good.clone();
    next.users.retain(|u| u.id != "boss");
    next.state.remove("boss");
    next.groups[0].name = "boom".into();
    let e = store.save_directory(&next).unwrap_err();
    let text = chain(&e);
    assert_eq!(text.matches("simulated failure").count(), 1, "{text}");
    assert_eq!(store.load_directory().unwrap().unwrap(), as_stored(&good));
}

#[test]
fn reload_replaces_directory_but_keeps_call_lists_and_added_contacts() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    store
        .add_call_list_entry(&entry(
            "boss",
            "2024-05-01T10:00:00Z",
            CallDirection::In,
            "+49891234567",
            None,
        ))
        .unwrap();
    store
        .add_call_list_entry(&entry(
            "clerk",
            "2024-05-01T11:00:00Z",
            CallDirection::Out,
            "+491709999999",
            None,
        ))
        .unwrap();
    let added = Contact {
        first_name: Some("Eva".into()),
        last_name: None,
        company: None,
        numbers: vec!["+491709999999".into()],
    };
    store.add_contact(&added).unwrap();

    let next = Directory::from_toml_str(
        r#"
home_country = "AT"
[[users]]
id = "boss"
name = "Anna Neu"
numbers = ["21"]
[[users]]
id = "new"
name = "New"
numbers = ["22", "+43 1 5123499"]
[[contacts]]
company = "Neu GmbH"
numbers = ["01 5123400"]
"#,
    )
    .unwrap();
    store.save_directory(&next).unwrap();

    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(loaded, next);
    assert!(loaded.groups.is_empty() && loaded.state.is_empty());
    assert_eq!(loaded.contacts[0].numbers, ["+4315123400"]);
    // Call lists survive, even of a user who is gone ("clerk").
    assert_eq!(store.call_list("boss").unwrap().len(), 1);
    assert_eq!(store.call_list("clerk").unwrap().len(), 1);
    // The address book is the directory's contacts plus the added one.
    let contacts = store.contacts().unwrap();
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].display_name(), "Neu GmbH");
    assert_eq!(contacts[1], added);
}

#[test]
fn user_state_updates() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    let state = UserState {
        dnd: true,
        forward_busy: Some("+491701234567".into()),
        ..UserState::default()
    };
    store.set_user_state("sec", &state).unwrap();
    store.set_user_state("boss", &UserState::default()).unwrap();
    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(loaded.state["sec"], state);
    assert_eq!(loaded.state["boss"], UserState::default());
    assert_eq!(loaded.state["clerk"], directory().state["clerk"]);

    let e = store.set_user_state("ghost", &state).unwrap_err();
    assert!(
        matches!(e, StoreError::UnknownUser(ref u) if u == "ghost"),
        "{e}"
    );
}

#[test]
fn group_logins_are_stored_and_checked() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    let before = store.directory_generation().unwrap();
    store.set_group_login("office", "clerk", true).unwrap();
    store.set_group_login("office", "sec", false).unwrap();
    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(loaded.groups[0].inactive, ["sec"]);
    assert_eq!(loaded.groups[0].members, ["sec", "clerk"], "order kept");
    assert!(store.directory_generation().unwrap() > before);

    let e = store.set_group_login("ghosts", "sec", true).unwrap_err();
    assert!(
        matches!(e, StoreError::UnknownGroup(ref g) if g == "ghosts"),
        "{e}"
    );
    let e = store.set_group_login("office", "boss", true).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"user "boss" is not a member of group "office""#
    );
    // A refusal changed nothing.
    assert_eq!(
        store.load_directory().unwrap().unwrap().groups[0].inactive,
        ["sec"]
    );
}

#[test]
fn a_snapshot_has_the_whole_address_book_and_its_generation() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    assert!(store.directory_snapshot().unwrap().is_none());
    store.save_directory(&directory()).unwrap();
    let added = Contact {
        company: Some("Neu GmbH".into()),
        numbers: vec!["+4940555123".into()],
        ..Contact::default()
    };
    store.add_contact(&added).unwrap();
    let (snapshot, generation) = store.directory_snapshot().unwrap().unwrap();
    assert_eq!(generation, store.directory_generation().unwrap());
    assert_eq!(snapshot.contacts, store.contacts().unwrap());
    assert_eq!(snapshot.contacts.last(), Some(&added));
    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(snapshot.users, loaded.users);
    assert_eq!(snapshot.state, loaded.state);
}

#[test]
fn recent_calls_are_the_newest_first_and_at_most_the_limit() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    for minute in 0..5 {
        let time = format!("2024-05-01T10:0{minute}:00Z");
        store
            .add_call_list_entry(&entry(
                "sec",
                &time,
                CallDirection::In,
                &format!("+49891234{minute}"),
                None,
            ))
            .unwrap();
    }
    store
        .add_call_list_entry(&entry(
            "boss",
            "2024-05-01T11:00:00Z",
            CallDirection::Out,
            "202",
            None,
        ))
        .unwrap();
    let recent = store.recent_calls("sec", 3).unwrap();
    let times: Vec<&str> = recent.iter().map(|e| e.time.as_str()).collect();
    assert_eq!(
        times,
        [
            "2024-05-01T10:04:00Z",
            "2024-05-01T10:03:00Z",
            "2024-05-01T10:02:00Z"
        ]
    );
    assert_eq!(
        store.recent_calls("sec", 100).unwrap(),
        store.call_list("sec").unwrap()
    );
    assert!(store.recent_calls("sec", 0).unwrap().is_empty());
    // A user id that looks like SQL is a value like any other.
    assert!(store.recent_calls("sec' OR '1'='1", 10).unwrap().is_empty());
}

#[test]
fn call_lists_resolve_and_update_across_users() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    let unknown = "+491709999999";
    let entries = [
        entry(
            "boss",
            "2024-05-01T10:00:00Z",
            CallDirection::In,
            unknown,
            None,
        ),
        entry(
            "boss",
            "2024-05-01T12:00:00Z",
            CallDirection::Out,
            "+49891234567",
            Some("Max Kunde"),
        ),
        entry(
            "sec",
            "2024-05-01T11:00:00Z",
            CallDirection::In,
            unknown,
            Some(unknown),
        ),
        entry(
            "clerk",
            "2024-05-01T09:00:00.5Z",
            CallDirection::Out,
            unknown,
            Some(""),
        ),
        entry(
            "clerk",
            "2024-05-01T09:30:00Z",
            CallDirection::In,
            "+4315123456",
            None,
        ),
        // A number that is SQL-ish must be stored verbatim (bound parameters).
        entry(
            "sec",
            "2024-05-01T08:00:00Z",
            CallDirection::In,
            "'; DROP TABLE call_list; --",
            None,
        ),
    ];
    for e in &entries {
        let id = store.add_call_list_entry(e).unwrap();
        assert!(id > 0);
    }

    let boss = store.call_list("boss").unwrap();
    assert_eq!(boss.len(), 2);
    // Newest first.
    assert_eq!(boss[0].time, "2024-05-01T12:00:00Z");
    assert_eq!(boss[0].direction, CallDirection::Out);
    assert_eq!(boss[0].name.as_deref(), Some("Max Kunde"));
    assert!(boss[0].id.is_some());
    assert_eq!(boss[1].call_id, "call-boss-2024-05-01T10:00:00Z");
    assert!(store.call_list("nobody").unwrap().is_empty());

    assert_eq!(
        store.unresolved_call_list_numbers().unwrap(),
        ["'; DROP TABLE call_list; --", "+4315123456", unknown]
    );

    // One update names every entry of the number, for all users.
    assert_eq!(store.set_call_list_name(unknown, "Eva Mobil").unwrap(), 3);
    for user in ["boss", "sec", "clerk"] {
        for e in store.call_list(user).unwrap() {
            if e.number == unknown {
                assert_eq!(e.name.as_deref(), Some("Eva Mobil"), "{user}");
            }
        }
    }
    assert_eq!(store.set_call_list_name(unknown, "Eva Mobil").unwrap(), 0);
    assert_eq!(store.set_call_list_name("+4900000", "x").unwrap(), 0);
    assert_eq!(
        store.unresolved_call_list_numbers().unwrap(),
        ["'; DROP TABLE call_list; --", "+4315123456"]
    );
    // Other entries are untouched.
    assert_eq!(
        store.call_list("boss").unwrap()[0].name.as_deref(),
        Some("Max Kunde")
    );
}

#[test]
fn call_list_rejects_non_utc_time() {
    let (_tmp, path) = temp_db();
    let store = open(&path);
    let e = store
        .add_call_list_entry(&entry(
            "boss",
            "2024-05-01T10:00:00+02:00",
            CallDirection::In,
            "201",
            None,
        ))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"time: "2024-05-01T10:00:00+02:00""#),
        "{e}"
    );
    let now = callhost_pbx::rfc3339_utc(std::time::SystemTime::now());
    store
        .add_call_list_entry(&entry("boss", &now, CallDirection::In, "201", None))
        .unwrap();
}

#[test]
fn index_over_the_loaded_directory() {
    let (_tmp, path) = temp_db();
    let mut store = open(&path);
    store.save_directory(&directory()).unwrap();
    let index = DirectoryIndex::new(store.load_directory().unwrap().unwrap()).unwrap();

    for (number, want) in [
        ("201", "boss"),
        ("+4930123456201", "boss"),
        ("004930123456201", "boss"),
        ("030123456201", "boss"),
        ("2020", "sec"),
        ("+49 30 123456202", "sec"),
    ] {
        match index.resolve(number) {
            Resolved::User(u) => assert_eq!(u.id, want, "{number}"),
            other => panic!("{number}: expected user {want}, got {other:?}"),
        }
    }
    match index.resolve("030 123456 300") {
        Resolved::Group(g) => assert_eq!(g.id, "office"),
        other => panic!("expected the office group, got {other:?}"),
    }
    match index.resolve("01707654321") {
        Resolved::External(ext, Some(c)) => {
            assert_eq!(ext.e164, "+491707654321");
            assert_eq!(c.display_name(), "Max Kunde");
        }
        other => panic!("expected contact Max Kunde, got {other:?}"),
    }
    assert!(matches!(
        index.resolve("0891111111"),
        Resolved::External(_, None)
    ));
    assert_eq!(index.resolve("999"), Resolved::Unknown);
    assert_eq!(index.groups_of("sec"), ["office"]);
    assert_eq!(index.active_groups_of("sec"), ["office"]);
    assert!(index.active_groups_of("clerk").is_empty());
    assert!(index.state("boss").dnd);
    assert!(!index.state("clerk").registered);
}

/// The database file and its WAL, for looking for clear values.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn stored_ha1(store: &Store, user: &str) -> Option<String> {
    store
        .conn()
        .query_row("SELECT sip_ha1 FROM users WHERE id = ?1", [user], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn ha1_hashes_are_sealed_for_their_user() {
    let (_tmp, path) = temp_db();
    let mut dir = directory();
    dir.users[1].password = Some(callhost_pbx::Secret::new("sec-pw"));
    let boss_ha1 = callhost_pbx::directory::digest_ha1("boss", "secret");
    let sec_ha1 = callhost_pbx::directory::digest_ha1("sec", "sec-pw");
    let mut store = open(&path);
    store.save_directory(&dir).unwrap();
    let boss = stored_ha1(&store, "boss").unwrap();
    assert!(boss.starts_with("sealed:v2:"), "{boss}");
    assert_eq!(stored_ha1(&store, "clerk"), None, "no password, no HA1");
    // In memory the directory has the HA1 in clear, as SIP needs it.
    let loaded = store.load_directory().unwrap().unwrap();
    assert_eq!(loaded.users[0].digest_ha1(), Some(boss_ha1.clone()));
    assert_eq!(loaded.users[1].digest_ha1(), Some(sec_ha1.clone()));
    drop(store);
    let bytes = file_bytes(&path);
    for clear in [&boss_ha1, &sec_ha1, "secret", "sec-pw"] {
        assert!(!contains(&bytes, clear), "{clear} is in the database file");
    }

    // boss's sealed HA1 copied into sec's row does not open there: the
    // load fails naming the row, it never lets sec in with boss's password.
    let store = open(&path);
    store
        .conn()
        .execute("UPDATE users SET sip_ha1 = ?1 WHERE id = 'sec'", [&boss])
        .unwrap();
    let error = store.load_directory().unwrap_err();
    assert!(
        matches!(error, StoreError::Seal(SealError::WrongRowOrKey { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("users.sip_ha1 of `sec`"),
        "{error}"
    );
    // A clear HA1 put into the row by hand is refused too.
    store
        .conn()
        .execute(
            "UPDATE users SET sip_ha1 = ?1 WHERE id = 'sec'",
            [&boss_ha1],
        )
        .unwrap();
    let error = store.load_directory().unwrap_err();
    assert!(
        matches!(error, StoreError::Seal(SealError::NotSealed { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("users.sip_ha1 of `sec`"),
        "{error}"
    );
}

#[test]
fn an_older_store_is_upgraded_to_sealed_ha1s() {
    let (tmp, path) = temp_db();
    let data = path.parent().unwrap();
    std::fs::create_dir_all(data).unwrap();
    let boss_ha1 = callhost_pbx::directory::digest_ha1("boss", "boss-old-pw");
    let sec_ha1 = callhost_pbx::directory::digest_ha1("sec", "sec-pw");
    // As before: schema v3, one clear password (a store from before v3),
    // one HA1 in clear (written by v3), one user without. The connection
    // stays open, like another process's: the upgrade still leaves no clear
    // copy in the WAL.
    let conn = rusqlite::Connection::open(&path).unwrap();
    {
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let sealer = Sealer::open(data).unwrap();
        callhost_pbx::migrate_steps(
            &conn,
            "pbx",
            &callhost_pbx::store::PBX_MIGRATIONS[..3],
            &sealer,
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO pbx_settings (key, value) VALUES ('home_country', 'DE');
             INSERT INTO users (id, position, name, password) VALUES ('boss', 0, 'Boss', 'boss-old-pw');
             INSERT INTO users (id, position, name, password) VALUES ('clerk', 2, 'Clerk', NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO users (id, position, name, sip_ha1) VALUES ('sec', 1, 'Sec', ?1)",
            [&sec_ha1],
        )
        .unwrap();
        for (user, number) in [("boss", "201"), ("sec", "202"), ("clerk", "203")] {
            conn.execute(
                "INSERT INTO user_numbers (user_id, position, number) VALUES (?1, 0, ?2)",
                [user, number],
            )
            .unwrap();
        }
    }
    let store = open(&path);
    let loaded = store.load_directory().unwrap().unwrap();
    let ha1s: Vec<Option<String>> = loaded.users.iter().map(|u| u.digest_ha1()).collect();
    assert_eq!(ha1s, [Some(boss_ha1.clone()), Some(sec_ha1.clone()), None]);
    for user in ["boss", "sec"] {
        assert!(stored_ha1(&store, user).unwrap().starts_with("sealed:v2:"));
    }
    let passwords: i64 = store
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM users WHERE password IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(passwords, 0);
    drop(store);
    let bytes = file_bytes(&path);
    for clear in [&boss_ha1, &sec_ha1, "boss-old-pw"] {
        assert!(!contains(&bytes, clear), "{clear} is still in the files");
    }
    drop(conn);
    drop(tmp);
}

/// The message and its sources, `: `-separated, as the CLI prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
