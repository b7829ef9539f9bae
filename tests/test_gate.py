"""The promotion gate's decisions on hand-made summaries, and k-NN overlap."""

import numpy as np
import pytest

from mrnet.config.schema import GateConfig
from mrnet.release.gate import decide, knn_overlap, table


def summary(losses: dict[str, dict[str, float]], failed=None, retired=None, se: float | None = None) -> dict:
    """``retired``: {pg: {task: epoch}}, as a PG's training report records the tasks it stopped drawing;
    ``se``: every loss's standard error (validation noise), as train.validate records it."""
    noise = {} if se is None else {"se": se}
    return {"pgs": {pg: {"history": [{"epoch": 1, "val": {t: {"loss": v} | noise for t, v in tasks.items()}}],
                         "retired": (retired or {}).get(pg, {})}
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


def test_a_retired_task_is_shown_but_not_gated():
    """A task the challenger's training retired (it overfit) ends at a stale head's loss; that says nothing about
    the embedding, so it refuses nothing and stays out of the aggregate, while the other tasks still gate."""
    jumped = {"watches": {"color": 0.49, "gender": 2.40}, "footwear": {"color": 0.59}}
    assert not decide(summary(jumped), CHAMPION, GATE)["promote"]  # not retired: refused as before
    d = decide(summary(jumped, retired={"watches": {"gender": 2}}), CHAMPION, GATE)
    assert d["promote"], d["reasons"]
    assert {(r["task"], r["verdict"]) for r in d["rows"] if r["pg"] == "watches"} == {("color", "improved"),
                                                                                       ("gender", "retired")}
    assert (d["aggregate"]["champion"], d["aggregate"]["challenger"]) == pytest.approx((0.55, 0.54))
    assert d["reasons"][-1] == "1 (PG, task) pairs retired in either release (the task overfit): shown, not gated"
    assert "watches                  gender          0.4000     2.4000  +2.0000  0.0300  retired" in table(d)
    # retired in the champion only: its loss there is no yardstick either
    champion = summary({"watches": {"color": 0.50, "gender": 2.40}, "footwear": {"color": 0.60}},
                       retired={"watches": {"gender": 3}})
    assert decide(summary({"watches": {"color": 0.50, "gender": 2.60}, "footwear": {"color": 0.60}}),
                  champion, GATE)["promote"]
    # a retired task does not shield the others
    d = decide(summary({"watches": {"color": 0.60, "gender": 0.40}, "footwear": {"color": 0.60}},
                       retired={"watches": {"gender": 2}}), CHAMPION, GATE)
    assert not d["promote"] and d["reasons"][0].startswith("watches.color: loss 0.5000 → 0.6000")


def test_a_rise_within_the_validation_noise_is_held_and_one_beyond_it_is_refused():
    """With the champion's standard errors a pair may rise by noise_z x sqrt(2) x se when that is more than the
    tolerance: here 3 x 0.0566 = 0.17, so +0.10 holds where the bare tolerance (0.03) refused it."""
    noisy = dict(se=0.04)
    champion = summary({"watches": {"color": 0.50, "gender": 0.40}, "footwear": {"color": 0.60}}, **noisy)
    d = decide(summary({"watches": {"color": 0.50, "gender": 0.50}, "footwear": {"color": 0.55}}, **noisy),
               champion, GATE)
    assert d["promote"], d["reasons"]
    row = next(r for r in d["rows"] if r["task"] == "gender")
    assert row["verdict"] == "held" and row["limit"] == pytest.approx(3 * 0.04 * 2 ** 0.5)
    # the aggregate's limit is the noise of a mean of 3 pairs: 3 x sqrt(3 x 2 x 0.04^2) / 3
    assert d["aggregate"]["limit"] == pytest.approx(3 * (6 * 0.04 ** 2) ** 0.5 / 3)
    d = decide(summary({"watches": {"color": 0.50, "gender": 0.65}, "footwear": {"color": 0.45}}, **noisy),
               champion, GATE)
    assert not d["promote"]
    assert d["reasons"] == ["watches.gender: loss 0.4000 → 0.6500 (+0.2500 > 0.1697 = 3 × its validation noise)"]
    # without the champion's standard errors (from before they were recorded), or with noise_z 0: the tolerance
    held = summary({"watches": {"color": 0.50, "gender": 0.50}, "footwear": {"color": 0.55}}, **noisy)
    assert not decide(held, CHAMPION, GATE)["promote"]
    assert not decide(held, champion, GateConfig(tolerance=0.03, aggregate_tolerance=0.0, noise_z=0))["promote"]
    # a diverged challenger's scattered losses do not widen its limit: only the champion's noise counts
    diverged = summary({"watches": {"color": 0.50, "gender": 0.70}, "footwear": {"color": 0.60}}, se=5.0)
    d = decide(diverged, champion, GATE)
    assert not d["promote"] and d["reasons"][0].startswith("watches.gender: loss 0.4000 → 0.7000 (+0.3000 > 0.1697")


def test_a_loss_above_the_prior_counts_as_the_prior():
    """A head worse than the label prior knows nothing either way: 1.27 -> 1.37 holds, 0.90 -> 1.40 counts +0.10."""
    champion = summary({"watches": {"color": 0.50, "price": 1.27}, "footwear": {"color": 0.60}})
    d = decide(summary({"watches": {"color": 0.50, "price": 1.37}, "footwear": {"color": 0.60}}), champion, GATE)
    assert d["promote"], d["reasons"]
    assert d["aggregate"]["champion"] == d["aggregate"]["challenger"] == pytest.approx(0.7)
    champion = summary({"watches": {"color": 0.50, "price": 0.90}, "footwear": {"color": 0.60}})
    d = decide(summary({"watches": {"color": 0.50, "price": 1.40}, "footwear": {"color": 0.60}}), champion,
               GateConfig(tolerance=0.03, aggregate_tolerance=0.5))
    assert d["reasons"] == ["watches.price: loss 0.9000 → 1.4000 (+0.1000, above the prior counted as 1.0 > "
                            "tolerance 0.03)"]


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
    assert "watches                  gender          0.4000     0.4100  +0.0100  0.0300  held" in text
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


# ---------------------------------------------------------------- downstream evaluation
SAME = summary({"watches": {"color": 0.50, "gender": 0.40}, "footwear": {"color": 0.60}})
EVAL_OLD = {"eval.plugs.agnostic.lr": 0.95, "eval.plugs.agnostic.rf": 0.93, "eval.browse.pg.lr": 0.80}
EVAL_GATE = GateConfig(tolerance=0.03, aggregate_tolerance=0.0, eval_tolerance=0.02)


def test_gated_metrics_are_the_mrnet_features_only():
    from mrnet.release.gate import gated_metrics

    metrics = EVAL_OLD | {"eval.plugs.tfidf.lr": 0.99, "eval.plugs.word2vec_mean.rf": 0.9, "eval.plugs.products": 100,
                          "eval.nn.pg.color": 0.8, "eval.seconds": 12.0}
    assert gated_metrics(metrics) == EVAL_OLD


def test_each_task_is_gated_on_its_table2_column_and_an_older_champion_is_held_to_those():
    """Across PGs MRNet's column is the PG-agnostic embedding, inside one PG the PG-specific one (paper §4.1):
    the stacked PG-specific vectors of a cross-PG task are reported but do not gate."""
    from mrnet.release.gate import comparable, gated_metrics

    both = EVAL_OLD | {"eval.plugs.pg.lr": 0.85, "eval.browse.agnostic.lr": 0.79}
    features = {"plugs": "agnostic", "browse": "pg"}
    assert gated_metrics(both, features) == EVAL_OLD
    new = {"gated": gated_metrics(both | {"eval.plugs.pg.lr": 0.70}, features), "features": features, "settings": "s"}
    (challenger, champion), note = comparable(new, {"gated": gated_metrics(both), "settings": "s"})
    assert note is None and challenger == champion == EVAL_OLD  # the champion's stacked pg.lr is not a yardstick
    d = decide(SAME, CHAMPION, EVAL_GATE, (challenger, champion))
    assert d["promote"], d["reasons"]
    # a task the challenger did not evaluate at all is still missing
    (challenger, champion), _ = comparable({"gated": {}, "features": {"plugs": "agnostic"}, "settings": "s"},
                                           {"gated": EVAL_OLD, "settings": "s"})
    assert "eval.browse.pg.lr" in champion


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


def test_the_mean_validation_loss_leaves_retired_tasks_out_everywhere_it_is_shown():
    """The summary's val_loss and MLflow's val_loss_mean score an epoch as early stopping does: over the tasks still
    trained, so a retired task's stale head does not inflate them."""
    from mrnet.io.tracking import epoch_metrics
    from mrnet.release.summary import mean_loss, pg_rows

    val = {"color": {"loss": 0.4}, "review": {"loss": 2.4}, "tfidf": {"loss": 0.6}}
    assert mean_loss(val) == pytest.approx(3.4 / 3)
    assert mean_loss(val, {"review": 2}) == pytest.approx(0.5)
    assert np.isnan(mean_loss({"review": {"loss": 2.4}}, {"review": 2}))
    report = {"n_train": 90, "n_val": 10, "best_epoch": 1, "retired": {"review": 1}, "train_s": 1.0,
              "history": [{"epoch": 1, "titles_per_s": 10.0, "val": val}]}
    row = pg_rows({"pgs": {"watches": report}})[0]
    assert row["val_loss"] == pytest.approx(0.5) and row["retired"] == "review@1"
    entry = {"titles_per_s": 10.0, "seconds": 1.0, "train_loss": {}, "val": val, "retired": ["review"]}
    assert epoch_metrics(entry)["val_loss_mean"] == pytest.approx(0.5)
    assert epoch_metrics(entry | {"retired": []})["val_loss_mean"] == pytest.approx(3.4 / 3)
