#!/usr/bin/env python3
"""The dashboard queries on a shoplake lake's processed tables: DuckDB against shoplake.

    python3 bench/dashboard_queries.py LAKE [--bin SHOPLAKE] [--runs 5] [--threads 2] [--json FILE]

Five dashboard queries (revenue by region and month, top 10 products, weekday vs weekend
revenue, refund rate by month, top 10 customers) run on `fact_sales` twice:

- in DuckDB, over the Parquet files the table's Delta log lists (LAKE/processed/fact_sales:
  newest checkpoint, then the JSON commits after it; files added and not removed), with the
  partition values (region, year, month) as columns;
- in shoplake, through its CLI: `shoplake --lake LAKE sql --format json QUERY`, one process per
  query (start-up and opening the lake included), and inside one `shoplake sql` session (its
  prompt reads statements from stdin and reports each one's time, "N rows in T ms"), which
  leaves the start-up out.

DuckDB and the session take turns: after a warm-up run of the query in each, every timed run of
DuckDB is paired with one in the session, right before or after it (the order alternates), so
both engines are timed under the same load on the machine; a drift in its speed over the
minutes of a benchmark no longer lands on one engine only. Each timing is the best of --runs
runs; the median of the pairs' ratios is printed too, as a measure of the spread. The results
must agree exactly: every sum of money is cast to text in the SQL, so decimals are compared as
written. It prints a table (query, DuckDB ms, shoplake ms in the session, ratio of the bests,
median ratio, shoplake CLI ms, the CLI's ratio) and exits 0 when every result agrees, 1 when
one does not (the differences go to stderr), 2 on a usage or runtime error. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urlparse

try:
    import duckdb
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("dashboard_queries.py needs the duckdb Python package: pip install duckdb\n")
    sys.exit(2)

TABLE = "fact_sales"
TABLE_DIR = Path("processed") / TABLE

# The business rules of crates/marts/src/model.rs: a sale is a completed line that is not an
# outlier; a refund is a refunded line (never counted as a sale).
IS_SALE = "status = 'COMPLETED' AND NOT is_outlier"
IS_REFUND = "status = 'REFUNDED'"

# Written once for both engines (DuckDB and shoplake's DataFusion read the same SQL). Money is
# cast to text so that it compares exactly; the refund rate is a double (the two engines divide
# decimals differently: DuckDB gives a double, DataFusion a decimal truncated to 6 places), from
# the exact sums. Ties are broken by id so that the top 10 are the same rows in both.
QUERIES = {
    "revenue by region, month": f"""
        SELECT region, year, month, COUNT(*) AS sales,
               CAST(SUM(amount_usd) AS VARCHAR) AS revenue_usd
        FROM {TABLE} WHERE {IS_SALE}
        GROUP BY region, year, month
        ORDER BY region, year, month""",
    "top 10 products": f"""
        SELECT product_id, COUNT(*) AS sales, CAST(SUM(amount_usd) AS VARCHAR) AS revenue_usd
        FROM {TABLE} WHERE {IS_SALE}
        GROUP BY product_id
        ORDER BY SUM(amount_usd) DESC, product_id
        LIMIT 10""",
    # Day of week of sales_date: 0 = Sunday ... 6 = Saturday in both engines.
    "weekday vs weekend": f"""
        SELECT CASE WHEN EXTRACT(DOW FROM sales_date) IN (0, 6) THEN 'weekend' ELSE 'weekday'
               END AS day_type,
               COUNT(*) AS sales, CAST(SUM(amount_usd) AS VARCHAR) AS revenue_usd
        FROM {TABLE} WHERE {IS_SALE}
        GROUP BY CASE WHEN EXTRACT(DOW FROM sales_date) IN (0, 6) THEN 'weekend'
                 ELSE 'weekday' END
        ORDER BY day_type""",
    "refund rate by month": f"""
        SELECT year, month,
               CAST(SUM(CASE WHEN {IS_SALE} THEN amount_usd ELSE 0 END) AS VARCHAR) AS sales_usd,
               CAST(SUM(CASE WHEN {IS_REFUND} THEN amount_usd ELSE 0 END) AS VARCHAR)
                   AS refunded_usd,
               CAST(CAST(SUM(CASE WHEN {IS_REFUND} THEN amount_usd ELSE 0 END) AS DOUBLE)
                    / CAST(SUM(CASE WHEN {IS_SALE} OR {IS_REFUND} THEN amount_usd ELSE 0 END)
                           AS DOUBLE) AS VARCHAR) AS refund_rate
        FROM {TABLE} WHERE {IS_SALE} OR {IS_REFUND}
        GROUP BY year, month
        ORDER BY year, month""",
    "top 10 customers": f"""
        SELECT customer_id, COUNT(*) AS sales, CAST(SUM(amount_usd) AS VARCHAR) AS revenue_usd
        FROM {TABLE} WHERE {IS_SALE} AND customer_id IS NOT NULL
        GROUP BY customer_id
        ORDER BY SUM(amount_usd) DESC, customer_id
        LIMIT 10""",
}
# The cost of a query that reads nothing: what a CLI timing spends on start-up.
TRIVIAL = "SELECT 1 AS one"


def one_line(sql: str) -> str:
    return " ".join(sql.split())


class Usage(Exception):
    """A problem the user can fix; the message says how."""


# --------------------------------------------------------------------------------------------
# The Delta log: which Parquet files make up the table now
# --------------------------------------------------------------------------------------------

DELTA_TYPES = {
    "string": "VARCHAR", "integer": "INTEGER", "long": "BIGINT", "short": "SMALLINT",
    "byte": "TINYINT", "boolean": "BOOLEAN", "double": "DOUBLE", "float": "FLOAT",
    "date": "DATE", "timestamp": "TIMESTAMPTZ", "timestamp_ntz": "TIMESTAMP", "binary": "BLOB",
}


def delta_type(t) -> str:
    if isinstance(t, str) and t in DELTA_TYPES:
        return DELTA_TYPES[t]
    if isinstance(t, str) and t.startswith("decimal("):
        return t.upper()
    raise Usage(f"partition column type {t!r} is not supported by this script")


def file_path(table_dir: Path, path: str) -> Path:
    """A path of an add/remove action: relative to the table and URL-encoded, or a file URI."""
    url = urlparse(path)
    if url.scheme == "file":
        return Path(unquote(url.path))
    if url.scheme:
        raise Usage(f"{path}: only local files are supported")
    return table_dir / unquote(path)


def read_delta_log(con, table_dir: Path) -> tuple[dict[str, dict], list[str], dict]:
    """(live files: path -> partition values, partition columns, column types) of a Delta
    table: the newest checkpoint, then every JSON commit after it, adds minus removes."""
    log = table_dir / "_delta_log"
    if not log.is_dir():
        raise Usage(f"{log} does not exist: is {table_dir.parent.parent} a shoplake lake that "
                    "has run? (`shoplake --lake LAKE ingest DATA && shoplake --lake LAKE run`)")
    files: dict[str, dict] = {}
    state: dict = {}

    def apply_action(action: dict) -> None:
        if action.get("add"):
            add = action["add"]
            if add.get("deletionVector"):
                raise Usage(f"{add['path']}: deletion vectors are not supported by this script")
            files[add["path"]] = add.get("partitionValues") or {}
        elif action.get("remove"):
            files.pop(action["remove"]["path"], None)
        elif action.get("metaData"):
            state["metaData"] = action["metaData"]

    checkpoint = -1
    last = log / "_last_checkpoint"
    if last.is_file():
        checkpoint = int(json.loads(last.read_text())["version"])
    else:
        found = [int(p.name.split(".")[0]) for p in log.glob("*.checkpoint*.parquet")]
        checkpoint = max(found, default=-1)
    if checkpoint >= 0:
        parts = sorted(log.glob(f"{checkpoint:020d}.checkpoint*.parquet"))
        if not parts:
            raise Usage(f"{log}: checkpoint {checkpoint} is named in _last_checkpoint but its "
                        "Parquet file is missing")
        names = [str(p) for p in parts]
        columns = {d[0] for d in con.execute(
            "SELECT * FROM read_parquet(?, union_by_name = true) LIMIT 0", [names]).description}
        # One action per row; as JSON, the same shape as in the commits.
        for kind in ("add", "metaData"):
            if kind not in columns:
                continue
            for (text,) in con.execute(
                    f'SELECT to_json("{kind}") FROM read_parquet(?, union_by_name = true) '
                    f'WHERE "{kind}" IS NOT NULL', [names]).fetchall():
                apply_action({kind: json.loads(text)})
    commits = sorted((int(p.stem), p) for p in log.glob("*.json")
                     if p.stem.isdigit() and int(p.stem) > checkpoint)
    for _, commit in commits:
        for line in commit.read_text().splitlines():
            if line.strip():
                apply_action(json.loads(line))
    metadata = state.get("metaData")
    if metadata is None:
        raise Usage(f"{log}: no metaData action: not a readable Delta table")
    schema = {f["name"]: f["type"] for f in json.loads(metadata["schemaString"])["fields"]}
    partition_columns = list(metadata.get("partitionColumns") or [])
    return files, partition_columns, schema


def create_view(con, lake: Path, hive: bool = True) -> int:
    """CREATE VIEW fact_sales over the table's live files; returns how many there are.
    (hive=False: one scan per partition even when the folders name the partition values.)"""
    table_dir = lake / TABLE_DIR
    files, partition_columns, schema = read_delta_log(con, table_dir)
    if not files:
        raise Usage(f"{table_dir}: the Delta log lists no live files (an empty table)")
    types = {c: delta_type(schema[c]) for c in partition_columns}
    paths = {p: file_path(table_dir, p) for p in files}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise Usage(f"{len(missing)} file(s) the Delta log lists are missing, e.g. {missing[0]}")

    def hive_values(p: str) -> dict:
        return dict(seg.split("=", 1) for seg in unquote(p).split("/")[:-1] if "=" in seg)

    # The usual layout: every file under col=value folders that match its partition values.
    # Then DuckDB's hive partitioning reads them; else one scan per partition, with constants.
    if hive and all(pv.get(c) is not None and hive_values(p).get(c) == pv[c]
           for p, pv in files.items() for c in partition_columns):
        hive_types = "{" + ", ".join(f"'{c}': '{t}'" for c, t in types.items()) + "}"
        con.execute(f"""CREATE OR REPLACE VIEW {TABLE} AS SELECT * FROM read_parquet(
            {[str(p) for p in paths.values()]!r}, hive_partitioning = true,
            hive_types = {hive_types})""")
        return len(files)
    by_partition: dict[tuple, list[str]] = {}
    for p, pv in files.items():
        by_partition.setdefault(tuple(pv.get(c) for c in partition_columns), []).append(
            str(paths[p]))
    selects = []
    for values, group in by_partition.items():
        consts = ", ".join(
            f"CAST({'NULL' if v is None else repr(v)} AS {types[c]}) AS \"{c}\""
            for c, v in zip(partition_columns, values))
        selects.append(f"SELECT *{', ' + consts if consts else ''} "
                       f"FROM read_parquet({group!r}, hive_partitioning = false)")
    con.execute(f"CREATE OR REPLACE VIEW {TABLE} AS " + "\nUNION ALL BY NAME\n".join(selects))
    return len(files)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def best_of(runs: int, fn):
    """(best seconds of `runs` runs after one warm-up, the last result)."""
    result = fn()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def duckdb_rows(con, sql: str) -> list[list]:
    return [list(r) for r in con.execute(sql).fetchall()]


def cli_rows(bin_path: str, lake: Path, sql: str) -> list[list]:
    proc = subprocess.run([bin_path, "--lake", str(lake), "-q", "sql", "--format", "json", sql],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise Usage(f"shoplake sql failed (exit {proc.returncode}) on: {one_line(sql)}\n"
                    f"{proc.stderr.strip()}")
    out = proc.stdout.strip()
    return [list(r.values()) for r in json.loads(out)] if out else []


# The prompt's report after each statement: "N rows in 12.3 ms", or "in 1.23 s" past a second
# (builds before 2026-11-23 wrote "in 0.012s").
TIMING_LINE = re.compile(r"^(\d+) rows? in ([0-9.]+) ?(ms|s)$")


class Session:
    """One `shoplake sql` process, fed one statement at a time on stdin; each statement's time
    is the one its prompt reports on stderr. Results go to /dev/null."""

    def __init__(self, bin_path: str, lake: Path):
        self.proc = subprocess.Popen(
            [bin_path, "--lake", str(lake), "-q", "sql"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
        # The last lines of its stderr, for the message when it ends early.
        self.seen: deque[str] = deque(maxlen=20)

    def time(self, sql: str) -> float:
        """Seconds the session reports for `sql`."""
        try:
            self.proc.stdin.write(f"{one_line(sql)};\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the process has ended: reading stderr below says how
        for line in self.proc.stderr:
            line = line.strip()
            self.seen.append(line)
            if line.startswith("error:"):
                raise Usage(f"shoplake sql failed on: {one_line(sql)}\n{line}")
            m = TIMING_LINE.match(line)
            if m:
                return float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        code = self.proc.wait()
        raise Usage(f"the `shoplake sql` session ended (exit {code}) before reporting a time "
                    f"for: {one_line(sql)}; its stderr:\n" + "\n".join(self.seen))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\\q\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def paired(runs: int, duckdb_run, session_run) -> tuple[float, float, float, list]:
    """(DuckDB's best seconds, the session's best, the median of the pairs' ratios, DuckDB's
    last result) over `runs` pairs of runs after one warm-up of each; who goes first
    alternates."""
    def duckdb_time() -> tuple[float, list]:
        t = time.perf_counter()
        result = duckdb_run()
        return time.perf_counter() - t, result

    _, result = duckdb_time()
    session_run()
    pairs = []
    for r in range(runs):
        if r % 2 == 0:
            d, result = duckdb_time()
            s = session_run()
        else:
            s = session_run()
            d, result = duckdb_time()
        pairs.append((d, s))
    ratios = sorted(s / d for d, s in pairs)
    return (min(d for d, _ in pairs), min(s for _, s in pairs), ratios[len(ratios) // 2],
            result)


def same(a: list[list], b: list[list]) -> list[str]:
    """Differences between two results, row by row (values compared as text)."""
    if len(a) != len(b):
        return [f"{len(a)} rows vs {len(b)} rows"]
    diffs = []
    for i, (ra, rb) in enumerate(zip(a, b)):
        ta, tb = [str(v) for v in ra], [str(v) for v in rb]
        if ta != tb:
            diffs.append(f"row {i + 1}: duckdb {ta} vs shoplake {tb}")
    return diffs


def find_binary(arg: str | None) -> str:
    candidates = [arg] if arg else [
        os.environ.get("SHOPLAKE_BIN"),
        str(Path(__file__).resolve().parent.parent / "target" / "release" / "shoplake"),
        shutil.which("shoplake"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise Usage("no shoplake binary: build one (`cargo build --release -p shoplake`) and pass "
                "--bin target/release/shoplake, or set SHOPLAKE_BIN"
                + (f" ({arg} is not an executable file)" if arg else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Time the dashboard queries on a lake's fact_sales in DuckDB (over the "
                    "Parquet files of its Delta log) and in shoplake, and check the results "
                    "agree.")
    ap.add_argument("lake", type=Path, help="the lake root (shoplake --lake)")
    ap.add_argument("--bin", help="the shoplake binary (default: $SHOPLAKE_BIN, "
                                  "target/release/shoplake, or shoplake on PATH)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query, after one "
                                                         "warm-up; the best counts (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    ap.add_argument("--json", type=Path, help="also write the results to this file as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    lake = args.lake.resolve()
    con = duckdb.connect(":memory:")
    try:
        bin_path = find_binary(args.bin)
        if not lake.is_dir():
            raise Usage(f"{lake} is not a folder: pass the lake root (the folder holding "
                        "processed/)")
        con.execute(f"SET threads = {int(args.threads)}")
        con.execute("SET enable_progress_bar = false")
        n_files = create_view(con, lake)

        names = list(QUERIES)
        session = Session(bin_path, lake)
        try:
            trivial_session = min(session.time(TRIVIAL) for _ in range(1 + args.runs))
            trivial_cli, _ = best_of(args.runs, lambda: cli_rows(bin_path, lake, TRIVIAL))
            rows, problems = [], []
            for name in names:
                sql = QUERIES[name]
                d_s, s_s, median, d_rows = paired(args.runs, lambda: duckdb_rows(con, sql),
                                                  lambda: session.time(sql))
                c_s, c_rows = best_of(args.runs, lambda: cli_rows(bin_path, lake, sql))
                diffs = same(d_rows, c_rows)
                problems += [f"{name}: {d}" for d in diffs]
                rows.append({"query": name, "duckdb_ms": d_s * 1000, "shoplake_ms": s_s * 1000,
                             "median_ratio": median, "shoplake_cli_ms": c_s * 1000,
                             "rows": len(d_rows), "agree": not diffs})
        finally:
            session.close()
    except Usage as e:
        sys.stderr.write(f"dashboard_queries.py: {e}\n")
        return 2
    except (duckdb.Error, OSError) as e:
        sys.stderr.write(f"dashboard_queries.py failed: {e}\n")
        return 2
    finally:
        con.close()

    print(f"lake: {lake}  ({TABLE}: {n_files} Parquet files in the Delta log)")
    print(f"DuckDB {duckdb.__version__}, {args.threads} threads; shoplake: {bin_path}; "
          f"best of {args.runs} runs after a warm-up")
    print(f"{'query':<26}{'duckdb ms':>11}{'shoplake ms':>13}{'ratio':>7}{'median':>8}"
          f"{'CLI ms':>9}{'CLI ratio':>11}  result")
    for r in rows:
        print(f"{r['query']:<26}{r['duckdb_ms']:>11.1f}{r['shoplake_ms']:>13.1f}"
              f"{r['shoplake_ms'] / r['duckdb_ms']:>6.2f}x{r['median_ratio']:>7.2f}x"
              f"{r['shoplake_cli_ms']:>9.1f}{r['shoplake_cli_ms'] / r['duckdb_ms']:>10.2f}x  "
              f"{'agree' if r['agree'] else 'DIFFER'} ({r['rows']} rows)")
    print(f"{'SELECT 1 (start-up)':<26}{'':>11}{trivial_session * 1000:>13.1f}{'':>15}"
          f"{trivial_cli * 1000:>9.1f}")
    print("ratio: best against best; median: of the ratios of the runs paired in time. shoplake "
          "ms: inside one `shoplake sql` session; CLI ms: one `shoplake sql --format json` "
          "process per query, start-up and lake opening included.")
    if args.json:
        args.json.write_text(json.dumps({
            "lake": str(lake), "files": n_files, "runs": args.runs, "threads": args.threads,
            "duckdb_version": duckdb.__version__, "queries": rows,
            "select_1": {"shoplake_ms": trivial_session * 1000,
                         "shoplake_cli_ms": trivial_cli * 1000},
            "agree": not problems}, indent=2) + "\n")
    if problems:
        sys.stderr.write(f"MISMATCH: DuckDB and shoplake disagree ({len(problems)}):\n")
        for p in problems:
            sys.stderr.write(f"  - {p}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
