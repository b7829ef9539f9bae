"""The sparse autoencoder's exact block-sparse loss equals the dense G·d formulation (paper §3.2)."""

import pytest
import torch

from mrnet.autoencoders.sparse import SparseAutoencoder, kl_sparsity, sparse_ae_loss


def dense_loss(model: SparseAutoencoder, x, group, rho, beta):
    """The naive formulation: build the G·d input and output explicitly."""
    n, d = x.shape
    dense = torch.zeros(n, model.n_groups * d, dtype=x.dtype)
    for i in range(n):
        dense[i, group[i] * d:(group[i] + 1) * d] = x[i]                      # block placement
    w_enc = model.w_enc.reshape(model.n_groups * d, model.hidden)            # (G·d, 2d)
    h = torch.sigmoid(dense @ w_enc + model.b_enc)
    out = h @ model.w_dec + model.b_dec                                      # (B, G·d)
    return (out - dense).pow(2).sum(1).mean() + beta * kl_sparsity(h, rho), h


def test_block_placement_and_encoder_gather_match_the_dense_input():
    torch.manual_seed(0)
    model = SparseAutoencoder(n_groups=5, d=4, hidden=6).double()
    x, group = torch.randn(7, 4, dtype=torch.float64), torch.tensor([0, 4, 2, 2, 1, 3, 0])
    _, h_dense = dense_loss(model, x, group, 0.05, 0.1)
    assert torch.allclose(model.encode(x, group), h_dense, atol=1e-12)


def test_loss_and_gradients_equal_the_dense_formulation():
    torch.manual_seed(1)
    model = SparseAutoencoder(n_groups=6, d=5, hidden=8).double()
    with torch.no_grad():
        model.b_dec.normal_()  # a non-zero decoder bias exercises every closed-form term
        model.b_enc.normal_()
    x, group = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 6, (9,))
    sparse = sparse_ae_loss(model, x, group, rho=0.1, beta=0.3)
    grads_sparse = torch.autograd.grad(sparse, list(model.parameters()))
    dense, _ = dense_loss(model, x, group, 0.1, 0.3)
    grads_dense = torch.autograd.grad(dense, list(model.parameters()))
    assert torch.allclose(sparse, dense, rtol=1e-10, atol=1e-10)
    for gs, gd in zip(grads_sparse, grads_dense):
        assert torch.allclose(gs, gd, rtol=1e-9, atol=1e-10)


def test_kl_sparsity_is_zero_at_the_target_and_positive_elsewhere():
    assert kl_sparsity(torch.full((4, 3), 0.05), 0.05).abs() < 1e-9
    assert kl_sparsity(torch.full((4, 3), 0.5), 0.05) > 0.5


def test_training_steps_reduce_the_loss():
    torch.manual_seed(2)
    model = SparseAutoencoder(n_groups=4, d=8)
    x, group = torch.randn(64, 8), torch.randint(0, 4, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = sparse_ae_loss(model, x, group).item()
    for _ in range(50):
        opt.zero_grad()
        loss = sparse_ae_loss(model, x, group)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def _write_pg(path, ids, x, pg):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"product_id": ids, "product_group": [pg] * len(ids), "model_version": ["v"] * len(ids),
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])}),
                   path)
    return str(path)


def test_training_lowers_the_loss_and_blocks_follow_the_pg_mapping(tmp_path):
    import numpy as np
    import pandas as pd

    from mrnet.autoencoders import sparse as sparse_ae
    from mrnet.config.autoencoders import SparseAEConfig

    rng = np.random.default_rng(0)
    order = ["a", "b", "c", "d"]                        # the mapping; this run has only b and d
    low_rank = lambda j: np.tanh(rng.normal(size=(300, 2)) @ rng.normal(size=(2, 8)) + 0.5 * j)  # noqa: E731
    emb = {pg: _write_pg(tmp_path / f"{pg}.parquet", [f"{pg}{i}" for i in range(300)], low_rank(j), pg)
           for j, pg in enumerate(["b", "d"])}
    cfg = SparseAEConfig(epochs=20, batch_size=64, lr=3e-3, val_fraction=0.2, hidden=16)
    uri, report = sparse_ae.train_sparse_ae(cfg, emb, order, str(tmp_path / "ae.safetensors"), progress=False)
    first, last = report["history"][0], report["history"][-1]
    assert last["val"]["recon"] < 0.3 * first["val"]["recon"] and last["val"]["recon_rel"] < 0.25 and report["n_val"] > 0
    model, meta = sparse_ae.load(uri)
    assert meta["pg_order"] == order and model.w_enc.shape == (4, 8, 16)   # G = the mapping's PGs
    x = np.stack(pd.read_parquet(emb["d"])["embedding"].to_numpy()).astype(np.float32)
    h = sparse_ae.agnostic(model, meta, x, "d")
    expected = torch.sigmoid(torch.from_numpy(x) @ model.w_enc[3] + model.b_enc)   # d sits at block 3
    assert np.allclose(h, expected.detach().numpy(), atol=1e-6)
    out, stats = sparse_ae.encode_all(uri, emb, str(tmp_path / "agnostic.parquet"))
    df = pd.read_parquet(out)
    assert stats["products"] == len(df) == 600 and len(df["embedding"][0]) == 16
    assert df.groupby("product_group").size().to_dict() == {"b": 300, "d": 300}
    with pytest.raises(ValueError, match="PG 'x' has no block"):
        sparse_ae.agnostic(model, meta, x, "x")


def test_aligned_init_starts_axis_aligned_and_training_keeps_each_unit_on_its_dimension(tmp_path):
    """``sparse_ae.init: aligned``: unit j starts as sigmoid(s·x_j), unit d+j as sigmoid(−s·x_j), and after
    training each still ranks the products by its own input dimension (what RF's splits need); a random
    init mixes the dimensions."""
    import numpy as np

    from mrnet.autoencoders import sparse as sparse_ae
    from mrnet.config.autoencoders import SparseAEConfig

    fresh = SparseAutoencoder(n_groups=3, d=4, aligned_scale=4.0)
    x = torch.randn(5, 4)
    h = fresh.encode(x, torch.full((5,), 2))
    assert torch.allclose(h, torch.sigmoid(torch.cat([4 * x, -4 * x], 1)), atol=1e-6)
    assert SparseAutoencoder(1, 4, hidden=3, aligned_scale=2.0).w_enc[0].tolist() == \
        (torch.eye(4) * 2)[:, :3].tolist()                     # narrower than 2d: the first columns

    def rank_corr(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])

    d = 8
    x = np.tanh(np.random.default_rng(0).normal(size=(800, d)) * 0.7).astype(np.float32)
    emb = {"a": _write_pg(tmp_path / "a.parquet", [f"p{i}" for i in range(800)], x, "a")}
    own = {}
    for init in ("aligned", "random"):
        cfg = SparseAEConfig(epochs=30, batch_size=64, init=init)
        uri, _ = sparse_ae.train_sparse_ae(cfg, emb, ["a"], str(tmp_path / f"{init}.safetensors"), progress=False)
        model, meta = sparse_ae.load(uri)
        h = sparse_ae.agnostic(model, meta, x, "a")
        own[init] = [rank_corr(h[:, j], x[:, j]) for j in range(d)] + [-rank_corr(h[:, d + j], x[:, j])
                                                                        for j in range(d)]
    assert min(own["aligned"]) > 0.9, own["aligned"]
    assert np.median(own["random"]) < 0.7, own["random"]
    # auto: aligned with one PG block, random with several (where the blocks must come apart)
    assert sparse_ae.init_scale_for(SparseAEConfig(), 1) == 4.0
    assert sparse_ae.init_scale_for(SparseAEConfig(), 23) is None
    assert sparse_ae.init_scale_for(SparseAEConfig(init="aligned", init_scale=2.0), 23) == 2.0


def test_the_shared_anchor_aligns_the_pg_blocks_so_a_classifier_transfers_across_pgs(tmp_path):
    """``sparse_ae.anchor_weight``: two PGs see the same latent product attributes through unrelated
    maps (two separately trained PG models). With the paper's loss alone each block may put the
    attributes anywhere in the hidden code; with one decoder predicting a shared target (here the
    latent itself) from every PG's code, a linear read-out fit on PG a's codes also works on PG b's."""
    import numpy as np
    from sklearn.linear_model import Ridge

    from mrnet.autoencoders import sparse as sparse_ae
    from mrnet.config.autoencoders import SparseAEConfig

    rng = np.random.default_rng(3)
    n, d = 600, 8
    z = {pg: rng.normal(size=(n, 3)).astype(np.float32) for pg in "ab"}
    x = {pg: np.tanh(z[pg] @ rng.normal(size=(3, d))).astype(np.float32) for pg in "ab"}
    emb = {pg: _write_pg(tmp_path / f"{pg}.parquet", [f"{pg}{i}" for i in range(n)], x[pg], pg) for pg in "ab"}
    latent = {f"{pg}{i}": z[pg][i] for pg in "ab" for i in range(n)}
    anchors = lambda ids: np.stack([latent[i] for i in ids])  # noqa: E731
    transfer, anchor_rel = {}, {}
    for weight in (0.0, 1.0):
        cfg = SparseAEConfig(epochs=40, batch_size=64, hidden=16, anchor_weight=weight)
        uri, report = sparse_ae.train_sparse_ae(cfg, emb, ["a", "b"], str(tmp_path / f"{weight}.safetensors"),
                                                progress=False, anchors=anchors)
        model, meta = sparse_ae.load(uri)
        h = {pg: sparse_ae.agnostic(model, meta, x[pg], pg) for pg in "ab"}
        transfer[weight] = Ridge(alpha=1.0).fit(h["a"], z["a"]).score(h["b"], z["b"])   # R² on PG b
        anchor_rel[weight] = report["history"][-1]["val"].get("anchor_rel")
    assert anchor_rel[0.0] is None and anchor_rel[1.0] < 0.3, anchor_rel     # no anchor → none reported
    # seeds 0-5 gave R² 0.56-0.71 with the anchor, -0.25-0.11 without
    assert transfer[1.0] > 0.45 and transfer[0.0] < 0.25, transfer


def test_a_product_without_an_anchor_target_adds_no_anchor_error():
    """A refresh's base PGs can hold products today's catalog lacks: their anchor row is NaN and counts 0,
    and the z-scoring ignores it."""
    import numpy as np

    from mrnet.autoencoders.sparse import Anchor, standardize

    a = standardize(np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 6.0]], np.float32))
    assert np.isnan(a[1]).all() and np.allclose(a[[0, 2]], [[-1, -1], [1, 1]])
    anchor = Anchor(hidden=6, width=2, weight=1.0)                 # 2d = 6 for d = 3
    h = torch.rand(3, 6)
    err = anchor.error(h, torch.from_numpy(a))
    assert err[1] == 0 and err[0] > 0 and torch.isfinite(err).all()
    loss = sparse_ae_loss(SparseAutoencoder(1, 3), torch.randn(3, 3), torch.zeros(3, dtype=torch.long),
                          anchor=anchor, target=torch.from_numpy(a))
    assert torch.isfinite(loss)


def test_sharded_agnostic_embeddings_equal_the_single_file_and_training_reads_a_bounded_sample(tmp_path):
    """One part per PG shard (the DAGs' encode_agnostic), committed with a manifest, holds exactly the single
    file's rows and values; training draws a stable hash sample within sparse_ae.max_products."""
    import numpy as np
    import pandas as pd

    from mrnet.autoencoders import sparse as sparse_ae
    from mrnet.config.autoencoders import SparseAEConfig
    from mrnet.encoder.embed import commit_dataset, read_embeddings

    rng = np.random.default_rng(1)
    emb = {}
    for pg, n in (("a", 250), ("b", 90)):  # PG a in three shards, b in one
        folder, parts = tmp_path / pg, []
        folder.mkdir()
        x = rng.normal(size=(n, 6)).astype(np.float32)
        for i, rows in enumerate(np.array_split(np.arange(n), 3 if pg == "a" else 1)):
            part = _write_pg(folder / f"part-{i:05d}-of-00003.parquet", [f"{pg}{r}" for r in rows], x[rows], pg)
            parts.append({"uri": part, "rows": len(rows)})
        emb[pg] = commit_dataset(str(folder), parts, "v")
    assert sparse_ae.sample_sizes({"a": 250, "b": 90}, 200, 250) == {"a": 160, "b": 90}
    cfg = SparseAEConfig(epochs=2, batch_size=32, hidden=12, products_per_pg=200, max_products=250, val_fraction=0.1)
    uri, report = sparse_ae.train_sparse_ae(cfg, emb, ["a", "b"], str(tmp_path / "ae.safetensors"), progress=False)
    assert report["n_train"] + report["n_val"] == 250
    ids, _, _ = sparse_ae.load_embeddings(emb, ["a", "b"], 200, 13, 250)
    assert ids == sparse_ae.load_embeddings(emb, ["a", "b"], 200, 13, 250)[0]  # stable
    assert sum(i.startswith("a") for i in ids) == 160
    single = read_embeddings(sparse_ae.encode_all(uri, emb, str(tmp_path / "one.parquet"))[0])
    out, parts = tmp_path / "pg_agnostic", []
    for pg in emb:
        for part in sorted((tmp_path / pg).glob("part-*.parquet")):
            name = f"{pg}/{part.stem}.parquet"
            _, stats = sparse_ae.encode_part(uri, str(part), pg, str(out / name), batch_rows=7)
            parts.append({"uri": name, "rows": stats["products"]} | stats)
    sharded = read_embeddings(commit_dataset(str(out), parts, "v"), columns=("product_id", "product_group"))
    assert sharded[0]["product_id"].tolist() == single[0]["product_id"].tolist()
    assert np.abs(sharded[1] - single[1]).max() < 1e-6 and len(pd.read_parquet(out)) == 340
