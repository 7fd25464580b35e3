#!/usr/bin/env bash
# Bring up the local infrastructure and run the service (roster serve).
# `roster` creates its database and applies migrations by itself.
# Extra arguments go to `roster serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/infra.sh up

listen="${ROSTER_LISTEN:-127.0.0.1:8080}"
cat <<HINT
1) client:  cargo run --release -- client create --company acme   (prints client_id, client_secret)
2) token:   curl -s -X POST http://$listen/v1/oauth/token -H 'content-type: application/json' -d '{"grant_type":"client_credentials","client_id":"<client_id>","client_secret":"<client_secret>"}'
3) call:    curl -H 'Authorization: Bearer <access_token>' -H 'x-appid: <client_id>' http://$listen/v1/...
HINT

exec cargo run --release -- serve "$@"
