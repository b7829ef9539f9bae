"""MRNet (paper §3.1, Fig. 1a): word2vec → one-layer BiLSTM → h_T → one linear head per task.

- Word ids go through an ``nn.Embedding`` initialised from word2vec (frozen by
  default), so batches carry int ids, not vectors.
- Eq. 1–2: a forward and a backward LSTM read the title; the product embedding is
  h_T = [h_T^f, h_T^b], the two final hidden states concatenated (d = 2 * hidden).
- Eq. 4: o_n = W_n h_T + b_n, one ``nn.Linear`` per task (logits, a scalar, or the
  5000-d TF-IDF reconstruction).

``forward`` encodes a batch whose titles all have the same length (length-bucketed
batches: no padding, no PackedSequence). ``forward_packed`` is the padded
reference path; tests/test_model.py shows both give the same h_T.

Saved models are one safetensors file whose metadata holds the config, the vocabulary
and the task states, so loading never guesses and never unpickles.
"""

from __future__ import annotations

import json

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mrnet.data.text import UNK_ID
from mrnet.io import storage


class MRNet(nn.Module):
    def __init__(self, vocab_size: int, word_dim: int, embed_dim: int,
                 head_dims: dict[str, int], freeze_word_vectors: bool = True, dropout: float = 0.0,
                 subword_buckets: int = 0, word_dropout: float = 0.0):
        super().__init__()
        self.word_dropout = word_dropout  # training only: a word becomes <unk> with this probability
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.words.weight.requires_grad_(not freeze_word_vectors)
        if subword_buckets:  # FastText n-gram rows (bucket, word_dim), float16: vectors for unseen words
            self.register_buffer("subwords", torch.zeros(subword_buckets, word_dim, dtype=torch.float16))
        self.lstm = nn.LSTM(word_dim, embed_dim // 2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)  # training only: the embedding itself is h_T, undropped
        self.heads = nn.ModuleDict({name: nn.Linear(embed_dim, dim) for name, dim in head_dims.items()})

    def head(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """h_T (B, d) → task ``name``'s output o_n = W_n h_T + b_n (B, out_dim), eq. 4."""
        return self.heads[name](self.drop(h))

    def forward(self, ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), every row a real title of length T → h_T (B, d). ``table`` (V', word_dim)
        replaces the word rows (the vocabulary plus FastText vectors of unseen words). In training,
        ``word_dropout`` turns words into ``<unk>`` at random, as unseen words are at cold start (§6)."""
        if self.training and self.word_dropout:   # drawn on the CPU generator: a resume replays it
            drop = (torch.rand(ids.shape) < self.word_dropout).to(ids.device)
            ids = ids.masked_fill(drop & (ids > UNK_ID), UNK_ID)
        x = self.words(ids) if table is None else nn.functional.embedding(ids, table)  # (B, T, word_dim)
        _, (h_n, _) = self.lstm(x)                # h_n (2, B, d/2): final forward, final backward
        return torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, d)

    def forward_packed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reference path: ids (B, T_max) right-padded with 0, lengths (B,) → h_T (B, d)."""
        x = self.words(ids)                       # (B, T_max, word_dim)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)           # h_n (2, B, d/2), in the input order
        return torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, d)


def build_model(meta: dict) -> MRNet:
    """An untrained MRNet shaped by a model's metadata (config + vocab + task states)."""
    cfg = meta["config"]
    heads = {t["name"]: t["out_dim"] for t in meta["tasks"] if t["active"]}
    return MRNet(len(meta["vocab"]), cfg["word2vec"]["vector_size"], cfg["model"]["embed_dim"],
                 heads, cfg["model"]["freeze_word_vectors"], cfg["model"].get("dropout", 0.0),
                 (meta.get("subwords") or {}).get("bucket", 0), cfg["model"].get("word_dropout", 0.0))


def adamw(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW (Adam when ``weight_decay`` is 0) with the fused kernel on CPU and CUDA: one kernel
    over all tensors instead of a loop of small ops per tensor (bench/train_step.py: 1.08x on the PG
    step and on the sparse AE step, 2 cores). Every mrnet model (PG encoder, sparse and
    cross-language autoencoders) trains with it."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def save_model(model: nn.Module, meta: dict, uri: str) -> str:
    """One self-describing safetensors file (atomic write): the weights, and ``meta`` as JSON in
    the header. Every mrnet model (PG encoder, sparse and cross-language autoencoders) uses it."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with storage.atomic_path(uri, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"mrnet": json.dumps(meta)})
    return uri


def unreadable(uri: str, err: Exception) -> ValueError:
    """One line naming the file, for a safetensors file that is truncated or not one at all."""
    return ValueError(f"{uri}: not a readable safetensors file ({err}); it is truncated or damaged: "
                      "retrain, or restore it from the release it came from")


def load_weights(model: nn.Module, uri: str) -> nn.Module:
    """Load a saved state dict into ``model`` (weights only, nothing unpickled); eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(storage.local_path(uri)), device="cpu")
    except SafetensorError as err:
        raise unreadable(uri, err) from None
    model.load_state_dict(weights)
    return model.eval()


def load_model(uri: str, device: str = "cpu") -> tuple[MRNet, dict]:
    """Rebuild a saved model from its own metadata; weights only, nothing unpickled."""
    meta = read_meta(uri)
    return load_weights(build_model(meta), uri).to(device), meta


def read_meta(uri: str, kind: str | None = None) -> dict:
    """A model's metadata (config, vocab, task states, PG …) without loading its weights.
    ``kind``: the ``meta["kind"]`` required (e.g. ``sparse_ae``); None = a PG encoder."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(storage.local_path(uri)), framework="pt") as fh:
            header = fh.metadata() or {}
    except SafetensorError as err:
        raise unreadable(uri, err) from None
    if "mrnet" not in header:
        raise ValueError(f"{uri}: not an mrnet model (no 'mrnet' metadata in the safetensors header)")
    meta = json.loads(header["mrnet"])
    if meta.get("kind") != kind:
        raise ValueError(f"{uri}: an mrnet {meta.get('kind') or 'PG encoder'}, not a {kind or 'PG encoder'}")
    return meta
