"""Bring your own catalog: column mapping by config, no product_group, `mrnet init`, and one public
catalog in its raw file and raw column names through the whole run (tiny)."""

import json

import pandas as pd
import pytest
import yaml

from mrnet.cli import main
from mrnet.config.schema import load_config
from mrnet.config.training import DataConfig
from mrnet.data.catalog import CatalogError, conform
from mrnet.data.starter import guess, starter_config
from mrnet.run import local
from tests.helpers import RAW, REPO


def _shop(tmp_path, rows=60):
    df = pd.DataFrame({
        "sku": [f"S{i}" for i in range(rows)],
        "name": [f"{['red', 'blue', 'green'][i % 3]} cotton {['shirt', 'sock', 'cap'][i % 3]} size {i % 5}"
                 for i in range(rows)],
        "brand": [["acme", "zeta", "omni"][i % 3] for i in range(rows)],
        "price": [str(10 + i) for i in range(rows)],
        "in_stock": ["yes" if i % 2 else "no" for i in range(rows)],
        "category": [["Tops", "Socks", "Hats"][i % 3] for i in range(rows)],
    })
    path = tmp_path / "shop.csv"
    df.to_csv(path, index=False)
    return path, df


def test_conform_maps_columns_and_fills_group_source_locale(tmp_path):
    path, df = _shop(tmp_path)
    data = DataConfig(columns={"sku": "product_id", "name": "title", "category": "category_path"},
                      product_group="shop", locale="en_GB", category_sep=">")
    out = conform(df, data, str(path))
    assert {"product_id", "title", "category_path"} <= set(out.columns) and "sku" not in out.columns
    assert set(out["product_group"]) == {"shop"} and set(out["source"]) == {"shop"}
    assert set(out["locale"]) == {"en_GB"}


def test_conform_names_a_mapped_column_the_file_lacks(tmp_path):
    path, df = _shop(tmp_path)
    with pytest.raises(CatalogError, match=r"shop.csv.*'nmae'.*found 'name'"):
        conform(df, DataConfig(columns={"nmae": "title"}), str(path))
    with pytest.raises(CatalogError, match="already has"):
        conform(df.assign(title="x"), DataConfig(columns={"name": "title"}), str(path))


def test_bad_pg_names_are_quarantined_with_a_reason(tmp_path):
    from mrnet.data.catalog import validate

    df = pd.DataFrame({"product_id": ["a", "b", "c"], "product_group": ["ok_pg", "../../escaped", ""],
                       "source": "s", "locale": "en", "title": ["one", "two", "three"]})
    clean, quarantine = validate(df, "x.csv", None, [], 100)
    assert list(clean["product_id"]) == ["a"]
    assert list(quarantine["reason"]) == ["bad_pg_name", "unknown_pg"]


def test_init_guesses_roles_tasks_and_evaluation(tmp_path):
    path, df = _shop(tmp_path)
    found = guess(pd.read_csv(path, dtype=str))
    assert found["roles"]["product_id"] == "sku" and found["roles"]["title"] == "name"
    assert found["roles"]["product_group"] is None and found["categories"] == ["category"]
    out = tmp_path / "my.yaml"
    assert main(["init", "--catalog", str(path), "--out", str(out)]) == 0
    assert main(["init", "--catalog", str(path), "--out", str(out)]) == 1  # exists: not overwritten
    tree = yaml.safe_load(out.read_text())
    kinds = {t["name"]: t["kind"] for t in tree["tasks"]}
    assert kinds == {"brand": "multiclass", "price": "regression", "high_price": "binary",
                     "in_stock": "binary", "tfidf": "decoding"}
    assert [t["column"] for t in tree["evaluation"]["tasks"]] == ["category"]
    assert "in_stock" in out.read_text().split("\n", 12)[5] or "# " in out.read_text()  # the header lists columns
    cfg = load_config(out)
    assert cfg.data.pg_mapping is None and cfg.data.columns == {"sku": "product_id", "name": "title"}


def test_init_refuses_a_file_without_a_title(tmp_path):
    df = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    with pytest.raises(ValueError, match="no .*title"):
        starter_config("x.csv", df)


def test_init_writes_configs_that_validate_on_awkward_files(tmp_path):
    """Files on which `mrnet init` once wrote a config that `mrnet run` refused: an integer ``index`` id in
    Parquet; unicode column names; ``Sale Price`` beside ``sale_price``; ``product_id`` (with repeats) beside the
    ``index`` chosen as id. A numeric ``brand_id`` is a category, not a quantity."""
    from mrnet.data.merge import validate_catalog

    n = 90
    df = pd.DataFrame({
        "index": range(1, n + 1),
        "product_id": [f"P{i % 30}" for i in range(n)],  # repeats: not the id
        "product": [f"{['red', 'blue', 'green'][i % 3]} cotton {['shirt', 'sock', 'cap'][i % 3]} {i}" for i in range(n)],
        "価格": [float(10 + i) for i in range(n)],
        "Sale Price": [float(5 + i) for i in range(n)],
        "sale_price": [float(3 + i) for i in range(n)],
        "brand_id": [i % 4 for i in range(n)],
    })
    path = tmp_path / "shop.parquet"
    df.to_parquet(path)
    out = tmp_path / "shop.yaml"
    assert main(["init", "--catalog", str(path), "--out", str(out)]) == 0
    cfg = load_config(out)  # once: duplicate task names, a name '' and an id typed int64
    assert cfg.data.columns == {"index": "product_id", "product": "title", "product_id": "product_id_original"}
    kinds = {t.column: (t.name, t.kind) for t in cfg.tasks if t.kind in ("regression", "multiclass")}
    assert kinds["brand_id"] == ("brand_id", "multiclass") and kinds["Sale Price"][0] != kinds["sale_price"][0]
    assert kinds["価格"][0].startswith("column_")
    clean, summary = validate_catalog(str(path), str(tmp_path / "out"), None, cfg.tasks, 512, data=cfg.data)
    assert summary["rows_clean"] == n and pd.read_parquet(clean)["product_id"].iloc[0] == "1"


@pytest.mark.slow
def test_public_raw_catalog_runs_end_to_end_through_init(tmp_path):
    """BigBasket's raw CSV, raw column names, no product_group: init → run (tiny) → summary."""
    raw = RAW / "bigbasket_products_27k" / "BigBasket_Products.csv.gz"
    config = tmp_path / "bigbasket.yaml"
    assert main(["init", "--catalog", str(raw), "--out", str(config)]) == 0
    tree = yaml.safe_load(config.read_text())
    assert tree["data"]["columns"] == {"index": "product_id", "product": "title"}
    assert {t["name"] for t in tree["tasks"]} >= {"brand", "sale_price", "high_sale_price", "rating", "tfidf"}
    assert {t["column"] for t in tree["evaluation"]["tasks"]} >= {"category", "sub_category"}
    cfg_overrides = [f"artifact_root={tmp_path / 'art'}", "data.max_rows_per_pg=400", "train.threads=1",
                     "evaluation.neighbors.queries=10", "tracking.enabled=false"]
    summary = local.run({"config": str(config), "tiny": True, "overrides": cfg_overrides}, "byo")
    pg = tree["data"]["product_group"]
    assert list(summary["pgs"]) == [pg] and summary["pgs"][pg]["n_train"] > 300
    run = tmp_path / "art" / "runs" / "byo"
    evaluation = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert {r["task"] for r in evaluation["rows"]} >= {"browse_category"}
    assert {"tfidf", "pg"} <= {r["feature"] for r in evaluation["rows"]}
    md = (run / "summary.md").read_text()
    assert "brand" in md and "subcategory" not in md  # the configured tasks, not the demo's columns
    assert main(["summary", "--config", str(config), "--set", f"artifact_root={tmp_path / 'art'}"]) == 0
    assert (REPO / "configs" / "demo.yaml").exists()


def test_multiclass_keeps_every_value_with_five_products_of_the_pg():
    from mrnet.config.training import TaskSpec
    from mrnet.data.starter import multiclass_task
    from mrnet.encoder.targets import fit_task

    values = pd.Series(["a"] * 30 + ["b"] * 5 + ["c"] * 4 + [f"r{i}" for i in range(40)])
    task = multiclass_task("brand", "brand", values)
    assert task == {"name": "brand", "kind": "multiclass", "column": "brand", "top_k": 43, "min_class_size": 5}
    spec = TaskSpec(**task)
    assert fit_task(spec, pd.DataFrame({"brand": values}))["classes"] == ["a", "b", "other"]
    assert fit_task(spec.model_copy(update={"top_k": 1}), pd.DataFrame({"brand": values}))["classes"] == ["a", "other"]
    rare = pd.DataFrame({"brand": [f"v{i}" for i in range(25)]})  # no value has 5 products: two classes at least
    assert len(fit_task(spec, rare)["classes"]) == 3
    with pytest.raises(ValueError, match="min_class_size applies to multiclass only"):
        TaskSpec(name="p", kind="regression", column="price", min_class_size=5)


@pytest.mark.parametrize("name", ["bigbasket_products_27k/BigBasket_Products.csv.gz", "fashion_products_44k/styles.csv.gz",
                                  "flipkart_ecommerce_20k/flipkart_id_title_price_brand_rating_20k.csv.gz",
                                  "bigbasket.parquet"])
def test_init_on_each_public_file_writes_a_config_whose_catalog_validates(name, tmp_path):
    """The four files a new user would try first (BigBasket as CSV and as Parquet, whose ``index`` is an integer):
    the config init writes loads, and the file validates with it, every row accounted for."""
    from mrnet.data.merge import validate_catalog

    path = RAW / name
    if name.endswith(".parquet"):  # BigBasket saved as Parquet: integer ids, typed numbers
        path = tmp_path / name
        pd.read_csv(RAW / "bigbasket_products_27k" / "BigBasket_Products.csv.gz").to_parquet(path, index=False)
    out = tmp_path / "config.yaml"
    assert main(["init", "--catalog", str(path), "--out", str(out)]) == 0
    cfg = load_config(out)
    _, summary = validate_catalog(str(path), str(tmp_path / "out"), None, cfg.tasks, 512, data=cfg.data)
    assert summary["rows_in"] == summary["rows_clean"] + summary["rows_quarantined"]
    assert summary["rows_clean"] > 0.9 * summary["rows_in"], summary["by_reason"]
