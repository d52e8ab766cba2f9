#!/usr/bin/env bash
# The lake-core benchmark: shoplake, DuckDB and Polars doing the same ETL on the same generated files.
#
#   bench/run.sh [ROWS]          ROWS sales rows (default 10,000,000; the issue's sizes: 1000000, 10000000, 50000000)
#
# Builds shoplake in release mode (or PROFILE=quick; BIN_OVERRIDE=path uses that binary and builds nothing),
# generates the data once per size (BENCH_OUT/data-ROWS, BENCH_OUT defaults to bench/out), then times, each in a
# fresh output folder:
#   shoplake ingest   copy + hash + gzip check into the raw zone (work DuckDB does not do)
#   shoplake run      crawl, validate, quarantine, dedupe, FX, enrich, Delta star schema
#   shoplake marts    the marts refresh `run` ends with, on its own (builds that have it)
#   duckdb            bench/duckdb_etl.py: the same rules on the same files, partitioned zstd Parquet
#   polars            bench/polars_etl.py: the same in Polars
#   floor             reading the input bytes from the page cache (after a warm-up read)
#   incremental       one new day of store sales (bench/new_day.py) ingested and run into the lake above
# and prints wall time, CPU time, peak resident memory, rows per second and the ratio to DuckDB. All three
# tools' counts are checked against the generator's manifest, so only equal work is compared. Then the
# dashboard queries (bench/dashboard_queries.py) run on the lake's fact_sales in DuckDB and shoplake.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
OUT=${BENCH_OUT:-bench/out}
DATA="$OUT/data-$ROWS"
mkdir -p "$OUT"

source bench/_shoplake.sh
shoplake_bin
python3 -c "import duckdb" 2>/dev/null || pip install --quiet duckdb >&2
python3 -c "import polars" 2>/dev/null || pip install --quiet polars >&2

if [ ! -f "$DATA/manifest.json" ]; then
  echo "== generating $ROWS rows into $DATA" >&2
  "$BIN" generate --rows "$ROWS" --out "$DATA" >&2
fi

measure() { # label, command...: prints "label wall_s peak_kb user_s sys_s"
  local label=$1; shift
  local t; t=$(mktemp)
  echo "== $label" >&2
  # Wall time from the clock in ns (/usr/bin/time's %e counts 10 ms steps); CPU and peak memory
  # from /usr/bin/time.
  local start end; start=$(date +%s%N)
  /usr/bin/time -f "%M %U %S" -o "$t" "$@" >"$OUT/$label.log" 2>&1 || { echo "$label failed; see $OUT/$label.log" >&2; cat "$OUT/$label.log" >&2; exit 1; }
  end=$(date +%s%N)
  echo "$label $(( (end - start) / 1000000000 )).$(printf '%03d' $(( (end - start) / 1000000 % 1000 ))) $(cat "$t")"
  rm -f "$t"
}

sync
LAKE="$OUT/lake-$ROWS"
rm -rf "$LAKE" "$OUT/duckdb-$ROWS" "$OUT/polars-$ROWS"
R1=$(measure shoplake-ingest "$BIN" --lake "$LAKE" --quiet ingest "$DATA")
# The ETL alone, as DuckDB does it; the marts refresh that `run` ends with is timed on its own.
# (A build without marts, older than the marts issue, knows neither the setting nor the command.)
RUN_CONFIG=() MARTS=()
if "$BIN" marts --help >/dev/null 2>&1; then
  printf '[marts]\nrefresh_on_run = false\n' > "$OUT/bench.toml"
  RUN_CONFIG=(--config "$OUT/bench.toml")
fi
R2=$(measure shoplake-run "$BIN" --lake "$LAKE" "${RUN_CONFIG[@]}" --quiet run)
if [ ${#RUN_CONFIG[@]} -gt 0 ]; then
  MARTS=("$(measure shoplake-marts "$BIN" --lake "$LAKE" --quiet marts refresh)")
fi
# shoplake's counts against the manifest (before the incremental load adds a file).
"$BIN" --lake "$LAKE" sql --format json \
  "SELECT SUM(rows_loaded) AS loaded, SUM(rows_duplicate) AS duplicates, SUM(rows_quarantined) AS quarantined FROM files WHERE entity = 'sales'" \
  > "$OUT/shoplake-counts.json"
R3=$(measure duckdb python3 bench/duckdb_etl.py "$DATA" "$OUT/duckdb-$ROWS" --threads 2)
R4=$(measure polars python3 bench/polars_etl.py "$DATA" "$OUT/polars-$ROWS" --threads 2)

# The floor: every input byte read once, from the page cache (the warm-up read puts it there).
read_inputs() { find "$1/" -type f ! -name manifest.json -exec cat {} + > /dev/null; }
export -f read_inputs
read_inputs "$DATA"
R5=$(measure floor bash -c 'read_inputs "$1"' _ "$DATA")
INPUT_BYTES=$(find "$DATA/" -type f ! -name manifest.json -printf '%s\n' | awk '{s += $1} END {print s}')

# Incremental: one new day into the lake that holds ROWS rows.
NEWDAY="$OUT/newday-$ROWS"
NEWDAY_JSON=$(python3 bench/new_day.py "$DATA" "$NEWDAY")
NEW_ROWS=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["rows"])' "$NEWDAY_JSON")
LAST_FILE=$("$BIN" --lake "$LAKE" sql --format csv "SELECT MAX(file_id) AS last FROM files" | tail -n 1)
R6=$(measure incr-ingest "$BIN" --lake "$LAKE" --quiet ingest "$NEWDAY")
R7=$(measure incr-run "$BIN" --lake "$LAKE" "${RUN_CONFIG[@]}" --quiet run)
"$BIN" --lake "$LAKE" sql --format json \
  "SELECT SUM(rows_in) AS rows_in, SUM(rows_loaded) AS loaded, SUM(rows_duplicate) AS duplicates, SUM(rows_quarantined) AS quarantined FROM files WHERE entity = 'sales' AND file_id > $LAST_FILE" \
  > "$OUT/incr-counts.json"

set +e
python3 - "$DATA/manifest.json" "$OUT/shoplake-counts.json" "$OUT/incr-counts.json" "$ROWS" "$NEW_ROWS" "$INPUT_BYTES" \
  "$R1" "$R2" "${MARTS[@]}" "$R3" "$R4" "$R5" "$R6" "$R7" <<'PY'
import json, sys
manifest, counts = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))[0]
incr = json.load(open(sys.argv[3]))[0]
rows, new_rows, input_bytes = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
e = manifest["expected"]
want = (e["loaded"], e["duplicates"], sum(e["quarantined"].values()))
got = (int(counts["loaded"]), int(counts["duplicates"]), int(counts["quarantined"]))
print(f"rows: {rows:,}   input: {input_bytes / 1e6:,.0f} MB   shoplake counts (loaded, duplicates, "
      f"quarantined) {got} {'== manifest' if got == want else '!= manifest ' + str(want)}")
print(f"incremental: {new_rows:,} new rows (one day) -> loaded {incr['loaded']}, duplicates "
      f"{incr['duplicates']}, quarantined {incr['quarantined']}")
results = {}
for line in sys.argv[7:]:
    label, wall, kb, user, sys_ = line.split()
    results[label] = (float(wall), int(kb), float(user) + float(sys_))
duck = results["duckdb"][0]
print(f"{'step':<18}{'wall s':>9}{'CPU s':>9}{'peak MB':>9}{'rows/s':>13}{'vs DuckDB':>11}")
for label, (wall, kb, cpu) in results.items():
    n = new_rows if label.startswith("incr-") else rows
    ratio = "" if label.startswith("incr-") else f"{wall / duck:.2f}x"
    print(f"{label:<18}{wall:>9.2f}{cpu:>9.2f}{kb / 1024:>9.0f}{n / max(wall, 1e-3):>13,.0f}{ratio:>11}")
print(f"shoplake run / duckdb: {results['shoplake-run'][0] / duck:.2f}x wall time; "
      f"polars / duckdb: {results['polars'][0] / duck:.2f}x")
floor = results["floor"][0]
print(f"floor: {input_bytes / 1e6:,.0f} MB of input read from the page cache in {floor:.2f} s "
      f"({input_bytes / 1e6 / max(floor, 1e-3):,.0f} MB/s)")
print(f"incremental run: {results['incr-run'][0] / results['shoplake-run'][0] * 100:.1f}% of the "
      f"full run's wall time, for {new_rows / rows * 100:.2f}% of its rows")
sys.exit(0 if got == want else 1)
PY
RC=$?
set -e

echo "== dashboard queries" >&2
python3 bench/dashboard_queries.py "$LAKE" --bin "$BIN" --json "$OUT/dashboard-$ROWS.json" || RC=1
exit $RC
