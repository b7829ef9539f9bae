"""``mrnet neighbors``: the k nearest products by Euclidean distance (paper §4.2) in a release's
PG-specific space (one PG's d-dim embeddings) or PG-agnostic space (every product's 2d-dim
embedding from the sparse autoencoder, §3.2).

A query is a product id of the release, or a free-text title: cold start (§6) through the
PG's model, then, for the agnostic space, through the sparse autoencoder at the PG's block.

A release built with an index (release/index.py, the ``build_index`` task) answers from it: the
space's IVF-PQ candidates re-ranked exactly, or an exact scan of a small space, reading a few rows
of memory-mapped files, never the whole space. ``exact=True`` (``--exact``), or a release without
an index, reads the whole space and searches it exactly (retrieval.knn: chunked matrix products,
no N×N matrix). docs/RESULTS.md has the measured recall and latency.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.evaluation import retrieval
from mrnet.io import storage

ATTRIBUTES = ["brand", "color", "gender", "subcategory", "item_type", "price"]
METHODS = {"exact": "exact", "flat": "exact, indexed", "ivfpq": "IVF-PQ, re-ranked exactly"}


def load_release(cfg, release: str | None) -> dict:
    """A release manifest: a release.json, a run folder holding one, or (default) the champion."""
    from mrnet.release.manifest import manifest_by_alias, read_manifest

    if release:
        path = Path(release)
        uri = str(path / "release.json") if path.is_dir() else release
        if not storage.exists(uri):
            raise FileNotFoundError(f"no release manifest at {uri} (give a release.json or a run folder)")
        return read_manifest(uri)
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
    """The PG whose embeddings hold ``product_id`` (a binary search per PG with an index)."""
    from mrnet.encoder.embed import embedding_batches

    for pg, uri in sorted(manifest["embeddings"].items()):
        opened = _indexed(manifest, f"pg/{pg}")
        if opened is not None and opened.row_of(product_id) is not None:
            return pg
        if opened is None and any((df["product_id"] == product_id).any() for df, _ in embedding_batches(uri)):
            return pg
    raise ValueError(f"product id {product_id!r} is not in release {manifest['release']} "
                     f"({len(manifest['embeddings'])} PGs searched); check the id, or query by --title")


def _indexed(manifest: dict, space: str):
    """The release's built index of ``space`` (release/index.py), or None."""
    from mrnet.release.index import open_space

    uri = (manifest.get("index") or {}).get("uri")
    return open_space(uri, space) if uri else None


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
    """Cold start: the title's embedding (1, d) in the requested space (the models are loaded once per process)."""
    from mrnet.encoder.embed import embed_titles
    from mrnet.release.manifest import release_model

    model, meta = _pg_model(release_model(manifest, pg))
    x = embed_titles(model, meta, [title])
    if space == "agnostic":
        from mrnet.autoencoders import sparse as sparse_ae

        ae, ae_meta = _agnostic_model(release_model(manifest, "agnostic"))
        x = sparse_ae.agnostic(ae, ae_meta, x, pg)
    return x


@functools.lru_cache(maxsize=8)
def _pg_model(uri: str):
    from mrnet.encoder.model import load_model

    return load_model(uri)


@functools.lru_cache(maxsize=2)
def _agnostic_model(uri: str):
    from mrnet.autoencoders import sparse as sparse_ae

    return sparse_ae.load(uri)


def neighbors(manifest: dict, k: int = 10, space: str = "pg", pg: str | None = None, product_id: str | None = None,
              title: str | None = None, exact: bool = False) -> tuple[dict, pd.DataFrame]:
    """(query description, k neighbours with distance, PG, title and key attributes). From the release's
    index when it has one (unless ``exact``), else an exact search over the whole space."""
    if (product_id is None) == (title is None):
        raise ValueError("give exactly one query: --id PRODUCT_ID or --title TEXT")
    if k < 1:
        raise ValueError(f"-k must be at least 1, got {k}")
    if title is not None:
        check_title(manifest, title, pg)
    elif pg is None:
        pg = find_pg(manifest, product_id)
    uri = _space(manifest, space, pg)
    opened = None if exact else _indexed(manifest, "agnostic" if space == "agnostic" else f"pg/{pg}")
    query = {"product_id": product_id, "title": title, "pg": pg, "space": space, "release": manifest["release"]}
    if opened is not None:
        return query | {"candidates": len(opened), "method": opened.info["kind"]}, _from_index(
            manifest, opened, k, space, pg, product_id, title)
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
    dist, idx = retrieval.knn(q, x, k, "euclidean", exclude=exclude)
    rows = ids.iloc[idx[0][idx[0] >= 0]].assign(distance=dist[0][idx[0] >= 0]).reset_index(drop=True)
    return query | {"candidates": len(ids), "method": "exact"}, _attach(manifest, rows, product_id, pg)


def _from_index(manifest: dict, opened, k: int, space: str, pg: str | None, product_id: str | None,
                title: str | None) -> pd.DataFrame:
    """The neighbours from a built index: rows (title and attributes included) taken by row number."""
    exclude = None
    if product_id is not None:
        exclude = opened.row_of(product_id)
        if exclude is None:
            raise ValueError(f"product id {product_id!r} is not in the {space} embeddings of release "
                             f"{manifest['release']} (PG {pg})")
        q = opened.vector(exclude)
    else:
        q = embed_title(manifest, title, pg, space)
    dist, rows = opened.search(q, k, exclude)
    out = opened.take(rows).assign(distance=dist)
    if exclude is not None:
        out = pd.concat([opened.take([exclude]).assign(distance=0.0), out], ignore_index=True)
    ranks = (["query"] if exclude is not None else []) + [str(i) for i in range(1, len(rows) + 1)]
    first = ["rank", "distance", "product_id", "product_group", "title"]
    out = out.assign(rank=ranks)
    return out[first + [c for c in out.columns if c not in first]]


def _attach(manifest: dict, rows: pd.DataFrame, query_id: str | None, pg: str | None) -> pd.DataFrame:
    """Title and key attributes from the release's catalog (query row first, if any): the rows of these
    ids only."""
    from mrnet.data.reads import read_rows

    wanted = set(rows["product_id"]) | ({query_id} if query_id else set())
    info = read_rows(manifest["catalog"], wanted, ["title", *ATTRIBUTES]).reset_index()
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
            f"{METHODS[query['method']]} Euclidean over {query['candidates']} products; "
            f"release {query['release']})")
    shown = rows.astype(object).where(rows.notna(), "")
    shown["title"] = shown["title"].map(lambda t: str(t)[:width])
    shown["distance"] = rows["distance"].map(lambda d: f"{d:.3f}")
    return head + "\n" + shown.to_string(index=False)
