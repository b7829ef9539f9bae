"""
### mrnet_refresh_dynamic: periodic refresh of the dynamic signals (paper §6)

"We periodically retrain MRNet to keep the model updated with the dynamic signals."
pin the champion release → validate today's catalog → per PG (mapped, GPU queue + pool):
warm-start the released model, re-fit the dynamic tasks (price, offer, review …) on the
refreshed labels and fine-tune for `refresh.epochs` → re-embed in shards (mapped, GPU queue) → report →
sparse_autoencoder (re-fit on the refreshed PG embeddings: the PG-agnostic space follows
them) → evaluate (§4 downstream tasks) → publish → promotion_gate. The cross-language model has no dynamic signal and is
carried over from the base release.

Cadence: refresh weekly (`[mrnet] refresh_cron`, default Wednesdays 02:00 UTC), midway
between the weekly full retrains of `mrnet_retrain` (Sundays, and on every catalog update),
so dynamic signals are never more than about half a week old while vocabulary, word
vectors and static heads are rebuilt from scratch every week. A refresh keeps each
model's vocabulary and task list; changing those takes a full retrain.
"""

from airflow.sdk import CronTriggerTimetable, dag, task
from mrnet_common import (DAG_DEFAULTS, GPU_TASK, agnostic_embeddings, build_index, embed_shard, evaluate, plan_embed, promotion_gate,
                          publish, report, run_params, setting, trigger_rules, validated_catalog)


@dag(
    dag_id="mrnet_refresh_dynamic",
    schedule=CronTriggerTimetable(setting("refresh_cron", "0 2 * * 3"), timezone="UTC"),
    params=run_params("Fine-tuning epochs per PG model (empty: the config's refresh.epochs)."),
    tags=["mrnet", "refresh"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
)
def mrnet_refresh_dynamic():
    @task
    def start(params=None, run_id=None) -> str:
        from mrnet.run import stages

        return stages.start_run(dict(params), run_id, "mrnet_refresh_dynamic", "refresh", ui_url=setting("mlflow_ui_url", ""),
                                 trigger=trigger_rules())

    @task
    def pin_base_release(run: str) -> str:
        from mrnet.run import stages

        return stages.base_release(run)

    @task
    def plan_pgs(run: str, base: str, catalog: str) -> list[str]:
        from mrnet.run import stages

        return stages.plan(run, catalog)

    @task(**GPU_TASK, map_index_template="{{ task.op_kwargs['pg'] }}")  # the UI (and its MLflow link) names the PG
    def refresh_pg(run: str, pg: str, catalog: str, base: str) -> str:
        from mrnet.run import stages

        return stages.refresh(run, pg, catalog, base)

    run = start()
    base = pin_base_release(run)
    catalog = validated_catalog(run)
    models = refresh_pg.partial(run=run, catalog=catalog, base=base).expand(pg=plan_pgs(run, base, catalog))
    parts = embed_shard.partial(run=run, catalog=catalog).expand(shard=plan_embed(run, models, catalog))
    summary = report(run, parts)
    agnostic = agnostic_embeddings(run, summary)
    promotion_gate(run, build_index(run, publish(run, summary, [agnostic, evaluate(run, summary, agnostic)])))


mrnet_refresh_dynamic()
