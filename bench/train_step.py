"""Benchmark (not a test): the training step's precision and optimizer, side by side in one
process, runs interleaved.

- bf16 autocast (``train.amp``) against fp32 for the PG model's alternating optimization (paper
  §3.1) on one demo PG, one AdamW per task (``train.optimizer_state: per_task``), at the PG's own
  batch size (``batch_size: auto``); both models then report each task's validation loss, so a
  speed-up that costs accuracy shows;
- the fused AdamW kernel (``encoder.model.adamw``) against the per-tensor loop AdamW that torch
  picks on CPU by default: the same PG step, and the sparse autoencoder's step (paper §3.2) at the
  demo's shape (23 PG blocks of d 256, 2d = 512 hidden units, the shared anchor, batches of 1,024).

Usage (the PG's rows and word vectors come from a run, as for bench/gpu.py):

    .venv/bin/python bench/gpu.py prepare --run artifacts/demo/runs/<run_id> --pg footwear --out .devdata
    .venv/bin/python bench/train_step.py --data .devdata --repeats 5

Prints Markdown for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def loop_adamw(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The reference: torch's default on CPU, one small op per tensor."""
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, foreach=False, fused=False)


def pg_runner(data_dir: Path, steps: int, make, amp: bool = False):
    """(a closure running ``steps`` alternating-optimization steps with optimizers from ``make``,
    the batch size, a closure returning the validation loss of each of the PG's tasks)."""
    import gpu

    from mrnet.encoder.train import alternating_optimization, batch_size_for, validate

    cfg, catalog, words, vectors, active, meta, train, val = gpu.setup(data_dir)
    batch = batch_size_for(cfg.train, len(train.lengths))
    model, _ = gpu.new_model(meta, vectors, active, torch.device("cpu"))
    encoder = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    opts = {name: make(encoder + list(model.heads[name].parameters()), cfg.train.lr, cfg.train.weight_decay)
            for name in active}
    gen = torch.Generator().manual_seed(0)
    run = lambda: alternating_optimization(model, opts, train, active, steps, batch, gen,  # noqa: E731
                                           torch.device("cpu"), amp)
    val_loss = lambda: {k: v["loss"] for k, v in sorted(validate(model, val, active, torch.device("cpu")).items())}  # noqa: E731
    return run, batch, val_loss


def sparse_runner(steps: int, make, groups: int = 23, d: int = 256, batch: int = 1024):
    from mrnet.autoencoders.sparse import Anchor, SparseAutoencoder, sparse_ae_loss

    torch.manual_seed(0)
    x, g, a = torch.randn(batch * steps, d), torch.randint(0, groups, (batch * steps,)), torch.randn(batch * steps, 128)
    model, anchor = SparseAutoencoder(groups, d), Anchor(2 * d, 128, 1.0)
    opt = make(list(model.parameters()) + list(anchor.parameters()), 3e-3)

    def run():
        for s in range(steps):
            rows = slice(s * batch, (s + 1) * batch)
            loss = sparse_ae_loss(model, x[rows], g[rows], 0.05, 0.1, anchor, a[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """One warm-up each, then bench/gpu.py's median of interleaved runs."""
    import gpu

    for fn in fns.values():
        fn()
    return gpu.timed(fns, repeats)


def main() -> None:
    from mrnet.encoder.model import adamw

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=".devdata")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg-steps", type=int, default=300)
    parser.add_argument("--ae-steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    from mrnet.encoder.train import cpu_has_bf16

    data = Path(args.data)
    (bf16, batch, bf16_val), (fp32, _, fp32_val) = (pg_runner(data, args.pg_steps, adamw, amp) for amp in (True, False))
    loop, _, _ = pg_runner(data, args.pg_steps, loop_adamw)
    pg = interleaved({"bf16": bf16, "fp32": fp32, "loop": loop}, args.repeats)
    ae = interleaved({"fused": sparse_runner(args.ae_steps, adamw), "loop": sparse_runner(args.ae_steps, loop_adamw)},
                     args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"native bf16: {cpu_has_bf16()}; median of {args.repeats} interleaved runs\n")
    print("| step | ours (ms/step) | reference (ms/step) | ratio |\n|---|---|---|---|")
    ms = lambda t, steps: f"{t / steps * 1e3:.2f}"  # noqa: E731
    rows = [(f"PG alternating optimization, batch {batch}: bf16 autocast vs fp32 (fused AdamW both)", pg["bf16"],
             pg["fp32"], args.pg_steps),
            (f"PG alternating optimization, batch {batch}: fused vs per-tensor loop AdamW (fp32 both)", pg["fp32"],
             pg["loop"], args.pg_steps),
            ("sparse AE, 23 × 256 → 512, batch 1,024: fused vs per-tensor loop AdamW", ae["fused"], ae["loop"],
             args.ae_steps)]
    for name, ours, ref, steps in rows:
        print(f"| {name} | {ms(ours, steps)} | {ms(ref, steps)} | {ref / ours:.2f}x |")
    steps = (args.repeats + 1) * args.pg_steps
    print(f"\nnormalized validation loss per task after {steps} steps (1.0 = the label prior), bf16 autocast / fp32:")
    for (task, b), f in zip(bf16_val().items(), fp32_val().values()):
        print(f"- {task}: {b:.4f} / {f:.4f}")


if __name__ == "__main__":
    main()
