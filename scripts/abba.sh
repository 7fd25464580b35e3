#!/usr/bin/env bash
# Two builds of roster compared on this noisy machine: load-bench runs
# (32 clients, 20 s, Kafka on, no pgbench) in ABBA order, a CHECKPOINT
# before each, one line per run. Needs target/release/load-bench built.
# Usage: scripts/abba.sh A_BIN B_BIN ["A B B A A B B A"]
# A_ARGS / B_ARGS override each side's load-bench arguments (default
# "32 20 --no-pgbench"; e.g. "32 20 --no-pgbench --processes=2").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
a=$1 b=$2 order=${3:-"A B B A A B B A"}
field() { grep "$1" <<<"$out" | sed 's/.*| \(.*\) |$/\1/'; }
for v in $order; do
  psql -h 127.0.0.1 -U postgres -qAtc CHECKPOINT
  if [ "$v" = A ]; then bin=$a args=${A_ARGS:-32 20 --no-pgbench}; else bin=$b args=${B_ARGS:-32 20 --no-pgbench}; fi
  # shellcheck disable=SC2086 # the arguments are words
  out=$(ROSTER_BIN=$bin KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}" target/release/load-bench $args 2>&1)
  echo "$v $(field 'commands (enroll') | p50/p99/max $(field 'command latency') | projection $(field 'projection lag') | kafka $(field 'Kafka end') | errors $(field 'roster: errors') | $(field 'CPU during')"
done
