"""Embeddings: Parquet schema, completeness, cold start from a titles CSV."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrnet import pipeline
from mrnet.embed import read_titles_csv
from mrnet.model import load_model
from mrnet.embed import embed_titles
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trained(tiny_artifacts):
    cfg, catalog_uri, vectors_uri = tiny_artifacts
    model_uri, _ = pipeline.train_step(cfg, "beverages", catalog_uri, vectors_uri)
    return cfg, catalog_uri, model_uri


def test_pg_embeddings_parquet_has_one_float32_128_vector_per_product(trained):
    cfg, catalog_uri, model_uri = trained
    uri, stats = pipeline.embed_step(cfg, model_uri, catalog_uri, "beverages")
    table = pq.read_table(uri)
    assert table.column_names == ["product_id", "product_group", "model_version", "embedding"]
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 128 and kind.value_type == pa.float32()
    df = table.to_pandas()
    catalog = pd.read_parquet(catalog_uri)
    assert set(df.product_id) == set(catalog.loc[catalog.product_group == "beverages", "product_id"])
    assert df.model_version.nunique() == 1 and len(df.model_version[0]) == 12
    emb = np.stack(df.embedding.to_numpy())
    assert emb.dtype == np.float32 and np.isfinite(emb).all() and emb.std() > 0


def test_batch_and_single_title_inference_agree(trained):
    _, catalog_uri, model_uri = trained
    model, meta = load_model(model_uri)
    titles = pd.read_parquet(catalog_uri).title.head(40).tolist()
    batched = embed_titles(model, meta, titles, batch_size=7)
    single = np.concatenate([embed_titles(model, meta, [t]) for t in titles])
    assert np.abs(batched - single).max() < 1e-5


def test_cold_start_cli_embeds_new_titles(trained, tmp_path):
    cfg, _, model_uri = trained
    titles = tmp_path / "new.csv"
    titles.write_text("title\nOrganic Green Tea 100 g\nCold Coffee Can 200 ml\n")
    out = tmp_path / "new.parquet"
    result = subprocess.run([sys.executable, "-m", "mrnet", "embed", "--pg", "beverages", "--model", model_uri,
                             "--titles", str(titles), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(out)
    assert df.product_id.tolist() == ["row-1", "row-2"] and len(df.embedding[0]) == 128


def test_cold_start_errors_name_file_column_and_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nTea\n")
    with pytest.raises(ValueError, match=r"bad.csv: required column 'title'"):
        read_titles_csv(str(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("title\nTea\n   \n")
    with pytest.raises(ValueError, match=r"empty.csv: column 'title' is empty on row\(s\) \[2\]"):
        read_titles_csv(str(empty))
