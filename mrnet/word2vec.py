"""Word vectors (paper §3): gensim word2vec on the corpus file, saved without pickle.

Training uses gensim's ``corpus_file`` mode, which scales across all cores; the
vectors are written in the binary word2vec format (``save_word2vec_format``),
never as a pickled gensim model. Unknown words fall back to ``<unk>``, whose
vector is the mean of all word vectors; ``<pad>`` is the zero vector (text.py).
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from mrnet import storage
from mrnet.config import Word2VecConfig
from mrnet.text import PAD, UNK


def train_word2vec(corpus_uri: str, cfg: Word2VecConfig, out_uri: str,
                   progress: bool = True) -> tuple[str, dict]:
    """Train on a LineSentence corpus file and write ``vectors.bin``; return (uri, stats)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _Bar(CallbackAny2Vec):
        def __init__(self, bar):
            self.bar = bar

        def on_epoch_end(self, model):
            self.bar.update(1)

    corpus = storage.local_path(corpus_uri)
    bar = tqdm(total=cfg.epochs, desc="word2vec", unit="epoch", disable=not progress)
    model = Word2Vec(corpus_file=str(corpus), vector_size=cfg.vector_size, window=cfg.window,
                     min_count=cfg.min_count, sg=cfg.sg, epochs=cfg.epochs, seed=cfg.seed,
                     workers=cfg.workers or os.cpu_count() or 1, callbacks=[_Bar(bar)])
    bar.close()
    if len(model.wv) == 0:
        raise ValueError(f"word2vec: no word occurs {cfg.min_count}+ times in {corpus_uri}; "
                         "lower word2vec.min_count or use a larger catalog")
    with storage.atomic_path(out_uri, suffix=".bin") as tmp:
        model.wv.save_word2vec_format(str(tmp), binary=True)
    return out_uri, {"vocab_size": len(model.wv), "corpus_words": int(model.corpus_total_words)}


def load_vectors(uri: str) -> tuple[list[str], np.ndarray]:
    """(words, matrix) with ``<pad>`` (zeros) and ``<unk>`` (mean vector) prepended."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(storage.local_path(uri)), binary=True)
    vectors = np.asarray(kv.vectors, dtype=np.float32)
    special = np.stack([np.zeros(vectors.shape[1], np.float32), vectors.mean(axis=0)])
    words = [PAD, UNK] + [w for w in kv.index_to_key]
    return words, np.concatenate([special, vectors])
