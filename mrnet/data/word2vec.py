"""Word vectors (paper §3): gensim word2vec on the corpus file, saved without pickle.

Training uses gensim's ``corpus_file`` mode, which scales across all cores; the
vectors are written in the binary word2vec format (``save_word2vec_format``),
never as a pickled gensim model. Unknown words fall back to ``<unk>``, whose
vector is the mean of all word vectors; ``<pad>`` is the zero vector (data/text.py).

Settings that scale with the corpus (``resolve_settings``, docs/TRAINING.md): the paper's
min count 10 and 5 epochs assume a corpus of billions of words. On a 10k-product catalog
(~100k tokens) they keep ~1,400 words, each seen in a handful of updates, and the vectors
collapse onto one direction. ``auto`` picks, from the corpus token count N:

- ``epochs = clip(ceil(target_tokens / N), 5, max_epochs)``: every corpus gets about the same
  number of word updates (20M by default) as long as that takes at most 50 epochs;
- ``min_count = clip(round(2 + 4 · log10(N / 1M)), 2, 10)``: 2 up to 1M tokens, 6 at 10M,
  10 from 100M on (the paper's value);
- ``sg``: skip-gram below 10M tokens (``resolve_sg``), CBOW above.

``max_vocab`` caps the vocabulary at the most frequent words (gensim's ``max_final_vocab``, which raises
the effective min count where more words would pass it), and the vocabulary scan prunes its rarest
words whenever it holds more than 10x that many (``max_vocab_size``, about 1 GB per 10M words): the word
vectors, every PG model's frozen word table and this task's memory are bounded whatever the catalog.

``model: fasttext`` trains gensim FastText instead: the same word vectors plus a table of hashed
character n-grams (``subwords.safetensors`` beside ``vectors.bin``), from which a word never seen
in training gets a vector (``subword_vectors``, gensim's rule) at embed time.

``health`` measures the result: the mean pairwise cosine of the 1,000 most frequent words
(0.98 = degenerate, ~0.1–0.3 = healthy) and the nearest neighbours of a few frequent words.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np

from mrnet.config.training import Word2VecConfig
from mrnet.data.text import PAD, UNK, tokenize
from mrnet.io import storage
from mrnet.io.progress import bar as progress_bar
from mrnet.io.progress import interactive as is_interactive

log = logging.getLogger("mrnet.word2vec")


def count_tokens(corpus_uri: str, chunk: int = 1 << 24) -> int:
    """Tokens of a LineSentence corpus (single spaces, one document per line), by byte counting."""
    tokens = 0
    with open(storage.local_path(corpus_uri), "rb") as fh:
        while block := fh.read(chunk):
            tokens += block.count(b" ") + block.count(b"\n")
    return tokens


def resolve_sg(cfg: Word2VecConfig, tokens: int) -> int:
    """Skip-gram (1) or CBOW (0): the configured value, or for ``auto`` skip-gram on corpora below
    ``sg_below_tokens`` (skip-gram learns rare words better from little text; CBOW is faster)."""
    return cfg.sg if cfg.sg != "auto" else int(tokens < cfg.sg_below_tokens)


def resolve_settings(cfg: Word2VecConfig, tokens: int) -> tuple[int, int]:
    """(min_count, epochs) for a corpus of ``tokens`` words: the configured integers, or the
    module docstring's rule for ``auto``."""
    min_count = cfg.min_count
    if min_count == "auto":
        min_count = int(np.clip(round(2 + 4 * math.log10(max(tokens, 1) / 1e6)), 2, 10))
    epochs = cfg.epochs
    if epochs == "auto":
        epochs = int(np.clip(math.ceil(cfg.target_tokens / max(tokens, 1)), min(5, cfg.max_epochs), cfg.max_epochs))
    return min_count, epochs


def health(words: list[str], vectors: np.ndarray, top: int = 1000, probes: int = 5, k: int = 5) -> dict:
    """Vector health: mean pairwise cosine of the ``top`` most frequent words (``words`` in
    frequency order, specials excluded) and the ``k`` nearest neighbours of ``probes`` frequent
    alphabetic words of 3+ letters."""
    keep = [i for i, w in enumerate(words) if w not in (PAD, UNK)][:top]
    if len(keep) < 2:
        return {"words": len(keep), "mean_cosine": float("nan"), "neighbours": {}}
    unit = vectors[keep] / np.maximum(np.linalg.norm(vectors[keep], axis=1, keepdims=True), 1e-12)
    gram = unit @ unit.T
    n = len(keep)
    mean_cos = float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
    neighbours = {}
    for row, i in enumerate(keep):
        if len(neighbours) == probes:
            break
        if words[i].isalpha() and len(words[i]) >= 3:
            order = np.argsort(-gram[row])[1:k + 1]
            neighbours[words[i]] = [words[keep[j]] for j in order]
    return {"words": n, "mean_cosine": round(mean_cos, 4), "neighbours": neighbours}


def health_line(stats: dict, threshold: float) -> str:
    """One log line; a loud WARNING when the vectors are degenerate."""
    h = stats["health"]
    probes = "; ".join(f"{w}: {', '.join(ns)}" for w, ns in h["neighbours"].items())
    algo = {0: "CBOW, ", 1: "skip-gram, "}.get(stats.get("sg"), "")
    line = (f"[word2vec] {stats['vocab_size']} words ({algo}min count {stats['min_count']}, {stats['epochs']} epochs "
            f"over {stats['corpus_words']} tokens); mean cosine of the top {h['words']} words "
            f"{h['mean_cosine']:.3f}; neighbours: {probes}")
    if not h["mean_cosine"] <= threshold:
        line = (f"WARNING degenerate word vectors: {line}. Above {threshold} the vectors barely differ and every "
                "title looks alike to the encoder: lower word2vec.min_count, raise word2vec.epochs, or use 'auto'")
    return line


def train_word2vec(corpus_uri: str, cfg: Word2VecConfig, out_uri: str,
                   progress: bool = True) -> tuple[str, dict]:
    """Train on a LineSentence corpus file and write ``vectors.bin``; return (uri, stats)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    tokens = count_tokens(corpus_uri)
    min_count, epochs = resolve_settings(cfg, tokens)
    sg = resolve_sg(cfg, tokens)
    interactive = is_interactive(progress)

    class _Progress(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar, self.epoch, self.t0 = bar, 0, time.perf_counter()

        def on_epoch_end(self, model):
            self.epoch += 1
            self.bar.update(1)
            if progress and not interactive and (self.epoch % max(1, epochs // 10) == 0 or self.epoch == epochs):
                seconds = time.perf_counter() - self.t0
                log.info("[word2vec] epoch %d/%d, %.0f words/s", self.epoch, epochs, self.epoch * tokens / seconds)

    corpus = storage.local_path(corpus_uri)
    bar = progress_bar(total=epochs, desc=cfg.model, unit="epoch", progress=progress)
    common = dict(corpus_file=str(corpus), vector_size=cfg.vector_size, window=cfg.window, min_count=min_count,
                  sg=sg, epochs=epochs, seed=cfg.seed, workers=cfg.workers or os.cpu_count() or 1,
                  max_final_vocab=cfg.max_vocab, max_vocab_size=cfg.max_vocab and 10 * cfg.max_vocab,
                  callbacks=[_Progress(bar)])
    if cfg.model == "fasttext":
        from gensim.models import FastText

        model = FastText(min_n=cfg.min_n, max_n=cfg.max_n, bucket=cfg.bucket, **common)
    else:
        model = Word2Vec(**common)
    bar.close()
    if len(model.wv) == 0:
        raise ValueError(f"word2vec: no word occurs {min_count}+ times in {corpus_uri}; "
                         "lower word2vec.min_count or use a larger catalog")
    if cfg.model == "fasttext":  # before vectors.bin: a reader that finds vectors.bin finds its n-grams
        save_subwords(model.wv.vectors_ngrams, cfg, subwords_uri(out_uri))
    with storage.atomic_path(out_uri, suffix=".bin") as tmp:
        model.wv.save_word2vec_format(str(tmp), binary=True)
    stats = {"model": cfg.model, "vocab_size": len(model.wv), "corpus_words": int(model.corpus_total_words),
             "min_count": int(getattr(model, "effective_min_count", min_count)), "epochs": epochs, "sg": sg,
             "degenerate_cosine": cfg.degenerate_cosine,
             "health": health(list(model.wv.index_to_key), np.asarray(model.wv.vectors))}
    line = health_line(stats, cfg.degenerate_cosine)
    (log.warning if line.startswith("WARNING") else log.info)(line)
    return out_uri, stats


def load_vectors(uri: str) -> tuple[list[str], np.ndarray]:
    """(words, matrix) with ``<pad>`` (zeros) and ``<unk>`` (mean vector) prepended."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(storage.local_path(uri)), binary=True)
    vectors = np.asarray(kv.vectors, dtype=np.float32)
    special = np.stack([np.zeros(vectors.shape[1], np.float32), vectors.mean(axis=0)])
    words = [PAD, UNK] + [w for w in kv.index_to_key]
    return words, np.concatenate([special, vectors])


# ------------------------------------------------------------------ FastText subwords


def subwords_uri(vectors_uri: str) -> str:
    """The n-gram table beside a FastText run's ``vectors.bin``."""
    return vectors_uri.rsplit("/", 1)[0] + "/subwords.safetensors" if "/" in vectors_uri else "subwords.safetensors"


def save_subwords(table: np.ndarray, cfg: Word2VecConfig, uri: str) -> str:
    """The (bucket, dim) n-gram vectors as float16 safetensors, with min_n/max_n/bucket in the
    header (nothing pickled)."""
    import torch
    from safetensors.torch import save_file

    info = {"min_n": cfg.min_n, "max_n": cfg.max_n, "bucket": cfg.bucket}
    with storage.atomic_path(uri, suffix=".safetensors") as tmp:
        save_file({"ngrams": torch.from_numpy(np.asarray(table, np.float32)).half().contiguous()}, str(tmp),
                  metadata={"subwords": json.dumps(info)})
    return uri


def load_subwords(vectors_uri: str) -> tuple[np.ndarray, dict] | None:
    """(n-gram table (bucket, dim) float16, info) of a FastText ``vectors.bin``; None for word2vec."""
    from safetensors import safe_open

    uri = subwords_uri(vectors_uri)
    if not storage.exists(uri):
        return None
    with safe_open(str(storage.local_path(uri)), framework="np") as fh:
        return fh.get_tensor("ngrams"), json.loads(fh.metadata()["subwords"])


def subword_vectors(words: list[str], table, info: dict) -> np.ndarray:
    """FastText's vector of words it never saw (gensim's rule): the mean of the rows of their
    hashed character n-grams, (len(words), dim) float32; a word without n-grams gets zeros."""
    from gensim.models.fasttext import ft_ngram_hashes

    table = np.asarray(table)
    out = np.zeros((len(words), table.shape[1]), np.float32)
    for i, word in enumerate(words):
        rows = ft_ngram_hashes(word, info["min_n"], info["max_n"], info["bucket"])
        if rows:
            out[i] = table[rows].astype(np.float32).mean(axis=0)
    return out


def unseen_words(words: list[str], titles, max_tokens: int) -> list[str]:
    """The tokens of ``titles`` (first ``max_tokens`` of each) that ``words`` lacks, first seen first."""
    known, out = set(words), {}
    for title in titles:
        for token in tokenize(title)[:max_tokens]:
            if token not in known:
                out.setdefault(token)
    return list(out)


def word2vec_mean(titles, words: list[str], vectors: np.ndarray) -> np.ndarray:
    """Mean of each title's word vectors (the <unk> vector when it has no known word): (N, vector_size).
    The evaluation's word2vec-mean baseline, and the sparse autoencoder's shared anchor target (§3.2)."""
    index = {w: i for i, w in enumerate(words)}
    unk = index.get(UNK, 0)
    out = np.empty((len(titles), vectors.shape[1]), np.float32)
    for r, title in enumerate(titles):
        ids = [index[t] for t in tokenize(title) if t in index]
        out[r] = vectors[ids].mean(axis=0) if ids else vectors[unk]
    return out
