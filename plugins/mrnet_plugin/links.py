"""Operator extra links on every mrnet task: "MLflow run" and "Model version".

Global links (``global_operator_extra_links``): the API server resolves them when a person opens
a task instance, so nothing is computed or stored by the task itself. A link is empty (Airflow
shows it greyed out) for a DAG that is not mrnet's, without ``[mrnet] mlflow_ui_url``, without
tracking, or before the thing it points at exists. The route comes from mrnet.run.links: a PG
task's nested run (its PG is the task's map label, ``map_index_template``), a derived stage's run,
else the run's parent; the run is the ``start`` task's result (run.json's URI).
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)


def ui_url() -> str:
    from airflow.configuration import conf

    return (conf.get("mrnet", "mlflow_ui_url", fallback="") or "").rstrip("/")


def task_context(ti_key) -> tuple[str | None, str | None]:
    """(run.json URI from the run's ``start`` task, the task instance's map label)."""
    from sqlalchemy import select

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=ti_key.run_id, key="return_value", task_ids="start",
                                                 dag_ids=ti_key.dag_id, map_indexes=-1, limit=1)).first()
        label = session.scalar(select(TaskInstance.rendered_map_index).where(
            TaskInstance.dag_id == ti_key.dag_id, TaskInstance.run_id == ti_key.run_id,
            TaskInstance.task_id == ti_key.task_id, TaskInstance.map_index == ti_key.map_index))
    run_uri = XComModel.deserialize_value(row) if row is not None else None
    return (run_uri if isinstance(run_uri, str) else None), label


def route(ti_key, which: str) -> str:
    base = ui_url()
    if not base or not str(ti_key.dag_id).startswith("mrnet_"):
        return ""
    try:
        run_uri, label = task_context(ti_key)
        if not run_uri:
            return ""
        from mrnet.run import links

        target = links.task_routes(run_uri, ti_key.task_id, label).get(which)
    except Exception as exc:  # a link must never break the task page
        log.warning("mrnet link %s for %s: %s", which, ti_key, exc)
        return ""
    return f"{base}/{target}" if target else ""


class MLflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        return route(ti_key, "mlflow_run")


class ModelVersionLink(BaseOperatorLink):
    name = "Model version"

    def get_link(self, operator, *, ti_key) -> str:
        return route(ti_key, "model_version")
