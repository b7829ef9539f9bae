"""Task specs → per-PG targets, loss normalizers and metrics (paper §3.1, Table 1).

A task is data (config.TaskSpec). ``fit_task`` learns its state from one PG's
training split: the top-K classes (the rest grouped as ``other``), the quantile
threshold (High Value), the standardization of a regression target, or the
TF-IDF vocabulary of the 5000-d decoding target. The state is plain JSON, stored
inside every checkpoint, so a model always knows how its heads were defined.

Loss normalization (the paper normalizes task losses "such that one task with a
higher loss cannot dominate"): each task's loss is divided by the loss of the
trivial predictor that knows only the training label distribution, so every task
starts near 1.0 regardless of its kind or scale:

- classification: cross-entropy / entropy of the training class prior;
- regression: squared error / variance of the transformed training target;
- decoding: mean squared error per dimension / mean per-dimension variance.

Decoding targets are scaled to unit mean variance (``scale`` = 1/√variance, ~70 for 5000-d
TF-IDF). The normalized loss is the same at any scale, but Adam moves every weight by about
``lr`` per step whatever its gradient: on raw L2-normalized TF-IDF (entries ~0.01) that noise
alone kept the head at or above its prior in multi-task training (docs/TRAINING.md).

A task is inactive for a PG (and reported as such) when fewer than ``min_labels``
training products carry its label or the label has a single value there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from mrnet.config.training import TaskSpec
from mrnet.data.text import vectorizer

OTHER = "other"


@dataclass
class Targets:
    """Encoded labels of one task for N products: ``y`` (N,) or CSR (N, D); ``has`` (N,) bool."""

    y: np.ndarray | sparse.csr_matrix
    has: np.ndarray


def _binary_values(spec: TaskSpec, column: pd.Series, threshold: float | None) -> pd.Series:
    if spec.column_type == "bool":
        return column.astype("boolean")
    values = column.astype("Float64")
    return (values >= threshold) if spec.threshold is not None else (values > threshold)


def _entropy(counts: np.ndarray) -> float:
    p = counts / counts.sum()
    return float(max(-(p * np.log(p + 1e-12)).sum(), 0.05))


def _tfidf_matrix(texts, vocabulary: list[str], idf: np.ndarray) -> sparse.csr_matrix:
    from sklearn.preprocessing import normalize

    counts = vectorizer("count", vocabulary=vocabulary).transform(texts)
    return normalize(counts.multiply(idf.astype(np.float32)).tocsr(), norm="l2").astype(np.float32)


def _fit_decoding(spec: TaskSpec, texts: pd.Series) -> dict:
    vec = vectorizer(max_features=spec.dim)
    try:
        vec.fit(texts.fillna(""))
    except ValueError:  # empty vocabulary
        return {"active": False, "why": "no tokens"}
    vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    idf = vec.idf_.astype(np.float32)
    x = _tfidf_matrix(texts.fillna(""), vocabulary, idf)
    mean = np.asarray(x.mean(axis=0)).ravel()
    mean_sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    variance = float(max((mean_sq - mean**2).mean(), 1e-8))
    scale = float(1.0 / np.sqrt(variance))  # targets of unit mean variance (module docstring)
    return {"active": True, "out_dim": len(vocabulary), "vocabulary": vocabulary, "idf": idf.tolist(),
            "scale": scale, "normalizer": variance * scale**2, "prior": (mean * scale).tolist()}


def fit_task(spec: TaskSpec, train: pd.DataFrame) -> dict:
    """Learn one task's state on a PG's training rows (JSON-serializable dict)."""
    state: dict = {"name": spec.name, "kind": spec.kind}
    if spec.column not in train:
        return state | {"active": False, "why": f"column {spec.column!r} absent"}
    if spec.kind == "decoding":
        return state | _fit_decoding(spec, train[spec.column])
    column = train[spec.column].dropna()
    if len(column) < spec.min_labels:
        return state | {"active": False, "why": f"{len(column)} labels < min_labels={spec.min_labels}"}
    if spec.kind == "regression":
        y = _transform(spec, column.to_numpy(np.float64), mean=0.0, std=1.0)
        mean, std = (float(y.mean()), float(y.std())) if "standardize" in spec.transform else (0.0, 1.0)
        variance = float(((y - mean) / std).var())
        if variance <= 0:
            return state | {"active": False, "why": "constant target"}
        prior = float(((y - mean) / std).mean())
        return state | {"active": True, "out_dim": 1, "mean": mean, "std": std, "normalizer": variance,
                        "prior": [prior]}
    if spec.kind == "binary":
        threshold = spec.threshold
        if spec.quantile is not None:
            threshold = float(np.quantile(column.to_numpy(np.float64), spec.quantile))
        values = _binary_values(spec, column, threshold)
        classes, counts = ["no", "yes"], np.array([(~values).sum(), values.sum()], dtype=np.float64)
        state |= {"threshold": threshold}
    else:
        freq = column.astype(str).value_counts()
        k = spec.top_k if spec.min_class_size is None else min(spec.top_k, max(2, int((freq >= spec.min_class_size).sum())))
        classes = list(freq.index[:k])
        counts = freq.to_numpy(np.float64)[:k]
        if len(freq) > k:
            classes.append(OTHER)
            counts = np.append(counts, freq.to_numpy()[k:].sum())
    if (counts > 0).sum() < 2:
        return state | {"active": False, "why": "a single class"}
    log_prior = np.log(np.maximum(counts, 0.5) / counts.sum())
    return state | {"active": True, "out_dim": len(classes), "classes": classes,
                    "normalizer": _entropy(counts[counts > 0]), "prior": log_prior.tolist()}


def _transform(spec: TaskSpec, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    if spec.transform.startswith("log1p"):
        x = np.log1p(x)
    return (x - mean) / std


def encode(spec: TaskSpec, state: dict, df: pd.DataFrame) -> Targets:
    """Targets of an active task for every row of ``df`` (missing labels: ``has`` False)."""
    n = len(df)
    if spec.kind == "decoding":
        texts = df[spec.column].fillna("")
        x = _tfidf_matrix(texts, state["vocabulary"], np.asarray(state["idf"], np.float32))
        return Targets((x * np.float32(state.get("scale", 1.0))).tocsr(), np.asarray(texts.str.len() > 0))
    column = df[spec.column] if spec.column in df else pd.Series([pd.NA] * n, dtype=object)
    has = np.array(column.notna(), dtype=bool)
    if spec.kind == "regression":
        y = np.full(n, np.nan, np.float32)
        y[has] = _transform(spec, column[has].to_numpy(np.float64), state["mean"], state["std"])
        return Targets(y, has)
    if spec.kind == "binary":
        classes = _binary_values(spec, column[has], state.get("threshold")).to_numpy(bool).astype(np.int64)
    else:
        index = {c: i for i, c in enumerate(state["classes"])}
        other = index.get(OTHER, -1)
        classes = np.array([index.get(v, other) for v in column[has].astype(str)], dtype=np.int64)
    y = np.full(n, -1, np.int64)
    y[has] = classes
    has &= y >= 0  # a value outside top-K with no "other" class: unusable, not an error
    return Targets(y, has)


def metrics(state: dict, output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Validation metrics of one task: accuracy + macro-F1, RMSE, or decoding MSE."""
    if state["kind"] in ("multiclass", "binary"):
        from sklearn.metrics import f1_score

        pred = output.argmax(axis=1)
        return {"accuracy": float((pred == target).mean()),
                "macro_f1": float(f1_score(target, pred, average="macro", zero_division=0))}
    if state["kind"] == "regression":
        return {"rmse": float(np.sqrt(np.mean((output.ravel() - target) ** 2)))}
    return {"mse": float(np.mean((output - target) ** 2))}
