//! Query-side benchmark (not a test): seeds a database with 1,000,000
//! enrolled users and a 10,000-node tree, measures `roster replay` of the
//! user view, then search and relationship latencies.
//!
//!     cargo run --release -p roster-tests --bin query-bench -- [users] [queries]
//!
//! Uses `$ROSTER_TEST_PG` (default postgres://postgres@127.0.0.1:5432) and a
//! database `roster_bench` it recreates. Prints a Markdown table.

use roster_projections::{engine, user_view::UserView};
use roster_query::relationships;
use roster_query::users::{self, SearchUsers};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

const COMPANY: &str = "bench";
const TREE: i64 = 10_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    )
}

/// Enrollment events made in SQL, in the exact shape serde writes.
async fn seed(pool: &PgPool, users: i64) -> anyhow::Result<()> {
    let names = "ARRAY['James','Mary','John','Patricia','Robert','Jennifer','Michael','Linda','William','Elizabeth',
                       'David','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen',
                       'Omar','Fatima','Aisha','Yusuf','Mei','Hiroshi','Ana','Luca','Sven','Priya']";
    let lasts = "ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
                       'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
                       'Haddad','Rahman','Tanaka','Rossi','Larsen','Kumar','Nguyen','Okafor','Silva','Novak']";
    // Tree users first (ids t-<n>, parent = (n-1)/3), then flat users.
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'user', u.id::text, 1, 'UserEnrolled', '1.0',
                json_build_object('UserEnrolled', json_build_object(
                  'user_id', u.id, 'company_id', '{COMPANY}',
                  'external_ref', NULL, 'first_name', ({names})[1 + n % 30] || CASE WHEN n % 7 = 0 THEN 'son' ELSE '' END,
                  'last_name', ({lasts})[1 + (n / 30) % 30] || '-' || (n % 997)::text,
                  'email', 'user' || n || '@example.com', 'email_verified', false,
                  'mobile', '+9715' || lpad(n::text, 8, '0'), 'office_phone', NULL, 'office_extension', NULL,
                  'employee_id', NULL, 'date_of_birth', NULL, 'gender', NULL, 'nationality', 'AE', 'locale', 'en-US',
                  'address', NULL, 'billing_address', NULL,
                  'communication_preferences', json_build_object('email', true, 'sms', false, 'post', false),
                  'status', (ARRAY['inactive','active','blocked'])[1 + n % 3], 'status_reason', NULL,
                  'parent_user_id', CASE WHEN n > 0 AND n < {TREE} THEN tree_id((n - 1) / 3) END,
                  'kyc', NULL, 'account', NULL, 'password_hash', NULL, 'verification_questions', json_build_array(),
                  'at', '2026-11-23T12:00:00.000000Z')),
                json_build_object('company_id', '{COMPANY}', 'client_id', 'bench', 'request_id', 'seed',
                                  'occurred_at', '2026-11-23T12:00:00.000000Z')
           FROM (SELECT n, CASE WHEN n < {TREE} THEN tree_id(n) ELSE gen_random_uuid() END AS id
                   FROM generate_series(0, $1 - 1) n) u"
    ))
    .bind(users)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().collect();
    let users: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let queries: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let server = roster_tests::pg_server();
    let admin = PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let pool = roster::db::prepare(&format!("{server}/roster_bench"), 8).await?;
    // Deterministic ids for the tree, so parents can be named in SQL.
    sqlx::query(
        "CREATE FUNCTION tree_id(n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS
         $$ SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid $$",
    )
    .execute(&pool)
    .await?;

    eprintln!("seeding {users} enrollments...");
    let t = Instant::now();
    seed(&pool, users).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    eprintln!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    eprintln!("replaying user_view...");
    let t = Instant::now();
    let replayed = engine::replay(
        &pool,
        &roster_tests::test_vault(),
        &std::sync::Arc::new(UserView::default()),
        5000,
        |_| {},
    )
    .await?;
    let replay_secs = t.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE user_view").execute(&pool).await?;

    // Search: a mix of name substrings, exact email, exact mobile, filters.
    let words = [
        "mar",
        "john",
        "son",
        "garcia-1",
        "tanaka-42",
        "ai",
        "hernandez",
        "Priya Kumar",
        "zzz",
        "li",
    ];
    let mut by_kind: Vec<(&str, Vec<Duration>)> = vec![
        ("search name (substring)", vec![]),
        ("search name + status", vec![]),
        ("search email (exact)", vec![]),
        ("search mobile (exact)", vec![]),
        ("list page, status filter", vec![]),
    ];
    for i in 0..queries {
        let n = (i * 7919) as i64 % users;
        let kind = i % by_kind.len();
        let q = match kind {
            0 => SearchUsers {
                name: Some(words[i % words.len()].into()),
                limit: 10,
                ..Default::default()
            },
            1 => SearchUsers {
                name: Some(words[i % words.len()].into()),
                status: Some(roster_events::user::UserStatus::Active),
                limit: 10,
                ..Default::default()
            },
            2 => SearchUsers {
                email: Some(format!("USER{n}@example.com")),
                limit: 10,
                ..Default::default()
            },
            3 => SearchUsers {
                mobile: Some(format!("+9715{n:08}")),
                limit: 10,
                ..Default::default()
            },
            _ => SearchUsers {
                status: Some(roster_events::user::UserStatus::Blocked),
                limit: 10,
                ..Default::default()
            },
        };
        let t = Instant::now();
        let page = users::search(&pool, COMPANY, &q).await?;
        by_kind[kind].1.push(t.elapsed());
        if kind >= 2 {
            assert!(!page.data.is_empty(), "query {kind} finds its user");
        }
    }

    // Relationships on the tree: the root (all 9,999 descendants within
    // depth 10), inner nodes and leaves.
    let mut rel: Vec<(&str, Vec<Duration>)> =
        vec![("relationships: root", vec![]), ("relationships: any node", vec![])];
    for i in 0..(queries / 4).max(50) {
        let node = if i % 2 == 0 { 0 } else { (i as i64 * 37) % TREE };
        let id = Uuid::parse_str(&format!("00000000-0000-7000-8000-{node:012x}"))?;
        let t = Instant::now();
        let r = relationships::get(&pool, COMPANY, id, Some(10))
            .await?
            .expect("tree node");
        rel[i % 2].1.push(t.elapsed());
        if node == 0 {
            assert_eq!(r.descendants.len() as i64, TREE - 1);
        }
    }

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM user_view")
        .fetch_one(&pool)
        .await?;
    println!("| measurement | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, samples) in by_kind.into_iter().chain(rel) {
        let n = samples.len();
        let (p50, p99, max) = summary(samples);
        println!("| {name} | {n} | {p50:.2} | {p99:.2} | {max:.2} |");
    }
    println!();
    println!(
        "replay user_view: {replayed} events in {replay_secs:.1}s = {:.0} events/s ({total} rows)",
        replayed as f64 / replay_secs
    );
    Ok(())
}
