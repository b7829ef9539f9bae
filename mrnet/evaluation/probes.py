"""Qualitative probes of the embeddings, made quantitative (paper §4.2 and §4.3).

- ``neighbor_scores`` (§4.2): for a fixed sample of query products of one PG, the k nearest
  products of the same PG by Euclidean distance of an embedding, and beside them the k nearest
  by TF-IDF cosine similarity of the titles. The NN score of a label (subcategory, colour,
  gender …) is the share of a query's k neighbours that carry the query's value, averaged over
  the queries that have the label; ``random`` is what k random products of the PG would score
  (Σ_c p_c² over the PG's label distribution).
- ``stable_important`` (§4.3): the features of the PG-agnostic embedding that are in the top
  quartile of random-forest importance in *every* one of several forests, each fit on a
  random half of a task's products. Comparing the sets of a training task and an evaluation
  task shows whether the signal injected in training is what the evaluation task uses;
  ``chance`` is the overlap two random sets of those sizes would have (|A|·|B| / D).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrnet.data.sample import hash_sample


def _same_share(labels: pd.Series, queries: np.ndarray, neighbours: np.ndarray) -> tuple[float, int]:
    values = labels.to_numpy(object)
    has = pd.notna(values[queries])
    if not has.any():
        return float("nan"), 0
    q, nb = values[queries][has], values[neighbours[has]]
    return float((nb == q[:, None]).mean()), int(has.sum())


def tfidf_neighbours(titles, queries: np.ndarray, k: int) -> np.ndarray:
    """k most cosine-similar titles (TF-IDF fit on the PG's titles), self excluded."""
    from mrnet.data.text import vectorizer

    x = vectorizer().fit_transform(titles)
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 256):
        block = queries[start:start + 256]
        sim = (x[block] @ x.T).toarray()
        sim[np.arange(len(block)), block] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, 1), axis=1, kind="stable")
        out[start:start + len(block)] = np.take_along_axis(top, order, 1)
    return out


def neighbor_scores(products: pd.DataFrame, spaces: dict[str, np.ndarray], labels: list[str], n_queries: int,
                    k: int, seed: int) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """(scores {space: {label: share}}, query rows, neighbour rows per space) within one PG;
    ``spaces`` are embeddings row-aligned with ``products`` (plus TF-IDF, computed here)."""
    from mrnet.evaluation.retrieval import knn

    queries = np.sort(hash_sample(products["product_id"], n_queries, seed, "nn"))
    found = {name: knn(x[queries], x, k, "euclidean", exclude=queries)[1] for name, x in spaces.items()}
    found["tfidf"] = tfidf_neighbours(products["title"].fillna("").to_numpy(str), queries, k)
    scores: dict[str, dict] = {}
    for label in labels:
        if label not in products or products[label].notna().sum() == 0:
            continue
        p = products[label].dropna().value_counts(normalize=True).to_numpy()
        scores.setdefault("random", {})[label] = float((p**2).sum())
        for name, nb in found.items():
            share, n = _same_share(products[label], queries, nb)
            scores.setdefault(name, {})[label] = share
            scores.setdefault("queries_with_label", {})[label] = n
    return scores, queries, found


def stable_important(x: np.ndarray, y: np.ndarray, repeats: int, seed: int, trees: int = 100,
                     max_rows: int = 4_000) -> tuple[set[int], list[set[int]]]:
    """Feature indices in the top quartile of RF importance in every one of ``repeats`` forests,
    each fit on a random half (at most ``max_rows``) of the products; also each forest's set."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    quartile = max(x.shape[1] // 4, 1)
    tops = []
    for r in range(repeats):
        rows = rng.permutation(len(y))[: min(len(y) // 2, max_rows)]
        rf = RandomForestClassifier(n_estimators=trees, n_jobs=-1, random_state=seed + r).fit(x[rows], y[rows])
        tops.append(set(np.argsort(-rf.feature_importances_)[:quartile].tolist()))
    return set.intersection(*tops), tops


def interpret(pairs: list[tuple[str, str]], labelled: dict[str, tuple[np.ndarray, np.ndarray]], repeats: int,
              seed: int, trees: int) -> list[dict]:
    """For each (training task, evaluation task): the stable top-quartile sets and their overlap.
    ``labelled[name]`` = (agnostic features, labels) of that task's products."""
    stable = {}
    rows = []
    for train_task, eval_task in pairs:
        for name in (train_task, eval_task):
            if name not in stable and name in labelled:
                stable[name] = stable_important(*labelled[name], repeats, seed, trees)[0]
        if train_task not in stable or eval_task not in stable:
            missing = [n for n in (train_task, eval_task) if n not in stable]
            rows.append({"training_task": train_task, "evaluation_task": eval_task,
                         "skipped": f"no two classes of labelled products with an embedding for {missing}"})
            continue
        a, b = stable[train_task], stable[eval_task]
        dim = labelled[eval_task][0].shape[1]
        rows.append({"training_task": train_task, "evaluation_task": eval_task, "dim": dim,
                     "top_quartile": max(dim // 4, 1), "repeats": repeats,
                     "training_important": len(a), "evaluation_important": len(b), "shared": len(a & b),
                     "chance": round(len(a) * len(b) / dim, 2), "shared_features": sorted(a & b)})
    return rows
