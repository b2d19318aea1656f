//! The call-recording module on real SIP calls: `callhost serve` with the
//! packaged module, SIPp phones and trunk playing RTP pcaps, and the
//! evidence checked by the module's own `verify`, by the shipped
//! `verify.sh` and by `openssl` directly.

use crate::common::Harness;
use crate::sip::{answering_phone, register, trunk_call, BERT, DIRECTORY};
use crate::sip_harness::{free_port, free_ports, Serve, Sipp, LOCALHOST};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const PACKAGE: &str = "call-recording-0.1.0.cmod";

/// A data directory with the module installed and one instance `rec`.
pub(crate) fn recorder(config: &str) -> Harness {
    let h = Harness::new();
    h.install(PACKAGE);
    h.create("call-recording", "rec", config);
    h
}

/// The log's entries, once `count` are there.
pub(crate) fn wait_for_recordings(h: &Harness, instance: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Value =
            serde_json::from_str(&h.ok(&["instance", "action", instance, "recordings", "--json"]))
                .unwrap();
        let entries = listed.as_array().cloned().unwrap_or_default();
        if entries.len() >= count {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "{count} recordings expected, the log has: {listed:#}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A trunk call from outside to Bert, answered by a SIPp phone that plays
/// RTP back (or, with `silent`, none), lasting about `millis` after answer.
pub(crate) fn call_bert(serve: &Serve, scenario: &str, phone_scenario: &str, millis: u64) {
    let port = free_port();
    register(serve, "bert", port);
    let media = free_ports(4).to_string();
    let phone = Sipp::start(
        "bert answers",
        phone_scenario,
        None,
        port,
        &["-mi", LOCALHOST, "-mp", &media],
    );
    let caller = trunk_call(serve, scenario, BERT, &["-d", &millis.to_string()]).wait();
    caller.assert_ok();
    phone.wait().assert_ok();
}

pub(crate) fn file_of(entry: &Value, suffix: &str) -> PathBuf {
    entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|f| f.ends_with(suffix))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no file ending in {suffix}: {entry:#}"))
}

/// The parts of a WAV file the tests look at.
pub(crate) struct Wav {
    pub(crate) format_tag: u16,
    pub(crate) channels: u16,
    pub(crate) sample_rate: u32,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn read_wav(path: &Path) -> Wav {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 44, "{} is only a header", path.display());
    assert!(
        &bytes[0..4] == b"RIFF" || &bytes[0..4] == b"RF64",
        "{}",
        path.display()
    );
    let mut at = 12;
    let mut format = None;
    let mut data = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = at + 8;
        if id == b"fmt " {
            format = Some((
                u16::from_le_bytes([bytes[body], bytes[body + 1]]),
                u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]),
                u32::from_le_bytes(bytes[body + 4..body + 8].try_into().unwrap()),
            ));
        }
        if id == b"data" {
            let end = (body + size).min(bytes.len());
            assert_eq!(body + size, end, "data size in {} is stale", path.display());
            data = Some(bytes[body..end].to_vec());
            break;
        }
        at = body + size + (size & 1);
    }
    let (format_tag, channels, sample_rate) = format.expect("fmt chunk");
    Wav {
        format_tag,
        channels,
        sample_rate,
        data: data.expect("data chunk"),
    }
}

/// Channel `index` of a stereo 8-bit file.
pub(crate) fn channel(wav: &Wav, index: usize) -> Vec<u8> {
    wav.data.iter().skip(index).step_by(2).copied().collect()
}

/// A-law silence.
pub(crate) const ALAW_SILENCE: u8 = 0xD5;

pub(crate) fn sounding(samples: &[u8]) -> usize {
    samples.iter().filter(|&&s| s != ALAW_SILENCE).count()
}

/// `verify.sh` as the package installed it.
fn verify_script(h: &Harness) -> PathBuf {
    let module = h.data().join("modules/call-recording");
    std::fs::read_dir(&module)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("verify.sh"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no verify.sh under {}", module.display()))
}

/// Runs the shipped script in the recording's directory, as an auditor would.
fn run_verify_sh(h: &Harness, entry: &Value, certificate: &Path) -> std::process::Output {
    let wav = file_of(entry, "_info.txt");
    let dir = wav.parent().unwrap();
    Command::new("sh")
        .arg(verify_script(h))
        .arg(entry["name"].as_str().unwrap())
        .arg(certificate)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn certificate(h: &Harness) -> PathBuf {
    let pem = h.ok(&["instance", "action", "rec", "certificate"]);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let path = h.data().join(format!("certificate-{}.pem", rand_suffix()));
    std::fs::write(&path, format!("{pem}\n")).unwrap();
    path
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn a_recorded_trunk_call_is_a_signed_stereo_wav_both_verifiers_accept() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 2000);
    let entries = wait_for_recordings(&h, "rec", 1);
    let entry = &entries[0];
    assert_eq!(entry["status"], "complete", "{entry:#}");
    assert_eq!(entry["chain_position"], 1, "{entry:#}");

    // One stereo A-law file, the caller left and the callee right, both
    // sounding, neither mixed into the other.
    let wav = read_wav(&file_of(entry, ".wav"));
    assert_eq!(
        (wav.format_tag, wav.channels, wav.sample_rate),
        (6, 2, 8000)
    );
    let (left, right) = (channel(&wav, 0), channel(&wav, 1));
    assert_eq!(left.len(), right.len());
    let seconds = left.len() as f64 / 8000.0;
    assert!((1.8..6.0).contains(&seconds), "{seconds} s recorded");
    assert!(sounding(&left) > 8000, "the caller's channel is silent");
    assert!(sounding(&right) > 8000, "the callee's channel is silent");

    let info = std::fs::read_to_string(file_of(entry, "_info.txt")).unwrap();
    for line in [
        "Status: complete",
        "Direction: incoming",
        "Caller: sipp",
        "(bert)",
        "Instance: rec",
        "Answered by: Bert",
        "Host: callhost 0.1.0",
        "Codec: ",
        "Chain position: 1",
        "Previous recording: (none",
    ] {
        assert!(info.contains(line), "{line:?} missing from:\n{info}");
    }

    // The built-in verify, the shipped script, and openssl by hand.
    let report: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "rec", "verify", "--json"])).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    let cert = certificate(&h);
    let script = run_verify_sh(&h, entry, &cert);
    assert!(
        script.status.success(),
        "verify.sh failed:\n{}{}",
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr)
    );
    let enddate = Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let enddate = String::from_utf8_lossy(&enddate.stdout);
    let year: i32 = enddate
        .split_whitespace()
        .find_map(|w| w.parse().ok().filter(|y| *y > 2100))
        .unwrap_or_else(|| panic!("no year past 2100 in {enddate}"));
    assert!(year >= 2125, "{enddate}");

    // One byte of audio changed: both verifiers say so.
    let audio = file_of(entry, ".wav");
    let mut bytes = std::fs::read(&audio).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&audio, bytes).unwrap();
    let error = h.fails(&["instance", "action", "rec", "verify"]);
    assert!(error.contains("checksums"), "{error}");
    assert!(!run_verify_sh(&h, entry, &cert).status.success());
}

#[test]
fn edited_metadata_a_deleted_recording_and_a_removed_last_entry_are_detected() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    for _ in 0..3 {
        call_bert(&serve, "uac.xml", "uas.xml", 500);
    }
    let entries = wait_for_recordings(&h, "rec", 3);
    h.ok(&["instance", "action", "rec", "verify"]);
    // The second recording's metadata names the first, with its signature.
    let second = std::fs::read_to_string(file_of(&entries[1], "_info.txt")).unwrap();
    assert!(
        second.contains(&format!(
            "Previous recording: {}",
            entries[0]["name"].as_str().unwrap()
        )),
        "{second}"
    );

    // Metadata edited: its checksum fails.
    let info = file_of(&entries[0], "_info.txt");
    let text = std::fs::read_to_string(&info).unwrap();
    std::fs::write(&info, text.replace("Status: complete", "Status: completed")).unwrap();
    let error = h.fails(&[
        "instance",
        "action",
        "rec",
        "verify",
        info.to_str().unwrap(),
    ]);
    assert!(error.contains("checksums"), "{error}");

    // A recording deleted with all its files: its checks fail.
    for file in entries[1]["files"].as_array().unwrap() {
        std::fs::remove_file(file.as_str().unwrap()).unwrap();
    }
    let error = h.fails(&["instance", "action", "rec", "verify", "--json"]);
    assert!(
        error.contains(entries[1]["name"].as_str().unwrap()),
        "{error}"
    );

    // The newest entry removed from the log: the anchored head shows it.
    let db = h.data().join("modules/call-recording/shared/recordings.db");
    let conn = rusqlite_free_delete(&db);
    assert!(conn, "deleting the last entry");
    let error = h.fails(&["instance", "action", "rec", "verify"]);
    assert!(error.contains("newest were removed"), "{error}");
}

/// Removes the chain's newest entry with the sqlite3 tool if present, else
/// through python's sqlite3 (always on the test machine).
fn rusqlite_free_delete(db: &Path) -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM chain WHERE seq=(SELECT max(seq) FROM chain)'); c.commit()",
        ])
        .arg(db)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_callee_that_sends_no_rtp_still_gives_a_full_length_file_with_a_one_way_warning() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas_silent.xml", 2000);
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    let wav = read_wav(&file_of(&entry, ".wav"));
    let (left, right) = (channel(&wav, 0), channel(&wav, 1));
    assert_eq!(left.len(), right.len());
    assert!(left.len() > 16_000, "{} samples", left.len());
    assert!(sounding(&left) > 8000, "the caller's channel is silent");
    assert_eq!(sounding(&right), 0, "the silent callee's channel has sound");
    assert!(
        entry["detail"].as_str().unwrap().contains("one-way"),
        "{entry:#}"
    );
    h.ok(&["instance", "action", "rec", "verify"]);
}

#[test]
fn star_one_from_the_caller_stops_the_recording_and_says_so() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac_stop.xml", "uas.xml", 3000);
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    assert_eq!(
        entry["status"],
        "stopped",
        "{entry:#}\n{}\n{}",
        serve.log(),
        std::fs::read_to_string(h.data().join("instances/rec/instance.log")).unwrap_or_default()
    );
    assert!(
        entry["detail"].as_str().unwrap().contains("*1"),
        "{entry:#}"
    );
    // Stopped about 2 s after answer, well before the call's end (5 s).
    let wav = read_wav(&file_of(&entry, ".wav"));
    let seconds = wav.data.len() as f64 / 2.0 / 8000.0;
    assert!(seconds < 4.0, "{seconds} s recorded after the stop");
    let info = std::fs::read_to_string(file_of(&entry, "_info.txt")).unwrap();
    assert!(info.contains("Stopped: stopped by *1"), "{info}");
    h.ok(&["instance", "action", "rec", "verify"]);
}

#[test]
fn calls_of_others_are_not_recorded_and_a_second_instance_does_not_record_again() {
    let h = recorder("users = [\"bert\"]\n");
    h.create("call-recording", "rec2", "users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    // Anna is nobody's: her call leaves no entry.
    let anna = free_port();
    register(&serve, "anna", anna);
    let phone = answering_phone("anna answers", anna);
    trunk_call(&serve, "uac.xml", "+4930123456201", &["-d", "300"])
        .wait()
        .assert_ok();
    phone.wait().assert_ok();
    call_bert(&serve, "uac.xml", "uas.xml", 500);
    let entries = wait_for_recordings(&h, "rec", 1);
    thread::sleep(Duration::from_secs(2));
    let all: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "rec", "recordings"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(entries[0]["instance"], "rec", "the first instance records");
}

#[test]
fn kill_9_in_mid_call_leaves_a_recording_repaired_signed_and_entered_as_incomplete() {
    let h = recorder("users = [\"bert\"]\n");
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    let port = free_port();
    register(&serve, "bert", port);
    let phone = answering_phone("bert answers", port);
    let caller = trunk_call(&serve, "uac.xml", BERT, &["-d", "20000"]);
    // Recording for a few seconds, headers made valid meanwhile.
    assert!(caller.wait_trace("SIP/2.0 200 OK", Duration::from_secs(10)));
    thread::sleep(Duration::from_secs(3));
    kill_9(&mut serve);
    drop((caller, phone));

    let _restarted = Serve::start_in(h.data(), DIRECTORY, "");
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    assert_eq!(entry["status"], "incomplete", "{entry:#}");
    assert!(
        entry["detail"].as_str().unwrap().contains("crash"),
        "{entry:#}"
    );
    let wav = read_wav(&file_of(&entry, ".wav"));
    let seconds = wav.data.len() as f64 / 2.0 / 8000.0;
    assert!(
        (1.0..8.0).contains(&seconds),
        "{seconds} s: the real length, not a header's"
    );
    h.ok(&["instance", "action", "rec", "verify"]);
}

#[test]
fn after_rotate_key_old_and_new_recordings_verify_and_the_chain_records_it() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 300);
    wait_for_recordings(&h, "rec", 1);
    let old_cert = certificate(&h);
    let rotated: Value =
        serde_json::from_str(&h.ok(&["instance", "action", "rec", "rotate-key"])).unwrap();
    assert_eq!(rotated["chain_position"], 2, "{rotated:#}");
    let new_cert = certificate(&h);
    assert_ne!(
        std::fs::read_to_string(&old_cert).unwrap(),
        std::fs::read_to_string(&new_cert).unwrap()
    );
    // The running server signs the next recording with the new key.
    call_bert(&serve, "uac.xml", "uas.xml", 300);
    let entries = wait_for_recordings(&h, "rec", 2);
    assert_eq!(entries[1]["chain_position"], 3, "{entries:#?}");
    h.ok(&["instance", "action", "rec", "verify"]);
    assert!(run_verify_sh(&h, &entries[0], &old_cert).status.success());
    assert!(run_verify_sh(&h, &entries[1], &new_cert).status.success());
    assert!(!run_verify_sh(&h, &entries[1], &old_cert).status.success());
}

/// The log's entries once `done` holds for them (uploads run in the
/// background).
fn wait_until(h: &Harness, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: Value =
            serde_json::from_str(&h.ok(&["instance", "action", "rec", "recordings", "--json"]))
                .unwrap();
        let entries = listed.as_array().cloned().unwrap_or_default();
        if done(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "{what}; the log has: {listed:#}");
        thread::sleep(Duration::from_millis(300));
    }
}

fn recording_entry(entries: &[Value]) -> &Value {
    entries
        .iter()
        .find(|e| e["kind"] == "recording")
        .expect("a recording entry")
}

fn upload_state(entries: &[Value], index: usize) -> String {
    entries
        .iter()
        .find(|e| e["kind"] == "recording")
        .and_then(|e| e["uploads"][index]["state"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_sftp_target_down_gets_the_recording_when_back_even_across_a_kill_9_and_only_then_it_goes_here(
) {
    let mut sshd = callhost_test_services::Sshd::prepare().unwrap();
    let smtp = callhost_test_services::Smtp::start().unwrap();
    // A minimum no disk has: the disk warning goes out too.
    let config = format!(
        "users = [\"bert\"]\nupload_delay = \"0s\"\nretry_interval = \"2s\"\n\
         min_free_disk_mb = 1000000000000\n\
         [mail]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"pbx@example.com\"\nto = [\"admin@example.com\"]\nmin_interval = \"2s\"\n\
         {}",
        smtp.port(),
        sftp_target(&sshd)
    );
    let h = recorder(&config);
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 1500);

    // The target is down: the failure is in the chain, the recording stays.
    let entries = wait_until(&h, "an upload failure entered", |entries| {
        entries.iter().any(|e| e["status"] == "upload failed")
    });
    let recording = recording_entry(&entries).clone();
    let upload = &recording["uploads"][0];
    assert_eq!(upload["state"], "retrying", "{recording:#}");
    assert!(
        upload["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{recording:#}"
    );
    assert_eq!(recording["kept_here"], true, "{recording:#}");
    let failure = entries
        .iter()
        .find(|e| e["status"] == "upload failed")
        .unwrap();
    assert!(
        failure["detail"].as_str().unwrap().contains("sftp://"),
        "{failure:#}"
    );

    // The host dies; the target comes back; the next start sends it.
    kill_9(&mut serve);
    sshd.start().unwrap();
    let _restarted = Serve::start_in(h.data(), DIRECTORY, "");
    let entries = wait_until(&h, "the upload confirmed", |entries| {
        upload_state(entries, 0) == "confirmed"
    });
    let recording = recording_entry(&entries).clone();
    // No local target: deleted here once the only target confirmed it.
    let entries = wait_until(&h, "the local copy deleted", |entries| {
        recording_entry(entries)["kept_here"] == false
    });
    for file in recording["files"].as_array().unwrap() {
        assert!(!Path::new(file.as_str().unwrap()).exists(), "{file} kept");
    }

    // On the server: every file, checked with the tools an auditor has.
    let name = recording["name"].as_str().unwrap();
    let remote_dir = checked_remote_copy(&sshd, &recording);
    let cert = certificate(&h);
    let script = Command::new("sh")
        .arg(verify_script(&h))
        .arg(name)
        .arg(&cert)
        .current_dir(&remote_dir)
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "verify.sh on the server's copy:\n{}{}",
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr)
    );
    // The chain's head went along: it names the newest entry (the
    // failure), so deleting entries here would show against it.
    let head = std::fs::read_to_string(sshd.remote_root().join("chain-head.txt")).unwrap();
    let newest = entries
        .iter()
        .map(|e| e["chain_position"].as_i64().unwrap())
        .max();
    assert!(
        head.contains(&format!("seq: {}", newest.unwrap())),
        "{head}"
    );
}

#[test]
fn an_s3_target_with_object_lock_holds_every_file_locked_and_a_local_target_keeps_its_copy() {
    let moto = callhost_test_services::Moto::start().unwrap();
    moto.create_bucket("recordings", true).unwrap();
    let local = tempfile::tempdir().unwrap();
    // Retention of 3 s: applied when the host starts (and every minute).
    let config = format!(
        "users = [\"bert\"]\nupload_delay = \"0s\"\nretention = \"3s\"\n\
         [[targets]]\nkind = \"local\"\npath = \"{}\"\n\
         [[targets]]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"recordings\"\n\
         prefix = \"pbx\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nretain_days = 3650\n",
        local.path().display(),
        moto.url(),
        callhost_test_services::MOTO_REGION,
        callhost_test_services::MOTO_ACCESS_KEY_ID,
        callhost_test_services::MOTO_SECRET_ACCESS_KEY,
    );
    let h = recorder(&config);
    // The secret is not shown back.
    let shown = h.ok(&["instance", "show", "rec"]);
    assert!(
        !shown.contains(callhost_test_services::MOTO_SECRET_ACCESS_KEY),
        "{shown}"
    );
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 1500);
    let entries = wait_until(&h, "the upload confirmed", |entries| {
        upload_state(entries, 0) == "confirmed"
    });
    let recording = recording_entry(&entries).clone();
    assert_eq!(recording["kept_here"], true, "{recording:#}");

    let objects = moto.objects("recordings").unwrap();
    for file in recording["files"].as_array().unwrap() {
        let path = Path::new(file.as_str().unwrap());
        let file_name = path.file_name().unwrap().to_string_lossy();
        let object = objects
            .iter()
            .find(|o| o.key.starts_with("pbx/") && o.key.ends_with(&*file_name))
            .unwrap_or_else(|| panic!("{file_name} not in the bucket: {objects:?}"));
        let local_sha = callhost_storage_sha256(path);
        assert_eq!(object.sha256, local_sha, "{object:?}");
        assert_eq!(object.lock_mode, "COMPLIANCE", "{object:?}");
        assert!(object.retain_until.starts_with("20"), "{object:?}");
    }
    let head = objects
        .iter()
        .find(|o| o.key == "pbx/chain-head.txt")
        .unwrap_or_else(|| panic!("no head: {objects:?}"));
    assert_eq!(head.lock_mode, "", "the head is replaced, not locked");
    let wav = objects.iter().find(|o| o.key.ends_with(".wav")).unwrap();
    assert!(moto
        .try_delete_locked("recordings", &wav.key)
        .unwrap()
        .starts_with("refused"));

    // Past its retention: deleted here and on the bucket (a delete marker;
    // the locked version stays until its date), the deletion entered,
    // verify content with it.
    thread::sleep(Duration::from_secs(3));
    serve.stop();
    let _restarted = Serve::start_in(h.data(), DIRECTORY, "");
    let entries = wait_until(&h, "the deletion entered", |entries| {
        entries.iter().any(|e| e["kind"] == "deletion")
    });
    let deletion = entries.iter().find(|e| e["kind"] == "deletion").unwrap();
    assert_eq!(deletion["name"], recording["name"], "{deletion:#}");
    let detail = deletion["detail"].as_str().unwrap();
    assert!(
        detail.contains("retention") && detail.contains("s3://"),
        "{detail}"
    );
    for file in recording["files"].as_array().unwrap() {
        assert!(!Path::new(file.as_str().unwrap()).exists(), "{file} kept");
    }
    assert!(
        moto.objects("recordings")
            .unwrap()
            .iter()
            .all(|o| !o.key.ends_with(".wav")),
        "the current version is gone"
    );
    assert!(
        moto.try_delete_locked("recordings", &wav.key)
            .unwrap()
            .starts_with("refused"),
        "the locked version stays"
    );
    let report = h.ok(&["instance", "action", "rec", "verify", "--json"]);
    assert!(report.contains("\"deleted\""), "{report}");
}

fn callhost_storage_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn python_sqlite(db: &Path, script: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); {script}; c.commit()"),
        ])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_tsa_stamps_the_chain_head_so_removing_the_newest_entries_shows_even_with_a_forged_head() {
    let mut tsa = callhost_test_services::Tsa::prepare().unwrap();
    let url = tsa.serve().unwrap();
    let local = tempfile::tempdir().unwrap();
    let h = recorder(&format!(
        "users = [\"bert\"]\n[timestamp]\nurl = \"{url}\"\nevery = \"1s\"\n\
         [[targets]]\nkind = \"local\"\npath = \"{}\"\n",
        local.path().display()
    ));
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    for _ in 0..2 {
        call_bert(&serve, "uac.xml", "uas.xml", 500);
    }
    let entries = wait_for_recordings(&h, "rec", 2);
    let stamps = local.path().join("timestamps");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stamps.join("chain-head-00000002.tsr").exists() {
        assert!(
            Instant::now() < deadline,
            "no stamp of entry 2 (TSA served {})",
            tsa.served()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The stamp as an auditor checks it: OpenSSL and the TSA's certificate.
    let checked = Command::new("openssl")
        .args(["ts", "-verify", "-data"])
        .arg(stamps.join("chain-head-00000002.txt"))
        .arg("-in")
        .arg(stamps.join("chain-head-00000002.tsr"))
        .arg("-CAfile")
        .arg(tsa.certificate())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success() && said.contains("Verification: OK"),
        "{said}"
    );
    let report = h.ok(&["instance", "action", "rec", "verify", "--json"]);
    assert!(report.contains("time stamps"), "{report}");

    // Two recordings' audio swapped: both verifiers see it.
    let (a, b) = (file_of(&entries[0], ".wav"), file_of(&entries[1], ".wav"));
    let swap = a.with_extension("swap");
    std::fs::rename(&a, &swap).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&swap, &b).unwrap();
    let error = h.fails(&["instance", "action", "rec", "verify"]);
    assert!(error.contains("checksums"), "{error}");
    let cert = certificate(&h);
    assert!(!run_verify_sh(&h, &entries[0], &cert).status.success());
    assert!(!run_verify_sh(&h, &entries[1], &cert).status.success());
    std::fs::rename(&a, &swap).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&swap, &b).unwrap();
    h.ok(&["instance", "action", "rec", "verify"]);

    // The newest entry removed and the local head rewritten to match: the
    // local anchor is fooled, the stamp is not.
    drop(serve);
    let db = h.data().join("modules/call-recording/shared/recordings.db");
    let previous = python_sqlite(
        &db,
        "c.execute('DELETE FROM chain WHERE seq=2'); print(c.execute('SELECT hash FROM chain WHERE seq=1').fetchone()[0])",
    );
    std::fs::write(
        local.path().join("chain-head.txt"),
        format!("seq: 1\nhash: {previous}\n"),
    )
    .unwrap();
    let error = h.fails(&["instance", "action", "rec", "verify"]);
    assert!(
        error.contains("entry 2 was stamped but is missing"),
        "{error}"
    );
}

/// A WAV of `seconds` of a 440 Hz tone, 8 kHz 16-bit mono.
fn tone_wav(path: &Path, seconds: f64) {
    let status = Command::new("python3")
        .args([
            "-c",
            "import wave,math,struct,sys\n\
             w=wave.open(sys.argv[1],'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)\n\
             n=int(8000*float(sys.argv[2]))\n\
             w.writeframes(b''.join(struct.pack('<h',int(8000*math.sin(2*math.pi*440*i/8000))) for i in range(n)))\n\
             w.close()",
        ])
        .arg(path)
        .arg(seconds.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_incoming_calls_notice_is_played_to_the_caller_and_the_recording_begins_after_it() {
    let h = recorder("users = [\"bert\"]\n");
    // Assets are the instance's own, checked when added.
    let notice = h.data().join("notice-in.wav");
    tone_wav(&notice, 3.0);
    let added = h.ok(&["instance", "asset", "add", "rec", notice.to_str().unwrap()]);
    assert!(
        added.contains("instance/notice-in.wav") && added.contains("3.0 s"),
        "{added}"
    );
    let junk = h.data().join("junk.wav");
    std::fs::write(&junk, b"RIFF not really").unwrap();
    let error = h.fails(&["instance", "asset", "add", "rec", junk.to_str().unwrap()]);
    assert!(error.contains("not a playable sound file"), "{error}");
    assert_eq!(
        h.ok(&["instance", "asset", "list", "rec"]).trim(),
        "instance/notice-in.wav"
    );
    // A notice that is not an asset is refused, naming the field.
    let bad = h.data().join("bad.toml");
    std::fs::write(
        &bad,
        "users = [\"bert\"]\nnotice_incoming = \"missing.wav\"\n",
    )
    .unwrap();
    let error = h.fails(&["instance", "configure", "rec", bad.to_str().unwrap()]);
    assert!(error.contains("notice_incoming"), "{error}");
    let good = h.data().join("good.toml");
    std::fs::write(
        &good,
        "users = [\"bert\"]\nnotice_incoming = \"notice-in.wav\"\n",
    )
    .unwrap();
    h.ok(&["instance", "configure", "rec", good.to_str().unwrap()]);

    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 1500);
    serve.wait_log(&["prompt played", "asset=instance/notice-in.wav"]);
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    assert_eq!(entry["status"], "complete", "{entry:#}");
    let info = std::fs::read_to_string(file_of(&entry, "_info.txt")).unwrap();
    assert!(
        info.contains(
            "Notice: instance/notice-in.wav, then recorded (rec/instance/notice-in.wav: played)"
        ),
        "{info}"
    );
    // The 3 s notice is not in the recording: it holds ringing and the
    // 1.5 s conversation, not the notice before them.
    let wav = read_wav(&file_of(&entry, ".wav"));
    let seconds = channel(&wav, 0).len() as f64 / 8000.0;
    assert!((1.2..3.4).contains(&seconds), "{seconds} s recorded");
    h.ok(&["instance", "action", "rec", "verify"]);
    h.ok(&[
        "instance",
        "asset",
        "remove",
        "rec",
        "instance/notice-in.wav",
    ]);
    assert_eq!(h.ok(&["instance", "asset", "list", "rec"]).trim(), "");
}

/// A small file system of its own (tmpfs; the tests run as root), unmounted
/// when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount -t tmpfs needs root (CI runs as root)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it up to `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        let free: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let filler = self.path().join("filler");
        std::fs::write(&filler, vec![0u8; free.saturating_sub(leave) as usize]).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_warns_loses_no_entry_and_keeps_what_was_written() {
    let disk = SmallDisk::mount(512);
    let h = recorder(&format!(
        "users = [\"bert\"]\nmin_free_disk_mb = 1\n[[targets]]\nkind = \"local\"\npath = \"{}\"\n",
        disk.path().display()
    ));
    // 20 KB free: about a second of stereo A-law.
    let filler = disk.fill(20 * 1024);
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 3000);
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    let log = h.ok(&["instance", "log", "rec", "--level", "WARN"]);
    assert!(log.contains("disk filling up"), "{log}");
    // On record, not lost: what fitted is kept and sealed if it could be,
    // and the entry says the disk was full.
    let detail = entry["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("No space left") || detail.contains("space"),
        "{entry:#}"
    );
    assert_ne!(entry["status"], "complete", "{entry:#}");
    // Whatever was written is listed (sealed as incomplete, or kept
    // unsealed when even that did not fit), never an orphan.
    let files = entry["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f.as_str().unwrap().ends_with(".wav")),
        "{entry:#}"
    );
    for file in files {
        assert!(
            Path::new(file.as_str().unwrap()).exists(),
            "{file} listed but gone"
        );
    }

    // Room again: the next call is a complete recording; verify passes.
    std::fs::remove_file(filler).unwrap();
    call_bert(&serve, "uac.xml", "uas.xml", 1000);
    let entries = wait_for_recordings(&h, "rec", 2);
    assert_eq!(entries[1]["status"], "complete", "{:#}", entries[1]);
    h.ok(&["instance", "action", "rec", "verify"]);
}

#[test]
fn a_host_killed_during_an_upload_resumes_it_at_the_next_start_and_deletes_nothing_early() {
    let mut sshd = callhost_test_services::Sshd::prepare().unwrap();
    // The target's port answers TCP and then nothing: the upload is in
    // flight, waiting for the SSH banner, when the host dies.
    let stuck = std::net::TcpListener::bind(("127.0.0.1", sshd.port())).unwrap();
    let config = format!(
        "users = [\"bert\"]\nupload_delay = \"0s\"\nretry_interval = \"1s\"\n{}",
        sftp_target(&sshd)
    );
    let h = recorder(&config);
    let mut serve = Serve::start_in(h.data(), DIRECTORY, "");
    call_bert(&serve, "uac.xml", "uas.xml", 1000);
    let recording = recording_entry(&wait_for_recordings(&h, "rec", 1)).clone();
    stuck.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let _held = loop {
        match stuck.accept() {
            Ok((held, _)) => break held,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the upload never connected: {error}"),
        }
    };
    kill_9(&mut serve);
    drop((stuck, _held));

    // Still queued, still here.
    let entries = wait_until(&h, "the upload still queued", |entries| {
        upload_state(entries, 0) != "confirmed"
    });
    assert_eq!(recording_entry(&entries)["kept_here"], true);
    sshd.start().unwrap();
    let _restarted = Serve::start_in(h.data(), DIRECTORY, "");
    wait_until(&h, "the upload confirmed after the restart", |entries| {
        upload_state(entries, 0) == "confirmed" && recording_entry(entries)["kept_here"] == false
    });
    let remote_dir = checked_remote_copy(&sshd, &recording);
    let leftovers: Vec<_> = std::fs::read_dir(&remote_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `kill -9` of a running `callhost serve`.
fn kill_9(serve: &mut Serve) {
    let pid = serve.pid().expect("serve runs");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    serve.stop();
}

/// The recording's directory on the SFTP server, after `sha256sum -c`
/// passed there (the check an auditor runs on the copy).
fn checked_remote_copy(sshd: &callhost_test_services::Sshd, recording: &Value) -> PathBuf {
    let name = recording["name"].as_str().unwrap();
    let started = recording["started"].as_str().unwrap();
    let remote_dir = sshd.remote_root().join(format!(
        "{}/{}/{}",
        &started[0..4],
        &started[5..7],
        &started[8..10]
    ));
    let checked = Command::new("sha256sum")
        .args(["-c", &format!("{name}_hash.txt")])
        .current_dir(&remote_dir)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    remote_dir
}

/// A `[[targets]]` entry for the test sshd: its port, user, key and pinned
/// host key, below its remote root.
fn sftp_target(sshd: &callhost_test_services::Sshd) -> String {
    format!(
        "[[targets]]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
         key_file = \"{}\"\nhost_key = \"{}\"\npath = \"{}\"\n",
        sshd.port(),
        sshd.user(),
        sshd.client_key().display(),
        sshd.host_key(),
        sshd.remote_root().display()
    )
}
