//! One aggregate type's write side: its store and the aggregates this
//! process last committed; loading, snapshots, sealing events.

use super::CommandError;
use crate::append::{NewEvent, Stream};
use crate::constraints::{Constrained, Snapshots, Violation};
use crate::store::EventRepo;
use crate::user::UserError;
use cqrs_es::{Aggregate, DomainEvent};
use lru::LruCache;
use roster_vault::{DataKey, NewKey};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use uuid::Uuid;

/// Aggregates kept per type, as this process last committed them.
const CACHED_AGGREGATES: usize = 20_000;
/// A load that applies this many events leaves a snapshot.
const SNAPSHOT_AFTER: u64 = 100;

/// One aggregate type's write side: the store, and a cache of aggregates as
/// this process last committed them. A command decides on a cached
/// aggregate directly (see `execute`: a stale one conflicts on append); a
/// load starts from it (or, on a miss, from a snapshot) and reads only the
/// events after it, so the cost of a command does not grow with its stream.
pub(super) struct Side<A: Aggregate> {
    pub(super) store: EventRepo,
    cache: Mutex<LruCache<Uuid, (A, u64)>>,
}

impl<A: Constrained + Clone> Side<A> {
    pub(super) fn new(store: EventRepo) -> Self {
        Side {
            store,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_AGGREGATES).expect("a positive capacity"),
            )),
        }
    }

    /// The aggregate as this process last committed it, if it is kept.
    pub(super) fn cached(&self, id: Uuid) -> Option<(A, u64)> {
        self.cache.lock().ok().and_then(|mut c| c.get(&id).cloned())
    }

    /// The aggregate now and its version: the cached one, else its
    /// snapshot, else nothing, brought up to date with the events after it.
    /// A load that had to apply [`SNAPSHOT_AFTER`] events or more leaves a
    /// snapshot behind (in the background), so the next cold load is short
    /// too.
    pub(super) async fn load(&self, id: Uuid) -> Result<(A, u64), CommandError> {
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
    pub(super) fn remember(&self, id: Uuid, aggregate: &A, version: u64) {
        if let Ok(mut c) = self.cache.lock() {
            c.put(id, (aggregate.clone(), version));
        }
    }

    /// Why `owner` has no key: it is the company's erased user (410), or
    /// no user of the company at all (a household member's: its account
    /// cannot be the user's). Another company's erased user is answered as
    /// one that never existed: the caller learns nothing of it.
    pub(super) async fn keyless(&self, owner: Uuid, company_id: &str) -> CommandError {
        match self.store.registered(company_id, owner).await {
            Ok(Some(true)) => CommandError::User(UserError::Erased),
            Ok(_) => CommandError::Violation(Violation::AccountNotOwned),
            Err(e) => e.into(),
        }
    }

    /// The first owner of the events' personal data (but a user whose key
    /// this attempt created) that the registry marks erased, its key
    /// forgotten by this process.
    pub(super) async fn erased_owner(
        &self,
        id: Uuid,
        events: &[A::Event],
        created: bool,
    ) -> Result<Option<Uuid>, CommandError> {
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
    pub(super) async fn seal(
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
