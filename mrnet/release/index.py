"""The nearest-neighbour index of a release (paper §4.2 at catalog scale): one per space, built once.

A release has a PG-specific space per PG and the PG-agnostic space (§3.2). After publish, the
``build_index`` task writes, per space, a folder that answers a query without reading every vector:

==================  =======================================================================
``rows.arrow``      product_id, product_group, title and the key attributes, in row order (Arrow
                    IPC, memory-mapped: a query takes its rows only)
``vectors.npy``     the embeddings (N, d) in row order, as stored (float32 / float16), memory-mapped:
                    the exact re-ranking reads the candidates' rows only
``ivfpq.faiss``     a faiss IVF-PQ index of the rows (spaces of ``index.min_products`` or more), read
                    with ``IO_FLAG_MMAP``: opening it reads the coarse quantizer, not the codes
``ids-BBBBB.npy``   the product ids of hash bucket B sorted, with their rows (``ids-BBBBB.rows.npy``):
                    an id query is a binary search in one bucket
``_manifest.json``  written last: kind (``ivfpq`` or ``flat``), rows, d, settings, recall@10
==================  =======================================================================

``index/_manifest.json`` lists the spaces and is written after all of them, so a release's index is
whole or absent. A query: IVF-PQ gives the ``index.rerank`` x k best candidates by their compressed
codes (``nprobe`` lists), and the stored vectors re-score them exactly; a ``flat`` space (a small
one) is scanned exactly. The recall@10 of each IVF-PQ space against exact search is measured at
build time on ``index.recall_queries`` of its own products and kept in its manifest.

Building holds one batch of vectors, the training sample and the compressed codes (``pq_bytes`` + 8
bytes a product). Files are faiss's own format, NumPy and Arrow IPC: nothing is unpickled.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mrnet.io import storage

log = logging.getLogger(__name__)
FORMAT = "mrnet-index-v1"
MANIFEST = "_manifest.json"
ATTRIBUTES = ["brand", "color", "gender", "subcategory", "item_type", "price"]
BUCKET_ROWS = 4_000_000  # ids per lookup bucket: one bucket is sorted in memory when the index is built
AUTO_NLIST_MAX = 1024  # from 1M products on, a fixed number of lists: adding a vector costs the same at any size


def spaces(manifest: dict) -> dict[str, str]:
    """{space: embedding dataset URI}: ``pg/<pg>`` for each PG, ``agnostic`` for all of them."""
    out = {f"pg/{pg}": uri for pg, uri in sorted(manifest["embeddings"].items())}
    if "agnostic" in manifest:
        out["agnostic"] = manifest["agnostic"]["embeddings"]
    return out


def nlist_for(cfg, n: int) -> int:
    if cfg.nlist != "auto":
        return int(cfg.nlist)
    return int(min(AUTO_NLIST_MAX, max(64, 2 ** round(math.log2(max(math.sqrt(n), 1))))))


def pq_bytes_for(cfg, d: int) -> int:
    """Bytes per PQ code: ``auto`` d/8 (at least 8), a divisor of d."""
    m = int(cfg.pq_bytes) if cfg.pq_bytes != "auto" else max(8, d // 8)
    while d % m:
        m -= 1
    return m


# ------------------------------------------------------------------ building


def build_release_index(manifest: dict, out_uri: str, cfg) -> dict:
    """Every space of a release → ``<out_uri>/<space>/``; ``<out_uri>/_manifest.json`` last. ``cfg``: the IndexConfig."""
    record = {"format": FORMAT, "release": manifest["release"], "spaces": {}}
    for space, uri in spaces(manifest).items():
        record["spaces"][space] = build_space(uri, manifest["catalog"], storage.join(out_uri, space), cfg)
    storage.write_text(storage.join(out_uri, MANIFEST), json.dumps(record, indent=2))
    return record


def build_space(dataset_uri: str, catalog_uri: str, out_uri: str, cfg) -> dict:
    """One space's folder (module docstring), built in a local scratch folder and published file by file,
    its ``_manifest.json`` last."""
    from mrnet.encoder.embed import dataset_rows

    t0, n = time.perf_counter(), dataset_rows(dataset_uri)
    scratch = Path(tempfile.mkdtemp(prefix="mrnet-index-"))
    try:
        d, dtype, sample, batches = _write_rows_and_vectors(dataset_uri, catalog_uri, scratch, n, cfg.train_sample)
        buckets = _write_id_buckets(scratch, n)
        kind = "ivfpq" if n >= cfg.min_products else "flat"
        info = {"format": FORMAT, "kind": kind, "rows": n, "d": d, "dtype": dtype, "buckets": buckets,
                "source": dataset_uri, "batch_rows": batches}
        if kind == "ivfpq":
            info |= _write_ivfpq(scratch, sample, n, d, dtype, cfg)
        del sample
        if kind == "ivfpq" and cfg.recall_queries:
            info["recall_at_10"] = recall_at_10(Space(str(scratch), info), cfg.recall_queries)
        info["files"] = {}
        for path in sorted(scratch.iterdir()):
            info["files"][path.name] = storage.file_record(path)  # what mrnet verify checks
            storage.put_file(path, storage.join(out_uri, path.name))
        info["build_seconds"] = round(time.perf_counter() - t0, 2)
        storage.write_text(storage.join(out_uri, MANIFEST), json.dumps(info, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("[index] %s: %s over %d products (%s)%s", out_uri.rsplit("/", 1)[-1] if "/pg/" not in out_uri else
             "pg/" + out_uri.rsplit("/", 1)[-1], info["kind"], n, f"{info['build_seconds']} s",
             f", recall@10 {info['recall_at_10']:.3f}" if "recall_at_10" in info else "")
    return info


class _CatalogRows:
    """The catalog rows of one PG, handed out in order, ``take(ids)`` at a time: the embeddings of a PG are
    in its catalog order (its shards are slices of it), so titles join by position. A batch whose ids do
    not line up (a refresh carries PGs embedded from an older catalog) gets no attributes."""

    def __init__(self, catalog_uri: str, pg: str, columns: list[str]):
        from mrnet.data.reads import pg_batches

        self.batches, self.pending, self.columns, self.warned = pg_batches(catalog_uri, pg, columns), None, columns, False

    def take(self, ids: np.ndarray) -> pd.DataFrame:
        frames, need = [], len(ids)
        while need:
            if self.pending is None or not len(self.pending):
                table = next(self.batches, None)
                if table is None:
                    break
                self.pending = table.to_pandas()
            frames.append(self.pending.iloc[:need])
            self.pending, need = self.pending.iloc[need:], need - len(frames[-1])
        got = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)
        if len(got) != len(ids) or not np.array_equal(got["product_id"].to_numpy(dtype=object), ids):
            if not self.warned:
                log.warning("[index] the embeddings of PG %s are not in this catalog's order (a PG carried from an "
                            "earlier release): its neighbours are listed without titles", ids[0] if len(ids) else "?")
                self.warned = True
            return pd.DataFrame({c: [None] * len(ids) for c in self.columns}).assign(product_id=ids)
        return got


def _write_rows_and_vectors(dataset_uri, catalog_uri, scratch: Path, n: int, train_sample: int):
    """rows.arrow and vectors.npy in one pass over the dataset; returns (d, dtype, training sample)."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from mrnet.encoder.embed import dataset_parts, embedding_batches

    names = pq.read_schema(storage.local_path(catalog_uri)).names
    columns = ["product_id", "title", *[c for c in ATTRIBUTES if c in names]]
    stride, sample, row, readers = max(1, n // train_sample), [], 0, {}
    value_type = pq.read_schema(storage.local_path(dataset_parts(dataset_uri)[0])).field("embedding").type.value_type
    dtype, writer, vectors, batches = ("float16" if value_type == pa.float16() else "float32"), None, None, []
    try:
        for df, x in embedding_batches(dataset_uri, ("product_id", "product_group")):
            vectors = vectors or _NpyWriter(scratch / "vectors.npy", (n, x.shape[1]), dtype)
            info = _attributes(df, readers, catalog_uri, columns, "product_group" in names)
            table = pa.table({"product_id": pa.array(df["product_id"].to_numpy(dtype=object), pa.string()),
                              "product_group": pa.array(df["product_group"].to_numpy(dtype=object), pa.string())}
                             | {c: _column(info[c], c) for c in columns[1:]})
            writer = writer or ipc.new_file(str(scratch / "rows.arrow"), table.schema)
            writer.write_batch(table.to_batches()[0])  # one record batch per batch read: their lengths go in
            batches.append(len(table))                 # the manifest, so a query need not walk the file
            vectors.write(x)
            sample.append(x[(np.arange(row, row + len(x)) % stride) == 0])
            row += len(x)
    finally:
        if writer is not None:
            writer.close()
        if vectors is not None:
            vectors.close()
    if row != n or not row:
        raise RuntimeError(f"index of {dataset_uri}: read {row} rows, its manifest says {n}")
    return int(sample[0].shape[1]), dtype, np.concatenate(sample), batches  # float32 already (embedding_batches)


def _attributes(df: pd.DataFrame, readers: dict, catalog_uri: str, columns: list[str], by_pg: bool) -> pd.DataFrame:
    """Title and attributes of a batch's products, PG run by PG run, each PG's catalog rows read in step."""
    pgs = df["product_group"].to_numpy(dtype=object)
    ids = df["product_id"].to_numpy(dtype=object)
    cuts = [0, *(np.flatnonzero(pgs[1:] != pgs[:-1]) + 1), len(pgs)]
    frames = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if not by_pg:
            frames.append(pd.DataFrame({c: [None] * (b - a) for c in columns}))
            continue
        if pgs[a] not in readers:  # the PGs come one after the other: one reader (one row group) at a time
            readers.clear()
            readers[pgs[a]] = _CatalogRows(catalog_uri, pgs[a], columns)
        frames.append(readers[pgs[a]].take(ids[a:b]))
    return pd.concat(frames, ignore_index=True)


def _column(values: pd.Series, name: str) -> pa.Array:
    if name == "price":
        return pa.array(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), pa.float64(), from_pandas=True)
    return pa.array([v if isinstance(v, str) else None for v in values.to_numpy(dtype=object)], pa.string())


class _NpyWriter:
    """A .npy file written row block by row block (no memory map: the pages do not pile up in the
    process's memory)."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: str):
        self.fh, self.dtype = open(path, "wb"), np.dtype(dtype)
        np.lib.format.write_array_header_1_0(self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": shape})

    def write(self, block: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.fh.close()


def _write_id_buckets(scratch: Path, n: int) -> int:
    """ids-BBBBB.npy (sorted fixed-width UTF-8 ids) + ids-BBBBB.rows.npy per hash bucket of the ids."""
    import pyarrow.ipc as ipc

    from mrnet.data.sample import bucket_of

    buckets = max(1, math.ceil(n / BUCKET_ROWS))
    spill: dict[int, list[Path]] = {b: [] for b in range(buckets)}
    with pa.memory_map(str(scratch / "rows.arrow")) as source:
        reader, row = ipc.open_file(source), 0
        for i in range(reader.num_record_batches):
            ids = reader.get_batch(i).column("product_id").to_numpy(zero_copy_only=False)
            bucket = bucket_of(ids, buckets)
            for b in np.unique(bucket):
                sel = np.flatnonzero(bucket == b)
                path = scratch / f".spill-{b}-{i}.npz"
                np.savez(path, ids=np.array([s.encode() for s in ids[sel]]), rows=sel + row)
                spill[int(b)].append(path)
            row += len(ids)
    for b, paths in spill.items():
        parts = [np.load(p) for p in paths]
        ids = np.concatenate([p["ids"] for p in parts]) if parts else np.zeros(0, "S1")
        rows = np.concatenate([p["rows"] for p in parts]) if parts else np.zeros(0, np.int64)
        order = np.argsort(ids, kind="stable")
        np.save(scratch / f"ids-{b:05d}.npy", ids[order])
        np.save(scratch / f"ids-{b:05d}.rows.npy", rows[order].astype(np.int64))
        for p in paths:
            p.unlink()
    return buckets


def _vector_blocks(path: Path, block: int = 262_144):
    """(start row, float32 block) of a vectors.npy, read block by block."""
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        for start in range(0, shape[0], block):
            count = min(block, shape[0] - start) * shape[1]
            yield start, np.fromfile(fh, dtype=dtype, count=count).reshape(-1, shape[1]).astype(np.float32)


def _write_ivfpq(scratch: Path, sample: np.ndarray, n: int, d: int, dtype: str, cfg) -> dict:
    import faiss

    nlist, m = nlist_for(cfg, n), pq_bytes_for(cfg, d)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8)
    t0 = time.perf_counter()
    index.train(sample)
    trained = time.perf_counter() - t0
    for _, block in _vector_blocks(scratch / "vectors.npy"):
        index.add(block)
    faiss.write_index(index, str(scratch / "ivfpq.faiss"))
    return {"nlist": nlist, "pq_bytes": m, "nprobe": cfg.nprobe, "rerank": cfg.rerank, "train_rows": len(sample),
            "train_seconds": round(trained, 2), "add_seconds": round(time.perf_counter() - t0 - trained, 2)}


# ------------------------------------------------------------------ querying


class Space:
    """One built space, opened for queries: rows memory-mapped, vectors read row by row, the IVF-PQ index read
    with ``IO_FLAG_MMAP``. Nothing is read whole."""

    def __init__(self, uri: str, info: dict | None = None):
        import pyarrow.ipc as ipc

        self.uri, self.info = uri, info or json.loads(storage.read_text(storage.join(uri, MANIFEST)))
        self.reader = ipc.open_file(pa.memory_map(str(self.file("rows.arrow"))))  # record batches, zero-copy
        lengths = self.info.get("batch_rows") or [self.reader.get_batch(i).num_rows
                                                  for i in range(self.reader.num_record_batches)]
        self.starts = np.cumsum([0] + list(lengths))
        self.vectors_path = self.file("vectors.npy")
        with open(self.vectors_path, "rb") as fh:
            np.lib.format.read_magic(fh)
            shape, _, self.dtype = np.lib.format.read_array_header_1_0(fh)
            self.offset, self.d = fh.tell(), shape[1]
        self.fd = os.open(self.vectors_path, os.O_RDONLY)
        self.index = None
        if self.info["kind"] == "ivfpq":
            import faiss

            self.index = faiss.read_index(str(self.file("ivfpq.faiss")), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            self.index.nprobe = self.info["nprobe"]

    def file(self, name: str) -> Path:
        return storage.local_path(storage.join(self.uri, name))

    def __len__(self) -> int:
        return int(self.info["rows"])

    def row_of(self, product_id: str) -> int | None:
        """The row of a product id (a binary search in its hash bucket), or None."""
        from mrnet.data.sample import bucket_of

        b = int(bucket_of([product_id], self.info["buckets"])[0])
        ids = np.load(self.file(f"ids-{b:05d}.npy"), mmap_mode="r")
        key = np.array(product_id.encode(), dtype=ids.dtype) if len(product_id.encode()) <= ids.dtype.itemsize else None
        at = int(np.searchsorted(ids, key)) if key is not None else len(ids)
        if at < len(ids) and ids[at] == key:
            return int(np.load(self.file(f"ids-{b:05d}.rows.npy"), mmap_mode="r")[at])
        return None

    def vectors_at(self, rows) -> np.ndarray:
        """The stored vectors of ``rows`` (float32, (n, d)): one positioned read each, no memory map (whose
        read-ahead would pull in pages around every random row)."""
        size = self.d * self.dtype.itemsize
        data = b"".join(os.pread(self.fd, size, self.offset + int(r) * size) for r in rows)
        return np.frombuffer(data, self.dtype).reshape(-1, self.d).astype(np.float32)

    def vector(self, row: int) -> np.ndarray:
        return self.vectors_at([row])

    def search(self, q: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances (k,), rows (k,)) of the k nearest rows to one query (1, d), Euclidean, ``exclude`` left out."""
        want = k + (exclude is not None)
        if self.index is not None:
            _, cand = self.index.search(np.ascontiguousarray(q, np.float32), max(want * self.info["rerank"], 100))
            cand = np.unique(cand[0][cand[0] >= 0])
        else:
            cand = None
        dist, rows = self.exact(q, want, cand)
        keep = rows != (exclude if exclude is not None else -1)
        return dist[keep][:k], rows[keep][:k]

    def exact(self, q: np.ndarray, k: int, candidates: np.ndarray | None, block: int = 262_144):
        """Exact Euclidean top k over the candidate rows (sorted), or over every row block by block."""
        if candidates is not None:
            x = self.vectors_at(candidates)
            dist = np.sqrt(np.maximum(((x - q) ** 2).sum(1), 0))
            order = np.argsort(dist, kind="stable")[:k]
            return dist[order], candidates[order]
        best_d, best_r = np.zeros(0, np.float32), np.zeros(0, np.int64)
        for start, x in _vector_blocks(self.vectors_path, block):
            dist = np.sqrt(np.maximum(((x - q) ** 2).sum(1), 0))
            best_d, best_r = np.concatenate([best_d, dist]), np.concatenate([best_r, np.arange(start, start + len(x))])
            order = np.argsort(best_d, kind="stable")[:k]
            best_d, best_r = best_d[order], best_r[order]
        return best_d, best_r

    def take(self, rows) -> pd.DataFrame:
        """The rows' product id, PG, title and attributes, in the order given: only the record batches that
        hold them are touched."""
        rows = np.asarray(rows, np.int64)
        batch = np.searchsorted(self.starts, rows, side="right") - 1
        parts, order = [], []
        for b in np.unique(batch):
            sel = np.flatnonzero(batch == b)
            parts.append(self.reader.get_batch(int(b)).take(pa.array(rows[sel] - self.starts[b])))
            order.append(sel)
        if not parts:
            return self.reader.schema.empty_table().to_pandas()
        table = pa.Table.from_batches(parts)
        return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable"))).to_pandas()


@functools.lru_cache(maxsize=64)
def _open(uri: str, built: str) -> Space:
    return Space(uri)


def open_space(index_uri: str, space: str) -> Space | None:
    """A release's built space (cached per process while its manifest is unchanged), or None when the
    release has no whole index (built before indexes, or with ``index.enabled: false``)."""
    record = storage.read_json(storage.join(index_uri, MANIFEST))
    if record is None or space not in record.get("spaces", {}):
        return None
    uri = storage.join(index_uri, space)
    return _open(uri, json.dumps(record["spaces"][space].get("build_seconds")))


def recall_at_10(space: Space, queries: int) -> float:
    """Mean share of the 10 neighbours the index returns that are among the exact 10 nearest (Euclidean),
    over ``queries`` of the space's own products (a fixed stride sample), each left out of its own
    neighbours. A neighbour at the same distance as the exact 10th counts: catalogs hold products with the
    same title, hence the same vector, and which of them is returned is arbitrary. The exact answers come
    from one pass over the vectors for all queries at once (``exact_top``)."""
    rows = np.unique(np.linspace(0, len(space) - 1, min(queries, len(space))).astype(np.int64))
    q = space.vectors_at(rows)
    dist, _ = exact_top(space.vectors_path, q, 11, exclude=rows)
    hits = []
    for row, query, exact in zip(rows, q, dist):
        found, _ = space.search(query[None], 10, exclude=int(row))
        hits.append(float(np.mean(found <= exact[9] * (1 + 1e-6) + 1e-9)) if len(found) else 0.0)
    return float(np.mean(hits))


def exact_top(vectors_path: Path, q: np.ndarray, k: int, exclude: np.ndarray | None = None, margin: int = 8):
    """(distances, rows), each (Q, k), of the k nearest vectors to each query, Euclidean, in one pass over a
    vectors.npy read block by block (not memory-mapped: a scan of every row would keep every page).
    ``exclude``: one row per query left out (the query itself). The pass ranks by ‖q‖² − 2q·x + ‖x‖², whose
    cancellation costs digits (1e-4 relative at norms ~9 and distances ~1.5), so its ``k + margin`` best are
    re-scored as ‖x − q‖, the way a query scores its candidates (``Space.exact``)."""
    keep = k + margin
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_r = np.zeros((len(q), 0), np.int64)
    q_sq = (q ** 2).sum(1)[:, None]
    for start, block in _vector_blocks(vectors_path):
        d2 = q_sq - 2 * q @ block.T + (block ** 2).sum(1)[None, :]                   # (Q, B)
        if exclude is not None:
            inside = (exclude >= start) & (exclude < start + len(block))
            d2[np.flatnonzero(inside), exclude[inside] - start] = np.inf
        part = np.argpartition(d2, min(keep, d2.shape[1] - 1), axis=1)[:, :keep]
        best_d = np.concatenate([best_d, np.take_along_axis(d2, part, 1)], 1)
        best_r = np.concatenate([best_r, part + start], 1)
        order = np.argsort(best_d, axis=1, kind="stable")[:, :keep]
        best_d, best_r = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_r, order, 1)
    stored = np.load(vectors_path, mmap_mode="r")
    x = stored[np.sort(np.unique(best_r))]
    at = np.searchsorted(np.sort(np.unique(best_r)), best_r)
    dist = np.sqrt(np.maximum(((x[at].astype(np.float32) - q[:, None, :]) ** 2).sum(-1), 0))  # (Q, keep)
    dist[~np.isfinite(best_d)] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(best_r, order, 1)
