"""Benchmark (not a test): every stage of a retrain on a synthetic catalog of 1M or 10M products, each task
in its own process as Airflow runs it, with its wall time, peak RSS and bytes written (docs/SCALING.md).

    .venv/bin/python bench/scale.py synth --products 1000000 --files 4 --out .scale/c1m
    .venv/bin/python bench/scale.py run --catalog .scale/c1m --home .scale/h1m
    .venv/bin/python bench/scale.py table .scale/h1m/scale.json .scale/h10m/scale.json
    .venv/bin/python bench/scale.py plan .scale/h1m/scale.json .scale/h10m/scale.json   # estimates at 100M, 1B

``synth`` recombines and perturbs the titles of the three public catalogs (the demo catalog, 91,656 products
in 23 PGs) into ``--products`` products, written as ``--files`` Parquet parts (a catalog in many files, as a
data lake gives it). Each synthetic product copies the labels and PG of one real product (its base), and its
title is that product's title with a span of 1-2 tokens swapped for tokens of another title of the same PG,
its numbers redrawn, and with probability 0.6 a new word inserted: a model code or a made-up brand drawn
from a Zipf law (exponent 1.25) over an unbounded lexicon, so the vocabulary keeps growing with the catalog
(about N^0.8 new words) as real catalogs' do, where exact copies would add none. 0.1 % of the ids repeat an
earlier one and 0.05 % of the titles are blank, so validation has duplicates and defects to quarantine.
The synthetic catalog measures time and memory, not quality: its labels are copies.

``run`` runs the stages of ``mrnet run`` in order, every task a fresh ``python`` process (plan → one check task
per file → merge, corpus, word2vec, one training task per PG, one embedding task per shard, report, sparse AE,
one PG-agnostic task per shard, commit, evaluation, cross-language AE, publish, index, gate). Training is capped
by ``--set train.max_products=…`` and the bench's defaults (one epoch of 200 steps): the bench measures the
read, memory and plumbing at scale, not convergence. The tasks' figures go to ``<home>/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ["product_group", "source", "locale", "color", "gender", "subcategory", "item_type", "brand", "price",
          "list_price", "on_offer", "rating", "category_path", "season", "usage"]
DEFAULTS = ["model.embed_dim=128", "embed.dtype=float16", "train.epochs=1", "train.steps_per_epoch=200",
            "train.max_products=50000", "train.progress=false", "sparse_ae.epochs=1", "crosslingual.epochs=5",
            "evaluation.folds=3", "tracking.log_weights=false"]
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


# ------------------------------------------------------------------ synth


def word(n: int) -> str:
    """A made-up word (or, for every 7th, a model code) for lexicon entry ``n``: the same n, the same word."""
    if n % 7 == 0:
        return f"x{n // 7:x}"
    out = []
    while True:
        n, r = divmod(n, len(SYLLABLES))
        out.append(SYLLABLES[r])
        if not n:
            return "".join(out)


def synth(args) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from mrnet.config.schema import load_config
    from mrnet.data.demo import build_demo_catalog
    from mrnet.data.text import tokenize

    cfg = load_config(REPO / "configs" / "demo.yaml")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = build_demo_catalog(str(REPO / cfg.data.raw_dir), str(REPO / cfg.data.pg_mapping), str(out / "_raw.parquet"))
    base = pd.read_parquet(raw).dropna(subset=["product_group", "title"]).reset_index(drop=True)
    Path(raw).unlink()
    tokens = [tokenize(t) or ["item"] for t in base["title"]]
    by_pg = base.groupby("product_group").indices
    rng = np.random.default_rng(args.seed)
    rows_per_file = math.ceil(args.products / args.files)
    start, t0 = 0, time.perf_counter()
    for f in range(args.files):
        path, n_file = out / f"part-{f:05d}.parquet", min(rows_per_file, args.products - start)
        with pq.ParquetWriter(path, _schema(base)) as writer:
            for chunk in range(start, start + n_file, 250_000):
                k = min(250_000, start + n_file - chunk)
                writer.write_table(_chunk(base, tokens, by_pg, rng, chunk, k).cast(writer.schema))
        start += n_file
        print(f"{path}: {n_file:,} products ({time.perf_counter() - t0:.0f} s)", flush=True)


def _schema(base):
    import pyarrow as pa

    table = pa.Table.from_pandas(base[LABELS].head(1), preserve_index=False)
    return pa.schema([("product_id", pa.string()), ("title", pa.string())] + [table.schema.field(c) for c in LABELS],
                     metadata=table.schema.metadata)


def _chunk(base, tokens, by_pg, rng, start: int, k: int):
    import numpy as np
    import pyarrow as pa

    pick = rng.integers(0, len(base), k)
    pgs = base["product_group"].to_numpy()[pick]
    donors = np.array([rng.choice(by_pg[pg]) for pg in pgs])
    new = rng.zipf(1.25, k)
    cut = rng.integers(0, 1 << 30, k)
    titles = []
    for i in range(k):
        title, donor = list(tokens[pick[i]]), tokens[donors[i]]
        at, span = cut[i] % len(title), 1 + cut[i] % 2
        take = cut[i] % len(donor)
        title[at:at + span] = donor[take:take + span]
        title = [str(1 + (cut[i] >> 3) % 999) if t.isdigit() else t for t in title]
        if (cut[i] >> 13) % 10 < 6:
            title.insert((cut[i] >> 17) % (len(title) + 1), word(int(new[i]) % (1 << 40)))
        titles.append(" ".join(title))
    ids = [f"syn:{start + i:09d}" for i in range(k)]
    for i in np.flatnonzero(rng.random(k) < 0.001):  # a repeated id, quarantined as a duplicate
        ids[i] = f"syn:{rng.integers(0, start + i + 1):09d}"
    for i in np.flatnonzero(rng.random(k) < 0.0005):  # a blank title, quarantined
        titles[i] = " "
    frame = base.iloc[pick][LABELS].reset_index(drop=True)
    frame["price"] = frame["price"] * rng.uniform(0.8, 1.2, k)
    return pa.Table.from_pandas(frame.assign(product_id=ids, title=titles)[["product_id", "title", *LABELS]],
                                preserve_index=False)


# ------------------------------------------------------------------ run


def stage(args) -> None:
    """One task in this process: ``stages.<name>(*args)``; prints its result as JSON on the last line."""
    import resource

    from mrnet.run import stages

    result = getattr(stages, args.name)(*json.loads(args.args))
    print(json.dumps(result))
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"MRNET_PEAK_KB {peak}", file=sys.stderr)  # this task's largest process: itself or a tokenizer worker


def _bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file())


class Runner:
    """Runs each task as ``bench/scale.py stage`` in a fresh process and records wall time, peak RSS (the
    largest resident set of the task's process or of a process it started) and the bytes the task added
    under the home."""

    def __init__(self, home: Path):
        self.home, self.tasks = home, []

    def __call__(self, name: str, *args, label: str = ""):
        before, t0 = _bytes(self.home), time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "stage", name, json.dumps(args)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"task {name} {label} failed:\n{err[-4000:]}")
        rss = _child_peak(err) / 1024
        task = {"stage": name, "label": label, "seconds": round(wall, 2), "peak_rss_mb": round(rss, 1),
                "bytes_written": _bytes(self.home) - before}
        self.tasks.append(task)
        print(f"{name:<20} {label:<40} {wall:8.1f} s {rss:8.0f} MB {task['bytes_written'] / 1e6:10.1f} MB", flush=True)
        return json.loads(out.strip().splitlines()[-1]) if out.strip() else None


def _child_peak(err: str) -> float:
    for line in reversed(err.splitlines()):
        if line.startswith("MRNET_PEAK_KB "):
            return float(line.split()[1])
    return float("nan")


def run(args) -> None:
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    overrides = [f"artifact_root={home}", f"data.catalog={Path(args.catalog).resolve()}", *DEFAULTS, *args.set]
    params = {"config": str(REPO / "configs" / "demo.yaml"), "overrides": overrides}
    task, t0 = Runner(home), time.perf_counter()
    run_uri = task("start_run", params, args.run_id, "bench", "retrain")
    checked = [task("check_catalog_part", run_uri, part, label=part) for part in task("plan_catalog", run_uri)]
    catalog = task("merge_catalog", run_uri, checked)
    vectors = task("word2vec", run_uri, task("corpus", run_uri, catalog))
    models = [task("train", run_uri, pg, catalog, vectors, label=pg) for pg in task("plan", run_uri, catalog)]
    parts = [task("embed_shard", run_uri, s, catalog, label=s) for s in task("plan_embed", run_uri, models, catalog)]
    summary = task("report", run_uri, parts)
    model = task("sparse_autoencoder", run_uri, summary)
    encoded = [task("encode_agnostic", run_uri, s, label=s) for s in task("plan_agnostic", run_uri, summary, model)]
    agnostic = task("commit_agnostic", run_uri, encoded)
    done = [agnostic, task("evaluate", run_uri, summary, agnostic), task("cross_language", run_uri)]
    release = task("build_index", run_uri, task("publish", run_uri, summary, done))
    task("promote", run_uri, release)
    validated = json.loads((Path(run_uri).parent / "stages" / "validate.json").read_text())
    record = {"catalog": str(Path(args.catalog).resolve()), "products": validated["quarantine"]["rows_in"],
              "overrides": overrides, "seconds": round(time.perf_counter() - t0, 1), "tasks": task.tasks,
              "machine": _machine(), "date": time.strftime("%Y-%m-%d")}
    (home / "scale.json").write_text(json.dumps(record, indent=2))
    print(table([record]))


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {model}"


# ------------------------------------------------------------------ table


STAGES = ["start_run", "plan_catalog", "check_catalog_part", "merge_catalog", "corpus", "word2vec", "plan", "train",
          "plan_embed", "embed_shard", "report", "sparse_autoencoder", "plan_agnostic", "encode_agnostic",
          "commit_agnostic", "evaluate", "cross_language", "publish", "build_index", "promote"]


def table(records: list[dict]) -> str:
    """Per stage and catalog: tasks, wall seconds (summed over a mapped stage's tasks), the largest task peak
    RSS and the bytes written; with two catalogs, the slope in seconds per million products."""
    records = sorted(records, key=lambda r: r["products"])
    head = "| stage | " + " | ".join(f"{r['products'] / 1e6:g}M: tasks, s, peak RSS MB, MB written" for r in records)
    head += " | s per 1M products |" if len(records) > 1 else " |"
    lines = [head, "|---" * (len(records) + 1 + (len(records) > 1)) + "|"]
    for name in STAGES:
        cells, secs = [], []
        for r in records:
            tasks = [t for t in r["tasks"] if t["stage"] == name]
            s = sum(t["seconds"] for t in tasks)
            secs.append(s)
            cells.append(f"{len(tasks)}, {s:.0f}, {max(t['peak_rss_mb'] for t in tasks):.0f}, "
                         f"{sum(t['bytes_written'] for t in tasks) / 1e6:.0f}" if tasks else "–")
        slope = [f"{(secs[-1] - secs[0]) / ((records[-1]['products'] - records[0]['products']) / 1e6):.1f}"] \
            if len(records) > 1 else []
        lines.append(f"| {name} | " + " | ".join(cells + slope) + " |")
    total = [f"{r['seconds']:.0f} s, peak {max(t['peak_rss_mb'] for t in r['tasks']):.0f} MB" for r in records]
    lines.append("| **all** | " + " | ".join(total) + (" | |" if len(records) > 1 else " |"))
    return "\n".join(lines)


MAPPED = {"check_catalog_part", "train", "embed_shard", "encode_agnostic"}  # spread over workers in a deployment
# word2vec's ``sg: auto`` is skip-gram below 10M corpus tokens and CBOW above: the two runs straddle the switch, so
# its rate from 10M products on is the largest run's seconds per product, not the slope between the two
LARGEST_RATE = {"word2vec"}


def fit(records: list[dict]) -> dict[str, tuple[float, float, float, float]]:
    """Per stage: (seconds at 0 products, seconds per product, largest task peak RSS MB, bytes per product),
    a straight line through the two runs (the smallest and the largest catalog); ``LARGEST_RATE`` stages: through
    the origin and the largest run."""
    small, large = sorted(records, key=lambda r: r["products"])[:: max(1, len(records) - 1)][:2]
    out = {}
    for name in STAGES:
        a = [t for t in small["tasks"] if t["stage"] == name]
        b = [t for t in large["tasks"] if t["stage"] == name]
        if not a or not b:
            continue
        sa, sb = sum(t["seconds"] for t in a), sum(t["seconds"] for t in b)
        slope = (sb - sa) / (large["products"] - small["products"])
        start = sa - slope * small["products"]
        if name in LARGEST_RATE:
            start, slope = 0.0, sb / large["products"]
        written = sum(t["bytes_written"] for t in b) / large["products"]
        out[name] = (start, slope, max(t["peak_rss_mb"] for t in a + b), written)
    return out


def plan(records: list[dict], sizes=(1e8, 1e9), workers=(1, 32)) -> str:
    """**Estimates**: each stage's hours at ``sizes`` products from the fitted lines, the mapped stages spread
    over ``workers`` 2-core CPU workers (their per-task fixed cost kept), the others in one task. A stage whose
    time did not grow between the two runs counts its seconds at 10M, whatever the size."""
    lines = ["| stage | s per 1M (2 cores) | mapped | " + " | ".join(
        f"{n / 1e6:,.0f}M, {w} worker{'s' if w > 1 else ''} (h)" for n in sizes for w in workers) + " |",
        "|---" * (3 + len(sizes) * len(workers)) + "|"]
    total = [0.0] * (len(sizes) * len(workers))
    for name, (a, b, _, _) in fit(records).items():
        cells, fixed = [], max(a, 0.0) if b > 0 else a + b * 1e7  # a stage that did not grow: its 10M seconds
        b = max(b, 0.0)
        for i, (n, w) in enumerate((n, w) for n in sizes for w in workers):
            hours = (fixed + b * n / (w if name in MAPPED else 1)) / 3600
            total[i] += hours
            cells.append(f"{hours:.2f}")
        lines.append(f"| {name} | {b * 1e6:.1f} | {'yes' if name in MAPPED else ''} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | | " + " | ".join(f"**{h:.1f}**" for h in total) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("synth")
    p.add_argument("--products", type=int, required=True)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run")
    p.add_argument("--catalog", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--run-id", default="scale")
    p.add_argument("--set", action="append", default=[], help="a config override, e.g. train.max_products=100000")
    p = sub.add_parser("stage")
    p.add_argument("name")
    p.add_argument("args")
    p = sub.add_parser("table")
    p.add_argument("records", nargs="+")
    p = sub.add_parser("plan", help="hours at 100M and 1B products from two runs (estimates)")
    p.add_argument("records", nargs=2)
    args = parser.parse_args()
    if args.cmd in ("table", "plan"):
        records = [json.loads(Path(r).read_text()) for r in args.records]
        print(table(records) if args.cmd == "table" else plan(records))
        return
    {"synth": synth, "run": run, "stage": stage}[args.cmd](args)


if __name__ == "__main__":
    main()
