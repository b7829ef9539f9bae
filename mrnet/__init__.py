"""mrnet: MRNet-Product2Vec product embeddings (Biswas, Bhutani, Sanyal 2017).

The library never imports Airflow; `dags/` wires these functions into tasks.
Importing this package has no side effects.
"""

__version__ = "0.1.0"
