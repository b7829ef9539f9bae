"""Validate a catalog of any size in bounded memory: one task per input file, then a merge.

A catalog is one file, a folder of part files or a glob (local or ``s3://``). Three steps, each
holding one batch of rows (``data.chunk_rows``) or one hash bucket of product ids at a time:

1. ``plan``: the input files, and how many hash buckets the product ids are spread over
   (``data.bucket_bytes`` of input per bucket) → ``staging/plan.json``.
2. ``check_part`` (one task per input file, mapped in the DAGs): every row check of
   data/catalog.py (``check_rows``) batch by batch. Clean rows go to ``staging/part-NNNNN/clean-*.parquet``
   with one row group per (batch, PG), defective rows to ``quarantine-*.parquet``, and every
   non-empty product id with its row to ``keys-BBBBB.parquet`` by a hash of the id.
   ``index.json`` is written last: what the part holds, and which row groups hold which PG.
3. ``merge`` (data/merge.py): the duplicates, bucket by bucket: a bucket's ids from every part, sorted, and every
   id after its first row (in file order, then row order) is a duplicate, exactly as when the
   catalog is validated whole. Then, PG by PG in name order, the clean rows of every part without
   the duplicates (and, with ``data.max_rows_per_pg`` / ``sample_fraction``, only the hash sample),
   in row groups of at most ``data.row_group_rows`` that never hold two PGs → ``catalog.parquet``.
   The quarantine (``quarantine.parquet``) and its summary follow; staging/ is removed.

The accounting is exact: rows in = clean + quarantined, per file and in all; the merge checks it.
Memory: one batch of rows in ``check_part``; one bucket of ids, one row group and 32 bytes per
duplicate in ``merge`` (docs/RESULTS.md has the measured peaks).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mrnet.config.training import TaskSpec
from mrnet.data.catalog import (CatalogError, bad_row_fields, bad_row_quarantine, check_columns, check_rows,
                                clean_text, conform, integer_ids_as_text, read_chunks)
from mrnet.data.sample import bucket_of
from mrnet.io import storage

log = logging.getLogger(__name__)
SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".gz")


def input_files(uri: str) -> list[str]:
    """The files of a catalog: the file itself, every catalog file of a folder (names starting with
    ``_`` or ``.`` skipped), or the files a glob (``*``, ``?``, ``[…]`` in the last part) matches;
    sorted by name, so the first file's rows come first."""
    folder, _, pattern = str(uri).rstrip("/").rpartition("/")
    if any(ch in pattern for ch in "*?["):
        names = [n for n in storage.children(folder) if fnmatch.fnmatch(n, pattern)]
        files = [storage.join(folder, n) for n in names if n.endswith(SUFFIXES) and n[0] not in "_."]
        if not files:
            raise CatalogError(f"{uri}: no catalog file (.parquet, .csv, .tsv, .csv.gz) matches the pattern")
        return files
    if storage.is_s3(uri) and not storage.exists(uri) or not storage.is_s3(uri) and storage.local_path(uri).is_dir():
        names = [n for n in storage.children(uri) if n.endswith(SUFFIXES) and n[0] not in "_."]
        if not names:
            raise CatalogError(f"{uri}: a folder with no catalog file (.parquet, .csv, .tsv, .csv.gz) in it")
        return [storage.join(uri, n) for n in names]
    return [uri]


def plan(source: str, out_dir: str, bucket_bytes: int) -> dict:
    """The input files and the bucket count (≥ 1 bucket per ``bucket_bytes`` of input) → ``plan.json``."""
    files = input_files(source)
    sizes = [storage.size(f) for f in files]
    buckets = int(min(1024, max(1, math.ceil(sum(sizes) / bucket_bytes))))
    record = {"source": source, "files": files, "bytes": sizes, "buckets": buckets}
    storage.write_text(storage.join(out_dir, "staging", "plan.json"), json.dumps(record, indent=2))
    return record


def part_id(index: int) -> str:
    """The id of input file ``index`` (0-based): ``part-00003``; XCom carries it, ``part_index`` reads it."""
    return f"part-{index:05d}"


def part_index(part: str) -> int:
    if not (part.startswith("part-") and part[5:].isdigit() and len(part) == 10):
        raise ValueError(f"bad catalog part id {part!r}; expected part-<5 digits>")
    return int(part[5:])


class _Keys:
    """One writer per hash bucket of (product_id, row) pairs, opened when first written."""

    def __init__(self, folder: str, buckets: int):
        self.folder, self.buckets, self.writers = folder, buckets, {}
        self.schema = pa.schema([("product_id", pa.string()), ("row", pa.int64()), ("clean", pa.bool_())])

    def add(self, ids: np.ndarray, rows: np.ndarray, clean: np.ndarray) -> None:
        if not len(ids):
            return
        bucket = bucket_of(ids, self.buckets)
        order = np.argsort(bucket, kind="stable")
        cuts = np.flatnonzero(np.diff(bucket[order])) + 1
        for chunk in np.split(order, cuts):
            b = int(bucket[chunk[0]])
            if b not in self.writers:
                self.writers[b] = pq.ParquetWriter(storage.join(self.folder, f"keys-{b:05d}.parquet"), self.schema)
            self.writers[b].write_table(pa.table({"product_id": pa.array(ids[chunk], pa.string()),
                                                  "row": pa.array(rows[chunk], pa.int64()),
                                                  "clean": pa.array(clean[chunk], pa.bool_())}, schema=self.schema))

    def close(self) -> list[int]:
        for writer in self.writers.values():
            writer.close()
        return sorted(self.writers)


def check_part(plan_record: dict, part: str, out_dir: str, pgs: list[str] | None, tasks: list[TaskSpec],
               max_title_chars: int, data=None, chunk_rows: int = 200_000) -> dict:
    """Check every row of one input file batch by batch (``data``: the DataConfig that maps a user's
    columns, or None for a canonical file); write the part's staging files, ``index.json`` last."""
    index = part_index(part)
    uri = plan_record["files"][index]
    remote = storage.is_s3(out_dir)  # S3: built in a scratch folder, uploaded, index.json last
    folder = Path(tempfile.mkdtemp(prefix="mrnet-part-")) if remote else Path(storage.join(out_dir, "staging", part))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):  # a retried task starts its part over
        stale.unlink()
    t0, keys = time.perf_counter(), _Keys(str(folder), plan_record["buckets"])
    groups, chunks, warnings, columns = [], 0, None, None
    counts = Counter()
    next_row, bad_rows = 1, []
    for frame, skipped in read_chunks(uri, chunk_rows):
        frame = integer_ids_as_text(conform(frame, data, uri) if data is not None else frame)
        if warnings is None:
            warnings, columns = check_columns(frame, uri, tasks), [str(c) for c in frame.columns]
        bad_rows += skipped
        rows = _rows_after(next_row, len(frame), {r for r, _ in skipped})
        next_row = int(rows[-1]) + 1 if len(rows) else next_row + len(skipped)
        clean, quarantine = check_rows(frame, uri, pgs, tasks, max_title_chars, rows)
        ids, id_rows = clean_ids(frame, rows)
        keys.add(ids, id_rows, np.isin(id_rows, clean["_row"].to_numpy()))
        groups += _write_clean(clean, folder / f"clean-{chunks:05d}.parquet", chunks)
        if len(quarantine):
            _write_quarantine(quarantine, folder / f"quarantine-{chunks:05d}.parquet")
            counts["quarantined"] += len(quarantine)
        counts["rows"] += len(frame)
        counts["clean"] += len(clean)
        chunks += 1
    if bad_rows:
        fields = bad_row_fields(uri, [r for r, _ in bad_rows])
        _write_quarantine(bad_row_quarantine([(r, p, fields.get(r)) for r, p in bad_rows], uri),
                          folder / "bad-rows.parquet")
    seconds = time.perf_counter() - t0
    record = {"part": part, "file": uri, "rows_in": counts["rows"] + len(bad_rows), "rows_read": counts["rows"],
              "bad_rows": len(bad_rows), "clean": counts["clean"], "quarantined": counts["quarantined"] + len(bad_rows),
              "columns": columns, "warnings": warnings, "chunks": chunks, "key_buckets": keys.close(),
              "row_groups": groups, "sha256": storage.sha256_file(storage.local_path(uri)),
              "seconds": round(seconds, 2), "files": sorted(p.name for p in folder.iterdir())}
    if remote:
        for path in sorted(folder.iterdir()):
            storage.put_file(path, storage.join(out_dir, "staging", part, path.name))
        shutil.rmtree(folder, ignore_errors=True)
    storage.write_text(storage.join(out_dir, "staging", part, "index.json"), json.dumps(record, indent=1))
    log.info("[catalog] %s %s: %d rows, %d quarantined (%.0f rows/s)", part, uri.rsplit("/", 1)[-1],
             record["rows_in"], record["quarantined"], record["rows_in"] / max(seconds, 1e-9))
    return record


def _rows_after(first: int, n: int, skipped: set[int]) -> np.ndarray:
    """Data-row numbers of the ``n`` rows read from row ``first`` on, around the ``skipped`` ones."""
    out, row = np.empty(n, np.int64), first
    i = 0
    while i < n:
        if row not in skipped:
            out[i] = row
            i += 1
        row += 1
    return out if skipped else np.arange(first, first + n, dtype=np.int64)


def clean_ids(frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(product id as ``check_rows`` cleans it, row) of every row with a non-empty product id."""
    ids = np.array([clean_text(v) or "" for v in frame["product_id"].to_numpy(dtype=object)], dtype=object)
    has = ids != ""
    return ids[has], rows[has]


def _write_clean(clean: pd.DataFrame, path, chunk: int) -> list[list]:
    """One row group per PG of a batch (sorted by PG, stable) → [[chunk, row group, PG, rows], …]."""
    if not len(clean):
        return []
    clean = clean.sort_values("product_group", kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    pgs = clean["product_group"].to_numpy(dtype=object)
    cuts = [0, *(np.flatnonzero(pgs[1:] != pgs[:-1]) + 1), len(pgs)]
    out = []
    with pq.ParquetWriter(path, table.schema) as writer:
        for group, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            writer.write_table(table.slice(a, b - a), row_group_size=b - a)
            out.append([chunk, group, str(pgs[a]), int(b - a)])
    return out


def _write_quarantine(quarantine: pd.DataFrame, path) -> None:
    frame = quarantine.copy()
    for col in frame.columns:
        if col != "row":
            frame[col] = frame[col].fillna("").astype(str)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
