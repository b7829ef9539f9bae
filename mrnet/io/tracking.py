"""MLflow tracking and model registry: the only module that imports mlflow.

One DAG run is one MLflow *parent* run, named after the Airflow run id. Each stage and
each PG gets a *nested* run. Every run is found by its tags before it is created:

    mrnet.run_id   the Airflow run id        mrnet.kind   parent | stage | pg
    mrnet.stage    validate, corpus, …      mrnet.pg     the PG, for kind=pg

A retried Airflow task therefore reattaches to its run instead of creating a duplicate.
Metric names are the same in every run, so the MLflow compare view lines runs up:
``val.<task>.loss`` (normalized), ``val.<task>.<metric>``, ``train.<task>.loss``,
``titles_per_s``, ``epoch_seconds``, ``tasks_retired``, ``val_loss_mean`` and ``seconds``.

Registry (MLflow 3 aliases, no stages):
- ``<prefix>-<pg>`` holds one version per trained PG encoder. Its source is the PG run's
  ``model/`` artifact folder, which holds ``model.safetensors``.
- ``<prefix>-release`` holds one version per release manifest (``release/release.json`` of
  the parent run), naming every part's version and the data and config hashes.
- ``challenger`` is set on every successful run. ``champion`` moves only when the promotion gate passes (run/publish.py ``promote``).

Models are loaded by alias (``models:/mrnet-watches@champion``): the version's source folder
is downloaded and read with safetensors. Nothing is unpickled, and no MLflow flavour is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mrnet.config.schema import Config
from mrnet.io import storage

log = logging.getLogger(__name__)


def tracking_uri(cfg: Config, home: str, create: bool = True) -> str:
    """Config, else $MLFLOW_TRACKING_URI, else a SQLite file beside the artifacts. Readers
    (``create=False``: compare, embed, neighbours) never create that file: a mistyped
    artifact root is an error naming it, not a new empty store."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if storage.is_s3(home):
        raise ValueError("artifact_root is on S3: set tracking.uri or MLFLOW_TRACKING_URI to an MLflow server")
    db = Path(home).resolve() / "mlflow.db"
    if not create and not db.exists():
        raise FileNotFoundError(f"no MLflow tracking store at {db}: is artifact_root ({home}) the one your runs used?")
    Path(home).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


@functools.lru_cache(maxsize=4)
def client(uri: str):
    """An MlflowClient whose stores are initialised: a new SQLite store is created and migrated
    under a file lock, so two first runs on a fresh artifact root do not both migrate it."""
    from mlflow import MlflowClient

    try:
        with _store_lock(uri):  # the constructor creates + migrates the tracking store ...
            c = MlflowClient(tracking_uri=uri, registry_uri=uri)
            c.search_registered_models(max_results=1)  # ... and this the registry's
    except Exception as exc:  # mlflow/sqlalchemy errors: one line that names the store
        message = " ".join(str(exc).split("\n")[0].split())
        raise RuntimeError(f"MLflow tracking store {uri}: {message}") from exc
    return c


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock on ``<db>.lock`` beside a SQLite store; nothing for a server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(uri.removeprefix("sqlite:///") + ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(uri: str, name: str, home: str) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = storage.join(home, "mlflow-artifacts") if uri.startswith("sqlite") else None
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by a concurrent task
        return c.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    if os.environ.get("MRNET_GIT_COMMIT"):
        return os.environ["MRNET_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.environ.get("MRNET_HOME", os.getcwd()))
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_or_create_run(uri: str, exp_id: str, tags: dict[str, str], name: str,
                       parent: str | None = None, extra_tags: dict[str, str] | None = None) -> str:
    """The run carrying exactly these identifying ``tags``, reopened; else a new one."""
    found = find_runs(uri, exp_id, tags, max_results=1)
    if found:
        run_id = found[0].info.run_id
        client(uri).update_run(run_id, status="RUNNING")
        log.info("MLflow: reattached to run %s (%s)", run_id, name)
        return run_id
    extra = ({"mlflow.parentRunId": parent} if parent else {}) | (extra_tags or {})
    return client(uri).create_run(exp_id, tags=tags | extra, run_name=name).info.run_id


def find_runs(uri: str, exp_id: str, tags: dict[str, str], max_results: int = 1000) -> list:
    """The runs carrying all of these tags."""
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in sorted(tags.items()))
    return list(client(uri).search_runs([exp_id], filter_string=query, max_results=max_results))


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client(uri).set_tag(run_id, key, value)


def log_params(uri: str, run_id: str, cfg: Config) -> None:
    """The full resolved config, flattened to ``section.key`` params (values ≤ 6000 chars)."""
    from mlflow.entities import Param

    flat: dict[str, str] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = json.dumps(node) if not isinstance(node, str) else node

    walk("", cfg.model_dump(mode="json", exclude={"tasks"}))
    for task in cfg.tasks:
        flat[f"task.{task.name}"] = json.dumps(task.model_dump(mode="json", exclude_defaults=True))
    existing = client(uri).get_run(run_id).data.params
    params = [Param(k, v[:6000]) for k, v in sorted(flat.items()) if k not in existing]
    for start in range(0, len(params), 100):
        client(uri).log_batch(run_id, params=params[start:start + 100])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items()) if v is not None]
    for start in range(0, len(batch), 1000):
        client(uri).log_batch(run_id, metrics=batch[start:start + 1000])


def epoch_metrics(entry: dict) -> dict[str, float]:
    """One history entry of train.fit → flat, consistently named metrics."""
    out = {"titles_per_s": entry["titles_per_s"], "epoch_seconds": entry["seconds"],
           "tasks_retired": len(entry.get("retired", []))}
    out |= {f"train.{task}.loss": loss for task, loss in entry["train_loss"].items()}
    for task, values in entry["val"].items():
        out |= {f"val.{task}.{name}": value for name, value in values.items() if name != "n"}
    losses = [v["loss"] for task, v in entry["val"].items() if task not in entry.get("retired", [])]
    if losses:  # over the tasks still trained, as early stopping scores an epoch
        out["val_loss_mean"] = sum(losses) / len(losses)
    return out


def log_artifact(uri: str, run_id: str, artifact_uri: str, folder: str) -> None:
    """Copy a (local or s3://) file into the run's artifacts under ``folder``."""
    client(uri).log_artifact(run_id, str(storage.local_path(artifact_uri)), folder)


def log_text(uri: str, run_id: str, text: str, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        target.write_text(text)
        client(uri).log_artifact(run_id, str(target), str(Path(path).parent) if "/" in path else None)


def finish(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


def close_open_runs(uri: str, exp_id: str, run_id: str, status: str, keep: str | None = None) -> int:
    """Mark every still-RUNNING MLflow run of DAG run ``run_id`` (parent and nested) ``status``
    (FAILED or KILLED), except ``keep``; returns how many. MLflow never ends a run whose
    process died."""
    open_runs = [r for r in find_runs(uri, exp_id, {"mrnet.run_id": run_id})
                 if r.info.status == "RUNNING" and r.info.run_id != keep]
    for r in open_runs:
        client(uri).set_terminated(r.info.run_id, status)
    return len(open_runs)


@dataclasses.dataclass(frozen=True)
class Tracker:
    """Where one run is tracked (``info``: ``uri``, ``experiment_id``, ``parent``, ``ui_url``; None when tracking is
    off) and the calls its stages make. Each call does nothing when tracking is off, so a stage logs without asking
    whether it may; ``run_id`` None means the run's parent."""

    info: dict | None = None

    def __bool__(self) -> bool:
        return self.info is not None

    @property
    def uri(self) -> str | None:
        return self.info["uri"] if self.info else None

    @property
    def parent(self) -> str | None:
        return self.info["parent"] if self.info else None

    @property
    def experiment(self) -> str | None:
        return self.info["experiment_id"] if self.info else None

    def metrics(self, values: dict, run_id: str | None = None, step: int = 0) -> None:
        if self.info and values:
            log_metrics(self.uri, run_id or self.parent, values, step)

    def tags(self, tags: dict[str, str], run_id: str | None = None) -> None:
        if self.info:
            set_tags(self.uri, run_id or self.parent, tags)

    def artifact(self, path: str, folder: str, run_id: str | None = None) -> None:
        if self.info:
            log_artifact(self.uri, run_id or self.parent, path, folder)

    def text(self, text: str, path: str, run_id: str | None = None) -> None:
        if self.info:
            log_text(self.uri, run_id or self.parent, text, path)

    def finish(self, run_id: str | None = None, status: str = "FINISHED") -> None:
        if self.info:
            finish(self.uri, run_id or self.parent, status)

    def nested(self, tags: dict[str, str], name: str) -> str | None:
        """The nested run carrying ``tags`` under the parent, reattached on a retry (None when off)."""
        return find_or_create_run(self.uri, self.experiment, tags, name, parent=self.parent) if self.info else None

    def find(self, tags: dict[str, str], max_results: int = 1000) -> list:
        return find_runs(self.uri, self.experiment, tags, max_results) if self.info else []

    def close_open(self, dag_run_id: str, status: str) -> int:
        return close_open_runs(self.uri, self.experiment, dag_run_id, status) if self.info else 0


def running_parents(uri: str, exp_id: str) -> list:
    """The parent runs (one per DAG run) that MLflow still has RUNNING."""
    query = "attributes.status = 'RUNNING' and tags.`mrnet.kind` = 'parent'"
    return list(client(uri).search_runs([exp_id], filter_string=query, max_results=1000))


def artifact_uri(uri: str, run_id: str, path: str) -> str:
    return client(uri).get_run(run_id).info.artifact_uri.rstrip("/") + "/" + path


def register(uri: str, name: str, source: str, run_id: str, tags: dict[str, str]) -> str:
    """A new version of registered model ``name`` (created on first use); returns the version."""
    c = client(uri)
    try:
        c.get_registered_model(name)
    except Exception:
        try:
            c.create_registered_model(name, tags={"mrnet": "true"})
        except Exception:  # created meanwhile
            pass
    for version in c.search_model_versions(f"name = {_quote(name)} and run_id = {_quote(run_id)}"):
        if version.source == source:  # a retried task: the version exists already
            return str(version.version)
    return str(c.create_model_version(name, source, run_id=run_id, tags=tags).version)


def set_alias(uri: str, name: str, alias: str, version: str) -> None:
    client(uri).set_registered_model_alias(name, alias, version)


def version_by_alias(uri: str, name: str, alias: str) -> dict | None:
    """{version, source, run_id, tags} of ``name@alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        v = client(uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return {"name": name, "version": str(v.version), "source": v.source, "run_id": v.run_id, "tags": dict(v.tags)}


def download(uri: str, source: str) -> Path:
    """A local copy of a version's source folder (artifact URI)."""
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=source, tracking_uri=uri))


def parse_model_uri(text: str) -> tuple[str, str]:
    """``models:/<name>@<alias>`` → (name, alias)."""
    if not text.startswith("models:/") or "@" not in text:
        raise ValueError(f"{text!r}: expected models:/<name>@<alias>, e.g. models:/mrnet-watches@champion")
    name, alias = text[len("models:/"):].split("@", 1)
    return name, alias


def resolve_model(uri: str, text: str) -> str:
    """``models:/mrnet-<pg>@<alias>`` → the local path of that version's model.safetensors."""
    name, alias = parse_model_uri(text)
    version = version_by_alias(uri, name, alias)
    if version is None:
        raise ValueError(f"{text}: alias {alias!r} is not set on registered model {name!r} ({uri})")
    path = download(uri, version["source"]) / "model.safetensors"
    if not path.exists():
        raise ValueError(f"{text}: version {version['version']} has no model.safetensors at {version['source']}")
    return str(path)


def tracked_bytes(uri: str, exp_id: str, run_id: str) -> int:
    """Bytes of the artifacts of every MLflow run of DAG run ``run_id`` (parent and nested)."""
    total = 0
    for r in find_runs(uri, exp_id, {"mrnet.run_id": run_id}):
        total += _artifact_bytes(uri, r.info.run_id, "")
    return total


def _artifact_bytes(uri: str, mlflow_run: str, path: str) -> int:
    total = 0
    for item in client(uri).list_artifacts(mlflow_run, path or None):
        total += _artifact_bytes(uri, mlflow_run, item.path) if item.is_dir else int(item.file_size or 0)
    return total


def delete_tracked_run(uri: str, exp_id: str, run_id: str, prefix: str) -> dict[str, int]:
    """Forget DAG run ``run_id`` in MLflow (retention, release/retention.py): its registry
    versions first (so no version points at a deleted run; a version that holds an alias is
    kept and counted), then each run's artifacts and the run itself. Idempotent: a rerun after a
    kill finds what is left. Returns counts."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    c = client(uri)
    counts = {"versions": 0, "versions_kept_aliased": 0, "mlflow_runs": 0}
    for v in c.search_model_versions(f"tags.release = {_quote(run_id)}"):
        if not v.name.startswith(f"{prefix}-"):
            continue
        if v.aliases:
            counts["versions_kept_aliased"] += 1
            continue
        c.delete_model_version(v.name, v.version)
        counts["versions"] += 1
    for r in find_runs(uri, exp_id, {"mrnet.run_id": run_id}):
        with contextlib.suppress(Exception):  # an artifact store that cannot delete (e.g. read-only): the run still goes
            get_artifact_repository(r.info.artifact_uri).delete_artifacts()
        c.delete_run(r.info.run_id)
        counts["mlflow_runs"] += 1
    return counts
