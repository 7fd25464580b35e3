//! Point-in-time read benchmark (not a test): one user with 1,000 events
//! (an enrollment with an account, then 999 updates; the account joins a
//! household), then `GET /v1/users/{id}?version=500` as the query it runs
//! (`roster_query::history::user_at`), 300 times.
//!
//!     cargo run --release -p roster-tests --bin history-bench
//!
//! Uses `$ROSTER_TEST_PG` (default postgres://postgres@127.0.0.1:5432) and a
//! database `roster_history_bench` it recreates.

use roster_query::history::{self, At, Past};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = roster_tests::pg_server();
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_history_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let pool = roster::db::prepare(&format!("{server}/roster_history_bench"), 4).await?;
    let user = Uuid::now_v7();
    let household = Uuid::now_v7();
    let at = "2026-11-23T12:00:00.000000Z";
    let meta = format!(r#"{{"company_id":"bench","client_id":"bench","request_id":"seed","occurred_at":"{at}"}}"#);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('user', $1, 1, 'UserEnrolled', '1.0', json_build_object('UserEnrolled', json_build_object(
                   'user_id', $1, 'company_id', 'bench', 'external_ref', NULL, 'first_name', 'Ann', 'last_name', 'L0',
                   'email', 'ann@example.com', 'email_verified', false, 'mobile', NULL, 'office_phone', NULL,
                   'office_extension', NULL, 'employee_id', NULL, 'date_of_birth', NULL, 'gender', NULL,
                   'nationality', NULL, 'locale', NULL, 'address', NULL, 'billing_address', NULL,
                   'communication_preferences', json_build_object('email', false, 'sms', false, 'post', false),
                   'status', 'active', 'status_reason', NULL, 'parent_user_id', NULL, 'kyc', NULL,
                   'account', json_build_object('account_id', 'ACC-1', 'account_id_type', 'T', 'status', 'OK',
                                                'product_code', 'P', 'program_identifier', 'G'),
                   'password_hash', NULL, 'verification_questions', json_build_array(), 'at', $2)), $3::json)",
    )
    .bind(user.to_string())
    .bind(at)
    .bind(&meta)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'user', $1, n, 'UserUpdated', '1.0',
                json_build_object('UserUpdated', json_build_object(
                    'changes', json_build_object('last_name', 'L' || n), 'at', $2)), $3::json
           FROM generate_series(2, 1000) n",
    )
    .bind(user.to_string())
    .bind(at)
    .bind(&meta)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('household', $1, 1, 'HouseholdCreated', '1.0', json_build_object('HouseholdCreated', json_build_object(
                   'household_id', $1, 'company_id', 'bench', 'name', NULL, 'at', $3)), $4::json),
                ('household', $1, 2, 'HouseholdMemberAdded', '1.0', json_build_object('HouseholdMemberAdded',
                   json_build_object('user_id', $2, 'account_id', 'ACC-1', 'at', $3)), $4::json)",
    )
    .bind(household.to_string())
    .bind(user.to_string())
    .bind(at)
    .bind(&meta)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE events").execute(&pool).await?;

    let mut samples: Vec<Duration> = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        let past = history::user_at(&pool, &roster_tests::test_vault(), "bench", user, At::Version(500)).await?;
        let elapsed = t.elapsed();
        let Past::Found(doc) = past else {
            anyhow::bail!("version 500 not found")
        };
        assert_eq!(doc.version, 500);
        assert_eq!(doc.profile.last_name.as_deref(), Some("L500"));
        assert_eq!(doc.accounts[0].household_id, Some(household));
        if i >= 20 {
            samples.push(elapsed); // after warm-up
        }
    }
    samples.sort();
    let ms = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!("| point-in-time read, user with 1,000 events, version=500 | n | p50 ms | p99 ms | max ms | limit |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| `history::user_at` | {} | {:.2} | {:.2} | {:.2} | 10 ms (p99 ÷ limit = {:.2}) |",
        samples.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
        ms(0.99) / 10.0
    );
    Ok(())
}
