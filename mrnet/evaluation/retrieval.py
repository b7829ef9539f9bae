"""Exact k-nearest-neighbour search and retrieval metrics (paper §4.2 nearest neighbours, §5).

``knn`` never holds an N×N (or Q×N) matrix: it walks the base in chunks of rows, scores a
block of queries against one chunk with a matrix product, takes the chunk's own top k
(argpartition) and merges it into a running top k. Memory is O(Q_block·chunk + Q·k), so it scales to millions of rows.

- ``euclidean``: ||q − x||² = ||q||² − 2 q·x + ||x||² (the paper's NN metric, §4.2);
- ``cosine``: rows are L2-normalized first, score = q·x.

``rank_metrics`` scores a retrieval where query i's true partner is candidate ``truth[i]``:
the rank is 1 + the number of candidates scored strictly better (a tie counts in the
truth's favour), from which recall@k and the mean reciprocal rank (MRR) follow.
"""

from __future__ import annotations

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def scores(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """Higher is closer: −squared Euclidean distance, or cosine similarity. (Q, N)."""
    if metric == "cosine":
        return _normalize(queries) @ _normalize(base).T
    if metric == "euclidean":
        return 2 * queries @ base.T - (base * base).sum(1)[None, :] - (queries * queries).sum(1)[:, None]
    raise ValueError(f"unknown metric {metric!r} (euclidean or cosine)")


def knn(queries: np.ndarray, base: np.ndarray, k: int, metric: str = "euclidean", chunk: int = 32_768,
        query_block: int = 512, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k base rows for each query: (distance (Q, k), index (Q, k)), nearest first.

    Distance is Euclidean (not squared) or 1 − cosine. ``exclude[i]``: a base row query i may not
    return (its own row when querying the base with itself), or −1."""
    queries, base = np.asarray(queries, np.float32), np.asarray(base, np.float32)
    if queries.ndim != 2 or base.ndim != 2 or queries.shape[1] != base.shape[1]:
        raise ValueError(f"knn: queries {queries.shape} and base {base.shape} must be 2-d with equal width")
    k = min(k, len(base) - (exclude is not None))
    out_s = np.full((len(queries), max(k, 0)), -np.inf, np.float32)
    out_i = np.full((len(queries), max(k, 0)), -1, np.int64)
    if k <= 0:
        return out_s, out_i
    for q0 in range(0, len(queries), query_block):
        q = queries[q0:q0 + query_block]
        best_s, best_i = out_s[q0:q0 + len(q)], out_i[q0:q0 + len(q)]
        for b0 in range(0, len(base), chunk):
            s = scores(q, base[b0:b0 + chunk], metric)                       # (q, c)
            if exclude is not None:
                ex = exclude[q0:q0 + len(q)] - b0
                hit = (ex >= 0) & (ex < s.shape[1])
                s[np.nonzero(hit)[0], ex[hit]] = -np.inf
            kk = min(k, s.shape[1])                                          # the chunk's own top k first
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
            cand_i = np.concatenate([best_i, part + b0], axis=1)             # (q, k + kk)
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, top, 1)
            best_i = np.take_along_axis(cand_i, top, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        out_s[q0:q0 + len(q)] = np.take_along_axis(best_s, order, 1)
        out_i[q0:q0 + len(q)] = np.take_along_axis(best_i, order, 1)
    dist = np.sqrt(np.maximum(-out_s, 0)) if metric == "euclidean" else 1 - out_s
    return dist, out_i


def ranks(queries: np.ndarray, candidates: np.ndarray, truth: np.ndarray, metric: str = "cosine",
          chunk: int = 65_536) -> np.ndarray:
    """1-based rank of candidate ``truth[i]`` for query i among all candidates (chunked)."""
    queries, candidates = np.asarray(queries, np.float32), np.asarray(candidates, np.float32)
    partner = candidates[truth]
    if metric == "cosine":
        true_s = (_normalize(queries) * _normalize(partner)).sum(1)
    else:
        true_s = -((queries - partner) ** 2).sum(1)
    margin = 1e-5 * np.maximum(1.0, np.abs(true_s))  # float rounding of the matmul is not "better"
    better = np.zeros(len(queries), np.int64)
    for b0 in range(0, len(candidates), chunk):
        better += (scores(queries, candidates[b0:b0 + chunk], metric) > (true_s + margin)[:, None]).sum(1)
    return better + 1


def rank_metrics(rank: np.ndarray, ks=(1, 10)) -> dict[str, float]:
    rank = np.asarray(rank)
    out = {f"recall_at_{k}": float((rank <= k).mean()) for k in ks}
    return out | {"mrr": float((1.0 / rank).mean()), "median_rank": float(np.median(rank)), "n": int(len(rank))}


def random_metrics(n_candidates: int, ks=(1, 10)) -> dict[str, float]:
    """Exact expectation for a uniformly random ranking of n candidates (the random baseline)."""
    n = n_candidates
    out = {f"recall_at_{k}": min(k, n) / n for k in ks}
    return out | {"mrr": float(np.sum(1.0 / np.arange(1, n + 1)) / n), "median_rank": (n + 1) / 2, "n": n}
