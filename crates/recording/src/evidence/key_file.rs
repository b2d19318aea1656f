//! The private key at rest: encrypted PKCS#8 PEM, as `openssl pkcs8 -topk8
//! -v2 aes-256-cbc -v2prf hmacWithSHA256` writes it.
//!
//! The ASN.1 comes from the `pkcs8`/`pkcs5` crates; PBKDF2 and AES come from
//! aws-lc-rs, because the pure-Rust PBKDF2 is ~13 times slower in debug
//! builds, which would force far fewer iterations. pkcs8's default (scrypt)
//! is avoided: its parameters exceed OpenSSL 3's memory limit.

use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_256, AES_256_KEY_LEN,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::pbkdf2;
use pkcs8::der::pem::{self, LineEnding};
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::der::Encode;
use pkcs8::pkcs5::pbes2::{self, Kdf, Pbkdf2Prf};
use pkcs8::pkcs5::EncryptionScheme;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};

use super::EvidenceError;

/// PBKDF2-HMAC-SHA256 iterations for newly written keys: OWASP's 2023
/// recommendation. With aws-lc-rs one derivation takes ~0.3 s even in a
/// debug build, and `KeyStore::open` does exactly one.
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// Refused when reading: a tampered file must not make `open` hang.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

const PEM_LABEL: &str = "ENCRYPTED PRIVATE KEY";
const SALT_LEN: usize = 16;
const IV_LEN: usize = 16;

fn crypto(operation: &'static str) -> impl FnOnce(aws_lc_rs::error::Unspecified) -> EvidenceError {
    move |_| EvidenceError::Crypto { operation }
}

fn derive_key(
    iterations: NonZeroU32,
    salt: &[u8],
    passphrase: &[u8],
) -> Zeroizing<[u8; AES_256_KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; AES_256_KEY_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase,
        key.as_mut(),
    );
    key
}

/// Encrypts a PKCS#8 `PrivateKeyInfo` (DER) under `passphrase` with a fresh
/// random salt and IV; returns the PEM text.
pub(crate) fn encrypt_private_key(
    private_key_pkcs8: &[u8],
    passphrase: &[u8],
) -> Result<String, EvidenceError> {
    let mut salt = [0u8; SALT_LEN];
    let mut iv = [0u8; IV_LEN];
    aws_lc_rs::rand::fill(&mut salt).map_err(crypto("generate a salt"))?;
    aws_lc_rs::rand::fill(&mut iv).map_err(crypto("generate an IV"))?;

    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).ok_or(EvidenceError::Crypto {
        operation: "derive a key with zero iterations",
    })?;
    let key = derive_key(iterations, &salt, passphrase);
    let cipher = UnboundCipherKey::new(&AES_256, key.as_ref())
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .map_err(crypto("set up AES-256-CBC"))?;
    let mut ciphertext = Zeroizing::new(private_key_pkcs8.to_vec());
    cipher
        .less_safe_encrypt(
            &mut *ciphertext,
            EncryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(crypto("encrypt the private key"))?;

    let parameters = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
        .map_err(|_| EvidenceError::Crypto {
            operation: "encode PBES2 parameters",
        })?;
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: parameters.into(),
        encrypted_data: &ciphertext,
    };
    let der = info.to_der().map_err(|_| EvidenceError::Crypto {
        operation: "encode the encrypted private key",
    })?;
    pem::encode_string(PEM_LABEL, LineEnding::LF, &der).map_err(|_| EvidenceError::Crypto {
        operation: "PEM-encode the encrypted private key",
    })
}

/// Decrypts the key file `path` (contents `pem_text`); returns the PKCS#8
/// `PrivateKeyInfo` DER. Only what [`encrypt_private_key`] writes is accepted.
pub(crate) fn decrypt_private_key(
    pem_text: &[u8],
    passphrase: &[u8],
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, EvidenceError> {
    let invalid = |reason: &str| EvidenceError::PrivateKey {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (label, der) =
        pem::decode_vec(pem_text).map_err(|_| invalid("not a PEM file (damaged?)"))?;
    if label != PEM_LABEL {
        return Err(invalid("not an \"ENCRYPTED PRIVATE KEY\" PEM block"));
    }
    let info = EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|_| invalid("not a PKCS#8 EncryptedPrivateKeyInfo (damaged?)"))?;
    let EncryptionScheme::Pbes2(parameters) = &info.encryption_algorithm else {
        return Err(invalid("encrypted with PBES1; only PBES2 is read"));
    };
    let Kdf::Pbkdf2(kdf) = &parameters.kdf else {
        return Err(invalid("key derivation is not PBKDF2"));
    };
    if kdf.prf != Pbkdf2Prf::HmacWithSha256 {
        return Err(invalid("PBKDF2 is not HMAC-SHA256"));
    }
    if kdf
        .key_length
        .is_some_and(|length| usize::from(length) != AES_256_KEY_LEN)
    {
        return Err(invalid("PBKDF2 key length is not 32 bytes"));
    }
    let iterations = NonZeroU32::new(kdf.iteration_count)
        .filter(|count| count.get() <= MAX_PBKDF2_ITERATIONS)
        .ok_or_else(|| {
            invalid(&format!(
                "PBKDF2 iteration count {} outside 1..={MAX_PBKDF2_ITERATIONS}",
                kdf.iteration_count
            ))
        })?;
    let pbes2::EncryptionScheme::Aes256Cbc { iv } = parameters.encryption else {
        return Err(invalid("cipher is not AES-256-CBC"));
    };

    let key = derive_key(iterations, kdf.salt, passphrase);
    let cipher = UnboundCipherKey::new(&AES_256, key.as_ref())
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(crypto("set up AES-256-CBC"))?;
    let mut buffer = Zeroizing::new(info.encrypted_data.to_vec());
    let wrong_passphrase = || EvidenceError::Passphrase {
        path: path.to_path_buf(),
    };
    // A wrong key shows as bad padding, or (rarely) as plaintext that is not
    // DER; neither can be told apart from a damaged file.
    let plaintext = cipher
        .decrypt(
            buffer.as_mut_slice(),
            DecryptionContext::Iv128(FixedLength::from(*iv)),
        )
        .map_err(|_| wrong_passphrase())?;
    if PrivateKeyInfo::try_from(&*plaintext).is_err() {
        return Err(wrong_passphrase());
    }
    Ok(Zeroizing::new(plaintext.to_vec()))
}
