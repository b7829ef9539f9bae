"""io/storage.py against a real S3-compatible HTTP endpoint: moto's server mode on localhost.

boto3 talks HTTP to it exactly as to AWS or MinIO (endpoint from AWS_ENDPOINT_URL, credentials
from the standard AWS variables; nothing in code or config)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mrnet.encoder.embed import read_embeddings
from mrnet.io import storage
from tests.helpers import RAW, REPO, moto_s3

BUCKET = "mrnet-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("s3cache"), BUCKET) as env:
        yield env


def test_upload_download_roundtrip(s3, tmp_path):
    uri = f"s3://{BUCKET}/runs/r1/summary.json"
    assert not storage.exists(uri)
    storage.write_text(uri, json.dumps({"ok": True}))
    assert storage.exists(uri) and json.loads(storage.read_text(uri)) == {"ok": True}
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(3_000_000))
    with storage.atomic_path(f"s3://{BUCKET}/runs/r1/weights.bin") as tmp:
        tmp.write_bytes(local.read_bytes())
    assert storage.sha256_file(storage.local_path(f"s3://{BUCKET}/runs/r1/weights.bin")) == storage.sha256_file(local)
    storage.write_text(uri, json.dumps({"ok": "again"}))  # overwrite: the reader sees the new object
    assert json.loads(storage.read_text(uri)) == {"ok": "again"}


def test_children_lists_one_level_on_s3_as_on_disk(s3, tmp_path):
    for root in (f"s3://{BUCKET}/list", str(tmp_path / "list")):
        for name in ("runs/b/release.json", "runs/a/run.json", "runs/a/models/x.bin", "runs/top.txt"):
            storage.write_text(storage.join(root, name), "{}")
        assert storage.children(storage.join(root, "runs")) == ["a", "b", "top.txt"], root
        assert storage.children(storage.join(root, "runs/")) == ["a", "b", "top.txt"]
        assert storage.children(storage.join(root, "nothing")) == []


def test_missing_bucket_and_key_give_clear_errors(s3):
    with pytest.raises(FileNotFoundError, match="S3 bucket 'no-such-bucket' does not exist \\(write s3://no-such"):
        storage.write_text("s3://no-such-bucket/x/run.json", "{}")
    with pytest.raises(FileNotFoundError, match="S3 bucket 'no-such-bucket' does not exist \\(read"):
        storage.read_text("s3://no-such-bucket/x/run.json")
    with pytest.raises(FileNotFoundError, match=f"artifact not found: s3://{BUCKET}/nothing/here.json"):
        storage.read_text(f"s3://{BUCKET}/nothing/here.json")
    assert storage.exists("s3://no-such-bucket/x") is False


def test_a_failed_write_publishes_nothing(s3):
    uri = f"s3://{BUCKET}/runs/r2/model.safetensors"
    with pytest.raises(RuntimeError):
        with storage.atomic_path(uri) as tmp:
            tmp.write_bytes(b"half a model")
            raise RuntimeError("the writer died")
    assert not storage.exists(uri)


UPLOADER = """
import os, sys
from mrnet.io import storage
data = os.urandom(96 * 1024 * 1024)  # multipart upload (8 MiB parts)
storage.write_bytes(sys.argv[1] + "/embeddings.parquet", data)
storage.write_text(sys.argv[1] + "/release.json", '{"embeddings": "embeddings.parquet"}')  # manifest last
"""


def test_an_interrupted_upload_is_never_manifested(s3):
    """Kill the writer in the middle of a multipart upload: neither the object nor the manifest
    that would name it exists, so a reader that trusts only manifests sees nothing half-written."""
    prefix = f"s3://{BUCKET}/runs/killed"
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, prefix], cwd=REPO, env=os.environ | s3)
    client = storage.s3_client()
    deadline = time.monotonic() + 120
    while not client.list_multipart_uploads(Bucket=BUCKET, Prefix="runs/killed/").get("Uploads"):
        assert proc.poll() is None, "the upload finished before it could be interrupted"
        assert time.monotonic() < deadline, "no multipart upload started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not storage.exists(f"{prefix}/embeddings.parquet")
    assert not storage.exists(f"{prefix}/release.json")


@pytest.mark.slow
def test_a_tiny_run_with_artifact_root_on_s3(s3, tmp_path, fixture_catalog):
    """The whole retrain with every artifact (and MLflow's artifacts) under s3://…, tracking in SQLite."""
    home = f"s3://{BUCKET}/home"
    cmd = [sys.executable, "-m", "mrnet", "run", "--tiny", "--run-id", "on-s3", "--set", f"artifact_root={home}",
           "--set", "pgs=[watches,beverages]", "--set", f"data.catalog={fixture_catalog}", "--set", f"data.raw_dir={RAW}",
           "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    out = subprocess.run(cmd, cwd=REPO, env=os.environ | s3, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    current = json.loads(storage.read_text(f"{home}/releases/current.json"))
    assert current["release"] == "on-s3"
    assert current["models"]["watches"]["uri"] == f"{home}/runs/on-s3/models/watches/model.safetensors"
    assert storage.exists(current["embeddings"]["beverages"] + "/_manifest.json")  # committed shards
    assert len(read_embeddings(current["embeddings"]["beverages"])[1]) > 0  # read by the manifest, no listing
    titles = tmp_path / "titles.csv"
    titles.write_text("title\nanalog wrist watch for men\n")
    embed = [sys.executable, "-m", "mrnet", "embed", "--pg", "watches", "--titles", str(titles),
             "--model", "models:/mrnet-watches@champion", "--set", f"artifact_root={home}",
             "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    out = subprocess.run(embed, cwd=REPO, env=os.environ | s3, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "titles.emb.parquet").exists()
