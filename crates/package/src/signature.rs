//! `SHA256SUMS.sig`: `<base64 signature>\nkey: <key id>\n`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::Signature;

use crate::{PackageError, SigningKey};

/// Signs the exact `SHA256SUMS` bytes and renders the signature file.
pub(crate) fn format_signature(key: &SigningKey, sums: &[u8]) -> String {
    let signature = key.sign(sums);
    format!(
        "{}\nkey: {}\n",
        BASE64.encode(signature.to_bytes()),
        key.public().key_id()
    )
}

/// A parsed signature file. `key_id` is only the signer's claim, used to explain
/// failures; trust comes from which trusted key actually verifies.
#[derive(Debug)]
pub(crate) struct SignatureFile {
    pub signature: Signature,
    pub key_id: String,
}

pub(crate) fn parse_signature(bytes: &[u8]) -> Result<SignatureFile, PackageError> {
    let bad = |reason: String| PackageError::MalformedSignature { reason };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not valid UTF-8".to_owned()))?;
    let mut lines = text.lines();
    let (Some(encoded), Some(key_line), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err(bad(
            "expected two lines: the base64 signature, then \"key: <key id>\"".to_owned(),
        ));
    };
    let raw = BASE64
        .decode(encoded.trim())
        .map_err(|e| bad(format!("signature is not valid base64: {e}")))?;
    let raw: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("signature is {} bytes, expected 64", raw.len())))?;
    let key_id = key_line
        .strip_prefix("key: ")
        .ok_or_else(|| {
            bad(format!(
                "second line must be \"key: <key id>\", got {key_line:?}"
            ))
        })?
        .trim();
    if key_id.len() != 16
        || !key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad(format!(
            "key id {key_id:?} is not 16 lowercase hex characters"
        )));
    }
    Ok(SignatureFile {
        signature: Signature::from_bytes(&raw),
        key_id: key_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let key = SigningKey::generate();
        let text = format_signature(&key, b"sums");
        let parsed = parse_signature(text.as_bytes()).unwrap();
        assert_eq!(parsed.key_id, key.public().key_id());
        assert!(key.public().verify(b"sums", &parsed.signature));
        assert!(!key.public().verify(b"sumz", &parsed.signature));

        let b64 = text.lines().next().unwrap();
        let cases = [
            (String::new(), "expected two lines"),
            (format!("{b64}\n"), "expected two lines"),
            (
                format!("{b64}\nkey: abc\n"),
                "\"abc\" is not 16 lowercase hex",
            ),
            (format!("{b64}\nid: 0123456789abcdef\n"), "second line"),
            (
                "AAAA\nkey: 0123456789abcdef\n".to_owned(),
                "3 bytes, expected 64",
            ),
            (format!("{text}extra\n"), "expected two lines"),
        ];
        for (text, expected) in cases {
            let msg = parse_signature(text.as_bytes()).unwrap_err().to_string();
            assert!(msg.starts_with("SHA256SUMS.sig: "), "{msg}");
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
    }
}
