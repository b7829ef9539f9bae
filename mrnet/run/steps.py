"""Config-level steps: a config and URIs in, a URI out (one ``mrnet <step>`` command each).

The steps write under ``cfg.artifact_root``. A run's stages (run/stages.py) call them with the
run's own root (``…/runs/<run_id>/``, laid out in run/context.py), adding its records, cache
and tracking; ``mrnet validate|corpus|word2vec|train|embed`` call them directly.
"""

from __future__ import annotations

import pandas as pd

from mrnet.config.schema import Config
from mrnet.io import storage


def build_demo_step(cfg: Config) -> str:
    from mrnet.data.demo import build_demo_catalog

    return build_demo_catalog(cfg.data.raw_dir, cfg.data.pg_mapping,
                              storage.join(cfg.artifact_root, "catalog", "raw.parquet"))


def catalog_source(cfg: Config) -> str:
    """The catalog a run validates: ``data.catalog`` (a file, folder or glob), or the demo one (built here)."""
    return cfg.data.catalog or build_demo_step(cfg)


def validate_step(cfg: Config, catalog_uri: str | None = None) -> tuple[str, dict]:
    """Validate the configured catalog (or build the demo one) in this process: every input file,
    then the merge (data/staging.py); defects → quarantine. The DAGs map the files instead."""
    from mrnet.data import staging

    source = catalog_uri or catalog_source(cfg)
    out = storage.join(cfg.artifact_root, "catalog")
    record = staging.plan(source, out, cfg.data.bucket_bytes)
    for i in range(len(record["files"])):
        check_part_step(cfg, record, staging.part_id(i))
    return merge_step(cfg, record)


def check_part_step(cfg: Config, record: dict, part: str) -> dict:
    """Check one input file of the catalog (``record``: the staging plan) batch by batch."""
    from mrnet.data import staging
    from mrnet.data.pgs import mapped_pgs

    return staging.check_part(record, part, storage.join(cfg.artifact_root, "catalog"), mapped_pgs(cfg), cfg.tasks,
                              cfg.data.max_title_chars, cfg.data if cfg.data.catalog else None, cfg.data.chunk_rows)


def merge_step(cfg: Config, record: dict) -> tuple[str, dict]:
    """Duplicates across every file, then the clean catalog sorted by PG, quarantine and summary."""
    from mrnet.data import merge

    return merge.merge(storage.join(cfg.artifact_root, "catalog"), record, cfg.train.seed, cfg.data.max_rows_per_pg,
                         cfg.data.sample_fraction, cfg.data.row_group_rows)


def corpus_step(cfg: Config, catalog_uri: str, out: str | None = None) -> tuple[str, dict]:
    """The tokenized corpus (§3) → ``out`` (default ``<artifact_root>/corpus/corpus.txt``)."""
    from mrnet.data.corpus import build_corpus

    return build_corpus(catalog_uri, out or storage.join(cfg.artifact_root, "corpus", "corpus.txt"),
                        progress=cfg.train.progress)


def word2vec_step(cfg: Config, corpus_uri: str, out: str | None = None) -> tuple[str, dict]:
    """Word vectors (§3) → ``out`` (default ``<artifact_root>/word2vec/vectors.bin``)."""
    from mrnet.data.word2vec import train_word2vec

    return train_word2vec(corpus_uri, cfg.word2vec, out or storage.join(cfg.artifact_root, "word2vec", "vectors.bin"),
                          progress=cfg.train.progress)


def pg_rows(cfg: Config, catalog_uri: str, pg: str) -> pd.DataFrame:
    """What one PG's training reads of the catalog: its rows only (the PG's row groups), the columns its
    tasks use, and at most ``train.max_products`` of them (a stable hash sample)."""
    from mrnet.data.reads import read_pg

    columns = ["product_id", "product_group", "title", *(t.column for t in cfg.tasks)]
    return read_pg(catalog_uri, pg, columns, cfg.train.max_products, cfg.train.seed)


def train_loaded(cfg: Config, pg: str, catalog: pd.DataFrame, words: list[str], vectors,
                 on_epoch=None, subwords=None, budget_seconds: float | None = None) -> tuple[str, dict]:
    """One PG's training on inputs already in memory (a run stage loads them once per process)."""
    from mrnet.encoder.train import train_pg

    return train_pg(cfg, pg, catalog, words, vectors, storage.join(cfg.artifact_root, "models", pg), on_epoch,
                    subwords, budget_seconds)


def budget_share(cfg: Config, pg: str, counts: dict[str, int], pgs: list[str],
                 spent: dict[str, float] | None = None) -> float | None:
    """This PG's seconds of ``train.budget_minutes``: what is left of the budget after the PGs that finished
    (``spent``: their training seconds), shared among this PG and the others not finished yet by the products
    each trains on. A PG that finishes under its share leaves the rest to the ones after it."""
    if cfg.train.budget_minutes is None:
        return None
    spent = spent or {}
    cap = cfg.train.max_products or float("inf")
    waiting = {p: min(counts.get(p, 0), cap) for p in pgs if p not in spent or p == pg}
    left = max(60 * cfg.train.budget_minutes - sum(v for p, v in spent.items() if p != pg), 0.0)
    return left * waiting.get(pg, 0) / max(sum(waiting.values()), 1)


def train_step(cfg: Config, pg: str, catalog_uri: str, vectors_uri: str) -> tuple[str, dict]:
    """One PG's training as its own task (reads its inputs; `run` loads them once for all PGs)."""
    from mrnet.data.word2vec import load_subwords, load_vectors

    words, vectors = load_vectors(vectors_uri)
    return train_loaded(cfg, pg, pg_rows(cfg, catalog_uri, pg), words, vectors, subwords=load_subwords(vectors_uri))


def embed_step(cfg: Config, model_uri: str, catalog_uri: str, pg: str) -> tuple[str, dict]:
    """Every product of one PG with its model (``mrnet embed --pg``): the run's shards, one after the other,
    committed as ``<artifact_root>/embeddings/<pg>/`` (part files + _manifest.json)."""
    from mrnet.data.pgs import pg_counts
    from mrnet.encoder.embed import commit_dataset, embed_shard, model_version, shard_ids

    folder, parts = storage.join(cfg.artifact_root, "embeddings", pg), []
    for shard in shard_ids(pg, pg_counts(catalog_uri).get(pg, 0), cfg.embed.shard_size):
        uri, stats = embed_shard(model_uri, catalog_uri, shard, storage.join(cfg.artifact_root, "embeddings",
                                                                              f"{shard}.parquet"), cfg.embed)
        parts.append({"uri": uri, "rows": stats["products"]} | stats)
    return commit_dataset(folder, parts, model_version(model_uri)), {"pg": pg, "products": sum(p["rows"] for p in parts)}


def latest_run(runs_uri: str) -> str:
    """The run folder under ``runs_uri`` whose summary.md is newest: the newest run that got as far
    as its report (local artifact roots)."""
    runs = sorted(storage.local_path(runs_uri).glob("*/summary.md"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no finished run under {runs_uri}")
    return str(runs[-1].parent)


def gc_step(cfg: Config, dry_run: bool = False) -> tuple[str, str]:
    """Retention (release/retention.py): delete what ``retention.*`` does not keep, or only say
    what (``dry_run``). Writes ``<artifact_root>/gc/<UTC time>.json``; returns (its URI, the text)."""
    import json
    from datetime import datetime, timezone

    from mrnet.release import retention

    report = retention.execute(cfg, dry_run=dry_run)
    if not report["keep"] and not report["delete"]:  # an empty root stays empty: no report file either
        return "", f"gc of {report['home']}/runs: no runs, nothing to do"
    text = retention.report_text(report)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    record = {k: report[k] for k in ("home", "dry_run", "freed", "mlflow", "planned_at")} | {
        "deleted": [d["run_id"] for d in report["delete"]], "checkpoints": [c["uri"] for c in report["checkpoints"]],
        "kept": {k["run_id"]: k["reasons"] for k in report["keep"]}}
    uri = storage.join(storage.absolute(cfg.artifact_root), "gc", f"{stamp}{'-dry-run' if dry_run else ''}.json")
    storage.write_text(uri, json.dumps(record, indent=2))
    return uri, text
