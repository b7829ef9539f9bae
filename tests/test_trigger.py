"""What a DAG trigger may name (config/trigger.py): settings anywhere, configs under one folder, paths under the
allowed roots; the same rules as the trigger form's JSON-schema pattern and as the run's first task's check."""

import os
import re

import pytest

from mrnet.config.trigger import TriggerPolicy, check_trigger, override_pattern
from mrnet.run.context import start_run
from tests.helpers import REPO

CONFIGS = str(REPO / "configs")
DEMO = str(REPO / "configs" / "demo.yaml")


def _policy(*roots) -> TriggerPolicy:
    return TriggerPolicy(CONFIGS, tuple(str(r) for r in roots))


@pytest.mark.parametrize("item", ["train.lr=0.001", "pgs=[watches]", "gate.tolerance=0.5", "evaluation.folds=3",
                                  "retention.keep_last=4", "data.sample_fraction=0.1", "word2vec.epochs=2",
                                  "crosslingual.epochs=3", "embed.shard_size=1000"])
def test_settings_pass_both_checks(item):
    assert re.match(override_pattern(()), item)
    check_trigger(DEMO, [item], _policy())


@pytest.mark.parametrize("item", [
    "artifact_root=/etc", "data.catalog=/etc/passwd", "data.raw_dir=/", "data.pg_mapping=/etc/x.yaml",
    "crosslingual.pairs=/etc/passwd", "crosslingual.catalog_a=/root/a.parquet",
    "tracking.uri=sqlite:////tmp/x.db", "tracking.enabled=false", "evaluation.tasks=[{kind: file, labels: /etc/x}]",
    "tasks=[]", "data={catalog: /etc/passwd}", "crosslingual={pairs: /etc/passwd}", "train={}", "nonsense=1",
    "artifact_root=s3://other/bucket"])
def test_paths_and_other_keys_refused_without_roots(item):
    assert not re.match(override_pattern(()), item)
    with pytest.raises(ValueError, match="trigger may"):
        check_trigger(DEMO, [item], _policy())


def test_paths_under_an_allowed_root(tmp_path):
    root = tmp_path / "mrnet"
    (root / "data").mkdir(parents=True)
    roots = (str(root), "s3://bucket/prefix")
    pattern = override_pattern(roots)
    good = [f"artifact_root={root}/artifacts", f"data.catalog={root}/data/catalog.parquet", f"data.raw_dir={root}",
            "artifact_root=s3://bucket/prefix/artifacts"]
    bad = ["artifact_root=/etc", f"artifact_root={root}/../etc", f"artifact_root={root}x/a",
           f"data.catalog={root}/./x", "artifact_root=s3://bucket/prefixed", "artifact_root=s3://bucket/prefix/../x",
           "artifact_root=relative/path"]
    for item in good:
        assert re.match(pattern, item), item
        check_trigger(DEMO, [item], _policy(*roots))
    for item in bad:
        assert not re.match(pattern, item), item
    for item in bad[:3] + bad[4:]:
        with pytest.raises(ValueError, match="allowed_roots|absolute"):
            check_trigger(DEMO, [item], _policy(*roots))


def test_a_symlink_out_of_a_root_is_outside(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    item = f"data.catalog={root}/escape/passwd"
    assert re.match(override_pattern((str(root),)), item)  # the schema sees a name; the worker resolves it
    with pytest.raises(ValueError, match="outside \\[mrnet\\] allowed_roots"):
        check_trigger(DEMO, [item], _policy(root))


def test_config_only_under_the_config_folder(tmp_path):
    outside = tmp_path / "demo.yaml"
    outside.write_text((REPO / "configs" / "demo.yaml").read_text())
    with pytest.raises(ValueError, match=r"outside .*config_dir"):
        check_trigger(str(outside), [], _policy())
    with pytest.raises(ValueError, match=r"outside .*config_dir"):
        check_trigger(CONFIGS + "/../configs_elsewhere/x.yaml", [], _policy())
    check_trigger(DEMO, [], _policy())


def test_bad_root_setting_is_named():
    with pytest.raises(ValueError, match="allowed_roots: 'relative' is neither"):
        TriggerPolicy.parse("configs", "/data, relative")
    assert TriggerPolicy.parse("configs", " /data/ , s3://b/p/ ").roots == ("/data", "s3://b/p")


def test_start_run_refuses_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("MRNET_HOME", str(REPO))
    trigger = {"config_dir": "configs", "allowed_roots": ""}
    with pytest.raises(ValueError, match="artifact_root=/etc: a trigger may name a path only under"):
        start_run({"config": "configs/demo.yaml", "overrides": ["artifact_root=/etc"]}, "r1", trigger=trigger)
    assert not (REPO / "artifacts" / "demo" / "runs" / "r1").exists()
    configs = tmp_path / "configs"  # an operator's folder: a config without tracking, extending the demo
    configs.mkdir()
    (configs / "local.yaml").write_text(f"extends: {DEMO}\ntracking: {{enabled: false}}\n")
    trigger = {"config_dir": str(configs), "allowed_roots": str(tmp_path)}
    with pytest.raises(ValueError, match="outside"):
        start_run({"config": "configs/demo.yaml"}, "r2", trigger=trigger)
    uri = start_run({"config": str(configs / "local.yaml"), "tiny": True,
                     "overrides": [f"artifact_root={tmp_path / 'home'}"]}, "r3", trigger=trigger)
    assert uri == f"{tmp_path / 'home'}/runs/r3/run.json"
