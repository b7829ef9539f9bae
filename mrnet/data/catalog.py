"""Read and validate a canonical catalog; defects go to quarantine, never vanish.

A catalog is Parquet or CSV with the required columns ``product_id, product_group,
source, locale, title`` (``description`` optional) plus the label columns the
configured tasks name. A missing required column is one clear error naming the file
and column (with the closest existing name, if it looks misnamed).

Row defects move the row to ``quarantine.parquet`` with every reason found:

==========================  ====================================================
reason                      meaning
==========================  ====================================================
``missing_product_id``      empty product id
``duplicate_product_id``    id seen on an earlier row (the first one is kept)
``unknown_pg``              product group not among the configured PGs (or empty)
``bad_pg_name``             a PG name that cannot be a path segment (config.base.SEGMENT)
``empty_title``             empty or whitespace-only title
``invalid_text:<col>``      invalid UTF-8 or control characters in a text column
``title_too_long``          title longer than ``data.max_title_chars``
``bad_number:<col>``        NaN, infinite or negative numeric label
``wrong_type:<col>``        a label that is not of its task's type (text in a number column ...)
``bad_row``                 a CSV record with the wrong number of fields (its raw text is in ``raw``)
==========================  ====================================================

A missing label is not a defect: that task simply does not use the product.
Tabs and newlines inside text are whitespace and are folded to spaces.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.config.base import is_segment
from mrnet.config.training import TaskSpec
from mrnet.data.sample import hash_rank
from mrnet.io import storage

REQUIRED = ["product_id", "product_group", "source", "locale", "title"]
TEXT_COLUMNS = ["title", "description"]
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_WHITESPACE = re.compile(r"[\t\r\n]+")
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


class CatalogError(ValueError):
    """A catalog that cannot be read as a whole (the message names file and column)."""


def read_catalog(uri: str, bad_rows: list | None = None) -> pd.DataFrame:
    """Read Parquet as typed columns, CSV as text (invalid UTF-8 kept as surrogates). A CSV
    record with the wrong number of fields is an error naming the file and its line, unless a
    ``bad_rows`` list is given: then the record is skipped and appended to it as (data row,
    problem, fields), for the quarantine. Any unreadable file is one CatalogError naming it."""
    path = storage.local_path(uri)
    if path.is_dir():
        raise CatalogError(f"{uri} is a directory: give a catalog file (.parquet or .csv)")
    try:
        if path.suffix == ".parquet":
            return _read_parquet_keep_nan(path)
        if path.suffix in {".csv", ".gz", ".tsv"}:
            return _read_csv(path, "\t" if ".tsv" in path.suffixes else ",", bad_rows)
    except CatalogError:
        raise
    except pd.errors.EmptyDataError:
        raise CatalogError(f"{uri}: the file is empty (no header row)") from None
    except (pd.errors.ParserError, EOFError, OSError, UnicodeError, ValueError) as exc:  # truncated .gz, bad parquet ...
        problem = " ".join(str(exc).split()).removeprefix("Error tokenizing data. C error: ")
        raise CatalogError(f"{uri}: cannot read the file: {problem or type(exc).__name__}") from None
    raise CatalogError(f"{uri}: unsupported catalog format {path.suffix!r} (use .parquet or .csv)")


def _read_csv(path: Path, sep: str, bad_rows: list | None) -> pd.DataFrame:
    import warnings

    options = dict(dtype=object, keep_default_na=False, sep=sep, encoding="utf-8", encoding_errors="surrogateescape")
    if bad_rows is None:
        return pd.read_csv(path, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        df = pd.read_csv(path, on_bad_lines="warn", **options)
    skipped = [(int(m["line"]), m["problem"]) for w in caught for m in _BAD_LINE.finditer(str(w.message))]
    if skipped:
        fields = _records(path, sep, {line for line, _ in skipped})
        bad_rows += [(line - 1, problem, fields.get(line)) for line, problem in skipped]  # line 1 = header
    return df


_BAD_LINE = re.compile(r"Skipping line (?P<line>\d+): (?P<problem>[^\n]*)")


def _records(path: Path, sep: str, wanted: set[int]) -> dict[int, str]:
    """The raw fields of CSV records ``wanted`` (1 = the header), as the csv module splits them."""
    import csv
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    out = {}
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for number, record in enumerate(csv.reader(fh, delimiter=sep), start=1):
            if number in wanted:
                out[number] = _printable(sep.join(record))
            if number >= max(wanted):
                break
    return out


def _read_parquet_keep_nan(path: Path) -> pd.DataFrame:
    """Parquet → DataFrame where a null float is None and a stored NaN stays NaN (a defect)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    df = table.to_pandas()
    for name in table.column_names:
        column = table.column(name)
        if column.null_count and str(column.type) in {"float", "double", "halffloat"}:
            values = df[name].astype(object)
            values[np.asarray(column.is_null())] = None
            df[name] = values
    return df


def conform(df: pd.DataFrame, data, uri: str) -> pd.DataFrame:
    """A user's file in canonical columns, by config alone (``data``: the DataConfig):
    ``data.columns`` renames file columns (a mapped column the file lacks is an error naming
    the closest one); a missing ``product_group`` / ``source`` / ``locale`` column is filled from
    ``data.product_group`` / ``data.source`` (default: the file's name) / ``data.locale``;
    ``category_path`` levels split by ``data.category_sep`` are rejoined with " > "."""
    for column in data.columns:
        if column not in df.columns:
            close = difflib.get_close_matches(column, [str(c) for c in df.columns], n=1, cutoff=0.6)
            hint = f" (found {close[0]!r}: misnamed?)" if close else f"; its columns: {list(df.columns)[:20]}"
            raise CatalogError(f"{uri}: data.columns maps column {column!r}, which the file does not have{hint}")
    clash = [c for f, c in data.columns.items() if c in df.columns and c not in data.columns and c != f]
    if clash:
        raise CatalogError(f"{uri}: data.columns maps a column onto {clash}, which the file already has; "
                           "map that one away too, or drop the mapping")
    df = df.rename(columns=data.columns)
    name = Path(str(uri)).name.split(".")[0]
    for column, value in (("product_group", data.product_group), ("source", data.source or name),
                          ("locale", data.locale)):
        if column not in df.columns:
            df[column] = value
    if data.category_sep and "category_path" in df.columns:
        df["category_path"] = df["category_path"].map(
            lambda v: v if not isinstance(v, str) else " > ".join(p.strip() for p in v.split(data.category_sep)))
    return df


def check_columns(df: pd.DataFrame, uri: str, tasks: list[TaskSpec]) -> list[str]:
    """Raise on a missing required column; return warnings for absent task columns."""
    for col in REQUIRED:
        if col not in df.columns:
            close = difflib.get_close_matches(col, [str(c) for c in df.columns], n=1, cutoff=0.6)
            hint = f" (found {close[0]!r}: misnamed?)" if close else ""
            raise CatalogError(f"{uri}: required column {col!r} is missing{hint}")
        if not (df[col].dtype == object or pd.api.types.is_string_dtype(df[col])):
            raise CatalogError(f"{uri}: required column {col!r} is {df[col].dtype}, not text: write it as strings "
                               f"(e.g. df[{col!r}] = df[{col!r}].astype(str)) so ids and titles are kept as they are")
    return [f"task {t.name!r}: column {t.column!r} not in {uri}; the task gets no labels"
            for t in tasks if t.column not in df.columns]


def _missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, str) and not value.strip()


def _text(value: object) -> str | None:
    if type(value) is str:  # the common case first: a cell of text (1M+ cells on a demo-sized catalog)
        return value if value.strip() else None
    if _missing(value) or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return str(value)


def _printable(value: object) -> str:
    """Any cell as writable text: invalid UTF-8 shows as \\xNN escapes in the quarantine."""
    text = _text(value)
    if text is None:
        return ""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _parse_number(value: object) -> tuple[float | None, str | None]:
    """(value, defect) for one numeric label; (None, None) when missing."""
    if _missing(value):
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return None, "wrong_type"
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, "wrong_type"
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None, "bad_number"
    return number, None


def _parse_bool(value: object) -> tuple[bool | None, str | None]:
    if _missing(value):
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return bool(value), None
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE, None
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value), None
    return None, "wrong_type"


def _parse_category(value: object) -> tuple[str | None, str | None]:
    if _missing(value) or (isinstance(value, float) and math.isnan(value)):
        return None, None
    if not isinstance(value, (str, bytes)):
        return None, "wrong_type"
    text = _text(value)
    return (None, "invalid_text") if _BAD_CHARS.search(text) else (text.strip(), None)


_PARSERS = {"number": _parse_number, "bool": _parse_bool, "category": _parse_category}
_DTYPES = {"number": "Float64", "bool": "boolean", "category": "str"}


def _label_columns(df: pd.DataFrame, tasks: list[TaskSpec]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for task in tasks:
        kind = task.column_type
        if task.column in df.columns and kind != "text":
            if kinds.get(task.column, kind) != kind:
                raise CatalogError(f"column {task.column!r} is used as {kinds[task.column]} and {kind}")
            kinds[task.column] = kind
    return kinds


def validate(df: pd.DataFrame, uri: str, pgs: list[str] | None, tasks: list[TaskSpec],
             max_title_chars: int, bad_rows: list | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a catalog into (clean rows with typed labels, quarantined rows with reasons).
    ``pgs``: the configured PGs, or None to accept every PG whose name is a safe path segment.
    ``bad_rows``: read_catalog's unparseable records, quarantined as ``bad_row``; quarantine
    ``row`` numbers are the file's data rows (1 = the first row after the header)."""
    df = df.reset_index(drop=True)
    reasons: list[list[str]] = [[] for _ in range(len(df))]
    labels = _label_columns(df, tasks)
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col in labels or not (col in REQUIRED + TEXT_COLUMNS or df[col].dtype == object
                                 or pd.api.types.is_string_dtype(df[col])):
            continue
        values = [_text(v) for v in df[col].to_numpy(dtype=object)]  # not Series iteration: 5x slower on Arrow text
        for i, v in enumerate(values):
            if v is not None and _BAD_CHARS.search(v):
                reasons[i].append(f"invalid_text:{col}")
        out[col] = pd.Series([_WHITESPACE.sub(" ", v).strip() if v is not None else None for v in values],
                             dtype=object)
    for col in REQUIRED + [c for c in TEXT_COLUMNS if c in df.columns]:
        out[col] = out[col].fillna("")
    first_seen: dict[str, int] = {}
    known = None if pgs is None else set(pgs)
    for i, (pid, pg, title) in enumerate(zip(out["product_id"], out["product_group"], out["title"])):
        if not pid:
            reasons[i].append("missing_product_id")
        elif pid in first_seen:
            reasons[i].append(f"duplicate_product_id(first at row {first_seen[pid] + 1})")
        else:
            first_seen[pid] = i
        if not pg or (known is not None and pg not in known):
            reasons[i].append("unknown_pg")
        elif not is_segment(pg):  # a PG name becomes a folder: models/<pg>/
            reasons[i].append("bad_pg_name")
        if not title:
            reasons[i].append("empty_title")
        elif len(title) > max_title_chars:
            reasons[i].append("title_too_long")
    for col, kind in labels.items():
        parsed = [_PARSERS[kind](v) for v in df[col].to_numpy(dtype=object)]
        for i, (_, defect) in enumerate(parsed):
            if defect:
                reasons[i].append(f"{defect}:{col}")
        out[col] = pd.array([v for v, d in parsed], dtype=_DTYPES[kind]) if parsed else []
    for col in df.columns:  # carry every other column through untouched (eval-reserved ones too)
        if col not in out:
            out[col] = df[col]
    bad = np.array([bool(r) for r in reasons], dtype=bool)
    clean = out[~bad].reset_index(drop=True)
    for col in clean.columns:
        if clean[col].dtype == object and col not in labels:
            clean[col] = clean[col].astype("str")
    rows = _data_rows(len(df), [row for row, _, _ in bad_rows or ()])
    quarantine = df[bad].map(_printable).assign(
        row=rows[bad], reason=["; ".join(r) for r, b in zip(reasons, bad) if b], source_file=uri)
    if bad_rows:
        unparsed = pd.DataFrame({"row": [r for r, _, _ in bad_rows], "raw": [f for _, _, f in bad_rows],
                                 "reason": [f"bad_row({problem})" for _, problem, _ in bad_rows], "source_file": uri})
        quarantine = pd.concat([quarantine, unparsed]).sort_values("row", kind="stable")
        quarantine[list(df.columns) + ["raw"]] = quarantine[list(df.columns) + ["raw"]].fillna("")
    return clean, quarantine.reset_index(drop=True)


def _data_rows(n: int, skipped: list[int]) -> np.ndarray:
    """The file data-row numbers (1-based) of the ``n`` rows read, around the ``skipped`` ones."""
    read = np.ones(n + len(skipped) + 1, dtype=bool)
    read[0] = False
    read[skipped] = False
    return np.flatnonzero(read)


def sample_per_pg(df: pd.DataFrame, max_rows: int | None, seed: int,
                  fraction: float | None = None) -> pd.DataFrame:
    """Deterministic per-PG sample: the first ``ceil(fraction * n)`` products of each PG (at
    most ``max_rows``) in the order of a seeded hash of product_id, so a product stays in or
    out of the sample across runs."""
    if not max_rows and not fraction:
        return df
    order = df.assign(_k=hash_rank(df["product_id"], seed, "sample")).sort_values(["product_group", "_k"])
    rank = order.groupby("product_group", sort=False).cumcount()
    keep = rank < (max_rows or len(df))
    if fraction:
        sizes = order.groupby("product_group", sort=False)["product_id"].transform("size")
        keep &= rank < np.ceil(sizes * fraction)
    return order[keep].drop(columns="_k").reset_index(drop=True)


def quarantine_summary(uri: str, n_in: int, quarantine: pd.DataFrame) -> dict:
    counts = Counter(r.split("(")[0] for reasons in quarantine["reason"] for r in reasons.split("; "))
    return {"source_file": uri, "rows_in": n_in, "rows_clean": n_in - len(quarantine),
            "rows_quarantined": len(quarantine), "by_reason": dict(counts.most_common())}


def validate_catalog(uri: str, out_dir: str, pgs: list[str] | None, tasks: list[TaskSpec],
                     max_title_chars: int, max_rows_per_pg: int | None = None,
                     seed: int = 0, sample_fraction: float | None = None, data=None) -> tuple[str, dict]:
    """Validate ``uri``; write clean catalog, quarantine and summary under ``out_dir``. The clean
    catalog is sorted by PG (stable): each PG is a run of whole row groups, so an embedding shard
    reads its own rows and little else (``embed.shard_rows``)."""
    bad_rows: list = []
    raw = read_catalog(uri, bad_rows)
    if data is not None:
        raw = conform(raw, data, uri)
    warnings = check_columns(raw, uri, tasks)
    clean, quarantine = validate(raw, uri, pgs, tasks, max_title_chars, bad_rows)
    clean = sample_per_pg(clean, max_rows_per_pg, seed, sample_fraction)
    clean = clean.sort_values("product_group", kind="stable").reset_index(drop=True)
    summary = quarantine_summary(uri, len(raw) + len(bad_rows), quarantine) | {"warnings": warnings,
                                                                               "rows_used": len(clean)}
    storage.write_parquet(quarantine, storage.join(out_dir, "quarantine.parquet"))
    if len(clean):
        storage.write_parquet(clean, storage.join(out_dir, "catalog.parquet"))
    storage.write_text(storage.join(out_dir, "quarantine_summary.json"), json.dumps(summary, indent=2))
    if not len(clean):  # nothing to train on: stop here, before an empty corpus is built and cached
        why = f"all {summary['rows_in']} quarantined ({summary['by_reason']})" if summary["rows_in"] else "it has no rows"
        raise CatalogError(f"{uri}: no usable product: {why}; see {storage.join(out_dir, 'quarantine.parquet')}")
    return storage.join(out_dir, "catalog.parquet"), summary


def describe_quarantine(summary: dict) -> str:
    if not summary["rows_quarantined"]:
        return f"{Path(summary['source_file']).name}: {summary['rows_in']} rows, none quarantined"
    parts = ", ".join(f"{k}={v}" for k, v in summary["by_reason"].items())
    return (f"{Path(summary['source_file']).name}: {summary['rows_in']} rows, "
            f"{summary['rows_quarantined']} quarantined ({parts})")
