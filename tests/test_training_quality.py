"""Training that works on small catalogs: word2vec settings by corpus size + the health warning,
the decoding head on a case a linear map can reconstruct, early stopping with best-weight restore."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mrnet.config.schema import load_config
from mrnet.config.training import Word2VecConfig
from mrnet.data.word2vec import health, health_line, resolve_settings, train_word2vec
from mrnet.encoder.train import train_pg
from tests.helpers import REPO


def test_auto_settings_scale_with_the_corpus():
    cfg = Word2VecConfig()
    assert resolve_settings(cfg, 88_000) == (2, 50)       # a 10k-product catalog
    assert resolve_settings(cfg, 600_000) == (2, 34)      # the demo catalog
    assert resolve_settings(cfg, 10_000_000) == (6, 5)
    assert resolve_settings(cfg, 2_000_000_000) == (10, 5)  # the paper's regime: its 10 / 5
    assert resolve_settings(Word2VecConfig(min_count=7, epochs=3), 88_000) == (7, 3)


def test_health_flags_degenerate_vectors():
    rng = np.random.default_rng(0)
    words = ["<pad>", "<unk>"] + [f"word{i}" for i in range(300)]
    healthy = rng.normal(size=(302, 16)).astype(np.float32)
    collapsed = (np.ones((302, 16)) + 0.05 * rng.normal(size=(302, 16))).astype(np.float32)
    good, bad = health(words, healthy), health(words, collapsed)
    assert abs(good["mean_cosine"]) < 0.1 and bad["mean_cosine"] > 0.95
    assert len(good["neighbours"]) == 0  # "wordN" has digits: not a probe word
    stats = {"vocab_size": 300, "min_count": 10, "epochs": 5, "corpus_words": 1000}
    assert health_line(stats | {"health": bad}, 0.5).startswith("WARNING degenerate word vectors")
    assert not health_line(stats | {"health": good}, 0.5).startswith("WARNING")


def test_paper_settings_on_a_tiny_corpus_warn_and_auto_heals(tmp_path, caplog):
    """10,000 real BigBasket titles (~51k tokens): the paper's min count 10 / 5 epochs give vectors
    that all point one way (mean cosine 0.99 measured), and the stage says so loudly; ``auto``
    (min count 2, 50 epochs here) spreads them out."""
    from mrnet.data.text import tokenize
    from tests.helpers import RAW

    raw = pd.read_csv(RAW / "bigbasket_products_27k" / "BigBasket_Products.csv.gz", usecols=["product"])
    titles = raw["product"].dropna().sample(10_000, random_state=0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(tokenize(t)) for t in titles) + "\n")
    with caplog.at_level(logging.INFO, logger="mrnet.data.word2vec"):
        _, paper = train_word2vec(str(corpus), Word2VecConfig(min_count=10, epochs=5, workers=1),
                                  str(tmp_path / "p.bin"), progress=False)
    assert paper["health"]["mean_cosine"] > 0.9
    assert any(r.levelno == logging.WARNING and "degenerate" in r.getMessage() for r in caplog.records)
    assert "\r" not in caplog.text
    _, auto = train_word2vec(str(corpus), Word2VecConfig(workers=1), str(tmp_path / "a.bin"), progress=False)
    assert (auto["min_count"], auto["epochs"]) == (2, 50)
    assert auto["health"]["mean_cosine"] < paper["health"]["mean_cosine"] - 0.2
    # word2vec.max_vocab keeps the most frequent words only, raising the min count it reports
    _, capped = train_word2vec(str(corpus), Word2VecConfig(workers=1, epochs=5, max_vocab=1000),
                               str(tmp_path / "c.bin"), progress=False)
    assert auto["vocab_size"] > 1000 >= capped["vocab_size"] > 500 and capped["min_count"] > auto["min_count"]


def _toy_catalog(n=1200, seed=0):
    """Titles of 2-4 words from 40: their TF-IDF vector is a function of a short bag of words."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(40)]
    titles = [" ".join(rng.choice(vocab, rng.integers(2, 5), replace=False)) for _ in range(n)]
    return pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "product_group": "toy", "source": "toy",
                         "locale": "en", "title": titles}), vocab


def test_decoding_head_learns_a_reconstructable_case(tmp_path):
    df, vocab = _toy_catalog()
    words = ["<pad>", "<unk>"] + vocab
    vectors = np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32)
    vectors[0] = 0
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        "tasks=[{name: tfidf, kind: decoding, column: title, dim: 100}]", "word2vec.vector_size=16",
        "model.embed_dim=32", "train.epochs=20", "train.patience=null", "train.threads=1",
        "train.progress=false", "train.batch_size=64", f"artifact_root={tmp_path}", "evaluation.enabled=false"])
    _, report = train_pg(cfg, "toy", df, words, vectors, str(tmp_path / "m"))
    losses = [h["val"]["tfidf"]["loss"] for h in report["history"]]
    assert losses[-1] < 0.5, losses  # 1.0 = the mean TF-IDF vector


def test_early_stopping_restores_the_best_epoch(tiny_artifacts, tmp_path):
    from mrnet.data.catalog import read_catalog
    from mrnet.data.word2vec import load_vectors
    from mrnet.encoder.stopping import val_score

    cfg, catalog_uri, vectors_uri = tiny_artifacts
    words, vectors = load_vectors(vectors_uri)
    catalog = read_catalog(catalog_uri)
    base = ["train.steps_per_epoch=20", "train.batch_size=16", "train.lr=0.02", "train.threads=1"]
    stopping = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "epochs": 12, "patience": 1, "min_delta": 0.0, "steps_per_epoch": 20, "batch_size": 16, "lr": 0.02})})
    uri, report = train_pg(stopping, "watches", catalog, words, vectors, str(tmp_path / "stop"))
    scores = [val_score(h["val"]) for h in report["history"]]  # as the stopper scores an epoch
    best = int(np.argmin(scores)) + 1
    assert report["early_stopped"] and report["best_epoch"] == best and len(scores) == best + 1
    exact = stopping.model_copy(update={"train": stopping.train.model_copy(update={"epochs": best, "patience": None})})
    uri_exact, _ = train_pg(exact, "watches", catalog, words, vectors, str(tmp_path / "exact"))
    kept, reference = load_file(uri), load_file(uri_exact)
    assert all(torch.equal(kept[k], reference[k]) for k in reference)
    assert base  # the overrides above, spelled as a user would


def test_skip_gram_on_small_corpora_cbow_on_large_ones():
    from mrnet.data.word2vec import resolve_sg

    cfg = Word2VecConfig()
    assert resolve_sg(cfg, 600_000) == 1 and resolve_sg(cfg, 2_000_000_000) == 0
    assert resolve_sg(Word2VecConfig(sg=0), 600_000) == 0 and resolve_sg(Word2VecConfig(sg=1), 10**10) == 1


def test_a_task_that_overfits_is_retired_and_a_plateau_is_not():
    from mrnet.encoder.stopping import Stopper

    model = torch.nn.Linear(2, 2)
    stopper = Stopper(patience=5, min_delta=0.0, task_patience=2, retire_delta=0.05)
    # gender saturates and wobbles near its best; review overfits (its loss climbs above the prior)
    epochs = [{"gender": 0.10, "review": 0.95}, {"gender": 0.02, "review": 1.01}, {"gender": 0.03, "review": 1.08},
              {"gender": 0.025, "review": 0.60}, {"gender": 0.015, "review": 0.95}]
    stops = [stopper.update(e, {k: {"loss": v} for k, v in losses.items()}, model)
             for e, losses in enumerate(epochs, 1)]
    # review: 0.06 and 0.13 above its best (0.95) at epochs 2 and 3 -> retired at 3; gender never is
    assert stopper.retired == {"review": 3} and not any(stops)
    # the weights kept: the best of the tasks still trained (gender's 0.015 at 5), not of the mean over all
    # tasks, which the retired review's 0.60 would put at epoch 4 (the ``off`` stopper below)
    assert stopper.best_epoch == 5 and stopper.best == 0.015
    resumed = Stopper(patience=5, min_delta=0.0, task_patience=2)
    resumed.load(stopper.state())
    assert resumed.retired == stopper.retired and resumed.task_best == stopper.task_best
    assert resumed.best_val == stopper.best_val == {"gender": {"loss": 0.015}, "review": {"loss": 0.95}}
    # once every task is retired the PG stops
    assert stopper.update(6, {"gender": {"loss": 0.2}, "review": {"loss": 0.8}}, model) is False
    assert stopper.update(7, {"gender": {"loss": 0.2}, "review": {"loss": 0.8}}, model) is True
    assert stopper.retired == {"review": 3, "gender": 7}
    off = Stopper(patience=5, min_delta=0.0)
    assert not any(off.update(e, {k: {"loss": v} for k, v in losses.items()}, model)
                   for e, losses in enumerate(epochs, 1)) and off.retired == {} and off.best_epoch == 4


def test_train_cap_at_prior_counts_a_task_above_the_prior_as_the_prior_in_the_stop_score():
    """bags_wallets_belts in a demo retrain: review (never retired) swung 0.85 -> 1.45 while color fell 0.35 ->
    0.14; the plain mean (the default) keeps epoch 1, ``train.cap_at_prior`` keeps epoch 2."""
    from mrnet.encoder.stopping import Stopper, val_score

    epochs = [{"color": 0.35, "tfidf": 0.70, "review": 0.85}, {"color": 0.14, "tfidf": 0.64, "review": 1.45}]
    assert val_score({k: {"loss": v} for k, v in epochs[1].items()}) == pytest.approx((0.14 + 0.64 + 1.45) / 3)
    assert val_score({k: {"loss": v} for k, v in epochs[1].items()}, cap=True) == pytest.approx((0.14 + 0.64 + 1.0) / 3)
    assert val_score({"review": {"loss": 1.6}, "offer": {"loss": 1.2}}, cap=True) == 1.0  # nothing learnt: the prior
    for cap, kept in ((False, 1), (True, 2)):
        stopper = Stopper(patience=3, min_delta=0.002, cap=cap)
        for e, losses in enumerate(epochs, 1):
            stopper.update(e, {k: {"loss": v} for k, v in losses.items()}, torch.nn.Linear(1, 1))
        assert stopper.best_epoch == kept


def test_a_retired_task_is_no_longer_drawn(tiny_artifacts, tmp_path):
    from mrnet.data.catalog import read_catalog
    from mrnet.data.word2vec import load_vectors

    cfg, catalog_uri, vectors_uri = tiny_artifacts
    words, vectors = load_vectors(vectors_uri)
    retiring = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "epochs": 8, "patience": None, "task_patience": 1, "retire_delta": 0.0, "steps_per_epoch": 20,
        "batch_size": 16, "lr": 0.02})})
    _, report = train_pg(retiring, "watches", read_catalog(catalog_uri), words, vectors, str(tmp_path / "r"))
    assert report["retired"], report["history"][-1]["val"]
    for entry in report["history"]:
        drawn = set(entry["train_loss"])
        assert not drawn & {t for t, e in report["retired"].items() if e < entry["epoch"]}
        assert entry["retired"] == sorted(t for t, e in report["retired"].items() if e <= entry["epoch"])


def test_batch_size_auto_follows_the_pg_size():
    from mrnet.config.training import TrainConfig
    from mrnet.encoder.train import batch_size_for

    auto = TrainConfig()
    assert [batch_size_for(auto, n) for n in (60, 9_000, 20_000, 40_000, 5_000_000)] == [64, 64, 128, 256, 256]
    assert batch_size_for(TrainConfig(batch_size=32), 5_000_000) == 32
    with pytest.raises(ValueError, match="train.batch_size must be 'auto' or an integer"):
        TrainConfig(batch_size=0)
