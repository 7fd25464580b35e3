//! Catch-up subscribers of the event store.
//!
//! - [`engine`]: reads events by `position`, the log's commit order (an
//!   append takes its positions under the log's lock, held until it
//!   commits), so nothing is ever skipped; keeps one checkpoint per subscriber; elects one runner
//!   per subscriber with an advisory lock; wakes on `NOTIFY` and polls as a
//!   fallback. [`engine::run_batch`] drives one batch, for tests.
//! - [`user_view`], [`household_view`], [`card_view`]: the read-model projectors.
//! - [`publisher`]: publishes every event to Kafka, checkpointing only
//!   after delivery.
//! - [`webhooks`]: delivers every event to the webhook endpoints that
//!   subscribe to it, recording each delivery before attempting it.

pub mod card_view;
pub mod engine;
pub mod household_view;
pub mod publisher;
pub mod user_view;
pub mod webhooks;

pub use engine::{Position, Projector, StoredEvent};
