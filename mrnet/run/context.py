"""A run's context: its record (``run.json`` → ``Run``), stage records, cache and tracking.

The run stages (stages.py, derived.py, publish.py) share what is here: every name is public,
and a stage record's file name comes from ``stage_name`` alone. A run lives under
``<artifact_root>/runs/<run_id>/``; a retried task rewrites its own outputs atomically, and PG
training resumes from its checkpoint there. Layout::

    <artifact_root>/
      runs/<run_id>/run.json             resolved config + params; every stage reads it
      runs/<run_id>/catalog/…            validated catalog + quarantine (staging/ while the check tasks run)
      runs/<run_id>/models/<pg>/…        model.safetensors, ckpt.pt, metrics.json
      runs/<run_id>/embeddings/<pg>/part-*.parquet + _manifest.json   one part per shard (encoder/embed.py)
      runs/<run_id>/embeddings/pg_agnostic/<pg>/part-*.parquet + _manifest.json   one part per PG shard
      runs/<run_id>/index/<space>/…      the release's nearest-neighbour index (release/index.py)
      runs/<run_id>/stages/*.json        what each stage produced: URIs, stats, cache hit, seconds
      runs/<run_id>/failures/<pg>.json   why a PG failed (its last attempt)
      runs/<run_id>/summary.{md,json}, training_curves.png, release.json
      cache/corpus/<key>/                keyed by a content hash of the catalog's title/description
      cache/word2vec/<key>/              keyed by the corpus file's hash + word2vec settings
      releases/current.json              the champion release; moved only by ``publish.promote``
      releases/<run_id>.json             every release that became champion

``mode`` is ``retrain`` (paper §3: corpus → word2vec → PG models) or ``refresh`` (paper §6:
warm-start each PG model from the current release, fine-tune on refreshed dynamic labels).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mrnet.config.base import check_segment, safe_run_id
from mrnet.config.schema import Config, load_config
from mrnet.config.trigger import TriggerPolicy, check_trigger
from mrnet.data.pgs import pg_list
from mrnet.io import storage
from mrnet.io.tracking import Tracker

log = logging.getLogger(__name__)
PARAMS = {"config", "pgs", "epochs", "sample_fraction", "promote", "tiny", "overrides"}
CORPUS_FORMAT = "corpus-v1"  # bump when tokenization or the corpus layout changes


@dataclass(frozen=True)
class Run:
    uri: str
    run_id: str
    dag_id: str
    mode: str
    home: str
    root: str
    promote: bool
    started: float
    cfg: Config
    mlflow: dict | None  # {uri, experiment_id, parent}: where this run is tracked; None = off

    @property
    def tracker(self) -> Tracker:
        """Every MLflow call of the run's stages; each does nothing when tracking is off."""
        return Tracker(self.mlflow)

    def path(self, *parts: str) -> str:
        """A file of this run: every segment of ``parts`` is checked, so none can climb out."""
        for part in parts:
            for segment in str(part).split("/"):
                check_segment(segment, "path segment")
        return storage.join(self.root, *parts)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _overrides(params: dict, mode: str) -> list[str]:
    out = list(params.get("overrides") or [])
    if params.get("pgs"):
        out.append(f"pgs={json.dumps(list(params['pgs']))}")
    if params.get("epochs"):
        out.append(f"{'refresh' if mode == 'refresh' else 'train'}.epochs={int(params['epochs'])}")
    if params.get("sample_fraction"):
        out.append(f"data.sample_fraction={float(params['sample_fraction'])}")
    return out


def triggered_config(params: dict, trigger: dict | None, overrides: list[str]) -> Config:
    """The config a run's params name, once a trigger's params keep to its rules (``trigger``: Airflow's
    ``[mrnet] config_dir`` and ``allowed_roots``, config/trigger.py; None: a command-line run, not a trigger)."""
    path = storage.absolute(params.get("config") or "configs/demo.yaml")
    if trigger is not None:
        policy = TriggerPolicy.parse(storage.absolute(trigger["config_dir"]), trigger["allowed_roots"])
        check_trigger(path, list(params.get("overrides") or []), policy)
    return load_config(path, overrides, tiny=bool(params.get("tiny")))


def start_run(params: dict, run_id: str, dag_id: str = "cli", mode: str = "retrain", ui_url: str = "",
              trigger: dict | None = None) -> str:
    """Resolve config + params once for the whole run; write ``run.json``; return its URI.
    ``ui_url``: the MLflow UI's base URL (Airflow's ``[mrnet] mlflow_ui_url``), for the task logs' links;
    ``trigger``: the rules a DAG trigger keeps to (``triggered_config``)."""
    unknown = set(params) - PARAMS
    if unknown:
        raise ValueError(f"unknown run param(s) {sorted(unknown)}; known: {sorted(PARAMS)}")
    cfg = triggered_config(params, trigger, _overrides(params, mode))
    data = cfg.data.model_copy(update={k: storage.absolute(getattr(cfg.data, k))
                                       for k in ("raw_dir", "pg_mapping", "catalog")})
    home = storage.absolute(cfg.artifact_root)
    root = storage.join(home, "runs", safe_run_id(run_id))
    cfg = cfg.model_copy(update={"data": data, "artifact_root": root})
    pg_list(cfg)  # unknown PG names fail here, before any work
    tracked = _start_tracking(cfg, home, run_id, dag_id, mode, ui_url) if cfg.tracking.enabled else None
    run = {"run_id": run_id, "dag_id": dag_id, "mode": mode, "home": home, "root": root,
           "promote": bool(params.get("promote", True)), "params": params, "started": time.time(),
           "started_at": utc_now(), "mlflow": tracked, "config": cfg.model_dump(mode="json")}
    uri = storage.join(root, "run.json")
    storage.write_text(uri, json.dumps(run, indent=2))
    log.info("run %s (%s, %s): %s", run_id, dag_id, mode, root)
    return uri


def _start_tracking(cfg: Config, home: str, run_id: str, dag_id: str, mode: str, ui_url: str) -> dict:
    """The MLflow parent run of this DAG run (found again by its tags on a retry)."""
    from mrnet.io import tracking

    uri = tracking.tracking_uri(cfg, home)
    exp = tracking.experiment_id(uri, cfg.tracking.experiment, home)
    parent = tracking.find_or_create_run(uri, exp, {"mrnet.run_id": run_id, "mrnet.kind": "parent"}, run_id, extra_tags={
        "mrnet.dag_id": dag_id, "mrnet.mode": mode, "mrnet.git_commit": tracking.git_commit(),
        "mrnet.config_hash": cfg.hash()})
    stale = tracking.close_open_runs(uri, exp, run_id, "KILLED", keep=parent)  # left by a killed earlier attempt
    if stale:
        log.warning("MLflow: %d run(s) of an earlier, killed attempt of %s marked KILLED", stale, run_id)
    close_dead_runs(cfg, home, uri, exp, run_id)
    tracking.log_params(uri, parent, cfg)
    tracked = {"uri": uri, "experiment_id": exp, "parent": parent, "ui_url": ui_url.rstrip("/")}
    log.info("MLflow run %s (parent of %s)%s", parent, run_id, run_url(tracked, parent))
    return tracked


def close_dead_runs(cfg: Config, home: str, uri: str, exp: str, current: str) -> None:
    """End the MLflow runs of other DAG runs that no process will end: a run whose folder holds its gate decision
    finished (killed after ``gate.json``, before its MLflow run ended); one without, started more than
    ``retention.running_hours`` ago, is dead (every task has a shorter timeout)."""
    from mrnet.io import tracking

    for parent in tracking.running_parents(uri, exp):
        run_id = parent.data.tags.get("mrnet.run_id")
        if run_id in (None, current):
            continue
        root = storage.join(home, "runs", safe_run_id(run_id))
        age_h = (time.time() - parent.info.start_time / 1000) / 3600
        if storage.exists(storage.join(root, "gate.json")):
            status = "FINISHED"
        elif age_h > cfg.retention.running_hours:
            status = "KILLED"
        else:
            continue  # maybe still running (the other DAG, or a run on another machine)
        closed = tracking.close_open_runs(uri, exp, run_id, status)
        log.warning("MLflow: run %s was left RUNNING by a killed process; %d run(s) marked %s", run_id, closed, status)


def run_url(tracked: dict, mlflow_run: str) -> str:
    """": <URL of the run in the MLflow UI>", or "" without a UI base URL (for log lines)."""
    base = tracked.get("ui_url")
    return f": {base}/#/experiments/{tracked['experiment_id']}/runs/{mlflow_run}" if base else ""


def end_tracking(run_uri: str, status: str) -> None:
    """A run that stopped (FAILED, or KILLED by a signal): end its MLflow runs that are still open."""
    run = load_run(run_uri)
    run.tracker.close_open(run.run_id, status)


def unfinished_run(home: str) -> tuple[str, dict] | None:
    """(run id, params) of the newest run under ``home`` that never reached the promotion gate
    (no gate.json), for ``mrnet run --resume``; None when every run finished."""
    runs = Path(home) / "runs"
    records = [(json.loads(p.read_text()), p.parent) for p in runs.glob("*/run.json")] if runs.is_dir() else []
    unfinished = [r for r, folder in records if not (folder / "gate.json").exists()]
    newest = max(unfinished, key=lambda r: r["started"], default=None)
    return newest and (newest["run_id"], newest["params"])


@functools.lru_cache(maxsize=8)
def load_run(run_uri: str) -> Run:
    r = json.loads(storage.read_text(run_uri))
    return Run(run_uri, r["run_id"], r["dag_id"], r["mode"], r["home"], r["root"], r["promote"],
               r["started"], Config.model_validate(r["config"]), r.get("mlflow"))


def nested_run(run: Run, kind: str, key: str) -> str | None:
    """The MLflow run of one stage (kind ``stage``) or PG (kind ``pg``), reattached on a retry."""
    if not run.tracker:
        return None
    tags = {"mrnet.run_id": run.run_id, "mrnet.kind": kind, f"mrnet.{'pg' if kind == 'pg' else 'stage'}": key}
    mlflow_run = run.tracker.nested(tags, f"{kind}:{key}")
    log.info("MLflow run %s (%s %s of %s)%s", mlflow_run, kind, key, run.run_id, run_url(run.mlflow, mlflow_run))
    return mlflow_run


def track_stage(run: Run, stage: str, metrics: dict, artifacts: tuple[tuple[str, str], ...] = (),
                texts=None) -> None:
    """Log one finished stage as a nested run: metrics, (uri, folder) artifacts, and text files
    from ``texts()`` → {artifact path: text} (called only when tracking is on)."""
    if not run.tracker:
        return
    tracker, run_id = run.tracker, nested_run(run, "stage", stage)
    tracker.metrics(metrics, run_id)
    for artifact, folder in artifacts:
        tracker.artifact(artifact, folder, run_id)
    for path, text in (texts() if texts else {}).items():
        tracker.text(text, path, run_id)
    tracker.finish(run_id)


@dataclass
class StageOutput:
    """What a timed stage records (``stages/<stage>.json``) and tracks (its nested MLflow run);
    ``seconds`` is set when the block ends."""

    record: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # (uri, artifact folder)
    texts: Callable[[], dict] | None = None  # → {artifact path: text}, called only when tracking is on
    seconds: float = 0.0


@contextmanager
def timed_stage(run: Run, stage: str):
    """Time a run stage: the block fills the yielded ``StageOutput``; on success it is recorded
    and tracked with the stage's seconds (one place for what every stage did by hand)."""
    t0, out = time.perf_counter(), StageOutput()
    yield out
    out.seconds = round(time.perf_counter() - t0, 2)
    record_stage(run, stage, out.record | {"seconds": out.seconds})
    track_stage(run, stage, out.metrics | {"seconds": out.seconds}, tuple(out.artifacts), out.texts)


def stage_name(stage: str, pg: str | None = None, shard: int | None = None) -> str:
    """The one name of a stage record: ``validate``, ``train-<pg>``, ``embed-<pg>-<shard:05d>``."""
    return stage + (f"-{pg}" if pg else "") + (f"-{shard:05d}" if shard is not None else "")


def record_stage(run: Run, stage: str, data: dict) -> None:
    storage.write_text(run.path("stages", f"{stage}.json"), json.dumps(data, indent=2, default=str))


def read_stage(run: Run, stage: str) -> dict:
    return json.loads(storage.read_text(run.path("stages", f"{stage}.json")))


def optional_stage(run: Run, stage: str) -> dict | None:
    return read_stage(run, stage) if storage.exists(run.path("stages", f"{stage}.json")) else None


def skip(run: Run, stage: str, why: str) -> str:
    """Record a stage that does not apply (e.g. ``sparse_ae.enabled: false``); its URI is ''."""
    log.info("[%s] skipped: %s", stage, why)
    record_stage(run, stage, {"skipped": why})
    return ""


def base_manifest(run: Run) -> dict | None:
    """The champion manifest a refresh started from (``base_release.json``); None for a retrain."""
    uri = run.path("base_release.json")
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def text_hash(catalog_uri: str, columns=("title", "description")) -> str:
    """Content hash of the text the corpus is built from: a price change keeps it."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(storage.local_path(catalog_uri), pre_buffer=False)
    names = [c for c in columns if c in parquet.schema_arrow.names]
    digest = hashlib.sha256(json.dumps(names).encode())
    for batch in parquet.iter_batches(batch_size=50_000, columns=names):
        for column in batch.columns:
            values = ("" if v is None else v for v in column.to_pylist())
            digest.update("\x1f".join(values).encode("utf-8", "surrogateescape") + b"\x1e")
    return digest.hexdigest()


CACHE_BUILD_SECONDS = 24 * 3600.0  # a cache build's lock: held at most this long (word2vec on 1B products: ~6 h)


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(run: Run, kind: str, key: str, filename: str, build, texts=None) -> str:
    """Reuse ``cache/<kind>/<key>/`` when complete (its meta.json is written last), else build it.
    ``texts(out, stats)`` adds text artifacts to the stage's MLflow run."""
    entry = storage.join(run.home, "cache", kind, key)
    out, marker = storage.join(entry, filename), storage.join(entry, "meta.json")
    with timed_stage(run, kind) as stage:
        hit = storage.exists(marker) and storage.exists(out)
        if not hit:  # one builder per entry: a second run with the same inputs waits, then reuses what it built
            with storage.lock(storage.join(run.home, "locks", f"cache-{kind}-{key}.lock"), CACHE_BUILD_SECONDS,
                              f"the {kind} cache build of run {run.run_id}", wait_seconds=CACHE_BUILD_SECONDS):
                hit = storage.exists(marker) and storage.exists(out)
                if not hit:
                    _, stats = build(out)
                    meta = {"key": key, "stats": stats, "built_by": run.run_id, "created": utc_now()}
                    storage.write_text(marker, json.dumps(meta, indent=2))
                    log.info("[%s] cache miss %s: built %s", kind, key, stats)
        if hit:
            meta = json.loads(storage.read_text(marker))
            log.info("[%s] cache hit %s (built by run %s): inputs unchanged, not rebuilt", kind, key, meta["built_by"])
        stage.record = {"uri": out, "key": key, "cache_hit": hit, "stats": meta["stats"]}
        stage.metrics = {k: v for k, v in meta["stats"].items() if isinstance(v, (int, float))}
        stage.metrics |= {f"health.{k}": v for k, v in (meta["stats"].get("health") or {}).items() if isinstance(v, float)}
        stage.metrics["cache_hit"] = float(hit)
        stage.artifacts = [(out, kind)] if kind == "word2vec" else []
        stage.texts = texts and (lambda: texts(out, meta["stats"]))
    return out


@functools.lru_cache(maxsize=2)
def cached_vectors(uri: str):
    from mrnet.data.word2vec import load_vectors

    return load_vectors(uri)


@functools.lru_cache(maxsize=2)
def cached_subwords(uri: str):
    from mrnet.data.word2vec import load_subwords

    return load_subwords(uri)


@contextmanager
def pg_stage(run: Run, pg: str, stage: str, shard: tuple[int, int] | None = None, record: dict | None = None):
    """Time one PG stage (of one embedding ``shard`` (index, count)) in the PG's MLflow run
    (yielded: its id, or None) and record it with what the block put in ``record``; on failure
    leave ``failures/<pg>.json`` (the report names it), mark the MLflow run FAILED and re-raise."""
    t0 = time.perf_counter()
    where = f"{stage} shard {shard[0] + 1} of {shard[1]}" if shard else stage
    mlflow_run = nested_run(run, "pg", pg)
    try:
        yield mlflow_run
    except Exception as exc:
        log.error("[%s] %s failed: %s: %s", pg, where, type(exc).__name__, exc)  # first: the record may not fit
        try:
            storage.write_text(run.path("failures", f"{pg}.json"), json.dumps(
                {"pg": pg, "stage": where, "error": f"{type(exc).__name__}: {exc}", "at": utc_now(),
                 "traceback": traceback.format_exc()[-4000:]}, indent=2))
        except OSError as err:  # a full disk: the task still fails with its own error, not this one
            log.error("[%s] could not write failures/%s.json either: %s", pg, pg, err)
        if mlflow_run:
            run.tracker.finish(mlflow_run, "FAILED")
        raise
    seconds = round(time.perf_counter() - t0, 2)
    record_stage(run, stage_name(stage, pg, shard[0] if shard else None), {"pg": pg, "seconds": seconds} | (record or {}))
    if mlflow_run:
        run.tracker.metrics({f"{stage}_seconds": seconds}, mlflow_run, shard[0] if shard else 0)
        run.tracker.finish(mlflow_run)


def epoch_logger(run: Run, mlflow_run: str | None, flatten=None):
    """A training loop's per-epoch callback: the epoch's metrics (``flatten(entry)``, default
    the PG models' names), live, with step = epoch. A resumed retry logs only the epochs it
    trains; the earlier attempt logged the others."""
    if not mlflow_run:
        return None
    from mrnet.io.tracking import epoch_metrics

    flatten = flatten or epoch_metrics
    return lambda entry: run.tracker.metrics(flatten(entry), mlflow_run, entry["epoch"])


def run_device(run: Run) -> str:
    """Where this run's models train and embed: ``train.device`` (auto: CUDA when present)."""
    from mrnet.encoder.train import pick_device

    return str(pick_device(run.cfg))
