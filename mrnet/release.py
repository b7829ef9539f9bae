"""End of a run: the summary that names failed PGs, and the release manifest consumers read.

A release is one JSON manifest naming every PG model and embedding file of one run, with
the config and catalog hashes, so a consumer loads one consistent set. The files it
names are run-scoped and never rewritten after the run, so replacing
``releases/current.json`` (atomically) is the whole promotion: nothing half-written is
ever visible. A run with a failed PG writes its summary, raises, and publishes nothing.

Until the model registry lands (MLflow aliases, with a champion/challenger gate), the
``promote`` run param decides whether ``publish`` moves ``releases/current.json``.
"""

from __future__ import annotations

import json
import logging
import time

from mrnet import storage
from mrnet.flow import Run, _now, _record, _stage, load_run, safe_run_id

log = logging.getLogger("mrnet.release")


def current_uri(home: str) -> str:
    return storage.join(home, "releases", "current.json")


def base_release(run_uri: str) -> str:
    """Pin the release a refresh starts from (``base_release.json`` in the run); return its URI."""
    run = load_run(run_uri)
    source = current_uri(run.home)
    if not storage.exists(source):
        raise FileNotFoundError(f"no published release at {source}: a refresh warm-starts from the "
                                "current release, so run mrnet_retrain (promote=true) first")
    uri = run.path("base_release.json")
    storage.write_text(uri, storage.read_text(source))
    log.info("refresh starts from release %s", json.loads(storage.read_text(uri))["release"])
    return uri


def _optional_stage(run: Run, stage: str) -> dict | None:
    return _stage(run, stage) if storage.exists(run.path("stages", f"{stage}.json")) else None


def _pg_result(run: Run, pg: str) -> dict:
    report = json.loads(storage.read_text(run.path("models", pg, "metrics.json")))
    seconds = {s: (_optional_stage(run, f"{s}-{pg}") or {}).get("seconds") for s in ("train", "embed")}
    return report | {"model": run.path("models", pg, "model.safetensors"),
                     "embeddings": run.path("embeddings", f"{pg}.parquet"),
                     "train_s": seconds["train"], "embed_s": seconds["embed"]}


def _failure(run: Run, pg: str) -> str:
    uri = run.path("failures", f"{pg}.json")
    if storage.exists(uri):
        failure = json.loads(storage.read_text(uri))
        return f"{failure['stage']}: {failure['error']}"
    return "did not finish (an upstream task failed or was skipped)"


def report(run_uri: str, embeddings) -> str:
    """Summarize the run (every PG, failed ones included); raise naming the failed PGs.

    ``embeddings``: the embedding URIs the PG tasks returned. A list, or a single string
    (Airflow resolves a mapped output with a single successful instance to its value)."""
    from mrnet.report import write_summary

    embeddings = [embeddings] if isinstance(embeddings, str) else list(embeddings or [])
    run = load_run(run_uri)
    if _optional_stage(run, "validate") is None or _optional_stage(run, "plan") is None:
        raise RuntimeError(f"run {run.run_id} stopped before its PGs ran: validate_catalog or plan_pgs did not "
                           "finish (see that task's log); nothing published")
    pgs = _stage(run, "plan")["pgs"]
    log.info("report: %d embedding file(s) from the PG tasks: %s", len(embeddings), embeddings)
    done = {uri.rsplit("/", 1)[-1].removesuffix(".parquet") for uri in embeddings if storage.exists(uri)}
    results = {pg: _pg_result(run, pg) for pg in pgs if pg in done}
    failed = {pg: _failure(run, pg) for pg in pgs if pg not in done}
    validated = _stage(run, "validate")
    corpus, w2v = _optional_stage(run, "corpus"), _optional_stage(run, "word2vec")
    summary = {"run_id": run.run_id, "dag_id": run.dag_id, "mode": run.mode, "artifact_root": run.root,
               "config_hash": run.cfg.hash(), "catalog": validated["uri"], "quarantine": validated["quarantine"],
               "corpus": corpus, "word2vec": w2v, "pgs": results, "failed": failed,
               "seconds": {"validate": validated["seconds"],
                           "corpus": corpus and corpus["seconds"], "word2vec": w2v and w2v["seconds"],
                           "total": round(time.time() - run.started, 2)}}
    write_summary(summary, run.root, log.info)
    if failed:
        reasons = "; ".join(f"{pg}: {why}" for pg, why in sorted(failed.items()))
        raise RuntimeError(f"{len(failed)} of {len(pgs)} PG(s) failed: {sorted(failed)} (the others finished; "
                           f"nothing published; see {run.path('summary.json')}). {reasons}")
    return run.path("summary.json")


def publish(run_uri: str, summary_uri: str) -> str:
    """Write the run's release manifest; if the run promotes, make it the current release."""
    from mrnet.embed import model_version

    run = load_run(run_uri)
    summary = json.loads(storage.read_text(summary_uri))
    base = (json.loads(storage.read_text(run.path("base_release.json")))
            if storage.exists(run.path("base_release.json")) else None)
    manifest = {"release": run.run_id, "dag_id": run.dag_id, "mode": run.mode, "created": _now(),
                "config_hash": run.cfg.hash(), "catalog": summary["catalog"],
                "word2vec": (summary.get("word2vec") or {}).get("uri"),
                "base_release": base and base["release"], "summary": summary_uri,
                "models": {pg: {"uri": r["model"], "version": model_version(r["model"])}
                           for pg, r in summary["pgs"].items()},
                "embeddings": {pg: r["embeddings"] for pg, r in summary["pgs"].items()}}
    if base:  # a refresh covers the PGs it refreshed; the others stay as they were released
        manifest["models"] = base["models"] | manifest["models"]
        manifest["embeddings"] = base["embeddings"] | manifest["embeddings"]
    uri = run.path("release.json")
    storage.write_text(uri, json.dumps(manifest, indent=2))
    _record(run, "publish", {"release": uri, "promoted": run.promote})
    if not run.promote:
        log.info("promote=false: release recorded at %s; the current release is unchanged", uri)
        return uri
    current = current_uri(run.home)
    if base and storage.exists(current):
        now = json.loads(storage.read_text(current))["release"]
        if now != base["release"]:
            raise RuntimeError(f"release {now} was published while this refresh ran from {base['release']}; "
                               f"not overwriting it (this run's release stays at {uri})")
    storage.write_text(storage.join(run.home, "releases", f"{safe_run_id(run.run_id)}.json"), json.dumps(manifest, indent=2))
    storage.write_text(current, json.dumps(manifest, indent=2))
    log.info("published release %s → %s", run.run_id, current)
    return uri

