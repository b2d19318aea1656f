//! RFC 3161 time stamps of the chain's head: the request sent to a
//! time-stamping authority, and the checks on its reply that need no
//! trust in the TSA's certificate (status, the hash stamped, the nonce).
//! The reply's signature is checked with the TSA's certificate by
//! `openssl ts -verify`, which is what an auditor runs anyway.

use cms::signed_data::SignedData;
use der::asn1::{Int, OctetString};
use der::oid::db::rfc5912::ID_SHA_256;
use der::{Any, Decode, Encode};
use sha2::{Digest, Sha256};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("the time-stamp request cannot be encoded: {0}")]
    Request(String),
    #[error("the reply is not an RFC 3161 time-stamp response: {0}")]
    Malformed(String),
    #[error("the time-stamping authority refused: status {0}")]
    Refused(String),
    #[error("the reply stamps another hash than the one sent")]
    OtherHash,
    #[error("the reply's nonce is not the request's")]
    OtherNonce,
}

/// A request for `data`'s SHA-256 with `nonce`, asking for the TSA's
/// certificate in the reply (so `openssl ts -verify` needs only the CA).
pub fn request(data: &[u8], nonce: u64) -> Result<Vec<u8>, TimestampError> {
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(data)?,
        req_policy: None,
        nonce: Some(nonce_int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    request
        .to_der()
        .map_err(|e| TimestampError::Request(e.to_string()))
}

/// What a checked reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The TSA's time, as it wrote it (GeneralizedTime, UTC).
    pub time: String,
}

/// Checks a reply against the request's data and nonce (`None`: a stored
/// reply checked later, whose nonce is not kept).
pub fn check_reply(reply: &[u8], data: &[u8], nonce: Option<u64>) -> Result<Stamp, TimestampError> {
    let malformed = |e: der::Error| TimestampError::Malformed(e.to_string());
    let response = TimeStampResp::from_der(reply).map_err(malformed)?;
    let status = response.status.status as u8;
    // granted (0) or grantedWithMods (1)
    if status > 1 {
        return Err(TimestampError::Refused(format!(
            "{:?}",
            response.status.status
        )));
    }
    let token = response
        .time_stamp_token
        .ok_or_else(|| TimestampError::Malformed("granted without a token".into()))?;
    let signed: SignedData = token.content.decode_as().map_err(malformed)?;
    let content = signed
        .encap_content_info
        .econtent
        .ok_or_else(|| TimestampError::Malformed("the token has no content".into()))?;
    let octets: OctetString = content.decode_as().map_err(malformed)?;
    let info = TstInfo::from_der(octets.as_bytes()).map_err(malformed)?;
    if info.message_imprint != imprint(data)? {
        return Err(TimestampError::OtherHash);
    }
    if let Some(nonce) = nonce {
        if info.nonce != Some(nonce_int(nonce)?) {
            return Err(TimestampError::OtherNonce);
        }
    }
    Ok(Stamp {
        time: info.gen_time.to_date_time().to_string(),
    })
}

fn imprint(data: &[u8]) -> Result<MessageImprint, TimestampError> {
    let digest = Sha256::digest(data);
    Ok(MessageImprint {
        hash_algorithm: spki_sha256()?,
        hashed_message: OctetString::new(digest.to_vec())
            .map_err(|e| TimestampError::Request(e.to_string()))?,
    })
}

fn spki_sha256() -> Result<cms::cert::x509::spki::AlgorithmIdentifier<Any>, TimestampError> {
    Ok(cms::cert::x509::spki::AlgorithmIdentifier {
        oid: ID_SHA_256,
        // NULL parameters, as OpenSSL writes them.
        parameters: Some(Any::from(der::asn1::Null)),
    })
}

/// A positive INTEGER in DER's minimal form: no leading zero bytes except
/// one that keeps the top bit off (OpenSSL refuses any other padding).
fn nonce_int(nonce: u64) -> Result<Int, TimestampError> {
    let bytes = nonce.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut minimal = Vec::with_capacity(9);
    if bytes[first] & 0x80 != 0 {
        minimal.push(0);
    }
    minimal.extend_from_slice(&bytes[first..]);
    Int::new(&minimal).map_err(|e| TimestampError::Request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_reads_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.tsq");
        std::fs::write(
            &path,
            request(b"seq: 1\nhash: ab\n", 0xA6B7_F220_9ACE_1211).unwrap(),
        )
        .unwrap();
        let out = std::process::Command::new("openssl")
            .args(["ts", "-query", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("Hash Algorithm: sha256"), "{text}");
        assert!(text.contains("Nonce: 0xA6B7F2209ACE1211"), "{text}");
        assert!(text.contains("Certificate required: yes"), "{text}");
    }

    #[test]
    fn an_openssl_tsa_reply_is_checked_against_the_data_and_the_nonce() {
        let tsa = callhost_test_services::Tsa::prepare().unwrap();
        let data = b"seq: 7\nhash: 00ff\n";
        let reply = tsa.reply(&request(data, 42).unwrap()).unwrap();
        let stamp = check_reply(&reply, data, Some(42)).unwrap();
        let year = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        assert!(stamp.time.starts_with(&year[..4]), "{stamp:?}");
        assert_eq!(
            check_reply(&reply, b"other", Some(42)),
            Err(TimestampError::OtherHash)
        );
        assert_eq!(
            check_reply(&reply, data, Some(43)),
            Err(TimestampError::OtherNonce)
        );
        assert!(check_reply(&reply, data, None).is_ok());
        // A nonce with the top bit set and one with leading zero bytes.
        for nonce in [u64::MAX, 0x80, 1, 0] {
            let reply = tsa.reply(&request(data, nonce).unwrap()).unwrap();
            check_reply(&reply, data, Some(nonce)).unwrap();
        }
        // Cut short: malformed, not a panic.
        assert!(matches!(
            check_reply(&reply[..reply.len() / 2], data, Some(42)),
            Err(TimestampError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for reply in [&b""[..], b"\x30\x03\x02\x01\x00", b"\xff\xff\xff"] {
            assert!(matches!(
                check_reply(reply, b"x", Some(1)),
                Err(TimestampError::Malformed(_))
            ));
        }
    }
}
