"""Benchmark (not a test): the hard evaluation tasks of a finished run at full size.

`make demo` scores its hard tasks on a fixed hash sample with 3 folds, for its 10-minute budget. There a fold's
AUC moves by about 0.01, as much as the gaps the targets are about (MRNet against LSA-256 and MiniLM with the
same classifier). This scores the same run's embeddings on every labelled product of those tasks with more
folds, and compares each pair of features fold by fold: the folds are the same for every feature, so the
paired difference has a far smaller standard error than either score.

Usage: .venv/bin/python bench/hard_tasks.py --run artifacts/demo/runs/<run_id> [--config configs/demo.yaml]
           [--tasks season_summer,season_summer_topwear] [--folds 5] [--max-products 0] [--minilm]
Default tasks: those with a gate weight above 1 (the demo's hard tasks). Writes the report under
<run>/evaluations/<UTC time>-full/ and prints Markdown for docs/EVALUATION.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrnet.config.schema import load_config  # noqa: E402
from mrnet.evaluation.report import paired_difference  # noqa: E402
from mrnet.io import storage  # noqa: E402
from mrnet.run.context import load_run  # noqa: E402
from mrnet.run.derived import evaluate_run  # noqa: E402

RIVALS = ("lsa256", "minilm", "tfidf")


def full_size_config(cfg, run_cfg, names: list[str], folds: int, max_products: int, minilm: bool):
    """The run's config with ``cfg``'s evaluation narrowed to ``names``, every product (or ``max_products``),
    ``folds`` folds, no §4.3 probe, and MiniLM among the extras when asked."""
    ev = cfg.evaluation
    tasks = [t.model_copy(update={"max_products": max_products or None}) for t in ev.tasks if t.name in names]
    missing = sorted(set(names) - {t.name for t in tasks})
    if missing:
        raise SystemExit(f"--tasks: {missing} not in the config's evaluation.tasks "
                         f"({[t.name for t in ev.tasks]})")
    extras = list(dict.fromkeys([*ev.extras, *(["minilm"] if minilm else [])]))
    evaluation = ev.model_copy(update={"tasks": tasks, "folds": folds, "interpret": [], "extras": extras,
                                       "neighbors": ev.neighbors.model_copy(update={"queries": 10, "shown": 0})})
    return run_cfg.model_copy(update={"evaluation": evaluation, "train": run_cfg.train.model_copy(
        update={"progress": True})})


def table(result: dict) -> str:
    rows = result["rows"]
    mean = {(r["task"], r["feature"], r["classifier"]): r["mean"] for r in rows}
    out = ["| task (products, folds) | classifier | MRNet | LSA-256 | MiniLM | TF-IDF | MRNet − LSA-256 | "
           "MRNet − MiniLM |", "|---|---|---|---|---|---|---|---|"]
    for task, info in result["tasks"].items():
        ours = info["mrnet_feature"]
        for clf in ("lr", "rf"):
            cells = [f"{mean[(task, f, clf)]:.4f}" if (task, f, clf) in mean else "–" for f in (ours, *RIVALS)]
            diffs = []
            for rival in RIVALS[:2]:
                p = paired_difference(rows, task, clf, ours, rival)
                diffs.append("–" if p is None else f"{p[0] * 100:+.2f} ± {p[1] * 100:.2f} pt")
            out.append(f"| {task} ({info['products']:,}, {info['folds']}) | {clf.upper()} | {ours}: "
                       + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished run folder (…/runs/<run_id>)")
    ap.add_argument("--config", default="configs/demo.yaml", help="where the evaluation tasks come from")
    ap.add_argument("--tasks", default="", help="comma-separated; default: the tasks with weight > 1")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-products", type=int, default=0, help="0 = every labelled product")
    ap.add_argument("--minilm", action="store_true", help="add all-MiniLM-L6-v2 (about 5 ms a title on 2 cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mrnet").setLevel(logging.INFO)   # the [evaluate] progress lines

    cfg = load_config(args.config)
    names = [n for n in args.tasks.split(",") if n] or [t.name for t in cfg.evaluation.tasks if t.weight > 1]
    root = args.run.rstrip("/")
    run = load_run(storage.join(root, "run.json"))
    run_cfg = full_size_config(cfg, run.cfg, names, args.folds, args.max_products, args.minilm)
    out = storage.join(root, "evaluations", f"{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}-full")
    result, files = evaluate_run(run, storage.join(root, "summary.json"), out, run_cfg)
    print(f"\nrun {run.run_id}: `.venv/bin/python bench/hard_tasks.py --run {root} --folds {args.folds}"
          f"{' --minilm' if args.minilm else ''}` (report: {files['report.md']})\n")
    print(table(result))


if __name__ == "__main__":
    main()
