"""What several test files share: where the repo and the shared data are, the tiny config, and the
params of a tiny local run. Fixtures are in conftest.py; tests import no other test module."""

from __future__ import annotations

import os
from pathlib import Path

from mrnet.config.schema import load_config

REPO = Path(__file__).resolve().parents[2]
RAW = Path(os.environ.get("MRNET_RAW_DIR", REPO.parent / "shared" / "data"))  # CI: shared/ beside the clone
TINY_PGS = "[watches,beverages,automotive]"
PGS = ["watches", "beverages", "automotive"]


def tiny_config(root, *overrides: str):
    return load_config(REPO / "configs" / "demo.yaml",
                       [f"artifact_root={root}", f"data.raw_dir={RAW}",
                        f"data.pg_mapping={REPO / 'configs' / 'pg_mapping.yaml'}",
                        f"pgs={TINY_PGS}", "data.max_rows_per_pg=150", "train.threads=1", *overrides],
                       tiny=True)


def run_params(root, catalog=None, **extra) -> dict:
    """The DAG params of a tiny local run of the three fixture PGs under ``root``."""
    overrides = [f"artifact_root={root}", f"data.raw_dir={RAW}", f"data.pg_mapping={REPO / 'configs/pg_mapping.yaml'}",
                 "train.threads=1"] + ([f"data.catalog={catalog}"] if catalog else [])
    return {"config": str(REPO / "configs/demo.yaml"), "tiny": True, "pgs": PGS, "overrides": overrides} | extra
