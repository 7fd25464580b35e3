//! Deep-chain relationships benchmark (not a test): chains of 1,000, 10,000
//! and 100,000 levels in `user_view` (each user the parent of the next),
//! then `GET /v1/users/{id}/relationships` as the query it runs
//! (`roster_query::relationships::get`) for the chain's root (its
//! descendants, cut at 10,000), its middle and its leaf (every ancestor).
//!
//!     cargo run --release -p roster-tests --bin chain-bench -- [runs=5]
//!
//! Uses `$ROSTER_TEST_PG` (default postgres://postgres@127.0.0.1:5432) and a
//! database `roster_chain_bench` it recreates. Prints a Markdown table.

use roster_query::relationships;
use std::time::{Duration, Instant};
use uuid::Uuid;

const LEVELS: [i64; 3] = [1_000, 10_000, 100_000];

/// Node `n` of chain `chain`: deterministic, so parents can be named in SQL.
fn node(chain: i64, n: i64) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-7000-{chain:04x}-{n:012x}")).expect("a uuid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let server = roster_tests::pg_server();
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_chain_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let pool = roster::db::prepare(&format!("{server}/roster_chain_bench"), 4).await?;
    for (chain, levels) in LEVELS.iter().enumerate() {
        let company = format!("chain-{levels}");
        sqlx::query(
            "INSERT INTO user_view (id, company_id, version, status, parent_user_id, search_name, doc)
             SELECT id, $1, 1, 'active', parent, 'ann l' || n,
                    json_build_object('id', id, 'first_name', 'Ann', 'last_name', 'L' || n)
               FROM (SELECT n, ('00000000-0000-7000-' || lpad(to_hex($2::int), 4, '0') || '-'
                                || lpad(to_hex(n), 12, '0'))::uuid AS id,
                            CASE WHEN n > 0 THEN ('00000000-0000-7000-' || lpad(to_hex($2::int), 4, '0') || '-'
                                || lpad(to_hex(n - 1), 12, '0'))::uuid END AS parent
                       FROM generate_series(0, $3 - 1) n) c",
        )
        .bind(&company)
        .bind(chain as i32)
        .bind(levels)
        .execute(&pool)
        .await?;
    }
    sqlx::query("VACUUM ANALYZE user_view").execute(&pool).await?;

    println!("| levels | user | ancestors | descendants | p50 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (chain, levels) in LEVELS.iter().enumerate() {
        let company = format!("chain-{levels}");
        for (name, n) in [("root", 0), ("middle", levels / 2), ("leaf", levels - 1)] {
            let mut samples: Vec<Duration> = Vec::with_capacity(runs);
            let mut sizes = (0, 0);
            for _ in 0..runs {
                let t = Instant::now();
                let r = relationships::get(&pool, &company, node(chain as i64, n), None)
                    .await?
                    .expect("a chain node");
                samples.push(t.elapsed());
                sizes = (r.ancestors.len(), r.descendants.len());
            }
            assert_eq!(sizes.0 as i64, n, "every ancestor of node {n}");
            samples.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {levels} | {name} | {} | {} | {:.1} | {:.1} |",
                sizes.0,
                sizes.1,
                ms(samples[samples.len() / 2]),
                ms(samples[samples.len() - 1])
            );
        }
    }
    Ok(())
}
