"""Shared fixtures: a tiny real-data catalog (3 PGs) and word vectors, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrnet.config import load_config

REPO = Path(__file__).resolve().parents[1]
RAW = Path(os.environ.get("MRNET_RAW_DIR", REPO.parent / "shared" / "data"))  # CI: shared/ beside the clone
TINY_PGS = "[watches,beverages,automotive]"


def tiny_config(root, *overrides: str):
    return load_config(REPO / "configs" / "demo.yaml",
                       [f"artifact_root={root}", f"data.raw_dir={RAW}",
                        f"data.pg_mapping={REPO / 'configs' / 'pg_mapping.yaml'}",
                        f"pgs={TINY_PGS}", "data.max_rows_per_pg=150", "train.threads=1", *overrides],
                       tiny=True)


@pytest.fixture(scope="session")
def raw_catalog(tmp_path_factory) -> str:
    """The full demo catalog built from shared/data (3 s)."""
    from mrnet.demo_catalog import build_demo_catalog

    assert RAW.is_dir(), f"shared data not found at {RAW} (set MRNET_RAW_DIR to the shared/data folder)"
    out = tmp_path_factory.mktemp("raw") / "raw.parquet"
    return build_demo_catalog(RAW, REPO / "configs" / "pg_mapping.yaml", str(out))


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, raw_catalog):
    """Validated tiny catalog + corpus + word vectors: (cfg, catalog_uri, vectors_uri)."""
    from mrnet import pipeline

    cfg = tiny_config(tmp_path_factory.mktemp("tiny"))
    catalog_uri, _ = pipeline.validate_step(cfg, raw_catalog)
    corpus_uri, _ = pipeline.corpus_step(cfg, catalog_uri)
    vectors_uri, _ = pipeline.word2vec_step(cfg, corpus_uri)
    return cfg, catalog_uri, vectors_uri


@pytest.fixture(scope="session")
def fixture_catalog(tmp_path_factory, raw_catalog):
    """The tiny fixture catalog of the run/DAG tests: 3 PGs × 150 products of the real demo catalog."""
    import pandas as pd

    df = pd.read_parquet(raw_catalog)
    out = tmp_path_factory.mktemp("fixture") / "catalog.parquet"
    df[df.product_group.isin(["watches", "beverages", "automotive"])].groupby("product_group").head(150).to_parquet(
        out, index=False)
    return out
