//! One command to completion: decide (on a kept aggregate or a fresh
//! load), seal, append, and retry a bounded number of times.

use super::{side::Side, CommandError, Load, MAX_ATTEMPTS};
use crate::append::{Append, AppendError, Meta, Recovered, Stream};
use crate::catalog::CreateCardProduct;
use crate::constraints::Constrained;
use crate::household::HouseholdCommand;
use crate::store::EventRepo;
use crate::user::UserCommand;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use roster_events::Timestamp;
use uuid::Uuid;

pub(super) async fn execute<A>(
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

pub(super) fn record<T>(command: &'static str, result: &Result<T, CommandError>) {
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
