//! Roster: an event-sourced user and account registry for card issuers and
//! rewards programs.
//!
//! This crate is the binary's library: the command line ([`config`]), the
//! database bootstrap ([`db`]), clients and tokens ([`auth`]), signed and
//! encrypted calls ([`oauth1`], [`jwe`]), the HTTP API ([`http`]) and the
//! wiring of `roster serve` ([`app`]). The domain lives
//! in the workspace crates: `roster-events` (what happened),
//! `roster-command` (deciding), `roster-query` (answering) and
//! `roster-projections` (catch-up subscribers and the Kafka publisher).

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod jwe;
pub mod keys;
pub mod oauth1;
pub mod telemetry;
