"""Benchmark (not a test): one embedding shard end to end, as an ``embed_shard`` task runs it
(docs/SCALING.md): read the shard's rows from the catalog, tokenize, BiLSTM forward, write Parquet.

Two steps, so the GPU machine (no gensim, no ../shared) needs only what it is carried:

    # here: real titles of the three public catalogs + an untrained PG model shaped like the
    # demo's (random weights cost the same to run as trained ones)
    .venv/bin/python bench/embed_shard.py prepare --out .devdata
    # here or on the GPU machine:
    python3 bench/embed_shard.py run --data .devdata --titles 2000000 --repeats 3

``run`` writes a catalog of ``--titles`` rows (the real titles repeated, unique ids, one PG) and
times ``embed.embed_shard`` on all of it as one shard, interleaved, medians of ``--repeats``:
- reference: tokenizing in one process (``embed.tokenize_workers=1``, the path before shards);
- ours: tokenizing over every core (``tokenize_workers=0``; a spawned pool, started per shard).
It prints titles/s, the ratio, peak memory and hours per billion products for one worker, and
where the time of ours goes (read rows / tokenize / forward / write, medians of the same repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(args) -> None:
    import pandas as pd
    import torch

    from mrnet.config.schema import load_config
    from mrnet.data.demo import build_demo_catalog
    from mrnet.data.text import tokenize
    from mrnet.encoder.model import build_model, save_model

    cfg = load_config(REPO / "configs" / "demo.yaml")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = build_demo_catalog(cfg.data.raw_dir if os.path.isabs(cfg.data.raw_dir) else str(REPO / cfg.data.raw_dir),
                             str(REPO / cfg.data.pg_mapping), str(out / "raw.parquet"))
    titles = pd.read_parquet(raw, columns=["title"]).dropna().drop_duplicates()
    titles.to_parquet(out / "titles.parquet", index=False)
    Path(raw).unlink()
    counts = Counter(tok for t in titles["title"] for tok in tokenize(t))
    from mrnet.data.word2vec import resolve_settings

    min_count, _ = resolve_settings(cfg.word2vec, sum(counts.values()))
    words = ["<pad>", "<unk>"] + [w for w, c in counts.most_common() if c >= min_count]
    meta = {"config": cfg.model_dump(mode="json"), "vocab": words, "tasks": [], "pg": "bench"}
    torch.manual_seed(0)
    save_model(build_model(meta), meta, str(out / "shard_model.safetensors"))
    print(f"{out}: {len(titles)} distinct titles, vocabulary {len(words)} words")


def _catalog(data: Path, n: int, path: Path) -> None:
    import pandas as pd

    titles = pd.read_parquet(data / "titles.parquet")["title"].tolist()
    rows = (titles * (n // len(titles) + 1))[:n]
    pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "title": rows,
                  "product_group": "bench"}).to_parquet(path, index=False, row_group_size=1_000_000)


def breakdown(model_uri: str, catalog: Path, shard: str, n: int, device: str, repeats: int, tmp: str) -> dict:
    """Median seconds of each step of ``embed_shard`` with the pooled tokenizer."""
    import torch

    from mrnet.data.text import encode_parallel
    from mrnet.encoder import embed
    from mrnet.encoder.model import load_model

    model, meta = load_model(model_uri, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in ("read rows", "tokenize", "forward", "write Parquet")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = embed.shard_rows(str(catalog), shard, n)
        t1 = time.perf_counter()
        ids, lengths = encode_parallel(meta["vocab"], rows["title"].tolist(), meta["config"]["model"]["max_tokens"],
                                       os.cpu_count() or 1)
        t2 = time.perf_counter()
        out = embed.embed_ids(model, ids, lengths, 8192, device)
        sync()
        t3 = time.perf_counter()
        embed.write_embeddings(f"{tmp}/steps.parquet", rows["product_id"], "bench", "v", out)
        t4 = time.perf_counter()
        for name, t in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def run(args) -> None:
    import torch

    from mrnet.config.training import EmbedConfig
    from mrnet.encoder.embed import embed_shard

    data, n = Path(args.data), args.titles
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count() or 1)
    model = str(data / "shard_model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.parquet"
        _catalog(data, n, catalog)
        shard = "bench/part-00000-of-00001"
        variants = {"reference: tokenize in 1 process": EmbedConfig(shard_size=n, tokenize_workers=1),
                    f"ours: tokenize in {os.cpu_count()} processes": EmbedConfig(shard_size=n, tokenize_workers=0,
                                                                                 parallel_min_titles=1)}
        embed_shard(model, str(catalog), shard, f"{tmp}/warm.parquet", EmbedConfig(shard_size=n), device)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, cfg in variants.items():
                t0 = time.perf_counter()
                embed_shard(model, str(catalog), shard, f"{tmp}/out.parquet", cfg, device)
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
        steps = breakdown(model, catalog, shard, n, device, args.repeats, tmp)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med[next(iter(med))]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU"
    gpu_mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    print(f"machine: {gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}; one shard of {n:,} titles; "
          f"median of {args.repeats} interleaved runs\n")
    print("| embed_shard | seconds | titles/s | ratio | hours per 1B titles, one worker |\n|---|---|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {t:.2f} | {n / t:,.0f} | {ref / t:.2f}x | {1e9 / (n / t) / 3600:.2f} |")
    print(f"\npeak RSS of the task process {peak_gib:.2f} GiB (tokenizer processes not counted); "
          f"peak GPU memory {gpu_mem:.2f} GiB")
    print("\n| step of ours | seconds | titles/s |\n|---|---|---|")
    for name, t in steps.items():
        print(f"| {name} | {t:.2f} | {n / t:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"titles": n, "device": gpu, "cores": os.cpu_count(), "median_s": med,
                                               "peak_rss_gib": peak_gib, "peak_gpu_gib": gpu_mem, "steps_s": steps}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", default=".devdata")
    r = sub.add_parser("run")
    r.add_argument("--data", default=".devdata")
    r.add_argument("--titles", type=int, default=1_000_000)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--json", default=None)
    args = parser.parse_args()
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
