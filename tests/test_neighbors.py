"""`mrnet neighbors` on a tiny hand-made release: exact Euclidean order, the agnostic space,
the release's index (flat, IVF-PQ, on S3) against exact search, and clear errors for bad queries."""

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
    pd.DataFrame({"product_id": ["p0", "p1", "p2", "p3", "p4", "m0", "m1"], "product_group": ["lamps"] * 5 + ["mugs"] * 2,
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


def test_a_built_index_answers_as_exact_search_does(release):
    from mrnet.config.schema import IndexConfig
    from mrnet.release.index import build_release_index

    manifest = neighbors.load_release(None, str(release))
    exact = {(space, pid): neighbors.neighbors(manifest, k=3, space=space, product_id=pid)[1]
             for space, pid in (("pg", "p4"), ("pg", "m1"), ("agnostic", "p0"))}
    record = build_release_index(manifest, str(release / "index"), IndexConfig())
    assert set(record["spaces"]) == {"pg/lamps", "pg/mugs", "agnostic"}
    assert {s["kind"] for s in record["spaces"].values()} == {"flat"}   # small spaces: an exact scan
    indexed = manifest | {"index": {"uri": str(release / "index")}}
    for (space, pid), rows in exact.items():
        query, got = neighbors.neighbors(indexed, k=3, space=space, product_id=pid)
        assert query["method"] == "flat" and got["product_id"].tolist() == rows["product_id"].tolist()
        np.testing.assert_allclose(got["distance"], rows["distance"], atol=1e-6)
        assert got["title"].tolist() == rows["title"].tolist()               # from the index's rows, not the catalog
    assert neighbors.find_pg(indexed, "m0") == "mugs"
    assert neighbors.neighbors(indexed, k=2, product_id="p1", exact=True)[0]["method"] == "exact"


def _clustered_release(root, n=4000, d=16):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(40, d)) * 4
    x = (centers[rng.integers(0, 40, n)] + rng.normal(size=(n, d))).astype(np.float32)
    ids = [f"q{i:05d}" for i in range(n)]
    pd.DataFrame({"product_id": ids, "product_group": ["bulk"] * n, "title": [f"Item {i}" for i in range(n)]}).to_parquet(
        root / "catalog.parquet")
    manifest = {"release": "big", "catalog": str(root / "catalog.parquet"), "models": {"bulk": {"uri": "unused"}},
                "embeddings": {"bulk": _emb(root / "bulk.parquet", ids, ["bulk"] * n, x)}}
    return manifest, ids


def test_ivfpq_recall_at_10_against_exact_search(tmp_path):
    from mrnet.config.schema import IndexConfig
    from mrnet.release.index import build_release_index

    manifest, ids = _clustered_release(tmp_path)
    cfg = IndexConfig(min_products=1000, nlist=16, pq_bytes=4, nprobe=4, recall_queries=60)
    record = build_release_index(manifest, str(tmp_path / "index"), cfg)
    space = record["spaces"]["pg/bulk"]
    assert space["kind"] == "ivfpq" and space["rows"] == 4000 and space["recall_at_10"] >= 0.95
    indexed = manifest | {"index": {"uri": str(tmp_path / "index")}}
    hits = []
    for pid in ids[::97]:
        _, approx = neighbors.neighbors(indexed, k=10, product_id=pid)
        _, exact = neighbors.neighbors(manifest, k=10, product_id=pid)
        assert approx["product_id"].iloc[0] == pid and approx["title"].iloc[0] == f"Item {int(pid[1:])}"
        hits.append(len(set(approx["product_id"][1:]) & set(exact["product_id"][1:])) / 10)
    assert np.mean(hits) >= 0.95


def test_an_index_on_s3_round_trips(tmp_path):
    from mrnet.config.schema import IndexConfig
    from mrnet.release.index import build_release_index
    from tests.helpers import moto_s3

    manifest, ids = _clustered_release(tmp_path, n=1500, d=8)
    local = manifest | {"index": {"uri": str(tmp_path / "index")}}
    cfg = IndexConfig(min_products=1000, nlist=8, pq_bytes=4, nprobe=8, recall_queries=0)
    build_release_index(manifest, str(tmp_path / "index"), cfg)
    with moto_s3(tmp_path / "cache", "idx"):
        build_release_index(manifest, "s3://idx/release/index", cfg)
        remote = manifest | {"index": {"uri": "s3://idx/release/index"}}
        for pid in ids[:5]:
            a, b = neighbors.neighbors(local, k=5, product_id=pid)[1], neighbors.neighbors(remote, k=5, product_id=pid)[1]
            assert a["product_id"].tolist() == b["product_id"].tolist()


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
