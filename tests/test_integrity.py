"""Integrity on every read: `mrnet verify`, the gate, summary and gc against damaged files, and the one-line errors
of the readers (a titles file that is empty or not UTF-8, a release that is not JSON). One tiny release, without
tracking; each test damages a file and puts it back."""

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from mrnet.cli import main
from mrnet.release.verify import verify_release
from tests.helpers import REPO, run_params

DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def release(tmp_path_factory, fixture_catalog):
    """A home whose champion is the tiny release ``r1`` (no tracking: releases/current.json is the pointer)."""
    from mrnet.run import local

    home = tmp_path_factory.mktemp("integrity")
    params = run_params(home, fixture_catalog)
    params["overrides"] += ["tracking.enabled=false"]
    local.run(params, run_id="r1")
    return home, params, json.loads((home / "runs" / "r1" / "release.json").read_text())


@contextmanager
def damaged(path: Path, change):
    """``path`` changed by ``change(bytes) -> bytes`` for the block, then put back as it was."""
    keep = path.read_bytes()
    path.write_bytes(change(keep))
    try:
        yield
    finally:
        path.write_bytes(keep)


def flip(data: bytes) -> bytes:
    """One bit flipped in the middle: the size stays, the content does not."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def _cli(capsys, home, *argv) -> tuple[int, str]:
    code = main([*argv, "--config", DEMO, "--set", f"artifact_root={home}", "--set", "tracking.enabled=false"])
    out = capsys.readouterr()
    return code, out.out + out.err


def _part(manifest) -> Path:
    folder = Path(manifest["embeddings"]["watches"])
    return folder / json.loads((folder / "_manifest.json").read_text())["parts"][0]["file"]


def test_the_manifest_records_every_file(release):
    _, _, manifest = release
    for entry in manifest["models"].values():
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0 and entry["sha256"].startswith(entry["version"])
    assert manifest["catalog_file"]["bytes"] == Path(manifest["catalog"]).stat().st_size
    part = json.loads((Path(manifest["embeddings"]["watches"]) / "_manifest.json").read_text())["parts"][0]
    assert {"file", "rows", "bytes", "sha256"} <= set(part)
    result = verify_release(manifest)
    assert result["damaged"] == [] and result["files"] > 10


def test_verify_names_a_bit_flip_a_short_part_and_a_missing_file(release, capsys):
    home, _, manifest = release
    code, out = _cli(capsys, home, "verify")
    assert code == 0 and "release r1:" in out and "every file as recorded" in out
    part = _part(manifest)
    with damaged(part, flip):  # same size: only the full check reads it
        assert verify_release(manifest, full=False)["damaged"] == []
        code, out = _cli(capsys, home, "verify", "--run", "r1")
        assert code == 1 and f"DAMAGED  {part}: SHA-256" in out and "1 damaged file(s)" in out
    with damaged(part, lambda b: b[: len(b) // 2]):  # cut short: the quick check sees the size
        assert verify_release(manifest, full=False)["damaged"][0][0] == str(part)
    model = Path(manifest["models"]["watches"]["uri"])
    with damaged(model, flip):  # a model is hashed by the quick check too
        (uri, why), = verify_release(manifest, full=False)["damaged"]
        assert uri == str(model) and "SHA-256" in why
    moved = part.with_suffix(".moved")
    part.rename(moved)
    try:
        code, out = _cli(capsys, home, "verify", "--champion")
        assert code == 1 and f"DAMAGED  {part}: missing" in out
    finally:
        moved.rename(part)


def test_the_gate_refuses_a_challenger_that_fails_verification(release):
    from mrnet.release.manifest import judge

    home, params, manifest = release
    from mrnet.config.schema import load_config

    cfg = load_config(DEMO, params["overrides"], tiny=True)
    summary = json.loads(Path(manifest["summary"]).read_text())
    assert judge(cfg, manifest, summary, manifest, verify=True)[0]["promote"]  # itself vs itself: holds
    with damaged(Path(manifest["models"]["beverages"]["uri"]), flip):
        decision, _, text = judge(cfg, manifest, summary, manifest, verify=True)
    assert not decision["promote"] and "the release fails verification: 1 damaged file(s)" in text


def test_summary_and_gc_report_damage_instead_of_crashing(release, capsys):
    home, _, manifest = release
    with damaged(Path(manifest["models"]["watches"]["uri"]), flip):
        code, out = _cli(capsys, home, "summary")
        assert code == 0 and "DAMAGED" in out and "1 damaged file(s)" in out
    with damaged(home / "runs" / "r1" / "release.json", lambda b: b[:10]):
        code, out = _cli(capsys, home, "summary")
        assert code == 0 and "DAMAGED" in out and "release.json is not a release manifest: not JSON" in out
    shutil.copytree(home / "runs" / "r1", home / "runs" / "r0")  # a second run, whose run.json is damaged
    try:
        (home / "runs" / "r0" / "run.json").write_text("{not json")
        code, out = _cli(capsys, home, "gc", "--dry-run", "--set", "retention.keep_last=1", "--set",
                         "retention.keep_days=0")
        assert code == 0 and "DAMAGED r0" in out and "run.json is not JSON" in out, out
        with damaged(home / "releases" / "current.json", lambda b: b"{"):
            code, out = _cli(capsys, home, "gc", "--set", "retention.keep_last=1", "--set", "retention.keep_days=0")
            assert code == 0 and "0 deleted" in out and "pointer is damaged, so gc deletes no run" in out, out
    finally:
        shutil.rmtree(home / "runs" / "r0")


def test_reader_errors_name_the_file(release, tmp_path, capsys):
    from mrnet.encoder.embed import read_titles_csv

    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty.csv: the file is empty"):
        read_titles_csv(str(tmp_path / "empty.csv"))
    (tmp_path / "latin.csv").write_bytes("title\nCaf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv: not UTF-8 text .*iconv"):
        read_titles_csv(str(tmp_path / "latin.csv"))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    home = release[0]
    code, out = _cli(capsys, home, "neighbors", "--release", str(tmp_path / "x.csv"), "--id", "p")
    assert code == 1 and f"{tmp_path / 'x.csv'} is not a release manifest: not JSON" in out


def test_repair_gc_and_validate_on_an_empty_or_failed_root(tmp_path, capsys):
    empty = tmp_path / "empty"
    code, out = _cli(capsys, empty, "promote", "--repair")
    assert code == 0 and "no champion release under" in out and "nothing to repair" in out
    code, out = _cli(capsys, empty, "gc", "--dry-run")
    assert code == 0 and "no runs, nothing to do" in out and not empty.exists()  # not even locks/
    good = tmp_path / "good.csv"
    good.write_text("product_id,product_group,source,locale,title\np1,watches,s,en,Analog watch\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,product_group,source,locale,title\np1,watches,s,en,\n")
    assert _cli(capsys, tmp_path / "root", "catalog", "validate", "--catalog", str(good))[0] == 0
    assert (tmp_path / "root" / "catalog" / "catalog.parquet").exists()
    code, out = _cli(capsys, tmp_path / "root", "catalog", "validate", "--catalog", str(bad))
    assert code == 1 and "no usable product" in out
    assert not (tmp_path / "root" / "catalog" / "catalog.parquet").exists()  # not the earlier file beside a 0-row summary


def test_the_next_run_ends_mlflow_runs_a_killed_promotion_left_running(tmp_path):
    """Killed after gate.json (the run is done) and before its MLflow run ended: the next run ends it FINISHED;
    a run without a gate decision that is still young may be running elsewhere, and stays."""
    from mrnet.config.schema import load_config
    from mrnet.io import tracking
    from mrnet.run.context import start_run

    home = tmp_path / "home"
    cfg = load_config(DEMO, [f"artifact_root={home}"], tiny=True)
    uri = tracking.tracking_uri(cfg, str(home))
    exp = tracking.experiment_id(uri, cfg.tracking.experiment, str(home))
    left = {name: tracking.find_or_create_run(uri, exp, {"mrnet.run_id": name, "mrnet.kind": "parent"}, name)
            for name in ("done", "young")}
    (home / "runs" / "done").mkdir(parents=True)
    (home / "runs" / "done" / "gate.json").write_text('{"promote": true}')
    start_run({"config": DEMO, "tiny": True, "overrides": [f"artifact_root={home}"]}, "next")
    client = tracking.client(uri)
    assert client.get_run(left["done"]).info.status == "FINISHED"
    assert client.get_run(left["young"]).info.status == "RUNNING"
