//! Property tests of the request parsers: whatever the bytes, they answer
//! with a value or a 4xx problem, never a panic or a 5xx.

use super::consistency::Token;
use super::error::ApiError;
use super::extract::{parse_json, parse_limit};
use super::users::input::EnrollUserRequest;
use axum::response::IntoResponse;
use proptest::prelude::*;
use roster_events::user::Profile;
use serde_json::Value;

/// Any JSON value, up to a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    // Object keys are the parsers' own field names, so values get past
    // "unknown field" into validation.
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "first_name",
                    "last_name",
                    "email",
                    "mobile",
                    "address",
                    "line1",
                    "country",
                    "date_of_birth",
                    "locale",
                    "password",
                    "status",
                    "account",
                    "verification_questions",
                    "code",
                    "answer",
                    "parent_user_id",
                    "metadata",
                    "x",
                ])
                .prop_map(str::to_string),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn is_client_problem(e: ApiError) -> bool {
    let response = e.into_response();
    response.status().is_client_error()
        && response.headers().get("content-type").and_then(|v| v.to_str().ok()) == Some("application/problem+json")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_are_a_request_or_a_client_problem(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_json::<EnrollUserRequest>(&bytes) {
            prop_assert!(is_client_problem(e));
        }
    }

    #[test]
    fn any_json_enrollment_validates_or_names_its_fields(value in json()) {
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        match parse_json::<EnrollUserRequest>(&bytes) {
            Err(e) => prop_assert!(is_client_problem(e)),
            Ok(request) => {
                if let Err(errors) = request.validate() {
                    prop_assert!(!errors.is_empty());
                }
            }
        }
    }

    #[test]
    fn any_merge_patch_of_a_profile_validates_or_names_its_fields(patch in json()) {
        if let Value::Object(patch) = patch {
            match crate::http::users::input::profile_patch(patch) {
                Ok(patch) => {
                    if let Err(errors) = patch.apply(&Profile::default()) {
                        prop_assert!(!errors.is_empty());
                    }
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }
    }

    #[test]
    fn any_limit_text_is_1_to_100_or_a_client_problem(text in prop_oneof![".{0,30}", "[ 0-9+.e-]{0,25}"]) {
        match parse_limit(&text) {
            Ok(n) => prop_assert!((1..=100).contains(&n)),
            Err(e) => prop_assert!(is_client_problem(e)),
        }
    }

    #[test]
    fn any_cursor_or_consistency_token_text_is_parsed_or_refused(text in ".{0,80}") {
        let _ = roster_query::cursor::decode_id(&text);
        if let Some(token) = Token::parse(&text) {
            prop_assert!(matches!(token.aggregate_type.as_str(), "user" | "household"));
        }
    }
}
