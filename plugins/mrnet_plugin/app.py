"""The releases app: a FastAPI app the plugin mounts at ``/mrnet`` in Airflow's API server.

Pages (plugins/mrnet_plugin/pages.py renders them):
- ``releases``: every release, newest first, champion and challenger named, the gate's decision;
- ``compare?run=``: a release (default: the challenger) vs the champion, as ``mrnet compare``;
- ``evaluation?run=``: Table 2, absolute metrics, skipped tasks; ``evaluation/neighbors?run=``;
- ``neighbors?id=`` or ``?title=&pg=``: k nearest products in the champion release;
- ``image/{which}?run=``: a run's PNG (``table2``, ``curves``); ``static/mrnet.css``.

Access: FastAPI plugin routes are not protected by Airflow on their own. Every route here
depends on Airflow's auth manager (``requires_access_dag`` for GET on the mrnet DAGs): the UI's
session cookie or an ``Authorization: Bearer`` token; none → 401, an invalid one → 403, a user
without read access to ``mrnet_retrain`` → 403. That includes the stylesheet (a route, not a mounted
folder: a mount would skip the app's dependencies), and there is no ``openapi.json`` or docs page.

The config (artifact root, tracking) is ``[mrnet] config`` (as the DAGs' default param) plus
``[mrnet] config_overrides`` (``key=value`` separated by ``;``, as ``--set``). mrnet is imported
inside the handlers only, so the scheduler and DAG processor never pay for it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from urllib.parse import quote

from fastapi import Depends, FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, Response

from mrnet_plugin import pages

STATIC = Path(__file__).parent / "static"
READ_DAG = "mrnet_retrain"


def _auth_dependency():
    """Airflow's own check: an authenticated user allowed to read the mrnet DAGs."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return Depends(requires_access_dag("GET", param_dag_id=READ_DAG))


def settings() -> tuple[str, list[str]]:
    from airflow.configuration import conf

    path = conf.get("mrnet", "config", fallback="configs/demo.yaml")
    raw = conf.get("mrnet", "config_overrides", fallback="") or ""
    return path, [item.strip() for item in raw.split(";") if item.strip()]


@functools.lru_cache(maxsize=4)
def _config(path: str, overrides: tuple[str, ...]):
    from mrnet.config.schema import load_config
    from mrnet.io import storage

    return load_config(storage.absolute(path), list(overrides))


def config():
    path, overrides = settings()
    return _config(path, tuple(overrides))


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def create_app(auth=None) -> FastAPI:
    """The app; ``auth``: a FastAPI dependency in place of Airflow's (tests of the pages alone)."""
    app = FastAPI(title="mrnet releases", dependencies=[auth or _auth_dependency()], docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/static/mrnet.css")
    def stylesheet():
        return FileResponse(STATIC / "mrnet.css", media_type="text/css")

    @app.get("/releases", response_class=HTMLResponse)
    def releases_page():
        from mrnet.release import history

        return html(pages.releases(history.releases(config())))

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(run: str | None = Query(None, max_length=250)):
        from mrnet.release import history

        try:
            data = history.comparison(config(), run or None)
        except (FileNotFoundError, ValueError) as exc:
            return html(pages.error_page("Compare", str(exc), "compare"), 404)
        release = data["challenger"]["release"]
        images = {label: f"image/{which}?run={quote(release, safe='')}"
                  for label, which in (("Table 2", "table2"), ("Training curves", "curves"))
                  if history.image(config(), release, which) is not None}
        return html(pages.compare(data, images))

    @app.get("/evaluation", response_class=HTMLResponse)
    def evaluation_page(run: str = Query(..., max_length=250)):
        from mrnet.release import history

        try:
            data = history.evaluation(config(), run)
        except ValueError as exc:
            return html(pages.error_page("Evaluation", str(exc), "releases"), 404)
        images = {"Table 2": f"image/table2?run={quote(run, safe='')}"} if data else {}
        return html(pages.evaluation(run, data, images), 200 if data else 404)

    @app.get("/evaluation/neighbors", response_class=HTMLResponse)
    def evaluation_neighbors(run: str = Query(..., max_length=250)):
        from mrnet.release import history

        try:
            text = history.neighbors_page(config(), run)
        except ValueError:
            text = None
        return html(text) if text else html(pages.error_page("Neighbours", f"run {run} has no neighbours page"), 404)

    @app.get("/image/{which}")
    def image(which: str, run: str = Query(..., max_length=250)):
        from mrnet.release import history

        if which not in history.IMAGES:
            return Response(status_code=404)
        try:
            data = history.image(config(), run, which)
        except ValueError:  # a run id that cannot be a folder name
            return Response(status_code=404)
        return Response(data, media_type="image/png") if data else Response(status_code=404)

    @app.get("/neighbors", response_class=HTMLResponse)
    def neighbors_page(id: str | None = Query(None, max_length=200), title: str | None = Query(None, max_length=512),
                       pg: str | None = Query(None, max_length=100), k: str = Query("10", max_length=4)):
        return neighbors_response({"id": id or None, "title": title or None, "pg": pg or None, "k": k})

    return app


def neighbors_response(form: dict) -> HTMLResponse:
    """The form, and a query's answer: ``mrnet neighbors`` with its messages for a bad query."""
    from mrnet.release import neighbors as nn

    try:
        manifest = nn.load_release(config(), None)
    except FileNotFoundError as exc:
        return html(pages.neighbors(form, [], None, str(exc)), 404)
    pgs = sorted(manifest["embeddings"])
    if not form["id"] and not form["title"]:
        return html(pages.neighbors(form, pgs, None, None))
    try:
        if not form["k"].isdigit():
            raise ValueError(f"k must be a whole number, got {form['k']!r}")
        query, rows = nn.neighbors(manifest, int(form["k"]), pg=form["pg"], product_id=form["id"], title=form["title"])
    except (ValueError, FileNotFoundError, KeyError) as exc:
        return html(pages.neighbors(form, pgs, None, str(exc).strip('"')), 400)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    return html(pages.neighbors(form, pgs, (query, records), None))
