"""``mrnet neighbors``: the k nearest products by Euclidean distance (paper §4.2) in a release's
PG-specific space (one PG's d-dim embeddings) or PG-agnostic space (every product's 2d-dim
embedding from the sparse autoencoder, §3.2).

A query is a product id of the release, or a free-text title: cold start (§6) through the
PG's model, then, for the agnostic space, through the sparse autoencoder at the PG's block.

Search is exact by default (retrieval.knn: chunked matrix products, no N×N matrix). For
large catalogs ``--ann`` uses a faiss HNSW index (``faiss-cpu``, approximate), built once
and saved beside the embedding file as ``<file>.hnsw.faiss`` (in a sharded PG folder:
``_manifest.json.hnsw.faiss``, which Parquet readers skip) (faiss's own binary format,
not pickle); docs/NEIGHBORS.md has the measured recall and speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.evaluation import retrieval
from mrnet.io import storage

ATTRIBUTES = ["brand", "color", "gender", "subcategory", "item_type", "price"]


def load_release(cfg, release: str | None) -> dict:
    """A release manifest: a release.json, a run folder holding one, or (default) the champion."""
    from mrnet.release.manifest import manifest_by_alias

    if release:
        path = Path(release)
        uri = str(path / "release.json") if path.is_dir() else release
        if not storage.exists(uri):
            raise FileNotFoundError(f"no release manifest at {uri} (give a release.json or a run folder)")
        return json.loads(storage.read_text(uri))
    manifest, where = manifest_by_alias(cfg, "champion")
    if manifest is None:
        raise FileNotFoundError(f"no champion release under {where}: run `make demo` (or pass --release)")
    return manifest


def _space(manifest: dict, space: str, pg: str | None) -> str:
    """The embedding file to search."""
    if pg is not None and pg not in manifest["embeddings"]:
        raise ValueError(f"unknown PG {pg!r} in release {manifest['release']}; known: {sorted(manifest['embeddings'])}")
    if space == "agnostic":
        if "agnostic" not in manifest:
            raise ValueError(f"release {manifest['release']} has no PG-agnostic embeddings (sparse_ae disabled, or "
                             "a release from before the sparse autoencoder); use --space pg")
        return manifest["agnostic"]["embeddings"]
    if pg is None:
        raise ValueError("--space pg needs --pg (or give --id: its PG is looked up)")
    return manifest["embeddings"][pg]


def find_pg(manifest: dict, product_id: str) -> str:
    """The PG whose embedding file holds ``product_id``."""
    for pg, uri in sorted(manifest["embeddings"].items()):
        ids = pd.read_parquet(storage.local_path(uri), columns=["product_id"])["product_id"]
        if (ids == product_id).any():
            return pg
    raise ValueError(f"product id {product_id!r} is not in release {manifest['release']} "
                     f"({len(manifest['embeddings'])} PGs searched); check the id, or query by --title")


def _matrix(uri: str) -> tuple[pd.DataFrame, np.ndarray]:
    from mrnet.encoder.embed import read_embeddings

    return read_embeddings(uri, ("product_id", "product_group"))


def check_title(manifest: dict, title: str, pg: str | None) -> None:
    from mrnet.data.text import tokenize

    if not title or not title.strip():
        raise ValueError("--title is empty: give the product title to embed")
    if pg is None:
        raise ValueError(f"a --title query needs --pg, the PG model that embeds it; known: {sorted(manifest['models'])}")
    if not tokenize(title):
        raise ValueError(f"--title {title!r} has no word characters to embed")


def embed_title(manifest: dict, title: str, pg: str | None, space: str) -> np.ndarray:
    """Cold start: the title's embedding (1, d) in the requested space."""
    from mrnet.encoder.embed import embed_titles
    from mrnet.encoder.model import load_model

    model, meta = load_model(manifest["models"][pg]["uri"])
    x = embed_titles(model, meta, [title])
    if space == "agnostic":
        from mrnet.autoencoders import sparse as sparse_ae

        ae, ae_meta = sparse_ae.load(manifest["agnostic"]["model"])
        x = sparse_ae.agnostic(ae, ae_meta, x, pg)
    return x


def _ann(uri: str, x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss HNSW (approximate) search; the index is cached beside a local embedding file."""
    import faiss

    from mrnet.encoder.embed import MANIFEST

    anchor = uri if uri.endswith(".parquet") else storage.join(uri, MANIFEST)
    local = storage.local_path(anchor)
    cache = Path(str(local) + ".hnsw.faiss")
    if cache.exists() and cache.stat().st_mtime >= local.stat().st_mtime:
        index = faiss.read_index(str(cache))
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], 32)
        index.hnsw.efConstruction = 80
        index.add(x)
        with storage.atomic_path(str(cache), suffix=".faiss") as tmp:
            faiss.write_index(index, str(tmp))
    index.hnsw.efSearch = max(64, 2 * k)
    dist, idx = index.search(q, k)
    return np.sqrt(np.maximum(dist, 0)), idx


def neighbors(manifest: dict, k: int = 10, space: str = "pg", pg: str | None = None, product_id: str | None = None,
              title: str | None = None, ann: bool = False) -> tuple[dict, pd.DataFrame]:
    """(query description, k neighbours with distance, PG, title and key attributes)."""
    if (product_id is None) == (title is None):
        raise ValueError("give exactly one query: --id PRODUCT_ID or --title TEXT")
    if k < 1:
        raise ValueError(f"-k must be at least 1, got {k}")
    if title is not None:
        check_title(manifest, title, pg)
    elif pg is None:
        pg = find_pg(manifest, product_id)
    uri = _space(manifest, space, pg)
    ids, x = _matrix(uri)
    exclude = None
    if product_id is not None:
        where = np.flatnonzero(ids["product_id"].to_numpy() == product_id)
        if not len(where):
            raise ValueError(f"product id {product_id!r} is not in the {space} embeddings of release "
                             f"{manifest['release']} (PG {pg})")
        q, exclude = x[where[:1]], where[:1]
    else:
        q = embed_title(manifest, title, pg, space)
    if ann:
        dist, idx = _ann(uri, x, q, k + (exclude is not None))
        keep = idx[0] != (exclude[0] if exclude is not None else -2)
        dist, idx = dist[:, keep][:, :k], idx[:, keep][:, :k]
    else:
        dist, idx = retrieval.knn(q, x, k, "euclidean", exclude=exclude)
    rows = ids.iloc[idx[0][idx[0] >= 0]].assign(distance=dist[0][idx[0] >= 0]).reset_index(drop=True)
    return {"product_id": product_id, "title": title, "pg": pg, "space": space, "candidates": len(ids),
            "release": manifest["release"], "exact": not ann}, _attach(manifest, rows, product_id, pg)


def _attach(manifest: dict, rows: pd.DataFrame, query_id: str | None, pg: str | None) -> pd.DataFrame:
    """Title and key attributes from the release's catalog (query row first, if any)."""
    import pyarrow.parquet as pq

    path = storage.local_path(manifest["catalog"])
    names = pq.ParquetFile(path).schema_arrow.names
    catalog = pd.read_parquet(path, columns=["product_id", "title"] + [c for c in ATTRIBUTES if c in names])
    wanted = set(rows["product_id"]) | ({query_id} if query_id else set())
    info = catalog[catalog["product_id"].isin(wanted)].drop_duplicates("product_id")
    out = rows.merge(info, on="product_id", how="left")
    if query_id:
        query = info[info["product_id"] == query_id].assign(distance=0.0)
        out = pd.concat([query.assign(product_group=pg), out], ignore_index=True)
    ranks = (["query"] if query_id else []) + [str(i) for i in range(1, len(rows) + 1)]
    first = ["distance", "product_id", "product_group", "title"]
    return out[first + [c for c in out.columns if c not in first]].assign(rank=ranks).pipe(
        lambda f: f[["rank"] + list(f.columns[:-1])])


def format_table(query: dict, rows: pd.DataFrame, width: int = 60) -> str:
    what = f"id {query['product_id']}" if query["product_id"] else f"title {query['title']!r}"
    head = (f"{len(rows) - bool(query['product_id'])} nearest to {what} "
            f"({query['space']} space{', PG ' + query['pg'] if query['pg'] else ''}; "
            f"{'exact' if query['exact'] else 'approximate (HNSW)'} Euclidean over {query['candidates']} products; "
            f"release {query['release']})")
    shown = rows.astype(object).where(rows.notna(), "")
    shown["title"] = shown["title"].map(lambda t: str(t)[:width])
    shown["distance"] = rows["distance"].map(lambda d: f"{d:.3f}")
    return head + "\n" + shown.to_string(index=False)
