"""`mrnet neighbors` on a tiny hand-made release: exact Euclidean order, the agnostic space,
the HNSW index, and clear errors for bad queries."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrnet import cli
from mrnet.release import neighbors


def _emb(path, ids, pgs, x):
    pq.write_table(pa.table({"product_id": ids, "product_group": pgs, "model_version": ["v"] * len(ids),
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(x, np.float32).ravel()),
                                                                            len(x[0]))}), path)
    return str(path)


@pytest.fixture
def release(tmp_path):
    """PG 'lamps': p0..p4 on a line (distances 0, 1, 3, 6, 10 from p0); PG 'mugs': m0, m1."""
    pd.DataFrame({"product_id": ["p0", "p1", "p2", "p3", "p4", "m0", "m1"],
                  "title": ["Lamp A", "Lamp B", "Lamp C", "Lamp D", "Lamp E", "Mug A", "Mug B"],
                  "color": ["red", "red", "blue", None, "red", "white", "black"],
                  "price": [10.0, 12.0, None, 30.0, 5.0, 3.0, 4.0]}).to_parquet(tmp_path / "catalog.parquet")
    lamps = _emb(tmp_path / "lamps.parquet", [f"p{i}" for i in range(5)], ["lamps"] * 5,
                 [[0, 0], [1, 0], [3, 0], [6, 0], [10, 0]])
    mugs = _emb(tmp_path / "mugs.parquet", ["m0", "m1"], ["mugs"] * 2, [[0, 1], [0, 2]])
    agnostic = _emb(tmp_path / "agnostic.parquet", ["p0", "p1", "m0", "m1"], ["lamps", "lamps", "mugs", "mugs"],
                    [[0, 0, 0], [5, 0, 0], [0, 1, 0], [0, 0, 9]])
    manifest = {"release": "r1", "catalog": str(tmp_path / "catalog.parquet"),
                "models": {"lamps": {"uri": "unused"}, "mugs": {"uri": "unused"}},
                "embeddings": {"lamps": lamps, "mugs": mugs}, "agnostic": {"embeddings": agnostic, "model": "unused"}}
    (tmp_path / "release.json").write_text(json.dumps(manifest))
    return tmp_path


def test_exact_neighbours_by_id_in_euclidean_order(release):
    manifest = neighbors.load_release(None, str(release))
    query, rows = neighbors.neighbors(manifest, k=3, product_id="p2")   # its PG is looked up
    assert query["pg"] == "lamps" and rows["rank"].tolist() == ["query", "1", "2", "3"]
    assert rows["product_id"].tolist() == ["p2", "p1", "p0", "p3"]       # distances 2, 3, 3 → stable order
    np.testing.assert_allclose(rows["distance"].tolist(), [0, 2, 3, 3])
    assert rows["color"].tolist()[:2] == ["blue", "red"] and rows["product_group"].tolist()[0] == "lamps"


def test_agnostic_space_crosses_product_groups(release):
    manifest = neighbors.load_release(None, str(release / "release.json"))
    _, rows = neighbors.neighbors(manifest, k=2, space="agnostic", product_id="p0")
    assert rows["product_id"].tolist() == ["p0", "m0", "p1"]


def test_hnsw_index_agrees_with_exact_search_on_a_tiny_index(release):
    manifest = neighbors.load_release(None, str(release))
    _, exact = neighbors.neighbors(manifest, k=4, product_id="p4")
    _, approx = neighbors.neighbors(manifest, k=4, product_id="p4", ann=True)
    assert approx["product_id"].tolist() == exact["product_id"].tolist()
    assert (release / "lamps.parquet.hnsw.faiss").exists()               # cached beside the file


@pytest.mark.parametrize("argv, message", [
    (["--id", "nope"], "product id 'nope' is not in release r1"),
    (["--id", "p1", "--pg", "sofas"], "unknown PG 'sofas' in release r1; known: ['lamps', 'mugs']"),
    (["--title", "  ", "--pg", "lamps"], "--title is empty"),
    (["--title", "desk lamp"], "a --title query needs --pg"),
    (["--title", "!!!", "--pg", "lamps"], "has no word characters"),
    (["--id", "p1", "-k", "0"], "-k must be at least 1"),
])
def test_bad_queries_get_a_clear_message(release, capsys, argv, message):
    assert cli.main(["neighbors", "--release", str(release), *argv]) == 1
    assert message in capsys.readouterr().err


def test_cli_prints_a_table_and_refuses_a_missing_release(release, capsys, tmp_path):
    assert cli.main(["neighbors", "--release", str(release), "--id", "m0", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 nearest to id m0 (pg space, PG mugs; exact Euclidean over 2 products; release r1)" in out
    assert "Mug B" in out
    assert cli.main(["neighbors", "--release", str(tmp_path / "nothing"), "--id", "m0"]) == 1
    assert "no release manifest" in capsys.readouterr().err
