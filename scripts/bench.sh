#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md: pgbench and Roster on this
# machine, one table. Arguments: [clients=32] [seconds=20] [--no-pgbench]
# [--processes=N] (N `roster serve` processes on one database) [--enroll-only]
# (clients only enroll distinct users) [--wrk] (with --enroll-only: `wrk`
# makes the enrollments, Roster's and the peer's, instead of the bench's own
# clients; installed from Debian when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/infra.sh up
if [[ " $* " == *" --wrk "* ]] && ! command -v wrk >/dev/null 2>&1; then
  . scripts/infra.sh
  as_root apt-get install -y wrk || { as_root apt-get update && as_root apt-get install -y wrk; }
fi
cargo build --release -p roster --bin roster -p roster-tests --bin load-bench
# The peer the benchmark compares against, built from ../shared (read-only)
# in a target directory of its own.
peer="$(cd .. && pwd)/shared/peers/cqrs-es-default"
if [ -d "$peer" ]; then
  CARGO_TARGET_DIR="$PWD/target/peer" cargo build --release --locked --manifest-path "$peer/Cargo.toml"
  export ROSTER_PEER_BIN="$PWD/target/peer/release/peer-cqrs-es-default"
fi
exec target/release/load-bench "$@"
