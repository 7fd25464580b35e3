//! The write side's aggregate cache is only a starting point: a command
//! decides on the stream as it is in the store, whatever other processes
//! appended meanwhile.

use roster_command::runner::Load;
use roster_command::user::patch::ProfilePatch;
use roster_command::user::{EnrollUser, UpdateUser, UserAction, UserCommand, UserError};
use roster_command::{CommandError, Commands, Meta};
use roster_events::user::{Profile, UserStatus};
use roster_events::Timestamp;
use roster_vault::Vault;
use sqlx::PgPool;
use std::sync::Arc;
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

fn command(expected_version: Option<u64>, action: UserAction) -> UserCommand {
    UserCommand {
        company_id: "acme".into(),
        at: Timestamp::now(),
        expected_version,
        action,
    }
}

fn enroll(user_id: Uuid, email: &str) -> UserAction {
    UserAction::Enroll(Box::new(EnrollUser {
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
    }))
}

fn rename(last_name: &str) -> UserAction {
    let mut fields = serde_json::Map::new();
    fields.insert("last_name".into(), last_name.into());
    let patch = serde_json::from_value::<ProfilePatch>(serde_json::Value::Object(fields))
        .expect("a patch")
        .checked()
        .expect("a valid patch");
    UserAction::Update(Box::new(UpdateUser {
        patch,
        ..UpdateUser::default()
    }))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cached_aggregate_catches_up_with_other_processes(pool: PgPool) {
    let vault = Arc::new(Vault::ephemeral());
    // Two processes: each its own `Commands` and cache.
    let (a, b) = (
        Commands::new(pool.clone(), vault.clone()),
        Commands::new(pool.clone(), vault.clone()),
    );
    let id = Uuid::now_v7();
    a.user(id, command(None, enroll(id, "cache@example.com")), meta(), Load::Fresh)
        .await
        .expect("enrolled");
    let r = a
        .user(id, command(Some(1), rename("One")), meta(), Load::Existing)
        .await;
    assert_eq!(r.expect("a updates").version, 2);
    // Process b appends version 3; a's cache still holds version 2.
    let r = b
        .user(id, command(Some(2), rename("Two")), meta(), Load::Existing)
        .await;
    assert_eq!(r.expect("b updates").version, 3);
    // a decides on version 3: a stale If-Match is refused, a current one passes.
    let stale = a
        .user(id, command(Some(2), rename("Stale")), meta(), Load::Existing)
        .await;
    assert!(
        matches!(stale, Err(CommandError::User(UserError::PreconditionFailed))),
        "{stale:?}"
    );
    let r = a
        .user(id, command(Some(3), rename("Three")), meta(), Load::Existing)
        .await
        .expect("a updates on the current version");
    assert_eq!((r.version, r.doc.profile.last_name.as_deref()), (4, Some("Three")));
    assert_eq!(r.doc.profile.email.as_deref(), Some("cache@example.com"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cold_load_starts_from_a_snapshot_and_ignores_an_unreadable_one(pool: PgPool) {
    let vault = Arc::new(Vault::ephemeral());
    let a = Commands::new(pool.clone(), vault.clone());
    let id = Uuid::now_v7();
    a.user(id, command(None, enroll(id, "snap@example.com")), meta(), Load::Fresh)
        .await
        .expect("enrolled");
    for n in 2..=150 {
        a.user(id, command(None, rename(&format!("L{n}"))), meta(), Load::Existing)
            .await
            .expect("updated");
    }
    // A fresh process reads the whole stream once, and leaves a snapshot.
    let cold = Commands::new(pool.clone(), vault.clone());
    let r = cold
        .user(id, command(Some(150), rename("Cold")), meta(), Load::Existing)
        .await
        .expect("cold update");
    assert_eq!(r.version, 151);
    let mut snapshot = None;
    for _ in 0..100 {
        snapshot = sqlx::query_scalar::<_, i64>("SELECT last_sequence FROM snapshots WHERE aggregate_id = $1")
            .bind(id.to_string())
            .fetch_optional(&pool)
            .await
            .expect("snapshot row");
        if snapshot.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(snapshot, Some(150), "a snapshot at the sequence the load reached");
    // The next fresh process starts from it and applies the event after it.
    let r = Commands::new(pool.clone(), vault.clone())
        .user(id, command(Some(151), rename("Warm")), meta(), Load::Existing)
        .await
        .expect("update from the snapshot");
    assert_eq!((r.version, r.doc.profile.last_name.as_deref()), (152, Some("Warm")));
    // A snapshot this code cannot read is ignored: the stream decides.
    sqlx::query("UPDATE snapshots SET payload = '{\"shape\": \"of another version\"}' WHERE aggregate_id = $1")
        .bind(id.to_string())
        .execute(&pool)
        .await
        .expect("snapshot spoiled");
    let r = Commands::new(pool.clone(), vault.clone())
        .user(id, command(Some(152), rename("Again")), meta(), Load::Existing)
        .await
        .expect("update from the stream");
    assert_eq!(
        (r.version, r.doc.profile.email.as_deref()),
        (153, Some("snap@example.com"))
    );
}

/// A kept aggregate is decided on without a read; what appends nothing (a
/// no-op, a rejection) cannot conflict, so it is decided again on the
/// stream as stored.
#[sqlx::test(migrations = "../migrations")]
async fn a_no_op_on_a_stale_aggregate_is_decided_again_on_the_store(pool: PgPool) {
    let vault = Arc::new(Vault::ephemeral());
    let (a, b) = (
        Commands::new(pool.clone(), vault.clone()),
        Commands::new(pool.clone(), vault.clone()),
    );
    let id = Uuid::now_v7();
    a.user(id, command(None, enroll(id, "noop@example.com")), meta(), Load::Fresh)
        .await
        .expect("enrolled");
    a.user(id, command(None, rename("One")), meta(), Load::Existing)
        .await
        .expect("a renames");
    b.user(id, command(None, rename("Two")), meta(), Load::Existing)
        .await
        .expect("b renames");
    // a still keeps "One": renaming to "One" looks like a no-op to it.
    let r = a
        .user(id, command(None, rename("One")), meta(), Load::Existing)
        .await
        .expect("a renames back");
    assert_eq!((r.version, r.doc.profile.last_name.as_deref()), (4, Some("One")));
    assert_eq!(r.events.len(), 1, "the change was appended, not skipped");
}
