import pytest
from pydantic import ValidationError

from mrnet.config.schema import Config, config_from_json, load_config, parse_overrides
from mrnet.config.training import ModelConfig, TaskSpec
from tests.helpers import REPO

DEMO = REPO / "configs" / "demo.yaml"


def test_demo_config_has_paper_defaults():
    cfg = load_config(DEMO)
    assert cfg.word2vec.vector_size == 128 and cfg.word2vec.min_count == "auto"
    assert cfg.model.embed_dim == 256  # twice the paper's 128, the demo's budget (docs/TRAINING.md)
    assert ModelConfig().embed_dim == 512  # a BYO catalog's d (mrnet init writes no model section)
    assert {t.kind for t in cfg.tasks} == {"multiclass", "binary", "regression", "decoding"}
    assert {t.signal for t in cfg.tasks} == {"static", "dynamic"}
    tfidf = next(t for t in cfg.tasks if t.kind == "decoding")
    assert tfidf.dim == 5000


def test_overrides_are_typed_and_nested():
    cfg = load_config(DEMO, ["train.epochs=7", "pgs=[watches, beverages]", "train.lr=0.01"])
    assert cfg.train.epochs == 7 and cfg.pgs == ["watches", "beverages"] and cfg.train.lr == 0.01


def test_tiny_mode_and_explicit_override_order():
    cfg = load_config(DEMO, ["train.epochs=3"], tiny=True)
    assert cfg.train.steps_per_epoch == 2 and cfg.train.epochs == 3


def test_config_is_frozen_and_hash_tracks_content():
    cfg = load_config(DEMO)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.epochs = 3  # type: ignore[misc]
    assert cfg.hash() == load_config(DEMO).hash()
    assert cfg.hash() != load_config(DEMO, ["train.epochs=9"]).hash()
    assert config_from_json(cfg.model_dump_json()) == cfg
    moved = load_config(DEMO, ["artifact_root=elsewhere", "pgs=[watches]", "train.progress=false"])
    assert moved.training_hash() == cfg.training_hash() and moved.hash() != cfg.hash()
    assert load_config(DEMO, ["train.lr=0.1"]).training_hash() != cfg.training_hash()


@pytest.mark.parametrize("override, message", [
    ("train.epochs=many", "epochs"),
    ("train.optimiser=adam", "optimiser"),
    ("model.embed_dim=127", "even"),
])
def test_bad_values_are_refused_with_the_field_and_file(override, message):
    with pytest.raises(ValueError) as err:
        load_config(DEMO, [override])
    assert message in str(err.value) and "demo.yaml" in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="key.path=value"):
        parse_overrides(["train.epochs"])


def test_task_spec_rules():
    with pytest.raises(ValueError, match="top_k"):
        TaskSpec(name="c", kind="multiclass", column="color")
    with pytest.raises(ValueError, match="regression only"):
        TaskSpec(name="c", kind="binary", column="x", transform="log1p")
    assert TaskSpec(name="hv", kind="binary", column="price", quantile=0.9).column_type == "number"
    assert TaskSpec(name="o", kind="binary", column="on_offer").column_type == "bool"
    with pytest.raises(ValueError, match="duplicate task"):
        Config(tasks=[TaskSpec(name="a", kind="decoding", column="title")] * 2)


def test_a_config_extends_another_and_overrides_its_keys(tmp_path):
    from mrnet.config.schema import load_config

    prod = load_config("configs/production.yaml")
    demo = load_config("configs/demo.yaml")
    assert prod.artifact_root == "s3://mrnet/artifacts" and prod.data.raw_dir == "/opt/mrnet/shared/data"
    assert prod.tasks == demo.tasks and prod.evaluation == demo.evaluation and prod.train == demo.train
    assert prod.model.embed_dim == 512 and demo.model.embed_dim == 256  # GPU workers get the typed default d
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="`extends` loops"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml .extended by"):
        load_config(tmp_path / "c.yaml")
