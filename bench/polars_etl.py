#!/usr/bin/env python3
"""Polars counterpart of shoplake's sales ETL, for benchmarks.

    python3 bench/polars_etl.py DATA_DIR OUT_DIR [--threads 2] [--temp-dir DIR] [--no-check]

The same work as bench/duckdb_etl.py, with the same rules, in Polars expressions (lazy frames,
the streaming engine): read every sales file of DATA_DIR (a folder written by `shoplake
generate`) with all columns as text -> validate (first failing check wins, the same reason
codes; staged to temporary Parquet files, one per sales file) -> de-duplicate the valid rows (first occurrence in file order wins) -> resolve products
by name, normalise region/status/channel, fill amounts, convert to USD with exact decimals
(scaled integers, rounded half away from zero), enrich -> write OUT_DIR/quarantine.parquet and
OUT_DIR/fact_sales/region=../year=../month=../*.parquet (zstd).

It prints one JSON line ("tool": "polars", loaded, duplicates, quarantined per reason, seconds,
...) and checks its counts against DATA_DIR/manifest.json: exit 0 when they agree, 1 with a
mismatch report on stderr when they do not, 2 on a usage or runtime error. Polars uses
--threads threads (POLARS_MAX_THREADS, default 2). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import (ALIASES, CURRENCIES, FIELDS, NULL_MARKERS, REGIONS, STATUSES,
                     canonical_columns, check_dirs, clear_outputs, counts_of, csv_header,
                     default_channel, finish, new_per_file, sales_files)

# Imported in main(), once POLARS_MAX_THREADS is set: Polars sizes its thread pool on import.
pl = None


def import_polars(threads: int) -> None:
    global pl
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    try:
        import polars
    except ImportError:  # pragma: no cover - depends on the machine
        sys.stderr.write("polars_etl.py needs the polars Python package: pip install polars\n")
        sys.exit(2)
    # PartitionBy (the partitioned sink) and join(maintain_order=) need a recent Polars.
    if not hasattr(polars, "PartitionBy"):
        sys.stderr.write(f"polars_etl.py needs polars >= 1.30 (found {polars.__version__}): "
                         "pip install -U polars\n")
        sys.exit(2)
    pl = polars


# --------------------------------------------------------------------------------------------
# The rules in Polars (crates/core/src/values.rs; the DuckDB macros `sl_*` of duckdb_etl.py,
# with the same fast paths)
# --------------------------------------------------------------------------------------------
#
# Two things shape this code. Polars evaluates every branch of a when/then for every row, so a
# slow path is fed only the rows that need it (`only(cond, e)`: the other rows are null, which
# the string kernels skip). And an expression used twice inside another is evaluated twice
# (common subexpressions are not shared across when/then branches), so a rule with
# intermediate results is a frame step (`add_*`) that adds each of them as a column of its own;
# the plain expression helpers are applied to columns, never to a composite expression.

WS_CHARS = " \t\n\x0b\x0c\r"
# DuckDB's regexes (RE2) read \s as ASCII whitespace; Rust's regex (Polars) as Unicode. Spelled
# out so that both read the same characters.
S = r"[\t\n\x0c\r ]"
NOT_S = r"[^\t\n\x0c\r ]"
# parse_decimal's grammar: [ ( ] [+|-] [$ € £ ¥ ₹] digits[,ddd]* [.digits] [ ) ], spaces between.
NUMBER_RE = (
    rf"^(?P<all>{S}*(?P<op>\(?){S}*(?P<sign>[-+]?){S}*(?P<sym>[$€£¥₹]?){S}*"
    rf"(?P<int>[0-9]+(?:,[0-9]{{3}})*)?(?:\.(?P<frac>[0-9]*))?{S}*(?P<cp>\)?){S}*)$"
)
CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "₹": "INR", "Rs": "INR",
                    "Rs.": "INR", "¥": "JPY"}
STATUS_SYNONYMS = {
    "": "COMPLETED", "COMPLETE": "COMPLETED", "DONE": "COMPLETED", "PAID": "COMPLETED",
    "SUCCESS": "COMPLETED", "FULFILLED": "COMPLETED", "DELIVERED": "COMPLETED",
    "SHIPPED": "COMPLETED", "CLOSED": "COMPLETED", "REFUND": "REFUNDED", "RETURNED": "REFUNDED",
    "RETURN": "REFUNDED", "CANCELED": "CANCELLED", "VOID": "CANCELLED", "VOIDED": "CANCELLED",
    "PROCESSING": "PENDING", "OPEN": "PENDING", "OUTLIER": "OUT",
}
CHANNEL_SYNONYMS = {
    **{w: "store" for w in ["in-store", "instore", "in store", "pos", "retail", "offline"]},
    **{w: "ecommerce" for w in ["e-commerce", "online", "web", "app", "mobile", "website"]},
}
REGION_SYNONYMS = {
    **{w: "North" for w in ["n", "north", "northern", "nord", "nrth"]},
    **{w: "South" for w in ["s", "south", "southern", "sud", "sth"]},
    **{w: "East" for w in ["e", "east", "eastern", "est"]},
    **{w: "West" for w in ["w", "west", "western", "wst"]},
    **{w: "Central" for w in ["c", "central", "centre", "center", "mid", "middle"]},
}


def only(cond, e):
    """e where cond holds, else null."""
    return pl.when(cond).then(e)


def trim(e):
    return e.str.strip_chars(WS_CHARS)


def is_null_marker(e):
    return e.is_null() | trim(e).str.to_lowercase().is_in(NULL_MARKERS)


def clean_key(e):
    """clean_key: trimmed; empty or a null marker is no key. Fast path: digits, or 5+
    characters without spaces, are neither a marker nor in need of trimming."""
    fast = e.str.contains(rf"^(?:{NOT_S}{{5,}}|[0-9]+)$")
    slow = only(~fast, e)
    return pl.when(fast).then(e).when(is_null_marker(slow)).then(None).otherwise(trim(slow))


def clean_text(e):
    """clean_key that keeps '-', inner whitespace collapsed."""
    t = trim(e)
    return (pl.when(t == "-").then(pl.lit("-"))
            .when(is_null_marker(e)).then(None)
            .otherwise(t.str.replace_all(rf"{S}+", " ")))


def currency_of_trimmed(t):
    """normalize_currency (null = unknown) of trimmed text; empty takes USD."""
    up = t.str.to_uppercase()
    return (pl.when(t.is_null() | (t == "")).then(pl.lit("USD"))
            .when(t.is_in(CURRENCIES)).then(t)
            .when(t.str.contains(r"^[A-Za-z]{3}$") & up.is_in(CURRENCIES)).then(up)
            .otherwise(t.replace_strict(CURRENCY_SYMBOLS, default=None, return_dtype=pl.String)))


def currency(e):
    return currency_of_trimmed(trim(e))


def status(e):
    """normalize_status (fast path: already canonical)."""
    canonical = e.is_in(STATUSES)
    up = trim(only(~canonical, e)).str.to_uppercase()
    return (pl.when(e.is_null()).then(pl.lit("COMPLETED"))
            .when(canonical).then(e)
            .otherwise(up.replace(STATUS_SYNONYMS)))


def channel(e):
    """normalize_channel (null = the source's default; fast path: already canonical)."""
    canonical = e.is_in(["store", "ecommerce", "marketing"])
    low = trim(only(~canonical, e)).str.to_lowercase()
    return (pl.when(canonical).then(e)
            .when(low == "").then(None)
            .otherwise(low.replace(CHANNEL_SYNONYMS)))


def name_key(e):
    """name_match_key: lower case, alphanumerics, single spaces."""
    low = e.str.to_lowercase()
    fast = low.str.contains(r"^[a-z0-9]+(?: [a-z0-9]+)*$")
    return pl.when(fast).then(low).otherwise(
        trim(only(~fast, low).str.replace_all(r"[^\p{L}\p{N}]+", " ")))


def to_date(e, fmt: str):
    return e.str.to_date(fmt, strict=False)


def round_scaled(e, by: int):
    """Divide a scaled integer by 10^by, rounding half away from zero (Int128 in, Int64 out)."""
    d = pl.lit(10 ** by, pl.Int128)
    q = (e.abs() + pl.lit(10 ** by // 2, pl.Int128)) // d
    return pl.when(e < 0).then(-q).otherwise(q).cast(pl.Int64)


def to_decimal(e, scale: int):
    """A scaled integer as Decimal(18, scale) (exact: the division only moves the point)."""
    return (e.cast(pl.Decimal(38, scale)) / 10 ** scale).cast(pl.Decimal(18, scale))


def steps(lf, dst: str, *stages: dict):
    """Add the columns of each stage in turn (a stage sees the ones before), then drop the
    intermediate ones: every stage key but dst."""
    temps = []
    for stage in stages:
        lf = lf.with_columns(**stage)
        temps += [k for k in stage if k != dst]
    return lf.drop(temps)


def add_number(lf, src: str, dst: str):
    """dst = parse_decimal(src) as plain decimal text ('-1234.50'), 'ERR' when it is not a
    number, null when there is no value. Fast path for plain numbers."""
    e, t = pl.col(src), f"{dst}__"
    fast = pl.col(t + "fast")

    def part(name):
        return pl.col(t + "parts").struct.field(name).fill_null("")

    bad = ((part("all") == "") | ((part("op") == "(") != (part("cp") == ")"))
           | ((part("int") == "") & (part("frac") == "")))
    negative = (part("op") == "(") != (part("sign") == "-")
    text = pl.concat_str(
        pl.when(negative).then(pl.lit("-")).otherwise(pl.lit("")),
        pl.when(part("int") == "").then(pl.lit("0"))
        .otherwise(part("int").str.replace_all(",", "", literal=True)),
        pl.lit("."), part("frac"), pl.lit("0"))
    return steps(
        lf, dst,
        {t + "fast": e.str.contains(r"^[0-9]+(?:\.[0-9]+)?$").fill_null(False),
         t + "has": ~is_null_marker(e)},
        {t + "parts": only(~fast & pl.col(t + "has"), e).str.extract_groups(NUMBER_RE)},
        {dst: pl.when(fast).then(e)
         .when(~pl.col(t + "has")).then(None)
         .when(bad).then(pl.lit("ERR"))
         .otherwise(text)})


def add_scaled(lf, src: str, dst: str, scale: int):
    """dst = TRY_CAST(src AS DECIMAL(18, scale)) as an integer count of 10^-scale units, rounded
    half away from zero; null when src is not plain decimal text (add_number's 'ERR') or does
    not fit 18 digits."""
    e, t = pl.col(src), f"{dst}__"
    body, dot = pl.col(t + "body"), pl.col(t + "dot")
    digits, frac = pl.col(t + "digits"), pl.col(t + "frac")
    value = pl.col(t + "value")
    fraction = frac.str.slice(scale, 1).is_in(list("56789")).cast(pl.Int64)
    if scale:
        fraction = fraction + (frac + "0" * scale).str.slice(0, scale).cast(pl.Int64)
    return steps(
        lf, dst,
        {t + "body": only(e.str.contains(r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"),
                          e.str.strip_prefix("-"))},
        {t + "dot": body.str.find(".", literal=True)},
        {t + "digits": pl.when(dot.is_null()).then(body).otherwise(body.str.slice(0, dot))
         .str.strip_chars_start("0"),
         t + "frac": pl.when(dot.is_null()).then(pl.lit("")).otherwise(body.str.slice(dot + 1))},
        {t + "value": pl.when(digits == "").then(pl.lit(0, pl.Int64))
         .otherwise(only(digits.str.len_bytes() <= 18 - scale, digits)
                    .cast(pl.Int64, strict=False)) * 10 ** scale + fraction},
        {dst: pl.when(value >= 10 ** 18).then(None)
         .when(e.str.starts_with("-")).then(-value).otherwise(value)})


def add_date(lf, src: str, dst: str):
    """dst = parse_date_iso(src) (%Y-%m-%d, %Y/%m/%d), also the date part of `date[T ]time`.
    Fast path: `YYYY-MM-DD`, alone or before a time."""
    e, t = pl.col(src), f"{dst}__"
    fast, cut = pl.col(t + "fast"), pl.col(t + "cut")
    slow, rest, part = only(~fast, e), cut.struct.field("rest"), pl.col(t + "part")
    return steps(
        lf, dst,
        {t + "fast": e.str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}.*)?$")
         .fill_null(False)},
        {t + "cut": slow.str.extract_groups(r"^(?P<d>[^T ]*)[T ](?P<rest>[0-9].*)$")},
        {t + "part": only((rest.str.len_bytes() >= 4) & rest.str.contains(":", literal=True),
                          cut.struct.field("d"))},
        {dst: pl.when(fast).then(to_date(e.str.slice(0, 10), "%Y-%m-%d"))
         .otherwise(pl.coalesce(to_date(slow, "%Y-%m-%d"), to_date(slow, "%Y/%m/%d"),
                                to_date(part, "%Y-%m-%d"), to_date(part, "%Y/%m/%d")))})


def add_region(lf, src: str, dst: str):
    """dst = normalize_region(src): keep letters, digits and spaces, lower case, drop the words
    region/zone, map abbreviations and synonyms, title-case anything else; null when nothing
    is left. Fast path: already canonical."""
    e, t = pl.col(src), f"{dst}__"
    words, joined = pl.col(t + "words"), pl.col(t + "joined")
    return steps(
        lf, dst,
        {t + "words": trim(only(~e.is_in(REGIONS), e)
                           .str.replace_all(r"[^\p{L}\p{N}\t\n\x0c\r ]", "").str.to_lowercase())
         .str.replace_all(rf"{S}+", " ").str.split(" ")
         .list.eval(pl.element().filter(~pl.element().is_in(["", "region", "zone"])))},
        {t + "joined": words.list.join(" "),
         t + "titled": words.list.eval(pl.element().str.slice(0, 1).str.to_uppercase()
                                       + pl.element().str.slice(1)).list.join(" ")},
        {dst: pl.when(e.is_in(REGIONS)).then(e)
         .when(joined == "").then(None)
         .otherwise(joined.replace_strict(REGION_SYNONYMS, default=pl.col(t + "titled"),
                                          return_dtype=pl.String))})


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def read_file(rank: int, path: Path, fmt: str):
    """One sales file as a lazy frame: file_rank, line and the canonical fields as text.

    Line numbers as in duckdb_etl.py: CSV line = record + 1 (the header), NDJSON line = record,
    JSON array element = record + 1 (the generator writes `[` on line 1, one element a line)."""
    if fmt == "csv":
        cols = csv_header(path)
        mapping = canonical_columns(cols)
        lf = pl.scan_csv(path, has_header=True, separator=",", quote_char='"',
                         infer_schema=False)
        exprs = [pl.col(mapping[f]).alias(f) if f in mapping else pl.lit(None, pl.String).alias(f)
                 for f in FIELDS]
        first_line = 2
    else:
        # Every name the mapping may use, as text (Polars writes JSON numbers as their text);
        # keys a file lacks read as null.
        schema = {c: pl.String for c in dict.fromkeys(FIELDS + list(ALIASES))}
        if fmt == "ndjson":
            lf = pl.scan_ndjson(path, schema=schema)
            first_line = 1
        else:
            lf = pl.read_json(path, schema=schema).lazy()
            first_line = 2
        exprs = []
        for f in FIELDS:
            names = [f] + [a for a, canon in ALIASES.items() if canon == f]
            exprs.append(pl.coalesce(names).alias(f) if len(names) > 1 else pl.col(f))
    return lf.with_row_index("rec").select(
        pl.lit(rank, pl.Int32).alias("file_rank"),
        (pl.col("rec").cast(pl.Int64) + first_line).alias("line"),
        *exprs)


def last_non_null(name: str):
    """The value of the row with the highest rn where it is not null (DuckDB's arg_max)."""
    return pl.col(name).sort_by("rn").drop_nulls().last()


def add_region_or_text(lf, src: str, dst: str):
    """dst = the normalised region of src, else its cleaned text (reference data)."""
    t = f"{dst}__text"
    lf = add_region(lf.with_columns(clean_text(pl.col(src)).alias(t)), t, dst)
    return lf.with_columns(pl.coalesce(dst, t).alias(dst)).drop(t)


def read_reference(data_dir: Path) -> dict:
    """Reference tables: fx rates, products (by id and by name), customers, stores. A repeated
    id takes its last row (shoplake updates dimension members in place)."""
    c = pl.col
    # fx_rates: (currency, month) -> rate (USD per unit, 8 decimals); a later row wins.
    fx = pl.scan_csv(data_dir / "fx_rates" / "fx_rates.csv", infer_schema=False)
    fx = fx.with_row_index("rn").with_columns(trim(c("month")).alias("m"))
    fx = add_date(add_scaled(add_number(fx, "rate_to_usd", "t"), "t", "fx_rate", 8), "m", "d")
    fx = (fx.select(
              currency(c("currency")).alias("cur"),
              pl.coalesce(to_date(c("m") + "-01", "%Y-%m-%d"), to_date(c("m") + "/01", "%Y/%m/%d"),
                          to_date(c("m") + "01", "%Y%m%d"), c("d")).alias("d"),
              "fx_rate", "rn")
          .select("cur", (c("d").dt.year() * 100 + c("d").dt.month()).cast(pl.Int32).alias("ym"),
                  "fx_rate", "rn")
          .drop_nulls(["cur", "ym", "fx_rate"])
          .group_by("cur", "ym").agg(last_non_null("fx_rate"))
          .collect())

    products = (pl.read_json(data_dir / "products" / "products.json",
                             schema={k: pl.String
                                     for k in ["product_id", "product_name", "category"]})
                .lazy().with_row_index("rn")
                .select(clean_key(c("product_id")).alias("product_id"),
                        clean_text(c("product_name")).alias("product_name"),
                        clean_text(c("category")).alias("category"), "rn")
                .filter(c("product_id").is_not_null())
                .group_by("product_id")
                .agg(last_non_null("product_name"), last_non_null("category"), c("rn").min())
                .collect())
    # Dim::by_name: name_match_key -> the first product with that name.
    product_names = (products.lazy().filter(c("product_name").is_not_null())
                     .group_by(name_key(c("product_name")).alias("name_key"))
                     .agg(c("product_id").sort_by("rn").first().alias("named_product_id"))
                     .collect())
    customers = pl.scan_ndjson(data_dir / "customers" / "customers.ndjson",
                               schema={"customer_id": pl.String, "region": pl.String})
    customers = (add_region_or_text(customers.with_row_index("rn"), "region", "customer_region")
                 .select(clean_key(c("customer_id")).alias("customer_id"), "customer_region", "rn")
                 .filter(c("customer_id").is_not_null())
                 .group_by("customer_id").agg(last_non_null("customer_region"))
                 .collect())
    stores = pl.scan_csv(data_dir / "stores" / "stores.csv", infer_schema=False)
    stores = (add_region_or_text(stores.with_row_index("rn"), "region", "store_region")
              .select(clean_key(c("id")).alias("store_id"), "store_region", "rn")
              .filter(c("store_id").is_not_null())
              .group_by("store_id").agg(last_non_null("store_region"))
              .collect())
    return {"fx": fx, "products": products, "product_names": product_names,
            "customers": customers, "stores": stores}


# --------------------------------------------------------------------------------------------
# The ETL
# --------------------------------------------------------------------------------------------

def staged_frame(rank: int, path: Path, fmt: str, fx):
    """Every record of one sales file, validated: its quarantine reason (null = valid), the raw
    text of a quarantined record (for quarantine.parquet), the parsed, normalised values (used
    for the valid ones only) and the hash of a valid record's dedupe key."""
    c = pl.col
    lf = read_file(rank, path, fmt)
    lf = lf.with_columns(
        clean_key(c("sales_date")).alias("d_txt"),
        clean_key(c("customer_id")).alias("cust"),
        clean_key(c("product_id")).alias("pid"),
        clean_key(c("product_name")).alias("pname"),
        trim(c("currency")).alias("cur_t"),
    )
    lf = add_number(lf, "quantity", "t_q")
    lf = add_number(lf, "unit_price", "t_p")
    lf = add_number(lf, "amount", "t_a")
    lf = add_scaled(lf, "t_q", "v_q", 2)
    lf = add_scaled(lf, "t_p", "price", 4)
    lf = add_scaled(lf, "t_a", "v_a", 2)
    lf = add_date(lf, "d_txt", "sdate")
    lf = lf.with_columns(
        currency_of_trimmed(c("cur_t")).alias("cur"),
        (c("sdate").dt.year() * 100 + c("sdate").dt.month()).cast(pl.Int32).alias("ym"))
    # The rate of the sale's currency and month: a lookup in the few fx rows (a join would
    # cost more than the lookup).
    rates = {f"{cur}|{ym}": rate for cur, ym, rate in fx.select("cur", "ym", "fx_rate").rows()}
    lf = lf.with_columns(
        pl.concat_str(c("cur"), pl.lit("|"), c("ym").cast(pl.String))
        .replace_strict(rates, default=None, return_dtype=pl.Int64).alias("fx_rate"))
    lf = lf.with_columns(
        pl.when(c("cur") == "USD").then(pl.lit(10 ** 8, pl.Int64)).otherwise(c("fx_rate"))
        .alias("rate"),
        # The first failing check wins (crates/etl/src/sales.rs).
        pl.when(c("d_txt").is_null()).then(pl.lit("missing_key"))
        .when(c("sdate").is_null()).then(pl.lit("bad_date"))
        .when(c("t_q").is_not_null() & (c("v_q").is_null() | (c("v_q") % 100 != 0)))
        .then(pl.lit("bad_number"))
        .when(c("t_p").is_not_null() & c("price").is_null()).then(pl.lit("bad_number"))
        .when(c("t_a").is_not_null() & c("v_a").is_null()).then(pl.lit("bad_number"))
        .when(c("cust").is_null()).then(pl.lit("missing_key"))
        .when(c("pid").is_null() & c("pname").is_null()).then(pl.lit("missing_key"))
        .when(c("v_a").is_null() & (c("v_q").is_null() | c("price").is_null()))
        .then(pl.lit("missing_amount"))
        .when(c("cur").is_null()).then(pl.lit("unknown_currency"))
        .when((c("cur") != "USD") & c("fx_rate").is_null()).then(pl.lit("missing_fx_rate"))
        .alias("reason"),
        (c("v_q") // 100).alias("qty"),
    )
    lf = add_region(lf, "region", "region_n")
    quarantined = c("reason").is_not_null()
    filled = round_scaled(c("qty").cast(pl.Int128) * c("price").cast(pl.Int128), 2)
    return lf.select(
        "file_rank", "line", "reason",
        *[only(quarantined, c(f)).alias(f"raw_{f}") for f in FIELDS],
        c("sdate"),
        clean_key(c("transaction_id")).alias("txn"),
        trim(c("line_number")).cast(pl.Int64, strict=False).alias("line_no"),
        "cust", "pid", "pname",
        only(c("pid").is_null(), name_key(c("pname"))).alias("name_key"),
        "qty", "price",
        pl.coalesce(c("v_a"), filled).alias("amt"),
        c("v_a").is_null().alias("amount_filled"),
        "cur", "rate",
        status(c("status")).alias("st"),
        clean_key(c("store_id")).alias("store"),
        clean_key(c("sales_person_id")).alias("person"),
        clean_key(c("campaign_id")).alias("campaign"),
        channel(c("channel")).alias("channel_n"),
        clean_text(c("payment_method")).str.to_lowercase().alias("payment"),
        "region_n",
        # a region written messily that normalises to a canonical one (the manifest counts them)
        (c("region").is_not_null() & ~c("region").is_in(REGIONS) & c("region_n").is_in(REGIONS))
        .fill_null(False).alias("messy_region"),
    ).with_columns(dedupe_key().alias("dkey")).with_columns(
        # A valid row's dedupe key, as a 64-bit hash: what the dedupe step holds in memory.
        only(c("reason").is_null(), c("dkey").hash(seed=0)).alias("dkey_hash")
    ).drop("dkey")


def dedupe_key():
    """The identity of a valid sale (SalesTransform::dedupe_key): its transaction id with its
    line number, or with its product (product_id, else "n:" + name_match_key(product_name));
    without a transaction id, a fingerprint of its normalised values."""
    c = pl.col
    sep = "\x1f"
    product = pl.coalesce(c("pid"), pl.lit("n:") + c("name_key"))
    by_txn = pl.concat_str(pl.lit("t"), c("txn"),
                           pl.coalesce(c("line_no").cast(pl.String), product), separator=sep)
    fingerprint = pl.concat_str(
        pl.lit("f"), c("sdate").cast(pl.String), c("cust").fill_null(""), product,
        c("store").fill_null(""), c("person").fill_null(""),
        c("qty").cast(pl.String).fill_null(""), c("price").cast(pl.String).fill_null(""),
        c("amt").cast(pl.String), c("cur"), c("st"), c("region_n").fill_null(""),
        c("channel_n").fill_null(""), c("campaign").fill_null(""), separator=sep)
    return pl.when(c("txn").is_not_null()).then(by_txn).otherwise(fingerprint)


def quarantine_frame(staged, files_df):
    """Quarantined rows: the reason, a message like shoplake's, and the original values. The
    message re-parses the few quarantined rows rather than keeping parse details for every row."""
    c = pl.col
    q = {f: c(f"raw_{f}") for f in FIELDS}
    lf = (staged.filter(c("reason").is_not_null()).sort("file_rank", "line")
          .join(files_df.lazy(), on="file_rank", how="left", maintain_order="left")
          .with_columns(clean_key(q["sales_date"]).alias("q_date_key")))
    lf = add_scaled(add_number(lf, "raw_quantity", "q_t"), "q_t", "q_v", 2)
    lf = add_scaled(add_number(lf, "raw_unit_price", "p_t"), "p_t", "p_v", 4)
    lf = add_date(lf, "q_date_key", "q_date")
    detail = (
        pl.when(c("reason") == "missing_key").then(
            pl.when(c("q_date_key").is_null()).then(pl.lit("sales_date is empty"))
            .when(clean_key(q["customer_id"]).is_null()).then(pl.lit("customer_id is empty"))
            .otherwise(pl.lit("neither product_id nor product_name is given")))
        .when(c("reason") == "bad_date")
        .then('sales_date: "' + trim(q["sales_date"]) + '" is not a date')
        .when(c("reason") == "bad_number").then(
            pl.when(c("q_t") == "ERR").then('quantity: "' + q["quantity"] + '" is not a number')
            .when(c("q_v") % 100 != 0)
            .then('quantity: "' + q["quantity"] + '" is not a whole number')
            .when(c("q_t").is_not_null() & c("q_v").is_null())
            .then('quantity: "' + q["quantity"] + '" is too large')
            .when(c("p_t").is_not_null() & c("p_v").is_null())
            .then('unit_price: "' + q["unit_price"] + '" is not a number')
            .otherwise('amount: "' + q["amount"] + '" is not a number'))
        .when(c("reason") == "missing_amount")
        .then(pl.lit("amount is empty and quantity x unit_price is not known"))
        .when(c("reason") == "unknown_currency")
        .then('currency "' + trim(q["currency"]).str.to_uppercase()
              + '" is not a known ISO 4217 code')
        .when(c("reason") == "missing_fx_rate")
        .then("no " + currency(q["currency"]) + " rate for " + c("q_date").dt.strftime("%Y-%m")
              + "; add it to an fx_rates file and replay")
    )
    return lf.select("source", "file", "line", "reason", detail.alias("detail"),
                     *[q[f].alias(f) for f in FIELDS])


def fact_frame(staged, dups, files_df, ref):
    """The loaded rows, enriched, in fact_sales' columns (region, year, month last)."""
    c = pl.col
    loaded_at = datetime.now(timezone.utc)
    usd = round_scaled(c("amt").cast(pl.Int128) * c("rate").cast(pl.Int128), 8)
    return (
        staged.filter(c("reason").is_null())
        .join(dups.lazy(), on=["file_rank", "line"], how="anti")
        .join(files_df.lazy(), on="file_rank", how="left", maintain_order="left")
        .join(ref["product_names"].lazy(), on="name_key", how="left", maintain_order="left")
        .with_columns(pl.coalesce(c("pid"), c("named_product_id"), pl.lit("name:") + c("name_key"))
                      .alias("product_id"))
        .join(ref["products"].lazy().select("product_id", "product_name", "category",
                                            pl.lit(True).alias("known_product")),
              on="product_id", how="left", maintain_order="left")
        .join(ref["customers"].lazy().with_columns(pl.lit(True).alias("known_customer")),
              left_on="cust", right_on="customer_id", how="left", maintain_order="left")
        .join(ref["stores"].lazy(), left_on="store", right_on="store_id", how="left",
              maintain_order="left")
        .select(
            c("txn").alias("transaction_id"),
            c("line_no").alias("line_number"),
            c("sdate").alias("sales_date"),
            (c("sdate").dt.year() * 10000 + c("sdate").dt.month().cast(pl.Int32) * 100
             + c("sdate").dt.day().cast(pl.Int32)).cast(pl.Int32).alias("date_key"),
            c("cust").alias("customer_id"),
            "product_id",
            pl.coalesce(c("product_name"), c("pname")).alias("product_name"),
            "category",
            c("store").alias("store_id"),
            c("person").alias("sales_person_id"),
            c("campaign").alias("campaign_id"),
            pl.coalesce(c("channel_n"), c("default_channel")).alias("channel"),
            c("payment").alias("payment_method"),
            c("st").alias("status"),
            (c("st") == "OUT").alias("is_outlier"),
            c("qty").alias("quantity"),
            to_decimal(c("price"), 4).alias("unit_price"),
            to_decimal(c("amt"), 2).alias("amount"),
            "amount_filled",
            c("cur").alias("currency"),
            to_decimal(c("rate"), 8).alias("fx_rate"),
            to_decimal(usd, 2).alias("amount_usd"),
            c("known_customer").is_null().alias("customer_inferred"),
            c("known_product").is_null().alias("product_inferred"),
            "source", "file",
            c("line").alias("source_line"),
            pl.lit(loaded_at).alias("loaded_at"),
            # a sale without a region takes its store's, else its customer's
            pl.coalesce(c("region_n"), c("store_region"), c("customer_region"),
                        pl.lit("Unknown")).alias("region"),
            c("sdate").dt.year().cast(pl.Int32).alias("year"),
            c("sdate").dt.month().cast(pl.Int32).alias("month"),
        )
    )


def duplicates(staged):
    """The duplicate rows (file_rank, line): every valid row whose dedupe key an earlier row (in
    file order, then line order) has; the first occurrence loads. Exact, in little memory (8
    bytes a row, sorted): only the rows whose key hash another row shares are candidates, and
    their full keys decide."""
    c = pl.col
    hashes = (staged.select("dkey_hash").filter(c("dkey_hash").is_not_null())
              .collect(engine="streaming").to_series().sort())
    shared = hashes.filter(hashes == hashes.shift(1)).unique()
    del hashes
    row = ["file_rank", "line"]
    candidates = (staged.filter(c("dkey_hash").is_in(shared.implode()))
                  .select(*row, dedupe_key().alias("dkey"))
                  .collect(engine="streaming").sort(row))
    return candidates.filter(~c("dkey").is_first_distinct()).select(row)


def run_etl(data_dir: Path, out_dir: Path, temp_dir: Path, steps: dict):
    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        steps[name] = round(time.perf_counter() - t, 3)
        return out

    files = sales_files(data_dir)
    if not files:
        raise RuntimeError(f"no sales files under {data_dir}/store_sales or {data_dir}/ecommerce")
    files_df = pl.DataFrame(
        {"file_rank": list(range(len(files))), "source": [f[0] for f in files],
         "file": [f[1] for f in files], "default_channel": [default_channel(f[0]) for f in files]},
        schema={"file_rank": pl.Int32, "source": pl.String, "file": pl.String,
                "default_channel": pl.String})
    ref = timed("reference", lambda: read_reference(data_dir))
    # Every record, validated, streamed to temporary files, one per sales file (the streaming
    # engine holds more memory the more sources one query has): memory does not grow with the
    # input. The steps after it read them back.
    staged_dir = temp_dir / "staged"
    shutil.rmtree(staged_dir, ignore_errors=True)
    staged_dir.mkdir(parents=True)

    def read_validate():
        for i, (_, _, path, fmt) in enumerate(files):
            staged_frame(i, path, fmt, ref["fx"]).sink_parquet(
                staged_dir / f"{i:06d}.parquet", compression="lz4", row_group_size=32768,
                engine="streaming")

    timed("read_validate", read_validate)
    staged = pl.scan_parquet(staged_dir / "*.parquet")
    dups = timed("dedupe", lambda: duplicates(staged))
    timed("write_quarantine", lambda: quarantine_frame(staged, files_df).sink_parquet(
        out_dir / "quarantine.parquet", compression="zstd", compression_level=3,
        engine="streaming"))
    # Small row groups (in the staged files too): the partitioned sink holds one row group of
    # every open partition in memory, and the scan reads whole row groups ahead.
    timed("write_fact_sales", lambda: fact_frame(staged, dups, files_df, ref).sink_parquet(
        pl.PartitionBy(out_dir / "fact_sales", key=["region", "year", "month"],
                       include_key=False),
        compression="zstd", compression_level=3, row_group_size=16384, mkdir=True,
        maintain_order=False, engine="streaming"))
    return files, staged, dups


def collect_counts(staged, dups, out_dir: Path, files) -> dict:
    """Counts of the run, overall and per file; the loaded-row counts are read back from the
    written fact_sales, so they also check the output."""
    c = pl.col
    per_file = new_per_file(files)
    rel_by_rank = {i: rel for i, (_, rel, _, _) in enumerate(files)}
    by_reason = staged.group_by("file_rank", "reason").len().collect(engine="streaming").rows()
    for rank, reason, n in by_reason:
        f = per_file[rel_by_rank[rank]]
        f["rows_in"] += n
        if reason:
            f["quarantined"][reason] = n
        else:
            f["loaded"] += n
    for rank, n in dups.group_by("file_rank").len().rows():
        per_file[rel_by_rank[rank]]["duplicates"] = n
        per_file[rel_by_rank[rank]]["loaded"] -= n

    fact = pl.scan_parquet(out_dir / "fact_sales" / "**" / "*.parquet", hive_partitioning=True)
    row = fact.select(
        pl.len(), c("amount_filled").sum(), c("is_outlier").sum(),
        c("customer_inferred").sum(), c("product_inferred").sum(),
        c("customer_id").filter(c("customer_inferred")).n_unique(),
        c("product_id").filter(c("product_inferred")).n_unique(),
        c("amount_usd").sum(),
    ).collect().row(0)
    messy = (staged.filter(c("reason").is_null() & c("messy_region"))
             .join(dups.lazy(), on=["file_rank", "line"], how="anti").select(pl.len())
             .collect(engine="streaming").item())
    q_rows = pl.scan_parquet(out_dir / "quarantine.parquet").select(pl.len()).collect().item()
    return counts_of(per_file, row, q_rows, messy)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Run shoplake's sales ETL rules in Polars over a generated data folder and "
                    "check the counts against its manifest.json.")
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2,
                    help="Polars threads (POLARS_MAX_THREADS, default 2)")
    ap.add_argument("--temp-dir", type=Path, default=None,
                    help="where the validated rows are staged (default OUT_DIR/polars_tmp, "
                         "removed afterwards)")
    ap.add_argument("--no-check", action="store_true",
                    help="do not compare with DATA_DIR/manifest.json")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    import_polars(args.threads)

    data_dir, out_dir = args.data_dir.resolve(), args.out_dir.resolve()
    manifest_path = check_dirs(data_dir, args.no_check)
    if manifest_path is None:
        return 2
    # Only what this script writes is replaced.
    clear_outputs(out_dir)
    temp_dir = (args.temp_dir or out_dir / "polars_tmp").resolve()
    own_temp = args.temp_dir is None
    temp_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    steps: dict[str, float] = {}
    try:
        files, staged, dups = run_etl(data_dir, out_dir, temp_dir, steps)
        seconds = time.perf_counter() - started
        t = time.perf_counter()
        counts = collect_counts(staged, dups, out_dir, files)
        steps["count_and_check"] = round(time.perf_counter() - t, 3)
    except (pl.exceptions.PolarsError, OSError, RuntimeError) as e:
        sys.stderr.write(f"polars_etl.py failed: {e}\n")
        return 2
    finally:
        if own_temp:
            shutil.rmtree(temp_dir, ignore_errors=True)
        else:
            shutil.rmtree(temp_dir / "staged", ignore_errors=True)

    return finish(
        "polars", "Polars'", {"polars_version": pl.__version__}, counts,
        {
            "files": len(files),
            "threads": pl.thread_pool_size(),
            "seconds": round(seconds, 3),
            "steps": steps,
        },
        manifest_path, args.no_check,
    )


if __name__ == "__main__":
    sys.exit(main())
