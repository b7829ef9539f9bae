"""Run-scoped stages without Airflow: run layout, content-hash cache, refresh, report, release."""

import json

import pandas as pd
import pytest
import torch

from mrnet.config.base import safe_run_id
from mrnet.encoder.model import load_model
from mrnet.io.tracking import Tracker
from mrnet.run import context
from mrnet.run import local
from mrnet.run import stages
from tests.helpers import PGS
from tests.helpers import run_params as _params


@pytest.fixture(scope="module")
def released(tmp_path_factory, fixture_catalog):
    """One full local retrain, published: (home, summary)."""
    home = tmp_path_factory.mktemp("home")
    summary = local.run(_params(home, fixture_catalog), run_id="manual__2026-01-01T00:00:00+00:00")
    return home, summary


@pytest.mark.slow
def test_run_is_scoped_and_published(released):
    home, summary = released
    root = home / "runs" / "manual__2026-01-01T00_00_00_00_00"
    assert summary["artifact_root"] == str(root) and not summary["failed"]
    current = json.loads((home / "releases" / "current.json").read_text())
    assert current["release"] == "manual__2026-01-01T00:00:00+00:00"
    assert set(current["models"]) == set(PGS)
    for pg in PGS:
        assert current["models"][pg]["uri"] == str(root / "models" / pg / "model.safetensors")
        assert len(pd.read_parquet(current["embeddings"][pg])) > 0
    run = json.loads((root / "run.json").read_text())
    assert run["config"]["artifact_root"] == str(root) and run["params"]["pgs"] == PGS


@pytest.mark.slow
def test_unchanged_text_reuses_corpus_and_word2vec(released, fixture_catalog, tmp_path):
    home, first = released
    df = pd.read_parquet(fixture_catalog)
    df["price"] = df["price"] * 1.25  # a dynamic signal changes; the text does not
    changed = tmp_path / "prices.parquet"
    df.to_parquet(changed, index=False)
    run_uri = stages.start_run(_params(home, changed), "second", mode="retrain")
    catalog = stages.validate(run_uri)
    corpus = stages.corpus(run_uri, catalog)
    vectors = stages.word2vec(run_uri, corpus)
    assert corpus == first["corpus"]["uri"] and vectors == first["word2vec"]["uri"]
    records = home / "runs" / "second" / "stages"
    assert json.loads((records / "corpus.json").read_text())["cache_hit"] is True
    assert json.loads((records / "word2vec.json").read_text())["cache_hit"] is True
    df.loc[df.index[0], "title"] = "a brand new title about teapots"
    df.to_parquet(changed, index=False)
    run_uri = stages.start_run(_params(home, changed), "third", mode="retrain")
    assert stages.corpus(run_uri, stages.validate(run_uri)) != corpus  # new text → new cache entry


@pytest.mark.slow
def test_refresh_warm_starts_and_refits_dynamic_tasks_only(released, fixture_catalog, tmp_path):
    home, first = released
    df = pd.read_parquet(fixture_catalog)
    df["price"] = df["price"] * 3.0
    changed = tmp_path / "prices.parquet"
    df.to_parquet(changed, index=False)
    summary = local.run(_params(home, changed, promote=False), run_id="refresh-1", mode="refresh")
    assert not summary["failed"]
    base, base_meta = load_model(first["pgs"]["beverages"]["model"])
    new, meta = load_model(summary["pgs"]["beverages"]["model"])
    old_tasks = {t["name"]: t for t in base_meta["tasks"]}
    new_tasks = {t["name"]: t for t in meta["tasks"]}
    assert new_tasks["subcategory"] == old_tasks["subcategory"]        # static: kept
    assert new_tasks["price"]["mean"] != old_tasks["price"]["mean"]     # dynamic: re-fitted
    assert meta["vocab"] == base_meta["vocab"]
    assert torch.equal(new.words.weight, base.words.weight)           # word vectors carried over
    assert not torch.equal(new.lstm.weight_hh_l0, base.lstm.weight_hh_l0)  # fine-tuned
    assert meta["refreshed_from"]["model"] == first["pgs"]["beverages"]["model"]
    current = json.loads((home / "releases" / "current.json").read_text())
    assert current["release"] != "refresh-1"  # promote=false keeps the current release


@pytest.mark.slow
def test_refresh_without_a_release_says_what_to_do(tmp_path, fixture_catalog):
    with pytest.raises(FileNotFoundError, match="run mrnet_retrain"):
        local.run(_params(tmp_path, fixture_catalog), run_id="r", mode="refresh")


@pytest.mark.slow
def test_failed_pg_is_named_and_nothing_is_published(released, fixture_catalog):
    home, _ = released
    before = (home / "releases" / "current.json").read_text()
    with pytest.raises(RuntimeError, match=r"1 of 2 PG\(s\) failed: \['jewellery'\].*no products"):
        local.run(_params(home, fixture_catalog, pgs=["watches", "jewellery"]), run_id="partial")
    summary = json.loads((home / "runs" / "partial" / "summary.json").read_text())
    assert list(summary["pgs"]) == ["watches"] and list(summary["failed"]) == ["jewellery"]
    assert (home / "releases" / "current.json").read_text() == before


@pytest.mark.slow
def test_a_failed_or_missing_shard_fails_its_pg(released, fixture_catalog, tmp_path):
    home, _ = released
    params = _params(home, fixture_catalog, pgs=["watches"])
    params["overrides"] = params["overrides"] + ["tracking.enabled=false"]
    run_uri = stages.start_run(params, "shards")
    catalog = stages.validate(run_uri)
    vectors = stages.word2vec(run_uri, stages.corpus(run_uri, catalog))
    stages.plan(run_uri)
    model = stages.train(run_uri, "watches", catalog, vectors)
    rows = pd.read_parquet(catalog)
    count = -(-int((rows.product_group == "watches").sum()) // 50)  # tiny: embed.shard_size=50
    shards = stages.plan_embed(run_uri, [model], catalog)
    assert count >= 2 and shards == [f"watches/part-{i:05d}-of-{count:05d}" for i in range(count)]
    parts = [stages.embed_shard(run_uri, shard, catalog) for shard in shards[:-1]]
    changed = tmp_path / "changed.parquet"  # the catalog lost watches after planning
    rows.drop(rows.index[rows.product_group == "watches"][:60]).to_parquet(changed)
    with pytest.raises(ValueError, match=r"the catalog changed after the shards were planned"):
        stages.embed_shard(run_uri, shards[-1], str(changed))
    failure = json.loads((home / "runs" / "shards" / "failures" / "watches.json").read_text())
    assert failure["stage"] == f"embed shard {count} of {count}"
    with pytest.raises(RuntimeError, match=rf"watches: embed shard {count} of {count}: ValueError.*1 of {count} "
                                           rf"embedding shard\(s\) missing, e\.g\. {shards[-1]}"):
        stages.report(run_uri, parts)
    assert not (home / "runs" / "shards" / "embeddings" / "watches" / "_manifest.json").exists()


@pytest.mark.slow
def test_stale_refresh_does_not_overwrite_a_newer_release(released, fixture_catalog):
    home, _ = released
    params = _params(home, fixture_catalog, pgs=["watches"])
    params["overrides"] = params["overrides"] + ["tracking.enabled=false"]  # champion = releases/current.json
    run_uri = stages.start_run(params, "stale", mode="refresh")
    stages.base_release(run_uri)
    current = home / "releases" / "current.json"
    saved = current.read_text()
    current.write_text(json.dumps(json.loads(saved) | {"release": "published-meanwhile"}))
    try:
        catalog = stages.validate(run_uri)
        stages.plan(run_uri)
        model = stages.refresh(run_uri, "watches", catalog, str(home / "runs" / "stale" / "base_release.json"))
        manifest = stages.publish(run_uri, stages.report(run_uri, stages.embed_all(run_uri, model, catalog)))
        with pytest.raises(RuntimeError, match="published-meanwhile became champion while this refresh ran"):
            stages.promote(run_uri, manifest)
    finally:
        current.write_text(saved)


def test_report_after_an_early_failure_says_where_it_stopped(tmp_path):
    run_uri = stages.start_run(_params(tmp_path), "early")
    with pytest.raises(RuntimeError, match="stopped before its PGs ran: validate_catalog or plan_pgs"):
        stages.report(run_uri, [])


def test_start_run_rejects_bad_params(tmp_path):
    with pytest.raises(ValueError, match=r"unknown run param\(s\) \['epoch'\]"):
        stages.start_run({"epoch": 3}, "x")
    with pytest.raises(ValueError, match=r"unknown PG\(s\) \['atlantis'\]"):
        stages.start_run(_params(tmp_path, pgs=["atlantis"]), "x")


def test_params_become_overrides(tmp_path):
    run = context.load_run(stages.start_run(_params(tmp_path, epochs=7, sample_fraction=0.5), "p"))
    assert run.cfg.train.epochs == 7 and run.cfg.data.sample_fraction == 0.5 and run.cfg.pgs == PGS
    refresh = context.load_run(stages.start_run(_params(tmp_path, epochs=3), "q", mode="refresh"))
    assert refresh.cfg.refresh.epochs == 3
    assert safe_run_id("scheduled__2026-11-22T02:00:00+00:00") == "scheduled__2026-11-22T02_00_00_00_00"


def test_sample_fraction_is_per_pg_and_stable():
    from mrnet.data.catalog import sample_per_pg

    df = pd.DataFrame({"product_id": [f"p{i}" for i in range(300)], "product_group": ["a"] * 200 + ["b"] * 100})
    half = sample_per_pg(df, None, 13, 0.5)
    assert half.product_group.value_counts().to_dict() == {"a": 100, "b": 50}
    assert set(sample_per_pg(df, None, 13, 0.25).product_id) <= set(half.product_id)  # nested samples
    assert len(sample_per_pg(df, 30, 13, 0.5)) == 60



def test_two_runs_missing_one_cache_entry_build_it_once(tmp_path):
    """Two runs with the same inputs both missed ``cache/word2vec/<key>``, both built it, and the second replaced
    the first's while the first used it. Now one builds under a lock and the other waits, then reuses its entry."""
    import threading
    import time
    from types import SimpleNamespace

    builds, got = [], {}

    def build(out):
        builds.append(out)
        time.sleep(1.5)  # long enough for the other run to miss the entry and reach the lock
        context.storage.write_text(out, f"vectors built by build {len(builds)}")
        return out, {"words": 3}

    def one_run(name):
        run = SimpleNamespace(home=str(tmp_path), run_id=name, mlflow=None, tracker=Tracker(),
                              path=lambda *parts, name=name: str(tmp_path.joinpath("runs", name, *parts)))
        got[name] = context.cached(run, "word2vec", "k1", "vectors.bin", build)

    threads = [threading.Thread(target=one_run, args=(name,)) for name in ("week1", "week2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and got["week1"] == got["week2"]
    assert (tmp_path / "cache" / "word2vec" / "k1" / "vectors.bin").read_text() == "vectors built by build 1"
    hits = {name: json.loads((tmp_path / "runs" / name / "stages" / "word2vec.json").read_text())["cache_hit"]
            for name in got}
    assert sorted(hits.values()) == [False, True] and not list((tmp_path / "locks").iterdir())


def test_a_promotion_killed_before_it_ends_leaves_no_gate_json_so_resume_reruns_it(tmp_path, monkeypatch):
    """gate.json said ``promote: true`` before the champion moved, so a promotion killed in between left a run
    that ``mrnet run --resume`` skipped as finished. gate.json is now written once the decision is carried out."""
    from types import SimpleNamespace

    from mrnet.run import publish

    run = SimpleNamespace(promote=True, cfg=None, home=str(tmp_path), mlflow=None, tracker=Tracker(), run_id="r1",
                          path=lambda *parts: str(tmp_path.joinpath("runs", "r1", *parts)))
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "run.json").write_text(json.dumps({"run_id": "r1", "started": 1.0, "params": {}}))
    monkeypatch.setattr(publish, "repair_champion", lambda *args: [])
    monkeypatch.setattr(publish, "champion_manifest", lambda run: None)
    monkeypatch.setattr(publish, "_gate", lambda *args: {"promote": True, "reasons": []})

    def killed(*args):
        raise KeyboardInterrupt  # a kill between the gate's decision and the pointer's move

    monkeypatch.setattr(publish, "publish_champion", killed)
    with pytest.raises(KeyboardInterrupt):
        publish._promote(run, {"base_release": None}, {})
    assert not (tmp_path / "runs" / "r1" / "gate.json").exists()
    assert context.unfinished_run(str(tmp_path))[0] == "r1"  # --resume takes it up again
    monkeypatch.setattr(publish, "publish_champion", lambda *args: None)
    publish._promote(run, {"base_release": None}, {})
    assert json.loads((tmp_path / "runs" / "r1" / "gate.json").read_text())["promote"] is True
    assert context.unfinished_run(str(tmp_path)) is None


def test_a_pg_failure_on_a_full_disk_keeps_its_own_error(tmp_path, monkeypatch, caplog):
    """When even ``failures/<pg>.json`` cannot be written (a full disk), the task fails with the stage's own error,
    logged first, and the report says the PG left no failure record instead of blaming an upstream task."""
    import logging
    from types import SimpleNamespace

    from mrnet.run import publish

    run = SimpleNamespace(mlflow=None, tracker=Tracker(), run_id="r1", path=lambda *parts: str(tmp_path.joinpath(*parts)))

    def full(uri, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(context.storage, "write_text", full)
    with caplog.at_level(logging.ERROR, logger="mrnet.run.context"):
        with pytest.raises(ValueError, match="the stage's own error"):
            with context.pg_stage(run, "watches", "train"):
                raise ValueError("the stage's own error")
    assert "[watches] train failed: ValueError: the stage's own error" in caplog.text
    assert "could not write failures/watches.json either" in caplog.text
    assert "left no failure record" in publish._failure(run, "watches")
