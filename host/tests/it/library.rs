//! H1, H4: installing, verifying, replacing and removing module packages.

use crate::common;

use std::io::Write;

use callhost_package::{Manifest, PackageBuilder, SigningKey};
use callhost_plugin_sdk::abi::ABI_VERSION;
use common::{package, zip_entries as entries, Harness};

fn write_entries(path: &std::path::Path, entries: &[(String, Vec<u8>)]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        writer
            .start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn hello_manifest_and_library() -> (Manifest, Vec<u8>) {
    let entries = entries(&package("hello-0.1.0.cmod"));
    let manifest_text = &entries.iter().find(|(n, _)| n == "module.toml").unwrap().1;
    let manifest = Manifest::from_toml(std::str::from_utf8(manifest_text).unwrap()).unwrap();
    let library = entries
        .iter()
        .find(|(n, _)| *n == manifest.library)
        .unwrap()
        .1
        .clone();
    (manifest, library)
}

/// A package signed by a fresh key that `harness` trusts.
fn repackage(
    harness: &Harness,
    manifest: Manifest,
    library: Vec<u8>,
    name: &str,
) -> std::path::PathBuf {
    let key = SigningKey::generate();
    let key_file = harness.file("extra.pub", &key.public().to_file_text());
    harness.ok(&["trust", "add", key_file.to_str().unwrap()]);
    let out = harness.data().join(name);
    PackageBuilder::new(manifest)
        .library(library)
        .write(&out, Some(&key))
        .unwrap();
    out
}

#[test]
fn install_lists_module_with_version_abi_and_signer() {
    let h = Harness::new();
    let out = h.install("hello-0.1.0.cmod");
    assert!(out.contains("installed hello 0.1.0"), "{out}");
    assert!(out.contains("signed by key"), "{out}");
    let list: serde_json::Value =
        serde_json::from_str(&h.ok(&["module", "list", "--json"])).unwrap();
    assert_eq!(list[0]["id"], "hello");
    assert_eq!(list[0]["version"], "0.1.0");
    assert_eq!(list[0]["abi_version"], ABI_VERSION);
    assert!(list[0]["signed_by"].as_str().unwrap().len() == 16);
}

#[test]
fn untrusted_signature_is_refused_until_the_key_is_trusted() {
    let h = Harness::new();
    std::fs::remove_dir_all(h.data().join("trusted-keys")).unwrap();
    let err = h.fails(&[
        "module",
        "install",
        package("hello-0.1.0.cmod").to_str().unwrap(),
    ]);
    assert!(err.contains("trusted"), "{err}");
    let list = h.ok(&["module", "list", "--json"]);
    assert_eq!(list.trim(), "[]");
}

#[test]
fn unsigned_package_needs_the_explicit_flag() {
    let h = Harness::new();
    let (manifest, library) = hello_manifest_and_library();
    let out = h.data().join("unsigned.cmod");
    PackageBuilder::new(manifest)
        .library(library)
        .write(&out, None)
        .unwrap();
    let err = h.fails(&["module", "install", out.to_str().unwrap()]);
    assert!(
        err.contains("unsigned") && err.contains("--allow-unsigned"),
        "{err}"
    );
    let ok = h.ok(&[
        "module",
        "install",
        out.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    assert!(ok.contains("UNSIGNED"), "{ok}");
}

#[test]
fn tampered_library_fails_its_checksum() {
    let h = Harness::new();
    let mut entries = entries(&package("hello-0.1.0.cmod"));
    let library = entries
        .iter_mut()
        .find(|(n, _)| n.starts_with("lib/"))
        .unwrap();
    let name = library.0.clone();
    let last = library.1.len() - 1;
    library.1[last] ^= 0xff;
    let tampered = h.data().join("tampered.cmod");
    write_entries(&tampered, &entries);
    let err = h.fails(&["module", "install", tampered.to_str().unwrap()]);
    assert!(
        err.contains("checksum mismatch") && err.contains(&name),
        "{err}"
    );
}

#[test]
fn tampered_checksum_list_fails_the_signature() {
    let h = Harness::new();
    let mut entries = entries(&package("hello-0.1.0.cmod"));
    let sums = entries.iter_mut().find(|(n, _)| n == "SHA256SUMS").unwrap();
    sums.1.extend_from_slice(b"");
    sums.1[0] = if sums.1[0] == b'a' { b'b' } else { b'a' };
    let tampered = h.data().join("tampered-sums.cmod");
    write_entries(&tampered, &entries);
    let err = h.fails(&["module", "install", tampered.to_str().unwrap()]);
    assert!(err.to_lowercase().contains("signature"), "{err}");
}

#[test]
fn other_abi_version_is_refused_naming_both_versions() {
    let h = Harness::new();
    let (mut manifest, library) = hello_manifest_and_library();
    manifest.abi_version = ABI_VERSION + 1;
    let out = repackage(&h, manifest, library, "other-abi.cmod");
    let err = h.fails(&["module", "install", out.to_str().unwrap()]);
    assert!(
        err.contains(&format!("module built for ABI version {}", ABI_VERSION + 1))
            && err.contains(&format!("this host speaks ABI version {ABI_VERSION}")),
        "{err}"
    );
}

#[test]
fn other_host_version_is_refused_naming_both_versions() {
    let h = Harness::new();
    let (mut manifest, library) = hello_manifest_and_library();
    manifest.host_version = semver::VersionReq::parse(">=7.0").unwrap();
    let out = repackage(&h, manifest, library, "host7.cmod");
    let err = h.fails(&["module", "install", out.to_str().unwrap()]);
    assert!(err.contains(">=7.0") && err.contains("0.1.0"), "{err}");
}

#[test]
fn a_library_that_is_not_a_module_is_refused() {
    let h = Harness::new();
    let (manifest, _) = hello_manifest_and_library();
    // Any real shared library without our symbol: the C library's math part.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libm present");
    let out = repackage(
        &h,
        manifest,
        std::fs::read(libm).unwrap(),
        "not-a-module.cmod",
    );
    let err = h.fails(&["module", "install", out.to_str().unwrap()]);
    assert!(err.contains("not a callhost module"), "{err}");
}

#[test]
fn a_library_that_lies_about_its_identity_is_refused() {
    let h = Harness::new();
    let (mut manifest, library) = hello_manifest_and_library();
    manifest.id = "impostor".into();
    let out = repackage(&h, manifest, library, "impostor.cmod");
    let err = h.fails(&["module", "install", out.to_str().unwrap()]);
    assert!(err.contains("the library says it is hello"), "{err}");
}

#[test]
fn reinstall_upgrade_and_downgrade_keep_every_instance_configuration() {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    h.create("hello", "one", "greeting = \"Moin\"\nnumbers = [\"201\"]\n");
    h.create("hello", "two", "greeting = \"Servus\"\n");
    let before = (
        h.ok(&["instance", "export", "one"]),
        h.ok(&["instance", "export", "two"]),
    );

    let out = h.install("hello-0.2.0.cmod");
    assert!(
        out.contains("replaced hello 0.1.0 with 0.2.0") && out.contains("2 instance(s) kept"),
        "{out}"
    );
    let out = h.install("hello-0.1.0.cmod");
    assert!(out.contains("replaced hello 0.2.0 with 0.1.0"), "{out}");

    let after = (
        h.ok(&["instance", "export", "one"]),
        h.ok(&["instance", "export", "two"]),
    );
    // Only the informational version line may differ; it is back at 0.1.0.
    assert_eq!(before, after);
    assert!(after.0.contains("greeting = \"Moin\""));
    assert_eq!(h.instance("one")["status"], "active");
}

#[test]
fn removing_a_module_with_instances_needs_the_explicit_flag() {
    let h = Harness::new();
    h.install("hello-0.1.0.cmod");
    h.create("hello", "one", "");
    let err = h.fails(&["module", "remove", "hello"]);
    assert!(err.contains("still has instances (one)"), "{err}");
    h.ok(&["module", "remove", "hello", "--with-instances"]);
    assert_eq!(h.ok(&["instance", "list", "--json"]).trim(), "[]");
    let err = h.fails(&["module", "remove", "hello"]);
    assert!(err.contains("no module `hello`"), "{err}");
}

#[test]
fn a_relative_data_directory_keeps_working_from_anywhere() {
    let parent = tempfile::tempdir().unwrap();
    let run = |cwd: &std::path::Path, data: &str, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_callhost"))
            .current_dir(cwd)
            .arg("--data")
            .arg(data)
            .args(args)
            .env_remove("CALLHOST_DATA")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let key = package("signing-key.pub");
    run(
        parent.path(),
        "pbx",
        &["trust", "add", key.to_str().unwrap()],
    );
    run(
        parent.path(),
        "pbx",
        &[
            "module",
            "install",
            package("hello-0.1.0.cmod").to_str().unwrap(),
        ],
    );
    run(parent.path(), "pbx", &["instance", "create", "hello", "hi"]);
    // Same data, named from elsewhere: the library is still found.
    let absolute = parent.path().join("pbx");
    let answer = run(
        std::path::Path::new("/"),
        absolute.to_str().unwrap(),
        &["instance", "action", "hi", "greet", "Ann"],
    );
    assert!(answer.contains("Hello, Ann!"), "{answer}");
}
