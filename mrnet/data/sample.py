"""Stable hash samples: the one way mrnet draws products for folds, splits and samples (paper §3.1, §4);
the order of training batches is a seeded shuffle, not a sample.

A product's draw depends on its id (or text), a seed and a salt that names the purpose, never on
which other products are in the catalog. So a product keeps its side of the train/val split,
its evaluation fold and its place in a sample from one weekly retrain to the next, while
products come and go. Vectorized: pandas' SipHash of each key, with a 16-byte hash key made
from (salt, seed).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def hash_rank(keys, seed: int, salt: str) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per key, e.g. ``hash_rank(ids, 13, "val") < 0.1``."""
    hash_key = hashlib.sha256(f"{salt}\x1f{seed}".encode()).hexdigest()[:16]
    values = pd.Series(np.asarray(keys, dtype=object), dtype=object).astype(str)
    hashed = pd.util.hash_pandas_object(values, index=False, hash_key=hash_key).to_numpy(np.uint64)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def bucket_of(ids, buckets: int) -> np.ndarray:
    """A product id's hash bucket: the same id lands in the same bucket in every file (validation's
    duplicate search, the release index's id lookup)."""
    return np.minimum((hash_rank(ids, 0, "dedupe") * buckets).astype(np.int64), buckets - 1)


def hash_sample(keys, n: int, seed: int, salt: str) -> np.ndarray:
    """Indices of the ``n`` keys with the smallest rank, in rank order: a fixed sample."""
    return np.argsort(hash_rank(keys, seed, salt), kind="stable")[:n]


def smallest_rank(batches, k: int) -> float | None:
    """The k-th smallest of the ranks in ``batches`` (arrays of ``hash_rank``), holding at most 2k + one
    batch of them: a sample of the k smallest ranks is then ``rank <= threshold``, read in one more pass.
    None when there are at most k ranks in all (keep everything)."""
    best, n = np.zeros(0), 0
    for ranks in batches:
        n += len(ranks)
        best = np.concatenate([best, ranks])
        if len(best) > 2 * k:
            best = np.partition(best, k - 1)[:k]
    if n <= k:
        return None
    return float(np.partition(best, k - 1)[k - 1]) if k else -1.0
