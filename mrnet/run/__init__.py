"""A run: ``steps`` (config-level steps, one ``mrnet <step>`` each), ``context`` (``Run``, stage
records, cache, tracking helpers), ``derived`` and ``publish`` (the stages after the PG fan-in),
``stages`` (every stage a DAG task calls: the only module dags/ import) and ``local``
(``mrnet run``: every stage in one process)."""
