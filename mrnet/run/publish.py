"""The run stages at the end of a run: the summary that names failed PGs (``report``), the
release manifest and its registration (``publish``) and the promotion gate (``promote``);
``base_release`` pins the champion a refresh starts from. What a manifest is, and how the
champion pointer moves, is release/manifest.py's; this module gives it a run.

A release is one JSON manifest naming every PG model and embedding file of one run, with
the config and catalog hashes, so a consumer loads one consistent set. The files it
names are run-scoped and never rewritten after the run, so moving the ``champion`` alias
and replacing ``releases/current.json`` (atomically) is the whole promotion: nothing
half-written is ever visible. A run with a failed PG writes its summary, raises, and
publishes nothing. ``publish`` registers a release as ``challenger``; ``promote`` runs the
gate (release/gate.py) and moves ``champion`` only when it passes (``promote=false``: not gated).
"""

from __future__ import annotations

import json
import logging
import time

from mrnet.io import storage
from mrnet.release.manifest import (PARTS, aliased_manifest, current_uri, judge, move_aliases, parts_table,
                                    publish_champion, repair_champion)
from mrnet.run.context import (Run, base_manifest, load_run, optional_stage, read_stage, record_stage, stage_name,
                               utc_now)

log = logging.getLogger(__name__)


def base_release(run_uri: str) -> str:
    """Pin the champion release a refresh starts from (``base_release.json``); return its URI."""
    run = load_run(run_uri)
    champion = champion_manifest(run)
    if champion is None:
        raise FileNotFoundError(f"no champion release (registry alias or {current_uri(run.home)}): a refresh "
                                "warm-starts from the champion, so run mrnet_retrain (promote=true) first")
    uri = run.path("base_release.json")
    storage.write_text(uri, json.dumps(champion, indent=2))
    log.info("refresh starts from release %s", champion["release"])
    return uri


def _pg_result(run: Run, pg: str, shards: list[dict]) -> dict:
    report = json.loads(storage.read_text(run.path("models", pg, "metrics.json")))
    train = (optional_stage(run, stage_name("train", pg)) or {}).get("seconds")
    return report | {"model": run.path("models", pg, "model.safetensors"),
                     "embeddings": run.path("embeddings", pg), "embed_shards": len(shards),
                     "products_embedded": sum(s["products"] for s in shards),
                     "train_s": train, "embed_s": round(sum(s["seconds"] for s in shards), 2)}


def _commit_embeddings(run: Run, planned: dict[str, list[str]], written: list[str]) -> tuple[dict, dict]:
    """Commit each PG whose every planned shard was written (its ``_manifest.json``); return
    ({pg: shard records}, {pg: why not}) for the PGs with a model."""
    from mrnet.encoder.embed import commit_dataset, parse_shard

    written = {uri.rsplit("/embeddings/", 1)[-1].removesuffix(".parquet") for uri in written}
    done, missing = {}, {}
    for pg, shards in planned.items():
        absent = [s for s in shards if s not in written]
        if absent:
            missing[pg] = f"{len(absent)} of {len(shards)} embedding shard(s) missing, e.g. {absent[0]}"
            continue
        records = [read_stage(run, stage_name("embed", pg, parse_shard(s)[1])) for s in shards]
        commit_dataset(run.path("embeddings", pg), [{"uri": run.path("embeddings", f"{s}.parquet"),
                                                     "rows": r["products"]} | r for s, r in zip(shards, records)],
                       records[0]["model_version"])  # every shard of a PG runs the same model
        done[pg] = records
    return done, missing


def _failure(run: Run, pg: str) -> str:
    uri = run.path("failures", f"{pg}.json")
    if storage.exists(uri):
        failure = json.loads(storage.read_text(uri))
        return f"{failure['stage']}: {failure['error']}"
    return ("did not finish and left no failure record: an upstream task failed or was skipped, or the task could "
            "not write its record (a full disk?); its task log has the error")


def _track_report(run: Run, summary: dict) -> None:
    """Per-PG headline metrics, durations and the summary files on the parent run."""
    if not run.tracker:
        return
    from mrnet.release.summary import pg_rows

    metrics = {f"seconds.{k}": v for k, v in summary["seconds"].items() if v is not None}
    for row in pg_rows(summary):
        metrics |= {f"{row['pg']}.val_loss_mean": row["val_loss"], f"{row['pg']}.titles_per_s": row["titles_per_s"]}
    metrics |= {"pgs_trained": len(summary["pgs"]), "pgs_failed": len(summary["failed"])}
    metrics |= {f"space.{kind}_bytes": float(n) for kind, n in summary["space"].items()}
    run.tracker.metrics(metrics)
    for name in ("summary.md", "summary.json", "training_curves.png"):
        if storage.exists(run.path(name)):
            run.tracker.artifact(run.path(name), "summary")
    if summary["failed"]:
        run.tracker.finish(status="FAILED")


def report(run_uri: str, embeddings) -> str:
    """Commit the PGs whose every embedding shard is written, summarize the run (every PG,
    failed ones included) and raise naming the failed PGs.

    ``embeddings``: the part URIs the shard tasks returned. A list, or a single string
    (Airflow resolves a mapped output with a single successful instance to its value)."""
    from mrnet.release.retention import space
    from mrnet.release.summary import write_summary

    embeddings = [embeddings] if isinstance(embeddings, str) else list(embeddings or [])
    run = load_run(run_uri)
    validated, planned = optional_stage(run, "validate"), optional_stage(run, "plan")
    if validated is None or planned is None:
        raise RuntimeError(f"run {run.run_id} stopped before its PGs ran: validate_catalog or plan_pgs did not "
                           "finish (see that task's log); nothing published")
    pgs = planned["pgs"]
    log.info("report: %d embedding part(s) from the shard tasks", len(embeddings))
    done, missing = _commit_embeddings(run, (optional_stage(run, "embed_plan") or {}).get("shards", {}), embeddings)
    results = {pg: _pg_result(run, pg, done[pg]) for pg in pgs if pg in done}
    failed = {pg: _failure(run, pg) + (f" ({missing[pg]})" if pg in missing else "") for pg in pgs if pg not in done}
    corpus, w2v = optional_stage(run, "corpus"), optional_stage(run, "word2vec")
    summary = {"run_id": run.run_id, "dag_id": run.dag_id, "mode": run.mode, "artifact_root": run.root,
               "config_hash": run.cfg.hash(), "catalog": validated["uri"], "quarantine": validated["quarantine"],
               "corpus": corpus, "word2vec": w2v, "pgs": results, "failed": failed,
               "skipped": planned.get("skipped", {}),
               "seconds": {"validate": validated["seconds"],
                           "corpus": corpus and corpus["seconds"], "word2vec": w2v and w2v["seconds"],
                           "total": round(time.time() - run.started, 2)},
               "space": space(run.root)}  # bytes by kind at report time (release/retention.py)
    write_summary(summary, run.root, log.info)
    _track_report(run, summary)
    if failed:
        reasons = "; ".join(f"{pg}: {why}" for pg, why in sorted(failed.items()))
        raise RuntimeError(f"{len(failed)} of {len(pgs)} PG(s) failed: {sorted(failed)} (the others finished; "
                           f"nothing published; see {run.path('summary.json')}). {reasons}")
    return run.path("summary.json")


def model_file(uri: str) -> dict:
    """A model's manifest entry: its version (the first 12 hex digits of its SHA-256), bytes and SHA-256."""
    record = storage.file_record(storage.local_path(uri))
    return {"version": record["sha256"][:12]} | record


def _manifest(run: Run, summary: dict, summary_uri: str, base: dict | None) -> dict:
    validated = read_stage(run, "validate")
    manifest = {"release": run.run_id, "dag_id": run.dag_id, "mode": run.mode, "created": utc_now(),
                "config_hash": run.cfg.hash(), "catalog": summary["catalog"],
                "catalog_hash": validated.get("catalog_hash"),
                "catalog_file": validated["quarantine"].get("catalog_file"),
                "word2vec": (summary.get("word2vec") or {}).get("uri"),
                "base_release": base and base["release"], "summary": summary_uri,
                "summary_file": storage.file_record(storage.local_path(summary_uri)),
                "models": {pg: {"uri": r["model"]} | model_file(r["model"]) for pg, r in summary["pgs"].items()},
                "embeddings": {pg: r["embeddings"] for pg, r in summary["pgs"].items()},
                "embedding_dtype": run.cfg.embed.dtype}
    if run.cfg.index.enabled:  # built by the build_index task after publish, committed by its _manifest.json
        manifest["index"] = {"uri": run.path("index")}
    manifest |= _parts(run)
    if base:  # a refresh covers the PGs it refreshed; the others stay as they were released
        for key in ("models", "embeddings", "registry"):
            manifest[key] = base.get(key, {}) | manifest.get(key, {})
        for key in PARTS:  # e.g. the cross-language model, which a refresh does not retrain
            if key not in manifest and key in base:
                manifest[key] = base[key]
    return manifest


def _parts(run: Run) -> dict:
    """The derived stages' outputs (derived.py) as manifest sections."""
    out = {}
    sae, encoded = optional_stage(run, "sparse_autoencoder"), optional_stage(run, "agnostic_embeddings")
    if sae and "model" in sae and encoded:
        out["agnostic"] = {"model": sae["model"]} | model_file(sae["model"]) | {
            "embeddings": encoded["uri"], "dim": sae["dim"], "val": sae["val"]}
    ev = optional_stage(run, "evaluate")
    if ev and "uri" in ev:
        from mrnet.release.gate import gated_metrics

        out["evaluation"] = {"metrics": ev["uri"], "report": ev["report"],
                             "files": {uri: storage.file_record(storage.local_path(uri)) for uri in (ev["uri"], ev["report"])},
                             "gated": gated_metrics(ev["metrics"], ev.get("features")), "features": ev.get("features"),
                             "skipped": ev["skipped"], "settings": run.cfg.section_hash("evaluation")}
    xl = optional_stage(run, "cross_language_autoencoder")
    if xl and "uri" in xl:
        out["crosslingual"] = {"model": xl["model"]} | model_file(xl["model"]) | {
            "report": xl["uri"], "report_file": storage.file_record(storage.local_path(xl["uri"])),
            "mrr": {m: row["mrr"] for m, row in xl["retrieval"].items()}}
    return out


def _register(run: Run, manifest: dict, summary_uri: str) -> dict[str, str]:
    """Register this run's PG encoders and the release; set ``challenger`` on all of them."""
    from mrnet.io import tracking

    tracker, prefix, registry = run.tracker, run.cfg.tracking.registry_prefix, dict(manifest.get("registry", {}))
    uri = tracker.uri
    pg_runs = {r.data.tags["mrnet.pg"]: r.info.run_id
               for r in tracker.find({"mrnet.run_id": run.run_id, "mrnet.kind": "pg"})}
    for pg, model in manifest["models"].items():
        if pg not in pg_runs:
            continue  # carried over from the base release: its version is in base["registry"]
        source = (tracking.artifact_uri(uri, pg_runs[pg], "model") if run.cfg.tracking.log_weights
                  else model["uri"].rsplit("/", 1)[0])
        registry[pg] = tracking.register(uri, f"{prefix}-{pg}", source, pg_runs[pg],
                                         {"release": run.run_id, "sha256": model["version"], "pg": pg})
    stage_runs = {r.data.tags["mrnet.stage"]: r.info.run_id
                  for r in tracker.find({"mrnet.run_id": run.run_id, "mrnet.kind": "stage"})}
    for key, (stage, part) in PARTS.items():
        if key in manifest and stage in stage_runs:  # else carried over from the base release
            model = manifest[key]["model"]
            source = (tracking.artifact_uri(uri, stage_runs[stage], "model") if run.cfg.tracking.log_weights
                      else model.rsplit("/", 1)[0])
            registry[part] = tracking.register(uri, f"{prefix}-{part}", source, stage_runs[stage],
                                               {"release": run.run_id, "sha256": manifest[key]["version"]})
    tracker.text(json.dumps(manifest | {"registry": registry}, indent=2), "release/release.json")
    registry["release"] = tracking.register(
        uri, f"{prefix}-release", tracking.artifact_uri(uri, tracker.parent, "release"), tracker.parent,
        {"release": run.run_id, "manifest": run.path("release.json"), "summary": summary_uri,
         "config_hash": manifest["config_hash"], "catalog_hash": str(manifest["catalog_hash"])})
    move_aliases(uri, prefix, registry, "challenger")
    return registry


def champion_manifest(run: Run) -> dict | None:
    return aliased_manifest(run.cfg, run.home, run.tracker.uri, "champion")


def _gate(run: Run, manifest: dict, summary: dict, champion: dict | None) -> dict:
    """Decide; log the decision, its reasons and the stability metric (file + MLflow)."""
    decision, stable, text = judge(run.cfg, manifest, summary, champion, verify=True)
    text += parts_table(manifest, champion)
    decision |= {"champion": champion and champion["release"], "challenger": run.run_id,
                 f"knn_overlap_at_{run.cfg.gate.stability_k}": stable}
    storage.write_text(run.path("compare.txt"), text)  # gate.json: once the decision is carried out (_promote)
    log.info("promotion gate, %s vs champion %s:\n%s", run.run_id, decision["champion"], text)
    run.tracker.text(json.dumps(decision, indent=2), "gate/decision.json")
    run.tracker.text(text, "gate/compare.txt")
    run.tracker.tags({"mrnet.gate": "promoted" if decision["promote"] else "refused"})
    run.tracker.metrics({f"stability.knn_overlap_at_{run.cfg.gate.stability_k}.{pg}": v for pg, v in stable.items()}
                        | {"gate.promoted": float(decision["promote"])})
    return decision


def publish(run_uri: str, summary_uri: str, parts=()) -> str:
    """Write the release manifest and register it (PG encoders, autoencoders, release) as
    ``challenger``. ``parts``: the autoencoder stages' URIs (an Airflow dependency; their
    stage records are what is read)."""
    run = load_run(run_uri)
    summary = json.loads(storage.read_text(summary_uri))
    base = base_manifest(run)
    manifest = _manifest(run, summary, summary_uri, base)
    if run.tracker:  # the registry is MLflow's
        with release_lock(run, "publish"):  # gc reads the challenger alias under the same lock
            manifest["registry"] = _register(run, manifest, summary_uri)
    uri = run.path("release.json")
    storage.write_text(uri, json.dumps(manifest, indent=2))
    record_stage(run, "publish", {"release": uri})
    log.info("release %s recorded at %s%s", run.run_id, uri, " and registered as challenger" if run.tracker else "")
    return uri


def promote(run_uri: str, release_uri: str) -> str:
    """The promotion gate: compare with the champion, log the table and the reasons, and move
    ``champion`` + ``releases/current.json`` only when the gate passes. Returns gate.json."""
    run = load_run(run_uri)
    manifest = json.loads(storage.read_text(release_uri))
    summary = json.loads(storage.read_text(manifest["summary"]))
    with release_lock(run, "promotion_gate"):
        _promote(run, manifest, summary)
    run.tracker.finish()
    return run.path("gate.json")


def release_lock(run: Run, what: str):
    """The lock gc (release/retention.py) holds while it plans and deletes: a promotion or a new
    challenger waits for it (up to 30 minutes), so gc never deletes what a pointer just moved to."""
    from mrnet.release.retention import lock_uri

    return storage.lock(lock_uri(run.home), 60 * run.cfg.retention.lock_stale_minutes, f"{what} of {run.run_id}",
                        wait_seconds=1800)


def _promote(run: Run, manifest: dict, summary: dict) -> None:
    repair_champion(run.cfg, run.home, run.tracker.uri)
    champion = champion_manifest(run)
    if manifest["base_release"] and champion and champion["release"] != manifest["base_release"]:
        raise RuntimeError(f"release {champion['release']} became champion while this refresh ran from "
                           f"{manifest['base_release']}; not gating against it (refresh again)")
    if not run.promote:
        decision = {"promote": False, "reasons": ["promote=false: registered as challenger, not gated"]}
        log.info("promote=false: release %s stays challenger; the champion is unchanged", run.run_id)
    else:
        decision = _gate(run, manifest, summary, champion)
    if decision["promote"]:
        publish_champion(run.cfg, run.home, run.tracker.uri, manifest)
        log.info("release %s is the new champion → %s", run.run_id, current_uri(run.home))
    # last: a run with gate.json is finished (``mrnet run --resume`` skips it), so a promotion killed before
    # here leaves none, and the resumed run gates and promotes again (``repair_champion`` first)
    storage.write_text(run.path("gate.json"), json.dumps(decision, indent=2))
