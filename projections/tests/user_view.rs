//! The user view projector builds exactly the document the write side
//! returned, and a replay rebuilds the same rows.

use roster_command::runner::Load;
use roster_command::user::{EnrollUser, UserAction, UserCommand};
use roster_command::{Commands, Meta};
use roster_events::user::{Profile, QuestionHash, UserDoc, UserStatus};
use roster_events::Timestamp;
use roster_projections::engine::{self, Projector};
use roster_projections::user_view::UserView;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

async fn enroll(commands: &Commands, i: usize) -> UserDoc {
    let id = Uuid::now_v7();
    let meta = Meta {
        company_id: "acme".into(),
        client_id: "client".into(),
        request_id: format!("req-{i}"),
        idempotency_key: None,
        at: Timestamp::now(),
        recovered: None,
        appended: Default::default(),
    };
    let command = UserCommand {
        company_id: "acme".into(),
        at: meta.at,
        expected_version: None,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id: id,
            profile: Profile {
                email: Some(format!("u{i}@example.com")),
                // What `COPY`'s text format would read as syntax.
                first_name: (i % 10 == 3).then(|| "Back\\slash \"Quote\"\tTab\nLine\rReturn".to_string()),
                ..Profile::default()
            },
            status: UserStatus::Active,
            status_reason: None,
            kyc: None,
            parent_user_id: None,
            account: None,
            password_hash: Some("$argon2id$v=19$secret".into()),
            verification_questions: vec![QuestionHash {
                code: "PET".into(),
                answer_hash: "$argon2id$v=19$answer".into(),
            }],
        })),
    };
    commands
        .user(id, command, meta, Load::Fresh)
        .await
        .expect("enrolled")
        .doc
}

async fn rows(pool: &PgPool) -> Vec<(Uuid, i64, String, Json<UserDoc>)> {
    sqlx::query_as("SELECT id, version, status, doc FROM user_view ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("rows")
}

/// The columns beside the document, as text.
async fn columns(pool: &PgPool) -> Vec<(Uuid, String)> {
    sqlx::query_as(
        "SELECT id, concat_ws('|', company_id, status, parent_user_id, search_name, email_lower, mobile)
           FROM user_view ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("columns")
}

async fn catch_up(pool: &PgPool) {
    catch_up_with(pool, &UserView::default()).await
}

/// Runs `runner` until the view has every event (the watermark may hold
/// events back while other tests' transactions are open).
async fn catch_up_with(pool: &PgPool, runner: &UserView) {
    let mut conn = pool.acquire().await.expect("conn");
    for _ in 0..200 {
        engine::run_batch(&mut conn, &vault(), runner, 500)
            .await
            .expect("batch");
        if engine::lag(pool, "user_view", 10).await.expect("lag") == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("user_view did not catch up");
}

#[sqlx::test(migrations = "../migrations")]
async fn projected_rows_equal_the_write_side_documents_and_survive_replay(pool: PgPool) {
    let commands = Commands::new(pool.clone(), vault());
    let mut written = Vec::new();
    for i in 0..30 {
        written.push(enroll(&commands, i).await);
    }
    catch_up(&pool).await;
    let incremental = rows(&pool).await;
    let projected: Vec<&UserDoc> = incremental.iter().map(|r| &r.3 .0).collect();
    assert_eq!(projected, written.iter().collect::<Vec<_>>());
    assert!(incremental.iter().all(|r| r.1 == 1 && r.2 == "active"));
    let text: String = sqlx::query_scalar("SELECT string_agg(doc::text, '') FROM user_view")
        .fetch_one(&pool)
        .await
        .expect("docs");
    assert!(!text.contains("argon2"), "no secret in the read model");

    // Applying the same events again changes nothing.
    sqlx::query("UPDATE subscriber_checkpoints SET position = 0 WHERE name = 'user_view'")
        .execute(&pool)
        .await
        .expect("rewind");
    catch_up(&pool).await;
    assert_eq!(rows(&pool).await, incremental);

    let schema = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'user_view' ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .expect("indexes")
    };
    let before = schema().await;
    let incremental_columns = columns(&pool).await;
    assert!(incremental_columns[3]
        .1
        .contains("back\\slash \"quote\"\ttab\nline\rreturn"));
    engine::replay(&pool, &vault(), &std::sync::Arc::new(UserView::default()), 7, |_| {})
        .await
        .expect("replay");
    assert_eq!(rows(&pool).await, incremental, "replay equals the incremental build");
    assert_eq!(columns(&pool).await, incremental_columns);
    assert_eq!(
        schema().await,
        before,
        "the rebuilt table has the same indexes, by name"
    );
    // The live runner carries on from the replay's checkpoint.
    enroll(&commands, 99).await;
    catch_up(&pool).await;
    assert_eq!(rows(&pool).await.len(), 31);
}

// ---- Read models that combine aggregates, and events applied twice ----

use roster_events::card::{CardOrdered, CardTerminated, CardType, Issuer};
use roster_events::household::{HouseholdCreated, HouseholdEvent, Member};
use roster_events::user::{Account, AccountAdded, UserEnrolled, UserEvent};
use roster_projections::card_view::CardView;
use roster_projections::household_view::HouseholdView;
use sqlx::{Connection, PgConnection};

/// One vault per test process: what the commands seal, the projections open.
fn vault() -> std::sync::Arc<roster_vault::Vault> {
    static VAULT: std::sync::OnceLock<std::sync::Arc<roster_vault::Vault>> = std::sync::OnceLock::new();
    VAULT
        .get_or_init(|| std::sync::Arc::new(roster_vault::Vault::ephemeral()))
        .clone()
}

const COMPANY: &str = "acme";

/// An event row exactly as the store writes it (externally tagged payload,
/// company in the metadata), inside whatever transaction `conn` is in.
async fn append(conn: &mut PgConnection, aggregate_type: &str, id: Uuid, sequence: i64, name: &str, payload: String) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ($1, $2, $3, $4, '1.0', $5::json, $6::json)",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .bind(sequence)
    .bind(name)
    .bind(payload)
    .bind(serde_json::json!({"company_id": COMPANY, "client_id": "c", "request_id": "r"}).to_string())
    .execute(conn)
    .await
    .expect("event appended");
}

async fn user_event(conn: &mut PgConnection, id: Uuid, sequence: i64, e: UserEvent) {
    append(
        conn,
        "user",
        id,
        sequence,
        e.name(),
        serde_json::to_string(&e).expect("json"),
    )
    .await
}

async fn household_event(conn: &mut PgConnection, id: Uuid, sequence: i64, e: HouseholdEvent) {
    append(
        conn,
        "household",
        id,
        sequence,
        e.name(),
        serde_json::to_string(&e).expect("json"),
    )
    .await
}

fn account(id: &str) -> Account {
    Account {
        account_id: id.into(),
        account_id_type: "T".into(),
        status: "GOOD_STANDING".into(),
        product_code: "P".into(),
        program_identifier: "G".into(),
    }
}

fn enrolled(user: Uuid, account_id: Option<&str>) -> UserEvent {
    UserEvent::UserEnrolled(Box::new(UserEnrolled {
        user_id: user,
        company_id: COMPANY.into(),
        profile: Profile {
            email: Some(format!("{user}@example.com")),
            ..Profile::default()
        },
        status: UserStatus::Active,
        status_reason: None,
        parent_user_id: None,
        kyc: None,
        account: account_id.map(account),
        password_hash: None,
        verification_questions: vec![],
        at: Timestamp::now(),
    }))
}

fn created(household: Uuid) -> HouseholdEvent {
    HouseholdEvent::HouseholdCreated(HouseholdCreated {
        household_id: household,
        company_id: COMPANY.into(),
        name: None,
        at: Timestamp::now(),
    })
}

fn member(user: Uuid, account_id: &str) -> Member {
    Member {
        user_id: user,
        account_id: Some(account_id.into()),
        at: Timestamp::now(),
    }
}

async fn connect(pool: &PgPool) -> PgConnection {
    PgConnection::connect_with(&pool.connect_options())
        .await
        .expect("connection")
}

/// Each account's household in the user view.
async fn households_of(pool: &PgPool, user: Uuid) -> Vec<(String, Option<Uuid>)> {
    let Json(doc): Json<UserDoc> = sqlx::query_scalar("SELECT doc FROM user_view WHERE id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .expect("user row");
    doc.accounts
        .into_iter()
        .map(|a| (a.account.account_id, a.household_id))
        .collect()
}

/// Runs a projector in batches of `batch` events until it has caught up
/// (the watermark is server-wide: another test's open transaction can hold
/// it back for a moment).
async fn run_until_caught_up<P: Projector>(pool: &PgPool, projector: &P, batch: i64) {
    let mut conn = pool.acquire().await.expect("conn");
    for _ in 0..400 {
        while engine::run_batch(&mut conn, &vault(), projector, batch)
            .await
            .expect("batch")
            > 0
        {}
        if engine::lag(pool, projector.name(), 10).await.expect("lag") == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{} did not catch up", projector.name());
}

async fn project(pool: &PgPool, batch: i64) {
    run_until_caught_up(pool, &UserView::default(), batch).await
}

/// An account moves from H1 to H2 while, in the same company, another
/// user's enrollment and its account's household membership race. Each
/// pair reaches the projector in the reverse of its natural order, as a
/// replay's lanes may apply them.
#[sqlx::test(migrations = "../migrations")]
async fn household_membership_does_not_depend_on_the_order_events_arrive_in(pool: PgPool) {
    let (u, v) = (Uuid::now_v7(), Uuid::now_v7());
    let (h1, h2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut setup = connect(&pool).await;
    user_event(&mut setup, u, 1, enrolled(u, Some("A"))).await;
    household_event(&mut setup, h1, 1, created(h1)).await;
    household_event(&mut setup, h2, 1, created(h2)).await;
    household_event(&mut setup, h1, 2, HouseholdEvent::HouseholdMemberAdded(member(u, "A"))).await;
    project(&pool, 100).await;
    assert_eq!(households_of(&pool, u).await, vec![("A".to_string(), Some(h1))]);

    // Move A: the add to H2 reaches the projection before the removal from
    // H1 (the log keeps commit order, but a replay's lanes apply different
    // users' events side by side, in any order). And a new user V whose
    // account B joins H2: the membership comes before the enrollment.
    household_event(&mut setup, h2, 2, HouseholdEvent::HouseholdMemberAdded(member(u, "A"))).await;
    household_event(&mut setup, h2, 3, HouseholdEvent::HouseholdMemberAdded(member(v, "B"))).await;
    household_event(
        &mut setup,
        h1,
        3,
        HouseholdEvent::HouseholdMemberRemoved(member(u, "A")),
    )
    .await;
    user_event(&mut setup, v, 1, enrolled(v, Some("B"))).await;
    let order: Vec<String> =
        sqlx::query_scalar("SELECT event_type || ' ' || aggregate_id FROM events ORDER BY position")
            .fetch_all(&pool)
            .await
            .expect("order");
    let add_at = order.iter().position(|e| *e == format!("HouseholdMemberAdded {h2}"));
    let remove_at = order.iter().position(|e| *e == format!("HouseholdMemberRemoved {h1}"));
    assert!(add_at < remove_at, "the projection order is the bad one: {order:?}");
    let b_joins = order.iter().rposition(|e| *e == format!("HouseholdMemberAdded {h2}"));
    let v_enrolled = order.iter().position(|e| *e == format!("UserEnrolled {v}"));
    assert!(b_joins < v_enrolled, "V's membership comes before V exists: {order:?}");

    // One event per batch: every intermediate state is visited.
    project(&pool, 1).await;
    assert_eq!(households_of(&pool, u).await, vec![("A".to_string(), Some(h2))]);
    assert_eq!(households_of(&pool, v).await, vec![("B".to_string(), Some(h2))]);
    // An account added after its membership was projected gets it too.
    household_event(&mut setup, h1, 4, HouseholdEvent::HouseholdMemberAdded(member(u, "C"))).await;
    let added = UserEvent::AccountAdded(AccountAdded {
        account: account("C"),
        at: Timestamp::now(),
    });
    user_event(&mut setup, u, 2, added).await;
    project(&pool, 1).await;
    let expected = vec![("A".to_string(), Some(h2)), ("C".to_string(), Some(h1))];
    assert_eq!(households_of(&pool, u).await, expected);

    // A replay, in any batch size, builds the same.
    engine::replay(&pool, &vault(), &std::sync::Arc::new(UserView::default()), 2, |_| {})
        .await
        .expect("replay");
    assert_eq!(households_of(&pool, u).await, expected);
    assert_eq!(households_of(&pool, v).await, vec![("B".to_string(), Some(h2))]);
}

/// An account passed from one member to another (U removed, V added with
/// the same account id): a replay applies U's and V's events on different
/// lanes, in either order. Here the later membership event (V's) is
/// applied first, each event in a batch of its own, then the other way.
#[sqlx::test(migrations = "../migrations")]
async fn an_account_passed_between_members_ends_with_the_later_one_in_either_order(pool: PgPool) {
    let (u, v, h) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut setup = connect(&pool).await;
    user_event(&mut setup, u, 1, enrolled(u, Some("X"))).await;
    user_event(&mut setup, v, 1, enrolled(v, Some("X"))).await;
    household_event(&mut setup, h, 1, created(h)).await;
    household_event(&mut setup, h, 2, HouseholdEvent::HouseholdMemberAdded(member(u, "X"))).await;
    project(&pool, 100).await;
    household_event(&mut setup, h, 3, HouseholdEvent::HouseholdMemberRemoved(member(u, "X"))).await;
    household_event(&mut setup, h, 4, HouseholdEvent::HouseholdMemberAdded(member(v, "X"))).await;
    // V then gains an account: its document's households are read back
    // from the membership rows the two events left.
    let added = UserEvent::AccountAdded(AccountAdded {
        account: account("Y"),
        at: Timestamp::now(),
    });
    user_event(&mut setup, v, 2, added).await;
    let at = engine::checkpoint(&mut setup, "user_view", false)
        .await
        .expect("checkpoint");
    let rest = engine::read_after(&mut setup, &vault(), at, 100).await.expect("events");
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3, 4, 2],
        "the removal, the addition, V's account"
    );

    let expected = |pool: PgPool| async move {
        assert_eq!(households_of(&pool, u).await, vec![("X".to_string(), None)]);
        assert_eq!(
            households_of(&pool, v).await,
            vec![("X".to_string(), Some(h)), ("Y".to_string(), None)]
        );
    };
    let apply_in = |order: [usize; 3]| {
        let (pool, rest) = (pool.clone(), rest.clone());
        async move {
            let view = UserView::default();
            for i in order {
                let mut tx = pool.begin().await.expect("begin");
                view.apply(&mut tx, &rest[i..=i]).await.expect("applied");
                tx.commit().await.expect("commit");
            }
        }
    };
    let before = dump(&pool).await;
    apply_in([1, 0, 2]).await;
    expected(pool.clone()).await;
    let later_first = dump(&pool).await;

    // The same from the state before, in the log's order.
    sqlx::query("DELETE FROM user_view")
        .execute(&pool)
        .await
        .expect("reset");
    sqlx::query("DELETE FROM user_view_memberships")
        .execute(&pool)
        .await
        .expect("reset");
    sqlx::query("UPDATE subscriber_checkpoints SET position = 0")
        .execute(&pool)
        .await
        .expect("reset");
    run_until_caught_up(&pool, &UserView::default(), 1).await;
    expected(pool.clone()).await;
    assert_eq!(dump(&pool).await, later_first, "either order, the same rows");
    assert_ne!(before, later_first);
    engine::replay(&pool, &vault(), &std::sync::Arc::new(UserView::default()), 1, |_| {})
        .await
        .expect("replay");
    expected(pool.clone()).await;
}

async fn dump(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT t FROM (
             SELECT 'user ' || id || ' ' || version || ' ' || doc::text AS t FROM user_view
             UNION ALL SELECT 'membership ' || household_id || ' ' || account_id || ' ' || version || ' ' || member
               FROM user_view_memberships
             UNION ALL SELECT 'household ' || id || ' ' || version || ' ' || doc::text FROM household_view
             UNION ALL SELECT 'card ' || id || ' ' || version || ' ' || doc::text FROM card_view) x
          ORDER BY t",
    )
    .fetch_all(pool)
    .await
    .expect("dump")
}

async fn project_all(pool: &PgPool) {
    run_until_caught_up(pool, &UserView::default(), 3).await;
    run_until_caught_up(pool, &HouseholdView, 3).await;
    run_until_caught_up(pool, &CardView, 3).await;
}

/// Every projector, given events it has already applied (a batch re-run
/// after a crash, or the whole log again), ends with the same rows.
#[sqlx::test(migrations = "../migrations")]
async fn applying_events_again_changes_no_read_model(pool: PgPool) {
    let u = Uuid::now_v7();
    let (h1, h2) = (Uuid::now_v7(), Uuid::now_v7());
    let card = Uuid::now_v7();
    let mut conn = connect(&pool).await;
    user_event(&mut conn, u, 1, enrolled(u, Some("A"))).await;
    let ordered = UserEvent::CardOrdered(CardOrdered {
        card_id: card,
        card_product_id: Uuid::now_v7(),
        last4: "1234".into(),
        card_type: CardType::Virtual,
        issuer: Issuer::Marqeta,
        shipping: None,
        at: Timestamp::now(),
    });
    user_event(&mut conn, u, 2, ordered).await;
    let terminated = UserEvent::CardTerminated(CardTerminated {
        card_id: card,
        last4: "1234".into(),
        reason_code: "LOST".into(),
        reason: None,
        issuer: Issuer::Marqeta,
        at: Timestamp::now(),
    });
    user_event(&mut conn, u, 3, terminated).await;
    household_event(&mut conn, h1, 1, created(h1)).await;
    household_event(&mut conn, h1, 2, HouseholdEvent::HouseholdMemberAdded(member(u, "A"))).await;
    household_event(&mut conn, h1, 3, HouseholdEvent::HouseholdMemberRemoved(member(u, "A"))).await;
    household_event(&mut conn, h2, 1, created(h2)).await;
    household_event(&mut conn, h2, 2, HouseholdEvent::HouseholdMemberAdded(member(u, "A"))).await;
    project_all(&pool).await;
    let once = dump(&pool).await;
    assert!(once
        .iter()
        .any(|r| r.starts_with(&format!("card {card} 3 ")) && r.contains("TERMINATED")));
    assert_eq!(households_of(&pool, u).await, vec![("A".to_string(), Some(h2))]);

    // Every batch again, from the start, in other batch boundaries.
    sqlx::query("UPDATE subscriber_checkpoints SET position = 0")
        .execute(&pool)
        .await
        .expect("rewind");
    project_all(&pool).await;
    assert_eq!(
        dump(&pool).await,
        once,
        "the same rows after applying every event twice"
    );

    // And one batch applied twice directly.
    let events = engine::read_after(&mut conn, &vault(), engine::Position::default(), 100)
        .await
        .expect("events");
    for _ in 0..2 {
        let mut tx = conn.begin().await.expect("tx");
        UserView::default().apply(&mut tx, &events).await.expect("user_view");
        HouseholdView.apply(&mut tx, &events).await.expect("household_view");
        CardView.apply(&mut tx, &events).await.expect("card_view");
        tx.commit().await.expect("commit");
    }
    assert_eq!(dump(&pool).await, once);
}

/// A runner keeps the documents it wrote, but decides on what the table
/// holds: here another runner applied an event in between, and the first
/// one's kept document is stale.
#[sqlx::test(migrations = "../migrations")]
async fn kept_documents_give_way_to_what_another_runner_wrote(pool: PgPool) {
    use roster_command::user::UpdateUser;
    let commands = Commands::new(pool.clone(), vault());
    let user = enroll(&commands, 0).await;
    let rename = |last_name: &str, version: u64| {
        let mut fields = serde_json::Map::new();
        fields.insert("last_name".into(), last_name.into());
        let patch =
            serde_json::from_value::<roster_command::user::patch::ProfilePatch>(serde_json::Value::Object(fields))
                .expect("a patch")
                .checked()
                .expect("a valid patch");
        let meta = Meta {
            company_id: "acme".into(),
            client_id: "client".into(),
            request_id: format!("rename-{version}"),
            idempotency_key: None,
            at: Timestamp::now(),
            recovered: None,
            appended: Default::default(),
        };
        let command = UserCommand {
            company_id: "acme".into(),
            at: meta.at,
            expected_version: Some(version),
            action: UserAction::Update(Box::new(UpdateUser {
                patch,
                ..UpdateUser::default()
            })),
        };
        (command, meta)
    };
    let (first, second) = (UserView::default(), UserView::default());
    catch_up_with(&pool, &first).await;
    let (command, meta) = rename("Second", 1);
    commands
        .user(user.id, command, meta, Load::Existing)
        .await
        .expect("renamed");
    catch_up_with(&pool, &second).await;
    let (command, meta) = rename("Third", 2);
    let latest = commands
        .user(user.id, command, meta, Load::Existing)
        .await
        .expect("renamed")
        .doc;
    catch_up_with(&pool, &first).await;
    let stored = rows(&pool).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].3 .0, latest,
        "the first runner read the table's version 2, not its kept version 1"
    );
}

/// What leaves the service (`Keys::Fresh`, the publisher's read) is opened
/// only for owners not erased *as the store says now*: here another
/// process erased the user (its key row deleted, its registry row marked),
/// and this process still keeps the key it sealed the events with.
#[sqlx::test(migrations = "../migrations")]
async fn a_read_for_the_outside_does_not_open_an_erased_users_events_with_a_kept_key(pool: PgPool) {
    let commands = Commands::new(pool.clone(), vault());
    let user = enroll(&commands, 0).await;
    let mut conn = connect(&pool).await;
    let household = Uuid::now_v7();
    household_event(&mut conn, household, 1, created(household)).await;
    household_event(
        &mut conn,
        household,
        2,
        HouseholdEvent::HouseholdMemberAdded(member(user.id, "A")),
    )
    .await;
    let opened = |events: &[engine::StoredEvent]| {
        events
            .iter()
            .map(|e| (e.event_type.clone(), e.erased, e.payload.contains("u0@example.com")))
            .collect::<Vec<_>>()
    };
    // The watermark holds events back while any older transaction of the
    // server (another test's) is open: wait for all three.
    let mut before = Vec::new();
    for _ in 0..400 {
        before = engine::read_after(&mut conn, &vault(), engine::Position::default(), 100)
            .await
            .expect("events");
        if before.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        opened(&before),
        [
            ("UserEnrolled".to_string(), false, true),
            ("HouseholdCreated".to_string(), false, false),
            ("HouseholdMemberAdded".to_string(), false, false)
        ]
    );
    // The erasure as another process commits it.
    sqlx::query("UPDATE user_registry SET erased_at = now() WHERE user_id = $1")
        .bind(user.id)
        .execute(&pool)
        .await
        .expect("mark");
    sqlx::query("DELETE FROM data_keys WHERE owner_id = $1")
        .bind(user.id)
        .execute(&pool)
        .await
        .expect("shred");
    assert!(
        matches!(vault().key(&pool, user.id).await, Ok(Some(_))),
        "this process still keeps the key"
    );
    let after = engine::read_after(&mut conn, &vault(), engine::Position::default(), 100)
        .await
        .expect("events");
    assert_eq!(
        opened(&after),
        [
            ("UserEnrolled".to_string(), true, false),
            ("HouseholdCreated".to_string(), false, false),
            ("HouseholdMemberAdded".to_string(), true, false)
        ]
    );
}
