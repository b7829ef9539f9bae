"""The Airflow UI plugin (plugins/mrnet_plugin): pages rendered from hand-made data, the plugin as
Airflow loads it, and, on two tiny runs (a champion and a refused challenger), the releases
library, the task → MLflow links and every page through the app. Airflow's own auth on these
routes (401 / 403 / 200) is checked over HTTP in test_airflow_standalone.py."""

import json

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from mrnet.config.schema import load_config
from mrnet.release import history
from mrnet.run import links
from mrnet.run import local
from mrnet_plugin import pages
from tests.helpers import PGS, run_params


def _row(release, **kw):
    return {"release": release, "folder": release, "dag_id": "mrnet_retrain", "mode": "retrain",
            "created": "2026-12-01T02:00:00+00:00", "pgs": ["watches"], "registry_version": "1", "gated": True,
            "promoted": False, "reasons": [], "versus": None, "champion": False, "challenger": False} | kw


def test_releases_page_names_champion_challenger_and_escapes_reasons():
    data = {"champion": "week1", "challenger": "week2", "where": "/x", "rows": [
        _row("week2", challenger=True, versus="week1", reasons=["watches.color: loss 0.9 → 1.2 <script>"]),
        _row("week1", champion=True, promoted=True, reasons=["no champion yet"])]}
    page = pages.releases(data)
    assert page.index("week2") < page.index("week1 <span")  # newest first, as given
    assert 'Champion: <b class="champion">week1</b>' in page and "KEEP CHAMPION</b> vs week1" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert 'href="compare?run=week2"' in page and 'href="evaluation?run=week1"' in page


def test_compare_page_colours_deltas_by_verdict():
    decision = {"promote": False, "reasons": ["watches.color: loss up"], "aggregate": {"champion": 0.9, "challenger": 1.1},
                "rows": [{"pg": "watches", "task": "color", "champion": 0.9, "challenger": 1.2, "delta": 0.3,
                          "verdict": "regressed"},
                         {"pg": "watches", "task": "gender", "champion": 0.8, "challenger": 0.7, "delta": -0.1,
                          "verdict": "improved"}], "evaluation": []}
    page = pages.compare({"challenger": {"release": "b"}, "champion": {"release": "a"}, "decision": decision,
                          "stable": {"watches": 0.5, "mean": 0.5}, "parts": "", "same": False},
                         {"Table 2": "image/table2?run=b"})
    assert "+0.3000" in page and '<span class="bad">regressed</span>' in page and '<span class="good">improved</span>' in page
    assert "KEEP CHAMPION" in page and 'src="image/table2?run=b"' in page and "0.500" in page


def test_plugin_registers_links_views_and_the_app():
    from mrnet_plugin.plugin import MrnetPlugin

    assert {link.name for link in MrnetPlugin.global_operator_extra_links} == {"MLflow run", "Model version"}
    views = {v["url_route"]: v for v in MrnetPlugin.external_views}
    assert views["mrnet-releases"]["href"] == "mrnet/releases" and views["mrnet-releases"]["destination"] == "nav"
    assert views["mrnet-compare"]["destination"] == "dag_run" and "{RUN_ID}" in views["mrnet-compare"]["href"]
    assert MrnetPlugin.fastapi_apps[0]["url_prefix"] == "/mrnet"


def test_pg_of_a_mapped_task_comes_from_its_map_label():
    assert links.pg_of("train_pg", "watches") == "watches"
    assert links.pg_of("embed_shard", "watches/part-00000-of-00002") == "watches"
    assert links.pg_of("evaluate", None) is None and links.pg_of("train_pg", None) is None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, fixture_catalog):
    home = tmp_path_factory.mktemp("ui")
    local.run(run_params(home, fixture_catalog), run_id="week1")
    worse = run_params(home, fixture_catalog)["overrides"] + ["train.lr=1.0", "train.steps_per_epoch=8"]
    local.run(run_params(home, fixture_catalog, overrides=worse), run_id="week2")
    params = run_params(home, fixture_catalog)
    return home, load_config(params["config"], params["overrides"], tiny=True), params


@pytest.mark.slow
def test_history_lists_releases_newest_first_with_the_gate(two_runs):
    home, cfg, _ = two_runs
    data = history.releases(cfg)
    assert [r["release"] for r in data["rows"]] == ["week2", "week1"]
    assert (data["champion"], data["challenger"]) == ("week1", "week2")
    week2 = data["rows"][0]
    assert week2["challenger"] and not week2["promoted"] and week2["versus"] == "week1" and week2["reasons"]
    assert data["rows"][1]["promoted"] and data["rows"][1]["champion"]
    judged = history.comparison(cfg, "week2")
    assert not judged["decision"]["promote"] and {r["pg"] for r in judged["decision"]["rows"]} == set(PGS)
    with pytest.raises(ValueError, match="cannot be a file or folder name"):
        history.comparison(cfg, "../../etc")


@pytest.mark.slow
def test_task_links_point_at_the_pgs_mlflow_run_and_its_registered_version(two_runs):
    home, cfg, _ = two_runs
    run_uri = str(home / "runs" / "week2" / "run.json")
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    routes = links.task_routes(run_uri, "train_pg", "beverages")
    run_id = routes["mlflow_run"].rsplit("/", 1)[1]
    tags = client.get_run(run_id).data.tags
    assert (tags["mrnet.run_id"], tags["mrnet.kind"], tags["mrnet.pg"]) == ("week2", "pg", "beverages")
    name, version = routes["model_version"].split("#/models/")[1].split("/versions/")
    assert client.get_model_version(name, version).tags["release"] == "week2" and name == "mrnet-beverages"
    parent = json.loads((home / "runs" / "week2" / "run.json").read_text())["mlflow"]["parent"]
    assert links.task_routes(run_uri, "report")["mlflow_run"].endswith(parent)
    assert links.task_routes(run_uri, "evaluate")["mlflow_run"] != links.task_routes(run_uri, "report")["mlflow_run"]
    assert "model_version" not in links.task_routes(run_uri, "evaluate")


@pytest.mark.slow
def test_every_page_renders_through_the_app(two_runs, monkeypatch):
    from mrnet_plugin.app import create_app

    home, cfg, params = two_runs
    monkeypatch.setenv("AIRFLOW__MRNET__CONFIG", params["config"])
    monkeypatch.setenv("AIRFLOW__MRNET__CONFIG_OVERRIDES", ";".join(params["overrides"]))
    client = TestClient(create_app(auth=Depends(lambda: None)))
    page = client.get("/releases")
    assert page.status_code == 200 and "week1" in page.text and "week2" in page.text
    compare = client.get("/compare")
    assert compare.status_code == 200 and "KEEP CHAMPION" in compare.text and "Challenger" in compare.text
    for pg in PGS:
        assert f"<td>{pg}</td>" in compare.text
    assert client.get("/image/curves", params={"run": "week2"}).headers["content-type"] == "image/png"
    evaluation = client.get("/evaluation", params={"run": "week1"})
    assert evaluation.status_code == 200 and "Table 2" in evaluation.text and "Skipped tasks" in evaluation.text
    assert client.get("/evaluation", params={"run": "nope"}).status_code == 404
    assert client.get("/image/curves", params={"run": ".."}).status_code == 404  # never a path out of runs/
    assert client.get("/static/mrnet.css").status_code == 200
    assert client.get("/openapi.json").status_code == 404 and client.get("/static/other.css").status_code == 404
    catalog = json.loads((home / "releases" / "current.json").read_text())["catalog"]
    import pandas as pd

    some = pd.read_parquet(catalog, columns=["product_id", "product_group"]).query("product_group == 'watches'")
    good = client.get("/neighbors", params={"id": some["product_id"].iloc[0], "k": "3"})
    assert good.status_code == 200 and good.text.count("<tr>") == 1 + 4  # header, the query, 3 neighbours
    bad = client.get("/neighbors", params={"id": "no-such-product"})
    assert bad.status_code == 400 and "no-such-product" in bad.text and 'class="error"' in bad.text
    titled = client.get("/neighbors", params={"title": "analog watch for men", "pg": "watches", "k": "2"})
    assert titled.status_code == 200 and "nearest to title" in titled.text


def test_task_log_lines_carry_the_mlflow_url_only_with_a_base():
    from mrnet.run.context import run_url

    tracked = {"experiment_id": "7", "ui_url": "http://mlflow.example:5000"}
    assert run_url(tracked, "abc") == ": http://mlflow.example:5000/#/experiments/7/runs/abc"
    assert run_url(tracked | {"ui_url": ""}, "abc") == "" and run_url({"experiment_id": "7"}, "abc") == ""
