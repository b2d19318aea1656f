//! SDP security descriptions (RFC 4568): the `a=crypto` attribute that
//! carries an SRTP master key and salt in the SDP of a call.
//!
//! `a=crypto:<tag> <suite> inline:<base64(key ‖ salt)>[|<lifetime>][|<MKI>:<len>] [<session params>]`
//!
//! No maintained crate parses this, so it is parsed here, strictly: one
//! key (several `inline:` keys per line, MKIs and session parameters are
//! refused, because the relay keys one master key per leg and protects
//! everything), a known suite, the key and salt of exactly the suite's
//! length. A line that is refused is skipped as an offer of something we
//! cannot do (RFC 4568 §7.1.1 lets an answerer pick among the lines).
//!
//! Key material is secret: [`KeyMaterial`]'s `Debug` does not show it,
//! nothing here logs it.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The SRTP suites the relay terminates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 4568).
    AesCm128HmacSha1_80,
    /// As above with a 32-bit tag (RFC 4568).
    AesCm128HmacSha1_32,
    /// AES-128 in GCM (RFC 7714).
    AeadAes128Gcm,
}

impl CryptoSuite {
    /// In the order the host offers them.
    pub const ALL: [CryptoSuite; 3] = [
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32,
        CryptoSuite::AeadAes128Gcm,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            CryptoSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite of an `a=crypto` name.
    pub fn from_name(name: &str) -> Option<CryptoSuite> {
        CryptoSuite::ALL
            .into_iter()
            .find(|suite| suite.name() == name)
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            CryptoSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key and salt for one direction of one leg. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// What the key is for.
    pub suite: CryptoSuite,
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        // Best effort: the bytes do not linger in freed memory.
        self.key.iter_mut().for_each(|b| *b = 0);
        self.salt.iter_mut().for_each(|b| *b = 0);
    }
}

impl KeyMaterial {
    /// Fresh random key and salt for `suite` (the host's own, per leg).
    pub fn generate(suite: CryptoSuite) -> KeyMaterial {
        use rand::RngCore as _;
        let mut key = vec![0u8; suite.key_len()];
        let mut salt = vec![0u8; suite.salt_len()];
        rand::rngs::OsRng.fill_bytes(&mut key);
        rand::rngs::OsRng.fill_bytes(&mut salt);
        KeyMaterial { suite, key, salt }
    }

    /// The master key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    fn inline(&self) -> String {
        let mut both = Vec::with_capacity(self.key.len() + self.salt.len());
        both.extend_from_slice(&self.key);
        both.extend_from_slice(&self.salt);
        let text = STANDARD.encode(&both);
        both.iter_mut().for_each(|b| *b = 0);
        text
    }
}

/// One `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Identifies the line in an offer; the answer repeats it.
    pub tag: u32,
    /// Suite, key and salt.
    pub key: KeyMaterial,
}

/// Why an `a=crypto` value was refused.
#[allow(missing_docs)] // each variant's message says it
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a=crypto: expected `<tag> <suite> inline:<key>`")]
    Shape,
    #[error("a=crypto: tag {0:?} is not a number of at most 9 digits")]
    Tag(String),
    #[error("a=crypto: unknown suite {0:?}")]
    Suite(String),
    #[error("a=crypto: key method is not `inline:`")]
    KeyMethod,
    #[error("a=crypto: more than one key (not supported)")]
    SeveralKeys,
    #[error("a=crypto: master key identifiers are not supported")]
    Mki,
    #[error("a=crypto: bad key lifetime")]
    Lifetime,
    #[error("a=crypto: key is not base64")]
    Base64,
    #[error("a=crypto: key and salt are {found} bytes, {suite} needs {needed}")]
    KeyLength {
        suite: CryptoSuite,
        found: usize,
        needed: usize,
    },
    #[error("a=crypto: session parameter {0:?} is not supported")]
    SessionParameter(String),
}

impl CryptoAttribute {
    /// Parses the value of an `a=crypto` attribute (after `crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttribute, CryptoError> {
        let mut fields = value.split([' ', '\t']).filter(|f| !f.is_empty());
        let (Some(tag), Some(suite), Some(key_params)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(CryptoError::Shape);
        };
        if let Some(parameter) = fields.next() {
            // UNENCRYPTED_SRTP, UNAUTHENTICATED_SRTP, KDR=…, FEC_ORDER…:
            // each weakens or changes what the relay would do.
            return Err(CryptoError::SessionParameter(
                parameter.chars().take(40).collect(),
            ));
        }
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Tag(tag.chars().take(20).collect()));
        }
        let tag: u32 = tag.parse().map_err(|_| CryptoError::Tag(tag.into()))?;
        let suite = CryptoSuite::from_name(suite)
            .ok_or_else(|| CryptoError::Suite(suite.chars().take(40).collect()))?;
        if key_params.contains(';') {
            return Err(CryptoError::SeveralKeys);
        }
        let inline = key_params
            .strip_prefix("inline:")
            .ok_or(CryptoError::KeyMethod)?;
        let mut parts = inline.split('|');
        let encoded = parts.next().unwrap_or_default();
        for part in parts {
            if part.contains(':') {
                return Err(CryptoError::Mki);
            }
            check_lifetime(part)?;
        }
        let both = STANDARD.decode(encoded).map_err(|_| CryptoError::Base64)?;
        let needed = suite.key_len() + suite.salt_len();
        if both.len() != needed {
            return Err(CryptoError::KeyLength {
                suite,
                found: both.len(),
                needed,
            });
        }
        let (key, salt) = both.split_at(suite.key_len());
        Ok(CryptoAttribute {
            tag,
            key: KeyMaterial {
                suite,
                key: key.to_vec(),
                salt: salt.to_vec(),
            },
        })
    }

    /// The attribute's value, as it goes after `a=crypto:`.
    pub fn value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite,
            self.key.inline()
        )
    }
}

/// A key lifetime: `2^N` or a decimal packet count. The relay rekeys only
/// through a new offer, so any lifetime of at least 2^20 packets (over five
/// hours at 50 packets/s) is accepted as it is; shorter ones are refused.
fn check_lifetime(text: &str) -> Result<(), CryptoError> {
    let packets: f64 = if let Some(exponent) = text.strip_prefix("2^") {
        let exponent: u32 = exponent.parse().map_err(|_| CryptoError::Lifetime)?;
        if exponent > 64 {
            return Err(CryptoError::Lifetime);
        }
        2f64.powi(exponent as i32)
    } else {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Lifetime);
        }
        text.parse::<f64>().map_err(|_| CryptoError::Lifetime)?
    };
    if packets < 2f64.powi(20) {
        return Err(CryptoError::Lifetime);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 4568 §9.1's example key.
    const RFC_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn the_rfc_example_parses_and_formats_back() {
        let value = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20");
        let attribute = CryptoAttribute::parse(&value).unwrap();
        assert_eq!(attribute.tag, 1);
        assert_eq!(attribute.key.suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(attribute.key.key().len(), 16);
        assert_eq!(attribute.key.salt().len(), 14);
        assert_eq!(
            attribute.value(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}")
        );
        // Keys never show in Debug output.
        assert!(!format!("{attribute:?}").contains(RFC_KEY));
    }

    #[test]
    fn what_the_relay_cannot_do_is_refused_by_name() {
        let cases = [
            ("1 AES_CM_128_HMAC_SHA1_80", CryptoError::Shape),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                CryptoError::Tag("x".into()),
            ),
            (
                "1 F8_128_HMAC_SHA1_80 inline:AAAA",
                CryptoError::Suite("F8_128_HMAC_SHA1_80".into()),
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:x", CryptoError::KeyMethod),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}"),
                CryptoError::SeveralKeys,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"),
                CryptoError::Mki,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1000"),
                CryptoError::Lifetime,
            ),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", CryptoError::Base64),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
                CryptoError::KeyLength {
                    suite: CryptoSuite::AesCm128HmacSha1_80,
                    found: 3,
                    needed: 30,
                },
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP"),
                CryptoError::SessionParameter("UNENCRYPTED_SRTP".into()),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(CryptoAttribute::parse(value), Err(expected), "{value}");
        }
    }

    #[test]
    fn gcm_keys_have_a_twelve_byte_salt() {
        let key = KeyMaterial::generate(CryptoSuite::AeadAes128Gcm);
        let line = CryptoAttribute { tag: 3, key }.value();
        let back = CryptoAttribute::parse(&line).unwrap();
        assert_eq!(back.key.salt().len(), 12);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(value in ".{0,200}") {
            let _ = CryptoAttribute::parse(&value);
        }

        #[test]
        fn generated_attributes_round_trip(tag in 0u32..1_000_000_000, suite in 0usize..3) {
            let key = KeyMaterial::generate(CryptoSuite::ALL[suite]);
            let attribute = CryptoAttribute { tag, key };
            prop_assert_eq!(CryptoAttribute::parse(&attribute.value()), Ok(attribute));
        }

        #[test]
        fn near_misses_of_a_good_line_never_panic(cut in 0usize..80, byte in any::<u8>()) {
            let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^31");
            let mut bytes = good.into_bytes();
            if cut < bytes.len() {
                bytes[cut] = byte;
            }
            let _ = CryptoAttribute::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
