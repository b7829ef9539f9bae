"""Benchmark (not a test): the downstream evaluation on a finished demo run.

Usage: `.venv/bin/python bench/evaluation.py --run artifacts/demo/runs/<run_id> [--repeats 3]`.
Prints Markdown for docs/RESULTS.md:

- the whole evaluation (every configured task × feature × classifier, neighbours,
  interpretation), median wall time of ``--repeats`` runs;
- its three levers, each side by side with its reference in this process (medians of
  interleaved runs): LR on one BLAS thread vs the default threads (browse task, PG-agnostic);
  RF trees on half-size bootstraps vs full ones (ingestible_mixed_pgs, PG-agnostic); and the
  unseen-population filter as an inverted index (sparse product) vs all pairs of title sets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_all import side_by_side  # noqa: E402
from mrnet.config.schema import load_config  # noqa: E402
from mrnet.data.catalog import read_catalog  # noqa: E402
from mrnet.data.sample import hash_rank  # noqa: E402
from mrnet.data.text import tokenize  # noqa: E402
from mrnet.evaluation import labels as D  # noqa: E402
from mrnet.evaluation import score as E  # noqa: E402


def all_pairs_overlap(test_titles, train_titles) -> np.ndarray:
    """Reference: the largest Jaccard of each test title with every training title, pair by pair."""
    train = [set(tokenize(t)) for t in train_titles]
    out = np.zeros(len(test_titles))
    for i, title in enumerate(test_titles):
        a = set(tokenize(title))
        out[i] = max((len(a & b) / len(a | b) for b in train if a | b), default=0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="a finished demo run folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    run = Path(args.run)
    cfg = load_config(args.config, ["train.progress=false"])
    catalog = read_catalog(str(run / "catalog" / "catalog.parquet"))
    embeddings = {p.stem: str(p) for p in (run / "embeddings").glob("*.parquet") if p.stem != "pg_agnostic"}
    agnostic = str(run / "embeddings" / "pg_agnostic.parquet")
    from mrnet.data.word2vec import load_vectors

    vectors = load_vectors(json.loads((run / "stages" / "word2vec.json").read_text())["uri"])

    whole = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        E.evaluate(cfg, catalog, embeddings, agnostic, vectors)
        whole.append(time.perf_counter() - t0)

    ecfg = cfg.evaluation
    tasks = D.derive(ecfg.tasks, catalog, ecfg.seed)
    table = E.read_table(agnostic)

    def fold(name):
        data = tasks[name]
        train, test = E.splits(data, ecfg)[0]
        return data, table.x[table.rows(data.ids)], train

    browse, xb, tb = fold("browse_clothing")
    lr = side_by_side(lambda: E.fit("lr", ecfg, xb[tb], browse.y[tb], False),
                      lambda: E.classifier("lr", ecfg, False).fit(xb[tb], browse.y[tb]), args.repeats)
    mixed, xm, tm = fold("ingestible_mixed_pgs")
    full = ecfg.model_copy(update={"rf_max_samples": None})
    rf = side_by_side(lambda: E.fit("rf", ecfg, xm[tm], mixed.y[tm], False),
                      lambda: E.fit("rf", full, xm[tm], mixed.y[tm], False), args.repeats)
    test_m = np.setdiff1d(np.arange(len(mixed.y)), tm)
    auc = {name: E.score("binary", E.fit("rf", c, xm[tm], mixed.y[tm], False), xm[test_m], mixed.y[test_m])
           for name, c in (("half", ecfg), ("full", full))}
    plugs = tasks["plugs"]
    test = hash_rank(plugs.ids, ecfg.seed, "unseen") < 0.3
    sample = plugs.titles[test][:300]  # the reference is quadratic: 300 test titles
    overlap = side_by_side(lambda: D.max_overlap(sample, plugs.titles[~test]),
                           lambda: all_pairs_overlap(sample, plugs.titles[~test]), args.repeats)
    assert np.allclose(D.max_overlap(sample, plugs.titles[~test]), all_pairs_overlap(sample, plugs.titles[~test]))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; median of {args.repeats} "
          f"runs; run {run.name}\n")
    print(f"whole evaluation ({len(ecfg.tasks)} configured tasks): {statistics.median(whole):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in whole)})\n")
    print("| lever | ours (s) | reference (s) | ratio |\n|---|---|---|---|")
    print(f"| LR, browse_clothing fold, PG-agnostic: one BLAS thread vs default threads | {lr[0]:.2f} | {lr[1]:.2f} "
          f"| {lr[1] / lr[0]:.2f}x |")
    print(f"| RF, ingestible_mixed_pgs fold: half-size bootstraps vs full (test AUC {auc['half']:.4f} vs "
          f"{auc['full']:.4f}) | {rf[0]:.2f} | {rf[1]:.2f} | {rf[1] / rf[0]:.2f}x |")
    print(f"| unseen filter, 300 test × {int((~test).sum()):,} train titles: inverted index vs all pairs "
          f"| {overlap[0]:.3f} | {overlap[1]:.3f} | {overlap[1] / overlap[0]:.1f}x |")


if __name__ == "__main__":
    main()
