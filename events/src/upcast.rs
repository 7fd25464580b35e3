//! Upcasting: how an event's shape changes without rewriting history.
//!
//! Stored events keep the version they were written with. When an event's
//! shape must change incompatibly (a field renamed, split, retyped):
//!
//! 1. bump its version (`EVENT_VERSION` of the aggregate's events, e.g.
//!    `1.0` → `2.0`) and change the Rust type to the new shape;
//! 2. add an [`Upcaster`] to [`REGISTERED`] that turns the old payload into
//!    the new one (`1.0` → `2.0`; chains compose: `1.0` → `2.0` → `3.0`);
//! 3. add a test that stores an old payload and reads it back.
//!
//! Every reader goes through [`upcast`]: the aggregates
//! (`roster_command::store::EventRepo::events_after`), the projections
//! (`engine::read_page`) and the audit trail; Kafka consumers receive the
//! upcast shape with its new `ce_type` version. Adding an optional field is
//! not a new version: `Option` fields read as `null` from old events.

use serde_json::Value;

/// One step: `aggregate_type`/`event_type` at `from` becomes `to`.
pub struct Upcaster {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// Rewrites the inner object of the payload (`{"UserEnrolled": {...}}` → `{...}`).
    pub rewrite: fn(Value) -> Value,
}

/// The upcasters of every event whose shape has changed. None yet: every
/// stored event is at its current version.
pub const REGISTERED: &[Upcaster] = &[];

/// The payload of a stored event at its current version.
pub fn upcast(aggregate_type: &str, event_type: &str, version: &str, payload: Value) -> (String, Value) {
    upcast_with(REGISTERED, aggregate_type, event_type, version, payload)
}

/// The version an event stored at `version` is read at.
pub fn current_version(aggregate_type: &str, event_type: &str, version: &str) -> String {
    let mut version = version.to_string();
    while let Some(u) = REGISTERED
        .iter()
        .find(|u| u.aggregate_type == aggregate_type && u.event_type == event_type && u.from == version)
    {
        version = u.to.to_string();
    }
    version
}

/// [`upcast`] for a payload kept as JSON text: parsed only when an upcaster applies.
pub fn upcast_text(aggregate_type: &str, event_type: &str, version: &str, payload: String) -> (String, String) {
    let applies = REGISTERED
        .iter()
        .any(|u| u.aggregate_type == aggregate_type && u.event_type == event_type && u.from == version);
    if !applies {
        return (version.to_string(), payload);
    }
    let value: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    let (version, value) = upcast(aggregate_type, event_type, version, value);
    (version, value.to_string())
}

pub fn upcast_with(
    upcasters: &[Upcaster],
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    mut payload: Value,
) -> (String, Value) {
    let mut version = version.to_string();
    while let Some(u) = upcasters
        .iter()
        .find(|u| u.aggregate_type == aggregate_type && u.event_type == event_type && u.from == version)
    {
        if let Some(inner) = payload.get_mut(event_type) {
            *inner = (u.rewrite)(inner.take());
        }
        version = u.to.to_string();
    }
    (version, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A hypothetical history: v1 had one `name`, v2 split it, v3 renamed `given`.
    const HISTORY: &[Upcaster] = &[
        Upcaster {
            aggregate_type: "user",
            event_type: "UserEnrolled",
            from: "1.0",
            to: "2.0",
            rewrite: |mut v| {
                let name = v["name"].as_str().unwrap_or_default().to_string();
                let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
                v["given"] = json!(first);
                v["last_name"] = json!(last);
                if let Some(o) = v.as_object_mut() {
                    o.remove("name");
                }
                v
            },
        },
        Upcaster {
            aggregate_type: "user",
            event_type: "UserEnrolled",
            from: "2.0",
            to: "3.0",
            rewrite: |mut v| {
                if let Some(o) = v.as_object_mut() {
                    if let Some(g) = o.remove("given") {
                        o.insert("first_name".into(), g);
                    }
                }
                v
            },
        },
    ];

    #[test]
    fn old_payloads_are_brought_to_the_current_version_step_by_step() {
        let stored = json!({"UserEnrolled": {"name": "John Doe", "email": "j@example.com"}});
        let (version, payload) = upcast_with(HISTORY, "user", "UserEnrolled", "1.0", stored);
        assert_eq!(version, "3.0");
        assert_eq!(
            payload,
            json!({"UserEnrolled": {"first_name": "John", "last_name": "Doe", "email": "j@example.com"}})
        );
        let current = json!({"UserEnrolled": {"first_name": "A"}});
        assert_eq!(
            upcast_with(HISTORY, "user", "UserEnrolled", "3.0", current.clone()),
            ("3.0".to_string(), current)
        );
    }

    #[test]
    fn other_events_pass_through() {
        let stored = json!({"UserUpdated": {"changes": {}}});
        assert_eq!(
            upcast_with(HISTORY, "user", "UserUpdated", "1.0", stored.clone()),
            ("1.0".to_string(), stored)
        );
    }
}
