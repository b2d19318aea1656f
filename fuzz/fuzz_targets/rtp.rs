//! Datagrams as they arrive on a relay port: RTP parsing, every accessor,
//! header re-encoding, and the RTCP classification of the latch.
#![no_main]

use callhost_media::latch::PacketKind;
use callhost_media::rtp::{RtpHeader, RtpPacket, FIXED_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes shaped as multiplexed RTCP (V=2, packet type 200-204),
    // which the relay must classify, not account.
    if data.len() >= 2 {
        let mut rtcp = data.to_vec();
        rtcp[0] = 0x80 | (rtcp[0] & 0x3F);
        rtcp[1] = 200 + rtcp[1] % 5;
        if let Ok(packet) = RtpPacket::parse(&rtcp) {
            assert_eq!(PacketKind::of(&packet), PacketKind::Rtcp);
        }
        check(&rtcp);
    }
});

fn check(data: &[u8]) {
    let packet = match RtpPacket::parse(data) {
        Ok(packet) => packet,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(packet.as_bytes(), data);
    let header_len = packet.header_len();
    let payload = packet.payload();
    let padding = usize::from(packet.padding_len());
    assert!(header_len >= FIXED_HEADER_LEN);
    assert_eq!(header_len + payload.len() + padding, data.len());
    assert_eq!(packet.has_padding(), data[0] & 0x20 != 0);
    assert!(!packet.has_padding() || padding >= 1);
    assert_eq!(packet.csrcs().len(), packet.csrc_count());
    let csrcs: Vec<u32> = packet.csrcs().collect();
    if let Some(extension) = packet.extension() {
        assert_eq!(extension.data.len() % 4, 0);
        assert_eq!(
            header_len,
            FIXED_HEADER_LEN + 4 * csrcs.len() + 4 + extension.data.len()
        );
    } else {
        assert_eq!(header_len, FIXED_HEADER_LEN + 4 * csrcs.len());
    }
    match PacketKind::of(&packet) {
        PacketKind::Rtcp => assert!(packet.marker() && (72..=76).contains(&packet.payload_type())),
        PacketKind::Rtp { ssrc } => assert_eq!(ssrc, packet.ssrc()),
    }

    // The decoded header writes back to the same bytes (bar the P bit, which
    // `write` leaves clear), and a whole packet with zero padding re-parses
    // to the same fields.
    let header = packet.header();
    assert_eq!(header.payload_type, packet.payload_type());
    assert_eq!(header.sequence, packet.sequence());
    assert_eq!(header.timestamp, packet.timestamp());
    assert_eq!(header.ssrc, packet.ssrc());
    assert_eq!(header.marker, packet.marker());
    assert_eq!(header.csrcs(), &csrcs[..]);
    assert_eq!(header.encoded_len(), header_len);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(header.write(&mut buf), Ok(header_len));
    assert_eq!(buf[0], data[0] & !0x20);
    assert_eq!(buf[1..header_len], data[1..header_len]);
    let written = header
        .write_packet(payload, packet.padding_len(), &mut buf)
        .expect("the buffer is as long as the packet");
    assert_eq!(written, data.len());
    let again = RtpPacket::parse(&buf[..written]).expect("a written packet parses");
    assert_eq!(again.header(), header);
    assert_eq!(again.payload(), payload);
    let rebuilt = RtpHeader::new(
        header.payload_type,
        header.sequence,
        header.timestamp,
        header.ssrc,
    )
    .with_marker(header.marker)
    .with_csrcs(&csrcs)
    .expect("at most 15 CSRCs")
    .with_extension(header.extension);
    assert_eq!(rebuilt, header);
}
