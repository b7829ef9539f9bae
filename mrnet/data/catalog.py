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
    """Read a whole catalog file: Parquet as typed columns, CSV as text (invalid UTF-8 kept as surrogates).
    A CSV record with the wrong number of fields is an error naming the file and its line, unless a
    ``bad_rows`` list is given: then the record is skipped and appended to it as (data row, problem,
    fields), for the quarantine. Any unreadable file is one CatalogError naming it (``read_chunks``)."""
    frames, skipped = [], []
    for frame, bad in read_chunks(uri, 1 << 62):
        frames.append(frame)
        skipped += bad
    if skipped and bad_rows is None:
        row, problem = skipped[0]
        raise CatalogError(f"{uri}: cannot read the file: {problem} (line {row + 1})")
    if skipped:
        fields = bad_row_fields(uri, [r for r, _ in skipped])
        bad_rows += [(r, problem, fields.get(r)) for r, problem in skipped]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_chunks(uri: str, chunk_rows: int):
    """The rows of one catalog file in batches of ``chunk_rows``, with the memory of one batch:
    yields (frame, bad) per batch, ``bad`` the CSV records skipped while reading it as (data row,
    problem); ``bad_row_fields`` gives their raw text afterwards. Always yields at least one frame
    (an empty one for a file with a header only). Unreadable files: one CatalogError naming them."""
    path = storage.local_path(uri)
    if path.is_dir():
        raise CatalogError(f"{uri} is a directory: give a catalog file (.parquet or .csv)")
    if path.suffix not in {".parquet", ".csv", ".gz", ".tsv"}:
        raise CatalogError(f"{uri}: unsupported catalog format {path.suffix!r} (use .parquet or .csv)")
    try:
        if path.suffix == ".parquet":
            yield from _parquet_chunks(path, chunk_rows)
        else:
            yield from _csv_chunks(path, "\t" if ".tsv" in path.suffixes else ",", chunk_rows)
    except CatalogError:
        raise
    except pd.errors.EmptyDataError:
        raise CatalogError(f"{uri}: the file is empty (no header row)") from None
    except (pd.errors.ParserError, EOFError, OSError, UnicodeError, ValueError) as exc:  # truncated .gz, bad parquet ...
        problem = " ".join(str(exc).split()).removeprefix("Error tokenizing data. C error: ")
        raise CatalogError(f"{uri}: cannot read the file: {problem or type(exc).__name__}") from None


def _csv_chunks(path: Path, sep: str, chunk_rows: int):
    import warnings

    options = dict(dtype=object, keep_default_na=False, sep=sep, encoding="utf-8", encoding_errors="surrogateescape")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        reader, yielded = pd.read_csv(path, on_bad_lines="warn", chunksize=chunk_rows, **options), False
        with reader:
            for frame in reader:  # pandas reports a skipped line while reading the batch that holds it
                skipped = [(int(m["line"]) - 1, m["problem"]) for w in caught
                           for m in _BAD_LINE.finditer(str(w.message))]  # line 1 = the header
                caught.clear()
                yielded = True
                yield frame, skipped
        if not yielded:
            yield pd.read_csv(path, nrows=0, **options), []


def _parquet_chunks(path: Path, chunk_rows: int):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, pre_buffer=False)
    nullable, yielded = _nullable_floats(parquet), False
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yielded = True
        yield frame_keep_nan(batch, nullable), []
    if not yielded:
        yield parquet.schema_arrow.empty_table().to_pandas(), []


def bad_row_fields(uri: str, rows: list[int]) -> dict[int, str]:
    """The raw text of CSV data rows ``rows`` (1 = the first after the header), read in one pass."""
    if not rows:
        return {}
    path = storage.local_path(uri)
    fields = _records(path, "\t" if ".tsv" in path.suffixes else ",", {row + 1 for row in rows})
    return {line - 1: text for line, text in fields.items()}


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
                out[number] = printable(sep.join(record))
            if number >= max(wanted):
                break
    return out


def _nullable_floats(parquet) -> set[str]:
    """The float columns of a Parquet file with a null anywhere in it (row-group statistics, or the
    row group's column where they are missing): each batch converts them alike, as the whole file would."""
    out = set()
    for field in parquet.schema_arrow:
        if str(field.type) not in {"float", "double", "halffloat"}:
            continue
        column = parquet.schema_arrow.get_field_index(field.name)
        for rg in range(parquet.num_row_groups):
            stats = parquet.metadata.row_group(rg).column(column).statistics
            nulls = stats.null_count if stats is not None and stats.has_null_count else \
                parquet.read_row_group(rg, columns=[field.name]).column(0).null_count
            if nulls:
                out.add(field.name)
                break
    return out


def frame_keep_nan(table, nullable: set[str] | None = None) -> pd.DataFrame:
    """An Arrow table or batch as a DataFrame where a null float is None and a stored NaN stays NaN: every
    reader of a catalog sees its numbers the same way (``read_catalog``, data/reads.py).
    ``nullable``: the float columns to convert (default: those with a null in ``table``)."""
    df = table.to_pandas()
    for name in table.column_names:
        column = table.column(name)
        has_null = column.null_count if nullable is None else name in nullable
        if has_null and str(column.type) in {"float", "double", "halffloat"}:
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


def integer_ids_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """An integer ``product_id`` column (a Parquet ``index``) as its exact text; any other type stays, for
    ``check_columns`` to refuse (a float's text, ``1.0``, is not the id that was meant)."""
    if "product_id" in df.columns and pd.api.types.is_integer_dtype(df["product_id"]):
        df = df.assign(product_id=df["product_id"].astype("string").astype(object))
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


def clean_text(value: object) -> str | None:
    """A text cell as ``check_rows`` keeps it: tabs and newlines folded to spaces, stripped; None when empty."""
    text = _text(value)
    return None if text is None else _WHITESPACE.sub(" ", text).strip()


def printable(value: object) -> str:
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


def check_rows(df: pd.DataFrame, uri: str, pgs: list[str] | None, tasks: list[TaskSpec], max_title_chars: int,
               rows: np.ndarray, duplicate=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row check of one batch of rows: (clean rows with typed labels and their file data-row
    number in ``_row``, quarantined rows with reasons). ``rows``: the file data-row numbers of the
    batch (1 = the first row after the header). ``duplicate(i, product_id) → reason or None``
    decides duplicates when the whole catalog is at hand (``validate``); without it the check is
    left to the merge (data/staging.py), which sees every product id of every file."""
    df = df.reset_index(drop=True)
    reasons: list[list[str]] = [[] for _ in range(len(df))]
    # a task on a required or text column (``source``, ``locale``, ``product_group``) labels with its cleaned text
    labels = {c: k for c, k in _label_columns(df, tasks).items() if c not in REQUIRED + TEXT_COLUMNS}
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
    known = None if pgs is None else set(pgs)
    for i, (pid, pg, title) in enumerate(zip(out["product_id"], out["product_group"], out["title"])):
        if not pid:
            reasons[i].append("missing_product_id")
        elif duplicate is not None and (why := duplicate(i, pid)):
            reasons[i].append(why)
        if not pg or (known is not None and pg not in known):
            reasons[i].append("unknown_pg")
        elif not is_segment(pg):  # a PG name becomes a folder: models/<pg>/
            reasons[i].append("bad_pg_name")
        if not title:
            reasons[i].append("empty_title")
        elif len(title) > max_title_chars:
            reasons[i].append("title_too_long")
    for col, kind in labels.items():
        column = df[col]
        if kind == "category" and pd.api.types.is_integer_dtype(column):  # a column of codes (brand_id): its text
            column = column.astype("string")
        parsed = [_PARSERS[kind](v) for v in column.to_numpy(dtype=object)]
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
    clean["_row"] = np.asarray(rows, np.int64)[~bad]
    quarantine = df[bad].map(printable).assign(
        row=np.asarray(rows, np.int64)[bad], reason=["; ".join(r) for r, b in zip(reasons, bad) if b], source_file=uri)
    return clean, quarantine.reset_index(drop=True)


def add_reason(reasons: str, reason: str) -> str:
    """``reasons`` with ``reason`` (a duplicate id found by the merge) where ``check_rows`` puts it:
    after the text defects, before the rest, so a row reads the same however it was validated."""
    parts = reasons.split("; ") if reasons else []
    at = sum(1 for p in parts if p.startswith("invalid_text:"))
    return "; ".join(parts[:at] + [reason] + parts[at:])


def bad_row_quarantine(bad_rows: list, uri: str) -> pd.DataFrame:
    """read_catalog's unparseable CSV records as quarantine rows (reason ``bad_row(<problem>)``)."""
    return pd.DataFrame({"row": pd.Series([r for r, _, _ in bad_rows], dtype=np.int64),
                         "raw": [f or "" for _, _, f in bad_rows],
                         "reason": [f"bad_row({problem})" for _, problem, _ in bad_rows], "source_file": uri})


def validate(df: pd.DataFrame, uri: str, pgs: list[str] | None, tasks: list[TaskSpec],
             max_title_chars: int, bad_rows: list | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a catalog held in memory into (clean rows with typed labels, quarantined rows with
    reasons): ``check_rows`` over the whole frame, duplicates included. Large catalogs stream
    through data/staging.py instead, which gives the same rows and reasons.
    ``pgs``: the configured PGs, or None to accept every PG whose name is a safe path segment.
    ``bad_rows``: read_catalog's unparseable records, quarantined as ``bad_row``; quarantine
    ``row`` numbers are the file's data rows (1 = the first row after the header)."""
    rows = data_rows(len(df), [row for row, _, _ in bad_rows or ()])
    first_seen: dict[str, int] = {}

    def duplicate(i: int, pid: str) -> str | None:
        if pid in first_seen:
            return duplicate_reason(first_seen[pid])
        first_seen[pid] = int(rows[i])
        return None

    clean, quarantine = check_rows(df, uri, pgs, tasks, max_title_chars, rows, duplicate)
    if bad_rows:
        quarantine = pd.concat([quarantine, bad_row_quarantine(bad_rows, uri)]).sort_values("row", kind="stable")
        quarantine[list(df.columns) + ["raw"]] = quarantine[list(df.columns) + ["raw"]].fillna("")
    return clean.drop(columns="_row"), quarantine.reset_index(drop=True)


def duplicate_reason(first_row: int, first_file: str | None = None) -> str:
    """The reason of a product id seen before: at data row ``first_row`` (of ``first_file``, when another)."""
    return f"duplicate_product_id(first at row {first_row}{f' of {first_file}' if first_file else ''})"


def data_rows(n: int, skipped: list[int], first: int = 1) -> np.ndarray:
    """The file data-row numbers of the ``n`` rows read from data row ``first`` on, around the
    ``skipped`` ones (CSV records that could not be parsed)."""
    skipped = sorted(r for r in skipped if r >= first)
    read = np.ones(n + len(skipped), dtype=bool)
    read[[r - first for r in skipped if r - first < len(read)]] = False
    return np.flatnonzero(read)[:n] + first


def sample_per_pg(df: pd.DataFrame, max_rows: int | None, seed: int,
                  fraction: float | None = None) -> pd.DataFrame:
    """Deterministic per-PG sample of a catalog in memory: the first ``ceil(fraction * n)`` products of
    each PG (at most ``max_rows``) in the order of a seeded hash of product_id, so a product stays in or
    out of the sample across runs; kept in catalog order. data/staging.py draws the same sample streaming."""
    if not max_rows and not fraction:
        return df
    rank = hash_rank(df["product_id"], seed, "sample")
    keep = np.zeros(len(df), bool)
    for _, idx in df.groupby("product_group", sort=False).indices.items():
        k = sample_size(len(idx), max_rows, fraction)
        keep[idx[np.argsort(rank[idx], kind="stable")[:k]]] = True
    return df[keep].reset_index(drop=True)


def sample_size(n: int, max_rows: int | None, fraction: float | None) -> int:
    """Products kept of a PG of ``n``: ``ceil(fraction * n)``, at most ``max_rows``."""
    k = n if not max_rows else min(n, max_rows)
    return min(k, math.ceil(n * fraction)) if fraction else k


def quarantine_summary(uri: str, n_in: int, quarantine: pd.DataFrame) -> dict:
    counts = Counter(r.split("(")[0] for reasons in quarantine["reason"] for r in reasons.split("; "))
    return {"source_file": uri, "rows_in": n_in, "rows_clean": n_in - len(quarantine),
            "rows_quarantined": len(quarantine), "by_reason": dict(counts.most_common())}


def describe_quarantine(summary: dict) -> str:
    if not summary["rows_quarantined"]:
        return f"{Path(summary['source_file']).name}: {summary['rows_in']} rows, none quarantined"
    parts = ", ".join(f"{k}={v}" for k, v in summary["by_reason"].items())
    return (f"{Path(summary['source_file']).name}: {summary['rows_in']} rows, "
            f"{summary['rows_quarantined']} quarantined ({parts})")
