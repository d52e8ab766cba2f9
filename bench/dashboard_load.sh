#!/usr/bin/env bash
# Page-load time of the dashboard in headless Chromium over a generated lake.
#
#   bench/dashboard_load.sh [ROWS]        default 10,000,000 sales rows
#
# Builds shoplake (PROFILE, BIN_OVERRIDE: see bench/_shoplake.sh), loads ROWS generated rows once into
# bench/out/dashboard-ROWS (generate, ingest, run with the marts), starts `shoplake serve`, waits
# for the dashboard cache to warm, and times in Chromium (tests/e2e/page_load.mjs) the sales page
# with all its charts: the default view, and a region filter the first time (computed) and after
# (cached). Also times each panel's query alone, uncached, over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
OUT=${BENCH_OUT:-bench/out}
DIR="$OUT/dashboard-$ROWS"
mkdir -p "$OUT"

bash scripts/deps/chromium.sh
bash scripts/deps/node.sh
source bench/_shoplake.sh
shoplake_bin
export SHOPLAKE_PII_KEY=bench
generated_lake "$DIR" "$ROWS"
TOKEN=$("$BIN" --lake "$DIR/lake" users token bench_admin 2>/dev/null | grep -o 'slk_[0-9a-f]*' ||
        "$BIN" --lake "$DIR/lake" users add bench_admin --role admin | grep -o 'slk_[0-9a-f]*')

HTTP_PORT=${HTTP_PORT:-18081}
PG_PORT=${PG_PORT:-15434}
LOG="$OUT/dashboard-serve.log"
SHOPLAKE_LOG=warn,shoplake_serve=info "$BIN" --lake "$DIR/lake" serve --http "127.0.0.1:$HTTP_PORT" --postgres "127.0.0.1:$PG_PORT" > "$LOG" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done
echo "== waiting for the dashboard cache to warm" >&2
for _ in $(seq 600); do grep -q "panels computed for the default view" "$LOG" && break; sleep 0.5; done
WARMED=$(grep -o "[0-9]* panels computed for the default view in [0-9.]*s" "$LOG" | head -1)
echo "warm-up after start: ${WARMED:-not logged (see $LOG)}"

# Each panel alone, uncached: a filter value no one asked for before makes the key new.
echo "panel query times, uncached (ms, server-side), over $ROWS sales rows:"
for p in kpis revenue_over_time by_region by_channel by_category top_products weekday top_customers new_returning coupon_tiers incentives sales_team campaigns; do
  ms=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP_PORT/api/v1/dashboard/$p?top=11" |
       python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["compute_ms"], "(cached)" if d["cached"] else "")')
  printf '  %-18s %s\n' "$p" "$ms"
done

SHOPLAKE_URL="http://127.0.0.1:$HTTP_PORT" TOKEN="$TOKEN" REGION=${REGION:-North} RUNS=${RUNS:-5} \
  node tests/e2e/page_load.mjs
