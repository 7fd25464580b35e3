//! Secrets on their way in: plain text lives only in a [`Secret`] (which
//! never prints) until it is hashed with Argon2id; only the hash reaches an
//! event.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::fmt;

/// A secret value that never shows in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Argon2id with the OWASP-recommended parameters (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a secret into a PHC string. CPU-heavy: call it off the async
/// executor (`spawn_blocking`).
pub fn hash(secret: &Secret) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(secret.expose().as_bytes(), &salt)
        .expect("Argon2id hashing with valid parameters cannot fail")
        .to_string()
}

/// Checks a secret against a PHC string; a malformed hash never matches.
pub fn verify(secret: &Secret, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| argon2().verify_password(secret.expose().as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_never_print() {
        let s = Secret::new("correct horse");
        let h = hash(&s);
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(&s, &h));
        assert!(!verify(&Secret::new("wrong"), &h));
        assert!(!verify(&s, "not a hash"));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
