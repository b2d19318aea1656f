//! Cheap duplicate detection over recent RTP sequence numbers.
//!
//! A relay may see the same packet twice (retransmitting SBCs, duplicated
//! UDP). [`PacketRing`] remembers which of the last 128 sequence numbers
//! below the highest one arrived, in one `u128` bitmap, the same
//! sliding-window idea as the SRTP replay list (RFC 3711 §3.3.2), so checking
//! a packet costs a subtraction and a shift.

/// How [`PacketRing::insert`] classified a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window; now recorded.
    New,
    /// Already recorded: a duplicate.
    Duplicate,
    /// Older than the window, so unknown; not recorded. Callers that must
    /// not forward duplicates treat it as one.
    TooOld,
}

/// The last [`PacketRing::WINDOW`] sequence numbers up to the highest seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketRing {
    /// Highest sequence number seen, in RFC 1982 serial order.
    highest: Option<u16>,
    /// Bit k set: `highest - k` was seen.
    bits: u128,
}

impl PacketRing {
    /// How many sequence numbers (the highest included) are remembered.
    pub const WINDOW: u16 = 128;

    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `seq` and says whether it is new.
    ///
    /// Sequence numbers are compared modulo 2^16: up to 32767 ahead of the
    /// highest counts as newer (the window slides), anything else as older.
    pub fn insert(&mut self, seq: u16) -> Seen {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.bits = 1;
            return Seen::New;
        };
        let delta = seq.wrapping_sub(highest) as i16;
        if delta > 0 {
            let shift = delta as u32;
            self.bits = if shift >= u32::from(Self::WINDOW) {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.highest = Some(seq);
            return Seen::New;
        }
        let age = u32::from(delta.unsigned_abs());
        if age >= u32::from(Self::WINDOW) {
            return Seen::TooOld;
        }
        let bit = 1u128 << age;
        if self.bits & bit != 0 {
            Seen::Duplicate
        } else {
            self.bits |= bit;
            Seen::New
        }
    }

    /// Whether `seq` is recorded (always `false` outside the window).
    pub fn contains(&self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        let delta = seq.wrapping_sub(highest) as i16;
        if delta > 0 {
            return false;
        }
        let age = u32::from(delta.unsigned_abs());
        age < u32::from(Self::WINDOW) && self.bits & (1u128 << age) != 0
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u16> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_then_duplicates() {
        let mut r = PacketRing::new();
        assert!(!r.contains(5));
        for s in 0..10 {
            assert_eq!(r.insert(s), Seen::New);
        }
        for s in 0..10 {
            assert_eq!(r.insert(s), Seen::Duplicate);
            assert!(r.contains(s));
        }
        assert!(!r.contains(10));
        assert_eq!(r.highest(), Some(9));
    }

    #[test]
    fn reordered_packets_fill_holes_once() {
        let mut r = PacketRing::new();
        for s in [1, 2, 5, 3, 4] {
            assert_eq!(r.insert(s), Seen::New, "seq {s}");
        }
        assert_eq!(r.insert(3), Seen::Duplicate);
        assert_eq!(r.highest(), Some(5));
    }

    #[test]
    fn window_edges() {
        let mut r = PacketRing::new();
        r.insert(1000);
        // 127 behind is the oldest remembered; 128 behind is too old.
        assert_eq!(r.insert(1000 - 127), Seen::New);
        assert_eq!(r.insert(1000 - 127), Seen::Duplicate);
        assert_eq!(r.insert(1000 - 128), Seen::TooOld);
        assert!(!r.contains(1000 - 128));
        // Sliding by one drops the oldest.
        r.insert(1001);
        assert_eq!(r.insert(1000 - 127), Seen::TooOld);
        assert!(r.contains(1000));
        // A jump of a whole window forgets everything.
        r.insert(1001 + 128);
        assert!(!r.contains(1001));
        assert_eq!(r.insert(1001 + 1), Seen::New);
    }

    #[test]
    fn wraps_at_65535() {
        let mut r = PacketRing::new();
        for s in (65530..=65535).chain(0..5) {
            assert_eq!(r.insert(s), Seen::New, "seq {s}");
        }
        assert_eq!(r.highest(), Some(4));
        assert_eq!(r.insert(65533), Seen::Duplicate);
        assert_eq!(r.insert(2), Seen::Duplicate);
        assert!(r.contains(65530));
    }
}
