//! RL11: cache keys. Storage comes with the module; this is only the key.
//!
//! The key is `hex(HMAC-SHA256(secret, provider + "\0" + number))` with the
//! number in its international `00…` form and a per-installation random
//! secret. So:
//! - numbers are never stored in clear: a private line's number is personal
//!   data, and the cache must not become a list of who called;
//! - a plain hash would not do: there are few enough phone numbers to hash
//!   them all, and the keyed hash cannot be reversed without the secret;
//! - each provider has its own keys, so one provider's negative answer does
//!   not hide another's entry;
//! - rotating the secret purges the whole cache logically: no old key can be
//!   computed again, and the stale rows can be deleted at leisure.
//!
//! The `\0` separator keeps provider and number apart: provider ids are
//! configuration names and numbers are digits, so no two pairs give the same
//! input.

use callhost_numbers::ExternalNumber;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cache key (64 lowercase hex digits) for `number` at `provider`.
///
/// `secret` should be at least 32 random bytes, generated once per
/// installation and kept out of backups shared with others.
pub fn cache_key(secret: &[u8], provider: &str, number: &ExternalNumber) -> String {
    key_for(secret, provider, &number.international)
}

fn key_for(secret: &[u8], provider: &str, international: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts a key of any length");
    mac.update(provider.as_bytes());
    mac.update(b"\0");
    mac.update(international.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use callhost_numbers::NumberPlan;

    const SECRET: &[u8] = b"installation-secret-0123456789abcdef";

    fn de(raw: &str) -> ExternalNumber {
        NumberPlan::new("DE").unwrap().normalize(raw).unwrap()
    }

    #[test]
    fn known_answers() {
        // Computed independently with Python's hmac module.
        let cases = [
            (
                "tel.search.ch",
                "+41 44 123 45 67",
                "7d7868b47399a7acae1353fc0b3c4fd8a0ff52e326290f2a22e4e9c4dd8deb87",
            ),
            (
                "11880",
                "030 1234567",
                "a752aab255c463f71a1cdd2b419dc9846672902725bfd14ff7c1bbb3bd5b8bc8",
            ),
        ];
        for (provider, raw, want) in cases {
            assert_eq!(
                cache_key(SECRET, provider, &de(raw)),
                want,
                "{provider} {raw}"
            );
        }
        // RFC 4231 test case 2 checks the HMAC itself.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn deterministic_across_input_forms() {
        let forms = [
            "030 1234567",
            "+49 30 1234567",
            "0049301234567",
            "+49 (0)30 123-45-67",
        ];
        let keys: Vec<String> = forms
            .iter()
            .map(|f| cache_key(SECRET, "11880", &de(f)))
            .collect();
        assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
        assert_eq!(keys[0].len(), 64);
        assert!(keys[0]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn providers_numbers_and_secrets_are_separated() {
        let n = de("030 1234567");
        let keys = [
            cache_key(SECRET, "11880", &n),
            cache_key(SECRET, "goyellow", &n),
            cache_key(SECRET, "11880", &de("030 1234568")),
            cache_key(b"rotated-secret", "11880", &n),
            cache_key(b"", "11880", &n),
            // The separator: "a" + "\0" + "1…" differs from "a\0" + "\0" + …
            key_for(SECRET, "a", "1"),
            key_for(SECRET, "a1", ""),
            key_for(SECRET, "a\x001", ""),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Only a number containing NUL could collide, and numbers are digits.
        assert_eq!(key_for(SECRET, "a\0", "1"), key_for(SECRET, "a", "\x001"));
    }

    #[test]
    fn key_does_not_reveal_the_number() {
        for raw in ["030 1234567", "+41 44 123 45 67", "+1 212 555 1234"] {
            let n = de(raw);
            let key = cache_key(SECRET, "p", &n);
            let nsn_tail = &n.international[n.international.len() - 7..];
            for needle in [
                n.international.as_str(),
                &n.e164[1..],
                n.national.as_str(),
                nsn_tail,
            ] {
                assert!(!key.contains(needle), "{key} contains {needle}");
            }
        }
    }
}
