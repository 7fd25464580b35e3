#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md: pgbench and Roster on this
# machine, one table. Arguments: [clients=32] [seconds=20] [--no-pgbench].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/infra.sh up
cargo build --release -p roster --bin roster -p roster-tests --bin load-bench
exec target/release/load-bench "$@"
