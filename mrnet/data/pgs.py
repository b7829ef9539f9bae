"""The product groups (PGs) of a run: one MRNet model each (paper §3).

They come from ``data.pg_mapping`` (PG → category-path prefixes, e.g. configs/pg_mapping.yaml)
or, without a mapping, from the validated catalog's ``product_group`` values.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml

from mrnet.config.base import check_segment
from mrnet.config.schema import Config
from mrnet.io import storage


def load_pg_mapping(path: str | Path) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """PG → list of (source, path-prefix levels), in file order (first match wins)."""
    tree = yaml.safe_load(Path(path).read_text())
    mapping = {}
    for pg, rules in tree["pgs"].items():
        check_segment(str(pg), f"{path}: PG")
        parsed = []
        for rule in rules:
            source, _, prefix = rule.partition(":")
            if not prefix.strip():
                raise ValueError(f"{path}: PG {pg!r}: rule {rule!r} must look like 'source: A > B'")
            parsed.append((source.strip(), tuple(p.strip() for p in prefix.split(">"))))
        mapping[pg] = parsed
    return mapping


def pg_counts(catalog_uri: str) -> dict[str, int]:
    """Products per PG of a validated catalog: from the row groups' statistics (each holds one PG), reading
    the ``product_group`` column only of a row group that holds several."""
    parquet = pq.ParquetFile(storage.local_path(catalog_uri))
    counts: dict[str, int] = {}
    for rg in range(parquet.num_row_groups):
        for pg, n in row_group_pgs(parquet, rg).items():
            counts[pg] = counts.get(pg, 0) + n
    return counts


def row_group_pgs(parquet, rg: int) -> dict[str, int]:
    """{PG: rows} of one row group of a catalog: from its statistics when it holds one PG (every row
    group of a validated catalog does), else by reading its ``product_group`` column."""
    column = parquet.schema_arrow.get_field_index("product_group")
    meta = parquet.metadata.row_group(rg)
    stats = meta.column(column).statistics
    if stats is not None and stats.has_min_max and stats.null_count == 0 and stats.min == stats.max:
        return {str(stats.min): meta.num_rows}
    values = parquet.read_row_group(rg, columns=["product_group"]).column(0)
    return {str(r["values"]): int(r["counts"]) for r in values.value_counts().to_pylist()}


def pg_row_groups(parquet, pg: str) -> list[int]:
    """How many rows of ``pg`` each row group holds (0 where none): from the statistics where they
    decide it (a row group of one PG, or whose range leaves the PG out), else by reading that row
    group's PG column."""
    column = parquet.schema_arrow.get_field_index("product_group")
    counts = []
    for rg in range(parquet.num_row_groups):
        stats = parquet.metadata.row_group(rg).column(column).statistics
        if stats is not None and stats.has_min_max and stats.null_count == 0 and not stats.min <= pg <= stats.max:
            counts.append(0)
        else:
            counts.append(row_group_pgs(parquet, rg).get(pg, 0))
    return counts


def mapped_pgs(cfg: Config) -> list[str] | None:
    """Every PG of ``data.pg_mapping`` in its file order; None without a mapping."""
    return list(load_pg_mapping(cfg.data.pg_mapping)) if cfg.data.pg_mapping else None


def pg_list(cfg: Config, catalog_uri: str | None = None) -> list[str]:
    """The PGs a run trains: ``pgs`` (or all) of ``data.pg_mapping``, or, without a mapping, of the
    validated catalog's ``product_group`` values (unchecked ``pgs`` until there is a catalog)."""
    if cfg.data.pg_mapping:
        known = mapped_pgs(cfg)
    elif catalog_uri:
        known = sorted(pg_counts(catalog_uri))
    else:
        return list(cfg.pgs or [])
    chosen = cfg.pgs or known
    unknown = [pg for pg in chosen if pg not in known]
    if unknown:
        raise ValueError(f"unknown PG(s) {unknown} in config 'pgs'; known: {known}")
    return chosen
