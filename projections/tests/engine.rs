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
                .bind(e.position.0)
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
                      VALUES ('test', $1, 1, 'TestHappened', '1.0', '{}', '{\"company_id\": \"acme\"}') RETURNING position";

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

/// Backends of this database waiting for the log's lock.
async fn waiting_for_the_log(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE NOT l.granted AND l.locktype = 'advisory' AND a.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .expect("locks")
}

/// Appends take their positions in commit order: a second append waits
/// for the first one's transaction to end (the log's lock, taken with the
/// first event's position), so a reader that pages by position never sees
/// a later position while an earlier one may still commit.
#[sqlx::test(migrations = "../migrations")]
async fn positions_are_taken_in_commit_order(pool: PgPool) {
    setup(&pool).await;
    let mut slow = pool.acquire().await.expect("conn");
    sqlx::query("BEGIN").execute(&mut *slow).await.expect("begin");
    let early = append(&mut slow, "a").await;
    let p = pool.clone();
    let fast = tokio::spawn(async move { append(&mut p.acquire().await.expect("conn"), "b").await });
    for _ in 0..200 {
        if waiting_for_the_log(&pool).await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        waiting_for_the_log(&pool).await,
        1,
        "the second append waits for the first"
    );
    assert!(!fast.is_finished());
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 0);

    sqlx::query("COMMIT").execute(&mut *slow).await.expect("commit");
    let late = fast.await.expect("append");
    assert!(early < late);
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 2);
    assert_eq!(seen(&pool).await, vec![early, late]);
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 0, "nothing twice");
}

/// A transaction open elsewhere on the server (here: in this database,
/// holding a transaction id, as an idle `BEGIN` in psql would) holds no
/// reader back: there is no snapshot watermark.
#[sqlx::test(migrations = "../migrations")]
async fn an_open_transaction_holds_no_reader_back(pool: PgPool) {
    setup(&pool).await;
    let mut idle = pool.acquire().await.expect("conn");
    sqlx::query("BEGIN").execute(&mut *idle).await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *idle)
        .await
        .expect("an xid");
    let mut conn = pool.acquire().await.expect("conn");
    let first = append(&mut conn, "a").await;
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 1);
    assert_eq!(seen(&pool).await, vec![first]);
    sqlx::query("ROLLBACK").execute(&mut *idle).await.expect("rollback");
}

/// Read-model rows and the checkpoint commit together or not at all.
#[sqlx::test(migrations = "../migrations")]
async fn a_failed_batch_moves_neither_rows_nor_checkpoint(pool: PgPool) {
    setup(&pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    let first = append(&mut conn, "a").await;
    assert!(batch(&pool, &Broken).await.is_err());
    assert!(seen(&pool).await.is_empty());
    assert_eq!(engine::lag(&pool, "recorder", 100).await.expect("lag"), 1);
    assert_eq!(batch(&pool, &Recorder).await.expect("batch"), 1);
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
        let n = batch(&pool, &Recorder).await.expect("batch");
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
    let applied = || engine::has_applied(&pool, "recorder", "acme", "test", "a", 1);
    assert_eq!(applied().await.expect("query"), Some(false));
    batch(&pool, &Recorder).await.expect("batch");
    assert_eq!(applied().await.expect("query"), Some(true));
    assert_eq!(
        engine::has_applied(&pool, "recorder", "acme", "test", "a", 2)
            .await
            .expect("query"),
        None
    );
    assert_eq!(
        engine::has_applied(&pool, "recorder", "other", "test", "a", 1)
            .await
            .expect("query"),
        None,
        "another company's event is no event"
    );
}
