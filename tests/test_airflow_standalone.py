"""`make airflow` for real: airflow standalone (API server, scheduler, DAG processor, LocalExecutor
on SQLite) with this checkout's DAGs, driven through the REST API the UI's trigger form uses.

A bad param is refused with HTTP 400 and a clear message; a good tiny trigger runs to success,
with the PG tasks mapped three ways on the `gpu` pool and queue.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import RAW, REPO
from tests.helpers.airflow_api import call, free_port, trigger_and_wait, wait

pytestmark = pytest.mark.slow  # a full stack or several full runs (make test-fast leaves it out)

PGS = ["watches", "beverages", "automotive"]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone")
    port = free_port()
    env = os.environ | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "MRNET_HOME": str(REPO),
        "AIRFLOW__MRNET__RETRAIN_CRON": "0 0 29 2 *",  # no scheduled run of the DAG during the test
        "AIRFLOW__SCHEDULER__WORKER_LOG_SERVER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "gpu", "2", "GPU slots"], env=env, capture_output=True, check=True)
    log = open(home / "standalone.log", "w")
    proc = subprocess.Popen([airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        wait("the API server", lambda: True if call(base, "/api/v2/monitor/health")[0] == 200 else None, 240)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        status, body = call(base, "/auth/token", method="POST", body={"username": "admin", "password": password})
        assert status in (200, 201), body
        token = body["access_token"]
        wait("the DAG to be parsed",
              lambda: True if call(base, "/api/v2/dags/mrnet_retrain", token)[0] == 200 else None, 120)
        yield base, token, home
    finally:  # SIGINT is standalone's own shutdown path; then nothing of the group may outlive the test
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def test_trigger_refuses_bad_params_with_a_clear_message(standalone):
    base, token, _ = standalone
    status, body = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST",
                         {"logical_date": None, "conf": {"epochs": 0}})
    assert status == 400
    assert "Invalid input for param epochs: 0 is less than the minimum of 1" in body["detail"]
    status, body = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST",
                         {"logical_date": None, "conf": {"pgs": "watches"}})
    assert status == 400 and "Invalid input for param pgs" in body["detail"]


def test_triggered_tiny_run_succeeds_on_the_scheduler(standalone, fixture_catalog, tmp_path):
    base, token, home = standalone
    catalog = fixture_catalog
    conf = {"tiny": True, "pgs": PGS, "overrides": [f"artifact_root={tmp_path / 'home'}", f"data.catalog={catalog}",
                                                    f"data.raw_dir={RAW}", "train.threads=1"]}
    run, state, tis = trigger_and_wait(base, token, conf, 600)
    trained = [ti for ti in tis if ti["task_id"] == "train_pg"]
    assert state == "success", (home / "standalone.log").read_text()[-5000:]
    assert sorted(ti["map_index"] for ti in trained) == [0, 1, 2]
    assert {(ti["pool"], ti["queue"], ti["state"]) for ti in trained} == {("gpu", "gpu", "success")}
    shards = {ti["rendered_map_index"] for ti in tis if ti["task_id"] == "embed_shard"}  # named in the UI
    assert "watches/part-00000-of-00003" in shards and len(shards) > len(PGS), shards
    release = json.loads((tmp_path / "home" / "releases" / "current.json").read_text())
    assert release["release"] == run["dag_run_id"] and set(release["models"]) == set(PGS)
