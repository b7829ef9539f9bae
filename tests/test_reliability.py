"""No name climbs out of the artifact root, and config errors are one line naming the value."""

import pytest

from mrnet.config.base import check_segment, is_segment, safe_run_id
from mrnet.config.schema import load_config
from mrnet.io import storage
from mrnet.run import context
from mrnet.run import stages
from tests.helpers import REPO

ESCAPES = ["..", ".", "../../../../escaped_pg", "a/../b", "/etc", "", ".hidden"]


@pytest.mark.parametrize("name", ESCAPES)
def test_unsafe_segments_are_refused_by_name(name):
    assert not is_segment(name)
    with pytest.raises(ValueError, match="cannot be a file or folder name"):
        check_segment(name, "PG")


def test_run_ids_never_leave_the_runs_folder():
    assert safe_run_id("manual__2026-12-02T00:54:08.058830+00:00") == "manual__2026-12-02T00_54_08.058830_00_00"
    for bad in ("..", ".", "a/../b", "x/.."):
        with pytest.raises(ValueError, match="run id"):
            safe_run_id(bad)


@pytest.mark.parametrize("override, where", [
    ("pgs=[../../../../escaped_pg]", "pgs"),
    ("data.product_group=..", "data.product_group"),
    ("tasks=[{name: ../t, kind: binary, column: x}]", "tasks.0.name"),
    ("crosslingual.locale_b=../fr", "crosslingual.locale_b"),
])
def test_config_refuses_names_that_become_paths(override, where):
    with pytest.raises(ValueError) as err:
        load_config(REPO / "configs" / "demo.yaml", [override])
    message = str(err.value)
    assert "\n" not in message and where in message and "cannot be a file or folder name" in message


def test_a_custom_pg_mapping_with_an_escaping_pg_is_refused(tmp_path):
    from mrnet.data.demo import load_pg_mapping

    mapping = tmp_path / "pgs.yaml"
    mapping.write_text("pgs:\n  ../../../../escaped_pg:\n    - 'flipkart: Watches'\n")
    with pytest.raises(ValueError, match=r"pgs.yaml: PG '\.\./\.\./\.\./\.\./escaped_pg' cannot be"):
        load_pg_mapping(mapping)


def test_config_errors_are_one_line_with_the_value():
    with pytest.raises(ValueError) as err:
        load_config(REPO / "configs" / "demo.yaml", ["train.epochs=-1"])
    assert str(err.value) == ("invalid config " + str(REPO / "configs" / "demo.yaml")
                              + ": train.epochs: Input should be greater than or equal to 1 (got -1)")


def test_an_empty_pg_list_is_an_error_not_every_pg():
    """``--set "pgs=[]"`` once trained all 23 PGs (an empty list read as "no filter")."""
    with pytest.raises(ValueError, match=r"pgs is an empty list: name at least one PG, or leave pgs out"):
        load_config(REPO / "configs" / "demo.yaml", ["pgs=[]"])
    assert load_config(REPO / "configs" / "demo.yaml", ["pgs=[watches]"]).pgs == ["watches"]


def test_a_run_refuses_file_names_that_climb_out(tmp_path):
    run = context.Run(uri="", run_id="r", dag_id="d", mode="retrain", home=str(tmp_path),
                   root=str(tmp_path / "runs" / "r"), promote=False, started=0.0, cfg=None, mlflow=None)
    assert run.path("embeddings", "watches/part-00000-of-00001.parquet").endswith("watches/part-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="'..'"):
        run.path("models", "../../../../escaped_pg", "model.safetensors")


def test_artifacts_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        storage.write_text(str(tmp_path / "releases" / "current.json"), "{}")
        assert (tmp_path / "releases" / "current.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        storage.write_text(str(tmp_path / "private.json"), "{}")
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_required_columns_must_be_text_in_parquet_integer_ids_read_as_text(tmp_path):
    """An integer id column (BigBasket's ``index`` as Parquet) reads as its exact text; a float id or a number
    where a title belongs is refused, since its text would not be what was meant."""
    import pandas as pd

    from mrnet.data.catalog import CatalogError
    from mrnet.data.merge import validate_catalog

    rows = {"product_id": [1, 2], "product_group": ["watches"] * 2, "source": ["s"] * 2, "locale": ["en"] * 2,
            "title": ["Analog watch", "Digital watch"]}
    pd.DataFrame(rows).to_parquet(tmp_path / "ints.parquet")
    clean, summary = validate_catalog(str(tmp_path / "ints.parquet"), str(tmp_path / "out0"), None, [], 512)
    assert pd.read_parquet(clean)["product_id"].tolist() == ["1", "2"] and summary["rows_clean"] == 2
    pd.DataFrame(rows | {"product_id": [1.0, 2.0]}).to_parquet(tmp_path / "floats.parquet")
    with pytest.raises(CatalogError, match=r"floats.parquet: required column 'product_id' is float64, not text"):
        validate_catalog(str(tmp_path / "floats.parquet"), str(tmp_path / "out"), None, [], 512)
    pd.DataFrame(rows | {"product_id": ["a", "b"]}).to_parquet(tmp_path / "text.parquet")
    _, summary = validate_catalog(str(tmp_path / "text.parquet"), str(tmp_path / "out2"), None, [], 512)
    assert summary["rows_clean"] == 2


def test_an_empty_clean_catalog_fails_validation_and_leaves_no_catalog(tmp_path):
    from mrnet.data.catalog import CatalogError
    from mrnet.data.merge import validate_catalog

    header = "product_id,product_group,source,locale,title\n"
    (tmp_path / "header.csv").write_text(header)
    (tmp_path / "bad.csv").write_text(header + "p1,watches,s,en,\n,watches,s,en,Analog watch\n")
    with pytest.raises(CatalogError, match=r"header.csv: no usable product: it has no rows"):
        validate_catalog(str(tmp_path / "header.csv"), str(tmp_path / "a"), None, [], 512)
    with pytest.raises(CatalogError, match=r"bad.csv: no usable product: all 2 quarantined \(.*empty_title"):
        validate_catalog(str(tmp_path / "bad.csv"), str(tmp_path / "b"), None, [], 512)
    assert not (tmp_path / "b" / "catalog.parquet").exists() and (tmp_path / "b" / "quarantine.parquet").exists()


def test_a_csv_row_with_extra_fields_is_quarantined_with_its_line(tmp_path):
    import pandas as pd

    from mrnet.data.merge import validate_catalog

    (tmp_path / "c.csv").write_text("product_id,product_group,source,locale,title\n"
                                    "p1,watches,s,en,Analog watch\n"
                                    "p2,watches,s,en,Digital watch,extra\n"
                                    'p3,watches,s,en,"Two\nlines"\n'
                                    "p4,watches,s,en,Sports watch,x,y\n"
                                    ",watches,s,en,No id\n")
    uri, summary = validate_catalog(str(tmp_path / "c.csv"), str(tmp_path / "out"), None, [], 512)
    assert summary["rows_in"] == 5 and summary["by_reason"] == {"bad_row": 2, "missing_product_id": 1}
    q = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert list(q["row"]) == [2, 4, 5]  # data rows of the file: the unparsed ones and the one without an id
    assert q.loc[0, "raw"] == "p2,watches,s,en,Digital watch,extra" and "saw 6" in q.loc[0, "reason"]
    assert list(pd.read_parquet(uri)["product_id"]) == ["p1", "p3"]


def _cli_error(capsys, *argv) -> str:
    from mrnet.cli import main

    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mrnet: error: "), err  # one line, no traceback
    return err


def test_bad_inputs_are_one_line_cli_errors_naming_the_file(tmp_path, capsys):
    import gzip

    root = f"--set=artifact_root={tmp_path / 'root'}"
    (tmp_path / "adir").mkdir()
    good = "product_id,product_group,source,locale,title\n" + "".join(f"p{i},watches,s,en,Watch {i}\n" for i in range(500))
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(good.encode())[:200])
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1\n")
    (tmp_path / "empty.csv").write_text("")
    demo = str(REPO / "configs" / "demo.yaml")
    cases = [
        (["catalog", "validate", "--config", demo, root, "--catalog", str(tmp_path / "adir")], "adir: a folder with no catalog file"),
        (["catalog", "validate", "--config", demo, root, "--catalog", str(tmp_path / "cut.csv.gz")], "cut.csv.gz: cannot read"),
        (["catalog", "validate", "--config", demo, root, "--catalog", str(tmp_path / "empty.csv")], "empty.csv: the file is empty"),
        (["summary", "--config", str(tmp_path / "bad.yaml")], "bad.yaml is not valid YAML"),
        (["summary", "--config", demo, "--set", "train.epochs=[1"], "'train.epochs=[1': its value is not valid YAML"),
        (["summary", "--config", str(tmp_path)], "is a directory: give a YAML file"),
    ]
    for argv, expected in cases:
        assert expected in _cli_error(capsys, *argv), argv


def test_a_permission_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from mrnet.run import steps

    def refuse(cfg, source):
        raise PermissionError(13, "Permission denied", str(tmp_path / "root" / "catalog" / "catalog.parquet"))

    monkeypatch.setattr(steps, "validate_step", refuse)
    err = _cli_error(capsys, "catalog", "validate", "--config", str(REPO / "configs" / "demo.yaml"),
                     "--catalog", "x.csv")
    assert err.strip() == f"mrnet: error: Permission denied: {tmp_path / 'root' / 'catalog' / 'catalog.parquet'}"


def test_embed_titles_without_extension_writesbeside_the_file():
    from mrnet.cli import beside

    assert beside("/data/dot.d/titles", ".emb.parquet") == "/data/dot.d/titles.emb.parquet"
    assert beside("/data/dot.d/titles.csv", ".emb.parquet") == "/data/dot.d/titles.emb.parquet"
    assert beside("s3://bucket/new.csv", ".emb.parquet") == "s3://bucket/new.emb.parquet"
    assert beside("titles", ".emb.parquet") == "titles.emb.parquet"


def test_every_count_size_and_fraction_in_the_config_has_bounds():
    """Walk the typed config: every int / float field carries a lower bound (annotated_types Ge/Gt).
    The exceptions: values in data units (a task's label threshold, a rule's 0/1 label), and
    the int-or-'auto' fields of word2vec and train.batch_size, which their model validators bound (checked below)."""
    import typing

    import annotated_types
    from pydantic import BaseModel

    from mrnet.config.schema import Config

    values = {("TaskSpec", "threshold"), ("LabelRule", "label"), ("Word2VecConfig", "min_count"),
              ("Word2VecConfig", "epochs"), ("TrainConfig", "batch_size")}
    unbounded, seen = [], set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            kinds = set(typing.get_args(field.annotation)) | {field.annotation}
            for kind in kinds:
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    walk(kind)
                for inner in typing.get_args(kind):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        walk(inner)
            numeric = kinds & {int, float} and bool not in kinds
            bounded = any(isinstance(m, (annotated_types.Ge, annotated_types.Gt)) for m in field.metadata)
            if numeric and not bounded and (model.__name__, name) not in values:
                unbounded.append(f"{model.__name__}.{name}")

    walk(Config)
    assert len(seen) > 10 and not unbounded, unbounded
    for override in ("word2vec.epochs=0", "word2vec.min_count=-3", "train.batch_size=0"):
        with pytest.raises(ValueError, match="must be 'auto' or an integer"):
            load_config(REPO / "configs" / "demo.yaml", [override])


@pytest.mark.slow
def test_a_pg_below_the_minimum_is_skipped_with_a_reason_not_a_crash(tmp_path, fixture_catalog):
    import json

    import pandas as pd

    from tests.helpers import run_params as _params

    df = pd.read_parquet(fixture_catalog)
    one = pd.concat([df[df.product_group != "automotive"], df[df.product_group == "automotive"].head(1)])
    one.to_parquet(tmp_path / "one.parquet", index=False)
    run_uri = stages.start_run(_params(tmp_path / "home", tmp_path / "one.parquet") | {
        "overrides": _params(tmp_path / "home", tmp_path / "one.parquet")["overrides"] + ["tracking.enabled=false"]},
        "tinypg", mode="retrain")
    assert stages.plan(run_uri, stages.validate(run_uri)) == ["watches", "beverages"]
    plan = json.loads((tmp_path / "home" / "runs" / "tinypg" / "stages" / "plan.json").read_text())
    assert plan["skipped"] == {"automotive": "1 validated products, fewer than train.min_products=50"}


@pytest.mark.slow
def test_a_failed_or_killed_cli_run_leaves_no_mlflow_run_running(tmp_path, fixture_catalog, monkeypatch):
    """The empty-catalog failure ends the parent run FAILED; a rerun of a SIGKILLed run id marks the
    earlier attempt's open runs KILLED; `--resume` finds the run that never reached the gate."""
    from mlflow import MlflowClient

    from mrnet.io import tracking
    from mrnet.run import local
    from tests.helpers import run_params as _params

    home = tmp_path / "home"
    (tmp_path / "empty.csv").write_text("product_id,product_group,source,locale,title\n")
    with pytest.raises(ValueError, match="no usable product"):
        local.run(_params(home, tmp_path / "empty.csv"), run_id="empty")
    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = c.get_experiment_by_name("mrnet").experiment_id
    statuses = {r.data.tags["mrnet.kind"] + ":" + r.data.tags.get("mrnet.stage", ""): r.info.status
                for r in c.search_runs([exp], "tags.`mrnet.run_id` = 'empty'")}
    assert statuses and "RUNNING" not in statuses.values() and statuses["parent:"] == "FAILED", statuses
    # a SIGKILLed attempt cannot end its runs: the next attempt of the same id does
    uri = f"sqlite:///{home / 'mlflow.db'}"
    orphan = tracking.find_or_create_run(uri, exp, {"mrnet.run_id": "killed", "mrnet.kind": "stage",
                                                    "mrnet.stage": "corpus"}, "stage:corpus")
    monkeypatch.setattr(local, "_stages", lambda run_uri, mode: {"stopped": True})
    local.run(_params(home, fixture_catalog), run_id="killed")
    assert c.get_run(orphan).info.status == "KILLED"
    assert context.unfinished_run(str(home))[0] == "killed"  # no gate.json: `mrnet run --resume` continues it


def test_two_first_runs_on_a_fresh_root_both_get_a_migrated_store(tmp_path):
    """Two processes open a store that does not exist yet: the file lock lets one create and migrate it
    (MLflow's SQLite migration is not safe to run twice at once: `duplicate column name: step`)."""
    import subprocess
    import sys

    code = ("import sys; from mrnet.io import tracking; uri = sys.argv[1]; "
            "print(tracking.experiment_id(uri, 'mrnet', sys.argv[2]))")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    assert outs[0][0].strip() == outs[1][0].strip()  # one experiment, found by both


def test_mrnet_run_resume_continues_the_newest_unfinished_run(tmp_path, capsys, monkeypatch):
    import json

    from mrnet.run import local

    demo = str(REPO / "configs" / "demo.yaml")
    home = tmp_path / "home"
    assert "nothing to resume" in _cli_error(capsys, "run", "--resume", "--config", demo, f"--set=artifact_root={home}")
    for name, started, done in (("old", 1.0, False), ("done", 3.0, True), ("new", 2.0, False)):
        folder = home / "runs" / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"run_id": name, "started": started, "params": {"tiny": name}}))
        if done:
            (folder / "gate.json").write_text("{}")
    seen = []
    monkeypatch.setattr(local, "run", lambda params, run_id, mode: seen.append((params, run_id, mode)) or
                        {"run_id": run_id, "artifact_root": str(home / "runs" / run_id)})
    from mrnet.cli import main

    assert main(["run", "--resume", "--config", demo, f"--set=artifact_root={home}"]) == 0
    assert seen == [({"tiny": "new"}, "new", "retrain")]  # the newest without gate.json, with its own params


def test_readers_on_a_mistyped_root_create_no_store_and_an_unknown_pg_lists_the_known(tmp_path, capsys, monkeypatch):
    from mrnet.cli import champion_model
    from mrnet.release import manifest

    demo = str(REPO / "configs" / "demo.yaml")
    wrong = tmp_path / "typo"
    assert "no MLflow tracking store at" in _cli_error(capsys, "compare", "--config", demo, f"--set=artifact_root={wrong}")
    assert "no MLflow tracking store at" in _cli_error(capsys, "embed", "--pg", "watches", "--titles", "x.csv",
                                                       "--config", demo, f"--set=artifact_root={wrong}")
    assert not wrong.exists()
    monkeypatch.setattr(manifest, "manifest_by_alias", lambda cfg, alias: (
        {"release": "r1", "models": {"watches": {"uri": "/m/watches.safetensors"}, "footwear": {"uri": "/m/f"}}}, "here"))
    cfg = load_config(demo)
    assert champion_model(cfg, "watches") == "/m/watches.safetensors"
    with pytest.raises(ValueError, match=r"unknown PG 'NOPE': champion release r1 has \['footwear', 'watches'\]"):
        champion_model(cfg, "NOPE")
