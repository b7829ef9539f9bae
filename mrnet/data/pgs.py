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
    """Products per PG of a validated catalog (reads the ``product_group`` column only)."""
    column = pq.read_table(storage.local_path(catalog_uri), columns=["product_group"]).column(0)
    return {str(row["values"]): int(row["counts"]) for row in column.value_counts().to_pylist()}


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
