"""Downstream evaluation tasks (paper §4.1): labels derived from the catalog, as data.

Every task of ``evaluation.tasks`` becomes a ``TaskData`` (ids, titles, PGs, integer labels)
or a ``Skip`` with its reason; nothing crashes the evaluation because one task lacks data.

- ``rules`` (plugs, ingestible): ordered ``source: A > B`` prefix rules on ``category_path``;
  the first matching rule decides (1, 0, or null = left out as uncertain) and a product no
  rule matches is not in the task. Labels are never training targets: ``category_path`` is
  reserved for evaluation (docs/DATA.md).
- ``browse``: the category-path ``level`` inside one PG, deeper than any training task.
- ``file``: a user ``product_id,label`` file (SIOC has no public labels: without a file the
  task is skipped, never fabricated). Bad rows are recorded with their file row and reason.
- ``unseen`` (paper task 5): the base task on a fixed train/test split; test products whose
  title overlaps some training title by more than ``threshold`` are removed (``max_overlap``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mrnet.config.evaluation import EvalTask
from mrnet.data.demo import SEP
from mrnet.data.sample import hash_rank, hash_sample
from mrnet.data.text import vectorizer

log = logging.getLogger(__name__)

@dataclass
class TaskData:
    """One task's products: ``y`` (N,) int labels into ``classes``; ``test`` marks a fixed test
    split (unseen population), else None (cross-validation)."""

    name: str
    kind: str  # "binary" | "multiclass"
    ids: np.ndarray
    titles: np.ndarray
    pgs: np.ndarray
    y: np.ndarray
    classes: list[str]
    info: dict = field(default_factory=dict)
    test: np.ndarray | None = None
    train_size: int | None = None

    @property
    def metric(self) -> str:
        return "auc" if self.kind == "binary" else "accuracy"

    def subset(self, keep: np.ndarray) -> "TaskData":
        return TaskData(self.name, self.kind, self.ids[keep], self.titles[keep], self.pgs[keep], self.y[keep],
                        self.classes, self.info, None if self.test is None else self.test[keep], self.train_size)


@dataclass
class Skip:
    name: str
    reason: str


def parse_rule(path: str) -> tuple[str, tuple[str, ...]]:
    source, sep, prefix = path.partition(":")
    if not sep or not source.strip():
        raise ValueError(f"label rule {path!r} must look like 'source: Level1 > Level2' (or 'source:')")
    levels = tuple(p.strip() for p in prefix.split(">")) if prefix.strip() else ()
    return source.strip(), levels


def rule_labels(task: EvalTask, catalog: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(label per product: 1 / 0 / NA, index of the rule that decided it or -1)."""
    levels = catalog["category_path"].fillna("").str.split(SEP).map(tuple)
    label = pd.Series(pd.NA, index=catalog.index, dtype="Int64")
    decided_by = pd.Series(-1, index=catalog.index, dtype=np.int64)
    for i, rule in enumerate(task.rules):
        source, prefix = parse_rule(rule.path)
        n = len(prefix)
        hit = (catalog["source"] == source) & levels.map(lambda p, pre=prefix, n=n: p[:n] == pre)
        hit &= decided_by < 0
        decided_by[hit] = i
        if rule.label is not None:
            label[hit] = int(rule.label)
    return label, decided_by


def _task_data(task: EvalTask, kind: str, rows: pd.DataFrame, y: np.ndarray, classes: list[str],
               info: dict) -> TaskData:
    return TaskData(task.name, kind, rows["product_id"].to_numpy(str), rows["title"].fillna("").to_numpy(str),
                    rows["product_group"].to_numpy(str), y.astype(np.int64), classes, info,
                    train_size=task.train_size)


def _binary(task: EvalTask, catalog: pd.DataFrame, label: pd.Series, info: dict) -> TaskData | Skip:
    has = label.notna().to_numpy()
    rows, y = catalog[has], label[has].to_numpy(np.int64)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    info |= {"products": int(has.sum()), "positives": positives, "negatives": negatives}
    if min(positives, negatives) < task.min_positives:
        return Skip(task.name, f"{positives} positive / {negatives} negative products: each class needs at least "
                               f"min_positives={task.min_positives}")
    return _task_data(task, "binary", rows, y, ["no", "yes"], info)


def from_rules(task: EvalTask, catalog: pd.DataFrame) -> TaskData | Skip:
    label, decided_by = rule_labels(task, catalog)
    counts = decided_by[decided_by >= 0].value_counts()
    info = {"rule_hits": {task.rules[i].path: int(counts.get(i, 0)) for i in range(len(task.rules))},
            "left_out_uncertain": int(((decided_by >= 0) & label.isna()).sum()),
            "pgs": sorted(catalog.loc[label.notna(), "product_group"].dropna().unique().tolist())}
    return _binary(task, catalog, label, info)


def from_browse(task: EvalTask, catalog: pd.DataFrame) -> TaskData | Skip:
    """Multi-class labels: the category-path ``level`` (or the category ``column``) of the
    products of PG ``pg`` (all PGs when null)."""
    rows = catalog if task.pg is None else catalog[catalog["product_group"] == task.pg]
    where = "the catalog" if task.pg is None else f"PG {task.pg!r}"
    if rows.empty:
        return Skip(task.name, f"{where} has no products in this catalog")
    if task.column is not None:
        level = column_values(task, rows)
        if isinstance(level, Skip):
            return level
        level = level.replace("", pd.NA).astype(object)
        what = f"column {task.column!r}"
    else:
        level = rows["category_path"].fillna("").str.split(SEP).str[task.level - 1]
        what = f"level {task.level}"
    counts = level.value_counts()
    kept = counts[counts >= task.min_class_size]
    info = {"pg": task.pg, "level": task.level, "column": task.column, "pg_products": len(rows),
            "classes_total": int(len(counts)), "dropped_small_classes": int(len(counts) - len(kept)),
            "dropped_products": int(counts.sum() - kept.sum() + level.isna().sum())}
    if len(kept) < 2:
        return Skip(task.name, f"{len(kept)} class(es) of {where} at {what} have at least "
                               f"min_class_size={task.min_class_size} products: nothing to classify")
    classes = sorted(kept.index)
    keep = level.isin(classes).to_numpy()
    y = level[keep].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return _task_data(task, "multiclass", rows[keep], y, classes, info | {"products": int(keep.sum()),
                                                                         "classes": len(classes)})


def column_values(task: EvalTask, catalog: pd.DataFrame) -> pd.Series | Skip:
    """The stripped text values of the task's label ``column``, or a Skip when the catalog lacks it."""
    if task.column not in catalog:
        return Skip(task.name, f"column {task.column!r} is not in the catalog")
    return catalog[task.column].astype("string").str.strip()


def from_values(task: EvalTask, catalog: pd.DataFrame) -> TaskData | Skip:
    """Binary labels from a catalog column's values (``positive`` → 1, ``negative`` or every other
    non-empty value → 0); a reserved column such as Myntra's ``season`` is never a training target."""
    values = column_values(task, catalog)
    if isinstance(values, Skip):
        return values
    label = pd.Series(pd.NA, index=catalog.index, dtype="Int64")
    negative = values.notna() & (values != "") if task.negative is None else values.isin(task.negative)
    label[negative.fillna(False).to_numpy()] = 0
    label[values.isin(task.positive).fillna(False).to_numpy()] = 1
    info = {"column": task.column, "positive_values": task.positive, "negative_values": task.negative or "the rest",
            "pgs": sorted(catalog.loc[label.notna(), "product_group"].dropna().unique().tolist())}
    return _binary(task, catalog, label, info)


def read_label_file(path: str) -> pd.DataFrame:
    """A ``product_id,label`` CSV/TSV (through storage: local or s3://)."""
    from mrnet.io import storage

    sep = "\t" if path.endswith((".tsv", ".tsv.gz")) else ","
    return pd.read_csv(storage.local_path(path), sep=sep, dtype=str, keep_default_na=False)


def from_file(task: EvalTask, catalog: pd.DataFrame) -> TaskData | Skip:
    """User labels; rows with an unknown id, a bad label or a duplicate id are left out and
    counted with their first file rows (row 2 = the first data row under the header)."""
    from mrnet.io import storage

    if not task.labels:
        return Skip(task.name, f"no public labels exist for {task.name!r}: give a product_id,label file with "
                               f"evaluation task {task.name!r} labels: <path> to evaluate it")
    if not storage.exists(task.labels):
        return Skip(task.name, f"label file not found: {task.labels}")
    df = read_label_file(task.labels)
    missing = [c for c in ("product_id", "label") if c not in df.columns]
    if missing:
        return Skip(task.name, f"{task.labels}: column(s) {missing} missing (has {list(df.columns)}); "
                               "expected product_id,label")
    df["file_row"] = np.arange(2, len(df) + 2)
    known = set(catalog["product_id"])
    bad = {"unknown_product_id": ~df["product_id"].isin(known),
           "label_not_0_or_1": ~df["label"].str.strip().isin(["0", "1"]),
           "duplicate_product_id": df["product_id"].duplicated(keep="first")}
    reason = pd.Series("", index=df.index)
    for why, mask in bad.items():
        reason[(reason == "") & mask] = why
    rejected = df[reason != ""]
    info = {"file": task.labels, "rows": len(df), "rejected": {
        why: {"rows": int((reason == why).sum()), "first_file_rows": rejected.loc[reason == why, "file_row"].head(5)
              .tolist()} for why in bad if (reason == why).any()}}
    for why, detail in info["rejected"].items():
        log.warning("[evaluate] %s: %d row(s) of %s left out as %s (first file rows %s)", task.name, detail["rows"],
                    task.labels, why, detail["first_file_rows"])
    good = df[reason == ""]
    if good.empty:
        return Skip(task.name, f"{task.labels}: none of its {len(df)} rows is usable ({info['rejected']})")
    label = pd.Series(pd.NA, index=catalog.index, dtype="Int64")
    position = pd.Series(catalog.index, index=catalog["product_id"])
    label[position[good["product_id"]].to_numpy()] = good["label"].str.strip().astype(int).to_numpy()
    return _binary(task, catalog, label, info)


def max_overlap(test_titles, train_titles, chunk: int = 4096) -> np.ndarray:
    """Per test title, the largest Jaccard overlap |T ∩ S| / |T ∪ S| of its distinct title tokens
    with any training title's. An inverted index, as a sparse product: for each test title only
    the training titles sharing a token with it are touched (title = ``text.tokenize``)."""
    # one tokenizing pass over both sides; test-only tokens count in |T ∪ S| and share nothing
    both = vectorizer("count", binary=True, dtype=np.int32).fit_transform(list(test_titles) + list(train_titles))
    test, train = both[: len(test_titles)].tocsr(), both[len(test_titles):].tocsr()
    train_sizes = np.asarray(train.sum(axis=1)).ravel()
    test_sizes = np.asarray(test.sum(axis=1)).ravel().astype(np.int64)
    index = train.T.tocsr()  # token → training titles (the inverted index)
    out = np.zeros(test.shape[0], np.float64)
    for start in range(0, test.shape[0], chunk):
        shared = (test[start:start + chunk] @ index).tocoo()  # (test, train) pairs sharing ≥ 1 token
        if shared.nnz == 0:
            continue
        rows = shared.row + start
        union = test_sizes[rows] + train_sizes[shared.col] - shared.data
        np.maximum.at(out, rows, shared.data / np.maximum(union, 1))
    return out


def unseen_split(task: EvalTask, base: TaskData, seed: int, catalog: pd.DataFrame | None = None) -> TaskData | Skip:
    """Fixed train/test split of the base task, then the §4.1 task-5 filter. The split hashes the
    product id, or the value of column ``split_by`` (every product of one category path on one side)."""
    keys = base.ids
    if task.split_by:
        if catalog is None or task.split_by not in catalog:
            return Skip(task.name, f"split_by column {task.split_by!r} is not in the catalog")
        keys = catalog.set_index("product_id")[task.split_by].reindex(base.ids).fillna("").to_numpy(str)
    test = hash_rank(keys, seed, "unseen") < task.test_fraction
    overlap = max_overlap(base.titles[test], base.titles[~test])
    keep_test = np.zeros(len(base.ids), bool)
    keep_test[np.flatnonzero(test)[overlap <= task.threshold]] = True
    keep = ~test | keep_test
    data = base.subset(keep)
    data.name, data.test, data.train_size = task.name, keep_test[keep], task.train_size
    y_test = data.y[data.test]
    data.info = {"base": base.name, "threshold": task.threshold, "overlap": "jaccard of distinct title tokens",
                 "split_by": task.split_by or "product_id",
                 "train": int((~data.test).sum()), "test_before_filter": int(test.sum()),
                 "test": int(data.test.sum()), "test_positives": int((y_test == 1).sum()),
                 "test_negatives": int((y_test == 0).sum())}
    if base.kind == "binary" and min(data.info["test_positives"], data.info["test_negatives"]) < 2:
        return Skip(task.name, f"{data.info['test']} test products remain after the overlap filter (t_h = "
                               f"{task.threshold}) with {data.info['test_positives']} positive: no AUC possible")
    if data.info["test"] < 2:
        return Skip(task.name, f"{data.info['test']} test products remain after the overlap filter")
    return data


def path_columns(task: EvalTask) -> list[str]:
    """The category-path columns a task's labels come from (a user's own catalog may have none)."""
    if task.kind == "rules" or (task.kind == "browse" and task.column is None):
        return ["category_path"]
    return []


def derive(tasks: list[EvalTask], catalog: pd.DataFrame, seed: int) -> dict[str, TaskData | Skip]:
    """Every configured task, in order (an ``unseen`` task after its base)."""
    out: dict[str, TaskData | Skip] = {}
    builders = {"rules": from_rules, "browse": from_browse, "values": from_values, "file": from_file}
    for task in sorted(tasks, key=lambda t: t.kind == "unseen"):
        lacking = [c for c in path_columns(task) if c not in catalog.columns]
        if lacking:
            data = Skip(task.name, f"the catalog has no {lacking[0]!r} column, which a {task.kind} task reads")
        elif task.kind != "unseen":
            rows = catalog[catalog["product_group"].isin(task.pgs)] if task.pgs else catalog
            data = builders[task.kind](task, rows)
        elif isinstance(out.get(task.base), TaskData):
            data = unseen_split(task, out[task.base], seed, catalog)
        else:
            data = Skip(task.name, f"base task {task.base!r} was skipped: {out[task.base].reason}")
        if isinstance(data, TaskData) and task.max_products and len(data.ids) > task.max_products:
            keep = hash_sample(data.ids, task.max_products, seed, "sample")
            mask = np.zeros(len(data.ids), bool)
            mask[keep] = True
            data.info["sampled_from"] = len(data.ids)
            data = data.subset(mask)
            if data.kind == "binary" and data.test is None:
                data.info |= {"positives": int((data.y == 1).sum()), "negatives": int((data.y == 0).sum())}
        out[task.name] = data
    return {t.name: out[t.name] for t in tasks}
