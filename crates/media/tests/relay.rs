//! The relay on real UDP sockets: two plain sockets on 127.0.0.1 play the
//! phones. Timeouts are generous and only guard against hangs.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use callhost_media::{
    CallMedia, Codec, Latching, Law, Leg, LegStats, MediaError, MediaEvent, MediaRelay, Prompt,
    RelayConfig, RtpExtension, RtpHeader, RtpPacket, TapLegs, TelephoneEvent, WavFormat, WavSpec,
    WavWriter,
};
use tokio::net::UdpSocket;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PATIENCE: Duration = Duration::from_secs(10);

const PORTS: std::ops::RangeInclusive<u16> = 20000..=60000;

fn relay() -> MediaRelay {
    MediaRelay::new(RelayConfig::new(LOCALHOST, PORTS))
}

fn relay_with(config: impl FnOnce(&mut RelayConfig)) -> MediaRelay {
    let mut relay_config = RelayConfig::new(LOCALHOST, PORTS);
    config(&mut relay_config);
    MediaRelay::new(relay_config)
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
async fn follow_mode_latches_to_any_source() {
    // The behaviour of earlier versions, kept for labs.
    let media = relay_with(|c| c.latching = Latching::Follow)
        .allocate()
        .unwrap();
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

/// Sends `packet` from `from` to `leg`'s relay port.
async fn send(media: &CallMedia, from: &UdpSocket, leg: Leg, packet: &[u8]) {
    from.send_to(packet, media.local_addr(leg)).await.unwrap();
}

/// An RTCP sender report header as multiplexed on the RTP port: it parses
/// as RTP with marker set and payload type 72 (RTCP packet type 200).
fn rtcp_sender_report(ssrc: u32) -> Vec<u8> {
    let mut packet = rtp(72, 6, 0, ssrc, true, &[0; 16]);
    packet[0] = 0x80;
    assert_eq!(packet[1], 200);
    packet
}

#[tokio::test]
async fn a_nat_source_latches_within_the_window() {
    let media = relay().allocate().unwrap();
    let (a_behind_nat, b) = (phone().await, phone().await);
    // SDP says one thing (nobody listens there), packets come from another
    // address, within the latch window.
    let sdp_address: SocketAddr = (LOCALHOST, 9).into();
    media.set_remote(Leg::Caller, sdp_address);
    media.set_remote(Leg::Callee, b.local_addr().unwrap());

    let from_a = rtp(0, 1, 0, 0xA, true, &[0xFF; 160]);
    send(&media, &a_behind_nat, Leg::Caller, &from_a).await;
    assert_eq!(recv(&b).await.0, from_a);
    let from_b = rtp(0, 2, 160, 0xB, false, &[0x7F; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_behind_nat).await.0, from_b);

    // A re-INVITE repeating the SDP address keeps the latched one.
    media.set_remote(Leg::Caller, sdp_address);
    // A second source, still within the window: foreign.
    let stranger = phone().await;
    send(
        &media,
        &stranger,
        Leg::Caller,
        &rtp(0, 9, 0, 0x5, false, &[1; 160]),
    )
    .await;
    stats_when(&media, "the stranger's packet", |s| {
        s[0].foreign_packets == 1
    })
    .await;
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_behind_nat).await.0, from_b);
    let from_a = rtp(0, 2, 160, 0xA, false, &[0xEE; 160]);
    send(&media, &a_behind_nat, Leg::Caller, &from_a).await;
    // The stranger's packet was not forwarded: A's is the next B sees.
    assert_eq!(recv(&b).await.0, from_a);

    let [caller, callee] = media.stats();
    assert_eq!(caller.remote, Some(a_behind_nat.local_addr().unwrap()));
    assert_eq!((caller.latch_changes, caller.foreign_packets), (1, 1));
    assert_eq!(callee.remote, Some(b.local_addr().unwrap()));
    assert_eq!((callee.latch_changes, callee.foreign_packets), (0, 0));
}

#[tokio::test]
async fn datagrams_before_the_address_is_signalled_are_held_and_released_only_from_it() {
    let media = relay().allocate().unwrap();
    let (a, b, spoofer) = (phone().await, phone().await, phone().await);
    let mut tap = media.tap(TapLegs::Both, 16);
    media.set_dtmf_payload_type(Leg::Caller, Some(101));
    let mut events = media.events().unwrap();
    media.set_remote(Leg::Callee, b.local_addr().unwrap());

    // Before the caller's SDP: a spoofer's packets and the phone's own
    // (it sends as soon as it has the ACK). All foreign, none forwarded.
    for seq in 0..2 {
        send(
            &media,
            &spoofer,
            Leg::Caller,
            &rtp(0, seq, 0, 0x5, false, &[9; 160]),
        )
        .await;
    }
    let early: Vec<Vec<u8>> = (48..51)
        .map(|seq| rtp(0, seq, u32::from(seq) * 160, 0xA, false, &[seq as u8; 160]))
        .collect();
    for packet in &early {
        send(&media, &a, Leg::Caller, packet).await;
    }
    stats_when(&media, "the early packets", |s| s[0].foreign_packets == 5).await;
    assert_eq!(media.stats()[1].packets_out, 0, "nothing forwarded yet");

    // The SDP names the phone: its held packets go first, in order; the
    // spoofer's never.
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    let later = rtp(0, 51, 51 * 160, 0xA, false, &[51; 160]);
    send(&media, &a, Leg::Caller, &later).await;
    for expected in early.iter().chain(std::iter::once(&later)) {
        assert_eq!(&recv(&b).await.0, expected);
    }
    for sequence in 48..52 {
        let frame = within("a tap frame", tap.recv()).await.unwrap();
        assert_eq!(frame.sequence, sequence);
    }

    let [caller, callee] = media.close().await;
    assert_eq!(caller.packets_in, 6, "held packets are not counted twice");
    assert_eq!(caller.foreign_packets, 2, "the spoofer's stay foreign");
    assert_eq!((caller.dtmf_digits, caller.packets_lost), (0, 0));
    assert_eq!(callee.packets_out, 4);
    assert_eq!(events.recv().await, None);
}

#[tokio::test]
async fn held_datagrams_are_bounded_and_expire() {
    let media = relay().allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    // More than the hold takes: only the newest are kept.
    let count = callhost_media::relay::HOLD_LIMIT as u16 + 4;
    for seq in 0..count {
        send(
            &media,
            &a,
            Leg::Caller,
            &rtp(0, seq, 0, 0xA, false, &[1; 160]),
        )
        .await;
    }
    stats_when(&media, "the early packets", |s| {
        s[0].foreign_packets == u64::from(count)
    })
    .await;
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    send(
        &media,
        &a,
        Leg::Caller,
        &rtp(0, count, 0, 0xA, false, &[1; 160]),
    )
    .await;
    let first = recv(&b).await.0;
    assert_eq!(
        u16::from_be_bytes([first[2], first[3]]),
        count - callhost_media::relay::HOLD_LIMIT as u16,
        "the oldest held packets were dropped"
    );
    drop(media);

    // Held too long: not forwarded.
    let media = relay().allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    send(
        &media,
        &a,
        Leg::Caller,
        &rtp(0, 7, 0, 0xA, false, &[1; 160]),
    )
    .await;
    stats_when(&media, "the early packet", |s| s[0].foreign_packets == 1).await;
    tokio::time::sleep(callhost_media::relay::HOLD_AGE + Duration::from_millis(50)).await;
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    let later = rtp(0, 8, 160, 0xA, false, &[2; 160]);
    send(&media, &a, Leg::Caller, &later).await;
    assert_eq!(recv(&b).await.0, later, "the expired packet was not sent");
}

#[tokio::test]
async fn a_spoofer_after_latching_is_dropped_and_counted() {
    let (media, a, b) = connected_call().await;
    let mut tap = media.tap(TapLegs::Caller, 16);
    let first = rtp(0, 1, 0, 0xA, true, &[1; 160]);
    send(&media, &a, Leg::Caller, &first).await;
    assert_eq!(recv(&b).await.0, first);
    let from_b = rtp(8, 1, 0, 0xB, true, &[3; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a).await.0, from_b);

    // Both legs latched. Another address: RTP of another stream, RTCP claiming A's stream
    // (RTCP never moves a leg), and RTP towards the callee leg too.
    let spoofer = phone().await;
    send(
        &media,
        &spoofer,
        Leg::Caller,
        &rtp(0, 2, 160, 0x5900F, false, &[9; 160]),
    )
    .await;
    send(&media, &spoofer, Leg::Caller, &rtcp_sender_report(0xA)).await;
    send(
        &media,
        &spoofer,
        Leg::Callee,
        &rtp(0, 2, 160, 0x5900F, false, &[9; 160]),
    )
    .await;
    stats_when(&media, "the spoofed packets", |s| {
        s[0].foreign_packets == 2 && s[1].foreign_packets == 1
    })
    .await;

    // The legitimate streams keep flowing, both ways, to the right places.
    let second = rtp(0, 2, 160, 0xA, false, &[2; 160]);
    send(&media, &a, Leg::Caller, &second).await;
    assert_eq!(
        recv(&b).await.0,
        second,
        "nothing of the spoofer's reached B"
    );
    let from_b = rtp(8, 2, 160, 0xB, false, &[4; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(
        recv(&a).await.0,
        from_b,
        "nothing of the spoofer's reached A"
    );
    // A's own RTCP still passes.
    let report = rtcp_sender_report(0xA);
    send(&media, &a, Leg::Caller, &report).await;
    assert_eq!(recv(&b).await.0, report);

    let frames = [
        within("a frame", tap.recv()).await.unwrap(),
        within("a frame", tap.recv()).await.unwrap(),
    ];
    assert_eq!(frames.map(|f| f.sequence), [1, 2]);

    let [caller, callee] = media.close().await;
    assert!(tap.recv().await.is_none(), "the tap saw no spoofed frame");
    assert_eq!(caller.remote, Some(a.local_addr().unwrap()));
    assert_eq!(callee.remote, Some(b.local_addr().unwrap()));
    assert_eq!((caller.packets_in, caller.foreign_packets), (5, 2));
    assert_eq!((callee.packets_in, callee.foreign_packets), (3, 1));
    assert_eq!((caller.latch_changes, callee.latch_changes), (0, 0));
    assert_eq!((callee.packets_out, caller.packets_out), (3, 2));
    assert_eq!(caller.packets_lost, 0);
}

#[tokio::test]
async fn the_same_stream_from_a_new_address_relatches() {
    let (media, a, b) = connected_call().await;
    send(&media, &a, Leg::Caller, &rtp(0, 1, 0, 0xA, true, &[1; 160])).await;
    recv(&b).await;

    // A's NAT re-binds: the same SSRC arrives from elsewhere.
    let a_moved = phone().await;
    let moved = rtp(0, 2, 160, 0xA, false, &[2; 160]);
    send(&media, &a_moved, Leg::Caller, &moved).await;
    assert_eq!(recv(&b).await.0, moved);
    let from_b = rtp(0, 1, 0, 0xB, true, &[3; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_moved).await.0, from_b, "B's audio follows A");

    let [caller, _] = media.stats();
    assert_eq!(caller.remote, Some(a_moved.local_addr().unwrap()));
    assert_eq!((caller.latch_changes, caller.foreign_packets), (1, 0));
}

#[tokio::test]
async fn the_signalled_address_takes_a_leg_back_from_a_racing_source() {
    let (media, a, b) = connected_call().await;
    // Someone beats A to the port within the window and latches the leg...
    let racer = phone().await;
    send(
        &media,
        &racer,
        Leg::Caller,
        &rtp(0, 1, 0, 0xBAD, true, &[9; 160]),
    )
    .await;
    recv(&b).await;
    // ...until A, from the address its SDP signalled, sends.
    let from_a = rtp(0, 1, 0, 0xA, true, &[1; 160]);
    send(&media, &a, Leg::Caller, &from_a).await;
    assert_eq!(recv(&b).await.0, from_a);
    send(
        &media,
        &racer,
        Leg::Caller,
        &rtp(0, 2, 160, 0xBAD, false, &[9; 160]),
    )
    .await;
    stats_when(&media, "the racer's packet", |s| s[0].foreign_packets == 1).await;
    let from_b = rtp(0, 1, 0, 0xB, true, &[3; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a).await.0, from_b);
    assert_eq!(media.stats()[0].remote, Some(a.local_addr().unwrap()));
}

#[tokio::test]
async fn after_the_window_only_the_signalled_address_latches() {
    let window = Duration::from_millis(50);
    let media = relay_with(|c| c.latch_window = window).allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    tokio::time::sleep(window * 4).await;

    let elsewhere = phone().await;
    send(
        &media,
        &elsewhere,
        Leg::Caller,
        &rtp(0, 1, 0, 0xA, true, &[9; 160]),
    )
    .await;
    stats_when(&media, "the packet from elsewhere", |s| {
        s[0].foreign_packets == 1
    })
    .await;
    let from_a = rtp(0, 1, 0, 0xA, true, &[1; 160]);
    send(&media, &a, Leg::Caller, &from_a).await;
    assert_eq!(recv(&b).await.0, from_a, "the first packet B sees");
    let [caller, _] = media.stats();
    assert_eq!(caller.remote, Some(a.local_addr().unwrap()));
    assert_eq!(caller.latch_changes, 0);
}

#[tokio::test]
async fn a_new_signalled_address_is_sent_to_and_latched() {
    let (media, a, b) = connected_call().await;
    send(&media, &a, Leg::Caller, &rtp(0, 1, 0, 0xA, true, &[1; 160])).await;
    recv(&b).await;

    // A re-INVITE moves A: B's audio goes to the new address at once.
    let a_new = phone().await;
    media.set_remote(Leg::Caller, a_new.local_addr().unwrap());
    let from_b = rtp(0, 1, 0, 0xB, true, &[3; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_new).await.0, from_b);
    // The new address latches with a new stream; the old one is now foreign
    // unless it sends A's old stream.
    let from_new = rtp(0, 1, 0, 0xA2, true, &[4; 160]);
    send(&media, &a_new, Leg::Caller, &from_new).await;
    assert_eq!(recv(&b).await.0, from_new);
    send(
        &media,
        &a,
        Leg::Caller,
        &rtp(0, 2, 160, 0xA, false, &[1; 160]),
    )
    .await;
    stats_when(&media, "the old stream", |s| s[0].foreign_packets == 1).await;
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_new).await.0, from_b);
    assert_eq!(media.stats()[0].remote, Some(a_new.local_addr().unwrap()));
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
    let undrained = media.tap(TapLegs::Caller, 2);
    media.set_remote(Leg::Caller, a.local_addr().unwrap());

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
    // The full tap counts its own drops, per leg, for its consumer.
    assert_eq!(
        (
            undrained.dropped(Leg::Caller),
            undrained.dropped(Leg::Callee)
        ),
        (3, 0)
    );
    assert_eq!(
        (both.dropped(Leg::Caller), both.dropped(Leg::Callee)),
        (0, 0)
    );
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
            port_quarantine: Duration::ZERO,
            ..RelayConfig::new(LOCALHOST, first..=first + 3)
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

#[tokio::test]
async fn after_a_move_the_known_stream_latches_from_anywhere() {
    let window = Duration::from_millis(50);
    let media = relay_with(|c| c.latch_window = window).allocate().unwrap();
    let (a, b) = (phone().await, phone().await);
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    send(&media, &a, Leg::Caller, &rtp(0, 1, 0, 0xA, true, &[1; 160])).await;
    recv(&b).await;
    tokio::time::sleep(window * 4).await;

    // A re-INVITE moves A to an address behind NAT; no window opens again.
    media.set_remote(Leg::Caller, (LOCALHOST, 9).into());
    let (stranger, a_nat) = (phone().await, phone().await);
    send(
        &media,
        &stranger,
        Leg::Caller,
        &rtp(0, 7, 0, 0x5, true, &[9; 160]),
    )
    .await;
    stats_when(&media, "the stranger's packet", |s| {
        s[0].foreign_packets == 1
    })
    .await;
    // A's stream, from its new NAT address: latched.
    let moved = rtp(0, 2, 160, 0xA, false, &[2; 160]);
    send(&media, &a_nat, Leg::Caller, &moved).await;
    assert_eq!(recv(&b).await.0, moved, "the first packet B sees");
    let from_b = rtp(0, 1, 0, 0xB, true, &[3; 160]);
    send(&media, &b, Leg::Callee, &from_b).await;
    assert_eq!(recv(&a_nat).await.0, from_b);
    let [caller, _] = media.stats();
    assert_eq!(caller.remote, Some(a_nat.local_addr().unwrap()));
    assert_eq!((caller.latch_changes, caller.foreign_packets), (1, 1));
}

#[tokio::test]
async fn ports_are_picked_at_random_over_the_whole_range() {
    // 32 even ports; no quarantine, so every allocation may pick any port.
    let (first, last) = (43_000u16, 43_063u16);
    let relay = relay_with(|c| {
        c.ports = first..=last;
        c.port_quarantine = Duration::ZERO;
    });
    let mut ports = Vec::new();
    for _ in 0..100 {
        let media = relay.allocate().unwrap();
        ports.push(media.local_addr(Leg::Caller).port());
        ports.push(media.local_addr(Leg::Callee).port());
        media.close().await;
    }
    assert!(ports
        .iter()
        .all(|p| p % 2 == 0 && (first..=last).contains(p)));
    // Each leg's ports on their own cover the range too (100 picks of 32
    // leave about 1.4 unused).
    for leg in [0, 1] {
        let distinct: std::collections::HashSet<u16> =
            ports.iter().skip(leg).step_by(2).copied().collect();
        assert!(distinct.len() >= 24, "{} of 32 ports used", distinct.len());
    }
    // Handed out in sequence, almost every next port would be 2 above the
    // last; at random, one in 32 is.
    let in_sequence = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
    assert!(
        in_sequence < 40,
        "{in_sequence} of 199 steps in sequence: {ports:?}"
    );
}

#[tokio::test]
async fn a_freed_port_is_not_handed_out_again_at_once() {
    // Four even ports, the default quarantine; retry elsewhere if something
    // on this machine holds one of them.
    for first in (44_000u16..45_000).step_by(8) {
        let relay = MediaRelay::new(RelayConfig::new(LOCALHOST, first..=first + 7));
        let Ok(media) = relay.allocate() else {
            continue;
        };
        let old = [media.local_addr(Leg::Caller), media.local_addr(Leg::Callee)];
        media.close().await;
        let Ok(again) = relay.allocate() else {
            continue;
        };
        let new = [again.local_addr(Leg::Caller), again.local_addr(Leg::Callee)];
        assert!(
            new.iter().all(|port| !old.contains(port)),
            "{old:?} handed out again as {new:?}"
        );
        // The old ports are free for the system but not for the relay.
        for port in old {
            drop(std::net::UdpSocket::bind(port).expect("port released"));
        }
        drop(again);
        // Everything is quarantined now: rather than refuse the call, the
        // relay takes the ports quarantined longest (the first call's).
        let third = relay
            .allocate()
            .expect("quarantined ports as the last resort");
        let third = [third.local_addr(Leg::Caller), third.local_addr(Leg::Callee)];
        assert!(
            third.iter().all(|port| old.contains(port)),
            "{third:?} are not the oldest quarantined {old:?}"
        );
        return;
    }
    panic!("no free port range found");
}

#[test]
fn allocate_needs_a_runtime() {
    let err = relay().allocate().unwrap_err();
    assert!(matches!(err, MediaError::NoRuntime), "{err}");
}

/// SRTP keys of one leg as the relay and as the phone see them.
fn srtp_leg(
    suite: callhost_media::sdes::CryptoSuite,
) -> (
    callhost_media::srtp::SrtpKeys,
    callhost_media::srtp::LegSrtp,
) {
    use callhost_media::sdes::KeyMaterial;
    use callhost_media::srtp::{LegSrtp, SrtpKeys};
    let (phone_key, host_key) = (KeyMaterial::generate(suite), KeyMaterial::generate(suite));
    let relay_side = SrtpKeys {
        receive: phone_key.clone(),
        send: host_key.clone(),
    };
    let phone_side = LegSrtp::new(SrtpKeys {
        receive: host_key,
        send: phone_key,
    });
    (relay_side, phone_side)
}

#[tokio::test]
async fn an_srtp_leg_is_decrypted_for_taps_and_the_plain_leg_and_encrypted_towards_its_party() {
    use callhost_media::sdes::CryptoSuite;
    let (media, srtp_phone, plain_phone) = connected_call().await;
    let (keys, mut phone) = srtp_leg(CryptoSuite::AesCm128HmacSha1_80);
    media.set_srtp(Leg::Caller, Some(keys));
    let mut tap = media.tap(TapLegs::Both, 64);

    // Caller → callee: SRTP in, plain out, the tap sees the plain payload.
    let payload = [0x55u8; 160];
    let plain = rtp(8, 1, 160, 0xAAAA, false, &payload);
    let sent = phone.protect(&plain).unwrap();
    srtp_phone
        .send_to(&sent, media.local_addr(Leg::Caller))
        .await
        .unwrap();
    let (got, _) = recv(&plain_phone).await;
    assert_eq!(got, plain, "the plain leg gets the decrypted packet");
    let frame = within("a tap frame", tap.recv()).await.unwrap();
    assert_eq!(&frame.payload[..], &payload[..]);

    // Callee → caller: plain in, SRTP out that only the phone's key opens.
    let back = rtp(8, 7, 1120, 0xBBBB, false, &[0x33; 160]);
    plain_phone
        .send_to(&back, media.local_addr(Leg::Callee))
        .await
        .unwrap();
    let (wire, _) = recv(&srtp_phone).await;
    assert_ne!(wire, back, "plain audio went to the SRTP leg");
    assert_eq!(phone.unprotect(&wire).unwrap(), back);

    // A replay and a packet under another key are dropped and counted.
    srtp_phone
        .send_to(&sent, media.local_addr(Leg::Caller))
        .await
        .unwrap();
    let (_, mut stranger) = srtp_leg(CryptoSuite::AesCm128HmacSha1_80);
    let forged = stranger
        .protect(&rtp(8, 2, 320, 0xAAAA, false, &payload))
        .unwrap();
    srtp_phone
        .send_to(&forged, media.local_addr(Leg::Caller))
        .await
        .unwrap();
    stats_when(&media, "the rejects counted", |s| {
        s[0].srtp_replayed == 1 && s[0].srtp_rejected == 1
    })
    .await;
    let stats = media.stats();
    assert!(stats[0].srtp && !stats[1].srtp, "{stats:?}");
    assert_eq!(
        stats[1].packets_out, 1,
        "only the genuine packet went on: {stats:?}"
    );
}

#[tokio::test]
async fn a_leg_awaiting_its_keys_holds_its_packets_and_gets_no_plain_audio() {
    use callhost_media::sdes::CryptoSuite;
    let media = relay().allocate().unwrap();
    let (caller, callee) = (phone().await, phone().await);
    media.set_remote(Leg::Caller, caller.local_addr().unwrap());
    media.await_srtp(Leg::Callee);
    media.set_remote(Leg::Callee, callee.local_addr().unwrap());
    let (keys, mut callee_srtp) = srtp_leg(CryptoSuite::AeadAes128Gcm);

    // The callee sends before its answer (and key) is through.
    let early = rtp(0, 1, 160, 0xC0C0, false, &[0x11; 160]);
    callee
        .send_to(
            &callee_srtp.protect(&early).unwrap(),
            media.local_addr(Leg::Callee),
        )
        .await
        .unwrap();
    // The caller's audio is not sent to the callee in the clear meanwhile.
    caller
        .send_to(
            &rtp(0, 9, 160, 0xD0D0, false, &[0x22; 160]),
            media.local_addr(Leg::Caller),
        )
        .await
        .unwrap();
    stats_when(&media, "both seen", |s| s[1].packets_not_forwarded >= 1).await;
    assert_eq!(media.stats()[1].packets_out, 0);

    // The key arrives: the held packet is decrypted and reaches the caller.
    media.set_srtp(Leg::Callee, Some(keys));
    callee
        .send_to(
            &callee_srtp
                .protect(&rtp(0, 2, 320, 0xC0C0, false, &[0x11; 160]))
                .unwrap(),
            media.local_addr(Leg::Callee),
        )
        .await
        .unwrap();
    let (first, _) = recv(&caller).await;
    assert_eq!(first, early, "the held packet, decrypted, comes first");
}

#[tokio::test]
async fn rtcp_on_the_port_above_is_relayed_and_srtcp_terminated_per_leg() {
    use callhost_media::sdes::CryptoSuite;
    // RTP sockets whose port + 1 is free for the RTCP socket.
    let (a, a_rtcp, b, b_rtcp) = loop {
        let (a, b) = (phone().await, phone().await);
        let (ra, rb) = (
            UdpSocket::bind((LOCALHOST, a.local_addr().unwrap().port() + 1)).await,
            UdpSocket::bind((LOCALHOST, b.local_addr().unwrap().port() + 1)).await,
        );
        if let (Ok(ra), Ok(rb)) = (ra, rb) {
            break (a, ra, b, rb);
        }
    };
    let media = relay().allocate().unwrap();
    media.set_remote(Leg::Caller, a.local_addr().unwrap());
    media.set_remote(Leg::Callee, b.local_addr().unwrap());
    let (keys, mut phone_srtp) = srtp_leg(CryptoSuite::AesCm128HmacSha1_80);
    media.set_srtp(Leg::Caller, Some(keys));
    let relay_rtcp = |leg: Leg| {
        let rtp = media.local_addr(leg);
        SocketAddr::new(rtp.ip(), rtp.port() + 1)
    };

    // SRTCP from the SRTP caller arrives plain at the callee's RTCP port.
    let report = rtcp_sender_report(0xABCD);
    let protected = phone_srtp.protect(&report).unwrap();
    a_rtcp
        .send_to(&protected, relay_rtcp(Leg::Caller))
        .await
        .unwrap();
    let (got, from) = recv(&b_rtcp).await;
    assert_eq!(got, report);
    assert_eq!(from, relay_rtcp(Leg::Callee));

    // Plain RTCP from the callee arrives as SRTCP at the caller's.
    let back = rtcp_sender_report(0x1234);
    b_rtcp
        .send_to(&back, relay_rtcp(Leg::Callee))
        .await
        .unwrap();
    let (wire, _) = recv(&a_rtcp).await;
    assert_ne!(wire, back);
    assert_eq!(phone_srtp.unprotect(&wire).unwrap(), back);

    // Plain RTCP to the SRTP leg's port, and junk, are dropped.
    a_rtcp
        .send_to(&report, relay_rtcp(Leg::Caller))
        .await
        .unwrap();
    a_rtcp
        .send_to(b"junk", relay_rtcp(Leg::Caller))
        .await
        .unwrap();
    stats_when(&media, "the drops", |s| s[0].rtcp_dropped == 2).await;
    let stats = media.stats();
    assert_eq!((stats[0].rtcp_in, stats[1].rtcp_out), (1, 1), "{stats:?}");
    assert_eq!((stats[1].rtcp_in, stats[0].rtcp_out), (1, 1), "{stats:?}");
}
