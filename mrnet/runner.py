"""``mrnet run`` / ``mrnet refresh``: every stage of a DAG run in order, in this process (no Airflow).

The same run stages the DAGs call (flow, flow_ae, release), with the same run layout, cache and
release. It sits above them, beside the DAGs: nothing below imports it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from mrnet import flow, flow_ae, release, storage


def run(params: dict, run_id: str | None = None, mode: str = "retrain") -> dict:
    """The DAG's stages in order, in this process (no Airflow): same run layout, cache and release.

    ``params`` are the DAG's run params (config, pgs, epochs, sample_fraction, promote, tiny,
    overrides). A failed PG is recorded and the others go on; the report then raises naming it."""
    run_id = run_id or f"local__{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}"
    run_uri = flow.start_run(params, run_id, "cli", mode)
    try:
        return _stages(run_uri, mode)
    except BaseException as exc:  # the MLflow runs end with the run: FAILED, or KILLED by Ctrl-C / SIGTERM
        flow.end_tracking(run_uri, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise


def _stages(run_uri: str, mode: str) -> dict:
    base = release.base_release(run_uri) if mode == "refresh" else None
    catalog = flow.validate(run_uri)
    vectors = flow.word2vec(run_uri, flow.corpus(run_uri, catalog)) if mode == "retrain" else None
    pgs, models, parts = flow.plan(run_uri, catalog), [], []
    for i, pg in enumerate(pgs, 1):
        try:
            models.append(flow.train(run_uri, pg, catalog, vectors) if mode == "retrain"
                          else flow.refresh(run_uri, pg, catalog, base))
            print(f"[{i}/{len(pgs)}] {pg}: trained", flush=True)
        except Exception as exc:  # recorded in failures/<pg>.json; the report names it at the end
            print(f"[{i}/{len(pgs)}] {pg}: FAILED {type(exc).__name__}: {exc}", flush=True)
    shards = flow.plan_embed(run_uri, models, catalog)
    for i, shard in enumerate(shards, 1):
        try:
            parts.append(flow.embed_shard(run_uri, shard, catalog))
        except Exception as exc:  # as above: the PG's failure file names the shard
            print(f"[embed {i}/{len(shards)}] {shard}: FAILED {type(exc).__name__}: {exc}", flush=True)
    summary_uri = release.report(run_uri, parts)
    parts = [flow_ae.sparse_autoencoder(run_uri, summary_uri)]
    parts.append(flow_ae.evaluate(run_uri, summary_uri, parts[0]))
    if mode == "retrain":  # a refresh carries the cross-language model over from its base release
        parts.append(flow_ae.cross_language(run_uri))
    release.promote(run_uri, release.publish(run_uri, summary_uri, parts))
    return json.loads(storage.read_text(summary_uri))
