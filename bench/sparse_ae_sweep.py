"""Sweep (not a test): sparse-autoencoder settings on a run's real PG embeddings, printing the
final validation metrics and wall time of each. docs/RESULTS.md has the results.

Usage: `.venv/bin/python bench/sparse_ae_sweep.py [--evaluate] artifacts/demo/runs/<run_id> \\
            '[{"epochs": 10, "batch_size": 1024, "lr": 0.003}, {"epochs": 10, "batch_size": 4096}]'`
Each dict overrides fields of `SparseAEConfig` (mrnet/config/schema.py).

``--evaluate`` trains as the run's ``sparse_autoencoder`` stage does (the run's config with each dict
over its ``sparse_ae``, the shared anchor from the run's word vectors), encodes every product, and scores
the run's evaluation tasks whose MRNet column is the PG-agnostic embedding (paper §4.1) with LR and RF,
beside TF-IDF-LR and LSA-256 of the same folds. The §4.3 probe is left out (it never enters Table 2)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrnet.autoencoders import sparse as sparse_ae  # noqa: E402
from mrnet.config.autoencoders import SparseAEConfig  # noqa: E402
from mrnet.data.demo import load_pg_mapping  # noqa: E402


def reconstruction(run: Path, settings: list[dict]) -> None:
    embeddings = {p.stem: str(p) for p in (run / "embeddings").glob("*.parquet") if p.stem != "pg_agnostic"}
    order = list(load_pg_mapping(REPO / "configs" / "pg_mapping.yaml"))
    print("| settings | val recon_rel | mean activation | seconds |\n|---|---|---|---|")
    for overrides in settings:
        t0 = time.perf_counter()
        _, report = sparse_ae.train_sparse_ae(SparseAEConfig(**overrides), embeddings, order,
                                              "/tmp/sparse_ae_sweep.safetensors", progress=False)
        val = report["history"][-1]["val"]
        print(f"| {overrides} | {val['recon_rel']:.3f} | {val['mean_activation']:.2f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def downstream(run_dir: Path, settings: list[dict]) -> None:
    from mrnet.data.pgs import mapped_pgs
    from mrnet.io import storage
    from mrnet.run.context import load_run
    from mrnet.run.derived import evaluate_run, release_embeddings, title_anchors

    run = load_run(str(run_dir / "run.json"))
    summary = str(run_dir / "summary.json")
    embeddings = release_embeddings(run, json.loads(storage.read_text(summary)))
    order = mapped_pgs(run.cfg) or sorted(embeddings)
    anchors = title_anchors(run)
    print("| sparse_ae settings | val recon_rel | train + encode s | task | agnostic RF | agnostic LR | "
          "LSA-256 RF | LSA-256 LR | TF-IDF-LR |\n|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for i, overrides in enumerate(settings):
            cfg = run.cfg.model_copy(update={"sparse_ae": run.cfg.sparse_ae.model_copy(update=overrides),
                                             "evaluation": run.cfg.evaluation.model_copy(update={"interpret": []})})
            t0 = time.perf_counter()
            uri, report = sparse_ae.train_sparse_ae(cfg.sparse_ae, embeddings, order, f"{work}/sae{i}.safetensors",
                                                    cfg.train.seed, "cpu", False, None, anchors)
            agnostic, _ = sparse_ae.encode_all(uri, embeddings, f"{work}/sae{i}.parquet")
            seconds = time.perf_counter() - t0
            result, _ = evaluate_run(run, summary, f"{work}/eval{i}", cfg, agnostic=agnostic)
            score = {(r["task"], r["feature"], r["classifier"]): r["mean"] for r in result["rows"]}
            recon = report["history"][-1]["val"]["recon_rel"]
            for task, info in result["tasks"].items():
                if info["mrnet_feature"] == "agnostic":
                    cells = [score.get((task, f, c), float("nan")) for f, c in
                             (("agnostic", "rf"), ("agnostic", "lr"), ("lsa256", "rf"), ("lsa256", "lr"),
                              ("tfidf", "lr"))]
                    print(f"| {overrides} | {recon:.3f} | {seconds:.0f} | {task} | "
                          + " | ".join(f"{v:.4f}" for v in cells) + " |", flush=True)


def main() -> None:
    args = sys.argv[1:]
    evaluate = "--evaluate" in args
    args = [a for a in args if a != "--evaluate"]
    run, settings = Path(args[0]), json.loads(args[1])
    (downstream if evaluate else reconstruction)(run, settings)


if __name__ == "__main__":
    main()
