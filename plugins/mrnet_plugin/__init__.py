"""mrnet's Airflow UI plugin (Airflow 3 plugin interface): an "MLflow run" and a "Model version"
link on every mrnet task, and a releases app inside the Airflow UI (Releases, Compare, Evaluation,
Neighbours). Loaded through the ``airflow.plugins`` entry point in pyproject.toml (docs/UI.md);
``plugin.py`` holds the plugin class."""
