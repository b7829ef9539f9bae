"""Train one PG model (paper §3.1): alternating optimization over the task heads.

Each step picks a task uniformly at random, draws a batch of training products that
carry that task's label, and updates the encoder and that task's head only (Adam
skips every other head, whose gradient stays None). Batches come from exact-length
buckets (text.length_buckets): a bucket is chosen with probability proportional to
its labelled products, so every labelled product is equally likely, and the LSTM
runs on dense (B, T) tensors. ``train.optimization: joint`` instead sums the
normalized losses (eq. 3) of all tasks labelled in a batch.

An epoch is ``steps_per_epoch`` steps (default: train products / batch size). After
each epoch the model is validated per task and a checkpoint (config, vocab, task
states, weights, optimizer, step, RNG) is written atomically; a killed run resumes
from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mrnet.config.schema import Config
from mrnet.data import word2vec as W
from mrnet.data.sample import hash_rank
from mrnet.data.text import Vocab, length_buckets
from mrnet.encoder import targets as T
from mrnet.encoder.model import MRNet, adamw, build_model, save_model
from mrnet.encoder.stopping import Stopper
from mrnet.io import storage
from mrnet.io.progress import bar as progress_bar


@dataclass
class PGData:
    """One split of a PG: padded ids (N, T_max), lengths (N,), targets per active task."""

    ids: np.ndarray
    lengths: np.ndarray
    targets: dict[str, T.Targets]
    buckets: dict[str, list[np.ndarray]] = field(default_factory=dict)  # task → index arrays

    def __post_init__(self):
        by_length = length_buckets(self.lengths)
        for name, tgt in self.targets.items():
            groups = [idx[tgt.has[idx]] for idx in by_length.values()]
            self.buckets[name] = [g for g in groups if len(g)]


def split_train_val(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stable split by a seeded hash of product_id: a product stays on its side across retrains."""
    is_val = hash_rank(df["product_id"], seed, "val") < fraction
    return df[~is_val].reset_index(drop=True), df[is_val].reset_index(drop=True)


def prepare(cfg: Config, df: pd.DataFrame, words: list[str], states: list[dict]) -> PGData:
    ids, lengths = Vocab(words[2:]).encode_many(df["title"], cfg.model.max_tokens)
    specs = {t.name: t for t in cfg.tasks}
    targets = {s["name"]: T.encode(specs[s["name"]], s, df) for s in states if s["active"]}
    return PGData(ids, lengths, targets)


def task_loss(state: dict, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Normalized loss of one task (encoder/targets.py explains the normalizers)."""
    if state["kind"] in ("multiclass", "binary"):
        loss = F.cross_entropy(output.float(), y)
    else:
        loss = F.mse_loss(output.float().reshape(y.shape), y)
    return loss / state["normalizer"]


def loss_se(state: dict, output: torch.Tensor, y: torch.Tensor) -> float:
    """Standard error of ``task_loss`` as a mean over these rows (each row's loss, its sample std / sqrt(n),
    normalized alike): how far the validation loss could move on another draw of products of this size.
    The promotion gate compares two releases' losses within it (release/gate.py); nan below 2 rows."""
    if state["kind"] in ("multiclass", "binary"):
        rows = F.cross_entropy(output.float(), y, reduction="none")
    else:
        rows = ((output.float().reshape(y.shape) - y) ** 2).reshape(len(y), -1).mean(1)
    if len(rows) < 2:
        return float("nan")
    return float(rows.std() / math.sqrt(len(rows)) / state["normalizer"])


def _target_rows(tgt: T.Targets, idx: np.ndarray, device) -> torch.Tensor:
    rows = tgt.y[idx]
    rows = rows.toarray() if hasattr(rows, "toarray") else rows
    return torch.from_numpy(np.ascontiguousarray(rows)).to(device)


def _floats(losses: dict[str, list]) -> dict[str, list[float]]:
    """Step losses as floats, read once per epoch: a ``loss.item()`` per step would wait for the
    GPU every step (docs/RESULTS.md, GPU)."""
    return {name: torch.stack(values).float().cpu().tolist() if values else [] for name, values in losses.items()}


def draw_batch(buckets: list[np.ndarray], batch_size: int, gen: torch.Generator) -> np.ndarray:
    """A bucket with probability ∝ its size, then up to batch_size products of it."""
    sizes = torch.tensor([len(b) for b in buckets], dtype=torch.float64)
    bucket = buckets[int(torch.multinomial(sizes, 1, generator=gen))]
    pick = torch.randperm(len(bucket), generator=gen)[:batch_size].numpy()
    return bucket[pick]


def alternating_optimization(model: MRNet, opt, data: PGData,
                             states: dict[str, dict], steps: int, batch_size: int,
                             gen: torch.Generator, device, amp: bool, bar=None) -> tuple[dict[str, list], int]:
    """Paper §3.1: each step, one task chosen uniformly; encoder + that head updated.

    ``opt`` is one optimizer, or one per task (``make_optimizers``): then a task's step on the
    shared encoder is scaled by that task's own gradient history, not by the other tasks'.
    Returns the per-task step losses and the number of titles processed."""
    names = sorted(states)
    losses: dict[str, list] = {n: [] for n in names}
    titles = 0
    model.train()
    for _ in range(steps):
        name = names[int(torch.randint(len(names), (1,), generator=gen))]
        idx = draw_batch(data.buckets[name], batch_size, gen)
        ids = torch.from_numpy(data.ids[idx, : data.lengths[idx[0]]]).to(device)  # (B, T)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model.head(name, model(ids))
        loss = task_loss(states[name], out, _target_rows(data.targets[name], idx, device))
        task_opt = opt[name] if isinstance(opt, dict) else opt
        task_opt.zero_grad(set_to_none=True)
        loss.backward()
        task_opt.step()
        losses[name].append(loss.detach())
        titles += len(idx)
        if bar is not None:
            bar.update(1)
    return _floats(losses), titles


def joint_optimization(model: MRNet, opt, data: PGData,
                       states: dict[str, dict], steps: int, batch_size: int,
                       gen: torch.Generator, device, amp: bool, bar=None) -> tuple[dict[str, list], int]:
    """Eq. 3: one batch of any products, the sum of the labelled tasks' normalized losses.
    ``opt``: one optimizer over the encoder and every head (``make_optimizers`` gives the joint
    loop the same object under every task name), so every head that saw a label is stepped."""
    opt = next(iter(opt.values())) if isinstance(opt, dict) else opt
    everyone = list(length_buckets(data.lengths).values())
    losses: dict[str, list] = {n: [] for n in states}
    titles = 0
    model.train()
    for _ in range(steps):
        idx = draw_batch(everyone, batch_size, gen)
        ids = torch.from_numpy(data.ids[idx, : data.lengths[idx[0]]]).to(device)
        total = 0.0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):  # the heads too: h is bf16
            h = model(ids)
            for name, state in states.items():
                sel = data.targets[name].has[idx]
                if sel.any():
                    keep = torch.from_numpy(sel).to(device)
                    loss = task_loss(state, model.head(name, h[keep]),
                                     _target_rows(data.targets[name], idx[sel], device))
                    total = total + loss
                    losses[name].append(loss.detach())
        opt.zero_grad(set_to_none=True)
        if torch.is_tensor(total):
            total.backward()
            opt.step()
        titles += len(idx)
        if bar is not None:
            bar.update(1)
    return _floats(losses), titles


@torch.inference_mode()
def validate(model: MRNet, data: PGData, states: dict[str, dict], device, batch: int = 4096) -> dict:
    """Per-task normalized loss and metrics on the validation split. Each product is encoded once
    and every head reads the same embedding, instead of one pass over the split per task."""
    model.eval()
    h = torch.empty(len(data.lengths), 2 * model.lstm.hidden_size, device=device)    # (N, d)
    for group in length_buckets(data.lengths).values():
        for start in range(0, len(group), batch):
            part = group[start:start + batch]
            ids = torch.from_numpy(data.ids[part, : data.lengths[part[0]]]).to(device)
            h[torch.from_numpy(part).to(device)] = model(ids).float()             # (B, d)
    result: dict[str, dict] = {}
    for name, state in states.items():
        rows = np.flatnonzero(data.targets[name].has)
        if not len(rows):
            continue
        output = model.heads[name](h[torch.from_numpy(rows).to(h.device)]).float().cpu()
        target = _target_rows(data.targets[name], rows, "cpu")
        result[name] = {"loss": float(task_loss(state, output, target)), "se": loss_se(state, output, target),
                        "n": len(rows),
                        **T.metrics(state, output.numpy(), target.numpy())}
    return result


def batch_size_for(cfg, n_train: int) -> int:
    """The training batch of a PG with ``n_train`` training products (``cfg``: the TrainConfig).
    ``auto``: n_train / 128 rounded down to a power of two, within [64, 256]. On 10k-product catalogs
    batches of 64 (4x the updates per epoch of 256) raised 12 of 14 held-out scores (docs/TRAINING.md);
    from 32k products on, an epoch already gives each task 128+ updates at the paper-scale 256, which
    also keeps a GPU busy (at 24k, 64 / 128 / 256 scored alike)."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    return int(min(256, max(64, 2 ** math.floor(math.log2(max(n_train, 1) / 128)))))


def epoch_steps(data: PGData, batch_size: int, tasks=None, joint: bool = False) -> int:
    """One epoch = every labelled (product, task) pair of ``tasks`` (default all) once, in expectation.
    A joint step (eq. 3) trains every task labelled in its batch, so there an epoch is every product once."""
    if joint:
        return max(1, math.ceil(len(data.lengths) / batch_size))
    pairs = sum(int(t.has.sum()) for name, t in data.targets.items() if tasks is None or name in tasks)
    return max(1, math.ceil(pairs / batch_size))


@torch.no_grad()
def init_weights(model: MRNet, vectors: np.ndarray, states: dict[str, dict], subwords=None) -> None:
    """Word2vec rows into the embedding (FastText's n-gram table, if any, into the model's
    ``subwords``); each head starts as its trivial predictor.

    A head's bias is the training prior (class log-frequencies, target mean, mean TF-IDF
    vector) and its weights are small, so every normalized task loss starts near 1.0.
    """
    model.words.weight.copy_(torch.from_numpy(vectors))
    if subwords is not None:
        model.subwords.copy_(torch.from_numpy(np.asarray(subwords)))
    for name, state in states.items():
        head = model.heads[name]
        head.weight.mul_(0.1)
        head.bias.copy_(torch.tensor(state["prior"], dtype=torch.float32))


def pick_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles); without it autocast
    emulates bf16 and is slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: stay in fp32
        return False


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where oneDNN runs bf16 on them."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def use_amp(setting: bool | str, device: torch.device) -> bool:
    """``train.amp``: ``auto`` = bf16 autocast on a CPU with native bf16 and no AMX (schema.TrainConfig says why).
    ``true`` on a CPU without native bf16 trains in fp32 with a warning: oneDNN has no bf16 LSTM there (it raises
    "could not create a primitive descriptor" on every shape)."""
    if device.type == "cpu" and not cpu_has_bf16():
        if setting is True:
            logging.getLogger("mrnet").warning("train.amp=true: this CPU has no native bf16 (AVX512-BF16 or AMX), "
                                               "which oneDNN's bf16 LSTM needs; training in fp32")
        return False
    if setting == "auto":
        return device.type == "cpu" and not cpu_has_amx()
    return bool(setting)


def _load_checkpoint(uri: str, config_hash: str) -> dict | None:
    if not storage.exists(uri):
        return None
    ckpt = torch.load(storage.local_path(uri), map_location="cpu", weights_only=True)
    if ckpt.get("config_hash") != config_hash:
        logging.getLogger("mrnet").warning("%s was written with another training config; starting over", uri)
        return None
    logging.getLogger("mrnet").warning("resuming from %s (epoch %s)", uri, ckpt["epoch"])
    return ckpt


def pg_split(cfg: Config, catalog: pd.DataFrame, pg: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = catalog[catalog["product_group"] == pg]
    if df.empty:
        raise ValueError(f"PG {pg!r} has no products in the catalog")
    return split_train_val(df, cfg.train.val_fraction, cfg.train.seed)


def train_pg(cfg: Config, pg: str, catalog: pd.DataFrame, words: list[str], vectors: np.ndarray,
             out_dir: str, on_epoch=None, subwords: tuple[np.ndarray, dict] | None = None,
             budget_seconds: float | None = None) -> tuple[str, dict]:
    """Train (or resume) the model of one PG; write model.safetensors + metrics.json.
    ``subwords`` (FastText's n-gram table, info): the PG's words below min count get their
    n-gram vector instead of ``<unk>``, and the table travels in the model for cold start."""
    train_df, val_df = pg_split(cfg, catalog, pg)
    states = [T.fit_task(spec, train_df) for spec in cfg.tasks]
    active = {s["name"]: s for s in states if s["active"]}
    if not active:
        raise ValueError(f"PG {pg!r}: no task has enough labels ({[s.get('why') for s in states]})")
    if subwords is not None:
        rare = W.unseen_words(words, catalog.loc[catalog["product_group"] == pg, "title"], cfg.model.max_tokens)
        words, vectors = words + rare, np.concatenate([vectors, W.subword_vectors(rare, *subwords)])
    meta = {"pg": pg, "config": cfg.model_dump(mode="json"), "config_hash": cfg.training_hash(),
            "vocab": words, "tasks": states, "n_train": len(train_df), "n_val": len(val_df)}
    meta |= {"subwords": subwords[1]} if subwords is not None else {}
    torch.manual_seed(cfg.train.seed)  # the LSTM's initial weights
    model = build_model(meta)
    init_weights(model, vectors, active, None if subwords is None else subwords[0])
    return fit(cfg, model, meta, train_df, val_df, active, out_dir, on_epoch, budget_seconds)


def make_optimizers(model: MRNet, active: dict[str, dict], cfg) -> dict[str, torch.optim.Optimizer]:
    """AdamW per task over the encoder + that task's head (``per_task``), or one AdamW over
    everything (``shared``, the same object under every task name). ``cfg``: the TrainConfig.
    The joint loop (eq. 3) takes one step on the sum of the losses, so it always gets the shared one."""
    encoder = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    if cfg.optimizer_state == "shared" or cfg.optimization == "joint":
        shared = adamw([p for p in model.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay)
        return {name: shared for name in active}
    return {name: adamw(encoder + list(model.heads[name].parameters()), cfg.lr, cfg.weight_decay) for name in active}


def _optimizer_states(opts: dict) -> dict:
    return {name: opt.state_dict() for name, opt in opts.items()}


def epoch_line(pg: str, entry: dict, epochs: int, elapsed: float) -> str:
    """One plain log line per epoch (no ``\r``): titles/s, per-task train → validation loss, ETA."""
    eta = elapsed / entry["epoch"] * (epochs - entry["epoch"])
    tasks = " ".join(f"{name} {entry['train_loss'].get(name, float('nan')):.3f}→{v['loss']:.3f}"
                     for name, v in sorted(entry["val"].items()))
    retired = f"  retired: {', '.join(entry['retired'])}" if entry.get("retired") else ""
    return (f"[{pg}] epoch {entry['epoch']}/{epochs} {entry['titles_per_s']:.0f} titles/s  "
            f"loss train→val: {tasks}{retired}  (ETA ≤ {eta:.0f} s)")


def over_budget(history: list[dict], budget_seconds: float | None) -> bool:
    """Whether another epoch would end past this PG's share of ``train.budget_minutes``: the epochs so far
    (of every attempt: the history is in the checkpoint) plus one more as long as the last one. The first
    epoch always runs."""
    if budget_seconds is None or not history:
        return False
    spent = sum(h.get("wall", h["seconds"]) for h in history)
    return spent + history[-1].get("wall", history[-1]["seconds"]) > budget_seconds


def fit(cfg: Config, model: MRNet, meta: dict, train_df: pd.DataFrame, val_df: pd.DataFrame,
        active: dict[str, dict], out_dir: str, on_epoch=None, budget_seconds: float | None = None) -> tuple[str, dict]:
    """Run up to ``cfg.train.epochs`` epochs of the configured loop on ``active`` tasks, stopping
    early on validation loss (``train.patience``) or when the next epoch would overrun
    ``budget_seconds`` (this PG's share of ``train.budget_minutes``), and restoring the best epoch's weights;
    checkpoint each epoch to ``out_dir/ckpt.pt`` and resume from it when ``meta['config_hash']``
    matches (a retried task continues instead of starting over). Writes model.safetensors +
    metrics.json. ``on_epoch(entry)`` sees each epoch's history entry once its checkpoint is written."""
    torch.set_num_threads(cfg.train.threads or os.cpu_count() or 1)
    device = pick_device(cfg)
    pg, resume_key = meta["pg"], meta["config_hash"]
    train = prepare(cfg, train_df, meta["vocab"], meta["tasks"])
    val = prepare(cfg, val_df, meta["vocab"], meta["tasks"])
    model.to(device)
    opts = make_optimizers(model, active, cfg.train)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    stopper = Stopper(cfg.train.patience, cfg.train.min_delta, cfg.train.task_patience, cfg.train.retire_delta,
                      cfg.train.cap_at_prior)
    ckpt_uri = storage.join(out_dir, "ckpt.pt")
    history, start, stopped = [], 0, False
    if (ckpt := _load_checkpoint(ckpt_uri, resume_key)) is not None:
        model.load_state_dict(ckpt["model"])
        for name, opt in opts.items():
            opt.load_state_dict(ckpt["optimizer"][name])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        stopper.load(ckpt["stopper"])
        history, start, stopped = json.loads(ckpt["history"]), int(ckpt["epoch"]), bool(ckpt["stopped"])
    batch = batch_size_for(cfg.train, len(train_df))
    loop = alternating_optimization if cfg.train.optimization == "alternating" else joint_optimization
    amp = use_amp(cfg.train.amp, device)
    t_start, budget_stop = time.perf_counter(), False
    for epoch in range(start + 1, cfg.train.epochs + 1):
        if stopped:
            break
        if over_budget(history, budget_seconds):
            budget_stop = True
            logging.getLogger(__name__).info("[%s] stopped after epoch %d: another epoch would overrun its %.0f s "
                                             "share of train.budget_minutes", pg, epoch - 1, budget_seconds)
            break
        drawn = {name: state for name, state in active.items() if name not in stopper.retired}
        steps = cfg.train.steps_per_epoch or epoch_steps(train, batch, drawn, loop is joint_optimization)
        bar = progress_bar(total=steps, desc=f"{pg} epoch {epoch}/{cfg.train.epochs}", unit="step", leave=False,
                           progress=cfg.train.progress)
        t0 = t_epoch = time.perf_counter()
        losses, titles = loop(model, opts, train, drawn, steps, batch, gen, device, amp, bar)
        seconds = time.perf_counter() - t0
        bar.close()
        history.append({"epoch": epoch, "steps": steps, "seconds": round(seconds, 3),
                        "titles_per_s": round(titles / seconds, 1),
                        "train_loss": {k: float(np.mean(v)) for k, v in losses.items() if v},
                        "val": validate(model, val, active, device)})
        stopped = stopper.update(epoch, history[-1]["val"], model)
        history[-1] |= {"retired": sorted(stopper.retired), "wall": round(time.perf_counter() - t_epoch, 3)}
        save_checkpoint({"model": model.state_dict(), "optimizer": _optimizer_states(opts), "epoch": epoch,
                         "step": sum(h.get("steps", 0) for h in history), "stopped": stopped,
                         "stopper": stopper.state(),
                         "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                         "config_hash": resume_key, "meta": json.dumps(meta),
                         "history": json.dumps(history)}, ckpt_uri)
        if cfg.train.progress:
            logging.getLogger(__name__).info(epoch_line(pg, history[-1], cfg.train.epochs,
                                                             time.perf_counter() - t_start))
        if on_epoch is not None:
            on_epoch(history[-1])
    if stopper.best_state is not None:  # the best epoch's weights, not the last one's
        model.load_state_dict(stopper.best_state)
    best = stopper.best_epoch or len(history)
    meta = meta | {"history": history, "best_epoch": best}
    model_uri = save_model(model, meta, storage.join(out_dir, "model.safetensors"))
    report = {"pg": pg, "n_train": len(train_df), "n_val": len(val_df), "history": history,
              "best_epoch": best, "early_stopped": bool(stopped), "resumed_from_epoch": start,
              "budget_seconds": budget_seconds, "stopped_by_budget": budget_stop,
              "batch_size": batch, "bf16_autocast": amp, "retired": dict(stopper.retired),
              "inactive_tasks": {s["name"]: s["why"] for s in meta["tasks"] if not s["active"]}}
    storage.write_text(storage.join(out_dir, "metrics.json"), json.dumps(report, indent=2))
    return model_uri, report


def save_checkpoint(obj: dict, uri: str) -> None:
    with storage.atomic_path(uri, suffix=".pt") as tmp:
        torch.save(obj, tmp)
