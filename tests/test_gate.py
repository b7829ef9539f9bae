"""The promotion gate's decisions on hand-made summaries, and k-NN overlap."""

import numpy as np
import pytest

from mrnet.config.schema import GateConfig
from mrnet.release.gate import decide, knn_overlap, table


def summary(losses: dict[str, dict[str, float]], failed=None) -> dict:
    return {"pgs": {pg: {"history": [{"epoch": 1, "val": {t: {"loss": v} for t, v in tasks.items()}}]}
                    for pg, tasks in losses.items()}, "failed": failed or {}}


CHAMPION = summary({"watches": {"color": 0.50, "gender": 0.40}, "footwear": {"color": 0.60}})
GATE = GateConfig(tolerance=0.03, aggregate_tolerance=0.0)


def test_first_model_becomes_champion():
    d = decide(CHAMPION, None, GATE)
    assert d["promote"] and "first complete release" in d["reasons"][0]


def test_better_is_promoted():
    d = decide(summary({"watches": {"color": 0.45, "gender": 0.41}, "footwear": {"color": 0.55}}), CHAMPION, GATE)
    assert d["promote"], d["reasons"]
    assert {r["verdict"] for r in d["rows"]} == {"improved", "held"}


def test_one_task_regressing_beyond_tolerance_is_refused_even_if_the_aggregate_improves():
    d = decide(summary({"watches": {"color": 0.30, "gender": 0.45}, "footwear": {"color": 0.40}}), CHAMPION, GATE)
    assert not d["promote"]
    assert d["reasons"] == ["watches.gender: loss 0.4000 → 0.4500 (+0.0500 > tolerance 0.03)"]


def test_small_rises_within_tolerance_but_a_worse_aggregate_is_refused():
    d = decide(summary({"watches": {"color": 0.52, "gender": 0.42}, "footwear": {"color": 0.62}}), CHAMPION, GATE)
    assert not d["promote"] and d["reasons"][0].startswith("aggregate loss 0.5000 → 0.5200")
    lenient = GateConfig(tolerance=0.03, aggregate_tolerance=0.05)
    assert decide(summary({"watches": {"color": 0.52, "gender": 0.42}, "footwear": {"color": 0.62}}),
                  CHAMPION, lenient)["promote"]


def test_partial_release_is_refused():
    d = decide(summary({"watches": {"color": 0.1, "gender": 0.1}}), CHAMPION, GATE)
    assert not d["promote"] and "partial: PGs ['footwear']" in d["reasons"][0]


def test_missing_task_is_refused():
    d = decide(summary({"watches": {"color": 0.1}, "footwear": {"color": 0.1}}), CHAMPION, GATE)
    assert not d["promote"] and d["reasons"][0].startswith("watches.gender: task missing")


def test_failed_release_is_refused_even_without_a_champion():
    d = decide(summary({"watches": {"color": 0.1}}, failed={"footwear": "train: boom"}), None, GATE)
    assert not d["promote"] and "failed PGs ['footwear']" in d["reasons"][0]


def test_table_shows_both_sides_and_the_reasons():
    d = decide(summary({"watches": {"color": 0.45, "gender": 0.41}, "footwear": {"color": 0.55}}), CHAMPION, GATE)
    text = table(d, {"watches": 0.8, "footwear": 0.6, "mean": 0.7})
    assert "watches                  gender          0.4000     0.4100  +0.0100  held" in text
    assert "mean k-NN overlap@10: 0.700 (min 0.600)" in text and "decision: PROMOTE" in text


def test_knn_overlap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    assert knn_overlap(x, x, 10) == 1.0
    assert knn_overlap(x, x * 3.0, 10) == 1.0  # cosine: scale does not matter
    assert knn_overlap(x, rng.normal(size=(200, 16)), 10) < 0.2
    a = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    b = np.array([[1.0, 0], [0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # rows 1 and 2 swapped meaning
    assert knn_overlap(a, b, 1) == pytest.approx(0.0)


# ---------------------------------------------------------------- downstream evaluation (issue 6)
SAME = summary({"watches": {"color": 0.50, "gender": 0.40}, "footwear": {"color": 0.60}})
EVAL_OLD = {"eval.plugs.agnostic.lr": 0.95, "eval.plugs.agnostic.rf": 0.93, "eval.browse.pg.lr": 0.80}
EVAL_GATE = GateConfig(tolerance=0.03, aggregate_tolerance=0.0, eval_tolerance=0.02)


def test_gated_metrics_are_the_mrnet_features_only():
    from mrnet.release.gate import gated_metrics

    metrics = EVAL_OLD | {"eval.plugs.tfidf.lr": 0.99, "eval.plugs.word2vec_mean.rf": 0.9, "eval.plugs.products": 100,
                          "eval.nn.pg.color": 0.8, "eval.seconds": 12.0}
    assert gated_metrics(metrics) == EVAL_OLD


def test_a_worse_evaluation_is_refused_even_when_every_loss_holds():
    worse = EVAL_OLD | {"eval.plugs.agnostic.rf": 0.90}
    d = decide(SAME, CHAMPION, EVAL_GATE, (worse, EVAL_OLD))
    assert not d["promote"]
    assert d["reasons"] == ["eval.plugs.agnostic.rf: 0.9300 → 0.9000 (fell by 0.0300 > eval_tolerance 0.02)"]
    assert {r["metric"]: r["verdict"] for r in d["evaluation"]}["eval.plugs.agnostic.rf"] == "regressed"
    assert "eval.plugs.agnostic.rf" in table(d) and "KEEP CHAMPION" in table(d)


def test_an_evaluation_within_tolerance_or_better_is_promoted():
    held = EVAL_OLD | {"eval.plugs.agnostic.rf": 0.915, "eval.browse.pg.lr": 0.85}
    d = decide(SAME, CHAMPION, EVAL_GATE, (held, EVAL_OLD))
    assert d["promote"], d["reasons"]
    assert {r["verdict"] for r in d["evaluation"]} == {"held", "improved"}
    assert d["reasons"][-1] == "no downstream metric fell by more than 0.02"


def test_a_task_the_champion_had_but_the_challenger_lacks_is_refused():
    d = decide(SAME, CHAMPION, EVAL_GATE, ({k: v for k, v in EVAL_OLD.items() if "browse" not in k}, EVAL_OLD))
    assert not d["promote"] and d["reasons"][0].startswith("eval.browse.pg.lr: no result (champion 0.8000)")
    d = decide(SAME, CHAMPION, EVAL_GATE, (None, EVAL_OLD))
    assert not d["promote"] and d["reasons"][0].startswith("not evaluated")


def test_evaluation_is_not_compared_when_the_champion_has_none_or_there_is_no_champion():
    assert decide(SAME, CHAMPION, EVAL_GATE, ({"eval.plugs.agnostic.lr": 0.1}, None))["promote"]
    assert decide(SAME, None, EVAL_GATE, ({"eval.plugs.agnostic.lr": 0.1}, EVAL_OLD))["promote"]
