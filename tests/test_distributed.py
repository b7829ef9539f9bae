"""The production topology of docker-compose.yml, run natively (this machine has no Docker engine):

- Airflow with CeleryExecutor on the local PostgreSQL (metadata + Celery results) and Redis (broker);
- an API server, a scheduler, a DAG processor;
- a Celery worker on the default queue and one listening only on `gpu`;
- the MLflow tracking server on PostgreSQL, its artifacts proxied to S3;
- an S3-compatible endpoint (moto's server).

`mrnet_retrain` is triggered on a tiny catalog through the REST API, with params, as the UI does.
The test asserts that every PG task ran on the gpu worker and every other task on the default
worker, that the MLflow champion exists, and that the artifacts are in S3. It stops every
process it started, by process group.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.helpers import RAW, REPO
from tests.helpers.airflow_api import call, free_port, page, pg_task_links, trigger_and_wait, wait

pytestmark = pytest.mark.slow  # a full stack or several full runs (make test-fast leaves it out)

PG_URL = os.environ.get("MRNET_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("MRNET_REDIS_URL", "redis://127.0.0.1:6379/7")
PGS = ["watches", "beverages", "automotive"]
BIN = Path(sys.executable).parent


def _reachable() -> None:
    import psycopg2
    import redis

    try:
        psycopg2.connect(f"{PG_URL}/postgres").close()
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:
        if os.environ.get("MRNET_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL ({PG_URL}) or Redis ({REDIS_URL}) not reachable: {exc}")


def _up(url: str):
    """True once ``url`` answers HTTP at all (any status), else None."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return True


def _databases(names):
    import psycopg2

    admin = psycopg2.connect(f"{PG_URL}/postgres")
    admin.autocommit = True
    for name in names:
        admin.cursor().execute(f"CREATE DATABASE {name}")
    return admin


class Processes:
    """Long-running services, each in its own process group, logged to files; stopped by pid."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env, self.procs = home, env, {}

    def start(self, name: str, cmd: list[str], **env) -> None:
        log = open(self.home / f"{name}.log", "w")
        self.procs[name] = (subprocess.Popen(cmd, env=self.env | env, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=REPO, start_new_session=True), log)

    def tail(self, name: str, n: int = 3000) -> str:
        return (self.home / f"{name}.log").read_text()[-n:]

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
            log.close()
        survivors = [name for name, (proc, _) in self.procs.items() if not _group_gone(proc.pid, 30)]
        for name in survivors:
            os.killpg(self.procs[name][0].pid, signal.SIGKILL)
        assert not survivors, f"processes outlived SIGTERM by 30 s: {survivors}"


def _group_gone(pgid: int, timeout: float) -> bool:
    """Whether every process of the group has exited within ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _reachable()
    import boto3
    import redis

    home = tmp_path_factory.mktemp("distributed")
    tag = uuid.uuid4().hex[:8]
    af_db, mlflow_db = f"mrnet_af_{tag}", f"mrnet_mlflow_{tag}"
    admin = _databases([af_db, mlflow_db])
    redis.Redis.from_url(REDIS_URL).flushdb()
    api, s3_port, mlflow_port = free_port(), free_port(), free_port()
    s3 = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
          "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    env = os.environ | s3 | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{af_db}",
        "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@127.0.0.1:5432/{af_db}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__API__PORT": str(api), "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.worker_name.name", "PYTHONPATH": str(REPO),
        "AIRFLOW__MRNET__RETRAIN_CRON": "0 0 29 2 *", "MRNET_HOME": str(REPO),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "AIRFLOW__MRNET__MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",  # the UI plugin's links
        "AIRFLOW__MRNET__CONFIG_OVERRIDES": "artifact_root=s3://mrnet/artifacts",  # ... and its releases pages
        "AIRFLOW__MRNET__ALLOWED_ROOTS": f"s3://mrnet,{tempfile.gettempdir()},{RAW}",  # where the trigger's paths lie
        "PATH": f"{BIN}:{os.environ['PATH']}"}
    procs = Processes(home, env)
    try:
        procs.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
        wait("the S3 endpoint", lambda: _up(f"http://127.0.0.1:{s3_port}/"), 60)
        bucket = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        bucket.create_bucket(Bucket="mrnet")
        procs.start("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                               "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{mlflow_db}",
                               "--artifacts-destination", "s3://mrnet/mlflow-artifacts", "--workers", "1"])
        airflow = str(BIN / "airflow")
        migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        subprocess.run([airflow, "pools", "set", "gpu", "3", "GPU slots"], env=env, capture_output=True, check=True)
        procs.start("api-server", [airflow, "api-server", "--port", str(api)])
        procs.start("scheduler", [airflow, "scheduler"])
        procs.start("dag-processor", [airflow, "dag-processor"])
        procs.start("worker-default", [airflow, "celery", "worker", "--queues", "default", "--concurrency", "2",
                                       "--celery-hostname", f"default-{tag}@%h"], MRNET_WORKER_NAME="cpu-worker",
                    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
        procs.start("worker-gpu", [airflow, "celery", "worker", "--queues", "gpu", "--concurrency", "3",
                                   "--celery-hostname", f"gpu-{tag}@%h"], MRNET_WORKER_NAME="gpu-worker",
                    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
        base = f"http://127.0.0.1:{api}"
        wait("the API server", lambda: True if call(base, "/api/v2/monitor/health")[0] == 200 else None, 240)
        wait("the MLflow server", lambda: _up(f"http://127.0.0.1:{mlflow_port}/health"), 120)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = call(base, "/auth/token", method="POST", body={"username": "admin", "password": password})[1]
        token = token["access_token"]
        wait("the DAG to be parsed", lambda: True if call(base, "/api/v2/dags/mrnet_retrain", token)[0] == 200
              else None, 180)
        yield base, token, procs, bucket, env["MLFLOW_TRACKING_URI"]
    finally:
        procs.stop()
        for name in (af_db, mlflow_db):
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_retrain_runs_on_celery_workers_with_pg_tasks_on_the_gpu_queue(cluster, fixture_catalog):
    base, token, procs, bucket, mlflow_uri = cluster
    conf = {"tiny": True, "pgs": PGS, "overrides": ["artifact_root=s3://mrnet/artifacts", f"data.catalog={fixture_catalog}",
                                                    f"data.raw_dir={RAW}", "train.threads=1"]}
    run, state, tis = trigger_and_wait(base, token, conf, 900)
    if os.environ.get("MRNET_BENCH_TIS"):  # bench/distributed.py times the tasks from these
        Path(os.environ["MRNET_BENCH_TIS"]).write_text(json.dumps(tis))
    logs = "\n".join(f"--- {n}\n{procs.tail(n)}" for n in ("scheduler", "worker-default", "worker-gpu"))
    assert state == "success", logs
    gpu_tasks = {"train_pg", "embed_shard", "sparse_autoencoder", "cross_language_autoencoder"}
    where = {(ti["task_id"], ti["map_index"]): (ti["queue"], ti["hostname"]) for ti in tis}
    assert sorted(m for t, m in where if t == "train_pg") == [0, 1, 2]
    assert len([t for t, _ in where if t == "embed_shard"]) > len(PGS)  # tiny: several shards per PG
    for (task, _), (queue, host) in where.items():
        expected = ("gpu", "gpu-worker") if task in gpu_tasks else ("default", "cpu-worker")
        assert (queue, host) == expected, (task, queue, host)

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    champion = client.get_model_version_by_alias("mrnet-release", "champion")
    assert champion.tags["release"] == run["dag_run_id"]
    assert client.get_model_version_by_alias("mrnet-watches", "champion").tags["release"] == run["dag_run_id"]
    keys = {o["Key"] for page in bucket.get_paginator("list_objects_v2").paginate(Bucket="mrnet")
            for o in page.get("Contents", [])}
    assert "artifacts/releases/current.json" in keys
    assert any(k.startswith("artifacts/runs/") and k.endswith("/embeddings/watches/_manifest.json") for k in keys)
    assert any(k.startswith("artifacts/runs/") and "/embeddings/watches/part-00001-of-" in k for k in keys)
    assert any(k.startswith("mlflow-artifacts/") and k.endswith("model.safetensors") for k in keys)

    # the UI plugin over HTTP with a token: the releases page (read from S3) lists this run, and each PG
    # task's "MLflow run" link opens that PG's run on the MLflow server
    status, listing = page(base, "/mrnet/releases", token)
    assert status == 200 and run["dag_run_id"] in listing, listing[-2000:]
    assert page(base, "/mrnet/releases")[0] == 401
    for pg, found in pg_task_links(base, token, run["dag_run_id"], tis).items():
        assert found["MLflow run"].startswith(f"{mlflow_uri}/#/experiments/"), found
        assert client.get_run(found["MLflow run"].rsplit("/", 1)[1]).data.tags["mrnet.pg"] == pg
