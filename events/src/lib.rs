//! What happened in Roster.
//!
//! This crate holds the event types of every aggregate (past tense, with an
//! explicit version), the public [`user::UserDoc`] that user events fold
//! into, and the rules for what of an event may leave the service
//! ([`public_data`]). It does no I/O: the write side (`roster-command`), the
//! projections and the HTTP layer all build on it.

pub mod card;
pub mod compact;
pub mod household;
pub mod personal;
pub mod time;
pub mod upcast;
pub mod user;

pub use time::Timestamp;

use serde_json::Value;

/// Event metadata keys, stored in the `metadata` column of every event.
pub mod meta {
    /// The company (tenant) the event belongs to.
    pub const COMPANY_ID: &str = "company_id";
    /// The API client that caused the event (the actor).
    pub const CLIENT_ID: &str = "client_id";
    /// The request id of the HTTP request that caused the event.
    pub const REQUEST_ID: &str = "request_id";
    /// The `Idempotency-Key` of that request, when it had one.
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// When the event happened (RFC 3339, microseconds, UTC).
    pub const OCCURRED_AT: &str = "occurred_at";
}

/// The public data of a stored event: the inner object of the stored
/// payload (`{"UserEnrolled": {...}}` → `{...}`) with every secret removed.
///
/// Secrets follow one naming rule, enforced here for every event type at
/// once: a field whose name ends in `_hash` (password and answer hashes)
/// never leaves the aggregate. The audit trail, Kafka and logs only ever see
/// this function's output.
pub fn public_data(payload: Value) -> Value {
    let mut inner = match payload {
        Value::Object(map) if map.len() == 1 => map.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null),
        other => other,
    };
    scrub(&mut inner);
    inner
}

/// [`public_data`] of a stored payload's text, as JSON bytes, without
/// building the whole payload as a `Value`: the inner object's fields are
/// kept as the text they are (stored payloads are written compact with
/// their keys sorted, so the bytes are `public_data`'s), `_hash` fields
/// dropped, and only a field whose text holds a `_hash` key deeper down is
/// parsed and scrubbed. What the Kafka publisher sends for every event.
pub fn public_json(payload: &str) -> Vec<u8> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    let slow =
        || serde_json::to_vec(&public_data(serde_json::from_str(payload).unwrap_or_default())).unwrap_or_default();
    let Ok(outer) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(payload) else {
        return slow();
    };
    let inner = match outer.len() {
        1 => outer.into_values().next().map(RawValue::get).unwrap_or("null"),
        _ => return slow(),
    };
    let Ok(fields) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(inner) else {
        // Not an object (or a key with escapes): the general way.
        return slow();
    };
    let mut out = Vec::with_capacity(inner.len());
    out.push(b'{');
    let mut first = true;
    for (key, value) in fields {
        if key.ends_with("_hash") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, key).unwrap_or_default();
        out.push(b':');
        let text = value.get();
        if text.contains("_hash\"") {
            let mut nested: Value = serde_json::from_str(text).unwrap_or_default();
            scrub(&mut nested);
            serde_json::to_writer(&mut out, &nested).unwrap_or_default();
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b'}');
    out
}

fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.ends_with("_hash"));
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// The CloudEvents `type` of an event: `roster.<aggregate>.<event>.v<major>`,
/// where `<event>` is the event name without the aggregate prefix, in
/// snake_case (`UserEnrolled` → `roster.user.enrolled.v1`).
/// Every CloudEvents type Roster publishes (CONTRACT §8), as webhook
/// endpoints subscribe to them; each has its schema in `docs/events`.
pub const CLOUD_EVENT_TYPES: [&str; 19] = [
    "roster.card_catalog.card_product_created.v1",
    "roster.household.created.v1",
    "roster.household.member_added.v1",
    "roster.household.member_removed.v1",
    "roster.user.account_added.v1",
    "roster.user.card_ordered.v1",
    "roster.user.card_terminated.v1",
    "roster.user.enrolled.v1",
    "roster.user.erased.v1",
    "roster.user.kyc_updated.v1",
    "roster.user.parent_linked.v1",
    "roster.user.parent_unlinked.v1",
    "roster.user.password_changed.v1",
    "roster.user.status_changed.v1",
    "roster.user.updated.v1",
    "roster.user.verification_failed.v1",
    "roster.user.verification_locked.v1",
    "roster.user.verification_questions_set.v1",
    "roster.user.verification_succeeded.v1",
];

pub fn cloud_event_type(aggregate_type: &str, event_type: &str, event_version: &str) -> String {
    let prefix: String = {
        let mut c = aggregate_type.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    let name = event_type.strip_prefix(&prefix).unwrap_or(event_type);
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(ch.to_ascii_lowercase());
        } else {
            snake.push(ch);
        }
    }
    let major = event_version.split('.').next().unwrap_or("1");
    format!("roster.{aggregate_type}.{snake}.v{major}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn public_json_is_public_data_without_the_value() {
        let payloads = [
            json!({"UserEnrolled": {"email": "a@b.c", "password_hash": "$argon2id$x", "verification_questions": [],
                   "address": {"line1": "1 \"Main\"", "line2": null}, "at": "2026-12-06T00:00:00.000000Z"}}),
            json!({"VerificationQuestionsSet": {"questions": [{"code": "PET", "answer_hash": "$argon2id$y"}], "at": "t"}}),
            json!({"UserErased": {"user_id": "u", "nested": {"deep": [{"x_hash": 1, "keep": [1, 2]}]}}}),
            json!({"A": 1}),
            json!({"A": null}),
            json!({"A": {}, "B": {}}),
            json!([1, 2]),
        ];
        for payload in payloads {
            // Stored payloads are compact with sorted keys: the bytes match.
            let text = payload.to_string();
            let expected = serde_json::to_vec(&public_data(payload.clone())).expect("json");
            assert_eq!(
                String::from_utf8(public_json(&text)).expect("utf-8"),
                String::from_utf8(expected.clone()).expect("utf-8"),
                "{text}"
            );
            // Written otherwise (spaces, as Postgres' json_build_object
            // writes): the same JSON.
            let spaced = serde_json::to_string_pretty(&payload).expect("json");
            let got: Value = serde_json::from_slice(&public_json(&spaced)).expect("json");
            assert_eq!(
                got,
                serde_json::from_slice::<Value>(&expected).expect("json"),
                "{spaced}"
            );
        }
        assert!(!String::from_utf8(public_json("not json"))
            .expect("utf-8")
            .contains("not"));
    }

    #[test]
    fn public_data_unwraps_and_drops_every_hash() {
        let payload = json!({"UserEnrolled": {
            "email": "a@b.co",
            "password_hash": "$argon2id$secret",
            "verification_questions": [{"code": "PET", "answer_hash": "$argon2id$x"}]
        }});
        assert_eq!(
            public_data(payload),
            json!({"email": "a@b.co", "verification_questions": [{"code": "PET"}]})
        );
    }

    #[test]
    fn cloud_event_types_follow_the_contract() {
        assert_eq!(
            cloud_event_type("user", "UserEnrolled", "1.0"),
            "roster.user.enrolled.v1"
        );
        assert_eq!(
            cloud_event_type("user", "CardOrdered", "1.0"),
            "roster.user.card_ordered.v1"
        );
        assert_eq!(
            cloud_event_type("household", "HouseholdMemberAdded", "2.0"),
            "roster.household.member_added.v2"
        );
    }

    #[test]
    fn every_published_type_is_listed_with_its_schema() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events");
        let mut documented: Vec<String> = std::fs::read_dir(dir)
            .expect("docs/events")
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".schema.json")
                    .map(String::from)
            })
            .collect();
        documented.sort();
        assert_eq!(documented, CLOUD_EVENT_TYPES.map(String::from).to_vec());
    }
}
