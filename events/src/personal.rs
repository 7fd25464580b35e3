//! Which values of an event are personal data (CONTRACT §3, "Erasure"), and
//! whose.
//!
//! The event store holds these values only sealed under their owner's data
//! key (the `roster-vault` crate); erasing the owner destroys the key. The
//! list is the contract's: names, email, mobile, office phone and
//! extension, employee id, date of birth, address and billing address,
//! external reference id, account ids, KYC id, status reason, and
//! verification answers — and, as secrets sealed the same way, password
//! hashes. Everything else (ids, statuses, codes, times) stays readable so
//! that an erased user's audit trail keeps its shape.
//!
//! A path names a member of the event's inner object (`{"UserEnrolled":
//! {...}}` → `{...}`): `a.b` descends into an object, `a[]` into every item
//! of an array.

use serde_json::Value;
use uuid::Uuid;

const ENROLLED: &[&str] = &[
    "first_name",
    "last_name",
    "email",
    "mobile",
    "office_phone",
    "office_extension",
    "employee_id",
    "date_of_birth",
    "address",
    "billing_address",
    "external_ref.id",
    "status_reason",
    "kyc.kyc_id",
    "account.account_id",
    "password_hash",
    "verification_questions[].answer_hash",
];
const UPDATED: &[&str] = &[
    "changes.first_name",
    "changes.last_name",
    "changes.email",
    "changes.mobile",
    "changes.office_phone",
    "changes.office_extension",
    "changes.employee_id",
    "changes.date_of_birth",
    "changes.address",
    "changes.billing_address",
    "changes.external_ref.id",
];

/// The paths of `event_type`'s personal values (none for most events).
pub fn paths(aggregate_type: &str, event_type: &str) -> &'static [&'static str] {
    match (aggregate_type, event_type) {
        ("user", "UserEnrolled") => ENROLLED,
        ("user", "UserUpdated") => UPDATED,
        ("user", "PasswordChanged") => &["password_hash"],
        ("user", "VerificationQuestionsSet") => &["questions[].answer_hash"],
        ("user", "StatusChanged") => &["reason"],
        ("user", "KycUpdated") => &["kyc.kyc_id"],
        ("user", "AccountAdded") => &["account.account_id"],
        ("user", "CardOrdered") => &["shipping.address"],
        ("household", "HouseholdMemberAdded" | "HouseholdMemberRemoved") => &["account_id"],
        _ => &[],
    }
}

/// Whose personal data an event holds: the user itself for a user's
/// events, the member for a household's membership events.
pub fn owner(aggregate_type: &str, aggregate_id: &str, inner: &Value) -> Option<Uuid> {
    match aggregate_type {
        "user" => aggregate_id.parse().ok(),
        "household" => inner.get("user_id")?.as_str()?.parse().ok(),
        _ => None,
    }
}

/// Calls `f` on every value `path` names in `inner` (absent members are
/// skipped).
pub fn visit(inner: &mut Value, path: &str, f: &mut impl FnMut(&mut Value)) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let (name, each) = match head.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (head, false),
    };
    let Some(member) = inner.get_mut(name) else { return };
    let mut at = |v: &mut Value| match rest {
        Some(rest) => visit(v, rest, f),
        None => f(v),
    };
    if each {
        if let Value::Array(items) = member {
            items.iter_mut().for_each(&mut at);
        }
    } else {
        at(member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_nested_members_and_array_items() {
        let mut inner = json!({
            "external_ref": {"id": "C1", "type": "CUSTOMER_ID"},
            "verification_questions": [{"code": "A", "answer_hash": "h1"}, {"code": "B", "answer_hash": "h2"}],
            "email": null
        });
        let mut seen = Vec::new();
        for path in paths("user", "UserEnrolled") {
            visit(&mut inner, path, &mut |v| seen.push(v.clone()));
        }
        assert_eq!(seen, vec![json!(null), json!("C1"), json!("h1"), json!("h2")]);
    }

    #[test]
    fn household_members_are_their_users_data() {
        let id = Uuid::from_u128(7);
        let inner = json!({"user_id": id.to_string(), "account_id": "ACC-1"});
        assert_eq!(owner("household", "x", &inner), Some(id));
        assert_eq!(owner("user", &id.to_string(), &json!({})), Some(id));
        assert_eq!(owner("catalog", "x", &inner), None);
    }
}
