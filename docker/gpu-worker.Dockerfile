# GPU Celery worker: the same mrnet and DAGs as airflow.Dockerfile on a CUDA base, with PyTorch's
# CUDA build of the pinned torch. It takes only the `gpu` queue (PG train/embed, autoencoders);
# docker-compose.yml reserves an NVIDIA GPU for it (nvidia-container-toolkit on the host).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG TORCH_CUDA=cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow MRNET_HOME=/opt/mrnet AIRFLOW__CORE__DAGS_FOLDER=/opt/mrnet/dags \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && useradd --uid 50000 --gid 0 --create-home --home-dir /opt/airflow airflow
WORKDIR /opt/mrnet
COPY requirements.txt constraints.txt docker/requirements-deploy.txt ./
# torch==2.13.0 from requirements.txt, as the CUDA build (2.13.0+cu128 satisfies the pin)
RUN pip install --extra-index-url https://download.pytorch.org/whl/${TORCH_CUDA} \
        -r requirements.txt -r requirements-deploy.txt -c constraints.txt
COPY pyproject.toml README.md ./
COPY mrnet ./mrnet
COPY plugins ./plugins
RUN pip install --no-deps .
COPY dags ./dags
COPY configs ./configs
USER 50000
CMD ["airflow", "celery", "worker", "--queues", "gpu"]
