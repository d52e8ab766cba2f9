#!/usr/bin/env python3
"""DuckDB counterpart of shoplake's sales ETL, for benchmarks.

    python3 bench/duckdb_etl.py DATA_DIR OUT_DIR [--threads 2] [--memory-limit 2GB]

DATA_DIR is a folder written by shoplake's generator (`shoplake generate`, or the datagen
`generate` example): reference data, `store_sales/*.csv[.gz]`, `ecommerce/*.ndjson|*.json` and
`manifest.json`. The script does the work `shoplake run` does to the sales rows, with the same
rules (crates/core/src/values.rs, crates/etl/src/sales.rs), in DuckDB SQL:

  read every sales file with all columns as text -> validate (first failing check wins) ->
  de-duplicate the valid rows (first occurrence in file order wins) -> resolve products by name,
  normalise region/status/channel, fill amounts, convert to USD with exact decimals, enrich ->
  write OUT_DIR/quarantine.parquet and OUT_DIR/fact_sales/region=../year=../month=../*.parquet.

It prints one JSON line (loaded, duplicates, quarantined per reason, seconds, ...) and checks its
counts against DATA_DIR/manifest.json: exit 0 when they agree, 1 with a mismatch report on stderr
when they do not, 2 on a usage or runtime error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from _common import (ALIASES, CURRENCIES, FIELDS, NULL_MARKERS, REGIONS, STATUSES,
                     canonical_columns, check_dirs, clear_outputs, counts_of, csv_header,
                     default_channel, finish, new_per_file, sales_files)

try:
    import duckdb
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("duckdb_etl.py needs the duckdb Python package: pip install duckdb\n")
    sys.exit(2)

# `lambda x: ...` (used by the region macros) needs DuckDB 1.3 or later.
if tuple(int(p) for p in duckdb.__version__.split(".")[:2] if p.isdigit()) < (1, 3):
    sys.stderr.write(f"duckdb_etl.py needs duckdb >= 1.3 (found {duckdb.__version__}): "
                     "pip install -U duckdb\n")
    sys.exit(2)


# --------------------------------------------------------------------------------------------
# SQL text and the files
# --------------------------------------------------------------------------------------------

def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def bars(items) -> str:
    """A constant list for sl_in(): '|a|b|c|'. (DuckDB plans `x IN (...)` and list_contains
    over a constant list as a join per use, which is slow inside macros used many times.)"""
    assert not any("|" in i for i in items)
    return sql_str("|" + "|".join(items) + "|")


def ident(c: str) -> str:
    return '"' + c.replace('"', '""') + '"'


def file_select(rank: int, path: Path, fmt: str) -> str:
    """One SELECT reading one sales file: canonical text columns, the record's index within the
    file (row_number() over the file's rows, in file order: preserve_insertion_order is on) and
    its line number."""
    if fmt == "csv":
        cols = csv_header(path)
        spec = ", ".join(f"{sql_str(c)}: 'VARCHAR'" for c in cols)
        reader = (
            f"read_csv({sql_str(str(path))}, header = true, delim = ',', quote = '\"', "
            f"escape = '\"', auto_detect = false, columns = {{{spec}}})"
        )
        # Header on line 1, one record per line (the generator never quotes a newline).
        line_offset = 1
        mapping = canonical_columns(cols)
        exprs = [
            f"{ident(mapping[f])} AS {f}" if f in mapping else f"NULL::VARCHAR AS {f}"
            for f in FIELDS
        ]
    else:
        # Every name the mapping may use, as text; keys a file lacks read as NULL.
        cols = list(dict.fromkeys(FIELDS + list(ALIASES)))
        spec = ", ".join(f"{sql_str(c)}: 'VARCHAR'" for c in cols)
        layout = "newline_delimited" if fmt == "ndjson" else "array"
        reader = (
            f"read_json({sql_str(str(path))}, format = '{layout}', columns = {{{spec}}}, "
            f"maximum_object_size = 16777216)"
        )
        # NDJSON: record k is on line k. JSON array: the generator writes `[` on line 1 and one
        # element per line after it, so element k starts on line k + 1. (An approximation for
        # hand-written arrays; shoplake counts the line each element starts on.)
        line_offset = 0 if fmt == "ndjson" else 1
        # Which names a file uses is not known before reading it: canonical name, else alias.
        exprs = []
        for f in FIELDS:
            names = [f] + [a for a, canon in ALIASES.items() if canon == f]
            exprs.append(
                f"{names[0]} AS {f}" if len(names) == 1
                else f"coalesce({', '.join(names)}) AS {f}"
            )
    return (
        f"SELECT {rank} AS file_rank, rec + {line_offset} AS line, * EXCLUDE (rec) FROM ("
        f"SELECT row_number() OVER () AS rec, {', '.join(exprs)} FROM {reader})"
    )


# --------------------------------------------------------------------------------------------
# The rules, as DuckDB macros (crates/core/src/values.rs)
# --------------------------------------------------------------------------------------------

WS = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
# parse_decimal's grammar: [ ( ] [+|-] [$ € £ ¥ ₹] digits[,ddd]* [.digits] [ ) ], spaces between.
NUMBER_RE = (
    r"^(\s*(\(?)\s*([-+]?)\s*([$€£¥₹]?)\s*([0-9]+(?:,[0-9]{3})*)?(?:\.([0-9]*))?\s*(\)?)\s*)$"
)

MACROS = f"""
CREATE OR REPLACE TEMP MACRO sl_trim(s) AS trim(s, {WS});
-- x is one of the items of a bars() list
CREATE OR REPLACE TEMP MACRO sl_in(x, list) AS
    NOT contains(x::VARCHAR, '|') AND contains(list, '|' || x::VARCHAR || '|');
-- is_null_marker
CREATE OR REPLACE TEMP MACRO sl_is_null(s) AS
    s IS NULL OR sl_in(lower(sl_trim(s)), {bars(NULL_MARKERS)});
-- clean_key: trimmed; empty or a null marker is no key. Fast path: digits, or 5+ characters
-- without spaces, are neither a marker nor in need of trimming.
CREATE OR REPLACE TEMP MACRO sl_key(s) AS
    CASE WHEN s IS NULL THEN NULL WHEN regexp_full_match(s, '\\S{{5,}}|[0-9]+') THEN s
         WHEN sl_is_null(s) THEN NULL ELSE sl_trim(s) END;
-- clean_text: clean_key that keeps '-', inner whitespace collapsed
CREATE OR REPLACE TEMP MACRO sl_text(s) AS
    CASE WHEN s IS NULL THEN NULL WHEN sl_trim(s) = '-' THEN '-' WHEN sl_is_null(s) THEN NULL
         ELSE regexp_replace(sl_trim(s), '\\s+', ' ', 'g') END;
-- parse_decimal, step 1: NULL for no value, else the grammar's parts ('all' = '' if no match)
CREATE OR REPLACE TEMP MACRO sl_num_parts(s) AS
    CASE WHEN sl_is_null(s) THEN NULL
         ELSE regexp_extract(s, {sql_str(NUMBER_RE)},
                             ['all', 'op', 'sign', 'sym', 'int', 'frac', 'cp']) END;
-- step 2: plain decimal text ('-1234.50'), 'ERR' when it is not a number, NULL when empty
CREATE OR REPLACE TEMP MACRO sl_num_text(x) AS
    CASE WHEN x IS NULL THEN NULL
         WHEN x.all = '' OR (x.op = '(') <> (x.cp = ')') OR (x.int = '' AND x.frac = '')
              THEN 'ERR'
         ELSE CASE WHEN (x.op = '(') <> (x.sign = '-') THEN '-' ELSE '' END
              || CASE WHEN x.int = '' THEN '0' ELSE replace(x.int, ',', '') END
              || '.' || x.frac || '0' END;
-- parse_decimal as plain decimal text, with a fast path for plain numbers
CREATE OR REPLACE TEMP MACRO sl_number(s) AS
    CASE WHEN s IS NULL THEN NULL
         WHEN regexp_full_match(s, '[0-9]+(\\.[0-9]+)?') THEN s
         ELSE sl_num_text(sl_num_parts(s)) END;
-- parse_date_iso (%Y-%m-%d, %Y/%m/%d), also the date part of `date[T ]time`
CREATE OR REPLACE TEMP MACRO sl_date_cut(t) AS
    regexp_extract(t, '^([^T ]*)[T ]([0-9].*)$', ['d', 'rest']);
CREATE OR REPLACE TEMP MACRO sl_date_part(t) AS
    CASE WHEN strlen(sl_date_cut(t).rest) >= 4 AND contains(sl_date_cut(t).rest, ':')
         THEN sl_date_cut(t).d END;
CREATE OR REPLACE TEMP MACRO sl_date_slow(t) AS CAST(coalesce(
    try_strptime(t, '%Y-%m-%d'), try_strptime(t, '%Y/%m/%d'),
    try_strptime(sl_date_part(t), '%Y-%m-%d'), try_strptime(sl_date_part(t), '%Y/%m/%d')) AS DATE);
-- fast path: `YYYY-MM-DD`, alone or before a time
CREATE OR REPLACE TEMP MACRO sl_date(t) AS
    CASE WHEN regexp_full_match(
                  t, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}(?:[T ][0-9]{{2}}:[0-9]{{2}}.*)?')
         THEN TRY_CAST(left(t, 10) AS DATE) ELSE sl_date_slow(t) END;
-- normalize_currency (NULL = unknown) of trimmed text; empty takes the default currency, USD
CREATE OR REPLACE TEMP MACRO sl_currency_t(t) AS
    CASE WHEN t IS NULL OR t = '' THEN 'USD'
         WHEN strlen(t) = 3 AND contains('|{'|'.join(CURRENCIES)}|', '|' || t || '|') THEN t
         WHEN strlen(t) = 3 AND regexp_full_match(t, '[A-Za-z]{{3}}')
              AND contains('|{'|'.join(CURRENCIES)}|', '|' || upper(t) || '|') THEN upper(t)
         WHEN t = '$' OR t = 'US$' THEN 'USD' WHEN t = '€' THEN 'EUR' WHEN t = '£' THEN 'GBP'
         WHEN t = '₹' OR t = 'Rs' OR t = 'Rs.' THEN 'INR' WHEN t = '¥' THEN 'JPY' END;
CREATE OR REPLACE TEMP MACRO sl_currency(s) AS sl_currency_t(sl_trim(s));
-- normalize_status (fast path: already canonical)
CREATE OR REPLACE TEMP MACRO sl_status_slow(s) AS
    CASE upper(sl_trim(coalesce(s, '')))
        WHEN '' THEN 'COMPLETED' WHEN 'COMPLETED' THEN 'COMPLETED' WHEN 'COMPLETE' THEN 'COMPLETED'
        WHEN 'DONE' THEN 'COMPLETED' WHEN 'PAID' THEN 'COMPLETED' WHEN 'SUCCESS' THEN 'COMPLETED'
        WHEN 'FULFILLED' THEN 'COMPLETED' WHEN 'DELIVERED' THEN 'COMPLETED'
        WHEN 'SHIPPED' THEN 'COMPLETED' WHEN 'CLOSED' THEN 'COMPLETED'
        WHEN 'REFUNDED' THEN 'REFUNDED' WHEN 'REFUND' THEN 'REFUNDED'
        WHEN 'RETURNED' THEN 'REFUNDED' WHEN 'RETURN' THEN 'REFUNDED'
        WHEN 'CANCELLED' THEN 'CANCELLED' WHEN 'CANCELED' THEN 'CANCELLED'
        WHEN 'VOID' THEN 'CANCELLED' WHEN 'VOIDED' THEN 'CANCELLED'
        WHEN 'PENDING' THEN 'PENDING' WHEN 'PROCESSING' THEN 'PENDING' WHEN 'OPEN' THEN 'PENDING'
        WHEN 'OUT' THEN 'OUT' WHEN 'OUTLIER' THEN 'OUT'
        ELSE upper(sl_trim(coalesce(s, ''))) END;
CREATE OR REPLACE TEMP MACRO sl_status(s) AS
    CASE WHEN s IS NULL THEN 'COMPLETED' WHEN {' OR '.join(f"s = '{x}'" for x in STATUSES)} THEN s
         ELSE sl_status_slow(s) END;
-- normalize_channel (NULL = the source's default; fast path: already canonical)
CREATE OR REPLACE TEMP MACRO sl_channel_slow(s) AS
    CASE WHEN lower(sl_trim(coalesce(s, ''))) = '' THEN NULL
         WHEN sl_in(lower(sl_trim(s)), {bars(['store', 'in-store', 'instore', 'in store', 'pos',
                                              'retail', 'offline'])}) THEN 'store'
         WHEN sl_in(lower(sl_trim(s)), {bars(['ecommerce', 'e-commerce', 'online', 'web', 'app',
                                              'mobile', 'website'])}) THEN 'ecommerce'
         WHEN lower(sl_trim(s)) = 'marketing' THEN 'marketing'
         ELSE lower(sl_trim(s)) END;
CREATE OR REPLACE TEMP MACRO sl_channel(s) AS
    CASE WHEN s IS NULL THEN NULL WHEN s = 'store' OR s = 'ecommerce' OR s = 'marketing' THEN s
         ELSE sl_channel_slow(s) END;
-- normalize_region: keep letters, digits and spaces, lower case, drop the words region/zone,
-- map abbreviations and synonyms, title-case anything else; NULL when nothing is left.
-- (list_transform([x], lambda j: ...)[1] binds x once, like a `let`.)
CREATE OR REPLACE TEMP MACRO sl_region_joined(s) AS array_to_string(
    list_filter(string_split_regex(sl_trim(lower(regexp_replace(s, '[^\\pL\\pN\\s]', '', 'g'))),
                                   '\\s+'),
                lambda w: NOT sl_in(w, {bars(['', 'region', 'zone'])})),
    ' ');
CREATE OR REPLACE TEMP MACRO sl_region_of(j) AS
    CASE WHEN j = '' THEN NULL
         WHEN sl_in(j, {bars(['n', 'north', 'northern', 'nord', 'nrth'])}) THEN 'North'
         WHEN sl_in(j, {bars(['s', 'south', 'southern', 'sud', 'sth'])}) THEN 'South'
         WHEN sl_in(j, {bars(['e', 'east', 'eastern', 'est'])}) THEN 'East'
         WHEN sl_in(j, {bars(['w', 'west', 'western', 'wst'])}) THEN 'West'
         WHEN sl_in(j, {bars(['c', 'central', 'centre', 'center', 'mid', 'middle'])})
              THEN 'Central'
         ELSE array_to_string(list_transform(string_split(j, ' '),
                                             lambda w: upper(w[1]) || w[2:]), ' ')
    END;
CREATE OR REPLACE TEMP MACRO sl_region(s) AS
    CASE WHEN s IS NULL THEN NULL
         WHEN {' OR '.join(f"s = '{x}'" for x in REGIONS)} THEN s
         ELSE list_transform([sl_region_joined(s)], lambda j: sl_region_of(j))[1] END;
-- name_match_key: lower case, alphanumerics, single spaces
CREATE OR REPLACE TEMP MACRO sl_name_key_of(l) AS
    CASE WHEN regexp_full_match(l, '[a-z0-9]+(?: [a-z0-9]+)*') THEN l
         ELSE sl_trim(regexp_replace(l, '[^\\pL\\pN]+', ' ', 'g')) END;
CREATE OR REPLACE TEMP MACRO sl_name_key(s) AS sl_name_key_of(lower(s));
"""


# --------------------------------------------------------------------------------------------
# The ETL
# --------------------------------------------------------------------------------------------

def reference_sql(data_dir: Path) -> list[str]:
    """Reference tables: fx rates, products (by id and by name), customers, stores. A repeated
    id takes its last row (shoplake updates dimension members in place)."""
    def path(*parts: str) -> str:
        return sql_str(str(data_dir.joinpath(*parts)))

    return [
        # fx_rates: (currency, month) -> rate (USD per unit, Decimal(18,8)); a later row wins.
        f"""CREATE OR REPLACE TEMP TABLE fx AS
            SELECT fx_cur, fx_ym, arg_max(fx_rate, rn) AS fx_rate FROM (
              SELECT sl_currency(currency) AS fx_cur,
                     CAST(strftime(coalesce(try_strptime(sl_trim(month), '%Y-%m'),
                                            try_strptime(sl_trim(month), '%Y/%m'),
                                            try_strptime(sl_trim(month), '%Y%m'),
                                            sl_date(sl_trim(month))), '%Y%m') AS INTEGER) AS fx_ym,
                     TRY_CAST(sl_num_text(sl_num_parts(rate_to_usd)) AS DECIMAL(18, 8)) AS fx_rate,
                     row_number() OVER () AS rn
              FROM read_csv({path('fx_rates', 'fx_rates.csv')}, header = true, all_varchar = true))
            WHERE fx_cur IS NOT NULL AND fx_ym IS NOT NULL AND fx_rate IS NOT NULL
            GROUP BY fx_cur, fx_ym""",
        f"""CREATE OR REPLACE TEMP TABLE products AS
            SELECT product_id, arg_max(product_name, rn) AS product_name,
                   arg_max(category, rn) AS category, min(rn) AS rn FROM (
              SELECT sl_key(product_id) AS product_id, sl_text(product_name) AS product_name,
                     sl_text(category) AS category, row_number() OVER () AS rn
              FROM read_json({path('products', 'products.json')}, format = 'array',
                             columns = {{product_id: 'VARCHAR', product_name: 'VARCHAR',
                                         category: 'VARCHAR'}}))
            WHERE product_id IS NOT NULL GROUP BY product_id""",
        # Dim::by_name: name_match_key -> the first product with that name.
        """CREATE OR REPLACE TEMP TABLE product_names AS
           SELECT sl_name_key(product_name) AS name_key, arg_min(product_id, rn) AS product_id
           FROM products WHERE product_name IS NOT NULL GROUP BY ALL""",
        f"""CREATE OR REPLACE TEMP TABLE customers AS
            SELECT customer_id, arg_max(region, rn) AS region FROM (
              SELECT sl_key(customer_id) AS customer_id,
                     coalesce(sl_region(sl_text(region)), sl_text(region)) AS region,
                     row_number() OVER () AS rn
              FROM read_json({path('customers', 'customers.ndjson')},
                             format = 'newline_delimited',
                             columns = {{customer_id: 'VARCHAR', region: 'VARCHAR'}}))
            WHERE customer_id IS NOT NULL GROUP BY customer_id""",
        f"""CREATE OR REPLACE TEMP TABLE stores AS
            SELECT store_id, arg_max(region, rn) AS region FROM (
              SELECT sl_key(id) AS store_id,
                     coalesce(sl_region(sl_text(region)), sl_text(region)) AS region,
                     row_number() OVER () AS rn
              FROM read_csv({path('stores', 'stores.csv')}, header = true, all_varchar = true))
            WHERE store_id IS NOT NULL GROUP BY store_id""",
    ]


def staged_sql(selects: list[str]) -> str:
    """Every sales record, validated: its quarantine reason (NULL = valid), the raw text of a
    quarantined record (for quarantine.parquet) and the parsed, normalised values of a valid one
    (for fact_sales). Keeping only one of the two per row keeps the table small."""
    union = "\nUNION ALL\n".join(selects)
    raw = ", ".join(f"CASE WHEN reason IS NOT NULL THEN {f} END AS raw_{f}" for f in FIELDS)
    return f"""
CREATE OR REPLACE TEMP TABLE staged AS
WITH src AS (
{union}
),
s1 AS (
  SELECT *,
         sl_key(sales_date) AS d_txt,
         sl_number(quantity) AS t_q, sl_number(unit_price) AS t_p, sl_number(amount) AS t_a,
         sl_key(customer_id) AS cust, sl_key(product_id) AS pid, sl_key(product_name) AS pname,
         sl_trim(currency) AS cur_t
  FROM src
),
s2 AS (
  SELECT * EXCLUDE (cur_t), sl_date(d_txt) AS sdate, sl_currency_t(cur_t) AS cur,
         TRY_CAST(t_q AS DECIMAL(18, 2)) AS v_q,
         TRY_CAST(t_p AS DECIMAL(18, 4)) AS price,
         TRY_CAST(t_a AS DECIMAL(18, 2)) AS v_a
  FROM s1
),
s3 AS (
  SELECT s2.*,
    CASE WHEN cur = 'USD' THEN 1::DECIMAL(18, 8) ELSE fx_rate END AS rate,
    CASE
      WHEN d_txt IS NULL THEN 'missing_key'
      WHEN sdate IS NULL THEN 'bad_date'
      WHEN t_q IS NOT NULL AND (v_q IS NULL OR v_q % 1 <> 0) THEN 'bad_number'
      WHEN t_p IS NOT NULL AND price IS NULL THEN 'bad_number'
      WHEN t_a IS NOT NULL AND v_a IS NULL THEN 'bad_number'
      WHEN cust IS NULL THEN 'missing_key'
      WHEN pid IS NULL AND pname IS NULL THEN 'missing_key'
      WHEN v_a IS NULL AND (v_q IS NULL OR price IS NULL) THEN 'missing_amount'
      WHEN cur IS NULL THEN 'unknown_currency'
      WHEN cur <> 'USD' AND fx_rate IS NULL THEN 'missing_fx_rate'
    END AS reason
  FROM s2 LEFT JOIN fx ON fx_cur = s2.cur AND fx_ym = year(s2.sdate) * 100 + month(s2.sdate)
),
s4 AS (
  SELECT file_rank, line, reason, {raw},
    -- parsed values of the valid rows
    CASE WHEN reason IS NULL THEN sdate END AS sdate,
    CASE WHEN reason IS NULL THEN sl_key(transaction_id) END AS txn,
    CASE WHEN reason IS NULL THEN TRY_CAST(sl_trim(line_number) AS BIGINT) END AS line_no,
    CASE WHEN reason IS NULL THEN cust END AS cust,
    CASE WHEN reason IS NULL THEN pid END AS pid,
    CASE WHEN reason IS NULL THEN pname END AS pname,
    CASE WHEN reason IS NULL AND pid IS NULL THEN sl_name_key(pname) END AS name_key,
    CASE WHEN reason IS NULL THEN CAST(v_q AS BIGINT) END AS qty,
    CASE WHEN reason IS NULL THEN price END AS price,
    CASE WHEN reason IS NULL THEN
      coalesce(v_a, CAST(round(CAST(v_q AS DECIMAL(38, 4)) * price, 2) AS DECIMAL(18, 2)))
    END AS amt,
    reason IS NULL AND v_a IS NULL AS amount_filled,
    CASE WHEN reason IS NULL THEN cur END AS cur,
    CASE WHEN reason IS NULL THEN rate END AS rate,
    CASE WHEN reason IS NULL THEN sl_status(status) END AS st,
    CASE WHEN reason IS NULL THEN sl_key(store_id) END AS store,
    CASE WHEN reason IS NULL THEN sl_key(sales_person_id) END AS person,
    CASE WHEN reason IS NULL THEN sl_key(campaign_id) END AS campaign,
    CASE WHEN reason IS NULL THEN sl_channel(channel) END AS channel_n,
    CASE WHEN reason IS NULL THEN lower(sl_text(payment_method)) END AS payment,
    CASE WHEN reason IS NULL THEN sl_region(region) END AS region_n,
    -- a region written messily that normalises to a canonical one (the manifest counts them)
    reason IS NULL AND region IS NOT NULL AND NOT sl_in(region, {bars(REGIONS)}) AS region_odd
  FROM s3
)
SELECT * EXCLUDE (region_odd),
       region_odd AND sl_in(region_n, {bars(REGIONS)}) AS messy_region
FROM s4
"""


# The identity of a valid sale (SalesTransform::dedupe_key): its transaction id with its line
# number, or with its product (product_id, else "n:" + name_match_key(product_name)); without a
# transaction id, a fingerprint of its normalised values.
DEDUPE_KEY = """
CASE WHEN txn IS NOT NULL THEN
       't' || chr(31) || txn || chr(31) ||
       coalesce(CAST(line_no AS VARCHAR), pid, 'n:' || name_key)
     ELSE concat_ws(chr(31), 'f', CAST(sdate AS VARCHAR), coalesce(cust, ''),
                    coalesce(pid, 'n:' || name_key), coalesce(store, ''), coalesce(person, ''),
                    coalesce(CAST(qty AS VARCHAR), ''),
                    coalesce(CAST(CAST(price * 10000 AS HUGEINT) AS VARCHAR), ''),
                    CAST(CAST(amt * 100 AS HUGEINT) AS VARCHAR), cur, st,
                    coalesce(region_n, ''), coalesce(channel_n, ''), coalesce(campaign, ''))
END
"""

# The first occurrence (in file order, then line order) of each key loads; the others are
# duplicates.
DUPLICATES_SQL = f"""
CREATE OR REPLACE TEMP TABLE duplicates AS
SELECT file_rank, line FROM (
  SELECT file_rank, line,
         row_number() OVER (PARTITION BY dkey ORDER BY file_rank, line) AS occurrence
  FROM (SELECT file_rank, line, {DEDUPE_KEY} AS dkey FROM staged WHERE reason IS NULL))
WHERE occurrence > 1
"""

# Quarantined rows: the reason, a message like shoplake's, and the original values. The message
# re-parses the few quarantined rows rather than keeping parse details for every row.
QUARANTINE_SQL = f"""
SELECT f.source, f.file, q.line, q.reason,
  CASE q.reason
    WHEN 'missing_key' THEN
      CASE WHEN sl_key(q.raw_sales_date) IS NULL THEN 'sales_date is empty'
           WHEN sl_key(q.raw_customer_id) IS NULL THEN 'customer_id is empty'
           ELSE 'neither product_id nor product_name is given' END
    WHEN 'bad_date' THEN 'sales_date: "' || sl_trim(q.raw_sales_date) || '" is not a date'
    WHEN 'bad_number' THEN
      CASE WHEN sl_number(q.raw_quantity) = 'ERR'
                THEN 'quantity: "' || q.raw_quantity || '" is not a number'
           WHEN TRY_CAST(sl_number(q.raw_quantity) AS DECIMAL(18, 2)) % 1 <> 0
                THEN 'quantity: "' || q.raw_quantity || '" is not a whole number'
           WHEN sl_number(q.raw_quantity) IS NOT NULL
                AND TRY_CAST(sl_number(q.raw_quantity) AS DECIMAL(18, 2)) IS NULL
                THEN 'quantity: "' || q.raw_quantity || '" is too large'
           WHEN sl_number(q.raw_unit_price) IS NOT NULL
                AND TRY_CAST(sl_number(q.raw_unit_price) AS DECIMAL(18, 4)) IS NULL
                THEN 'unit_price: "' || q.raw_unit_price || '" is not a number'
           ELSE 'amount: "' || q.raw_amount || '" is not a number' END
    WHEN 'missing_amount' THEN 'amount is empty and quantity x unit_price is not known'
    WHEN 'unknown_currency'
         THEN 'currency "' || upper(sl_trim(q.raw_currency))
              || '" is not a known ISO 4217 code'
    WHEN 'missing_fx_rate'
         THEN 'no ' || sl_currency(q.raw_currency) || ' rate for '
              || strftime(sl_date(sl_key(q.raw_sales_date)), '%Y-%m')
              || '; add it to an fx_rates file and replay'
  END AS detail,
  {', '.join(f'q.raw_{f} AS {f}' for f in FIELDS)}
FROM staged q JOIN files f USING (file_rank)
WHERE q.reason IS NOT NULL
ORDER BY q.file_rank, q.line
"""

FACT_SQL = """
SELECT s.txn AS transaction_id,
       s.line_no AS line_number,
       s.sdate AS sales_date,
       CAST(year(s.sdate) * 10000 + month(s.sdate) * 100 + day(s.sdate) AS INTEGER) AS date_key,
       s.cust AS customer_id,
       coalesce(s.pid, n.product_id, 'name:' || s.name_key) AS product_id,
       coalesce(p.product_name, s.pname) AS product_name,
       p.category,
       s.store AS store_id,
       s.person AS sales_person_id,
       s.campaign AS campaign_id,
       coalesce(s.channel_n, f.default_channel) AS channel,
       s.payment AS payment_method,
       s.st AS status,
       s.st = 'OUT' AS is_outlier,
       s.qty AS quantity,
       s.price AS unit_price,
       s.amt AS amount,
       s.amount_filled,
       s.cur AS currency,
       s.rate AS fx_rate,
       CAST(round(CAST(s.amt AS DECIMAL(38, 2)) * CAST(s.rate AS DECIMAL(38, 8)), 2)
            AS DECIMAL(18, 2)) AS amount_usd,
       c.customer_id IS NULL AS customer_inferred,
       p.product_id IS NULL AS product_inferred,
       f.source,
       f.file,
       s.line AS source_line,
       current_timestamp AS loaded_at,
       -- a sale without a region takes its store's, else its customer's
       coalesce(s.region_n, st.region, c.region, 'Unknown') AS region,
       CAST(year(s.sdate) AS INTEGER) AS year,
       CAST(month(s.sdate) AS INTEGER) AS month
FROM staged s
JOIN files f USING (file_rank)
ANTI JOIN duplicates d ON d.file_rank = s.file_rank AND d.line = s.line
LEFT JOIN product_names n ON s.pid IS NULL AND n.name_key = s.name_key
LEFT JOIN products p ON p.product_id = coalesce(s.pid, n.product_id, 'name:' || s.name_key)
LEFT JOIN customers c ON c.customer_id = s.cust
LEFT JOIN stores st ON st.store_id = s.store
WHERE s.reason IS NULL
"""


def run_etl(con, data_dir: Path, out_dir: Path, steps: dict) -> list:
    def step(name, sqls):
        t = time.perf_counter()
        for q in sqls if isinstance(sqls, list) else [sqls]:
            con.execute(q)
        steps[name] = round(time.perf_counter() - t, 3)

    files = sales_files(data_dir)
    if not files:
        raise RuntimeError(f"no sales files under {data_dir}/store_sales or {data_dir}/ecommerce")
    values = ", ".join(
        f"({i}, {sql_str(src)}, {sql_str(rel)}, {sql_str(default_channel(src))})"
        for i, (src, rel, _, _) in enumerate(files)
    )
    files_table = (
        "CREATE OR REPLACE TEMP TABLE files AS SELECT * FROM (VALUES "
        f"{values}) t(file_rank, source, file, default_channel)"
    )
    step("reference", reference_sql(data_dir) + [files_table])
    selects = [file_select(i, path, fmt) for i, (_, _, path, fmt) in enumerate(files)]
    step("read_validate", staged_sql(selects))
    step("dedupe", DUPLICATES_SQL)
    step("write_quarantine", f"""
        COPY ({QUARANTINE_SQL}) TO {sql_str(str(out_dir / 'quarantine.parquet'))}
        (FORMAT PARQUET, COMPRESSION ZSTD)""")
    # The partitioned write does not need the input order.
    con.execute("SET preserve_insertion_order = false")
    step("write_fact_sales", f"""
        COPY ({FACT_SQL}) TO {sql_str(str(out_dir / 'fact_sales'))}
        (FORMAT PARQUET, PARTITION_BY (region, year, month), COMPRESSION ZSTD)""")
    return files


def collect_counts(con, out_dir: Path, files) -> dict:
    """Counts of the run, overall and per file; the loaded-row counts are read back from the
    written fact_sales, so they also check the output."""
    per_file = new_per_file(files)
    rel_by_rank = {i: rel for i, (_, rel, _, _) in enumerate(files)}
    for rank, reason, n in con.execute(
            "SELECT file_rank, coalesce(reason, ''), count(*) FROM staged GROUP BY ALL").fetchall():
        f = per_file[rel_by_rank[rank]]
        f["rows_in"] += n
        if reason:
            f["quarantined"][reason] = n
        else:
            f["loaded"] += n
    dups = con.execute("SELECT file_rank, count(*) FROM duplicates GROUP BY ALL").fetchall()
    for rank, n in dups:
        per_file[rel_by_rank[rank]]["duplicates"] = n
        per_file[rel_by_rank[rank]]["loaded"] -= n

    fact = sql_str(str(out_dir / "fact_sales" / "**" / "*.parquet"))
    row = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE amount_filled), count(*) FILTER (WHERE is_outlier),
               count(*) FILTER (WHERE customer_inferred), count(*) FILTER (WHERE product_inferred),
               count(DISTINCT customer_id) FILTER (WHERE customer_inferred),
               count(DISTINCT product_id) FILTER (WHERE product_inferred),
               coalesce(sum(amount_usd), 0)
        FROM read_parquet({fact}, hive_partitioning = true)""").fetchone()
    messy = con.execute("""
        SELECT count(*) FROM staged s
        ANTI JOIN duplicates d ON d.file_rank = s.file_rank AND d.line = s.line
        WHERE s.messy_region""").fetchone()[0]
    q_rows = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_str(str(out_dir / 'quarantine.parquet'))})"
    ).fetchone()[0]
    return counts_of(per_file, row, q_rows, messy)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Run shoplake's sales ETL rules in DuckDB over a generated data folder and "
                    "check the counts against its manifest.json.")
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit (default 2GB)")
    ap.add_argument("--temp-dir", type=Path, default=None,
                    help="where DuckDB spills (default OUT_DIR/duckdb_tmp, removed afterwards)")
    ap.add_argument("--no-check", action="store_true",
                    help="do not compare with DATA_DIR/manifest.json")
    args = ap.parse_args(argv)

    data_dir, out_dir = args.data_dir.resolve(), args.out_dir.resolve()
    manifest_path = check_dirs(data_dir, args.no_check)
    if manifest_path is None:
        return 2
    # Only what this script writes is replaced.
    clear_outputs(out_dir)
    temp_dir = (args.temp_dir or out_dir / "duckdb_tmp").resolve()
    own_temp = args.temp_dir is None
    temp_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    steps: dict[str, float] = {}
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads = {int(args.threads)}")
        con.execute(f"SET memory_limit = {sql_str(args.memory_limit)}")
        con.execute(f"SET temp_directory = {sql_str(str(temp_dir))}")
        # Record indexes (row_number() OVER ()) follow file order only with this on.
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET enable_progress_bar = false")
        con.execute(MACROS)
        files = run_etl(con, data_dir, out_dir, steps)
        seconds = time.perf_counter() - started
        t = time.perf_counter()
        counts = collect_counts(con, out_dir, files)
        steps["count_and_check"] = round(time.perf_counter() - t, 3)
    except (duckdb.Error, OSError, RuntimeError) as e:
        sys.stderr.write(f"duckdb_etl.py failed: {e}\n")
        return 2
    finally:
        con.close()
        if own_temp:
            shutil.rmtree(temp_dir, ignore_errors=True)

    return finish(
        "duckdb", "DuckDB's", {"duckdb_version": duckdb.__version__}, counts,
        {
            "files": len(files),
            "threads": args.threads,
            "memory_limit": args.memory_limit,
            "seconds": round(seconds, 3),
            "steps": steps,
        },
        manifest_path, args.no_check,
    )


if __name__ == "__main__":
    sys.exit(main())
