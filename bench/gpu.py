"""Benchmark (not a test): the PG model on a GPU against the CPU reference, in one process.

Two steps, because the GPU machine has no gensim or MLflow (and no network):

    # here: export one PG's validated catalog rows and the run's word vectors (npy, no pickle)
    .venv/bin/python bench/gpu.py prepare --run artifacts/demo/runs/<run_id> --pg footwear --out .devdata
    # on the GPU machine (carry .devdata):
    python3 bench/gpu.py run --data .devdata --repeats 3

``run`` measures, medians of interleaved repeats:
- the alternating-optimization loop (paper §3.1) in titles/s: CPU fp32 (reference) vs CUDA
  fp32 and CUDA bf16 autocast (``train.amp``), at batch 256 (the config default) and 1024;
- embedding inference (``embed.embed_titles``: bucketed batches of 8,192 under
  ``torch.inference_mode``) in titles/s, CPU vs CUDA;
- equivalence on CUDA: bucketed ``forward`` vs the ``PackedSequence`` reference (max |Δh_T|),
  and the validation loss after the same steps with and without bf16 autocast.
Prints Markdown for docs/BENCHMARKS.md.
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
    catalog[catalog["product_group"] == args.pg].to_parquet(out / "catalog.parquet", index=False)
    words, vectors = load_vectors(json.loads((run / "stages" / "word2vec.json").read_text())["uri"])
    (out / "words.txt").write_text("\n".join(words))
    np.save(out / "vectors.npy", vectors)
    print(f"{out}: PG {args.pg}, {int((catalog['product_group'] == args.pg).sum())} products, {len(words)} words")


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


def setup(data_dir: Path):
    import pandas as pd
    import torch

    from mrnet.config.schema import load_config
    from mrnet.encoder import targets as T
    from mrnet.encoder.train import prepare as prepare_data
    from mrnet.encoder.train import split_train_val

    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.progress=false"])
    catalog = pd.read_parquet(data_dir / "catalog.parquet")
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
    import torch

    from mrnet.encoder.model import build_model
    from mrnet.encoder.train import init_weights

    torch.manual_seed(0)
    model = build_model(meta)
    init_weights(model, vectors, active)
    model.to(device)
    return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)


class StepSync:
    """A progress 'bar' that waits for the GPU after every step: the loop as it was when it read
    ``loss.item()`` each step (the reference for the once-per-epoch read)."""

    def update(self, n: int) -> None:
        import torch

        torch.cuda.synchronize()


def train_loop(meta, vectors, active, data, device: str, amp: bool, batch: int, steps: int, bar=None):
    import torch

    from mrnet.encoder.train import alternating_optimization

    model, opt = new_model(meta, vectors, active, torch.device(device))
    return lambda: alternating_optimization(model, opt, data, active, steps, batch,
                                            torch.Generator().manual_seed(0), torch.device(device), amp, bar)


def bench_training(meta, vectors, active, data, repeats: int, steps: dict, gpu: str) -> list[tuple]:
    variants = [("CPU fp32", "cpu", False), ("CUDA fp32", gpu, False), ("CUDA bf16 autocast", gpu, True),
                ("CUDA fp32, GPU sync every step", gpu, False)]
    rows = []
    for batch in (256, 1024):
        fns = {name: train_loop(meta, vectors, active, data, dev, amp, batch, steps[dev],
                                StepSync() if "every step" in name and dev == "cuda" else None)
               for name, dev, amp in variants}
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
    cfg, catalog, words, vectors, active, meta, train, val = setup(Path(args.data))
    steps = {"cpu": args.cpu_steps, args.device: args.cuda_steps}
    rows = bench_training(meta, vectors, active, train, args.repeats, steps, args.device)
    inference = bench_inference(catalog, meta, vectors, active, args.repeats, args.inference_titles, args.device)
    eq = equivalence(meta, vectors, active, train, val, args.equivalence_steps, args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "no GPU (smoke test)"
    print(f"machine: {name}, {os.cpu_count()} CPU cores ({platform.machine()}), "
          f"torch {torch.__version__}; {len(catalog)} products of one PG; median of {args.repeats} runs\n")
    print("| alternating optimization | batch | titles/s | vs CPU fp32 |\n|---|---|---|---|")
    for batch, name, per_s, ratio in rows:
        print(f"| {name} | {batch} | {per_s:,.0f} | {ratio:.2f}x |")
    print(f"\n| embedding inference, {args.inference_titles:,} titles, batch 8,192 | titles/s |\n|---|---|")
    print(f"| CPU | {inference['cpu']:,.0f} |\n| CUDA | {inference['cuda']:,.0f} "
          f"({inference['cuda'] / inference['cpu']:.1f}x) |\n| tokenizing alone (CPU, part of both) "
          f"| {inference['tokenize only']:,.0f} |")
    print("\nequivalence on CUDA:", json.dumps(eq))


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
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
