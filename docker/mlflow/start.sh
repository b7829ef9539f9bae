#!/bin/sh
# The MLflow server with MLflow's own basic auth (`--app-name basic-auth`). Its user store lives in
# PostgreSQL (MLFLOW_AUTH_DATABASE_URI); the admin comes from MLFLOW_AUTH_ADMIN_USERNAME /
# MLFLOW_AUTH_ADMIN_PASSWORD on first start. Authenticated users read by default; only the owner of a
# resource (the mrnet task user creates the experiment and the registered models) may move an alias.
set -eu
: "${MLFLOW_AUTH_DATABASE_URI:?}" "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 2 \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts
