"""Cross-language autoencoder (paper §5): example construction, retrieval metrics, the
held-out split, the baselines, and a tiny end-to-end run on real pairs and on a user pairs file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrnet.autoencoders import crosslingual, locales
from mrnet.evaluation import retrieval
from tests.helpers import RAW, REPO


def test_three_part_examples_follow_section_5():
    x_a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)           # P = 2, d_A = 2
    x_b = np.array([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]], np.float32)  # d_B = 3
    inputs, targets = crosslingual.three_part_examples(x_a, x_b)
    assert inputs.shape == targets.shape == (6, 5)
    np.testing.assert_array_equal(inputs[0], [1, 2, 0, 0, 0])      # (1) [x_A, 0] → [0, x_B]
    np.testing.assert_array_equal(targets[0], [0, 0, 5, 6, 7])
    np.testing.assert_array_equal(inputs[3], [0, 0, 8, 9, 10])     # (2) [0, x_B] → [x_A, 0]
    np.testing.assert_array_equal(targets[3], [3, 4, 0, 0, 0])
    np.testing.assert_array_equal(inputs[5], [3, 4, 8, 9, 10])     # (3) [x_A, x_B] → itself
    np.testing.assert_array_equal(targets[5], inputs[5])
    with pytest.raises(ValueError, match="differ in length"):
        crosslingual.three_part_examples(x_a, x_b[:1])


def test_retrieval_metrics_on_a_hand_made_case():
    candidates = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    queries = np.array([[1, 0.1], [0.9, 1], [0, -1]], np.float32)   # partners: 0, 1, 2
    rank = retrieval.ranks(queries, candidates, np.array([0, 1, 2]), "cosine")
    # q0 is closest to c0 (rank 1); q1 is closer to c1 than to c0 (rank 1); q2 is c3 exactly, and
    # its partner c2 is orthogonal, tied with c0 → c3 and nothing else beat it: rank 2
    assert rank.tolist() == [1, 1, 2]
    metrics = retrieval.rank_metrics(rank, ks=(1, 10))
    assert metrics["recall_at_1"] == pytest.approx(2 / 3) and metrics["recall_at_10"] == 1.0
    assert metrics["mrr"] == pytest.approx((1 + 1 + 0.5) / 3)
    random = retrieval.random_metrics(4)
    assert random["recall_at_1"] == 0.25 and random["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_chunked_knn_equals_brute_force_and_excludes_self():
    rng = np.random.default_rng(0)
    base, queries = rng.normal(size=(700, 8)).astype(np.float32), rng.normal(size=(90, 8)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        _, idx = retrieval.knn(queries, base, 5, metric, chunk=64, query_block=16)
        brute = np.argsort(-retrieval.scores(queries, base, metric), axis=1)[:, :5]
        np.testing.assert_array_equal(idx, brute)
    dist, idx = retrieval.knn(base[:10], base, 3, exclude=np.arange(10), chunk=50)
    assert not (idx == np.arange(10)[:, None]).any() and (dist > 0).all()


def test_procrustes_recovers_a_rotation_and_least_squares_a_linear_map():
    rng = np.random.default_rng(1)
    x_a = rng.normal(size=(300, 6)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x_b = (x_a @ rotation.T).astype(np.float32)                   # B is A rotated
    np.testing.assert_allclose(crosslingual.procrustes(x_b, x_a)(x_b), x_a, atol=1e-4)
    np.testing.assert_allclose(crosslingual.least_squares(x_b, x_a)(x_b), x_a, atol=1e-2)
    assert crosslingual.procrustes(x_b[:, :4], x_a) is None        # needs equal widths


def test_held_out_split_is_stable_and_never_shares_an_id_with_training():
    pairs = pd.DataFrame({"id_a": ["a1", "a2", "a3", "a4", "a1", "a6"], "title_a": ["Gin", "gin", "Rum", "Wine", "Beer", "Tea"],
                          "id_b": ["b1", "b2", "b3", "b4", "b5", "b6"], "title_b": list("uvwxyz")})
    test = locales.split_pairs(pairs, 0.5, seed=7)
    assert test[0] == test[1]                                     # same normalized A title, same side
    assert (test == locales.split_pairs(pairs, 0.5, seed=7)).all()
    forced = np.array([True, False, False, False, False, False])  # a1 is held out via pair 0
    train, held, dropped = locales.train_pairs(pairs, forced)
    assert "a1" not in set(train["id_a"]) and dropped == 1 and len(held) == 1


def _tiny(tmp_path, *overrides):
    from mrnet.config.schema import load_config

    return load_config(REPO / "configs" / "demo.yaml", [f"data.raw_dir={RAW}", "train.threads=1", *overrides], tiny=True)


@pytest.mark.slow
def test_builtin_pairs_run_end_to_end_without_leakage(tmp_path):
    cfg = _tiny(tmp_path)
    uri, result = crosslingual.run(cfg, str(tmp_path / "xl"), progress=False)
    assert result["leak_check"] == {"held_out_in_training_a": 0, "held_out_in_training_b": 0, "held_out_in_ae_pairs": 0}
    held = set(pd.read_parquet(tmp_path / "xl" / "embeddings_fr.parquet")["product_id"]) - set(
        pd.read_parquet(tmp_path / "xl" / "data" / "train_fr.parquet")["product_id"])
    assert len(held) == result["pairs"]["held_out"] > 0               # held-out items are embedded, never trained on
    corpus = (tmp_path / "xl" / "fr" / "corpus.txt").read_text().splitlines()
    assert len(corpus) == result["locale_models"]["fr"]["n_train"] + result["locale_models"]["fr"]["n_val"]
    assert set(result["retrieval"]) == {"random", "autoencoder", "least_squares", "procrustes", "no_projection"}
    report = (tmp_path / "xl" / "report.md").read_text()
    assert "NOT retail product titles" in report and "strongest linear baseline" in report
    assert len(result["examples"]) == 5 and all(len(e["top"]) == 5 for e in result["examples"])
    model, meta = crosslingual.load(result["model"])
    assert meta["locale_a"] == "en" and model.d_a == model.d_b == 256 and model.hidden == 256
    assert (tmp_path / "xl" / "retrieval.png").stat().st_size > 0


def test_a_user_pairs_file_with_bad_rows_is_quarantined_with_reasons(tmp_path):
    df = pd.read_csv(RAW / "food_names_en_fr" / "pairs_en_fr.tsv.gz", sep="\t", dtype=str).head(300)
    ids = df["source"] + ":" + df["source_id"]
    for side, col in (("a", "name_en"), ("b", "name_fr")):
        pd.DataFrame({"product_id": ids, "product_group": "x", "source": "test", "locale": side,
                      "title": df[col], "food_group": df["group"]}).to_csv(tmp_path / f"cat_{side}.csv", index=False)
    pairs = pd.DataFrame({"id_a": ids, "title_a": df["name_en"], "id_b": ids, "title_b": df["name_fr"]})
    pairs.loc[3, "title_b"] = ""                                   # file row 5
    pairs.loc[7, "id_a"] = "nowhere:1"                             # file row 9
    pairs = pd.concat([pairs, pairs.iloc[[10]]])                   # a duplicate of file row 12
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    cfg = _tiny(tmp_path, f"crosslingual.pairs={tmp_path / 'pairs.csv'}", f"crosslingual.catalog_a={tmp_path / 'cat_a.csv'}",
                f"crosslingual.catalog_b={tmp_path / 'cat_b.csv'}", "crosslingual.locale_a=a", "crosslingual.locale_b=b")
    _, result = crosslingual.run(cfg, str(tmp_path / "xl"), progress=False)
    bad = pd.read_parquet(tmp_path / "xl" / "pairs_quarantine.parquet").set_index("row")["reason"]
    assert bad[5] == "empty:title_b" and bad[9].startswith("unknown_id_a") and bad[302].startswith("duplicate_pair(first at row 12)")
    assert result["pairs"]["quarantined"]["pairs"] == 3 and result["pairs"]["usable"] == 298


def test_a_pairs_file_without_catalogs_or_columns_gets_a_clear_error(tmp_path):
    (tmp_path / "pairs.csv").write_text("id_a,title_a,id_b\n1,x,2\n")
    with pytest.raises(ValueError, match="needs crosslingual.catalog_a"):
        crosslingual.run(_tiny(tmp_path, f"crosslingual.pairs={tmp_path / 'pairs.csv'}"), str(tmp_path / "o"))
    cfg = _tiny(tmp_path, f"crosslingual.pairs={tmp_path / 'pairs.csv'}", "crosslingual.catalog_a=a.csv",
                "crosslingual.catalog_b=b.csv")
    with pytest.raises(ValueError, match=r"pairs.csv: required column\(s\) \['title_b'\] missing"):
        crosslingual.run(cfg, str(tmp_path / "o"))
    with pytest.raises(ValueError, match="unknown built-in 'nope'"):
        crosslingual.run(_tiny(tmp_path, "crosslingual.pairs=builtin:nope"), str(tmp_path / "o"))
