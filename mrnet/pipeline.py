"""Pipeline steps: config + URIs in, URI out. The CLI and the Airflow tasks call these.

Artifact layout under ``artifact_root`` (a local path or ``s3://`` prefix)::

    catalog/raw.parquet              demo catalog built from shared/data (if no data.catalog)
    catalog/catalog.parquet          validated rows          catalog/quarantine.parquet + summary
    corpus/corpus.txt                tokenized titles + descriptions (LineSentence)
    word2vec/vectors.bin             word2vec binary format (no pickle)
    models/<pg>/model.safetensors    self-describing model  (+ ckpt.pt, metrics.json)
    embeddings/<pg>.parquet          product_id, product_group, model_version, embedding[128]
    summary.json, summary.md, training_curves.png
"""

from __future__ import annotations

import json
import time
import traceback

import pandas as pd

from mrnet import storage
from mrnet.config import Config


def pg_list(cfg: Config) -> list[str]:
    from mrnet.demo_catalog import load_pg_mapping

    known = list(load_pg_mapping(cfg.data.pg_mapping))
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
                            list(load_pg_mapping(cfg.data.pg_mapping)), cfg.tasks,
                            cfg.data.max_title_chars, cfg.data.max_rows_per_pg, cfg.train.seed)


def corpus_step(cfg: Config, catalog_uri: str) -> tuple[str, dict]:
    from mrnet.corpus import build_corpus

    return build_corpus(catalog_uri, storage.join(cfg.artifact_root, "corpus", "corpus.txt"),
                        progress=cfg.train.progress)


def word2vec_step(cfg: Config, corpus_uri: str) -> tuple[str, dict]:
    from mrnet.word2vec import train_word2vec

    return train_word2vec(corpus_uri, cfg.word2vec, storage.join(cfg.artifact_root, "word2vec", "vectors.bin"),
                          progress=cfg.train.progress)


def _train(cfg: Config, pg: str, catalog: pd.DataFrame, words: list[str], vectors) -> tuple[str, dict]:
    from mrnet.train import train_pg

    return train_pg(cfg, pg, catalog, words, vectors, storage.join(cfg.artifact_root, "models", pg))


def _embed(cfg: Config, model_uri: str, catalog: pd.DataFrame, pg: str) -> tuple[str, dict]:
    from mrnet.embed import embed_pg

    return embed_pg(model_uri, catalog, storage.join(cfg.artifact_root, "embeddings", f"{pg}.parquet"),
                    cfg.embed.batch_size)


def train_step(cfg: Config, pg: str, catalog_uri: str, vectors_uri: str) -> tuple[str, dict]:
    """One PG's training as its own task (reads its inputs; `run` loads them once for all PGs)."""
    from mrnet.catalog import read_catalog
    from mrnet.word2vec import load_vectors

    words, vectors = load_vectors(vectors_uri)
    return _train(cfg, pg, read_catalog(catalog_uri), words, vectors)


def embed_step(cfg: Config, model_uri: str, catalog_uri: str, pg: str) -> tuple[str, dict]:
    from mrnet.catalog import read_catalog

    return _embed(cfg, model_uri, read_catalog(catalog_uri), pg)


def _timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, round(time.perf_counter() - t0, 2)


def run(cfg: Config, log=print) -> dict:
    """The whole issue-2 pipeline: catalog → corpus → word2vec → per-PG train + embed."""
    from mrnet.catalog import describe_quarantine, read_catalog
    from mrnet.report import write_summary
    from mrnet.word2vec import load_vectors

    t_start = time.perf_counter()
    pgs = pg_list(cfg)
    (catalog_uri, quarantine), t_val = _timed(validate_step, cfg)
    log(f"[catalog] {describe_quarantine(quarantine)} ({t_val}s)")
    (corpus_uri, corpus), t_corpus = _timed(corpus_step, cfg, catalog_uri)
    log(f"[corpus] {corpus['documents']} documents, {corpus['tokens']} tokens ({t_corpus}s)")
    (vectors_uri, w2v), t_w2v = _timed(word2vec_step, cfg, corpus_uri)
    log(f"[word2vec] {w2v['vocab_size']} words ({t_w2v}s)")
    catalog, (words, vectors) = read_catalog(catalog_uri), load_vectors(vectors_uri)  # once for all PGs
    results, failed = {}, {}
    for i, pg in enumerate(pgs, 1):
        try:
            (model_uri, report), t_train = _timed(_train, cfg, pg, catalog, words, vectors)
            (emb_uri, _), t_embed = _timed(_embed, cfg, model_uri, catalog, pg)
        except Exception as exc:  # one PG failing must not hide the others' results
            failed[pg] = f"{type(exc).__name__}: {exc}"
            log(f"[{i}/{len(pgs)}] {pg}: FAILED {failed[pg]}\n{traceback.format_exc()}")
            continue
        results[pg] = report | {"model": model_uri, "embeddings": emb_uri,
                                "train_s": t_train, "embed_s": t_embed}
        log(f"[{i}/{len(pgs)}] {pg}: {report['n_train']} train / {report['n_val']} val, "
            f"train {t_train}s, embed {t_embed}s")
    summary = {"artifact_root": cfg.artifact_root, "config_hash": cfg.hash(), "catalog": catalog_uri,
               "quarantine": quarantine, "corpus": corpus | {"uri": corpus_uri},
               "word2vec": w2v | {"uri": vectors_uri}, "pgs": results, "failed": failed,
               "seconds": {"validate": t_val, "corpus": t_corpus, "word2vec": t_w2v,
                           "total": round(time.perf_counter() - t_start, 2)}}
    write_summary(summary, cfg.artifact_root, log)
    if failed:
        raise RuntimeError(f"{len(failed)} PG(s) failed: {sorted(failed)} (the others finished; "
                           f"see {storage.join(cfg.artifact_root, 'summary.json')})")
    return summary


def load_summary(root: str) -> dict:
    return json.loads(storage.read_text(storage.join(root, "summary.json")))


def read_embeddings(uri: str) -> pd.DataFrame:
    return pd.read_parquet(storage.local_path(uri))
