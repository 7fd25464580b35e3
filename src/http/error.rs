//! The one edge error type: every failure a client can see, as an RFC 9457
//! problem with a stable `code` (CONTRACT §6). Internal details are logged,
//! never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use roster_command::catalog::CatalogError;
use roster_command::household::HouseholdError;
use roster_command::validate::FieldError;
use roster_command::{user::UserError, CommandError, Violation};
use roster_query::QueryError;
use serde::Serialize;

#[derive(Debug)]
pub enum ApiError {
    Malformed(String),
    PayloadTooLarge,
    Validation(Vec<FieldError>),
    Unauthenticated,
    /// A signed request that failed a check (CONTRACT §10).
    SignatureRefused(crate::oauth1::Refusal),
    /// An encrypted payload that does not decrypt (CONTRACT §10).
    DecryptionFailed(crate::jwe::JweError),
    Forbidden(&'static str),
    /// 403 `FORBIDDEN` for what the caller may not name (another
    /// company), with its own detail.
    ForbiddenBecause(&'static str),
    NotFound(&'static str, &'static str),
    /// The route exists, not with this method.
    MethodNotAllowed,
    Conflict(&'static str, &'static str),
    PreconditionFailed,
    Unprocessable(&'static str, &'static str),
    /// A failed verification: 422 with `attempts_remaining`.
    VerificationFailed {
        code: &'static str,
        attempts_remaining: u32,
    },
    Locked,
    /// The user was erased (CONTRACT §3 "Erasure").
    Gone,
    Unavailable,
    /// A write waited too long for another one holding what it needs
    /// (`UNAVAILABLE`, like an outage: nothing was written, retry).
    Busy,
    NotYetConsistent,
    Internal,
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        ApiError::Internal
    }

    pub fn user_not_found() -> Self {
        ApiError::NotFound("USER_NOT_FOUND", "No such user.")
    }

    pub fn household_not_found() -> Self {
        ApiError::NotFound("HOUSEHOLD_NOT_FOUND", "No such household.")
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_remaining: Option<u32>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use ApiError::*;
        let (status, code, detail): (StatusCode, &str, String) = match &self {
            Malformed(d) => (StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", d.clone()),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("The body exceeds {} bytes.", super::BODY_LIMIT),
            ),
            Validation(_) => (
                StatusCode::BAD_REQUEST,
                "VALIDATION_FAILED",
                "The request has invalid fields.".into(),
            ),
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "A valid bearer token and its x-appid are required.".into(),
            ),
            SignatureRefused(refusal) => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                format!("The signed request was refused: {refusal}."),
            ),
            DecryptionFailed(reason) => (
                StatusCode::BAD_REQUEST,
                "DECRYPTION_FAILED",
                format!("The encrypted payload does not decrypt: {reason}."),
            ),
            Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("This route needs the {scope} scope."),
            ),
            ForbiddenBecause(d) => (StatusCode::FORBIDDEN, "FORBIDDEN", d.to_string()),
            NotFound(code, d) => (StatusCode::NOT_FOUND, code, d.to_string()),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "The route does not accept this method; see the Allow header.".into(),
            ),
            Conflict(code, d) => (StatusCode::CONFLICT, code, d.to_string()),
            PreconditionFailed => (
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED",
                "If-Match does not match the current version.".into(),
            ),
            Unprocessable(code, d) => (StatusCode::UNPROCESSABLE_ENTITY, code, d.to_string()),
            VerificationFailed {
                code,
                attempts_remaining,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("Verification failed; {attempts_remaining} attempts remaining."),
            ),
            Gone => (
                StatusCode::GONE,
                "USER_ERASED",
                "The user was erased; nothing of it is kept.".into(),
            ),
            Locked => (
                StatusCode::LOCKED,
                "VERIFICATION_LOCKED",
                "Verification is locked after too many failures; set the questions again.".into(),
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is temporarily unavailable; retry later.".into(),
            ),
            Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "Another write holds what this one needs; nothing was written, retry later.".into(),
            ),
            NotYetConsistent => (
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_YET_CONSISTENT",
                "The read model has not caught up with this write yet; retry later.".into(),
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "An unexpected error occurred.".into(),
            ),
        };
        let errors = match &self {
            Validation(e) => Some(e.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: format!("https://roster.dev/problems/{}", code.to_lowercase().replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            code,
            errors,
            attempts_remaining: match &self {
                VerificationFailed { attempts_remaining, .. } => Some(*attempts_remaining),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, Unavailable | Busy | NotYetConsistent) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Unauthenticated) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, SignatureRefused(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("OAuth"));
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::User(u) => match u {
                UserError::NotFound => ApiError::user_not_found(),
                UserError::AlreadyEnrolled => ApiError::Conflict("CONCURRENT_MODIFICATION", "The user already exists."),
                UserError::SelfParent => {
                    ApiError::Unprocessable("RELATIONSHIP_CYCLE", "A user cannot be its own parent.")
                }
                UserError::PreconditionFailed => ApiError::PreconditionFailed,
                UserError::Invalid(errors) => ApiError::Validation(errors),
                UserError::Closed => ApiError::Conflict("INVALID_USER_STATE", "A closed user cannot be reopened."),
                UserError::VerificationLocked => ApiError::Locked,
                UserError::NotActive => ApiError::Conflict("INVALID_USER_STATE", "The user must be active."),
                UserError::AddressRequired => ApiError::Unprocessable(
                    "ADDRESS_REQUIRED",
                    "A physical card shipped to the user needs the user's address.",
                ),
                UserError::Last4Taken => {
                    ApiError::Conflict("CONCURRENT_MODIFICATION", "Could not allocate a card number; retry.")
                }
                UserError::CardNotFound => ApiError::NotFound("CARD_NOT_FOUND", "No such card."),
                UserError::CardAlreadyTerminated => {
                    ApiError::Conflict("CARD_ALREADY_TERMINATED", "The card is already terminated.")
                }
                UserError::AccountTaken => ApiError::Conflict("ACCOUNT_TAKEN", "The user already has this account id."),
                UserError::Erased => ApiError::Gone,
                UserError::CardsNotTerminated => ApiError::Conflict(
                    "CARDS_NOT_TERMINATED",
                    "Every card of the user must be terminated before it is erased.",
                ),
            },
            CommandError::Household(h) => match h {
                HouseholdError::NotFound => ApiError::household_not_found(),
                HouseholdError::AlreadyExists => {
                    ApiError::Conflict("CONCURRENT_MODIFICATION", "The household already exists.")
                }
                HouseholdError::NotAMember => {
                    ApiError::NotFound("NOT_FOUND", "The account is not a member of this household.")
                }
            },
            CommandError::Catalog(c) => match c {
                CatalogError::AlreadyExists => {
                    ApiError::Conflict("CONCURRENT_MODIFICATION", "The card product already exists.")
                }
                CatalogError::ProductNotFound => ApiError::NotFound("CARD_PRODUCT_NOT_FOUND", "No such card product."),
                CatalogError::NoDefaultProduct => ApiError::Unprocessable(
                    "NO_DEFAULT_CARD_PRODUCT",
                    "The company has no default card product; name one.",
                ),
            },
            CommandError::Violation(v) => match v {
                Violation::EmailTaken => {
                    ApiError::Conflict("EMAIL_TAKEN", "Another user of this company has this email.")
                }
                Violation::ExternalIdTaken => ApiError::Conflict(
                    "EXTERNAL_ID_TAKEN",
                    "Another user of this company has this external reference.",
                ),
                Violation::AccountTaken => {
                    ApiError::Conflict("ACCOUNT_TAKEN", "Another user of this company has this account id.")
                }
                Violation::ParentNotFound => {
                    ApiError::Unprocessable("PARENT_NOT_FOUND", "The parent user does not exist in this company.")
                }
                Violation::AccountInHousehold => {
                    ApiError::Conflict("ACCOUNT_IN_HOUSEHOLD", "The account is already in a household.")
                }
                Violation::AccountNotOwned => {
                    ApiError::Unprocessable("ACCOUNT_NOT_OWNED", "The account does not belong to that user.")
                }
                Violation::RelationshipCycle => ApiError::Unprocessable(
                    "RELATIONSHIP_CYCLE",
                    "The parent is this user or one of its descendants.",
                ),
            },
            CommandError::Conflict => ApiError::Conflict(
                "CONCURRENT_MODIFICATION",
                "The resource was modified concurrently too many times; retry.",
            ),
            CommandError::Unavailable(e) => {
                tracing::warn!(error = %e, "event store unavailable");
                ApiError::Unavailable
            }
            CommandError::Busy(e) => {
                tracing::warn!(error = %e, "a write waited too long for another");
                ApiError::Busy
            }
            CommandError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidCursor => ApiError::field("after", "is not a cursor this API returned"),
            QueryError::Database(e) => e.into(),
            QueryError::Corrupt(e) => ApiError::internal(e),
            QueryError::Keys(roster_vault::VaultError::Db(e)) => e.into(),
            QueryError::Keys(e) => ApiError::internal(e),
            QueryError::Sealed(e) => ApiError::internal(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if roster_command::append::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable
        } else {
            ApiError::internal(e)
        }
    }
}

/// `field` as another door spells it: the first `(ours, theirs)` pair whose
/// name it is (alone, or before `.`/`[` of a nested path) renamed, the rest
/// of the path kept.
pub(crate) fn renamed_field(field: &str, names: &[(&str, &str)]) -> String {
    for (ours, theirs) in names {
        if let Some(rest) = field.strip_prefix(ours) {
            if rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') {
                return format!("{theirs}{rest}");
            }
        }
    }
    field.to_string()
}

/// Field errors under another door's names ([`renamed_field`]).
pub(crate) fn renamed(errors: Vec<FieldError>, names: &[(&str, &str)]) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| FieldError {
            field: renamed_field(&e.field, names),
            message: e.message,
        })
        .collect()
}
