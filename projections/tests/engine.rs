//! The catch-up engine on a real Postgres (`#[sqlx::test]`: a fresh,
//! migrated database per test).

use roster_projections::engine::{self, Projector, StoredEvent};
use sqlx::{PgConnection, PgPool};

/// One vault per test process: what the commands seal, the projections open.
fn vault() -> std::sync::Arc<roster_vault::Vault> {
    static VAULT: std::sync::OnceLock<std::sync::Arc<roster_vault::Vault>> = std::sync::OnceLock::new();
    VAULT
        .get_or_init(|| std::sync::Arc::new(roster_vault::Vault::ephemeral()))
        .clone()
}

/// Records the global position of every event it sees, in order.
struct Recorder;

impl Projector for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            sqlx::query("INSERT INTO seen (pos) VALUES ($1)")
                .bind(e.position.pos)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    fn tables(&self) -> &'static [&'static str] {
        &["seen"]
    }
}

/// Fails every batch.
struct Broken;

impl Projector for Broken {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn apply(&self, tx: &mut PgConnection, _: &[StoredEvent]) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO seen (pos) VALUES (-1)").execute(tx).await?;
        anyhow::bail!("projector bug")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["seen"]
    }
}

async fn setup(pool: &PgPool) {
    // Applying an event twice would break the primary key.
    sqlx::query("CREATE TABLE seen (pos bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .execute(pool)
        .await
        .expect("seen table");
}

const INSERT: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                      VALUES ('test', $1, 1, 'TestHappened', '1.0', '{}', '{}') RETURNING global_position";

async fn append(conn: &mut PgConnection, id: &str) -> i64 {
    sqlx::query_scalar(INSERT)
        .bind(id)
        .fetch_one(conn)
        .await
        .expect("append")
}

async fn seen(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT pos FROM seen ORDER BY at, pos")
        .fetch_all(pool)
        .await
        .expect("seen")
}

async fn batch(pool: &PgPool, p: &impl Projector) -> anyhow::Result<usize> {
    let mut conn = pool.acquire().await?;
    engine::run_batch(&mut conn, &vault(), p, 100).await
}

/// The watermark is cluster-wide: a write transaction open in another
/// test's database holds it back for a moment. Retry until the batch sees
/// events (or fails), up to 10 s.
async fn batch_some(pool: &PgPool, p: &impl Projector) -> anyhow::Result<usize> {
    for _ in 0..200 {
        match batch(pool, p).await {
            Ok(0) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            other => return other,
        }
    }
    Ok(0)
}

/// An append that commits after a later position was committed is still
/// read, in commit-transaction order: the reader waits for it instead of
/// skipping it.
#[sqlx::test(migrations = "../migrations")]
async fn a_late_commit_is_never_skipped(pool: PgPool) {
    setup(&pool).await;
    let mut slow = pool.acquire().await.expect("conn");
    let mut fast = pool.acquire().await.expect("conn");
    sqlx::query("BEGIN").execute(&mut *slow).await.expect("begin");
    let early = append(&mut slow, "a").await;
    sqlx::query("BEGIN").execute(&mut *fast).await.expect("begin");
    let late = append(&mut fast, "b").await;
    sqlx::query("COMMIT").execute(&mut *fast).await.expect("commit");
    assert!(early < late);

    // `global_position > checkpoint` would now read `late` and move past
    // `early` for good. The watermark holds the reader back instead.
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 0);
    assert!(seen(&pool).await.is_empty());

    sqlx::query("COMMIT").execute(&mut *slow).await.expect("commit");
    assert_eq!(batch_some(&pool, &Recorder).await.expect("batch"), 2);
    assert_eq!(seen(&pool).await, vec![early, late]);
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 0, "nothing twice");
}

/// Read-model rows and the checkpoint commit together or not at all.
#[sqlx::test(migrations = "../migrations")]
async fn a_failed_batch_moves_neither_rows_nor_checkpoint(pool: PgPool) {
    setup(&pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    let first = append(&mut conn, "a").await;
    assert!(batch_some(&pool, &Broken).await.is_err());
    assert!(seen(&pool).await.is_empty());
    assert_eq!(engine::lag(&pool, "recorder", 100).await.expect("lag"), 1);
    assert_eq!(batch_some(&pool, &Recorder).await.expect("batch"), 1);
    assert_eq!(seen(&pool).await, vec![first]);
    assert_eq!(engine::lag(&pool, "recorder", 100).await.expect("lag"), 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn batches_resume_from_the_checkpoint_and_replay_rebuilds(pool: PgPool) {
    setup(&pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    let mut positions = Vec::new();
    for i in 0..250 {
        positions.push(append(&mut conn, &format!("agg-{i}")).await);
    }
    let mut total = 0;
    while total < 250 {
        let n = batch_some(&pool, &Recorder).await.expect("batch");
        assert!(n > 0, "stalled at {total}");
        assert!(n <= 100);
        total += n;
    }
    assert_eq!(total, 250);
    assert_eq!(seen(&pool).await, positions);

    let mut progressed = 0;
    let replayed = engine::replay(&pool, &vault(), &std::sync::Arc::new(Recorder), 64, |n| progressed += n)
        .await
        .expect("replay");
    assert_eq!((replayed, progressed), (250, 250));
    assert_eq!(seen(&pool).await, positions, "replay rebuilds the same rows");
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 0);
}

/// One runner per projection: the advisory lock is exclusive across
/// connections (and so across processes), and released with its connection.
#[sqlx::test(migrations = "../migrations")]
async fn only_one_runner_leads_a_projection(pool: PgPool) {
    let leader = engine::lead(&pool, "recorder").await.expect("lead");
    assert!(leader.is_some());
    assert!(engine::lead(&pool, "recorder").await.expect("lead").is_none());
    assert!(engine::lead(&pool, "other").await.expect("lead").is_some());
    drop(leader);
    let mut again = None;
    for _ in 0..50 {
        again = engine::lead(&pool, "recorder").await.expect("lead");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the lock follows its connection");
}

#[sqlx::test(migrations = "../migrations")]
async fn has_applied_tracks_the_checkpoint(pool: PgPool) {
    setup(&pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    append(&mut conn, "a").await;
    let applied = || engine::has_applied(&pool, "recorder", "test", "a", 1);
    assert_eq!(applied().await.expect("query"), Some(false));
    batch_some(&pool, &Recorder).await.expect("batch");
    assert_eq!(applied().await.expect("query"), Some(true));
    assert_eq!(
        engine::has_applied(&pool, "recorder", "test", "a", 2)
            .await
            .expect("query"),
        None
    );
}
