//! Given/when/then tests of the User aggregate, without a database.

use super::patch::ProfilePatch;
use super::*;
use crate::secret::Secret;
use cqrs_es::test::TestFramework;
use roster_events::user::{KycStatus, ProfileChanges, VerificationAttempt};
use serde_json::json;

/// "Hashes" are `hash:<answer>`, so tests stay fast and readable.
struct FakeHashes;

impl UserServices for FakeHashes {
    fn verify_secret(&self, secret: Secret, hash: String) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move { hash == format!("hash:{}", secret.expose()) })
    }
}

fn given(events: Vec<UserEvent>) -> cqrs_es::test::AggregateTestExecutor<User> {
    TestFramework::<User>::with(Arc::new(FakeHashes) as Arc<dyn UserServices>).given(events)
}

fn at() -> Timestamp {
    Timestamp::from(chrono::DateTime::UNIX_EPOCH)
}

fn id() -> Uuid {
    Uuid::from_u128(7)
}

fn enroll() -> EnrollUser {
    EnrollUser {
        user_id: id(),
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
        password_hash: Some("hash:password".into()),
        verification_questions: vec![QuestionHash {
            code: "PET".into(),
            answer_hash: "hash:rex".into(),
        }],
    }
}

fn cmd(action: UserAction) -> UserCommand {
    UserCommand {
        company_id: "acme".into(),
        at: at(),
        expected_version: None,
        action,
    }
}

fn enrolled() -> UserEvent {
    User::default()
        .decide(cmd(UserAction::Enroll(Box::new(enroll()))), false)
        .expect("enrolls")
        .remove(0)
}

fn update(patch: serde_json::Value) -> UserAction {
    UserAction::Update(Box::new(UpdateUser {
        patch: serde_json::from_value::<ProfilePatch>(patch)
            .expect("a patch")
            .checked()
            .expect("a valid patch"),
        ..UpdateUser::default()
    }))
}

fn verify(code: &str, answer: &str) -> UserAction {
    UserAction::Verify {
        code: code.into(),
        answer: Secret::new(answer),
    }
}

fn failed(code: &str, known_question: bool, attempts_remaining: u32) -> UserEvent {
    UserEvent::VerificationFailed(VerificationFailed {
        code: code.into(),
        known_question,
        attempts_remaining,
        at: at(),
    })
}

#[test]
fn enrolling_records_every_field() {
    let e = enroll();
    given(vec![])
        .when(cmd(UserAction::Enroll(Box::new(e.clone()))))
        .then_expect_events(vec![UserEvent::UserEnrolled(Box::new(UserEnrolled {
            user_id: e.user_id,
            company_id: "acme".into(),
            profile: e.profile,
            status: UserStatus::Inactive,
            status_reason: None,
            parent_user_id: None,
            kyc: None,
            account: None,
            password_hash: e.password_hash,
            verification_questions: e.verification_questions,
            at: at(),
        }))]);
}

#[test]
fn enrolling_twice_or_as_own_child_is_refused() {
    given(vec![enrolled()])
        .when(cmd(UserAction::Enroll(Box::new(enroll()))))
        .then_expect_error(UserError::AlreadyEnrolled);
    let mut e = enroll();
    e.parent_user_id = Some(e.user_id);
    given(vec![])
        .when(cmd(UserAction::Enroll(Box::new(e))))
        .then_expect_error(UserError::SelfParent);
}

#[test]
fn another_company_or_no_enrollment_is_not_found() {
    given(vec![])
        .when(cmd(update(json!({"first_name": "X"}))))
        .then_expect_error(UserError::NotFound);
    let mut c = cmd(update(json!({"first_name": "X"})));
    c.company_id = "globex".into();
    given(vec![enrolled()]).when(c).then_expect_error(UserError::NotFound);
}

#[test]
fn an_update_records_only_what_changed() {
    let changes = ProfileChanges {
        last_name: Some(Some("Doe".into())),
        first_name: Some(None),
        ..ProfileChanges::default()
    };
    given(vec![enrolled()])
        .when(cmd(update(
            json!({"first_name": null, "last_name": "Doe", "email": "john@example.com"}),
        )))
        .then_expect_events(vec![UserEvent::UserUpdated(UserUpdated {
            changes: Box::new(changes),
            at: at(),
        })]);
}

#[test]
fn a_no_op_update_appends_nothing() {
    given(vec![enrolled()])
        .when(cmd(update(json!({"first_name": "John"}))))
        .then_expect_events(vec![]);
}

#[test]
fn updates_keep_an_identifier_and_obey_if_match() {
    // Each field's own rule is checked where the patch is made (see
    // `patch::tests`); the aggregate checks what spans fields.
    let result = given(vec![enrolled()])
        .when(cmd(update(json!({"email": null}))))
        .inspect_result();
    assert!(
        matches!(result, Err(UserError::Invalid(e)) if e[0].field == "email"),
        "keeps an identifier"
    );
    let mut c = cmd(update(json!({"first_name": "Jack"})));
    c.expected_version = Some(2);
    given(vec![enrolled()])
        .when(c)
        .then_expect_error(UserError::PreconditionFailed);
}

#[test]
fn parents_link_unlink_and_never_self() {
    let parent = Uuid::from_u128(9);
    let linked = UserEvent::ParentLinked(ParentLinked {
        parent_user_id: parent,
        previous_parent_user_id: None,
        at: at(),
    });
    given(vec![enrolled()])
        .when(cmd(UserAction::SetParent(Some(parent))))
        .then_expect_events(vec![linked.clone()]);
    given(vec![enrolled(), linked.clone()])
        .when(cmd(UserAction::SetParent(Some(parent))))
        .then_expect_events(vec![]);
    given(vec![enrolled(), linked])
        .when(cmd(UserAction::SetParent(None)))
        .then_expect_events(vec![UserEvent::ParentUnlinked(ParentUnlinked {
            previous_parent_user_id: parent,
            at: at(),
        })]);
    given(vec![enrolled()])
        .when(cmd(UserAction::SetParent(Some(id()))))
        .then_expect_error(UserError::SelfParent);
}

#[test]
fn a_right_answer_verifies_and_a_wrong_one_counts_down() {
    given(vec![enrolled()])
        .when(cmd(verify("PET", "rex")))
        .then_expect_events(vec![UserEvent::VerificationSucceeded(VerificationAttempt {
            code: "PET".into(),
            at: at(),
        })]);
    given(vec![enrolled(), failed("PET", true, 4)])
        .when(cmd(verify("PET", "tom")))
        .then_expect_events(vec![failed("PET", true, 3)]);
    given(vec![enrolled()])
        .when(cmd(verify("SCHOOL", "rex")))
        .then_expect_events(vec![failed("SCHOOL", false, 4)]);
}

/// The lock is decided with the failure that causes it (`decide`, not only
/// `handle`).
#[test]
fn decide_locks_on_the_fifth_failure() {
    let mut user = User::default();
    user.apply(enrolled());
    for i in 0..4 {
        user.apply(failed("PET", true, 4 - i));
    }
    let events = user.decide(cmd(verify("PET", "tom")), false).expect("decided");
    assert_eq!(
        events,
        vec![failed("PET", true, 0), UserEvent::VerificationLocked(At { at: at() })]
    );
}

#[test]
fn the_fifth_failure_locks_and_then_even_a_right_answer_is_refused() {
    let four: Vec<UserEvent> = (0..4).map(|i| failed("PET", true, 4 - i)).collect();
    let mut history = vec![enrolled()];
    history.extend(four);
    given(history.clone())
        .when(cmd(verify("PET", "tom")))
        .then_expect_events(vec![
            failed("PET", true, 0),
            UserEvent::VerificationLocked(At { at: at() }),
        ]);
    history.push(failed("PET", true, 0));
    history.push(UserEvent::VerificationLocked(At { at: at() }));
    given(history.clone())
        .when(cmd(verify("PET", "rex")))
        .then_expect_error(UserError::VerificationLocked);
    // Setting the questions again unlocks.
    let reset = UserEvent::VerificationQuestionsSet(VerificationQuestionsSet {
        questions: vec![QuestionHash {
            code: "PET".into(),
            answer_hash: "hash:rex".into(),
        }],
        at: at(),
    });
    history.push(reset);
    given(history)
        .when(cmd(verify("PET", "tom")))
        .then_expect_events(vec![failed("PET", true, 4)]);
}

#[test]
fn a_success_resets_the_count() {
    let success = UserEvent::VerificationSucceeded(VerificationAttempt {
        code: "PET".into(),
        at: at(),
    });
    given(vec![
        enrolled(),
        failed("PET", true, 4),
        failed("PET", true, 3),
        success,
    ])
    .when(cmd(verify("PET", "tom")))
    .then_expect_events(vec![failed("PET", true, 4)]);
}

#[test]
fn closed_is_final() {
    let closed = UserEvent::StatusChanged(StatusChanged {
        status: UserStatus::Closed,
        previous_status: UserStatus::Inactive,
        reason: None,
        at: at(),
    });
    given(vec![enrolled()])
        .when(cmd(UserAction::ChangeStatus {
            status: UserStatus::Closed,
            reason: None,
        }))
        .then_expect_events(vec![closed.clone()]);
    given(vec![enrolled(), closed])
        .when(cmd(UserAction::ChangeStatus {
            status: UserStatus::Active,
            reason: None,
        }))
        .then_expect_error(UserError::Closed);
}

#[test]
fn kyc_merges_and_accounts_append() {
    given(vec![enrolled()])
        .when(cmd(UserAction::UpdateKyc(Kyc {
            kyc_id: None,
            status: Some(KycStatus::Pending),
        })))
        .then_expect_events(vec![UserEvent::KycUpdated(KycUpdated {
            kyc: Kyc {
                kyc_id: None,
                status: Some(KycStatus::Pending),
            },
            at: at(),
        })]);
    let account = Account {
        account_id: "A1".into(),
        account_id_type: "T".into(),
        status: "GOOD_STANDING".into(),
        product_code: "P".into(),
        program_identifier: "G".into(),
    };
    given(vec![enrolled()])
        .when(cmd(UserAction::AddAccount(account.clone())))
        .then_expect_events(vec![UserEvent::AccountAdded(AccountAdded {
            account: account.clone(),
            at: at(),
        })]);
}

#[test]
fn an_account_the_user_already_has_is_refused() {
    let account = Account {
        account_id: "A1".into(),
        account_id_type: "T".into(),
        status: "GOOD_STANDING".into(),
        product_code: "P".into(),
        program_identifier: "G".into(),
    };
    let added = UserEvent::AccountAdded(AccountAdded {
        account: account.clone(),
        at: at(),
    });
    given(vec![enrolled(), added])
        .when(cmd(UserAction::AddAccount(Account {
            status: "OTHER".into(),
            ..account
        })))
        .then_expect_error(UserError::AccountTaken);
}

#[test]
fn the_document_follows_and_never_holds_a_secret() {
    let mut user = User::default();
    user.apply(enrolled());
    user.apply(UserEvent::PasswordChanged(PasswordChanged {
        password_hash: "hash:new".into(),
        at: at(),
    }));
    let doc = user.doc().expect("enrolled");
    assert_eq!(doc.version, 2);
    assert_eq!(
        doc.login.as_ref().and_then(|l| l.email.as_deref()),
        Some("john@example.com")
    );
    let json = serde_json::to_string(doc).expect("serializes");
    assert!(!json.contains("hash:"), "{json}");
}

mod cards {
    use super::*;
    use roster_events::card::{AddressToUse, CardOrdered, CardProductDoc, CardTerminated, CardType, Issuer, Shipping};
    use roster_events::user::{Address, UserUpdated};

    fn product(card_type: CardType) -> CardProductDoc {
        CardProductDoc {
            id: Uuid::from_u128(50),
            name: "Rewards".into(),
            card_type,
            issuer: Issuer::Marqeta,
            bin: None,
            default: true,
            created_at: at(),
        }
    }

    fn active() -> UserEvent {
        UserEvent::StatusChanged(StatusChanged {
            status: UserStatus::Active,
            previous_status: UserStatus::Inactive,
            reason: None,
            at: at(),
        })
    }

    fn address() -> Address {
        Address {
            line1: "1 Main St".into(),
            line2: None,
            city: "Dubai".into(),
            region: None,
            postal_code: None,
            country: "AE".into(),
        }
    }

    fn with_address() -> UserEvent {
        let changes = ProfileChanges {
            address: Some(Some(address())),
            ..ProfileChanges::default()
        };
        UserEvent::UserUpdated(UserUpdated {
            changes: Box::new(changes),
            at: at(),
        })
    }

    fn order(n: u128, card_type: CardType, last4: &str) -> UserAction {
        UserAction::OrderCard(Box::new(OrderCard {
            card_id: Uuid::from_u128(n),
            product: product(card_type),
            address2use: AddressToUse::User,
            expedite: false,
            last4: last4.into(),
        }))
    }

    fn ordered(n: u128, card_type: CardType, last4: &str) -> UserEvent {
        UserEvent::CardOrdered(CardOrdered {
            card_id: Uuid::from_u128(n),
            card_product_id: Uuid::from_u128(50),
            last4: last4.into(),
            card_type,
            issuer: Issuer::Marqeta,
            shipping: match card_type {
                CardType::Virtual => None,
                CardType::Physical => Some(Shipping {
                    address2use: AddressToUse::User,
                    expedite: false,
                    address: Some(address()),
                }),
            },
            at: at(),
        })
    }

    fn terminate(last4: &str, issuer: Issuer) -> UserAction {
        UserAction::TerminateCard(TerminateCard {
            last4: last4.into(),
            reason_code: "LOST".into(),
            reason: None,
            issuer,
        })
    }

    fn terminated(n: u128, last4: &str) -> UserEvent {
        UserEvent::CardTerminated(CardTerminated {
            card_id: Uuid::from_u128(n),
            last4: last4.into(),
            reason_code: "LOST".into(),
            reason: None,
            issuer: Issuer::Marqeta,
            at: at(),
        })
    }

    #[test]
    fn only_active_users_get_cards() {
        given(vec![enrolled()])
            .when(cmd(order(1, CardType::Virtual, "1234")))
            .then_expect_error(UserError::NotActive);
        given(vec![enrolled(), active()])
            .when(cmd(order(1, CardType::Virtual, "1234")))
            .then_expect_events(vec![ordered(1, CardType::Virtual, "1234")]);
    }

    #[test]
    fn a_physical_card_shipped_to_the_user_needs_an_address() {
        given(vec![enrolled(), active()])
            .when(cmd(order(1, CardType::Physical, "1234")))
            .then_expect_error(UserError::AddressRequired);
        given(vec![enrolled(), active(), with_address()])
            .when(cmd(order(1, CardType::Physical, "1234")))
            .then_expect_events(vec![ordered(1, CardType::Physical, "1234")]);
    }

    #[test]
    fn last_four_digits_are_unique_among_live_cards() {
        given(vec![enrolled(), active(), ordered(1, CardType::Virtual, "1234")])
            .when(cmd(order(2, CardType::Virtual, "1234")))
            .then_expect_error(UserError::Last4Taken);
        given(vec![
            enrolled(),
            active(),
            ordered(1, CardType::Virtual, "1234"),
            terminated(1, "1234"),
        ])
        .when(cmd(order(2, CardType::Virtual, "1234")))
        .then_expect_events(vec![ordered(2, CardType::Virtual, "1234")]);
    }

    #[test]
    fn termination_finds_the_live_card_and_is_final() {
        let history = vec![enrolled(), active(), ordered(1, CardType::Virtual, "1234")];
        given(history.clone())
            .when(cmd(terminate("1234", Issuer::Marqeta)))
            .then_expect_events(vec![terminated(1, "1234")]);
        given(history.clone())
            .when(cmd(terminate("9999", Issuer::Marqeta)))
            .then_expect_error(UserError::CardNotFound);
        given(history.clone())
            .when(cmd(terminate("1234", Issuer::Dipocket)))
            .then_expect_error(UserError::CardNotFound);
        let mut done = history;
        done.push(terminated(1, "1234"));
        given(done)
            .when(cmd(terminate("1234", Issuer::Marqeta)))
            .then_expect_error(UserError::CardAlreadyTerminated);
    }

    fn erased() -> UserEvent {
        UserEvent::UserErased(UserErased {
            user_id: id(),
            company_id: "acme".into(),
            erased_at: at(),
        })
    }

    #[test]
    fn erasure_waits_for_every_card_to_be_terminated() {
        let history = vec![enrolled(), active(), ordered(1, CardType::Virtual, "1234")];
        given(history.clone())
            .when(cmd(UserAction::Erase))
            .then_expect_error(UserError::CardsNotTerminated);
        let mut done = history;
        done.push(terminated(1, "1234"));
        given(done)
            .when(cmd(UserAction::Erase))
            .then_expect_events(vec![erased()]);
        given(vec![enrolled()])
            .when(cmd(UserAction::Erase))
            .then_expect_events(vec![erased()]);
    }

    #[test]
    fn an_erased_user_is_gone_for_its_company_and_unknown_to_others() {
        let history = vec![enrolled(), active(), erased()];
        for action in [
            UserAction::Erase,
            update(json!({"first_name": "Jo"})),
            UserAction::SetParent(None),
            UserAction::ChangeStatus {
                status: UserStatus::Active,
                reason: None,
            },
            order(1, CardType::Virtual, "1234"),
        ] {
            given(history.clone())
                .when(cmd(action.clone()))
                .then_expect_error(UserError::Erased);
            let mut other = cmd(action);
            other.company_id = "globex".into();
            given(history.clone())
                .when(other)
                .then_expect_error(UserError::NotFound);
        }
        given(history.clone())
            .when(cmd(UserAction::Enroll(Box::new(enroll()))))
            .then_expect_error(UserError::AlreadyEnrolled);
        let mut user = User::default();
        for e in history {
            user.apply(e);
        }
        assert!(user.doc().is_none(), "no document is left");
        assert_eq!(user.erased(), Some("acme"));
        assert_eq!(
            user,
            User {
                erased: Some("acme".into()),
                ..User::default()
            },
            "no secret is left"
        );
    }
}
