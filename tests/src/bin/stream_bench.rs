//! Write cost against stream length (not a test): a PATCH of a user with 10
//! events against one with 3,000, through the command runner as the API runs
//! it (validation, load, decide, append). Warm: the process keeps the
//! aggregate (it decides on it without a read; a stale one would conflict
//! on append). Cold: a fresh process (an empty cache, a snapshot) each time.
//!
//!     cargo run --release -p roster-tests --bin stream-bench
//!
//! Uses `$ROSTER_TEST_PG` (default postgres://postgres@127.0.0.1:5432) and a
//! database `roster_stream_bench` it recreates.

use roster_command::runner::Load;
use roster_command::user::patch::ProfilePatch;
use roster_command::user::{EnrollUser, UpdateUser, UserAction, UserCommand};
use roster_command::{Commands, Meta};
use roster_events::user::{Profile, UserStatus};
use roster_events::Timestamp;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn meta() -> Meta {
    Meta {
        company_id: "bench".into(),
        client_id: "bench".into(),
        request_id: "bench".into(),
        idempotency_key: None,
        at: Timestamp::now(),
        recovered: None,
        appended: Default::default(),
    }
}

fn update(n: usize) -> UserCommand {
    let mut fields = serde_json::Map::new();
    fields.insert("last_name".into(), format!("L{n}").into());
    let patch = serde_json::from_value::<ProfilePatch>(serde_json::Value::Object(fields))
        .expect("a patch")
        .checked()
        .expect("a valid patch");
    UserCommand {
        company_id: "bench".into(),
        at: Timestamp::now(),
        expected_version: None,
        action: UserAction::Update(Box::new(UpdateUser {
            patch,
            ..UpdateUser::default()
        })),
    }
}

async fn user(commands: &Commands, events: usize) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let enroll = UserCommand {
        company_id: "bench".into(),
        at: Timestamp::now(),
        expected_version: None,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id: id,
            profile: Profile {
                email: Some(format!("{id}@example.com")),
                first_name: Some("Ann".into()),
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
    };
    commands.user(id, enroll, meta(), Load::Fresh).await?;
    for n in 2..=events {
        commands.user(id, update(n), meta(), Load::Existing).await?;
    }
    Ok(id)
}

fn p50(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = roster_tests::pg_server();
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS roster_stream_bench WITH (FORCE)")
        .execute(&admin)
        .await?;
    let pool = roster::db::prepare(&format!("{server}/roster_stream_bench"), 4).await?;
    let vault = roster_tests::test_vault();
    let commands = Commands::new(pool.clone(), vault.clone());
    let short = user(&commands, 10).await?;
    let long = user(&commands, 3000).await?;
    let mut n = 10_000;
    let (mut warm, mut cold) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..400 {
        for (i, id) in [short, long].into_iter().enumerate() {
            n += 1;
            let t = Instant::now();
            commands.user(id, update(n), meta(), Load::Existing).await?;
            warm[i].push(t.elapsed());
            if round % 8 == 0 {
                let fresh = Commands::new(pool.clone(), roster_tests::test_vault());
                n += 1;
                let t = Instant::now();
                fresh.user(id, update(n), meta(), Load::Existing).await?;
                cold[i].push(t.elapsed());
            }
        }
    }
    let [ws, wl] = warm.map(p50);
    let [cs, cl] = cold.map(p50);
    println!("| PATCH through the command runner | p50 ms at 10 events | p50 ms at 3,000 events | ratio (limit 1.5) |");
    println!("|---|---|---|---|");
    println!("| warm (aggregate cached) | {ws:.2} | {wl:.2} | {:.2} |", wl / ws);
    println!(
        "| cold (fresh process each time) | {cs:.2} | {cl:.2} | {:.2} |",
        cl / cs
    );
    Ok(())
}
