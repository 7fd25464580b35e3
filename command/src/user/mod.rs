//! The User aggregate: a user's public document plus the secrets only the
//! aggregate may see, and the rules that decide which events a command
//! produces. Pure: no I/O, no clock, no randomness (the command carries
//! the time, ids and already-hashed secrets).

pub mod input;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use roster_events::user::{
    Account, Kyc, Profile, QuestionHash, UserDoc, UserEnrolled, UserEvent, UserStatus,
};
use roster_events::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A command on one user, with who asks and when.
#[derive(Debug, Clone)]
pub struct UserCommand {
    /// The caller's company: a user of another company does not exist for it.
    pub company_id: String,
    pub at: Timestamp,
    pub action: UserAction,
}

#[derive(Debug, Clone)]
pub enum UserAction {
    Enroll(Box<EnrollUser>),
}

impl UserAction {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            UserAction::Enroll(_) => "EnrollUser",
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

/// Why the aggregate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user already enrolled")]
    AlreadyEnrolled,
    #[error("a user cannot be its own parent")]
    SelfParent,
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
}

impl User {
    /// The public document, once enrolled.
    pub fn doc(&self) -> Option<&UserDoc> {
        self.doc.as_ref()
    }

    /// Decides which events a command produces.
    pub fn decide(&self, cmd: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match cmd.action {
            UserAction::Enroll(e) => {
                if self.doc.is_some() {
                    return Err(UserError::AlreadyEnrolled);
                }
                if e.parent_user_id == Some(e.user_id) {
                    return Err(UserError::SelfParent);
                }
                Ok(vec![UserEvent::UserEnrolled(UserEnrolled {
                    user_id: e.user_id,
                    company_id: cmd.company_id,
                    profile: e.profile,
                    status: e.status,
                    status_reason: e.status_reason,
                    parent_user_id: e.parent_user_id,
                    kyc: e.kyc,
                    account: e.account,
                    password_hash: e.password_hash,
                    verification_questions: e.verification_questions,
                    at: cmd.at,
                })])
            }
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
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
        }
        self.doc = UserDoc::fold(self.doc.take(), &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<User>;

    fn at() -> Timestamp {
        Timestamp::from(chrono::DateTime::UNIX_EPOCH)
    }

    fn enroll(user_id: Uuid) -> EnrollUser {
        EnrollUser {
            user_id,
            profile: Profile {
                email: Some("john@example.com".into()),
                first_name: Some("John".into()),
                ..Profile::default()
            },
            status: UserStatus::Inactive,
            status_reason: None,
            kyc: None,
            parent_user_id: None,
            account: None,
            password_hash: Some("$argon2id$hash".into()),
            verification_questions: vec![],
        }
    }

    fn cmd(action: UserAction) -> UserCommand {
        UserCommand {
            company_id: "acme".into(),
            at: at(),
            action,
        }
    }

    fn enrolled(user_id: Uuid) -> UserEvent {
        User::default()
            .decide(cmd(UserAction::Enroll(Box::new(enroll(user_id)))))
            .expect("enrolls")
            .remove(0)
    }

    #[test]
    fn enrolling_a_new_user_records_every_field() {
        let id = Uuid::now_v7();
        let expected = UserEvent::UserEnrolled(UserEnrolled {
            user_id: id,
            company_id: "acme".into(),
            profile: enroll(id).profile,
            status: UserStatus::Inactive,
            status_reason: None,
            parent_user_id: None,
            kyc: None,
            account: None,
            password_hash: Some("$argon2id$hash".into()),
            verification_questions: vec![],
            at: at(),
        });
        Given::with(())
            .given_no_previous_events()
            .when(cmd(UserAction::Enroll(Box::new(enroll(id)))))
            .then_expect_events(vec![expected]);
    }

    #[test]
    fn enrolling_twice_is_refused() {
        let id = Uuid::now_v7();
        Given::with(())
            .given(vec![enrolled(id)])
            .when(cmd(UserAction::Enroll(Box::new(enroll(id)))))
            .then_expect_error(UserError::AlreadyEnrolled);
    }

    #[test]
    fn a_user_cannot_be_enrolled_as_its_own_child() {
        let id = Uuid::now_v7();
        let mut e = enroll(id);
        e.parent_user_id = Some(id);
        Given::with(())
            .given_no_previous_events()
            .when(cmd(UserAction::Enroll(Box::new(e))))
            .then_expect_error(UserError::SelfParent);
    }

    #[test]
    fn the_document_shows_login_but_never_the_hash() {
        let id = Uuid::now_v7();
        let mut user = User::default();
        user.apply(enrolled(id));
        let doc = user.doc().expect("enrolled");
        assert_eq!(doc.version, 1);
        assert_eq!(
            doc.login.as_ref().and_then(|l| l.email.as_deref()),
            Some("john@example.com")
        );
        let json = serde_json::to_string(doc).expect("serializes");
        assert!(!json.contains("argon2"), "{json}");
    }
}
