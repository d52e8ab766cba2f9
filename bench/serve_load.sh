#!/usr/bin/env bash
# Load test of `shoplake serve`: a dashboard-sized query (revenue by region and month, about
# 50 rows) over HTTP, measured with wrk (Debian package `wrk`, installed here if missing).
#
#   bench/serve_load.sh [ROWS] [SECONDS] [CONNECTIONS]    defaults: 1000000 sales rows, 20 s, 16
#
# Builds shoplake (PROFILE, BIN_OVERRIDE: see bench/_shoplake.sh), generates and loads ROWS rows
# once (bench/out/serve-ROWS),
# adds an analyst (masking and a row-filter-free view path) and an admin, starts the server on
# free loopback ports and runs wrk for each; prints requests per second and p50/p99 latency.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
SECS=${2:-20}
CONNS=${3:-16}
OUT=${BENCH_OUT:-bench/out}
DIR="$OUT/serve-$ROWS"
mkdir -p "$OUT"

if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk" >&2
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq wrk >&2
fi
source bench/_shoplake.sh
shoplake_bin
export SHOPLAKE_PII_KEY=bench
generated_lake "$DIR" "$ROWS"
token() { "$BIN" --lake "$DIR/lake" users token "$1" 2>/dev/null | grep -o 'slk_[0-9a-f]*' ||
          "$BIN" --lake "$DIR/lake" users add "$1" --role "$2" | grep -o 'slk_[0-9a-f]*'; }
ADMIN=$(token bench_admin admin)
ANALYST=$(token bench_analyst analyst)

HTTP_PORT=${HTTP_PORT:-18080}
PG_PORT=${PG_PORT:-15433}
"$BIN" --lake "$DIR/lake" serve --http "127.0.0.1:$HTTP_PORT" --postgres "127.0.0.1:$PG_PORT" > "$OUT/serve.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done

SQL="SELECT region, year, month, CAST(SUM(amount_usd) AS DECIMAL(18,2)) AS revenue_usd, COUNT(*) AS sales FROM fact_sales WHERE status = 'COMPLETED' GROUP BY region, year, month ORDER BY region, year, month"
LUA=$(mktemp --suffix .lua)
python3 - "$SQL" > "$LUA" <<'PY'
import json, sys
body = json.dumps({"sql": sys.argv[1]})
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print(f'wrk.body = {json.dumps(body)}')
print('done = function(summary, latency, requests)')
print('  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d non_2xx=%d timeouts=%d socket_errors=%d\\n",')
print('    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,')
print('    summary.requests, summary.errors.status, summary.errors.timeout, summary.errors.connect + summary.errors.read + summary.errors.write))')
print('end')
PY
ROWS_BACK=$(curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d "$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$SQL")" \
  "http://127.0.0.1:$HTTP_PORT/api/v1/sql" | python3 -c 'import json,sys; print(json.load(sys.stdin)["row_count"])')
echo "query returns $ROWS_BACK rows over $ROWS sales rows; wrk ${SECS}s, $CONNS connections, 2 threads"
for who in admin analyst; do
  T=$ADMIN; [ $who = analyst ] && T=$ANALYST
  # A timeout well above any latency: wrk's default (2 s) would abandon requests the server
  # then still answers, and count them as errors.
  R=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 60s --latency -s "$LUA" -H "Authorization: Bearer $T" \
      "http://127.0.0.1:$HTTP_PORT/api/v1/sql" | grep '^RESULT')
  echo "$who: ${R#RESULT }"
done
rm -f "$LUA"
