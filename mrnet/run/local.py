"""``mrnet run`` / ``mrnet refresh``: every stage of a DAG run in order, in this process (no Airflow).

The same run stages the DAGs call (stages.py), with the same run layout, cache and release. It
sits above them, beside the DAGs: nothing below imports it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from mrnet.io import storage
from mrnet.run import stages
from mrnet.run.context import end_tracking


def run(params: dict, run_id: str | None = None, mode: str = "retrain") -> dict:
    """The DAG's stages in order, in this process (no Airflow): same run layout, cache and release.

    ``params`` are the DAG's run params (config, pgs, epochs, sample_fraction, promote, tiny,
    overrides). A failed PG is recorded and the others go on; the report then raises naming it."""
    run_id = run_id or f"local__{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}"
    run_uri = stages.start_run(params, run_id, "cli", mode)
    try:
        return _stages(run_uri, mode)
    except BaseException as exc:  # the MLflow runs end with the run: FAILED, or KILLED by Ctrl-C / SIGTERM
        end_tracking(run_uri, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise


def _stages(run_uri: str, mode: str) -> dict:
    base = stages.base_release(run_uri) if mode == "refresh" else None
    catalog = stages.validate(run_uri)
    vectors = stages.word2vec(run_uri, stages.corpus(run_uri, catalog)) if mode == "retrain" else None
    pgs, models, parts = stages.plan(run_uri, catalog), [], []
    for i, pg in enumerate(pgs, 1):
        try:
            models.append(stages.train(run_uri, pg, catalog, vectors) if mode == "retrain"
                          else stages.refresh(run_uri, pg, catalog, base))
            print(f"[{i}/{len(pgs)}] {pg}: trained", flush=True)
        except Exception as exc:  # recorded in failures/<pg>.json; the report names it at the end
            print(f"[{i}/{len(pgs)}] {pg}: FAILED {type(exc).__name__}: {exc}", flush=True)
    shards = stages.plan_embed(run_uri, models, catalog)
    for i, shard in enumerate(shards, 1):
        try:
            parts.append(stages.embed_shard(run_uri, shard, catalog))
        except Exception as exc:  # as above: the PG's failure file names the shard
            print(f"[embed {i}/{len(shards)}] {shard}: FAILED {type(exc).__name__}: {exc}", flush=True)
    summary_uri = stages.report(run_uri, parts)
    parts = [stages.agnostic_embeddings(run_uri, summary_uri)]
    parts.append(stages.evaluate(run_uri, summary_uri, parts[0]))
    if mode == "retrain":  # a refresh carries the cross-language model over from its base release
        parts.append(stages.cross_language(run_uri))
    stages.promote(run_uri, stages.build_index(run_uri, stages.publish(run_uri, summary_uri, parts)))
    return json.loads(storage.read_text(summary_uri))
