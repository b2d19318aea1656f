//! The installation's self-signed X.509 certificate: made with rcgen, read
//! back with x509-parser, signatures checked with aws-lc-rs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine as _;
use pkcs8::der::pem::{self, LineEnding};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA256WITHRSA};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use super::EvidenceError;

/// How long a certificate is valid: recordings must stay provable for years.
const VALIDITY_YEARS: i64 = 100;

/// Longest base64 signature accepted (an RSA-8192 signature is 1368 chars).
const MAX_SIGNATURE_BASE64_LEN: usize = 2048;

/// A parsed certificate, with what the evidence needs kept at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The certificate alone, re-encoded as PEM from its DER.
    pub pem: String,
    /// Hex SHA-256 of the DER, lower case (`openssl x509 -fingerprint -sha256`
    /// without the colons).
    pub fingerprint: String,
    /// The subject as x509-parser prints it, e.g. `CN=call-recording abc`.
    pub subject: String,
    /// Start of validity, RFC 3339 in UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 in UTC.
    pub not_after: String,
    der: Vec<u8>,
    /// PKCS#1 `RSAPublicKey` DER, as aws-lc-rs verifies with.
    rsa_public_key: Vec<u8>,
    not_before_unix: i64,
    not_after_unix: i64,
}

impl Certificate {
    /// Parses the first `CERTIFICATE` PEM block of `pem_text`.
    pub fn from_pem(pem_text: &str) -> Result<Certificate, EvidenceError> {
        Self::from_pem_bytes(pem_text.as_bytes(), "given as PEM")
    }

    /// Reads and parses a certificate file.
    pub(crate) fn from_pem_file(path: &Path) -> Result<Certificate, EvidenceError> {
        let contents = super::atomic_file::read_bounded(path, 64 * 1024)?;
        Self::from_pem_bytes(&contents, &path.display().to_string())
    }

    fn from_pem_bytes(pem_text: &[u8], origin: &str) -> Result<Certificate, EvidenceError> {
        let invalid = |reason: String| EvidenceError::Certificate {
            origin: origin.to_string(),
            reason,
        };
        let (_, pem_block) = x509_parser::pem::parse_x509_pem(pem_text)
            .map_err(|error| invalid(format!("not PEM: {error}")))?;
        if pem_block.label != "CERTIFICATE" {
            return Err(invalid(format!(
                "PEM block is {:?}, not CERTIFICATE",
                pem_block.label
            )));
        }
        Self::from_der(&pem_block.contents).map_err(invalid)
    }

    fn from_der(der: &[u8]) -> Result<Certificate, String> {
        let (rest, parsed) = X509Certificate::from_der(der)
            .map_err(|error| format!("not an X.509 certificate: {error}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".to_string());
        }
        let public_key = parsed.public_key();
        if public_key.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
            return Err(format!(
                "public key is {}, not RSA",
                public_key.algorithm.algorithm
            ));
        }
        let validity = parsed.validity();
        let pem_text = pem::encode_string("CERTIFICATE", LineEnding::LF, der)
            .map_err(|error| format!("cannot re-encode as PEM: {error}"))?;
        Ok(Certificate {
            pem: pem_text,
            fingerprint: hex::encode(Sha256::digest(der)),
            subject: parsed.subject().to_string(),
            not_before: rfc3339(&validity.not_before),
            not_after: rfc3339(&validity.not_after),
            der: der.to_vec(),
            rsa_public_key: public_key.subject_public_key.data.to_vec(),
            not_before_unix: validity.not_before.timestamp(),
            not_after_unix: validity.not_after.timestamp(),
        })
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The RSA public key, PKCS#1 `RSAPublicKey` DER.
    pub(crate) fn rsa_public_key(&self) -> &[u8] {
        &self.rsa_public_key
    }

    /// Whether `signature_base64` is this certificate's key's RSA PKCS#1 v1.5
    /// SHA-256 signature of `data`. Surrounding whitespace is ignored.
    pub fn verify(&self, data: &[u8], signature_base64: &str) -> bool {
        let trimmed = signature_base64.trim();
        if trimmed.len() > MAX_SIGNATURE_BASE64_LEN {
            return false;
        }
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(trimmed) else {
            return false;
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
            .verify(data, &signature)
            .is_ok()
    }

    /// Whether `time` lies within the certificate's validity (inclusive).
    pub fn is_valid_at(&self, time: SystemTime) -> bool {
        let seconds = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_secs())
                .map(|seconds| -seconds)
                .unwrap_or(i64::MIN),
        };
        self.not_before_unix <= seconds && seconds <= self.not_after_unix
    }

    /// Whether the certificate is signed (SHA256withRSA) by its own key, as a
    /// self-signed certificate must be; catches an edited certificate.
    pub fn is_self_signed(&self) -> bool {
        let Ok((_, parsed)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        parsed.signature_algorithm.algorithm == OID_PKCS1_SHA256WITHRSA
            && UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
                .verify(
                    parsed.tbs_certificate.as_ref(),
                    &parsed.signature_value.data,
                )
                .is_ok()
    }
}

/// Makes the self-signed certificate of an RSA key (PKCS#8 DER), subject
/// `CN=call-recording <installation id>`, valid from now for 100 years.
pub(crate) fn self_signed(
    private_key_pkcs8: &[u8],
    installation_id: &str,
) -> Result<Certificate, EvidenceError> {
    let failed = |reason: String| EvidenceError::Certificate {
        origin: format!("for installation {installation_id:?}"),
        reason,
    };
    let signing_key = rcgen::KeyPair::try_from(private_key_pkcs8)
        .map_err(|error| failed(format!("rcgen rejects the key: {error}")))?;
    if signing_key.algorithm() != &rcgen::PKCS_RSA_SHA256 {
        return Err(failed(
            "rcgen would not sign with SHA256withRSA".to_string(),
        ));
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| failed("the system clock is before 1970".to_string()))?;
    let now_seconds = i64::try_from(now.as_secs())
        .map_err(|_| failed("the system clock is out of range".to_string()))?;
    let (year, month, day) = civil_date(now_seconds.div_euclid(86_400));
    // time (without large-dates) ends at year 9999.
    if year + VALIDITY_YEARS > 9999 {
        return Err(failed(format!("the system clock says year {year}")));
    }
    let time_of_day = Duration::from_secs(now.as_secs() % 86_400);
    let end_day = if month == 2 && day == 29 && !is_leap_year(year + VALIDITY_YEARS) {
        28
    } else {
        day
    };
    let to_i32 =
        |year: i64| i32::try_from(year).map_err(|_| failed(format!("year {year} out of range")));
    let (month, day, end_day) = (month as u8, day as u8, end_day as u8);

    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("call-recording {installation_id}"),
    );
    params.not_before = rcgen::date_time_ymd(to_i32(year)?, month, day) + time_of_day;
    params.not_after =
        rcgen::date_time_ymd(to_i32(year + VALIDITY_YEARS)?, month, end_day) + time_of_day;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::ContentCommitment,
    ];
    let made = params
        .self_signed(&signing_key)
        .map_err(|error| failed(format!("rcgen cannot sign it: {error}")))?;
    Certificate::from_der(made.der()).map_err(failed)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01.
///
/// Counts in 400-year cycles starting on 0000-03-01, so that the leap day
/// is the last day of a cycle year.
fn civil_date(days_since_epoch: i64) -> (i64, u32, u32) {
    const DAYS_PER_CYCLE: i64 = 146_097;
    // 0000-03-01 is 719 468 days before 1970-01-01.
    let days = days_since_epoch + 719_468;
    let cycle = days.div_euclid(DAYS_PER_CYCLE);
    let day_of_cycle = days.rem_euclid(DAYS_PER_CYCLE);
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    // Months counted from March, 153 days per five months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 (UTC, whole seconds) of a certificate time.
fn rfc3339(time: &ASN1Time) -> String {
    let utc = time.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

#[cfg(test)]
mod civil_date_tests {
    use super::civil_date;

    #[test]
    fn evidence_civil_date_matches_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(59), (1970, 3, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(47_482), (2100, 1, 1));
    }
}
