# MLflow tracking server + model registry: PostgreSQL backend store, artifacts proxied to S3
# (`--serve-artifacts`: clients never need S3 credentials for MLflow's own files).
FROM python:3.11.9-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
COPY constraints.txt /tmp/constraints.txt
RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.11 boto3==1.44.5 -c /tmp/constraints.txt \
    && useradd --uid 50001 --create-home mlflow
USER 50001
EXPOSE 5000
CMD ["sh", "-c", "exec mlflow server --host 0.0.0.0 --port 5000 --workers 2 --backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\" --artifacts-destination \"$MLFLOW_ARTIFACTS_DESTINATION\" --serve-artifacts"]
