"""MLflow tracking + registry on the embedded default (SQLite): runs, aliases, the gate's cases,
reattaching on retry, loading by alias, and `mrnet compare`."""

import json
import re
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from mrnet.encoder.model import load_model
from mrnet.evaluation import score as evaluation
from mrnet.io import tracking
from mrnet.run import local
from mrnet.run import stages
from tests.helpers import REPO
from tests.helpers import run_params as _params

pytestmark = pytest.mark.slow  # a full stack or several full runs (make test-fast leaves it out)

PGS = ["watches", "beverages", "automotive"]


def _client(home):
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _alias(home, name, alias):
    return _client(home).get_model_version_by_alias(name, alias)


def _runs(home, **tags):
    c = _client(home)
    exp = c.get_experiment_by_name("mrnet").experiment_id
    query = " and ".join(f"tags.`mrnet.{k}` = '{v}'" for k, v in tags.items())
    return c.search_runs([exp], filter_string=query)


@pytest.fixture(scope="module")
def history(tmp_path_factory, fixture_catalog):
    """first → worse (lr 1.0: diverges) → partial (one PG) → worse downstream evaluation (the
    first run's training, its evaluation metrics lowered by 0.1) → holds (6× the steps; within a
    0.5 per-task tolerance on these 10-product validation splits), one home. Strictly better and
    the other edge cases are in test_gate.py."""
    home = tmp_path_factory.mktemp("registry")
    runs = {}
    runs["first"] = local.run(_params(home, fixture_catalog), run_id="first")
    runs["worse"] = local.run(_params(home, fixture_catalog, overrides=_params(home, fixture_catalog)["overrides"]
                                         + ["train.lr=1.0", "train.steps_per_epoch=8"]), run_id="worse")
    runs["partial"] = local.run(_params(home, fixture_catalog, pgs=["watches"]), run_id="partial")
    lenient = _params(home, fixture_catalog)["overrides"] + ["gate.tolerance=0.5", "gate.aggregate_tolerance=0.5"]
    with pytest.MonkeyPatch.context() as mp:  # a challenger whose downstream metrics are 0.1 worse
        real = evaluation.metrics
        mp.setattr(evaluation, "metrics", lambda result: {k: v - 0.1 if k.startswith("eval.") else v
                                                          for k, v in real(result).items()})
        runs["worse_eval"] = local.run(_params(home, fixture_catalog, overrides=lenient), run_id="worse_eval")
    # these 150-product PGs give noisy downstream metrics between two trainings: not what this run tests
    better = _params(home, fixture_catalog)["overrides"] + ["train.steps_per_epoch=12", "gate.tolerance=0.5",
                                                            "gate.eval_tolerance=1.0"]
    runs["better"] = local.run(_params(home, fixture_catalog, overrides=better), run_id="better")
    with pytest.raises(RuntimeError, match=r"PG\(s\) failed: \['jewellery'\]"):
        local.run(_params(home, fixture_catalog, pgs=["watches", "jewellery"]), run_id="failed")
    return home, runs


def _gate(home, run_id):
    return json.loads((home / "runs" / run_id / "gate.json").read_text())


def test_first_model_becomes_champion(history):
    home, _ = history
    assert _gate(home, "first")["promote"] is True
    assert "first complete release" in _gate(home, "first")["reasons"][0]


def test_worse_and_partial_never_move_the_champion(history):
    home, _ = history
    worse, partial = _gate(home, "worse"), _gate(home, "partial")
    assert worse["promote"] is False and worse["champion"] == "first"
    assert any("aggregate loss" in r or "tolerance" in r for r in worse["reasons"])
    assert partial["promote"] is False and "partial: PGs ['automotive', 'beverages']" in partial["reasons"][0]
    assert 0.0 <= worse["knn_overlap_at_10"]["mean"] <= 1.0


def test_a_worse_downstream_evaluation_never_moves_the_champion(history):
    home, _ = history
    gate = _gate(home, "worse_eval")
    assert gate["promote"] is False and gate["champion"] == "first"
    assert gate["reasons"] and all(r.startswith("eval.") and "fell by 0.1000 > eval_tolerance 0.02" in r
                                   for r in gate["reasons"])
    assert {r["verdict"] for r in gate["rows"]} <= {"held", "improved"}  # the losses alone would pass
    gated = json.loads((home / "runs" / "worse_eval" / "release.json").read_text())["evaluation"]["gated"]
    assert gated and all(k.split(".")[2] in ("agnostic", "pg") for k in gated)
    assert "downstream metric" in (home / "runs" / "worse_eval" / "compare.txt").read_text()


def test_a_failed_run_registers_nothing_and_moves_no_alias(history):
    home, _ = history
    (parent,) = _runs(home, run_id="failed", kind="parent")
    assert parent.info.status == "FAILED" and "mrnet.gate" not in parent.data.tags
    assert not (home / "runs" / "failed" / "release.json").exists()
    assert _alias(home, "mrnet-release", "champion").tags["release"] == "better"
    assert _alias(home, "mrnet-watches", "challenger").tags["release"] == "better"


def test_a_release_that_holds_is_promoted_and_aliases_follow(history):
    home, _ = history
    assert _gate(home, "better")["promote"] is True and _gate(home, "better")["champion"] == "first"
    release_champion = _alias(home, "mrnet-release", "champion")
    assert release_champion.tags["release"] == "better"
    assert _alias(home, "mrnet-release", "challenger").tags["release"] == "better"
    for pg in PGS:
        assert _alias(home, f"mrnet-{pg}", "champion").tags["release"] == "better"
    assert json.loads((home / "releases" / "current.json").read_text())["release"] == "better"


def test_challenger_moves_on_every_successful_run_champion_only_through_the_gate(history):
    home, _ = history
    c = _client(home)
    versions = {v.tags["release"]: c.get_model_version("mrnet-watches", v.version)
                for v in c.search_model_versions("name = 'mrnet-watches'")}
    assert set(versions) == {"first", "worse", "partial", "worse_eval", "better"}
    assert set(versions["better"].aliases) == {"champion", "challenger"}
    assert versions["worse"].aliases == [] and versions["first"].aliases == [] and versions["worse_eval"].aliases == []


def test_parent_and_nested_runs_are_tagged_and_logged(history):
    home, _ = history
    (parent,) = _runs(home, run_id="better", kind="parent")
    tags = parent.data.tags
    assert parent.info.run_name == "better" and parent.info.status == "FINISHED"
    assert {"mrnet.dag_id", "mrnet.git_commit", "mrnet.config_hash", "mrnet.catalog_hash"} <= set(tags)
    assert tags["mrnet.gate"] == "promoted" and parent.data.params["train.steps_per_epoch"] == "12"
    pg_runs = _runs(home, run_id="better", kind="pg")
    assert sorted(r.data.tags["mrnet.pg"] for r in pg_runs) == sorted(PGS)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in pg_runs)
    watches = next(r for r in pg_runs if r.data.tags["mrnet.pg"] == "watches")
    # every task the PG's 10-product validation split has labels for (which ones depends on the hash split)
    val = json.loads((home / "runs" / "better" / "models" / "watches" / "metrics.json").read_text())["history"][-1]["val"]
    logged = {f"val.{task}.{name}" for task, values in val.items() for name in values if name != "n"}
    assert len(val) >= 3 and any(name.endswith(".accuracy") for name in logged)
    assert logged | {"val_loss_mean", "titles_per_s", "train_seconds", "embed_seconds"} <= set(watches.data.metrics)
    c = _client(home)
    assert {a.path for a in c.list_artifacts(watches.info.run_id, "model")} == {"model/model.safetensors",
                                                                                "model/metrics.json"}
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "summary")} >= {"summary/training_curves.png"}
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "gate")} == {"gate/decision.json", "gate/compare.txt"}
    stages = {r.data.tags["mrnet.stage"]: r.info.run_id for r in _runs(home, run_id="better", kind="stage")}
    assert set(stages) == {"validate", "corpus", "word2vec", "sparse_autoencoder", "agnostic_embeddings",
                           "cross_language_autoencoder", "evaluate", "index"}
    ev = c.get_run(stages["evaluate"]).data.metrics
    assert {"eval.ingestible.agnostic.lr", "eval.ingestible.tfidf.rf", "eval.seconds", "seconds"} <= set(ev)
    assert {"evaluation/report.md", "evaluation/table2.csv", "evaluation/table2.png", "evaluation/neighbors.html",
            "evaluation/metrics.json", "evaluation/results.csv"} == {
        a.path for a in c.list_artifacts(stages["evaluate"], "evaluation")}
    assert "eval.ingestible.agnostic.lr" in parent.data.metrics  # on the retrain's own run too
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "evaluation")} == {
        "evaluation/report.md", "evaluation/table2.png"}
    sae = c.get_run(stages["sparse_autoencoder"]).data.metrics
    assert {"train_loss", "val.recon_rel", "val.kl", "val.mean_activation", "n_train", "seconds"} <= set(sae)
    assert "products" in c.get_run(stages["agnostic_embeddings"]).data.metrics
    assert [m.step for m in c.get_metric_history(stages["sparse_autoencoder"], "val.recon_rel")] == [1, 2]  # tiny: 2 epochs
    assert {a.path for a in c.list_artifacts(stages["sparse_autoencoder"], "model")} == {
        "model/sparse_ae.safetensors", "model/metrics.json"}
    xl = c.get_run(stages["cross_language_autoencoder"]).data.metrics
    assert {f"retrieval.{m}.mrr" for m in ("random", "autoencoder", "least_squares", "procrustes")} <= set(xl)
    assert {a.path for a in c.list_artifacts(stages["cross_language_autoencoder"], "report")} == {
        "report/report.md", "report/metrics.json", "report/retrieval.png"}
    for part in ("sparse_ae", "crosslingual_ae"):  # registered with the release, champion with it
        version = c.get_model_version_by_alias(f"mrnet-{part}", "champion")
        assert version.run_id == stages["sparse_autoencoder" if part == "sparse_ae" else "cross_language_autoencoder"]
    assert {a.path for a in c.list_artifacts(stages["word2vec"], "word2vec")} == {"word2vec/vectors.bin",
                                                                                 "word2vec/vocab.txt", "word2vec/health.json"}
    assert {a.path for a in c.list_artifacts(stages["validate"], "catalog")} == {"catalog/quarantine_summary.json"}


def test_models_load_by_alias_without_unpickling(history):
    home, runs = history
    uri = f"sqlite:///{home / 'mlflow.db'}"
    path = tracking.resolve_model(uri, "models:/mrnet-watches@champion")
    model, meta = load_model(path)
    assert meta["pg"] == "watches"
    champion = json.loads((home / "releases" / "current.json").read_text())
    from mrnet.encoder.embed import model_version

    assert model_version(path) == champion["models"]["watches"]["version"]
    with pytest.raises(ValueError, match="expected models:/<name>@<alias>"):
        tracking.resolve_model(uri, "mrnet-watches")


def test_a_retried_task_reattaches_to_its_mlflow_run(tmp_path, fixture_catalog):
    params = _params(tmp_path, fixture_catalog, pgs=["watches"])
    run_uri = stages.start_run(params, "retry")
    assert stages.start_run(params, "retry") == run_uri  # a retried start
    catalog = stages.validate(run_uri)
    vectors = stages.word2vec(run_uri, stages.corpus(run_uri, catalog))
    stages.plan(run_uri)
    stages.train(run_uri, "watches", catalog, vectors)
    stages.train(run_uri, "watches", catalog, vectors)  # a retried train_pg
    assert len(_runs(tmp_path, run_id="retry", kind="parent")) == 1
    assert len(_runs(tmp_path, run_id="retry", kind="pg")) == 1
    stages.promote(run_uri, stages.publish(run_uri, stages.report(run_uri, stages.embed_all(
        run_uri, str(tmp_path / "runs" / "retry" / "models" / "watches" / "model.safetensors"), catalog))))
    versions = _client(tmp_path).search_model_versions("name = 'mrnet-watches'")
    stages.publish(run_uri, str(tmp_path / "runs" / "retry" / "summary.json"))  # a retried publish
    assert len(_client(tmp_path).search_model_versions("name = 'mrnet-watches'")) == len(versions) == 1


def test_mrnet_compare_prints_champion_vs_challenger(history):
    home, _ = history
    out = subprocess.run([sys.executable, "-m", "mrnet", "compare", "--set", f"artifact_root={home}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "challenger: better (version 5)" in out.stdout and "(the same release)" in out.stdout
    assert "eval.ingestible.agnostic.lr" in out.stdout  # downstream metrics side by side
    assert re.search(r"^watches +(color|gender|subcategory|item_type|price|tfidf) ", out.stdout, re.M)  # per-PG rows
    assert "decision: PROMOTE" in out.stdout
