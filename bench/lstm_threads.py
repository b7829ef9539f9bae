"""Benchmark (not a test): how the PG model's training step scales with CPU threads, and whether
two PG tasks side by side on one thread each would beat one task on every core.

The step is the demo's: a BiLSTM over frozen 128-d word vectors (d = 2 x ``--hidden``), batch 64,
titles of 6-15 tokens (exact-length batches, as encoder/train.py draws them), one linear head,
fused AdamW, fp32. Rows: one process at 1 thread, one at every core, then ``--procs`` processes at
1 thread each at once (their summed titles/s is what parallel PG tasks could reach).

Usage: .venv/bin/python bench/lstm_threads.py [--hidden 128] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def worker(threads: int, hidden: int, steps: int, batch: int = 64) -> float:
    """Titles per second of ``steps`` training steps on ``threads`` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    words = torch.nn.Embedding(15_000, 128).requires_grad_(False)
    lstm = torch.nn.LSTM(128, hidden, batch_first=True, bidirectional=True)
    head = torch.nn.Linear(2 * hidden, 30)
    opt = torch.optim.AdamW([*lstm.parameters(), *head.parameters()], lr=1e-3, fused=True)

    def step(length: int) -> None:
        _, (h, _) = lstm(words(torch.randint(1, 15_000, (batch, length))))   # h (2, B, hidden)
        loss = torch.nn.functional.cross_entropy(head(torch.cat([h[0], h[1]], -1)), torch.randint(0, 30, (batch,)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step(10)
    t0 = time.perf_counter()
    for i in range(steps):
        step(6 + i % 10)
    return batch * steps / (time.perf_counter() - t0)


def run(threads: int, hidden: int, steps: int, procs: int = 1) -> float:
    """Summed titles/s of ``procs`` processes started together."""
    cmd = [sys.executable, __file__, "--worker", str(threads), "--hidden", str(hidden), "--steps", str(steps)]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    return sum(float(c.communicate()[0]) for c in children)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(worker(args.worker, args.hidden, args.steps))
        return
    cores = os.cpu_count() or 1
    rows = {"1 process, 1 thread": (1, 1), f"1 process, {cores} threads": (cores, 1),
            f"{args.procs} processes, 1 thread each": (1, args.procs)}
    results = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's speed hits every row alike
        for name, (threads, procs) in rows.items():
            results[name].append(run(threads, args.hidden, args.steps, procs))
    base = statistics.median(results["1 process, 1 thread"])
    print(f"BiLSTM d {2 * args.hidden}, batch 64, {args.steps} steps, median of {args.repeats}\n")
    print("| setting | titles/s | vs 1 thread |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
