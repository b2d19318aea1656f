//! SDP bodies as a remote party sends them: parse, every accessor, the
//! address check, and the two rewriters with their invariants.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use callhost_media::sdp::{reanswer, rewrite_connection, AddressPolicy, Direction, Sdp, SdpError};
use libfuzzer_sys::fuzz_target;

/// Bytes in front of the body that choose the relay address, port, peer,
/// policy and answer direction.
const CONTROL: usize = 8;

fuzz_target!(|data: &[u8]| {
    if data.len() < CONTROL {
        return;
    }
    let (control, body) = data.split_at(CONTROL);
    let Ok(sdp) = Sdp::parse_bytes(body) else {
        return;
    };
    let text = std::str::from_utf8(body).expect("parse_bytes accepted it, so it is UTF-8");
    assert_eq!(Sdp::parse(text).as_ref(), Ok(&sdp));

    let _ = sdp.session_connection();
    let _ = sdp.audio_endpoint();
    if let Some(audio) = sdp.audio() {
        let _ = audio.endpoint();
        let _ = audio.telephone_event_payload_type();
        let _ = audio.first_audio_format().map(|f| f.codec());
        let _ = audio.format(control[0] & 0x7F);
        for format in &audio.formats {
            assert!(format.payload_type < 128);
            let _ = format.codec();
        }
    }

    let peer = match control[1] % 4 {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        2 => IpAddr::V4(Ipv4Addr::new(
            control[2], control[3], control[4], control[5],
        )),
        _ => IpAddr::V6(Ipv4Addr::new(control[2], 0, 0, control[5]).to_ipv6_mapped()),
    };
    let policy = if control[1] & 0x80 != 0 {
        AddressPolicy::AllowLocal
    } else {
        AddressPolicy::Strict
    };
    match sdp.check_addresses(peer, policy) {
        Ok(()) | Err(SdpError::RefusedAddress { .. }) => {}
        Err(other) => panic!("check_addresses returned {other:?}"),
    }

    let relay = if control[6] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, control[2]))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(control[3]),
        ))
    };
    let port = u16::from_be_bytes([control[4], control[5]]);
    check_rewrite(text, &sdp, relay, port);

    let direction = match control[7] % 4 {
        0 => Direction::SendRecv,
        1 => Direction::SendOnly,
        2 => Direction::RecvOnly,
        _ => Direction::Inactive,
    };
    check_reanswer(text, &sdp, direction);
});

/// `rewrite_connection` changes only `c=` lines and the audio `m=` line,
/// keeps line ends, points the audio stream at the relay, and is idempotent.
fn check_rewrite(text: &str, sdp: &Sdp, relay: IpAddr, port: u16) {
    let rewritten = match rewrite_connection(text, relay, port) {
        Ok(rewritten) => rewritten,
        Err(SdpError::NoAudio) => {
            assert!(sdp.audio().is_none());
            return;
        }
        Err(SdpError::NoConnection) => {
            assert!(sdp.audio().is_some());
            return;
        }
        Err(other) => panic!("rewrite of a parsed body failed: {other:?}"),
    };
    let old: Vec<&str> = text.split_inclusive('\n').collect();
    let new: Vec<&str> = rewritten.split_inclusive('\n').collect();
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(&new) {
        if o != n {
            assert!(o.starts_with("c=") || o.starts_with("m="), "{o:?} -> {n:?}");
            assert_eq!(o.ends_with("\r\n"), n.ends_with("\r\n"));
            assert_eq!(o.ends_with('\n'), n.ends_with('\n'));
        }
    }
    let after = Sdp::parse(&rewritten).expect("the rewritten body parses");
    assert_eq!(after.audio_endpoint(), Ok((relay, port).into()));
    let (before_audio, after_audio) = (sdp.audio().unwrap(), after.audio().unwrap());
    assert_eq!(before_audio.formats, after_audio.formats);
    assert_eq!(before_audio.direction, after_audio.direction);
    assert_eq!(before_audio.protocol, after_audio.protocol);
    assert_eq!(
        rewrite_connection(&rewritten, relay, port).as_deref(),
        Ok(rewritten.as_str())
    );
}

/// `reanswer` changes only `o=` and direction lines (adding one at most),
/// and its answer parses with the same audio formats.
fn check_reanswer(text: &str, sdp: &Sdp, direction: Direction) {
    let answer = match reanswer(text, direction) {
        Ok(answer) => answer,
        Err(SdpError::NoAudio) => {
            assert!(sdp.audio().is_none());
            return;
        }
        Err(other) => panic!("reanswer of a parsed body failed: {other:?}"),
    };
    let after = Sdp::parse(&answer).expect("the answer parses");
    assert_eq!(
        sdp.audio().map(|a| &a.formats),
        after.audio().map(|a| &a.formats)
    );
    // Line ends stripped as the parser does: one "\n", then one "\r".
    fn content(line: &str) -> &str {
        let line = line.strip_suffix('\n').unwrap_or(line);
        line.strip_suffix('\r').unwrap_or(line)
    }
    let is_direction = |line: &&str| {
        matches!(
            content(line),
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        )
    };
    let kept = |body: &str| -> Vec<String> {
        body.split_inclusive('\n')
            .filter(|line| !line.starts_with("o=") && !is_direction(line))
            .map(|line| content(line).to_owned())
            .collect()
    };
    assert_eq!(kept(text), kept(&answer));
    let directions = answer.split_inclusive('\n').filter(is_direction).count();
    assert_eq!(directions, 1, "one direction attribute in {answer:?}");
}
