"""Build the canonical demo catalog from the three real public catalogs in ``shared/data``.

Sources (each folder's README gives provenance): Flipkart 20k, BigBasket 27.5k,
Myntra fashion 44k. The output has one row per product with the canonical columns
below; product groups come from ``configs/pg_mapping.yaml`` (23 PGs, like the paper).
Nothing is invented: a label that a source lacks stays empty, and the paper's
alternating optimization (§3.1) trains each task on the products that have it.
Rows whose category matches no PG keep an empty ``product_group``; validation
(data/catalog.py) quarantines them with reason ``unknown_pg`` so nothing disappears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mrnet.data.pgs import load_pg_mapping
from mrnet.io import storage

CANONICAL = [
    "product_id", "product_group", "source", "locale", "title", "description",
    # training labels (Table 1 tasks; docs/DATA.md)
    "color", "gender", "subcategory", "item_type", "brand", "price", "list_price", "on_offer", "rating",
    # reserved for evaluation, never a training target (docs/DATA.md)
    "category_path", "season", "usage",
]
SEP = " > "


def assign_pg(df: pd.DataFrame, mapping: dict) -> pd.Series:
    """First PG whose (source, prefix) matches each row's category path; None if none."""
    keys = df["source"].astype(str) + "\x1f" + df["category_path"].fillna("").astype(str)
    first = ~keys.duplicated().to_numpy()   # a few thousand distinct paths: match each once, not each row
    sources = df["source"].to_numpy()[first]
    levels = df["category_path"].fillna("")[first].str.split(SEP)
    pgs = pd.Series([None] * int(first.sum()), index=keys[first].to_numpy(), dtype=object)
    for pg, rules in mapping.items():
        for source, prefix in rules:
            n = len(prefix)
            hit = (sources == source) & levels.map(lambda p, pre=prefix, n=n: tuple(p[:n]) == pre).to_numpy()
            pgs[hit & pgs.isna().to_numpy()] = pg
    return pd.Series(pgs.reindex(keys.to_numpy()).to_numpy(), index=df.index, dtype=object)


def _flipkart(raw: Path) -> pd.DataFrame:
    folder = raw / "flipkart_ecommerce_20k"
    cat = pd.read_csv(folder / "flipkart_id_title_category_20k.csv.gz", header=None,
                      names=["uniq_id", "product_name", "tree"])
    meta = pd.read_csv(folder / "flipkart_id_title_price_brand_rating_20k.csv.gz")
    desc = pd.read_csv(folder / "flipkart_all_columns_first999.csv.gz").dropna(how="all")
    df = cat.merge(meta.drop(columns=["product_name"]), on="uniq_id", how="left")
    df = df.merge(desc[["uniq_id", "description"]], on="uniq_id", how="left")
    levels = df["tree"].str.strip('[]"').str.split(" >> ")
    # A path with one element is the product name itself (no category): keep it empty.
    levels = levels.map(lambda p: [x.strip() for x in p if not x.endswith("...")] if len(p) > 1 else [])
    l2 = levels.str[1]
    gender = l2.str.extract(r"^(Women|Men|Kids)'", expand=False)
    rating = pd.to_numeric(df["product_rating"].where(df["product_rating"] != "No rating available"),
                           errors="coerce")
    return pd.DataFrame({
        "product_id": "flipkart:" + df["uniq_id"], "source": "flipkart", "title": df["product_name"],
        "description": df["description"], "category_path": levels.map(SEP.join),
        "gender": gender, "subcategory": l2, "item_type": levels.str[2],
        "brand": df["brand"].str.strip(), "price": df["discounted_price"], "list_price": df["retail_price"],
        "rating": rating,
    })


def _bigbasket(raw: Path) -> pd.DataFrame:
    df = pd.read_csv(raw / "bigbasket_products_27k" / "BigBasket_Products.csv.gz")
    path = df["category"].str.strip() + SEP + df["sub_category"].str.strip() + SEP + df["type"].str.strip()
    return pd.DataFrame({
        "product_id": "bigbasket:" + df["index"].astype(str), "source": "bigbasket",
        "title": df["product"], "category_path": path, "subcategory": df["sub_category"].str.strip(),
        "item_type": df["type"].str.strip(), "brand": df["brand"].str.strip(),
        "price": df["sale_price"], "list_price": df["market_price"], "rating": df["rating"],
    })


def _myntra(raw: Path) -> pd.DataFrame:
    df = pd.read_csv(raw / "fashion_products_44k" / "styles.csv.gz")
    # Titles containing commas spilled into the two unnamed columns: re-join them (README).
    spill = [df[c].fillna("").astype(str) for c in df.columns[8:]]
    extra = (spill[0].str.cat(spill[1:], sep=", ") if spill else pd.Series("", index=df.index)).str.strip(", ")
    title = (df["productDisplayName"].fillna("") + ", " + extra).str.strip(", ")
    return pd.DataFrame({
        "product_id": "myntra:" + df["id"].astype(str), "source": "myntra", "title": title,
        "category_path": df["masterCategory"].str.strip() + SEP + df["subCategory"].str.strip(),
        "color": df["baseColour"], "gender": df["gender"], "subcategory": df["subCategory"],
        "season": df["season"], "usage": df["usage"],
    })


def build_demo_catalog(raw_dir: str | Path, pg_mapping: str | Path, out_uri: str) -> str:
    """Read the three catalogs, map categories to the 23 PGs, write canonical Parquet."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"raw data folder not found: {raw} (set data.raw_dir)")
    df = pd.concat([_flipkart(raw), _bigbasket(raw), _myntra(raw)], ignore_index=True)
    df["locale"] = "en_IN"
    on_offer = (df["price"] < df["list_price"]).astype("boolean")
    on_offer[df["price"].isna() | df["list_price"].isna()] = pd.NA
    df["on_offer"] = on_offer
    df["product_group"] = assign_pg(df, load_pg_mapping(pg_mapping))
    for col in CANONICAL:
        if col not in df:
            df[col] = np.nan
    df = df[CANONICAL]
    for col in ("description",):
        df[col] = df[col].fillna("")
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return out_uri
