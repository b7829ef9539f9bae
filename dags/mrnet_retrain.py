"""
### mrnet_retrain: full MRNet-Product2Vec retrain (paper §3)

validate catalog → build corpus → train word2vec → per PG (mapped, GPU queue + pool):
train the BiLSTM with alternating optimization → plan_embed (cut each trained PG into shards of
`embed.shard_size` products) → per shard (mapped, GPU queue + pool): embed →
report (commits each PG's shards, names any failed PG) → sparse_autoencoder (§3.2: 256-d PG-agnostic embeddings) →
evaluate (§4: downstream tasks with LR and RF vs TF-IDF, Table 2, nearest neighbours), and
cross_language_autoencoder (§5: two locale models + multimodal autoencoder, held-out
retrieval report) → publish (MLflow registry: `challenger`) → promotion_gate (vs the
`champion`; moves it only if no validation loss and no downstream metric regresses).

Runs weekly (`[mrnet] retrain_cron`, default Sundays 02:00 UTC) and whenever the
`mrnet_catalog` asset is updated. Trigger it from the UI with params for a trial run
(PG subset, epochs, sample fraction, promote off). Every task returns a URI; the
run's files are under `<artifact_root>/runs/<run_id>/`. Corpus and word vectors are
reused from the cache when the catalog text and the settings are unchanged.
"""

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from mrnet_common import (CATALOG, DAG_DEFAULTS, GPU_TASK, agnostic_embeddings, build_index, embed_shard, evaluate, plan_embed,
                          promotion_gate, publish, report, run_params, setting, trigger_rules, validated_catalog)


@dag(
    dag_id="mrnet_retrain",
    schedule=AssetOrTimeSchedule(  # weekly, and whenever the catalog asset is updated
        timetable=CronTriggerTimetable(setting("retrain_cron", "0 2 * * 0"), timezone="UTC"),
        assets=CATALOG,
    ),
    params=run_params("Training epochs per PG model (empty: the config's train.epochs)."),
    tags=["mrnet", "retrain"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
)
def mrnet_retrain():
    @task
    def start(params=None, run_id=None) -> str:
        from mrnet.run import stages

        return stages.start_run(dict(params), run_id, "mrnet_retrain", "retrain", ui_url=setting("mlflow_ui_url", ""),
                                 trigger=trigger_rules())

    @task
    def build_corpus(run: str, catalog: str) -> str:
        from mrnet.run import stages

        return stages.corpus(run, catalog)

    @task
    def train_word2vec(run: str, corpus: str) -> str:
        from mrnet.run import stages

        return stages.word2vec(run, corpus)

    @task
    def plan_pgs(run: str, catalog: str) -> list[str]:
        from mrnet.run import stages

        return stages.plan(run, catalog)

    @task(**GPU_TASK, map_index_template="{{ task.op_kwargs['pg'] }}")  # the UI (and its MLflow link) names the PG
    def train_pg(run: str, pg: str, catalog: str, vectors: str) -> str:
        from mrnet.run import stages

        return stages.train(run, pg, catalog, vectors)

    @task(**GPU_TASK)
    def cross_language_autoencoder(run: str, summary: str) -> str:
        from mrnet.run import stages

        return stages.cross_language(run)

    run = start()
    catalog = validated_catalog(run)
    vectors = train_word2vec(run, build_corpus(run, catalog))
    models = train_pg.partial(run=run, catalog=catalog, vectors=vectors).expand(pg=plan_pgs(run, catalog))
    parts = embed_shard.partial(run=run, catalog=catalog).expand(shard=plan_embed(run, models, catalog))
    summary = report(run, parts)
    agnostic = agnostic_embeddings(run, summary)
    stages = [agnostic, cross_language_autoencoder(run, summary), evaluate(run, summary, agnostic)]
    promotion_gate(run, build_index(run, publish(run, summary, stages)))


mrnet_retrain()
