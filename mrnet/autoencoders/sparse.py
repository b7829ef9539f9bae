"""PG-agnostic sparse autoencoder (paper §3.2): the model and its exact block-sparse loss.

The paper's input for a product of PG g is its d-dim PG-specific embedding x placed at block g
of a G·d vector (zeros elsewhere). The 2d hidden layer is the PG-agnostic embedding, and the
decoder reconstructs the whole G·d vector. Neither the G·d input nor the G·d output is ever
materialized here:

- encoder: the input has a single non-zero block, so ``W_enc · input = x · W_enc[g]``: the
  batch's rows of PG g are multiplied by block g's (d, 2d) slice, one matmul per PG present;
  h = sigmoid(x W_enc[g] + b_enc)                                                      (B, 2d)
- decoder loss: with y = h W_dec + b_dec (G·d wide, never built), the squared error against
  the block target splits exactly into the non-zero block and the zero blocks:

      ||y − target||² = ||y_g − x||² + (||y||² − ||y_g||²)
      ||y||² = h (W_dec W_decᵀ) hᵀ + 2 h (W_dec b_dec) + ||b_dec||²                  (closed form)

  The Gram matrix costs (2d)²·G·d once per batch, independent of B, and the rest is O(B·(2d)²),
  instead of O(B·2d·G·d) for the dense decoder: the saving grows with the batch size.
- sparsity (the paper's "sparsity constraint"): a KL divergence between a target mean
  activation ρ and each hidden unit's mean activation ρ̂ over the batch, as in Ng's sparse
  autoencoder notes, weighted by β. The hidden units are sigmoids, so ρ̂ ∈ (0, 1).

- shared anchor (``sparse_ae.anchor_weight``; not in the paper): one extra linear decoder, the same
  for every PG, predicts the title's z-scored mean word vector from h. The paper's loss lets each
  block put a concept anywhere in h; the anchor lines the PGs up along the shared word vectors, which
  is what a classifier across PGs and a category unseen in training need (docs/AUTOENCODERS.md).
  Training only: the saved model and the encoding are unchanged.

Training (``train_sparse_ae``) reads a stable hash sample of every PG's embeddings, batch by batch:
up to ``sparse_ae.products_per_pg`` products per PG (the paper: 500K) and ``sparse_ae.max_products``
in all; it holds out a seeded ``val_fraction`` by product id and runs Adam on large shuffled batches. The block index g of
a PG is its position in the PG mapping (``pg_order``), not in this run's PG subset, so a PG
keeps its block across runs. ``encode_all`` writes the 2d-dim PG-agnostic embedding of every
product to one Parquet beside the PG-specific ones. The model is one safetensors file whose
metadata carries its own config and PG order (nothing unpickled).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mrnet.config.autoencoders import SparseAEConfig
from mrnet.data.sample import hash_rank
from mrnet.encoder.model import adamw, load_weights, read_meta, save_model
from mrnet.io import storage
from mrnet.io.progress import bar as progress_bar

log = logging.getLogger(__name__)


class SparseAutoencoder(nn.Module):
    """G blocks of d → hidden 2d (PG-agnostic) → G·d, stored blockwise.

    ``aligned_scale`` (``sparse_ae.init: aligned``) starts every encoder block axis-aligned: unit j
    reads +s·x_j and unit d+j reads −s·x_j (units past 2d start random). Each hidden unit then starts
    as a monotone function of one input dimension, which a random forest's axis-aligned splits are
    invariant to. Without it (``random``): N(0, 1/d), which mixes the dimensions; on one PG that
    alone cost RF 1.5–3 points, but across PGs the mixed code is what carries the PG apart
    (``init_scale_for``; docs/AUTOENCODERS.md)."""

    def __init__(self, n_groups: int, d: int, hidden: int | None = None, aligned_scale: float | None = None):
        super().__init__()
        hidden = hidden or 2 * d
        self.n_groups, self.d, self.hidden = n_groups, d, hidden
        w_enc = torch.randn(n_groups, d, hidden) / d ** 0.5                        # (G, d, 2d)
        if aligned_scale is not None:
            w_enc[:, :, : min(hidden, 2 * d)] = aligned_block(d, min(hidden, 2 * d), aligned_scale)
        self.w_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(hidden))                              # (2d,)
        self.w_dec = nn.Parameter(torch.randn(hidden, n_groups * d) * 0.01)          # (2d, G·d): output starts near 0
        self.b_dec = nn.Parameter(torch.zeros(n_groups * d))                        # (G·d,)

    def by_group(self, group: torch.Tensor):
        """(g, row indices) for every PG present in the batch: one matmul per PG, no gather of
        per-row weight copies. The blocks are read through ``unbind`` views: the backward pass then
        stacks the G block gradients once, where indexing ``w[g]`` per PG wrote a zero-filled gradient of
        the whole weight per PG present (bench/sparse_ae.py: forward + backward 1.6x faster, gradients bit-identical)."""
        for g in torch.unique(group).tolist():
            yield g, (group == g).nonzero(as_tuple=True)[0]

    def encode(self, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """x (B, d), group (B,) → PG-agnostic h (B, 2d): rows of PG g times W_enc[g]."""
        pre, blocks = x.new_empty(x.shape[0], self.hidden), self.w_enc.unbind(0)    # G views (d, 2d)
        for g, rows in self.by_group(group):
            pre = pre.index_copy(0, rows, x[rows] @ blocks[g])                     # (B_g, 2d)
        return torch.sigmoid(pre + self.b_enc)

    def decode_block(self, h: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The reconstruction's block g only: h (B, 2d) → (B, d)."""
        out = h.new_empty(h.shape[0], self.d)
        w_blocks = self.w_dec.view(self.hidden, self.n_groups, self.d).unbind(1)   # G views (2d, d)
        b_blocks = self.b_dec.view(self.n_groups, self.d).unbind(0)                 # G views (d,)
        for g, rows in self.by_group(group):
            out = out.index_copy(0, rows, h[rows] @ w_blocks[g] + b_blocks[g])     # (B_g, d)
        return out

    def output_sq_norm(self, h: torch.Tensor) -> torch.Tensor:
        """||h W_dec + b_dec||² per row, in closed form: (B,)."""
        gram = self.w_dec @ self.w_dec.T                                          # (2d, 2d)
        return (torch.einsum("bh,hk,bk->b", h, gram, h) + 2 * h @ (self.w_dec @ self.b_dec)
                + self.b_dec.pow(2).sum())


def init_scale_for(cfg: SparseAEConfig, n_groups: int) -> float | None:
    """The aligned init's scale, or None for a random init. ``auto``: aligned for one block only.
    With one PG there is nothing to tell apart, and an RF-friendly code keeps what the PG-specific
    embedding has; with several, every block would start as the same map, the decoder could not tell
    the PGs apart, and the tasks across PGs lost up to 2.7 points of RF AUC on the demo."""
    aligned = cfg.init == "aligned" or (cfg.init == "auto" and n_groups == 1)
    return cfg.init_scale if aligned else None


def uses_anchor(cfg: SparseAEConfig, n_groups: int) -> bool:
    """The shared anchor (``Anchor``) aligns PG blocks with one another: on with a weight > 0 and
    several blocks; with one block there is nothing to align, and the paper's loss stays alone."""
    return cfg.anchor_weight > 0 and n_groups > 1


def aligned_block(d: int, width: int, scale: float) -> torch.Tensor:
    """(d, width) encoder block [s·I | −s·I], cut to ``width`` ≤ 2d columns."""
    eye = torch.eye(d) * scale
    return torch.cat([eye, -eye], dim=1)[:, :width]


def kl_sparsity(h: torch.Tensor, rho: float) -> torch.Tensor:
    """Σ_j KL(ρ || ρ̂_j), ρ̂_j the mean activation of hidden unit j over the batch."""
    return kl_to_target(h.mean(dim=0), rho)


def kl_to_target(rho_hat: torch.Tensor, rho: float) -> torch.Tensor:
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def sparse_ae_loss(model: SparseAutoencoder, x: torch.Tensor, group: torch.Tensor,
                   rho: float = 0.05, beta: float = 0.1, anchor: Anchor | None = None,
                   target: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of the exact G·d squared reconstruction error, plus β·KL sparsity, plus
    (with an ``anchor`` and the batch's anchor ``target``) the anchor's weighted error."""
    h = model.encode(x, group)
    loss = reconstruction_error(model, h, x, group).mean() + beta * kl_sparsity(h, rho)
    return loss if anchor is None else loss + anchor.weight * anchor.error(h, target).mean()


def reconstruction_error(model: SparseAutoencoder, h: torch.Tensor, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per-row exact squared error of the G·d reconstruction of the block input: (B,)."""
    block = model.decode_block(h, group)
    return (block - x).pow(2).sum(1) + model.output_sq_norm(h) - block.pow(2).sum(1)


class Anchor(nn.Module):
    """A target every PG shares, decoded from the hidden code by one linear map for all PGs.

    The paper's loss only asks each block to be reconstructed: W_enc[g] of each PG is free to put
    "food" or "summer" anywhere in the hidden space, so a classifier across PGs has to learn each PG's
    directions apart, and a category never seen in training (the unseen tasks) lands where nothing was
    learned. The anchor is the title's mean word vector (the word vectors are shared by all PG models),
    z-scored per dimension: asking one decoder ``h W + b`` to predict it from every PG's code aligns the
    PGs' hidden spaces along the same word-vector directions. Training only: the saved model and the
    encoding are the paper's (docs/RESULTS.md has the measurements)."""

    def __init__(self, hidden: int, width: int, weight: float):
        super().__init__()
        self.decoder = nn.Linear(hidden, width)            # (2d → k), one for every PG
        self.weight = weight

    def error(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row squared error of the anchor decoded from h (B, 2d) against target (B, k): (B,).
        A row whose target is unknown (NaN: no title in today's catalog) counts 0."""
        known = ~target.isnan().any(1)
        return (self.decoder(h) - target.nan_to_num()).pow(2).sum(1) * known


def standardize(a: np.ndarray) -> np.ndarray:
    """Z-score each column over the known rows (a constant column stays 0; NaN rows stay NaN): every
    anchor dimension weighs the same."""
    return ((a - np.nanmean(a, 0)) / np.maximum(np.nanstd(a, 0), 1e-6)).astype(np.float32)


# ------------------------------------------------------------------ training and inference


def sample_sizes(rows: dict[str, int], per_pg: int | None, total: int | None) -> dict[str, int]:
    """Products drawn per PG: at most ``per_pg`` each and ``total`` in all, shared out so that a PG below
    its share keeps every product and the larger PGs split the rest equally (water filling)."""
    caps = {pg: min(n, per_pg or n) for pg, n in rows.items()}
    if total is None or sum(caps.values()) <= total:
        return caps
    out, left, pending = {}, total, sorted(caps, key=caps.get)
    while pending:
        share = left // len(pending)
        pg = pending.pop(0)
        out[pg] = min(caps[pg], share)
        left -= out[pg]
    return out


def load_embeddings(embeddings: dict[str, str], pg_order: list[str], cap: int | None, seed: int,
                    total: int | None = None):
    """(ids, x (N, d) float32, group (N,) int64): a stable hash sample of up to ``cap`` products per PG and
    ``total`` in all (``sample_sizes``), read batch by batch: only the sample is held."""
    from mrnet.data.sample import hash_rank, smallest_rank
    from mrnet.encoder.embed import dataset_rows, embedding_batches

    for pg, uri in sorted(embeddings.items()):
        if pg not in pg_order:
            raise ValueError(f"PG {pg!r} of {uri} is not in the PG mapping {pg_order}")
    sizes = sample_sizes({pg: dataset_rows(uri) for pg, uri in embeddings.items()}, cap, total)
    ids, xs, groups = [], [], []
    for pg, uri in sorted(embeddings.items()):
        threshold = smallest_rank((hash_rank(df["product_id"], seed, "sparse_ae") for df, _ in
                                   embedding_batches(uri)), sizes[pg]) if sizes[pg] < dataset_rows(uri) else None
        for df, x in embedding_batches(uri):
            if threshold is not None:
                keep = hash_rank(df["product_id"], seed, "sparse_ae") <= threshold
                df, x = df[keep], x[keep]
            ids += df["product_id"].tolist()
            xs.append(x)
            groups.append(np.full(len(x), pg_order.index(pg), np.int64))
    if not ids:
        raise ValueError("sparse autoencoder: no PG embeddings to train on")
    return ids, np.concatenate(xs), np.concatenate(groups)


def _val_mask(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    return hash_rank(ids, seed, "sparse_ae-val") < fraction


@torch.no_grad()
def evaluate(model: SparseAutoencoder, x: torch.Tensor, group: torch.Tensor, cfg: SparseAEConfig,
             batch: int = 65_536, anchor: Anchor | None = None, target: torch.Tensor | None = None) -> dict[str, float]:
    """Validation: mean exact G·d reconstruction error, relative to mean ||x||², and KL; with an anchor,
    its error relative to the z-scored target's (``anchor_rel``: 1.0 = predicting the mean)."""
    if len(x) == 0:
        return {}
    err, anchor_err, h_sum = 0.0, 0.0, torch.zeros(model.hidden, device=x.device)
    for s in range(0, len(x), batch):
        xb, gb = x[s:s + batch], group[s:s + batch]
        h = model.encode(xb, gb)
        err += float(reconstruction_error(model, h, xb, gb).sum())
        h_sum += h.sum(0)
        if anchor is not None:
            anchor_err += float(anchor.error(h, target[s:s + batch]).sum())
    kl = float(kl_to_target(h_sum / len(x), cfg.rho))
    recon = err / len(x)
    out = {"recon": recon, "recon_rel": recon / max(float(x.pow(2).sum(1).mean()), 1e-12), "kl": kl,
           "mean_activation": float(h_sum.sum() / (len(x) * model.hidden))}
    if anchor is not None:
        out["anchor_rel"] = anchor_err / max(float(target.nan_to_num().pow(2).sum(1).sum()), 1e-12)
    return out


def train_sparse_ae(cfg: SparseAEConfig, embeddings: dict[str, str], pg_order: list[str], out_uri: str,
                    seed: int = 13, device: str = "cpu", progress: bool = True, on_epoch=None,
                    anchors: Callable[[list[str]], np.ndarray] | None = None) -> tuple[str, dict]:
    """Train on the PGs' embeddings; write the model (safetensors) to ``out_uri``; (uri, report).
    ``anchors(product ids) → (N, k)`` gives the shared anchor target (``Anchor``); it is used when
    ``uses_anchor``."""
    torch.manual_seed(seed)
    ids, x_np, g_np = load_embeddings(embeddings, pg_order, cfg.products_per_pg, seed, cfg.max_products)
    val = _val_mask(ids, cfg.val_fraction, seed)
    order = np.argsort(val, kind="stable")  # training rows first, then validation: two views, not two copies
    ids, x_np, g_np, n_tr = [ids[i] for i in order], x_np[order], g_np[order], int((~val).sum())
    x, group = (torch.from_numpy(a).to(device) for a in (x_np, g_np))
    x_tr, g_tr, x_va, g_va = x[:n_tr], group[:n_tr], x[n_tr:], group[n_tr:]
    d = x.shape[1]
    model = SparseAutoencoder(len(pg_order), d, cfg.hidden, init_scale_for(cfg, len(pg_order))).to(device)
    anchor, a_tr, a_va = None, None, None
    if anchors is not None and uses_anchor(cfg, len(pg_order)):
        a = torch.from_numpy(standardize(np.asarray(anchors(ids), np.float32))).to(device)
        a_tr, a_va = a[:n_tr], a[n_tr:]
        # in relative units: weight 1 makes the anchor's error at its prior (||a||², a z-scored) weigh what
        # the reconstruction's error at its prior (||x||²) weighs, whatever d and the word-vector size are
        scale = float(x_tr.pow(2).sum(1).mean()) / max(float(a_tr.nan_to_num().pow(2).sum(1).mean()), 1e-12)
        anchor = Anchor(model.hidden, a.shape[1], cfg.anchor_weight * scale).to(device)
    params = list(model.parameters()) + (list(anchor.parameters()) if anchor is not None else [])
    opt = adamw(params, cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(len(x_tr) / cfg.batch_size)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x_tr), generator=gen).to(device)
        for s in progress_bar(range(steps), desc=f"sparse AE epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                              progress=progress):
            rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = sparse_ae_loss(model, x_tr[rows], g_tr[rows], cfg.rho, cfg.beta, anchor,
                                  None if anchor is None else a_tr[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "seconds": round(seconds, 3), "train_loss": total / len(x_tr),
                        "products_per_s": round(len(x_tr) / seconds, 1),
                        "val": evaluate(model, x_va, g_va, cfg, anchor=anchor, target=a_va)})
        log.info("[sparse_ae] epoch %d/%d: train loss %.4f, val recon_rel %s%s", epoch, cfg.epochs,
                 history[-1]["train_loss"], history[-1]["val"].get("recon_rel"),
                 f", anchor_rel {history[-1]['val']['anchor_rel']:.3f}" if "anchor_rel" in history[-1]["val"] else "")
        if on_epoch is not None:
            on_epoch(history[-1])
    meta = {"kind": "sparse_ae", "config": cfg.model_dump(mode="json"), "pg_order": pg_order, "d": d,
            "hidden": model.hidden, "history": history}
    save_model(model.cpu(), meta, out_uri)
    report = {"n_train": int(len(x_tr)), "n_val": int(len(x_va)), "pgs": sorted(embeddings), "d": d,
              "hidden": model.hidden, "blocks": len(pg_order), "history": history,
              "anchor_weight_absolute": anchor.weight if anchor is not None else 0.0}   # cfg weight × scale
    return out_uri, report


def load(uri: str, device: str = "cpu") -> tuple[SparseAutoencoder, dict]:
    """The saved autoencoder, rebuilt from its own metadata (weights only)."""
    meta = read_meta(uri, "sparse_ae")
    model = SparseAutoencoder(len(meta["pg_order"]), meta["d"], meta["hidden"])
    return load_weights(model, uri).to(device), meta


@torch.inference_mode()
def agnostic(model: SparseAutoencoder, meta: dict, x: np.ndarray, pg: str, batch: int = 65_536) -> np.ndarray:
    """PG-agnostic embeddings (N, 2d) of N PG-specific embeddings (N, d) of one PG."""
    if pg not in meta["pg_order"]:
        raise ValueError(f"PG {pg!r} has no block in this autoencoder (PGs: {meta['pg_order']})")
    g = meta["pg_order"].index(pg)
    out = [model.encode(torch.from_numpy(x[s:s + batch]), torch.full((len(x[s:s + batch]),), g))
           for s in range(0, len(x), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.hidden), np.float32)


def encode_part(model_uri: str, source_uri: str, pg: str, out_uri: str, dtype: str = "float32",
                batch_rows: int = 65_536) -> tuple[str, dict]:
    """The PG-agnostic embeddings of one part of a PG's embeddings (one embedding shard) → one Parquet part
    (encoder/embed.py's schema, stored as ``dtype``: ``embed.dtype``), batch by batch: memory holds one
    batch, whatever the part's size. One such task per PG shard (the DAGs' ``encode_agnostic``)."""
    import pyarrow.parquet as pq

    from mrnet.encoder.embed import embedding_batches, embedding_table, model_version

    torch.set_num_threads(os.cpu_count() or 1)
    model, meta = load(model_uri)
    version, writer, n = model_version(model_uri), None, 0
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        for df, x in embedding_batches(source_uri, batch_rows=batch_rows):
            table = embedding_table(df["product_id"], pg, version, agnostic(model, meta, x, pg), dtype)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            n += len(x)
        if writer is None:
            empty = np.zeros((0, model.hidden), np.float32)
            writer = pq.ParquetWriter(tmp, embedding_table([], pg, version, empty, dtype).schema)
        writer.close()
        written = storage.file_record(tmp)
    return out_uri, {"pg": pg, "products": n, "dim": model.hidden} | written


def encode_all(model_uri: str, embeddings: dict[str, str], out_uri: str, dtype: str = "float32") -> tuple[str, dict]:
    """The PG-agnostic embedding of every product of every PG → one Parquet, batch by batch (the runs write
    one part per PG shard instead, ``encode_part``; this single file is for benchmarks and comparisons)."""
    import pyarrow.parquet as pq

    from mrnet.encoder.embed import embedding_batches, embedding_table, model_version

    torch.set_num_threads(os.cpu_count() or 1)
    model, meta = load(model_uri)
    version, writer, n = model_version(model_uri), None, 0
    with storage.atomic_path(out_uri, suffix=".parquet") as tmp:
        for pg, uri in sorted(embeddings.items()):
            for df, x in embedding_batches(uri):
                table = embedding_table(df["product_id"], pg, version, agnostic(model, meta, x, pg), dtype)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                n += len(x)
        if writer is None:
            raise ValueError("sparse autoencoder: no PG embeddings to encode")
        writer.close()
    return out_uri, {"products": n, "dim": model.hidden}
