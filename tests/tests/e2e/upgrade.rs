//! Upgrades of a store written by an earlier version.
//!
//! - Before encryption (`roster keys seal-existing`): 100,000 plaintext
//!   events sealed in place, interrupted half-way and resumed; afterwards
//!   the store holds no plaintext personal value, reads back the same, and
//!   uniqueness holds on the keyed hashes.
//! - Before commit positions (`roster migrate`): 100,000 events ordered by
//!   transaction id get positions in the order their readers saw them, and
//!   every checkpoint the same place: nothing skipped or read twice.

use roster_command::runner::Load;
use roster_command::user::{EnrollUser, UserAction, UserCommand};
use roster_command::{CommandError, Commands, Meta, Violation};
use roster_events::user::{Profile, UserStatus};
use roster_events::Timestamp;
use roster_projections::{engine, user_view::UserView};
use roster_tests::{fresh_database_url, test_vault};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
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
        appended: Default::default(),
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
    drop_database(&url).await;
}

/// The last migration of the version that ordered the log by transaction
/// id.
const BEFORE_COMMIT_POSITIONS: &str = "20261202000017";

/// A store as the version before commit positions wrote it, from 100
/// rounds of two transactions: in each, the one that takes its id first
/// appends last, so the readers' order, `(transaction_id,
/// global_position)`, is not the order of `global_position`. Checkpoints
/// stand at the `n`-th event of that order, as readers left them.
#[tokio::test]
async fn an_old_store_moves_to_commit_positions_with_its_checkpoints() {
    let url = fresh_database_url();
    roster::db::ensure_database(&url).await.expect("database");
    let pool = roster::db::connect(&url, 4).await.expect("pool");
    let old = std::env::temp_dir().join(format!("roster-migrations-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&old).expect("directory");
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
        if name.as_str() <= BEFORE_COMMIT_POSITIONS || name.starts_with(BEFORE_COMMIT_POSITIONS) {
            std::fs::copy(&path, old.join(&name)).expect("copied");
        }
    }
    Migrator::new(old.as_path())
        .await
        .expect("old migrations")
        .run(&pool)
        .await
        .expect("the old schema");
    let _ = std::fs::remove_dir_all(&old);

    const ROUND: i64 = 500;
    const EVENTS: i64 = 100 * 2 * ROUND;
    let insert = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'test', $1 || '-' || n, 1, 'TestHappened', '1.0', '{{}}', '{{}}' FROM generate_series(1, {ROUND}) n"
    );
    let mut first = PgConnection::connect(&url).await.expect("connection");
    let mut second = PgConnection::connect(&url).await.expect("connection");
    for round in 0..100 {
        sqlx::query("BEGIN").execute(&mut first).await.expect("begin");
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut first)
            .await
            .expect("xid");
        for (conn, who) in [(&mut second, "b"), (&mut first, "a")] {
            sqlx::query(&insert)
                .bind(format!("{who}{round}"))
                .execute(conn)
                .await
                .expect("appended");
        }
        sqlx::query("COMMIT").execute(&mut first).await.expect("commit");
    }
    sqlx::query(
        "CREATE TABLE old_order AS
         SELECT aggregate_id, row_number() OVER (ORDER BY transaction_id, global_position) AS n FROM events",
    )
    .execute(&pool)
    .await
    .expect("old order");
    let differs: bool = sqlx::query_scalar(
        "SELECT (SELECT max(n) FROM old_order WHERE aggregate_id LIKE 'a0-%')
                  < (SELECT min(n) FROM old_order WHERE aggregate_id LIKE 'b0-%')
            AND (SELECT min(global_position) FROM events WHERE aggregate_id LIKE 'a0-%')
                  > (SELECT max(global_position) FROM events WHERE aggregate_id LIKE 'b0-%')",
    )
    .fetch_one(&pool)
    .await
    .expect("order");
    assert!(differs, "the readers' order is not the order of global_position");
    let marks = [
        ("user_view", 0),
        ("household_view", 1),
        ("card_view", 33_333),
        ("kafka_publisher", 50_000),
        ("at_the_end", EVENTS),
    ];
    for (name, n) in marks {
        sqlx::query(
            "INSERT INTO subscriber_checkpoints (name, last_xid, last_pos)
             SELECT $1, coalesce(max(e.transaction_id), '0'), coalesce(max(e.global_position), 0)
               FROM events e JOIN old_order o USING (aggregate_id) WHERE o.n = $2",
        )
        .bind(name)
        .bind(n)
        .execute(&pool)
        .await
        .expect("checkpoint");
    }
    let household = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO user_view_memberships
             (household_id, account_id, company_id, user_id, version, member, added_xid, added_pos)
         SELECT $1, 'A', 'acme', gen_random_uuid(), 2, true, transaction_id, global_position
           FROM events JOIN old_order USING (aggregate_id) WHERE n = 77777",
    )
    .bind(household)
    .execute(&pool)
    .await
    .expect("membership");

    roster::db::MIGRATOR.run(&pool).await.expect("migrated");

    let misplaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN old_order o USING (aggregate_id) WHERE e.position <> o.n",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(
        misplaced, 0,
        "each event's position is its place in the readers' old order"
    );
    let vault = test_vault();
    let mut conn = pool.acquire().await.expect("connection");
    for (name, n) in marks {
        let at = engine::checkpoint(&mut conn, name, false).await.expect("checkpoint");
        assert_eq!(at, engine::Position(n), "{name}");
        // What the reader reads from there: every later event, once, in order.
        let (mut after, mut expected) = (at, n + 1);
        loop {
            let page = engine::read_page(&mut conn, &vault, engine::Keys::Kept, after, 10_000, engine::Reads::ALL)
                .await
                .expect("page");
            let Some(end) = page.end else { break };
            for e in &page.events {
                assert_eq!(e.position, engine::Position(expected), "{name}");
                expected += 1;
            }
            after = end;
        }
        assert_eq!(expected, EVENTS + 1, "{name} reads up to the last event");
    }
    let added: i64 = sqlx::query_scalar("SELECT added_position FROM user_view_memberships WHERE household_id = $1")
        .bind(household)
        .fetch_one(&pool)
        .await
        .expect("membership");
    assert_eq!(added, 77777);
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('test', 'new', 1, 'TestHappened', '1.0', '{}', '{}') RETURNING position",
    )
    .fetch_one(&pool)
    .await
    .expect("appended");
    assert_eq!(next, EVENTS + 1, "new events come after every old one");
    drop(conn);
    pool.close().await;
    drop_database(&url).await;
}

async fn drop_database(url: &str) {
    let admin = PgPool::connect(&format!("{}/postgres", roster_tests::pg_server()))
        .await
        .expect("admin");
    let name = url.rsplit('/').next().unwrap_or_default();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await;
}
