//! The user routes' request bodies as clients send them (their OpenAPI
//! schemas), and their validation into the normalised values the commands
//! carry.
//!
//! One file of about 480 lines: every user route's request body, its
//! OpenAPI schema and its reading into typed values, with their tests.

use crate::http::extract::Validate;
use chrono::NaiveDate;
use roster_command::secret::Secret;
use roster_command::user::patch::ProfilePatch;
use roster_command::user::UserAction;
use roster_command::users::{Change, Enrollment, Question};
use roster_command::validate::{self, across, field, Errors, FieldError};
use roster_events::user::{
    Account, Address, CommunicationPreferences, ExternalRef, Kyc, KycStatus, Profile, UserStatus,
};
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalRefInput {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunicationPreferencesInput {
    pub email: Option<bool>,
    pub sms: Option<bool>,
    pub post: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycInput {
    pub kyc_id: Option<String>,
    pub status: Option<KycStatus>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    pub account_id: String,
    pub account_id_type: String,
    pub status: String,
    pub product_code: String,
    pub program_identifier: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionInput {
    pub code: String,
    pub answer: String,
}

/// `POST /v1/users` body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollUserRequest {
    pub external_ref: Option<ExternalRefInput>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub mobile: Option<String>,
    pub office_phone: Option<String>,
    pub office_extension: Option<String>,
    pub employee_id: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub gender: Option<String>,
    pub nationality: Option<String>,
    pub locale: Option<String>,
    pub address: Option<AddressInput>,
    pub billing_address: Option<AddressInput>,
    pub communication_preferences: Option<CommunicationPreferencesInput>,
    pub status: Option<UserStatus>,
    pub status_reason: Option<String>,
    pub kyc: Option<KycInput>,
    pub password: Option<String>,
    pub parent_user_id: Option<Uuid>,
    pub verification_questions: Option<Vec<QuestionInput>>,
    pub account: Option<AccountInput>,
}

fn opt<T>(errors: &mut Errors, field: &str, value: Option<&str>, f: impl Fn(&str) -> Result<T, String>) -> Option<T> {
    value.and_then(|v| errors.check(field, f(v)))
}

fn address(errors: &mut Errors, path: &str, a: &AddressInput) -> Option<Address> {
    let at = |name: &str| format!("{path}.{name}");
    let line1 = errors.check(&at("line1"), field::ADDRESS_LINE(&a.line1));
    let line2 = opt(errors, &at("line2"), a.line2.as_deref(), field::ADDRESS_LINE);
    let city = errors.check(&at("city"), field::ADDRESS_LINE(&a.city));
    let region = opt(errors, &at("region"), a.region.as_deref(), field::ADDRESS_LINE);
    let postal_code = opt(errors, &at("postal_code"), a.postal_code.as_deref(), field::POSTAL_CODE);
    let country = errors.check(&at("country"), field::COUNTRY(&a.country));
    Some(Address {
        line1: line1?,
        line2,
        city: city?,
        region,
        postal_code,
        country: country?,
    })
}

pub use validate::field::{ANSWER_MAX, QUESTION_CODE_MAX};

/// Validates the questions of an enrollment or of `PUT /verification-questions`.
pub fn questions(errors: &mut Errors, path: &str, input: &[QuestionInput]) -> Vec<Question> {
    if input.is_empty() || input.len() > 5 {
        errors.add(path, "must hold 1 to 5 questions");
    }
    let mut out: Vec<Question> = Vec::with_capacity(input.len());
    for (i, q) in input.iter().enumerate() {
        let code = errors.check(&format!("{path}[{i}].code"), field::QUESTION_CODE(&q.code));
        let answer = errors
            .check(&format!("{path}[{i}].answer"), field::answer(&q.answer))
            .unwrap_or_default();
        if let Some(code) = code {
            if out.iter().any(|o| o.code == code) {
                errors.add(format!("{path}[{i}].code"), "must be unique");
            }
            out.push(Question {
                code,
                answer: Secret::new(answer),
            });
        }
    }
    out
}

impl EnrollUserRequest {
    pub fn validate(self) -> Result<Enrollment, Vec<FieldError>> {
        let mut e = Errors::default();
        let external_ref = self.external_ref.as_ref().and_then(|r| {
            let id = e.check("external_ref.id", field::EXTERNAL_REF_ID(&r.id));
            let kind = e.check("external_ref.type", field::EXTERNAL_REF_TYPE(&r.kind));
            Some(ExternalRef { id: id?, kind: kind? })
        });
        let email = opt(&mut e, "email", self.email.as_deref(), field::EMAIL);
        e.rule(across::identifier(self.email.is_some(), self.external_ref.is_some()));
        let profile = Profile {
            external_ref,
            first_name: opt(&mut e, "first_name", self.first_name.as_deref(), field::FIRST_NAME),
            last_name: opt(&mut e, "last_name", self.last_name.as_deref(), field::LAST_NAME),
            email,
            email_verified: self.email_verified.unwrap_or(false),
            mobile: opt(&mut e, "mobile", self.mobile.as_deref(), field::MOBILE),
            office_phone: opt(
                &mut e,
                "office_phone",
                self.office_phone.as_deref(),
                field::OFFICE_PHONE,
            ),
            office_extension: opt(
                &mut e,
                "office_extension",
                self.office_extension.as_deref(),
                field::OFFICE_EXTENSION,
            ),
            employee_id: opt(&mut e, "employee_id", self.employee_id.as_deref(), field::EMPLOYEE_ID),
            date_of_birth: self
                .date_of_birth
                .and_then(|d| e.check("date_of_birth", validate::date_of_birth(d))),
            gender: opt(&mut e, "gender", self.gender.as_deref(), field::GENDER),
            nationality: opt(&mut e, "nationality", self.nationality.as_deref(), field::NATIONALITY),
            locale: opt(&mut e, "locale", self.locale.as_deref(), field::LOCALE),
            address: self.address.as_ref().and_then(|a| address(&mut e, "address", a)),
            billing_address: self
                .billing_address
                .as_ref()
                .and_then(|a| address(&mut e, "billing_address", a)),
            communication_preferences: self
                .communication_preferences
                .map(|c| CommunicationPreferences {
                    email: c.email.unwrap_or(false),
                    sms: c.sms.unwrap_or(false),
                    post: c.post.unwrap_or(false),
                })
                .unwrap_or_default(),
        };
        let status = self.status.unwrap_or_default();
        if status == UserStatus::Closed {
            e.add("status", "a user cannot be enrolled closed");
        }
        let status_reason = opt(
            &mut e,
            "status_reason",
            self.status_reason.as_deref(),
            field::STATUS_REASON,
        );
        let kyc = self.kyc.map(|k| Kyc {
            kyc_id: opt(&mut e, "kyc.kyc_id", k.kyc_id.as_deref(), field::KYC_ID),
            status: k.status,
        });
        let password = opt(&mut e, "password", self.password.as_deref(), field::password).map(Secret::new);
        e.rule(across::password_needs_email(password.is_some(), self.email.is_some()));
        let verification_questions = match &self.verification_questions {
            Some(q) => questions(&mut e, "verification_questions", q),
            None => Vec::new(),
        };
        let account = self
            .account
            .as_ref()
            .and_then(|a| account_fields(&mut e, "account.", a));
        let enrollment = Enrollment {
            profile,
            status,
            status_reason,
            kyc,
            password,
            parent_user_id: self.parent_user_id,
            verification_questions,
            account,
        };
        e.into_result(enrollment)
    }
}

fn account_fields(e: &mut Errors, prefix: &str, a: &AccountInput) -> Option<Account> {
    let mut f = |name: &str, v: &str| e.check(&format!("{prefix}{name}"), field::ACCOUNT(v));
    let account_id = f("account_id", &a.account_id);
    let account_id_type = f("account_id_type", &a.account_id_type);
    let status = f("status", &a.status);
    let product_code = f("product_code", &a.product_code);
    let program_identifier = f("program_identifier", &a.program_identifier);
    Some(Account {
        account_id: account_id?,
        account_id_type: account_id_type?,
        status: status?,
        product_code: product_code?,
        program_identifier: program_identifier?,
    })
}

/// `POST /v1/users/{id}/accounts` body, validated.
pub fn account(a: &AccountInput) -> Result<Account, Vec<FieldError>> {
    let mut e = Errors::default();
    let account = account_fields(&mut e, "", a);
    e.into_result(account)
        .map(|a| a.expect("no errors means every field is valid"))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRequest {
    pub parent_user_id: Uuid,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionsRequest {
    pub questions: Vec<QuestionInput>,
}

impl Validate for QuestionsRequest {
    type Valid = Vec<Question>;

    fn validate(self) -> Result<Self::Valid, Vec<FieldError>> {
        let mut errors = Errors::default();
        let questions = questions(&mut errors, "questions", &self.questions);
        errors.into_result(questions)
    }
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub code: String,
    pub answer: String,
}

impl Validate for VerifyRequest {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let code = errors.check("code", validate::field::QUESTION_CODE(&self.code));
        let answer = errors.check("answer", validate::field::answer(&self.answer));
        let (code, answer) = errors.into_result((code, answer))?;
        Ok(UserAction::Verify {
            code: code.unwrap_or_default(),
            answer: Secret::new(answer.unwrap_or_default()),
        })
    }
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: UserStatus,
    pub reason: Option<String>,
}

impl Validate for StatusRequest {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let reason = self
            .reason
            .and_then(|r| errors.check("reason", validate::field::STATUS_REASON(&r)));
        errors.into_result(UserAction::ChangeStatus {
            status: self.status,
            reason,
        })
    }
}

impl Validate for KycInput {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        let mut errors = Errors::default();
        let kyc_id = self
            .kyc_id
            .and_then(|k| errors.check("kyc_id", validate::field::KYC_ID(&k)));
        errors.into_result(UserAction::UpdateKyc(Kyc {
            kyc_id,
            status: self.status,
        }))
    }
}

impl Validate for AccountInput {
    type Valid = UserAction;

    fn validate(self) -> Result<UserAction, Vec<FieldError>> {
        account(&self).map(UserAction::AddAccount)
    }
}

impl Validate for EnrollUserRequest {
    type Valid = Enrollment;

    fn validate(self) -> Result<Enrollment, Vec<FieldError>> {
        EnrollUserRequest::validate(self)
    }
}

/// The profile fields of a `PATCH` body as a typed merge patch: every field
/// that is mistyped, unknown or breaks its rule reported at once.
pub fn profile_patch(fields: serde_json::Map<String, serde_json::Value>) -> Result<ProfilePatch, Vec<FieldError>> {
    crate::http::parse::parse_all::<ProfilePatch>(serde_json::Value::Object(fields)).validate(ProfilePatch::checked)
}

/// A `PATCH /v1/users/{id}` body as a [`Change`]: the profile fields as a
/// typed merge patch, `password` and `parent_user_id`; the fields other
/// routes change are refused with the route's name. Every bad field is
/// reported at once; what spans fields the aggregate checks.
pub fn change(body: serde_json::Value) -> Result<Change, Vec<FieldError>> {
    let serde_json::Value::Object(fields) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut change = Change::default();
    let mut profile = serde_json::Map::new();
    let mut errors = Vec::new();
    for (key, value) in fields {
        match key.as_str() {
            "password" => match value.as_str().map(field::password) {
                Some(Ok(p)) => change.password = Some(Secret::new(p)),
                // A value that is not text breaks the same rule.
                _ => errors.push(FieldError::new("password", "must be 8 to 128 characters")),
            },
            "parent_user_id" => match &value {
                serde_json::Value::Null => change.parent = Some(None),
                v => match v.as_str().and_then(|s| s.parse::<Uuid>().ok()) {
                    Some(p) => change.parent = Some(Some(p)),
                    None => errors.push(FieldError::new("parent_user_id", "must be a user id or null")),
                },
            },
            "status" | "status_reason" => {
                errors.push(FieldError::new(&key, "is changed with POST /v1/users/{id}/status"))
            }
            "kyc" => errors.push(FieldError::new(&key, "is changed with PATCH /v1/users/{id}/kyc")),
            "verification_questions" => errors.push(FieldError::new(
                &key,
                "is changed with PUT /v1/users/{id}/verification-questions",
            )),
            "account" | "accounts" => errors.push(FieldError::new(&key, "is added with POST /v1/users/{id}/accounts")),
            // A profile field, or one the patch reports as unknown.
            _ => {
                profile.insert(key, value);
            }
        }
    }
    match profile_patch(profile) {
        Ok(patch) => change.patch = patch,
        Err(more) => errors.extend(more),
    }
    if errors.is_empty() {
        Ok(change)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> EnrollUserRequest {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn reports_every_bad_field() {
        let errs = parse(json!({
            "first_name": " ", "email": "nope", "mobile": "12", "nationality": "XX",
            "locale": "??", "date_of_birth": "2999-01-01", "password": "short",
            "verification_questions": [{"code": "A", "answer": "x"}, {"code": "A", "answer": "y"}],
            "address": {"line1": "", "city": "Dubai", "country": "ZZ"}
        }))
        .validate()
        .expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "first_name",
            "email",
            "mobile",
            "nationality",
            "locale",
            "date_of_birth",
            "password",
            "verification_questions[1].code",
            "address.line1",
            "address.country",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn needs_an_identifier() {
        let errs = parse(json!({"first_name": "John"})).validate().expect_err("invalid");
        assert_eq!(errs[0].field, "email");
        assert!(parse(json!({"external_ref": {"id": "C1", "type": "CUSTOMER_ID"}}))
            .validate()
            .is_ok());
    }

    #[test]
    fn normalises_values() {
        let ok = parse(json!({"email": " John@Example.com ", "mobile": "+971 50 123 4567", "nationality": "ae"}))
            .validate()
            .expect("valid");
        assert_eq!(ok.profile.email.as_deref(), Some("John@Example.com"));
        assert_eq!(ok.profile.mobile.as_deref(), Some("+971501234567"));
        assert_eq!(ok.profile.nationality.as_deref(), Some("AE"));
        assert_eq!(ok.status, UserStatus::Inactive);
    }

    #[test]
    fn a_patch_reports_every_mistyped_unknown_or_invalid_field() {
        let body = json!({"mobile": "12", "address": {"city": 5, "country": "ZZ"}, "nickname": "x"});
        let errors = profile_patch(body.as_object().expect("object").clone()).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in ["mobile", "address.city", "address.country", "nickname"] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }
}
