#!/usr/bin/env bash
# `make airflow`: Airflow standalone (API server + UI, scheduler, DAG processor, triggerer) on
# localhost, with the project's dags/ and SQLite under $AIRFLOW_HOME. Prints the UI address and
# the login once the API server answers; Ctrl-C stops everything.
set -euo pipefail
: "${AIRFLOW_HOME:?run through make airflow}"
port="${AIRFLOW_PORT:-8080}"
# this host only, unless asked (AIRFLOW_HOST=0.0.0.0): standalone's simple auth manager is for development
export AIRFLOW__API__HOST="${AIRFLOW_HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__BASE_URL="http://localhost:$port"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
# the UI plugin (plugins/mrnet_plugin): task links to `make mlflow`'s UI, releases of the demo config
export AIRFLOW__MRNET__MLFLOW_UI_URL="${AIRFLOW__MRNET__MLFLOW_UI_URL:-http://localhost:${MLFLOW_PORT:-5000}}"
log="$AIRFLOW_HOME/standalone.log"
airflow standalone > "$log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null' INT TERM EXIT  # SIGINT: standalone stops its components
echo "starting airflow standalone (log: $log) ..."
for _ in $(seq 1 120); do
  if curl -fsS "http://localhost:$port/api/v2/monitor/health" > /dev/null 2>&1; then
    passwords="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
    echo
    echo "  Airflow UI:  http://localhost:$port"
    echo "  login:       admin / $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$passwords" 2>/dev/null || echo "(see $passwords)")"
    echo "  DAGs:        mrnet_retrain (Trigger → params form), mrnet_refresh_dynamic"
    echo "  releases:    http://localhost:$port/plugin/mrnet-releases  (Browse the champion, compare, neighbours)"
    echo "  MLflow links: $AIRFLOW__MRNET__MLFLOW_UI_URL  (make mlflow serves it)"
    echo
    echo "Ctrl-C stops it."
    wait $pid
    exit $?
  fi
  kill -0 $pid 2>/dev/null || { tail -40 "$log"; exit 1; }
  sleep 1
done
echo "airflow standalone did not answer on port $port within 120 s; see $log" >&2
exit 1
