"""Training: alternating updates, determinism, SIGKILL + resume = uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mrnet.data.catalog import read_catalog
from mrnet.data.word2vec import load_vectors
from mrnet.encoder import targets as T
from mrnet.encoder.model import build_model
from mrnet.encoder.train import (alternating_optimization, cpu_has_bf16, epoch_steps, joint_optimization,
                                 make_optimizers, prepare, split_train_val, train_pg)
from tests.helpers import REPO


def _inputs(tiny_artifacts):
    cfg, catalog_uri, vectors_uri = tiny_artifacts
    words, vectors = load_vectors(vectors_uri)
    return cfg, read_catalog(catalog_uri), words, vectors


def _watches_model(cfg, catalog, words):
    """The watches PG's rows, active task states, prepared data, an untrained model and its weights."""
    df = catalog[catalog.product_group == "watches"]
    states = [T.fit_task(s, df) for s in cfg.tasks]
    active = {s["name"]: s for s in states if s["active"]}
    model = build_model({"config": cfg.model_dump(mode="json"), "vocab": words, "tasks": states})
    return df, active, prepare(cfg, df, words, states), model, {k: v.clone() for k, v in model.state_dict().items()}


def _changed_heads(model, before) -> set[str]:
    return {k.split(".")[1] for k, v in model.state_dict().items()
            if k.startswith("heads.") and not torch.equal(v, before[k])}


def test_alternating_step_updates_encoder_and_one_head_only(tiny_artifacts):
    cfg, catalog, words, vectors = _inputs(tiny_artifacts)
    df, active, data, model, before = _watches_model(cfg, catalog, words)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses, titles = alternating_optimization(model, opt, data, active, 1, 8, torch.Generator().manual_seed(0),
                                              torch.device("cpu"), amp=False)
    chosen = [k for k, v in losses.items() if v]
    assert 0 < titles <= 8
    assert len(chosen) == 1
    assert _changed_heads(model, before) == set(chosen)
    assert not torch.equal(model.lstm.weight_hh_l0, before["lstm.weight_hh_l0"])
    assert torch.equal(model.words.weight, before["words.weight"])  # frozen word2vec


def test_validation_split_is_stable_and_disjoint():
    df = pd.DataFrame({"product_id": [f"p{i}" for i in range(1000)]})
    a_train, a_val = split_train_val(df, 0.1, 13)
    b_train, b_val = split_train_val(df.sample(frac=1, random_state=1), 0.1, 13)
    assert set(a_val.product_id) == set(b_val.product_id) and 60 < len(a_val) < 140
    assert not set(a_val.product_id) & set(a_train.product_id)


def test_training_is_deterministic_and_reports_per_task_validation(tiny_artifacts, tmp_path):
    cfg, catalog, words, vectors = _inputs(tiny_artifacts)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    uri_a, report = train_pg(cfg, "watches", catalog, words, vectors, str(tmp_path / "a"))
    uri_b, _ = train_pg(cfg, "watches", catalog, words, vectors, str(tmp_path / "b"))
    a, b = load_file(uri_a), load_file(uri_b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    val = report["history"][-1]["val"]
    expected = {"multiclass": "accuracy", "binary": "accuracy", "regression": "rmse", "decoding": "mse"}
    kinds = {t.name: t.kind for t in cfg.tasks}
    assert {"color", "tfidf"} <= set(val)
    assert all(expected[kinds[name]] in metrics and metrics["n"] > 0 for name, metrics in val.items())


def test_joint_step_updates_every_labelled_head_and_an_epoch_sees_each_product_once(tiny_artifacts):
    cfg, catalog, words, vectors = _inputs(tiny_artifacts)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"optimization": "joint"})})
    df, active, data, model, before = _watches_model(cfg, catalog, words)
    opts = make_optimizers(model, active, cfg.train)  # per_task in the config: joint still gets one optimizer
    assert len({id(o) for o in opts.values()}) == 1
    losses, _ = joint_optimization(model, opts, data, active, 3, len(df), torch.Generator().manual_seed(0),
                                   torch.device("cpu"), amp=False)
    trained = {k for k, v in losses.items() if v}
    assert len(trained) > 1 and _changed_heads(model, before) == trained
    assert epoch_steps(data, 16, joint=True) == -(-len(df) // 16) < epoch_steps(data, 16)


@pytest.mark.parametrize("optimization", ["joint", "alternating"])
@pytest.mark.parametrize("amp", [False, True])
def test_both_loops_run_in_fp32_and_bf16_autocast(tiny_artifacts, tmp_path, optimization, amp):
    if amp and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16: amp=true trains in fp32 there (test_amp_auto_is_bf16_on_a_cpu_...)")
    cfg, catalog, words, vectors = _inputs(tiny_artifacts)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"optimization": optimization, "amp": amp})})
    uri, report = train_pg(cfg, "automotive", catalog, words, vectors, str(tmp_path / "j"))
    assert report["history"][-1]["train_loss"] and report["bf16_autocast"] is amp
    assert all(v.dtype == torch.float32 for k, v in load_file(uri).items() if k != "subwords")  # fp32 weights kept


def test_amp_auto_is_bf16_on_a_cpu_with_native_bf16_only(monkeypatch):
    from mrnet.encoder import train

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(train, "cpu_has_amx", lambda: False)
    for native in (False, True):
        monkeypatch.setattr(train, "cpu_has_bf16", lambda native=native: native)
        assert train.use_amp("auto", cpu) is native
        assert train.use_amp("auto", cuda) is False  # slower there (docs/RESULTS.md, GPU)
        assert train.use_amp(True, cpu) is native and train.use_amp(False, cpu) is False  # no bf16 LSTM without
        assert train.use_amp(True, cuda) is True and train.use_amp(False, cuda) is False
    monkeypatch.setattr(train, "cpu_has_amx", lambda: True)  # AMX: fp32 unless asked (TrainConfig.amp says why)
    assert train.use_amp("auto", cpu) is False and train.use_amp(True, cpu) is True


KILL_SCRIPT = """
import sys
from mrnet.data.catalog import read_catalog
from mrnet.encoder.train import train_pg
from mrnet.data.word2vec import load_vectors
from mrnet.config.schema import load_config
cfg = load_config(sys.argv[1], sys.argv[5:])
words, vectors = load_vectors(sys.argv[3])
train_pg(cfg, "watches", read_catalog(sys.argv[2]), words, vectors, sys.argv[4])
"""


@pytest.mark.slow
def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tiny_artifacts, tmp_path):
    cfg, catalog_uri, vectors_uri = tiny_artifacts
    overrides = [f"artifact_root={tmp_path}", "data.max_rows_per_pg=150", "train.threads=1",
                 "train.epochs=3", "train.steps_per_epoch=150", "train.batch_size=16",
                 "train.progress=false", "word2vec.min_count=1", "pgs=[watches]"]
    config = str(REPO / "configs" / "demo.yaml")
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, config, catalog_uri, vectors_uri,
                             str(killed_dir), *overrides], cwd=REPO)
    ckpt = killed_dir / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] < 3 and state["step"] == state["epoch"] * 150
    assert not (killed_dir / "model.safetensors").exists()

    from mrnet.config.schema import load_config
    cfg = load_config(config, overrides)
    words, vectors = load_vectors(vectors_uri)
    catalog = read_catalog(catalog_uri)
    resumed_uri, report = train_pg(cfg, "watches", catalog, words, vectors, str(killed_dir))
    clean_uri, clean_report = train_pg(cfg, "watches", catalog, words, vectors, str(tmp_path / "clean"))
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    resumed, clean = load_file(resumed_uri), load_file(clean_uri)
    assert all(torch.equal(resumed[k], clean[k]) for k in clean)
    assert report["history"][-1]["val"] == clean_report["history"][-1]["val"]


def test_a_pg_is_read_alone_and_a_large_one_as_a_stable_hash_sample(raw_catalog, tmp_path):
    """Training reads its PG's row groups only; ``train.max_products`` caps it at exactly that many products,
    the same ones on every read, in catalog order; a larger cap keeps every product of a smaller one."""
    from mrnet.data.pgs import pg_counts
    from mrnet.data.reads import read_pg

    df = pd.read_parquet(raw_catalog).dropna(subset=["product_group"]).sort_values("product_group", kind="stable")
    path = tmp_path / "catalog.parquet"
    df.to_parquet(path, index=False, row_group_size=997)
    catalog = read_catalog(str(path))  # None for a missing number, as every catalog reader gives it
    footwear = catalog[catalog.product_group == "footwear"].reset_index(drop=True)
    whole = read_pg(str(path), "footwear")
    pd.testing.assert_frame_equal(whole, footwear, check_dtype=False)
    some = read_pg(str(path), "footwear", ["title", "color"], max_products=2000, seed=13)
    assert list(some.columns) == ["product_id", "title", "color"] and len(some) == 2000
    assert some.equals(read_pg(str(path), "footwear", ["title", "color"], max_products=2000, seed=13))
    order = footwear.reset_index().set_index("product_id").loc[some["product_id"], "index"]
    assert order.is_monotonic_increasing  # catalog order
    more = read_pg(str(path), "footwear", ["title"], max_products=5000, seed=13)
    assert set(some["product_id"]) < set(more["product_id"])
    assert len(read_pg(str(path), "footwear", ["title"], max_products=10**6)) == len(footwear)
    assert read_pg(str(path), "no_such_pg", ["title"]).empty
    assert pg_counts(str(path)) == df["product_group"].value_counts().to_dict()


def test_a_pg_stops_before_an_epoch_that_would_overrun_its_budget(tiny_artifacts, tmp_path):
    """train.budget_minutes: the first epoch always runs; the next one only if it fits in the PG's share."""
    from mrnet.config.schema import load_config
    from mrnet.encoder.train import over_budget
    from mrnet.run.steps import budget_share

    cfg, catalog, words, vectors = _inputs(tiny_artifacts)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3, "patience": None})})
    _, free = train_pg(cfg, "watches", catalog, words, vectors, str(tmp_path / "free"))
    _, tight = train_pg(cfg, "watches", catalog, words, vectors, str(tmp_path / "tight"), budget_seconds=1e-3)
    assert len(free["history"]) == 3 and not free["stopped_by_budget"]
    assert len(tight["history"]) == 1 and tight["stopped_by_budget"] and tight["budget_seconds"] == 1e-3
    assert not over_budget([{"seconds": 1.0, "wall": 2.0}], 4.0) and over_budget([{"seconds": 1.0, "wall": 2.0}], 3.9)
    budgeted = load_config(REPO / "configs" / "demo.yaml", ["train.budget_minutes=10", "train.max_products=1000"])
    counts = {"a": 3000, "b": 500, "c": 500}  # a trains on 1,000 (the cap): shares 1000 : 500 : 500
    assert budget_share(budgeted, "a", counts, ["a", "b", "c"]) == 300 and budget_share(budgeted, "b", counts, ["a", "b", "c"]) == 150
    # a finished in 100 s of its 300: b and c share the other 500 s
    assert budget_share(budgeted, "b", counts, ["a", "b", "c"], {"a": 100.0}) == 250
    unbudgeted = cfg.model_copy(update={"train": cfg.train.model_copy(update={"budget_minutes": None})})
    assert budget_share(unbudgeted, "a", counts, ["a"]) is None
