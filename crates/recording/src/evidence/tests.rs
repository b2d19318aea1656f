//! Tests of the evidence module: the key store and its files (read back by
//! openssl), sealing, and verification of intact and tampered recordings by
//! `verify_recording` and by `verify.sh`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use proptest::prelude::*;
use tempfile::TempDir;

use super::key_store::layout;
use super::*;

const PASSPHRASE: &[u8] = b"correct horse battery staple";
const INSTALLATION: &str = "test-installation-42";
const RECORDING: &str = "2024-05-01_1200_alice-bob";

fn open_store(dir: &Path) -> KeyStore {
    KeyStore::open(dir, PASSPHRASE, INSTALLATION).expect("open key store")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn current_year() -> i64 {
    let formatted = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    formatted[..4].parse().expect("year")
}

/// A recording of three files, sealed, in its own directory.
struct Recording {
    _keys: TempDir,
    store: KeyStore,
    dir: TempDir,
    files: Vec<&'static str>,
}

impl Recording {
    fn sealed() -> Recording {
        let keys = TempDir::new().expect("temp dir");
        let store = open_store(keys.path());
        let dir = TempDir::new().expect("temp dir");
        let files = vec![
            "2024-05-01_1200_alice-bob_caller.wav",
            "2024-05-01_1200_alice-bob_callee.wav",
            "2024-05-01_1200_alice-bob.json",
        ];
        for (index, file) in files.iter().enumerate() {
            let contents: Vec<u8> = (0..10_000u32)
                .map(|byte| (byte as usize * (index + 3)) as u8)
                .collect();
            fs::write(dir.path().join(file), contents).expect("write recording file");
        }
        seal_recording(&store, dir.path(), RECORDING, &files).expect("seal");
        Recording {
            _keys: keys,
            store,
            dir,
            files,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn hash_file(&self) -> PathBuf {
        self.path(&hash_file_name(RECORDING))
    }

    fn signature_file(&self) -> PathBuf {
        self.path(&signature_file_name(RECORDING))
    }

    fn verify(&self) -> Vec<Check> {
        verify_recording(self.dir.path(), RECORDING, self.store.certificates())
    }

    fn flip_byte_of(&self, file: &str) {
        let path = self.path(file);
        let mut contents = fs::read(&path).expect("read");
        contents[5000] ^= 0x01;
        fs::write(&path, contents).expect("write");
    }

    /// Replaces the first file's hash in the hash file by the hash of its
    /// (tampered) contents: the checksums pass, the signature must not.
    fn tamper_file_and_hash_file(&self) {
        self.flip_byte_of(self.files[0]);
        let text = hash_file_text(self.dir.path(), &self.files).expect("hash text");
        fs::write(self.hash_file(), text).expect("write hash file");
    }

    /// Signs the hash file with a key that is not the installation's.
    fn sign_with_other_key(&self) -> TempDir {
        let other_keys = TempDir::new().expect("temp dir");
        let other = open_store(other_keys.path());
        let hash_file = fs::read(self.hash_file()).expect("read hash file");
        let signature = other.sign(&hash_file).expect("sign");
        fs::write(self.signature_file(), format!("{signature}\n")).expect("write signature");
        other_keys
    }

    fn run_verify_sh(&self) -> Output {
        fs::write(self.path("certificate.pem"), &self.store.current().pem)
            .expect("write certificate");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/call-recording/verify.sh");
        Command::new("sh")
            .arg(&script)
            .arg(RECORDING)
            .current_dir(self.dir.path())
            .output()
            .expect("run verify.sh")
    }
}

fn check<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

fn assert_outcome(checks: &[Check], checksums: bool, signature: bool, certificate: bool) {
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert_eq!(
        check(checks, CHECK_CHECKSUMS).passed,
        checksums,
        "{checks:?}"
    );
    assert_eq!(
        check(checks, CHECK_SIGNATURE).passed,
        signature,
        "{checks:?}"
    );
    assert_eq!(
        check(checks, CHECK_CERTIFICATE).passed,
        certificate,
        "{checks:?}"
    );
}

// ---- key store ----

#[test]
fn evidence_key_store_creates_layout_once_and_reopens_fast() {
    let keys = TempDir::new().expect("temp dir");
    let created = open_store(keys.path());
    assert!(layout::key_file(keys.path(), 1).is_file());
    assert!(layout::certificate_file(keys.path(), 1).is_file());
    assert_eq!(
        fs::read_to_string(layout::current_file(keys.path())).expect("current"),
        "0001\n"
    );
    assert_eq!(created.certificates().len(), 1);

    let started = Instant::now();
    let reopened = open_store(keys.path());
    let elapsed = started.elapsed();
    eprintln!("KeyStore::open of an existing store took {elapsed:?}");
    assert_eq!(reopened.current(), created.current());
    assert_eq!(reopened.certificates().len(), 1);
    assert!(
        elapsed.as_secs_f64() < 5.0,
        "open took {elapsed:?}; PBKDF2 too slow?"
    );
}

#[cfg(unix)]
#[test]
fn evidence_private_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let keys = TempDir::new().expect("temp dir");
    open_store(keys.path());
    let mode = fs::metadata(layout::key_file(keys.path(), 1))
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn evidence_private_key_is_encrypted_pkcs8_openssl_reads() {
    let keys = TempDir::new().expect("temp dir");
    let store = open_store(keys.path());
    let key_file = layout::key_file(keys.path(), 1);
    let pem_text = fs::read_to_string(&key_file).expect("read key");
    assert!(pem_text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));

    let passin = format!("pass:{}", std::str::from_utf8(PASSPHRASE).expect("utf8"));
    let read = openssl(&[
        "pkey",
        "-in",
        path_str(&key_file),
        "-passin",
        &passin,
        "-noout",
    ]);
    assert!(read.status.success(), "{read:?}");
    let wrong = openssl(&[
        "pkey",
        "-in",
        path_str(&key_file),
        "-passin",
        "pass:nope",
        "-noout",
    ]);
    assert!(!wrong.status.success());

    // The public key openssl derives is the certificate's.
    let from_key = openssl(&[
        "pkey",
        "-in",
        path_str(&key_file),
        "-passin",
        &passin,
        "-pubout",
    ]);
    let certificate_file = layout::certificate_file(keys.path(), 1);
    let from_certificate = openssl(&[
        "x509",
        "-in",
        path_str(&certificate_file),
        "-pubkey",
        "-noout",
    ]);
    assert!(from_key.status.success() && from_certificate.status.success());
    assert_eq!(from_key.stdout, from_certificate.stdout);
    assert!(!store.current().pem.is_empty());

    // PBES2 with PBKDF2-HMAC-SHA256, explicit iterations, AES-256-CBC.
    let structure = openssl(&["asn1parse", "-in", path_str(&key_file)]);
    let structure = String::from_utf8_lossy(&structure.stdout);
    for expected in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"] {
        assert!(
            structure.contains(expected),
            "{expected} missing: {structure}"
        );
    }
    let integers: Vec<u32> = structure
        .lines()
        .filter(|line| line.contains("prim: INTEGER"))
        .filter_map(|line| line.rsplit(':').next())
        .filter_map(|hex_value| u32::from_str_radix(hex_value.trim(), 16).ok())
        .collect();
    assert!(
        integers.contains(&PBKDF2_ITERATIONS),
        "iterations {PBKDF2_ITERATIONS} missing: {structure}"
    );
}

#[test]
fn evidence_salt_and_iv_are_random() {
    let first = TempDir::new().expect("temp dir");
    let second = TempDir::new().expect("temp dir");
    open_store(first.path());
    open_store(second.path());
    let structure = |dir: &Path| {
        let output = openssl(&["asn1parse", "-in", path_str(&layout::key_file(dir, 1))]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("l=  16 prim: OCTET STRING"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (first, second) = (structure(first.path()), structure(second.path()));
    // Salt and IV, 16 bytes each.
    assert_eq!(first.len(), 2, "{first:?}");
    assert_ne!(first, second);
}

#[test]
fn evidence_wrong_passphrase_is_a_typed_error_naming_the_file() {
    let keys = TempDir::new().expect("temp dir");
    open_store(keys.path());
    let secret = "the-wrong-one-5f2a";
    let error = KeyStore::open(keys.path(), secret.as_bytes(), INSTALLATION)
        .expect_err("wrong passphrase must fail");
    let EvidenceError::Passphrase { path } = &error else {
        panic!("expected a passphrase error, got {error:?}");
    };
    assert_eq!(*path, layout::key_file(keys.path(), 1));
    let message = error.to_string();
    assert!(message.contains("cannot open the key store"), "{message}");
    assert!(message.contains(path_str(path)), "{message}");
    assert!(!message.contains(secret), "{message}");
    assert!(!format!("{error:?}").contains(secret));
}

#[test]
fn evidence_empty_passphrase_and_bad_installation_id_are_refused() {
    let keys = TempDir::new().expect("temp dir");
    assert!(matches!(
        KeyStore::open(keys.path(), b"", INSTALLATION),
        Err(EvidenceError::EmptyPassphrase { .. })
    ));
    assert!(matches!(
        KeyStore::open(keys.path(), PASSPHRASE, " "),
        Err(EvidenceError::InstallationId { .. })
    ));
    assert!(matches!(
        KeyStore::open(keys.path(), PASSPHRASE, "a\nb"),
        Err(EvidenceError::InstallationId { .. })
    ));
}

#[test]
fn evidence_certificate_subject_and_hundred_year_validity() {
    let keys = TempDir::new().expect("temp dir");
    let store = open_store(keys.path());
    let certificate = store.current();
    assert_eq!(
        certificate.subject,
        format!("CN=call-recording {INSTALLATION}")
    );
    assert_eq!(certificate.fingerprint.len(), 64);
    let year = current_year();
    assert!(certificate.not_before.starts_with(&year.to_string()));
    assert!(
        certificate.not_after.starts_with(&(year + 100).to_string()),
        "{}",
        certificate.not_after
    );
    assert_eq!(certificate.not_after[4..], certificate.not_before[4..]);
    assert!(certificate.is_valid_at(std::time::SystemTime::now()));
    assert!(certificate.is_self_signed());

    let certificate_file = layout::certificate_file(keys.path(), 1);
    let end = openssl(&[
        "x509",
        "-in",
        path_str(&certificate_file),
        "-enddate",
        "-noout",
    ]);
    let end = String::from_utf8_lossy(&end.stdout);
    assert!(end.starts_with("notAfter="), "{end}");
    assert!(end.contains(&format!(" {} GMT", year + 100)), "{end}");

    let text = openssl(&[
        "x509",
        "-in",
        path_str(&certificate_file),
        "-text",
        "-noout",
    ]);
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(
        text.contains(&format!("CN = call-recording {INSTALLATION}")),
        "{text}"
    );

    // Past 2049, RFC 5280 requires GeneralizedTime.
    let structure = openssl(&["asn1parse", "-in", path_str(&certificate_file)]);
    let structure = String::from_utf8_lossy(&structure.stdout);
    assert!(structure.contains("UTCTIME"), "{structure}");
    assert!(structure.contains("GENERALIZEDTIME"), "{structure}");

    // What `from_pem` reads back from the file is what the store holds.
    let from_file = Certificate::from_pem(&fs::read_to_string(&certificate_file).expect("read"))
        .expect("parse");
    assert_eq!(from_file, *certificate);
}

#[test]
fn evidence_signatures_verify_under_the_current_certificate_only() {
    let keys = TempDir::new().expect("temp dir");
    let store = open_store(keys.path());
    let signature = store.sign(b"hash file contents").expect("sign");
    assert!(store.current().verify(b"hash file contents", &signature));
    assert!(store
        .current()
        .verify(b"hash file contents", &format!("{signature}\n")));
    assert!(!store.current().verify(b"hash file contents!", &signature));
    assert!(!store.current().verify(b"hash file contents", "not base64!"));
    assert!(!store.current().verify(b"hash file contents", ""));

    let other_keys = TempDir::new().expect("temp dir");
    let other = open_store(other_keys.path());
    assert!(!other.current().verify(b"hash file contents", &signature));
}

#[test]
fn evidence_rotation_keeps_old_certificates_and_switches_the_signer() {
    let keys = TempDir::new().expect("temp dir");
    let mut store = open_store(keys.path());
    let first = store.current().clone();
    let old_signature = store.sign(b"old recording").expect("sign");

    // Another process's copy of the store sees the rotation.
    let elsewhere = open_store(keys.path());
    assert!(elsewhere.is_current().unwrap());
    let (old, new) = store.rotate().expect("rotate");
    assert!(!elsewhere.is_current().unwrap());
    assert!(store.is_current().unwrap());
    assert_eq!(old, first.fingerprint);
    assert_ne!(old, new);
    assert_eq!(store.current().fingerprint, new);
    let fingerprints: Vec<_> = store
        .certificates()
        .iter()
        .map(|certificate| certificate.fingerprint.clone())
        .collect();
    assert_eq!(fingerprints, vec![old.clone(), new.clone()]);
    assert!(layout::certificate_file(keys.path(), 1).is_file());
    assert!(layout::key_file(keys.path(), 2).is_file());
    assert_eq!(
        fs::read_to_string(layout::current_file(keys.path())).expect("current"),
        "0002\n"
    );

    let new_signature = store.sign(b"new recording").expect("sign");
    assert!(store.current().verify(b"new recording", &new_signature));
    assert!(!store.current().verify(b"old recording", &old_signature));
    assert!(store.certificates()[0].verify(b"old recording", &old_signature));

    let reopened = open_store(keys.path());
    assert_eq!(reopened.current().fingerprint, new);
    assert_eq!(reopened.certificates().len(), 2);
}

#[test]
fn evidence_crash_leftovers_are_ignored_or_adopted() {
    let keys = TempDir::new().expect("temp dir");
    let first = open_store(keys.path()).current().clone();
    // An unfinished generation and a missing `current` (a crash before it
    // was written): the complete generation is adopted.
    fs::create_dir(keys.path().join("keys/.new-0123456789abcdef")).expect("mkdir");
    fs::write(
        keys.path().join("keys/.new-0123456789abcdef/key.pem"),
        "half",
    )
    .expect("write");
    fs::remove_file(layout::current_file(keys.path())).expect("remove current");

    let reopened = open_store(keys.path());
    assert_eq!(*reopened.current(), first);
    assert_eq!(reopened.certificates().len(), 1);
    assert_eq!(
        fs::read_to_string(layout::current_file(keys.path())).expect("current"),
        "0001\n"
    );
}

#[test]
fn evidence_tampered_key_store_files_are_typed_errors() {
    let keys = TempDir::new().expect("temp dir");
    open_store(keys.path());
    let other_keys = TempDir::new().expect("temp dir");
    open_store(other_keys.path());

    let current = layout::current_file(keys.path());
    fs::write(&current, "seven\n").expect("write");
    let error = KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).expect_err("bad current");
    assert!(matches!(error, EvidenceError::KeyStore { .. }), "{error:?}");
    assert!(error.to_string().contains(path_str(&current)), "{error}");

    fs::write(&current, "0009\n").expect("write");
    let error = KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).expect_err("no gen 9");
    assert!(matches!(error, EvidenceError::KeyStore { .. }), "{error:?}");
    fs::write(&current, "0001\n").expect("write");

    // Another store's key (same passphrase) under this store's certificate.
    let key_file = layout::key_file(keys.path(), 1);
    let original_key = fs::read(&key_file).expect("read");
    fs::copy(layout::key_file(other_keys.path(), 1), &key_file).expect("copy");
    let error = KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).expect_err("swapped");
    assert!(
        error.to_string().contains("does not belong to certificate"),
        "{error}"
    );

    // A damaged key file: garbage, or ciphertext changed.
    fs::write(&key_file, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n").expect("write");
    let error = KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).expect_err("garbage");
    assert!(
        matches!(error, EvidenceError::PrivateKey { .. }),
        "{error:?}"
    );
    let mut flipped = original_key.clone();
    let last_line_start = flipped.len() - 40;
    flipped[last_line_start] = if flipped[last_line_start] == b'A' {
        b'B'
    } else {
        b'A'
    };
    fs::write(&key_file, &flipped).expect("write");
    assert!(KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).is_err());

    // A damaged current certificate.
    fs::write(&key_file, &original_key).expect("write");
    fs::write(
        layout::certificate_file(keys.path(), 1),
        "not a certificate",
    )
    .expect("write");
    let error = KeyStore::open(keys.path(), PASSPHRASE, INSTALLATION).expect_err("bad cert");
    assert!(
        matches!(error, EvidenceError::Certificate { .. }),
        "{error:?}"
    );
}

#[test]
fn evidence_certificate_from_pem_rejects_garbage() {
    assert!(Certificate::from_pem("").is_err());
    assert!(Certificate::from_pem(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    .is_err());
    assert!(
        Certificate::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
}

// ---- hash files ----

#[test]
fn evidence_sha256_file_and_hash_file_text_match_sha256sum() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(dir.path().join("abc.txt"), "abc").expect("write");
    fs::write(dir.path().join("big.bin"), vec![7u8; 300_000]).expect("write");
    assert_eq!(
        hex::encode(sha256_file(&dir.path().join("abc.txt")).expect("hash")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let text = hash_file_text(dir.path(), &["big.bin", "abc.txt"]).expect("text");
    let sha256sum = Command::new("sha256sum")
        .args(["big.bin", "abc.txt"])
        .current_dir(dir.path())
        .output()
        .expect("run sha256sum");
    assert_eq!(text, String::from_utf8_lossy(&sha256sum.stdout));
}

#[test]
fn evidence_unsafe_file_names_are_refused() {
    let dir = TempDir::new().expect("temp dir");
    for name in ["", "..", "../etc/passwd", "a/b", "a\\b", "a\nb", " a", "*a"] {
        assert!(
            matches!(
                hash_file_text(dir.path(), &[name]),
                Err(EvidenceError::FileName { .. })
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        hash_file_text(dir.path(), &["missing.wav"]),
        Err(EvidenceError::Io { .. })
    ));
}

#[test]
fn evidence_seal_refuses_nothing_and_its_own_files() {
    let keys = TempDir::new().expect("temp dir");
    let store = open_store(keys.path());
    let dir = TempDir::new().expect("temp dir");
    assert!(matches!(
        seal_recording(&store, dir.path(), RECORDING, &[]),
        Err(EvidenceError::NothingToSeal { .. })
    ));
    let own = hash_file_name(RECORDING);
    fs::write(dir.path().join(&own), "x").expect("write");
    assert!(matches!(
        seal_recording(&store, dir.path(), RECORDING, &[own.as_str()]),
        Err(EvidenceError::FileName { .. })
    ));
}

// ---- verify_recording ----

#[test]
fn evidence_sealed_recording_passes_every_check() {
    let recording = Recording::sealed();
    let hash_text = fs::read_to_string(recording.hash_file()).expect("read");
    assert_eq!(
        hash_text,
        hash_file_text(recording.dir.path(), &recording.files).expect("text")
    );
    let signature = fs::read_to_string(recording.signature_file()).expect("read");
    assert!(signature.ends_with('\n') && !signature.trim_end().contains('\n'));
    assert!(recording
        .store
        .current()
        .verify(hash_text.as_bytes(), &signature));

    let checks = recording.verify();
    assert_outcome(&checks, true, true, true);
    assert!(check(&checks, CHECK_SIGNATURE)
        .detail
        .contains(&recording.store.current().fingerprint));
}

#[test]
fn evidence_seal_reports_what_it_wrote() {
    let keys = TempDir::new().expect("temp dir");
    let store = open_store(keys.path());
    let dir = TempDir::new().expect("temp dir");
    fs::write(dir.path().join("r_a.wav"), "audio").expect("write");
    let sealed = seal_recording(&store, dir.path(), "r", &["r_a.wav"]).expect("seal");
    assert_eq!(sealed.hash_file, dir.path().join("r_hash.txt"));
    assert_eq!(
        sealed.signature_file,
        dir.path().join("r_hash.txt.SHA256withRSA.sig")
    );
    assert_eq!(
        sealed.hash_file_sha256,
        hex::encode(sha256_file(&sealed.hash_file).expect("hash"))
    );
    assert_eq!(
        fs::read_to_string(&sealed.signature_file).expect("read"),
        format!("{}\n", sealed.signature)
    );
    assert_eq!(sealed.certificate_fingerprint, store.current().fingerprint);
    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["r_a.wav", "r_hash.txt", "r_hash.txt.SHA256withRSA.sig"]
    );
}

#[test]
fn evidence_changed_audio_byte_fails_checksums() {
    let recording = Recording::sealed();
    recording.flip_byte_of(recording.files[0]);
    let checks = recording.verify();
    assert_outcome(&checks, false, true, true);
    assert!(check(&checks, CHECK_CHECKSUMS)
        .detail
        .contains(recording.files[0]));
}

#[test]
fn evidence_edited_hash_file_fails_signature() {
    let recording = Recording::sealed();
    recording.tamper_file_and_hash_file();
    assert_outcome(&recording.verify(), true, false, false);
}

#[test]
fn evidence_signature_by_another_key_fails() {
    let recording = Recording::sealed();
    let _other = recording.sign_with_other_key();
    assert_outcome(&recording.verify(), true, false, false);
}

#[test]
fn evidence_missing_listed_file_fails_checksums() {
    let recording = Recording::sealed();
    fs::remove_file(recording.path(recording.files[1])).expect("remove");
    let checks = recording.verify();
    assert_outcome(&checks, false, true, true);
    assert!(check(&checks, CHECK_CHECKSUMS).detail.contains("missing"));
}

#[test]
fn evidence_extra_unlisted_file_fails_checksums() {
    let recording = Recording::sealed();
    let extra = format!("{RECORDING}_extra.wav");
    fs::write(recording.path(&extra), "inserted").expect("write");
    // Files of other recordings do not count.
    fs::write(recording.path("other_call.wav"), "other").expect("write");
    let checks = recording.verify();
    assert_outcome(&checks, false, true, true);
    let detail = &check(&checks, CHECK_CHECKSUMS).detail;
    assert!(detail.contains(&extra), "{detail}");
    assert!(!detail.contains("other_call"), "{detail}");
}

#[test]
fn evidence_certificate_not_the_signers_fails() {
    let recording = Recording::sealed();
    let other_keys = TempDir::new().expect("temp dir");
    let other = open_store(other_keys.path());
    let checks = verify_recording(recording.dir.path(), RECORDING, other.certificates());
    assert_outcome(&checks, true, false, false);
    assert_outcome(
        &verify_recording(recording.dir.path(), RECORDING, &[]),
        true,
        false,
        false,
    );
}

#[test]
fn evidence_signature_after_rotation_uses_any_listed_certificate() {
    let mut recording = Recording::sealed();
    recording.store.rotate().expect("rotate");
    let checks = recording.verify();
    assert_outcome(&checks, true, true, true);
    assert!(check(&checks, CHECK_SIGNATURE)
        .detail
        .contains(&recording.store.certificates()[0].fingerprint));
}

#[test]
fn evidence_every_check_reported_when_everything_is_gone() {
    let dir = TempDir::new().expect("temp dir");
    assert_outcome(
        &verify_recording(dir.path(), RECORDING, &[]),
        false,
        false,
        false,
    );
    assert_outcome(
        &verify_recording(dir.path(), "../escape", &[]),
        false,
        false,
        false,
    );
}

#[test]
fn evidence_hash_file_naming_outside_files_fails() {
    let recording = Recording::sealed();
    let hash = hex::encode(sha256_file(&recording.path(recording.files[0])).expect("hash"));
    fs::write(
        recording.hash_file(),
        format!("{hash}  ../{}\n", recording.files[0]),
    )
    .expect("write");
    let checks = recording.verify();
    assert!(!check(&checks, CHECK_CHECKSUMS).passed);
    assert!(check(&checks, CHECK_CHECKSUMS)
        .detail
        .contains("path separator"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever an attacker puts in the hash and signature files, the
    /// verifier reports three failing-or-passing checks and never panics.
    #[test]
    fn evidence_verify_never_panics_on_tampered_files(
        hash_file in proptest::collection::vec(any::<u8>(), 0..400),
        signature in proptest::collection::vec(any::<u8>(), 0..400),
        hash_line in "[0-9a-f]{0,70}[ *]{0,3}[ -~]{0,20}",
    ) {
        let dir = TempDir::new().expect("temp dir");
        fs::write(dir.path().join("r_a.wav"), "audio").expect("write");
        let mut contents = hash_file.clone();
        contents.extend_from_slice(b"\n");
        contents.extend_from_slice(hash_line.as_bytes());
        fs::write(dir.path().join("r_hash.txt"), &contents).expect("write");
        fs::write(dir.path().join("r_hash.txt.SHA256withRSA.sig"), &signature).expect("write");
        let checks = verify_recording(dir.path(), "r", &[]);
        prop_assert_eq!(checks.len(), 3);
        prop_assert!(!checks[1].passed && !checks[2].passed);
    }
}

// ---- verify.sh ----

fn verify_sh_lines(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn evidence_verify_sh_passes_a_sealed_recording() {
    let recording = Recording::sealed();
    let output = recording.run_verify_sh();
    let stdout = verify_sh_lines(&output);
    assert!(output.status.success(), "{output:?}");
    for check in ["PASS checksums", "PASS signature", "PASS certificate"] {
        assert!(stdout.contains(check), "{check} missing: {stdout}");
    }
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}

#[test]
fn evidence_verify_sh_fails_a_changed_audio_byte() {
    let recording = Recording::sealed();
    recording.flip_byte_of(recording.files[0]);
    let output = recording.run_verify_sh();
    let stdout = verify_sh_lines(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL checksums"), "{stdout}");
    assert!(stdout.contains("PASS signature"), "{stdout}");
}

#[test]
fn evidence_verify_sh_fails_an_edited_hash_file() {
    let recording = Recording::sealed();
    recording.tamper_file_and_hash_file();
    let output = recording.run_verify_sh();
    let stdout = verify_sh_lines(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("PASS checksums"), "{stdout}");
    assert!(stdout.contains("FAIL signature"), "{stdout}");
}

#[test]
fn evidence_verify_sh_fails_a_signature_by_another_key() {
    let recording = Recording::sealed();
    let _other = recording.sign_with_other_key();
    let output = recording.run_verify_sh();
    let stdout = verify_sh_lines(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL signature"), "{stdout}");
}

#[test]
fn evidence_verify_sh_fails_an_extra_unlisted_file() {
    let recording = Recording::sealed();
    fs::write(recording.path(&format!("{RECORDING}_extra.wav")), "x").expect("write");
    let output = recording.run_verify_sh();
    let stdout = verify_sh_lines(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL checksums: not listed"), "{stdout}");
}

#[test]
fn evidence_verify_sh_leaves_no_temporary_directory() {
    let recording = Recording::sealed();
    let tmp = TempDir::new().expect("temp dir");
    fs::write(
        recording.path("certificate.pem"),
        &recording.store.current().pem,
    )
    .expect("write certificate");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/call-recording/verify.sh");
    let output = Command::new("sh")
        .arg(&script)
        .arg(RECORDING)
        .current_dir(recording.dir.path())
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run verify.sh");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(fs::read_dir(tmp.path()).expect("list").count(), 0);
}

#[test]
fn evidence_instances_opening_a_fresh_store_at_once_agree_on_valid_keys() {
    let keys = TempDir::new().expect("temp dir");
    let dir = keys.path().to_path_buf();
    let opened: Vec<KeyStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2).map(|_| scope.spawn(|| open_store(&dir))).collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    // Each instance signs with a published generation that a fresh open
    // lists, whichever won the race.
    let reopened = open_store(&dir);
    for store in &opened {
        let signature = store.sign(b"data").expect("sign");
        assert!(reopened
            .certificates()
            .iter()
            .any(|certificate| certificate.verify(b"data", &signature)));
    }
}
