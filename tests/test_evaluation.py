"""Downstream evaluation (paper §4): label rules, the unseen-population filter,
fixed folds, skipped tasks, and the report files, on hand-made data with known answers."""

import json

import numpy as np
import pandas as pd
import pytest

from mrnet.config.evaluation import EvalTask, EvaluationConfig, LabelRule
from mrnet.config.schema import load_config
from mrnet.data.sample import hash_rank
from mrnet.encoder.embed import write_embeddings
from mrnet.evaluation import labels as D
from mrnet.evaluation import report as eval_report
from mrnet.evaluation import score as E


def rows(spec: list[tuple]) -> pd.DataFrame:
    """(product_id, source, category_path, product_group, title) rows."""
    return pd.DataFrame(spec, columns=["product_id", "source", "category_path", "product_group", "title"])


CATALOG = rows([
    ("f1", "flipkart", "Mobiles & Accessories > Mobile Accessories > Chargers", "elec", "fast wall charger"),
    ("f2", "flipkart", "Mobiles & Accessories > Mobile Accessories > Cables", "elec", "usb cable"),
    ("f3", "flipkart", "Mobiles & Accessories > Tablet Accessories > Cases & Covers", "elec", "flip cover"),
    ("f4", "flipkart", "Kitchen & Dining > Lighting > Bulbs", "kitchen", "led bulb"),
    ("f5", "flipkart", "Kitchen & Dining > Cookware > Pots & Pans", "kitchen", "steel pan"),
    ("b1", "bigbasket", "Baby Care > Baby Food & Formula > Baby Food", "baby", "cereal for babies"),
    ("b2", "bigbasket", "Baby Care > Diapers & Wipes > Diapers", "baby", "pant diapers"),
    ("b3", "bigbasket", "Beverages > Tea > Green Tea", "drinks", "green tea bags"),
    ("m1", "myntra", "Apparel > Topwear", "top", "blue shirt"),
    ("x1", "flipkart", "", "elec", "no category"),
])

PLUGS = EvalTask(name="plugs", kind="rules", min_positives=1, rules=[
    LabelRule(path="flipkart: Mobiles & Accessories > Mobile Accessories > Chargers", label=1),
    LabelRule(path="flipkart: Mobiles & Accessories > Mobile Accessories", label=None),
    LabelRule(path="flipkart: Mobiles & Accessories", label=0),
    LabelRule(path="flipkart: Kitchen & Dining > Lighting", label=None),
    LabelRule(path="flipkart: Kitchen & Dining", label=0),
])
INGESTIBLE = EvalTask(name="ingestible", kind="rules", min_positives=1, rules=[
    LabelRule(path="bigbasket: Baby Care > Baby Food & Formula", label=1),
    LabelRule(path="bigbasket: Baby Care", label=0),
    LabelRule(path="bigbasket: Beverages", label=1),
    LabelRule(path="myntra:", label=0),
])


def labels_of(data) -> dict:
    return dict(zip(data.ids, data.y))


def test_rules_first_match_wins_null_leaves_out_and_unmatched_products_are_not_in_the_task():
    data = D.from_rules(PLUGS, CATALOG)
    assert labels_of(data) == {"f1": 1, "f3": 0, "f5": 0}  # f2 cables + f4 bulbs: uncertain; b*, m1, x1: no rule
    assert data.info["left_out_uncertain"] == 2
    assert data.info["rule_hits"]["flipkart: Mobiles & Accessories > Mobile Accessories"] == 1  # f1 matched earlier
    assert data.info["pgs"] == ["elec", "kitchen"] and data.kind == "binary" and data.metric == "auc"


def test_mixed_group_rules_and_whole_source_rule():
    assert labels_of(D.from_rules(INGESTIBLE, CATALOG)) == {"b1": 1, "b2": 0, "b3": 1, "m1": 0}


def test_a_pg_filter_restricts_the_population():
    tasks = [INGESTIBLE.model_copy(update={"pgs": ["baby"]})]
    assert labels_of(D.derive(tasks, CATALOG, seed=1)["ingestible"]) == {"b1": 1, "b2": 0}


def test_too_few_positives_or_one_class_is_skipped_with_a_reason():
    one_class = INGESTIBLE.model_copy(update={"rules": [LabelRule(path="myntra:", label=0)]})
    skip = D.from_rules(one_class, CATALOG)
    assert isinstance(skip, D.Skip) and "0 positive / 1 negative" in skip.reason
    few = PLUGS.model_copy(update={"min_positives": 5})
    assert "min_positives=5" in D.from_rules(few, CATALOG).reason


def test_tasks_on_a_category_path_the_catalog_lacks_are_skipped_with_a_reason():
    """The demo config on a user's catalog without ``category_path`` once failed in evaluate (KeyError) and
    published nothing: its rules and browse tasks are skipped, naming the column, and the unseen ones after them."""
    browse = EvalTask(name="browse", kind="browse", pg="elec", level=2)
    unseen = EvalTask(name="plugs_unseen", kind="unseen", base="plugs")
    got = D.derive([PLUGS, browse, unseen], CATALOG.drop(columns=["category_path"]), seed=0)
    assert got["plugs"].reason == "the catalog has no 'category_path' column, which a rules task reads"
    assert "category_path" in got["browse"].reason and "base task 'plugs' was skipped" in got["plugs_unseen"].reason
    assert not isinstance(D.derive([PLUGS], CATALOG, seed=0)["plugs"], D.Skip)


def test_a_bad_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="must look like 'source: Level1 > Level2'"):
        D.parse_rule("Mobiles > Chargers")


def test_browse_classes_are_a_deeper_level_inside_one_pg_and_small_classes_are_dropped():
    cat = rows([(f"p{i}", "flipkart", f"Clothing > Women > Western > {c} > x", "clothing", f"{c} item {i}")
                for i, c in enumerate(["Tops"] * 4 + ["Jeans"] * 3 + ["Socks"])])
    task = EvalTask(name="browse", kind="browse", pg="clothing", level=4, min_class_size=3)
    data = D.from_browse(task, cat)
    assert data.classes == ["Jeans", "Tops"] and data.kind == "multiclass" and len(data.ids) == 7
    assert data.info["dropped_small_classes"] == 1 and data.info["dropped_products"] == 1
    assert "1 class(es)" in D.from_browse(task.model_copy(update={"min_class_size": 4}), cat).reason
    assert "has no products" in D.from_browse(task.model_copy(update={"pg": "toys"}), cat).reason


def test_a_user_label_file_with_bad_rows(tmp_path):
    path = tmp_path / "sioc.csv"
    path.write_text("product_id,label\nf1,1\nf3,0\nnope,1\nf5,yes\nf1,0\nb1,0\n")
    task = EvalTask(name="sioc", kind="file", labels=str(path), min_positives=1)
    data = D.from_file(task, CATALOG)
    assert labels_of(data) == {"f1": 1, "f3": 0, "b1": 0}
    assert data.info["rejected"] == {"unknown_product_id": {"rows": 1, "first_file_rows": [4]},
                                     "label_not_0_or_1": {"rows": 1, "first_file_rows": [5]},
                                     "duplicate_product_id": {"rows": 1, "first_file_rows": [6]}}


def test_a_user_label_file_is_skipped_with_a_clear_reason_when_unusable(tmp_path):
    sioc = EvalTask(name="sioc", kind="file")
    assert "no public labels exist for 'sioc'" in D.from_file(sioc, CATALOG).reason
    assert "label file not found" in D.from_file(sioc.model_copy(update={"labels": str(tmp_path / "x.csv")}),
                                                 CATALOG).reason
    (tmp_path / "cols.csv").write_text("id,label\nf1,1\n")
    reason = D.from_file(sioc.model_copy(update={"labels": str(tmp_path / "cols.csv")}), CATALOG).reason
    assert "['product_id'] missing" in reason and "cols.csv" in reason
    (tmp_path / "unknown.csv").write_text("product_id,label\nzz,1\nyy,0\n")
    reason = D.from_file(sioc.model_copy(update={"labels": str(tmp_path / "unknown.csv")}), CATALOG).reason
    assert "none of its 2 rows is usable" in reason and "unknown_product_id" in reason


def test_max_overlap_is_the_largest_jaccard_with_any_training_title():
    train = ["red cotton shirt", "blue denim jeans", "steel pan"]
    test = ["red cotton shirt", "red silk saree", "wall charger", "blue jeans slim fit"]
    # identical: 1; {red} of {red,silk,saree,cotton,shirt}: 1/5; nothing shared: 0;
    # {blue,jeans} of {blue,jeans,slim,fit,denim}: 2/5
    assert D.max_overlap(test, train, chunk=2) == pytest.approx([1.0, 0.2, 0.0, 0.4])


def test_unseen_split_matches_a_brute_force_filter():
    rng = np.random.default_rng(7)
    vocab = [f"w{i}" for i in range(30)]
    titles = np.array([" ".join(rng.choice(vocab, 3, replace=False)) for _ in range(80)])
    ids = np.array([f"p{i}" for i in range(80)])
    base = D.TaskData("base", "binary", ids, titles, np.array(["pg"] * 80), np.arange(80) % 2, ["no", "yes"])
    task = EvalTask(name="unseen", kind="unseen", base="base", threshold=0.2, test_fraction=0.5)
    data = D.unseen_split(task, base, seed=3)

    test = hash_rank(ids, 3, "unseen") < 0.5
    train_sets = [set(t.split()) for t in titles[~test]]
    jaccard = lambda a, b: len(a & b) / len(a | b)  # noqa: E731
    expected = {i for i in ids[test] if max(jaccard(set(titles[ids == i][0].split()), s) for s in train_sets) <= 0.2}
    assert set(data.ids[data.test]) == expected and 0 < len(expected) < test.sum()
    assert set(data.ids[~data.test]) == set(ids[~test])  # every training product stays
    assert data.info["test"] == len(expected) and data.info["test_before_filter"] == test.sum()


def test_unseen_split_with_no_test_product_left_is_skipped():
    titles = np.array(["same words here"] * 40)
    base = D.TaskData("base", "binary", np.array([f"p{i}" for i in range(40)]), titles, np.array(["pg"] * 40),
                      np.arange(40) % 2, ["no", "yes"])
    skip = D.unseen_split(EvalTask(name="u", kind="unseen", base="base"), base, seed=1)
    assert isinstance(skip, D.Skip) and "0 test products remain" in skip.reason


def test_folds_are_a_fixed_function_of_the_product_id():
    ids = np.array([f"p{i}" for i in range(500)])
    folds = E.fold_of(ids, 5, seed=13)
    assert set(folds) == set(range(5)) and np.bincount(folds).min() > 60
    more = np.concatenate([ids[::-1], [f"new{i}" for i in range(200)]])
    assert (E.fold_of(more, 5, seed=13)[:500] == folds[::-1]).all()  # other products come and go
    assert not (E.fold_of(ids, 5, seed=14) == folds).all()


def synthetic_task(n: int = 240, seed: int = 0) -> tuple[D.TaskData, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    words = np.where(y == 1, "plug adapter", "cover case")
    titles = np.array([f"{w} model {rng.integers(1000)}" for w in words])
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += 1.5 * y
    data = D.TaskData("t", "binary", np.array([f"p{i}" for i in range(n)]), titles, np.array(["pg"] * n), y,
                      ["no", "yes"], train_size=100)
    return data, x


def test_cross_validation_on_fixed_folds_is_reproducible_and_train_size_caps_the_training_folds():
    data, x = synthetic_task()
    cfg = EvaluationConfig(folds=3, rf_trees=10)
    first = E.cross_validate(data, {"agnostic": x}, cfg)
    again = E.cross_validate(data, {"agnostic": x}, cfg)
    assert [r["folds"] for r in first] == [r["folds"] for r in again]
    by = {(r["feature"], r["classifier"]): r for r in first}
    assert set(by) == {(f, c) for f in ("tfidf", "lsa256", "agnostic") for c in ("lr", "rf")}
    assert all(r["n_train"] == 100 and r["n_test"] == 240 and len(r["folds"]) == 3 for r in first)
    assert by[("lsa256", "lr")]["dim"] < by[("tfidf", "lr")]["dim"]  # SVD of the fold's TF-IDF (<= 256)
    assert by[("tfidf", "lr")]["mean"] > 0.95  # the title words decide the label
    assert by[("agnostic", "lr")]["mean"] > 0.75
    assert by[("agnostic", "lr")]["dim"] == 8


def test_lr_c_auto_picks_strong_regularization_for_many_noise_dimensions():
    """400 products, 300 dimensions of which 5 carry the label: a small C wins on the inner split."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 300))
    x[:, :5] += 0.7 * y[:, None]
    cfg = EvaluationConfig(lr_c_grid=(100.0, 1.0, 0.01))
    assert E.choose_c(cfg, "binary", x, y, False) == 0.01
    assert E.lr_c_of(E.fit("lr", cfg, x, y, False, "binary")) == 0.01
    assert E.lr_c_of(E.fit("lr", EvaluationConfig(lr_c=2.5), x, y, False)) == 2.5  # a number fixes C
    assert E.lr_c_of(E.fit("rf", EvaluationConfig(rf_trees=5), x, y, False)) is None


def test_lr_c_auto_takes_the_best_inner_score_ties_to_the_smaller_c_and_never_sees_the_rest(monkeypatch):
    seen = []

    def fake_score(kind, model, x_val, y_val):
        seen.append(len(y_val))
        return {0.01: 0.5, 0.1: 0.9, 1.0: 0.9, 10.0: 0.7}[model.C]

    monkeypatch.setattr(E, "score", fake_score)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 4)), rng.integers(0, 2, 400)
    assert E.choose_c(EvaluationConfig(lr_c_grid=(10.0, 1.0, 0.1, 0.01)), "binary", x, y, False) == 0.1
    assert len(seen) == 4 and 60 < seen[0] < 140  # scored on about 25 % of the rows it was given
    y_one = np.zeros(8, int)
    y_one[0] = 1  # one class on one side of the inner split: the paper's C = 1, no error
    monkeypatch.setattr(E, "score", lambda kind, model, x_val, y_val: float("nan") if len(set(y_val)) < 2 else 1.0)
    assert E.choose_c(EvaluationConfig(), "binary", x[:8], y_one, False) == 1.0


def tiny_release(tmp_path):
    """A catalog of two PGs with embeddings that carry the label, written like a run's."""
    rng = np.random.default_rng(1)
    frames, emb = [], {}
    for pg, path, n in (("elec", "Mobiles & Accessories > Mobile Accessories", 160), ("top", "Apparel > Topwear", 120)):
        y = rng.integers(0, 2, n)
        leaf = np.where(y == 1, "Chargers", "Pouches") if pg == "elec" else np.where(y == 1, "Shirts", "Tshirts")
        df = pd.DataFrame({"product_id": [f"{pg}{i}" for i in range(n)], "product_group": pg,
                           "source": "flipkart" if pg == "elec" else "myntra",
                           "category_path": [f"{path} > {leaf_i}" for leaf_i in leaf],
                           "title": [f"{leaf_i.lower()} {rng.integers(50)}" for leaf_i in leaf],
                           "color": rng.choice(["red", "blue"], n), "gender": "Men", "subcategory": leaf,
                           "price": rng.uniform(10, 100, n)})
        x = rng.normal(size=(n, 8)).astype(np.float32)
        x[:, 0] += 2 * y
        emb[pg] = write_embeddings(str(tmp_path / f"{pg}.parquet"), df["product_id"], pg, "v1", x)
        frames.append(df)
    catalog = pd.concat(frames, ignore_index=True)
    agnostic = write_embeddings(str(tmp_path / "agnostic.parquet"), catalog["product_id"], catalog["product_group"],
                                "v1", rng.normal(size=(len(catalog), 16)).astype(np.float32))
    return catalog, emb, agnostic


def test_the_report_files_exist_and_name_every_configured_task(tmp_path):
    catalog, emb, agnostic = tiny_release(tmp_path)
    elec = catalog[catalog["product_group"] == "elec"]
    labels = tmp_path / "user.csv"
    labels.write_text("product_id,label\n" + "".join(f"{p},{int('Chargers' in c)}\n" for p, c in
                                                     zip(elec["product_id"], elec["category_path"])) + "nope,1\n")
    cfg = load_config("configs/demo.yaml", tiny=True, overrides=[
        "evaluation.neighbors.pg=top", "evaluation.neighbors.shown=2",
        "evaluation.interpret=[{training_task: high_value, evaluation_task: plugs}]",
        "evaluation.tasks=[{name: plugs, kind: rules, rules: [{path: 'flipkart: Mobiles & Accessories > Mobile "
        "Accessories > Chargers', label: 1}, {path: 'flipkart:', label: 0}, {path: 'myntra:', label: 0}]}, "
        "{name: browse_top, kind: browse, pg: top, level: 3}, {name: plugs_unseen, kind: unseen, base: plugs}, {name: sioc, kind: file}, "
        f"{{name: user_file, kind: file, labels: '{labels}'}}]"])
    result = E.evaluate(cfg, catalog, emb, agnostic, None)
    files = eval_report.write(result, str(tmp_path / "evaluation"), "test run", 2)
    assert {f.rsplit("/", 1)[1] for f in files.values()} == {"report.md", "table2.csv", "results.csv",
                                                             "table2.png", "neighbors.html", "metrics.json"}
    report = (tmp_path / "evaluation" / "report.md").read_text()
    for task in ("plugs", "browse_top", "sioc", "user_file"):
        assert f"| {task} |" in report or f"**{task}**" in report
    assert f"- **user_file**: 1 row(s) of {labels} left out as unknown_product_id (file rows 162…)." in report
    assert "**sioc**: no public labels" in report
    table2 = pd.read_csv(tmp_path / "evaluation" / "table2.csv")
    evaluated = set(result["tasks"])
    assert set(table2["task"]) == evaluated and {"plugs", "browse_top"} <= evaluated
    assert table2.set_index("task").loc["browse_top", "mrnet_feature"] == "pg"  # one PG: PG-specific
    assert table2.set_index("task").loc["plugs", "mrnet_feature"] == "agnostic"
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert set(metrics["skipped"]) | evaluated == {"plugs", "browse_top", "plugs_unseen", "sioc", "user_file"}
    flat = E.metrics(result)
    assert "eval.plugs.agnostic.lr" in flat and "eval.browse_top.pg.rf" in flat and "eval.nn.tfidf.color" in flat
    assert "<table>" in (tmp_path / "evaluation" / "neighbors.html").read_text()
    assert (tmp_path / "evaluation" / "table2.png").stat().st_size > 10_000
    assert result["interpret"][0]["training_task"] == "high_value"


def test_products_without_an_embedding_leave_the_task_for_every_feature(tmp_path):
    catalog, emb, agnostic = tiny_release(tmp_path)
    tables = {"pg": E.read_table(emb["elec"]), "agnostic": E.read_table(agnostic)}  # no "top" PG file
    data = D.TaskData("t", "binary", catalog["product_id"].to_numpy(str), catalog["title"].to_numpy(str),
                      catalog["product_group"].to_numpy(str), np.arange(len(catalog)) % 2, ["no", "yes"])
    kept, features, dropped = E.task_features(data, tables, EvaluationConfig(extras=["pg_only"]))
    assert dropped == 120 and len(kept.ids) == 160
    assert {k: v.shape for k, v in features.items()} == {"pg": (160, 8), "agnostic": (160, 16), "pg_only": (160, 1)}


def test_interpretation_skips_a_task_whose_products_have_no_agnostic_embedding(tmp_path):
    """A run over a PG subset: the training task's labelled products are all in other PGs."""
    catalog, emb, agnostic = tiny_release(tmp_path)
    cfg = load_config("configs/demo.yaml", tiny=True, overrides=[
        "evaluation.interpret=[{training_task: high_value, evaluation_task: plugs}]",
        "evaluation.tasks=[{name: plugs, kind: rules, rules: [{path: 'flipkart: Mobiles & Accessories > Mobile "
        "Accessories > Chargers', label: 1}, {path: 'flipkart:', label: 0}]}]"])
    ids = catalog["product_id"].to_numpy(str)
    elsewhere = catalog.assign(product_id=np.char.add("gone_", ids))  # no agnostic embedding for any of them
    rows = E.interpretation(cfg, elsewhere, {"agnostic": E.read_table(agnostic)}, {})
    assert rows == [{"training_task": "high_value", "evaluation_task": "plugs",
                     "skipped": "no two classes of labelled products with an embedding for ['high_value', 'plugs']"}]


def test_config_errors_name_the_task():
    with pytest.raises(ValueError, match="'b' .browse. needs"):
        EvalTask(name="b", kind="browse")
    with pytest.raises(ValueError, match="base 'nope' is not another task"):
        EvaluationConfig(tasks=[EvalTask(name="u", kind="unseen", base="nope")])
    with pytest.raises(ValueError, match="training task 'price' is not a binary or multiclass task"):
        load_config("configs/demo.yaml", overrides=["evaluation.interpret=[{training_task: price, "
                                                    "evaluation_task: plugs}]"])


def test_lr_survives_a_unit_that_is_all_but_constant_in_the_training_fold():
    """A dead unit (values near 1e-38 in every training product) has a scale near 1e-40: standardized in float32,
    a test product off it overflowed to inf, and LR refused the fold (a diverged challenger crashed its run's
    evaluation). The standardized features are clipped instead (``score.clip_z``)."""
    from mrnet.config.evaluation import EvaluationConfig
    from mrnet.evaluation.score import Z_MAX, classifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    x[:, 2] = np.float32(1e-38) * (1 + rng.random(200).astype(np.float32) * 1e-3)
    test = x.copy()
    test[:, 2] = 1.0
    model = classifier("lr", EvaluationConfig(), False).fit(x, y)
    with np.errstate(over="ignore"):
        assert model[0].transform(test)[:, 2].max() == np.inf  # what LR was given before
        assert np.isfinite(model[:-1].transform(test)).all() and model[:-1].transform(test)[:, 2].max() == Z_MAX
        assert np.isfinite(model.predict_proba(test)).all()
