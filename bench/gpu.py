"""Benchmark (not a test): the PG model on a GPU against the CPU reference, in one process.

Two steps, because the GPU machine has no gensim or MLflow (and no network):

    # here: export the run's validated catalog rows (one PG, or all) and word vectors (npy, no pickle)
    .venv/bin/python bench/gpu.py prepare --run artifacts/demo/runs/<run_id> --pg all --out .devdata
    # on the GPU machine (carry .devdata, and pydantic's wheels in .whl: docs/RESULTS.md):
    python3 bench/gpu.py run --data .devdata --repeats 3
    python3 bench/gpu.py pgs --data .devdata --variant 'CUDA=train.device=cuda'

``run`` measures, medians of interleaved repeats, on one PG (``--pg``):
- the alternating-optimization loop (paper §3.1, one fused AdamW per task) in titles/s: CPU fp32
  (reference) vs CUDA fp32 and CUDA bf16 autocast (``train.amp``), at batch 256 and 1024, for each
  ``--embed-dims`` (the demo's d 256 and the typed default's 512);
- embedding inference (``embed.embed_titles``: bucketed batches of 8,192 under
  ``torch.inference_mode``) in titles/s, CPU vs CUDA;
- equivalence on CUDA: bucketed ``forward`` vs the ``PackedSequence`` reference (max |Δh_T|),
  and the validation loss after the same steps with and without bf16 autocast.

``pgs`` runs the real ``train_pg`` (early stopping, checkpoints, validation) on every PG under each
config variant, and on the CPU for ``--cpu-pgs``: what a GPU worker buys for a whole PG stage.
Both print Markdown for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(args) -> None:
    import pandas as pd

    from mrnet.data.word2vec import load_vectors

    run = Path(args.run)
    catalog = pd.read_parquet(run / "catalog" / "catalog.parquet")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pg != "all":
        catalog = catalog[catalog["product_group"] == args.pg]
    catalog.to_parquet(out / "catalog.parquet", index=False)
    words, vectors = load_vectors(json.loads((run / "stages" / "word2vec.json").read_text())["uri"])
    (out / "words.txt").write_text("\n".join(words))
    np.save(out / "vectors.npy", vectors)
    print(f"{out}: PG {args.pg}, {len(catalog)} products, {len(words)} words")


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, runs interleaved so drift hits all alike."""
    import torch

    times: dict[str, list] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def setup(data_dir: Path, overrides: tuple[str, ...] = (), pg: str = "footwear"):
    """The demo config (plus ``overrides``), PG ``pg``'s rows split as training splits them, its
    fitted tasks, and the token-id arrays of both splits."""
    import pandas as pd
    import torch

    from mrnet.config.schema import load_config
    from mrnet.encoder import targets as T
    from mrnet.encoder.train import prepare as prepare_data
    from mrnet.encoder.train import split_train_val

    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.progress=false", *overrides])
    catalog = pd.read_parquet(data_dir / "catalog.parquet")
    catalog = catalog[catalog["product_group"] == pg]
    words = (data_dir / "words.txt").read_text().split("\n")
    vectors = np.load(data_dir / "vectors.npy")
    train_df, val_df = split_train_val(catalog, cfg.train.val_fraction, cfg.train.seed)
    states = [T.fit_task(s, train_df) for s in cfg.tasks]
    active = {s["name"]: s for s in states if s["active"]}
    meta = {"config": cfg.model_dump(mode="json"), "vocab": words, "tasks": states}
    torch.set_num_threads(os.cpu_count() or 1)
    return cfg, catalog, words, vectors, active, meta, prepare_data(cfg, train_df, words, states), \
        prepare_data(cfg, val_df, words, states)


def new_model(meta, vectors, active, device):
    """The PG model with its word vectors and head priors on ``device``, and its optimizers as
    training makes them (one fused AdamW per task, ``train.optimizer_state: per_task``)."""
    import torch

    from mrnet.config.schema import Config
    from mrnet.encoder.model import build_model
    from mrnet.encoder.train import init_weights, make_optimizers

    torch.manual_seed(0)
    model = build_model(meta)
    init_weights(model, vectors, active)
    model.to(device)
    return model, make_optimizers(model, active, Config.model_validate(meta["config"]).train)


def train_loop(meta, vectors, active, data, device: str, amp: bool, batch: int, steps: int):
    import torch

    from mrnet.encoder.train import alternating_optimization

    model, opts = new_model(meta, vectors, active, torch.device(device))
    return lambda: alternating_optimization(model, opts, data, active, steps, batch,
                                            torch.Generator().manual_seed(0), torch.device(device), amp)


def bench_training(meta, vectors, active, data, repeats: int, steps: dict, gpu: str,
                   batches=(256, 1024)) -> list[tuple]:
    """(batch, variant, titles/s, ratio to CPU fp32) of the alternating loop (paper §3.1)."""
    variants = [("CPU fp32", "cpu", False), ("CUDA fp32", gpu, False), ("CUDA bf16 autocast", gpu, True)]
    rows = []
    for batch in batches:
        fns = {name: train_loop(meta, vectors, active, data, dev, amp, batch, steps[dev]) for name, dev, amp in variants}
        for fn in fns.values():
            fn()  # warm-up (CUDA kernels, allocator)
        seconds = timed(fns, repeats)
        per_s = {name: steps[dev] * batch / seconds[name] for name, dev, _ in variants}
        rows += [(batch, name, per_s[name], per_s[name] / per_s["CPU fp32"]) for name, _, _ in variants]
    return rows


def bench_inference(catalog, meta, vectors, active, repeats: int, n: int, gpu: str) -> dict[str, float]:
    import torch

    from mrnet.encoder.embed import embed_titles

    titles = (catalog["title"].tolist() * (n // len(catalog) + 1))[:n]
    models = {"cpu": new_model(meta, vectors, active, torch.device("cpu"))[0],
              "cuda": new_model(meta, vectors, active, torch.device(gpu))[0]}
    fns = {key: (lambda key=key: embed_titles(models[key], meta, titles, 8192, "cpu" if key == "cpu" else gpu))
           for key in models}
    fns["cuda"]()
    from mrnet.data.text import Vocab

    fns["tokenize only"] = lambda: Vocab(meta["vocab"]).encode_many(titles, meta["config"]["model"]["max_tokens"])
    seconds = timed(fns, repeats)
    return {dev: n / s for dev, s in seconds.items()}


def equivalence(meta, vectors, active, train, val, steps: int, gpu: str) -> dict:
    import torch

    from mrnet.encoder.train import alternating_optimization, validate

    model, _ = new_model(meta, vectors, active, torch.device(gpu))
    idx = np.random.default_rng(0).choice(len(val.lengths), size=min(512, len(val.lengths)), replace=False)
    lengths = torch.from_numpy(val.lengths[idx])
    ids = torch.from_numpy(val.ids[idx, : int(lengths.max())]).to(gpu)
    with torch.inference_mode():
        packed = model.forward_packed(ids, lengths)
        bucketed = torch.empty_like(packed)
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().ravel().to(gpu)
            bucketed[rows] = model(ids[rows, :length])
    out = {"max_abs_diff_bucketed_vs_packed": float((packed - bucketed).abs().max())}
    for amp in (False, True):
        model, opt = new_model(meta, vectors, active, torch.device(gpu))
        alternating_optimization(model, opt, train, active, steps, 256, torch.Generator().manual_seed(0),
                                 torch.device(gpu), amp)
        val_loss = validate(model, val, active, torch.device(gpu))
        out[f"val_loss_mean_{'bf16' if amp else 'fp32'}"] = float(np.mean([v["loss"] for v in val_loss.values()]))
    return out


def run(args) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py run: no CUDA device visible (--device cpu smoke-tests the script)")
    steps = {"cpu": args.cpu_steps, args.device: args.cuda_steps}
    rows = []
    for d in args.embed_dims:
        cfg, catalog, words, vectors, active, meta, train, val = setup(Path(args.data), (f"model.embed_dim={d}",), args.pg)
        rows += [(d, *row) for row in bench_training(meta, vectors, active, train, args.repeats, steps, args.device)]
        if d == args.embed_dims[0]:
            inference = bench_inference(catalog, meta, vectors, active, args.repeats, args.inference_titles, args.device)
            eq = equivalence(meta, vectors, active, train, val, args.equivalence_steps, args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "no GPU (smoke test)"
    print(f"machine: {name}, {os.cpu_count()} CPU cores ({platform.machine()}), "
          f"torch {torch.__version__}; PG {args.pg}, {len(catalog)} products; median of {args.repeats} runs\n")
    print("| alternating optimization | d | batch | titles/s | vs CPU fp32 |\n|---|---|---|---|---|")
    for d, batch, variant, per_s, ratio in rows:
        print(f"| {variant} | {d} | {batch} | {per_s:,.0f} | {ratio:.2f}x |")
    print(f"\n| embedding inference, d {args.embed_dims[0]}, {args.inference_titles:,} titles, batch 8,192 "
          f"| titles/s |\n|---|---|")
    print(f"| CPU | {inference['cpu']:,.0f} |\n| CUDA | {inference['cuda']:,.0f} "
          f"({inference['cuda'] / inference['cpu']:.1f}x) |\n| tokenizing alone (CPU, part of both) "
          f"| {inference['tokenize only']:,.0f} |")
    print("\nequivalence on CUDA:", json.dumps(eq))


def pgs(args) -> None:
    """The real ``train_pg`` (early stopping, validation, checkpoints) for every PG of the carried
    catalog under each ``--variant`` (``label=key=value,key=value``), then on the CPU for
    ``--cpu-pgs``: wall seconds per PG, epochs, and the mean validation loss of the best epoch."""
    import tempfile

    import pandas as pd
    import torch

    from mrnet.config.schema import load_config
    from mrnet.encoder.train import train_pg

    data = Path(args.data)
    catalog = pd.read_parquet(data / "catalog.parquet")
    words = (data / "words.txt").read_text().split("\n")
    vectors = np.load(data / "vectors.npy")
    every = args.pgs or sorted(catalog["product_group"].unique())
    plans = [(label, [o for o in sets.split(",") if o], every) for label, _, sets in
             (v.partition("=") for v in args.variant)]
    plans.append(("CPU reference", ["train.device=cpu"], args.cpu_pgs))
    results = []
    for label, overrides, pg_list in plans:
        cfg = load_config(REPO / "configs" / "demo.yaml", ["train.progress=false", *args.set, *overrides])
        for pg in pg_list:
            with tempfile.TemporaryDirectory() as out:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _, report = train_pg(cfg, pg, catalog, words, vectors, out)
                seconds = time.perf_counter() - t0
            best = report["history"][report["best_epoch"] - 1]["val"]
            results.append({"variant": label, "pg": pg, "seconds": round(seconds, 2), "batch": report["batch_size"],
                            "epochs": len(report["history"]), "bf16": report["bf16_autocast"],
                            "val_loss": float(np.mean([v["loss"] for v in best.values()]))})
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    subset = ", ".join(args.cpu_pgs)
    print(f"\n| PG models, demo config | PGs | wall s | wall s on {subset} | best val loss on {subset} | "
          f"best val loss, all its PGs |\n|---|---|---|---|---|---|")
    for label, _, _ in plans:
        mine = [r for r in results if r["variant"] == label]
        shared = [r for r in mine if r["pg"] in args.cpu_pgs]
        print(f"| {label} | {len(mine)} | {sum(r['seconds'] for r in mine):.1f} | "
              f"{sum(r['seconds'] for r in shared):.1f} | {np.mean([r['val_loss'] for r in shared]):.4f} | "
              f"{np.mean([r['val_loss'] for r in mine]):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--run", required=True)
    p.add_argument("--pg", default="footwear")
    p.add_argument("--out", default=".devdata")
    r = sub.add_parser("run")
    r.add_argument("--data", default=".devdata")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--cpu-steps", type=int, default=20)
    r.add_argument("--cuda-steps", type=int, default=100)
    r.add_argument("--inference-titles", type=int, default=200_000)
    r.add_argument("--equivalence-steps", type=int, default=300)
    r.add_argument("--device", default="cuda", help="cuda; cpu only smoke-tests this script")
    r.add_argument("--pg", default="footwear")
    r.add_argument("--embed-dims", type=lambda s: [int(x) for x in s.split(",")], default=[256, 512])
    g = sub.add_parser("pgs")
    g.add_argument("--data", default=".devdata")
    g.add_argument("--variant", action="append", default=[],
                   help="label=key=value,key=value (config overrides), e.g. 'CUDA fp32=train.device=cuda'")
    g.add_argument("--cpu-pgs", type=lambda s: [p for p in s.split(",") if p], default=["footwear"])
    g.add_argument("--pgs", type=lambda s: [p for p in s.split(",") if p], default=None,
                   help="the PGs the variants train (default: every PG of the catalog)")
    g.add_argument("--set", action="append", default=[], help="an override for every variant (smoke tests)")
    g.add_argument("--json", default=None, help="also write the per-PG rows here")
    args = parser.parse_args()
    {"prepare": prepare, "run": run, "pgs": pgs}[args.command](args)


if __name__ == "__main__":
    main()
