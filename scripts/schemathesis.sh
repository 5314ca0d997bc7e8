#!/usr/bin/env bash
# Fuzzes the REST API against its own OpenAPI document with Schemathesis: no answer may be a
# 5xx, break the documented schema, status codes, content types or headers, accept what the
# schema forbids, or ignore the bearer token. Exits non-zero on any finding.
#
#   scripts/schemathesis.sh                 start target/debug/loraflow (or $LORAFLOW_BIN) on a
#                                           temporary SQLite database and fuzz it
#   scripts/schemathesis.sh URL TOKEN       fuzz a running server (URL = http://host:port)
#
# Environment: SCHEMATHESIS_EXAMPLES (test cases per operation, default 40: the run takes
# about a minute on a debug build), SCHEMATHESIS_SEED (default 1, so a CI run is repeatable;
# set another to explore), SCHEMATHESIS_REPORT_DIR (write a JUnit report there).
#
# `positive_data_acceptance` is not checked: whether a schema-valid body is accepted also
# depends on the database (an applicationId must exist, a gatewayId is unique) and on rules
# across fields (adrMinDr <= adrMaxDr within the profile's region) that a schema cannot say.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v schemathesis >/dev/null 2>&1; then
  st=(schemathesis)
elif python3 -c 'import schemathesis.cli' >/dev/null 2>&1; then
  st=(python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())')
else
  echo "schemathesis is not installed: python3 -m pip install schemathesis" >&2
  exit 2
fi

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ $# -ge 2 ]; then
  base_url=$1
  token=$2
else
  bin=${LORAFLOW_BIN:-target/debug/loraflow}
  [ -x "$bin" ] || cargo build --bin loraflow
  token=schemathesis-admin-token
  # Ephemeral ports; the server prints its addresses on its "loraflow ready:" line.
  LORAFLOW_API__BIND=127.0.0.1:0 LORAFLOW_GATEWAY__BIND=127.0.0.1:0 LORAFLOW_MQTT__EMBEDDED_BIND=127.0.0.1:0 \
    LORAFLOW_API__AUTH_FAILURES_PER_MINUTE=0 LORAFLOW_API__ADMIN_TOKEN=$token LORAFLOW_DATABASE__URL="sqlite://$work/loraflow.db" \
    "$bin" >"$work/stdout" 2>"$work/stderr" &
  server_pid=$!
  for _ in $(seq 1 300); do
    grep -q '^loraflow ready: ' "$work/stdout" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
  done
  base_url=$(sed -n 's/^loraflow ready: .*api=\(http:\/\/\)\{0,1\}\([^ ]*\).*/http:\/\/\2/p' "$work/stdout")
  [ -n "$base_url" ] || { echo "loraflow did not start:" >&2; cat "$work/stdout" "$work/stderr" >&2; exit 1; }
fi

report=()
if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
  report=(--report junit --report-dir "$SCHEMATHESIS_REPORT_DIR")
fi

# The live streams (`…/stream`, server-sent events) are left out: an answer to one of an
# existing device or gateway never ends, so it cannot be checked as a response
# (tests/live_streams.rs covers them).
#
# Schemathesis keeps its example database in the working directory: keep it out of the repo.
cd "$work"
"${st[@]}" run "$base_url/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all --exclude-checks positive_data_acceptance \
  --exclude-path-regex '/stream$' \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 2 \
  --no-color \
  "${report[@]}"
