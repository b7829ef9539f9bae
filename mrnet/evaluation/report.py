"""The evaluation report (paper §4): Table 2, absolute metrics, neighbours, interpretation.

Files under ``<run>/evaluation/``, each written atomically:

- ``report.md``: Table 2 (rows = tasks; MRNet-RF, MRNet-LR, TF-IDF-RF relative to TF-IDF-LR, as
  the paper prints it), then the absolute metrics, dimensions, train/test sizes, timings,
  skipped tasks with their reasons, the neighbour scores and the feature interpretation;
- ``table2.csv`` (the relative table) and ``results.csv`` (every task × feature × classifier);
- ``table2.png``: absolute metrics as grouped bars, and Table 2 as bars;
- ``neighbors.html``: the k nearest neighbours of a few query products, MRNet beside TF-IDF;
- ``metrics.json``: everything above as data (what the gate and ``mrnet compare`` read).
"""

from __future__ import annotations

import html
import json

import numpy as np

from mrnet.io import storage

LABELS = {"agnostic": "MRNet PG-agnostic", "pg": "MRNet PG-specific", "tfidf": "TF-IDF",
          "lsa256": "LSA-256", "minilm": "all-MiniLM-L6-v2", "word2vec_mean": "word2vec mean", "pg_only": "PG only"}
BASELINES = ("lsa256", "minilm")  # what a user would pick instead, beside MRNet in Table 2


def _value(rows: list[dict], task: str, feature: str, classifier: str) -> float | None:
    for r in rows:
        if (r["task"], r["feature"], r["classifier"]) == (task, feature, classifier) and np.isfinite(r["mean"]):
            return r["mean"]
    return None


def table2(result: dict) -> list[dict]:
    """Per task: the MRNet column's feature, TF-IDF-LR (absolute) and the others relative to it (%):
    MRNet-RF/LR, TF-IDF-RF, the baselines a user would pick instead with the classifier of the best
    MRNet (``best``), and the PG-only LR (absolute: how much the PG alone decides)."""
    out = []
    for task, info in result["tasks"].items():
        feature, rows = info["mrnet_feature"], result["rows"]
        base = _value(rows, task, "tfidf", "lr")
        pairs = {"mrnet_rf": (feature, "rf"), "mrnet_lr": (feature, "lr"), "tfidf_rf": ("tfidf", "rf")}
        mrnet = {c: _value(rows, task, feature, c) for c in ("lr", "rf")}
        best = max((c for c in mrnet if mrnet[c] is not None), key=lambda c: mrnet[c], default="lr")
        pairs |= {f"{b}_best": (b, best) for b in BASELINES}
        rel = {}
        for key, (feat, clf) in pairs.items():
            v = _value(rows, task, feat, clf)
            rel[key] = None if v is None or not base else round(100 * (v - base) / base, 2)
        tfidf_dim = next((r["dim"] for r in rows if r["task"] == task and r["feature"] == "tfidf"), None)
        out.append({"task": task, "metric": info["metric"], "mrnet_feature": feature,
                    "mrnet_dim": result["features"].get(feature), "tfidf_dim": tfidf_dim, "tfidf_lr": base,
                    "best_classifier": best, "pg_only_lr": _value(rows, task, "pg_only", "lr"), **rel})
    return out


def paired_difference(rows: list[dict], task: str, classifier: str, a: str, b: str) -> tuple[float, float] | None:
    """Mean and standard error of feature ``a`` minus feature ``b`` over the task's folds, one classifier.
    The folds are the same for every feature, so the paired difference is far tighter than either
    score's spread over folds (a fold's AUC moves by about a point on the demo's hard tasks). None when
    either is missing or there are fewer than two folds."""
    folds = {r["feature"]: np.asarray(r["folds"], np.float64) for r in rows
             if r["task"] == task and r["classifier"] == classifier and r.get("folds")}
    if a not in folds or b not in folds or len(folds[a]) != len(folds[b]) or len(folds[a]) < 2:
        return None
    d = folds[a] - folds[b]
    if not np.isfinite(d).all():
        return None
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def _paired_lines(result: dict) -> list[str]:
    """MRNet minus each alternative, fold by fold, in points: above / below when at least twice its
    standard error, else level. This is what tells a real gap from fold noise."""
    rivals = [f for f in ("lsa256", "minilm", "tfidf", "word2vec_mean") if any(r["feature"] == f for r in result["rows"])]
    out = []
    for task, info in result["tasks"].items():
        for clf in ("lr", "rf"):
            cells = []
            for rival in rivals:
                p = paired_difference(result["rows"], task, clf, info["mrnet_feature"], rival)
                verdict = "" if p is None else ("level" if abs(p[0]) < 2 * p[1] or p[0] == 0
                                                else "above" if p[0] > 0 else "below")
                cells.append("–" if p is None else f"{100 * p[0]:+.2f} ± {100 * p[1]:.2f} {verdict}")
            if any(c != "–" for c in cells):
                out.append(f"| {task} | {clf.upper()} | {info['mrnet_feature']} | " + " | ".join(cells) + " |")
    if not out:
        return []
    return ["", "## MRNet against the alternatives, fold by fold", "",
            "MRNet minus each feature with the same classifier, in points of the task's metric: the mean over the "
            "folds ± its standard error; `above` / `below` when the difference is at least twice that, else "
            "`level`.", "", "| task | classifier | MRNet | " + " | ".join(LABELS[f] for f in rivals) + " |",
            "|---|---|---|" + "---:|" * len(rivals)] + out


def table2_text(result: dict) -> str:
    """Table 2 as aligned text (logs and the CLI), plus the skipped tasks."""
    lines = [f"{'task':<22} {'metric':<8} {'MRNet':<9} {'MRNet-RF':>9} {'MRNet-LR':>9} {'TFIDF-RF':>9} "
             f"{'LSA-best':>9} {'MiniLM-b':>9} {'PG-only':>8} {'TFIDF-LR':>9}"]
    for r in table2(result):
        lines.append(f"{r['task']:<22} {r['metric']:<8} {r['mrnet_feature']:<9} {_pct(r['mrnet_rf']):>9} "
                     f"{_pct(r['mrnet_lr']):>9} {_pct(r['tfidf_rf']):>9} {_pct(r['lsa256_best']):>9} "
                     f"{_pct(r['minilm_best']):>9} {_num(r['pg_only_lr'], 3):>8} {_num(r['tfidf_lr']):>9}")
    return "\n".join(lines + [f"skipped {t}: {why}" for t, why in result["skipped"].items()])


def _pct(v) -> str:
    return "–" if v is None else f"{v:+.2f}%"


def _num(v, digits=4) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _sizes(info: dict) -> str:
    if "test" in info and "train" in info:
        return (f"fixed split: {info['train']:,} train / {info['test']:,} test (of {info['test_before_filter']:,} "
                f"before the overlap filter; {info['test_positives']} +, {info['test_negatives']} −)")
    if info["kind"] == "binary":
        sampled = f", a fixed sample of {info['sampled_from']:,}" if "sampled_from" in info else ""
        return f"{info['products']:,} products ({info.get('positives', '?')} +, {info.get('negatives', '?')} −{sampled})"
    return f"{info['products']:,} products in {info['classes']} classes"


def markdown(result: dict, title: str) -> str:
    t2, rows = table2(result), result["rows"]
    lines = [f"# Downstream evaluation: {title}", "",
             "Paper §4.1, Table 2: every number is relative to TF-IDF-LR (the TF-IDF-LR column is absolute).",
             "MRNet is the PG-agnostic embedding for tasks spanning several PGs and the PG-specific one for "
             "a task inside one PG, as in the paper.", "",
             "LSA-256 and all-MiniLM-L6-v2 use the classifier of the better MRNet column (`best`); PG only is "
             "absolute (a one-hot of the PG with LR: near the other columns, the task mostly asks which PG a "
             "product is in).", "",
             "| task | metric | MRNet (dim) | MRNet-RF | MRNet-LR | TF-IDF-RF | LSA-256 (best) | MiniLM (best) "
             "| best | PG only LR | TF-IDF-LR | TF-IDF dim |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in t2:
        lines.append(f"| {r['task']} | {r['metric']} | {r['mrnet_feature']} ({r['mrnet_dim']}) | {_pct(r['mrnet_rf'])} "
                     f"| {_pct(r['mrnet_lr'])} | {_pct(r['tfidf_rf'])} | {_pct(r['lsa256_best'])} "
                     f"| {_pct(r['minilm_best'])} | {r['best_classifier'].upper()} | {_num(r['pg_only_lr'], 3)} "
                     f"| {_num(r['tfidf_lr'])} | {r['tfidf_dim']} |")
    speed = result.get("throughput") or {}
    if speed:
        dims = {r["feature"]: r["dim"] for r in rows}
        lines += ["", "## Features: dimension and encode throughput (products/s, this machine)", "",
                  "| feature | dim | products/s |", "|---|---:|---:|"]
        lines += [f"| {LABELS.get(f, f)} | {dims.get(f, '–')} | {v:,.0f} |" for f, v in speed.items()]
        lines += ["", "MRNet's own throughput is the embed stage's (summary.json); TF-IDF and LSA are fit "
                  "on each training fold, so theirs include fitting."]
    features = [f for f in LABELS if any(r["feature"] == f for r in rows)]
    lines += ["", "## Absolute metrics (mean ± std over folds)", "",
              "| task | " + " | ".join(f"{LABELS[f]} {c.upper()}" for f in features for c in ("lr", "rf")) + " |",
              "|---|" + "---:|" * (2 * len(features))]
    for task in result["tasks"]:
        cells = []
        for f in features:
            for c in ("lr", "rf"):
                r = next((r for r in rows if (r["task"], r["feature"], r["classifier"]) == (task, f, c)), None)
                cells.append("–" if r is None else f"{_num(r['mean'], 3)} ± {_num(r['std'], 3)}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += _paired_lines(result) + _lr_c_lines(result, features)
    lines += ["", "## Tasks", "", "| task | products | folds | train per fold | dropped (no embedding) | seconds |",
              "|---|---|---|---:|---:|---:|"]
    for task, info in result["tasks"].items():
        n_train = next((r["n_train"] for r in rows if r["task"] == task), None)
        folds = "1 fixed split" if "test" in info else f"{info['folds']} hash folds"
        lines.append(f"| {task} | {_sizes(info)} | {folds} | {n_train:,} | {info['dropped_no_embedding']} "
                     f"| {info['seconds']} |")
    lines += _label_notes(result["tasks"])
    if result["skipped"]:
        lines += ["", "## Skipped tasks", ""] + [f"- **{t}**: {why}" for t, why in result["skipped"].items()]
    lines += _neighbor_lines(result["neighbors"]) + _interpret_lines(result["interpret"])
    s = result["seconds"]
    lines += ["", f"Evaluation time: {s['total']} s (neighbours {s['neighbors']} s, interpretation {s['interpret']} s)."]
    return "\n".join(lines) + "\n"


def _lr_c_lines(result: dict, features: list[str]) -> list[str]:
    """LR's C per fold for each (task, feature): chosen on the training fold when ``lr_c`` is auto."""
    chosen = {(r["task"], r["feature"]): r["lr_c"] for r in result["rows"] if r.get("lr_c")}
    if not chosen:
        return []
    lines = ["", "## LR regularization: C per fold", "",
             "`evaluation.lr_c: auto` picks C per fold from `lr_c_grid` on a seeded 25 % of the training fold "
             "(docs/EVALUATION.md); a number fixes it.", "",
             "| task | " + " | ".join(LABELS[f] for f in features) + " |", "|---|" + "---:|" * len(features)]
    for task in result["tasks"]:
        cells = ["/".join(f"{c:g}" for c in chosen[task, f]) if (task, f) in chosen else "–" for f in features]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def _label_notes(tasks: dict) -> list[str]:
    """What each task's labels left out, and why (nothing is dropped silently)."""
    notes = []
    for task, info in tasks.items():
        if info.get("left_out_uncertain"):
            notes.append(f"- **{task}**: {info['left_out_uncertain']:,} products matched a `label: null` rule "
                         "(uncertain) and are not in the task.")
        if info.get("dropped_small_classes"):
            notes.append(f"- **{task}**: {info['dropped_small_classes']} of {info['classes_total']} classes are smaller "
                         f"than min_class_size ({info['dropped_products']:,} products left out).")
        for why, rejected in (info.get("rejected") or {}).items():
            notes.append(f"- **{task}**: {rejected['rows']:,} row(s) of {info['file']} left out as {why} (file rows "
                         f"{', '.join(map(str, rejected['first_file_rows']))}…).")
    return ["", "## Label notes", ""] + notes if notes else []


def _neighbor_lines(nn: dict) -> list[str]:
    if "skipped" in nn:
        return ["", "## Nearest neighbours (§4.2)", "", f"Skipped: {nn['skipped']}"]
    scores = nn["scores"]
    labels = list(scores.get("random", {}))
    spaces = [s for s in ("pg", "agnostic", "tfidf", "random") if s in scores]
    names = {"pg": "MRNet PG-specific (Euclidean)", "agnostic": "MRNet PG-agnostic (Euclidean)",
             "tfidf": "TF-IDF (cosine)", "random": "random products of the PG"}
    lines = ["", "## Nearest neighbours (§4.2)", "",
             f"PG `{nn['pg']}`: {nn['queries']} fixed query products among {nn['universe']:,}; share of the "
             f"{nn['k']} nearest neighbours with the query's label (neighbors.html shows some).", "",
             "| neighbours by | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {names[s]} | " + " | ".join(_num(scores[s].get(lab), 3) for lab in labels) + " |" for s in spaces]
    return lines


def _interpret_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Feature interpretation (§4.3)", "",
             "PG-agnostic features in the top quartile of RF importance in every one of the forests (each on a "
             "random half of the task's products); *chance* = the overlap two random sets of those sizes would have.",
             "", "| training task | evaluation task | important (training) | important (evaluation) | shared | chance |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['training_task']} | {r['evaluation_task']} | – | – | – | skipped: {r['skipped']} |")
        else:
            lines.append(f"| {r['training_task']} | {r['evaluation_task']} | {r['training_important']} "
                         f"| {r['evaluation_important']} | {r['shared']} | {r['chance']} |")
    return lines


def neighbors_html(nn: dict, shown: int) -> str:
    """The first ``shown`` queries, each with its MRNet (PG-specific) and TF-IDF neighbours."""
    if "skipped" in nn:
        return f"<p>{html.escape(nn['skipped'])}</p>"
    products, cols = nn["products"], ["title", "category_path", "color", "gender", "price"]

    def cells(row) -> str:
        return "".join(f"<td>{html.escape('' if v is None or v != v else str(v))}</td>" for v in
                       (products.at[row, c] if c in products else "" for c in cols))

    parts = ["<!doctype html><meta charset='utf-8'><title>mrnet nearest neighbours</title>",
             "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
             "table{border-collapse:collapse;margin-bottom:18px}.q{background:#eef}</style>",
             f"<h1>Nearest neighbours in PG {html.escape(nn['pg'])} (paper §4.2)</h1>"]
    header = "".join(f"<th>{c}</th>" for c in cols)
    for i, q in enumerate(nn["query_rows"][:shown]):
        for space, label in (("pg", "MRNet PG-specific, Euclidean"), ("tfidf", "TF-IDF, cosine")):
            if space not in nn["found"]:
                continue
            body = "".join(f"<tr><td>{rank + 1}</td>{cells(nb)}</tr>"
                           for rank, nb in enumerate(nn["found"][space][i]))
            parts.append(f"<table><tr><th colspan='{len(cols) + 1}'>{label}</th></tr><tr><th>#</th>{header}</tr>"
                         f"<tr class='q'><td>query</td>{cells(q)}</tr>{body}</table>")
    return "\n".join(parts)


def plot(result: dict, out_uri: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, rows = list(result["tasks"]), result["rows"]
    series = [(f, c) for f in LABELS for c in ("lr", "rf") if any(r["feature"] == f for r in rows)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(series), 1)
    for i, (f, c) in enumerate(series):
        values = [_value(rows, t, f, c) or 0.0 for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, values, width, label=f"{LABELS[f]} {c.upper()}")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20, ha="right")
    ax.set_ylim(max(min((r["mean"] for r in rows if np.isfinite(r["mean"])), default=0) - 0.05, 0), 1.0)
    ax.set_ylabel("AUC (binary) / accuracy (multi-class)")
    if series:
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_title("absolute metrics, mean over folds")
    t2 = table2(result)
    for i, key in enumerate(("mrnet_rf", "mrnet_lr", "tfidf_rf")):
        ax2.barh(np.arange(len(t2)) + i * 0.27, [r[key] or 0.0 for r in t2], 0.27, label=key.replace("_", "-").upper())
    ax2.set_yticks(np.arange(len(t2)) + 0.27, [r["task"] for r in t2])
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel("% relative to TF-IDF-LR")
    ax2.set_title("Table 2")
    if t2:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    with storage.atomic_path(out_uri, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _csv(rows: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False)


def serializable(result: dict) -> dict:
    """The result without the neighbour frames (metrics.json)."""
    nn = {k: v for k, v in result["neighbors"].items() if k not in ("products", "query_rows", "found")}
    return result | {"neighbors": nn, "table2": table2(result)}


def write(result: dict, out_dir: str, title: str, shown: int) -> dict[str, str]:
    """Write every report file; return {name: uri}."""
    files = {name: storage.join(out_dir, name) for name in
             ("report.md", "table2.csv", "results.csv", "table2.png", "neighbors.html", "metrics.json")}
    storage.write_text(files["report.md"], markdown(result, title))
    storage.write_text(files["table2.csv"], _csv(table2(result)))
    storage.write_text(files["results.csv"], _csv([{k: v for k, v in r.items() if k != "folds"} | {
        "folds": " ".join(map(str, r["folds"]))} for r in result["rows"]]))
    plot(result, files["table2.png"])
    storage.write_text(files["neighbors.html"], neighbors_html(result["neighbors"], shown))
    storage.write_text(files["metrics.json"], json.dumps(serializable(result), indent=2, default=float))
    return files
