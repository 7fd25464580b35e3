//! OAuth 1.0a request signatures (RFC 5849) with RSA-SHA256 and
//! `oauth_body_hash`, as Mastercard's `mastercard-oauth1-signer` makes
//! them (CONTRACT §10). Pure: the caller supplies the client's key, the
//! clock and the nonce store.
//!
//! The signer's base string differs from RFC 5849 §3.4.1.3.2 in one way
//! that matters: it joins the `oauth_*` parameters unencoded (so a body
//! hash's `+`, `/` and `=` are encoded once, by the outer encoding, not
//! twice), and encodes query pairs only when the query held `%` escapes.
//! [`base_strings`] yields the signer's form first and RFC 5849's second;
//! a signature over either verifies.

use crate::jwe::PublicKey;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// How far a request's `oauth_timestamp` may be from the server's clock.
pub const WINDOW_SECS: i64 = 300;

/// The longest `oauth_nonce` accepted.
pub const NONCE_MAX: usize = 255;

/// The parameters of an `Authorization: OAuth …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthHeader {
    pub consumer_key: String,
    pub nonce: String,
    pub timestamp: i64,
    pub body_hash: String,
    signature: Vec<u8>,
    /// Every `oauth_*` parameter but the signature, percent-decoded.
    params: Vec<(String, String)>,
}

/// Why a signed request was refused: the `detail` of its 401. None names
/// an expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the OAuth Authorization header is malformed")]
    Malformed,
    #[error("the OAuth Authorization header lacks {0}")]
    Missing(&'static str),
    #[error("oauth_signature_method must be RSA-SHA256")]
    Method,
    #[error("oauth_version must be 1.0")]
    Version,
    #[error("oauth_consumer_key names no client with a signing key")]
    UnknownClient,
    #[error("oauth_timestamp is not within 5 minutes of the server's clock")]
    Stale,
    #[error("oauth_nonce was already used")]
    NonceReused,
    #[error("oauth_body_hash does not match the body")]
    BodyHash,
    #[error("oauth_signature does not verify under the client's signing key")]
    Signature,
}

impl OAuthHeader {
    /// Parses `OAuth k="v", k="v", …` (values percent-decoded; `realm`
    /// ignored).
    pub fn parse(header: &str) -> Result<Self, Refusal> {
        let rest = header
            .strip_prefix("OAuth ")
            .or_else(|| header.strip_prefix("oauth "))
            .ok_or(Refusal::Malformed)?;
        let mut params = Vec::new();
        let mut signature = None;
        for item in rest.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = item.split_once('=').ok_or(Refusal::Malformed)?;
            let value = value
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(Refusal::Malformed)?;
            let value = percent_decode(value).ok_or(Refusal::Malformed)?;
            let key = key.trim();
            if params.iter().any(|(k, _): &(String, String)| k == key)
                || (key == "oauth_signature" && signature.is_some())
            {
                return Err(Refusal::Malformed);
            }
            match key {
                "realm" => {}
                "oauth_signature" => signature = Some(value),
                k if k.starts_with("oauth_") => params.push((k.to_string(), value)),
                _ => return Err(Refusal::Malformed),
            }
        }
        let get = |name: &'static str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or(Refusal::Missing(name))
        };
        let consumer_key = get("oauth_consumer_key")?;
        if get("oauth_signature_method")? != "RSA-SHA256" {
            return Err(Refusal::Method);
        }
        if get("oauth_version").is_ok_and(|v| v != "1.0") {
            return Err(Refusal::Version);
        }
        let nonce = get("oauth_nonce")?;
        if nonce.is_empty() || nonce.len() > NONCE_MAX {
            return Err(Refusal::Malformed);
        }
        let timestamp = get("oauth_timestamp")?.parse().map_err(|_| Refusal::Stale)?;
        let body_hash = get("oauth_body_hash")?;
        let signature = STANDARD
            .decode(signature.ok_or(Refusal::Missing("oauth_signature"))?)
            .map_err(|_| Refusal::Signature)?;
        Ok(OAuthHeader {
            consumer_key,
            nonce,
            timestamp,
            body_hash,
            signature,
            params,
        })
    }

    /// Every check but the nonce's (the caller's store keeps those): the
    /// clock, the body hash, then the signature over the request.
    pub fn verify(&self, key: &PublicKey, now: i64, request: &SignedRequest<'_>) -> Result<(), Refusal> {
        if (now - self.timestamp).abs() > WINDOW_SECS {
            return Err(Refusal::Stale);
        }
        let body_hash = STANDARD.encode(Sha256::digest(request.body));
        if self.body_hash != body_hash {
            return Err(Refusal::BodyHash);
        }
        base_strings(request, &self.params)
            .iter()
            .any(|base| key.verifies(base.as_bytes(), &self.signature))
            .then_some(())
            .ok_or(Refusal::Signature)
    }
}

/// What of a request its signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Scheme, authority and path, normalised by [`base_uri`].
    pub base_uri: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// RFC 5849 §3.4.1.2: scheme and host lowercase, the default port
/// dropped, `/` for an empty path.
pub fn base_uri(scheme: &str, authority: &str, path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let mut authority = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    if let Some(stripped) = authority.strip_suffix(default) {
        authority = stripped.to_string();
    }
    let path = if path.is_empty() { "/" } else { path };
    format!("{scheme}://{authority}{path}")
}

/// The signature base strings a signature may be over: the Mastercard
/// signer's form, then RFC 5849's.
pub fn base_strings(request: &SignedRequest<'_>, oauth: &[(String, String)]) -> [String; 2] {
    let query = request.query.unwrap_or("");
    let pairs = parse_qsl(query);
    // The signer: query pairs re-encoded only when the query held escapes
    // (else as sent, spaces as `+`); `oauth_*` values unencoded; sorted as
    // `k=v` strings.
    let escaped = query.contains('%') && percent_decode(query).is_some_and(|d| d != query);
    let mut signer: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match escaped {
            true => format!("{}={}", encode(k), encode(v)),
            false => format!("{}={}", k.replace(' ', "+"), v.replace(' ', "+")),
        })
        .chain(oauth.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    signer.sort();
    // RFC 5849 §3.4.1.3.2: every name and value encoded, sorted by name
    // then value.
    let mut rfc: Vec<(String, String)> = pairs
        .iter()
        .chain(oauth.iter())
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    rfc.sort();
    let rfc: Vec<String> = rfc.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let base = |params: &[String]| {
        format!(
            "{}&{}&{}",
            request.method.to_ascii_uppercase(),
            encode(request.base_uri),
            encode(&params.join("&"))
        )
    };
    [base(&signer), base(&rfc)]
}

/// Python's `parse_qsl(q, keep_blank_values=True)`: `&`-separated pairs,
/// `+` as space, percent-decoded.
fn parse_qsl(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                percent_decode(&s).unwrap_or(s)
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding to UTF-8; `None` when the result is not UTF-8. A `%`
/// not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(query: Option<&'a str>) -> SignedRequest<'a> {
        SignedRequest {
            method: "post",
            base_uri: "https://api.example.com/v1/users",
            query,
            body: b"",
        }
    }

    fn oauth() -> Vec<(String, String)> {
        vec![
            ("oauth_consumer_key".into(), "ck".into()),
            (
                "oauth_body_hash".into(),
                "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
            ),
        ]
    }

    #[test]
    fn the_signers_base_string_leaves_oauth_values_unencoded() {
        let [signer, rfc] = base_strings(&request(None), &oauth());
        assert_eq!(
            signer,
            "POST&https%3A%2F%2Fapi.example.com%2Fv1%2Fusers&\
             oauth_body_hash%3D47DEQpj8HBSa%2B%2FTImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D%26oauth_consumer_key%3Dck"
        );
        assert_eq!(
            rfc,
            "POST&https%3A%2F%2Fapi.example.com%2Fv1%2Fusers&\
             oauth_body_hash%3D47DEQpj8HBSa%252B%252FTImW%252B5JCeuQeRkm5NMpJWZG3hSuFU%253D%26oauth_consumer_key%3Dck"
        );
    }

    #[test]
    fn query_pairs_are_encoded_only_when_the_query_held_escapes() {
        let [plain, _] = base_strings(&request(Some("b=x+y&a=1&flag")), &[]);
        assert!(plain.ends_with(&encode("a=1&b=x+y&flag=")), "{plain}");
        let [escaped, _] = base_strings(&request(Some("email=a%40b.com&q=x+y")), &[]);
        assert!(escaped.ends_with(&encode("email=a%40b.com&q=x%20y")), "{escaped}");
    }

    #[test]
    fn base_uris_are_normalised() {
        assert_eq!(
            base_uri("HTTP", "Example.COM:80", "/v1/users"),
            "http://example.com/v1/users"
        );
        assert_eq!(base_uri("https", "example.com:443", ""), "https://example.com/");
        assert_eq!(
            base_uri("http", "127.0.0.1:8080", "/v1/x"),
            "http://127.0.0.1:8080/v1/x"
        );
    }

    #[test]
    fn headers_are_parsed_and_checked() {
        let header = r#"OAuth oauth_consumer_key="ck",oauth_nonce="n1",oauth_timestamp="100",oauth_signature_method="RSA-SHA256",oauth_version="1.0",oauth_body_hash="a%2Bb=",oauth_signature="AAAA""#;
        let parsed = OAuthHeader::parse(header).expect("parses");
        assert_eq!(parsed.consumer_key, "ck");
        assert_eq!(parsed.body_hash, "a+b=");
        assert_eq!(parsed.timestamp, 100);
        assert!(!parsed.params.iter().any(|(k, _)| k == "oauth_signature"));
        let without = header.replace(r#",oauth_body_hash="a%2Bb=""#, "");
        assert_eq!(OAuthHeader::parse(&without), Err(Refusal::Missing("oauth_body_hash")));
        let hmac = header.replace("RSA-SHA256", "HMAC-SHA1");
        assert_eq!(OAuthHeader::parse(&hmac), Err(Refusal::Method));
        assert_eq!(OAuthHeader::parse("OAuth garbage"), Err(Refusal::Malformed));
        assert_eq!(OAuthHeader::parse("Bearer x"), Err(Refusal::Malformed));
    }
}
