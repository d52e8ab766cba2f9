#!/usr/bin/env bash
# The lake-core benchmark: shoplake and DuckDB doing the same ETL on the same generated files.
#
#   bench/run.sh [ROWS]          ROWS sales rows (default 10,000,000)
#
# Builds shoplake in release mode (or PROFILE=quick), generates the data once per size (bench/out/data-ROWS), then
# times, each in a fresh output folder:
#   shoplake ingest   copy + hash + gzip check into the raw zone (work DuckDB does not do)
#   shoplake run      crawl, validate, quarantine, dedupe, FX, enrich, Delta star schema
#   duckdb            bench/duckdb_etl.py: the same rules on the same files, partitioned zstd Parquet
# and prints wall time, peak resident memory and rows per second side by side. Both tools'
# counts are checked against the generator's manifest, so only equal work is compared.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
OUT=${BENCH_OUT:-bench/out}
DATA="$OUT/data-$ROWS"
mkdir -p "$OUT"

PROFILE=${PROFILE:-release}   # PROFILE=quick: the same optimisation without LTO, builds faster
echo "== building shoplake ($PROFILE)" >&2
cargo build --profile "$PROFILE" -p shoplake >&2
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/shoplake
python3 -c "import duckdb" 2>/dev/null || pip install --quiet duckdb >&2

if [ ! -f "$DATA/manifest.json" ]; then
  echo "== generating $ROWS rows into $DATA" >&2
  "$BIN" generate --rows "$ROWS" --out "$DATA" >&2
fi

measure() { # label, command...: prints "label wall_s peak_kb"
  local label=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$t" "$@" >"$OUT/$label.log" 2>&1 || { echo "$label failed; see $OUT/$label.log" >&2; cat "$OUT/$label.log" >&2; exit 1; }
  echo "$label $(cat "$t")"
  rm -f "$t"
}

sync
LAKE="$OUT/lake-$ROWS"
rm -rf "$LAKE" "$OUT/duckdb-$ROWS"
R1=$(measure shoplake-ingest "$BIN" --lake "$LAKE" --quiet ingest "$DATA")
# The ETL alone, as DuckDB does it; the marts refresh that `run` ends with is timed on its own.
printf '[marts]\nrefresh_on_run = false\n' > "$OUT/bench.toml"
R2=$(measure shoplake-run "$BIN" --lake "$LAKE" --config "$OUT/bench.toml" --quiet run)
R2M=$(measure shoplake-marts "$BIN" --lake "$LAKE" --quiet marts refresh)
R3=$(measure duckdb python3 bench/duckdb_etl.py "$DATA" "$OUT/duckdb-$ROWS" --threads 2)

# shoplake's counts against the manifest.
"$BIN" --lake "$LAKE" sql --format json \
  "SELECT SUM(rows_loaded) AS loaded, SUM(rows_duplicate) AS duplicates, SUM(rows_quarantined) AS quarantined FROM files WHERE entity = 'sales'" \
  > "$OUT/shoplake-counts.json"
python3 - "$DATA/manifest.json" "$OUT/shoplake-counts.json" "$ROWS" "$R1" "$R2" "$R2M" "$R3" <<'PY'
import json, sys
manifest, counts, rows = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))[0], int(sys.argv[3])
e = manifest["expected"]
want = (e["loaded"], e["duplicates"], sum(e["quarantined"].values()))
got = (int(counts["loaded"]), int(counts["duplicates"]), int(counts["quarantined"]))
print(f"rows: {rows:,}   shoplake counts (loaded, duplicates, quarantined) {got} "
      f"{'== manifest' if got == want else '!= manifest ' + str(want)}")
print(f"{'step':<18}{'wall s':>10}{'peak MB':>10}{'rows/s':>14}")
results = {}
for line in sys.argv[4:]:
    label, wall, kb = line.split()
    results[label] = float(wall)
    print(f"{label:<18}{float(wall):>10.1f}{int(kb) / 1024:>10.0f}{rows / float(wall):>14,.0f}")
print(f"shoplake run / duckdb: {results['shoplake-run'] / results['duckdb']:.2f}x wall time")
sys.exit(0 if got == want else 1)
PY
