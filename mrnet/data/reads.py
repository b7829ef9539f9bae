"""Bounded reads of a validated catalog: one PG's rows, a stable hash sample, the titles of given ids.

A validated catalog is one Parquet file sorted by PG, whose row groups each hold one PG
(data/staging.py). Every reader here goes row group by row group and keeps what it was asked
for, so its memory is what it returns plus one row group, whatever the catalog's size: a PG's
training (``read_pg``, capped by ``train.max_products``), the evaluation (``read_sample``, capped
by ``evaluation.max_products``), and the titles of given products (``read_rows``: the sparse
autoencoder's anchors, the attributes of exact neighbours).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mrnet.data.catalog import frame_keep_nan
from mrnet.data.pgs import pg_row_groups
from mrnet.data.sample import hash_rank, smallest_rank
from mrnet.io import storage


def pg_batches(catalog_uri: str, pg: str, columns: list[str] | None = None):
    """The rows of one PG of a catalog as Arrow tables, row group by row group, in catalog order:
    only the row groups that hold the PG are read (a validated catalog is sorted by PG)."""
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    read = None if columns is None else list(dict.fromkeys([*columns, "product_group"]))
    for rg, n in enumerate(pg_row_groups(parquet, pg)):
        if n:
            table = parquet.read_row_group(rg, columns=read)
            if n < len(table):
                table = table.filter(pc.equal(table.column("product_group"), pg))
            yield table if columns is None or "product_group" in columns else table.drop(["product_group"])


def read_pg(catalog_uri: str, pg: str, columns: list[str] | None = None, max_products: int | None = None,
            seed: int = 0):
    """One PG's rows as a DataFrame (``columns`` that the catalog has; None: all). With ``max_products``,
    a PG larger than that gives a stable hash sample of exactly that many products (by product id and
    ``seed``, so a product stays in or out from one retrain to the next), in catalog order. Memory: the
    rows returned, plus one row group (data/sample.py ``smallest_rank``)."""
    names = set(pq.read_schema(storage.local_path(catalog_uri)).names)
    columns = None if columns is None else [c for c in dict.fromkeys(["product_id", *columns]) if c in names]
    threshold = None
    if max_products:
        ranks = (hash_rank(t.column(0).to_numpy(zero_copy_only=False), seed, "train_sample")
                 for t in pg_batches(catalog_uri, pg, ["product_id"]))
        threshold = smallest_rank(ranks, max_products)
    tables = []
    for table in pg_batches(catalog_uri, pg, columns):
        if threshold is not None:
            rank = hash_rank(table.column("product_id").to_numpy(zero_copy_only=False), seed, "train_sample")
            table = table.filter(pa.array(rank <= threshold))
        tables.append(table)
    if not tables:
        schema = pq.read_schema(storage.local_path(catalog_uri))
        return frame_keep_nan(schema.empty_table().select(columns or schema.names))
    return frame_keep_nan(pa.concat_tables(tables))


def _batches(catalog_uri: str, columns: list[str] | None):
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    for rg in range(parquet.num_row_groups):
        yield parquet.read_row_group(rg, columns=columns)


def read_sample(catalog_uri: str, n: int, seed: int, salt: str = "evaluation"):
    """A stable hash sample of at most ``n`` products of the whole catalog, every column, in catalog order
    (a product is in or out by its id, ``seed`` and ``salt`` alone, from one retrain to the next)."""
    threshold = smallest_rank((hash_rank(t.column(0).to_numpy(zero_copy_only=False), seed, salt)
                               for t in _batches(catalog_uri, ["product_id"])), n)
    tables = []
    for table in _batches(catalog_uri, None):
        if threshold is not None:
            rank = hash_rank(table.column("product_id").to_numpy(zero_copy_only=False), seed, salt)
            table = table.filter(pa.array(rank <= threshold))
        tables.append(table)
    return frame_keep_nan(pa.concat_tables(tables) if tables else
                          pq.read_schema(storage.local_path(catalog_uri)).empty_table())


def read_rows(catalog_uri: str, ids, columns: list[str]) -> pd.DataFrame:
    """``columns`` (those the catalog has) of the given product ids, indexed by product id: reads those
    columns batch by batch and keeps the ids' rows only."""
    names = set(pq.read_schema(storage.local_path(catalog_uri)).names)
    read = ["product_id", *[c for c in columns if c in names and c != "product_id"]]
    wanted = pa.array(np.asarray(list(ids), dtype=object), pa.string())
    parts = [t.filter(pc.is_in(t.column("product_id"), value_set=wanted)) for t in _batches(catalog_uri, read)]
    frame = frame_keep_nan(pa.concat_tables(parts)) if parts else pd.DataFrame(columns=read)
    return frame.drop_duplicates("product_id").set_index("product_id")
