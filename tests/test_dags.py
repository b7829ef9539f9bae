"""The Airflow DAGs: parse time, structure, params, and full `airflow dags test` runs on a tiny fixture.

Airflow reads its config when first imported, so a module fixture points AIRFLOW_HOME at a
throwaway folder (for this module's tests only) before anything imports it; the full runs use
the `airflow` CLI in subprocesses with a migrated SQLite database (the embedded default).
"""

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import RAW, REPO

DAGS = REPO / "dags"
AIRFLOW_HOME = Path(tempfile.gettempdir()) / f"mrnet-airflow-{os.getpid()}"
ENV = {"AIRFLOW_HOME": str(AIRFLOW_HOME), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
       "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__MRNET__RETRY_DELAY_SECONDS": "0",
       "MRNET_HOME": str(REPO), "AIRFLOW__MRNET__ALLOWED_ROOTS": f"{tempfile.gettempdir()},{RAW}"}
AIRFLOW = str(Path(sys.executable).parent / "airflow")
PGS = ["watches", "beverages", "automotive"]


@pytest.fixture(scope="module", autouse=True)
def airflow_env():
    """This module's Airflow settings in os.environ while its tests run, restored after them."""
    AIRFLOW_HOME.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        yield ENV


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)  # as the DAG processor loads a bundle


def test_dagbag_has_both_dags_and_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"mrnet_retrain", "mrnet_refresh_dynamic", "mrnet_housekeeping"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("name", ["mrnet_retrain", "mrnet_refresh_dynamic", "mrnet_housekeeping"])
def test_dag_file_parses_fast_without_heavy_imports(name):
    code = (
        "import sys, time, importlib.util\n"
        "import airflow.sdk, airflow.sdk.definitions.decorators  # the DAG processor has these loaded\n"
        f"sys.path.insert(0, {str(DAGS)!r})\n"
        "t0 = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(DAGS / (name + '.py'))!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(time.perf_counter() - t0)\n"
        "print(sorted(m for m in ('torch', 'pandas', 'gensim', 'numpy', 'sklearn', 'mlflow') if m in sys.modules)"
        " + sorted(m for m in sys.modules if m.startswith('mrnet') and m != 'mrnet_common'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=os.environ | ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, heavy = out.stdout.strip().splitlines()[-2:]
    assert float(seconds) < 1.0, f"{name} took {seconds} s to parse"
    # the trigger rules' module alone (pure Python: the overrides param's schema is built from it)
    assert heavy == "['mrnet', 'mrnet.config', 'mrnet.config.trigger']", f"{name} imports {heavy} at parse time"


def test_dag_files_import_only_pendulum_and_airflow_sdk():
    """At the top: pendulum, airflow.sdk and the folder's mrnet_common; inside the tasks, of mrnet
    only ``mrnet.run.stages`` (plus ``logging`` in the failure callback, and the trigger rules' pure module
    where the ``overrides`` param's schema is built)."""
    import ast

    for path in DAGS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" if node.module == "mrnet.run" else node.module for a in node.names])
            allowed = (("pendulum", "airflow.sdk", "mrnet_common", "__future__") if node in tree.body
                       else ("mrnet.run.stages", "mrnet.config.trigger", "logging"))
            for name in names:
                assert name in allowed, f"{path.name}:{node.lineno}: imports {name}"


def _task(dag, task_id):
    return dag.get_task(task_id)


def test_retrain_structure(dagbag):
    dag = dagbag.dags["mrnet_retrain"]
    assert set(dag.task_ids) == {"start", "plan_catalog", "check_catalog_part", "validate_catalog", "build_corpus",
                                 "train_word2vec", "plan_pgs",
                                 "train_pg", "plan_embed", "embed_shard", "report", "sparse_autoencoder", "plan_agnostic",
                                 "encode_agnostic", "commit_agnostic",
                                 "cross_language_autoencoder", "evaluate", "publish", "build_index", "promotion_gate"}
    chain = ["start", "plan_catalog", "check_catalog_part", "validate_catalog", "build_corpus", "train_word2vec",
             "train_pg", "plan_embed", "embed_shard", "report", "sparse_autoencoder", "plan_agnostic",
             "encode_agnostic", "commit_agnostic", "evaluate", "publish", "build_index", "promotion_gate"]
    for up, down in zip(chain, chain[1:]):
        assert down in _task(dag, up).downstream_task_ids, (up, down)
    for up, down in [("report", "cross_language_autoencoder"), ("cross_language_autoencoder", "publish")]:
        assert down in _task(dag, up).downstream_task_ids, (up, down)
    for task_id in ("sparse_autoencoder", "cross_language_autoencoder"):  # both train: GPU workers
        assert _task(dag, task_id).queue == "gpu" and _task(dag, task_id).pool == "gpu"
    assert _task(dag, "evaluate").queue != "gpu"  # scikit-learn on CPU workers
    assert "train_pg" in _task(dag, "plan_pgs").downstream_task_ids
    _check_common(dag, "train_pg")
    schedule = dag.timetable
    assert type(schedule).__name__ == "AssetOrTimeSchedule"
    assert schedule.timetable.expression == "0 2 * * 0"
    assert schedule.asset_condition.name == "mrnet_catalog"


def test_refresh_structure(dagbag):
    dag = dagbag.dags["mrnet_refresh_dynamic"]
    assert set(dag.task_ids) == {"start", "pin_base_release", "plan_catalog", "check_catalog_part", "validate_catalog",
                                 "plan_pgs", "refresh_pg", "plan_embed", "embed_shard", "report", "sparse_autoencoder",
                                 "plan_agnostic", "encode_agnostic", "commit_agnostic", "evaluate", "publish",
                                 "build_index", "promotion_gate"}
    for up, down in [("start", "pin_base_release"), ("pin_base_release", "plan_pgs"), ("plan_pgs", "refresh_pg"),
                     ("start", "plan_catalog"), ("plan_catalog", "check_catalog_part"),
                     ("check_catalog_part", "validate_catalog"),
                     ("validate_catalog", "refresh_pg"), ("refresh_pg", "plan_embed"), ("plan_embed", "embed_shard"),
                     ("embed_shard", "report"), ("report", "sparse_autoencoder"), ("commit_agnostic", "evaluate"),
                     ("evaluate", "publish"), ("commit_agnostic", "publish"),
                     ("publish", "build_index"), ("build_index", "promotion_gate")]:
        assert down in _task(dag, up).downstream_task_ids, (up, down)
    _check_common(dag, "refresh_pg")
    assert dag.timetable.expression == "0 2 * * 3"


def _check_common(dag, train_id):
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.max_active_tasks == 16
    assert type(_task(dag, "check_catalog_part")).__name__.endswith("MappedOperator")  # one per catalog file
    for task_id in (train_id, "embed_shard"):  # one instance per PG / per embedding shard
        task = _task(dag, task_id)
        assert task.queue == "gpu" and task.pool == "gpu", task_id
        assert type(task).__name__.endswith("MappedOperator"), task_id
        assert task.execution_timeout.total_seconds() == 240 * 60
    assert _task(dag, "plan_embed").trigger_rule == "all_done"  # plans the PGs that trained
    assert _task(dag, "start").retries == 2 and _task(dag, "start").execution_timeout.total_seconds() == 3600
    assert _task(dag, "report").trigger_rule == "all_done" and _task(dag, "report").retries == 0
    assert _task(dag, "publish").trigger_rule == "all_success"
    assert set(dag.params) == {"config", "pgs", "epochs", "sample_fraction", "promote", "tiny", "overrides"}
    assert dag.params["promote"] is True and dag.params["pgs"] == []


def test_queue_and_pool_come_from_airflow_config():
    code = ("from pathlib import Path\nfrom airflow.dag_processing.dagbag import BundleDagBag\n"
            f"bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path=Path({str(DAGS)!r}))\n"
            "t = bag.dags['mrnet_retrain'].get_task('train_pg')\n"
            "print(t.queue, t.pool)\n")
    env = os.environ | ENV | {"AIRFLOW__MRNET__GPU_QUEUE": "h200", "AIRFLOW__MRNET__GPU_POOL": "gpus8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["h200", "gpus8"], out.stderr[-2000:]


@pytest.mark.parametrize("conf, message", [
    ({"epochs": 0}, "epochs"),
    ({"sample_fraction": 1.5}, "sample_fraction"),
    ({"pgs": "watches"}, "pgs"),
    ({"pgs": ["Watches!"]}, "pgs"),
    ({"config": "configs/demo.txt"}, "config"),
    ({"overrides": ["no equals sign"]}, "overrides"),
    ({"overrides": ["artifact_root=/etc"]}, "overrides"),  # a path outside [mrnet] allowed_roots
    ({"overrides": ["data.catalog=/tmp/../etc/passwd"]}, "overrides"),
    ({"overrides": ["tracking.uri=sqlite:////etc/x.db"]}, "overrides"),  # not a setting a trigger may change
    ({"config": "/tmp/../etc/x.yaml"}, "config"),
    ({"promote": "yes"}, "promote"),
])
def test_bad_params_are_rejected(dagbag, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    for dag_id in ("mrnet_retrain", "mrnet_refresh_dynamic"):
        params = copy.deepcopy(dagbag.dags[dag_id].params)
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {message}"):
            params.update(conf)  # what the trigger form and `airflow dags trigger/test -c` do
            params.validate()


def test_housekeeping_structure(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["mrnet_housekeeping"]
    assert dag.task_ids == ["gc"] and dag.max_active_runs == 1 and not dag.catchup
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.get_task("gc").retries == 2  # the common defaults: a killed gc is rerun and finishes the job
    for bad, name in (({"dry_run": "yes"}, "dry_run"), ({"overrides": ["artifact_root=/etc"]}, "overrides")):
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}"):
            params.update(bad)
            params.validate()


def test_good_params_validate(dagbag):
    params = copy.deepcopy(dagbag.dags["mrnet_retrain"].params)
    params.update({"pgs": ["watches"], "epochs": 3, "sample_fraction": 0.1, "promote": False})
    assert params.validate()["epochs"] == 3


# ---------------------------------------------------------------- full runs (airflow dags test)

@pytest.fixture(scope="module")
def airflow_db():
    for cmd in (["db", "migrate"], ["pools", "set", "gpu", "1", "GPU slots"]):
        out = subprocess.run([AIRFLOW, *cmd], env=os.environ | ENV, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return AIRFLOW_HOME


def _conf(home, catalog, **extra) -> dict:
    return {"tiny": True, "pgs": PGS, "overrides": [f"artifact_root={home}", f"data.catalog={catalog}",
                                                    f"data.raw_dir={RAW}", "train.threads=1"]} | extra


def dags_test(dag_id: str, conf: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=os.environ | ENV | (env or {}),
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def _runs(home: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/run.json")}


def _stage(home, run_dir, name):
    return json.loads((home / "runs" / run_dir / "stages" / f"{name}.json").read_text())


@pytest.mark.slow
def test_retrain_then_refresh_then_partial_failure(airflow_db, fixture_catalog, tmp_path):
    home = tmp_path / "home"
    parts = tmp_path / "catalog_parts"  # the catalog as a folder of Parquet and CSV parts: one check task each
    parts.mkdir()
    df = pd.read_parquet(fixture_catalog)
    df.iloc[:200].to_parquet(parts / "part-a.parquet", index=False)
    df.iloc[200:320].to_csv(parts / "part-b.csv", index=False)
    df.iloc[320:].to_parquet(parts / "part-c.parquet", index=False)
    loud = _conf(home, parts)
    loud["overrides"].append("train.progress=true")  # as a real run: bars on a TTY, lines in a task log
    first = dags_test("mrnet_retrain", loud)
    assert first.returncode == 0, first.stdout[-4000:]
    assert "\r" not in first.stdout + first.stderr  # task logs: one line per epoch, no tqdm frames
    (run1,) = _runs(home)
    validated = _stage(home, run1, "validate")
    assert validated["quarantine"]["rows_in"] == len(df) and len(validated["quarantine"]["files"]) == 3
    assert len(_stage(home, run1, "catalog_plan")["files"]) == 3 and "check_catalog_part" in first.stdout + first.stderr
    watches = home / "runs" / run1 / "embeddings" / "watches"  # tiny: shards of 50 products, committed
    parts = json.loads((watches / "_manifest.json").read_text())["parts"]
    assert len(parts) >= 2 and sum(p["rows"] for p in parts) == len(pd.read_parquet(watches))
    current = json.loads((home / "releases" / "current.json").read_text())
    assert current["dag_id"] == "mrnet_retrain" and set(current["models"]) == set(PGS)
    assert _stage(home, run1, "corpus")["cache_hit"] is False
    # both autoencoder stages ran as tasks and are part of the promoted, registered release
    agnostic = pd.read_parquet(current["agnostic"]["embeddings"])  # a folder of one part per PG shard
    assert len(json.loads((Path(current["agnostic"]["embeddings"]) / "_manifest.json").read_text())["parts"]) == len(
        json.loads((watches / "_manifest.json").read_text())["parts"]) + sum(
        len(json.loads((home / "runs" / run1 / "embeddings" / pg / "_manifest.json").read_text())["parts"])
        for pg in PGS if pg != "watches")
    assert set(agnostic["product_group"]) == set(PGS) and len(agnostic["embedding"][0]) == 512
    assert set(current["crosslingual"]["mrr"]) >= {"random", "autoencoder", "least_squares", "no_projection"}
    assert {"sparse_ae", "crosslingual_ae"} <= set(current["registry"])
    assert "NOT retail product titles" in (home / "runs" / run1 / "crosslingual" / "report.md").read_text()
    first_xl = current["crosslingual"]
    # the evaluate task ran (§4): its Table 2 is in the release and feeds the gate
    report = Path(current["evaluation"]["report"]).read_text()
    assert "| task | metric | MRNet (dim) | MRNet-RF | MRNet-LR | TF-IDF-RF | LSA-256 (best) | MiniLM (best) " in report
    assert "| PG only LR | TF-IDF-LR |" in report
    assert "| ingestible | auc | agnostic (512) |" in report and "**sioc**: no public labels" in report
    assert current["evaluation"]["gated"] and "[evaluate]" in first.stdout + first.stderr
    near = subprocess.run([sys.executable, "-m", "mrnet", "neighbors", "--set", f"artifact_root={home}", "--title",
                           "Titan men analog steel watch", "--pg", "watches", "--space", "agnostic", "-k", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)   # champion via the registry
    assert near.returncode == 0, near.stderr[-2000:]
    assert f"3 nearest to title 'Titan men analog steel watch' (agnostic space, PG watches; exact, indexed Euclidean over " \
           f"{len(agnostic)} products; release {current['release']})" in near.stdout

    df = pd.read_parquet(fixture_catalog)
    df["price"] *= 2
    refreshed_catalog = tmp_path / "refreshed.parquet"
    df.to_parquet(refreshed_catalog, index=False)
    lenient = _conf(home, refreshed_catalog)  # this test is about the mechanics, not the gate's verdict
    lenient["overrides"] += ["gate.tolerance=10", "gate.aggregate_tolerance=10", "gate.eval_tolerance=10"]
    refresh = dags_test("mrnet_refresh_dynamic", lenient)
    assert refresh.returncode == 0, refresh.stdout[-4000:]
    current = json.loads((home / "releases" / "current.json").read_text())
    assert current["mode"] == "refresh" and current["base_release"] == _runs(home)[run1]["run_id"]
    assert current["crosslingual"] == first_xl and "/runs/" + run1 not in current["agnostic"]["embeddings"]
    assert "/runs/" + run1 not in current["evaluation"]["report"]  # the refresh evaluated its own release
    assert "promotion gate" in refresh.stdout + refresh.stderr and "decision: PROMOTE" in refresh.stdout + refresh.stderr

    # same catalog again, plus a PG with no products: corpus + word2vec come from the cache,
    # the good PGs finish, the run fails naming the bad one, and the release does not move
    third = dags_test("mrnet_retrain", _conf(home, fixture_catalog, pgs=["watches", "jewellery"]))
    assert third.returncode != 0
    assert "1 of 2 PG(s) failed: ['jewellery']" in third.stdout + third.stderr
    assert "mrnet: task train_pg[1] of mrnet_retrain" in third.stdout + third.stderr  # failure callback
    (run3,) = set(_runs(home)) - {run1} - {r for r, v in _runs(home).items() if v["mode"] == "refresh"}
    for stage in ("corpus", "word2vec"):
        assert _stage(home, run3, stage)["cache_hit"] is True
        assert _stage(home, run3, stage)["uri"] == _stage(home, run1, stage)["uri"]
    assert (home / "runs" / run3 / "embeddings" / "watches" / "_manifest.json").exists()
    assert json.loads((home / "releases" / "current.json").read_text()) == current

    # the run ends with a champion in the registry, and `mrnet compare` shows it
    shown = subprocess.run([sys.executable, "-m", "mrnet", "compare", "--set", f"artifact_root={home}"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    refresh_id = current["release"]
    assert f"champion:   {refresh_id} (version 2)" in shown.stdout and "(the same release)" in shown.stdout
    assert "autoencoders (champion → challenger):" in shown.stdout and "cross-language MRR, autoencoder" in shown.stdout

    # mrnet_housekeeping: nothing here may go (run1 was champion, the refresh is, run3 has no gate decision yet),
    # only the finished runs' training checkpoints
    tidy = dags_test("mrnet_housekeeping", {"config": str(REPO / "configs" / "demo.yaml"), "dry_run": False,
                                            "overrides": [f"artifact_root={home}", "retention.keep_last=1",
                                                          "retention.keep_days=0"]})
    assert tidy.returncode == 0, tidy.stdout[-4000:]
    assert "[housekeeping]" in tidy.stdout + tidy.stderr and "was champion (a rollback target)" in tidy.stdout + tidy.stderr
    (gc_report,) = (home / "gc").glob("*.json")
    gc = json.loads(gc_report.read_text())
    assert gc["deleted"] == [] and gc["checkpoints"] and not list((home / "runs" / run1).rglob("ckpt.pt"))
    assert list((home / "runs" / run3).rglob("ckpt.pt"))  # in progress: untouched


RESUME_DRIVER = """
import json, sys
from pathlib import Path
import mrnet.encoder.train as T
from airflow.dag_processing.dagbag import BundleDagBag

save = T.save_checkpoint
def fail_once_after_epoch_1(obj, uri):
    save(obj, uri)
    if obj["epoch"] == 1 and "/watches/" in uri and not getattr(T, "_failed", False):
        T._failed = True
        raise RuntimeError("injected worker crash after the epoch-1 checkpoint")
T.save_checkpoint = fail_once_after_epoch_1
dag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1])).get_dag("mrnet_retrain")
run = dag.test(run_conf=json.loads(sys.argv[2]))
print("RUN STATE", run.state)
"""


@pytest.mark.slow
def test_retried_pg_task_resumes_from_its_checkpoint(airflow_db, fixture_catalog, tmp_path):
    home = tmp_path / "home"
    conf = _conf(home, fixture_catalog, pgs=["watches"], epochs=2)
    out = subprocess.run([sys.executable, "-c", RESUME_DRIVER, str(DAGS), json.dumps(conf)],
                         env=os.environ | ENV, capture_output=True, text=True, timeout=600, cwd=REPO)
    log = out.stdout + out.stderr
    assert "RUN STATE success" in log, log[-4000:]
    assert "injected worker crash" in log and "(will retry)" in log
    assert "resuming from" in log and "(epoch 1)" in log
    (run,) = _runs(home)
    metrics = json.loads((home / "runs" / run / "models" / "watches" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 1 and [h["epoch"] for h in metrics["history"]] == [1, 2]


@pytest.mark.slow
def test_dags_test_cli_refuses_a_bad_param(airflow_db):
    out = dags_test("mrnet_retrain", {"sample_fraction": 2})
    assert out.returncode != 0
    assert "Invalid input for param sample_fraction: 2 is greater than the maximum of 1" in out.stdout + out.stderr
