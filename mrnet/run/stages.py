"""The run stages: what the Airflow tasks (dags/) and ``mrnet run`` (local.py) call, one function each.

This is the only module dags/ imports. Every stage takes URIs and ids and returns a URI
(``plan`` returns PG names), so XCom carries only strings. The stages up to the PG fan-in are
here (validate → corpus → word2vec → plan → train / refresh → embed shards); the ones after it
are in derived.py (sparse AE, cross-language AE, evaluation) and publish.py (report, release,
gate) and are imported here, so a DAG task finds every stage in one place. The run layout, stage
records and cache are in context.py.

``mode`` is ``retrain`` (paper §3: corpus → word2vec → PG models) or ``refresh`` (paper §6:
warm-start each PG model from the current release, fine-tune on refreshed dynamic labels).
"""

from __future__ import annotations

import json
import logging

from mrnet.data.pgs import pg_counts, pg_list
from mrnet.io import storage
from mrnet.run import steps
from mrnet.run.context import (CORPUS_FORMAT, Run, base_manifest, cache_key, cached, cached_subwords,
                               cached_vectors, epoch_logger, load_run, optional_stage, pg_stage, read_stage, record_stage, run_device,
                               stage_name, start_run, text_hash, timed_stage, triggered_config)
from mrnet.run.derived import (agnostic_embeddings, build_index, commit_agnostic, cross_language, encode_agnostic,
                               evaluate, plan_agnostic, sparse_autoencoder)
from mrnet.run.publish import base_release, promote, publish, report

__all__ = ["start_run", "plan_catalog", "check_catalog_part", "merge_catalog", "validate", "corpus", "word2vec", "plan",
           "train", "refresh", "plan_embed", "embed_shard",
           "embed_all", "base_release", "report", "sparse_autoencoder", "plan_agnostic", "encode_agnostic",
           "commit_agnostic", "agnostic_embeddings", "cross_language", "evaluate", "publish", "build_index",
           "promote", "housekeeping"]
log = logging.getLogger(__name__)

def plan_catalog(run_uri: str) -> list[str]:
    """The input files of the run's catalog (a file, folder or glob; the demo catalog is built here):
    their part ids (``part-00000``, …), one ``check_catalog_part`` task each."""
    from mrnet.data import staging

    run = load_run(run_uri)
    record = staging.plan(steps.catalog_source(run.cfg), run.path("catalog"), run.cfg.data.bucket_bytes)
    record_stage(run, "catalog_plan", record)
    log.info("[catalog] %d file(s), %s bytes, %d id bucket(s): %s", len(record["files"]), f"{sum(record['bytes']):,}",
             record["buckets"], record["source"])
    return [staging.part_id(i) for i in range(len(record["files"]))]


def check_catalog_part(run_uri: str, part: str) -> str:
    """Check every row of one input file of the run's catalog; returns the part's index URI."""
    run = load_run(run_uri)
    steps.check_part_step(run.cfg, read_stage(run, "catalog_plan"), part)
    return run.path("catalog", "staging", part, "index.json")


def merge_catalog(run_uri: str, parts=None) -> str:
    """Duplicates across all files, the clean catalog sorted by PG, quarantine and summary; returns the
    clean catalog's URI. ``parts``: the check tasks' URIs (the DAG's dependency; the plan names the parts)."""
    from mrnet.data.catalog import describe_quarantine

    run = load_run(run_uri)
    with timed_stage(run, "validate") as stage:
        uri, quarantine = steps.merge_step(run.cfg, read_stage(run, "catalog_plan"))
        log.info("[catalog] %s", describe_quarantine(quarantine))
        stage.record = {"uri": uri, "quarantine": quarantine, "catalog_hash": quarantine["catalog_hash"]}
        stage.metrics = {k: quarantine[k] for k in ("rows_in", "rows_quarantined", "rows_used")}
        stage.artifacts = [(run.path("catalog", "quarantine_summary.json"), "catalog")]
    run.tracker.tags({"mrnet.catalog_hash": quarantine["catalog_hash"]})
    return uri


def validate(run_uri: str) -> str:
    """Validate the run's catalog in this process (``mrnet run``): plan, every file, merge; returns the
    clean catalog's URI. Defects → quarantine."""
    return merge_catalog(run_uri, [check_catalog_part(run_uri, part) for part in plan_catalog(run_uri)])


def corpus(run_uri: str, catalog_uri: str) -> str:
    """Tokenized corpus, keyed by the catalog's text content."""
    run = load_run(run_uri)
    key = cache_key(CORPUS_FORMAT, text_hash(catalog_uri))
    return cached(run, "corpus", key, "corpus.txt", lambda out: steps.corpus_step(run.cfg, catalog_uri, out))


def word2vec(run_uri: str, corpus_uri: str) -> str:
    """Word vectors, keyed by the corpus file and the settings (not the worker count)."""
    run = load_run(run_uri)
    settings = run.cfg.word2vec.model_dump(exclude={"workers"})
    key = cache_key(storage.sha256_file(storage.local_path(corpus_uri)), settings)
    return cached(run, "word2vec", key, "vectors.bin", lambda out: steps.word2vec_step(run.cfg, corpus_uri, out),
                  texts=lambda out, stats: {"word2vec/vocab.txt": "\n".join(cached_vectors(out)[0]),  # readable in the UI
                                            "word2vec/health.json": json.dumps(stats.get("health"), indent=2)})


def plan(run_uri: str, catalog_uri: str | None = None) -> list[str]:
    """The PGs this run trains (retrain) or refreshes (those of the base release). Without a
    ``data.pg_mapping`` they are the validated catalog's PGs (``catalog_uri``, default: this
    run's validated catalog)."""
    run = load_run(run_uri)
    catalog_uri = catalog_uri or read_stage(run, "validate")["uri"]
    pgs = pg_list(run.cfg, catalog_uri)
    if run.mode == "refresh":
        base = base_manifest(run)
        missing = [pg for pg in pgs if pg not in base["models"]]
        if run.cfg.pgs and missing:
            raise ValueError(f"PG(s) {missing} are not in base release {base['release']}; run mrnet_retrain")
        pgs = [pg for pg in pgs if pg in base["models"]]
    # a PG with no product at all is not skipped: the catalog lacks a configured PG (a mapping or data
    # error), and its train task fails naming it
    counts, least = pg_counts(catalog_uri), run.cfg.train.min_products
    skipped = {pg: f"{counts[pg]} validated products, fewer than train.min_products={least}"
               for pg in pgs if 0 < counts.get(pg, 0) < least}
    for pg, why in skipped.items():
        log.warning("[%s] not trained: %s", pg, why)
    pgs = [pg for pg in pgs if pg not in skipped]
    if not pgs:
        raise ValueError(f"no PG to train: {skipped or 'the PG list is empty'}")
    record_stage(run, "plan", {"pgs": pgs, "skipped": skipped})
    return pgs


def _log_model(run: Run, mlflow_run: str | None, model_uri: str, pg: str) -> None:
    if not mlflow_run:
        return
    if run.cfg.tracking.log_weights:
        run.tracker.artifact(model_uri, "model", mlflow_run)
    run.tracker.artifact(run.path("models", pg, "metrics.json"), "model", mlflow_run)


def train(run_uri: str, pg: str, catalog_uri: str, vectors_uri: str) -> str:
    """Train one PG model (resuming from this run's checkpoint on a retry)."""
    run = load_run(run_uri)
    with pg_stage(run, pg, "train") as mlflow_run:
        words, vectors = cached_vectors(vectors_uri)
        share = _budget_share(run, pg, catalog_uri)
        uri, report = steps.train_loaded(run.cfg, pg, steps.pg_rows(run.cfg, catalog_uri, pg), words, vectors,
                                         on_epoch=epoch_logger(run, mlflow_run), subwords=cached_subwords(vectors_uri),
                                         budget_seconds=share)
        _log_model(run, mlflow_run, uri, pg)
    resumed, total = report["resumed_from_epoch"], pg_counts(catalog_uri).get(pg, 0)
    sampled = report["n_train"] + report["n_val"] < total
    log.info("[%s] trained: %s train / %s val products%s, %s epochs%s", pg, report["n_train"], report["n_val"],
             f" (a stable sample of its {total:,}: train.max_products)" if sampled else "", len(report["history"]),
             f" (resumed after epoch {resumed})" if resumed else "")
    return uri


def _budget_share(run: Run, pg: str, catalog_uri: str) -> float | None:
    """This PG's seconds of ``train.budget_minutes`` (steps.budget_share), from the plan and the PGs trained so far."""
    if run.cfg.train.budget_minutes is None:
        return None
    pgs = (optional_stage(run, "plan") or {}).get("pgs", [pg])
    done = {p: record["seconds"] for p in pgs if (record := optional_stage(run, stage_name("train", p)))}
    return steps.budget_share(run.cfg, pg, pg_counts(catalog_uri), pgs, done)


def refresh(run_uri: str, pg: str, catalog_uri: str, base_release_uri: str) -> str:
    """Warm-start the PG's released model and fine-tune it on refreshed dynamic labels (§6)."""
    from mrnet.encoder.refresh import refresh_pg
    from mrnet.release.manifest import release_model

    run = load_run(run_uri)
    base = release_model(json.loads(storage.read_text(base_release_uri)), pg)
    with pg_stage(run, pg, "train") as mlflow_run:
        uri, report = refresh_pg(run.cfg, pg, steps.pg_rows(run.cfg, catalog_uri, pg), base, run.path("models", pg),
                                 on_epoch=epoch_logger(run, mlflow_run))
        _log_model(run, mlflow_run, uri, pg)
    log.info("[%s] refreshed from %s: %s epochs, re-initialised heads %s", pg,
             report["refreshed_from"]["version"], len(report["history"]), report["reinitialised_heads"])
    return uri


def _pg_of_model(model_uri: str) -> str:
    return model_uri.rstrip("/").rsplit("/", 2)[-2]  # runs/<id>/models/<pg>/model.safetensors


def plan_embed(run_uri: str, models, catalog_uri: str) -> list[str]:
    """The embedding shards of the PGs whose model finished (``models``: their URIs; Airflow gives
    a single string for one), ``embed.shard_size`` products each, e.g. ``footwear/part-00000-of-00002``."""
    from mrnet.encoder.embed import shard_ids

    run = load_run(run_uri)
    models = [models] if isinstance(models, str) else list(models or [])
    counts = pg_counts(catalog_uri)
    shards = {pg: shard_ids(pg, counts.get(pg, 0), run.cfg.embed.shard_size)
              for pg in sorted(map(_pg_of_model, models))}
    record_stage(run, "embed_plan", {"shard_size": run.cfg.embed.shard_size, "shards": shards})
    log.info("embedding plan: %d PG(s), %d shard(s) of up to %d products", len(shards),
             sum(map(len, shards.values())), run.cfg.embed.shard_size)
    return [shard for pg_shards in shards.values() for shard in pg_shards]


def embed_shard(run_uri: str, shard: str, catalog_uri: str) -> str:
    """Embed one shard with its PG's model of this run → ``embeddings/<pg>/part-….parquet``."""
    from mrnet.encoder.embed import embed_shard as embed
    from mrnet.encoder.embed import parse_shard

    run = load_run(run_uri)
    pg, index, count = parse_shard(shard)
    out, record = run.path("embeddings", f"{shard}.parquet"), {"shard": shard}
    with pg_stage(run, pg, "embed", (index, count), record):
        uri, stats = embed(run.path("models", pg, "model.safetensors"), catalog_uri, shard, out, run.cfg.embed,
                           run_device(run))
        record |= stats
    log.info("[%s] shard %d of %d: %d products → %s", pg, index + 1, count, stats["products"], uri)
    return uri


def embed_all(run_uri: str, models, catalog_uri: str) -> list[str]:
    """Every shard in turn, in this process: the tests' shortcut (``local.run`` and the DAGs map
    ``embed_shard`` themselves, to record each shard's failure)."""
    return [embed_shard(run_uri, shard, catalog_uri) for shard in plan_embed(run_uri, models, catalog_uri)]


def housekeeping(params: dict, dry_run: bool = False, trigger: dict | None = None) -> str:
    """The ``mrnet_housekeeping`` DAG's one task: retention (``mrnet gc``) of the config's artifact
    root; logs what it kept and freed, returns the gc report's URI. ``trigger``: as ``start_run``'s."""
    unknown = set(params) - {"config", "overrides", "tiny"}
    if unknown:
        raise ValueError(f"unknown housekeeping param(s) {sorted(unknown)}; known: config, overrides, tiny")
    cfg = triggered_config(params, trigger, list(params.get("overrides") or []))
    uri, text = steps.gc_step(cfg, dry_run)
    log.info("[housekeeping] %s\n%s", uri, text)
    return uri
