"""Benchmark (not a test): where the time of embedding many titles goes, for sizing an embedding
refresh (docs/RESULTS.md, GPU). Runs on the GPU machine with the data of `bench/gpu.py prepare`:

    python3 bench/embed_scale.py --data .devdata --titles 1000000

Measures, medians of interleaved repeats:
- tokenizing (``Vocab.encode_many``) in one process vs a process pool over chunks;
- the BiLSTM forward alone on pre-tokenized ids, bucketed by length (``inference_mode``), at
  batch 8,192 (the config default) and 32,768, on CUDA.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

def median_time(fn, repeats: int) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch

    from bench.gpu import new_model, setup
    from mrnet.data.text import Vocab, length_buckets, pool_encode, pool_init

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=".devdata")
    parser.add_argument("--titles", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg, catalog, words, vectors, active, meta, _, _ = setup(Path(args.data))
    titles = (catalog["title"].tolist() * (args.titles // len(catalog) + 1))[: args.titles]
    vocab_words = meta["vocab"][2:]
    one = lambda: Vocab(vocab_words).encode_many(titles, 32)  # noqa: E731
    workers = os.cpu_count() or 1
    chunks = [(titles[i:i + 50_000], 32) for i in range(0, len(titles), 50_000)]
    with ProcessPoolExecutor(workers, initializer=pool_init, initargs=(vocab_words,)) as pool:
        list(pool.map(pool_encode, chunks[:workers]))  # warm the pool
        pooled = lambda: list(pool.map(pool_encode, chunks))  # noqa: E731
        t_one, t_pool = median_time(one, args.repeats), median_time(pooled, args.repeats)
    ids, lengths = one()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke test of this script only
    model = new_model(meta, vectors, active, torch.device(device))[0].eval()
    buckets = list(length_buckets(lengths).values())
    gpu_ids = torch.from_numpy(ids).to(device)

    def forward(batch):
        def run():
            with torch.inference_mode():
                for idx in buckets:
                    length = int(lengths[idx[0]])
                    rows = torch.from_numpy(idx).to(device)
                    for s in range(0, len(idx), batch):
                        model(gpu_ids[rows[s:s + batch], :length])
        return run

    forward(8192)()  # warm-up
    t_fwd = {b: median_time(forward(b), args.repeats) for b in (8192, 32768)}
    n = len(titles)
    name = torch.cuda.get_device_name() if device == "cuda" else "no GPU (smoke test)"
    print(f"machine: {name}, {workers} CPU cores, torch {torch.__version__}; "
          f"{n:,} titles (PG footwear repeated); median of {args.repeats} runs\n")
    print("| step | titles/s | ratio |\n|---|---|---|")
    print(f"| tokenize, one process (reference) | {n / t_one:,.0f} | 1.00x |")
    print(f"| tokenize, {workers} processes, 50K-title chunks | {n / t_pool:,.0f} | {t_one / t_pool:.2f}x |")
    for b, t in t_fwd.items():
        print(f"| BiLSTM forward on {device}, pre-tokenized, batch {b:,} | {n / t:,.0f} | – |")


if __name__ == "__main__":
    main()
