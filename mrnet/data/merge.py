"""The merge of a staged catalog (data/staging.py's step 3): duplicates across files, the clean catalog
sorted by PG, the quarantine and its summary.

- Duplicates, bucket by bucket (``find_duplicates``): a bucket's ids from every part, sorted by (id, file,
  row); every row after an id's first is a duplicate, exactly as when the catalog is validated whole. Each
  duplicate costs 32 bytes until the merge ends.
- The quarantine, part by part in row order: the staged defective rows with a duplicate id added to their
  reasons, the unparseable records, and the clean rows whose id an earlier row has (shown as validated).
- The clean catalog, PG by PG in name order: every part's row groups of the PG without the duplicates (with
  ``data.max_rows_per_pg`` / ``sample_fraction``, the stable hash sample only), in row groups of at most
  ``data.row_group_rows`` that never hold two PGs.

The accounting is checked: rows in = clean + quarantined. Then the staging files are removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrnet.config.training import TaskSpec
from mrnet.data.catalog import CatalogError, add_reason, duplicate_reason, printable, sample_size
from mrnet.data.sample import hash_rank, smallest_rank
from mrnet.data.staging import check_part, part_id, part_index, plan
from mrnet.io import storage

QUARANTINE_TAIL = ["row", "reason", "source_file", "raw"]


def merge(out_dir: str, plan_record: dict, seed: int = 0, max_rows_per_pg: int | None = None,
          sample_fraction: float | None = None, row_group_rows: int = 100_000) -> tuple[str, dict]:
    """Duplicates across every part, then the quarantine (by file, then row), the clean catalog sorted
    by PG and the summary (data/catalog.py's outputs); returns (catalog URI, summary)."""
    parts = [_read_index(out_dir, part_id(i)) for i in range(len(plan_record["files"]))]
    staging = _local_staging(out_dir, parts)
    t0 = time.perf_counter()
    dups = find_duplicates(staging, parts, plan_record)
    catalog_uri, quarantine_uri = storage.join(out_dir, "catalog.parquet"), storage.join(out_dir, "quarantine.parquet")
    reasons, columns, quarantined = Counter(), _quarantine_columns(parts), 0
    with storage.atomic_path(quarantine_uri, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, _quarantine_schema(columns)) as writer:
            for part in parts:
                for table in _part_quarantine(staging, part, dups, plan_record["files"]):
                    _count(reasons, table)
                    quarantined += len(table)
                    writer.write_table(_conform_quarantine(table, columns))
    schema, written, catalog_file = _clean_schema(staging, parts), Counter(), None
    pgs = sorted({g[2] for p in parts for g in p["row_groups"]})
    if pgs:
        with storage.atomic_path(catalog_uri, suffix=".parquet") as tmp:
            with pq.ParquetWriter(tmp, schema) as writer:
                for pg in pgs:
                    written[pg] = _write_pg(writer, staging, parts, pg, dups, schema, row_group_rows,
                                            (seed, max_rows_per_pg, sample_fraction))
            catalog_file = storage.file_record(tmp)  # bytes and SHA-256, for the release manifest
    else:  # no clean row: an earlier validation's catalog must not sit beside this summary
        storage.delete(catalog_uri)
    rows_in = sum(p["rows_in"] for p in parts)
    clean = sum(p["clean"] for p in parts) - sum(int(_clean_dups(dups, p).sum()) for p in parts)
    if rows_in != clean + quarantined:
        raise RuntimeError(f"catalog accounting: {rows_in} rows in != {clean} clean + {quarantined} quarantined")
    source = plan_record["source"]
    summary = {"source_file": source, "rows_in": rows_in, "rows_clean": clean, "rows_quarantined": quarantined,
               "by_reason": dict(reasons.most_common()),
               "warnings": list(dict.fromkeys(w for p in parts for w in p["warnings"])),
               "rows_used": sum(written.values()), "files": [p["file"] for p in parts],
               "catalog_hash": _catalog_hash(parts), "catalog_file": catalog_file, "duplicates": len(dups["row"]),
               "seconds": {"check": round(sum(p["seconds"] for p in parts), 2),
                           "merge": round(time.perf_counter() - t0, 2)}}
    storage.write_text(storage.join(out_dir, "quarantine_summary.json"), json.dumps(summary, indent=2))
    _remove(out_dir, staging)
    if not summary["rows_used"]:  # nothing to train on: stop here, before an empty corpus is built and cached
        why = f"all {rows_in} quarantined ({summary['by_reason']})" if rows_in else "it has no rows"
        raise CatalogError(f"{source}: no usable product: {why}; see {quarantine_uri}")
    return catalog_uri, summary


def _read_index(out_dir: str, part: str) -> dict:
    uri = storage.join(out_dir, "staging", part, "index.json")
    record = storage.read_json(uri)
    if record is None:
        raise RuntimeError(f"catalog {part} was never checked ({uri} is missing): its check task did not finish")
    return record


def _local_staging(out_dir: str, parts: list[dict]) -> Path:
    """The staging folder on local disk: itself, or (an S3 artifact root) the parts' files downloaded."""
    if not storage.is_s3(out_dir):
        return Path(storage.join(out_dir, "staging"))
    local = Path(tempfile.mkdtemp(prefix="mrnet-staging-"))
    for part in parts:
        (local / part["part"]).mkdir()
        for name in part["files"]:
            shutil.copyfile(storage.local_path(storage.join(out_dir, "staging", part["part"], name)),
                            local / part["part"] / name)
    return local


def _catalog_hash(parts: list[dict]) -> str:
    import hashlib

    if len(parts) == 1:
        return parts[0]["sha256"][:16]
    return hashlib.sha256("".join(p["sha256"] for p in parts).encode()).hexdigest()[:16]


def find_duplicates(staging, parts: list[dict], plan_record: dict) -> dict[str, np.ndarray]:
    """Every row whose product id an earlier row has (file order, then row order), bucket by bucket:
    {part, row, first_part, first_row, clean} arrays sorted by (part, row); ``clean``: the row passed
    every other check (it leaves the clean catalog for the quarantine)."""
    found = []
    for b in range(plan_record["buckets"]):
        tables = [_keys(staging, p, b) for p in parts if b in p["key_buckets"]]
        if not tables:
            continue
        keys = pa.concat_tables(tables).sort_by([("product_id", "ascending"), ("part", "ascending"),
                                                 ("row", "ascending")])
        ids = keys.column("product_id").combine_chunks()
        if len(ids) < 2:
            continue
        same = np.concatenate([[False], pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(
            zero_copy_only=False)])
        if not same.any():
            continue
        first = np.maximum.accumulate(np.where(same, 0, np.arange(len(ids))))
        part, row, clean = (keys.column(c).to_numpy() for c in ("part", "row", "clean"))
        found.append(np.stack([part[same], row[same], part[first[same]], row[first[same]], clean[same]], 1))
    names = ("part", "row", "first_part", "first_row", "clean")
    if not found:
        return {k: np.zeros(0, bool if k == "clean" else np.int64) for k in names}
    marks = np.concatenate(found)
    marks = marks[np.lexsort((marks[:, 1], marks[:, 0]))]
    return dict(zip(names, marks.T)) | {"clean": marks[:, 4].astype(bool)}


def _keys(staging, part: dict, bucket: int) -> pa.Table:
    table = pq.read_table(staging / part["part"] / f"keys-{bucket:05d}.parquet")
    return table.append_column("part", pa.array(np.full(len(table), part_index(part["part"])), pa.int64()))


def _dup_rows(dups: dict, part: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, first parts, first rows, on a clean row) of one part's duplicates, sorted by row."""
    p = part_index(part["part"])
    lo, hi = np.searchsorted(dups["part"], [p, p + 1])
    return dups["row"][lo:hi], dups["first_part"][lo:hi], dups["first_row"][lo:hi], dups["clean"][lo:hi]


def _dup_reasons(dups: dict, part: dict, rows: np.ndarray, files: list[str]) -> list[str | None]:
    """The duplicate reason of each of ``rows`` of a part, or None."""
    dup_rows, first_part, first_row, _ = _dup_rows(dups, part)
    at = np.searchsorted(dup_rows, rows)
    hit = (at < len(dup_rows)) & (dup_rows[np.minimum(at, max(len(dup_rows) - 1, 0))] == rows) if len(dup_rows) else \
        np.zeros(len(rows), bool)
    p = part_index(part["part"])
    return [duplicate_reason(int(first_row[a]), None if first_part[a] == p else files[first_part[a]].rsplit("/", 1)[-1])
            if h else None for a, h in zip(at, hit)]


def _part_quarantine(staging, part: dict, dups: dict, files: list[str]):
    """A part's quarantine in row order: its defective rows (a duplicate id added to their reasons),
    its unparseable records and its clean rows whose id an earlier row has. The last two are held
    in memory (as many as the part has); the first streams batch by batch."""
    folder = staging / part["part"]
    extra = [pq.read_table(path) for path in sorted(folder.glob("bad-rows.parquet"))]
    if _clean_dups(dups, part).any():
        for chunk in range(part["chunks"]):
            path = folder / f"clean-{chunk:05d}.parquet"
            if path.exists():
                table = pq.read_table(path)
                dup = _is_dup(dups, part, table.column("_row").to_numpy())
                if dup.any():
                    extra.append(_as_quarantine(table.filter(pa.array(dup)), dups, part, files))
    extra = _sorted(extra)
    for chunk in range(part["chunks"]):
        path = folder / f"quarantine-{chunk:05d}.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path)
        more = _dup_reasons(dups, part, table.column("row").to_numpy(), files)
        if any(more):
            reasons = [add_reason(r, e) if e else r for r, e in zip(table.column("reason").to_pylist(), more)]
            table = table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
        if extra is not None and len(extra):
            last = int(pc.max(table.column("row")).as_py())
            cut = int(np.searchsorted(extra.column("row").to_numpy(), last, side="right"))
            table, extra = _sorted([table, extra.slice(0, cut)]), extra.slice(cut)
        yield table
    if extra is not None and len(extra):
        yield extra


def _sorted(tables: list[pa.Table]) -> pa.Table | None:
    """Quarantine batches as one table in row order (columns a batch lacks are empty)."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return None
    names = list(dict.fromkeys(c for t in tables for c in t.column_names))
    aligned = [pa.table({c: t.column(c) if c in t.column_names else pa.array([""] * len(t), pa.string()) for c in names})
               for t in tables]
    return pa.concat_tables(aligned, promote_options="permissive").sort_by("row")


def _clean_dups(dups: dict, part: dict) -> np.ndarray:
    """Which of a part's duplicate marks fall on clean rows (the rest were quarantined already)."""
    return _dup_rows(dups, part)[3]


def _count(reasons: Counter, table: pa.Table) -> None:
    reasons.update(r.split("(")[0] for text in table.column("reason").to_pylist() for r in text.split("; "))


def _quarantine_columns(parts: list[dict]) -> list[str]:
    names = [c for p in parts for c in p["columns"] or []]
    return [c for c in dict.fromkeys(names) if c not in QUARANTINE_TAIL]


def _quarantine_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in columns] + [("row", pa.int64()), ("reason", pa.string()),
                                                            ("source_file", pa.string()), ("raw", pa.string())])


def _conform_quarantine(table: pa.Table, columns: list[str]) -> pa.Table:
    """A quarantine batch in the merged schema: every input column as text ('' where a file lacks it)."""
    n, out = len(table), {}
    for name in columns + ["row", "reason", "source_file", "raw"]:
        if name in table.column_names:
            column = table.column(name)
            out[name] = column if name == "row" else pc.fill_null(column.cast(pa.string()), "")
        else:
            out[name] = pa.array([""] * n, pa.string())
    return pa.table(out, schema=_quarantine_schema(columns))


def _clean_schema(staging, parts: list[dict]) -> pa.Schema:
    """One schema for the clean catalog: every part's columns (first seen first). A column the files
    type differently (a number in a Parquet part, text in a CSV part) is promoted where Arrow can
    (int → double) and kept as text where it cannot. The pandas metadata goes with it, so pandas reads
    the labels back as written (Float64, boolean)."""
    schemas = [pq.read_schema(path) for p in parts for path in sorted((staging / p["part"]).glob("clean-*.parquet"))]
    fields: dict[str, pa.DataType] = {}
    entries: dict[str, dict] = {}
    for schema in schemas:
        meta = {c["name"]: c for c in json.loads(schema.metadata[b"pandas"])["columns"]} if schema.metadata else {}
        for field in schema:
            if field.name == "_row":
                continue
            known = fields.get(field.name)
            if known is None or known == pa.null():
                fields[field.name], entries[field.name] = field.type, meta.get(field.name)
            elif field.type != known and field.type != pa.null():
                fields[field.name] = promoted = _promote(known, field.type)
                entries[field.name] = _ENTRIES.get(str(promoted)) and _ENTRIES[str(promoted)] | {
                    "name": field.name, "field_name": field.name}
    metadata = None
    if schemas and schemas[0].metadata and all(entries.values()):
        pandas_meta = json.loads(schemas[0].metadata[b"pandas"]) | {"columns": list(entries.values())}
        metadata = {b"pandas": json.dumps(pandas_meta).encode()}
    return pa.schema(list(fields.items()), metadata=metadata)


_ENTRIES = {"large_string": {"pandas_type": "object", "numpy_type": "str", "metadata": None},
            "string": {"pandas_type": "object", "numpy_type": "str", "metadata": None},
            "double": {"pandas_type": "float64", "numpy_type": "float64", "metadata": None}}


def _promote(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    try:
        return pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")[0].type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.large_string()


def _conform_clean(table: pa.Table, schema: pa.Schema) -> pa.Table:
    n, out = len(table), []
    for field in schema:
        if field.name in table.column_names:
            out.append(table.column(field.name).cast(field.type))
        else:
            out.append(pa.nulls(n, field.type))
    return pa.table(out, schema=schema)


def _pg_tables(staging, parts: list[dict], pg: str, columns=None):
    """(part, table) of the staged clean row groups of one PG, in file and row order."""
    for part in parts:
        groups = [(c, g) for c, g, name, _ in part["row_groups"] if name == pg]
        for chunk in sorted({c for c, _ in groups}):
            parquet = pq.ParquetFile(staging / part["part"] / f"clean-{chunk:05d}.parquet")
            yield part, parquet.read_row_groups([g for c, g in groups if c == chunk], columns=columns)


def _sample_threshold(staging, parts, pg, dups, seed, max_rows, fraction) -> float | None:
    """The largest hash rank a PG's sample keeps (None: keep every row): the k smallest ranks of the
    PG's non-duplicate ids (data/sample.py ``smallest_rank``), k from their count."""
    if not max_rows and not fraction:
        return None
    n = sum(int((~_is_dup(dups, part, t.column("_row").to_numpy())).sum())
            for part, t in _pg_tables(staging, parts, pg, ["_row"]))
    k = sample_size(n, max_rows, fraction)
    ranks = (hash_rank(np.asarray(t.column("product_id").to_numpy(zero_copy_only=False))[
        ~_is_dup(dups, part, t.column("_row").to_numpy())], seed, "sample")
             for part, t in _pg_tables(staging, parts, pg, ["product_id", "_row"]))
    return smallest_rank(ranks, k)


def _is_dup(dups: dict, part: dict, rows: np.ndarray) -> np.ndarray:
    dup_rows = _dup_rows(dups, part)[0]
    return np.isin(rows, dup_rows) if len(dup_rows) else np.zeros(len(rows), bool)


def _write_pg(writer, staging, parts, pg, dups, schema, row_group_rows, sampling) -> int:
    """One PG's clean rows (no duplicate; the sample only) in row groups of ≤ ``row_group_rows``."""
    threshold = _sample_threshold(staging, parts, pg, dups, *sampling)
    pending, written = [], 0
    for part, table in _pg_tables(staging, parts, pg):
        dup = _is_dup(dups, part, table.column("_row").to_numpy())
        if dup.any():
            table = table.filter(pa.array(~dup))
        if threshold is not None:
            ranks = hash_rank(np.asarray(table.column("product_id").to_numpy(zero_copy_only=False)), sampling[0], "sample")
            table = table.filter(pa.array(ranks <= threshold))
        pending.append(_conform_clean(table, schema))
        if sum(len(t) for t in pending) >= row_group_rows:
            written += _flush(writer, pending, row_group_rows, final=False)
    written += _flush(writer, pending, row_group_rows, final=True)
    return written


def _flush(writer, pending: list, row_group_rows: int, final: bool) -> int:
    """Write whole row groups of ``pending`` (all of it when ``final``); keep the rest pending."""
    table = pa.concat_tables(pending) if pending else None
    pending.clear()
    if table is None or not len(table):
        return 0
    whole = len(table) if final else len(table) // row_group_rows * row_group_rows
    if whole:
        writer.write_table(table.slice(0, whole), row_group_size=row_group_rows)
    if whole < len(table):
        pending.append(table.slice(whole))
    return whole


def _as_quarantine(table: pa.Table, dups: dict, part: dict, files: list[str]) -> pa.Table:
    """Clean rows found to be duplicates, as quarantine rows (their cleaned values as text)."""
    rows = table.column("_row").to_numpy()
    frame = table.drop(["_row"]).to_pandas()
    out = {c: [printable(v) for v in frame[c].to_numpy(dtype=object)] for c in frame.columns}
    out |= {"row": pa.array(rows, pa.int64()), "reason": _dup_reasons(dups, part, rows, files),
            "source_file": [part["file"]] * len(rows), "raw": [""] * len(rows)}
    return pa.table(out)


def _remove(out_dir: str, staging: Path) -> None:
    """The staging files, once the merge's outputs are written (on S3: every object under staging/)."""
    shutil.rmtree(staging, ignore_errors=True)
    if storage.is_s3(out_dir):
        root = storage.join(out_dir, "staging")
        for name in storage.sizes(root):
            storage.delete(storage.join(root, name))


# ------------------------------------------------------------------ the three steps in one process


def validate_catalog(uri: str, out_dir: str, pgs: list[str] | None, tasks: list[TaskSpec], max_title_chars: int,
                     max_rows_per_pg: int | None = None, seed: int = 0, sample_fraction: float | None = None,
                     data=None, chunk_rows: int = 200_000, bucket_bytes: int = 1 << 30,
                     row_group_rows: int = 100_000) -> tuple[str, dict]:
    """Validate ``uri`` (a file, folder or glob) in this process: plan, every part, merge.
    Writes the clean catalog (sorted by PG), the quarantine and its summary under ``out_dir``."""
    record = plan(uri, out_dir, bucket_bytes)
    for i in range(len(record["files"])):
        check_part(record, part_id(i), out_dir, pgs, tasks, max_title_chars, data, chunk_rows)
    return merge(out_dir, record, seed, max_rows_per_pg, sample_fraction, row_group_rows)
