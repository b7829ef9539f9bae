"""Retention for a year of weekly retrains (``mrnet gc``, the ``mrnet_housekeeping`` DAG; docs/RETENTION.md).

``plan`` decides, per run folder, keep (with every reason that applies) or delete, by
``retention.*`` (config/retention.py). Never deleted: the current champion and challenger (the
one pointer: registry aliases with tracking, else ``releases/current.json``), every release that
was ever champion (``releases/<run>.json``, written at each promotion: the rollback targets), the
last ``keep_last`` runs, runs younger than ``keep_days``, and runs still in progress. In the runs
kept, each PG's ``ckpt.pt`` (the optimizer state, needed only to resume a killed training) goes
once the run has its gate decision.

``execute`` deletes in a safe order, under the lock a promotion takes too (``storage.lock``):
per run, a tombstone (``gc.json``) first, so a killed gc's rerun finishes the folder whatever
else it shows; then the run's MLflow registry versions, runs and artifacts; then its manifests
(release.json, gate.json, run.json), so no reader follows a manifest to deleted files; then the
data; the tombstone last. A dry run reports the same bytes and deletes nothing.
"""

from __future__ import annotations

import json
import logging
import time

from mrnet.config.base import safe_run_id
from mrnet.io import storage
from mrnet.release.manifest import manifest_by_alias

log = logging.getLogger(__name__)

TOMBSTONE = "gc.json"
MANIFESTS = ("release.json", "gate.json", "run.json")
KINDS = ("models", "checkpoints", "embeddings", "other", "mlflow_artifacts")


def lock_uri(home: str) -> str:
    return storage.join(home, "locks", "release.lock")


def kind_of(path: str) -> str:
    """models / checkpoints / embeddings / other, of a path inside a run folder."""
    if path.endswith("ckpt.pt"):
        return "checkpoints"
    if path.endswith(".safetensors"):  # PG encoders, the sparse AE, the cross-language models
        return "models"
    if path.startswith(("embeddings/", "agnostic/")) and path.endswith(".parquet"):
        return "embeddings"
    return "other"  # the validated catalog, corpora, word vectors, reports, stage records


def by_kind(files: dict[str, int]) -> dict[str, int]:
    """{path: bytes} of a run folder → bytes per kind (models, checkpoints, embeddings, other)."""
    out = dict.fromkeys(KINDS[:4], 0)
    for path, size in files.items():
        out[kind_of(path)] += size
    return out


def space(root: str) -> dict[str, int]:
    """Bytes of one run folder by kind (the run summary and MLflow record it: ``space.*``)."""
    return by_kind(storage.sizes(root))


def _run_info(runs: str, folder: str) -> dict:
    """What plan needs of one run folder, from one listing of it and one read of its run.json."""
    root = storage.join(runs, folder)
    files, damaged = storage.sizes(root), None
    try:
        run = (storage.read_json(storage.join(root, "run.json")) if "run.json" in files else None) or {}
    except (ValueError, UnicodeDecodeError) as exc:  # reported and kept: gc never deletes what it cannot read
        run, damaged = {}, f"{storage.join(root, 'run.json')} is not JSON ({exc})"
    return {"folder": folder, "root": root, "files": files, "run_id": run.get("run_id", folder),
            "started": run.get("started"), "mlflow": run.get("mlflow"), "gated": "gate.json" in files,
            "tombstone": TOMBSTONE in files, "damaged": damaged}


def keep_reasons(info: dict, rank: int, protected: dict[str, str], cfg, now: float) -> list[str]:
    r = cfg.retention
    reasons = [why for name, why in protected.items() if name in (info["folder"], "*")]
    if info["damaged"]:
        reasons.append(f"damaged, kept for a person to look at: {info['damaged']}")
    if info["tombstone"]:
        return reasons  # a gc was deleting it when it was killed: finish the job (unless a pointer moved to it)
    age_h = (now - info["started"]) / 3600 if info["started"] else None
    if rank < r.keep_last:
        reasons.append(f"one of the last {r.keep_last}")
    if age_h is not None and age_h < 24 * r.keep_days:
        reasons.append(f"younger than {r.keep_days:g} days")
    if not info["gated"] and age_h is not None and age_h < r.running_hours:
        reasons.append("in progress (no gate decision yet)")
    return reasons


def protected_runs(cfg, home: str) -> dict[str, str]:
    """Run folder → why it can never be deleted: champion, challenger, ever champion. A pointer that cannot be read
    (a damaged releases/current.json) protects every run (``"*"``): gc cannot know what it must keep."""
    out = {}
    for folder in storage.children(storage.join(home, "releases")):
        if folder.endswith(".json") and folder != "current.json":
            out[folder.removesuffix(".json")] = "was champion (a rollback target)"
    for alias in ("challenger", "champion"):
        try:
            manifest, _ = manifest_by_alias(cfg, alias)
        except ValueError as exc:
            log.error("gc deletes no run: the %s pointer cannot be read: %s", alias, exc)
            out["*"] = f"the {alias} pointer is damaged, so gc deletes no run ({exc})"
            continue
        if manifest:
            out[safe_run_id(manifest["release"])] = f"the current {alias}"
    return out


def plan(cfg, now: float | None = None) -> dict:
    """What gc would delete and keep, with the bytes it frees per kind."""
    now = time.time() if now is None else now
    home = storage.absolute(cfg.artifact_root)
    runs = storage.join(home, "runs")
    infos = [_run_info(runs, f) for f in storage.children(runs)]
    infos.sort(key=lambda i: i["started"] or 0, reverse=True)
    protected = protected_runs(cfg, home)
    keep, delete, checkpoints = [], [], []
    for rank, info in enumerate(infos):
        reasons = keep_reasons(info, rank, protected, cfg, now)
        if reasons:
            keep.append(info | {"reasons": reasons})
            if cfg.retention.drop_checkpoints and info["gated"]:
                checkpoints += [{"uri": storage.join(info["root"], p), "bytes": b} for p, b in info["files"].items()
                                if p.endswith("ckpt.pt")]
            continue
        info["bytes"] = by_kind(info["files"]) | {"mlflow_artifacts": _mlflow_bytes(cfg, info)}
        delete.append(info)
    freed = {k: sum(d["bytes"][k] for d in delete) for k in KINDS}
    freed["checkpoints"] += sum(c["bytes"] for c in checkpoints)
    return {"home": home, "keep": keep, "delete": delete, "checkpoints": checkpoints, "freed": freed,
            "planned_at": now}


def _mlflow_bytes(cfg, info: dict) -> int:
    if not (cfg.tracking.enabled and info["mlflow"]):
        return 0
    from mrnet.io import tracking as tr

    try:
        return tr.tracked_bytes(info["mlflow"]["uri"], info["mlflow"]["experiment_id"], info["run_id"])
    except Exception as exc:  # a store that is gone or unreachable: the run folder still goes
        log.warning("gc: MLflow artifacts of %s not counted: %s", info["run_id"], exc)
        return 0


def delete_run(cfg, info: dict) -> dict[str, int]:
    """One run, in the safe order (module docstring); idempotent after a kill."""
    root = info["root"]
    storage.write_text(storage.join(root, TOMBSTONE), json.dumps({"run_id": info["run_id"], "at": time.time()}))
    counts = {}
    if cfg.tracking.enabled and info["mlflow"]:
        from mrnet.io import tracking as tr

        counts = tr.delete_tracked_run(info["mlflow"]["uri"], info["mlflow"]["experiment_id"], info["run_id"],
                                       cfg.tracking.registry_prefix)
    for name in MANIFESTS:
        storage.delete(storage.join(root, name))
    for path in info["files"]:  # the plan's listing: a finished run's folder no longer changes
        if path != TOMBSTONE and path not in MANIFESTS:
            storage.delete(storage.join(root, path))
    storage.delete(storage.join(root, TOMBSTONE))
    storage.remove_empty_dirs(root)
    return counts


def execute(cfg, dry_run: bool = False, now: float | None = None) -> dict:
    """Plan under the release lock and, unless ``dry_run``, delete; returns the report."""
    home = storage.absolute(cfg.artifact_root)
    mlflow = {"versions": 0, "versions_kept_aliased": 0, "mlflow_runs": 0}
    if not storage.children(storage.join(home, "runs")):  # nothing to collect: create nothing, not even a lock
        return {"home": home, "keep": [], "delete": [], "checkpoints": [], "freed": dict.fromkeys(KINDS, 0),
                "planned_at": now, "dry_run": dry_run, "mlflow": mlflow}
    with storage.lock(lock_uri(home), 60 * cfg.retention.lock_stale_minutes, "mrnet gc"):
        planned = plan(cfg, now)
        if not dry_run:
            for info in planned["delete"]:
                for key, n in delete_run(cfg, info).items():
                    mlflow[key] += n
                log.info("gc: deleted run %s", info["run_id"])
            for ckpt in planned["checkpoints"]:
                storage.delete(ckpt["uri"])
    return planned | {"dry_run": dry_run, "mlflow": mlflow}


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def report_text(report: dict) -> str:
    """What gc deleted (or would), and why the rest stays: the CLI's and the task log's text."""
    head = "would delete" if report["dry_run"] else "deleted"
    lines = [f"gc of {report['home']}/runs: {len(report['keep'])} run(s) kept, {len(report['delete'])} {head}"]
    for k in report["keep"]:
        lines.append(f"  {'DAMAGED' if k.get('damaged') else 'keep':<6} {k['run_id']:<44} {'; '.join(k['reasons'])}")
    for d in report["delete"]:
        lines.append(f"  delete {d['run_id']:<44} {mb(sum(d['bytes'].values()))}")
    if report["checkpoints"]:
        lines.append(f"  and {len(report['checkpoints'])} training checkpoint(s) (ckpt.pt) of finished runs kept")
    lines.append("space freed by kind:" if not report["dry_run"] else "space it would free, by kind:")
    lines += [f"  {kind:<17} {mb(n):>12}" for kind, n in report["freed"].items()]
    total = sum(report["freed"].values())
    lines.append(f"  {'total':<17} {mb(total):>12}" + ("  (dry run: nothing deleted)" if report["dry_run"] else ""))
    return "\n".join(lines)
