//! User events and the public user document they fold into.
//!
//! [`UserDoc`] is the user resource of the API. The write side keeps one in
//! its aggregate and the user view projection keeps one per row; both build
//! it with the same [`UserDoc::apply`], so a write's response and a later
//! read are the same document.
//!
//! One file of about 540 lines: every user event and the document they fold
//! into, so the whole vocabulary of a user is in one place.

use crate::card::{CardOrdered, CardTerminated};
use crate::Timestamp;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Current version of every user event's schema (cqrs-es `event_version`).
pub const EVENT_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserEnrolled(Box<UserEnrolled>),
    /// Profile fields that changed, with their new values (`null`: cleared).
    UserUpdated(UserUpdated),
    PasswordChanged(PasswordChanged),
    ParentLinked(ParentLinked),
    ParentUnlinked(ParentUnlinked),
    VerificationQuestionsSet(VerificationQuestionsSet),
    VerificationSucceeded(VerificationAttempt),
    VerificationFailed(VerificationFailed),
    VerificationLocked(At),
    StatusChanged(StatusChanged),
    KycUpdated(KycUpdated),
    AccountAdded(AccountAdded),
    CardOrdered(CardOrdered),
    CardTerminated(CardTerminated),
    /// The user is forgotten (CONTRACT §3 "Erasure"): its data key is
    /// destroyed, so its earlier events' personal values no longer open.
    UserErased(UserErased),
}

impl UserEvent {
    pub fn name(&self) -> &'static str {
        match self {
            UserEvent::UserEnrolled(_) => "UserEnrolled",
            UserEvent::UserUpdated(_) => "UserUpdated",
            UserEvent::PasswordChanged(_) => "PasswordChanged",
            UserEvent::ParentLinked(_) => "ParentLinked",
            UserEvent::ParentUnlinked(_) => "ParentUnlinked",
            UserEvent::VerificationQuestionsSet(_) => "VerificationQuestionsSet",
            UserEvent::VerificationSucceeded(_) => "VerificationSucceeded",
            UserEvent::VerificationFailed(_) => "VerificationFailed",
            UserEvent::VerificationLocked(_) => "VerificationLocked",
            UserEvent::StatusChanged(_) => "StatusChanged",
            UserEvent::KycUpdated(_) => "KycUpdated",
            UserEvent::AccountAdded(_) => "AccountAdded",
            UserEvent::CardOrdered(_) => "CardOrdered",
            UserEvent::CardTerminated(_) => "CardTerminated",
            UserEvent::UserErased(_) => "UserErased",
        }
    }

    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            UserEvent::UserEnrolled(e) => e.at,
            UserEvent::UserUpdated(e) => e.at,
            UserEvent::PasswordChanged(e) => e.at,
            UserEvent::ParentLinked(e) => e.at,
            UserEvent::ParentUnlinked(e) => e.at,
            UserEvent::VerificationQuestionsSet(e) => e.at,
            UserEvent::VerificationSucceeded(e) => e.at,
            UserEvent::VerificationFailed(e) => e.at,
            UserEvent::VerificationLocked(e) => e.at,
            UserEvent::StatusChanged(e) => e.at,
            UserEvent::KycUpdated(e) => e.at,
            UserEvent::AccountAdded(e) => e.at,
            UserEvent::CardOrdered(e) => e.at,
            UserEvent::CardTerminated(e) => e.at,
            UserEvent::UserErased(e) => e.erased_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct At {
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserUpdated {
    /// Changed profile fields (names as in the user resource) → new value.
    pub changes: Box<ProfileChanges>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserErased {
    pub user_id: Uuid,
    pub company_id: String,
    pub erased_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// Argon2id hash; secret.
    pub password_hash: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentLinked {
    pub parent_user_id: Uuid,
    pub previous_parent_user_id: Option<Uuid>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentUnlinked {
    pub previous_parent_user_id: Uuid,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationQuestionsSet {
    pub questions: Vec<QuestionHash>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationAttempt {
    pub code: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationFailed {
    pub code: String,
    /// Whether the code named one of the user's questions.
    pub known_question: bool,
    pub attempts_remaining: u32,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub status: UserStatus,
    pub previous_status: UserStatus,
    pub reason: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KycUpdated {
    pub kyc: Kyc,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountAdded {
    pub account: Account,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Inactive,
    Active,
    Blocked,
    Closed,
}

impl UserStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            UserStatus::Inactive => "inactive",
            UserStatus::Active => "active",
            UserStatus::Blocked => "blocked",
            UserStatus::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExternalRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct CommunicationPreferences {
    pub email: bool,
    pub sms: bool,
    pub post: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    Pending,
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Kyc {
    pub kyc_id: Option<String>,
    pub status: Option<KycStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub account_id: String,
    pub account_id_type: String,
    pub status: String,
    pub product_code: String,
    pub program_identifier: String,
}

/// The profile fields a client writes directly (at enrollment, and later by
/// update). Every field is already validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct Profile {
    pub external_ref: Option<ExternalRef>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub mobile: Option<String>,
    pub office_phone: Option<String>,
    pub office_extension: Option<String>,
    pub employee_id: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub gender: Option<String>,
    pub nationality: Option<String>,
    pub locale: Option<String>,
    pub address: Option<Address>,
    pub billing_address: Option<Address>,
    pub communication_preferences: CommunicationPreferences,
}

/// Deserialises a present field as `Some`, even when it is `null`: with
/// `#[serde(default)]`, an absent field is `None` and a `null` one of an
/// `Option<Option<T>>` is `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The profile fields, once: [`ProfileChanges`] and the profile's diff and
/// apply follow from this list.
macro_rules! profile_changes {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The profile fields a `UserUpdated` changed, each with its new
        /// value (`Some(None)`: cleared). Stored as the JSON object of just
        /// those fields, named as in the user resource.
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub struct ProfileChanges {
            $(
                #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl ProfileChanges {
            pub fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())*
            }

            /// How many fields changed.
            pub fn len(&self) -> usize {
                0 $(+ usize::from(self.$field.is_some()))*
            }
        }

        impl Profile {
            /// The fields whose values differ in `other`, with `other`'s values.
            pub fn changes_to(&self, other: &Profile) -> ProfileChanges {
                ProfileChanges {
                    $($field: (self.$field != other.$field).then(|| other.$field.clone()),)*
                }
            }

            /// This profile with `changes` applied.
            pub fn with_changes(&self, changes: &ProfileChanges) -> Profile {
                let mut p = self.clone();
                $(if let Some(v) = &changes.$field {
                    p.$field = v.clone();
                })*
                p
            }
        }
    };
}

profile_changes! {
    external_ref: Option<ExternalRef>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    email_verified: bool,
    mobile: Option<String>,
    office_phone: Option<String>,
    office_extension: Option<String>,
    employee_id: Option<String>,
    date_of_birth: Option<NaiveDate>,
    gender: Option<String>,
    nationality: Option<String>,
    locale: Option<String>,
    address: Option<Address>,
    billing_address: Option<Address>,
    communication_preferences: CommunicationPreferences,
}

/// A security question as stored in the event: the answer only as a hash
/// (the `_hash` suffix keeps it out of every public view, see
/// [`crate::public_data`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionHash {
    pub code: String,
    pub answer_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEnrolled {
    pub user_id: Uuid,
    pub company_id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub status: UserStatus,
    pub status_reason: Option<String>,
    pub parent_user_id: Option<Uuid>,
    pub kyc: Option<Kyc>,
    pub account: Option<Account>,
    /// Argon2id hash of the password; secret.
    pub password_hash: Option<String>,
    pub verification_questions: Vec<QuestionHash>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Login {
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountDoc {
    #[serde(flatten)]
    pub account: Account,
    pub household_id: Option<Uuid>,
}

/// Consecutive failed verifications that lock a user.
pub const MAX_FAILED_VERIFICATIONS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationDoc {
    pub question_codes: Vec<String>,
    pub locked: bool,
}

/// The user resource as the API shows it. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserDoc {
    pub id: Uuid,
    pub company_id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub status: UserStatus,
    pub status_reason: Option<String>,
    pub parent_user_id: Option<Uuid>,
    pub kyc: Option<Kyc>,
    pub login: Option<Login>,
    pub accounts: Vec<AccountDoc>,
    pub verification: Option<VerificationDoc>,
    pub version: u64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl UserDoc {
    /// The document right after enrollment (version 1).
    pub fn enrolled(e: &UserEnrolled) -> Self {
        UserDoc {
            id: e.user_id,
            company_id: e.company_id.clone(),
            profile: e.profile.clone(),
            status: e.status,
            status_reason: e.status_reason.clone(),
            parent_user_id: e.parent_user_id,
            kyc: e.kyc.clone(),
            login: e.password_hash.as_ref().map(|_| Login {
                email: e.profile.email.clone(),
            }),
            accounts: e
                .account
                .iter()
                .map(|a| AccountDoc {
                    account: a.clone(),
                    household_id: None,
                })
                .collect(),
            verification: (!e.verification_questions.is_empty()).then(|| VerificationDoc {
                question_codes: e.verification_questions.iter().map(|q| q.code.clone()).collect(),
                locked: false,
            }),
            version: 1,
            created_at: e.at,
            updated_at: e.at,
        }
    }

    /// Folds one event into the document: `None` before enrollment (an
    /// event other than enrollment on no document leaves none) and after
    /// erasure.
    pub fn fold(doc: Option<UserDoc>, event: &UserEvent) -> Option<UserDoc> {
        if let UserEvent::UserEnrolled(e) = event {
            return Some(Self::enrolled(e));
        }
        let mut d = doc?;
        match event {
            UserEvent::UserEnrolled(_) => unreachable!("handled above"),
            UserEvent::UserUpdated(e) => {
                d.profile = d.profile.with_changes(&e.changes);
                if let Some(login) = &mut d.login {
                    login.email = d.profile.email.clone();
                }
            }
            UserEvent::PasswordChanged(_) => {
                d.login = Some(Login {
                    email: d.profile.email.clone(),
                })
            }
            UserEvent::ParentLinked(e) => d.parent_user_id = Some(e.parent_user_id),
            UserEvent::ParentUnlinked(_) => d.parent_user_id = None,
            UserEvent::VerificationQuestionsSet(e) => {
                d.verification = Some(VerificationDoc {
                    question_codes: e.questions.iter().map(|q| q.code.clone()).collect(),
                    locked: false,
                })
            }
            UserEvent::VerificationSucceeded(_) | UserEvent::VerificationFailed(_) => {}
            UserEvent::VerificationLocked(_) => {
                if let Some(v) = &mut d.verification {
                    v.locked = true;
                }
            }
            UserEvent::StatusChanged(e) => {
                d.status = e.status;
                d.status_reason = e.reason.clone();
            }
            UserEvent::KycUpdated(e) => d.kyc = Some(e.kyc.clone()),
            UserEvent::AccountAdded(e) => d.accounts.push(AccountDoc {
                account: e.account.clone(),
                household_id: None,
            }),
            // Cards are their own resource (`/v1/users/{id}/cards`).
            UserEvent::CardOrdered(_) | UserEvent::CardTerminated(_) => {}
            UserEvent::UserErased(_) => return None,
        }
        d.version += 1;
        d.updated_at = event.at();
        Some(d)
    }
}

impl cqrs_es::DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `with_changes` means: the profile as JSON, the changed fields
    /// replaced, read back.
    fn through_json(p: &Profile, changes: &serde_json::Value) -> Profile {
        let mut object = serde_json::to_value(p).expect("json");
        for (k, v) in changes.as_object().expect("object") {
            object[k] = v.clone();
        }
        serde_json::from_value(object).expect("a profile")
    }

    #[test]
    fn changes_are_stored_as_the_changed_fields_and_applied_like_a_json_round_trip() {
        let before = Profile {
            email: Some("a@example.com".into()),
            first_name: Some("Ann".into()),
            address: Some(Address {
                line1: "1 Main St".into(),
                line2: None,
                city: "Dubai".into(),
                region: None,
                postal_code: None,
                country: "AE".into(),
            }),
            ..Profile::default()
        };
        let stored = json!({
            "external_ref": {"id": "C1", "type": "CUSTOMER_ID"}, "first_name": null, "last_name": "Lee",
            "email": "b@example.com", "email_verified": true, "mobile": "+971501234567", "office_phone": "1",
            "office_extension": "2", "employee_id": "E1", "date_of_birth": "1990-04-01", "gender": "f",
            "nationality": "AE", "locale": "en-US", "address": null,
            "billing_address": {"line1": "2 Side St", "line2": "x", "city": "Doha", "region": null,
                                "postal_code": "1", "country": "QA"},
            "communication_preferences": {"email": true, "sms": true, "post": false}
        });
        let changes: ProfileChanges = serde_json::from_value(stored.clone()).expect("changes");
        assert_eq!(changes.len(), 16);
        assert_eq!(changes.first_name, Some(None), "null is a change to nothing");
        assert_eq!(
            serde_json::to_value(&changes).expect("json"),
            stored,
            "the same JSON back"
        );
        let after = before.with_changes(&changes);
        assert_eq!(after, through_json(&before, &stored));
        assert_eq!(before.changes_to(&after), changes);
        // Absent fields are no change, and are not stored.
        let one: ProfileChanges = serde_json::from_value(json!({"last_name": "Lee"})).expect("changes");
        assert_eq!(serde_json::to_value(&one).expect("json"), json!({"last_name": "Lee"}));
        assert_eq!(before.with_changes(&one).first_name.as_deref(), Some("Ann"));
    }
}
