//! The user view projector builds exactly the document the write side
//! returned, and a replay rebuilds the same rows.

use roster_command::bus::Load;
use roster_command::user::{EnrollUser, UserAction, UserCommand};
use roster_command::{Commands, Meta};
use roster_events::user::{Profile, QuestionHash, UserDoc, UserStatus};
use roster_events::Timestamp;
use roster_projections::engine;
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
    };
    let command = UserCommand {
        company_id: "acme".into(),
        at: meta.at,
        expected_version: None,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id: id,
            profile: Profile {
                email: Some(format!("u{i}@example.com")),
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

async fn catch_up(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    for _ in 0..200 {
        engine::run_batch(&mut conn, &UserView, 500).await.expect("batch");
        if engine::lag(pool, "user_view", 10).await.expect("lag") == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("user_view did not catch up");
}

#[sqlx::test(migrations = "../migrations")]
async fn projected_rows_equal_the_write_side_documents_and_survive_replay(pool: PgPool) {
    let commands = Commands::new(pool.clone());
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
    sqlx::query("UPDATE subscriber_checkpoints SET last_xid = '0', last_pos = 0 WHERE name = 'user_view'")
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
    engine::replay(&pool, &UserView, 7, |_| {}).await.expect("replay");
    assert_eq!(rows(&pool).await, incremental, "replay equals the incremental build");
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
