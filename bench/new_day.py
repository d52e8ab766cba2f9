#!/usr/bin/env python3
"""One new day of store sales, for the incremental-load benchmark.

    python3 bench/new_day.py DATA_DIR OUT_DIR [--date YYYY-MM-DD] [--rows N]

`shoplake generate` has no option for a start date or a number of days, so this takes one day's
worth of rows from DATA_DIR's generated store sales (the first rows of store_sales files, in
name order), gives them new transaction ids, and dates them the day after the data's last day:

  OUT_DIR/store_sales/store_sales_<date>.csv   the new day: the same columns, defects and mix
                                               (rows with a bad date keep it and are quarantined)
  OUT_DIR/fx_rates/fx_rates_<yyyy-mm>.csv      the new month's rates: each currency's latest
                                               (only when the new day opens a month without rates)

One day's worth = the generated sales rows (manifest.json) / the days they span. The last day
and the span are read from the dates of the first store_sales file, which covers every day of
the range at any size the generator makes. Prints one JSON line: date, rows, files.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def store_files(data_dir: Path) -> list[Path]:
    folder = data_dir / "store_sales"
    files = sorted(p for p in folder.glob("*") if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise SystemExit(f"new_day.py: no store_sales/*.csv[.gz] under {data_dir}: pass a "
                         "folder written by `shoplake generate`")
    return files


def parse_iso(text: str) -> date | None:
    if not ISO_DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:  # 2025-02-30 and the like: the generator's bad dates
        return None


def date_range(path: Path) -> tuple[date, date]:
    with open_text(path) as f:
        days = [d for d in (parse_iso(r["sales_date"]) for r in csv.DictReader(f)) if d]
    if not days:
        raise SystemExit(f"new_day.py: no valid sales_date in {path}")
    return min(days), max(days)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write one new day of store sales (new ids, the "
                                             "day after the data's last day) for an "
                                             "incremental load.")
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--date", type=date.fromisoformat,
                    help="the new day (default: the day after the data's last day)")
    ap.add_argument("--rows", type=int, help="rows to write (default: one day's worth)")
    args = ap.parse_args(argv)

    files = store_files(args.data_dir)
    first, last = date_range(files[0])
    day = args.date or last + timedelta(days=1)
    rows = args.rows
    if rows is None:
        manifest = args.data_dir / "manifest.json"
        if not manifest.is_file():
            raise SystemExit(f"new_day.py: {manifest} is missing; pass --rows N")
        total = json.loads(manifest.read_text())["sales_rows_in"]
        rows = max(1, round(total / ((last - first).days + 1)))

    shutil.rmtree(args.out_dir, ignore_errors=True)
    sales_out = args.out_dir / "store_sales" / f"store_sales_{day.isoformat()}.csv"
    sales_out.parent.mkdir(parents=True)
    written = 0
    with open(sales_out, "w", encoding="utf-8", newline="") as out:
        writer = None
        for path in files:
            with open_text(path) as f:
                reader = csv.DictReader(f)
                if writer is None:
                    writer = csv.DictWriter(out, fieldnames=reader.fieldnames,
                                            lineterminator="\n")
                    writer.writeheader()
                for r in reader:
                    written += 1
                    r["transaction_id"] = f"S{day:%Y%m%d}{written:08d}"
                    if parse_iso(r["sales_date"]):
                        r["sales_date"] = day.isoformat()
                    writer.writerow(r)
                    if written == rows:
                        break
            if written == rows:
                break
    out_files = [str(sales_out)]

    # The new month needs its rates, or every non-USD sale of the day would lack one. (The
    # generator leaves JPY out of the last month on purpose; its latest rate is older.)
    fx_in = args.data_dir / "fx_rates" / "fx_rates.csv"
    month, last_month = f"{day:%Y-%m}", f"{last:%Y-%m}"
    if fx_in.is_file() and month != last_month:
        with open(fx_in, encoding="utf-8", newline="") as f:
            rates = [r for r in csv.DictReader(f)]
        if not any(r["month"].strip() == month for r in rates):
            fx_out = args.out_dir / "fx_rates" / f"fx_rates_{month}.csv"
            fx_out.parent.mkdir(parents=True)
            with open(fx_out, "w", encoding="utf-8", newline="") as out:
                w = csv.DictWriter(out, fieldnames=["currency", "month", "rate_to_usd"],
                                   lineterminator="\n")
                w.writeheader()
                latest = {}  # currency -> its rate of the latest month that has one
                for r in sorted(rates, key=lambda r: r["month"].strip()):
                    latest[r["currency"]] = r["rate_to_usd"]
                for currency, rate in latest.items():
                    w.writerow({"currency": currency, "month": month, "rate_to_usd": rate})
            out_files.append(str(fx_out))

    print(json.dumps({"date": day.isoformat(), "rows": written, "files": out_files}))
    if written < rows:
        sys.stderr.write(f"new_day.py: only {written} store sales rows to copy, {rows} asked\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
