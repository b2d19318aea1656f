//! The relay on real UDP sockets: two plain sockets on 127.0.0.1 play the
//! phones. Timeouts are generous and only guard against hangs.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use callhost_media::{
    CallMedia, Codec, Law, Leg, LegStats, MediaError, MediaEvent, MediaRelay, Prompt, RelayConfig,
    RtpExtension, RtpHeader, RtpPacket, TapLegs, TelephoneEvent, WavFormat, WavSpec, WavWriter,
};
use tokio::net::UdpSocket;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PATIENCE: Duration = Duration::from_secs(10);

fn relay() -> MediaRelay {
    MediaRelay::new(RelayConfig {
        address: LOCALHOST,
        ports: 20000..=60000,
    })
}

async fn phone() -> UdpSocket {
    UdpSocket::bind((LOCALHOST, 0)).await.unwrap()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; 1500];
    let len = RtpHeader::new(pt, seq, ts, ssrc)
        .with_marker(marker)
        .write_packet(payload, 0, &mut buf)
        .unwrap();
    buf.truncate(len);
    buf
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn recv(phone: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    within("a packet", async {
        let mut buf = vec![0; 2048];
        let (n, from) = phone.recv_from(&mut buf).await.unwrap();
        buf.truncate(n);
        (buf, from)
    })
    .await
}

/// Polls the counters until `ready` holds.
async fn stats_when(media: &CallMedia, what: &str, ready: impl Fn(&[LegStats; 2]) -> bool) {
    within(what, async {
        loop {
            if ready(&media.stats()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

async fn connected_call() -> (CallMedia, UdpSocket, UdpSocket) {
    let media = relay().allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    (media, a, b)
}

#[tokio::test]
async fn relays_both_ways_byte_identical() {
    let (media, a, b) = connected_call().await;
    let caller_port = media.local_addr(Leg::Caller);
    let callee_port = media.local_addr(Leg::Callee);
    assert_eq!(caller_port.ip(), LOCALHOST);
    assert_eq!(caller_port.port() % 2, 0);
    assert_eq!(callee_port.port() % 2, 0);
    assert_ne!(caller_port, callee_port);

    // PCMA with CSRCs, an extension and padding: all must pass untouched.
    let mut pcma = vec![0; 1500];
    let len = RtpHeader::new(8, 1000, 160_000, 0xAAAA_0001)
        .with_marker(true)
        .with_csrcs(&[7, 8])
        .unwrap()
        .with_extension(Some(RtpExtension {
            profile: 0xBEDE,
            data: &[1, 2, 3, 4],
        }))
        .write_packet(&[0xD5; 160], 4, &mut pcma)
        .unwrap();
    pcma.truncate(len);
    a.send_to(&pcma, caller_port).await.unwrap();
    let (got, from) = recv(&b).await;
    assert_eq!(got, pcma);
    assert_eq!(from, callee_port);

    // G.722 the other way.
    let g722 = rtp(9, 7, 320, 0xBBBB_0002, false, &[0x5A; 160]);
    b.send_to(&g722, callee_port).await.unwrap();
    let (got, from) = recv(&a).await;
    assert_eq!(got, g722);
    assert_eq!(from, caller_port);

    let [caller, callee] = media.close().await;
    assert_eq!((caller.packets_in, caller.bytes_in), (1, pcma.len() as u64));
    assert_eq!(
        (caller.packets_out, caller.bytes_out),
        (1, g722.len() as u64)
    );
    assert_eq!((callee.packets_in, callee.packets_out), (1, 1));
    assert_eq!(callee.bytes_out, pcma.len() as u64);
    // The counters serialise for the admin API.
    let json = serde_json::to_value(&caller).unwrap();
    assert_eq!(json["packets_in"], 1);
}

#[tokio::test]
async fn remote_latches_to_the_rtp_source() {
    let media = relay().allocate().unwrap();
    let (a_behind_nat, b) = (phone().await, phone().await);
    // SDP says one thing, packets come from another address.
    let sdp_address: SocketAddr = (LOCALHOST, 9).into();
    media.set_remote(Leg::Caller, sdp_address);
    // The callee gave no usable SDP address at all.

    b.send_to(
        &rtp(0, 1, 0, 2, true, &[0xFF; 160]),
        media.local_addr(Leg::Callee),
    )
    .await
    .unwrap();
    stats_when(&media, "B's packet", |s| s[1].packets_in == 1).await;
    a_behind_nat
        .send_to(
            &rtp(0, 1, 0, 1, true, &[0xFF; 160]),
            media.local_addr(Leg::Caller),
        )
        .await
        .unwrap();
    // B's first packet went to the SDP address; A's reaches B, whose
    // address was latched from its own packet.
    let (got, _) = recv(&b).await;
    assert_eq!(RtpPacket::parse(&got).unwrap().ssrc(), 1);

    let from_b = rtp(0, 2, 160, 2, false, &[0x7F; 160]);
    b.send_to(&from_b, media.local_addr(Leg::Callee))
        .await
        .unwrap();
    let (got, _) = recv(&a_behind_nat).await;
    assert_eq!(got, from_b);

    let [caller, callee] = media.stats();
    assert_eq!(caller.remote, Some(a_behind_nat.local_addr().unwrap()));
    assert_eq!(caller.latch_changes, 1);
    assert_eq!(callee.remote, Some(b.local_addr().unwrap()));
    assert_eq!(callee.latch_changes, 1);
}

#[tokio::test]
async fn loss_and_jitter_are_counted() {
    let (media, a, b) = connected_call().await;
    let to = media.local_addr(Leg::Caller);
    // 20 ms of audio per packet sent back to back: every arrival is early,
    // which is jitter; sequence 10..=14 never sent, which is loss.
    let mut sent = 0;
    for seq in (0u16..10).chain(15..20) {
        let packet = rtp(8, seq, u32::from(seq) * 160, 0x1234, seq == 0, &[0xD5; 160]);
        a.send_to(&packet, to).await.unwrap();
        sent += 1;
    }
    stats_when(&media, "all packets", |s| s[0].packets_in == sent).await;
    for _ in 0..sent {
        recv(&b).await;
    }
    let [caller, callee] = media.stats();
    assert_eq!(caller.packets_lost, 5);
    assert!(caller.jitter > 20, "jitter {}", caller.jitter);
    assert!(caller.jitter_ms > 2.0);
    assert_eq!(callee.packets_out, sent);
    assert_eq!(callee.packets_lost, 0);
}

/// The packets a phone sends for one key press: start with marker, updates
/// every 20 ms, and three end reports.
fn key_press(event: u8, ts: u32, seq: &mut u16) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut push = |end: bool, duration: u16, marker: bool| {
        let report = TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        };
        packets.push(rtp(101, *seq, ts, 0x5151, marker, &report.to_bytes()));
        *seq = seq.wrapping_add(1);
    };
    push(false, 160, true);
    for duration in [320, 480, 640] {
        push(false, duration, false);
    }
    for _ in 0..3 {
        push(true, 800, false);
    }
    packets
}

#[tokio::test]
async fn dtmf_presses_are_reported_once_and_relayed() {
    let (media, a, b) = connected_call().await;
    media.set_dtmf_payload_type(Leg::Caller, Some(101));
    let mut events = media.events().expect("first call hands out the channel");
    assert!(media.events().is_none());

    let mut seq = 100;
    let mut packets = Vec::new();
    // '1' twice: same digit, told apart by the timestamp.
    packets.extend(key_press(1, 8000, &mut seq));
    packets.extend(key_press(1, 9600, &mut seq));
    packets.extend(key_press(11, 12000, &mut seq));
    // A long press of '0' (RFC 4733 §2.5.1.3): the first segment runs to
    // the 16-bit limit, the second continues at ts + 0xFFFF without marker.
    let long = |end: bool, ts: u32, duration: u16, marker: bool, seq: &mut u16| {
        let report = TelephoneEvent {
            event: 0,
            end,
            volume: 10,
            duration,
        };
        let p = rtp(101, *seq, ts, 0x5151, marker, &report.to_bytes());
        *seq += 1;
        p
    };
    let start = 20000;
    packets.push(long(false, start, 160, true, &mut seq));
    packets.push(long(false, start, 0x8000, false, &mut seq));
    packets.push(long(false, start, 0xFFFF, false, &mut seq));
    let next = start + 0xFFFF;
    packets.push(long(false, next, 400, false, &mut seq));
    for _ in 0..3 {
        packets.push(long(true, next, 800, false, &mut seq));
    }

    for p in &packets {
        a.send_to(p, media.local_addr(Leg::Caller)).await.unwrap();
    }
    let mut digits = Vec::new();
    for _ in 0..4 {
        match within("a DTMF event", events.recv()).await.unwrap() {
            MediaEvent::Dtmf {
                leg,
                digit,
                duration_ms,
            } => {
                assert_eq!(leg, Leg::Caller);
                digits.push((digit, duration_ms));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        digits,
        [
            ('1', 100),
            ('1', 100),
            ('#', 100),
            ('0', (0xFFFF + 800) / 8)
        ]
    );
    // Telephone events still reach the other party, every packet of them.
    for p in &packets {
        assert_eq!(&recv(&b).await.0, p);
    }
    let [caller, _] = media.close().await;
    assert_eq!(caller.dtmf_digits, 4);
    // Nothing more: the end retransmissions produced no extra digits.
    assert_eq!(events.recv().await, None);
}

#[tokio::test]
async fn taps_see_frames_from_allocation_and_count_drops() {
    let media = relay().allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    let mut both = media.tap(TapLegs::Both, 100);
    let _undrained = media.tap(TapLegs::Caller, 2);

    // Before the answer: the callee's address is not known yet, yet the tap
    // sees the caller's early packets.
    let early = rtp(0, 500, 80_000, 0xA, true, &[1, 2, 3, 4]);
    a.send_to(&early, media.local_addr(Leg::Caller))
        .await
        .unwrap();
    let frame = within("the early frame", both.recv()).await.unwrap();
    assert_eq!(
        (
            frame.leg,
            frame.sequence,
            frame.timestamp,
            frame.payload_type,
            frame.marker
        ),
        (Leg::Caller, 500, 80_000, 0, true)
    );
    assert_eq!(&frame.payload[..], &[1, 2, 3, 4]);
    assert_eq!(media.stats()[0].packets_not_forwarded, 1);

    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    for i in 1..5u16 {
        let payload = [i as u8; 160];
        a.send_to(
            &rtp(
                0,
                500 + i,
                80_000 + 160 * u32::from(i),
                0xA,
                false,
                &payload,
            ),
            media.local_addr(Leg::Caller),
        )
        .await
        .unwrap();
    }
    for i in 0..3u16 {
        b.send_to(
            &rtp(8, 9000 + i, 4_000 * u32::from(i), 0xB, i == 0, &[0x55; 80]),
            media.local_addr(Leg::Callee),
        )
        .await
        .unwrap();
    }
    stats_when(&media, "all packets", |s| {
        s[0].packets_in == 5 && s[1].packets_in == 3
    })
    .await;

    let mut caller_frames = Vec::new();
    let mut callee_frames = Vec::new();
    for _ in 0..7 {
        let f = within("a frame", both.recv()).await.unwrap();
        match f.leg {
            Leg::Caller => caller_frames.push(f),
            Leg::Callee => callee_frames.push(f),
        }
    }
    for (i, f) in caller_frames.iter().enumerate() {
        let i = i as u16 + 1;
        assert_eq!(f.sequence, 500 + i);
        assert_eq!(f.timestamp, 80_000 + 160 * u32::from(i));
        assert_eq!(&f.payload[..], &[i as u8; 160]);
    }
    for (i, f) in callee_frames.iter().enumerate() {
        assert_eq!((f.sequence, f.payload_type), (9000 + i as u16, 8));
        assert_eq!(f.timestamp, 4_000 * i as u32);
        assert_eq!(f.marker, i == 0);
        assert_eq!(f.payload.len(), 80);
    }
    assert_eq!((caller_frames.len(), callee_frames.len()), (4, 3));

    // The undrained caller tap held 2 of the 5 caller frames.
    let [caller, callee] = media.stats();
    assert_eq!(caller.tap_dropped, 3);
    assert_eq!(callee.tap_dropped, 0);
    media.close().await;
    assert!(both.recv().await.is_none(), "taps end with the call");
}

fn write_tone_wav(path: &std::path::Path, rate: u32, seconds: f64, hz: f64) -> Vec<f64> {
    let n = (f64::from(rate) * seconds) as usize;
    let tone: Vec<f64> = (0..n)
        .map(|i| (i as f64 * 2.0 * std::f64::consts::PI * hz / f64::from(rate)).sin() * 0.5)
        .collect();
    let samples: Vec<i16> = tone.iter().map(|s| (s * 32767.0) as i16).collect();
    let file = std::fs::File::create(path).unwrap();
    let mut w = WavWriter::new(
        file,
        WavSpec {
            format: WavFormat::Pcm16,
            channels: 1,
            sample_rate: rate,
        },
    )
    .unwrap();
    w.write_pcm16_mono(&samples).unwrap();
    w.finish().unwrap();
    tone
}

#[tokio::test]
async fn prompt_plays_paced_pcmu_and_mutes_the_other_party() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("welcome.wav");
    write_tone_wav(&path, 16_000, 1.0, 440.0);
    let prompt = Prompt::load(&path).unwrap();
    assert_eq!(prompt.samples().len(), 8000);
    assert_eq!(prompt.packet_count(), 50);

    let (media, a, b) = connected_call().await;
    let playing = tokio::spawn(media.play_prompt(Leg::Callee, &prompt, Codec::Pcmu));
    // The caller talks while B hears the prompt: not forwarded.
    for seq in 0..5u16 {
        a.send_to(
            &rtp(0, seq, u32::from(seq) * 160, 0xA, false, &[0; 160]),
            media.local_addr(Leg::Caller),
        )
        .await
        .unwrap();
    }
    stats_when(&media, "the caller's packets", |s| s[0].packets_in == 5).await;

    let mut decoded = Vec::new();
    let mut first: Option<(u16, u32, u32)> = None;
    for i in 0..50u32 {
        let (packet, from) = recv(&b).await;
        assert_eq!(from, media.local_addr(Leg::Callee));
        let p = RtpPacket::parse(&packet).unwrap();
        assert_eq!((p.payload_type(), p.payload().len()), (0, 160));
        assert_eq!(p.marker(), i == 0);
        let (seq0, ts0, ssrc) = *first.get_or_insert((p.sequence(), p.timestamp(), p.ssrc()));
        assert_eq!(p.ssrc(), ssrc);
        assert_eq!(p.sequence(), seq0.wrapping_add(i as u16));
        assert_eq!(p.timestamp(), ts0.wrapping_add(160 * i));
        Law::MuLaw.decode_into(p.payload(), &mut decoded);
    }
    assert_eq!(within("the prompt", playing).await.unwrap().unwrap(), 50);

    // The tone as it should sound at 8 kHz; µ-law and the resampler leave
    // it recognisably the same.
    let ideal: Vec<f64> = (0..decoded.len())
        .map(|i| (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 0.5 * 32767.0)
        .collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let got: Vec<f64> = decoded.iter().map(|&s| f64::from(s)).collect();
    let correlation = dot(&got, &ideal) / (dot(&got, &got) * dot(&ideal, &ideal)).sqrt();
    assert!(correlation > 0.95, "correlation {correlation}");
    let rms = (dot(&got, &got) / got.len() as f64).sqrt();
    let ideal_rms = 0.5 * 32767.0 / 2f64.sqrt();
    assert!(
        (rms / ideal_rms - 1.0).abs() < 0.1,
        "rms {rms} vs {ideal_rms}"
    );

    let [caller, callee] = media.stats();
    assert_eq!(caller.packets_not_forwarded, 5);
    assert_eq!((callee.packets_out, callee.prompt_packets_out), (50, 50));

    // After the prompt the caller is heard again.
    let after = rtp(0, 5, 800, 0xA, false, &[0x11; 160]);
    a.send_to(&after, media.local_addr(Leg::Caller))
        .await
        .unwrap();
    assert_eq!(recv(&b).await.0, after);
}

#[tokio::test]
async fn prompts_need_g711() {
    let (media, a, b) = connected_call().await;
    let prompt = Prompt::from_samples(vec![0i16; 320]);
    let err = media
        .play_prompt(Leg::Caller, &prompt, Codec::G722)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        MediaError::PromptCodecUnsupported(Codec::G722)
    ));
    assert_eq!(
        err.to_string(),
        "prompts can be played as PCMU or PCMA only, not G722"
    );
    // The refused prompt did not mute anything.
    let packet = rtp(9, 1, 0, 0xB, false, &[0; 160]);
    b.send_to(&packet, media.local_addr(Leg::Callee))
        .await
        .unwrap();
    assert_eq!(recv(&a).await.0, packet);

    let err = Prompt::load("/nonexistent/prompt.wav").unwrap_err();
    assert!(matches!(err, MediaError::PromptOpen { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"not audio at all").unwrap();
    assert!(matches!(
        Prompt::load(&junk),
        Err(MediaError::PromptDecode { .. })
    ));
}

#[tokio::test]
async fn exhausted_port_range_is_a_clear_error_and_ports_come_back() {
    // A range with exactly two even ports; retry elsewhere if something on
    // this machine holds one of them.
    for first in (41_000u16..42_000).step_by(4) {
        let relay = MediaRelay::new(RelayConfig {
            address: LOCALHOST,
            ports: first..=first + 3,
        });
        let Ok(media) = relay.allocate() else {
            continue;
        };
        let ports = [media.local_addr(Leg::Caller), media.local_addr(Leg::Callee)];
        let err = relay.allocate().unwrap_err();
        assert!(matches!(err, MediaError::PortsExhausted { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "no free pair of even RTP ports on 127.0.0.1 in {first}-{}",
                first + 3
            )
        );
        // Closing frees the sockets and the ports.
        media.close().await;
        for port in ports {
            drop(std::net::UdpSocket::bind(port).expect("port released"));
        }
        let again = relay.allocate().unwrap();
        drop(again);
        return;
    }
    panic!("no free port range found");
}

#[test]
fn allocate_needs_a_runtime() {
    let err = relay().allocate().unwrap_err();
    assert!(matches!(err, MediaError::NoRuntime), "{err}");
}
