//! End-to-end tests: HTTP against the real app, real Postgres, real broker.
//! One test binary; one module per area.

mod auth;
mod cards;
mod commands;
mod concurrency;
mod console;
mod cradl;
mod custodia;
mod erasure;
mod faults;
mod fuzz;
mod history;
mod hostile;
mod households;
mod idempotency;
mod kafka;
mod mastercard;
mod ops;
mod order;
mod queries;
mod security;
mod upgrade;
mod users;
mod webhooks;
