#!/usr/bin/env bash
# The floor a replay of user_view is compared with (docs/benchmarks.md,
# "Replay (item 4)"): the rows the last replay wrote, exported, then loaded
# back by psql alone into an empty table with the primary key and the six
# other indexes built one after another. Prints the total in ms.
#
#   scripts/replay-floor.sh [database]     # default roster_bench
set -euo pipefail
db="${1:-roster_bench}"
rows="${TMPDIR:-/tmp}/roster-floor-rows.copy"
psql=(psql -h 127.0.0.1 -U postgres -d "$db" -v ON_ERROR_STOP=1 -q)
"${psql[@]}" -c "\\copy user_view to '$rows'"
"${psql[@]}" <<SQL | awk '/^Time:/ { ms += $2 } END { printf "floor: %.0f ms\n", ms }'
SET client_min_messages = warning;
DROP TABLE IF EXISTS floor_uv;
CREATE TABLE floor_uv (LIKE user_view INCLUDING DEFAULTS);
ALTER TABLE floor_uv ADD PRIMARY KEY (id);
CHECKPOINT;
SET maintenance_work_mem = '256MB';
\\timing on
\\copy floor_uv from '$rows'
CREATE INDEX ON floor_uv USING gin (search_name gin_trgm_ops);
CREATE INDEX ON floor_uv (company_id, id);
CREATE INDEX ON floor_uv (company_id, status, id);
CREATE INDEX ON floor_uv (company_id, parent_user_id, id) WHERE parent_user_id IS NOT NULL;
CREATE INDEX ON floor_uv (company_id, email_lower, id);
CREATE INDEX ON floor_uv (company_id, mobile, id);
\\timing off
DROP TABLE floor_uv;
SQL
