//! Secrets at rest and the libraries the host runs: sealed values bound to
//! their row, a database from callhost 0.1.0 upgraded without losing
//! anything, and a library changed on disk after install never loaded.

use crate::common;
use crate::sip_harness;

use std::path::{Path, PathBuf};

use common::Harness;
use serde_json::{json, Value};
use sha2::Digest as _;
use sip_harness::Serve;

const HELLO: &str = "hello-0.1.0.cmod";
const BT: &str = "breakthrough-0.1.0.cmod";

const DIRECTORY: &str = r#"
home_country = "DE"

[[users]]
id = "anna"
name = "Anna"
numbers = ["201"]
password = "anna-secret-pw"

[[users]]
id = "bert"
name = "Bert"
numbers = ["202"]
password = "bert-secret-pw"
"#;

fn ha1(user: &str, password: &str) -> String {
    hex::encode(md5::Md5::digest(format!("{user}:callhost:{password}")))
}

fn db(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join("callhost.db")).unwrap()
}

fn stored(data: &Path, sql: &str, key: &str) -> String {
    db(data).query_row(sql, [key], |r| r.get(0)).unwrap()
}

/// `callhost.db` and its WAL, for looking for clear values.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for file in ["callhost.db", "callhost.db-wal"] {
        bytes.extend(std::fs::read(data.join(file)).unwrap_or_default());
    }
    bytes
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// The `greet` action's answer of hello instance `name`.
fn greet(h: &Harness, name: &str) -> Value {
    serde_json::from_str(&h.ok(&["instance", "action", name, "greet", "Bob"])).unwrap()
}

#[test]
fn directory_load_leaves_no_ha1_or_password_in_the_database_files() {
    let h = Harness::new();
    h.install(HELLO);
    h.create("hello", "hi", "greeting = \"Moin\"\n");
    let file = h.file("office.toml", DIRECTORY);
    h.ok(&["directory", "load", file.to_str().unwrap()]);
    // Twice: the second load replaces the rows the first one wrote.
    h.ok(&["directory", "load", file.to_str().unwrap()]);
    assert!(
        stored(h.data(), "SELECT sip_ha1 FROM users WHERE id = ?1", "anna")
            .starts_with("sealed:v2:"),
        "HA1s are sealed"
    );
    let bytes = database_bytes(h.data());
    for (user, password) in [("anna", "anna-secret-pw"), ("bert", "bert-secret-pw")] {
        let hash = ha1(user, password);
        assert!(!holds(&bytes, &hash), "{user}'s HA1 is in callhost.db");
        assert!(
            !holds(&bytes, &hash.to_uppercase()),
            "{user}'s HA1 is in callhost.db"
        );
        assert!(
            !holds(&bytes, password),
            "{user}'s password is in callhost.db"
        );
    }
    // What the SIP front end gets: the clear HA1, from the loaded directory.
    let host = callhost::Host::open(h.data()).unwrap();
    let directory = host.stored_directory().unwrap().unwrap();
    assert_eq!(
        directory.users[0].digest_ha1(),
        Some(ha1("anna", "anna-secret-pw"))
    );
}

#[test]
fn a_sealed_value_copied_into_another_row_does_not_open_there() {
    let h = Harness::new();
    h.install(HELLO);
    h.create("hello", "hi", "greeting = \"Moin\"\n");
    h.create("hello", "hi2", "greeting = \"Servus\"\n");
    let file = h.file("office.toml", DIRECTORY);
    h.ok(&["directory", "load", file.to_str().unwrap()]);

    // hi's configuration copied into hi2's row.
    let hi = stored(
        h.data(),
        "SELECT config FROM instances WHERE name = ?1",
        "hi",
    );
    assert!(hi.starts_with("sealed:v2:"), "{hi}");
    db(h.data())
        .execute("UPDATE instances SET config = ?1 WHERE name = 'hi2'", [&hi])
        .unwrap();
    let listed = h.instance("hi2");
    assert_eq!(listed["status"], "faulted", "{listed}");
    let fault = listed["fault"].as_str().unwrap();
    assert!(
        fault.contains("instances.config of `hi2`") && fault.contains("another row"),
        "{fault}"
    );
    assert_eq!(h.instance("hi")["status"], "active");
    // It never runs with hi's configuration: not in actions, exports or calls.
    let error = h.fails(&["instance", "action", "hi2", "greet", "Bob"]);
    assert!(error.contains("instances.config of `hi2`"), "{error}");
    let error = h.fails(&["instance", "export", "hi2"]);
    assert!(error.contains("instances.config of `hi2`"), "{error}");
    let calls = h.simulate(
        "[settings]\nsetup_budget_ms = 2000\n[[calls]]\nfrom = \"+49301234567\"\nto = \"201\"\n",
    );
    let deciding: Vec<&str> = calls[0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["instance"].as_str().unwrap())
        .collect();
    assert_eq!(deciding, ["hi"], "{:#}", calls[0]);
    assert_eq!(greet(&h, "hi"), json!({"text": "Moin, Bob!"}));
    // A new configuration repairs it.
    let fix = h.file("fix.toml", "greeting = \"Tach\"\n");
    h.ok(&["instance", "configure", "hi2", fix.to_str().unwrap()]);
    assert_eq!(h.instance("hi2")["status"], "active");
    assert_eq!(greet(&h, "hi2"), json!({"text": "Tach, Bob!"}));

    // anna's sealed HA1 in bert's row: the directory does not load, so
    // bert can never register with anna's password.
    let anna = stored(h.data(), "SELECT sip_ha1 FROM users WHERE id = ?1", "anna");
    db(h.data())
        .execute("UPDATE users SET sip_ha1 = ?1 WHERE id = 'bert'", [&anna])
        .unwrap();
    let error = h.fails(&["serve"]);
    assert!(
        error.contains("users.sip_ha1 of `bert`") && error.contains("another row"),
        "{error}"
    );
    let error = callhost::Host::open(h.data())
        .unwrap()
        .stored_directory()
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("users.sip_ha1 of `bert`"),
        "{error:#}"
    );
    // Loading the directory again writes every HA1 afresh.
    h.ok(&["directory", "load", file.to_str().unwrap()]);
    let directory = callhost::Host::open(h.data())
        .unwrap()
        .stored_directory()
        .unwrap()
        .unwrap();
    assert_eq!(
        directory.users[1].digest_ha1(),
        Some(ha1("bert", "bert-secret-pw"))
    );
}

/// The first occurrence of `needle` in the file at `path`.
fn find(path: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} has no {needle:?}", path.display()))
}

/// Changes one byte of the library, in its `.comment` section (the
/// compiler's version string): the file still loads, only its checksum
/// tells.
fn tamper(library: &Path) {
    let at = find(library, b"rustc version");
    let mut bytes = std::fs::read(library).unwrap();
    bytes[at] = b'R';
    std::fs::write(library, bytes).unwrap();
}

/// The installed library of `module` (the only version directory).
fn installed_library(data: &Path, module: &str, file: &str) -> PathBuf {
    let dir = data.join("modules").join(module);
    let versions: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "shared")
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    versions[0].join(file)
}

#[test]
fn a_library_changed_after_install_is_never_loaded() {
    let h = Harness::new();
    h.install(HELLO);
    h.install(BT);
    h.create("hello", "hi", "greeting = \"Moin\"\n");
    h.create(
        "breakthrough",
        "bt",
        "bypass_dnd = true\n[called]\nactive_for = [\"2??\"]\n[callers]\nactive_for = [\"*\"]\n",
    );
    let hello = installed_library(h.data(), "hello", "libhello_module.so");
    let bt = installed_library(h.data(), "breakthrough", "libbreakthrough.so");
    tamper(&hello);

    // callhost serve: the other module starts, hello is refused and faulted.
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    assert!(
        serve.banner.contains("1 active module instance(s) bt"),
        "{}",
        serve.banner
    );
    let line = serve.wait_log(&["cannot start instance", "refusing to load"]);
    assert!(line.contains(hello.to_str().unwrap()), "{line}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", serve.pid().unwrap())).unwrap();
    assert!(
        !maps.contains(hello.to_str().unwrap()),
        "the changed library was mapped"
    );
    assert!(
        maps.contains(bt.to_str().unwrap()),
        "breakthrough is loaded"
    );
    assert!(serve.stop().success());
    let listed = h.instance("hi");
    assert_eq!(listed["status"], "faulted", "{listed}");
    let fault = listed["fault"].as_str().unwrap();
    assert!(
        fault.contains(hello.to_str().unwrap()) && fault.contains("SHA-256"),
        "{fault}"
    );
    assert_eq!(h.instance("bt")["status"], "active");

    // Every other path that loads it refuses too, naming the file.
    for args in [
        &["instance", "action", "hi", "greet"][..],
        &["instance", "show", "hi"][..],
    ] {
        let error = h.fails(args);
        assert!(
            error.contains("refusing to load") && error.contains(hello.to_str().unwrap()),
            "{args:?}: {error}"
        );
    }
    // In this process too: nothing of the file is mapped.
    let host = callhost::Host::open(h.data()).unwrap();
    let instances = callhost::instances::Instances::new(&host.data, &host.db, &host.loader);
    let error = instances.library_of("hello").err().unwrap();
    assert!(
        format!("{error:#}").contains(hello.to_str().unwrap()),
        "{error:#}"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains(hello.to_str().unwrap()));

    // Installing the package again stores a new copy; the configuration is kept.
    h.install(HELLO);
    h.ok(&["instance", "activate", "hi"]);
    assert_eq!(greet(&h, "hi"), json!({"text": "Moin, Bob!"}));
}

/// A data directory as callhost 0.1.0 left it (tests/fixtures/data-0.1.0:
/// its database as SQL, its key), with hello's version directory as this
/// build's package installs it, so the directory's name matches its files.
fn old_data_dir(version_dir: &Path) -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-0.1.0");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::copy(fixture.join("config.key"), data.join("config.key")).unwrap();
    let name = version_dir.file_name().unwrap().to_str().unwrap();
    copy_dir(version_dir, &data.join("modules/hello").join(name));
    let conn = db(data);
    conn.execute_batch(&std::fs::read_to_string(fixture.join("callhost.sql")).unwrap())
        .unwrap();
    conn.execute(
        "UPDATE modules SET library_path = ?1 WHERE id = 'hello'",
        [format!("modules/hello/{name}/libhello_module.so")],
    )
    .unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_database_from_0_1_0_is_upgraded_and_keeps_everything() {
    let scratch = Harness::new();
    scratch.install(HELLO);
    let library = installed_library(scratch.data(), "hello", "libhello_module.so");
    let version_dir = library.parent().unwrap();

    let old = old_data_dir(version_dir);
    let h = Harness { dir: old };
    // The configurations (sealed:v1) still work, as does the module
    // installed without a recorded checksum (its directory matches its name).
    assert_eq!(greet(&h, "hi"), json!({"text": "Moin, Bob!"}));
    assert_eq!(greet(&h, "hi2"), json!({"text": "Servus, Bob!"}));
    let listed = h.instance("hi");
    assert_eq!(
        (&listed["description"], &listed["status"]),
        (&json!("front desk"), &json!("active"))
    );
    let sha256: String = stored(
        h.data(),
        "SELECT library_sha256 FROM modules WHERE id = ?1",
        "hello",
    );
    let library = h.data().join(stored(
        h.data(),
        "SELECT library_path FROM modules WHERE id = ?1",
        "hello",
    ));
    assert_eq!(
        sha256,
        hex::encode(sha2::Sha256::digest(std::fs::read(&library).unwrap()))
    );
    // Now sealed for their rows: hi2's configuration does not open as hi's.
    for name in ["hi", "hi2"] {
        let config = stored(
            h.data(),
            "SELECT config FROM instances WHERE name = ?1",
            name,
        );
        assert!(config.starts_with("sealed:v2:"), "{name}: {config}");
    }
    // The HA1s (clear in 0.1.0) are sealed and still the same hashes.
    let anna = ha1("anna", "anna-old-pw");
    let bert = ha1("bert", "bert-old-pw");
    assert_eq!(
        anna, "44b030cff26ef43a5078995e7733c129",
        "the fixture's HA1"
    );
    for user in ["anna", "bert"] {
        let value = stored(h.data(), "SELECT sip_ha1 FROM users WHERE id = ?1", user);
        assert!(value.starts_with("sealed:v2:"), "{user}: {value}");
    }
    let host = callhost::Host::open(h.data()).unwrap();
    let directory = host.stored_directory().unwrap().unwrap();
    let ha1s: Vec<Option<String>> = directory.users.iter().map(|u| u.digest_ha1()).collect();
    assert_eq!(ha1s, [Some(anna.clone()), Some(bert.clone()), None]);
    drop(host);
    let bytes = database_bytes(h.data());
    for clear in [&anna, &bert] {
        assert!(!holds(&bytes, clear), "{clear} is still in callhost.db");
    }
    // The old API token and everything else is still there.
    let tokens: Value = serde_json::from_str(&h.ok(&["api", "token", "list", "--json"])).unwrap();
    assert_eq!(tokens[0]["name"], "old");

    // Had the library been changed before the upgrade, its checksum is not
    // recorded: refused, naming the file, until the package is installed
    // again (which keeps the configurations).
    let changed = old_data_dir(version_dir);
    let h = Harness { dir: changed };
    let name = version_dir.file_name().unwrap();
    let library = h
        .data()
        .join("modules/hello")
        .join(name)
        .join("libhello_module.so");
    tamper(&library);
    let error = h.fails(&["instance", "action", "hi", "greet", "Bob"]);
    assert!(
        error.contains("install its package again") && error.contains(library.to_str().unwrap()),
        "{error}"
    );
    h.ok(&[
        "trust",
        "add",
        common::package("signing-key.pub").to_str().unwrap(),
    ]);
    h.install(HELLO);
    assert_eq!(greet(&h, "hi"), json!({"text": "Moin, Bob!"}));
}
