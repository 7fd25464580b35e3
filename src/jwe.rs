//! RSA keys and JWE compact serialization (RFC 7516) as Mastercard's
//! client-encryption libraries use them (CONTRACT §10): `RSA-OAEP-256`
//! wraps the content key, `A256GCM` (12- or 16-byte IVs) or
//! `A128CBC-HS256` encrypts the payload, and `kid` is the lowercase hex
//! SHA-256 of the recipient key's DER SubjectPublicKeyInfo.
//!
//! Built on OpenSSL (see docs/design.md, "Signed and encrypted calls"):
//! its RSA-OAEP decryption is constant-time, and its GCM takes the 16-byte
//! IVs the Python library makes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, PKeyRef, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Verifier;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// RSAES-OAEP with SHA-256 and MGF1-SHA-256: JWE's `RSA-OAEP-256`.
macro_rules! oaep_sha256 {
    ($ctx:expr) => {{
        $ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
        $ctx.set_rsa_oaep_md(MessageDigest::sha256())?;
        $ctx.set_rsa_mgf1_md(MessageDigest::sha256())?;
    }};
}
/// The smallest RSA modulus accepted, in bits.
pub const MIN_BITS: u32 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM X.509 certificate or public key")]
    NotPem,
    #[error("not an RSA key")]
    NotRsa,
    #[error("the RSA key has {0} bits; at least {MIN_BITS} are required")]
    TooSmall(u32),
    #[error("not a PEM RSA private key (PKCS#8 or PKCS#1)")]
    NotPrivatePem,
    #[error(transparent)]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// Lowercase hex SHA-256 of a DER SubjectPublicKeyInfo: a key's `kid`.
pub fn fingerprint(spki_der: &[u8]) -> String {
    Sha256::digest(spki_der).iter().map(|b| format!("{b:02x}")).collect()
}

fn checked_rsa<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> Result<(), KeyError> {
    if key.id() != Id::RSA {
        return Err(KeyError::NotRsa);
    }
    match key.bits() {
        bits if bits < MIN_BITS => Err(KeyError::TooSmall(bits)),
        _ => Ok(()),
    }
}

/// A client's RSA public key: the one its requests are signed with, or
/// the one its answers are encrypted for.
#[derive(Clone)]
pub struct PublicKey {
    key: PKey<Public>,
    der: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PublicKey {
    /// From PEM: an X.509 certificate, a SubjectPublicKeyInfo
    /// (`PUBLIC KEY`) or a PKCS#1 `RSA PUBLIC KEY`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = if let Ok(cert) = X509::from_pem(pem) {
            cert.public_key()?
        } else if let Ok(key) = PKey::public_key_from_pem(pem) {
            key
        } else {
            let rsa = Rsa::public_key_from_pem_pkcs1(pem).map_err(|_| KeyError::NotPem)?;
            PKey::from_rsa(rsa)?
        };
        Self::new(key)
    }

    /// From the DER SubjectPublicKeyInfo the database keeps.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::new(PKey::public_key_from_der(der)?)
    }

    fn new(key: PKey<Public>) -> Result<Self, KeyError> {
        checked_rsa(&key)?;
        let der = key.public_key_to_der()?;
        let fingerprint = fingerprint(&der);
        Ok(PublicKey { key, der, fingerprint })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` is this key's RSASSA-PKCS1-v1_5 SHA-256
    /// signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        Verifier::new(MessageDigest::sha256(), &self.key)
            .and_then(|mut v| v.verify_oneshot(signature, message))
            .unwrap_or(false)
    }

    /// `cek` encrypted for this key with `RSA-OAEP-256`.
    fn wrap(&self, cek: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut encrypter = Encrypter::new(&self.key)?;
        oaep_sha256!(encrypter);
        let mut wrapped = vec![0; encrypter.encrypt_len(cek)?];
        let n = encrypter.encrypt(cek, &mut wrapped)?;
        wrapped.truncate(n);
        Ok(wrapped)
    }

    /// The JWE of `plaintext` for this key: `RSA-OAEP-256` + `A256GCM`,
    /// a 12-byte IV, `kid` = this key's fingerprint.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, openssl::error::ErrorStack> {
        let header = serde_json::json!({
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "kid": self.fingerprint,
            "cty": "application/json",
        });
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut cek = [0u8; 32];
        let mut iv = [0u8; 12];
        openssl::rand::rand_bytes(&mut cek)?;
        openssl::rand::rand_bytes(&mut iv)?;
        let wrapped = self.wrap(&cek)?;
        let mut tag = [0u8; 16];
        let ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            &cek,
            Some(&iv),
            header.as_bytes(),
            plaintext,
            &mut tag,
        )?;
        Ok([
            header,
            URL_SAFE_NO_PAD.encode(wrapped),
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(ciphertext),
            URL_SAFE_NO_PAD.encode(tag),
        ]
        .join("."))
    }
}

/// Why a JWE did not decrypt. Clients see only `DECRYPTION_FAILED` with
/// this reason; none names an expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    #[error("not a JWE compact serialization")]
    Malformed,
    #[error("the JWE header's alg is not RSA-OAEP-256")]
    Alg,
    #[error("the JWE header's enc is not A256GCM or A128CBC-HS256")]
    Enc,
    #[error("the JWE header's kid is not Roster's encryption key")]
    Kid,
    #[error("the JWE header names critical extensions")]
    Crit,
    #[error("the encrypted key does not decrypt")]
    Key,
    #[error("the initialisation vector has the wrong length")]
    Iv,
    #[error("the ciphertext or its tag was altered")]
    Tampered,
    #[error("the plaintext is not JSON")]
    NotJson,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    kid: Option<String>,
    zip: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

/// Roster's own RSA key pair: clients encrypt requests for it.
pub struct PrivateKey {
    key: PKey<Private>,
    public: PublicKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("fingerprint", &self.public.fingerprint)
            .finish()
    }
}

impl PrivateKey {
    /// From PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = PKey::private_key_from_pem(pem).map_err(|_| KeyError::NotPrivatePem)?;
        checked_rsa(&key)?;
        let public = PublicKey::new(PKey::public_key_from_der(&key.public_key_to_der()?)?)?;
        Ok(PrivateKey { key, public })
    }

    /// A new 2048-bit key.
    pub fn generate() -> Result<Self, KeyError> {
        let key = PKey::from_rsa(Rsa::generate(MIN_BITS)?)?;
        Self::from_pem(&key.private_key_to_pem_pkcs8()?)
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        Ok(String::from_utf8_lossy(&self.key.private_key_to_pem_pkcs8()?).into_owned())
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// A self-signed X.509 certificate of this key (PEM), valid ten years
    /// from now: what clients configure as their encryption certificate.
    pub fn certificate_pem(&self) -> Result<String, KeyError> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", "Roster encryption key")?;
        let name = name.build();
        let mut serial = openssl::bn::BigNum::new()?;
        serial.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
        let mut cert = X509Builder::new()?;
        cert.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        cert.set_serial_number(&serial)?;
        cert.set_subject_name(&name)?;
        cert.set_issuer_name(&name)?;
        cert.set_pubkey(&self.key)?;
        let (from, until) = (
            openssl::asn1::Asn1Time::days_from_now(0)?,
            openssl::asn1::Asn1Time::days_from_now(3650)?,
        );
        cert.set_not_before(&from)?;
        cert.set_not_after(&until)?;
        cert.sign(&self.key, MessageDigest::sha256())?;
        Ok(String::from_utf8_lossy(&cert.build().to_pem()?).into_owned())
    }

    /// The plaintext of a JWE compact serialization made for this key.
    pub fn decrypt(&self, compact: &str) -> Result<Vec<u8>, JweError> {
        let parts: Vec<&str> = compact.trim().split('.').collect();
        let [protected, wrapped, iv, ciphertext, tag] = parts[..] else {
            return Err(JweError::Malformed);
        };
        let b64 = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| JweError::Malformed)
        };
        let header: Header = serde_json::from_slice(&b64(protected)?).map_err(|_| JweError::Malformed)?;
        if header.alg != "RSA-OAEP-256" {
            return Err(JweError::Alg);
        }
        if header.crit.is_some() || header.zip.is_some() {
            return Err(JweError::Crit);
        }
        if header.kid.as_deref().is_some_and(|kid| kid != self.public.fingerprint) {
            return Err(JweError::Kid);
        }
        let (iv, ciphertext, tag) = (b64(iv)?, b64(ciphertext)?, b64(tag)?);
        let cek = self.unwrap_key(&b64(wrapped)?)?;
        // The protected header as sent is the additional authenticated data.
        let aad = protected.as_bytes();
        match header.enc.as_str() {
            "A256GCM" => {
                if cek.len() != 32 {
                    return Err(JweError::Key);
                }
                if iv.len() != 12 && iv.len() != 16 {
                    return Err(JweError::Iv);
                }
                if tag.len() != 16 {
                    return Err(JweError::Tampered);
                }
                decrypt_aead(Cipher::aes_256_gcm(), &cek, Some(&iv), aad, &ciphertext, &tag)
                    .map_err(|_| JweError::Tampered)
            }
            "A128CBC-HS256" => {
                if cek.len() != 32 {
                    return Err(JweError::Key);
                }
                if iv.len() != 16 {
                    return Err(JweError::Iv);
                }
                let (mac_key, enc_key) = cek.split_at(16);
                if tag.len() != 16 || !openssl::memcmp::eq(&cbc_hs256_tag(mac_key, aad, &iv, &ciphertext), &tag) {
                    return Err(JweError::Tampered);
                }
                openssl::symm::decrypt(Cipher::aes_128_cbc(), enc_key, Some(&iv), &ciphertext)
                    .map_err(|_| JweError::Tampered)
            }
            _ => Err(JweError::Enc),
        }
    }

    fn unwrap_key(&self, wrapped: &[u8]) -> Result<Vec<u8>, JweError> {
        let unwrap = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
            let mut decrypter = Decrypter::new(&self.key)?;
            oaep_sha256!(decrypter);
            let mut cek = vec![0; decrypter.decrypt_len(wrapped)?];
            let n = decrypter.decrypt(wrapped, &mut cek)?;
            cek.truncate(n);
            Ok(cek)
        };
        unwrap().map_err(|_| JweError::Key)
    }
}

/// RFC 7518 §5.2.2.1: the first 16 bytes of HMAC-SHA-256 over AAD, IV,
/// ciphertext and the AAD's length in bits (64-bit big-endian).
fn cbc_hs256_tag(mac_key: &[u8], aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(aad);
    mac.update(iv);
    mac.update(ciphertext);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&full[..16]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> &'static PrivateKey {
        static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| PrivateKey::generate().expect("a key"))
    }

    #[test]
    fn what_is_encrypted_for_a_key_decrypts_with_it() {
        let jwe = key().public().encrypt(br#"{"a":1}"#).expect("encrypts");
        assert_eq!(key().decrypt(&jwe).expect("decrypts"), br#"{"a":1}"#);
    }

    #[test]
    fn tampering_with_any_part_is_refused() {
        let jwe = key().public().encrypt(br#"{"a":1}"#).expect("encrypts");
        let parts: Vec<&str> = jwe.split('.').collect();
        for (i, expected) in [
            (0, JweError::Tampered),
            (3, JweError::Tampered),
            (4, JweError::Tampered),
        ] {
            let mut altered: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            let mut bytes = URL_SAFE_NO_PAD.decode(&altered[i]).expect("base64");
            if i == 0 {
                // A header that still parses but is not the one authenticated.
                bytes = br#"{"enc":"A256GCM","alg":"RSA-OAEP-256"}"#.to_vec();
            } else {
                bytes[0] ^= 1;
            }
            altered[i] = URL_SAFE_NO_PAD.encode(bytes);
            assert_eq!(key().decrypt(&altered.join(".")), Err(expected), "part {i}");
        }
        assert_eq!(key().decrypt("a.b.c"), Err(JweError::Malformed));
    }

    #[test]
    fn another_kid_alg_or_enc_is_refused() {
        let other = PrivateKey::generate().expect("a key");
        let jwe = other.public().encrypt(b"{}").expect("encrypts");
        assert_eq!(key().decrypt(&jwe), Err(JweError::Kid));
        let header = |h: &str| {
            let jwe = key().public().encrypt(b"{}").expect("encrypts");
            let rest = jwe.split_once('.').expect("parts").1.to_string();
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h))
        };
        assert_eq!(
            key().decrypt(&header(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)),
            Err(JweError::Alg)
        );
        assert_eq!(
            key().decrypt(&header(r#"{"alg":"RSA-OAEP-256","enc":"A128GCM"}"#)),
            Err(JweError::Enc)
        );
    }

    #[test]
    fn a_cbc_hs256_payload_with_a_16_byte_iv_decrypts_and_its_tag_is_checked() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RSA-OAEP-256","enc":"A128CBC-HS256"}"#);
        let cek = [7u8; 32];
        let iv = [9u8; 16];
        let ciphertext =
            openssl::symm::encrypt(Cipher::aes_128_cbc(), &cek[16..], Some(&iv), br#"{"b":2}"#).expect("encrypts");
        let tag = cbc_hs256_tag(&cek[..16], header.as_bytes(), &iv, &ciphertext);
        let wrapped = key().public().wrap(&cek).expect("wraps");
        let jwe = |tag: &[u8]| {
            [
                header.clone(),
                URL_SAFE_NO_PAD.encode(&wrapped),
                URL_SAFE_NO_PAD.encode(iv),
                URL_SAFE_NO_PAD.encode(&ciphertext),
                URL_SAFE_NO_PAD.encode(tag),
            ]
            .join(".")
        };
        assert_eq!(key().decrypt(&jwe(&tag)).expect("decrypts"), br#"{"b":2}"#);
        let mut bad = tag;
        bad[15] ^= 1;
        assert_eq!(key().decrypt(&jwe(&bad)), Err(JweError::Tampered));
        assert_eq!(key().decrypt(&jwe(&tag[..8])), Err(JweError::Tampered));
    }

    #[test]
    fn keys_are_rsa_of_2048_bits_or_more_and_fingerprinted_by_their_spki() {
        let cert = key().certificate_pem().expect("a certificate");
        let from_cert = PublicKey::from_pem(cert.as_bytes()).expect("parses");
        assert_eq!(from_cert.fingerprint(), key().public().fingerprint());
        assert_eq!(from_cert.fingerprint(), fingerprint(key().public().der()));
        assert_eq!(from_cert.fingerprint().len(), 64);
        let small = PKey::from_rsa(Rsa::generate(1024).expect("rsa")).expect("pkey");
        let pem = small.public_key_to_pem().expect("pem");
        assert!(matches!(PublicKey::from_pem(&pem), Err(KeyError::TooSmall(1024))));
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("group"),
        )
        .expect("ec");
        let pem = PKey::from_ec_key(ec).expect("pkey").public_key_to_pem().expect("pem");
        assert!(matches!(PublicKey::from_pem(&pem), Err(KeyError::NotRsa)));
        assert!(matches!(PublicKey::from_pem(b"hello"), Err(KeyError::NotPem)));
    }
}
