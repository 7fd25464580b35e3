//! `GET /openapi.json`: the OpenAPI 3.1 document of every `/v1` route and
//! of the seeds' routes (§11), generated from the handlers' annotations and
//! the types they use.

use super::users::input::{
    AccountInput, AddressInput, CommunicationPreferencesInput, EnrollUserRequest, ExternalRefInput, KycInput,
    QuestionInput,
};
use roster_events::card::{AddressToUse, CardDoc, CardProductDoc, CardState, CardType, Issuer, Shipping, Termination};
use roster_events::household::{HouseholdDoc, MemberRef};
use roster_events::user::{
    Account, AccountDoc, Address, CommunicationPreferences, ExternalRef, Kyc, KycStatus, Login, Profile, UserDoc,
    UserStatus, VerificationDoc,
};
use roster_projections::webhooks::endpoints::{Delivery, Endpoint};
use serde::Serialize;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{IntoParams, Modify, OpenApi, ToResponse, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(title = "Roster", description = "Event-sourced user and account registry."),
    servers((url = "/", description = "The server that serves this document")),
    paths(
        super::oauth::token, super::users::enroll, super::users::retrieve, super::users::list, super::users::update,
        super::users::link_parent, super::users::unlink_parent, super::users::set_questions, super::users::verify,
        super::users::change_status, super::users::update_kyc, super::users::add_account,
        super::households::create, super::households::retrieve, super::households::add_member,
        super::households::remove_member, super::cards::create_product, super::cards::list_products,
        super::cards::order_card, super::cards::list_cards, super::cards::terminate_card, super::users::search,
        super::users::relationships, super::users::audit_trail, super::users::erase, search_alias,
        super::webhooks::create, super::webhooks::list, super::webhooks::retrieve, super::webhooks::update,
        super::webhooks::remove, super::webhooks::secret, super::webhooks::rotate, super::webhooks::deliveries,
        super::webhooks::replay, super::custodia::create_user, super::custodia::get_user,
        super::custodia::update_user, super::custodia::order_card, super::custodia::terminate_card,
        super::cradl::create_user, super::cradl::get_user, super::cradl::update_kyc
    ),
    components(schemas(
        Problem, FieldErrorDoc, UserPage, UserDoc, Profile, UserStatus, ExternalRef, Address, CommunicationPreferences,
        Kyc, KycStatus, Account, AccountDoc, Login, VerificationDoc, EnrollUserRequest, ExternalRefInput,
        AddressInput, CommunicationPreferencesInput, KycInput, AccountInput, QuestionInput,
        super::oauth::TokenRequest, crate::auth::AccessToken, super::users::input::ParentRequest,
        super::users::input::QuestionsRequest, super::users::input::VerifyRequest, super::users::input::StatusRequest,
        super::households::CreateHousehold, super::households::AddMember, HouseholdDoc, MemberRef,
        super::cards::CreateProduct, super::cards::OrderCardRequest, super::cards::Instructions,
        super::cards::TerminateRequest, CardProductDoc, CardDoc, CardType, Issuer, AddressToUse, CardState,
        Shipping, Termination, CardProductPage, CardPage, super::users::SearchRequest, AuditPage,
        roster_query::audit::AuditEntry, roster_query::audit::Actor, roster_query::relationships::Relationships,
        roster_query::relationships::Related, roster_query::relationships::Ancestor,
        roster_query::relationships::Descendant, super::users::Erased, super::webhooks::CreateEndpoint,
        super::webhooks::UpdateEndpoint, super::webhooks::ReplayRequest, super::webhooks::CreatedEndpoint,
        super::webhooks::Secret, super::webhooks::Replayed, Endpoint, Delivery, EndpointPage, DeliveryPage,
        super::custodia::CustodiaUser, super::custodia::CreateUserRequest, super::custodia::UpdateUserRequest,
        super::custodia::CustodiaInstructions, super::custodia::CustodiaOrderRequest,
        super::custodia::CustodiaOrderedCard, super::custodia::CustodiaTerminateRequest,
        super::custodia::CustodiaTerminatedCard, super::cradl::CradlError, super::cradl::CradlLoginInput,
        super::cradl::CradlCreateUser, super::cradl::CradlWritten, super::cradl::CradlLogin, super::cradl::CradlUser,
        super::cradl::CradlKycRequest
    ),
    responses(BadRequest, Unauthenticated, Forbidden, NotFound, Conflict, Gone, PreconditionFailed, Unprocessable, Locked, Unavailable)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "app_id",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-appid"))),
        );
        components.add_security_scheme(
            "oauth1",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::OAuth)
                    .description(Some(
                        "OAuth 1.0a, RSA-SHA256 with oauth_body_hash, as Mastercard's mastercard-oauth1-signer \
                         signs requests (CONTRACT §10): oauth_consumer_key is the client id, the key is the one \
                         registered with `roster client update --signing-cert`; no x-appid. A body \
                         {\"encryptedValue\": JWE} (RSA-OAEP-256 with A256GCM or A128CBC-HS256, for the key \
                         `roster encryption-certificate` prints) is decrypted, and its answer is encrypted for the \
                         client's key; failures: 401 UNAUTHENTICATED, 400 DECRYPTION_FAILED, 422 ENCRYPTION_REQUIRED.",
                    ))
                    .build(),
            ),
        );
        // Every authenticated route the signed-call layer covers also takes
        // a signed request.
        for (path, item) in api.paths.paths.iter_mut() {
            if !super::signed::covers(path) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if let Some(security) = operation.security.as_mut().filter(|s| !s.is_empty()) {
                    security.push(SecurityRequirement::new("oauth1", Vec::<String>::new()));
                }
            }
        }
    }
}

/// An RFC 9457 problem.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code (CONTRACT §6).
    pub code: String,
    pub errors: Option<Vec<FieldErrorDoc>>,
    /// Only on VERIFICATION_FAILED / UNKNOWN_QUESTION.
    pub attempts_remaining: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldErrorDoc {
    pub field: String,
    pub message: String,
}

/// A page of card products.
#[derive(Serialize, ToSchema)]
pub struct CardProductPage {
    pub data: Vec<CardProductDoc>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// A page of webhook endpoints.
#[derive(Serialize, ToSchema)]
pub struct EndpointPage {
    pub data: Vec<Endpoint>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// A page of webhook deliveries.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// A page of cards.
#[derive(Serialize, ToSchema)]
pub struct CardPage {
    pub data: Vec<CardDoc>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// A page of audit entries.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<roster_query::audit::AuditEntry>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// `POST /v1/users/search`: the same as `POST /v1/users:search`.
#[utoipa::path(post, path = "/v1/users/search", tag = "users", request_body = super::users::SearchRequest,
    responses((status = 200, description = "A page of users", body = UserPage),
        (status = 400, response = BadRequest), (status = 401, response = Unauthenticated), (status = 403, response = Forbidden)),
    security(("bearer" = [], "app_id" = [])))]
#[allow(dead_code)]
fn search_alias() {}

/// A page of users.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub data: Vec<UserDoc>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

macro_rules! problem_response {
    ($name:ident, $desc:literal) => {
        #[derive(ToResponse)]
        #[response(description = $desc, content_type = "application/problem+json")]
        #[allow(dead_code)]
        pub struct $name(Problem);
    };
}

problem_response!(BadRequest, "VALIDATION_FAILED (with errors[]) or MALFORMED_REQUEST");
problem_response!(Unauthenticated, "UNAUTHENTICATED");
problem_response!(Forbidden, "FORBIDDEN: a scope is missing");
problem_response!(NotFound, "USER_NOT_FOUND and other *_NOT_FOUND codes");
problem_response!(
    Conflict,
    "EMAIL_TAKEN, EXTERNAL_ID_TAKEN, ACCOUNT_TAKEN, CONCURRENT_MODIFICATION, INVALID-USER-STATE (Custodia), ..."
);
problem_response!(Unprocessable, "PARENT_NOT_FOUND, RELATIONSHIP_CYCLE, ...");
problem_response!(PreconditionFailed, "PRECONDITION_FAILED: If-Match is stale");
problem_response!(Locked, "VERIFICATION_LOCKED");
problem_response!(Gone, "USER_ERASED: the user was erased");
problem_response!(Unavailable, "UNAVAILABLE or NOT_YET_CONSISTENT, with Retry-After");

/// `Idempotency-Key` header of write routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1..=255 characters; a repeat returns the first response.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

/// `If-Match` header of user writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatch {
    /// An ETag from a user response; a stale one → 412.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// `Roster-Consistency-Token` header of query routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ConsistencyToken {
    /// A token from a write's response: answer once that write is visible.
    #[param(rename = "Roster-Consistency-Token")]
    roster_consistency_token: Option<String>,
}

/// The document, rendered once.
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    // `GET /v1/users/{id}:getLinkedRelationships`: the relationships route
    // under its alias (an operation id of its own).
    if let Some(mut item) = doc.paths.paths.get("/v1/users/{id}/relationships").cloned() {
        if let Some(op) = item.get.as_mut() {
            op.operation_id = Some("get_linked_relationships".into());
        }
        doc.paths
            .paths
            .insert("/v1/users/{id}:getLinkedRelationships".into(), item);
    }
    // `PUT /v1/users/{id}`: the same partial update as `PATCH`.
    if let Some(item) = doc.paths.paths.get_mut("/v1/users/{id}") {
        if let Some(mut op) = item.patch.clone() {
            op.operation_id = Some("update_put".into());
            op.summary = Some("Update a user (the same partial semantics as PATCH).".into());
            item.put = Some(op);
        }
    }
    doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
    doc.to_json().unwrap_or_else(|_| "{}".into())
}
