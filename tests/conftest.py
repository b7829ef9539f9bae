"""Shared fixtures: a tiny real-data catalog (3 PGs) and word vectors, built once per session."""

from __future__ import annotations

import pytest

from tests.helpers import RAW, REPO, tiny_config


@pytest.fixture(scope="session")
def raw_catalog(tmp_path_factory) -> str:
    """The full demo catalog built from shared/data (3 s)."""
    from mrnet.data.demo import build_demo_catalog

    assert RAW.is_dir(), f"shared data not found at {RAW} (set MRNET_RAW_DIR to the shared/data folder)"
    out = tmp_path_factory.mktemp("raw") / "raw.parquet"
    return build_demo_catalog(RAW, REPO / "configs" / "pg_mapping.yaml", str(out))


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, raw_catalog):
    """Validated tiny catalog + corpus + word vectors: (cfg, catalog_uri, vectors_uri)."""
    from mrnet.run import steps

    cfg = tiny_config(tmp_path_factory.mktemp("tiny"))
    catalog_uri, _ = steps.validate_step(cfg, raw_catalog)
    corpus_uri, _ = steps.corpus_step(cfg, catalog_uri)
    vectors_uri, _ = steps.word2vec_step(cfg, corpus_uri)
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
