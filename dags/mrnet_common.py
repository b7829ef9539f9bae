"""What the mrnet DAGs share: run params, retry/timeout defaults, GPU routing, failure logging.

Deployment settings come from Airflow's own config, so they are set per environment with
``AIRFLOW__MRNET__<KEY>`` variables (or an ``[mrnet]`` section in airflow.cfg), never by
editing a DAG file:

===========================  ==================  ===========================================
key                          default             meaning
===========================  ==================  ===========================================
gpu_queue                    gpu                 queue of PG train / embed-shard tasks (Celery workers
                                                 started with ``-q gpu`` take them)
gpu_pool                     gpu                 pool those tasks take a slot of; its size is
                                                 the number of PG models trained at once
config                       configs/demo.yaml   default ``config`` param (relative paths are
                                                 relative to $MRNET_HOME or the worker's cwd)
retrain_cron                 0 2 * * 0           mrnet_retrain: Sundays 02:00 UTC
refresh_cron                 0 2 * * 3           mrnet_refresh_dynamic: Wednesdays 02:00 UTC
housekeeping_cron            0 14 * * 0          mrnet_housekeeping (retention, mrnet gc): Sundays 14:00
catalog_asset_uri            file:///var/lib/mrnet/catalog.parquet   URI of the catalog Asset
retries                      2                   task retries
retry_delay_seconds          120                 first retry delay (then exponential)
train_timeout_minutes        240                 PG train / refresh / embed-shard task timeout
max_active_tasks             16                  tasks of one run at once (Airflow's default);
                                                 raise it to the GPU workers' slots + a few for
                                                 large shard fan-outs (docs/SCALING.md)
task_timeout_minutes         60                  every other task's timeout
mlflow_ui_url                (unset)             MLflow UI base URL a browser reaches: the UI
                                                 plugin's "MLflow run" links and the task logs'
                                                 run URLs (docs/UI.md); unset: no links
config_overrides             (empty)             ``key=value;…`` over ``config`` for the UI
                                                 plugin's releases pages (e.g. artifact_root)
config_dir                   (``config``'s folder)  the folder a triggered ``config`` must lie under
allowed_roots                (empty)             comma-separated absolute paths / s3:// prefixes a
                                                 trigger's path overrides (artifact_root,
                                                 data.catalog, …) must lie under; empty: none
===========================  ==================  ===========================================

A trigger is held to these rules (mrnet/config/trigger.py): the ``overrides`` param's JSON schema
refuses any other key or path, so a REST trigger breaking them gets HTTP 400, and the run's first
task checks them again with symlinks resolved.

Only ``pendulum`` and ``airflow.sdk`` are imported at the top: parsing stays fast and light (the
trigger rules' module, pure Python, is read once to build the ``overrides`` schema).
"""

import pendulum
from airflow.sdk import Asset, Param, TriggerRule, conf, task


def setting(key: str, default: str) -> str:
    return conf.get("mrnet", key, fallback=default)


def log_failure(context) -> None:
    """Task failure/retry callback: one clear line naming the task, PG slot, try and error."""
    import logging

    ti = context["ti"]
    slot = f"[{ti.map_index}]" if ti.map_index >= 0 else ""
    fate = "will retry" if ti.try_number <= ti.max_tries else "no retries left"
    logging.getLogger("mrnet.dags").error(
        "mrnet: task %s%s of %s run %s failed on try %s (%s): %s", ti.task_id, slot, ti.dag_id,
        ti.run_id, ti.try_number, fate, context.get("exception"))


CATALOG = Asset(name="mrnet_catalog", uri=setting("catalog_asset_uri", "file:///var/lib/mrnet/catalog.parquet"),
                group="mrnet")

DEFAULT_ARGS = {
    "owner": "mrnet",
    "retries": int(setting("retries", "2")),
    "retry_delay": pendulum.duration(seconds=int(setting("retry_delay_seconds", "120"))),
    "retry_exponential_backoff": True,
    "max_retry_delay": pendulum.duration(minutes=30),
    "execution_timeout": pendulum.duration(minutes=int(setting("task_timeout_minutes", "60"))),
    "on_failure_callback": log_failure,
    "on_retry_callback": log_failure,
}

GPU_TASK = {  # PG training and embedding: GPU workers in production, local in the embedded default
    "queue": setting("gpu_queue", "gpu"),
    "pool": setting("gpu_pool", "gpu"),
    "execution_timeout": pendulum.duration(minutes=int(setting("train_timeout_minutes", "240"))),
}

DAG_DEFAULTS = {  # both DAGs: no backfill of missed weeks, one run at a time
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_runs": 1,
    "max_active_tasks": int(setting("max_active_tasks", "16")),
    "default_args": DEFAULT_ARGS,
}


def trigger_rules() -> dict:
    """What a trigger may name (``[mrnet] config_dir`` and ``allowed_roots``), for the run's first task."""
    default = setting("config", "configs/demo.yaml")
    return {"config_dir": setting("config_dir", default.rpartition("/")[0] or "."),
            "allowed_roots": setting("allowed_roots", "")}


CONFIG_PARAM = r"^(?!(?:.*/)?\.\.(?:/|$))\S+\.ya?ml$"  # a YAML file; no '..' segment


def overrides_param() -> Param:
    """``key.path=value`` items a trigger may give: settings anywhere, paths only under ``[mrnet] allowed_roots``."""
    from mrnet.config.trigger import TriggerPolicy, override_pattern  # pure Python: no heavy import at parse time

    roots = TriggerPolicy.parse(".", trigger_rules()["allowed_roots"]).roots
    return Param([], type="array", items={"type": "string", "pattern": override_pattern(roots)},
                 title="Config overrides", description="key.path=value, e.g. train.lr=0.001. Settings only; "
                 "paths (artifact_root, data.catalog, …) only under [mrnet] allowed_roots"
                 + (f" ({', '.join(roots)})" if roots else ", which is empty: none") + ".")


def run_params(epochs_help: str) -> dict:
    """Trigger-form params, validated by JSON schema before a run is created."""
    return {
        "config": Param(setting("config", "configs/demo.yaml"), type="string", pattern=CONFIG_PARAM,
                        title="Config file", description="YAML config under [mrnet] config_dir; relative to "
                        "$MRNET_HOME or the worker's working directory, or an absolute path."),
        "pgs": Param([], type="array", uniqueItems=True, items={"type": "string", "pattern": "^[a-z0-9_]+$"},
                     title="Product groups", description="PG names to run (empty: every PG of the "
                     "config). An unknown name fails the run's first task and lists the known ones.",
                     examples=["watches", "footwear", "beverages"]),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=500, title="Epochs",
                        description=epochs_help),
        "sample_fraction": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                                 title="Sample fraction", description="Train on this fraction of each "
                                 "PG's products (a quick trial run); empty: all."),
        "promote": Param(True, type="boolean", title="Promote",
                         description="Make this run's release the current one if every PG succeeds."),
        "tiny": Param(False, type="boolean", title="Tiny smoke run",
                      description="Few rows, 1 epoch of 2 steps: checks the wiring in a minute."),
        "overrides": overrides_param(),
    }


# ------------------------------------------------------------------ tasks both DAGs run


@task
def plan_catalog(run: str) -> list[str]:
    from mrnet.run import stages

    return stages.plan_catalog(run)


@task(map_index_template="{{ task.op_kwargs['part'] }}")  # UI: part-00003, one per input file
def check_catalog_part(run: str, part: str) -> str:
    from mrnet.run import stages

    return stages.check_catalog_part(run, part)


@task
def validate_catalog(run: str, parts: list[str]) -> str:
    from mrnet.run import stages

    return stages.merge_catalog(run, parts)


def validated_catalog(run):
    """The catalog's tasks: plan the input files → check each file (mapped) → merge (the clean catalog's URI)."""
    return validate_catalog(run, check_catalog_part.partial(run=run).expand(part=plan_catalog(run)))


@task(trigger_rule=TriggerRule.ALL_DONE)  # plans the PGs that trained; the report names the others
def plan_embed(run: str, models: list[str], catalog: str) -> list[str]:
    from mrnet.run import stages

    return stages.plan_embed(run, models, catalog)


@task(**GPU_TASK, map_index_template="{{ task.op_kwargs['shard'] }}")  # UI: footwear/part-00000-of-00002
def embed_shard(run: str, shard: str, catalog: str) -> str:
    from mrnet.run import stages

    return stages.embed_shard(run, shard, catalog)


@task(trigger_rule=TriggerRule.ALL_DONE, retries=0)  # runs after failed PGs too, to name them
def report(run: str, parts: list[str]) -> str:
    from mrnet.run import stages

    return stages.report(run, parts)


@task(**GPU_TASK)
def sparse_autoencoder(run: str, summary: str) -> str:
    from mrnet.run import stages

    return stages.sparse_autoencoder(run, summary)


@task
def plan_agnostic(run: str, summary: str, model: str) -> list[str]:
    from mrnet.run import stages

    return stages.plan_agnostic(run, summary, model)


@task(map_index_template="{{ task.op_kwargs['shard'] }}")  # UI: footwear/part-00000-of-00002
def encode_agnostic(run: str, shard: str) -> str:
    from mrnet.run import stages

    return stages.encode_agnostic(run, shard)


@task(trigger_rule=TriggerRule.ALL_DONE, retries=0)  # also when there is nothing to encode; fails naming missing parts
def commit_agnostic(run: str, parts: list[str]) -> str:
    from mrnet.run import stages

    return stages.commit_agnostic(run, parts)


def agnostic_embeddings(run, summary):
    """The PG-agnostic tasks: train the sparse autoencoder → one encoding task per PG shard → commit."""
    model = sparse_autoencoder(run, summary)
    return commit_agnostic(run, encode_agnostic.partial(run=run).expand(shard=plan_agnostic(run, summary, model)))


@task
def evaluate(run: str, summary: str, agnostic: str) -> str:
    from mrnet.run import stages

    return stages.evaluate(run, summary, agnostic)


@task
def publish(run: str, summary: str, parts: list[str]) -> str:
    from mrnet.run import stages

    return stages.publish(run, summary, parts)


@task
def build_index(run: str, release_manifest: str) -> str:
    from mrnet.run import stages

    return stages.build_index(run, release_manifest)


@task
def promotion_gate(run: str, release_manifest: str) -> str:
    from mrnet.run import stages

    return stages.promote(run, release_manifest)
