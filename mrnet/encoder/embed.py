"""Batch and cold-start inference → Parquet of MRNet-Product2Vec embeddings (paper §3.1, §6).

Titles are tokenized once (over a process pool for large shards), grouped into exact-length
buckets and encoded in large batches under ``torch.inference_mode`` (no padding, no
PackedSequence). An embedding file has ``product_id, product_group, model_version, embedding``
where ``embedding`` is a fixed-size list of float32 (d, the model's ``embed_dim``) and ``model_version`` is the
first 12 hex digits of the model file's sha256. Cold start (§6: "embeddings can be created
using only product titles") embeds a CSV of new titles with a trained model.

A run embeds each PG in shards (docs/SCALING.md): shard ``<pg>/part-00003-of-00010`` is the
PG's catalog rows [3·S, 4·S) in catalog order, written to ``embeddings/<pg>/part-00003-of-00010.parquet``
by its own task. When every shard is there, ``commit_dataset`` writes ``embeddings/<pg>/_manifest.json``
(parts and row counts) last: a PG's embeddings are the folder, readable with ``read_embeddings``
(by the manifest, no S3 listing) or any Parquet reader (which skips ``_``/``.`` files).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import torch

from mrnet.data.pgs import pg_row_groups
from mrnet.data.text import Tokenizer, encode_parallel, length_buckets
from mrnet.data.word2vec import subword_vectors, unseen_words
from mrnet.encoder.model import MRNet, load_model
from mrnet.io import storage

MANIFEST = "_manifest.json"
_SHARD = re.compile(r"^(?P<pg>[A-Za-z0-9][A-Za-z0-9_.-]*)/part-(?P<index>\d{5})-of-(?P<count>\d{5})$")


@torch.inference_mode()
def embed_titles(model: MRNet, meta: dict, titles, batch_size: int = 8192,
                 device: str = "cpu", workers: int = 1, tokenizer: Tokenizer | None = None) -> np.ndarray:
    """h_T of every title, (N, d) float32, in input order (tokenized by ``tokenizer``, a pool that
    outlives this call, or by ``workers`` processes started for it). A FastText model
    (``meta["subwords"]``) gives words outside its vocabulary their n-gram vector."""
    titles, words, table = list(titles), meta["vocab"], None
    max_tokens = meta["config"]["model"]["max_tokens"]
    if meta.get("subwords") and (unseen := unseen_words(words, titles, max_tokens)):
        words = words + unseen
        extra = torch.from_numpy(subword_vectors(unseen, model.subwords.cpu().numpy(), meta["subwords"]))
        table = torch.cat([model.words.weight.detach().cpu(), extra]).to(device)   # (V + unseen, word_dim)
        ids, lengths = encode_parallel(words, titles, max_tokens, workers)
    elif tokenizer is not None:
        ids, lengths = tokenizer.encode(titles, max_tokens)
    else:
        ids, lengths = encode_parallel(words, titles, max_tokens, workers)
    return embed_ids(model, ids, lengths, batch_size, device, table)


@torch.inference_mode()
def embed_ids(model: MRNet, ids: np.ndarray, lengths: np.ndarray, batch_size: int = 8192,
              device: str = "cpu", table: torch.Tensor | None = None) -> np.ndarray:
    """h_T (N, d) float32 of tokenized titles (``Vocab.encode_many``'s ids and lengths), in input
    order: exact-length buckets, no padding. ``table``: word rows replacing the model's."""
    out = np.empty((len(lengths), model.lstm.hidden_size * 2), np.float32)
    model.eval()
    for length, idx in length_buckets(lengths).items():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            batch = torch.from_numpy(ids[part, :length]).to(device)   # (B, T)
            out[part] = model(batch, table).float().cpu().numpy()       # (B, d)
    return out


def embedding_table(product_ids, pg, version: str, emb: np.ndarray, dtype: str = "float32") -> pa.Table:
    """The embedding Parquet schema: product_id, product_group (one PG or one per row),
    model_version, embedding (fixed-size list of float32, or float16 with ``embed.dtype``:
    half the bytes; ``read_embeddings`` restores float32, docs/SCALING.md)."""
    n, d = emb.shape
    pgs = [pg] * n if isinstance(pg, str) else list(pg)
    if isinstance(product_ids, (pa.Array, pa.ChunkedArray)):
        ids = product_ids.cast(pa.string())
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    else:  # a Series converts straight from its Arrow-backed strings (~250x a list)
        ids = pa.array(product_ids if isinstance(product_ids, (pd.Series, pd.Index, np.ndarray, list))
                       else list(product_ids), pa.string())
    return pa.table({
        "product_id": ids,
        "product_group": pa.array(pgs, pa.string()),
        "model_version": pa.array([version] * n, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(emb.ravel().astype(np.float16), pa.float16()) if dtype == "float16" else pa.array(emb.ravel(), pa.float32()),
            d),
    })


def write_embeddings(out_uri: str, product_ids, pg, version: str, emb: np.ndarray, dtype: str = "float32") -> str:
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        pq.write_table(embedding_table(product_ids, pg, version, emb, dtype), tmp)
    return out_uri


def dataset_parts(uri: str) -> list[str]:
    """The Parquet files of an embedding URI: a ``.parquet`` file, or a sharded PG folder (its
    ``_manifest.json`` lists the parts; a folder without one is not finished)."""
    if uri.endswith(".parquet"):
        return [uri]
    manifest = storage.join(uri, MANIFEST)
    if not storage.exists(manifest):
        raise FileNotFoundError(f"embeddings {uri}: no {MANIFEST}, so its shards were never committed "
                                "(the run's report commits a PG once every shard is written)")
    return [storage.join(uri, part["file"]) for part in json.loads(storage.read_text(manifest))["parts"]]


def checked_parts(uri: str) -> list[tuple[str, str]]:
    """(part URI, local path) of each Parquet file of an embedding URI, each checked against its manifest's row
    count before it is read: a part replaced or cut short after the commit is an error naming it, never data."""
    if uri.endswith(".parquet"):
        return [(uri, str(storage.local_path(uri)))]
    manifest = storage.read_json(storage.join(uri, MANIFEST))
    if manifest is None:
        dataset_parts(uri)  # the error that names the uncommitted folder
    out = []
    for part in manifest["parts"]:
        part_uri = storage.join(uri, part["file"])
        path = str(storage.local_path(part_uri))
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != int(part["rows"]):
            raise ValueError(f"{part_uri}: {rows} rows, where {storage.join(uri, MANIFEST)} says {part['rows']}: "
                             "the part was replaced or cut short after its commit; re-embed this PG")
        out.append((part_uri, path))
    return out


def read_embeddings(uri: str, columns=("product_id",)) -> tuple[pd.DataFrame, np.ndarray]:
    """(the other ``columns``, embeddings (N, d) float32) of an embedding file or sharded folder.
    The vectors come straight from the Arrow buffer (no per-row Python arrays)."""
    table = pa.concat_tables([pq.read_table(path, columns=[*columns, "embedding"]) for _, path in checked_parts(uri)])
    column = table.column("embedding").combine_chunks()
    d = column.type.list_size
    x = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)  # a writable copy
    return table.drop(["embedding"]).to_pandas(), x


def embedding_batches(uri: str, columns=("product_id",), batch_rows: int = 65_536, ids=None):
    """(frame of ``columns``, vectors (n, d) float32) of an embedding file or sharded folder, batch by
    batch: memory holds one batch, not the dataset. ``ids``: keep only these product ids."""
    import pyarrow.compute as pc

    wanted = None if ids is None else pa.array(list(ids), pa.string())
    for _, path in checked_parts(uri):
        parquet = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering keeps every batch read (apache/arrow#39808)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys([*columns, "embedding"]))):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("product_id"), value_set=wanted))
                if not len(batch):
                    continue
            column = batch.column("embedding")
            d = column.type.list_size
            x = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
            yield pa.Table.from_batches([batch]).drop(["embedding"]).to_pandas(), x


def dataset_rows(uri: str) -> int:
    """Rows of an embedding file or sharded folder, from its manifest or Parquet metadata."""
    manifest = None if uri.endswith(".parquet") else storage.read_json(storage.join(uri, MANIFEST))
    if manifest is not None:
        return int(manifest["rows"])
    return sum(pq.ParquetFile(storage.local_path(p)).metadata.num_rows for p in dataset_parts(uri))


def model_version(model_uri: str) -> str:
    return storage.sha256_file(storage.local_path(model_uri))[:12]


def tokenize_workers(configured: int, titles: int, minimum: int) -> int:
    """Processes to tokenize ``titles`` with: 1 below ``minimum`` (a pool costs ~1 s to start),
    else ``configured`` (0: every core)."""
    return 1 if titles < minimum else (configured or os.cpu_count() or 1)


# ------------------------------------------------------------------ shards (docs/SCALING.md)


def shard_ids(pg: str, products: int, shard_size: int) -> list[str]:
    """``<pg>/part-<i>-of-<n>`` for the n = ⌈products / shard_size⌉ shards of one PG."""
    count = max(1, -(-products // shard_size))
    if count > 99_999:
        raise ValueError(f"PG {pg}: {products} products in shards of {shard_size} is {count} shards; "
                         "raise embed.shard_size")
    return [f"{pg}/part-{i:05d}-of-{count:05d}" for i in range(count)]


def parse_shard(shard: str) -> tuple[str, int, int]:
    """(pg, index, count) of a shard id."""
    match = _SHARD.match(shard)
    if not match:
        raise ValueError(f"bad shard id {shard!r}; expected <pg>/part-<5 digits>-of-<5 digits>")
    return match["pg"], int(match["index"]), int(match["count"])


def shard_batches(catalog_uri: str, shard: str, shard_size: int, chunk_rows: int):
    """``product_id, title`` of one shard, rows [i·S, (i+1)·S) of its PG in catalog order, as Arrow tables
    of at most ``chunk_rows``: only the row groups that hold them are read, one at a time (the validated
    catalog is sorted by PG), so neither the catalog's size nor ``shard_size`` sets the memory."""
    pg, index, count = parse_shard(shard)
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    per_group = pg_row_groups(parquet, pg)
    total = sum(per_group)
    if total > count * shard_size or (total and total <= (count - 1) * shard_size):
        raise ValueError(f"shard {shard}: PG {pg} has {total} products in {catalog_uri}, which is not "
                         f"{count} shard(s) of {shard_size}: the catalog changed after the shards were planned")
    start, end, seen, pending = index * shard_size, (index + 1) * shard_size, 0, []
    for rg, n in enumerate(per_group):
        if n and seen + n > start and seen < end:
            table = parquet.read_row_group(rg, columns=["product_id", "title", "product_group"])
            if n < len(table):
                table = table.filter(pa.compute.equal(table.column("product_group"), pg))
            pending.append(table.slice(max(start - seen, 0), end - max(start, seen)).select(["product_id", "title"]))
            while sum(len(t) for t in pending) >= chunk_rows:
                whole = pa.concat_tables(pending)
                yield whole.slice(0, chunk_rows)
                pending = [whole.slice(chunk_rows)]
        seen += n
    rest = pa.concat_tables(pending) if pending else None
    if rest is not None and len(rest):
        yield rest


def shard_size_of(catalog_uri: str, shard: str, shard_size: int) -> int:
    """The products of one shard, from the catalog's row-group metadata."""
    pg, index, _ = parse_shard(shard)
    total = sum(pg_row_groups(pq.ParquetFile(storage.local_path(catalog_uri)), pg))
    return max(0, min(shard_size, total - index * shard_size))


def shard_rows(catalog_uri: str, shard: str, shard_size: int) -> pd.DataFrame:
    """``product_id, title`` of one shard as one DataFrame (``shard_batches``, whole)."""
    tables = list(shard_batches(catalog_uri, shard, shard_size, shard_size))
    if not tables:
        return pd.DataFrame({"product_id": pd.Series([], dtype=str), "title": pd.Series([], dtype=str)})
    return pa.concat_tables(tables).to_pandas()


def embed_shard(model_uri: str, catalog_uri: str, shard: str, out_uri: str, cfg, device: str = "cpu") -> tuple[str, dict]:
    """Embed one shard (``cfg``: the EmbedConfig) → one Parquet part; (uri, stats). The shard streams in
    chunks of ``embed.chunk_rows`` into one Parquet writer, and a chunk is written on a second thread
    while the next one is tokenized and encoded (Arrow's writer releases the GIL): memory holds two
    chunks, whatever ``embed.shard_size`` is."""
    from concurrent.futures import ThreadPoolExecutor

    model, meta = load_model(model_uri, device)
    pg = parse_shard(shard)[0]
    if meta["pg"] != pg:
        raise ValueError(f"shard {shard} is PG {pg!r} but model {model_uri} is PG {meta['pg']!r}")
    version, n, writer, pending = model_version(model_uri), 0, None, None
    workers = tokenize_workers(cfg.tokenize_workers, shard_size_of(catalog_uri, shard, cfg.shard_size),
                               cfg.parallel_min_titles)
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp, ThreadPoolExecutor(1) as background, \
            Tokenizer(meta["vocab"], 1 if meta.get("subwords") else workers) as tokenizer:
        for chunk in shard_batches(catalog_uri, shard, cfg.shard_size, cfg.chunk_rows):
            emb = embed_titles(model, meta, chunk.column("title").to_pylist(), cfg.batch_size, device, workers,
                               tokenizer)
            table = embedding_table(chunk.column("product_id"), pg, version, emb, cfg.dtype)
            if pending is not None:
                pending.result()
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            pending = background.submit(writer.write_table, table)
            n += len(chunk)
        if pending is not None:
            pending.result()
        if writer is None:  # an empty shard (a PG with no product left): an empty part, its schema only
            writer = pq.ParquetWriter(tmp, embedding_table([], pg, version, np.zeros((0, model.lstm.hidden_size * 2),
                                                                                     np.float32), cfg.dtype).schema)
        writer.close()
        written = storage.file_record(tmp)
    return out_uri, {"pg": pg, "shard": shard, "products": n, "tokenize_workers": workers,
                     "model_version": version, "dtype": cfg.dtype} | written


def commit_dataset(folder_uri: str, parts: list[dict], version: str) -> str:
    """Write ``<folder>/_manifest.json`` naming the parts of a dataset (a PG's shards, or the PG-agnostic
    parts), each with its rows, bytes and SHA-256 as its writer recorded them (``storage.file_record``): the
    commit that makes it readable and checkable. A part's ``uri`` is inside the folder or relative to it
    (``footwear/part-00000-of-00002.parquet``); the manifest lists them relative."""
    def relative(uri: str) -> str:
        if uri.startswith(folder_uri.rstrip("/") + "/"):
            return uri[len(folder_uri.rstrip("/")) + 1:]
        return uri.rsplit("/", 1)[-1] if uri.startswith(("/", storage.S3)) else uri

    files = [{"file": relative(p["uri"]), "rows": int(p["rows"])} | {k: p[k] for k in ("bytes", "sha256") if p.get(k)}
             for p in parts]
    storage.write_text(storage.join(folder_uri, MANIFEST), json.dumps(
        {"format": "mrnet-embeddings-v1", "model_version": version, "rows": sum(f["rows"] for f in files),
         "parts": files}, indent=2))
    return folder_uri


def embed_pg(model_uri: str, catalog: pd.DataFrame, out_uri: str, batch_size: int = 8192,
             device: str = "cpu") -> tuple[str, dict]:
    """Embed every catalog product of the model's PG; return (uri, stats)."""
    model, meta = load_model(model_uri, device)
    rows = catalog[catalog["product_group"] == meta["pg"]]
    emb = embed_titles(model, meta, rows["title"].tolist(), batch_size, device)
    write_embeddings(out_uri, rows["product_id"], meta["pg"], model_version(model_uri), emb)
    return out_uri, {"pg": meta["pg"], "products": len(rows)}


def read_titles_csv(uri: str, chunk_rows: int | None = None):
    """A CSV of new titles: a ``title`` column, optional ``product_id`` (else row numbers). Whole, or with
    ``chunk_rows`` an iterator of frames of that many rows (row numbers and errors count from the file's start)."""
    frames = titles_batches(uri, chunk_rows or 1 << 62)
    return frames if chunk_rows else next(frames)


def titles_batches(uri: str, chunk_rows: int):
    """A titles CSV (``title``, optional ``product_id``) in batches; a file that is empty or not UTF-8 is an
    error naming it."""
    try:
        reader = pd.read_csv(storage.local_path(uri), dtype=str, keep_default_na=False, skip_blank_lines=False,
                             chunksize=chunk_rows)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{uri}: the file is empty: give a CSV with a header row naming a 'title' column") from None
    first = 0
    with reader:
        for df in _utf8(uri, reader):
            if "title" not in df.columns:
                raise ValueError(f"{uri}: required column 'title' is missing (columns: {list(df.columns)})")
            df = df.reset_index(drop=True)
            empty = df.index[df["title"].str.strip() == ""]
            if len(empty):
                raise ValueError(f"{uri}: column 'title' is empty on row(s) {[first + int(i) + 1 for i in empty[:10]]}")
            if "product_id" not in df.columns:
                df["product_id"] = [f"row-{first + i + 1}" for i in range(len(df))]
            first += len(df)
            yield df


def _utf8(uri: str, reader):
    """The reader's batches; a byte that is not UTF-8 is an error naming the file and the byte's offset."""
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise ValueError(f"{uri}: not UTF-8 text ({exc.reason} at byte {exc.start} of a block): save it as UTF-8, "
                         "e.g. iconv -f latin1 -t utf-8") from None


def embed_cold_start(model_uri: str, titles_uri: str, out_uri: str, batch_size: int = 8192,
                     chunk_rows: int = 262_144) -> str:
    """Cold start: embed new titles with a trained PG model, ``chunk_rows`` at a time into one Parquet file."""
    model, meta = load_model(model_uri)
    version, writer = model_version(model_uri), None
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        for df in titles_batches(titles_uri, chunk_rows):
            table = embedding_table(df["product_id"], meta["pg"], version,
                                    embed_titles(model, meta, df["title"].tolist(), batch_size))
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            raise ValueError(f"{titles_uri}: no title to embed (the file has a header only)")
        writer.close()
    return out_uri
