"""Batch and cold-start inference → Parquet of MRNet-Product2Vec embeddings (paper §3.1, §6).

Titles are tokenized once (over a process pool for large shards), grouped into exact-length
buckets and encoded in large batches under ``torch.inference_mode`` (no padding, no
PackedSequence). An embedding file has ``product_id, product_group, model_version, embedding``
where ``embedding`` is a fixed-size list of float32 (d = 128) and ``model_version`` is the
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
from mrnet.data.text import encode_parallel, length_buckets
from mrnet.data.word2vec import subword_vectors, unseen_words
from mrnet.encoder.model import MRNet, load_model
from mrnet.io import storage

MANIFEST = "_manifest.json"
_SHARD = re.compile(r"^(?P<pg>[A-Za-z0-9][A-Za-z0-9_.-]*)/part-(?P<index>\d{5})-of-(?P<count>\d{5})$")


@torch.inference_mode()
def embed_titles(model: MRNet, meta: dict, titles, batch_size: int = 8192,
                 device: str = "cpu", workers: int = 1) -> np.ndarray:
    """h_T of every title, (N, d) float32, in input order (tokenized by ``workers`` processes).
    A FastText model (``meta["subwords"]``) gives words outside its vocabulary their n-gram vector."""
    titles, words, table = list(titles), meta["vocab"], None
    max_tokens = meta["config"]["model"]["max_tokens"]
    if meta.get("subwords") and (unseen := unseen_words(words, titles, max_tokens)):
        words = words + unseen
        extra = torch.from_numpy(subword_vectors(unseen, model.subwords.cpu().numpy(), meta["subwords"]))
        table = torch.cat([model.words.weight.detach().cpu(), extra]).to(device)   # (V + unseen, word_dim)
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
    if not isinstance(product_ids, (pd.Series, pd.Index, np.ndarray, list, pa.Array)):
        product_ids = list(product_ids)
    return pa.table({  # a Series converts straight from its Arrow-backed strings (~250x a list)
        "product_id": pa.array(product_ids, pa.string()),
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


def read_embeddings(uri: str, columns=("product_id",)) -> tuple[pd.DataFrame, np.ndarray]:
    """(the other ``columns``, embeddings (N, d) float32) of an embedding file or sharded folder.
    The vectors come straight from the Arrow buffer (no per-row Python arrays)."""
    table = pa.concat_tables([pq.read_table(storage.local_path(part), columns=[*columns, "embedding"])
                              for part in dataset_parts(uri)])
    column = table.column("embedding").combine_chunks()
    d = column.type.list_size
    x = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)  # a writable copy
    return table.drop(["embedding"]).to_pandas(), x


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


def shard_rows(catalog_uri: str, shard: str, shard_size: int) -> pd.DataFrame:
    """``product_id, title`` of one shard: rows [i·S, (i+1)·S) of its PG, in catalog order.
    Reads only the row groups that hold them (the validated catalog is sorted by PG, so for a
    5M shard that is about 5M rows, whatever the catalog's size)."""
    pg, index, count = parse_shard(shard)
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    per_group = pg_row_groups(parquet, pg)
    total = sum(per_group)
    if total > count * shard_size or (total and total <= (count - 1) * shard_size):
        raise ValueError(f"shard {shard}: PG {pg} has {total} products in {catalog_uri}, which is not "
                         f"{count} shard(s) of {shard_size}: the catalog changed after the shards were planned")
    start, seen, groups, skip = index * shard_size, 0, [], 0
    for rg, n in enumerate(per_group):
        if n and seen + n > start and seen < start + shard_size:
            if not groups:
                skip = start - seen  # the shard's first row, among the PG's rows of the groups read
            groups.append(rg)
        seen += n
    if not groups:
        return pd.DataFrame({"product_id": pd.Series([], dtype=str), "title": pd.Series([], dtype=str)})
    table = parquet.read_row_groups(groups, columns=["product_id", "title", "product_group"])
    table = table.filter(pa.compute.equal(table.column("product_group"), pg))
    return table.slice(skip, shard_size).select(["product_id", "title"]).to_pandas()


def embed_shard(model_uri: str, catalog_uri: str, shard: str, out_uri: str, cfg, device: str = "cpu") -> tuple[str, dict]:
    """Embed one shard (``cfg``: the EmbedConfig) → one Parquet part; (uri, stats)."""
    model, meta = load_model(model_uri, device)
    pg = parse_shard(shard)[0]
    if meta["pg"] != pg:
        raise ValueError(f"shard {shard} is PG {pg!r} but model {model_uri} is PG {meta['pg']!r}")
    rows = shard_rows(catalog_uri, shard, cfg.shard_size)
    workers = tokenize_workers(cfg.tokenize_workers, len(rows), cfg.parallel_min_titles)
    emb = embed_titles(model, meta, rows["title"].tolist(), cfg.batch_size, device, workers)
    version = model_version(model_uri)
    write_embeddings(out_uri, rows["product_id"], pg, version, emb, cfg.dtype)
    return out_uri, {"pg": pg, "shard": shard, "products": len(rows), "tokenize_workers": workers,
                     "model_version": version, "dtype": cfg.dtype}


def commit_dataset(folder_uri: str, parts: list[tuple[str, int]], version: str) -> str:
    """Write ``<folder>/_manifest.json`` naming the (part uri, rows) of a PG: the commit that makes
    the sharded embeddings readable. Parts are listed relative to the folder."""
    files = [{"file": uri.rsplit("/", 1)[-1], "rows": rows} for uri, rows in parts]
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


def read_titles_csv(uri: str) -> pd.DataFrame:
    """A CSV of new titles: a ``title`` column, optional ``product_id`` (else row numbers)."""
    df = pd.read_csv(storage.local_path(uri), dtype=str, keep_default_na=False, skip_blank_lines=False)
    if "title" not in df.columns:
        raise ValueError(f"{uri}: required column 'title' is missing (columns: {list(df.columns)})")
    empty = df.index[df["title"].str.strip() == ""]
    if len(empty):
        raise ValueError(f"{uri}: column 'title' is empty on row(s) {[int(i) + 1 for i in empty[:10]]}")
    if "product_id" not in df.columns:
        df["product_id"] = [f"row-{i + 1}" for i in range(len(df))]
    return df


def embed_cold_start(model_uri: str, titles_uri: str, out_uri: str, batch_size: int = 8192) -> str:
    """Cold start: embed new titles with a trained PG model."""
    model, meta = load_model(model_uri)
    df = read_titles_csv(titles_uri)
    emb = embed_titles(model, meta, df["title"].tolist(), batch_size)
    return write_embeddings(out_uri, df["product_id"], meta["pg"], model_version(model_uri), emb)
