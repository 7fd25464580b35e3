//! Deciding in Roster.
//!
//! - [`users`], [`households`], [`cards`]: the use cases, one function each, that every
//!   door calls with typed values;
//! - [`user`]: the User aggregate (pure rules, given/when/then tests) and
//!   its typed merge patch;
//! - [`erasure`]: what an erasure appends to its children's and
//!   households' streams (pure);
//! - [`validate`], [`secret`]: field rules and secret hashing;
//! - [`append`]: what an append is (stream, sealed events, constraints,
//!   metadata) and what it comes to, shared by the three below;
//! - [`runner`]: runs a command to completion (load, decide, seal, append,
//!   retry on conflict) in its own task;
//! - [`store`], [`writer`], [`constraints`]: the typed append with the
//!   cross-aggregate rules enforced atomically; concurrent appends share a
//!   statement (group commit); stream reads and snapshots.

pub mod append;
pub mod cards;
pub mod catalog;
pub mod constraints;
pub mod erasure;
pub mod household;
pub mod households;
pub mod pan;
pub mod runner;
pub mod secret;
pub mod store;
pub mod user;
pub mod users;
pub mod validate;
pub mod writer;

pub use append::{Meta, Recovered};
pub use constraints::Violation;
pub use runner::{CommandError, Commands, Committed};
