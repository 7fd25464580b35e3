//! Deciding in Roster.
//!
//! - [`user`]: the User aggregate (pure rules, given/when/then tests) and
//!   the requests that become its commands;
//! - [`validate`], [`secret`]: field rules and secret hashing;
//! - [`constraints`], [`store`], [`writer`]: cross-aggregate rules enforced
//!   atomically with the typed append; concurrent appends share a statement
//!   (group commit);
//! - [`bus`]: runs a command to completion (load, decide, append, retry on
//!   conflict) in its own task.

pub mod bus;
pub mod catalog;
pub mod constraints;
pub mod household;
pub mod pan;
pub mod parse;
pub mod secret;
pub mod store;
pub mod user;
pub mod validate;
pub mod writer;

pub use bus::{CommandError, Commands, Committed, Meta, Recovered};
pub use constraints::Violation;
