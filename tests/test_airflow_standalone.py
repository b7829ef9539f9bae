"""`make airflow` for real: airflow standalone (API server, scheduler, DAG processor, LocalExecutor
on SQLite) with this checkout's DAGs, driven through the REST API the UI's trigger form uses.

A bad param is refused with HTTP 400 and a clear message; a good tiny trigger runs to success,
with the PG tasks mapped three ways on the `gpu` pool and queue. The UI plugin is loaded: its
releases page needs Airflow's auth (401 without a token, 403 with a bad one), lists the run, and a PG
task's "MLflow run" link opens that PG's own MLflow run.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import RAW, REPO
from tests.helpers.airflow_api import call, free_port, page, pg_task_links, trigger_and_wait, wait

pytestmark = pytest.mark.slow  # a full stack or several full runs (make test-fast leaves it out)

PGS = ["watches", "beverages", "automotive"]
MLFLOW_UI = "http://mlflow.example:5000"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone")
    port = free_port()
    env = os.environ | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "MRNET_HOME": str(REPO),
        "AIRFLOW__MRNET__RETRAIN_CRON": "0 0 29 2 *",  # no scheduled run of the DAG during the test
        "AIRFLOW__SCHEDULER__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__MRNET__MLFLOW_UI_URL": MLFLOW_UI, "AIRFLOW__MRNET__CONFIG": "configs/demo.yaml",
        "AIRFLOW__MRNET__CONFIG_OVERRIDES": f"artifact_root={home / 'artifacts'}",
        "AIRFLOW__MRNET__ALLOWED_ROOTS": f"{tempfile.gettempdir()},{RAW}",  # the fixture catalog, the home, raw data
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "gpu", "2", "GPU slots"], env=env, capture_output=True, check=True)
    log = open(home / "standalone.log", "w")
    proc = subprocess.Popen([airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        wait("the API server", lambda: True if call(base, "/api/v2/monitor/health")[0] == 200 else None, 240)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        status, body = call(base, "/auth/token", method="POST", body={"username": "admin", "password": password})
        assert status in (200, 201), body
        token = body["access_token"]
        wait("the DAG to be parsed",
              lambda: True if call(base, "/api/v2/dags/mrnet_retrain", token)[0] == 200 else None, 120)
        yield base, token, home
    finally:  # SIGINT is standalone's own shutdown path; then nothing of the group may outlive the test
        os.killpg(proc.pid, signal.SIGINT)  # (standalone did not exit within 60 s of it here: the temp home
        try:                                 # is thrown away, so 10 s of grace, then SIGKILL)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def test_trigger_refuses_bad_params_with_a_clear_message(standalone):
    base, token, _ = standalone
    status, body = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST",
                         {"logical_date": None, "conf": {"epochs": 0}})
    assert status == 400
    assert "Invalid input for param epochs: 0 is less than the minimum of 1" in body["detail"]
    status, body = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST",
                         {"logical_date": None, "conf": {"pgs": "watches"}})
    assert status == 400 and "Invalid input for param pgs" in body["detail"]
    status, body = call(base, "/api/v2/dags/mrnet_retrain/dagRuns", token, "POST",  # a path outside allowed_roots
                         {"logical_date": None, "conf": {"overrides": ["artifact_root=/etc"]}})
    assert status == 400 and "Invalid input for param overrides" in body["detail"], body
    assert "'artifact_root=/etc' does not match" in body["detail"], body


@pytest.fixture(scope="module")
def triggered(standalone, fixture_catalog):
    """One tiny run through the scheduler, into the artifact root the plugin reads."""
    base, token, home = standalone
    conf = {"tiny": True, "pgs": PGS, "overrides": [f"artifact_root={home / 'artifacts'}", f"data.catalog={fixture_catalog}",
                                                    f"data.raw_dir={RAW}", "train.threads=1"]}
    return trigger_and_wait(base, token, conf, 600)


def test_triggered_tiny_run_succeeds_on_the_scheduler(standalone, triggered):
    base, token, home = standalone
    run, state, tis = triggered
    trained = [ti for ti in tis if ti["task_id"] == "train_pg"]
    assert state == "success", (home / "standalone.log").read_text()[-5000:]
    assert sorted(ti["map_index"] for ti in trained) == [0, 1, 2]
    assert {(ti["pool"], ti["queue"], ti["state"]) for ti in trained} == {("gpu", "gpu", "success")}
    shards = {ti["rendered_map_index"] for ti in tis if ti["task_id"] == "embed_shard"}  # named in the UI
    assert "watches/part-00000-of-00003" in shards and len(shards) > len(PGS), shards
    release = json.loads((home / "artifacts" / "releases" / "current.json").read_text())
    assert release["release"] == run["dag_run_id"] and set(release["models"]) == set(PGS)
    assert {ti["rendered_map_index"] for ti in trained} == set(PGS)  # the PG names the mapped task in the UI


def test_plugin_pages_need_airflow_auth_and_list_the_run(standalone, triggered):
    base, token, home = standalone
    run = triggered[0]
    assert page(base, "/mrnet/releases")[0] == 401
    assert page(base, "/mrnet/releases", "not-a-jwt")[0] == 403
    assert page(base, "/mrnet/static/mrnet.css")[0] == 401  # the stylesheet too: every route needs a credential
    assert page(base, "/mrnet/openapi.json", token)[0] == 404  # no schema to serve
    status, listing = page(base, "/mrnet/releases", token)
    assert status == 200, listing
    assert run["dag_run_id"] in listing and 'Champion: <b class="champion">' + run["dag_run_id"] in listing
    status, compared = page(base, "/mrnet/compare?run=" + urllib.parse.quote(run["dag_run_id"], safe=""), token)
    assert status == 200 and "decision: PROMOTE" in compared, compared[-2000:]
    status, plugins = call(base, "/api/v2/plugins", token)
    assert "mrnet" in {p["name"] for p in plugins["plugins"]}


def test_a_pg_tasks_mlflow_link_opens_that_pgs_run(standalone, triggered):
    from mlflow import MlflowClient

    base, token, home = standalone
    run, _, tis = triggered
    client = MlflowClient(f"sqlite:///{home / 'artifacts' / 'mlflow.db'}")
    by_pg = pg_task_links(base, token, run["dag_run_id"], tis)
    assert set(by_pg) == set(PGS)
    for pg, found in by_pg.items():
        assert found["MLflow run"].startswith(MLFLOW_UI + "/#/experiments/"), found
        tags = client.get_run(found["MLflow run"].rsplit("/", 1)[1]).data.tags
        assert (tags["mrnet.pg"], tags["mrnet.run_id"]) == (pg, run["dag_run_id"])
        assert found["Model version"] == f"{MLFLOW_UI}/#/models/mrnet-{pg}/versions/1"
    path = f"/api/v2/dags/mrnet_retrain/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}/taskInstances"
    status, body = call(base, f"{path}/start/links", token)
    assert status == 200 and body["extra_links"]["Model version"] is None and body["extra_links"]["MLflow run"]


def _browser(tmp_path):
    """Headless Debian Chromium through /usr/bin/chromedriver (nothing downloads); .ci/run installs
    both. Without them the test fails on CI (MRNET_REQUIRE_BROWSER=1) and is skipped elsewhere."""
    if not (Path("/usr/bin/chromedriver").exists() and Path("/usr/bin/chromium").exists()):
        if os.environ.get("MRNET_REQUIRE_BROWSER"):
            pytest.fail("MRNET_REQUIRE_BROWSER is set but /usr/bin/chromium or /usr/bin/chromedriver is missing")
        pytest.skip("Debian's chromium + chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_releases_pages_in_a_real_browser(standalone, triggered, tmp_path):
    """Log in as a user does, open the releases page inside the Airflow UI, then compare, evaluation and
    the neighbours form (a good query, a bad one); screenshots under tmp_path (and $MRNET_UI_SCREENSHOTS)."""
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, token, home = standalone
    run = triggered[0]["dag_run_id"]
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    shots = Path(os.environ.get("MRNET_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    driver = _browser(tmp_path)
    wait = WebDriverWait(driver, 90)

    def frame_text():
        return driver.find_element(By.TAG_NAME, "body").text

    try:
        driver.get(base + "/")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "login" not in d.current_url)

        driver.get(base + "/plugin/mrnet-releases")  # the nav entry: the page inside the Airflow UI
        wait.until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.releases")))
        assert f"Champion: {run}" in frame_text() and "PROMOTE" in frame_text()
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "releases.png"))

        driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
        driver.find_element(By.LINK_TEXT, "compare").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.decision")))
        text = frame_text()
        assert "decision: PROMOTE" in text and "(the same release)" in text, text[:2000]  # promoted: now champion
        cells = {td.text for td in driver.find_elements(By.CSS_SELECTOR, "table.num td")}
        assert set(PGS) <= cells, cells
        driver.save_screenshot(str(shots / "compare.png"))

        driver.get(base + "/mrnet/evaluation?run=" + urllib.parse.quote(run, safe=""))
        wait.until(ec.presence_of_element_located((By.TAG_NAME, "h2")))
        assert "Table 2 (relative to TF-IDF-LR)" in frame_text() and "Skipped tasks" in frame_text()
        driver.save_screenshot(str(shots / "evaluation.png"))

        catalog = json.loads((home / "artifacts" / "releases" / "current.json").read_text())["catalog"]
        products = pd.read_parquet(catalog, columns=["product_id", "title", "product_group"])
        query = products[products["product_group"] == "watches"].iloc[0]
        driver.get(base + "/mrnet/neighbors")
        box = wait.until(ec.presence_of_element_located((By.NAME, "id")))
        box.send_keys("no-such-product")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        assert "no-such-product" in wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error"))).text
        box = driver.find_element(By.NAME, "id")
        box.clear()
        box.send_keys(query["product_id"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        table = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.neighbours")))
        shown = table.text
        others = set(products.loc[products["product_group"] == "watches", "title"].str[:30]) - {query["title"][:30]}
        assert any(title in shown for title in others), shown[:1500]  # a neighbour's title, not only the query's
        driver.save_screenshot(str(shots / "neighbors.png"))
    finally:
        driver.quit()
