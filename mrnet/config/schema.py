"""Typed configuration: frozen pydantic models loaded from ``configs/*.yaml`` plus overrides.

Usage::

    cfg = load_config("configs/demo.yaml", overrides=["train.epochs=2"])

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML, so
``train.epochs=2`` is an int and ``pgs=[watches,jewellery]`` is a list.
There are no globals: every function takes the config it needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from mrnet.config.autoencoders import CrossLingualConfig, SparseAEConfig
from mrnet.config.base import Frozen, check_segment
from mrnet.config.evaluation import EvaluationConfig
from mrnet.config.retention import RetentionConfig
from mrnet.config.training import (DataConfig, EmbedConfig, ModelConfig, RefreshConfig, TaskSpec, TrainConfig,
                                   Word2VecConfig)


class TrackingConfig(Frozen):
    """MLflow tracking + model registry (io/tracking.py is the only module that imports mlflow).

    ``uri`` null: $MLFLOW_TRACKING_URI if set, else ``sqlite:///<artifact_root>/mlflow.db``
    (the embedded default); production points it at the MLflow server. Registered models are
    ``<prefix>-<pg>`` (one per PG encoder) and ``<prefix>-release`` (the release manifests)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "mrnet"
    registry_prefix: str = "mrnet"
    log_weights: bool = True  # copy each model.safetensors into its MLflow run's artifacts


class GateConfig(Frozen):
    """Champion/challenger promotion gate (release/gate.py), on normalized validation losses (1.0 =
    label-prior predictor): no (PG, task) loss may rise by more than ``tolerance``, and the
    mean over all (PG, task) pairs may not rise by more than ``aggregate_tolerance``."""

    tolerance: float = Field(default=0.03, ge=0.0)
    aggregate_tolerance: float = Field(default=0.005, ge=0.0)  # "holds": within this of the champion
    # a rise counts only beyond max(tolerance, noise_z x sqrt(2) x the champion's standard error of that validation
    # loss): a 47-product validation split moves by more than 0.03 between two trainings on the same data
    # (release/gate.py, docs/TRACKING.md). 0 = the tolerances alone
    noise_z: float = Field(default=3.0, ge=0.0, le=10.0)
    stability_sample: int = Field(default=400, ge=20)  # products per PG for k-NN overlap@k
    stability_k: int = Field(default=10, ge=1)
    # downstream evaluation (paper §4.1): no MRNet metric (AUC / accuracy) of a task both releases
    # evaluated may fall by more than this
    eval_tolerance: float = Field(default=0.02, ge=0.0)


class IndexConfig(Frozen):
    """The nearest-neighbour index of each release space (release/index.py; docs/NEIGHBORS.md), built once
    after publish. A space of at least ``min_products`` gets a faiss IVF-PQ index (read memory-mapped at
    query time), whose ``rerank`` x k best candidates are re-scored exactly from the stored vectors; a
    smaller one is searched exactly. ``nlist`` / ``pq_bytes`` ``auto``: ~sqrt(N) lists (a power of two in
    [64, 1024]: adding N vectors costs N·nlist·d, the build's largest step, so from 1M products on it grows
    linearly) and d/8 bytes per code."""

    enabled: bool = True
    min_products: int = Field(default=100_000, ge=1, le=10**10)
    nlist: Annotated[int, Field(ge=1, le=65_536)] | Literal["auto"] = "auto"
    pq_bytes: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = "auto"
    nprobe: int = Field(default=32, ge=1, le=65_536)
    rerank: int = Field(default=10, ge=1, le=1000)
    train_sample: int = Field(default=200_000, ge=1_000, le=10_000_000)
    recall_queries: int = Field(default=100, ge=0, le=100_000)  # recall@10 against exact search, in the index manifest


class Config(Frozen):
    artifact_root: str = "artifacts/demo"
    pgs: list[str] | None = None  # None = every PG of the mapping
    data: DataConfig = DataConfig()
    word2vec: Word2VecConfig = Word2VecConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    embed: EmbedConfig = EmbedConfig()
    refresh: RefreshConfig = RefreshConfig()
    tracking: TrackingConfig = TrackingConfig()
    gate: GateConfig = GateConfig()
    sparse_ae: SparseAEConfig = SparseAEConfig()
    crosslingual: CrossLingualConfig = CrossLingualConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    retention: RetentionConfig = RetentionConfig()
    index: IndexConfig = IndexConfig()
    tasks: list[TaskSpec]

    @model_validator(mode="after")
    def _pg_names(self) -> "Config":
        if self.pgs is not None and not self.pgs:
            raise ValueError("pgs is an empty list: name at least one PG, or leave pgs out (null) for every PG")
        for pg in self.pgs or ():
            check_segment(pg, "pgs: PG")
        return self

    @model_validator(mode="after")
    def _unique_tasks(self) -> "Config":
        names = [t.name for t in self.tasks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate task names: {sorted(dup)}")
        classify = [t.name for t in self.tasks if t.kind in ("binary", "multiclass")]
        for pair in self.evaluation.interpret if self.evaluation.enabled else ():
            if pair.training_task not in classify:
                raise ValueError(f"evaluation.interpret: training task {pair.training_task!r} is not a binary or "
                                 f"multiclass task of `tasks` ({classify})")
        return self

    def hash(self) -> str:
        """Stable content hash of the resolved config (cache keys, run tags)."""
        return digest(self.model_dump(mode="json"), 16)

    def section_hash(self, section: str) -> str:
        """Content hash of one section (the promotion gate compares downstream metrics only under equal
        ``evaluation`` settings)."""
        return digest(getattr(self, section).model_dump(mode="json"), 12)

    def training_hash(self) -> str:
        """Hash of what changes a PG model's training (resume key); run-only fields excluded:
        where artifacts go, which PGs run, progress bars, inference batch size."""
        tree = self.model_dump(mode="json", exclude={"artifact_root": True, "pgs": True, "embed": True,
                                                     "tracking": True, "gate": True, "sparse_ae": True,
                                                     "crosslingual": True, "evaluation": True, "retention": True,
                                                     "index": True,
                                                     "train": {"progress"}})
        return digest(tree, 16)


def digest(tree: object, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``tree`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:length]


TINY_OVERRIDES = [
    "data.max_rows_per_pg=120",
    "embed.shard_size=50",
    "word2vec.min_count=1",
    "word2vec.epochs=1",
    "train.epochs=1",
    "refresh.epochs=1",
    "train.steps_per_epoch=2",
    "train.batch_size=32",
    "train.progress=false",
    "sparse_ae.epochs=2",
    "sparse_ae.batch_size=64",
    "crosslingual.max_pairs=400",
    "crosslingual.epochs=2",
    "evaluation.folds=2",
    "evaluation.rf_trees=5",
    "evaluation.interpret_repeats=2",
    "evaluation.interpret_trees=5",
    "evaluation.min_positives=3",
    "evaluation.min_class_size=3",
    "evaluation.neighbors.queries=20",
]


def _set_dotted(tree: dict, key: str, value: object) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, object]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: its value is not valid YAML ({_yaml_problem(exc)})") from None
    return out


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's problem and where, in one line (line/column 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: sections merge key by key; anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_tree(path: Path, seen: tuple = ()) -> dict:
    """A config file's tree; ``extends: other.yaml`` (relative to the file) is read first and
    this file's keys go over it, e.g. configs/production.yaml extends configs/demo.yaml."""
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}" + (f" (extended by {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ValueError(f"config {path}: `extends` loops through {[str(p) for p in seen]}")
    if path.is_dir():
        raise ValueError(f"config {path} is a directory: give a YAML file, e.g. configs/demo.yaml")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"config {path}: the top level must be a mapping of sections, not {type(tree).__name__}")
    base = tree.pop("extends", None)
    return _merge(_read_tree(path.parent / base, seen + (path.resolve(),)), tree) if base else tree


def load_config(path: str | Path, overrides: list[str] | None = None, tiny: bool = False) -> Config:
    """Load a YAML config (and the one it ``extends``), apply ``tiny`` then explicit overrides,
    validate, freeze."""
    path = Path(path)
    tree = _read_tree(path)
    for key, value in parse_overrides((TINY_OVERRIDES if tiny else []) + list(overrides or [])):
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:  # one line: the file, then each field and what is wrong with it
        raise ValueError(f"invalid config {path}: " + "; ".join(_field_error(e) for e in exc.errors())) from exc


def _field_error(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    value = "" if error["type"] == "value_error" else f" (got {error.get('input')!r:.60})"
    return f"{where}: {message}{value}" if where else message


def config_from_json(text: str) -> Config:
    """Rebuild a config stored inside a checkpoint (checkpoints describe themselves)."""
    return Config.model_validate_json(text)
