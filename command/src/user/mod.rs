//! The User aggregate: a user's public document plus the secrets only the
//! aggregate may see, and the rules that decide which events a command
//! produces. Pure: no I/O, no clock, no randomness (the command carries the
//! time, ids and already-hashed secrets). The one computation it delegates
//! is checking a security answer against its hash ([`UserServices`]),
//! CPU-heavy by design.
//!
//! One file of about 540 lines: the aggregate's commands, errors, state
//! and `decide` read together; its tests are in `tests.rs`, its merge patch
//! in `patch.rs`.

pub mod patch;

use crate::validate::{across, FieldError};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use roster_events::card::{
    AddressToUse, CardDoc, CardOrdered, CardProductDoc, CardState, CardTerminated, CardType, Issuer, Shipping,
};
use roster_events::user::{
    Account, AccountAdded, At, Kyc, KycUpdated, ParentLinked, ParentUnlinked, PasswordChanged, Profile, QuestionHash,
    StatusChanged, UserDoc, UserEnrolled, UserErased, UserEvent, UserStatus, UserUpdated, VerificationAttempt,
    VerificationFailed, VerificationQuestionsSet,
};
use roster_events::Timestamp;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

pub use roster_events::user::MAX_FAILED_VERIFICATIONS;

/// A command on one user, with who asks and when.
#[derive(Debug, Clone)]
pub struct UserCommand {
    /// The caller's company: a user of another company does not exist for it.
    pub company_id: String,
    pub at: Timestamp,
    /// `If-Match`: the version the caller last saw.
    pub expected_version: Option<u64>,
    pub action: UserAction,
}

#[derive(Debug, Clone)]
pub enum UserAction {
    Enroll(Box<EnrollUser>),
    Update(Box<UpdateUser>),
    SetParent(Option<Uuid>),
    SetQuestions(Vec<QuestionHash>),
    Verify {
        code: String,
        answer: crate::secret::Secret,
    },
    ChangeStatus {
        status: UserStatus,
        reason: Option<String>,
    },
    UpdateKyc(Kyc),
    AddAccount(Account),
    OrderCard(Box<OrderCard>),
    TerminateCard(TerminateCard),
    /// Forget the user (CONTRACT §3 "Erasure").
    Erase,
}

/// A card order: the product's details, and the last four digits of a PAN
/// the service generated (the PAN itself never reaches the aggregate).
#[derive(Debug, Clone)]
pub struct OrderCard {
    pub card_id: Uuid,
    pub product: CardProductDoc,
    pub address2use: AddressToUse,
    pub expedite: bool,
    pub last4: String,
}

#[derive(Debug, Clone)]
pub struct TerminateCard {
    pub last4: String,
    pub reason_code: String,
    pub reason: Option<String>,
    pub issuer: Issuer,
}

impl UserAction {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            UserAction::Enroll(_) => "EnrollUser",
            UserAction::Update(_) => "UpdateUser",
            UserAction::SetParent(Some(_)) => "LinkParent",
            UserAction::SetParent(None) => "UnlinkParent",
            UserAction::SetQuestions(_) => "SetVerificationQuestions",
            UserAction::Verify { .. } => "VerifyUser",
            UserAction::ChangeStatus { .. } => "ChangeStatus",
            UserAction::UpdateKyc(_) => "UpdateKyc",
            UserAction::AddAccount(_) => "AddAccount",
            UserAction::OrderCard(_) => "OrderCard",
            UserAction::TerminateCard(_) => "TerminateCard",
            UserAction::Erase => "EraseUser",
        }
    }
}

/// Enrollment with normalised values and secrets already hashed.
#[derive(Debug, Clone)]
pub struct EnrollUser {
    pub user_id: Uuid,
    pub profile: Profile,
    pub status: UserStatus,
    pub status_reason: Option<String>,
    pub kyc: Option<Kyc>,
    pub parent_user_id: Option<Uuid>,
    pub account: Option<Account>,
    pub password_hash: Option<String>,
    pub verification_questions: Vec<QuestionHash>,
}

/// An update: a merge patch of profile fields, each already valid on its
/// own; a new password hash; a parent change.
#[derive(Debug, Clone, Default)]
pub struct UpdateUser {
    pub patch: patch::ProfilePatch,
    pub password_hash: Option<String>,
    /// `Some(None)` unlinks.
    pub parent: Option<Option<Uuid>>,
}

/// Why the aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user already enrolled")]
    AlreadyEnrolled,
    #[error("a user cannot be its own parent")]
    SelfParent,
    #[error("stale If-Match")]
    PreconditionFailed,
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("a closed user cannot change")]
    Closed,
    #[error("verification is locked")]
    VerificationLocked,
    #[error("the user must be active")]
    NotActive,
    #[error("a physical card shipped to the user needs the user's address")]
    AddressRequired,
    /// A non-terminated card of the user already ends with these digits:
    /// the service draws another PAN.
    #[error("last four digits already in use")]
    Last4Taken,
    #[error("no such card")]
    CardNotFound,
    #[error("the card is already terminated")]
    CardAlreadyTerminated,
    /// The user already has an account with this id.
    #[error("the user already has this account")]
    AccountTaken,
    #[error("the user was erased")]
    Erased,
    #[error("the user has cards that are not terminated")]
    CardsNotTerminated,
}

/// Checks a secret against its hash, off the async executor.
pub trait UserServices: Send + Sync {
    fn verify_secret(
        &self,
        secret: crate::secret::Secret,
        hash: String,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The production service: Argon2id in `spawn_blocking`.
pub struct Argon2Services;

impl UserServices for Argon2Services {
    fn verify_secret(
        &self,
        secret: crate::secret::Secret,
        hash: String,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::secret::verify(&secret, &hash))
                .await
                .unwrap_or(false)
        })
    }
}

/// What only the aggregate knows: never rendered, projected or published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Secrets {
    password_hash: Option<String>,
    questions: Vec<QuestionHash>,
    failed_verifications: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    doc: Option<UserDoc>,
    secrets: Secrets,
    cards: Vec<CardDoc>,
    /// The company of a user that was erased: nothing else is left.
    #[serde(default)]
    erased: Option<String>,
}

impl User {
    /// The public document, once enrolled.
    pub fn doc(&self) -> Option<&UserDoc> {
        self.doc.as_ref()
    }

    pub fn card(&self, id: Uuid) -> Option<&CardDoc> {
        self.cards.iter().find(|c| c.id == id)
    }

    /// The company of the user, if it was erased.
    pub fn erased(&self) -> Option<&str> {
        self.erased.as_deref()
    }

    /// The caller's user, if it exists for the caller's company and the
    /// caller's `If-Match` (if any) is current. An erased user is gone for
    /// its company (410) and never existed for the others (404).
    fn existing(&self, cmd: &UserCommand) -> Result<&UserDoc, UserError> {
        if self.erased.as_deref() == Some(cmd.company_id.as_str()) {
            return Err(UserError::Erased);
        }
        let doc = self
            .doc
            .as_ref()
            .filter(|d| d.company_id == cmd.company_id)
            .ok_or(UserError::NotFound)?;
        match cmd.expected_version {
            Some(v) if v != doc.version => Err(UserError::PreconditionFailed),
            _ => Ok(doc),
        }
    }

    /// Decides which events a command produces. `answer_matched` is the
    /// result of checking a verification answer (see [`Aggregate::handle`]).
    pub fn decide(&self, cmd: UserCommand, answer_matched: bool) -> Result<Vec<UserEvent>, UserError> {
        let at = cmd.at;
        if let UserAction::Enroll(e) = cmd.action {
            return self.enroll(cmd.company_id, at, *e);
        }
        let doc = self.existing(&cmd)?;
        let mut events = Vec::new();
        match cmd.action {
            UserAction::Enroll(_) => unreachable!("handled above"),
            UserAction::Update(u) => {
                let profile = u.patch.apply(&doc.profile).map_err(UserError::Invalid)?;
                let email = profile.email.is_some();
                if let Some(broken) = across::password_needs_email(u.password_hash.is_some(), email)
                    .or_else(|| across::email_kept_for_password(email, self.secrets.password_hash.is_some()))
                {
                    return Err(UserError::Invalid(vec![broken]));
                }
                let changes = doc.profile.changes_to(&profile);
                if !changes.is_empty() {
                    events.push(UserEvent::UserUpdated(UserUpdated {
                        changes: Box::new(changes),
                        at,
                    }));
                }
                if let Some(password_hash) = u.password_hash {
                    events.push(UserEvent::PasswordChanged(PasswordChanged { password_hash, at }));
                }
                if let Some(parent) = u.parent {
                    events.extend(parent_change(doc, parent, at)?);
                }
            }
            UserAction::SetParent(parent) => events.extend(parent_change(doc, parent, at)?),
            UserAction::SetQuestions(questions) => {
                events.push(UserEvent::VerificationQuestionsSet(VerificationQuestionsSet {
                    questions,
                    at,
                }))
            }
            UserAction::Verify { code, .. } => {
                let attempt = self.verification(code, answer_matched, at)?;
                // The fifth consecutive failure locks verification.
                let locks = matches!(&attempt, UserEvent::VerificationFailed(f) if f.attempts_remaining == 0);
                events.push(attempt);
                if locks {
                    events.push(UserEvent::VerificationLocked(At { at }));
                }
            }
            UserAction::ChangeStatus { status, reason } => {
                if doc.status == UserStatus::Closed && status != UserStatus::Closed {
                    return Err(UserError::Closed);
                }
                if status != doc.status || reason != doc.status_reason {
                    events.push(UserEvent::StatusChanged(StatusChanged {
                        status,
                        previous_status: doc.status,
                        reason,
                        at,
                    }));
                }
            }
            UserAction::UpdateKyc(kyc) => {
                let current = doc.kyc.clone().unwrap_or(Kyc {
                    kyc_id: None,
                    status: None,
                });
                let kyc = Kyc {
                    kyc_id: kyc.kyc_id.or(current.kyc_id.clone()),
                    status: kyc.status.or(current.status),
                };
                if Some(&kyc) != doc.kyc.as_ref() {
                    events.push(UserEvent::KycUpdated(KycUpdated { kyc, at }));
                }
            }
            UserAction::AddAccount(account) => {
                if doc.accounts.iter().any(|a| a.account.account_id == account.account_id) {
                    return Err(UserError::AccountTaken);
                }
                events.push(UserEvent::AccountAdded(AccountAdded { account, at }));
            }
            UserAction::OrderCard(o) => events.push(self.order_card(doc, *o, at)?),
            UserAction::TerminateCard(t) => events.push(self.terminate_card(t, at)?),
            UserAction::Erase => {
                if self.cards.iter().any(|c| c.state != CardState::Terminated) {
                    return Err(UserError::CardsNotTerminated);
                }
                events.push(UserEvent::UserErased(UserErased {
                    user_id: doc.id,
                    company_id: doc.company_id.clone(),
                    erased_at: at,
                }));
            }
        }
        Ok(events)
    }

    fn enroll(&self, company_id: String, at: Timestamp, e: EnrollUser) -> Result<Vec<UserEvent>, UserError> {
        if self.doc.is_some() || self.erased.is_some() {
            return Err(UserError::AlreadyEnrolled);
        }
        if e.parent_user_id == Some(e.user_id) {
            return Err(UserError::SelfParent);
        }
        Ok(vec![UserEvent::UserEnrolled(Box::new(UserEnrolled {
            user_id: e.user_id,
            company_id,
            profile: e.profile,
            status: e.status,
            status_reason: e.status_reason,
            parent_user_id: e.parent_user_id,
            kyc: e.kyc,
            account: e.account,
            password_hash: e.password_hash,
            verification_questions: e.verification_questions,
            at,
        }))])
    }

    fn order_card(&self, doc: &UserDoc, o: OrderCard, at: Timestamp) -> Result<UserEvent, UserError> {
        if doc.status != UserStatus::Active {
            return Err(UserError::NotActive);
        }
        let shipping = match o.product.card_type {
            CardType::Virtual => None,
            CardType::Physical => Some(Shipping {
                address2use: o.address2use,
                expedite: o.expedite,
                address: match o.address2use {
                    AddressToUse::User => Some(doc.profile.address.clone().ok_or(UserError::AddressRequired)?),
                    AddressToUse::Business => None,
                },
            }),
        };
        let taken = self
            .cards
            .iter()
            .any(|c| c.state != CardState::Terminated && c.last4 == o.last4);
        if taken {
            return Err(UserError::Last4Taken);
        }
        Ok(UserEvent::CardOrdered(CardOrdered {
            card_id: o.card_id,
            card_product_id: o.product.id,
            last4: o.last4,
            card_type: o.product.card_type,
            issuer: o.product.issuer,
            shipping,
            at,
        }))
    }

    /// Terminates the user's live card with these last four digits and
    /// issuer; terminated is final.
    fn terminate_card(&self, t: TerminateCard, at: Timestamp) -> Result<UserEvent, UserError> {
        let matching: Vec<&CardDoc> = self
            .cards
            .iter()
            .filter(|c| c.last4 == t.last4 && c.issuer == t.issuer)
            .collect();
        let card = match matching.iter().find(|c| c.state != CardState::Terminated) {
            Some(c) => c,
            None if matching.is_empty() => return Err(UserError::CardNotFound),
            None => return Err(UserError::CardAlreadyTerminated),
        };
        Ok(UserEvent::CardTerminated(CardTerminated {
            card_id: card.id,
            last4: t.last4,
            reason_code: t.reason_code,
            reason: t.reason,
            issuer: t.issuer,
            at,
        }))
    }

    /// A verification attempt: locked users are refused outright; an unknown
    /// code counts as a wrong answer; the fifth consecutive failure locks.
    fn verification(&self, code: String, matched: bool, at: Timestamp) -> Result<UserEvent, UserError> {
        let locked = self
            .doc
            .as_ref()
            .and_then(|d| d.verification.as_ref())
            .is_some_and(|v| v.locked);
        if locked {
            return Err(UserError::VerificationLocked);
        }
        let known_question = self.secrets.questions.iter().any(|q| q.code == code);
        if known_question && matched {
            return Ok(UserEvent::VerificationSucceeded(VerificationAttempt { code, at }));
        }
        let failures = self.secrets.failed_verifications + 1;
        Ok(UserEvent::VerificationFailed(VerificationFailed {
            code,
            known_question,
            attempts_remaining: MAX_FAILED_VERIFICATIONS.saturating_sub(failures),
            at,
        }))
    }

    /// The stored hash of a question's answer, for the service to check.
    fn answer_hash(&self, code: &str) -> Option<String> {
        self.secrets
            .questions
            .iter()
            .find(|q| q.code == code)
            .map(|q| q.answer_hash.clone())
    }
}

fn parent_change(doc: &UserDoc, parent: Option<Uuid>, at: Timestamp) -> Result<Option<UserEvent>, UserError> {
    if parent == doc.parent_user_id {
        return Ok(None);
    }
    Ok(Some(match (parent, doc.parent_user_id) {
        (Some(p), _) if p == doc.id => return Err(UserError::SelfParent),
        (Some(parent_user_id), previous_parent_user_id) => UserEvent::ParentLinked(ParentLinked {
            parent_user_id,
            previous_parent_user_id,
            at,
        }),
        (None, Some(previous_parent_user_id)) => UserEvent::ParentUnlinked(ParentUnlinked {
            previous_parent_user_id,
            at,
        }),
        (None, None) => return Ok(None),
    }))
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = Arc<dyn UserServices>;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let mut matched = false;
        if let UserAction::Verify { code, answer } = &command.action {
            let locked = self
                .doc
                .as_ref()
                .and_then(|d| d.verification.as_ref())
                .is_some_and(|v| v.locked);
            if let (false, Some(hash)) = (locked, self.answer_hash(code)) {
                matched = services.verify_secret(answer.clone(), hash).await;
            }
        }
        for event in self.decide(command, matched)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match &event {
            UserEvent::UserEnrolled(e) => {
                self.secrets.password_hash = e.password_hash.clone();
                self.secrets.questions = e.verification_questions.clone();
            }
            UserEvent::PasswordChanged(e) => self.secrets.password_hash = Some(e.password_hash.clone()),
            UserEvent::VerificationQuestionsSet(e) => {
                self.secrets.questions = e.questions.clone();
                self.secrets.failed_verifications = 0;
            }
            UserEvent::VerificationSucceeded(_) => self.secrets.failed_verifications = 0,
            UserEvent::VerificationFailed(_) => self.secrets.failed_verifications += 1,
            UserEvent::CardOrdered(e) => {
                let owner = self.doc.as_ref().map(|d| d.id).unwrap_or_default();
                self.cards.push(CardDoc::ordered(owner, e));
            }
            UserEvent::CardTerminated(e) => {
                if let Some(card) = self.cards.iter_mut().find(|c| c.id == e.card_id) {
                    card.terminate(e);
                }
            }
            UserEvent::UserErased(e) => {
                *self = User {
                    erased: Some(e.company_id.clone()),
                    ..User::default()
                };
                return;
            }
            _ => {}
        }
        self.doc = UserDoc::fold(self.doc.take(), &event);
    }
}

#[cfg(test)]
mod tests;
