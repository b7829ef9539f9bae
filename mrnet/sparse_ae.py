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

Status: the model and its loss are tested against the dense formulation
(tests/test_sparse_ae.py). Training on the PG embeddings, the DAG stage and registration are
not built yet (issue 5).
"""

from __future__ import annotations

import torch
from torch import nn


class SparseAutoencoder(nn.Module):
    """G blocks of d → hidden 2d (PG-agnostic) → G·d, stored blockwise."""

    def __init__(self, n_groups: int, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * d
        self.n_groups, self.d, self.hidden = n_groups, d, hidden
        self.w_enc = nn.Parameter(torch.randn(n_groups, d, hidden) / d ** 0.5)       # (G, d, 2d)
        self.b_enc = nn.Parameter(torch.zeros(hidden))                              # (2d,)
        self.w_dec = nn.Parameter(torch.randn(hidden, n_groups * d) / hidden ** 0.5)  # (2d, G·d)
        self.b_dec = nn.Parameter(torch.zeros(n_groups * d))                        # (G·d,)

    def _by_group(self, group: torch.Tensor):
        """(g, row indices) for every PG present in the batch: one matmul per PG, no gather of
        per-row weight copies."""
        for g in torch.unique(group).tolist():
            yield g, (group == g).nonzero(as_tuple=True)[0]

    def encode(self, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """x (B, d), group (B,) → PG-agnostic h (B, 2d): rows of PG g times W_enc[g]."""
        pre = x.new_empty(x.shape[0], self.hidden)
        for g, rows in self._by_group(group):
            pre = pre.index_copy(0, rows, x[rows] @ self.w_enc[g])                 # (B_g, 2d)
        return torch.sigmoid(pre + self.b_enc)

    def decode_block(self, h: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The reconstruction's block g only: h (B, 2d) → (B, d)."""
        out = h.new_empty(h.shape[0], self.d)
        for g, rows in self._by_group(group):
            cols = slice(g * self.d, (g + 1) * self.d)
            out = out.index_copy(0, rows, h[rows] @ self.w_dec[:, cols] + self.b_dec[cols])
        return out

    def output_sq_norm(self, h: torch.Tensor) -> torch.Tensor:
        """||h W_dec + b_dec||² per row, in closed form: (B,)."""
        gram = self.w_dec @ self.w_dec.T                                          # (2d, 2d)
        return (torch.einsum("bh,hk,bk->b", h, gram, h) + 2 * h @ (self.w_dec @ self.b_dec)
                + self.b_dec.pow(2).sum())


def kl_sparsity(h: torch.Tensor, rho: float) -> torch.Tensor:
    """Σ_j KL(ρ || ρ̂_j), ρ̂_j the mean activation of hidden unit j over the batch."""
    rho_hat = h.mean(dim=0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def sparse_ae_loss(model: SparseAutoencoder, x: torch.Tensor, group: torch.Tensor,
                   rho: float = 0.05, beta: float = 0.1) -> torch.Tensor:
    """Mean over the batch of the exact G·d squared reconstruction error, plus β·KL sparsity."""
    h = model.encode(x, group)
    block = model.decode_block(h, group)
    err = (block - x).pow(2).sum(1) + model.output_sq_norm(h) - block.pow(2).sum(1)
    return err.mean() + beta * kl_sparsity(h, rho)
