"""Pieces shared by the ETL counterparts of the benchmark (duckdb_etl.py, polars_etl.py).

The sales sources and fields shoplake reads, the order the files are processed in, the value
lists of the rules (crates/core/src/values.rs), and the check of a run's counts against the
generator's manifest.json. Nothing here depends on DuckDB or Polars.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import sys
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Sources and files
# --------------------------------------------------------------------------------------------

# Sales sources in processing order, as in the generator's reference pipeline
# (crates/datagen/tests/it/main.rs): every store_sales file in name order, then every ecommerce
# file in name order. (shoplake's ledger orders by full path, which puts ecommerce first; the two
# sources' transaction ids never collide, S... vs E..., so the outcome is the same.)
SOURCES = ["store_sales", "ecommerce"]

# The fields the sales transform reads (crates/etl/src/sales.rs FIELDS), and the source column
# names the crawler maps onto them for the generated files.
FIELDS = [
    "transaction_id", "line_number", "sales_date", "customer_id", "product_id", "product_name",
    "store_id", "sales_person_id", "quantity", "unit_price", "amount", "currency", "region",
    "status", "channel", "campaign_id", "payment_method",
]
ALIASES = {
    "order_id": "transaction_id",
    "order_date": "sales_date",
    "price": "unit_price",
    "total_amount": "amount",
}


# Extensions shoplake reads (Format::from_file_name), by the reader a file needs.
def file_format(name: str) -> str | None:
    lower = name.lower()
    base = lower[:-3] if lower.endswith(".gz") else lower
    ext = base.rsplit(".", 1)[-1] if "." in base else ""
    if ext in ("csv", "tsv", "txt", "psv"):
        return "csv"
    if ext == "json":
        return "json"
    if ext in ("ndjson", "jsonl"):
        return "ndjson"
    return None


def sales_files(data_dir: Path) -> list[tuple[str, str, Path, str]]:
    """(source, relative path, absolute path, format) of every sales file, in processing order."""
    out = []
    for source in SOURCES:
        folder = data_dir / source
        if not folder.is_dir():
            continue
        names = sorted(
            n for n in os.listdir(folder)
            if not n.startswith(".") and (folder / n).is_file() and file_format(n)
        )
        for n in names:
            out.append((source, f"{source}/{n}", folder / n, file_format(n)))
    return out


def csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        line = f.readline()
    return next(csv.reader(io.StringIO(line)), [])


def canonical_columns(source_columns: list[str]) -> dict[str, str]:
    """canonical field -> source column (a canonical name wins over an alias)."""
    out: dict[str, str] = {}
    for c in source_columns:
        key = c.strip().lower()
        if key in FIELDS:
            out[key] = c
    for c in source_columns:
        key = ALIASES.get(c.strip().lower())
        if key and key not in out:
            out[key] = c
    return out


def default_channel(source: str) -> str:
    """Pipeline::default_channel: a source with an online-sounding name sells online."""
    online = ("ecom", "online", "web", "shop", "order", "app")
    return "ecommerce" if any(w in source for w in online) else "store"


# --------------------------------------------------------------------------------------------
# Value lists of the rules (crates/core/src/values.rs)
# --------------------------------------------------------------------------------------------

NULL_MARKERS = ["", "-", "null", "na", "n/a", "nan", "none", "nil", "#n/a"]
CURRENCIES = [
    "USD", "EUR", "GBP", "JPY", "CNY", "INR", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK",
    "PLN", "CZK", "HUF", "RON", "BGN", "TRY", "RUB", "BRL", "MXN", "ARS", "CLP", "COP", "PEN",
    "ZAR", "NGN", "EGP", "KES", "MAD", "AED", "SAR", "QAR", "ILS", "SGD", "HKD", "TWD", "KRW",
    "THB", "MYR", "IDR", "PHP", "VND", "PKR", "BDT", "LKR",
]
REGIONS = ["North", "South", "East", "West", "Central"]
STATUSES = ["COMPLETED", "REFUNDED", "CANCELLED", "PENDING", "OUT"]


# --------------------------------------------------------------------------------------------
# Output folder and the check against the manifest
# --------------------------------------------------------------------------------------------

def clear_outputs(out_dir: Path) -> None:
    """Create OUT_DIR and remove what an earlier run wrote there (only that)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "fact_sales", ignore_errors=True)
    (out_dir / "quarantine.parquet").unlink(missing_ok=True)


def check_dirs(data_dir: Path, no_check: bool) -> Path | None:
    """The manifest's path when the folders are usable, else None (the reason is on stderr)."""
    if not data_dir.is_dir():
        sys.stderr.write(f"{data_dir} is not a folder\n")
        return None
    manifest_path = data_dir / "manifest.json"
    if not no_check and not manifest_path.is_file():
        sys.stderr.write(f"{manifest_path} is missing; pass --no-check to run without it\n")
        return None
    return manifest_path


def new_per_file(files) -> dict[str, dict]:
    """Per-file counters, keyed by relative path, in processing order."""
    return {
        rel: {"rows_in": 0, "loaded": 0, "duplicates": 0, "quarantined": {}}
        for _, rel, _, _ in files
    }


def quarantined_total(per_file: dict[str, dict]) -> dict[str, int]:
    """Quarantined rows per reason over all files, reasons in name order."""
    out: dict[str, int] = {}
    for f in per_file.values():
        for k, v in f["quarantined"].items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def compare(counts: dict, manifest: dict, tool: str) -> list[str]:
    """Every difference between the run (of `tool`, named in the messages) and the generator's
    manifest."""
    problems = []
    exp = manifest.get("expected", {})
    for k in ("loaded", "duplicates"):
        if counts[k] != exp.get(k):
            problems.append(f"{k}: {tool} {counts[k]}, manifest {exp.get(k)}")
    reasons = sorted(set(counts["quarantined"]) | set(exp.get("quarantined", {})))
    for r in reasons:
        got, want = counts["quarantined"].get(r, 0), exp.get("quarantined", {}).get(r, 0)
        if got != want:
            problems.append(f"quarantined[{r}]: {tool} {got}, manifest {want}")
    for k in ("amount_filled", "outliers", "messy_region", "inferred_customer_rows",
              "inferred_product_rows", "inferred_customers", "inferred_products"):
        if k in exp and counts[k] != exp[k]:
            problems.append(f"{k}: {tool} {counts[k]}, manifest {exp[k]}")
    if "sales_rows_in" in manifest and counts["rows_in"] != manifest["sales_rows_in"]:
        problems.append(
            f"rows read: {tool} {counts['rows_in']}, manifest {manifest['sales_rows_in']}")
    if counts["fact_rows_written"] != counts["loaded"]:
        problems.append(
            f"fact_sales holds {counts['fact_rows_written']} rows, {counts['loaded']} loaded")
    if counts["quarantine_rows_written"] != sum(counts["quarantined"].values()):
        problems.append("quarantine.parquet row count differs from the quarantined rows")
    # Per file: which file a difference comes from.
    listed = {f["path"]: f for f in manifest.get("files", []) if f.get("expected") is not None}
    for path, got in counts["per_file"].items():
        f = listed.get(path)
        if f is None:
            problems.append(f"{path}: not in the manifest")
            continue
        want = f["expected"]
        diffs = []
        if got["rows_in"] != f.get("rows"):
            diffs.append(f"rows {got['rows_in']} vs {f.get('rows')}")
        for k in ("loaded", "duplicates"):
            if got[k] != want.get(k):
                diffs.append(f"{k} {got[k]} vs {want.get(k)}")
        if got["quarantined"] != want.get("quarantined", {}):
            diffs.append(f"quarantined {got['quarantined']} vs {want.get('quarantined', {})}")
        if diffs:
            problems.append(f"{path}: " + "; ".join(diffs))
    for path in sorted(set(listed) - set(counts["per_file"])):
        problems.append(f"{path}: in the manifest but not read")
    return problems


def report_mismatch(problems: list[str], manifest_path: Path, whose: str) -> None:
    """The differences found by compare(), on stderr; whose: "DuckDB's", "Polars'"."""
    sys.stderr.write(
        f"MISMATCH: {whose} counts differ from {manifest_path} "
        f"({len(problems)} difference{'s' if len(problems) != 1 else ''}):\n")
    for p in problems:
        sys.stderr.write(f"  - {p}\n")


def counts_of(per_file: dict[str, dict], totals, quarantine_rows: int, messy_region: int) -> dict:
    """The counts of a finished ETL: per-file outcomes summed, and `totals` read back from the
    written fact_sales: (rows, amount_filled, outliers, inferred customer rows, inferred product
    rows, inferred customers, inferred products, amount_usd total)."""
    return {
        "rows_in": sum(f["rows_in"] for f in per_file.values()),
        "loaded": sum(f["loaded"] for f in per_file.values()),
        "duplicates": sum(f["duplicates"] for f in per_file.values()),
        "quarantined": quarantined_total(per_file),
        "fact_rows_written": totals[0],
        "quarantine_rows_written": quarantine_rows,
        "amount_filled": totals[1],
        "outliers": totals[2],
        "messy_region": messy_region,
        "inferred_customer_rows": totals[3],
        "inferred_product_rows": totals[4],
        "inferred_customers": totals[5],
        "inferred_products": totals[6],
        "amount_usd_total": str(totals[7] if totals[7] is not None else "0.00"),
        "per_file": per_file,
    }


# The counts every ETL script reports, in the order of its JSON line.
REPORTED_COUNTS = (
    "rows_in", "loaded", "duplicates", "quarantined", "amount_filled", "outliers", "messy_region",
    "inferred_customer_rows", "inferred_product_rows", "inferred_customers", "inferred_products",
    "amount_usd_total",
)


def finish(tool: str, whose: str, head: dict, counts: dict, tail: dict, manifest_path: Path,
           no_check: bool) -> int:
    """Check the counts against the manifest (unless no_check), print the JSON result line
    (head, the counts, tail, the check) and return the exit code: 0, or 1 on a mismatch."""
    problems = [] if no_check else compare(counts, json.loads(manifest_path.read_text()), tool)
    result = {"tool": tool, **head, **{k: counts[k] for k in REPORTED_COUNTS}, **tail,
              "check": "skipped" if no_check else ("ok" if not problems else "mismatch")}
    print(json.dumps(result), flush=True)
    if problems:
        report_mismatch(problems, manifest_path, whose)
        return 1
    return 0

