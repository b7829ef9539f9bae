"""The run stages after the PG fan-in that derive from the release's embeddings: the DAG tasks
``sparse_autoencoder``, ``cross_language_autoencoder`` and ``evaluate``; like stages.py, URIs in
and a URI out (dags/ reach them through stages.py).

- ``sparse_autoencoder`` (paper §3.2): trains on a bounded sample of the PG embeddings of this
  release (a refresh adds the untouched PGs of its base release); model and metrics under
  ``agnostic/``. ``plan_agnostic`` → ``encode_agnostic`` (one task per PG shard) → ``commit_agnostic``
  write the PG-agnostic embedding of every product to ``embeddings/pg_agnostic/<pg>/<part>.parquet``
  and its ``_manifest.json`` (last).
- ``cross_language`` (paper §5): locale models + multimodal autoencoder + held-out retrieval
  report under ``crosslingual/`` (autoencoders/crosslingual.py).

Each is one nested MLflow run (kind ``stage``) with per-epoch metrics, the model file and the
report; ``publish.publish`` adds them to the release manifest and registers the models.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from mrnet.data.pgs import mapped_pgs
from mrnet.io import storage
from mrnet.run.context import (Run, base_manifest, cached_vectors, epoch_logger, load_run, nested_run,
                               optional_stage, read_stage, record_stage, run_device, skip, stage_name, timed_stage)

log = logging.getLogger(__name__)


def release_embeddings(run: Run, summary: dict) -> dict[str, str]:
    """PG → embedding URI of the release this run will publish (base PGs carried by a refresh)."""
    out = {pg: r["embeddings"] for pg, r in summary["pgs"].items()}
    base = base_manifest(run)
    return base["embeddings"] | out if base else out


def sparse_autoencoder(run_uri: str, summary_uri: str) -> str:
    """Train the PG-agnostic sparse autoencoder on a bounded sample of the release's PG embeddings;
    return the model's URI ('' when ``sparse_ae.enabled`` is false). ``plan_agnostic`` then cuts the
    encoding into one task per PG shard."""
    from mrnet.autoencoders import sparse as sparse_ae

    run = load_run(run_uri)
    cfg = run.cfg.sparse_ae
    if not cfg.enabled:
        return skip(run, "sparse_autoencoder", "sparse_ae.enabled is false")
    embeddings = release_embeddings(run, json.loads(storage.read_text(summary_uri)))
    mlflow_run = nested_run(run, "stage", "sparse_autoencoder")
    flatten = lambda e: {"train_loss": e["train_loss"], "products_per_s": e["products_per_s"],  # noqa: E731
                         "epoch_seconds": e["seconds"]} | {f"val.{k}": v for k, v in e["val"].items()}
    order = mapped_pgs(run.cfg) or sorted(embeddings)
    with timed_stage(run, "sparse_autoencoder") as stage:
        model_uri, report = sparse_ae.train_sparse_ae(
            cfg, embeddings, order, run.path("agnostic", "sparse_ae.safetensors"), run.cfg.train.seed, run_device(run),
            run.cfg.train.progress, epoch_logger(run, mlflow_run, flatten),
            title_anchors(run) if sparse_ae.uses_anchor(cfg, len(order)) else None)
        metrics_uri = run.path("agnostic", "metrics.json")
        storage.write_text(metrics_uri, json.dumps(report, indent=2))
        last = report["history"][-1]["val"]
        stage.record = {"model": model_uri, "metrics": metrics_uri, "dim": report["hidden"], "val": last,
                        "n_train": report["n_train"]}
        stage.metrics = {"n_train": report["n_train"]}
        stage.artifacts = [(model_uri, "model")] * run.cfg.tracking.log_weights + [(metrics_uri, "model")]
    log.info("[sparse_autoencoder] trained on %d products (val recon_rel %s) → %s", report["n_train"],
             last.get("recon_rel"), model_uri)
    return model_uri


def plan_agnostic(run_uri: str, summary_uri: str, model_uri: str = "") -> list[str]:
    """One PG-agnostic encoding task per part of the release's PG embeddings (one per PG shard):
    ``<pg>/<part>`` ids, e.g. ``footwear/part-00000-of-00002``; none when the autoencoder is off."""
    from mrnet.encoder.embed import dataset_parts

    run = load_run(run_uri)
    if not model_uri:
        record_stage(run, "agnostic_plan", {"shards": {}})
        return []
    embeddings = release_embeddings(run, json.loads(storage.read_text(summary_uri)))
    shards = {}
    for pg, uri in sorted(embeddings.items()):
        for part in dataset_parts(uri):
            shards[f"{pg}/{part.rsplit('/', 1)[-1].removesuffix('.parquet')}"] = part
    record_stage(run, "agnostic_plan", {"model": model_uri, "shards": shards})
    log.info("[sparse_autoencoder] %d PG-agnostic encoding task(s), one per PG shard", len(shards))
    return list(shards)


def encode_agnostic(run_uri: str, shard: str) -> str:
    """The PG-agnostic embeddings of one PG shard → ``embeddings/pg_agnostic/<pg>/<part>.parquet``."""
    from mrnet.autoencoders import sparse as sparse_ae

    run = load_run(run_uri)
    plan = read_stage(run, "agnostic_plan")
    if shard not in plan["shards"]:
        raise ValueError(f"{shard!r} is not a planned PG-agnostic shard of run {run.run_id}")
    from mrnet.encoder.embed import parse_shard

    pg, index, _ = parse_shard(shard)
    out, stats = sparse_ae.encode_part(plan["model"], plan["shards"][shard], pg,
                                       run.path("embeddings", "pg_agnostic", f"{shard}.parquet"), run.cfg.embed.dtype)
    record_stage(run, stage_name("encode_agnostic", pg, index), stats)  # rows, bytes, SHA-256: for the commit
    log.info("[sparse_autoencoder] %s: %d products → %s", shard, stats["products"], out)
    return out


def commit_agnostic(run_uri: str, parts=None) -> str:
    """Commit the PG-agnostic parts as one dataset (``embeddings/pg_agnostic/_manifest.json``, written last)
    once every planned part is there; return its URI ('' when the autoencoder is off). ``parts``: the
    encoding tasks' URIs (the DAG's dependency; the plan names the parts)."""
    from mrnet.encoder.embed import commit_dataset, model_version, parse_shard

    run = load_run(run_uri)
    plan = read_stage(run, "agnostic_plan")
    if not plan["shards"]:
        return ""
    folder = run.path("embeddings", "pg_agnostic")
    written = {shard: optional_stage(run, stage_name("encode_agnostic", *parse_shard(shard)[:2]))
               for shard in plan["shards"]}  # a part's record is written after the part
    missing = [shard for shard, record in written.items() if record is None]
    if missing:
        raise RuntimeError(f"PG-agnostic encoding: {len(missing)} of {len(written)} part(s) missing ({missing[:5]}); "
                           "their encode_agnostic tasks failed, see their logs")
    with timed_stage(run, "agnostic_embeddings") as stage:
        commit_dataset(folder, [{"uri": f"{shard}.parquet", "rows": r["products"]} | r for shard, r in written.items()],
                       model_version(plan["model"]))
        stage.record = {"uri": folder, "products": sum(r["products"] for r in written.values()), "parts": len(written)}
        stage.metrics = {"products": stage.record["products"]}
    log.info("[sparse_autoencoder] %d products in %d part(s) → %s", stage.record["products"], len(written), folder)
    return folder


def agnostic_embeddings(run_uri: str, summary_uri: str) -> str:
    """Train, plan, encode every PG shard and commit, in this process (``mrnet run``); the DAGs map the
    encoding tasks instead. Returns the PG-agnostic dataset's URI ('' when the autoencoder is off)."""
    model = sparse_autoencoder(run_uri, summary_uri)
    return commit_agnostic(run_uri, [encode_agnostic(run_uri, s) for s in plan_agnostic(run_uri, summary_uri, model)])


def cross_language(run_uri: str) -> str:
    """Train the two locale models and the cross-language autoencoder; return metrics.json's URI."""
    from mrnet.autoencoders import crosslingual

    run = load_run(run_uri)
    if not run.cfg.crosslingual.enabled:
        return skip(run, "cross_language_autoencoder", "crosslingual.enabled is false")
    out_dir = run.path("crosslingual")
    mlflow_run = nested_run(run, "stage", "cross_language_autoencoder")
    flatten = lambda e: {"train_loss": e["train_loss"], "epoch_seconds": e["seconds"]}  # noqa: E731
    with timed_stage(run, "cross_language_autoencoder") as stage:
        uri, result = crosslingual.run(run.cfg, out_dir, run_device(run), run.cfg.train.progress,
                                       epoch_logger(run, mlflow_run, flatten))
        stage.record = {"uri": uri, "model": result["model"], "retrieval": result["retrieval"], "pairs": result["pairs"]}
        stage.metrics = {f"retrieval.{method}.{k}": v for method, row in result["retrieval"].items() for k, v in row.items()}
        stage.metrics |= {f"pairs.{k}": v for k, v in result["pairs"].items() if isinstance(v, int)}
        stage.artifacts = [(storage.join(out_dir, n), "report") for n in ("report.md", "metrics.json", "retrieval.png")]
        stage.artifacts += [(result["model"], "model")] * run.cfg.tracking.log_weights
    log.info("[cross_language_autoencoder] %s", crosslingual.verdict(result["retrieval"]))
    return uri


def title_anchors(run: Run):
    """product ids → their titles' mean word vectors: the sparse autoencoder's shared anchor (§3.2,
    autoencoders/sparse.py Anchor); the titles of the training sample only are read. None when the
    run has no word vectors."""
    from mrnet.data.reads import read_rows
    from mrnet.data.word2vec import word2vec_mean

    vectors = _word_vectors(run)
    if vectors is None:
        log.warning("[sparse_autoencoder] no word vectors: trained without the anchor (sparse_ae.anchor_weight)")
        return None

    def anchors(ids: list[str]) -> np.ndarray:
        """(N, k); NaN rows for products today's catalog lacks (a refresh's base PGs): no anchor for them."""
        found = read_rows(read_stage(run, "validate")["uri"], ids, ["title"])["title"].reindex(ids)
        known = found.notna().to_numpy()
        out = np.full((len(ids), vectors[1].shape[1]), np.nan, np.float32)
        out[known] = word2vec_mean(found[known].tolist(), *vectors)
        if not known.all():
            log.info("[sparse_autoencoder] %d of %d products have no title in this catalog: no anchor for them",
                     (~known).sum(), len(ids))
        return out

    return anchors


def _word_vectors(run: Run):
    """The run's word vectors (a refresh has none of its own: its base release's), or None."""
    uri = (optional_stage(run, "word2vec") or {}).get("uri") or (base_manifest(run) or {}).get("word2vec")
    return cached_vectors(uri) if uri and storage.exists(uri) else None


def evaluate_run(run: Run, summary_uri: str, out_dir: str, cfg=None, agnostic: str | None = None):
    """Evaluate a run's release embeddings (its PGs, a refresh's base PGs, the PG-agnostic file)
    with ``cfg.evaluation`` (default: the run's own config); write the report under ``out_dir``.
    Returns (result, {file name: uri})."""
    from mrnet.data.reads import read_sample
    from mrnet.evaluation import report as eval_report
    from mrnet.evaluation import score as evaluation

    cfg = cfg or run.cfg
    embeddings = release_embeddings(run, json.loads(storage.read_text(summary_uri)))
    agnostic = agnostic or (optional_stage(run, "agnostic_embeddings") or {}).get("uri") or None
    catalog = read_sample(read_stage(run, "validate")["uri"], cfg.evaluation.max_products, cfg.evaluation.seed)
    result = evaluation.evaluate(cfg, catalog, embeddings, agnostic, _word_vectors(run), cfg.train.progress)
    return result, eval_report.write(result, out_dir, f"run {run.run_id}", cfg.evaluation.neighbors.shown)


def evaluate(run_uri: str, summary_uri: str, agnostic_uri: str = "") -> str:
    """Downstream evaluation (paper §4; evaluation/score.py) of this run's release embeddings →
    ``evaluation/``; return metrics.json's URI. Metrics go to the MLflow parent run too."""
    from mrnet.evaluation import report as eval_report
    from mrnet.evaluation import score as evaluation

    run = load_run(run_uri)
    if not run.cfg.evaluation.enabled:
        return skip(run, "evaluate", "evaluation.enabled is false")
    with timed_stage(run, "evaluate") as stage:
        result, files = evaluate_run(run, summary_uri, run.path("evaluation"), agnostic=agnostic_uri or None)
        metrics = evaluation.metrics(result)
        stage.record = {"uri": files["metrics.json"], "report": files["report.md"], "metrics": metrics,
                        "skipped": result["skipped"],
                        "features": {name: info["mrnet_feature"] for name, info in result["tasks"].items()}}
        stage.metrics = dict(metrics)
        stage.artifacts = [(uri, "evaluation") for uri in files.values()]
    run.tracker.metrics(metrics)
    for name in ("report.md", "table2.png"):
        run.tracker.artifact(files[name], "evaluation")
    log.info("[evaluate] %d task(s) evaluated, %d skipped, %.1f s → %s\n%s", len(result["tasks"]),
             len(result["skipped"]), stage.seconds, files["report.md"], eval_report.table2_text(result))
    return files["metrics.json"]


def build_index(run_uri: str, release_uri: str) -> str:
    """The nearest-neighbour index of every space of the published release (release/index.py) under
    ``index/``, its ``_manifest.json`` last; returns the release manifest's URI for the gate."""
    from mrnet.release.index import build_release_index

    run = load_run(run_uri)
    manifest = json.loads(storage.read_text(release_uri))
    if "index" not in manifest:
        skip(run, "index", "index.enabled is false")
        return release_uri
    with timed_stage(run, "index") as stage:
        record = build_release_index(manifest, manifest["index"]["uri"], run.cfg.index)
        recall = {name: s["recall_at_10"] for name, s in record["spaces"].items() if "recall_at_10" in s}
        stage.record = {"uri": manifest["index"]["uri"], "spaces": len(record["spaces"]), "recall_at_10": recall,
                        "kinds": {name: s["kind"] for name, s in record["spaces"].items()}}
        stage.metrics = {f"recall_at_10.{name.replace('/', '.')}": v for name, v in recall.items()}
    log.info("[index] %d space(s) indexed under %s (%.1f s)", len(record["spaces"]), manifest["index"]["uri"],
             stage.seconds)
    return release_uri
