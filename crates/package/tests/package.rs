//! End-to-end tests of writing, tampering with and verifying `.cmod` packages.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use callhost_package::{
    load_trusted_keys, open_verified, sha256_hex, Damage, Manifest, PackageBuilder, PackageError,
    PublicKey, SigningKey, VerifiedPackage, VerifyOptions, ZIP_DIRECTORY,
};
use tempfile::TempDir;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const LIBRARY: &str = "lib/x86_64-unknown-linux-gnu/libbreakthrough.so";
const HOST_ABI: u32 = 1;

fn host_version() -> semver::Version {
    semver::Version::new(0, 1, 0)
}

fn manifest() -> Manifest {
    Manifest {
        id: "breakthrough".to_owned(),
        name: "Breakthrough".to_owned(),
        version: semver::Version::new(1, 2, 3),
        abi_version: HOST_ABI,
        host_version: ">=0.1, <0.2".parse().unwrap(),
        description: "Lets VIP callers through.".to_owned(),
        target: TARGET.to_owned(),
        library: LIBRARY.to_owned(),
    }
}

fn library_bytes() -> Vec<u8> {
    b"\x7fELF pretend shared object".repeat(50)
}

fn builder(manifest: Manifest) -> PackageBuilder {
    PackageBuilder::new(manifest)
        .library(library_bytes())
        .asset("assets/prompt.wav", b"RIFF....WAVE".to_vec())
        .asset("verify.sh", b"#!/bin/sh\nexit 0\n".to_vec())
}

fn write_package(dir: &TempDir, key: Option<&SigningKey>) -> PathBuf {
    let out = dir.path().join("breakthrough.cmod");
    builder(manifest()).write(&out, key).unwrap();
    out
}

fn open(
    path: &Path,
    trusted: &[PublicKey],
    allow_unsigned: bool,
) -> Result<VerifiedPackage, PackageError> {
    let host = host_version();
    open_verified(
        path,
        &VerifyOptions {
            trusted,
            allow_unsigned,
            host_abi: HOST_ABI,
            host_version: &host,
        },
    )
}

fn read_zip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().to_owned(), bytes)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// Rewrites a package's entries: `edit` may change an entry's bytes or drop it
/// (return false); `extra` entries are appended.
fn rewrite(path: &Path, edit: impl Fn(&str, &mut Vec<u8>) -> bool, extra: &[(&str, &[u8])]) {
    let mut entries: Vec<(String, Vec<u8>)> = read_zip(path)
        .into_iter()
        .filter_map(|(name, mut bytes)| edit(&name, &mut bytes).then_some((name, bytes)))
        .collect();
    entries.extend(extra.iter().map(|(n, b)| (n.to_string(), b.to_vec())));
    write_zip(path, &entries);
}

/// Recomputes SHA256SUMS for the current entries and drops any signature,
/// as a forger without the key would have to.
fn reseal_unsigned(path: &Path) {
    let files: BTreeMap<String, Vec<u8>> = read_zip(path)
        .into_iter()
        .filter(|(name, _)| name != "SHA256SUMS" && name != "SHA256SUMS.sig")
        .collect();
    let sums: String = files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", sha256_hex(bytes)))
        .collect();
    let mut entries: Vec<(String, Vec<u8>)> = files.into_iter().collect();
    entries.push(("SHA256SUMS".to_owned(), sums.into_bytes()));
    write_zip(path, &entries);
}

fn entry(path: &Path, name: &str) -> Vec<u8> {
    read_zip(path)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
        .1
}

#[test]
fn signed_round_trip() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));

    let package = open(&path, &[key.public()], false).unwrap();
    assert_eq!(package.manifest, manifest());
    assert_eq!(package.signed_by, Some(key.public().key_id()));
    assert_eq!(package.library_bytes(), library_bytes().as_slice());
    assert_eq!(
        package.library_sha256(),
        callhost_package::sha256_hex(&library_bytes())
    );
    assert_eq!(
        package.checksums.keys().collect::<Vec<_>>(),
        package.files.keys().collect::<Vec<_>>()
    );
    let assets: Vec<&str> = package.assets().map(|(p, _)| p).collect();
    assert_eq!(assets, ["assets/prompt.wav", "verify.sh"]);
    assert_eq!(
        package.files.keys().collect::<Vec<_>>(),
        ["assets/prompt.wav", LIBRARY, "module.toml", "verify.sh"]
    );
}

#[test]
fn checksums_and_signature_file_format() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));

    let sums = String::from_utf8(entry(&path, "SHA256SUMS")).unwrap();
    let lines: Vec<&str> = sums.lines().collect();
    let paths: Vec<&str> = lines.iter().map(|l| &l[66..]).collect();
    assert_eq!(
        paths,
        ["assets/prompt.wav", LIBRARY, "module.toml", "verify.sh"]
    );
    assert!(sums.ends_with('\n'));
    assert_eq!(
        lines[1],
        format!("{}  {LIBRARY}", sha256_hex(&library_bytes()))
    );

    let sig = String::from_utf8(entry(&path, "SHA256SUMS.sig")).unwrap();
    let (b64, rest) = sig.split_once('\n').unwrap();
    assert_eq!(b64.len(), 88, "base64 of 64 bytes");
    assert_eq!(rest, format!("key: {}\n", key.public().key_id()));

    let toml = String::from_utf8(entry(&path, "module.toml")).unwrap();
    assert!(toml.contains("version = \"1.2.3\""), "{toml}");
    assert!(toml.contains("host_version = \">=0.1, <0.2\""), "{toml}");
}

#[test]
fn output_is_deterministic() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let a = builder(manifest()).to_bytes(Some(&key)).unwrap();
    let b = builder(manifest()).to_bytes(Some(&key)).unwrap();
    assert_eq!(a, b);
    // And write() produces exactly those bytes.
    let path = write_package(&dir, Some(&key));
    assert_eq!(fs::read(path).unwrap(), a);
}

#[test]
fn unsigned_refused_unless_allowed() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, None);
    assert!(read_zip(&path).iter().all(|(n, _)| n != "SHA256SUMS.sig"));

    let err = open(&path, &[key.public()], false).unwrap_err();
    assert!(matches!(err, PackageError::Unsigned), "{err:?}");
    assert_eq!(
        err.to_string(),
        "package is unsigned; use --allow-unsigned to install it anyway"
    );

    let package = open(&path, &[key.public()], true).unwrap();
    assert_eq!(package.signed_by, None);
    assert_eq!(package.library_bytes(), library_bytes().as_slice());
}

#[test]
fn tampered_library_fails_checksum() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    rewrite(
        &path,
        |name, bytes| {
            if name == LIBRARY {
                bytes[10] ^= 1;
            }
            true
        },
        &[],
    );
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert!(
        matches!(err, PackageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "checksum mismatch for {LIBRARY}: SHA256SUMS says "
        )),
        "{msg}"
    );
    assert!(msg.contains(&sha256_hex(&library_bytes())), "{msg}");
}

#[test]
fn tampered_checksums_fail_signature() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    // Swap the library and fix up SHA256SUMS but keep the old signature.
    let evil = b"evil library".to_vec();
    let old_hash = sha256_hex(&library_bytes());
    let new_hash = sha256_hex(&evil);
    rewrite(
        &path,
        |name, bytes| {
            if name == LIBRARY {
                *bytes = evil.clone();
            } else if name == "SHA256SUMS" {
                let text = String::from_utf8(bytes.clone()).unwrap();
                *bytes = text.replace(&old_hash, &new_hash).into_bytes();
            }
            true
        },
        &[],
    );
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert!(
        matches!(err, PackageError::SignatureInvalid { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&key.public().key_id()), "{err}");
    // allow_unsigned does not excuse a bad signature.
    let err = open(&path, &[key.public()], true).unwrap_err();
    assert!(
        matches!(err, PackageError::SignatureInvalid { .. }),
        "{err:?}"
    );
}

#[test]
fn unlisted_file_refused() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    rewrite(&path, |_, _| true, &[("assets/x.wav", b"sneaky")]);
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file assets/x.wav is not listed in SHA256SUMS"
    );
}

#[test]
fn listed_but_missing_file_refused() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    rewrite(&path, |name, _| name != "verify.sh", &[]);
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert!(
        matches!(
            &err,
            PackageError::Damaged { part, damage: Damage::ListedButMissing, .. } if part == "verify.sh"
        ),
        "{err:?}"
    );
    assert_eq!(
        chain(&err),
        format!(
            "damaged package {}: verify.sh: listed in SHA256SUMS but missing from the package",
            path.display()
        )
    );
}

/// The message and its sources, as the CLI prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn truncated_package_is_damaged_at_the_zip_directory() {
    let dir = TempDir::new().unwrap();
    let path = write_package(&dir, None);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = open(&path, &[], true).unwrap_err();
    assert!(
        matches!(&err, PackageError::Damaged { part, damage: Damage::Zip(_), .. } if part == ZIP_DIRECTORY),
        "{err:?}"
    );
    let text = chain(&err);
    assert!(
        text.starts_with(&format!(
            "damaged package {}: zip directory: ",
            path.display()
        )),
        "{text}"
    );
    // zip's words come once.
    assert_eq!(text.matches("EOCD").count(), 1, "{text}");
}

#[test]
fn corrupt_entry_is_damaged_naming_the_entry() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("stored.cmod");
    // Stored (not deflated), so flipping a byte of the data fails the CRC-32.
    let library = library_bytes();
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(LIBRARY, stored).unwrap();
    zip.write_all(&library).unwrap();
    zip.finish().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes
        .windows(library.len())
        .position(|window| window == library.as_slice())
        .unwrap();
    bytes[at + 3] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = open(&path, &[], true).unwrap_err();
    assert!(
        matches!(&err, PackageError::Damaged { part, damage: Damage::Data(_), .. } if part == LIBRARY),
        "{err:?}"
    );
    assert_eq!(
        chain(&err),
        format!(
            "damaged package {}: {LIBRARY}: Invalid checksum",
            path.display()
        )
    );
}

#[test]
fn a_missing_file_is_named_once() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("absent.cmod");
    let err = open(&path, &[], true).unwrap_err();
    assert!(matches!(err, PackageError::Io { .. }), "{err:?}");
    let text = chain(&err);
    assert_eq!(
        text,
        format!(
            "cannot open {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn directory_entries_are_ignored() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    let mut entries = read_zip(&path);
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    zip.add_directory("assets/", zip::write::SimpleFileOptions::default())
        .unwrap();
    for (name, bytes) in entries.drain(..) {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
    open(&path, &[key.public()], false).unwrap();
}

#[test]
fn untrusted_key_refused() {
    let dir = TempDir::new().unwrap();
    let signer = SigningKey::generate();
    let trusted = SigningKey::generate();
    let path = write_package(&dir, Some(&signer));

    let err = open(&path, &[trusted.public()], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "signature does not verify against any trusted key (signed with key {}; trusted: {})",
            signer.public().key_id(),
            trusted.public().key_id()
        )
    );

    let err = open(&path, &[], true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "signature does not verify against any trusted key (signed with key {}; trusted: none)",
            signer.public().key_id()
        )
    );
}

#[test]
fn verifies_with_any_of_several_trusted_keys() {
    let dir = TempDir::new().unwrap();
    let signer = SigningKey::generate();
    let path = write_package(&dir, Some(&signer));
    let trusted = [SigningKey::generate().public(), signer.public()];
    let package = open(&path, &trusted, false).unwrap();
    assert_eq!(package.signed_by, Some(signer.public().key_id()));
}

#[test]
fn abi_mismatch_names_both_versions() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("m.cmod");
    builder(Manifest {
        abi_version: 2,
        ..manifest()
    })
    .write(&path, Some(&key))
    .unwrap();
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module built for ABI version 2, this host speaks ABI version 1"
    );
}

#[test]
fn host_version_mismatch_names_both_versions() {
    let dir = TempDir::new().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("m.cmod");
    builder(Manifest {
        host_version: ">=0.2".parse().unwrap(),
        ..manifest()
    })
    .write(&path, Some(&key))
    .unwrap();
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module requires host version >=0.2, this host is 0.1.0"
    );
}

#[test]
fn bad_manifest_id_names_the_field() {
    let bad = Manifest {
        id: "Bad_Id".to_owned(),
        ..manifest()
    };
    let err = bad.validate().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("module.toml: field `id`: \"Bad_Id\""),
        "{msg}"
    );

    // The builder refuses to write it...
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("m.cmod");
    let err = builder(bad).write(&path, None).unwrap_err();
    assert!(err.to_string().contains("field `id`"), "{err}");
    assert!(!path.exists());

    // ...and the reader refuses a package whose module.toml was edited.
    let path = write_package(&dir, None);
    rewrite(
        &path,
        |name, bytes| {
            if name == "module.toml" {
                let text = String::from_utf8(bytes.clone()).unwrap();
                *bytes = text
                    .replace("id = \"breakthrough\"", "id = \"\"")
                    .into_bytes();
            }
            true
        },
        &[],
    );
    reseal_unsigned(&path);
    let err = open(&path, &[], true).unwrap_err();
    assert!(
        err.to_string().starts_with("module.toml: field `id`: "),
        "{err}"
    );
}

#[test]
fn manifest_field_rules() {
    let cases: [(&str, Manifest); 5] = [
        (
            "id",
            Manifest {
                id: "x".repeat(65),
                ..manifest()
            },
        ),
        (
            "name",
            Manifest {
                name: " ".to_owned(),
                ..manifest()
            },
        ),
        (
            "target",
            Manifest {
                target: "x86/64".to_owned(),
                ..manifest()
            },
        ),
        (
            "library",
            Manifest {
                library: "libfoo.so".to_owned(),
                ..manifest()
            },
        ),
        (
            "library",
            Manifest {
                library: format!("lib/{TARGET}/../../etc/passwd"),
                ..manifest()
            },
        ),
    ];
    for (field, m) in cases {
        let msg = m.validate().unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("module.toml: field `{field}`: ")),
            "{field}: {msg}"
        );
    }
    manifest().validate().unwrap();
    Manifest {
        id: "a-9".to_owned(),
        ..manifest()
    }
    .validate()
    .unwrap();
}

#[test]
fn manifest_toml_errors_carry_toml_message() {
    let good = manifest().to_toml();
    assert_eq!(Manifest::from_toml(&good).unwrap(), manifest());

    let err =
        Manifest::from_toml(&good.replace("version = \"1.2.3\"", "version = \"one\"")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("module.toml: "), "{msg}");
    assert!(
        msg.contains("field `version`: \"one\" is not a semver version"),
        "{msg}"
    );

    let missing: String = good
        .lines()
        .filter(|l| !l.starts_with("target"))
        .map(|l| format!("{l}\n"))
        .collect();
    let msg = Manifest::from_toml(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing field `target`"), "{msg}");

    let msg = Manifest::from_toml("id = ").unwrap_err().to_string();
    assert!(msg.starts_with("module.toml: TOML parse error"), "{msg}");
    assert!(msg.ends_with("invalid TOML syntax"), "{msg}");
}

#[test]
fn asset_paths_validated() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("m.cmod");
    for bad in [
        "../x",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a\\b",
        "",
        "dir/",
        "x\ny",
    ] {
        let err = builder(manifest())
            .asset(bad, vec![])
            .write(&out, None)
            .unwrap_err();
        assert!(
            matches!(err, PackageError::InvalidPath { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    for reserved in [
        "module.toml",
        "SHA256SUMS",
        "SHA256SUMS.sig",
        LIBRARY,
        "verify.sh",
    ] {
        let err = builder(manifest())
            .asset(reserved, vec![])
            .write(&out, None)
            .unwrap_err();
        assert!(
            matches!(err, PackageError::PathConflict { .. }),
            "{reserved}: {err:?}"
        );
    }
    // A file that is also a directory could not be extracted.
    let err = builder(manifest())
        .asset("verify.sh/inner", vec![])
        .write(&out, None)
        .unwrap_err();
    assert!(matches!(err, PackageError::PathConflict { .. }), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn missing_library_bytes_refused() {
    let dir = TempDir::new().unwrap();
    let err = PackageBuilder::new(manifest())
        .write(&dir.path().join("m.cmod"), None)
        .unwrap_err();
    assert!(err.to_string().contains(LIBRARY), "{err}");
}

#[test]
fn unsafe_zip_entry_names_refused() {
    let dir = TempDir::new().unwrap();
    let path = write_package(&dir, None);
    rewrite(&path, |_, _| true, &[("../escape", b"x")]);
    reseal_unsigned(&path);
    let err = open(&path, &[], true).unwrap_err();
    assert!(matches!(err, PackageError::InvalidPath { .. }), "{err:?}");
    assert!(err.to_string().contains("\"../escape\""), "{err}");
}

#[test]
fn garbage_files_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("junk.cmod");
    fs::write(&path, b"not a zip").unwrap();
    let err = open(&path, &[], true).unwrap_err();
    assert!(err.to_string().contains("junk.cmod"), "{err}");

    let path = write_package(&dir, None);
    rewrite(&path, |name, _| name != "SHA256SUMS", &[]);
    let err = open(&path, &[], true).unwrap_err();
    assert!(
        matches!(&err, PackageError::Damaged { part, damage: Damage::Missing, .. } if part == "SHA256SUMS"),
        "{err:?}"
    );
    assert_eq!(
        chain(&err),
        format!("damaged package {}: SHA256SUMS: missing", path.display())
    );

    let key = SigningKey::generate();
    let path = write_package(&dir, Some(&key));
    rewrite(
        &path,
        |name, bytes| {
            if name == "SHA256SUMS.sig" {
                *bytes = b"!!!\nkey: 0123456789abcdef\n".to_vec();
            }
            true
        },
        &[],
    );
    let err = open(&path, &[key.public()], false).unwrap_err();
    assert!(err.to_string().starts_with("SHA256SUMS.sig: "), "{err}");
}

#[test]
fn public_key_text_round_trip() {
    let key = SigningKey::generate().public();
    let text = key.to_file_text();
    assert!(text.starts_with("callhost-ed25519 "), "{text}");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    assert_eq!(PublicKey::from_file_text(&text).unwrap(), key);
    // A trailing comment is allowed.
    let commented = format!("{} ops@example.com\n", text.trim_end());
    assert_eq!(PublicKey::from_file_text(&commented).unwrap(), key);

    let id = key.key_id();
    assert_eq!(id.len(), 16);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(id, &sha256_hex(&key.to_bytes())[..16]);
}

#[test]
fn public_key_garbage_refused() {
    let valid = SigningKey::generate().public().to_file_text();
    let b64 = valid.split_whitespace().nth(1).unwrap().to_owned();
    let cases = [
        ("", "empty"),
        ("hello world", "\"hello\""),
        ("ssh-ed25519 AAAA", "\"ssh-ed25519\""),
        ("callhost-ed25519", "missing base64"),
        ("callhost-ed25519 not*base64", "not valid base64"),
        ("callhost-ed25519 AAAA", "3 bytes, expected 32"),
        (&*format!("{valid}{valid}"), "single line"),
        (
            // The identity point is a weak key.
            &*format!("callhost-ed25519 {}", base64_of(&[1u8; 1], 32)),
            "weak",
        ),
    ];
    for (text, expected) in cases {
        let err = PublicKey::from_file_text(text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid public key: "), "{text:?}: {msg}");
        assert!(msg.contains(expected), "{text:?}: {msg}");
    }
    assert!(PublicKey::from_file_text(&format!("callhost-ed25519 {b64}")).is_ok());
}

/// Base64 of the 32-byte little-endian encoding whose first byte is `first[0]`.
fn base64_of(first: &[u8], len: usize) -> String {
    use base64::Engine as _;
    let mut bytes = vec![0u8; len];
    bytes[..first.len()].copy_from_slice(first);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn trusted_key_directory() {
    let dir = TempDir::new().unwrap();
    assert!(load_trusted_keys(&dir.path().join("missing"))
        .unwrap()
        .is_empty());

    let a = SigningKey::generate().public();
    let b = SigningKey::generate().public();
    fs::write(dir.path().join("a.pub"), a.to_file_text()).unwrap();
    fs::write(dir.path().join("b.pub"), b.to_file_text()).unwrap();
    fs::write(dir.path().join("a-copy.pub"), a.to_file_text()).unwrap();
    fs::write(dir.path().join("notes.txt"), "not a key").unwrap();
    let keys = load_trusted_keys(dir.path()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&a) && keys.contains(&b));

    fs::write(dir.path().join("broken.pub"), "garbage").unwrap();
    let err = load_trusted_keys(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("broken.pub"), "{msg}");
    assert!(msg.contains("callhost-ed25519"), "{msg}");
}

#[test]
fn signing_key_load_or_create() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("keys/nested/signing.key");
    let (first, created) = SigningKey::load_or_create(&path).unwrap();
    assert!(created);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (second, created) = SigningKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(second.public(), first.public());
    assert_eq!(SigningKey::load(&path).unwrap().public(), first.public());
    // Debug must not leak the secret.
    assert!(format!("{first:?}").contains(&first.public().key_id()));

    fs::write(&path, "nonsense").unwrap();
    let msg = SigningKey::load_or_create(&path).unwrap_err().to_string();
    assert!(
        msg.contains("signing.key") && msg.contains("PKCS#8"),
        "{msg}"
    );
}
