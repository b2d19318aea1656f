//! G.711 A-law and µ-law (ITU-T G.711) conversion to and from 16-bit linear PCM.
//!
//! Recording keeps the call's codec (no transcoding), so this module is for
//! the places that must see samples: prompts decoded from files, tests and
//! level checks. Decoding is a lookup in 256-entry tables built at compile
//! time; encoding uses the classic segment search (as in the reference code
//! accompanying G.711 and G.191), which needs no 64 KiB table.
//!
//! Scaling: 16-bit input is reduced to G.711's 13-bit (A-law) or 14-bit
//! (µ-law) range by an arithmetic shift, and decoded values are scaled back to
//! 16 bits. Decoded values lie at the middle of their quantisation interval,
//! so A-law decodes to ±8..=±32256 and µ-law to 0..=±32124.
//!
//! The one non-invertible code: µ-law has two zeros, 0xFF (+0) and 0x7F (−0).
//! Both decode to 0 and 0 encodes to 0xFF, so `encode(decode(0x7F)) == 0xFF`.
//! Every other code of both laws round-trips exactly.

/// A-law code for the smallest positive value (decodes to +8); what an
/// A-law sender transmits for silence.
pub const ALAW_SILENCE: u8 = 0xD5;
/// µ-law code for +0; what a µ-law sender transmits for silence.
pub const ULAW_SILENCE: u8 = 0xFF;

/// The two companding laws of G.711.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// A-law (PCMA, static RTP payload type 8), used in Europe.
    ALaw,
    /// µ-law (PCMU, static RTP payload type 0), used in North America and Japan.
    MuLaw,
}

impl Law {
    /// Decodes one code to linear PCM.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::ALaw => alaw_to_linear(code),
            Law::MuLaw => ulaw_to_linear(code),
        }
    }

    /// Encodes one linear PCM sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::ALaw => linear_to_alaw(sample),
            Law::MuLaw => linear_to_ulaw(sample),
        }
    }

    /// The code for silence in this law.
    pub fn silence(self) -> u8 {
        match self {
            Law::ALaw => ALAW_SILENCE,
            Law::MuLaw => ULAW_SILENCE,
        }
    }

    /// Appends the decoded samples of `codes` to `out`.
    pub fn decode_into(self, codes: &[u8], out: &mut Vec<i16>) {
        out.extend(codes.iter().map(|&c| self.decode(c)));
    }

    /// Appends the encoded codes of `samples` to `out`.
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| self.encode(s)));
    }
}

const SIGN_BIT: u8 = 0x80;
const QUANT_MASK: u8 = 0x0F;
const SEG_SHIFT: u8 = 4;
const SEG_MASK: u8 = 0x70;

/// A-law segment end points on the 13-bit magnitude.
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// µ-law segment end points on the biased 14-bit magnitude.
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// µ-law bias (33 in 14-bit units, 132 in 16-bit units).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude µ-law represents before the bias.
const ULAW_CLIP: i32 = 8159;

/// Decodes an A-law code: invert the even bits (0x55), then rebuild the
/// magnitude from segment and quantisation bits at the interval's middle.
const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & QUANT_MASK) as i32) << 4;
    let seg = (a & SEG_MASK) >> SEG_SHIFT;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & SIGN_BIT != 0 { t } else { -t }) as i16
}

/// Decodes a µ-law code: codes are sent inverted; magnitude is
/// ((quant << 3) + bias) << segment, minus the bias.
const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & QUANT_MASK) as i32) << 3) + ULAW_BIAS;
    t <<= (u & SEG_MASK) >> SEG_SHIFT;
    (if u & SIGN_BIT != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

/// Builds a 256-entry decode table at compile time. A macro rather than a
/// `const fn` taking the decoder, because const fns cannot call fn pointers.
macro_rules! decode_table {
    ($decode:ident) => {{
        let mut table = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            table[i] = $decode(i as u8);
            i += 1;
        }
        table
    }};
}

/// A-law code → 16-bit linear PCM.
static ALAW_TO_LINEAR: [i16; 256] = decode_table!(alaw_decode);
/// µ-law code → 16-bit linear PCM.
static ULAW_TO_LINEAR: [i16; 256] = decode_table!(ulaw_decode);

/// Decodes one A-law code.
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one µ-law code.
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// First segment whose end point is at least `value`, or 8 if none.
fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    ends.iter().position(|&end| value <= end).unwrap_or(8) as u8
}

/// Encodes one 16-bit sample to A-law (uses the top 13 bits).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xD5 // sign bit set, even bits inverted
    } else {
        // One's complement rather than negation: A-law has no zero, so −1
        // lands in the smallest negative interval, mirroring 0 in the positive.
        v = -v - 1;
        0x55
    };
    // A 13-bit magnitude never exceeds the last segment end (0xFFF), but
    // keep the reference code's overflow branch for clarity.
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = (if seg < 2 { v >> 1 } else { v >> seg }) as u8 & QUANT_MASK;
    ((seg << SEG_SHIFT) | quant) ^ mask
}

/// Encodes one 16-bit sample to µ-law (uses the top 14 bits).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = (v >> (seg + 1)) as u8 & QUANT_MASK;
    ((seg << SEG_SHIFT) | quant) ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alaw_reference_values() {
        // Smallest magnitudes: 0xD5 is +8, 0x55 is -8 (ITU G.711 table 1a,
        // decision value 1 scaled to 16 bits).
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        // Extremes: 4032 in 12-bit units, 32256 in 16-bit.
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        // Segment boundaries: first code of segments 1 and 2 (after 0x55 inversion 0x90, 0xA0).
        assert_eq!(alaw_to_linear(0x90 ^ 0x55), 264);
        assert_eq!(alaw_to_linear(0xA0 ^ 0x55), 528);
        assert_eq!(alaw_to_linear(0x80 ^ 0x55 ^ 0x0F), 248);

        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(7), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        // 1000 >> 3 = 125: segment 2 (0x40..=0x7F), quant (125 >> 2) & 15 = 15
        // -> 0x2F ^ 0xD5 = 0xFA; decodes to (15 << 4 + 0x108) << 1 = 1008.
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(alaw_to_linear(0xFA), 1008);
    }

    #[test]
    fn ulaw_reference_values() {
        // Two zeros.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        // Extremes: 8031 in 14-bit units, 32124 in 16-bit.
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);

        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        // 100 >> 2 = 25, +33 = 58: segment 0, quant 58 >> 1 = 29 & 15 = 13
        // -> 0x0D ^ 0xFF = 0xF2; decodes to (13 << 3) + 132 - 132 = 104.
        assert_eq!(linear_to_ulaw(100), 0xF2);
        assert_eq!(ulaw_to_linear(0xF2), 104);
        // 1000 >> 2 = 250, +33 = 283: segment 3 (0x100..=0x1FF),
        // quant (283 >> 4) & 15 = 1 -> 0x31 ^ 0xFF = 0xCE;
        // decodes to ((1 << 3) + 132) << 3 - 132 = 988.
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ulaw_to_linear(0xCE), 988);
        assert_eq!(linear_to_ulaw(-1000), 0x4E);
        assert_eq!(ulaw_to_linear(0x4E), -988);
    }

    #[test]
    fn tables_match_the_formulas() {
        for c in 0..=255u8 {
            assert_eq!(alaw_to_linear(c), alaw_decode(c));
            assert_eq!(ulaw_to_linear(c), ulaw_decode(c));
        }
    }

    #[test]
    fn encode_of_decode_is_identity_for_every_code() {
        for c in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law {c:#04x}");
            // µ-law -0 (0x7F) decodes to 0, which encodes as +0 (0xFF).
            let expected = if c == 0x7F { 0xFF } else { c };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(c)),
                expected,
                "µ-law {c:#04x}"
            );
        }
    }

    /// Width of the A-law quantisation interval containing `decoded`, in 16-bit units.
    fn alaw_step(decoded: i16) -> i32 {
        let seg = (linear_to_alaw(decoded) ^ 0x55) & SEG_MASK;
        let seg = seg >> SEG_SHIFT;
        if seg < 2 {
            16
        } else {
            16 << (seg - 1)
        }
    }

    /// Width of the µ-law quantisation interval containing `decoded`, in 16-bit units.
    fn ulaw_step(decoded: i16) -> i32 {
        let seg = (!linear_to_ulaw(decoded) & SEG_MASK) >> SEG_SHIFT;
        8 << seg
    }

    #[test]
    fn alaw_round_trip_error_is_at_most_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let y = alaw_to_linear(linear_to_alaw(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            // Decoding lands mid-interval, so even the top of the range
            // (32767 -> 32256, error 511) stays within half of 1024.
            assert!(err <= alaw_step(y) / 2, "x={x} y={y} err={err}");
        }
    }

    #[test]
    fn ulaw_round_trip_error_is_bounded() {
        for x in i16::MIN..=i16::MAX {
            let y = ulaw_to_linear(linear_to_ulaw(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            if i32::from(x).abs() > 32124 {
                // Beyond the largest decoded value: clipped to it.
                assert_eq!(i32::from(y).abs(), 32124, "x={x}");
                assert_eq!(y.signum(), x.signum(), "x={x}");
            } else {
                // Half a step, plus up to 4 lost to the 16 -> 14 bit shift
                // (for negatives, -(x >> 2) rounds the magnitude up).
                assert!(err <= ulaw_step(y) / 2 + 4, "x={x} y={y} err={err}");
            }
        }
    }

    #[test]
    fn decoding_is_monotonic_in_the_input() {
        for law in [Law::ALaw, Law::MuLaw] {
            let mut prev = i16::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = law.decode(law.encode(x));
                assert!(y >= prev, "{law:?}: x={x} y={y} prev={prev}");
                prev = y;
            }
        }
    }

    #[test]
    fn law_helpers() {
        assert_eq!(Law::ALaw.silence(), 0xD5);
        assert_eq!(Law::MuLaw.silence(), 0xFF);
        let mut pcm = Vec::new();
        Law::ALaw.decode_into(&[0xD5, 0x55, 0xAA], &mut pcm);
        assert_eq!(pcm, [8, -8, 32256]);
        let mut codes = Vec::new();
        Law::MuLaw.encode_into(&[0, 100, -1000], &mut codes);
        assert_eq!(codes, [0xFF, 0xF2, 0x4E]);
    }
}
