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
        Value::String(key.seal(value.to_string().as_bytes())),
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

/// A stored payload with sealed values, parsed, waiting for its owner's key.
#[derive(Debug)]
pub struct Pending {
    payload: Value,
    owner: Option<Uuid>,
    aggregate_type: String,
    event_type: String,
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

impl Pending {
    /// The payload parsed when it holds a sealed value; `None` (nothing to
    /// open, use the text as it is) otherwise.
    pub fn parse(
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload: &str,
    ) -> Result<Option<Self>, OpenError> {
        if personal::paths(aggregate_type, event_type).is_empty() || !payload.contains("\"$sealed\"") {
            return Ok(None);
        }
        let payload: Value = serde_json::from_str(payload)?;
        let owner = match &payload {
            Value::Object(m) if m.len() == 1 => m
                .values()
                .next()
                .and_then(|inner| personal::owner(aggregate_type, aggregate_id, inner)),
            _ => None,
        };
        Ok(Some(Pending {
            payload,
            owner,
            aggregate_type: aggregate_type.to_string(),
            event_type: event_type.to_string(),
        }))
    }

    /// Whose key opens it.
    pub fn owner(&self) -> Option<Uuid> {
        self.owner
    }

    /// Opens it with the owner's key; `None`: the owner is erased.
    pub fn open(mut self, key: Option<&DataKey>) -> Result<Opened, OpenError> {
        let mut failure = None;
        let mut erased = false;
        if let Some(inner) = inner_mut(&mut self.payload) {
            for path in personal::paths(&self.aggregate_type, &self.event_type) {
                personal::visit(inner, path, &mut |v| {
                    if sealed_text(v).is_none() {
                        return;
                    }
                    match key.map(|k| open_value(v, k)) {
                        Some(Ok(plain)) => *v = plain,
                        Some(Err(e)) => failure = Some(e),
                        None => {
                            erased = true;
                            *v = Value::Null;
                        }
                    }
                });
            }
        }
        if let Some(error) = failure {
            return Err(OpenError::Sealed {
                owner: self.owner,
                error,
            });
        }
        Ok(Opened {
            payload: self.payload.to_string(),
            erased,
        })
    }
}

/// One event's payload opened with its owner's key (when it holds sealed
/// values; otherwise as it is).
pub fn open_text(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: String,
    key: Option<&DataKey>,
) -> Result<Opened, OpenError> {
    match Pending::parse(aggregate_type, aggregate_id, event_type, &payload)? {
        None => Ok(Opened { payload, erased: false }),
        Some(pending) => pending.open(key),
    }
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
        let text = payload.to_string();
        let id = Uuid::from_u128(1).to_string();
        Pending::parse("user", &id, "UserEnrolled", &text)?
            .expect("sealed values")
            .open(key)
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
        let id = Uuid::from_u128(1).to_string();
        let plain = enrolled().to_string();
        assert!(Pending::parse("user", &id, "UserEnrolled", &plain)
            .expect("parses")
            .is_none());
        let status = json!({"VerificationSucceeded": {"code": "$sealed"}}).to_string();
        assert!(Pending::parse("user", &id, "VerificationSucceeded", &status)
            .expect("parses")
            .is_none());
    }
}
