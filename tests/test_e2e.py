"""End to end through the CLI in tiny mode: catalog → corpus → word2vec → 3 PG models → embeddings
→ sparse and cross-language autoencoders → release."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import RAW, REPO, TINY_PGS


@pytest.mark.slow
def test_mrnet_run_tiny_end_to_end(tmp_path):
    home = tmp_path / "home"
    root = home / "runs" / "smoke"
    cmd = [sys.executable, "-m", "mrnet", "run", "--tiny", "--run-id", "smoke", "--set", f"artifact_root={home}",
           "--set", f"data.raw_dir={RAW}", "--set", f"pgs={TINY_PGS}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 PG models trained, 0 failed" in result.stderr  # the summary is logged
    assert f"run smoke: {root}" in result.stdout
    assert json.loads((home / "releases" / "current.json").read_text())["release"] == "smoke"
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["pgs"]) == {"watches", "beverages", "automotive"}
    assert summary["quarantine"]["by_reason"]["unknown_pg"] > 0
    for pg in summary["pgs"]:
        assert (root / "models" / pg / "model.safetensors").exists()
        assert (root / "models" / pg / "ckpt.pt").exists()
        assert len(pd.read_parquet(root / "embeddings" / pg)) > 0  # the PG's committed shards
    assert (root / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (root / "catalog" / "quarantine.parquet").exists()
    summary_cmd = [sys.executable, "-m", "mrnet", "summary", "--set", f"artifact_root={home}"]
    shown = subprocess.run(summary_cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "| watches |" in shown.stdout and str(root) in shown.stdout
    assert "PG-agnostic embeddings (sparse autoencoder, §3.2): 512-d, val recon_rel" in shown.stdout
    assert "cross-language autoencoder (§5), held-out MRR: random" in shown.stdout
    agnostic = pd.read_parquet(root / "embeddings" / "pg_agnostic")  # one part per PG shard, committed
    assert len(agnostic) == sum(len(pd.read_parquet(root / "embeddings" / pg)) for pg in summary["pgs"])


def test_cli_reports_bad_config_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mrnet", "run", "--set", "pgs=[atlantis]",
                             "--set", f"artifact_root={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown PG(s) ['atlantis']" in result.stderr and "Traceback" not in result.stderr


def test_library_never_imports_airflow():
    code = ("import sys, pkgutil, importlib, mrnet\n"
            "for m in pkgutil.walk_packages(mrnet.__path__, 'mrnet.'):\n"
            "    if m.name != 'mrnet.__main__': importlib.import_module(m.name)\n"
            "assert not [k for k in sys.modules if k.split('.')[0] == 'airflow'], 'airflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (REPO / "mrnet").rglob("*.py"):
        assert "import airflow" not in path.read_text() and "from airflow" not in path.read_text(), path
