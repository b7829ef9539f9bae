"""mrnet: MRNet-Product2Vec product embeddings (Biswas, Bhutani, Sanyal 2017).

One room per concern, imports pointing down (docs/ARCHITECTURE.md): ``run`` (the stages a DAG
task calls) → the domain packages ``release``, ``autoencoders``, ``evaluation``, ``encoder``,
``data`` → ``io`` and ``config``. The library never imports Airflow; ``dags/`` wires
``mrnet.run.stages`` into tasks. Importing this package has no side effects.
"""

__version__ = "0.1.0"
