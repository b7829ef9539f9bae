"""Every release of an artifact root, newest first, and what one of them holds: the readers
behind the Airflow UI's releases pages (plugins/mrnet_plugin) and any other browser of retrains.

A run that reached ``publish`` left ``runs/<run>/release.json`` (its manifest) and, after the
promotion gate, ``gate.json`` (the decision with its reasons). Which release is champion and
which challenger is what the one pointer says (``manifest.aliased_manifest``: the registry
aliases with tracking, else ``releases/current.json``). Everything goes through ``storage``, so
local disk and S3 read alike; nothing here writes.
"""

from __future__ import annotations

import json

from mrnet.config.base import safe_run_id
from mrnet.io import storage
from mrnet.release import manifest as releases_io

IMAGES = {"table2": ("evaluation", "table2.png"), "curves": ("", "training_curves.png")}


def home_of(cfg) -> str:
    return storage.absolute(cfg.artifact_root)


def run_file(cfg, run_id: str, *parts: str) -> str:
    """A file of one run's folder; ``run_id`` as Airflow spells it or as its folder is named
    (a name that would climb out of ``runs/`` is refused by ``safe_run_id``)."""
    return storage.join(home_of(cfg), "runs", safe_run_id(run_id), *[p for p in parts if p])


def pointers(cfg) -> tuple[dict | None, dict | None, str]:
    """(champion manifest, challenger manifest, where they were looked up)."""
    champion, where = releases_io.manifest_by_alias(cfg, "champion")
    challenger, _ = releases_io.manifest_by_alias(cfg, "challenger")
    return champion, challenger, where


def release_row(cfg, folder: str, champion: str | None, challenger: str | None) -> dict | None:
    """One run folder as a releases-page row, or None when the run published no release."""
    manifest = storage.read_json(storage.join(home_of(cfg), "runs", folder, "release.json"))
    if manifest is None:
        return None
    gate = storage.read_json(storage.join(home_of(cfg), "runs", folder, "gate.json"))
    name = manifest["release"]
    return {"release": name, "folder": folder, "dag_id": manifest.get("dag_id"), "mode": manifest.get("mode"),
            "created": manifest.get("created"), "pgs": sorted(manifest.get("models", {})),
            "registry_version": (manifest.get("registry") or {}).get("release"),
            "gated": gate is not None, "promoted": bool(gate and gate.get("promote")),
            "reasons": (gate or {}).get("reasons", []), "versus": (gate or {}).get("champion"),
            "champion": name == champion, "challenger": name == challenger}


def releases(cfg) -> dict:
    """Every published release under the config's artifact root, newest first, with the
    champion and challenger named (what the Releases page shows)."""
    champion, challenger, where = pointers(cfg)
    names = (champion or {}).get("release"), (challenger or {}).get("release")
    rows = [row for folder in storage.children(storage.join(home_of(cfg), "runs"))
            if (row := release_row(cfg, folder, *names))]
    rows.sort(key=lambda r: r["created"] or "", reverse=True)
    return {"rows": rows, "champion": names[0], "challenger": names[1], "where": where}


def release_manifest(cfg, run_id: str) -> dict:
    manifest = storage.read_json(run_file(cfg, run_id, "release.json"))
    if manifest is None:
        raise FileNotFoundError(f"run {run_id!r} has no release under {home_of(cfg)}/runs (it did not reach publish)")
    return manifest


def comparison(cfg, run_id: str | None = None) -> dict:
    """A release (default: the challenger) judged against the champion, as ``mrnet compare`` and
    the promotion gate see it: the decision rows with verdicts, k-NN stability and the parts."""
    champion, challenger, where = pointers(cfg)
    manifest = release_manifest(cfg, run_id) if run_id else challenger
    if manifest is None:
        raise FileNotFoundError(f"no challenger release under {where}: run mrnet_retrain first")
    summary = json.loads(storage.read_text(manifest["summary"]))
    decision, stable, _ = releases_io.judge(cfg, manifest, summary, champion)
    return {"challenger": manifest, "champion": champion, "decision": decision, "stable": stable,
            "parts": releases_io.parts_table(manifest, champion), "same": bool(champion) and
            champion["release"] == manifest["release"]}


def evaluation(cfg, run_id: str) -> dict | None:
    """One run's downstream evaluation (Table 2, absolute metrics with the baselines, skipped
    tasks with reasons), or None when the run did not evaluate."""
    from mrnet.evaluation import report

    result = storage.read_json(run_file(cfg, run_id, "evaluation", "metrics.json"))
    if result is None:
        return None
    return {"table2": report.table2(result), "rows": result.get("rows", []), "skipped": result.get("skipped", {}),
            "neighbors": storage.exists(run_file(cfg, run_id, "evaluation", "neighbors.html"))}


def image(cfg, run_id: str, which: str) -> bytes | None:
    """A run's plot (``table2`` or ``curves``) as PNG bytes, None when the run has none."""
    folder, name = IMAGES[which]
    try:
        return storage.read_bytes(run_file(cfg, run_id, folder, name))
    except FileNotFoundError:
        return None


def neighbors_page(cfg, run_id: str) -> str | None:
    try:
        return storage.read_text(run_file(cfg, run_id, "evaluation", "neighbors.html"))
    except FileNotFoundError:
        return None
