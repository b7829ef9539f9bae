"""A promotion SIGKILLed at any alias (or before its archived copy or current.json) leaves one champion that
every reader agrees on, and `repair_champion` / `mrnet promote --repair` makes the mirrors follow."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mrnet.io import tracking
from mrnet.release import manifest
from tests.helpers import REPO, tiny_config

pytestmark = pytest.mark.slow  # a subprocess SIGKILLed at every step of a promotion

PARTS = ["watches", "beverages", "automotive", "sparse_ae", "crosslingual_ae"]


def _cfg(home):
    return tiny_config(home, "tracking.enabled=true")


def _release(uri, home, name):
    """Register one version of every part plus the release whose tag names its manifest."""
    exp = tracking.experiment_id(uri, "mrnet", str(home))
    run_id = tracking.find_or_create_run(uri, exp, {"mrnet.run_id": name, "mrnet.kind": "parent"}, name)
    manifest = {"release": name, "models": {}, "registry": {}}
    for part in PARTS:
        source = home / name / part
        source.mkdir(parents=True)
        manifest["registry"][part] = tracking.register(uri, f"mrnet-{part}", str(source), run_id, {"release": name})
        if part in PARTS[:3]:
            manifest["models"][part] = {"uri": str(source / "model.safetensors")}  # no file: no version to check
    path = home / name / "release.json"
    manifest["registry"]["release"] = tracking.register(uri, "mrnet-release", str(home / name), run_id,
                                                        {"release": name, "manifest": str(path)})
    path.write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A store where release `old` is champion and release `new` is registered, not yet promoted."""
    home = tmp_path_factory.mktemp("promo")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    old = _release(uri, home, "old")
    manifest.publish_champion(_cfg(home), str(home), uri, old)
    _release(uri, home, "new")
    return home


KILL = """
import json, os, signal, sys
from mrnet.release import manifest
from mrnet.io import storage
from mrnet.io import tracking
from tests.helpers import tiny_config
home, at = sys.argv[1], sys.argv[2]
calls, real_alias, real_write = [0], tracking.set_alias, storage.write_text
def set_alias(*args):
    calls[0] += 1
    if str(calls[0]) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_alias(*args)
def write_text(uri, text):
    if uri.endswith("/" + at):  # current.json, or the archived copy releases/new.json
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(uri, text)
tracking.set_alias, storage.write_text = set_alias, write_text
manifest.storage.write_text = write_text
new = json.load(open(home + "/new/release.json"))
manifest.publish_champion(tiny_config(home, "tracking.enabled=true"), home, f"sqlite:///{home}/mlflow.db", new)
"""


@pytest.mark.parametrize("at", [str(i) for i in range(1, len(PARTS) + 2)] + ["new.json", "current.json"])
def test_a_promotion_killed_anywhere_leaves_one_champion_and_repair_mirrors_it(history, tmp_path, at):
    from mrnet.cli import champion_model

    home = tmp_path / "home"
    shutil.copytree(history, home)
    for copied in home.glob("*/release.json"):  # the copies' manifests and sources live in the copy
        copied.write_text(copied.read_text().replace(str(history), str(home)))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = tracking.client(uri)
    for v in c.search_model_versions("name = 'mrnet-release'"):
        c.set_model_version_tag("mrnet-release", v.version, "manifest", str(home / v.tags["release"] / "release.json"))
    proc = subprocess.run([sys.executable, "-c", KILL, str(home), at], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    cfg = _cfg(home)
    expected = "new" if at.endswith(".json") else "old"  # calls 1-5: the mirrors; 6: the release pointer
    champion, _ = manifest.manifest_by_alias(cfg, "champion")
    assert champion["release"] == expected
    assert champion_model(cfg, "watches") == str(home / expected / "watches" / "model.safetensors")
    manifest.repair_champion(cfg, str(home), uri)
    for part, version in champion["registry"].items():
        assert str(c.get_model_version_by_alias(f"mrnet-{part}", "champion").version) == version, part
    current = json.loads((home / "releases" / "current.json").read_text())
    assert current["release"] == expected
    # the champion's archived copy exists, so gc keeps it as a rollback target once another run is champion
    assert json.loads((home / "releases" / f"{expected}.json").read_text())["release"] == expected
    assert manifest.repair_champion(cfg, str(home), uri) == []  # nothing left to repair
