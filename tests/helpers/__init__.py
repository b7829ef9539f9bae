"""What several test files share: where the repo and the shared data are, the tiny config, and the
params of a tiny local run. Fixtures are in conftest.py; tests import no other test module."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

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
    """The DAG params of a tiny local run of the three fixture PGs under ``root``. The learning rate is the typed
    default, not the demo's budget setting: the gate tests build a run that holds (more steps than the champion's)
    and one that diverges (lr 1.0) relative to it, which should not move when the demo's lr is retuned."""
    overrides = [f"artifact_root={root}", f"data.raw_dir={RAW}", f"data.pg_mapping={REPO / 'configs/pg_mapping.yaml'}",
                 "train.threads=1", "train.lr=0.002"] + ([f"data.catalog={catalog}"] if catalog else [])
    return {"config": str(REPO / "configs/demo.yaml"), "tiny": True, "pgs": PGS, "overrides": overrides} | extra


@contextlib.contextmanager
def moto_s3(cache_dir, bucket: str):
    """A real S3-compatible HTTP endpoint (moto's server mode) on a free localhost port, the AWS
    variables pointing at it for the block, and ``bucket`` created; yields those variables."""
    from moto.server import ThreadedMotoServer

    from mrnet.io import storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "MRNET_CACHE": str(cache_dir)}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            storage.s3_client().create_bucket(Bucket=bucket)
            yield env
    finally:
        server.stop()
