//! The keys: a master key from configuration, a data key per user wrapped
//! by it, and a claim key per company for keyed hashes. AES-256-GCM with a
//! fresh random 96-bit nonce per value; the owner's id (or the company's)
//! is bound in as associated data, so a value moved to another owner does
//! not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Bytes of every key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Why a key or a sealed value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("a key must be the base64 of {KEY_LEN} bytes")]
    BadKey,
    /// The value was changed, or sealed under another key or owner.
    #[error("sealed value does not open: tampered with or under another key")]
    Tampered,
}

/// 32 random bytes from the operating system.
pub fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    key
}

/// AES-256-GCM, sealing as `nonce ‖ ciphertext ‖ tag`.
#[derive(Clone)]
struct Cipher(Aes256Gcm);

impl Cipher {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        Cipher(Aes256Gcm::new(key.into()))
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        // `ThreadRng` is a CSPRNG seeded (and reseeded) from the OS: a
        // random nonce without a system call per value.
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            // Only inputs beyond 64 GiB fail.
            .expect("AES-GCM seals any value this service holds");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < NONCE_LEN {
            return Err(CipherError::Tampered);
        }
        let (nonce, msg) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CipherError::Tampered)?;
        self.0
            .decrypt(&Nonce::from(nonce), Payload { msg, aad })
            .map_err(|_| CipherError::Tampered)
    }
}

/// The key that wraps every other key. Its id (a digest, not the key) is
/// stored beside each wrapped key, so the service can tell which master a
/// key needs and refuse to start with the wrong one.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Cipher,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from its configured text: the base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CipherError> {
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| CipherError::BadKey)?);
        let key: &[u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| CipherError::BadKey)?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::new_with_prefix(b"roster master key id\0")
            .chain_update(key)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey {
            id,
            cipher: Cipher::new(key),
        }
    }

    /// A new random master key and its base64 text.
    pub fn generate() -> (Self, Zeroizing<String>) {
        let key = random_key();
        (Self::from_bytes(&key), Zeroizing::new(B64.encode(key.as_ref())))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &[u8], key: &[u8; KEY_LEN]) -> Vec<u8> {
        self.cipher.seal(aad, key)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CipherError> {
        let raw = Zeroizing::new(self.cipher.open(aad, wrapped)?);
        let key: [u8; KEY_LEN] = raw.as_slice().try_into().map_err(|_| CipherError::Tampered)?;
        Ok(Zeroizing::new(key))
    }

    /// A 32-byte secret of the service's own (a webhook endpoint's signing
    /// secret), wrapped; `aad` names what it belongs to.
    pub fn wrap_secret(&self, aad: &[u8], secret: &[u8; KEY_LEN]) -> Vec<u8> {
        self.wrap(aad, secret)
    }

    pub fn unwrap_secret(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CipherError> {
        self.unwrap(aad, wrapped)
    }

    /// `wrapped` (under `from`) wrapped under this key instead.
    pub fn rewrap(&self, from: &MasterKey, aad: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, CipherError> {
        Ok(self.wrap(aad, &*from.unwrap(aad, wrapped)?))
    }
}

/// One user's data key: seals and opens that user's personal values.
#[derive(Clone)]
pub struct DataKey {
    owner: Uuid,
    cipher: Cipher,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A new random key for `owner`, and the key wrapped under `master`.
    pub fn generate(owner: Uuid, master: &MasterKey) -> (Self, Vec<u8>) {
        let key = random_key();
        let wrapped = master.wrap(owner.as_bytes(), &key);
        (
            DataKey {
                owner,
                cipher: Cipher::new(&key),
            },
            wrapped,
        )
    }

    /// `owner`'s key from its wrapped form.
    pub fn unwrap(owner: Uuid, master: &MasterKey, wrapped: &[u8]) -> Result<Self, CipherError> {
        let key = master.unwrap(owner.as_bytes(), wrapped)?;
        Ok(DataKey {
            owner,
            cipher: Cipher::new(&key),
        })
    }

    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// `plain` sealed, as base64 text.
    pub fn seal(&self, plain: &[u8]) -> String {
        B64.encode(self.cipher.seal(self.owner.as_bytes(), plain))
    }

    /// What [`DataKey::seal`] sealed; an error, never other bytes, for
    /// anything else.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, CipherError> {
        let bytes = B64.decode(sealed).map_err(|_| CipherError::Tampered)?;
        self.cipher.open(self.owner.as_bytes(), &bytes)
    }
}

/// A company's key for keyed hashes of its unique values (email, external
/// reference, account id): the uniqueness rows hold the hash, never the
/// value, and the hash cannot be recomputed without the key.
#[derive(Clone)]
pub struct ClaimKey(Hmac<Sha256>);

impl std::fmt::Debug for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimKey(..)")
    }
}

impl ClaimKey {
    /// A new random key for `company`, and the key wrapped under `master`.
    pub fn generate(company: &str, master: &MasterKey) -> (Self, Vec<u8>) {
        let key = random_key();
        let wrapped = master.wrap(company.as_bytes(), &key);
        (Self::of(&key), wrapped)
    }

    pub fn unwrap(company: &str, master: &MasterKey, wrapped: &[u8]) -> Result<Self, CipherError> {
        Ok(Self::of(&*master.unwrap(company.as_bytes(), wrapped)?))
    }

    fn of(key: &[u8; KEY_LEN]) -> Self {
        ClaimKey(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// The keyed hash of a normalised unique value. The same value hashes
    /// alike whatever its kind: an account's claim and its household
    /// membership's claim are found from each other.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(value.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn master() -> MasterKey {
        MasterKey::generate().0
    }

    proptest! {
        #[test]
        fn a_sealed_value_opens_to_itself_and_only_under_its_key(plain in proptest::collection::vec(any::<u8>(), 0..300)) {
            let m = master();
            let (key, wrapped) = DataKey::generate(Uuid::from_u128(1), &m);
            let sealed = key.seal(&plain);
            prop_assert_eq!(key.open(&sealed), Ok(plain.clone()));
            prop_assert_ne!(&key.seal(&plain), &sealed, "a fresh nonce per value");
            // The same key, unwrapped again.
            let again = DataKey::unwrap(Uuid::from_u128(1), &m, &wrapped).expect("unwraps");
            prop_assert_eq!(again.open(&sealed), Ok(plain.clone()));
            // Another user's key, or the same key bound to another owner.
            let (other, _) = DataKey::generate(Uuid::from_u128(1), &m);
            prop_assert_eq!(other.open(&sealed), Err(CipherError::Tampered));
            let moved = DataKey::unwrap(Uuid::from_u128(2), &m, &wrapped);
            prop_assert!(moved.is_err(), "a wrapped key is bound to its owner");
        }

        #[test]
        fn a_tampered_value_is_an_error_never_other_bytes(
            plain in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (key, _) = DataKey::generate(Uuid::from_u128(1), &master());
            let mut bytes = B64.decode(key.seal(&plain)).expect("base64");
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert_eq!(key.open(&B64.encode(&bytes)), Err(CipherError::Tampered));
            let cut = &bytes[..i];
            prop_assert_eq!(key.open(&B64.encode(cut)), Err(CipherError::Tampered));
        }
    }

    #[test]
    fn a_wrong_master_does_not_unwrap() {
        let (a, b) = (master(), master());
        let (_, wrapped) = DataKey::generate(Uuid::from_u128(1), &a);
        assert!(DataKey::unwrap(Uuid::from_u128(1), &b, &wrapped).is_err());
        let rewrapped = b.rewrap(&a, Uuid::from_u128(1).as_bytes(), &wrapped).expect("rewraps");
        assert!(DataKey::unwrap(Uuid::from_u128(1), &b, &rewrapped).is_ok());
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn master_keys_are_32_bytes_of_base64() {
        let (m, text) = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&text).expect("parses").id(), m.id());
        assert_eq!(MasterKey::from_base64("c2hvcnQ=").err(), Some(CipherError::BadKey));
        assert_eq!(MasterKey::from_base64("not base64!").err(), Some(CipherError::BadKey));
    }

    #[test]
    fn claim_hashes_depend_on_the_company_key() {
        let m = master();
        let (a, wrapped) = ClaimKey::generate("acme", &m);
        let (b, _) = ClaimKey::generate("acme", &m);
        assert_eq!(a.hash("x@y.z"), a.hash("x@y.z"));
        assert_ne!(a.hash("x@y.z"), b.hash("x@y.z"));
        assert_ne!(a.hash("x@y.z"), a.hash("x@y.zz"));
        let again = ClaimKey::unwrap("acme", &m, &wrapped).expect("unwraps");
        assert_eq!(again.hash("x@y.z"), a.hash("x@y.z"));
        assert!(ClaimKey::unwrap("other", &m, &wrapped).is_err());
    }
}
