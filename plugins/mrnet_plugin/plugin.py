"""The plugin class Airflow loads (entry point ``airflow.plugins``: ``mrnet = mrnet_plugin.plugin:MrnetPlugin``)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mrnet_plugin.app import create_app
from mrnet_plugin.links import MLflowRunLink, ModelVersionLink

PREFIX = "/mrnet"


class MrnetPlugin(AirflowPlugin):
    name = "mrnet"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "mrnet releases"}]
    external_views = [
        {"name": "Releases", "href": "mrnet/releases", "destination": "nav", "url_route": "mrnet-releases"},
        {"name": "mrnet compare", "href": "mrnet/compare?run={RUN_ID}", "destination": "dag_run",
         "url_route": "mrnet-compare"},
    ]
    global_operator_extra_links = [MLflowRunLink(), ModelVersionLink()]
