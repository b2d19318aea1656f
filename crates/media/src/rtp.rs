//! RTP packets (RFC 3550 §5.1): a zero-copy view for parsing and a header
//! writer for building.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |           synchronization source (SSRC) identifier            |
//! |            contributing source (CSRC) identifiers             |  CC × 32 bits
//! |  defined by profile           |           length              |  if X
//! |                        header extension                       |  length × 32 bits
//! |                            payload  ...      | padding | count |  if P
//! ```
//!
//! The relay forwards most packets untouched, so parsing borrows the datagram
//! and decodes fields only when asked; [`RtpPacket::parse`] validates the
//! whole layout up front so that every accessor afterwards is infallible.

/// The only RTP version in use (RFC 3550).
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed header, before CSRCs and extension.
pub const FIXED_HEADER_LEN: usize = 12;
/// The CC field has four bits.
pub const MAX_CSRCS: usize = 15;
/// The extension length field counts 32-bit words in 16 bits.
pub const MAX_EXTENSION_DATA_LEN: usize = 0xFFFF * 4;

/// What is wrong with an RTP packet or with a header that should be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The packet ends before the named part of the header is complete.
    #[error("RTP packet of {len} bytes is too short for its {part}: need at least {needed} bytes")]
    TooShort {
        /// The header part that does not fit.
        part: &'static str,
        /// Packet length.
        len: usize,
        /// Length the part needs.
        needed: usize,
    },
    /// The version field is not 2.
    #[error("RTP version field is {0}, expected 2")]
    BadVersion(u8),
    /// The P bit is set but the last octet (the padding count) is 0; the
    /// count includes itself, so 0 is impossible.
    #[error("RTP padding bit is set but the padding count (last octet) is 0")]
    ZeroPadding,
    /// The padding count exceeds the bytes that follow the header.
    #[error("RTP padding count {padding} is longer than the {available} bytes after the {header_len}-byte header")]
    PaddingTooLong {
        /// The padding count octet.
        padding: u8,
        /// Bytes after the header.
        available: usize,
        /// Header length including CSRCs and extension.
        header_len: usize,
    },
    /// A payload type that does not fit the 7-bit PT field.
    #[error("RTP payload type {0} is out of range 0..=127")]
    PayloadTypeOutOfRange(u8),
    /// More CSRCs than the 4-bit CC field can count.
    #[error("{0} CSRCs given; an RTP header holds at most 15")]
    TooManyCsrcs(usize),
    /// Extension data whose length is not a whole number of 32-bit words or
    /// does not fit the 16-bit length field.
    #[error(
        "RTP header extension data is {0} bytes; it must be a multiple of 4 and at most 262140"
    )]
    BadExtensionLength(usize),
    /// The output buffer cannot hold what should be written.
    #[error("output buffer of {len} bytes is too small for the RTP {part}: need {needed} bytes")]
    BufferTooSmall {
        /// What was being written: "header" or "packet".
        part: &'static str,
        /// Buffer length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
}

/// A header extension (RFC 3550 §5.3.1): a profile-defined 16-bit value and
/// opaque data. RFC 8285 element parsing is left to whoever needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// Extension data, a multiple of 4 bytes long.
    pub data: &'a [u8],
}

/// The header fields of an RTP packet, owned except for the extension data.
///
/// Used both to build packets ([`RtpHeader::write`]) and as the decoded form
/// of a parsed one ([`RtpPacket::header`]). The version is always 2 and the
/// padding bit is derived from the padding given to [`RtpHeader::write_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    /// M bit; for audio it marks the first packet of a talkspurt (RFC 3551 §4.1).
    pub marker: bool,
    /// 7-bit payload type; checked when written.
    pub payload_type: u8,
    /// Sequence number, +1 per packet.
    pub sequence: u16,
    /// Sampling instant of the first payload octet, in clock-rate units.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Header extension (X bit).
    pub extension: Option<RtpExtension<'a>>,
    // A fixed array keeps the header `Copy` and allocation-free; only the
    // first `csrc_count` entries are meaningful and the rest stay zero so the
    // derived `PartialEq` compares correctly.
    csrc_count: u8,
    csrcs: [u32; MAX_CSRCS],
}

impl<'a> RtpHeader<'a> {
    /// A header with no marker, CSRCs or extension.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpHeader {
            marker: false,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            extension: None,
            csrc_count: 0,
            csrcs: [0; MAX_CSRCS],
        }
    }

    /// Sets the marker bit.
    pub fn with_marker(mut self, marker: bool) -> Self {
        self.marker = marker;
        self
    }

    /// Sets the contributing sources (at most 15).
    pub fn with_csrcs(mut self, csrcs: &[u32]) -> Result<Self, RtpError> {
        if csrcs.len() > MAX_CSRCS {
            return Err(RtpError::TooManyCsrcs(csrcs.len()));
        }
        self.csrcs = [0; MAX_CSRCS];
        self.csrcs[..csrcs.len()].copy_from_slice(csrcs);
        self.csrc_count = csrcs.len() as u8;
        Ok(self)
    }

    /// Sets the header extension; its length is checked when written.
    pub fn with_extension(mut self, extension: Option<RtpExtension<'a>>) -> Self {
        self.extension = extension;
        self
    }

    /// The contributing sources.
    pub fn csrcs(&self) -> &[u32] {
        &self.csrcs[..usize::from(self.csrc_count)]
    }

    /// Bytes this header occupies on the wire.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN
            + 4 * usize::from(self.csrc_count)
            + self.extension.map_or(0, |e| 4 + e.data.len())
    }

    /// Writes the header (padding bit clear) to the start of `buf` and returns
    /// its length; the payload goes right after it.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, RtpError> {
        self.write_with_padding_bit(buf, false)
    }

    /// Writes a whole packet: header, `payload` and `padding` bytes of
    /// padding (0 for none; otherwise zeros ending with the count, as
    /// RFC 3550 §5.1 prescribes). Returns the packet length.
    pub fn write_packet(
        &self,
        payload: &[u8],
        padding: u8,
        buf: &mut [u8],
    ) -> Result<usize, RtpError> {
        let header_len = self.encoded_len();
        let total = header_len + payload.len() + usize::from(padding);
        if buf.len() < total {
            return Err(RtpError::BufferTooSmall {
                part: "packet",
                len: buf.len(),
                needed: total,
            });
        }
        self.write_with_padding_bit(buf, padding != 0)?;
        buf[header_len..header_len + payload.len()].copy_from_slice(payload);
        if padding != 0 {
            let pad = &mut buf[header_len + payload.len()..total];
            pad.fill(0);
            pad[pad.len() - 1] = padding;
        }
        Ok(total)
    }

    fn write_with_padding_bit(&self, buf: &mut [u8], padding: bool) -> Result<usize, RtpError> {
        if self.payload_type > 0x7F {
            return Err(RtpError::PayloadTypeOutOfRange(self.payload_type));
        }
        if let Some(ext) = self.extension {
            if ext.data.len() % 4 != 0 || ext.data.len() > MAX_EXTENSION_DATA_LEN {
                return Err(RtpError::BadExtensionLength(ext.data.len()));
            }
        }
        let len = self.encoded_len();
        if buf.len() < len {
            return Err(RtpError::BufferTooSmall {
                part: "header",
                len: buf.len(),
                needed: len,
            });
        }
        buf[0] = (RTP_VERSION << 6)
            | (u8::from(padding) << 5)
            | (u8::from(self.extension.is_some()) << 4)
            | self.csrc_count;
        buf[1] = (u8::from(self.marker) << 7) | self.payload_type;
        buf[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = FIXED_HEADER_LEN;
        for csrc in self.csrcs() {
            buf[at..at + 4].copy_from_slice(&csrc.to_be_bytes());
            at += 4;
        }
        if let Some(ext) = self.extension {
            buf[at..at + 2].copy_from_slice(&ext.profile.to_be_bytes());
            // Checked above: the word count fits in 16 bits.
            let words = (ext.data.len() / 4) as u16;
            buf[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
            at += 4;
            buf[at..at + ext.data.len()].copy_from_slice(ext.data);
            at += ext.data.len();
        }
        debug_assert_eq!(at, len);
        Ok(len)
    }
}

/// A validated, borrowed RTP packet. Fields are decoded on access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    bytes: &'a [u8],
    /// Offset of the payload: fixed header + CSRCs + extension.
    header_len: usize,
    /// Number of padding bytes at the end (0 when the P bit is clear).
    padding_len: u8,
}

impl<'a> RtpPacket<'a> {
    /// Validates `bytes` as an RTP packet (RFC 3550 §5.1).
    ///
    /// Checks the version, that the CSRC list, extension and padding fit, and
    /// that a set P bit comes with a non-zero count. Payload type values are
    /// not interpreted here: RTCP demultiplexing (RFC 5761) is the caller's job.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RtpError> {
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort {
                part: "fixed header",
                len: bytes.len(),
                needed: FIXED_HEADER_LEN,
            });
        }
        let version = bytes[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = bytes[0] & 0x20 != 0;
        let has_extension = bytes[0] & 0x10 != 0;
        let csrc_count = usize::from(bytes[0] & 0x0F);

        let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
        if bytes.len() < header_len {
            return Err(RtpError::TooShort {
                part: "CSRC list",
                len: bytes.len(),
                needed: header_len,
            });
        }
        if has_extension {
            if bytes.len() < header_len + 4 {
                return Err(RtpError::TooShort {
                    part: "extension header",
                    len: bytes.len(),
                    needed: header_len + 4,
                });
            }
            let words = u16::from_be_bytes([bytes[header_len + 2], bytes[header_len + 3]]);
            header_len += 4 + 4 * usize::from(words);
            if bytes.len() < header_len {
                return Err(RtpError::TooShort {
                    part: "extension data",
                    len: bytes.len(),
                    needed: header_len,
                });
            }
        }

        let mut padding_len = 0;
        if has_padding {
            // The last octet counts the padding including itself.
            padding_len = bytes[bytes.len() - 1];
            if padding_len == 0 {
                return Err(RtpError::ZeroPadding);
            }
            let available = bytes.len() - header_len;
            if usize::from(padding_len) > available {
                return Err(RtpError::PaddingTooLong {
                    padding: padding_len,
                    available,
                    header_len,
                });
            }
        }
        Ok(RtpPacket {
            bytes,
            header_len,
            padding_len,
        })
    }

    /// The whole datagram as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the P bit is set.
    pub fn has_padding(&self) -> bool {
        self.bytes[0] & 0x20 != 0
    }

    /// Padding bytes at the end of the packet, including the count octet.
    pub fn padding_len(&self) -> u8 {
        self.padding_len
    }

    /// The M bit.
    pub fn marker(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.bytes[1] & 0x7F
    }

    /// The sequence number.
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }

    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }

    /// The synchronisation source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.bytes[8], self.bytes[9], self.bytes[10], self.bytes[11]])
    }

    /// Number of contributing sources (the CC field).
    pub fn csrc_count(&self) -> usize {
        usize::from(self.bytes[0] & 0x0F)
    }

    /// The contributing sources, decoded lazily.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let end = FIXED_HEADER_LEN + 4 * self.csrc_count();
        self.bytes[FIXED_HEADER_LEN..end]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header extension, if the X bit is set.
    pub fn extension(&self) -> Option<RtpExtension<'a>> {
        if self.bytes[0] & 0x10 == 0 {
            return None;
        }
        let at = FIXED_HEADER_LEN + 4 * self.csrc_count();
        Some(RtpExtension {
            profile: u16::from_be_bytes([self.bytes[at], self.bytes[at + 1]]),
            data: &self.bytes[at + 4..self.header_len],
        })
    }

    /// Length of the header including CSRCs and extension: where the payload starts.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len..self.bytes.len() - usize::from(self.padding_len)]
    }

    /// All header fields decoded into an [`RtpHeader`].
    pub fn header(&self) -> RtpHeader<'a> {
        let mut csrcs = [0; MAX_CSRCS];
        for (slot, csrc) in csrcs.iter_mut().zip(self.csrcs()) {
            *slot = csrc;
        }
        RtpHeader {
            marker: self.marker(),
            payload_type: self.payload_type(),
            sequence: self.sequence(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
            extension: self.extension(),
            csrc_count: self.csrc_count() as u8,
            csrcs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal G.711 packet as a phone would send it: PT 8 (PCMA), marker
    /// on the first packet of a talkspurt.
    const PCMA_PACKET: [u8; 16] = [
        0x80, 0x88, 0x12, 0x34, // V=2, M=1, PT=8, seq 0x1234
        0x00, 0x01, 0xE2, 0x40, // timestamp 123456
        0xDE, 0xAD, 0xBE, 0xEF, // SSRC
        0xD5, 0xD5, 0x55, 0x55, // payload
    ];

    #[test]
    fn parses_fixed_header_fields() {
        let p = RtpPacket::parse(&PCMA_PACKET).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence(), 0x1234);
        assert_eq!(p.timestamp(), 123_456);
        assert_eq!(p.ssrc(), 0xDEAD_BEEF);
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.extension(), None);
        assert!(!p.has_padding());
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), &[0xD5, 0xD5, 0x55, 0x55]);
        assert_eq!(p.as_bytes(), &PCMA_PACKET);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        #[rustfmt::skip]
        let bytes = [
            0xB2, 0x00, 0x00, 0x07, // V=2, P=1, X=1, CC=2; M=0, PT=0; seq 7
            0x00, 0x00, 0x00, 0xA0, // timestamp 160
            0x00, 0x00, 0x00, 0x01, // SSRC 1
            0x00, 0x00, 0x00, 0x02, // CSRC 2
            0x00, 0x00, 0x00, 0x03, // CSRC 3
            0xBE, 0xDE, 0x00, 0x01, // extension profile 0xBEDE, 1 word
            0x10, 0xAA, 0x00, 0x00, // extension data
            0x7F, 0x7F,             // payload
            0x00, 0x00, 0x03,       // 3 bytes of padding
        ];
        let p = RtpPacket::parse(&bytes).unwrap();
        assert!(p.has_padding());
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            p.extension(),
            Some(RtpExtension {
                profile: 0xBEDE,
                data: &[0x10, 0xAA, 0x00, 0x00]
            })
        );
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), &[0x7F, 0x7F]);
        assert_eq!(p.sequence(), 7);
        assert_eq!(p.timestamp(), 160);
        assert_eq!(p.ssrc(), 1);
    }

    #[test]
    fn padding_may_fill_everything_after_the_header() {
        let mut bytes = PCMA_PACKET;
        bytes[0] |= 0x20;
        bytes[15] = 4;
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!(p.padding_len(), 4);
    }

    #[test]
    fn rejects_short_packets_naming_the_part() {
        assert_eq!(
            RtpPacket::parse(&PCMA_PACKET[..11]),
            Err(RtpError::TooShort {
                part: "fixed header",
                len: 11,
                needed: 12
            })
        );
        let mut csrc = PCMA_PACKET;
        csrc[0] = 0x82; // CC=2 needs 20 bytes
        assert_eq!(
            RtpPacket::parse(&csrc[..16]),
            Err(RtpError::TooShort {
                part: "CSRC list",
                len: 16,
                needed: 20
            })
        );
        let mut ext = PCMA_PACKET;
        ext[0] = 0x90;
        assert_eq!(
            RtpPacket::parse(&ext[..14]),
            Err(RtpError::TooShort {
                part: "extension header",
                len: 14,
                needed: 16
            })
        );
        // Extension header claims 0x5555 words.
        assert_eq!(
            RtpPacket::parse(&ext),
            Err(RtpError::TooShort {
                part: "extension data",
                len: 16,
                needed: 16 + 4 * 0x5555
            })
        );
    }

    #[test]
    fn rejects_bad_version() {
        for (byte, version) in [(0x00u8, 0u8), (0x40, 1), (0xC0, 3)] {
            let mut b = PCMA_PACKET;
            b[0] = byte;
            assert_eq!(RtpPacket::parse(&b), Err(RtpError::BadVersion(version)));
        }
        let err = RtpPacket::parse(&[0x40; 12]).unwrap_err();
        assert_eq!(err.to_string(), "RTP version field is 1, expected 2");
    }

    #[test]
    fn rejects_bad_padding() {
        let mut b = PCMA_PACKET;
        b[0] |= 0x20;
        b[15] = 0;
        assert_eq!(RtpPacket::parse(&b), Err(RtpError::ZeroPadding));
        b[15] = 5;
        assert_eq!(
            RtpPacket::parse(&b),
            Err(RtpError::PaddingTooLong {
                padding: 5,
                available: 4,
                header_len: 12
            })
        );
        assert_eq!(
            RtpPacket::parse(&b).unwrap_err().to_string(),
            "RTP padding count 5 is longer than the 4 bytes after the 12-byte header"
        );
    }

    #[test]
    fn writes_exact_header_bytes() {
        let h = RtpHeader::new(8, 0x1234, 123_456, 0xDEAD_BEEF).with_marker(true);
        let mut buf = [0u8; 16];
        assert_eq!(
            h.write_packet(&[0xD5, 0xD5, 0x55, 0x55], 0, &mut buf),
            Ok(16)
        );
        assert_eq!(buf, PCMA_PACKET);

        let ext = RtpExtension {
            profile: 0xBEDE,
            data: &[1, 2, 3, 4],
        };
        let h = RtpHeader::new(0, 7, 160, 1)
            .with_csrcs(&[2, 3])
            .unwrap()
            .with_extension(Some(ext));
        let mut buf = [0xEEu8; 33];
        assert_eq!(h.write_packet(&[0x7F, 0x7F], 3, &mut buf), Ok(33));
        #[rustfmt::skip]
        assert_eq!(buf, [
            0xB2, 0x00, 0x00, 0x07,
            0x00, 0x00, 0x00, 0xA0,
            0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x02,
            0x00, 0x00, 0x00, 0x03,
            0xBE, 0xDE, 0x00, 0x01,
            0x01, 0x02, 0x03, 0x04,
            0x7F, 0x7F,
            0x00, 0x00, 0x03,
        ]);
        // Header alone: padding bit clear.
        assert_eq!(h.write(&mut buf), Ok(28));
        assert_eq!(buf[0], 0x92);
    }

    #[test]
    fn writer_rejects_invalid_headers() {
        let mut buf = [0u8; 64];
        assert_eq!(
            RtpHeader::new(128, 0, 0, 0).write(&mut buf),
            Err(RtpError::PayloadTypeOutOfRange(128))
        );
        assert_eq!(
            RtpHeader::new(0, 0, 0, 0).with_csrcs(&[0; 16]),
            Err(RtpError::TooManyCsrcs(16))
        );
        let ext = RtpExtension {
            profile: 1,
            data: &[0; 3],
        };
        assert_eq!(
            RtpHeader::new(0, 0, 0, 0)
                .with_extension(Some(ext))
                .write(&mut buf),
            Err(RtpError::BadExtensionLength(3))
        );
        assert_eq!(
            RtpHeader::new(0, 0, 0, 0).write(&mut buf[..11]),
            Err(RtpError::BufferTooSmall {
                part: "header",
                len: 11,
                needed: 12
            })
        );
        assert_eq!(
            RtpHeader::new(0, 0, 0, 0).write_packet(&[0; 160], 0, &mut buf),
            Err(RtpError::BufferTooSmall {
                part: "packet",
                len: 64,
                needed: 172
            })
        );
    }

    /// xorshift64*: deterministic, good enough to spread bits over every field.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn parse_of_build_is_identity_over_generated_headers() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let mut ext_data = [0u8; 64];
        let mut payload = [0u8; 200];
        let mut buf = [0u8; 12 + 60 + 4 + 64 + 200 + 255];
        for round in 0..5000 {
            let csrcs: Vec<u32> = (0..g.below(16)).map(|_| g.next() as u32).collect();
            let ext_len = 4 * g.below(17) as usize;
            for b in &mut ext_data[..ext_len] {
                *b = g.next() as u8;
            }
            let extension = (g.below(2) == 1).then(|| RtpExtension {
                profile: g.next() as u16,
                data: &ext_data[..ext_len],
            });
            let header = RtpHeader::new(
                g.below(128) as u8,
                g.next() as u16,
                g.next() as u32,
                g.next() as u32,
            )
            .with_marker(g.below(2) == 1)
            .with_csrcs(&csrcs)
            .unwrap()
            .with_extension(extension);
            let payload_len = g.below(201) as usize;
            for b in &mut payload[..payload_len] {
                *b = g.next() as u8;
            }
            let padding = if g.below(3) == 0 {
                g.below(256) as u8
            } else {
                0
            };

            let n = header
                .write_packet(&payload[..payload_len], padding, &mut buf)
                .unwrap();
            assert_eq!(n, header.encoded_len() + payload_len + usize::from(padding));
            let p = RtpPacket::parse(&buf[..n])
                .unwrap_or_else(|e| panic!("round {round}: {header:?}: {e}"));
            assert_eq!(p.header(), header, "round {round}");
            assert_eq!(p.payload(), &payload[..payload_len], "round {round}");
            assert_eq!(p.padding_len(), padding, "round {round}");
            assert_eq!(p.has_padding(), padding != 0, "round {round}");
            assert_eq!(p.header_len(), header.encoded_len(), "round {round}");
        }
    }
}
