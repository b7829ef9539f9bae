"""Library benchmarks (not tests): each figure is a median of several runs, side by side
with a naive reference measured in the same process. Usage: `make bench` or
`.venv/bin/python bench/run_all.py [--repeats 5]`. Prints Markdown for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrnet.config.schema import load_config  # noqa: E402
from mrnet.data.catalog import read_catalog  # noqa: E402
from mrnet.data.word2vec import load_vectors, train_word2vec  # noqa: E402
from mrnet.encoder import targets as T  # noqa: E402
from mrnet.encoder.embed import embed_titles, write_embeddings  # noqa: E402
from mrnet.encoder.model import build_model  # noqa: E402
from mrnet.encoder.train import alternating_optimization, batch_size_for, init_weights, prepare, task_loss  # noqa: E402
from mrnet.run import steps  # noqa: E402


def side_by_side(ours, reference, repeats: int) -> tuple[float, float]:
    """Median seconds of each, runs interleaved so machine drift hits both alike."""
    times: dict = {ours: [], reference: []}
    for _ in range(repeats):
        for fn in (ours, reference):
            t0 = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t0)
    return statistics.median(times[ours]), statistics.median(times[reference])


def setup(root: str):
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"artifact_root={root}", "train.progress=false"])
    catalog_uri, _ = steps.validate_step(cfg)
    corpus_uri, _ = steps.corpus_step(cfg, catalog_uri)
    vectors_uri, _ = steps.word2vec_step(cfg, corpus_uri)
    return cfg, catalog_uri, corpus_uri, vectors_uri


def bench_train(cfg, catalog, words, vectors, pg: str, steps: int, repeats: int) -> dict:
    """Bucketed alternating training vs the same loop on padded batches + pack_padded_sequence."""
    df = catalog[catalog.product_group == pg].reset_index(drop=True)
    states = [T.fit_task(s, df) for s in cfg.tasks]
    active = {s["name"]: s for s in states if s["active"]}
    data = prepare(cfg, df, words, states)
    meta = {"config": cfg.model_dump(mode="json"), "vocab": words, "tasks": states}
    device, batch = torch.device("cpu"), batch_size_for(cfg.train, len(df))

    def ours():
        model = build_model(meta)
        init_weights(model, vectors, active)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        alternating_optimization(model, opt, data, active, steps, batch, torch.Generator().manual_seed(0),
                                 device, amp=False)

    def packed():  # reference: random batches of any length, padded, PackedSequence
        model = build_model(meta)
        init_weights(model, vectors, active)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        gen = np.random.default_rng(0)
        names = sorted(active)
        for _ in range(steps):
            name = names[gen.integers(len(names))]
            labelled = np.flatnonzero(data.targets[name].has)
            idx = gen.choice(labelled, size=min(batch, len(labelled)), replace=False)
            lengths = torch.from_numpy(data.lengths[idx])
            ids = torch.from_numpy(data.ids[idx, : int(lengths.max())])
            out = model.heads[name](model.forward_packed(ids, lengths))
            y = data.targets[name].y[idx]
            y = torch.from_numpy(np.asarray(y.toarray() if hasattr(y, "toarray") else y))
            loss = task_loss(active[name], out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ours_s, ref_s = side_by_side(ours, packed, repeats)
    return {"ours": steps * batch / ours_s, "ref": steps * batch / ref_s, "batch": batch}


def bench_embed(catalog, model, meta, n: int, n_ref: int, repeats: int, out_dir: str) -> dict:
    """Tokenize + bucketed inference + Parquet write vs per-title inference."""
    rows = catalog.head(n)
    titles, ids = rows.title.tolist(), rows.product_id.tolist()

    def ours():
        emb = embed_titles(model, meta, titles)
        write_embeddings(f"{out_dir}/bench.parquet", ids, "bench", "bench", emb)

    def per_title():
        with torch.inference_mode():
            emb = np.concatenate([embed_titles(model, meta, [t]) for t in titles[:n_ref]])
        write_embeddings(f"{out_dir}/ref.parquet", ids[:n_ref], "bench", "bench", emb)

    ours_s, ref_s = side_by_side(ours, per_title, repeats)
    return {"ours": n / ours_s, "ref": n_ref / ref_s}


def bench_word2vec(cfg, corpus_uri: str, repeats: int, out_dir: str) -> dict:
    from gensim.models import Word2Vec

    from mrnet.data.word2vec import count_tokens, resolve_settings

    w = cfg.word2vec
    min_count, epochs = resolve_settings(w, count_tokens(corpus_uri))

    def ours():
        train_word2vec(corpus_uri, w, f"{out_dir}/v.bin", progress=False)

    def direct():
        Word2Vec(corpus_file=corpus_uri, vector_size=w.vector_size, window=w.window, min_count=min_count,
                 sg=w.sg, epochs=epochs, seed=w.seed, workers=os.cpu_count())

    ours_s, ref_s = side_by_side(ours, direct, repeats)
    return {"ours": ours_s, "ref": ref_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pg", default="footwear")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as root:
        cfg, catalog_uri, corpus_uri, vectors_uri = setup(root)
        catalog = read_catalog(catalog_uri)
        words, vectors = load_vectors(vectors_uri)
        model_uri, _ = steps.train_step(cfg.model_copy(update={"pgs": [args.pg]}), args.pg,
                                           catalog_uri, vectors_uri)
        from mrnet.encoder.model import load_model
        model, meta = load_model(model_uri)
        tr = bench_train(cfg, catalog, words, vectors, args.pg, args.steps, args.repeats)
        em = bench_embed(catalog, model, meta, 50_000, 2_000, args.repeats, root)
        wv = bench_word2vec(cfg, corpus_uri, args.repeats, root)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"machine: {machine}; median of {args.repeats} runs\n")
    print("| benchmark | mrnet | reference | ratio |\n|---|---|---|---|")
    print(f"| BiLSTM training, PG {args.pg}, batch {tr['batch']} (titles/s) | {tr['ours']:,.0f} "
          f"| {tr['ref']:,.0f} (pack_padded_sequence) | {tr['ours'] / tr['ref']:.2f}x |")
    print(f"| embedding end to end: tokenize + infer + Parquet, 50k titles (titles/s) | {em['ours']:,.0f} "
          f"| {em['ref']:,.0f} (per-title inference) | {em['ours'] / em['ref']:.1f}x |")
    print(f"| word2vec on the demo corpus (s, lower is better) | {wv['ours']:.2f} "
          f"| {wv['ref']:.2f} (gensim called directly) | {wv['ref'] / wv['ours']:.2f}x |")


if __name__ == "__main__":
    main()
