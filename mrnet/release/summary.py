"""Run summary: ``summary.json``, a Markdown table and a PNG of the training curves.

The headline number per PG is the mean normalized validation loss over its tasks still trained
(retired ones left out): 1.0 is the trivial predictor that knows only the label distribution
(encoder/targets.py), so lower is better and PGs with different tasks stay comparable.
"""

from __future__ import annotations

import json

from mrnet.encoder.stopping import val_score
from mrnet.io import storage


def _main_metric(values: dict) -> str:
    """The one metric a task shows in the run table: accuracy, RMSE, or (decoding) its loss."""
    return next((m for m in ("accuracy", "rmse") if m in values), "loss")


def final_val(report: dict) -> dict:
    """Per-task validation results of the weights a model kept: its best epoch (early stopping
    restores it), else its last epoch; {} when it trained no epoch."""
    history = report.get("history") or []
    if not history:
        return {}
    best = report.get("best_epoch") or history[-1]["epoch"]
    return next((h for h in history if h["epoch"] == best), history[-1])["val"]


def mean_loss(val: dict, retired=()) -> float:
    """Mean normalized validation loss over the tasks still trained: a retired task's stale head is left out,
    as early stopping and the promotion gate leave it out (shown as measured, not capped); nan with none."""
    score = val_score(val, retired or ())
    return float("nan") if score is None else score


def pg_rows(summary: dict) -> list[dict]:
    """One row per PG: sizes, epochs (kept / ran), mean validation loss, then each configured task's
    main validation metric (columns in the order the tasks appear), speed and time."""
    columns: dict[str, str] = {}
    for rep in summary["pgs"].values():
        for task, values in final_val(rep).items():
            columns.setdefault(task, _main_metric(values))
    rows = []
    for pg, rep in summary["pgs"].items():
        val = final_val(rep)
        row = {"pg": pg, "train": rep["n_train"], "val": rep["n_val"], "tasks": len(val),
               "epochs": f"{rep.get('best_epoch') or len(rep['history'])}/{len(rep['history'])}",
               "retired": ",".join(f"{t}@{e}" for t, e in sorted(rep.get("retired", {}).items())) or None,
               "val_loss": mean_loss(val, rep.get("retired"))}
        for task, metric in columns.items():
            row[f"{task}.{metric}"] = val.get(task, {}).get(metric)
        row |= {"titles_per_s": rep["history"][-1]["titles_per_s"] if rep["history"] else 0.0,
                "train_s": rep["train_s"]}
        rows.append(row)
    return rows


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no PG trained)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot_curves(summary: dict, uri: str) -> str | None:
    """One small panel per PG: normalized validation loss per task over epochs."""
    if not summary["pgs"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    pgs = list(summary["pgs"])
    cols = min(6, len(pgs))
    rows = -(-len(pgs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, pg in zip(axes.flat, pgs):
        history = summary["pgs"][pg]["history"]
        for task in history[-1]["val"] if history else []:
            ax.plot([h["epoch"] for h in history], [h["val"][task]["loss"] for h in history],
                    marker=".", label=task)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(pg, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(pgs):]:
        ax.axis("off")
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="lower center", ncol=min(10, len(labels)), fontsize=8)
    fig.suptitle("Validation loss per task (1.0 = label-prior predictor; lower is better)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    with storage.atomic_path(uri, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return uri


def word2vec_line(summary: dict) -> str:
    """The word vectors' health (word2vec.health) in the summary, flagged when degenerate."""
    w2v = (summary.get("word2vec") or {}).get("stats") or {}
    h = w2v.get("health")
    if not h:
        return ""
    flag = " **degenerate: see docs/TRAINING.md**" if not h["mean_cosine"] <= w2v.get("degenerate_cosine", 0.5) else ""
    probes = "; ".join(f"{w}: {', '.join(ns)}" for w, ns in h["neighbours"].items())
    algo = {0: "CBOW, ", 1: "skip-gram, "}.get(w2v.get("sg"), "")
    return (f"\nword vectors: {w2v.get('vocab_size')} words ({algo}min count {w2v.get('min_count')}, "
            f"{w2v.get('epochs')} epochs), mean cosine of the top {h['words']} words {h['mean_cosine']:.3f}{flag}; "
            f"neighbours: {probes}\n")


def space_line(summary: dict) -> str:
    """Bytes of the run folder by kind at report time (``mrnet gc`` frees the checkpoints later)."""
    space = summary.get("space")
    if not space:
        return ""
    parts = ", ".join(f"{kind} {n / 1e6:,.1f} MB" for kind, n in space.items())
    return f"\nspace: {sum(space.values()) / 1e6:,.1f} MB ({parts}); docs/RETENTION.md\n"


def write_summary(summary: dict, root: str, log=print) -> None:
    rows = pg_rows(summary)
    table = markdown_table(rows)
    curves = plot_curves(summary, storage.join(root, "training_curves.png"))
    summary["outputs"] = {"summary_md": storage.join(root, "summary.md"), "curves_png": curves,
                          "embeddings": storage.join(root, "embeddings")}
    text = (f"# mrnet run summary\n\nconfig hash `{summary['config_hash']}`, total "
            f"{summary['seconds']['total']} s\n\n{table}\n\nval_loss: mean normalized validation loss "
            f"over the PG's tasks still trained, retired ones left out (1.0 = label-prior predictor); `<task>.loss`: a decoding task's "
            f"normalized loss; epochs: the epoch whose weights were kept / epochs trained (early stopping); "
            f"retired: tasks no longer drawn once their own validation loss climbed (overfitting), @ epoch.\n"
            + word2vec_line(summary) + space_line(summary)
            + "".join(f"\n{pg}: not trained ({why})\n" for pg, why in (summary.get("skipped") or {}).items()))
    storage.write_text(storage.join(root, "summary.md"), text)
    storage.write_text(storage.join(root, "summary.json"), json.dumps(summary, indent=2, default=str))
    log("\n" + table)
    q = summary["quarantine"]
    embedded = sum(r["products_embedded"] for r in summary["pgs"].values())
    for pg, why in (summary.get("skipped") or {}).items():
        log(f"{pg}: not trained ({why})")
    log(f"\n{len(summary['pgs'])} PG models trained, {len(summary['failed'])} failed; "
        f"{embedded} products embedded, {q['rows_quarantined']} quarantined "
        f"({storage.join(root, 'catalog', 'quarantine.parquet')}); total {summary['seconds']['total']} s")
    if line := space_line(summary).strip():
        log(line)
    log(f"outputs: {root}/  (summary.md, training_curves.png, models/<pg>/model.safetensors, "
        f"embeddings/<pg>/ (one Parquet part per shard))")
