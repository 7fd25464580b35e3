//! The catch-up engine shared by every projector and the publisher.
//!
//! Readers page by `position`, the event's place in commit order: an
//! append takes its positions under the log's lock and holds it until it
//! commits (`roster_next_position()`, migration `commit_order`), so the
//! positions a reader can see are always a prefix of the log and
//! `position > checkpoint` skips nothing. No snapshot watermark: nothing
//! outside Roster's own appends can hold a reader back.
//!
//! Every subscriber sees events opened: personal values unsealed with the
//! owners' keys as they are at the read (`roster-vault`), and events of an
//! erased user marked [`StoredEvent::erased`], their personal values `null`.
//!
//! - [`read`]: pages of the log, opened with the owners' keys;
//! - [`checkpoint`]: where each subscriber is, and what it has applied;
//! - [`run`]: the runner (leadership, batches, wake-ups);
//! - [`rebuild`]: `roster replay`, a projection rebuilt beside the live one.

mod checkpoint;
mod read;
mod rebuild;
mod run;

pub use checkpoint::*;
pub use read::*;
pub use rebuild::*;
pub use run::*;

use sqlx::PgConnection;
use std::future::Future;

/// Builds one read model from events. `apply` runs inside the batch's
/// transaction, together with the checkpoint update, and must tolerate an
/// event it has already applied (keep the last applied sequence per
/// aggregate).
pub trait Projector: Send + Sync + 'static {
    /// The subscriber name: checkpoint row, lock key, `replay --projection`.
    fn name(&self) -> &'static str;

    fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The read-model tables it writes (rebuilt side by side by [`replay`]).
    fn tables(&self) -> &'static [&'static str];

    /// The events [`Projector::apply`] gets (others only move the checkpoint).
    fn reads(&self) -> Reads {
        Reads::ALL
    }

    /// What `apply` remembered may no longer match the tables: a batch did
    /// not commit, or this runner just took over (another may have written
    /// meanwhile).
    fn forget(&self) {}

    /// [`replay`] made empty copies of the tables and applies to them:
    /// until the swap only this projector writes them, so a row it has not
    /// written is not there. [`Projector::forget`] ends it.
    fn rebuilding(&self) {}

    /// The lane [`replay`] applies `e` on. Lanes apply their events side by
    /// side, each in its own order and transactions, so events whose rows
    /// depend on one another must share a lane (`user_view`: everything
    /// about one user). The default puts every event on one lane.
    fn lane(&self, _e: &StoredEvent) -> u64 {
        0
    }
}
