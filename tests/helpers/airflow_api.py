"""Airflow's REST API from a test: a free port, a call with a token, waiting, a triggered run."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, token=None, method="GET", body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"} |
                                 ({"Authorization": f"Bearer {token}"} if token else {}))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, None


def page(base, path, token=None) -> tuple[int, str]:
    """(status, body) of an HTML page, e.g. the UI plugin's (a token, or none: what a stranger sends)."""
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def pg_task_links(base: str, token: str, run_id: str, tis: list[dict]) -> dict[str, dict]:
    """PG (the mapped train_pg's label) → its task instance's extra links, from the REST API the UI calls."""
    path = f"/api/v2/dags/mrnet_retrain/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/train_pg/links"
    out = {}
    for ti in (t for t in tis if t["task_id"] == "train_pg"):
        status, body = call(base, f"{path}?map_index={ti['map_index']}", token)
        assert status == 200, body
        out[ti["rendered_map_index"]] = body["extra_links"]
    return out


def wait(what, probe, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (result := probe()) is not None:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trigger_and_wait(base: str, token: str, conf: dict, timeout: int) -> tuple[dict, str, list[dict]]:
    """Unpause mrnet_retrain, trigger it with ``conf`` as the UI's form does, wait for it to end:
    (the dag run, its final state, its task instances)."""
    assert call(base, "/api/v2/dags/mrnet_retrain", token, "PATCH", {"is_paused": False})[0] == 200
    status, run = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST", {"logical_date": None, "conf": conf})
    assert status == 200, run
    path = f"/api/v2/dags/mrnet_retrain/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"

    def finished():
        state = call(base, path, token)[1]["state"]
        return state if state in ("success", "failed") else None

    state = wait("the triggered run", finished, timeout)
    return run, state, call(base, path + "/taskInstances?limit=100", token)[1]["task_instances"]
