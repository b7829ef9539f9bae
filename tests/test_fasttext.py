"""FastText word vectors (word2vec.model: fasttext): the n-gram table is saved without pickle,
unseen words get gensim's subword vector, and it travels in the PG model for cold start."""

import numpy as np
import pandas as pd
import pytest

from mrnet.config.training import Word2VecConfig
from mrnet.data.text import tokenize
from mrnet.data.word2vec import load_subwords, load_vectors, subword_vectors, train_word2vec, unseen_words
from tests.helpers import RAW


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    raw = pd.read_csv(RAW / "bigbasket_products_27k" / "BigBasket_Products.csv.gz", usecols=["product"])
    titles = raw["product"].dropna().sample(3000, random_state=0)
    path = tmp_path_factory.mktemp("ft") / "corpus.txt"
    path.write_text("\n".join(" ".join(tokenize(t)) for t in titles) + "\n")
    return path


def test_subword_vectors_are_gensims_oov_vectors(corpus):
    from gensim.models import FastText

    model = FastText(corpus_file=str(corpus), vector_size=16, min_count=2, epochs=2, bucket=5000, workers=1, seed=1)
    info = {"min_n": 3, "max_n": 6, "bucket": 5000}
    unseen = ["chocolatey", "zq"]  # n-grams of "<zq>": "<zq", "zq>", "<zq>"
    assert all(w not in model.wv.key_to_index for w in unseen)
    ours = subword_vectors(unseen, model.wv.vectors_ngrams, info)
    assert np.allclose(ours, np.stack([model.wv[w] for w in unseen]), atol=1e-6)


def test_fasttext_stage_writes_a_safe_ngram_table_and_unseen_words_land_near_their_stem(corpus, tmp_path):
    cfg = Word2VecConfig(model="fasttext", workers=1, bucket=20_000)
    uri, stats = train_word2vec(str(corpus), cfg, str(tmp_path / "vectors.bin"), progress=False)
    assert stats["model"] == "fasttext"
    words, vectors = load_vectors(uri)
    table, info = load_subwords(uri)
    assert table.shape == (20_000, 128) and table.dtype == np.float16 and info["bucket"] == 20_000
    index = {w: i for i, w in enumerate(words)}
    for typo, stem in [("chocolatey", "chocolate"), ("biscuitz", "biscuit")]:
        assert typo not in index and stem in index
        v = subword_vectors([typo], table, info)[0]
        cos = vectors[2:] @ v / (np.linalg.norm(vectors[2:], axis=1) * np.linalg.norm(v))
        assert words[2 + int(np.argmax(cos))].startswith(stem[:6])  # chocolate(s), biscuit(s): the same stem
    w2v_uri, _ = train_word2vec(str(corpus), Word2VecConfig(workers=1, epochs=2), str(tmp_path / "w" / "vectors.bin"),
                                progress=False)
    assert load_subwords(w2v_uri) is None


def test_a_fasttext_model_embeds_unseen_words_by_their_ngrams(tiny_artifacts, tmp_path):
    """Cold start: with word2vec, two different unseen words are both <unk> (same embedding);
    with FastText they get different vectors, and the model keeps the words below min count."""
    from mrnet.data.catalog import read_catalog
    from mrnet.encoder.embed import embed_titles
    from mrnet.encoder.model import load_model
    from mrnet.encoder.train import train_pg

    cfg, catalog_uri, vectors_uri = tiny_artifacts
    catalog = read_catalog(catalog_uri)
    (tmp_path / "c.txt").write_text("\n".join(" ".join(tokenize(t)) for t in catalog["title"]) + "\n")
    wcfg = cfg.word2vec.model_copy(update={"model": "fasttext", "bucket": 5000, "min_count": 3, "workers": 1})
    ft_uri, _ = train_word2vec(str(tmp_path / "c.txt"), wcfg, str(tmp_path / "ft" / "vectors.bin"), progress=False)
    words, vectors = load_vectors(ft_uri)
    short = cfg.model_copy(update={"word2vec": wcfg, "train": cfg.train.model_copy(
        update={"epochs": 1, "steps_per_epoch": 3, "patience": None})})
    uri, _ = train_pg(short, "watches", catalog, words, vectors, str(tmp_path / "m"), subwords=load_subwords(ft_uri))
    model, meta = load_model(uri)
    rare = unseen_words(words, catalog.loc[catalog["product_group"] == "watches", "title"], 32)
    assert rare and meta["vocab"] == words + rare and meta["subwords"]["bucket"] == 5000
    assert model.subwords.shape == (5000, vectors.shape[1])
    a, b = embed_titles(model, meta, ["analog watchezz for men", "analog qqxvkj for men"])
    assert not np.allclose(a, b)
    plain, plain_meta = load_model(str(_plain_model(short, catalog, tiny_artifacts[2], tmp_path)))
    a, b = embed_titles(plain, plain_meta, ["analog watchezz for men", "analog qqxvkj for men"])
    assert np.allclose(a, b)


def _plain_model(cfg, catalog, vectors_uri, tmp_path):
    from mrnet.encoder.train import train_pg

    words, vectors = load_vectors(vectors_uri)
    plain = cfg.model_copy(update={"word2vec": cfg.word2vec.model_copy(update={"model": "word2vec"})})
    return train_pg(plain, "watches", catalog, words, vectors, str(tmp_path / "plain"))[0]
