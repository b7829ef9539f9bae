"""Pipeline steps: config + URIs in, URI out, plus ``run``, every stage of a DAG run in order.

The steps write under ``cfg.artifact_root``; flow.py gives each run its own root
(``…/runs/<run_id>/``) and documents the layout. ``run`` is what ``mrnet run`` calls:
the same stages as the ``mrnet_retrain`` DAG, without Airflow.
"""

from __future__ import annotations

import json

import pandas as pd

from mrnet import storage
from mrnet.config import Config


def pg_list(cfg: Config, catalog_uri: str | None = None) -> list[str]:
    """The PGs a run trains: ``pgs`` (or all) of ``data.pg_mapping``, or, without a mapping, of the
    validated catalog's ``product_group`` values (unchecked ``pgs`` until there is a catalog)."""
    from mrnet.demo_catalog import load_pg_mapping

    if cfg.data.pg_mapping:
        known = list(load_pg_mapping(cfg.data.pg_mapping))
    elif catalog_uri:
        from mrnet.embed import pg_counts

        known = sorted(pg_counts(catalog_uri))
    else:
        return list(cfg.pgs or [])
    chosen = cfg.pgs or known
    unknown = [pg for pg in chosen if pg not in known]
    if unknown:
        raise ValueError(f"unknown PG(s) {unknown} in config 'pgs'; known: {known}")
    return chosen


def build_demo_step(cfg: Config) -> str:
    from mrnet.demo_catalog import build_demo_catalog

    return build_demo_catalog(cfg.data.raw_dir, cfg.data.pg_mapping,
                              storage.join(cfg.artifact_root, "catalog", "raw.parquet"))


def validate_step(cfg: Config, catalog_uri: str | None = None) -> tuple[str, dict]:
    """Validate the configured catalog (or build the demo one); defects → quarantine."""
    from mrnet.catalog import validate_catalog
    from mrnet.demo_catalog import load_pg_mapping

    source = catalog_uri or cfg.data.catalog or build_demo_step(cfg)
    return validate_catalog(source, storage.join(cfg.artifact_root, "catalog"),
                            list(load_pg_mapping(cfg.data.pg_mapping)) if cfg.data.pg_mapping else None, cfg.tasks,
                            cfg.data.max_title_chars, cfg.data.max_rows_per_pg, cfg.train.seed,
                            cfg.data.sample_fraction, cfg.data if cfg.data.catalog else None)


def corpus_step(cfg: Config, catalog_uri: str) -> tuple[str, dict]:
    from mrnet.corpus import build_corpus

    return build_corpus(catalog_uri, storage.join(cfg.artifact_root, "corpus", "corpus.txt"),
                        progress=cfg.train.progress)


def word2vec_step(cfg: Config, corpus_uri: str) -> tuple[str, dict]:
    from mrnet.word2vec import train_word2vec

    return train_word2vec(corpus_uri, cfg.word2vec, storage.join(cfg.artifact_root, "word2vec", "vectors.bin"),
                          progress=cfg.train.progress)


def _train(cfg: Config, pg: str, catalog: pd.DataFrame, words: list[str], vectors,
           on_epoch=None, subwords=None) -> tuple[str, dict]:
    from mrnet.train import train_pg

    return train_pg(cfg, pg, catalog, words, vectors, storage.join(cfg.artifact_root, "models", pg), on_epoch,
                    subwords)


def _embed(cfg: Config, model_uri: str, catalog: pd.DataFrame, pg: str) -> tuple[str, dict]:
    from mrnet.embed import embed_pg

    return embed_pg(model_uri, catalog, storage.join(cfg.artifact_root, "embeddings", f"{pg}.parquet"),
                    cfg.embed.batch_size)


def train_step(cfg: Config, pg: str, catalog_uri: str, vectors_uri: str) -> tuple[str, dict]:
    """One PG's training as its own task (reads its inputs; `run` loads them once for all PGs)."""
    from mrnet.catalog import read_catalog
    from mrnet.word2vec import load_subwords, load_vectors

    words, vectors = load_vectors(vectors_uri)
    return _train(cfg, pg, read_catalog(catalog_uri), words, vectors, subwords=load_subwords(vectors_uri))


def embed_step(cfg: Config, model_uri: str, catalog_uri: str, pg: str) -> tuple[str, dict]:
    from mrnet.catalog import read_catalog

    return _embed(cfg, model_uri, read_catalog(catalog_uri), pg)


def run(params: dict, run_id: str | None = None, mode: str = "retrain") -> dict:
    """The DAG's stages in order, in this process (no Airflow): same run layout, cache and release.

    ``params`` are the DAG's run params (config, pgs, epochs, sample_fraction, promote, tiny,
    overrides). A failed PG is recorded and the others go on; the report then raises naming it."""
    from datetime import datetime, timezone

    from mrnet import flow

    run_id = run_id or f"local__{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}"
    run_uri = flow.start_run(params, run_id, "cli", mode)
    try:
        return _stages(run_uri, mode)
    except BaseException as exc:  # the MLflow runs end with the run: FAILED, or KILLED by Ctrl-C / SIGTERM
        flow.end_tracking(run_uri, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise


def _stages(run_uri: str, mode: str) -> dict:
    from mrnet import flow, flow_ae, release

    base = release.base_release(run_uri) if mode == "refresh" else None
    catalog = flow.validate(run_uri)
    vectors = flow.word2vec(run_uri, flow.corpus(run_uri, catalog)) if mode == "retrain" else None
    pgs, models, parts = flow.plan(run_uri, catalog), [], []
    for i, pg in enumerate(pgs, 1):
        try:
            models.append(flow.train(run_uri, pg, catalog, vectors) if mode == "retrain"
                          else flow.refresh(run_uri, pg, catalog, base))
            print(f"[{i}/{len(pgs)}] {pg}: trained", flush=True)
        except Exception as exc:  # recorded in failures/<pg>.json; the report names it at the end
            print(f"[{i}/{len(pgs)}] {pg}: FAILED {type(exc).__name__}: {exc}", flush=True)
    shards = flow.plan_embed(run_uri, models, catalog)
    for i, shard in enumerate(shards, 1):
        try:
            parts.append(flow.embed_shard(run_uri, shard, catalog))
        except Exception as exc:  # as above: the PG's failure file names the shard
            print(f"[embed {i}/{len(shards)}] {shard}: FAILED {type(exc).__name__}: {exc}", flush=True)
    summary_uri = release.report(run_uri, parts)
    parts = [flow_ae.sparse_autoencoder(run_uri, summary_uri)]
    parts.append(flow_ae.evaluate(run_uri, summary_uri, parts[0]))
    if mode == "retrain":  # a refresh carries the cross-language model over from its base release
        parts.append(flow_ae.cross_language(run_uri))
    release.promote(run_uri, release.publish(run_uri, summary_uri, parts))
    return json.loads(storage.read_text(summary_uri))


def latest_run(runs_uri: str) -> str:
    """The run folder under ``runs_uri`` whose summary.md is newest: the newest run that got as far
    as its report (local artifact roots)."""
    runs = sorted(storage.local_path(runs_uri).glob("*/summary.md"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no finished run under {runs_uri}")
    return str(runs[-1].parent)
