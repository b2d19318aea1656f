//! Property tests of the SDP parser and rewriter. The case count follows
//! `PROPTEST_CASES` (proptest's default config reads it); failures are not
//! persisted to files, so a run writes and prints nothing of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use callhost_media::sdp::{rewrite_connection, AddressPolicy, Sdp, SdpError};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any address, with the special ones [`Sdp::check_addresses`] cares about
/// (loopback, multicast, unspecified, broadcast, IPv4-mapped forms) often.
fn ip() -> impl Strategy<Value = IpAddr> {
    let special_v4 = prop_oneof![
        Just([0, 0, 0, 0]),
        Just([255, 255, 255, 255]),
        any::<[u8; 3]>().prop_map(|o| [127, o[0], o[1], o[2]]),
        (224u8..=239, any::<[u8; 3]>()).prop_map(|(a, o)| [a, o[0], o[1], o[2]]),
        any::<[u8; 3]>().prop_map(|o| [0, o[0], o[1], o[2]]),
    ];
    prop_oneof![
        3 => any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        3 => any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
        2 => special_v4.clone().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        1 => special_v4.prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
        1 => prop_oneof![
            Just(Ipv6Addr::UNSPECIFIED),
            Just(Ipv6Addr::LOCALHOST),
            any::<[u16; 7]>().prop_map(|s| Ipv6Addr::from([0xff00 | (s[0] & 0xff), s[1], s[2], s[3], s[4], s[5], s[6], 0])),
        ]
        .prop_map(IpAddr::V6),
    ]
}

/// The address rules of [`Sdp::check_addresses`], restated on octets:
/// whether `c=` may carry `address` when the SDP comes from `peer`.
fn model_accepts(address: IpAddr, peer: IpAddr, allow_local: bool) -> bool {
    fn v4_of(ip: IpAddr) -> Option<[u8; 4]> {
        match ip {
            IpAddr::V4(v4) => Some(v4.octets()),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                (s[..5] == [0; 5] && s[5] == 0xffff).then(|| {
                    let [a, b] = s[6].to_be_bytes();
                    let [c, d] = s[7].to_be_bytes();
                    [a, b, c, d]
                })
            }
        }
    }
    fn is_loopback(ip: IpAddr) -> bool {
        match v4_of(ip) {
            Some(o) => o[0] == 127,
            None => ip == IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
    if address == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        return true;
    }
    if is_loopback(address) {
        return allow_local || is_loopback(peer);
    }
    match v4_of(address) {
        Some(o) => o[0] != 0 && !(224..=239).contains(&o[0]) && o != [255; 4],
        None => {
            let s = match address {
                IpAddr::V6(v6) => v6.segments(),
                IpAddr::V4(_) => unreachable!(),
            };
            s[0] >> 8 != 0xff && s != [0; 8]
        }
    }
}

fn c_line(ip: IpAddr) -> String {
    let kind = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!("c=IN {kind} {ip}")
}

/// Lines that are neither c= nor m=, in any order: they must survive as-is.
fn other_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|s| format!("a={s}")),
        "[a-z]{1,8}:[ -~]{0,20}"
            .prop_filter("not rtpmap", |s| !s.starts_with("rtpmap:"))
            .prop_map(|s| format!("a={s}")),
        "[A-Z]{2}:[0-9]{1,5}".prop_map(|s| format!("b={s}")),
        "[ -~]{0,30}".prop_map(|s| format!("i={s}")),
        Just("a=sendonly".to_owned()),
        (0u8..128, "[A-Za-z0-9-]{1,12}", 1u32..100_000)
            .prop_map(|(pt, name, rate)| format!("a=rtpmap:{pt} {name}/{rate}")),
    ]
}

/// A valid description: session part, an optional video stream before the
/// audio one, the audio stream, with `\r\n` or `\n` line ends.
fn sdp_text() -> impl Strategy<Value = String> {
    (
        proptest::option::of(ip()),
        proptest::option::of(ip()),
        any::<u16>(),
        proptest::collection::vec(0u8..128, 1..6),
        proptest::collection::vec(other_line(), 0..4),
        proptest::collection::vec(other_line(), 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter("needs an address", |t| t.0.is_some() || t.1.is_some())
        .prop_map(
            |(session_c, media_c, port, pts, session_extra, media_extra, video, crlf)| {
                let mut lines = vec![
                    "v=0".to_owned(),
                    "o=- 1 2 IN IP4 198.51.100.1".to_owned(),
                    "s=-".to_owned(),
                ];
                if let Some(ip) = session_c {
                    lines.push(c_line(ip));
                }
                lines.push("t=0 0".to_owned());
                lines.extend(session_extra);
                if video {
                    lines.push("m=video 5004 RTP/AVP 96".to_owned());
                    lines.push("c=IN IP4 198.51.100.9".to_owned());
                }
                let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
                lines.push(format!("m=audio {port} RTP/AVP {}", fmts.join(" ")));
                if let Some(ip) = media_c {
                    lines.push(c_line(ip));
                }
                lines.extend(media_extra);
                let eol = if crlf { "\r\n" } else { "\n" };
                lines.iter().map(|l| format!("{l}{eol}")).collect()
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Sdp::parse_bytes(&bytes);
    }

    #[test]
    fn parsing_sdp_like_text_never_panics(
        lines in proptest::collection::vec("[a-z=]{0,2}[ -~]{0,40}", 0..12),
        crlf in any::<bool>(),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let text: String = std::iter::once("v=0".to_owned())
            .chain(lines)
            .map(|l| format!("{l}{eol}"))
            .collect();
        if Sdp::parse(&text).is_ok() {
            let _ = rewrite_connection(&text, IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
        }
    }

    #[test]
    fn rewrite_then_parse_round_trips(text in sdp_text(), relay in ip(), relay_port in any::<u16>()) {
        let before = Sdp::parse(&text).unwrap();
        let rewritten = rewrite_connection(&text, relay, relay_port).unwrap();
        let after = Sdp::parse(&rewritten).unwrap();

        prop_assert_eq!(after.audio_endpoint().unwrap(), (relay, relay_port).into());
        let (a, b) = (before.audio().unwrap(), after.audio().unwrap());
        prop_assert_eq!(&a.formats, &b.formats);
        prop_assert_eq!(a.direction, b.direction);
        prop_assert_eq!(a.telephone_event_payload_type(), b.telephone_event_payload_type());

        // Same number of lines; only c= lines outside other streams, the
        // audio m= line and the port of other streams' m= lines (rejected:
        // the relay carries one audio stream) differ; line ends are kept.
        let old: Vec<&str> = text.split_inclusive('\n').collect();
        let new: Vec<&str> = rewritten.split_inclusive('\n').collect();
        prop_assert_eq!(old.len(), new.len());
        for (o, n) in old.iter().zip(&new) {
            if o != n {
                let rejected = o.starts_with("m=video") && n.starts_with("m=video 0 ");
                prop_assert!(o.starts_with("c=") || o.starts_with("m=audio") || rejected, "{o:?} -> {n:?}");
                prop_assert_eq!(o.ends_with("\r\n"), n.ends_with("\r\n"));
            }
        }
        // Rewriting is idempotent.
        prop_assert_eq!(rewrite_connection(&rewritten, relay, relay_port).unwrap(), rewritten.clone());
    }

    #[test]
    fn checking_addresses_of_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        peer in ip(),
        allow_local in any::<bool>(),
    ) {
        let policy = if allow_local { AddressPolicy::AllowLocal } else { AddressPolicy::Strict };
        if let Ok(sdp) = Sdp::parse_bytes(&bytes) {
            let _ = sdp.check_addresses(peer, policy);
        }
    }

    #[test]
    fn check_addresses_refuses_exactly_the_special_addresses(
        text in sdp_text(),
        peer in ip(),
        allow_local in any::<bool>(),
    ) {
        let policy = if allow_local { AddressPolicy::AllowLocal } else { AddressPolicy::Strict };
        let sdp = Sdp::parse(&text).unwrap();
        let first_refused = text.split_inclusive('\n').enumerate().find_map(|(index, line)| {
            let address: IpAddr = line.strip_prefix("c=IN IP")?[2..].trim_end().parse().ok()?;
            (!model_accepts(address, peer, allow_local)).then_some((index + 1, address))
        });
        match (sdp.check_addresses(peer, policy), first_refused) {
            (Ok(()), None) => {}
            (Err(SdpError::RefusedAddress { line, address, .. }), Some(expected)) => {
                prop_assert_eq!((line, address), expected);
            }
            (got, expected) => prop_assert!(false, "{got:?}, model says {expected:?}\n{text}"),
        }
    }
}
