import numpy as np
import pandas as pd
import torch

from mrnet.config.training import TaskSpec
from mrnet.encoder import targets as T
from mrnet.encoder.train import task_loss


def _df():
    rng = np.random.default_rng(0)
    colors = rng.choice(["black", "blue", "red", "pink", "teal"], p=[.4, .3, .15, .1, .05], size=400)
    price = pd.array(np.where(rng.random(400) < 0.3, np.nan, rng.lognormal(6, 1, 400)), dtype="Float64")
    titles = [f"{c} cotton shirt size {i % 7}" for i, c in enumerate(colors)]
    return pd.DataFrame({"color": pd.array(np.where(rng.random(400) < 0.2, None, colors), dtype="str"),
                         "price": price, "title": titles})


def test_top_k_classes_with_other_and_missing_labels():
    df = _df()
    spec = TaskSpec(name="color", kind="multiclass", column="color", top_k=3)
    state = T.fit_task(spec, df)
    assert state["classes"][:3] == ["black", "blue", "red"] and state["classes"][-1] == T.OTHER
    tgt = T.encode(spec, state, df)
    assert tgt.has.sum() == df["color"].notna().sum()
    assert set(tgt.y[tgt.has]) == {0, 1, 2, 3} and (tgt.y[~tgt.has] == -1).all()


def test_high_value_uses_the_pg_quantile_and_regression_is_standardized():
    df = _df()
    hv = TaskSpec(name="hv", kind="binary", column="price", quantile=0.9)
    state = T.fit_task(hv, df)
    y = T.encode(hv, state, df)
    assert abs(y.y[y.has].mean() - 0.1) < 0.02
    price = TaskSpec(name="p", kind="regression", column="price", transform="log1p_standardize")
    st = T.fit_task(price, df)
    yp = T.encode(price, st, df).y
    assert abs(np.nanmean(yp)) < 1e-6 and abs(np.nanstd(yp) - 1) < 1e-3


def test_tfidf_decoding_target_has_configured_dimension_cap():
    df = _df()
    spec = TaskSpec(name="tfidf", kind="decoding", column="title", dim=6)
    state = T.fit_task(spec, df)
    tgt = T.encode(spec, state, df)
    assert state["out_dim"] == 6 and tgt.y.shape == (400, 6) and tgt.has.all()
    norms = np.sqrt(np.asarray(tgt.y.multiply(tgt.y).sum(axis=1))).ravel()
    assert np.allclose(norms[norms > 0], state["scale"], atol=1e-4)  # l2-normalized rows × the unit-variance scale


def test_normalized_loss_of_the_prior_predictor_is_one():
    """The loss normalizer makes the label-prior predictor score 1.0 for every task kind."""
    df = _df()
    specs = [TaskSpec(name="color", kind="multiclass", column="color", top_k=3),
             TaskSpec(name="p", kind="regression", column="price", transform="log1p_standardize"),
             TaskSpec(name="tfidf", kind="decoding", column="title", dim=20)]
    for spec in specs:
        state = T.fit_task(spec, df)
        tgt = T.encode(spec, state, df)
        rows = tgt.y[tgt.has]
        rows = rows.toarray() if hasattr(rows, "toarray") else rows
        prior = torch.tensor(state["prior"], dtype=torch.float32).expand(len(rows), -1)
        loss = task_loss(state, prior, torch.from_numpy(np.asarray(rows)))
        assert abs(float(loss) - 1.0) < 0.02, spec.name


def test_too_few_labels_or_one_class_makes_a_task_inactive():
    df = pd.DataFrame({"color": ["red"] * 50 + [None] * 10, "price": pd.array([1.0] * 5 + [None] * 55,
                                                                               dtype="Float64")})
    assert T.fit_task(TaskSpec(name="c", kind="multiclass", column="color", top_k=3), df)["why"] == "a single class"
    assert "min_labels" in T.fit_task(TaskSpec(name="p", kind="regression", column="price"), df)["why"]
    assert "absent" in T.fit_task(TaskSpec(name="x", kind="multiclass", column="nope", top_k=2), df)["why"]
