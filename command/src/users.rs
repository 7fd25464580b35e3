//! The user use cases, one function each: what every door (the `/v1`
//! routes today; the seeds' routes, signed calls and webhooks tomorrow)
//! calls with typed values whose every field already obeys its rule
//! (`validate::field`), secrets still in plain text. Below this: hashing
//! the secrets off the executor, running the command (load, decide, append,
//! retry) and its outcome. A door parses its own wire format into these
//! values and maps the outcome back; nothing else.

use crate::append::Meta;
use crate::runner::{CommandError, Commands, Committed, Load};
use crate::secret::{self, Secret};
use crate::user::patch::ProfilePatch;
use crate::user::{EnrollUser, UpdateUser, UserAction, UserCommand};
use roster_events::user::{Account, Kyc, Profile, QuestionHash, UserDoc, UserErased, UserEvent, UserStatus};
use uuid::Uuid;

/// A user's document as a command left it, its version and its events.
pub type Outcome = Committed<UserDoc, UserEvent>;

/// A new user: every value normalised; secrets in plain text until
/// [`enroll`] hashes them.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub profile: Profile,
    pub status: UserStatus,
    pub status_reason: Option<String>,
    pub kyc: Option<Kyc>,
    pub password: Option<Secret>,
    pub parent_user_id: Option<Uuid>,
    pub verification_questions: Vec<Question>,
    pub account: Option<Account>,
}

/// A security question with its normalised answer, not yet hashed.
#[derive(Debug, Clone)]
pub struct Question {
    pub code: String,
    pub answer: Secret,
}

/// A change of an existing user: a merge patch of its profile, a new
/// password, a new parent (`Some(None)`: none).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub patch: ProfilePatch,
    pub password: Option<Secret>,
    pub parent: Option<Option<Uuid>>,
}

/// An existing user, and the version the caller expects it at (`If-Match`).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub id: Uuid,
    pub expected_version: Option<u64>,
}

/// Enrolls a user under a new id.
pub async fn enroll(commands: &Commands, meta: Meta, e: Enrollment) -> Result<Outcome, CommandError> {
    let mut secrets: Vec<Secret> = e.verification_questions.iter().map(|q| q.answer.clone()).collect();
    secrets.extend(e.password.clone());
    let mut hashes = hash_all(secrets).await?;
    let password_hash = e.password.is_some().then(|| hashes.pop()).flatten();
    let user_id = Uuid::now_v7();
    let command = UserCommand {
        company_id: meta.company_id.clone(),
        at: meta.at,
        expected_version: None,
        action: UserAction::Enroll(Box::new(EnrollUser {
            user_id,
            profile: e.profile,
            status: e.status,
            status_reason: e.status_reason,
            kyc: e.kyc,
            parent_user_id: e.parent_user_id,
            account: e.account,
            password_hash,
            verification_questions: questions_hashed(e.verification_questions, hashes),
        })),
    };
    commands.user(user_id, command, meta, Load::Fresh).await
}

/// Changes a user's profile, password or parent.
pub async fn change(commands: &Commands, meta: Meta, user: Target, change: Change) -> Result<Outcome, CommandError> {
    let password_hash = match change.password {
        Some(p) => hash_all(vec![p]).await?.pop(),
        None => None,
    };
    let update = UpdateUser {
        patch: change.patch,
        password_hash,
        parent: change.parent,
    };
    act(commands, meta, user, UserAction::Update(Box::new(update))).await
}

/// Replaces a user's security questions (and so resets its failures and
/// lock).
pub async fn set_questions(
    commands: &Commands,
    meta: Meta,
    user: Target,
    questions: Vec<Question>,
) -> Result<Outcome, CommandError> {
    let hashes = hash_all(questions.iter().map(|q| q.answer.clone()).collect()).await?;
    let action = UserAction::SetQuestions(questions_hashed(questions, hashes));
    act(commands, meta, user, action).await
}

/// Runs a command that carries no secret to hash (a parent link, a
/// verification, a status, KYC, an account).
pub async fn act(commands: &Commands, meta: Meta, user: Target, action: UserAction) -> Result<Outcome, CommandError> {
    commands
        .user(user.id, command(&meta, user, action), meta, Load::Existing)
        .await
}

/// Erases a user (CONTRACT §3 "Erasure").
pub async fn erase(
    commands: &Commands,
    meta: Meta,
    user: Target,
) -> Result<Committed<UserErased, UserEvent>, CommandError> {
    commands
        .erase_user(user.id, command(&meta, user, UserAction::Erase), meta)
        .await
}

fn command(meta: &Meta, user: Target, action: UserAction) -> UserCommand {
    UserCommand {
        company_id: meta.company_id.clone(),
        at: meta.at,
        expected_version: user.expected_version,
        action,
    }
}

fn questions_hashed(questions: Vec<Question>, hashes: Vec<String>) -> Vec<QuestionHash> {
    questions
        .into_iter()
        .zip(hashes)
        .map(|(q, answer_hash)| QuestionHash {
            code: q.code,
            answer_hash,
        })
        .collect()
}

/// Hashes secrets off the async executor: Argon2id is CPU-bound by design.
async fn hash_all(secrets: Vec<Secret>) -> Result<Vec<String>, CommandError> {
    if secrets.is_empty() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || secrets.iter().map(secret::hash).collect())
        .await
        .map_err(|e| CommandError::Internal(Box::new(e)))
}
