//! Pages of the log in commit order, opened with the owners' keys.

use chrono::{DateTime, Utc};
use roster_vault::seal;
use roster_vault::Vault;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// A place in the store's commit order: the `position` of an event (0:
/// before the first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub i64);

/// One row of the `events` table.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: Position,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The stored payload as JSON text (`{"UserEnrolled": {...}}`), at its
    /// current version. Kept as text: most readers decode it straight into
    /// their typed event ([`StoredEvent::decode`]). Personal values in it
    /// are opened (see `open`).
    pub payload: String,
    pub metadata: Metadata,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// Its user is erased: its personal values are `null`, and its data is
    /// shown to no one (the audit trail and Kafka show `null`). Never set on
    /// the `UserErased` event itself.
    pub erased: bool,
}

/// What subscribers read of an event's metadata ([`roster_events::meta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub company_id: String,
    pub occurred_at: Option<String>,
}

impl StoredEvent {
    /// The payload as a typed event.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.payload)
    }
}

/// Which events a subscriber reads. The store still pages through every
/// event in commit order (the checkpoint moves past the others), but only
/// these are sent and decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reads {
    /// `None`: every aggregate type.
    pub aggregate_types: Option<&'static [&'static str]>,
    /// `None`: every event type.
    pub event_types: Option<&'static [&'static str]>,
}

impl Reads {
    pub const ALL: Reads = Reads {
        aggregate_types: None,
        event_types: None,
    };
}

/// A page of the store: the events a subscriber reads, and where the page
/// ends (past events it does not read, too).
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    pub end: Option<Position>,
    /// Events the page went through, read or not.
    pub scanned: usize,
}

/// Every event after `after`, in commit order, up to `limit`.
pub async fn read_after(
    conn: &mut PgConnection,
    vault: &Vault,
    after: Position,
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    Ok(read_page(conn, vault, Keys::Fresh, after, limit, Reads::ALL)
        .await?
        .events)
}

/// Where a reader takes the owners' keys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// As stored now: what leaves the service (Kafka) after an erasure
    /// must not be opened with a key kept from before it. The page's query
    /// reads each owner's erasure mark from `user_registry`; the keys of
    /// owners not erased come from the process's cache (a key does not
    /// change while its owner lives), the others are read. Its caller
    /// holds erasure off (the shared [`roster_vault::ERASURE_LOCK`]) from
    /// before the read until it has handed the events over.
    Fresh,
    /// The process's key cache first. A projector may: should it open an
    /// event of a user erased meanwhile, that user's `UserErased`, later in
    /// its order, deletes what it wrote.
    Kept,
}

/// Whether the event's owner is erased: a probe of a partial index that
/// holds only erased users.
macro_rules! ERASED_JOIN {
    () => {
        "LEFT JOIN LATERAL (
             SELECT true AS erased FROM user_registry r
              WHERE wanted AND event_type <> 'UserErased' AND r.erased_at IS NOT NULL
                AND r.user_id = CASE aggregate_type
                      WHEN 'user' THEN aggregate_id::uuid
                      WHEN 'household' THEN (payload -> event_type ->> 'user_id')::uuid END) x ON true"
    };
}

/// The page query, with an `erased` column and the join that fills it
/// (two texts, so that projectors' pages are planned as cheaply as before).
/// Every row of the page is sent, only the wanted ones with their payload
/// and metadata: of the others, the subscriber needs only that they are
/// there (where the page ends, how many it went through). No window over
/// the page for that: counting on the server cost Postgres more, in
/// planning and in rows kept for the window, than the short columns of a
/// row it does not read (nor does a `CASE` on each of those: measured).
macro_rules! page_query {
    ($erased:literal, $join:expr) => {
        page_query!(
            $erased,
            $join,
            " WHERE position > $1
              ORDER BY position
              LIMIT $2"
        )
    };
    ($erased:literal, $join:expr, $rows:literal) => {
        concat!(
            "SELECT position, wanted, aggregate_type, aggregate_id,
                    sequence, event_type, event_version,
                    CASE WHEN wanted THEN payload::text END AS payload,
                    CASE WHEN wanted THEN metadata::text END AS metadata, event_id, recorded_at, ",
            $erased,
            " AS erased
               FROM events
                    CROSS JOIN LATERAL (SELECT ($3::text[] IS NULL OR aggregate_type = ANY($3))
                                           AND ($4::text[] IS NULL OR event_type = ANY($4)) AS wanted) w ",
            $join,
            $rows
        )
    };
}

/// The next `limit` events after `after`, in commit order; of those, the ones `reads` names come with their data.
pub async fn read_page(
    conn: &mut PgConnection,
    vault: &Vault,
    keys: Keys,
    after: Position,
    limit: i64,
    reads: Reads,
) -> anyhow::Result<Page> {
    let sql = match keys {
        Keys::Fresh => page_query!("x.erased", ERASED_JOIN!()),
        Keys::Kept => page_query!("NULL::bool", ""),
    };
    let rows = sqlx::query(sql)
        .bind(after.0)
        .bind(limit)
        .bind(reads.aggregate_types)
        .bind(reads.event_types)
        .fetch_all(&mut *conn)
        .await?;
    page_of(conn, vault, rows).await
}

/// The events at `positions`, in commit order, opened with the owners'
/// keys as stored now ([`Keys::Fresh`]: the caller holds erasure off).
pub async fn read_positions(
    conn: &mut PgConnection,
    vault: &Vault,
    positions: &[i64],
) -> anyhow::Result<Vec<StoredEvent>> {
    let sql = page_query!(
        "x.erased",
        ERASED_JOIN!(),
        " WHERE position = ANY($1) AND $2::bigint IS NOT NULL ORDER BY position"
    );
    let rows = sqlx::query(sql)
        .bind(positions)
        .bind(0i64)
        .bind(None::<Vec<String>>)
        .bind(None::<Vec<String>>)
        .fetch_all(&mut *conn)
        .await?;
    Ok(page_of(conn, vault, rows).await?.events)
}

async fn page_of(conn: &mut PgConnection, vault: &Vault, rows: Vec<sqlx::postgres::PgRow>) -> anyhow::Result<Page> {
    let mut page = Page {
        events: Vec::new(),
        end: None,
        scanned: rows.len(),
    };
    for r in &rows {
        let position = Position(r.try_get("position")?);
        page.end = Some(position);
        if !r.try_get::<bool, _>("wanted")? {
            continue;
        }
        // Every reader sees events at their current version.
        let aggregate_type: String = r.try_get("aggregate_type")?;
        let event_type: String = r.try_get("event_type")?;
        let stored_version: &str = r.try_get("event_version")?;
        let (event_version, payload) =
            roster_events::upcast::upcast_text(&aggregate_type, &event_type, stored_version, r.try_get("payload")?);
        page.events.push(StoredEvent {
            position,
            aggregate_type,
            aggregate_id: r.try_get("aggregate_id")?,
            sequence: r.try_get("sequence")?,
            event_type,
            event_version,
            payload,
            metadata: serde_json::from_str(r.try_get("metadata")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            event_id: r.try_get("event_id")?,
            recorded_at: r.try_get("recorded_at")?,
            erased: r.try_get::<Option<bool>, _>("erased")?.unwrap_or(false),
        });
    }
    open(conn, vault, &mut page.events).await?;
    Ok(page)
}

/// Opens the events' personal values with their owners' keys (those not
/// kept read in one query); marks the events of users whose key is gone as
/// erased. An event already marked erased (by the page's query) is not
/// opened, whatever key is kept.
async fn open(conn: &mut PgConnection, vault: &Vault, events: &mut [StoredEvent]) -> anyhow::Result<()> {
    let mut owned = Vec::with_capacity(events.len());
    for e in events.iter() {
        let sealed = seal::is_sealed(&e.payload);
        // Every user event's owner is looked up, sealed values or not: an
        // erased user's events all show nothing.
        let owner = match e.aggregate_type.as_str() {
            "user" if e.event_type == "UserErased" => None,
            _ if sealed || e.aggregate_type == "user" => {
                seal::owner_of(&e.aggregate_type, &e.aggregate_id, &e.payload)?
            }
            _ => None,
        };
        owned.push((owner, sealed));
    }
    let mut owners: Vec<Uuid> = owned.iter().filter_map(|(o, _)| *o).collect();
    if owners.is_empty() {
        return Ok(());
    }
    owners.sort();
    owners.dedup();
    let keys = vault.kept_keyring(&mut *conn, &owners).await?;
    for (e, (owner, sealed)) in events.iter_mut().zip(owned) {
        let Some(owner) = owner else { continue };
        e.erased |= keys.is_erased(owner);
        if !sealed {
            continue;
        }
        let key = keys.get(owner).filter(|_| !e.erased);
        let opened = seal::open_text(std::mem::take(&mut e.payload), key)
            .map_err(|err| anyhow::anyhow!("event {} of {} {}: {err}", e.sequence, e.aggregate_type, e.aggregate_id))?;
        e.payload = opened.payload;
        e.erased |= opened.erased;
    }
    Ok(())
}
