//! Running commands: load the aggregate, decide, append, and retry a bounded
//! number of times when another command appended first.
//!
//! Every command runs in its own task, so a client that disconnects cannot
//! cancel a write half-way (sqlx is not cancel-safe inside `BEGIN`).
//!
//! - [`Commands`] (here): the entry point, one method per aggregate type;
//! - `side.rs`: an aggregate type's store and cache (load, seal);
//! - `execute.rs`: one command's attempts (decide, append, retry).

mod execute;
mod side;

pub use execute::Timed;
use execute::{execute, record};
use side::Side;

use crate::append::{AppendError, Meta};
use crate::catalog::{catalog_id, CardCatalog, CatalogError, CreateCardProduct};
use crate::constraints::Violation;
use crate::household::{Household, HouseholdCommand, HouseholdError};
use crate::store::{EventRepo, ReadError};
use crate::user::{Argon2Services, User, UserCommand, UserError, UserServices};
use roster_events::card::{CardDoc, CardProductDoc, CatalogEvent};
use roster_events::household::{HouseholdDoc, HouseholdEvent};
use roster_events::user::{UserDoc, UserErased, UserEvent};
use roster_vault::{Vault, VaultError};
use sqlx::PgPool;
use std::sync::Arc;
use tracing::instrument;
use uuid::Uuid;

/// Runs a command in a task of its own (a client that goes away cannot
/// cancel it half-way), boxed: a command's future is kilobytes, which the
/// task would otherwise copy as it is spawned and as it completes.
async fn to_completion<T: Send + 'static>(
    command: std::pin::Pin<Box<impl std::future::Future<Output = Result<T, CommandError>> + Send + 'static>>,
) -> Result<T, CommandError> {
    tokio::spawn(command)
        .await
        .map_err(|e| CommandError::Internal(Box::new(e)))
        .and_then(|r| r)
}

/// Attempts per command before an optimistic conflict is reported.
pub const MAX_ATTEMPTS: usize = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of a command: the resulting document, its version and the
/// events appended (none for a no-op).
#[derive(Debug, Clone)]
pub struct Committed<D, E> {
    pub doc: D,
    pub version: u64,
    pub events: Vec<E>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Household(#[from] HouseholdError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Violation(#[from] Violation),
    #[error("too many concurrent modifications")]
    Conflict,
    #[error("event store unavailable: {0}")]
    Unavailable(BoxError),
    /// Waited too long for another write (see `AppendError::Busy`).
    #[error("busy: {0}")]
    Busy(BoxError),
    #[error("internal error: {0}")]
    Internal(BoxError),
}

impl From<AppendError> for CommandError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => CommandError::Conflict,
            AppendError::Violation(v) => CommandError::Violation(v),
            AppendError::Unavailable(e) => CommandError::Unavailable(Box::new(e)),
            AppendError::Busy(e) => CommandError::Busy(Box::new(e)),
            AppendError::Internal(e) => CommandError::Internal(Box::new(e)),
        }
    }
}

impl From<ReadError> for CommandError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unavailable(e) => CommandError::Unavailable(Box::new(e)),
            ReadError::Keys(e) => e.into(),
            e => CommandError::Internal(Box::new(e)),
        }
    }
}

impl From<VaultError> for CommandError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Db(e) if crate::append::is_unavailable(&e) => CommandError::Unavailable(Box::new(e)),
            e => CommandError::Internal(Box::new(e)),
        }
    }
}

/// Whether the aggregate may already have events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A new id the service just generated: skip the read. Should it exist
    /// after all, the append conflicts and the retry loads it.
    Fresh,
    Existing,
}

/// Entry point of the write side.
#[derive(Clone)]
pub struct Commands {
    pool: PgPool,
    users: Arc<Side<User>>,
    households: Arc<Side<Household>>,
    catalogs: Arc<Side<CardCatalog>>,
    user_services: Arc<dyn UserServices>,
    /// Bumped after every commit that appended events.
    appended: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Commands {
    /// Starts the store's group-commit writer (needs a Tokio runtime).
    /// Every process on one database needs the same master key in `vault`.
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        let store = EventRepo::new(pool.clone(), vault);
        Self {
            users: Arc::new(Side::new(store.clone())),
            households: Arc::new(Side::new(store.clone())),
            catalogs: Arc::new(Side::new(store)),
            user_services: Arc::new(Argon2Services),
            appended: Arc::new(tokio::sync::watch::Sender::new(0)),
            pool,
        }
    }

    /// The keys of personal data, shared with the read side.
    pub fn vault(&self) -> &Vault {
        self.users.store.vault()
    }

    /// Changes after every commit that appended events (to wake subscribers).
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    fn bump<T, E>(&self, result: &Result<(T, u64, Vec<E>), CommandError>) {
        if matches!(result, Ok((_, _, events)) if !events.is_empty()) {
            self.appended.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether the user exists for this company (write side: always
    /// current); an erased one is [`UserError::Erased`].
    pub async fn user_exists(&self, company_id: &str, user_id: Uuid) -> Result<bool, CommandError> {
        match self.users.store.registered(company_id, user_id).await? {
            Some(true) => Err(CommandError::User(UserError::Erased)),
            Some(false) => Ok(true),
            None => Ok(false),
        }
    }

    /// A company's card catalog, as of now.
    pub async fn catalog(&self, company_id: &str) -> Result<CardCatalog, CommandError> {
        let (catalog, _) = self.catalogs.load(catalog_id(company_id)).await?;
        Ok(catalog)
    }

    /// Creates a card product in its company's catalog.
    pub async fn create_card_product(
        &self,
        command: CreateCardProduct,
        meta: Meta,
    ) -> Result<Committed<CardProductDoc, CatalogEvent>, CommandError> {
        let store = self.catalogs.clone();
        let id = catalog_id(&command.company_id);
        let product_id = command.card_product_id;
        let result = to_completion(Box::pin(async move {
            execute(&store, &(), id, command, &meta, Load::Existing).await
        }))
        .await;
        self.bump(&result);
        let result = result.and_then(|(catalog, version, events)| {
            // The product the events created (a recovered request's may
            // have another id than this attempt's command).
            let product_id = events
                .iter()
                .map(|CatalogEvent::CardProductCreated(p)| p.card_product_id)
                .next_back()
                .unwrap_or(product_id);
            let doc = catalog.product(product_id).cloned().ok_or(CommandError::Conflict)?;
            Ok(Committed { doc, version, events })
        });
        record("CreateCardProduct", &result);
        result
    }

    /// Runs a card command on a user; returns the card it touched.
    pub async fn user_card(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: Meta,
    ) -> Result<Committed<CardDoc, UserEvent>, CommandError> {
        let (user, version, events) = self.run_user(user_id, command, meta, Load::Existing).await?;
        let card_id = events.iter().find_map(|e| match e {
            UserEvent::CardOrdered(c) => Some(c.card_id),
            UserEvent::CardTerminated(c) => Some(c.card_id),
            _ => None,
        });
        let doc = card_id
            .and_then(|id| user.card(id).cloned())
            .ok_or(CommandError::User(UserError::CardNotFound))?;
        Ok(Committed { doc, version, events })
    }

    /// Runs a command on one household to completion.
    #[instrument(skip_all, fields(household_id = %id), err(level = "debug"))]
    pub async fn household(
        &self,
        id: Uuid,
        command: HouseholdCommand,
        meta: Meta,
        load: Load,
    ) -> Result<Committed<HouseholdDoc, HouseholdEvent>, CommandError> {
        let store = self.households.clone();
        let name = command.action.name();
        let result = to_completion(Box::pin(
            async move { execute(&store, &(), id, command, &meta, load).await },
        ))
        .await;
        self.bump(&result);
        let result = result.and_then(|(household, version, events)| {
            let doc = household
                .doc()
                .cloned()
                .ok_or(CommandError::Household(HouseholdError::NotFound))?;
            Ok(Committed { doc, version, events })
        });
        record(name, &result);
        result
    }

    /// The user aggregate does not know households; its accounts'
    /// `household_id` comes from the membership claims, which commit with the
    /// household's events (the user view follows the same events).
    async fn with_households(&self, mut doc: UserDoc) -> Result<UserDoc, CommandError> {
        if doc.accounts.is_empty() {
            return Ok(doc);
        }
        let claim_key = self.users.store.vault().claim_key(&self.pool, &doc.company_id).await?;
        let accounts: Vec<String> = doc
            .accounts
            .iter()
            .map(|a| claim_key.hash(&a.account.account_id))
            .collect();
        let households = self.users.store.households_of(&doc.company_id, &accounts).await?;
        for (a, household) in doc.accounts.iter_mut().zip(households) {
            a.household_id = household;
        }
        Ok(doc)
    }

    /// Runs a command on one user to completion and returns the user.
    #[instrument(skip_all, fields(user_id = %user_id), err(level = "debug"))]
    pub async fn user(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: Meta,
        load: Load,
    ) -> Result<Committed<UserDoc, UserEvent>, CommandError> {
        let (user, version, events) = self.run_user(user_id, command, meta, load).await?;
        let doc = user.doc().cloned().ok_or(CommandError::User(UserError::NotFound))?;
        let doc = self.with_households(doc).await?;
        Ok(Committed { doc, version, events })
    }

    /// Erases a user (CONTRACT §3 "Erasure"); returns its `UserErased`.
    #[instrument(skip_all, fields(user_id = %user_id), err(level = "debug"))]
    pub async fn erase_user(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: Meta,
    ) -> Result<Committed<UserErased, UserEvent>, CommandError> {
        let (_, version, events) = self.run_user(user_id, command, meta, Load::Existing).await?;
        let erased = events
            .iter()
            .find_map(|e| match e {
                UserEvent::UserErased(e) => Some(e.clone()),
                _ => None,
            })
            .ok_or(CommandError::User(UserError::Erased))?;
        Ok(Committed {
            doc: erased,
            version,
            events,
        })
    }

    async fn run_user(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: Meta,
        load: Load,
    ) -> Result<(User, u64, Vec<UserEvent>), CommandError> {
        let store = self.users.clone();
        let services = self.user_services.clone();
        let name = command.action.name();
        let result = to_completion(Box::pin(async move {
            execute(&store, &services, user_id, command, &meta, load).await
        }))
        .await;
        record(name, &result);
        self.bump(&result);
        if let Ok((user, _, _)) = &result {
            if user.erased().is_some() {
                self.users.store.vault().forget(user_id);
            }
        }
        result
    }
}
