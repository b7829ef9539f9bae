"""Embeddings: Parquet schema, completeness, shards and their commit, the parallel tokenizer,
cold start from a titles CSV."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrnet.config.training import EmbedConfig
from mrnet.data.pgs import pg_counts
from mrnet.data.text import Vocab, encode_parallel
from mrnet.encoder import embed
from mrnet.encoder.embed import embed_titles, read_titles_csv
from mrnet.encoder.model import load_model
from mrnet.run import steps
from tests.helpers import REPO


@pytest.fixture(scope="module")
def trained(tiny_artifacts):
    cfg, catalog_uri, vectors_uri = tiny_artifacts
    model_uri, _ = steps.train_step(cfg, "beverages", catalog_uri, vectors_uri)
    return cfg, catalog_uri, model_uri


def test_pg_embeddings_parquet_has_one_float32_d_vector_per_product(trained):
    cfg, catalog_uri, model_uri = trained
    uri, stats = steps.embed_step(cfg, model_uri, catalog_uri, "beverages")
    table = pq.read_table(uri)
    assert table.column_names == ["product_id", "product_group", "model_version", "embedding"]
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == cfg.model.embed_dim == 256 and kind.value_type == pa.float32()
    df = table.to_pandas()
    catalog = pd.read_parquet(catalog_uri)
    assert set(df.product_id) == set(catalog.loc[catalog.product_group == "beverages", "product_id"])
    assert df.model_version.nunique() == 1 and len(df.model_version[0]) == 12
    emb = np.stack(df.embedding.to_numpy())
    assert emb.dtype == np.float32 and np.isfinite(emb).all() and emb.std() > 0


def test_batch_and_single_title_inference_agree(trained):
    _, catalog_uri, model_uri = trained
    model, meta = load_model(model_uri)
    titles = pd.read_parquet(catalog_uri).title.head(40).tolist()
    batched = embed_titles(model, meta, titles, batch_size=7)
    single = np.concatenate([embed_titles(model, meta, [t]) for t in titles])
    assert np.abs(batched - single).max() < 1e-5


def test_shards_committed_equal_one_file(trained, tmp_path):
    """Sharded embedding (the DAGs' embed_shard tasks + the report's commit) gives exactly the
    vectors, ids and order of embedding the PG in one go."""
    cfg, catalog_uri, model_uri = trained
    whole = embed.read_embeddings(steps.embed_step(cfg, model_uri, catalog_uri, "beverages")[0])
    n = int((pd.read_parquet(catalog_uri).product_group == "beverages").sum())
    shards = embed.shard_ids("beverages", n, 7)
    assert len(shards) == -(-n // 7) and shards[0] == f"beverages/part-00000-of-{len(shards):05d}"
    folder, parts = tmp_path / "beverages", []
    for shard in shards:
        uri, stats = embed.embed_shard(model_uri, catalog_uri, shard, f"{tmp_path}/{shard}.parquet",
                                       EmbedConfig(shard_size=7, batch_size=3))
        parts.append({"uri": uri, "rows": stats["products"]} | stats)
    with pytest.raises(FileNotFoundError, match="no _manifest.json, so its shards were never committed"):
        embed.read_embeddings(str(folder))
    embed.commit_dataset(str(folder), parts, "v")
    sharded = embed.read_embeddings(str(folder))
    assert sharded[0]["product_id"].tolist() == whole[0]["product_id"].tolist()
    assert np.abs(sharded[1] - whole[1]).max() < 1e-5
    assert len(pd.read_parquet(folder)) == n  # any Parquet reader takes the folder (skips _manifest.json)
    # a part replaced after the commit by a valid Parquet with fewer rows is refused, naming it, by every reader
    first = parts[0]["uri"]
    pd.read_parquet(first).head(2).to_parquet(first)
    for read in (embed.read_embeddings, lambda u: list(embed.embedding_batches(u))):
        with pytest.raises(ValueError, match=rf"{first}: 2 rows, where .*_manifest.json says {parts[0]['rows']}"):
            read(str(folder))


def test_a_shard_streams_in_chunks_with_one_tokenizer_pool(trained, tmp_path):
    """A shard written chunk by chunk (tokenized by a pool that lives for the shard, each chunk written
    while the next is encoded) equals the shard embedded whole, row for row."""
    cfg, catalog_uri, model_uri = trained
    n = int((pd.read_parquet(catalog_uri).product_group == "beverages").sum())
    (shard,) = embed.shard_ids("beverages", n, 1000)
    one, _ = embed.embed_shard(model_uri, catalog_uri, shard, str(tmp_path / "one.parquet"), EmbedConfig(chunk_rows=10**6))
    many, stats = embed.embed_shard(model_uri, catalog_uri, shard, str(tmp_path / "many.parquet"),
                                    EmbedConfig(chunk_rows=13, batch_size=5, tokenize_workers=2, parallel_min_titles=1))
    assert stats["products"] == n and stats["tokenize_workers"] == 2
    assert pq.ParquetFile(many).metadata.num_row_groups == -(-n // 13)
    a, b = embed.read_embeddings(one), embed.read_embeddings(many)
    assert a[0]["product_id"].tolist() == b[0]["product_id"].tolist() and np.abs(a[1] - b[1]).max() < 1e-5


@pytest.mark.parametrize("sort", [True, False])
def test_shard_rows_read_row_groups_and_equal_a_plain_slice(tmp_path, sort):
    """Many row groups, sorted by PG (as validation writes it) or interleaved: every shard is
    exactly its slice of the PG's rows in catalog order."""
    pgs = ["a", "b", "c"] * 30 + ["b"] * 13
    df = pd.DataFrame({"product_id": [f"p{i}" for i in range(len(pgs))], "title": [f"t{i}" for i in range(len(pgs))],
                       "product_group": pgs})
    if sort:
        df = df.sort_values("product_group", kind="stable")
    path = tmp_path / "c.parquet"
    df.to_parquet(path, index=False, row_group_size=6)
    for pg in "abc":
        rows = df[df.product_group == pg]
        shards = embed.shard_ids(pg, len(rows), 7)
        got = pd.concat([embed.shard_rows(str(path), shard, 7) for shard in shards])
        assert got["product_id"].tolist() == rows["product_id"].tolist()
        assert [len(embed.shard_rows(str(path), s, 7)) for s in shards[:-1]] == [7] * (len(shards) - 1)
    assert pg_counts(str(path)) == {"a": 30, "b": 43, "c": 30}


def test_shard_errors_name_the_shard(trained):
    _, catalog_uri, model_uri = trained
    with pytest.raises(ValueError, match=r"bad shard id 'beverages/part-1'"):
        embed.parse_shard("beverages/part-1")
    with pytest.raises(ValueError, match=r"shard watches/part-00000-of-00001 is PG 'watches' but model .* is PG 'beverages'"):
        embed.embed_shard(model_uri, catalog_uri, "watches/part-00000-of-00001", "x.parquet", EmbedConfig())
    with pytest.raises(ValueError, match=r"shard beverages/part-00000-of-00009: PG beverages has \d+ products .* "
                                         r"not 9 shard\(s\) of 1000"):
        embed.shard_rows(catalog_uri, "beverages/part-00000-of-00009", 1000)


def test_parallel_tokenizer_matches_one_process(trained):
    _, catalog_uri, model_uri = trained
    words = load_model(model_uri)[1]["vocab"]
    titles = pd.read_parquet(catalog_uri).title.head(45).tolist() + ["", None]
    ids, lengths = Vocab(words).encode_many(titles, 20)
    pooled_ids, pooled_lengths = encode_parallel(words, titles, 20, workers=2, chunk=10)
    assert np.array_equal(lengths, pooled_lengths) and np.array_equal(ids, pooled_ids)
    assert embed.tokenize_workers(0, 10, 100) == 1 and embed.tokenize_workers(3, 100, 100) == 3


def test_cold_start_cli_embeds_new_titles(trained, tmp_path):
    cfg, _, model_uri = trained
    titles = tmp_path / "new.csv"
    titles.write_text("title\nOrganic Green Tea 100 g\nCold Coffee Can 200 ml\n")
    out = tmp_path / "new.parquet"
    result = subprocess.run([sys.executable, "-m", "mrnet", "embed", "--pg", "beverages", "--model", model_uri,
                             "--titles", str(titles), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(out)
    assert df.product_id.tolist() == ["row-1", "row-2"] and len(df.embedding[0]) == cfg.model.embed_dim


def test_cold_start_errors_name_file_column_and_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nTea\n")
    with pytest.raises(ValueError, match=r"bad.csv: required column 'title'"):
        read_titles_csv(str(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("title\nTea\n   \n")
    with pytest.raises(ValueError, match=r"empty.csv: column 'title' is empty on row\(s\) \[2\]"):
        read_titles_csv(str(empty))


def test_float16_storage_round_trips_and_readers_see_float32(tmp_path):
    from mrnet.encoder.embed import read_embeddings, write_embeddings

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((500, 128)).astype(np.float32) * 0.3
    ids = [f"p{i}" for i in range(500)]
    full = write_embeddings(str(tmp_path / "f32.parquet"), ids, "watches", "v1", emb)
    half = write_embeddings(str(tmp_path / "f16.parquet"), ids, "watches", "v1", emb, "float16")
    (_, x32), (meta, x16) = read_embeddings(full), read_embeddings(half)
    assert x16.dtype == np.float32 and x16.shape == emb.shape and list(meta["product_id"]) == ids
    assert np.array_equal(x32, emb)
    assert np.abs(x16 - emb).max() <= 1e-3 * np.abs(emb).max() + 1e-6  # float16: 11 bits of mantissa
    assert (tmp_path / "f16.parquet").stat().st_size < 0.7 * (tmp_path / "f32.parquet").stat().st_size
