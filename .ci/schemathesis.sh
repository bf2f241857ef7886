#!/usr/bin/env bash
# Hostile input over every route of the OpenAPI spec: schemathesis against the running shop
# (debug build, SQLite, dev sign-in as an admin), bounded in examples and time. Any 5xx, or
# a response that breaks the spec's status codes, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/ekart
[ -x "$bin" ] || cargo build --bin ekart
python3 -m pip install -q --disable-pip-version-check 'schemathesis>=4,<5' 2>&1 | grep -v "running pip as the 'root'" || true
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Limits high enough that the run tests the API, not the limiter (tests/api/door.rs does that).
EKART_SERVER__PORT=$port EKART_DATABASE__URL="sqlite://$dir/" EKART_AUTH__MODE=dev \
  EKART_LIMITS__PER_SECOND=5000 EKART_LIMITS__BURST=10000 EKART_LIMITS__SIGN_IN_BURST=10000 \
  EKART_LIMITS__CHECKOUT_BURST=10000 \
  EKART_LOG__LEVEL=warn "$bin" --config /nonexistent/ekart.toml serve >"$dir/ekart.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
token() {
  curl -sf -XPOST "http://127.0.0.1:$port/auth/dev/token" -H 'content-type: application/json' \
    -d '{"name":"Fuzz","email":"fuzz@example.com","role":"admin"}' |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])'
}
run() {
  timeout 600 python3 -m schemathesis.cli run "http://127.0.0.1:$port/api/openapi.json" \
    --checks not_a_server_error,status_code_conformance --max-examples 40 --workers 2 --seed 1 "$@"
}
# Signing out ends the token's session, so it goes last, with a token of its own.
run -H "Authorization: Bearer $(token)" --exclude-path /auth/signout
run -H "Authorization: Bearer $(token)" --include-path /auth/signout
