"""The doors out of the process: ``storage`` (local paths and s3://, atomic writes; the only boto3
module), ``tracking`` (the only mlflow module: runs, metrics, registry, aliases) and ``progress``
(bars on a terminal, one log line elsewhere)."""
