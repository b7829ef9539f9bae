"""Airflow ``[core] hostname_callable`` for the native distributed test: each Celery worker
reports the name in $MRNET_WORKER_NAME, so task instances show which worker ran them
(both workers share this machine's hostname)."""

import os
import socket


def name() -> str:
    return os.environ.get("MRNET_WORKER_NAME") or socket.getfqdn()
