//! Error messages say it once: each cause appears one time in what the
//! CLI prints, a damaged package says so and names the part, a refused
//! configuration names its file and field, and the simulator warns about
//! parties the directory does not know.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::{package, zip_entries as entries, Harness, OFFICE};

/// A data directory without the packaging key (for tests without modules).
fn bare() -> Harness {
    Harness {
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Writes `entries` uncompressed, so a changed byte of one is exactly a
/// bad CRC-32 of that entry.
fn write_stored(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), stored).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn install_fails(h: &Harness, file: &Path) -> String {
    h.fails(&["module", "install", file.to_str().unwrap()])
}

/// Nothing in `text` is said twice in a row (`x: x`).
fn assert_no_stutter(text: &str) {
    let parts: Vec<&str> = text.trim_end().split(": ").collect();
    for pair in parts.windows(2) {
        assert_ne!(pair[0], pair[1], "said twice: {text}");
    }
    assert!(!text.contains("i/o error: i/o error"), "{text}");
}

#[test]
fn a_missing_package_file_is_named_once_with_the_system_error_once() {
    let h = Harness::new();
    let missing = h.data().join("nowhere.cmod");
    let err = install_fails(&h, &missing);
    assert_eq!(
        err,
        format!(
            "error: cannot open {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_truncated_package_is_damaged_at_the_zip_directory() {
    let h = Harness::new();
    let bytes = std::fs::read(package("hello-0.1.0.cmod")).unwrap();
    let truncated = h.data().join("truncated.cmod");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = install_fails(&h, &truncated);
    let expected = format!(
        "error: damaged package {}: zip directory: ",
        truncated.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches(&*truncated.display().to_string()).count(), 1);
    assert_eq!(err.matches("EOCD").count(), 1, "{err}");
    assert_no_stutter(&err);
}

#[test]
fn an_entry_with_a_bad_checksum_is_damaged_naming_the_entry() {
    let h = Harness::new();
    let entries = entries(&package("hello-0.1.0.cmod"));
    let library = entries
        .iter()
        .find(|(name, _)| name.starts_with("lib/"))
        .expect("a library entry")
        .clone();
    let damaged = h.data().join("bad-crc.cmod");
    write_stored(&damaged, &entries);
    // Flip a byte in the middle of the library's stored data.
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes
        .windows(library.1.len())
        .position(|window| window == library.1.as_slice())
        .expect("stored data found");
    bytes[at + library.1.len() / 2] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();

    let err = install_fails(&h, &damaged);
    assert_eq!(
        err,
        format!(
            "error: damaged package {}: {}: Invalid checksum\n",
            damaged.display(),
            library.0
        )
    );
    assert_no_stutter(&err);
}

#[test]
fn a_missing_entry_is_damage_naming_the_entry() {
    let h = Harness::new();
    let kept: Vec<_> = entries(&package("hello-0.1.0.cmod"))
        .into_iter()
        .filter(|(name, _)| name != "SHA256SUMS")
        .collect();
    let damaged = h.data().join("no-sums.cmod");
    write_stored(&damaged, &kept);
    let err = install_fails(&h, &damaged);
    assert_eq!(
        err,
        format!(
            "error: damaged package {}: SHA256SUMS: missing\n",
            damaged.display()
        )
    );
}

#[test]
fn a_refusal_that_does_not_name_the_file_gets_it_once() {
    let h = Harness::new();
    let mut entries = entries(&package("hello-0.1.0.cmod"));
    let library = entries
        .iter_mut()
        .find(|(name, _)| name.starts_with("lib/"))
        .unwrap();
    let last = library.1.len() - 1;
    library.1[last] ^= 0xff;
    let name = library.0.clone();
    let tampered = h.data().join("tampered.cmod");
    write_stored(&tampered, &entries);
    let err = install_fails(&h, &tampered);
    assert!(
        err.starts_with(&format!(
            "error: refusing {}: checksum mismatch for {name}: ",
            tampered.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches(&*tampered.display().to_string()).count(), 1);
}

#[test]
fn a_refused_configuration_names_the_file_and_the_field() {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    let bad = h.file("bad.toml", "greeting = \"\"\n");
    let err = h.fails(&[
        "instance",
        "create",
        "hello",
        "hi",
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(
        err,
        format!(
            "error: {}: instance `hi`: field `greeting`: must not be empty\n",
            bad.display()
        )
    );

    // Unknown keys too, and on `configure`.
    h.create("hello", "hi", "");
    let typo = h.file("typo.toml", "greting = \"Moin\"\n");
    let err = h.fails(&["instance", "configure", "hi", typo.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "error: {}: instance `hi`: field `greting`: unknown field `greting`",
            typo.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // An export file has the configuration under [config]: the field is
    // named as it is spelled there.
    let import = h.file(
        "import.toml",
        "name = \"other\"\nmodule = \"hello\"\n[config]\ngreeting = \"\"\n",
    );
    let err = h.fails(&["instance", "import", import.to_str().unwrap()]);
    assert_eq!(
        err,
        format!(
            "error: {}: instance `other`: field `config.greeting`: must not be empty\n",
            import.display()
        )
    );
}

#[test]
fn a_data_directory_that_cannot_be_used_says_why_once() {
    // The key file is a directory: the seal key cannot be read.
    let h = bare();
    std::fs::create_dir(h.data().join("config.key")).unwrap();
    let err = h.fails(&["module", "list"]);
    assert!(err.starts_with("error: cannot read the key file "), "{err}");
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert_no_stutter(&err);

    // The database is a directory: SQLite cannot open it.
    let h = bare();
    h.ok(&["module", "list"]);
    let database = h.data().join("callhost.db");
    std::fs::remove_file(&database).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(h.data().join(format!("callhost.db{suffix}")));
    }
    std::fs::create_dir(&database).unwrap();
    let err = h.fails(&["module", "list"]);
    assert!(
        err.starts_with(&format!(
            "error: cannot open database {}: ",
            database.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("cannot open database").count(), 1, "{err}");
    assert_no_stutter(&err);
}

#[test]
fn a_scenario_file_that_is_missing_is_named_once() {
    let h = bare();
    let missing = h.data().join("none.toml");
    let err = h.fails(&["simulate", missing.to_str().unwrap()]);
    assert_eq!(
        err,
        format!(
            "error: reading {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn simulate_warns_about_a_caller_that_is_no_number_and_a_by_that_is_no_user() {
    let h = bare();
    let office = h.file("office.toml", OFFICE);
    h.ok(&["directory", "load", office.to_str().unwrap()]);
    let scenario = h.file(
        "warned.toml",
        r#"
[[calls]]
from = "boss"
to = "202"

[[calls]]
from = "+49891234567"
to = "201"
via = "attended-transfer"
by = "nobody"

[[calls]]
from = "203"
to = "201"
via = "blind-transfer"
by = "sec"
"#,
    );
    let output = h.run(&["simulate", scenario.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let path = scenario.display();
    assert_eq!(
        stderr,
        format!(
            "warning: {path}: field `calls[0].from`: \"boss\" is not a number (it is a user id: give one of the user's numbers); the call is placed with an unknown caller\n\
             warning: {path}: field `calls[1].by`: \"nobody\" is not a directory user (neither a user id nor a user's number)\n"
        )
    );
    // The calls still run; stdout stays JSON lines.
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("JSON line");
    }
}
