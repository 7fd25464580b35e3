//! Group commit: appends written as one batch share one statement (one
//! transaction), and one append's violation or conflict fails only that
//! append. Each test forces a batch with `writer::write_batch`, the step
//! the writer tasks run on whatever is queued.

use roster_command::append::Appended;
use roster_command::append::{Append, AppendError, NewEvent, Stream};
use roster_command::constraints::{Claim, Constrained, Constraint};
use roster_command::user::User;
use roster_command::writer::write_batch;
use roster_command::{Meta, Violation};
use roster_events::user::{Profile, UserEnrolled, UserEvent, UserStatus};
use roster_events::Timestamp;
use roster_vault::{ClaimKey, MasterKey};
use sqlx::PgPool;
use std::sync::OnceLock;
use uuid::Uuid;

fn meta() -> Meta {
    Meta {
        company_id: "acme".into(),
        client_id: "client".into(),
        request_id: "req".into(),
        idempotency_key: None,
        at: Timestamp::now(),
        recovered: None,
        appended: Default::default(),
    }
}

/// The append of an enrollment, as the runner builds it.
fn enroll(id: Uuid, email: &str) -> Append {
    let event = UserEvent::UserEnrolled(Box::new(UserEnrolled {
        user_id: id,
        company_id: "acme".into(),
        profile: Profile {
            email: Some(email.into()),
            ..Profile::default()
        },
        status: UserStatus::Active,
        status_reason: None,
        parent_user_id: None,
        kyc: None,
        account: None,
        password_hash: None,
        verification_questions: vec![],
        at: Timestamp::now(),
    }));
    let stream = Stream {
        aggregate_type: "user",
        id,
    };
    Append::new(
        stream,
        0,
        vec![NewEvent::sealed("user", &event, None)],
        User::constraints(&event),
        claim_key().clone(),
        &meta(),
    )
}

/// `appends` as one batch, written as the writer task writes it, on a
/// connection of its own.
async fn batch(pool: &PgPool, appends: &[Append]) -> Vec<Result<Appended, AppendError>> {
    let mut own = pool.acquire().await.expect("connection");
    write_batch(&mut own, pool, appends).await
}

async fn stored(pool: &PgPool, id: Uuid) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT sequence, xmin::text FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(id.to_string())
        .fetch_all(pool)
        .await
        .expect("events")
}

/// The company's claim key (these tests write appends directly).
fn claim_key() -> &'static ClaimKey {
    static KEY: OnceLock<ClaimKey> = OnceLock::new();
    KEY.get_or_init(|| ClaimKey::generate("acme", &MasterKey::generate().0).0)
}

async fn claim_owner(pool: &PgPool, email: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT owner_id FROM unique_claims WHERE company_id = 'acme' AND kind = 'email' AND value = $1")
        .bind(claim_key().hash(email))
        .fetch_optional(pool)
        .await
        .expect("claim")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_is_one_transaction(pool: PgPool) {
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let appends: Vec<Append> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| enroll(*id, &format!("u{i}@example.com")))
        .collect();
    let outcomes = batch(&pool, &appends).await;
    let mut xids = Vec::new();
    let mut positions = Vec::new();
    for (id, outcome) in ids.iter().zip(outcomes) {
        let appended = outcome.expect("appended");
        assert_eq!(appended.version, 1);
        positions.push(appended.position);
        let events = stored(&pool, *id).await;
        assert_eq!(events.len(), 1);
        xids.push(events[0].1.clone());
    }
    xids.dedup();
    assert_eq!(xids.len(), 1, "one transaction for the whole batch");
    positions.dedup();
    assert_eq!(positions.len(), 5, "each append its own position");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_taken_claim_fails_only_its_own_append(pool: PgPool) {
    let holder = Uuid::now_v7();
    batch(&pool, &[enroll(holder, "taken@example.com")]).await[0]
        .as_ref()
        .expect("first holder");
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let outcomes = batch(
        &pool,
        &[
            enroll(a, "a@example.com"),
            enroll(b, "taken@example.com"),
            enroll(c, "c@example.com"),
        ],
    )
    .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(AppendError::Violation(Violation::EmailTaken))),
        "{:?}",
        outcomes[1]
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert_eq!(stored(&pool, a).await.len(), 1);
    assert!(stored(&pool, b).await.is_empty(), "nothing of the refused append");
    assert_eq!(stored(&pool, c).await.len(), 1);
    assert_eq!(claim_owner(&pool, "taken@example.com").await, Some(holder));
    assert_eq!(claim_owner(&pool, "a@example.com").await, Some(a));
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM user_registry WHERE user_id = $1")
        .bind(b)
        .fetch_one(&pool)
        .await
        .expect("registry");
    assert_eq!(registered, 0);
}

/// A batch's claims are inserted plainly, so one its owner holds already
/// refuses the batch; written again one by one, the append passes, as it
/// does alone.
#[sqlx::test(migrations = "../migrations")]
async fn a_claim_its_owner_holds_already_passes_in_a_batch(pool: PgPool) {
    let a = Uuid::now_v7();
    batch(&pool, &[enroll(a, "a@example.com")]).await[0]
        .as_ref()
        .expect("enrolled");
    let first = enroll(a, "a@example.com");
    let reclaim = Append::new(
        first.stream,
        1,
        first.events,
        vec![Constraint::Claim(Claim::Email("a@example.com".into()))],
        claim_key().clone(),
        &meta(),
    );
    let b = Uuid::now_v7();
    let outcomes = batch(&pool, &[reclaim, enroll(b, "b@example.com")]).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(stored(&pool, a).await.len(), 2);
    assert_eq!(stored(&pool, b).await.len(), 1);
    assert_eq!(claim_owner(&pool, "a@example.com").await, Some(a));
    assert_eq!(claim_owner(&pool, "b@example.com").await, Some(b));
}

#[sqlx::test(migrations = "../migrations")]
async fn two_appends_of_a_batch_claiming_one_value_one_wins(pool: PgPool) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let outcomes = batch(&pool, &[enroll(a, "same@example.com"), enroll(b, "Same@example.com")]).await;
    let won: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{outcomes:?}");
    let loser = outcomes.iter().find(|o| o.is_err()).expect("one refused");
    assert!(
        matches!(loser, Err(AppendError::Violation(Violation::EmailTaken))),
        "{loser:?}"
    );
    let winner = if won[0] { a } else { b };
    assert_eq!(claim_owner(&pool, "same@example.com").await, Some(winner));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stream_that_moved_conflicts_alone(pool: PgPool) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    batch(&pool, &[enroll(a, "a@example.com")]).await[0]
        .as_ref()
        .expect("enrolled");
    // `a` again at version 0: its stream has moved on.
    let outcomes = batch(&pool, &[enroll(a, "a2@example.com"), enroll(b, "b@example.com")]).await;
    assert!(matches!(outcomes[0], Err(AppendError::Conflict)), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    assert_eq!(
        claim_owner(&pool, "a2@example.com").await,
        None,
        "the conflicting append left no claim"
    );
    assert_eq!(stored(&pool, a).await.len(), 1);
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(pool).await.expect(sql)
}

/// The statement is built from the parts a batch has rows for: each of the
/// sixteen combinations of claims, new users, data keys and idempotency
/// outcomes is written, and writes exactly its own rows.
#[sqlx::test(migrations = "../migrations")]
async fn every_combination_of_parts_writes_exactly_its_rows(pool: PgPool) {
    use roster_command::constraints::Constraint;
    for parts in 0..16u8 {
        let id = Uuid::now_v7();
        let mut append = enroll(id, &format!("parts{parts}@example.com"));
        append.constraints.retain(|c| match c {
            Constraint::Claim(_) => parts & 1 != 0,
            Constraint::Register { parent: None } => parts & 2 != 0,
            _ => false,
        });
        if parts & 4 != 0 {
            append.keys.push(roster_vault::NewKey {
                owner: id,
                company_id: "acme".into(),
                wrapped: vec![1, 2, 3],
                master_id: "m".into(),
            });
        }
        let key = format!("key-{parts}");
        if parts & 8 != 0 {
            sqlx::query("INSERT INTO idempotency_keys (client_id, key, fingerprint) VALUES ('client', $1, '\\x00')")
                .bind(&key)
                .execute(&pool)
                .await
                .expect("idempotency key");
            append.request = Some(("client".into(), key.clone()));
        }
        let appended = batch(&pool, &[append]).await.remove(0);
        assert_eq!(appended.expect("appended").version, 1, "parts {parts}");
        assert_eq!(stored(&pool, id).await.len(), 1, "parts {parts}: the event");
        let claimed = claim_owner(&pool, &format!("parts{parts}@example.com")).await;
        assert_eq!(claimed.is_some(), parts & 1 != 0, "parts {parts}: the claim");
        let registered = count(&pool, "SELECT count(*) FROM user_registry WHERE user_id = $1", id).await;
        assert_eq!(registered == 1, parts & 2 != 0, "parts {parts}: the registration");
        let keyed = count(&pool, "SELECT count(*) FROM data_keys WHERE owner_id = $1", id).await;
        assert_eq!(keyed == 1, parts & 4 != 0, "parts {parts}: the data key");
        let remembered: Option<i64> =
            sqlx::query_scalar("SELECT committed_to FROM idempotency_keys WHERE client_id = 'client' AND key = $1")
                .bind(&key)
                .fetch_optional(&pool)
                .await
                .expect("outcome")
                .flatten();
        assert_eq!(remembered, (parts & 8 != 0).then_some(1), "parts {parts}: the outcome");
    }
}

/// Opens a transaction on a connection of its own that is inserting the
/// claim of `email` for `holder`, not yet committed.
async fn claim_being_inserted(pool: &PgPool, email: &str, holder: Uuid) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let mut other = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN").execute(&mut *other).await.expect("begin");
    sqlx::query("INSERT INTO unique_claims (company_id, kind, value, owner_id) VALUES ('acme', 'email', $1, $2)")
        .bind(claim_key().hash(email))
        .bind(holder)
        .execute(&mut *other)
        .await
        .expect("claim being inserted");
    other
}

/// How many lock requests of this database wait, once one does (or after
/// two seconds).
async fn lock_waits(pool: &PgPool) -> i64 {
    let mut waiting = 0;
    for _ in 0..200 {
        waiting = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid)
              WHERE NOT l.granted AND s.datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .expect("locks");
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    waiting
}

/// A batch's events come after its other rows: a batch that waits for a
/// claim another transaction is inserting waits before its first event
/// takes the log's lock, so every other append goes on meanwhile (here one
/// of a transaction of its own, which would otherwise wait for the batch,
/// and the batch for the claim).
#[sqlx::test(migrations = "../migrations")]
async fn a_batch_waiting_for_a_claim_holds_no_other_append_up(pool: PgPool) {
    let holder = Uuid::now_v7();
    let mut other = claim_being_inserted(&pool, "wanted@example.com", holder).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let appends = vec![enroll(a, "wanted@example.com"), enroll(b, "free@example.com")];
    let p = pool.clone();
    let batch = tokio::spawn(async move { batch(&p, &appends).await });
    assert_eq!(lock_waits(&pool).await, 1, "the batch waits for the claim");

    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SET statement_timeout = '3s'")
        .execute(&mut *conn)
        .await
        .expect("timeout");
    let appended: sqlx::Result<i64> = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('test', 'meanwhile', 1, 'TestHappened', '1.0', '{}', '{}') RETURNING position",
    )
    .fetch_one(&mut *conn)
    .await;
    assert!(appended.is_ok(), "another append goes on: {appended:?}");
    assert!(!batch.is_finished());

    sqlx::query("ROLLBACK").execute(&mut *other).await.expect("rollback");
    let outcomes = batch.await.expect("batch");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(claim_owner(&pool, "wanted@example.com").await, Some(a));
}

/// A batch's claims are inserted plainly: one that another transaction
/// commits while the batch waits for it refuses the batch, whose appends
/// are then written one by one, so only the append that wanted it fails.
#[sqlx::test(migrations = "../migrations")]
async fn a_claim_committed_while_a_batch_waits_fails_only_its_append(pool: PgPool) {
    let holder = Uuid::now_v7();
    let mut other = claim_being_inserted(&pool, "wanted@example.com", holder).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let appends = vec![enroll(a, "wanted@example.com"), enroll(b, "free@example.com")];
    let p = pool.clone();
    let batch = tokio::spawn(async move { batch(&p, &appends).await });
    assert_eq!(lock_waits(&pool).await, 1, "the batch waits for the claim");

    sqlx::query("COMMIT").execute(&mut *other).await.expect("commit");
    let outcomes = batch.await.expect("batch");
    assert!(
        matches!(outcomes[0], Err(AppendError::Violation(Violation::EmailTaken))),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    assert!(stored(&pool, a).await.is_empty(), "nothing of the refused append");
    assert_eq!(stored(&pool, b).await.len(), 1);
    assert_eq!(claim_owner(&pool, "wanted@example.com").await, Some(holder));
    assert_eq!(claim_owner(&pool, "free@example.com").await, Some(b));
}
