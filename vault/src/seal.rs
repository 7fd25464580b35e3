//! Events' personal values, sealed and opened in their JSON.
//!
//! A stored payload keeps its shape: each personal value the contract names
//! ([`roster_events::personal`]) is replaced by `{"$sealed": "<base64>"}`
//! (the value's JSON text, sealed under its owner's data key); `null`s stay
//! `null`. Opening puts the values back. When the owner's key is gone (the
//! owner was erased), each sealed value opens as `null` and the event is
//! marked erased; a value that does not open under a key that exists is an
//! error, never other data.

use crate::cipher::{CipherError, DataKey};
use roster_events::personal;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The member that marks a sealed value.
pub const SEALED: &str = "$sealed";

/// Seals every personal value of a stored payload (`{"EventName": {...}}`)
/// under `key`. Values already sealed are kept.
pub fn seal_payload(aggregate_type: &str, event_type: &str, payload: &mut Value, key: &DataKey) {
    let paths = personal::paths(aggregate_type, event_type);
    if paths.is_empty() {
        return;
    }
    let Some(inner) = inner_mut(payload) else { return };
    for path in paths {
        personal::visit(inner, path, &mut |v| {
            if !v.is_null() && sealed_text(v).is_none() {
                *v = seal_value(v, key);
            }
        });
    }
}

/// Whether a stored payload needs sealing: it holds a personal value that
/// is not sealed.
pub fn has_plain_values(aggregate_type: &str, event_type: &str, payload: &mut Value) -> bool {
    let mut plain = false;
    if let Some(inner) = inner_mut(payload) {
        for path in personal::paths(aggregate_type, event_type) {
            personal::visit(inner, path, &mut |v| plain |= !v.is_null() && sealed_text(v).is_none());
        }
    }
    plain
}

/// A JSON document sealed whole (a snapshot).
pub fn seal_value(value: &Value, key: &DataKey) -> Value {
    let mut sealed = Map::with_capacity(1);
    sealed.insert(
        SEALED.to_string(),
        Value::String(key.seal(&serde_json::to_vec(value).expect("values serialise"))),
    );
    Value::Object(sealed)
}

/// What [`seal_value`] sealed.
pub fn open_value(value: &Value, key: &DataKey) -> Result<Value, CipherError> {
    let text = sealed_text(value).ok_or(CipherError::Tampered)?;
    serde_json::from_slice(&key.open(text)?).map_err(|_| CipherError::Tampered)
}

fn sealed_text(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(SEALED)?.as_str(),
        _ => None,
    }
}

fn inner_mut(payload: &mut Value) -> Option<&mut Value> {
    match payload {
        Value::Object(m) if m.len() == 1 => m.values_mut().next(),
        _ => None,
    }
}

/// A payload opened: its JSON text with every value it can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub payload: String,
    /// Its owner is erased: the personal values are `null`.
    pub erased: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("payload is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("personal value of {owner:?} does not open: {error}")]
    Sealed { owner: Option<Uuid>, error: CipherError },
}

/// How a sealed value starts in a payload's text. Inside a JSON string a
/// `"` is always escaped, so these bytes only ever start a sealed object
/// (the member names of events are the service's own); base64 holds no
/// `"`, so the value ends at the next `"}`.
const MARK: &str = "{\"$sealed\":\"";

/// Whether a payload's text holds a sealed value.
pub fn is_sealed(payload: &str) -> bool {
    payload.contains(MARK)
}

/// Whose key opens a stored payload: the user of a user's event, the
/// member of a household's membership event (read from the payload).
pub fn owner_of(aggregate_type: &str, aggregate_id: &str, payload: &str) -> Result<Option<Uuid>, OpenError> {
    if aggregate_type == "user" {
        return Ok(aggregate_id.parse().ok());
    }
    let value: Value = serde_json::from_str(payload)?;
    Ok(match &value {
        Value::Object(m) if m.len() == 1 => m
            .values()
            .next()
            .and_then(|inner| personal::owner(aggregate_type, aggregate_id, inner)),
        _ => None,
    })
}

/// A stored payload with its sealed values opened by `key` (the owner's;
/// `None`: the owner is erased, and each sealed value becomes `null`). It
/// works on the text: each sealed object is replaced by the JSON text it
/// sealed, the rest is left byte for byte.
pub fn open_text(payload: String, key: Option<&DataKey>) -> Result<Opened, OpenError> {
    if !is_sealed(&payload) {
        return Ok(Opened { payload, erased: false });
    }
    let tampered = |error| OpenError::Sealed {
        owner: key.map(DataKey::owner),
        error,
    };
    let mut out = String::with_capacity(payload.len());
    let mut erased = false;
    let mut rest = payload.as_str();
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let sealed = &rest[at + MARK.len()..];
        let end = sealed.find("\"}").ok_or_else(|| tampered(CipherError::Tampered))?;
        match key {
            Some(key) => {
                let plain = key.open(&sealed[..end]).map_err(tampered)?;
                out.push_str(std::str::from_utf8(&plain).map_err(|_| tampered(CipherError::Tampered))?);
            }
            None => {
                erased = true;
                out.push_str("null");
            }
        }
        rest = &sealed[end + 2..];
    }
    out.push_str(rest);
    Ok(Opened { payload: out, erased })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::MasterKey;
    use serde_json::json;

    fn key(owner: u128) -> DataKey {
        DataKey::generate(Uuid::from_u128(owner), &MasterKey::generate().0).0
    }

    fn enrolled() -> Value {
        json!({"UserEnrolled": {
            "user_id": Uuid::from_u128(1).to_string(), "company_id": "acme",
            "first_name": "Zelda", "last_name": null, "email": "zelda@example.com",
            "external_ref": {"id": "CUST-9", "type": "CUSTOMER_ID"},
            "address": {"line1": "1 Main", "line2": null, "city": "Doha", "region": null, "postal_code": null, "country": "QA"},
            "date_of_birth": "1990-04-01", "gender": "f", "status_reason": "vip",
            "kyc": {"kyc_id": "KYC-1", "status": "approved"},
            "account": {"account_id": "ACC-7", "account_id_type": "T", "status": "S", "product_code": "P", "program_identifier": "G"},
            "password_hash": "$argon2id$x",
            "verification_questions": [{"code": "PET", "answer_hash": "$argon2id$y"}],
            "at": "2026-12-02T00:00:00.000000Z"
        }})
    }

    fn open(payload: &Value, key: Option<&DataKey>) -> Result<Opened, OpenError> {
        assert!(is_sealed(&payload.to_string()));
        open_text(payload.to_string(), key)
    }

    #[test]
    fn personal_values_are_sealed_and_open_to_the_same_payload() {
        let k = key(1);
        let mut sealed = enrolled();
        seal_payload("user", "UserEnrolled", &mut sealed, &k);
        let text = sealed.to_string();
        for secret in [
            "Zelda",
            "zelda@example.com",
            "CUST-9",
            "1 Main",
            "1990-04-01",
            "vip",
            "KYC-1",
            "ACC-7",
            "argon2id",
        ] {
            assert!(!text.contains(secret), "{secret} is in {text}");
        }
        for kept in [
            "CUSTOMER_ID",
            "approved",
            "PET",
            "\"gender\":\"f\"",
            "\"last_name\":null",
        ] {
            assert!(text.contains(kept), "{kept} is not in {text}");
        }
        let opened = open(&sealed, Some(&k)).expect("opens");
        assert_eq!(
            serde_json::from_str::<Value>(&opened.payload).expect("json"),
            enrolled()
        );
        assert!(!opened.erased);
        // Sealing twice seals once.
        let mut twice = sealed.clone();
        seal_payload("user", "UserEnrolled", &mut twice, &k);
        assert_eq!(twice, sealed);
        assert!(!has_plain_values("user", "UserEnrolled", &mut twice));
        assert!(has_plain_values("user", "UserEnrolled", &mut enrolled()));
    }

    #[test]
    fn without_its_key_a_payload_opens_erased_and_under_another_key_not_at_all() {
        let k = key(1);
        let mut sealed = enrolled();
        seal_payload("user", "UserEnrolled", &mut sealed, &k);
        let erased = open(&sealed, None).expect("opens erased");
        assert!(erased.erased);
        let v: Value = serde_json::from_str(&erased.payload).expect("json");
        assert_eq!(v["UserEnrolled"]["first_name"], Value::Null);
        assert_eq!(
            v["UserEnrolled"]["external_ref"],
            json!({"id": null, "type": "CUSTOMER_ID"})
        );
        assert!(matches!(open(&sealed, Some(&key(1))), Err(OpenError::Sealed { .. })));
    }

    #[test]
    fn payloads_without_sealed_values_are_left_as_they_are() {
        let plain = enrolled().to_string();
        assert_eq!(open_text(plain.clone(), None).expect("opens").payload, plain);
        // A client's text that looks like a sealed value is only text.
        let sly = json!({"UserUpdated": {"changes": {"first_name": "{\"$sealed\":\"AAAA\"}"}, "gender": "$sealed"}});
        assert!(!is_sealed(&sly.to_string()));
        assert_eq!(
            open_text(sly.to_string(), None).expect("opens").payload,
            sly.to_string()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_values_round_trip_through_sealing(first in ".*", last in ".*", gender in ".*", city in "\\PC*") {
            let k = key(1);
            let original = json!({"UserEnrolled": {
                "user_id": Uuid::from_u128(1).to_string(), "first_name": first, "last_name": last, "gender": gender,
                "address": {"line1": "{\"$sealed\":\"x\"}", "city": city, "country": "AE"},
                "external_ref": {"id": last, "type": first}
            }});
            let mut sealed = original.clone();
            seal_payload("user", "UserEnrolled", &mut sealed, &k);
            let opened = open_text(sealed.to_string(), Some(&k)).expect("opens");
            let back: Value = serde_json::from_str(&opened.payload).expect("json");
            proptest::prop_assert_eq!(&back, &original);
            let erased: Value = serde_json::from_str(&open_text(sealed.to_string(), None).expect("opens").payload).expect("json");
            proptest::prop_assert_eq!(&erased["UserEnrolled"]["first_name"], &Value::Null);
            proptest::prop_assert_eq!(&erased["UserEnrolled"]["gender"], &original["UserEnrolled"]["gender"]);
        }
    }
}
