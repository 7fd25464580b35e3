#!/usr/bin/env bash
# Run the full test suite against local Postgres and the tansu broker.
# Extra arguments go to the test runner (cargo nextest run / cargo test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/infra.sh up

# Tests create their own databases from this server URL (an empty one is
# useless, so it gets the default too).
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Only when unset: an explicit empty KAFKA_BROKERS disables publishing.
export KAFKA_BROKERS="${KAFKA_BROKERS-127.0.0.1:9092}"

# Databases left behind by tests that failed before cleaning up.
psql "${DATABASE_URL}" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'roster\_test\_%'" \
  | while read -r db; do psql "${DATABASE_URL}" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done

# The fault-injection tests run the real `roster` binary as a process.
cargo build --bin roster

if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace "$@"
fi
