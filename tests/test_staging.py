"""Streaming validation (data/staging.py, data/merge.py): the same clean catalog and quarantine as validating the whole
catalog in memory, across batches, hash buckets and files; exact accounting; memory flat in catalog size."""

import json
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrnet.config.schema import load_config
from mrnet.data import merge, staging
from mrnet.data.catalog import read_catalog, sample_per_pg, validate
from tests.helpers import REPO, moto_s3

CFG = load_config(REPO / "configs" / "demo.yaml")
PGS = ["watches", "beverages", "automotive", "footwear"]
HEADER = "product_id,product_group,source,locale,title,price,on_offer,color,rating,extra"


def defect_rows(n: int, seed: int = 0, start: int = 0) -> list[str]:
    """CSV records with every row defect, duplicate ids far apart (some of defective rows) and
    records with a surplus field."""
    rnd, ids, lines = random.Random(seed), [], []
    for i in range(start, start + n):
        pid = rnd.choice(ids) if ids and rnd.random() < 0.03 else f"p{i}"
        ids.append(pid)
        pg, title = rnd.choice(PGS), f"Title {i} {rnd.choice(['steel', 'black', 'tea', 'tyre'])}"
        price, offer = str(rnd.randint(1, 5000)), rnd.choice(["true", "false", ""])
        d = rnd.random()
        title = "   " if d < 0.01 else "Bell \x07 watch" if d < 0.02 else '"two\tlines\nhere"' if d < 0.025 else \
            "x" * 600 if d < 0.03 else title
        pg = "spaceships" if 0.03 <= d < 0.04 else pg
        price = "cheap" if 0.04 <= d < 0.05 else "-5" if 0.05 <= d < 0.06 else price
        offer = "maybe" if 0.06 <= d < 0.07 else offer
        pid = "" if 0.07 <= d < 0.08 else pid
        row = ",".join([pid, pg, "flipkart", "en_IN", title, price, offer, rnd.choice(["Black", "Red", ""]),
                        rnd.choice(["4.5", "3", ""]), rnd.choice(["x", "", "y z"])])
        lines.append(row + (",surplus" if rnd.random() < 0.004 else ""))
    return lines


def _validate(source, out, **knobs):
    return merge.validate_catalog(str(source), str(out), PGS, CFG.tasks, 512, **knobs)


def _in_memory(path):
    bad: list = []
    return validate(read_catalog(str(path), bad), str(path), PGS, CFG.tasks, 512, bad)


def test_streaming_gives_the_same_rows_and_reasons_as_validating_in_memory(tmp_path):
    path = tmp_path / "defects.csv"
    path.write_text("\n".join([HEADER, *defect_rows(6000)]) + "\n")
    clean, quarantine = _in_memory(path)
    assert {"duplicate_product_id", "bad_row", "invalid_text:title", "unknown_pg"} <= {
        r.split("(")[0] for text in quarantine["reason"] for r in text.split("; ")}
    # small batches and many id buckets: duplicates are found across both
    uri, summary = _validate(path, tmp_path / "out", chunk_rows=313, bucket_bytes=20_000, row_group_rows=500)
    assert summary["rows_in"] == 6000 == summary["rows_clean"] + summary["rows_quarantined"]
    streamed = pd.read_parquet(uri)
    pd.testing.assert_frame_equal(streamed, clean.sort_values("product_group", kind="stable").reset_index(drop=True))
    q = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    assert list(q["row"]) == sorted(q["row"])  # in file order
    assert list(zip(q["row"], q["reason"])) == list(zip(quarantine["row"], quarantine["reason"]))
    # a quarantined row shows the file's text, except a duplicate that passed every other check: its checked values
    same = q.merge(quarantine, on="row", suffixes=("", "_mem"))
    only_dup = same["reason"].str.fullmatch(r"duplicate_product_id\(first at row \d+\)")
    for col in ("title", "price", "on_offer", "raw"):
        assert (same.loc[~only_dup, col] == same.loc[~only_dup, f"{col}_mem"]).all(), col
    groups = pq.ParquetFile(uri).metadata
    for rg in range(groups.num_row_groups):  # a row group never holds two PGs, nor more than row_group_rows
        stats = groups.row_group(rg).column(1).statistics
        assert stats.min == stats.max and groups.row_group(rg).num_rows <= 500


def test_a_folder_or_glob_of_parts_validates_as_one_catalog(tmp_path):
    rows = defect_rows(3000, seed=1)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, chunk in enumerate([rows[:1000], rows[1000:2200], rows[2200:]]):
        (folder / f"part-{i}.csv").write_text("\n".join([HEADER, *chunk]) + "\n")
    (folder / "_SUCCESS").write_text("")  # markers and hidden files are not parts
    (folder / "part-9.csv").write_text(f"{HEADER}\np0,watches,flipkart,en_IN,Again the first id,1,true,Black,4,x\n")
    uri, summary = _validate(folder, tmp_path / "out", chunk_rows=400, bucket_bytes=5_000)
    assert summary["files"] == [str(folder / f"part-{i}.csv") for i in (0, 1, 2, 9)]
    assert summary["rows_in"] == 3001 == summary["rows_clean"] + summary["rows_quarantined"]
    q = pd.read_parquet(tmp_path / "out" / "quarantine.parquet")
    last = q[q["source_file"].str.endswith("part-9.csv")]
    assert last["reason"].tolist() == ["duplicate_product_id(first at row 1 of part-0.csv)"]
    assert list(zip(q["source_file"], q["row"])) == sorted(zip(q["source_file"], q["row"]))
    catalog = pd.read_parquet(uri)
    assert catalog["product_id"].is_unique and len(catalog) == summary["rows_used"] == summary["rows_clean"]
    # the same catalog as one file; a glob picks the same files
    one = tmp_path / "one.csv"
    one.write_text("\n".join([HEADER, *rows]) + "\n")
    whole, _ = _in_memory(one)
    assert set(catalog["product_id"]) == set(whole["product_id"])
    glob_uri, glob_summary = _validate(str(folder / "part-*.csv"), tmp_path / "glob")
    assert glob_summary["rows_in"] == 3001 and pd.read_parquet(glob_uri).equals(catalog)


def test_the_streamed_sample_is_the_in_memory_sample(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("\n".join([HEADER, *defect_rows(4000, seed=2)]) + "\n")
    clean, _ = _in_memory(path)
    for cap, fraction in ((300, None), (None, 0.25), (500, 0.5)):
        uri, summary = _validate(path, tmp_path / f"s{cap}{fraction}", max_rows_per_pg=cap, sample_fraction=fraction,
                                 seed=13, chunk_rows=700)
        expected = sample_per_pg(clean, cap, 13, fraction).sort_values("product_group", kind="stable")
        assert pd.read_parquet(uri).equals(expected.reset_index(drop=True)), (cap, fraction)
        assert summary["rows_used"] == len(expected) < summary["rows_clean"]


def test_parts_on_s3_validate(tmp_path):
    rows = defect_rows(500, seed=3)
    with moto_s3(tmp_path / "cache", "cat"):
        from mrnet.io import storage

        for i, chunk in enumerate([rows[:250], rows[250:]]):
            storage.write_text(f"s3://cat/catalog/part-{i}.csv", "\n".join([HEADER, *chunk]) + "\n")
        uri, summary = _validate("s3://cat/catalog", tmp_path / "out")
        assert summary["files"] == ["s3://cat/catalog/part-0.csv", "s3://cat/catalog/part-1.csv"]
        assert summary["rows_in"] == 500 == summary["rows_clean"] + summary["rows_quarantined"]
        # staged on S3 too (an artifact root on S3: check tasks on other workers), and cleaned up after the merge
        s3_uri, s3_summary = _validate("s3://cat/catalog", "s3://cat/run/catalog", chunk_rows=100)
        assert pd.read_parquet(storage.local_path(s3_uri)).equals(pd.read_parquet(uri))
        assert s3_summary["by_reason"] == summary["by_reason"]
        assert not [k for k in storage.sizes("s3://cat/run/catalog") if k.startswith("staging/")]


def test_a_retried_part_starts_over_and_a_missing_part_stops_the_merge(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("\n".join([HEADER, *defect_rows(300, seed=4)]) + "\n")
    record = staging.plan(str(path), str(tmp_path / "out"), 1 << 20)
    with pytest.raises(RuntimeError, match="catalog part-00000 was never checked"):
        merge.merge(str(tmp_path / "out"), record)
    for _ in range(2):  # a retry rewrites the part's files, never appends to them
        staging.check_part(record, "part-00000", str(tmp_path / "out"), PGS, CFG.tasks, 512, chunk_rows=100)
    _, summary = merge.merge(str(tmp_path / "out"), record)
    assert summary["rows_in"] == 300 == summary["rows_clean"] + summary["rows_quarantined"]
    assert not (tmp_path / "out" / "staging").exists()


PEAK = """
import resource, sys
from mrnet.config.schema import load_config
from mrnet.data import merge
cfg = load_config(sys.argv[3])
merge.validate_catalog(sys.argv[1], sys.argv[2], None, cfg.tasks, 512, chunk_rows=20_000, bucket_bytes=8_000_000,
                       row_group_rows=20_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _synthetic(path, n: int) -> None:
    """``n`` distinct products in 20 PGs with label columns, written in row groups of 100k."""
    rng = np.random.default_rng(n)
    words = np.array([f"w{i}" for i in range(5000)])
    with pq.ParquetWriter(path, pa.schema([(c, pa.string()) for c in ("product_id", "product_group", "source",
                                                                      "locale", "title", "color")] +
                                          [("price", pa.float64())])) as writer:
        for start in range(0, n, 100_000):
            k = min(100_000, n - start)
            titles = [" ".join(t) for t in words[rng.integers(0, 5000, (k, 8))]]
            writer.write_table(pa.table({
                "product_id": [f"id{i}" for i in range(start, start + k)],
                "product_group": [f"pg{i % 20}" for i in range(start, start + k)], "source": ["s"] * k,
                "locale": ["en"] * k, "title": titles, "color": rng.choice(["red", "blue"], k).tolist(),
                "price": rng.random(k) * 100}))


def test_validation_memory_does_not_grow_with_the_catalog(tmp_path):
    peaks = {}
    for n in (200_000, 1_000_000):
        _synthetic(tmp_path / f"c{n}.parquet", n)
        out = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"c{n}.parquet"), str(tmp_path / f"o{n}"),
                              str(REPO / "configs" / "demo.yaml")], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = int(out.stdout.split()[-1]) / 1024  # MiB
        summary = json.loads((tmp_path / f"o{n}" / "quarantine_summary.json").read_text())
        assert summary["rows_used"] == n
    # holding the catalog costs ~1.6 GB per million rows (the in-memory path): 800k more rows would add ~1.3 GB
    assert peaks[1_000_000] - peaks[200_000] < 120, peaks
