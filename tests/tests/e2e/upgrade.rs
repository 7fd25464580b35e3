//! The upgrade of a store written before encryption (`roster keys
//! seal-existing`): 100,000 plaintext events sealed in place, interrupted
//! half-way and resumed; afterwards the store holds no plaintext personal
//! value, reads back the same, and uniqueness holds on the keyed hashes.

use roster_command::bus::Load;
use roster_command::user::{EnrollUser, UserAction, UserCommand};
use roster_command::{CommandError, Commands, Meta, Violation};
use roster_events::user::{Profile, UserStatus};
use roster_events::Timestamp;
use roster_projections::{engine, user_view::UserView};
use roster_tests::{fresh_database_url, test_vault};
use sqlx::PgPool;
use uuid::Uuid;

const USERS: i64 = 20_000;
/// Each user: an enrollment and four updates.
const EVENTS: i64 = USERS * 5;

/// A store as the previous version wrote it: plaintext events, claims and
/// registry rows, no keys.
async fn old_store(pool: &PgPool) {
    let meta = "json_build_object('company_id', 'acme', 'client_id', 'old', 'request_id', 'seed',
                                  'occurred_at', '2026-11-23T12:00:00.000000Z')";
    let ids = "SELECT n, ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid AS id
                 FROM generate_series(1, $1) n";
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'user', id::text, 1, 'UserEnrolled', '1.0',
                json_build_object('UserEnrolled', json_build_object(
                  'user_id', id, 'company_id', 'acme',
                  'external_ref', json_build_object('id', 'OLDREF' || n, 'type', 'CUSTOMER_ID'),
                  'first_name', 'Oldfirst' || n, 'last_name', NULL, 'email', 'old' || n || '@before.example',
                  'email_verified', false, 'mobile', '+9715' || lpad(n::text, 8, '0'), 'office_phone', NULL,
                  'office_extension', NULL, 'employee_id', NULL, 'date_of_birth', NULL, 'gender', NULL,
                  'nationality', NULL, 'locale', NULL, 'address', NULL, 'billing_address', NULL,
                  'communication_preferences', json_build_object('email', true, 'sms', false, 'post', false),
                  'status', 'active', 'status_reason', NULL, 'parent_user_id', NULL, 'kyc', NULL, 'account', NULL,
                  'password_hash', NULL, 'verification_questions', json_build_array(),
                  'at', '2026-11-23T12:00:00.000000Z')), {meta}
           FROM ({ids}) u"
    ))
    .bind(USERS)
    .execute(pool)
    .await
    .expect("enrollments");
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'user', id::text, s, 'UserUpdated', '1.0',
                json_build_object('UserUpdated', json_build_object(
                  'changes', json_build_object('last_name', 'Oldlast' || n || 'v' || s),
                  'at', '2026-11-23T12:00:01.000000Z')), {meta}
           FROM ({ids}) u, generate_series(2, 5) s"
    ))
    .bind(USERS)
    .execute(pool)
    .await
    .expect("updates");
    sqlx::query(&format!(
        "WITH u AS ({ids})
         INSERT INTO user_registry (user_id, company_id) SELECT id, 'acme' FROM u"
    ))
    .bind(USERS)
    .execute(pool)
    .await
    .expect("registry");
    sqlx::query(&format!(
        "WITH u AS ({ids})
         INSERT INTO unique_claims (company_id, kind, value, owner_id, plain)
         SELECT 'acme', 'email', 'old' || n || '@before.example', id, true FROM u
         UNION ALL SELECT 'acme', 'external_ref', 'CUSTOMER_ID' || chr(31) || 'OLDREF' || n, id, true FROM u"
    ))
    .bind(USERS)
    .execute(pool)
    .await
    .expect("claims");
    sqlx::query("UPDATE vault_migration SET done = false, sealed_through = 0")
        .execute(pool)
        .await
        .expect("an old store");
}

/// Events holding one of the old store's values in plaintext.
async fn plain_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        // Each value as a member's value: ciphertext (base64) can hold "+9715"
        // by chance, never a quote or a dot.
        "SELECT count(*) FROM events WHERE payload::text ~
           '(\"(first|last)_name\"\\s*:\\s*\"Old|\"id\"\\s*:\\s*\"OLDREF|before\\.example|\"mobile\"\\s*:\\s*\"\\+)'",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

fn enroll(user_id: Uuid, email: &str) -> UserCommand {
    UserCommand {
        company_id: "acme".into(),
        at: Timestamp::now(),
        expected_version: None,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id,
            profile: Profile {
                email: Some(email.into()),
                ..Profile::default()
            },
            status: UserStatus::Active,
            status_reason: None,
            kyc: None,
            parent_user_id: None,
            account: None,
            password_hash: None,
            verification_questions: vec![],
        })),
    }
}

fn meta() -> Meta {
    Meta {
        company_id: "acme".into(),
        client_id: "c".into(),
        request_id: "r".into(),
        idempotency_key: None,
        at: Timestamp::now(),
        recovered: None,
    }
}

#[tokio::test]
async fn an_old_store_is_sealed_in_place_resumably() {
    let url = fresh_database_url();
    let pool = roster::db::prepare(&url, 4).await.expect("database");
    old_store(&pool).await;
    assert!(
        roster::keys::require_sealed(&pool).await.is_err(),
        "serve waits for the upgrade"
    );
    let vault = test_vault();
    assert_eq!(roster::keys::events_to_seal(&pool).await.expect("count"), EVENTS as u64);

    // Interrupted after its first batches...
    let (seen, mut batches) = tokio::sync::mpsc::unbounded_channel();
    let (p, v) = (pool.clone(), vault.clone());
    let first = tokio::spawn(async move {
        roster::keys::seal_existing(&p, &v, 5000, move |n| {
            let _ = seen.send(n);
        })
        .await
    });
    for _ in 0..3 {
        batches.recv().await.expect("a batch");
    }
    first.abort();
    let _ = first.await;
    let left = roster::keys::events_to_seal(&pool).await.expect("count");
    assert!(left < EVENTS as u64 && left > 0, "{left} events left");

    // ...then resumed to the end.
    let sealed = roster::keys::seal_existing(&pool, &vault, 5000, |_| {})
        .await
        .expect("sealed");
    assert_eq!(sealed, left);
    roster::keys::require_sealed(&pool).await.expect("done");

    assert_eq!(
        plain_events(&pool).await,
        0,
        "no plaintext personal value is left in the events"
    );
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims WHERE plain OR value LIKE '%before%'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(claims, 0, "every claim is a keyed hash");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(keys, USERS);

    // The same users read back, through a replay and through the write side.
    engine::replay(&pool, &vault, &std::sync::Arc::new(UserView::default()), 5000, |_| {})
        .await
        .expect("replayed");
    let (first, last): (String, String) = sqlx::query_as(
        "SELECT doc::json ->> 'first_name', doc::json ->> 'last_name' FROM user_view
          WHERE id = '00000000-0000-7000-8000-000000000007'",
    )
    .fetch_one(&pool)
    .await
    .expect("user 7");
    assert_eq!((first.as_str(), last.as_str()), ("Oldfirst7", "Oldlast7v5"));
    let commands = Commands::new(pool.clone(), vault.clone());
    let id = Uuid::now_v7();
    let taken = commands
        .user(id, enroll(id, "OLD7@before.example"), meta(), Load::Fresh)
        .await;
    assert!(
        matches!(taken, Err(CommandError::Violation(Violation::EmailTaken))),
        "{taken:?}"
    );
    let id = Uuid::now_v7();
    let fresh = commands
        .user(id, enroll(id, "new@after.example"), meta(), Load::Fresh)
        .await;
    assert!(fresh.is_ok(), "{fresh:?}");
    pool.close().await;
    let admin = PgPool::connect(&format!("{}/postgres", roster_tests::pg_server()))
        .await
        .expect("admin");
    let name = url.rsplit('/').next().unwrap_or_default();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await;
}
