"""Where one DAG task's work is tracked: its MLflow run and the registry version it made.

The Airflow UI's extra links (plugins/mrnet_plugin) and the task log's "MLflow run" line resolve
through here, so a person goes from a task to its run in one click. The mapping follows the
run's own tracking (context.nested_run): a PG task (train / refresh / embed a shard of a PG) has
the PG's nested run, a derived stage its stage run, and every other task the parent run. Model
versions come from the release manifest's ``registry`` (release/manifest.py), written by publish.
Paths are MLflow UI routes (``#/experiments/<id>/runs/<run>``), for a base URL to prefix.
"""

from __future__ import annotations

from mrnet.io import storage
from mrnet.run.context import load_run

PG_TASKS = ("train_pg", "refresh_pg", "embed_shard")  # mapped over PGs or shards "<pg>/part-…"
STAGE_TASKS = {"sparse_autoencoder": "sparse_autoencoder", "cross_language_autoencoder": "cross_language_autoencoder",
               "evaluate": "evaluate", "validate_catalog": "validate"}
VERSION_OF = {"sparse_autoencoder": "sparse_ae", "cross_language_autoencoder": "crosslingual_ae",
              "publish": "release", "promotion_gate": "release"}


def run_route(experiment_id: str, run_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def version_route(name: str, version: str) -> str:
    return f"#/models/{name}/versions/{version}"


def pg_of(task_id: str, map_label: str | None) -> str | None:
    """The PG a mapped task works on, from its map label (the PG, or a shard id ``<pg>/part-…``)."""
    return map_label.split("/", 1)[0] if task_id in PG_TASKS and map_label else None


def mlflow_run(run_uri: str, task_id: str, map_label: str | None = None) -> str | None:
    """The MLflow run id of one task of the run at ``run_uri`` (None without tracking, or for a
    PG task whose run does not exist yet)."""
    run = load_run(run_uri)
    if not run.tracker:
        return None
    pg = pg_of(task_id, map_label)
    if task_id in PG_TASKS and not pg:
        return None
    if not pg and task_id not in STAGE_TASKS:
        return run.tracker.parent
    tags = ({"mrnet.kind": "pg", "mrnet.pg": pg} if pg else {"mrnet.kind": "stage", "mrnet.stage": STAGE_TASKS[task_id]})
    found = run.tracker.find({"mrnet.run_id": run.run_id} | tags, 1)
    return found[0].info.run_id if found else None


def model_version(run_uri: str, task_id: str, map_label: str | None = None) -> tuple[str, str] | None:
    """(registered model name, version) that this task's work became, once publish registered
    the release; None for a task that registers nothing, or before publish."""
    run = load_run(run_uri)
    release = storage.read_json(run.path("release.json")) if run.tracker else None
    if release is None:
        return None
    registry = release.get("registry") or {}
    part = pg_of(task_id, map_label) if task_id in ("train_pg", "refresh_pg") else VERSION_OF.get(task_id)
    version = registry.get(part) if part else None
    return (f"{run.cfg.tracking.registry_prefix}-{part}", str(version)) if version else None


def task_routes(run_uri: str, task_id: str, map_label: str | None = None) -> dict[str, str]:
    """{"mlflow_run": route, "model_version": route} for the links that exist."""
    routes = {}
    run = load_run(run_uri)
    if (mlflow_run_id := mlflow_run(run_uri, task_id, map_label)):
        routes["mlflow_run"] = run_route(run.tracker.experiment, mlflow_run_id)
    if (version := model_version(run_uri, task_id, map_label)):
        routes["model_version"] = version_route(*version)
    return routes
