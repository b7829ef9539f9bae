# MLflow tracking server + model registry: PostgreSQL backend store, artifacts proxied to S3
# (`--serve-artifacts`: clients never need S3 credentials for MLflow's own files).
FROM python:3.11.9-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
COPY constraints.txt /tmp/constraints.txt
RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.11 boto3==1.44.5 Flask-WTF==1.2.2 -c /tmp/constraints.txt \
    && useradd --uid 50001 --create-home mlflow
COPY docker/mlflow/start.sh /opt/mlflow/start.sh
COPY docker/mlflow/init-user.py /opt/mlflow/init-user.py
USER 50001
EXPOSE 5000
# MLflow's basic auth (docker/mlflow/start.sh): nobody moves `champion` without a login
CMD ["/opt/mlflow/start.sh"]
