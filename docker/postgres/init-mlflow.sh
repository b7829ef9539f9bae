#!/bin/sh
# First start of the postgres service: databases for MLflow (runs, registry) and its auth users.
set -eu
for db in "$MLFLOW_DB" "${MLFLOW_DB}_auth"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
