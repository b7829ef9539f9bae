"""One-shot (compose `mlflow-init`): create mrnet's own MLflow user, as the MLflow admin.

Airflow's tasks log in as MLFLOW_TRACKING_USERNAME (a plain user, not an admin): they own the
experiment and the registered models they create, so only they, and the admin, can move `champion`.
Rerunning it is harmless: an existing user keeps its password."""

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
client = get_app_client("basic-auth", tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "http://mlflow:5000"))
user = os.environ["MRNET_MLFLOW_USERNAME"]
try:
    client.create_user(username=user, password=os.environ["MRNET_MLFLOW_PASSWORD"])
    print(f"MLflow user {user!r} created")
except MlflowException as exc:
    if "already exists" not in str(exc):
        sys.exit(f"mlflow-init: cannot create user {user!r}: {exc}")
    print(f"MLflow user {user!r} exists")
