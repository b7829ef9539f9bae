"""Sweep (not a test): sparse-autoencoder settings on a run's real PG embeddings, printing the
final validation metrics and wall time of each. docs/AUTOENCODERS.md has the results.

Usage: `.venv/bin/python bench/sparse_ae_sweep.py artifacts/demo/runs/<run_id> \\
            '[{"epochs": 10, "batch_size": 1024, "lr": 0.003}, {"epochs": 10, "batch_size": 4096}]'`
Each dict overrides fields of `SparseAEConfig` (mrnet/config/schema.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrnet.autoencoders import sparse as sparse_ae  # noqa: E402
from mrnet.config.schema import SparseAEConfig  # noqa: E402
from mrnet.data.demo import load_pg_mapping  # noqa: E402


def main() -> None:
    run, settings = Path(sys.argv[1]), json.loads(sys.argv[2])
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


if __name__ == "__main__":
    main()
