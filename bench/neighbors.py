"""Benchmark (not a test): nearest-neighbour search for `mrnet neighbors`.

- exact chunked search (retrieval.knn) vs the naive full score matrix + argpartition
  (the reference; it holds Q×N floats), medians of interleaved runs in one process;
- faiss HNSW (`--ann`): build time, query time and recall@10 against the exact answer.

Usage: `.venv/bin/python bench/neighbors.py [--n 200000] [--queries 256] [--repeats 5]`.
Prints Markdown for docs/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_all import side_by_side  # noqa: E402
from mrnet.evaluation import retrieval  # noqa: E402


def naive(q, x, k):
    s = retrieval.scores(q, x, "euclidean")                  # (Q, N) in one piece
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(500, args.dim)).astype(np.float32)   # clustered, like product embeddings
    x = (centers[rng.integers(0, 500, args.n)] + 0.5 * rng.normal(size=(args.n, args.dim))).astype(np.float32)
    q = x[rng.choice(args.n, args.queries, replace=False)] + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    exact = retrieval.knn(q, x, args.k)[1]
    assert (exact == naive(q, x, args.k)).mean() > 0.999
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; N={args.n:,}, "
          f"d={args.dim}, {args.queries} queries, k={args.k}")
    print("| what | ours | reference | ratio |")
    print("|---|---|---|---|")
    ours_s, ref_s = side_by_side(lambda: retrieval.knn(q, x, args.k), lambda: naive(q, x, args.k), args.repeats)
    print(f"| exact k-NN, chunked (queries/s) | {args.queries / ours_s:,.0f} | {args.queries / ref_s:,.0f} "
          f"(full Q×N matrix) | {ref_s / ours_s:.2f}x |")
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(args.dim, 32)
    index.hnsw.efConstruction = 80
    index.add(x)
    build = time.perf_counter() - t0
    index.hnsw.efSearch = 64
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, approx = index.search(q, args.k)
        times.append(time.perf_counter() - t0)
    recall = np.mean([len(set(a) & set(e)) / args.k for a, e in zip(approx, exact)])
    print(f"| faiss HNSW (M=32, efSearch=64) (queries/s) | {args.queries / statistics.median(times):,.0f} | "
          f"{args.queries / ours_s:,.0f} (exact, chunked) | {ours_s / statistics.median(times):.1f}x; "
          f"recall@{args.k} {recall:.3f}; build {build:.1f} s |")


if __name__ == "__main__":
    main()
