#!/usr/bin/env bash
# Bring up the local infrastructure and run the service (roster serve), with
# a demo company to look at in the operator console. `roster` creates its
# database and applies migrations by itself. Extra arguments go to
# `roster serve`.
#
# The demo client is created once per database (its credentials are kept in
# .roster/, which git ignores) and its users are seeded through the API
# (scripts/demo-seed.py); both are done again only if the database lost them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/infra.sh up
cargo build --release --bin roster
roster=target/release/roster

listen="${ROSTER_LISTEN:-127.0.0.1:8080}"
export ROSTER_LISTEN="$listen"
database="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/roster}"
mkdir -p .roster
creds=".roster/demo-client-$(printf '%s' "$database" | sha256sum | cut -c1-12).json"

"$roster" serve "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"' INT TERM
for _ in $(seq 60); do
  curl -fsS "http://$listen/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { wait "$server"; exit 1; }
  sleep 1
done

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$creds" "$1"; }
signs_in() {
  [ -s "$creds" ] && curl -fsS -o /dev/null "http://$listen/v1/oauth/token" \
    -d grant_type=client_credentials -d client_id="$(field client_id)" -d client_secret="$(field client_secret)"
}
if ! signs_in; then
  "$roster" client create --company demo --name "operator console (dev.sh)" >"$creds"
  python3 scripts/demo-seed.py "http://$listen" "$(field client_id)" "$(field client_secret)" >/dev/null
fi

cat <<HINT

  Roster is running on http://$listen  (Ctrl-C stops it)

  Operator console:  http://$listen/console
    Client ID:      $(field client_id)
    Client secret:  $(field client_secret)
  (a demo company with families, a company tree, households, cards and history;
   try searching for "Haddad")

  API: token with  curl -s http://$listen/v1/oauth/token -d grant_type=client_credentials \\
                        -d client_id=<id> -d client_secret=<secret>
       then        curl -H 'Authorization: Bearer <token>' -H 'x-appid: <id>' http://$listen/v1/users
  More clients:    $roster client create --company <slug>

HINT
wait "$server"
