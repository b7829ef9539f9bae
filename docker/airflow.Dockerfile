# mrnet's Airflow image: api-server, scheduler, dag-processor, triggerer and the CPU Celery worker
# of docker-compose.yml. Python packages come from the pinned requirements.txt + constraints.txt lock
# (torch as PyTorch's CPU wheel) plus docker/requirements-deploy.txt (the FAB auth manager).
FROM python:3.11.9-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow MRNET_HOME=/opt/mrnet AIRFLOW__CORE__DAGS_FOLDER=/opt/mrnet/dags
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --create-home --home-dir /opt/airflow airflow
WORKDIR /opt/mrnet
COPY requirements.txt constraints.txt docker/requirements-deploy.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.txt -r requirements-deploy.txt -c constraints.txt
COPY pyproject.toml README.md ./
COPY mrnet ./mrnet
COPY plugins ./plugins
RUN pip install --no-deps . && rm -rf /root/.cache
COPY dags ./dags
COPY configs ./configs
USER 50000
