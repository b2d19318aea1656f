//! The call-recording module's audio on real calls, checked byte by byte:
//! SIPp plays RTP captures whose payloads are known
//! (tests/sipp/pcap/make_recording_pcaps.py), so every byte of the WAV
//! files can be predicted: G.722 at the speed of the call, lost packets as
//! silence of exactly their length in their place, and a blind transfer
//! that keeps one recording going with the new party in it.

use crate::recording::{
    call_bert, channel, file_of, read_wav, recorder, sounding, wait_for_recordings, ALAW_SILENCE,
};
use crate::sip::{csv, media_port, register, trunk_call, BERT, DIRECTORY};
use crate::sip_harness::{free_port, Serve, Sipp, LOCALHOST};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// G.722 silence as the recorder writes it.
const G722_SILENCE: u8 = 0xFF;
/// Samples (A-law) or octets (G.722) per 20 ms packet of the captures.
const PACKET: usize = 160;

/// Octet `i` of the G.722 captures, `base` 0x10 (the caller's,
/// g722_pattern_a.pcap) or 0x80 (the callee's, g722_pattern_b.pcap); as
/// `g722_octet` in make_recording_pcaps.py.
fn g722_octet(base: u8, i: usize) -> u8 {
    base + ((i / 7) % 0x60) as u8
}

/// Every sample of packet `k` of the marked A-law captures
/// (alaw_marked.pcap, alaw_marked_loss.pcap); as `mark` in
/// make_recording_pcaps.py.
fn mark(k: usize) -> u8 {
    0x20 + k as u8
}

/// The same for alaw_marked_other.pcap (`mark(k, OTHER)` there).
fn mark_other(k: usize) -> u8 {
    0x90 + k as u8
}

/// The samples as runs of one value: `(value, length)`.
fn runs(samples: &[u8]) -> Vec<(u8, usize)> {
    let mut runs: Vec<(u8, usize)> = Vec::new();
    for &sample in samples {
        match runs.last_mut() {
            Some((value, length)) if *value == sample => *length += 1,
            _ => runs.push((sample, 1)),
        }
    }
    runs
}

/// Byte rate, block align and bits per sample of a WAV file's fmt chunk.
fn fmt_rates(path: &Path) -> (u32, u16, u16) {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = at + 8;
        if &bytes[at..at + 4] == b"fmt " {
            return (
                u32::from_le_bytes(bytes[body + 8..body + 12].try_into().unwrap()),
                u16::from_le_bytes([bytes[body + 12], bytes[body + 13]]),
                u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]),
            );
        }
        at = body + size + (size & 1);
    }
    panic!("no fmt chunk in {}", path.display())
}

fn info_of(entry: &Value) -> String {
    std::fs::read_to_string(file_of(entry, "_info.txt")).unwrap()
}

/// The value of `Key: value` in the metadata.
fn info_field<'a>(info: &'a str, key: &str) -> &'a str {
    info.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} in:\n{info}"))
}

/// The audio files an entry lists.
fn audio_files(entry: &Value) -> Vec<String> {
    entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|f| f.ends_with(".wav"))
        .map(str::to_string)
        .collect()
}

/// Where one G.722 party's stream lies in its file: the whole 3 s capture
/// (150 packets, 24 000 octets), in order, once, with silence before and
/// after it and nothing else.
fn assert_g722_stream(party: &str, data: &[u8], base: u8) {
    let first = data
        .iter()
        .position(|&b| b != G722_SILENCE)
        .unwrap_or_else(|| panic!("the {party}'s file is silence"));
    let sent = 150 * PACKET;
    assert!(
        first + sent <= data.len(),
        "the {party}'s audio starts at octet {first} of {}: cut short",
        data.len()
    );
    let expected: Vec<u8> = (0..sent).map(|i| g722_octet(base, i)).collect();
    // The first runs from `at`, for messages.
    let runs_from = |at: usize| {
        let mut found = runs(&data[at..]);
        found.truncate(8);
        found
    };
    if let Some(i) = (0..sent).find(|&i| data[first + i] != expected[i]) {
        panic!(
            "the {party}'s octet {i} of the stream (file octet {}) is {:#04x}, sent {:#04x}; \
             runs from there: {:?}",
            first + i,
            data[first + i],
            expected[i],
            runs_from(first + i)
        );
    }
    assert!(
        data[first + sent..].iter().all(|&b| b == G722_SILENCE),
        "after the {party}'s 3 s: {:?}",
        runs_from(first + sent)
    );
}

#[test]
fn g722_is_stored_as_16_khz_mono_files_and_plays_at_the_speed_of_the_call() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    // Both sides offer and answer G.722 alone and play 3 s of it; the
    // caller hangs up 3.5 s after the answer.
    let began = Instant::now();
    call_bert(&serve, "uac_g722.xml", "uas_g722.xml", 3500);
    let call_took = began.elapsed().as_secs_f64();
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    assert_eq!(entry["status"], "complete", "{entry:#}");

    // No stereo G.722 file: two mono ones, and the warning that says so.
    let name = entry["name"].as_str().unwrap();
    let audio = audio_files(&entry);
    assert_eq!(audio.len(), 2, "{entry:#}");
    assert!(
        !audio.iter().any(|f| f.ends_with(&format!("{name}.wav"))),
        "{entry:#}"
    );
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .contains("G.722 recorded as two mono files"),
        "{entry:#}"
    );
    let caller_path = file_of(&entry, "_caller.wav");
    let callee_path = file_of(&entry, "_callee.wav");
    let (caller, callee) = (read_wav(&caller_path), read_wav(&callee_path));
    for (path, wav) in [(&caller_path, &caller), (&callee_path, &callee)] {
        // 16 000 samples/s of 4 bits: 8 000 bytes/s, one byte per block.
        assert_eq!(
            (wav.format_tag, wav.channels, wav.sample_rate),
            (0x028F, 1, 16_000),
            "{}",
            path.display()
        );
        assert_eq!(fmt_rates(path), (8000, 1, 4), "{}", path.display());
    }
    assert_eq!(caller.data.len(), callee.data.len());

    // The file plays as long as the call lasted: at 8 000 bytes/s the
    // metadata's duration, at least the 3.5 s after the answer and less
    // than the whole run took (register, ringing, the call); half speed
    // (an 8 kHz header) or double length (16 kHz ticks) is neither.
    let seconds = caller.data.len() as f64 / 8000.0;
    let info = info_of(&entry);
    let duration: f64 = info_field(&info, "Duration")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(
        (seconds - duration).abs() < 0.002,
        "{seconds} s of data, the metadata says {duration} s"
    );
    assert!(
        (3.5..call_took).contains(&seconds),
        "{seconds} s recorded of a call of 3.5 s after the answer, {call_took:.3} s in all"
    );
    assert_eq!(
        info_field(&info, "Codec"),
        "G722 (G.722 as sent, 16000 Hz, WAV format 0x028F)"
    );
    assert!(
        info.contains("Leg caller: packets=150 lost=0 late=0 dropped=0"),
        "{info}"
    );
    assert!(
        info.contains("Leg callee: packets=150 lost=0 late=0 dropped=0"),
        "{info}"
    );

    // Each file holds its party's 24 000 octets exactly as sent (3 s at
    // one octet per tick of the 8 kHz RTP clock), silence (0xFF) around
    // them, nothing of the other party.
    assert_g722_stream("caller", &caller.data, 0x10);
    assert_g722_stream("callee", &callee.data, 0x80);
    h.ok(&["instance", "action", "rec", "verify"]);
}

#[test]
fn lost_packets_become_silence_of_exactly_their_length_in_their_place() {
    let h = recorder("users = [\"bert\"]\nchannels = \"caller\"\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    // The caller sends packets 0..99 of 20 ms, 50..54 lost on the way
    // (their sequence numbers and timestamps never sent).
    call_bert(&serve, "uac_alaw_loss.xml", "uas.xml", 2500);
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    assert_eq!(entry["status"], "complete", "{entry:#}");
    let audio = audio_files(&entry);
    assert_eq!(audio.len(), 1, "the caller's file alone: {entry:#}");
    let wav = read_wav(&file_of(&entry, "_caller.wav"));
    assert_eq!(
        (wav.format_tag, wav.channels, wav.sample_rate),
        (6, 1, 8000)
    );

    // Silence until the first packet (ringing), then every packet in its
    // place, 160 samples each, the five lost ones exactly 800 samples of
    // silence, then silence to the hangup.
    let found = runs(&wav.data);
    assert!(
        found.len() > 2,
        "{} samples, runs {found:?}",
        wav.data.len()
    );
    let (lead, tail) = (found[0], found[found.len() - 1]);
    assert_eq!(
        lead.0, ALAW_SILENCE,
        "the recording starts before the audio"
    );
    assert_eq!(tail.0, ALAW_SILENCE, "the call outlasts the capture");
    let mut expected: Vec<(u8, usize)> = Vec::new();
    for k in 0..100 {
        if (50..55).contains(&k) {
            if k == 50 {
                expected.push((ALAW_SILENCE, 5 * PACKET));
            }
        } else {
            expected.push((mark(k), PACKET));
        }
    }
    assert_eq!(
        &found[1..found.len() - 1],
        &expected[..],
        "the caller's audio after {} samples of lead-in",
        lead.1
    );
    // The lost packets' place, counted from the first sample of packet 0.
    let first = lead.1;
    let gap = first + 50 * PACKET..first + 55 * PACKET;
    assert!(wav.data[gap.clone()].iter().all(|&s| s == ALAW_SILENCE));
    assert_eq!(wav.data[gap.start - 1], mark(49));
    assert_eq!(wav.data[gap.end], mark(55));
    assert_eq!(sounding(&wav.data), 95 * PACKET);

    let info = info_of(&entry);
    assert!(
        info.contains("Leg caller: packets=95 lost=5 late=0 dropped=0"),
        "{info}"
    );
    h.ok(&["instance", "action", "rec", "verify"]);
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_below(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_blind_transfer_keeps_the_one_recording_going_and_names_the_new_party() {
    let h = recorder("users = [\"bert\"]\n");
    let serve = Serve::start_in(h.data(), DIRECTORY, "");
    let (bert, anna) = (free_port(), free_port());
    register(&serve, "bert", bert);
    register(&serve, "anna", anna);
    // Bert answers, talks (his marked capture, 1 s) and 300 ms later sends
    // the caller on to Anna (201); Anna answers, plays hers (2 s) and hangs
    // up after 3 s; the caller (g711a.pcap, 7 s) waits for the BYE.
    let target = csv(&serve, "target201.csv", "201");
    let transferor = Sipp::start(
        "bert transfers to 201",
        "uas_transfer_marked.xml",
        None,
        bert,
        &["-inf", &target, "-mi", LOCALHOST, "-mp", &media_port()],
    );
    let anna_phone = Sipp::start(
        "anna takes the transfer",
        "t_uas_hangup_marked.xml",
        None,
        anna,
        &["-mi", LOCALHOST, "-mp", &media_port(), "-d", "3000"],
    );
    let caller = trunk_call(&serve, "t_uac_wait_bye.xml", BERT, &[]).wait();
    let (transferor, anna_phone) = (transferor.wait(), anna_phone.wait());
    caller.assert_ok();
    transferor.assert_ok();
    anna_phone.assert_ok();

    // One recording, and no second one coming later (the transfer's hop
    // is no new call).
    let entry = wait_for_recordings(&h, "rec", 1).remove(0);
    thread::sleep(Duration::from_secs(2));
    let entries = wait_for_recordings(&h, "rec", 1);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entry["status"], "complete", "{entry:#}");
    // Nothing in the recording directory but its files and the head.
    let root = h.data().join("instances/rec/recordings");
    let file_name = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
    let mut listed: BTreeSet<String> = entry["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Path::new(f.as_str().unwrap()))
        .inspect(|f| assert!(f.is_file(), "{} is not there", f.display()))
        .map(file_name)
        .collect();
    listed.insert("chain-head.txt".into());
    let present: BTreeSet<String> = files_below(&root).iter().map(|f| file_name(f)).collect();
    assert_eq!(present, listed, "the files in {}", root.display());
    let audio = audio_files(&entry);
    assert_eq!(audio.len(), 1, "one stereo file: {entry:#}");

    let info = info_of(&entry);
    assert_eq!(
        info_field(&info, "Transferred to"),
        "Anna Alpha",
        "the new party is named:\n{info}"
    );

    // The callee's channel: silence while it rang, Bert's packets in order
    // until Anna's stream takes over (the relay keeps his stream until her
    // first packet comes), then Anna's, all of them, as she sent them, and
    // then silence until she hangs up: nothing of Bert's after hers.
    let wav = read_wav(&file_of(&entry, ".wav"));
    assert_eq!(
        (wav.format_tag, wav.channels, wav.sample_rate),
        (6, 2, 8000)
    );
    let (left, right) = (channel(&wav, 0), channel(&wav, 1));
    let found = runs(&right);
    let shown = || format!("callee's channel as runs: {found:?}\n{info}");
    let run = |i: usize| found.get(i).copied();
    assert_eq!(run(0).map(|r| r.0), Some(ALAW_SILENCE), "{}", shown());
    let mut at = 1;
    let mut bert = 0;
    while let Some((value, length)) = run(at).filter(|r| r.0 == mark_other(bert)) {
        // Anna's first packet may cover the end of Bert's last one.
        let last = run(at + 1).is_some_and(|r| r.0 != mark_other(bert + 1));
        assert!(
            length == PACKET || (last && length < PACKET),
            "Bert's packet {bert} ({value:#04x}) is {length} samples; {}",
            shown()
        );
        bert += 1;
        at += 1;
    }
    assert!(
        (10..50).contains(&bert),
        "{bert} of Bert's packets recorded (300 ms before the transfer, 1 s sent); {}",
        shown()
    );
    if let Some((ALAW_SILENCE, length)) = run(at) {
        assert!(
            length < 800,
            "{length} samples between Bert and Anna; {}",
            shown()
        );
        at += 1;
    }
    let anna_starts: usize = found[..at].iter().map(|r| r.1).sum();
    for k in 0..100 {
        assert_eq!(
            run(at),
            Some((mark(k), PACKET)),
            "Anna's packet {k}; {}",
            shown()
        );
        at += 1;
    }
    let anna_ends = anna_starts + 100 * PACKET;
    assert!(
        matches!(run(at), Some((ALAW_SILENCE, _))) && at + 1 == found.len(),
        "after Anna's 2 s: {}",
        shown()
    );
    // Her stream starts where the metadata says.
    let segment = format!(
        "Segment: callee at {:.3} s: new stream",
        anna_starts as f64 / 8000.0
    );
    assert!(info.contains(&segment), "{segment:?} missing from:\n{info}");
    // The call went on for Anna's 3 s after the transfer and so did the
    // recording, with the caller's channel sounding alongside: longer after
    // the transfer than before it.
    let after = (left.len() - anna_starts) as f64 / 8000.0;
    assert!(
        after > 2.8,
        "{after} s recorded after the transfer, {} s in all",
        left.len() as f64 / 8000.0
    );
    assert!(
        left.len() - anna_starts > anna_starts,
        "{} samples before Anna, {} from her on",
        anna_starts,
        left.len() - anna_starts
    );
    assert!(
        sounding(&left[anna_starts..anna_ends]) > 8000,
        "the caller's channel is silent while Anna talks"
    );
    h.ok(&["instance", "action", "rec", "verify"]);
}
