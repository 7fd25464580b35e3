//! Secrets and signatures of the Standard Webhooks specification (v1): a
//! secret is `whsec_` and the base64 of 32 random bytes; a signature is
//! `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed by
//! the secret's bytes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use roster_vault::cipher::KEY_LEN;
use sha2::Sha256;
use zeroize::Zeroizing;

pub const PREFIX: &str = "whsec_";

/// A new random secret's bytes.
pub fn new_secret() -> Zeroizing<[u8; KEY_LEN]> {
    roster_vault::cipher::random_key()
}

/// The secret as clients see it.
pub fn text(secret: &[u8; KEY_LEN]) -> String {
    format!("{PREFIX}{}", B64.encode(secret))
}

/// One signature: `v1,<base64>`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn header(secrets: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| signature(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference implementations.
    #[test]
    fn signs_like_the_reference_implementation() {
        let secret = B64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let s = new_secret();
        assert!(text(&s).starts_with("whsec_"));
        assert_eq!(B64.decode(&text(&s)[6..]).expect("base64").len(), 32);
        assert_eq!(header(&[&secret, &secret], "a", 1, b"").split(' ').count(), 2);
    }
}
