//! SDP offers and answers (RFC 8866): the audio facts the relay needs,
//! checking the connection addresses ([`Sdp::check_addresses`]), and
//! rewriting the connection address to the relay's.
//!
//! The B2BUA forwards A's offer to B and B's answer to A with only the media
//! address changed, so everything it does not understand (ICE-less
//! attributes, bandwidth lines, vendor extensions, line order, CRLF vs LF)
//! must survive byte for byte.
//!
//! Why a small line parser rather than the `sdp-types` crate: that crate parses
//! into structs and serialises them again, which normalises line endings and
//! attribute layout; byte-identical forwarding would then need a second,
//! line-level editor anyway. One parser that records where each line is keeps
//! what [`Sdp::parse`] reports and what [`rewrite_connection`] edits the same
//! by construction. The parser reads only what the relay uses (`v=`, `c=`,
//! `m=`, `a=rtpmap`, direction attributes) and checks those strictly; other
//! lines need only the `<letter>=` shape.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

/// Telephone-event clock rate for narrowband audio (RFC 4733).
const NARROWBAND_RATE: u32 = 8000;
/// Longest line excerpt quoted in an error.
const QUOTE_MAX: usize = 80;

/// What is wrong with an SDP body; line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not UTF-8 (SDP is UTF-8 text, RFC 8866 §5).
    #[error("SDP line {line} is not valid UTF-8")]
    NotUtf8 {
        /// The offending line.
        line: usize,
    },
    /// The body is empty or does not start with `v=0`.
    #[error("SDP must start with \"v=0\", line 1 is {text:?}")]
    MissingVersion {
        /// The first line, shortened.
        text: String,
    },
    /// A line that does not parse.
    #[error("SDP line {line} {text:?}: {reason}")]
    BadLine {
        /// The offending line.
        line: usize,
        /// Its text, shortened.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No `m=audio` line.
    #[error("SDP has no audio stream (no m=audio line)")]
    NoAudio,
    /// The audio stream has no `c=` line, neither its own nor a session one.
    #[error("SDP audio stream has no connection address (no c= line at session or media level)")]
    NoConnection,
    /// A `c=` address media must not be sent to (see [`Sdp::check_addresses`]).
    #[error("SDP line {line}: connection address {address} is {class}; media is not sent there")]
    RefusedAddress {
        /// The `c=` line.
        line: usize,
        /// Its address.
        address: IpAddr,
        /// What kind of address it is.
        class: AddressClass,
    },
}

/// Which `c=` addresses [`Sdp::check_addresses`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressPolicy {
    /// Loopback only from a peer that is itself on loopback; never
    /// multicast, broadcast or unspecified (except the hold form).
    #[default]
    Strict,
    /// Loopback from any peer as well (tests and labs whose signalling
    /// crosses a real interface while media stays on this machine).
    /// Multicast, broadcast and unspecified stay refused.
    AllowLocal,
}

/// The kinds of address media is never sent to on behalf of a remote party:
/// they would make the relay send to itself or its neighbours, or to many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`: this machine.
    Loopback,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0/8` ("this network", RFC 1122 §3.2.1.3; Linux delivers
    /// `0.0.0.0` to this machine) and `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
}

impl AddressClass {
    /// The class of `address`, or `None` for an ordinary unicast address.
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged by the IPv4
    /// address they map, as that is where packets to them go.
    pub fn of(address: IpAddr) -> Option<AddressClass> {
        match address.to_canonical() {
            IpAddr::V4(v4) if v4.is_loopback() => Some(AddressClass::Loopback),
            IpAddr::V4(v4) if v4.is_multicast() => Some(AddressClass::Multicast),
            IpAddr::V4(v4) if v4.is_broadcast() => Some(AddressClass::Broadcast),
            IpAddr::V4(v4) if v4.octets()[0] == 0 => Some(AddressClass::Unspecified),
            IpAddr::V6(v6) if v6.is_loopback() => Some(AddressClass::Loopback),
            IpAddr::V6(v6) if v6.is_multicast() => Some(AddressClass::Multicast),
            IpAddr::V6(v6) if v6.is_unspecified() => Some(AddressClass::Unspecified),
            _ => None,
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Broadcast => "the broadcast address",
        })
    }
}

/// The `a=sendrecv|sendonly|recvonly|inactive` direction (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Send and receive; the default when no attribute is given.
    #[default]
    SendRecv,
    /// Only send.
    SendOnly,
    /// Only receive.
    RecvOnly,
    /// Neither (hold).
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// The codecs the relay and prompts know by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Codec {
    /// G.711 µ-law (static PT 0).
    Pcmu,
    /// G.711 A-law (static PT 8).
    Pcma,
    /// G.722 (static PT 9; RTP clock 8000 despite 16 kHz audio).
    G722,
    /// RFC 4733 telephone events (dynamic PT).
    TelephoneEvent,
    /// Anything else; relayed unchanged.
    Other,
}

/// One payload format of the audio stream: an `m=` format with its
/// `a=rtpmap`, or the RFC 3551 static mapping when there is no rtpmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayloadFormat {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as written (e.g. `PCMU`, `telephone-event`); empty for
    /// a dynamic type without rtpmap.
    pub encoding: String,
    /// RTP clock rate; 0 when unknown.
    pub clock_rate: u32,
    /// Channel count if given.
    pub channels: Option<u16>,
}

impl PayloadFormat {
    /// The codec this format names.
    pub fn codec(&self) -> Codec {
        let name = self.encoding.as_str();
        if name.eq_ignore_ascii_case("PCMU") {
            Codec::Pcmu
        } else if name.eq_ignore_ascii_case("PCMA") {
            Codec::Pcma
        } else if name.eq_ignore_ascii_case("G722") {
            Codec::G722
        } else if name.eq_ignore_ascii_case("telephone-event") {
            Codec::TelephoneEvent
        } else {
            Codec::Other
        }
    }

    /// The RFC 3551 static mapping for the types the relay cares about.
    fn static_mapping(payload_type: u8) -> Self {
        let (encoding, clock_rate) = match payload_type {
            0 => ("PCMU", 8000),
            3 => ("GSM", 8000),
            4 => ("G723", 8000),
            8 => ("PCMA", 8000),
            9 => ("G722", 8000),
            18 => ("G729", 8000),
            _ => ("", 0),
        };
        PayloadFormat {
            payload_type,
            encoding: encoding.to_owned(),
            clock_rate,
            channels: None,
        }
    }
}

/// The first audio stream of a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioStream {
    /// The `m=` port (0: stream rejected/disabled).
    pub port: u16,
    /// Transport protocol as written (`RTP/AVP`, `RTP/SAVP`, …).
    pub protocol: String,
    /// Connection address: the stream's own `c=` or the session's.
    pub connection: Option<IpAddr>,
    /// Formats in `m=` line order (the offerer's preference order).
    pub formats: Vec<PayloadFormat>,
    /// Effective direction: the stream's attribute, else the session's.
    pub direction: Direction,
    /// Values of the stream's `a=crypto` attributes (SRTP keys, RFC 4568;
    /// see [`crate::sdes`]), in order. Secret: never logged.
    #[serde(skip)]
    pub crypto: Vec<String>,
}

impl AudioStream {
    /// Whether the profile is secure RTP (`RTP/SAVP`, `RTP/SAVPF`, and
    /// DTLS-SRTP's `UDP/TLS/RTP/SAVP[F]`, which the relay cannot key: an
    /// offer of it without `a=crypto` is refused, not taken as plain).
    pub fn is_secure_profile(&self) -> bool {
        self.protocol.contains("SAVP")
    }
}

impl AudioStream {
    /// Where the party wants to receive audio, if it gave an address.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.connection.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The telephone-event payload type: the first at 8000 Hz, else the
    /// first at any rate.
    pub fn telephone_event_payload_type(&self) -> Option<u8> {
        let events = || {
            self.formats
                .iter()
                .filter(|f| f.codec() == Codec::TelephoneEvent)
        };
        events()
            .find(|f| f.clock_rate == NARROWBAND_RATE)
            .or_else(|| events().next())
            .map(|f| f.payload_type)
    }

    /// The first format that is not telephone-event: the codec the answerer
    /// will most likely send.
    pub fn first_audio_format(&self) -> Option<&PayloadFormat> {
        self.formats
            .iter()
            .find(|f| f.codec() != Codec::TelephoneEvent)
    }

    /// The format with this payload type.
    pub fn format(&self, payload_type: u8) -> Option<&PayloadFormat> {
        self.formats.iter().find(|f| f.payload_type == payload_type)
    }
}

/// A parsed SDP body: the facts the relay needs, plus where the lines it
/// would rewrite are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    session_connection: Option<IpAddr>,
    session_direction: Option<Direction>,
    audio: Option<AudioStream>,
    /// Indices (0-based, counting every line) of the lines
    /// [`rewrite_connection`] changes.
    session_connection_line: Option<usize>,
    audio_media_line: Option<usize>,
    audio_connection_line: Option<usize>,
    /// The audio stream's first `a=` line and the line after its last
    /// (where SRTP keys go), and the lines no other party may see (its
    /// `a=crypto` keys, its `a=rtcp` address).
    audio_first_attribute: Option<usize>,
    audio_end: usize,
    audio_dropped_lines: Vec<usize>,
    /// The `m=` lines of every other stream (rejected by the relay).
    other_media_lines: Vec<usize>,
    /// Every `c=` line (of every stream) as (line number from 1, address),
    /// for [`Sdp::check_addresses`].
    connections: Vec<(usize, IpAddr)>,
}

impl Sdp {
    /// Parses an SDP body given as bytes (as it arrives in a SIP message).
    pub fn parse_bytes(body: &[u8]) -> Result<Self, SdpError> {
        match std::str::from_utf8(body) {
            Ok(text) => Self::parse(text),
            Err(e) => {
                let line = 1 + body[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                Err(SdpError::NotUtf8 { line })
            }
        }
    }

    /// Parses an SDP body.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        let mut sdp = Sdp {
            session_connection: None,
            session_direction: None,
            audio: None,
            session_connection_line: None,
            audio_media_line: None,
            audio_connection_line: None,
            audio_first_attribute: None,
            audio_end: 0,
            audio_dropped_lines: Vec::new(),
            other_media_lines: Vec::new(),
            connections: Vec::new(),
        };
        // Which section the current line belongs to.
        #[derive(PartialEq)]
        enum Section {
            Session,
            FirstAudio,
            OtherMedia,
        }
        let mut section = Section::Session;
        let mut audio_connection: Option<IpAddr> = None;
        let mut audio_direction: Option<Direction> = None;
        let mut rtpmaps: Vec<PayloadFormat> = Vec::new();
        let mut saw_version = false;

        for (index, raw) in lines(text).enumerate() {
            let number = index + 1;
            let line = strip_eol(raw);
            if section == Section::FirstAudio && !line.starts_with("m=") {
                sdp.audio_end = index + 1;
            }
            if line.is_empty() {
                // Tolerated: some stacks end the body with a blank line.
                continue;
            }
            let bad = |reason: &str| SdpError::BadLine {
                line: number,
                text: quote(line),
                reason: reason.to_owned(),
            };
            if !saw_version {
                if line != "v=0" {
                    return Err(SdpError::MissingVersion { text: quote(line) });
                }
                saw_version = true;
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(bad("expected <letter>=<value>"));
            }
            let value = &line[2..];
            match bytes[0] {
                b'v' => return Err(bad("second v= line")),
                b'm' => {
                    let media = parse_media_line(value).map_err(|r| bad(&r))?;
                    if media.is_audio && sdp.audio.is_none() {
                        section = Section::FirstAudio;
                        sdp.audio_media_line = Some(index);
                        sdp.audio = Some(AudioStream {
                            port: media.port,
                            protocol: media.protocol.to_owned(),
                            connection: None,
                            formats: media
                                .formats
                                .iter()
                                .map(|&pt| PayloadFormat::static_mapping(pt))
                                .collect(),
                            direction: Direction::SendRecv,
                            crypto: Vec::new(),
                        });
                        sdp.audio_end = index + 1;
                    } else {
                        section = Section::OtherMedia;
                        sdp.other_media_lines.push(index);
                    }
                }
                b'c' => {
                    let addr = parse_connection(value).map_err(|r| bad(&r))?;
                    sdp.connections.push((number, addr));
                    match section {
                        Section::Session => {
                            if sdp.session_connection_line.is_some() {
                                return Err(bad("second session-level c= line"));
                            }
                            sdp.session_connection = Some(addr);
                            sdp.session_connection_line = Some(index);
                        }
                        Section::FirstAudio => {
                            if sdp.audio_connection_line.is_some() {
                                return Err(bad("second c= line in the audio stream"));
                            }
                            audio_connection = Some(addr);
                            sdp.audio_connection_line = Some(index);
                        }
                        Section::OtherMedia => {}
                    }
                }
                b'a' => {
                    let (name, attr_value) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    if section == Section::FirstAudio && sdp.audio_first_attribute.is_none() {
                        sdp.audio_first_attribute = Some(index);
                    }
                    if name == "rtcp" && section == Section::FirstAudio {
                        // The party's own RTCP address (RFC 3605): never
                        // for the other party to see or use.
                        sdp.audio_dropped_lines.push(index);
                    }
                    if name == "crypto" && section == Section::FirstAudio {
                        sdp.audio_dropped_lines.push(index);
                        if let Some(audio) = &mut sdp.audio {
                            audio.crypto.push(attr_value.unwrap_or("").to_owned());
                        }
                    }
                    if let Some(direction) = Direction::from_attribute(name) {
                        match section {
                            Section::Session => sdp.session_direction = Some(direction),
                            Section::FirstAudio => audio_direction = Some(direction),
                            Section::OtherMedia => {}
                        }
                    } else if name == "rtpmap" && section == Section::FirstAudio {
                        let format = parse_rtpmap(attr_value.unwrap_or("")).map_err(|r| bad(&r))?;
                        rtpmaps.push(format);
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::MissingVersion {
                text: String::new(),
            });
        }

        sdp.audio_session_fixup(audio_connection, audio_direction, rtpmaps);
        Ok(sdp)
    }

    /// Applies media-level facts and session defaults to the audio stream.
    fn audio_session_fixup(
        &mut self,
        audio_connection: Option<IpAddr>,
        audio_direction: Option<Direction>,
        rtpmaps: Vec<PayloadFormat>,
    ) {
        let session_connection = self.session_connection;
        let session_direction = self.session_direction;
        if let Some(audio) = &mut self.audio {
            audio.connection = audio_connection.or(session_connection);
            audio.direction = audio_direction.or(session_direction).unwrap_or_default();
            for map in rtpmaps {
                // An rtpmap for a type not in the m= line is ignored, as
                // RFC 8866 §6.6 says it has no meaning.
                if let Some(f) = audio
                    .formats
                    .iter_mut()
                    .find(|f| f.payload_type == map.payload_type)
                {
                    *f = map;
                }
            }
        }
    }

    /// The session-level connection address.
    pub fn session_connection(&self) -> Option<IpAddr> {
        self.session_connection
    }

    /// The first audio stream, if any.
    pub fn audio(&self) -> Option<&AudioStream> {
        self.audio.as_ref()
    }

    /// Checks every `c=` address, session- and media-level, of every stream,
    /// before any of them is used or forwarded: `peer` is the address the
    /// SDP came from (the SIP message's source).
    ///
    /// Refused ([`SdpError::RefusedAddress`]): loopback, multicast,
    /// unspecified and broadcast addresses, IPv4 and IPv6, IPv4-mapped IPv6
    /// judged as IPv4 ([`AddressClass`]). Otherwise a remote party could
    /// point the relay (or, through the forwarded SDP, the other party) at
    /// services of the relay's own machine or at a whole group. Exceptions:
    ///
    /// - `c=IN IP4 0.0.0.0`, the RFC 2543 way to put a call on hold, is
    ///   always accepted (the B2BUA must not use it as a destination);
    /// - loopback is accepted when `peer` is itself on loopback (a party on
    ///   this machine), or with [`AddressPolicy::AllowLocal`].
    ///
    /// Multicast, broadcast and unspecified addresses are refused whatever
    /// the peer and the policy.
    pub fn check_addresses(&self, peer: IpAddr, policy: AddressPolicy) -> Result<(), SdpError> {
        let peer_is_local = AddressClass::of(peer) == Some(AddressClass::Loopback);
        let loopback_allowed = peer_is_local || policy == AddressPolicy::AllowLocal;
        for &(line, address) in &self.connections {
            if address == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
                continue;
            }
            match AddressClass::of(address) {
                None => {}
                Some(AddressClass::Loopback) if loopback_allowed => {}
                Some(class) => {
                    return Err(SdpError::RefusedAddress {
                        line,
                        address,
                        class,
                    })
                }
            }
        }
        Ok(())
    }

    /// Where the party wants audio sent: the first audio stream's address
    /// and port. Errors if there is no audio stream or no address for it.
    pub fn audio_endpoint(&self) -> Result<SocketAddr, SdpError> {
        let audio = self.audio.as_ref().ok_or(SdpError::NoAudio)?;
        audio.endpoint().ok_or(SdpError::NoConnection)
    }
}

/// Rewrites a body so the first audio stream points at the relay: the
/// session-level `c=` line, the audio stream's own `c=` line and the port of
/// its `m=` line; with no SRTP (see [`describe_leg`]).
pub fn rewrite_connection(
    text: &str,
    address: IpAddr,
    audio_port: u16,
) -> Result<String, SdpError> {
    describe_leg(
        text,
        &LegDescription {
            address,
            port: audio_port,
            protocol: None,
            crypto: &[],
        },
    )
}

/// What the SDP sent to one party says about the relay's side of its leg.
#[derive(Debug, Clone, Copy)]
pub struct LegDescription<'a> {
    /// The relay's address facing the party.
    pub address: IpAddr,
    /// The relay's port facing the party.
    pub port: u16,
    /// The audio profile to state (`RTP/AVP`, `RTP/SAVP`); `None` keeps it.
    pub protocol: Option<&'a str>,
    /// `a=crypto` values (the host's own keys for this leg) for the audio
    /// stream; every `a=crypto` of the body is taken out first.
    pub crypto: &'a [String],
}

/// Rewrites a body, an offer or answer of one party, for the other: the
/// first audio stream points at the relay (the session-level `c=` line,
/// the stream's own `c=` line and its `m=` port), states the leg's profile
/// and carries the leg's own SRTP keys, never the first party's (each leg
/// is keyed on its own), and no `a=rtcp` (the party's RTCP address; RTCP
/// to the relay goes to its port + 1). Every other stream is rejected (port 0): the relay
/// carries only the first audio stream. Every other byte, including line
/// endings and the `o=` line's address (informational only), is left as
/// it was.
pub fn describe_leg(text: &str, leg: &LegDescription<'_>) -> Result<String, SdpError> {
    let sdp = Sdp::parse(text)?;
    let m_line = sdp.audio_media_line.ok_or(SdpError::NoAudio)?;
    if sdp.session_connection_line.is_none() && sdp.audio_connection_line.is_none() {
        return Err(SdpError::NoConnection);
    }
    let keys_at = sdp.audio_first_attribute.unwrap_or(sdp.audio_end);
    let mut out = String::with_capacity(text.len() + 64 * leg.crypto.len());
    let mut eol_seen = "\r\n";
    let mut keys_written = leg.crypto.is_empty();
    let write_keys = |out: &mut String, eol: &str| {
        for value in leg.crypto {
            out.push_str("a=crypto:");
            out.push_str(value);
            out.push_str(eol);
        }
    };
    for (index, raw) in lines(text).enumerate() {
        let line = strip_eol(raw);
        let eol = &raw[line.len()..];
        if !eol.is_empty() {
            eol_seen = if eol == "\n" { "\n" } else { "\r\n" };
        }
        if index == keys_at && !keys_written {
            write_keys(&mut out, eol_seen);
            keys_written = true;
        }
        if sdp.audio_dropped_lines.contains(&index) {
            continue;
        }
        if Some(index) == sdp.session_connection_line || Some(index) == sdp.audio_connection_line {
            out.push_str(&connection_line(line, leg.address));
        } else if index == m_line {
            let with_port = media_line_with_port(line, leg.port);
            out.push_str(&match leg.protocol {
                Some(protocol) => media_line_with_protocol(&with_port, protocol),
                None => with_port,
            });
        } else if sdp.other_media_lines.contains(&index) {
            out.push_str(&media_line_with_port(line, 0));
        } else {
            out.push_str(line);
        }
        if eol.is_empty() && !keys_written && index + 1 == keys_at {
            // The audio stream ends the body without a line end.
            out.push_str(eol_seen);
        } else {
            out.push_str(eol);
        }
    }
    if !keys_written {
        write_keys(&mut out, eol_seen);
    }
    Ok(out)
}

impl Direction {
    /// What an answer says to an offer with this direction (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }
}

/// Our answer to a re-offer (hold, resume) within a dialog: the SDP we sent
/// before, with the session version in `o=` incremented (RFC 3264 §8) and
/// the direction set to `direction` for the session (direction attributes
/// are replaced; one is added after the `m=audio` line when there was
/// none). Everything else stays byte for byte.
pub fn reanswer(previous: &str, direction: Direction) -> Result<String, SdpError> {
    let sdp = Sdp::parse(previous)?;
    let m_line = sdp.audio_media_line.ok_or(SdpError::NoAudio)?;
    let mut out = String::with_capacity(previous.len() + 16);
    let mut eol_seen = "\r\n";
    let mut added = false;
    for (index, raw) in lines(previous).enumerate() {
        let line = strip_eol(raw);
        let eol = &raw[line.len()..];
        if !eol.is_empty() {
            eol_seen = if eol == "\n" { "\n" } else { "\r\n" };
        }
        if let Some(origin) = line.strip_prefix("o=") {
            let mut fields: Vec<&str> = origin.split(' ').collect();
            let bumped;
            if let Some(version) = fields.get(2).and_then(|v| increment_decimal(v)) {
                bumped = version;
                fields[2] = &bumped;
            }
            out.push_str("o=");
            out.push_str(&fields.join(" "));
            out.push_str(eol);
            continue;
        }
        if let Some(name) = line.strip_prefix("a=") {
            if Direction::from_attribute(name).is_some() {
                if !added {
                    out.push_str(&format!("a={direction}"));
                    out.push_str(eol);
                    added = true;
                }
                continue;
            }
        }
        out.push_str(raw);
        if index == m_line && !added && !sdp_has_direction(previous) {
            // The body may end with the m= line, unterminated or with a lone
            // CR (which the parser strips as a line end): end the line
            // before adding one, or the attribute would join it.
            if raw.ends_with('\r') {
                out.push('\n');
            } else if !raw.ends_with('\n') {
                out.push_str(eol_seen);
            }
            out.push_str(&format!("a={direction}{eol_seen}"));
            added = true;
        }
    }
    Ok(out)
}

/// `digits` + 1, for a session version of any length: RFC 8866 gives it no
/// upper bound, and the other party chose it. `None` if it is not a number.
fn increment_decimal(digits: &str) -> Option<String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).ok();
        }
    }
    bytes.insert(0, b'1');
    String::from_utf8(bytes).ok()
}

fn sdp_has_direction(text: &str) -> bool {
    lines(text)
        .filter_map(|raw| strip_eol(raw).strip_prefix("a="))
        .any(|name| Direction::from_attribute(name).is_some())
}

/// Lines with their terminators (`\n` or `\r\n`); the last may have none.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

fn strip_eol(raw: &str) -> &str {
    let line = raw.strip_suffix('\n').unwrap_or(raw);
    line.strip_suffix('\r').unwrap_or(line)
}

fn quote(line: &str) -> String {
    match line.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

struct MediaLine<'a> {
    is_audio: bool,
    port: u16,
    protocol: &'a str,
    formats: Vec<u8>,
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
fn parse_media_line(value: &str) -> Result<MediaLine<'_>, String> {
    let mut fields = value.split(' ');
    let media = fields
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no media type")?;
    let port_field = fields.next().ok_or("no port")?;
    let port_text = port_field.split_once('/').map_or(port_field, |(p, _)| p);
    let port: u16 = port_text
        .parse()
        .map_err(|_| format!("port {port_text:?} is not a number 0-65535"))?;
    let protocol = fields
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no protocol")?;
    let is_audio = media == "audio";
    let mut formats = Vec::new();
    if is_audio && protocol.starts_with("RTP/") {
        for fmt in fields {
            let pt: u8 = fmt
                .parse()
                .ok()
                .filter(|&pt: &u8| pt < 128)
                .ok_or_else(|| format!("RTP payload type {fmt:?} is not a number 0-127"))?;
            formats.push(pt);
        }
        if formats.is_empty() {
            return Err("audio stream lists no payload types".into());
        }
    }
    Ok(MediaLine {
        is_audio,
        port,
        protocol,
        formats,
    })
}

/// `c=IN IP4|IP6 <address>[/<ttl>][/<count>]`
fn parse_connection(value: &str) -> Result<IpAddr, String> {
    let mut fields = value.split(' ');
    let (Some(net), Some(kind), Some(addr), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected \"IN IP4|IP6 <address>\"".into());
    };
    if net != "IN" {
        return Err(format!("network type {net:?} is not IN"));
    }
    let addr = addr.split_once('/').map_or(addr, |(a, _)| a);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("address {addr:?} is not an IP address"))?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(format!("address {addr:?} does not match type {kind:?}")),
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`
fn parse_rtpmap(value: &str) -> Result<PayloadFormat, String> {
    let (pt, rest) = value
        .split_once(' ')
        .ok_or("rtpmap needs \"<pt> <encoding>/<clock rate>\"")?;
    let payload_type: u8 = pt
        .parse()
        .ok()
        .filter(|&pt: &u8| pt < 128)
        .ok_or_else(|| format!("rtpmap payload type {pt:?} is not a number 0-127"))?;
    let mut parts = rest.trim_end().split('/');
    let encoding = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no encoding name")?;
    let rate = parts.next().ok_or("no clock rate")?;
    let clock_rate: u32 = rate
        .parse()
        .map_err(|_| format!("clock rate {rate:?} is not a number"))?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.parse::<u16>()
                .map_err(|_| format!("channel count {c:?} is not a number"))?,
        ),
        None => None,
    };
    Ok(PayloadFormat {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

fn connection_line(line: &str, address: IpAddr) -> String {
    // Keep a multicast TTL/count suffix if there was one; the parse already
    // checked the shape.
    let addr_field = line.split(' ').nth(2).unwrap_or("");
    let suffix = addr_field.find('/').map_or("", |i| &addr_field[i..]);
    let kind = if address.is_ipv4() { "IP4" } else { "IP6" };
    format!("c=IN {kind} {address}{suffix}")
}

fn media_line_with_protocol(line: &str, protocol: &str) -> String {
    // "m=audio <port> <proto> <fmt>...": replace only the protocol.
    let mut fields = line.splitn(4, ' ');
    let (media, port) = (
        fields.next().unwrap_or("m=audio"),
        fields.next().unwrap_or(""),
    );
    let _old = fields.next();
    match fields.next() {
        Some(rest) => format!("{media} {port} {protocol} {rest}"),
        None => format!("{media} {port} {protocol}"),
    }
}

fn media_line_with_port(line: &str, port: u16) -> String {
    // "m=audio <port>[/<count>] rest": replace only the number.
    let mut fields = line.splitn(3, ' ');
    let media = fields.next().unwrap_or("m=audio");
    let port_field = fields.next().unwrap_or("");
    let count = port_field.find('/').map_or("", |i| &port_field[i..]);
    match fields.next() {
        Some(rest) => format!("{media} {port}{count} {rest}"),
        None => format!("{media} {port}{count}"),
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        })
    }
}

#[cfg(test)]
mod reanswer_tests {
    use super::*;

    #[test]
    fn hold_and_resume_answers() {
        let previous = "v=0\r\no=callhost 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
        let held = reanswer(previous, Direction::SendOnly.answer()).unwrap();
        assert!(held.contains("o=callhost 7 2 IN IP4"), "{held}");
        assert!(
            held.contains("a=recvonly\r\n") && !held.contains("sendrecv"),
            "{held}"
        );
        assert_eq!(
            Sdp::parse(&held).unwrap().audio().unwrap().direction,
            Direction::RecvOnly
        );
        let resumed = reanswer(&held, Direction::SendRecv).unwrap();
        assert!(resumed.contains("o=callhost 7 3 IN IP4") && resumed.contains("a=sendrecv"));
        // No direction attribute before: one is added after the m= line.
        let bare =
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 8";
        let answer = reanswer(bare, Direction::Inactive).unwrap();
        assert_eq!(
            Sdp::parse(&answer).unwrap().audio().unwrap().direction,
            Direction::Inactive
        );
    }

    /// The session version is the other party's: any length, no overflow.
    #[test]
    fn the_session_version_is_incremented_whatever_its_size() {
        for (version, next) in [
            ("0", "1"),
            ("41", "42"),
            ("1999", "2000"),
            ("18446744073709551615", "18446744073709551616"),
            ("999999999999999999999999", "1000000000000000000000000"),
        ] {
            let previous =
                format!("v=0\r\no=- 7 {version} IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n");
            let answer = reanswer(&previous, Direction::SendRecv).unwrap();
            assert!(answer.contains(&format!("o=- 7 {next} IN")), "{answer}");
        }
        // Not a number: left alone.
        let previous = "v=0\r\no=- 7 x1 IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n";
        assert!(reanswer(previous, Direction::SendRecv)
            .unwrap()
            .contains("o=- 7 x1 IN"));
        assert_eq!(increment_decimal("+1"), None);
        assert_eq!(increment_decimal(""), None);
    }

    /// Found by the `sdp` fuzz target: a body ending in a lone CR after the
    /// m= line got the direction attribute glued to that line.
    #[test]
    fn a_direction_is_added_on_its_own_line_after_a_final_lone_cr() {
        for body in [
            "v=0\r\nm=audio 4000 RTP/AVP 0\r",
            "v=0\nm=audio 4000/2 R96\r",
            "v=0\r\nm=audio 4000 RTP/AVP 0",
        ] {
            let answer = reanswer(body, Direction::SendOnly).unwrap();
            let sdp = Sdp::parse(&answer).unwrap();
            assert_eq!(
                sdp.audio().unwrap().direction,
                Direction::SendOnly,
                "{answer:?}"
            );
            let m_line = answer.lines().nth(1).unwrap();
            assert_eq!(
                m_line.trim_end_matches('\r'),
                strip_eol(body.lines().nth(1).unwrap())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 9 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let audio = sdp.audio().unwrap();
        assert_eq!(
            sdp.audio_endpoint().unwrap(),
            "192.0.2.10:49170".parse().unwrap()
        );
        assert_eq!(audio.protocol, "RTP/AVP");
        let names: Vec<(u8, &str, Codec)> = audio
            .formats
            .iter()
            .map(|f| (f.payload_type, f.encoding.as_str(), f.codec()))
            .collect();
        assert_eq!(
            names,
            [
                (9, "G722", Codec::G722),
                (8, "PCMA", Codec::Pcma),
                (0, "PCMU", Codec::Pcmu),
                (101, "telephone-event", Codec::TelephoneEvent)
            ]
        );
        assert_eq!(audio.telephone_event_payload_type(), Some(101));
        assert_eq!(audio.first_audio_format().unwrap().payload_type, 9);
        assert_eq!(audio.direction, Direction::SendRecv);
    }

    #[test]
    fn media_level_overrides_session_level() {
        let text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\na=sendonly\nt=0 0\n\
m=audio 4000 RTP/AVP 0\nc=IN IP6 2001:db8::1\na=inactive\n\
m=video 5000 RTP/AVP 96\nc=IN IP4 10.9.9.9\na=recvonly\n";
        let sdp = Sdp::parse(text).unwrap();
        let audio = sdp.audio().unwrap();
        assert_eq!(audio.connection, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(audio.direction, Direction::Inactive);
        assert_eq!(sdp.session_connection(), Some("10.0.0.1".parse().unwrap()));
        let text = text.replace("a=inactive\n", "");
        assert_eq!(
            Sdp::parse(&text).unwrap().audio().unwrap().direction,
            Direction::SendOnly
        );
    }

    #[test]
    fn rewrite_changes_only_address_and_port() {
        let relay: IpAddr = "203.0.113.5".parse().unwrap();
        let out = rewrite_connection(OFFER, relay, 30000).unwrap();
        let expected = OFFER
            .replace("c=IN IP4 192.0.2.10", "c=IN IP4 203.0.113.5")
            .replace("m=audio 49170 ", "m=audio 30000 ");
        assert_eq!(out, expected);
        // o= keeps the original address.
        assert!(out.contains("o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"));

        // IPv6 relay, LF endings, media-level c= with session c= too.
        let text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
m=audio 4000/2 RTP/AVP 0\nc=IN IP4 10.0.0.2/127\nm=video 5000 RTP/AVP 96\nc=IN IP4 10.0.0.3\n";
        let out = rewrite_connection(text, "::1".parse().unwrap(), 1234).unwrap();
        assert_eq!(
            out,
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP6 ::1\nt=0 0\n\
m=audio 1234/2 RTP/AVP 0\nc=IN IP6 ::1/127\nm=video 0 RTP/AVP 96\nc=IN IP4 10.0.0.3\n",
            "the video stream the relay does not carry is rejected"
        );
    }

    #[test]
    fn a_leg_gets_its_own_profile_and_keys_and_never_the_other_partys() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETSECRETSECRETSECRETSECRETSECRETSECR\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:OTHERSECRETOTHERSECRETOTHERSECRETOTHERSE\r\n\
a=rtcp:4001 IN IP4 10.0.0.1\r\na=rtcp-mux\r\na=sendrecv\r\nm=video 5000 RTP/SAVP 96\r\n";
        let parsed = Sdp::parse(offer).unwrap();
        let audio = parsed.audio().unwrap();
        assert!(audio.is_secure_profile());
        assert_eq!(audio.crypto.len(), 2);
        assert!(audio.crypto[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:SECRET"));

        let relay: IpAddr = "203.0.113.5".parse().unwrap();
        let ours = vec!["1 AES_CM_128_HMAC_SHA1_80 inline:OURS".to_string()];
        let plain = describe_leg(
            offer,
            &LegDescription {
                address: relay,
                port: 30000,
                protocol: Some("RTP/AVP"),
                crypto: &[],
            },
        )
        .unwrap();
        assert!(
            !plain.contains("SECRET") && !plain.contains("a=crypto"),
            "{plain}"
        );
        assert!(
            !plain.contains("a=rtcp:4001") && plain.contains("a=rtcp-mux"),
            "{plain}"
        );
        assert!(plain.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{plain}");
        assert!(plain.contains("m=video 0 RTP/SAVP 96\r\n"), "{plain}");

        let secure = describe_leg(
            offer,
            &LegDescription {
                address: relay,
                port: 30000,
                protocol: None,
                crypto: &ours,
            },
        )
        .unwrap();
        assert!(!secure.contains("SECRET"), "{secure}");
        assert!(
            secure.contains("m=audio 30000 RTP/SAVP 8 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:OURS\r\na=rtpmap:8"),
            "{secure}"
        );
        // Keys added to a stream without attributes, ending the body.
        let bare =
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0";
        let keyed = describe_leg(
            bare,
            &LegDescription {
                address: relay,
                port: 30000,
                protocol: Some("RTP/SAVP"),
                crypto: &ours,
            },
        )
        .unwrap();
        assert!(
            keyed.ends_with(
                "m=audio 30000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:OURS\n"
            ),
            "{keyed:?}"
        );
        assert_eq!(Sdp::parse(&keyed).unwrap().audio().unwrap().crypto.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = Sdp::parse("v=0\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SDP line 3 \"m=audio 70000 RTP/AVP 0\": port \"70000\" is not a number 0-65535"
        );
        let err = Sdp::parse("v=0\nc=IN IP4 example.com\n").unwrap_err();
        assert!(matches!(err, SdpError::BadLine { line: 2, .. }), "{err}");
        let err = Sdp::parse("v=0\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SDP line 3 \"a=rtpmap:0 PCMU\": no clock rate"
        );
        assert!(matches!(
            Sdp::parse("o=x\n"),
            Err(SdpError::MissingVersion { .. })
        ));
        assert!(matches!(
            Sdp::parse(""),
            Err(SdpError::MissingVersion { .. })
        ));
        assert_eq!(
            Sdp::parse_bytes(b"v=0\ns=\xff\n"),
            Err(SdpError::NotUtf8 { line: 2 })
        );
        let no_c = "v=0\ns=-\nm=audio 1 RTP/AVP 0\n";
        assert_eq!(
            Sdp::parse(no_c).unwrap().audio_endpoint(),
            Err(SdpError::NoConnection)
        );
        assert_eq!(
            rewrite_connection(no_c, "127.0.0.1".parse().unwrap(), 2),
            Err(SdpError::NoConnection)
        );
        assert_eq!(
            rewrite_connection("v=0\nc=IN IP4 1.2.3.4\n", "127.0.0.1".parse().unwrap(), 2),
            Err(SdpError::NoAudio)
        );
    }

    fn with_connections(session: &str, audio: &str, video: &str) -> String {
        let mut text = String::from("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n");
        if !session.is_empty() {
            text.push_str(&format!("c={session}\r\n"));
        }
        text.push_str("t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
        if !audio.is_empty() {
            text.push_str(&format!("c={audio}\r\n"));
        }
        text.push_str("m=video 5000 RTP/AVP 96\r\n");
        if !video.is_empty() {
            text.push_str(&format!("c={video}\r\n"));
        }
        text
    }

    fn check(text: &str, peer: &str, policy: AddressPolicy) -> Result<(), SdpError> {
        Sdp::parse(text)
            .unwrap()
            .check_addresses(peer.parse().unwrap(), policy)
    }

    const REMOTE_PEER: &str = "198.51.100.7";

    #[test]
    fn ordinary_addresses_and_the_hold_form_pass() {
        for (session, audio) in [
            ("IN IP4 192.0.2.10", ""),
            ("IN IP4 10.1.2.3", "IN IP6 2001:db8::5"),
            ("IN IP4 0.0.0.0", ""),
            ("", "IN IP4 0.0.0.0"),
            ("IN IP6 ::ffff:192.0.2.1", ""),
            ("IN IP4 1.0.0.0", ""),
            ("IN IP4 255.255.255.254", ""),
        ] {
            let text = with_connections(session, audio, "");
            assert_eq!(
                check(&text, REMOTE_PEER, AddressPolicy::Strict),
                Ok(()),
                "{text}"
            );
        }
    }

    #[test]
    fn local_multicast_unspecified_and_broadcast_addresses_are_refused() {
        use AddressClass::*;
        for (address, class) in [
            ("IN IP4 127.0.0.1", Loopback),
            ("IN IP4 127.255.3.4", Loopback),
            ("IN IP6 ::1", Loopback),
            ("IN IP6 ::ffff:127.0.0.1", Loopback),
            ("IN IP4 224.2.1.1/127", Multicast),
            ("IN IP4 239.255.255.250", Multicast),
            ("IN IP6 ff02::1", Multicast),
            ("IN IP6 ::ffff:224.0.0.1", Multicast),
            ("IN IP6 ::", Unspecified),
            ("IN IP6 ::ffff:0.0.0.0", Unspecified),
            ("IN IP4 0.1.2.3", Unspecified),
            ("IN IP4 255.255.255.255", Broadcast),
            ("IN IP6 ::ffff:255.255.255.255", Broadcast),
        ] {
            let expected_address: IpAddr = address
                .split(' ')
                .nth(2)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // Session level (line 4), audio level (line 7), another stream's
            // own c= line (line 9): all are checked.
            for (text, line) in [
                (with_connections(address, "IN IP4 192.0.2.1", ""), 4),
                (with_connections("IN IP4 192.0.2.1", address, ""), 7),
                (
                    with_connections("IN IP4 192.0.2.1", address, "IN IP4 192.0.2.1"),
                    7,
                ),
                (with_connections("IN IP4 192.0.2.1", "", address), 8),
            ] {
                assert_eq!(
                    check(&text, REMOTE_PEER, AddressPolicy::Strict),
                    Err(SdpError::RefusedAddress {
                        line,
                        address: expected_address,
                        class
                    }),
                    "{text}"
                );
            }
        }
        let err = check(
            &with_connections("IN IP4 127.0.0.1", "", ""),
            REMOTE_PEER,
            AddressPolicy::Strict,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SDP line 4: connection address 127.0.0.1 is a loopback address; media is not sent there"
        );
    }

    #[test]
    fn loopback_is_fine_for_local_peers_and_with_allow_local_but_multicast_never() {
        let loopback = with_connections("IN IP4 127.0.0.1", "IN IP6 ::1", "");
        for peer in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                check(&loopback, peer, AddressPolicy::Strict),
                Ok(()),
                "{peer}"
            );
        }
        assert_eq!(
            check(&loopback, REMOTE_PEER, AddressPolicy::AllowLocal),
            Ok(())
        );
        for address in ["IN IP4 224.0.0.1", "IN IP6 ::", "IN IP4 255.255.255.255"] {
            let text = with_connections(address, "", "");
            for policy in [AddressPolicy::Strict, AddressPolicy::AllowLocal] {
                for peer in ["127.0.0.1", REMOTE_PEER] {
                    assert!(
                        matches!(
                            check(&text, peer, policy),
                            Err(SdpError::RefusedAddress { .. })
                        ),
                        "{address} from {peer} with {policy:?}"
                    );
                }
            }
        }
        // A peer on 0.0.0.0 or a multicast address is not "local".
        assert!(check(&loopback, "0.0.0.0", AddressPolicy::Strict).is_err());
        assert!(check(&loopback, "224.0.0.1", AddressPolicy::Strict).is_err());
    }
}
