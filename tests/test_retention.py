"""Retention (release/retention.py, `mrnet gc`): which runs a year of weekly retrains keeps, on a
hand-made history of 12 runs on local disk and on S3 (moto's server); dry run = real run in bytes;
a gc SIGKILLed midway and rerun leaves nothing dangling while the champion keeps serving; a gc and
a promotion never interleave; and, on real tiny runs, the MLflow runs and versions of a deleted run go."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mrnet.config.schema import load_config
from mrnet.io import storage
from mrnet.release import retention
from tests.helpers import REPO, moto_s3, run_params

DAY = 86400.0
NOW = 1_800_000_000.0
EVER = ["r03", "r07", "r10"]  # ever champion; r03 is the current one
RUNNING, CHALLENGER = "r00", "r01"


def _write(root: str, name: str, size: int) -> None:
    storage.write_bytes(storage.join(root, name), b"x" * size)


def make_history(home: str) -> None:
    """r00 (1 h old, no gate: in progress) … r11 (11 weeks old): a weekly history."""
    for i in range(12):
        run_id = f"r{i:02d}"
        root = storage.join(home, "runs", run_id)
        started = NOW - 3600 if i == 0 else NOW - 7 * DAY * i
        storage.write_text(storage.join(root, "run.json"), json.dumps({"run_id": run_id, "started": started}))
        created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started))
        if i:
            storage.write_text(storage.join(root, "release.json"), json.dumps({"release": run_id, "created": created}))
            storage.write_text(storage.join(root, "gate.json"), json.dumps({"promote": run_id in EVER}))
        _write(root, "models/watches/model.safetensors", 1000)
        _write(root, "models/watches/ckpt.pt", 2000)
        _write(root, "embeddings/watches/part-00000-of-00001.parquet", 3000)
        _write(root, "catalog/catalog.parquet", 400)
    for run_id in EVER:
        storage.write_text(storage.join(home, "releases", f"{run_id}.json"), json.dumps({"release": run_id}))
    storage.write_text(storage.join(home, "releases", "current.json"), json.dumps({"release": "r03"}))


def _cfg(home, *extra):
    return load_config(REPO / "configs" / "demo.yaml", [f"artifact_root={home}", "tracking.enabled=false",
                                                        "retention.keep_last=3", "retention.keep_days=20", *extra])


def _expectations(report):
    kept = {k["run_id"]: k["reasons"] for k in report["keep"]}
    assert set(kept) == {"r00", "r01", "r02", "r03", "r07", "r10"}, kept
    assert "in progress (no gate decision yet)" in kept[RUNNING]
    assert "the current challenger" in kept[CHALLENGER]  # the newest release (no tracking)
    assert "the current champion" in kept["r03"] and "was champion (a rollback target)" in kept["r07"]
    assert {d["run_id"] for d in report["delete"]} == {"r04", "r05", "r06", "r08", "r09", "r11"}
    # checkpoints go in the kept runs that have their gate decision (not the running r00)
    assert {c["uri"].split("/runs/")[1] for c in report["checkpoints"]} == {
        f"{r}/models/watches/ckpt.pt" for r in ("r01", "r02", "r03", "r07", "r10")}
    assert report["freed"]["models"] == 6 * 1000 and report["freed"]["embeddings"] == 6 * 3000
    assert report["freed"]["checkpoints"] == 11 * 2000 and report["freed"]["other"] > 6 * 400


@pytest.mark.parametrize("where", ["local", "s3"])
def test_retention_keeps_exactly_the_right_runs(where, tmp_path, request):
    home = str(tmp_path / "home") if where == "local" else request.getfixturevalue("s3_home")
    make_history(home)
    cfg = _cfg(home)
    before = storage.sizes(home)
    dry = retention.execute(cfg, dry_run=True, now=NOW)
    _expectations(dry)
    assert storage.sizes(home) == before  # the dry run deleted nothing
    real = retention.execute(cfg, now=NOW)
    _expectations(real)
    assert real["freed"] == dry["freed"]
    assert storage.children(storage.join(home, "runs")) == ["r00", "r01", "r02", "r03", "r07", "r10"]
    assert storage.exists(storage.join(home, "runs", "r00", "models", "watches", "ckpt.pt"))  # running: untouched
    assert not storage.exists(storage.join(home, "runs", "r03", "models", "watches", "ckpt.pt"))
    assert storage.exists(storage.join(home, "runs", "r03", "models", "watches", "model.safetensors"))
    assert not storage.exists(retention.lock_uri(home))
    again = retention.execute(cfg, now=NOW)  # idempotent
    assert not again["delete"] and not again["checkpoints"] and sum(again["freed"].values()) == 0


def test_a_live_lock_blocks_and_a_dead_ones_is_taken_over(tmp_path):
    home = str(tmp_path)
    uri = retention.lock_uri(home)
    (tmp_path / "runs" / "r00").mkdir(parents=True)  # a root with a run: gc of an empty one takes no lock
    with storage.lock(uri, 3600, "a promotion"):
        with pytest.raises(RuntimeError, match="held by a promotion"):
            retention.execute(_cfg(home), dry_run=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    storage.write_text(uri, json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "at": time.time(),
                                        "what": "a killed gc"}))
    assert retention.execute(_cfg(home), dry_run=True)["delete"] == []  # taken over, then released
    assert not storage.exists(uri)


def test_a_lock_is_never_visible_empty_and_an_empty_one_is_taken_over(tmp_path, monkeypatch, caplog):
    """A lock created and then written stayed empty when the write failed (a full disk) or the process died in
    between; unreadable, it was never stale, and gc failed on it for good. Now a lock appears whole or not at all,
    a failed write names the cause and leaves nothing, and an unreadable lock older than a few seconds is debris."""
    home = str(tmp_path)
    uri = retention.lock_uri(home)
    (tmp_path / "runs" / "r00").mkdir(parents=True)  # a root with a run: gc of an empty one takes no lock

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, *args, **kwargs):
            self.fh = real_fdopen(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text):
            raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", Full)
        with pytest.raises(OSError, match="No space left on device"):
            retention.execute(_cfg(home), dry_run=True)
    assert not storage.exists(uri) and not list((tmp_path / "locks").iterdir())  # no lock, no temp file
    storage.write_text(uri, "")  # an empty lock, as a writer killed between create and write left it
    os.utime(uri, (time.time() - 60, time.time() - 60))
    with caplog.at_level(logging.WARNING, logger="mrnet.io.storage"):
        assert retention.execute(_cfg(home), dry_run=True)["delete"] == []
    assert "taking over" in caplog.text and "an unreadable lock" in caplog.text and not storage.exists(uri)


@pytest.fixture(scope="module")
def s3_home(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("s3cache"), "retention"):
        yield "s3://retention/home"


# ------------------------------------------------------------------ real tiny runs (MLflow on)

@pytest.fixture(scope="module")
def tracked(tmp_path_factory, fixture_catalog):
    """week1 (champion), week2 and week3 (worse: refused; week3 is the challenger), one home."""
    from mrnet.run import local

    home = tmp_path_factory.mktemp("retention")
    local.run(run_params(home, fixture_catalog), run_id="week1")
    worse = run_params(home, fixture_catalog)["overrides"] + ["train.lr=1.0", "train.steps_per_epoch=8"]
    for run_id in ("week2", "week3"):
        local.run(run_params(home, fixture_catalog, overrides=worse), run_id=run_id)
    params = run_params(home, fixture_catalog)
    return home, params


def _cli(params, *args, **kw):
    sets = [a for o in params["overrides"] + ["retention.keep_last=1", "retention.keep_days=0"] for a in ("--set", o)]
    return subprocess.Popen([sys.executable, "-m", "mrnet", *args, "--config", params["config"], "--tiny", *sets],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_gc_deletes_a_runs_mlflow_runs_and_versions_and_keeps_the_champions(tracked):
    from mlflow import MlflowClient

    home, params = tracked
    summary = json.loads((home / "runs" / "week1" / "summary.json").read_text())  # space per run, at report time
    assert summary["space"]["models"] > 0 and summary["space"]["checkpoints"] > summary["space"]["models"] / 2
    assert "space:" in (home / "runs" / "week1" / "summary.md").read_text()
    parent = json.loads((home / "runs" / "week1" / "run.json").read_text())["mlflow"]["parent"]
    metrics = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(parent).data.metrics
    assert metrics["space.embeddings_bytes"] == summary["space"]["embeddings"]
    out = _cli(params, "gc").communicate(timeout=600)[0]
    assert "delete week2" in out and "keep   week1" in out and "the current champion" in out, out
    assert sorted(os.listdir(home / "runs")) == ["week1", "week3"]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mrnet").experiment_id
    tagged = client.search_runs([exp], "tags.`mrnet.run_id` = 'week2'")
    assert tagged == [], [r.info.run_id for r in tagged]
    assert client.search_model_versions("tags.release = 'week2'") == []
    assert client.get_model_version_by_alias("mrnet-release", "champion").tags["release"] == "week1"
    assert client.get_model_version_by_alias("mrnet-release", "challenger").tags["release"] == "week3"
    assert client.search_model_versions("tags.release = 'week3'")
    report = json.loads(sorted((home / "gc").glob("*.json"))[-1].read_text())
    assert report["deleted"] == ["week2"] and report["mlflow"]["mlflow_runs"] >= 4 and report["mlflow"]["versions"] >= 3


@pytest.mark.slow
def test_a_killed_gc_leaves_nothing_dangling_and_the_champion_serves_throughout(tracked, tmp_path):
    """Eight copies of a finished run to delete; SIGKILL gc once it has started deleting; rerun."""
    import shutil

    home, params = tracked
    week3 = home / "runs" / "week3"
    for i in range(8):
        copy = home / "runs" / f"old{i:02d}"
        shutil.copytree(week3, copy, ignore=shutil.ignore_patterns("ckpt.pt", "crosslingual"))
        run = json.loads((copy / "run.json").read_text()) | {"run_id": f"old{i:02d}", "started": 1.0e9 + i}
        (copy / "run.json").write_text(json.dumps(run))
        for name in ("release.json", "gate.json"):
            (copy / name).write_text((copy / name).read_text().replace("week3", f"old{i:02d}"))
    gc = _cli(params, "gc")
    deadline = time.monotonic() + 300
    while not list((home / "runs").glob("old*/gc.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    gc.send_signal(signal.SIGKILL)
    gc.wait()
    for run in (home / "runs").iterdir():  # no manifest names a file that is gone
        if (run / "release.json").exists():
            manifest = json.loads((run / "release.json").read_text())
            for pg, model in manifest["models"].items():
                assert os.path.exists(model["uri"]), (run.name, pg)
    for cmd in (["neighbors", "--id", _a_product(home), "-k", "3"], ["compare"],
                ["embed", "--pg", "watches", "--titles", str(_titles(tmp_path)), "--out", str(tmp_path / "e.parquet")]):
        out, _ = _cli(params, *cmd).communicate(timeout=300)
        assert "error" not in out.lower(), (cmd, out[-2000:])
    out = _cli(params, "gc").communicate(timeout=600)[0]
    assert sorted(os.listdir(home / "runs")) == ["week1", "week3"], out
    assert not list(home.rglob("gc.json")) and not (home / "locks" / "release.lock").exists()


def _a_product(home):
    import pandas as pd

    catalog = json.loads((home / "releases" / "current.json").read_text())["catalog"]
    products = pd.read_parquet(catalog, columns=["product_id", "product_group"])
    return str(products.loc[products["product_group"] == "watches", "product_id"].iloc[0])


def _titles(tmp_path):
    path = tmp_path / "new.csv"
    path.write_text("title\nanalog watch for men\n")
    return path


@pytest.mark.slow
def test_a_promotion_waits_for_gc_and_gc_for_a_promotion(tracked):
    """The promotion's lock is gc's: while one holds it, the other waits (here: gives up at once)."""
    from mrnet.run.context import load_run
    from mrnet.run.publish import release_lock

    home, params = tracked
    run = load_run(str(home / "runs" / "week3" / "run.json"))
    with release_lock(run, "promotion_gate"):
        out = _cli(params, "gc", "--dry-run").communicate(timeout=300)[0]
        assert "held by promotion_gate of week3" in out, out
    out = _cli(params, "gc", "--dry-run").communicate(timeout=300)[0]
    assert "dry run: nothing deleted" in out, out
