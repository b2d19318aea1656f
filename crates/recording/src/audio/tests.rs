use super::*;
use callhost_media::wav::{wav_header_is_valid, WavFormat, WavInfo};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

/// A recording under test: its directory and start.
struct Call {
    dir: tempfile::TempDir,
    started: Instant,
}

impl Call {
    fn new() -> Self {
        Call {
            dir: tempfile::tempdir().unwrap(),
            started: Instant::now(),
        }
    }

    fn recorder(&self, channels: Channels) -> Recorder {
        Recorder::create(self.dir.path(), "rec", channels, self.started).unwrap()
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + MS * ms as u32
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A file's header and audio bytes.
fn read_wav(path: &Path) -> (WavInfo, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let info = wav_header_is_valid(&bytes).unwrap();
    let start = info.data_offset as usize;
    (info, bytes[start..start + info.data_len as usize].to_vec())
}

fn audio(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Frame<'_> {
    Frame {
        sequence: seq,
        timestamp: ts,
        payload_type: pt,
        marker: false,
        payload,
    }
}

/// Sends 20 ms A-law frames `range` of a stream, frame i filled with `fill(i)`.
fn send(
    rec: &mut Recorder,
    call: &Call,
    side: Side,
    first_ms: u64,
    frames: impl IntoIterator<Item = u16>,
    fill: impl Fn(u16) -> u8,
) {
    for i in frames {
        let payload = [fill(i); 160];
        let frame = audio(i, 1000 + u32::from(i) * 160, 8, &payload);
        let at = call.at(first_ms + u64::from(i) * 20);
        rec.frame(side, at, &frame).unwrap();
    }
}

#[test]
fn lost_packets_become_exactly_their_length_of_silence() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    let fill = |i: u16| (i as u8).wrapping_mul(3) | 0x01; // never 0xD5
    send(
        &mut rec,
        &call,
        Side::Caller,
        0,
        (0..50).filter(|i| !(10..=12).contains(i)),
        fill,
    );
    let summary = rec.finish(call.at(1000)).unwrap();

    assert_eq!(summary.files, vec![call.path("rec_caller.wav")]);
    let (info, data) = read_wav(&summary.files[0]);
    assert_eq!(info.spec.format, WavFormat::ALaw);
    assert_eq!(info.frames, 50 * 160);
    for i in 0..50u16 {
        let want = if (10..=12).contains(&i) {
            0xD5
        } else {
            fill(i)
        };
        let chunk = &data[usize::from(i) * 160..usize::from(i + 1) * 160];
        assert!(chunk.iter().all(|&b| b == want), "frame {i}");
    }
    let caller = summary.legs[0];
    assert_eq!((caller.packets, caller.lost, caller.late), (47, 3, 0));
    assert_eq!((caller.gaps, caller.gap_ms), (1, 60));
    assert_eq!(summary.duration, Duration::from_secs(1));
    assert_eq!(summary.codec, Codec::Pcma);
}

#[test]
fn stereo_keeps_each_party_in_its_channel_and_syncs_by_arrival() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Stereo);
    // Interleaved: the callee starts one second later, its own RTP clock.
    for i in 0..100u16 {
        let at = call.at(u64::from(i) * 20);
        rec.frame(
            Side::Caller,
            at,
            &audio(i, 5000 + u32::from(i) * 160, 8, &[0x11; 160]),
        )
        .unwrap();
        if i >= 50 {
            let j = i - 50;
            let frame = audio(40_000 + j, 9_999_000 + u32::from(j) * 160, 8, &[0x22; 160]);
            rec.frame(Side::Callee, at, &frame).unwrap();
        }
    }
    let summary = rec.finish(call.at(2000)).unwrap();
    assert_eq!(summary.files, vec![call.path("rec.wav")]);
    let (info, data) = read_wav(&summary.files[0]);
    assert_eq!(info.spec.channels, 2);
    assert_eq!(info.frames, 16_000);
    let left: Vec<u8> = data.iter().step_by(2).copied().collect();
    let right: Vec<u8> = data.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.len(), right.len());
    assert!(left.iter().all(|&b| b == 0x11));
    assert!(right[..8000].iter().all(|&b| b == 0xD5));
    assert!(right[8000..].iter().all(|&b| b == 0x22));
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert_eq!(summary.segments.len(), 2); // each party's first frame
    assert_eq!(summary.segments[1].side, Side::Callee);
    assert_eq!(summary.segments[1].offset, Duration::from_secs(1));
}

#[test]
fn reordered_frames_within_the_window_land_in_place_later_ones_are_late() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    let order = [
        0u16, 1, 3, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 5,
    ];
    for (n, &i) in order.iter().enumerate() {
        // Arrival in list order, 20 ms apart: frame 5 comes ~380 ms late.
        let payload = [i as u8 + 1; 160];
        let frame = audio(i, u32::from(i) * 160, 8, &payload);
        rec.frame(Side::Caller, call.at(n as u64 * 20), &frame)
            .unwrap();
    }
    let summary = rec.finish(call.at(500)).unwrap();
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(&data[2 * 160..3 * 160], &[3; 160][..]); // frame 2, reordered
    assert_eq!(&data[3 * 160..4 * 160], &[4; 160][..]);
    assert_eq!(&data[5 * 160..6 * 160], &[0xD5; 160][..]); // frame 5, too late
    let caller = summary.legs[0];
    assert_eq!((caller.late, caller.lost), (1, 0));
}

#[test]
fn duplicates_are_counted_and_written_once() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    for (n, i) in [0u16, 1, 1, 2, 0].into_iter().enumerate() {
        let payload = [i as u8 + 1; 160];
        let frame = audio(i, u32::from(i) * 160, 8, &payload);
        rec.frame(Side::Caller, call.at(n as u64 * 20), &frame)
            .unwrap();
    }
    let summary = rec.finish(call.at(60)).unwrap();
    assert_eq!(summary.legs[0].duplicates, 2);
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 480);
    assert_eq!(&data[160..320], &[2; 160][..]);
}

#[test]
fn rtp_timestamp_and_sequence_wrap_around() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    for i in 0..10u32 {
        let ts = (u32::MAX - 479).wrapping_add(i * 160);
        let seq = 65533u16.wrapping_add(i as u16);
        let payload = [i as u8 + 1; 160];
        let frame = audio(seq, ts, 8, &payload);
        rec.frame(Side::Caller, call.at(u64::from(i) * 20), &frame)
            .unwrap();
    }
    let summary = rec.finish(call.at(200)).unwrap();
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 1600);
    for i in 0..10 {
        assert_eq!(data[i * 160], i as u8 + 1, "frame {i}");
    }
    assert_eq!(summary.legs[0].lost, 0);
    assert_eq!(summary.segments.len(), 1); // no re-anchor at the wrap
}

#[test]
fn silence_suppression_and_hold_become_silence_of_the_right_length() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    let mut send = |seq: u16, ts: u32, ms: u64, marker: bool| {
        let mut frame = audio(seq, ts, 8, &[0x42; 160]);
        frame.marker = marker;
        rec.frame(Side::Caller, call.at(ms), &frame).unwrap();
    };
    send(0, 0, 0, true);
    // Talkspurt after 500 ms of suppression: timestamp jumps with arrival.
    send(1, 4160, 520, true);
    // Hold for three minutes with the RTP clock stopped: re-anchored.
    send(2, 4320, 180_540, false);
    for tick in 0..=181 {
        rec.tick(call.at(tick * 1000)).unwrap();
    }
    let summary = rec.finish(call.at(181_000)).unwrap();
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 181 * 8000);
    let spans: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == 0x42)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(spans.len(), 480);
    assert_eq!((spans[0], spans[160], spans[320]), (0, 4160, 180_540 * 8));
    assert_eq!(summary.segments[1].kind, SegmentKind::Resync);
    assert_eq!(summary.legs[0].gaps, 3); // suppression, hold, after the last frame
}

#[test]
fn a_new_stream_reanchors_at_its_arrival() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    send(&mut rec, &call, Side::Caller, 0, 0..10, |_| 0x10);
    // After a transfer: other SSRC, unrelated numbering, 2 s later.
    for j in 0..10u16 {
        let frame = audio(30_000 + j, 77_777 + u32::from(j) * 160, 8, &[0x20; 160]);
        rec.frame(Side::Caller, call.at(2200 + u64::from(j) * 20), &frame)
            .unwrap();
    }
    let summary = rec.finish(call.at(2400)).unwrap();
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 2400 * 8);
    assert_eq!(data[2200 * 8], 0x20);
    assert_eq!(data[2200 * 8 - 1], 0xD5);
    assert_eq!(summary.segments[1].kind, SegmentKind::NewStream);
    assert_eq!(summary.segments[1].offset, Duration::from_millis(2200));
    assert_eq!(summary.legs[0].lost, 0); // a new numbering is no loss
}

#[test]
fn a_frame_far_in_the_future_does_not_write_its_silence() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    send(&mut rec, &call, Side::Caller, 0, 0..5, |_| 0x10);
    // Next sequence number, timestamp one hour ahead, arrives on time.
    let frame = audio(5, 1000 + 5 * 160 + 3600 * 8000, 8, &[0x20; 160]);
    rec.frame(Side::Caller, call.at(100), &frame).unwrap();
    let summary = rec.finish(call.at(200)).unwrap();
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 1600);
    assert_eq!(&data[800..960], &[0x20; 160][..]);
    assert_eq!(summary.segments[1].kind, SegmentKind::Resync);
}

#[test]
fn a_codec_change_starts_a_new_set_of_files() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Stereo);
    for i in 0..100u16 {
        let pt = if i < 50 { 8 } else { 0 };
        let fill = if i < 50 { 0x11 } else { 0x33 };
        let at = call.at(u64::from(i) * 20);
        let ts = u32::from(i) * 160;
        rec.frame(Side::Caller, at, &audio(i, ts, pt, &[fill; 160]))
            .unwrap();
        rec.frame(Side::Callee, at, &audio(i, ts, pt, &[fill + 1; 160]))
            .unwrap();
    }
    let summary = rec.finish(call.at(2000)).unwrap();
    assert_eq!(
        summary.files,
        vec![call.path("rec.wav"), call.path("rec-2.wav")]
    );
    let (first, data1) = read_wav(&summary.files[0]);
    let (second, data2) = read_wav(&summary.files[1]);
    assert_eq!(
        (first.spec.format, second.spec.format),
        (WavFormat::ALaw, WavFormat::MuLaw)
    );
    assert_eq!((first.frames, second.frames), (8000, 8000));
    assert!(data1.chunks(2).all(|lr| lr == [0x11, 0x12]));
    assert!(data2.chunks(2).all(|lr| lr == [0x33, 0x34]));
    let changes: Vec<&Segment> = summary
        .segments
        .iter()
        .filter(|s| s.kind == SegmentKind::CodecChange && s.file_set == 2)
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].codec, changes[0].offset),
        (Codec::Pcmu, Duration::from_secs(1))
    );
    assert_eq!(summary.codec, Codec::Pcma);
}

#[test]
fn a_party_that_never_sends_is_a_full_length_silent_file_and_a_warning() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Separate);
    send(&mut rec, &call, Side::Caller, 0, 0..25, |_| 0x10);
    let summary = rec.finish(call.at(3000)).unwrap();
    let caller = call.path("rec_caller.wav");
    let callee = call.path("rec_callee.wav");
    assert_eq!(summary.files, vec![caller.clone(), callee.clone()]);
    let (info, data) = read_wav(&callee);
    assert_eq!(info.frames, 24_000);
    assert!(data.iter().all(|&b| b == 0xD5));
    assert_eq!(read_wav(&caller).0.frames, 24_000);
    assert_eq!(
        summary.warnings,
        vec!["one-way audio: no RTP from the callee; its channel is silence"]
    );
    assert_eq!((summary.legs[1].gaps, summary.legs[1].gap_ms), (1, 3000));

    // Nobody at all: still valid files of the call's length.
    let call = Call::new();
    let summary = call
        .recorder(Channels::Stereo)
        .finish(call.at(500))
        .unwrap();
    let (info, _) = read_wav(&summary.files[0]);
    assert_eq!((info.frames, info.spec.channels), (4000, 2));
    assert_eq!(summary.warnings.len(), 2);
}

#[test]
fn g722_is_kept_at_16_khz_in_mono_files_even_for_stereo() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Stereo);
    for i in 0..50u16 {
        let at = call.at(u64::from(i) * 20);
        rec.frame(
            Side::Caller,
            at,
            &audio(i, u32::from(i) * 160, 9, &[0x5A; 160]),
        )
        .unwrap();
    }
    let summary = rec.finish(call.at(1000)).unwrap();
    assert_eq!(
        summary.files,
        vec![call.path("rec_caller.wav"), call.path("rec_callee.wav")]
    );
    let (info, data) = read_wav(&summary.files[0]);
    assert_eq!(info.spec.format, WavFormat::G722);
    assert_eq!(info.spec.sample_rate, 16_000);
    assert_eq!(info.frames, 16_000); // 8000 octets, two samples each
    assert_eq!(info.duration(), Duration::from_secs(1));
    assert!(data.iter().all(|&b| b == 0x5A));
    let (_, silent) = read_wav(&summary.files[1]);
    assert!(silent.iter().all(|&b| b == G722_SILENCE));
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("two mono files")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(summary.codec, Codec::G722);
}

#[test]
fn non_audio_frames_are_ignored_without_counting_loss() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    send(&mut rec, &call, Side::Caller, 0, 0..5, |_| 0x10);
    // DTMF (101) and comfort noise (13) share the numbering.
    rec.frame(
        Side::Caller,
        call.at(100),
        &audio(5, 1800, 101, &[1, 0x80, 0, 160]),
    )
    .unwrap();
    rec.frame(Side::Caller, call.at(120), &audio(6, 1960, 13, &[0x40]))
        .unwrap();
    // Hostile lengths: empty and oversized payloads.
    rec.frame(Side::Caller, call.at(140), &audio(7, 2120, 8, &[]))
        .unwrap();
    let huge = vec![0x77; MAX_PAYLOAD_BYTES + 1];
    rec.frame(Side::Caller, call.at(160), &audio(8, 2280, 8, &huge))
        .unwrap();
    send(&mut rec, &call, Side::Caller, 0, 9..12, |_| 0x10);
    let summary = rec.finish(call.at(240)).unwrap();
    let caller = summary.legs[0];
    assert_eq!((caller.ignored, caller.lost, caller.packets), (4, 0, 12));
    let (_, data) = read_wav(&summary.files[0]);
    assert_eq!(data.len(), 240 * 8);
    assert!(!data.contains(&0x77));
}

#[test]
fn host_drops_are_counted_as_dropped_not_lost() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    send(&mut rec, &call, Side::Caller, 0, 0..5, |_| 0x10);
    rec.dropped(Side::Caller, 2);
    send(&mut rec, &call, Side::Caller, 0, 7..10, |_| 0x10); // 5, 6 dropped, 9 after a real loss
    let summary = rec.finish(call.at(200)).unwrap();
    let caller = summary.legs[0];
    assert_eq!((caller.dropped, caller.lost), (2, 0));
    let (_, data) = read_wav(&summary.files[0]);
    assert!(data[800..1120].iter().all(|&b| b == 0xD5));
}

#[test]
fn tick_leaves_valid_files_and_a_killed_recording_is_repaired() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Stereo);
    send(&mut rec, &call, Side::Caller, 0, 0..100, |_| 0x10);
    rec.tick(call.at(2000)).unwrap();
    // Valid as it stands, with the audio older than the window.
    let (info, _) = read_wav(&call.path("rec.wav"));
    assert_eq!(info.frames, 2000 * 8 - JITTER_WINDOW_TICKS);
    send(&mut rec, &call, Side::Caller, 0, 100..400, |_| 0x10);
    // kill -9: no finish, no Drop, whatever reached the file stays.
    std::mem::forget(rec);
    let path = call.path("rec.wav");
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut at an odd byte inside a stereo sample frame, too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let repaired = repair(&path).unwrap();
    assert!(repaired.rewritten);
    let (info, _) = read_wav(&path);
    assert_eq!(info.data_len, repaired.data_bytes);
    assert_eq!(repaired.data_bytes % 2, 0);
    assert!(
        repaired.duration >= Duration::from_millis(1700),
        "{repaired:?}"
    );
    assert_eq!(repaired.duration, info.duration());
}

#[test]
fn repair_makes_a_header_only_file_valid_and_empty() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Caller);
    send(&mut rec, &call, Side::Caller, 0, 0..1, |_| 0x10);
    std::mem::forget(rec); // nothing flushed past the header
    let path = call.path("rec_caller.wav");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(94)
        .unwrap();
    let repaired = repair(&path).unwrap();
    assert_eq!(
        (repaired.duration, repaired.data_bytes),
        (Duration::ZERO, 0)
    );
    assert_eq!(read_wav(&path).0.frames, 0);
}

#[test]
fn names_and_directories_are_checked() {
    let call = Call::new();
    for bad in ["", "..", "a/b", "a\\b"] {
        let err = Recorder::create(call.dir.path(), bad, Channels::Stereo, call.started);
        assert!(
            matches!(err, Err(AudioError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let missing = call.dir.path().join("missing");
    let err = Recorder::create(&missing, "rec", Channels::Stereo, call.started);
    assert!(matches!(err, Err(AudioError::NoDirectory(_))));
}

/// One step of a random call.
#[derive(Debug, Clone)]
enum Step {
    Frame {
        callee: bool,
        seq: u16,
        ts: u32,
        pt: u8,
        len: usize,
        after_ms: u16,
    },
    Dropped {
        callee: bool,
        frames: u32,
    },
    Tick {
        after_ms: u16,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let pt = prop_oneof![
        Just(8u8),
        Just(0),
        Just(9),
        Just(101),
        Just(13),
        any::<u8>()
    ];
    let len = prop_oneof![
        Just(160usize),
        Just(0),
        1usize..400,
        Just(MAX_PAYLOAD_BYTES + 5)
    ];
    prop_oneof![
        8 => (any::<bool>(), any::<u16>(), any::<u32>(), pt, len, 0u16..3000).prop_map(
            |(callee, seq, ts, pt, len, after_ms)| Step::Frame { callee, seq, ts, pt, len, after_ms }
        ),
        1 => (any::<bool>(), any::<u32>()).prop_map(|(callee, frames)| Step::Dropped { callee, frames }),
        1 => (0u16..5000).prop_map(|after_ms| Step::Tick { after_ms }),
    ]
}

/// Steps that stay close to a real stream now and then, so that the
/// interesting paths (in place, reordered, late) are taken as well.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..60).prop_map(|mut steps| {
        let mut seq = [0u16; 2];
        let mut ts = [0u32; 2];
        for (n, step) in steps.iter_mut().enumerate() {
            if let Step::Frame {
                callee,
                seq: s,
                ts: t,
                after_ms,
                ..
            } = step
            {
                let leg = usize::from(*callee);
                if n % 3 != 0 {
                    seq[leg] = seq[leg].wrapping_add(1);
                    ts[leg] = ts[leg].wrapping_add(160);
                    (*s, *t, *after_ms) = (seq[leg], ts[leg], *after_ms % 40);
                }
            }
        }
        steps
    })
}

fn channels() -> impl Strategy<Value = Channels> {
    prop_oneof![
        Just(Channels::Caller),
        Just(Channels::Callee),
        Just(Channels::Stereo),
        Just(Channels::Separate)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_frames_never_panic_and_leave_valid_equal_length_files(
        channels in channels(),
        steps in steps(),
        tail_ms in 0u64..2000,
    ) {
        let call = Call::new();
        let mut rec = call.recorder(channels);
        let mut now = call.started;
        let payload = vec![0x3C; MAX_PAYLOAD_BYTES + 5];
        for step in &steps {
            match *step {
                Step::Frame { callee, seq, ts, pt, len, after_ms } => {
                    now += MS * u32::from(after_ms);
                    let side = if callee { Side::Callee } else { Side::Caller };
                    rec.frame(side, now, &audio(seq, ts, pt, &payload[..len])).unwrap();
                }
                Step::Dropped { callee, frames } => {
                    rec.dropped(if callee { Side::Callee } else { Side::Caller }, frames);
                }
                Step::Tick { after_ms } => {
                    now += MS * u32::from(after_ms);
                    rec.tick(now).unwrap();
                }
            }
        }
        let ended = now + MS * tail_ms as u32;
        let summary = rec.finish(ended).unwrap();
        let expected = duration_of(call.tick_of_for_test(ended));
        prop_assert_eq!(summary.duration, expected);
        // Per party, the sets of files add up to the call's length.
        let mut per_side: [Duration; 2] = [Duration::ZERO; 2];
        for file in &summary.files {
            let (info, _) = read_wav(file);
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let sides: &[usize] = if info.spec.channels == 2 {
                &[0, 1]
            } else if name.contains("_callee") {
                &[1]
            } else {
                &[0]
            };
            for &side in sides {
                per_side[side] += info.duration();
            }
        }
        let recorded: &[usize] = match channels {
            Channels::Caller => &[0],
            Channels::Callee => &[1],
            Channels::Stereo | Channels::Separate => &[0, 1],
        };
        for &side in recorded {
            prop_assert_eq!(per_side[side], expected, "side {}", side);
        }
    }
}

impl Call {
    fn tick_of_for_test(&self, at: Instant) -> u64 {
        let ticks = at.duration_since(self.started).as_nanos() * 8000 / 1_000_000_000;
        ticks as u64
    }
}

#[test]
fn a_crashed_recording_is_repaired_as_a_whole_and_only_its_own_files() {
    let call = Call::new();
    let mut rec = call.recorder(Channels::Separate);
    send(&mut rec, &call, Side::Caller, 0, 0..100, |_| 0x10);
    send(&mut rec, &call, Side::Callee, 0, 0..100, |_| 0x20);
    rec.tick(call.at(2000)).unwrap();
    std::mem::forget(rec);
    // Another recording's file and a stranger next to it are left alone.
    std::fs::write(call.path("rec2_caller.wav"), b"not ours").unwrap();
    std::fs::write(call.path("rec_info.txt"), b"metadata").unwrap();
    let summary = repair_recording(call.dir.path(), "rec").unwrap();
    let names: Vec<String> = summary
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["rec_callee.wav", "rec_caller.wav"]);
    assert_eq!(summary.codec, Codec::Pcma);
    assert!(
        summary.duration >= Duration::from_millis(1700),
        "{summary:?}"
    );
    for file in &summary.files {
        read_wav(file);
    }
    assert!(matches!(
        repair_recording(call.dir.path(), "other"),
        Err(AudioError::NoFiles { .. })
    ));
    assert!(is_audio_file_of("rec-2.wav", "rec"));
    assert!(is_audio_file_of("rec_callee-12.wav", "rec"));
    assert!(!is_audio_file_of("rec-x.wav", "rec"));
    assert!(!is_audio_file_of("rec_hash.txt", "rec"));
}
