"""Sparse-autoencoder encoder init on a finished run (a benchmark, not a test): the PG-agnostic embedding
(§3.2) refit on the run's own PG embeddings with each ``sparse_ae`` setting, side by side, then the run's
downstream evaluation (§4) on each. Only the agnostic-space tasks change between rows; docs/AUTOENCODERS.md
has the results.

Usage: .venv/bin/python bench/agnostic_init.py artifacts/demo/runs/<run_id> \\
           '[{"init": "aligned"}, {"init": "random"}]'
Each dict overrides fields of the run's ``sparse_ae`` config (SparseAEConfig in mrnet/config/schema.py).
"""

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
from mrnet.data.pgs import mapped_pgs  # noqa: E402
from mrnet.run.context import load_run  # noqa: E402
from mrnet.run.derived import evaluate_run, release_embeddings, title_anchors  # noqa: E402


def main() -> None:
    root, settings = Path(sys.argv[1]), json.loads(sys.argv[2])
    run = load_run(str(root / "run.json"))
    summary = str(root / "summary.json")
    embeddings = release_embeddings(run, json.loads(Path(summary).read_text()))
    order = mapped_pgs(run.cfg) or sorted(embeddings)
    run_cfg = run.cfg.model_copy(update={"train": run.cfg.train.model_copy(update={"progress": False})})
    for overrides in settings:
        cfg = SparseAEConfig(**(run.cfg.sparse_ae.model_dump() | overrides))
        with tempfile.TemporaryDirectory() as work:
            t0 = time.perf_counter()
            model_uri, report = sparse_ae.train_sparse_ae(cfg, embeddings, order, f"{work}/sae.safetensors",
                                                          run.cfg.train.seed, progress=False,
                                                          anchors=title_anchors(run))
            uri, _ = sparse_ae.encode_all(model_uri, embeddings, f"{work}/pg_agnostic.parquet")
            seconds = time.perf_counter() - t0
            result, _ = evaluate_run(run, summary, f"{work}/evaluation", run_cfg, agnostic=uri)
        val = report["history"][-1]["val"]
        print(json.dumps({"settings": overrides, "recon_rel": round(val["recon_rel"], 3),
                          "mean_activation": round(val["mean_activation"], 3),
                          "anchor_rel": round(val.get("anchor_rel", float("nan")), 3), "seconds": round(seconds, 1),
                          "tasks": scores(result)}), flush=True)


def scores(result: dict) -> dict:
    """{task: {feature.classifier: mean}} for MRNet's two spaces and TF-IDF."""
    out: dict[str, dict] = {}
    for r in result["rows"]:
        if r["feature"] in ("agnostic", "pg", "tfidf"):
            out.setdefault(r["task"], {})[f"{r['feature']}.{r['classifier']}"] = round(r["mean"], 4)
    return out


if __name__ == "__main__":
    main()
