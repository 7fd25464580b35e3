//! What an append is and what it comes to: the stream, the events (sealed),
//! the constraints and metadata they carry, and the outcome. The command
//! runner builds these, the store and the group-commit writer write them;
//! none of those modules needs another's types.

use crate::constraints::{Constraint, Violation};
use cqrs_es::DomainEvent;
use roster_events::meta;
use roster_events::Timestamp;
use roster_vault::{ClaimKey, NewKey};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Who caused a command, and when: stored as every event's metadata.
#[derive(Debug, Clone)]
pub struct Meta {
    pub company_id: String,
    pub client_id: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub at: Timestamp,
    /// What an earlier attempt of this request committed, when its answer
    /// was lost: the command is not run again, its outcome is read back.
    pub recovered: Option<Recovered>,
    /// Where the request learns what its command appended, whatever its
    /// answer turns out to be.
    pub appended: AppendedTo,
}

/// The stream a command appended to and its last sequence, kept for the
/// edge as soon as the append commits: an answer that is not a success (a
/// failed verification appends its `VerificationFailed`; a failure after
/// the commit) still names the write it made.
#[derive(Debug, Clone, Default)]
pub struct AppendedTo(Arc<Mutex<Option<StreamVersion>>>);

/// An aggregate type, an aggregate id and a sequence in its stream.
pub type StreamVersion = (&'static str, Uuid, u64);

impl AppendedTo {
    pub(crate) fn set(&self, aggregate_type: &'static str, id: Uuid, version: u64) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((aggregate_type, id, version));
        }
    }

    /// Aggregate type, id and last sequence of the committed append, if any.
    pub fn get(&self) -> Option<StreamVersion> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

/// The events an earlier attempt of a request appended: `from..=to` of the
/// stream `aggregate_type`/`aggregate_id` (recorded with the append).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub from: u64,
    pub to: u64,
}

/// One aggregate's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub aggregate_type: &'static str,
    pub id: Uuid,
}

/// An event ready to store: its name, version and payload as JSON text
/// (personal values sealed).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
}

impl NewEvent {
    /// The event as stored: its personal values sealed under `key` (the
    /// owner's data key; `None` for an event that holds none).
    pub fn sealed<E: DomainEvent>(aggregate_type: &str, event: &E, key: Option<&roster_vault::DataKey>) -> Self {
        let event_type = event.event_type();
        // Derived `Serialize` of string-keyed data cannot fail.
        let payload = match key {
            Some(key) => {
                let mut value = serde_json::to_value(event).expect("events serialise");
                roster_vault::seal::seal_payload(aggregate_type, &event_type, &mut value, key);
                // Not `to_string()`: `Display` writes through a formatter,
                // piece by piece, at twice the cost.
                serde_json::to_string(&value).expect("values serialise")
            }
            None => serde_json::to_string(event).expect("events serialise"),
        };
        NewEvent {
            event_type,
            event_version: event.event_version(),
            payload,
        }
    }
}

/// One append, owned (it may wait in the writer's queue).
#[derive(Debug, Clone)]
pub struct Append {
    pub stream: Stream,
    /// The stream's version the events follow (0: a new stream).
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    pub constraints: Vec<Constraint>,
    /// The company's key for the keyed hashes of claimed values.
    pub claim_key: ClaimKey,
    /// Data keys first used by these events, stored with them.
    pub keys: Vec<NewKey>,
    pub company_id: String,
    /// Every event's metadata, as JSON text.
    pub metadata: String,
    /// The client and idempotency key of the request: the append records on
    /// that key what it committed (see `src/http/idempotency.rs`), so that
    /// whatever happens after the commit, a retry finds it.
    pub request: Option<(String, String)>,
}

impl Append {
    pub fn new(
        stream: Stream,
        expected_version: u64,
        events: Vec<NewEvent>,
        constraints: Vec<Constraint>,
        claim_key: ClaimKey,
        origin: &Meta,
    ) -> Self {
        let mut metadata = serde_json::Map::with_capacity(5);
        let mut put = |k: &str, v: &str| metadata.insert(k.to_string(), Value::String(v.to_string()));
        put(meta::COMPANY_ID, &origin.company_id);
        put(meta::CLIENT_ID, &origin.client_id);
        put(meta::REQUEST_ID, &origin.request_id);
        put(meta::OCCURRED_AT, &origin.at.to_string());
        if let Some(k) = &origin.idempotency_key {
            put(meta::IDEMPOTENCY_KEY, k);
        }
        Append {
            stream,
            expected_version,
            events,
            constraints,
            claim_key,
            keys: Vec::new(),
            company_id: origin.company_id.clone(),
            metadata: serde_json::to_string(&Value::Object(metadata)).expect("values serialise"),
            request: origin
                .idempotency_key
                .as_ref()
                .map(|k| (origin.client_id.clone(), k.clone())),
        }
    }

    /// The stream's version after this append.
    pub fn version(&self) -> u64 {
        self.expected_version + self.events.len() as u64
    }

    /// Claims and the registration of a parentless user need no lock and no
    /// read: the one-statement (batched) append can do them.
    pub(crate) fn fits_one_statement(&self) -> bool {
        self.constraints
            .iter()
            .all(|c| matches!(c, Constraint::Claim(_) | Constraint::Register { parent: None }))
    }
}

/// What an append wrote: the stream's new version and the global position
/// of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub version: u64,
    pub position: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Another command appended to the stream first (or Postgres gave up on
    /// a transaction that raced another): load again and retry.
    #[error("the stream moved past the expected version")]
    Conflict,
    #[error(transparent)]
    Violation(#[from] Violation),
    /// Postgres is out of reach for now: the client may retry.
    #[error("event store unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    /// The append waited for a row or lock another transaction holds for
    /// longer than its bound (`writer::WAIT_LIMITS`): the client may retry.
    #[error("the append waited too long for another write: {0}")]
    Busy(Arc<sqlx::Error>),
    #[error("event store error: {0}")]
    Internal(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        if is_race(&e) || matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation()) {
            AppendError::Conflict
        } else if is_busy(&e) {
            AppendError::Busy(Arc::new(e))
        } else if is_unavailable(&e) {
            AppendError::Unavailable(Arc::new(e))
        } else {
            AppendError::Internal(Arc::new(e))
        }
    }
}

/// Whether `e` means the database is out of reach for now (down,
/// restarting, shutting down, out of connections) rather than a bug: the
/// client gets 503 and may retry.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: shutdown or starting up;
            // 53300: too many connections; 25006: read-only (a failover).
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
        }),
        _ => false,
    }
}

/// Whether `e` is a statement that gave up waiting: `lock_timeout` (55P03)
/// or `statement_timeout` (57014).
pub fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "57014")))
}

/// Whether `e` is Postgres giving up on a transaction that raced another
/// (deadlock, serialization failure): the command is retried like an
/// optimistic conflict.
pub(crate) fn is_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}
