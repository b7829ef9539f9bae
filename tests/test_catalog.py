import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrnet.config.schema import load_config
from mrnet.data.catalog import CatalogError, read_catalog, validate
from mrnet.data.merge import validate_catalog
from mrnet.data.demo import CANONICAL, assign_pg, load_pg_mapping
from tests.helpers import REPO

CFG = load_config(REPO / "configs" / "demo.yaml")
PGS = list(load_pg_mapping(REPO / "configs" / "pg_mapping.yaml"))
HEADER = "product_id,product_group,source,locale,title,price,on_offer,color,rating\n"
GOOD = "p{i},watches,flipkart,en_IN,Titan Analog Watch {i},1200,true,Black,4.5\n"


def _csv(tmp_path, bad_line: bytes | str, n_good: int = 3) -> str:
    path = tmp_path / "catalog.csv"
    body = HEADER + "".join(GOOD.format(i=i) for i in range(n_good))
    data = body.encode() + (bad_line if isinstance(bad_line, bytes) else bad_line.encode())
    path.write_bytes(data)
    return str(path)


def _run(uri):
    df = read_catalog(uri)
    return validate(df, uri, PGS, CFG.tasks, max_title_chars=60)


def test_demo_catalog_has_23_pgs_of_a_few_hundred_products(raw_catalog):
    df = pd.read_parquet(raw_catalog)
    assert list(df.columns) == CANONICAL
    counts = df["product_group"].value_counts()
    assert len(counts) == 23 and counts.min() >= 400
    assert set(df["source"]) == {"flipkart", "bigbasket", "myntra"}
    assert df["product_group"].isna().sum() > 0  # uncategorized Flipkart rows, quarantined later
    # labels are sparse across sources: colour only from Myntra, price only from Flipkart/BigBasket
    assert df.loc[df.color.notna(), "source"].unique().tolist() == ["myntra"]
    assert set(df.loc[df.price.notna(), "source"]) == {"flipkart", "bigbasket"}


def test_pg_rules_match_whole_levels_of_the_right_source_first_rule_first():
    mapping = {"chargers": [("flipkart", ("Mobiles", "Chargers"))],
               "mobiles": [("flipkart", ("Mobiles",)), ("bigbasket", ("Phones", "Cases"))]}
    rows = pd.DataFrame({"source": ["flipkart", "flipkart", "flipkart", "bigbasket", "myntra", "flipkart", "flipkart"],
                         "category_path": ["Mobiles > Chargers > USB", "Mobiles > Cases", "Mobiles > Chargers Kit",
                                           "Phones > Cases", "Mobiles > Chargers", None, "Mobiles > Chargers > USB"]},
                        index=[10, 11, 12, 13, 14, 15, 16])
    got = assign_pg(rows, mapping)
    # the first PG in mapping order wins; a prefix matches whole levels ("Chargers Kit" is not "Chargers");
    # another source's identical path matches nothing; a missing path matches nothing; the index is kept
    assert got.tolist() == ["chargers", "mobiles", "mobiles", "mobiles", None, None, "chargers"]
    assert got.index.tolist() == rows.index.tolist()


@pytest.mark.parametrize("line, reason", [
    ("q1,watches,flipkart,en_IN,   ,100,true,Black,4\n", "empty_title"),
    ("q1,watches,flipkart,en_IN,,100,true,Black,4\n", "empty_title"),
    (b"q1,watches,flipkart,en_IN,Bad \xff\xfe bytes,100,true,Black,4\n", "invalid_text:title"),
    ("q1,watches,flipkart,en_IN,Bell \x07 Watch,100,true,Black,4\n", "invalid_text:title"),
    ("q1,watches,flipkart,en_IN," + "x" * 61 + ",100,true,Black,4\n", "title_too_long"),
    ("p0,watches,flipkart,en_IN,Again,100,true,Black,4\n", "duplicate_product_id"),
    ("q1,spaceships,flipkart,en_IN,Rocket,100,true,Black,4\n", "unknown_pg"),
    ("q1,watches,flipkart,en_IN,Watch,nan,true,Black,4\n", "bad_number:price"),
    ("q1,watches,flipkart,en_IN,Watch,-5,true,Black,4\n", "bad_number:price"),
    ("q1,watches,flipkart,en_IN,Watch,inf,true,Black,4\n", "bad_number:price"),
    ("q1,watches,flipkart,en_IN,Watch,cheap,true,Black,4\n", "wrong_type:price"),
    ("q1,watches,flipkart,en_IN,Watch,100,maybe,Black,4\n", "wrong_type:on_offer"),
    ("q1,watches,flipkart,en_IN,Watch,100,true,Black,NaN\n", "bad_number:rating"),
    (",watches,flipkart,en_IN,Watch,100,true,Black,4\n", "missing_product_id"),
])
def test_each_row_defect_is_quarantined_with_its_reason(tmp_path, line, reason):
    clean, quarantine = _run(_csv(tmp_path, line))
    assert len(clean) == 3 and len(quarantine) == 1
    row = quarantine.iloc[0]
    assert reason in row["reason"] and row["row"] == 4 and row["source_file"].endswith("catalog.csv")


def test_missing_labels_are_not_defects_and_tabs_fold(tmp_path):
    clean, quarantine = _run(_csv(tmp_path, "q1,watches,flipkart,en_IN,Plain\tWatch,,,,\n"))
    assert len(quarantine) == 0 and len(clean) == 4
    last = clean.iloc[-1]
    assert last["title"] == "Plain Watch" and pd.isna(last["price"]) and pd.isna(last["on_offer"])
    assert str(clean["price"].dtype) == "Float64" and str(clean["on_offer"].dtype) == "boolean"


def test_parquet_nan_is_a_defect_but_null_is_missing(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({
        "product_id": ["a", "b", "c"], "product_group": ["watches"] * 3, "source": ["x"] * 3,
        "locale": ["en_IN"] * 3, "title": ["Watch one", "Watch two", "Watch three"],
        "price": pa.array([10.0, None, float("nan")]), "color": pa.array(["Red", None, "Blue"]),
    }), path)
    clean, quarantine = _run(str(path))
    assert clean["product_id"].tolist() == ["a", "b"]
    assert quarantine["reason"].tolist() == ["bad_number:price"]


def test_wrong_type_in_a_category_column():
    df = pd.DataFrame({"product_id": ["a", "b"], "product_group": ["watches"] * 2, "source": "x",
                       "locale": "en_IN", "title": ["W1", "W2"], "color": ["Red", 3]})
    clean, quarantine = validate(df, "mem", PGS, CFG.tasks, 100)
    assert quarantine["reason"].tolist() == ["wrong_type:color"]


def test_a_task_on_a_required_column_labels_with_its_text(tmp_path):
    """`mrnet init` writes a multiclass task on a low-cardinality ``source`` or ``locale`` column: validation once
    crashed on it (KeyError: 'source'); the label is the column's cleaned text, in memory and streamed alike."""
    from mrnet.config.training import TaskSpec

    tasks = [*CFG.tasks, TaskSpec(name="shop", kind="multiclass", column="source", top_k=5),
             TaskSpec(name="where", kind="multiclass", column="locale", top_k=5),
             TaskSpec(name="group", kind="multiclass", column="product_group", top_k=5)]
    df = pd.DataFrame({"product_id": ["a", "b", "c"], "product_group": ["watches"] * 3, "source": [" x ", "y", "x"],
                       "locale": "en_IN", "title": ["W1", "W2", "W3"]})
    clean, quarantine = validate(df, "mem", PGS, tasks, 100)
    assert quarantine.empty and clean["source"].tolist() == ["x", "y", "x"]
    path = tmp_path / "c.csv"
    df.to_csv(path, index=False)
    clean_uri, summary = validate_catalog(str(path), str(tmp_path / "out"), PGS, tasks, 100)
    assert pd.read_parquet(clean_uri)["source"].tolist() == ["x", "y", "x"] and summary["rows_clean"] == 3


@pytest.mark.parametrize("header, message", [
    ("product_id,product_group,source,locale,name\n", "required column 'title' is missing"),
    ("productid,product_group,source,locale,title\n", "found 'productid': misnamed?"),
])
def test_missing_or_misnamed_required_column_names_file_and_column(tmp_path, header, message):
    path = tmp_path / "broken.csv"
    path.write_text(header + "1,watches,x,en_IN,Watch\n")
    with pytest.raises(CatalogError) as err:
        validate_catalog(str(path), str(tmp_path / "out"), PGS, CFG.tasks, 100)
    assert message in str(err.value) and "broken.csv" in str(err.value)


def test_validate_catalog_writes_clean_quarantine_and_summary(tmp_path):
    uri = _csv(tmp_path, "q1,spaceships,flipkart,en_IN,Rocket,100,true,Black,4\n")
    clean_uri, summary = validate_catalog(uri, str(tmp_path / "out"), PGS, CFG.tasks, 100)
    assert len(pd.read_parquet(clean_uri)) == 3
    assert len(pd.read_parquet(tmp_path / "out" / "quarantine.parquet")) == 1
    saved = json.loads((tmp_path / "out" / "quarantine_summary.json").read_text())
    assert saved["by_reason"] == {"unknown_pg": 1} and saved["rows_in"] == 4 and saved["rows_clean"] == 3
    assert any("brand" in w for w in saved["warnings"])  # task column absent → warning, not error
    assert not list((tmp_path / "out").glob("*.tmp*"))  # no half-written files left behind
