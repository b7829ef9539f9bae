"""Batch and cold-start inference → Parquet of MRNet-Product2Vec embeddings (paper §3.1, §6).

Titles are tokenized once, grouped into exact-length buckets and encoded in large
batches under ``torch.inference_mode`` (no padding, no PackedSequence). The output
Parquet has ``product_id, product_group, model_version, embedding`` where
``embedding`` is a fixed-size list of float32 (d = 128) and ``model_version`` is
the first 12 hex digits of the model file's sha256. Cold start (§6: "embeddings can
be created using only product titles") embeds a CSV of new titles with a trained model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mrnet import storage
from mrnet.model import MRNet, load_model
from mrnet.text import Vocab, length_buckets


@torch.inference_mode()
def embed_titles(model: MRNet, meta: dict, titles, batch_size: int = 8192,
                 device: str = "cpu") -> np.ndarray:
    """h_T of every title, (N, d) float32, in input order."""
    ids, lengths = Vocab(meta["vocab"]).encode_many(titles, meta["config"]["model"]["max_tokens"])
    out = np.empty((len(lengths), meta["config"]["model"]["embed_dim"]), np.float32)
    model.eval()
    for length, idx in length_buckets(lengths).items():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            batch = torch.from_numpy(ids[part, :length]).to(device)   # (B, T)
            out[part] = model(batch).float().cpu().numpy()              # (B, d)
    return out


def embedding_table(product_ids, pg, version: str, emb: np.ndarray) -> pa.Table:
    """The embedding Parquet schema: product_id, product_group (one PG or one per row),
    model_version, embedding (fixed-size list of float32)."""
    n, d = emb.shape
    pgs = [pg] * n if isinstance(pg, str) else list(pg)
    return pa.table({
        "product_id": pa.array(list(product_ids), pa.string()),
        "product_group": pa.array(pgs, pa.string()),
        "model_version": pa.array([version] * n, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), d),
    })


def write_embeddings(out_uri: str, product_ids, pg, version: str, emb: np.ndarray) -> str:
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        pq.write_table(embedding_table(product_ids, pg, version, emb), tmp)
    return out_uri


def read_embeddings(uri: str, columns=("product_id",)) -> tuple[pd.DataFrame, np.ndarray]:
    """(the other ``columns``, embeddings (N, d) float32) of an embedding Parquet. The vectors
    come straight from the Arrow buffer (no per-row Python arrays)."""
    table = pq.read_table(storage.local_path(uri), columns=[*columns, "embedding"])
    column = table.column("embedding").combine_chunks()
    d = column.type.list_size
    x = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)  # a writable copy
    return table.drop(["embedding"]).to_pandas(), x


def model_version(model_uri: str) -> str:
    return storage.sha256_file(storage.local_path(model_uri))[:12]


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
