"""Tracking + registry on PostgreSQL with several PG tasks logging at once (the production
backend; SQLite would answer "database is locked"). Uses the PostgreSQL on 127.0.0.1:5432."""

import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor

import pytest

pytestmark = pytest.mark.slow  # a full stack or several full runs (make test-fast leaves it out)

PG_URL = os.environ.get("MRNET_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
PGS = [f"pg{i}" for i in range(6)]


def _connect(db: str):
    import psycopg2

    conn = psycopg2.connect(f"{PG_URL}/{db}")
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def database():
    name = f"mrnet_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = _connect("postgres")
    except Exception as exc:
        if os.environ.get("MRNET_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({exc}); CI sets MRNET_REQUIRE_POSTGRES=1")
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"  # SQLAlchemy 2.1 defaults to psycopg 3
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def pg_task(uri: str, exp_id: str, parent: str, pg: str) -> tuple[str, str]:
    """What one train_pg task does to MLflow: its nested run, 10 epochs of metrics, an artifact,
    a registered version and the challenger alias."""
    from mrnet.io import tracking as tr

    tags = {"mrnet.run_id": "concurrent", "mrnet.kind": "pg", "mrnet.pg": pg}
    run_id = tr.find_or_create_run(uri, exp_id, tags, f"pg:{pg}", parent=parent)
    for epoch in range(1, 11):
        tr.log_metrics(uri, run_id, {f"val.task{t}.loss": 1.0 / (epoch + t) for t in range(20)}, epoch)
    tr.log_text(uri, run_id, f"weights of {pg}", "model/model.txt")
    version = tr.register(uri, f"mrnet-{pg}", tr.artifact_uri(uri, run_id, "model"), run_id, {"pg": pg})
    tr.set_alias(uri, f"mrnet-{pg}", "challenger", version)
    tr.finish(uri, run_id)
    return run_id, version


def test_concurrent_pg_tasks_log_to_postgres(database, tmp_path):
    from mlflow import MlflowClient

    from mrnet.io import tracking as tr

    exp_id = tr.experiment_id(database, "mrnet", str(tmp_path))  # migrates the schema once
    client = MlflowClient(database)
    client.set_experiment_tag(exp_id, "artifact_root", str(tmp_path))
    parent = tr.find_or_create_run(database, exp_id, {"mrnet.run_id": "concurrent", "mrnet.kind": "parent"},
                                   "concurrent")
    spawn = multiprocessing.get_context("spawn")  # fresh processes, as Airflow tasks are; no forked DB pools
    with ProcessPoolExecutor(max_workers=len(PGS), mp_context=spawn) as pool:
        results = list(pool.map(pg_task, [database] * len(PGS), [exp_id] * len(PGS), [parent] * len(PGS), PGS,
                                timeout=300))
    assert len({run for run, _ in results}) == len(PGS)
    runs = tr.find_runs(database, exp_id, {"mrnet.run_id": "concurrent", "mrnet.kind": "pg"})
    assert sorted(r.data.tags["mrnet.pg"] for r in runs) == PGS
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val.task0.loss")) == 10
    for pg in PGS:
        assert tr.version_by_alias(database, f"mrnet-{pg}", "challenger")["version"] == "1"
    # a retried task finds its run and its version again instead of duplicating them
    assert pg_task(database, exp_id, parent, "pg0") == results[0]
    assert len(tr.find_runs(database, exp_id, {"mrnet.run_id": "concurrent", "mrnet.kind": "pg"})) == len(PGS)
