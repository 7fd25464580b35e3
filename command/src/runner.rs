//! Running commands: load the aggregate, decide, append, and retry a bounded
//! number of times when another command appended first.
//!
//! Every command runs in its own task, so a client that disconnects cannot
//! cancel a write half-way (sqlx is not cancel-safe inside `BEGIN`).

use crate::append::{Append, AppendError, Meta, NewEvent, Recovered, Stream};
use crate::catalog::{catalog_id, CardCatalog, CatalogError, CreateCardProduct};
use crate::constraints::{Constrained, Snapshots, Violation};
use crate::household::{Household, HouseholdCommand, HouseholdError};
use crate::store::{EventRepo, ReadError};
use crate::user::{Argon2Services, User, UserCommand, UserError, UserServices};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use lru::LruCache;
use roster_events::card::{CardDoc, CardProductDoc, CatalogEvent};
use roster_events::household::{HouseholdDoc, HouseholdEvent};
use roster_events::user::{UserDoc, UserErased, UserEvent};
use roster_events::Timestamp;
use roster_vault::{DataKey, NewKey, Vault, VaultError};
use sqlx::PgPool;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use tracing::instrument;
use uuid::Uuid;

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

/// Aggregates kept per type, as this process last committed them.
const CACHED_AGGREGATES: usize = 20_000;
/// A load that applies this many events leaves a snapshot.
const SNAPSHOT_AFTER: u64 = 100;

/// One aggregate type's write side: the store, and a cache of aggregates as
/// this process last committed them. A command decides on a cached
/// aggregate directly (see `execute`: a stale one conflicts on append); a
/// load starts from it (or, on a miss, from a snapshot) and reads only the
/// events after it, so the cost of a command does not grow with its stream.
struct Side<A: Aggregate> {
    store: EventRepo,
    cache: Mutex<LruCache<Uuid, (A, u64)>>,
}

impl<A: Constrained + Clone> Side<A> {
    fn new(store: EventRepo) -> Self {
        Side {
            store,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_AGGREGATES).expect("a positive capacity"),
            )),
        }
    }

    /// The aggregate as this process last committed it, if it is kept.
    fn cached(&self, id: Uuid) -> Option<(A, u64)> {
        self.cache.lock().ok().and_then(|mut c| c.get(&id).cloned())
    }

    /// The aggregate now and its version: the cached one, else its
    /// snapshot, else nothing, brought up to date with the events after it.
    /// A load that had to apply [`SNAPSHOT_AFTER`] events or more leaves a
    /// snapshot behind (in the background), so the next cold load is short
    /// too.
    async fn load(&self, id: Uuid) -> Result<(A, u64), CommandError> {
        let (mut aggregate, mut version) = match self.cached(id) {
            Some(c) => c,
            None => match A::SNAPSHOTS {
                Snapshots::Never => None,
                s => self.store.snapshot::<A>(id, s == Snapshots::Sealed).await,
            }
            .unwrap_or_default(),
        };
        let from = version;
        for (sequence, event) in self.store.events_after::<A>(id, version).await? {
            version = sequence;
            aggregate.apply(event);
        }
        if version - from >= SNAPSHOT_AFTER && A::SNAPSHOTS != Snapshots::Never {
            match serde_json::to_value(&aggregate) {
                Ok(payload) => {
                    let store = self.store.clone();
                    let stream = Stream {
                        aggregate_type: A::TYPE,
                        id,
                    };
                    tokio::spawn(async move {
                        let sealed = A::SNAPSHOTS == Snapshots::Sealed;
                        if let Err(e) = store.save_snapshot(stream, version, &payload, sealed).await {
                            tracing::warn!(aggregate_id = %id, error = %e, "cannot save a snapshot");
                        }
                    });
                }
                Err(e) => tracing::warn!(aggregate_id = %id, error = %e, "cannot serialise a snapshot"),
            }
        }
        Ok((aggregate, version))
    }

    /// Keeps an aggregate as just committed at `version`.
    fn remember(&self, id: Uuid, aggregate: &A, version: u64) {
        if let Ok(mut c) = self.cache.lock() {
            c.put(id, (aggregate.clone(), version));
        }
    }

    /// Why `owner` has no key: it is the company's erased user (410), or
    /// no user of the company at all (a household member's: its account
    /// cannot be the user's). Another company's erased user is answered as
    /// one that never existed: the caller learns nothing of it.
    async fn keyless(&self, owner: Uuid, company_id: &str) -> CommandError {
        match self.store.registered(company_id, owner).await {
            Ok(Some(true)) => CommandError::User(UserError::Erased),
            Ok(_) => CommandError::Violation(Violation::AccountNotOwned),
            Err(e) => e.into(),
        }
    }

    /// The first owner of the events' personal data (but a user whose key
    /// this attempt created) that the registry marks erased, its key
    /// forgotten by this process.
    async fn erased_owner(&self, id: Uuid, events: &[A::Event], created: bool) -> Result<Option<Uuid>, CommandError> {
        let mut owners: Vec<Uuid> = events
            .iter()
            .filter_map(|e| A::data_owner(id, e))
            .filter(|o| !(created && *o == id))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        if owners.is_empty() {
            return Ok(None);
        }
        let erased = self.store.first_erased(&owners).await?;
        if let Some(owner) = erased {
            self.store.vault().forget(owner);
        }
        Ok(erased)
    }

    /// The events as stored: each one's personal values sealed under its
    /// owner's data key. A new user's first events get a new key, stored
    /// with them; a key that is gone means its owner was erased.
    async fn seal(
        &self,
        id: Uuid,
        version: u64,
        events: &[A::Event],
        company_id: &str,
    ) -> Result<(Vec<NewEvent>, Option<(DataKey, NewKey)>), CommandError> {
        let vault = self.store.vault();
        let mut keys: HashMap<Uuid, DataKey> = HashMap::new();
        let mut created = None;
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            let owner = A::data_owner(id, event)
                .filter(|_| !roster_events::personal::paths(A::TYPE, &event.event_type()).is_empty());
            let key = match owner {
                None => None,
                Some(owner) if keys.contains_key(&owner) => keys.get(&owner).cloned(),
                Some(owner) => {
                    let key = if owner == id && version == 0 {
                        let (key, new) = vault.new_key(owner, company_id);
                        created = Some((key.clone(), new));
                        key
                    } else {
                        match vault.key(self.store.pool(), owner).await? {
                            Some(key) => key,
                            None => return Err(self.keyless(owner, company_id).await),
                        }
                    };
                    keys.insert(owner, key.clone());
                    Some(key)
                }
            };
            sealed.push(NewEvent::sealed(A::TYPE, event, key.as_ref()));
        }
        Ok((sealed, created))
    }
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
        let task = tokio::spawn(async move { execute(&store, &(), id, command, &meta, Load::Existing).await });
        let result = task
            .await
            .map_err(|e| CommandError::Internal(Box::new(e)))
            .and_then(|r| r);
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
        let task = tokio::spawn(async move { execute(&store, &(), id, command, &meta, load).await });
        let result = task
            .await
            .map_err(|e| CommandError::Internal(Box::new(e)))
            .and_then(|r| r);
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
        let task = tokio::spawn(async move { execute(&store, &services, user_id, command, &meta, load).await });
        let result = task
            .await
            .map_err(|e| CommandError::Internal(Box::new(e)))
            .and_then(|r| r);
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

async fn execute<A>(
    side: &Side<A>,
    services: &A::Services,
    id: Uuid,
    command: A::Command,
    meta: &Meta,
    mut load: Load,
) -> Result<(A, u64, Vec<A::Event>), CommandError>
where
    A: Constrained + Clone,
    A::Command: Clone + Timed,
    A::Error: Into<CommandError>,
{
    if let Some(r) = meta.recovered.as_ref().filter(|r| r.aggregate_type == A::TYPE) {
        let recovered = recover(&side.store, r).await?;
        if let Ok(id) = Uuid::parse_str(&r.aggregate_id) {
            meta.appended.set(A::TYPE, id, r.to);
        }
        return Ok(recovered);
    }
    let stream = Stream {
        aggregate_type: A::TYPE,
        id,
    };
    // A kept aggregate is decided on without reading the store: should
    // another process have appended meanwhile, the append conflicts (the
    // stream is past its version) and the retry reads. An outcome that
    // appends nothing — a rejection, a no-op — cannot conflict, so it is
    // only trusted when decided on the stream as stored.
    let mut trust_cache = true;
    for attempt in 0..MAX_ATTEMPTS {
        let kept = match load {
            Load::Existing if trust_cache => side.cached(id),
            _ => None,
        };
        let from_cache = kept.is_some();
        let (mut aggregate, version) = match (load, kept) {
            (_, Some(kept)) => kept,
            (Load::Fresh, None) => (A::default(), 0),
            (Load::Existing, None) => side.load(id).await?,
        };
        // Each attempt decides at its own instant (never before the
        // request's): one that follows a conflict comes after the event it
        // conflicted with, and a command decided after a later request's
        // commit after that commit, so a stream's times never run backwards.
        let at = Timestamp::now().max(meta.at);
        let meta = &Meta { at, ..meta.clone() };
        let mut command = command.clone();
        command.decided_at(at);
        // The sink applies each event to the aggregate as it is decided.
        let sink = EventSink::default();
        let decided = aggregate.handle(command, services, &sink).await;
        let events = sink.collect().await;
        if from_cache && (decided.is_err() || events.is_empty()) {
            trust_cache = false;
            continue;
        }
        decided.map_err(Into::into)?;
        if events.is_empty() {
            return Ok((aggregate, version, events));
        }
        let constraints = events.iter().flat_map(A::constraints).collect();
        let (sealed, created) = side.seal(id, version, &events, &meta.company_id).await?;
        let claim_key = side
            .store
            .vault()
            .claim_key(side.store.pool(), &meta.company_id)
            .await?;
        let mut append = Append::new(stream, version, sealed, constraints, claim_key, meta);
        append.keys.extend(created.as_ref().map(|(_, new)| new.clone()));
        // Tests hold a command here, decided and not appended, to race it.
        fail::fail_point!("bus::decided");
        match side.store.append(append).await {
            Ok(appended) => {
                if let Some((key, _)) = created {
                    side.store.vault().remember(key);
                }
                side.remember(id, &aggregate, appended.version);
                meta.appended.set(A::TYPE, id, appended.version);
                // Tests stop Postgres here: committed, not yet answered.
                fail::fail_point!("command::committed");
                return Ok((aggregate, appended.version, events));
            }
            // The constraints are checked before the stream's version, and
            // a key is taken from this process's cache: a rejection decided
            // on a kept aggregate may hide a conflict, and one made with a
            // kept key may hide its owner's erasure. Either is decided again
            // on what is stored, so that every process answers alike.
            Err(AppendError::Violation(v)) => {
                if let Some(owner) = side.erased_owner(id, &events, created.is_some()).await? {
                    return Err(side.keyless(owner, &meta.company_id).await);
                }
                if !from_cache {
                    return Err(v.into());
                }
                load = Load::Existing;
                trust_cache = false;
            }
            Err(AppendError::Conflict) => {
                tracing::debug!(attempt, "optimistic conflict, retrying");
                load = Load::Existing;
                trust_cache = false;
                // A little jitter, growing with the attempts, so racing
                // writers of one stream stop colliding.
                let pause = rand::random::<u64>() % (attempt as u64 * 2 + 1);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Conflict)
}

/// A command that carries the instant it is decided at (its events' `at`).
pub trait Timed {
    fn decided_at(&mut self, at: Timestamp);
}

impl Timed for UserCommand {
    fn decided_at(&mut self, at: Timestamp) {
        self.at = at;
    }
}

impl Timed for HouseholdCommand {
    fn decided_at(&mut self, at: Timestamp) {
        self.at = at;
    }
}

impl Timed for CreateCardProduct {
    fn decided_at(&mut self, at: Timestamp) {
        self.at = at;
    }
}

/// The outcome of a command that already committed: the aggregate right
/// after its last event, and its events.
async fn recover<A: Aggregate>(store: &EventRepo, r: &Recovered) -> Result<(A, u64, Vec<A::Event>), CommandError> {
    let id = Uuid::parse_str(&r.aggregate_id).map_err(|e| CommandError::Internal(Box::new(e)))?;
    let mut aggregate = A::default();
    let mut events = Vec::new();
    for (sequence, event) in store.events_after::<A>(id, 0).await? {
        if sequence > r.to {
            break;
        }
        if sequence >= r.from {
            events.push(event.clone());
        }
        aggregate.apply(event);
    }
    Ok((aggregate, r.to, events))
}

fn record<T>(command: &'static str, result: &Result<T, CommandError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(
            CommandError::User(_) | CommandError::Household(_) | CommandError::Catalog(_) | CommandError::Violation(_),
        ) => "rejected",
        Err(CommandError::Conflict) => "conflict",
        Err(CommandError::Unavailable(_)) => "unavailable",
        Err(CommandError::Busy(_)) => "busy",
        Err(CommandError::Internal(_)) => "error",
    };
    metrics::counter!("roster_commands_total", "command" => command, "outcome" => outcome).increment(1);
}
