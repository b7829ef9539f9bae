"""Typed configuration of the two autoencoders: the PG-agnostic sparse autoencoder (paper §3.2) and the
cross-language multimodal autoencoder (§5). Frozen pydantic models; ``schema.Config`` composes them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mrnet.config.base import Frozen, Name
from mrnet.config.training import TaskSpec

class SparseAEConfig(Frozen):
    """PG-agnostic sparse autoencoder (paper §3.2; autoencoders/sparse.py): a PG's d-dim embedding sits at
    block g of a G·d input; the ``hidden`` (default 2d) sigmoid layer is the PG-agnostic embedding.
    Sparsity: β·Σ_j KL(ρ‖ρ̂_j) on the batch-mean activation ρ̂_j of each hidden unit (Ng's notes)."""

    enabled: bool = True
    products_per_pg: int = Field(default=500_000, ge=1)  # paper: 500K random products per PG
    # and at most this many in all (a stable hash sample, shared out so that small PGs keep every product):
    # the training set is held in memory, 4·d bytes per product: 500K at d 512 is 1 GiB (docs/SCALING.md)
    max_products: int = Field(default=500_000, ge=100, le=100_000_000)
    hidden: int | None = Field(default=None, ge=2, le=65_536)  # None = 2d
    epochs: int = Field(default=10, ge=1)
    # the exact loss's Gram term costs the same at any batch size, so large batches are cheaper per
    # product, but fewer steps: 1024 reached the lowest validation error per second on the demo
    # (docs/AUTOENCODERS.md)
    batch_size: int = Field(default=1024, ge=2)
    lr: float = Field(default=3e-3, gt=0.0, le=1.0)
    rho: float = Field(default=0.05, gt=0.0, lt=1.0)  # target mean activation
    beta: float = Field(default=0.1, ge=0.0)  # weight of the KL sparsity penalty
    # encoder init: "aligned" starts each block as [s·I | −s·I] (unit j ~ +x_j, unit d+j ~ −x_j), so the
    # code starts as a per-dimension monotone map that RF is invariant to; "random" mixes the dimensions,
    # which cost RF 1.5–3 points on single-PG columns but separates PGs, which the tasks across PGs need.
    # "auto": aligned with one PG block, random with several (docs/AUTOENCODERS.md). s = 4 puts a BiLSTM
    # state in (−1, 1) across the sigmoid's curved range and keeps the weights well above Adam's per-step
    # drift, so training does not wash the alignment out (s = 1 did).
    init: Literal["auto", "aligned", "random"] = "auto"
    init_scale: float = Field(default=4.0, gt=0.0, le=64.0)
    # weight of the shared anchor (autoencoders/sparse.py Anchor): one decoder for every PG predicts the
    # title's z-scored mean word vector from the hidden code, which aligns the PGs' hidden spaces. Relative
    # to the reconstruction (1 = the two errors weigh the same at their priors); off with one PG block;
    # 0 = the paper's loss alone. 25: the cross-PG tasks plateau from 8 to 50 on the demo (docs/AUTOENCODERS.md)
    anchor_weight: float = Field(default=25.0, ge=0.0, le=100.0)
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)


class CrossLingualConfig(Frozen):
    """Cross-language multimodal autoencoder (paper §5; autoencoders/crosslingual.py). ``pairs`` is
    ``builtin:food_names_en_fr`` / ``builtin:food_names_de_en`` (generic food names under
    data.raw_dir: a stand-in for the paper's UK/FR product titles), or a CSV/TSV with columns
    ``id_a, title_a, id_b, title_b`` plus ``catalog_a`` / ``catalog_b`` (canonical catalogs of
    the two locales, with the label columns ``tasks`` name). Locale B is projected into A."""

    enabled: bool = True
    pairs: str = "builtin:food_names_en_fr"
    catalog_a: str | None = None
    catalog_b: str | None = None
    locale_a: Name = "en"
    locale_b: Name = "fr"
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)  # held-out pairs: never trained on
    max_pairs: int | None = Field(default=None, ge=10)  # sample cap (tiny mode)
    min_count: int = Field(default=2, ge=1)  # word2vec min count of the (small) locale corpora
    hidden: int = Field(default=256, ge=2, le=65_536)  # §5: hidden 256
    epochs: int = Field(default=40, ge=1)
    batch_size: int = Field(default=256, ge=1)  # §5: batches of 256, drawn at random
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    examples: int = Field(default=5, ge=0)  # qualitative B → top-5 A examples in the report
    tasks: list[TaskSpec] = [
        TaskSpec(name="food_group", kind="multiclass", column="food_group", top_k=40),
        TaskSpec(name="tfidf", kind="decoding", column="title", dim=5000),
    ]
