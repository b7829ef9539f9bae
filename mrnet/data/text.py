"""The one text normalizer and the word vocabulary (paper §3: titles → word2vec → BiLSTM).

Normalization (used for the corpus, the model input and TF-IDF alike):

1. Unicode NFKC (full-width digits, ligatures and the like become plain characters);
2. lower case;
3. tokens are maximal runs of letters/digits, joined across an inner ``'`` or ``.``
   (``women's``, ``2.5``); everything else separates tokens.

Word ids: 0 is ``<pad>``, 1 is ``<unk>``; the rest follow the word2vec vocabulary.
Fallback for unknown words: they map to ``<unk>``, whose vector is the mean of all
word vectors (data/word2vec.py); a title with no token at all becomes a single ``<unk>``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_TOKEN = re.compile(r"[^\W_]+(?:['.][^\W_]+)*")


def tokenize(text: str | None) -> list[str]:
    """Normalize and split one text (see the module docstring)."""
    if not text:
        return []
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


class Vocab:
    """Word → id mapping with ``<pad>``=0 and ``<unk>``=1 (sklearn-style: state set in init)."""

    def __init__(self, words: Iterable[str]):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, text: str | None, max_tokens: int) -> list[int]:
        get = self.index.get
        out = [get(tok, UNK_ID) for tok in tokenize(text)[:max_tokens]]
        return out or [UNK_ID]

    def encode_many(self, texts: Iterable[str | None], max_tokens: int,
                    chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
        """Ids of many titles as one padded int32 matrix (N, max_len) plus lengths (N,). Titles are
        tokenized ``chunk`` at a time into the matrix, so the Python lists of one chunk are all that
        is held besides it (a list of ids costs ~30x its int32 row)."""
        texts = texts if isinstance(texts, (list, tuple)) else list(texts)
        ids = np.zeros((len(texts), max_tokens), dtype=np.int32)
        lengths = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), chunk):
            for row, seq in enumerate((self.ids(t, max_tokens) for t in texts[start:start + chunk]), start):
                ids[row, : len(seq)] = seq
                lengths[row] = len(seq)
        width = int(lengths.max()) if len(texts) else 1
        return (ids[:, :width].copy() if width < max_tokens else ids), lengths


_POOL_VOCAB: Vocab | None = None  # set once in each tokenizer process by pool_init


def pool_init(words: list[str]) -> None:
    global _POOL_VOCAB
    _POOL_VOCAB = Vocab(words)


def pool_encode(args: tuple[list, int]) -> tuple[np.ndarray, np.ndarray]:
    return _POOL_VOCAB.encode_many(*args)


class Tokenizer:
    """``Vocab(words).encode_many`` over ``workers`` spawned processes that live as long as this object
    (``close`` or a ``with`` block ends them): a sharded embedding task starts its pool once, not once
    per chunk (a pool costs ~1 s to start). One worker: in this process, no pool."""

    def __init__(self, words: list[str], workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.words = [w for w in words if w not in (PAD, UNK)]
        self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=pool_init,
                                        initargs=(self.words,)) if workers > 1 else None
        self.vocab = None if self.pool else Vocab(self.words)

    def encode(self, texts: list, max_tokens: int, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, max_len) int32, lengths (N,)) in input order, ``chunk`` titles per job."""
        if self.pool is None or len(texts) <= chunk:
            return (self.vocab or Vocab(self.words)).encode_many(texts, max_tokens)
        parts = list(self.pool.map(pool_encode, [(texts[i:i + chunk], max_tokens) for i in range(0, len(texts), chunk)]))
        width = max(ids.shape[1] for ids, _ in parts)
        ids = np.zeros((len(texts), width), dtype=np.int32)
        row = 0
        for part, _ in parts:
            ids[row:row + len(part), :part.shape[1]] = part
            row += len(part)
        return ids, np.concatenate([lengths for _, lengths in parts])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def __enter__(self) -> "Tokenizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_parallel(words: list[str], texts: list, max_tokens: int, workers: int,
                    chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """``Vocab(words).encode_many`` over ``workers`` spawned processes, chunk by chunk: the same
    (ids, lengths), in input order. Tokenizing is the embedding stage's bottleneck (one process
    keeps a GPU about 1/30 busy; docs/RESULTS.md), so large shards spread it over the cores."""
    if workers <= 1 or len(texts) <= chunk:
        return Vocab(words).encode_many(texts, max_tokens)
    with Tokenizer(words, min(workers, -(-len(texts) // chunk))) as tokenizer:
        return tokenizer.encode(texts, max_tokens, chunk)


def vectorizer(kind: str = "tfidf", **options):
    """A scikit-learn TF-IDF (``kind="tfidf"``) or count vectorizer over ``tokenize``, float32:
    every title vector of the project (decoding targets, the TF-IDF baseline, neighbours, the
    overlap filter) sees the same tokens as the model."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    cls = TfidfVectorizer if kind == "tfidf" else CountVectorizer
    return cls(tokenizer=tokenize, lowercase=False, token_pattern=None, **({"dtype": np.float32} | options))


def length_buckets(lengths: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices grouped by exact title length: each bucket is a pad-free batch source.

    Bucketing by exact length lets the BiLSTM run on dense (B, T) batches with no
    padding and no PackedSequence, which gives the same final states as packing
    (tests/test_model.py proves it) and trains much faster on CPU.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    cuts = np.flatnonzero(np.diff(sorted_lengths)) + 1
    return {int(sorted_lengths[chunk[0]]): order_chunk
            for chunk, order_chunk in zip(np.split(np.arange(len(order)), cuts), np.split(order, cuts))
            if len(chunk)}
