"""
### mrnet_housekeeping: retention for a year of weekly retrains (docs/RETENTION.md)

One task, `gc` (`mrnet gc`): delete the runs that `retention.*` does not keep, with their MLflow runs,
artifacts and registry versions, and the training checkpoints (`ckpt.pt`) of finished runs. It never
deletes the champion, the challenger, a release that was ever champion (the rollback targets) or a run
in progress. The task log lists what it kept (and why) and what it freed, per kind; the report is
`<artifact_root>/gc/<UTC time>.json`.

Runs weekly (`[mrnet] housekeeping_cron`, default Sundays 14:00 UTC, after the 02:00 retrain).
Trigger it with `dry_run` on to see what it would delete.
"""

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from mrnet_common import CONFIG_PARAM, DAG_DEFAULTS, overrides_param, setting, trigger_rules


@dag(
    dag_id="mrnet_housekeeping",
    schedule=CronTriggerTimetable(setting("housekeeping_cron", "0 14 * * 0"), timezone="UTC"),
    params={
        "config": Param(setting("config", "configs/demo.yaml"), type="string", pattern=CONFIG_PARAM,
                        title="Config file", description="the config (under [mrnet] config_dir) whose "
                        "artifact_root and retention.* apply"),
        "overrides": overrides_param(),
        "dry_run": Param(False, type="boolean", title="Dry run", description="only report what would be deleted"),
    },
    tags=["mrnet", "housekeeping"],
    doc_md=__doc__,
    **DAG_DEFAULTS,
)
def mrnet_housekeeping():
    @task
    def gc(params=None) -> str:
        from mrnet.run import stages

        return stages.housekeeping({k: params[k] for k in ("config", "overrides")}, bool(params["dry_run"]),
                                   trigger=trigger_rules())

    gc()


mrnet_housekeeping()
