"""Static checks of the production stack (this machine has no Docker engine to run it;
tests/test_distributed.py runs the same topology natively): docker-compose.yml, docker/*.Dockerfile,
.env.example and configs/production.yaml."""

import re

import pytest
import yaml

from tests.helpers import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
SECRET = re.compile(r"PASSWORD|SECRET|KEY|_USER$|USERNAME")
ONE_SHOT = {"airflow-init", "minio-init", "mlflow-init"}


def test_every_service_has_a_healthcheck_and_waits_for_what_it_needs():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "mlflow", "minio", "minio-init"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond == {"condition": expected}, (name, dep, cond)
    assert "airflow-init" in services["airflow-scheduler"]["depends_on"]
    assert set(COMPOSE["volumes"]) >= {"postgres-data", "minio-data"}


def test_no_secret_has_a_default_and_env_example_lists_every_variable():
    refs = re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[?-])?([^}]*)\}", COMPOSE_TEXT)  # $${X}: the container's
    names = {name for name, _, _ in refs}
    required = {name for name, op, _ in refs if op == ":?"}
    assert names == required, f"variables never required with :? {sorted(names - required)}"
    assert not [name for name, op, _ in refs if op in (":-", "-")], "a variable has a default"
    example = {line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert names == example, (sorted(names - example), sorted(example - names))
    for line in (REPO / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if not line.startswith("#") and SECRET.search(key) and "USER" not in key:
            assert value == "", f".env.example gives {key} a value"
    env = COMPOSE["x-airflow-env"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")  # not the dev-only simple one
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_the_gpu_worker_listens_only_on_gpu_and_reserves_a_gpu():
    gpu = COMPOSE["services"]["airflow-worker-gpu"]
    command = gpu["command"]
    assert command[:3] == ["airflow", "celery", "worker"]
    assert command[command.index("--queues") + 1] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    cpu = COMPOSE["services"]["airflow-worker"]["command"]
    assert cpu[cpu.index("--queues") + 1] == "default"
    assert COMPOSE["x-airflow-env"]["AIRFLOW__MRNET__GPU_QUEUE"] == "gpu"


def test_images_and_packages_pin_versions_and_run_as_non_root():
    for name, service in COMPOSE["services"].items():
        image = service.get("image", "")
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} not pinned"
    assert DOCKERFILES, "no docker/*.Dockerfile"
    for path in DOCKERFILES:
        text = path.read_text()
        for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
            assert re.search(r":\S*\d", base) and not base.endswith(":latest"), f"{path.name}: FROM {base}"
        for pip in re.findall(r"pip install ([^\n\\]+(?:\\\n[^\n\\]+)*)", text):
            words = [w for w in pip.replace("\\\n", " ").split("&&")[0].split() if not w.startswith("-") and "/" not in w
                     and not w.endswith(".txt") and w not in (".",)]
            assert all("==" in w for w in words), f"{path.name}: unpinned {words}"
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0"), f"{path.name}: runs as root"
    for line in (REPO / "docker" / "requirements-deploy.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^ ]*", line), line


def test_the_build_context_is_small():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" or "*" in ignore  # everything is excluded, then the package is let in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {"mrnet", "dags", "configs", "requirements.txt", "constraints.txt"} <= allowed
    assert not {"artifacts", "tests", ".venv"} & allowed
    for path in DOCKERFILES:
        for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", path.read_text(), re.M):
            for item in src.split():
                assert item.rstrip("/") in allowed, f"{path.name}: COPY {item} is outside the build context"


def test_env_variables_compose_passes_are_the_ones_mrnet_and_the_dags_read():
    env = COMPOSE["x-airflow-env"]
    source = "\n".join(p.read_text() for p in (REPO / "mrnet").rglob("*.py"))
    for key in env:
        if key.startswith("MRNET_") or key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
            assert f'"{key}"' in source or f"'{key}'" in source, f"mrnet never reads {key}"
    settings = set(re.findall(r'setting\("([a-z_]+)"', (REPO / "dags" / "mrnet_common.py").read_text()))
    settings |= set(re.findall(r'setting\("([a-z_]+)"', (REPO / "dags" / "mrnet_retrain.py").read_text()))
    for key in env:
        if key.startswith("AIRFLOW__MRNET__"):
            assert key.removeprefix("AIRFLOW__MRNET__").lower() in settings, f"the DAGs never read {key}"


def test_production_config_writes_to_the_bucket_compose_creates():
    from mrnet.config.schema import load_config

    cfg = load_config(REPO / "configs" / "production.yaml")
    bucket = cfg.artifact_root.removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(COMPOSE["services"]["minio-init"]["entrypoint"])
    assert COMPOSE["services"]["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{bucket}/")
    assert COMPOSE["x-airflow-env"]["AIRFLOW__MRNET__CONFIG"] == "configs/production.yaml"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_install_from_the_lock(path):
    text = path.read_text()
    if "mlflow" in path.name:
        assert "-c /tmp/constraints.txt" in text
    else:
        assert "-r requirements.txt" in text and "-c constraints.txt" in text and "pip install --no-deps ." in text


def test_the_filled_in_env_file_is_never_committed():
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    assert "!.env" not in (REPO / ".dockerignore").read_text().splitlines()  # nor copied into an image


def test_mlflow_needs_a_login_and_nothing_listens_beyond_localhost_by_default():
    """Champion is what embed, neighbours and the gate trust, so MLflow runs its own basic
    auth with an admin from .env, the tasks log in as a user of their own, and every published port
    binds the configured address (127.0.0.1 in .env.example)."""
    mlflow = COMPOSE["services"]["mlflow"]
    start = (REPO / "docker" / "mlflow" / "start.sh").read_text()
    assert "--app-name basic-auth" in start and "default_permission = READ" in start
    assert "Flask-WTF==" in (REPO / "docker" / "mlflow.Dockerfile").read_text()  # mlflow[auth]'s dependency
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_SECRET_KEY:?")
    tasks = COMPOSE["x-airflow-env"]
    assert tasks["MLFLOW_TRACKING_USERNAME"].startswith("${MRNET_MLFLOW_USERNAME:?")
    assert "MLFLOW_ADMIN" not in str(tasks)  # the tasks never hold the admin's credentials
    assert COMPOSE["services"]["airflow-scheduler"]["depends_on"]["mlflow-init"] == {
        "condition": "service_completed_successfully"}
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${MRNET_BIND_ADDRESS:?"), (name, port)
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["MRNET_BIND_ADDRESS"] == "127.0.0.1"
    standalone = (REPO / "scripts" / "airflow_standalone.sh").read_text()
    assert 'AIRFLOW__API__HOST="${AIRFLOW_HOST:-127.0.0.1}"' in standalone
