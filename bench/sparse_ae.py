"""Benchmark (not a test): the sparse autoencoder's exact block-sparse loss vs the dense G·d
formulation, forward + backward per batch, medians of interleaved runs in one process; and the
blocks read through ``unbind`` views vs indexed per PG (``w[g]``, the earlier code).
Usage: `.venv/bin/python bench/sparse_ae.py [--repeats 7]`. Prints Markdown for docs/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run_all import side_by_side  # noqa: E402
from mrnet.autoencoders.sparse import SparseAutoencoder, kl_sparsity, sparse_ae_loss  # noqa: E402


def dense_step(model, x, group):
    """The naive formulation: materialize the G·d input and output."""
    n, d = x.shape
    dense = torch.zeros(n, model.n_groups * d)
    dense.view(n, model.n_groups, d)[torch.arange(n), group] = x
    h = torch.sigmoid(dense @ model.w_enc.reshape(-1, model.hidden) + model.b_enc)
    loss = (h @ model.w_dec + model.b_dec - dense).pow(2).sum(1).mean() + 0.1 * kl_sparsity(h, 0.05)
    loss.backward()


class IndexedBlocks(SparseAutoencoder):
    """The reference: each PG's block indexed from the whole weight, whose backward writes a zero-filled
    gradient of the whole weight per PG present in the batch."""

    def encode(self, x, group):
        pre = x.new_empty(x.shape[0], self.hidden)
        for g, rows in self.by_group(group):
            pre = pre.index_copy(0, rows, x[rows] @ self.w_enc[g])
        return torch.sigmoid(pre + self.b_enc)

    def decode_block(self, h, group):
        out = h.new_empty(h.shape[0], self.d)
        for g, rows in self.by_group(group):
            cols = slice(g * self.d, (g + 1) * self.d)
            out = out.index_copy(0, rows, h[rows] @ self.w_dec[:, cols] + self.b_dec[cols])
        return out


def views_vs_indexing(repeats: int, steps: int, g: int = 23, d: int = 256, batch: int = 1024) -> None:
    """The demo's shape (23 PGs, d 256 → 512, batch 1,024); the gradients must agree exactly."""
    torch.manual_seed(0)
    ours, ref = SparseAutoencoder(g, d), IndexedBlocks(g, d)
    ref.load_state_dict(ours.state_dict())
    x, group = torch.randn(batch, d), torch.randint(0, g, (batch,))
    for model in (ours, ref):
        model.zero_grad()
        sparse_ae_loss(model, x, group).backward()
    same = all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), ref.parameters()))

    def run(model):
        def steps_of():
            for _ in range(steps):
                model.zero_grad(set_to_none=True)
                sparse_ae_loss(model, x, group).backward()
        return steps_of

    ours_s, ref_s = side_by_side(run(ours), run(ref), repeats)
    rate = lambda s: batch * steps / s  # noqa: E731
    print(f"| sparse AE forward+backward, G={g}, d={d}, batch {batch}: unbind views vs per-PG indexing "
          f"(products/s; gradients identical: {same}) | {rate(ours_s):,.0f} | {rate(ref_s):,.0f} | {ref_s / ours_s:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 4096])
    args = parser.parse_args()
    torch.manual_seed(0)
    g, d = 23, 128  # the paper's 23 PGs, d = 128
    model = SparseAutoencoder(g, d)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| what | ours (block-sparse, exact) | reference (dense G·d) | ratio |")
    print("|---|---|---|---|")
    for batch in args.batch:
        x, group = torch.randn(batch, d), torch.randint(0, g, (batch,))

        def ours(x=x, group=group):
            for _ in range(args.steps):
                sparse_ae_loss(model, x, group).backward()

        def dense(x=x, group=group):
            for _ in range(args.steps):
                dense_step(model, x, group)

        ours_s, dense_s = side_by_side(ours, dense, args.repeats)
        rate = lambda s, batch=batch: batch * args.steps / s  # noqa: E731
        print(f"| sparse AE forward+backward, G={g}, d={d}, batch {batch} (products/s) | {rate(ours_s):,.0f} | "
              f"{rate(dense_s):,.0f} | {dense_s / ours_s:.2f}x |")
    views_vs_indexing(args.repeats, args.steps)


if __name__ == "__main__":
    main()
