"""Typed configuration of what trains and embeds a PG model (paper §3, §3.1): its tasks, the catalog it
reads, word vectors, the BiLSTM, its training loop, the periodic refresh (§6) and embedding. Frozen pydantic
models with bounds on every number; ``schema.Config`` composes them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mrnet.config.base import Frozen, Name, check_segment

TaskKind = Literal["multiclass", "binary", "regression", "decoding"]
Transform = Literal["none", "log1p", "standardize", "log1p_standardize"]


class TaskSpec(Frozen):
    """One training task of Table 1, as data (paper §3.1).

    - ``multiclass``: the ``top_k`` most frequent values of ``column`` are classes, the rest is
      grouped as ``other``; with ``min_class_size``, only values with at least that many of the
      PG's training products (at most ``top_k``, at least 2): a rule that follows the PG's size
      (docs/TRAINING.md: a long tail taught as classes lifts the held-out browse scores).
    - ``binary``: ``column`` is a bool, or a number made binary by ``threshold``
      (value >= threshold) or by ``quantile`` (value above the PG's training quantile,
      e.g. High Value = price above the PG's 90th percentile).
    - ``regression``: squared loss on ``transform(column)``.
    - ``decoding``: squared loss on the ``dim``-d TF-IDF vector of ``column`` (eq. 4).
    """

    name: Name
    kind: TaskKind
    column: str
    signal: Literal["static", "dynamic"] = "static"
    top_k: int | None = Field(default=None, ge=1, le=1_000_000)
    min_class_size: int | None = Field(default=None, ge=1, le=1_000_000)
    transform: Transform = "none"
    threshold: float | None = None
    quantile: float | None = Field(default=None, gt=0.0, lt=1.0)
    dim: int = Field(default=5000, ge=1, le=1_000_000)
    min_labels: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "TaskSpec":
        if self.kind == "multiclass" and not self.top_k:
            raise ValueError(f"task {self.name!r}: multiclass needs top_k")
        if self.min_class_size is not None and self.kind != "multiclass":
            raise ValueError(f"task {self.name!r}: min_class_size applies to multiclass only")
        if self.kind == "binary" and self.threshold is not None and self.quantile is not None:
            raise ValueError(f"task {self.name!r}: give threshold or quantile, not both")
        if self.kind != "regression" and self.transform != "none":
            raise ValueError(f"task {self.name!r}: transform applies to regression only")
        return self

    @property
    def column_type(self) -> Literal["category", "number", "bool", "text"]:
        """The type the catalog column must have; validation checks it (data/catalog.py)."""
        if self.kind == "multiclass":
            return "category"
        if self.kind == "decoding":
            return "text"
        if self.kind == "regression" or self.threshold is not None or self.quantile is not None:
            return "number"
        return "bool"


class DataConfig(Frozen):
    """Where the catalog comes from. The demo builds it from ``raw_dir`` and maps categories to
    PGs with ``pg_mapping``. A user's own file (``catalog``) is mapped by config alone
    (catalog.conform): ``columns`` renames the file's columns to canonical ones; without a
    ``product_group`` column every product is in PG ``product_group``; ``source`` / ``locale``
    fill those columns when the file has none; ``pg_mapping: null`` takes the PGs from the
    catalog's distinct ``product_group`` values; ``category_sep`` splits the category column
    into levels (rewritten with " > ")."""

    raw_dir: str = "../shared/data"
    pg_mapping: str | None = "configs/pg_mapping.yaml"
    catalog: str | None = None  # a catalog file, folder of part files or glob (parquet/csv); None = the demo one
    columns: dict[str, str] = {}  # file column → canonical column, e.g. {product: title, index: product_id}
    product_group: str = "all"
    source: str | None = None  # None: the catalog file's name
    locale: str = "und"
    category_sep: str | None = None  # e.g. " >> " when category_path looks like "A >> B >> C"
    max_title_chars: int = Field(default=512, ge=1, le=100_000)
    max_rows_per_pg: int | None = Field(default=None, ge=1)  # sample cap, for quick trials and tiny mode
    sample_fraction: float | None = Field(default=None, gt=0.0, le=1.0)  # per-PG sample, quick trials
    # validation's memory (data/staging.py): rows per batch of one file; input bytes per hash bucket of product ids
    # (the duplicate check holds one bucket's ids); rows per row group of the clean catalog (a row group never
    # holds two PGs, so a PG's training read and an embedding shard read their own rows only)
    chunk_rows: int = Field(default=200_000, ge=1, le=10_000_000)
    bucket_bytes: int = Field(default=1 << 30, ge=1 << 10, le=1 << 40)
    row_group_rows: int = Field(default=100_000, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _one_target(self) -> "DataConfig":
        targets = list(self.columns.values())
        dup = sorted({c for c in targets if targets.count(c) > 1})
        if dup:
            raise ValueError(f"data.columns maps several file columns to {dup}")
        check_segment(self.product_group, "data.product_group")
        return self


class Word2VecConfig(Frozen):
    """Paper §3: gensim word2vec, 128-d. ``min_count`` / ``epochs`` ``auto`` scale with the corpus
    (word2vec.resolve_settings): the paper's 10 / 5 hold from ~100M tokens on, while a 10k-product
    catalog (~100k tokens) needs min count 2 and ~50 epochs, else its vectors collapse onto one
    direction (mean pairwise cosine 0.98; docs/TRAINING.md)."""

    # ``fasttext``: gensim FastText (subword n-grams), so a word never seen in training still gets
    # a vector from its character n-grams at embed time (cold start); docs/TRAINING.md measures it
    model: Literal["word2vec", "fasttext"] = "word2vec"
    vector_size: int = Field(default=128, ge=2, le=4096)
    min_count: int | Literal["auto"] = "auto"
    window: int = Field(default=5, ge=1, le=100)
    epochs: int | Literal["auto"] = "auto"
    # 1 = skip-gram, 0 = CBOW. ``auto``: skip-gram below ``sg_below_tokens`` corpus tokens, where it
    # costs seconds and was better on 6 of 7 held-out columns of three public slices (docs/TRAINING.md);
    # CBOW (several times faster per token) on large corpora, where frequent words dominate
    sg: Literal[0, 1, "auto"] = "auto"
    sg_below_tokens: int = Field(default=10_000_000, ge=0)
    workers: int = Field(default=0, ge=0)  # 0 = all cores
    seed: int = Field(default=13, ge=0, le=2**32 - 1)
    # the most frequent ``max_vocab`` words keep a vector (gensim's max_final_vocab; the rest read as <unk>), and
    # the vocabulary scan prunes rare words beyond 10x that many (max_vocab_size): every PG model's word table
    # (max_vocab x vector_size float32, 1 GB at 2M x 128) and word2vec's memory stop growing with the catalog
    max_vocab: int | None = Field(default=2_000_000, ge=1_000, le=50_000_000)
    # ``auto``: passes over the corpus until ~target_tokens words were seen, within [5, max_epochs]
    target_tokens: int = Field(default=20_000_000, ge=1)
    max_epochs: int = Field(default=50, ge=1, le=1000)
    # fasttext only: character n-grams of min_n..max_n chars hashed into ``bucket`` rows. The
    # n-gram table (bucket x vector_size, float16) travels inside every PG model: 25.6 MB at 100k x 128
    min_n: int = Field(default=3, ge=1, le=10)
    max_n: int = Field(default=6, ge=1, le=20)
    bucket: int = Field(default=100_000, ge=1_000, le=10_000_000)
    # health check: vectors whose mean pairwise cosine (top-1000 words) exceeds this are degenerate
    degenerate_cosine: float = Field(default=0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _positive(self) -> "Word2VecConfig":
        for name in ("min_count", "epochs"):
            value = getattr(self, name)
            if value != "auto" and not 1 <= value <= 100_000:
                raise ValueError(f"word2vec.{name} must be 'auto' or an integer in [1, 100000], got {value}")
        if self.max_n < self.min_n:
            raise ValueError(f"word2vec.max_n ({self.max_n}) must be at least word2vec.min_n ({self.min_n})")
        return self


class ModelConfig(Frozen):
    """d = embed_dim = forward ⊕ backward final states, so each direction has d/2 units. The default d is
    512, four times the paper's 128: on three public 10k-product slices the TF-IDF decoding head, which
    carries most of what held-out category columns need, was capacity-bound at 128 and still at 256, and
    d 512 raised the held-out scores on BigBasket and Myntra (at 5k and 10k products) and left Flipkart
    level (docs/TRAINING.md). It costs about twice
    256's training time and embedding bytes; configs/demo.yaml keeps 256 for its 10-minute budget."""

    embed_dim: int = Field(default=512, ge=2, le=4096)
    max_tokens: int = Field(default=32, ge=1, le=1024)
    freeze_word_vectors: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # on h_T before the heads, in training only
    word_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # training: a word → <unk> (cold start, §6)

    @model_validator(mode="after")
    def _even(self) -> "ModelConfig":
        if self.embed_dim % 2:
            raise ValueError("model.embed_dim must be even (forward ⊕ backward halves)")
        return self


class TrainConfig(Frozen):
    """PG model training (encoder/train.py). ``epochs`` is a cap: with ``patience`` set, a PG stops once
    its mean normalized validation loss (1.0 = the label-prior predictor) has not improved by
    ``min_delta`` for ``patience`` epochs, and the best epoch's weights are restored
    (docs/TRAINING.md gives the measurements behind each default)."""

    epochs: int = Field(default=30, ge=1, le=10_000)  # a cap (configs/demo.yaml: 4, for its time budget)
    # a PG with fewer (but some) validated products is not trained: it is left out of the release, with
    # its reason in the run summary (the champion keeps serving it: the gate refuses a release without
    # it). A configured PG with no product at all fails its train task instead.
    min_products: int = Field(default=50, ge=2, le=1_000_000)
    # a PG with more validated products trains on a stable hash sample of this many (data/pgs.read_pg): the
    # training task's memory and epoch time stop growing with the PG (docs/SCALING.md); every product is still
    # embedded. None: every product, whatever the PG's size
    max_products: int | None = Field(default=1_000_000, ge=100, le=1_000_000_000)
    # a wall-clock budget for the whole training phase, shared out by PG size (products trained on): a PG stops
    # before an epoch that would end past its share (encoder/train.over_budget); the epochs cap and early
    # stopping still apply, and the first epoch always runs. None: no budget
    budget_minutes: float | None = Field(default=None, gt=0.0, le=1_000_000.0)
    patience: int | None = Field(default=3, ge=1, le=1000)  # None: train all ``epochs``
    min_delta: float = Field(default=0.002, ge=0.0, le=1.0)
    # a task whose own normalized validation loss has been more than ``retire_delta`` above its best for
    # ``task_patience`` epochs in a row overfits (small noisy tasks: review, offer) and is retired: no longer
    # drawn, so it stops pulling the shared encoder while the others go on. The PG stops once every task is
    # retired. None: every task is drawn to the end
    task_patience: int | None = Field(default=2, ge=1, le=1000)
    retire_delta: float = Field(default=0.05, ge=0.0, le=10.0)
    # true: the stop score counts a task above the prior (normalized loss 1.0) as the prior, so an unpredictable
    # task's swings cannot pick the epoch (encoder/stopping.informative). Off: on BigBasket 10k it stopped 3 epochs
    # sooner and scored 0.3-0.9 point lower on 15 of 16 cells in two seeds (docs/TRAINING.md)
    cap_at_prior: bool = False
    # ``auto``: by the PG's size (encoder/train.batch_size_for): its training products / 128, rounded down to
    # a power of two within [64, 256], so a small PG gets up to 4x the updates per epoch and a large one
    # keeps the paper-scale 256 (docs/TRAINING.md: 64 against 256 on 10k-product slices, 128 on 27k)
    batch_size: int | Literal["auto"] = "auto"
    lr: float = Field(default=2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)  # AdamW's decoupled decay
    # alternating optimization (§3.1) with one Adam state per task (``per_task``: each task's step is
    # scaled by its own gradient history) or one state shared by all tasks (``shared``)
    optimizer_state: Literal["per_task", "shared"] = "per_task"
    steps_per_epoch: int | None = Field(default=None, ge=1, le=100_000_000)  # None = ceil(train products / batch_size)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    optimization: Literal["alternating", "joint"] = "alternating"
    seed: int = Field(default=13, ge=0, le=2**32 - 1)
    threads: int = Field(default=0, ge=0)  # 0 = all cores
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast of the training steps (weights, optimizer state, validation and embeddings stay fp32).
    # ``auto``: on a CPU with AVX512-BF16 and no AMX, where a demo PG's step ran 1.15x as fast at the same
    # validation losses (bench/train_step.py); fp32 on a CPU with AMX tiles, where bf16 ran 1.1x as fast as fp32
    # but oneDNN's bf16 LSTM backward hung or aborted ("double free") in the 23rd PG of `make demo`'s one
    # process, twice, while fp32 finished (docs/TRAINING.md); fp32 on CUDA, where an H200 ran the BiLSTM at d 128
    # 0.68-0.74x as fast in bf16, and on CPUs without bf16 (docs/RESULTS.md). true forces it on CUDA and on a
    # CPU with native bf16 (elsewhere oneDNN has no bf16 LSTM: fp32 and a warning); false is fp32 everywhere
    amp: bool | Literal["auto"] = "auto"
    progress: bool = True

    @model_validator(mode="after")
    def _batch(self) -> "TrainConfig":
        if self.batch_size != "auto" and not 1 <= self.batch_size <= 1_000_000:
            raise ValueError(f"train.batch_size must be 'auto' or an integer in [1, 1000000], got {self.batch_size}")
        return self


class RefreshConfig(Frozen):
    """Periodic refresh (paper §6): warm-start each PG model from the latest release and
    fine-tune on refreshed dynamic labels. ``tasks: all`` keeps sampling the static tasks
    too (their labels are unchanged), so the encoder does not drift away from them;
    ``dynamic`` trains the dynamic heads only."""

    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=5e-4, gt=0.0, le=1.0)
    tasks: Literal["all", "dynamic"] = "all"


class EmbedConfig(Frozen):
    """Embedding a PG's products (encoder/embed.py). A PG is cut into shards of ``shard_size`` products,
    each its own task on a GPU worker (docs/SCALING.md says why 5M); a shard of at least
    ``parallel_min_titles`` titles is tokenized by ``tokenize_workers`` processes (0: every core)."""

    batch_size: int = Field(default=8192, ge=1)
    shard_size: int = Field(default=5_000_000, ge=1)
    tokenize_workers: int = Field(default=0, ge=0)
    parallel_min_titles: int = Field(default=500_000, ge=1)
    # rows per chunk of a shard: a shard streams chunk by chunk into one Parquet file, so a task holds two
    # chunks (one encoding, one writing), not its shard (docs/SCALING.md)
    chunk_rows: int = Field(default=262_144, ge=1, le=100_000_000)
    dtype: Literal["float32", "float16"] = "float32"  # stored vectors; readers always get float32 (docs/SCALING.md)
