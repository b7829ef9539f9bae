"""``mrnet init``: a starter config for a user's own catalog file, from its columns alone.

It reads the file (CSV/TSV/Parquet, gzip too), guesses which columns are the product id, the
title, the description, the product group and the category, and suggests tasks by column type
(paper §3.1, Table 1: tasks are whatever labels the catalog has):

- a numeric column → a regression task (log1p + standardize when it is non-negative) and a
  high-value task (above the PG's 90th percentile);
- a boolean column → a binary task;
- a low-cardinality text column → a multiclass task over every value with at least
  ``MIN_CLASS_SIZE`` (5) products of the PG, at most ``MAX_CLASSES`` (1000), the rest as one
  ``other`` class (``multiclass_task``: the more of the catalog a head is taught to tell apart,
  the better, measured in docs/TRAINING.md);
- the title → the TF-IDF decoding task;
- a category column is held out of training: it becomes the evaluation's browse tasks
  (docs/EVALUATION.md), so the embeddings are judged on labels they never saw.

Nothing is invented: a column the file lacks gets no task, and every guess is written into the
YAML with the columns found, for the user to correct.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

ID_NAMES = ("product_id", "id", "uniq_id", "sku", "asin", "item_id", "pid", "index", "product_code")
TITLE_NAMES = ("title", "product_title", "product_name", "productdisplayname", "name", "product", "item_name")
DESCRIPTION_NAMES = ("description", "product_description", "desc", "long_description")
PG_NAMES = ("product_group", "pg", "product_line")
CATEGORY_HINT = re.compile(r"categ|tree|dept|department|taxonomy|browse|subcat|sub_cat|type|class", re.I)
_BOOL = {"true", "false", "1", "0", "yes", "no", "y", "n", "t", "f"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    by_norm = {_norm(c): c for c in columns}
    return next((by_norm[n] for n in names if n in by_norm), None)


def _id_like(name: str) -> bool:
    return _norm(name) in ID_NAMES or _norm(name).endswith("_id")


def column_kind(values: pd.Series) -> str:
    """``empty`` / ``bool`` / ``number`` / ``id`` / ``category`` / ``text`` of one raw column. A numeric column
    is a ``number`` unless its name says id (prices can be unique too): then a ``category`` when its values
    repeat (``brand_id``), else an ``id``."""
    values = values.dropna().astype(str).str.strip()
    values = values[values != ""]
    if values.empty:
        return "empty"
    distinct = values.nunique()
    if set(values.str.lower().unique()) <= _BOOL and distinct == 2:
        return "bool"
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() >= 0.95:
        if _id_like(str(values.name)):  # brand_id, seller_id: codes, not quantities (a category, or left out)
            return "category" if distinct <= max(2, len(values) // 3) else "id"
        return "number"
    if distinct == len(values):
        return "id" if values.str.len().mean() < 40 and not values.str.contains(" ").mean() > 0.5 else "text"
    if distinct <= max(2, len(values) // 3) and values.str.len().mean() < 60:  # multiclass: multiclass_task
        return "category"
    return "text"


MIN_CLASS_SIZE = 5  # products a class needs for its head to learn it (docs/TRAINING.md measures top 50, 10 and 5)
MAX_CLASSES = 1000


def multiclass_task(name: str, column: str, values: pd.Series) -> dict:
    """A multiclass task over every value with at least ``MIN_CLASS_SIZE`` of a PG's products (at
    most ``MAX_CLASSES``; the rest one ``other`` class). A fixed top 50 taught BigBasket's brand head
    only 24 % of the products (50 of 1,753 brands); every brand with 5 products covers 78 % and
    lifted the held-out browse scores most (docs/TRAINING.md)."""
    return {"name": name, "kind": "multiclass", "column": column,
            "top_k": int(min(MAX_CLASSES, max(2, values.nunique()))), "min_class_size": MIN_CLASS_SIZE}


def guess(df: pd.DataFrame) -> dict:
    """Roles and kinds of the file's columns (what the starter config is built from)."""
    columns = [str(c) for c in df.columns if not str(c).startswith("Unnamed")]
    kinds = {c: column_kind(df[c]) for c in columns}
    title = _pick(columns, TITLE_NAMES) or max((c for c in columns if kinds[c] == "text"),
                                                key=lambda c: df[c].astype(str).str.len().mean(), default=None)
    pid = _pick(columns, ID_NAMES)
    if pid is None or df[pid].duplicated().any():
        pid = next((c for c in columns if kinds[c] == "id"), pid)
    roles = {"product_id": pid, "title": title, "description": _pick(columns, DESCRIPTION_NAMES),
             "product_group": _pick(columns, PG_NAMES)}
    taken = {v for v in roles.values() if v}
    categories = [c for c in columns if c not in taken and kinds[c] == "category" and CATEGORY_HINT.search(c)]
    return {"roles": roles, "kinds": kinds, "categories": categories}


def task_name(column: str, taken: set[str]) -> str:
    """A task name for ``column`` that is a safe file name and not yet taken: ``Sale Price`` → ``sale_price``,
    beside a ``sale_price`` column ``sale_price_2``; a name of no ASCII letters (``価格``) → ``column_<hash>``."""
    import hashlib

    base = _norm(column) or "column_" + hashlib.sha256(str(column).encode()).hexdigest()[:8]
    name, n = base, 1
    while name in taken or f"high_{name}" in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _tasks(df: pd.DataFrame, found: dict) -> list[dict]:
    roles, kinds = found["roles"], found["kinds"]
    skip = {v for v in roles.values() if v} | set(found["categories"])
    tasks, taken = [], {"tfidf"}
    for column, kind in kinds.items():
        if column in skip:
            continue
        name = task_name(column, taken)
        taken |= {name, f"high_{name}"}
        if kind == "number":
            values = pd.to_numeric(df[column], errors="coerce")
            transform = "log1p_standardize" if values.min() >= 0 else "standardize"
            tasks += [{"name": name, "kind": "regression", "column": column, "transform": transform},
                      {"name": f"high_{name}", "kind": "binary", "column": column, "quantile": 0.9}]
        elif kind == "bool":
            tasks.append({"name": name, "kind": "binary", "column": column})
        elif kind == "category":
            tasks.append(multiclass_task(name, column, df[column]))
    if roles["title"]:
        tasks.append({"name": "tfidf", "kind": "decoding", "column": "title", "dim": 5000})
    return tasks


def starter_config(catalog: str, df: pd.DataFrame, found: dict | None = None,
                   artifact_root: str = "artifacts/my_catalog") -> dict:
    """The config tree ``mrnet init`` writes for ``df`` (read from ``catalog``; ``found``: its ``guess``)."""
    found = found or guess(df)
    roles = found["roles"]
    missing = [r for r in ("product_id", "title") if not roles[r]]
    if missing:
        raise ValueError(f"{catalog}: found no {' or '.join(missing)} column among {list(df.columns)[:30]}; "
                         "name one with data.columns in a config of your own")
    renames = {src: role for role, src in roles.items() if src and src != role}
    # a column already named like a role another column takes (``product_id`` beside the chosen ``index``) moves aside
    renames |= {role: f"{role}_original" for src, role in list(renames.items()) if role in map(str, df.columns)}
    pg = _norm(Path(catalog).name.split(".")[0])[:40] or "all"
    browse: set[str] = set()
    evaluation_tasks = []
    for c in found["categories"]:
        browse.add(name := task_name(c, browse))
        evaluation_tasks.append({"name": f"browse_{name}", "kind": "browse", "column": c, "min_class_size": 20})
    tasks = _tasks(df, found)
    labels = [t["column"] for t in tasks if t["kind"] == "multiclass"][:3]
    return {
        "artifact_root": artifact_root,
        "data": {"catalog": catalog, "pg_mapping": None, "columns": renames,
                 "product_group": pg if not roles["product_group"] else "all"},
        "tasks": tasks,
        "evaluation": {"enabled": True, "tasks": evaluation_tasks, "interpret": [],
                       "neighbors": {"pg": pg if not roles["product_group"] else "all", "labels": labels}},
        "crosslingual": {"enabled": False},
    }


def render(catalog: str, df: pd.DataFrame, tree: dict, found: dict) -> str:
    """YAML with a header that lists every column found (``found``: ``guess(df)``) and its use."""
    role_of = {src: role for role, src in found["roles"].items() if src}
    lines = [f"# mrnet starter config for {catalog} ({len(df)} rows), written by `mrnet init`.",
             "# Columns found (kind guessed from the values) and their use:"]
    for column, kind in found["kinds"].items():
        use = role_of.get(column) or ("evaluation (browse task)" if column in found["categories"] else
                                      "training task" if kind in ("number", "bool", "category") else "unused")
        lines.append(f"#   {column:<28} {kind:<9} → {use}")
    lines.append("# Check the guesses, then: mrnet run --config <this file>   (docs/BYO.md)")
    return "\n".join(lines) + "\n" + yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=110)


def init(catalog: str, out: str, sample_rows: int = 200_000) -> str:
    """Read (a sample of) ``catalog``, write the starter config to ``out`` atomically; return it."""
    from mrnet.data.catalog import read_catalog
    from mrnet.io import storage

    df = read_catalog(catalog).head(sample_rows)
    found = guess(df)
    text = render(catalog, df, starter_config(catalog, df, found), found)
    storage.write_text(out, text)
    return text
