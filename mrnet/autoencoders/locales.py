"""Paired titles of two locales and one MRNet model per locale (paper §5, data side).

Input, either:

- ``crosslingual.pairs: builtin:food_names_en_fr`` (or ``builtin:food_names_de_en``): the
  official bilingual food-item names under ``data.raw_dir`` (Health Canada CNF 2015 + ANSES
  CIQUAL 2020; BLS 4.0). They are **generic food names, not retail product titles**: a
  stand-in for the paper's UK/FR product titles. Each item's food group becomes the
  ``food_group`` label of both locale catalogs.
- a pairs file (CSV/TSV) with columns ``id_a, title_a, id_b, title_b`` plus
  ``crosslingual.catalog_a`` / ``catalog_b``: canonical catalogs (data/catalog.py) of the two
  locales, with the label columns the cross-lingual ``tasks`` name. The catalog is the
  source of truth for titles and labels; the pair titles are kept for the report.

Bad rows are never dropped silently: catalog rows go through catalog validation
(quarantine), and pairs with an empty field, a duplicate, or an id missing from (or
quarantined in) its locale catalog go to ``pairs_quarantine.parquet`` with the file row and
the reason.

Held-out split: a pair is held out when a seeded hash of its normalized locale-A title falls
under ``test_fraction``, so pairs with the same A text land on the same side. Every id of a
held-out pair is removed from everything that trains: the locale word2vec corpora, the
locale MRNet models, the autoencoder and the linear baselines. A training pair that shares
an id with a held-out pair is dropped (counted as ``dropped_overlap``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mrnet.config.schema import Config
from mrnet.data.sample import hash_rank
from mrnet.data.text import tokenize
from mrnet.io import storage

log = logging.getLogger(__name__)
PAIR_COLUMNS = ["id_a", "title_a", "id_b", "title_b"]
BUILTIN = {  # name → (file under raw_dir, id columns, food-group column, locale → title column)
    "food_names_en_fr": ("food_names_en_fr/pairs_en_fr.tsv.gz", ("source", "source_id"), "group",
                         {"en": "name_en", "fr": "name_fr"}),
    "food_names_de_en": ("food_names_de_en/pairs_de_en.tsv.gz", ("bls_code",), "main_group_letter",
                         {"de": "name_de", "en": "name_en"}),
}
STAND_IN = ("generic food-item names from national food-composition tables, NOT retail product "
            "titles: a stand-in for the paper's paired UK/FR product titles (§5)")


def _sample(pairs: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    return pairs if cap is None or len(pairs) <= cap else pairs.sample(n=cap, random_state=seed).sort_index()


def builtin_inputs(cfg: Config, out_dir: str) -> tuple[pd.DataFrame, str, str, str]:
    """(pairs, catalog_a uri, catalog_b uri, description) from a built-in bilingual table."""
    xl, name = cfg.crosslingual, cfg.crosslingual.pairs.removeprefix("builtin:")
    if name not in BUILTIN:
        raise ValueError(f"crosslingual.pairs: unknown built-in {name!r}; known: {sorted(BUILTIN)}")
    rel, id_cols, group, titles = BUILTIN[name]
    path = storage.local_path(storage.join(cfg.data.raw_dir, rel))
    if not path.exists():
        raise FileNotFoundError(f"crosslingual.pairs {xl.pairs}: {path} not found (data.raw_dir={cfg.data.raw_dir})")
    for loc in (xl.locale_a, xl.locale_b):
        if loc not in titles:
            raise ValueError(f"crosslingual: {name} has locales {sorted(titles)}, not {loc!r}")
    df = _sample(pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False), xl.max_pairs, cfg.train.seed)
    ids = df[list(id_cols)].agg(":".join, axis=1)
    uris = []
    for side, loc in (("a", xl.locale_a), ("b", xl.locale_b)):
        catalog = pd.DataFrame({"product_id": ids, "product_group": loc, "source": df.get("source", name),
                                "locale": loc, "title": df[titles[loc]], "food_group": df[group]})
        uris.append(storage.write_parquet(catalog, storage.join(out_dir, "data", f"catalog_{side}.parquet")))
    pairs = pd.DataFrame({"id_a": ids, "title_a": df[titles[xl.locale_a]], "id_b": ids,
                          "title_b": df[titles[xl.locale_b]], "row": np.arange(len(df)) + 2})
    return pairs.reset_index(drop=True), uris[0], uris[1], f"{name} ({path.name}): {STAND_IN}"


def file_inputs(cfg: Config, out_dir: str) -> tuple[pd.DataFrame, str, str, str]:
    """(pairs, catalog_a, catalog_b, description) from a user pairs file + two locale catalogs."""
    from mrnet.data.catalog import read_catalog

    xl = cfg.crosslingual
    if not xl.catalog_a or not xl.catalog_b:
        raise ValueError(f"crosslingual.pairs {xl.pairs}: a pairs file needs crosslingual.catalog_a and "
                         "crosslingual.catalog_b (one canonical catalog per locale)")
    pairs = read_catalog(xl.pairs)
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"{xl.pairs}: required column(s) {missing} missing (columns: {list(pairs.columns)})")
    pairs = _sample(pairs[PAIR_COLUMNS].astype(str).assign(row=np.arange(len(pairs)) + 2), xl.max_pairs,
                    cfg.train.seed)
    uris = []
    for side, loc, uri in (("a", xl.locale_a, xl.catalog_a), ("b", xl.locale_b, xl.catalog_b)):
        catalog = read_catalog(uri).assign(product_group=loc)  # one model per locale: the locale is the PG
        uris.append(storage.write_parquet(catalog, storage.join(out_dir, "data", f"catalog_{side}.parquet")))
    return pairs.reset_index(drop=True), uris[0], uris[1], f"pairs file {xl.pairs}"


def clean_pairs(pairs: pd.DataFrame, ids_a: set[str], ids_b: set[str], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable pairs, quarantined pairs with ``row`` and ``reason``)."""
    reasons = [[] for _ in range(len(pairs))]
    seen: dict[tuple[str, str], int] = {}
    for i, (a, ta, b, tb, row) in enumerate(pairs[PAIR_COLUMNS + ["row"]].itertuples(index=False)):
        for name, value in (("id_a", a), ("title_a", ta), ("id_b", b), ("title_b", tb)):
            if not str(value).strip():
                reasons[i].append(f"empty:{name}")
        if (a, b) in seen:
            reasons[i].append(f"duplicate_pair(first at row {seen[(a, b)]})")
        seen.setdefault((a, b), row)
        if a not in ids_a:
            reasons[i].append("unknown_id_a(not in catalog_a or quarantined there)")
        if b not in ids_b:
            reasons[i].append("unknown_id_b(not in catalog_b or quarantined there)")
    bad = np.array([bool(r) for r in reasons], bool)
    quarantine = pairs[bad].assign(reason=["; ".join(r) for r in reasons if r], source_file=source)
    return pairs[~bad].reset_index(drop=True), quarantine.reset_index(drop=True)


def split_pairs(pairs: pd.DataFrame, test_fraction: float, seed: int) -> np.ndarray:
    """Held-out mask: a seeded hash of the normalized A title (same A text → same side)."""
    return hash_rank([" ".join(tokenize(t)) for t in pairs["title_a"]], seed, "pairs") < test_fraction


def train_pairs(pairs: pd.DataFrame, test: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train pairs, held-out pairs, dropped): train pairs share no id with a held-out pair."""
    held = pairs[test].reset_index(drop=True)
    train = pairs[~test]
    overlap = train["id_a"].isin(set(held["id_a"])) | train["id_b"].isin(set(held["id_b"]))
    return train[~overlap].reset_index(drop=True), held, int(overlap.sum())


def locale_config(cfg: Config) -> Config:
    """The PG-model config of a locale model: the cross-lingual tasks and word2vec min count."""
    w2v = cfg.word2vec.model_copy(update={"min_count": cfg.crosslingual.min_count})
    return cfg.model_copy(update={"tasks": cfg.crosslingual.tasks, "word2vec": w2v, "pgs": None})


def train_locale(cfg: Config, locale: str, catalog: pd.DataFrame, held_ids: set[str], out_dir: str) -> dict:
    """word2vec + MRNet on the locale's catalog minus held-out ids; embed every catalog item.
    Returns {model, embeddings, vocab_size, n_train, n_val, history, train_ids}."""
    from mrnet.data.corpus import build_corpus
    from mrnet.data.word2vec import load_subwords, load_vectors, train_word2vec
    from mrnet.encoder.embed import embed_pg
    from mrnet.encoder.train import train_pg

    lcfg = locale_config(cfg)
    train = catalog[~catalog["product_id"].isin(held_ids)].reset_index(drop=True)
    train_uri = storage.write_parquet(train, storage.join(out_dir, "data", f"train_{locale}.parquet"))
    corpus, _ = build_corpus(train_uri, storage.join(out_dir, locale, "corpus.txt"), progress=False)
    vectors, w2v = train_word2vec(corpus, lcfg.word2vec, storage.join(out_dir, locale, "vectors.bin"), progress=False)
    words, matrix = load_vectors(vectors)
    model, report = train_pg(lcfg, locale, train, words, matrix, storage.join(out_dir, locale),
                             subwords=load_subwords(vectors))
    emb, stats = embed_pg(model, catalog, storage.join(out_dir, f"embeddings_{locale}.parquet"), cfg.embed.batch_size)
    log.info("[crosslingual] %s: %d training items, vocab %d, %d items embedded", locale, len(train),
             w2v["vocab_size"], stats["products"])
    return {"model": model, "embeddings": emb, "vocab_size": w2v["vocab_size"], "n_train": report["n_train"],
            "n_val": report["n_val"], "history": report["history"], "train_ids": set(train["product_id"])}
