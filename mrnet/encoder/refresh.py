"""Periodic refresh of the dynamic signals (paper §6: "we periodically retrain MRNet to keep
the model updated with the dynamic signals").

A refresh does not rebuild the vocabulary or the word vectors: it warm-starts a PG model
from its latest release and fine-tunes it for ``refresh.epochs`` epochs on today's catalog.

- The model keeps its own definition: vocabulary, architecture and task list come from the
  base model's header. A new task or new word vectors need a full retrain.
- Static tasks keep their fitted state (classes, TF-IDF vocabulary), so their heads carry
  over unchanged.
- Dynamic tasks (price, offer, review …) are re-fitted on the refreshed labels: a new price
  standardization, a new class prior. A head whose output no longer lines up (other
  classes, another size) restarts as the label-prior predictor; the others continue.
- ``refresh.tasks: all`` (default) keeps sampling the static tasks during fine-tuning, as
  rehearsal, so the shared encoder does not drift away from them.
- The train/validation split is the base model's own (same fraction and seed), so no
  product the base model trained on becomes validation data.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pandas as pd
import torch

from mrnet.config.schema import Config
from mrnet.encoder import targets as T
from mrnet.encoder.embed import model_version
from mrnet.encoder.model import MRNet, build_model, load_model
from mrnet.encoder.train import fit, pg_split

RUN_ONLY = ("steps_per_epoch", "threads", "device", "amp", "progress", "batch_size")


def refresh_config(cfg: Config, model_config: dict) -> Config:
    """The base model's config with this run's refresh schedule and run-only settings."""
    base = Config.model_validate(model_config)
    if [t.name for t in base.tasks] != [t.name for t in cfg.tasks]:
        logging.getLogger("mrnet").warning(
            "the configured tasks differ from the base model's %s; a refresh keeps the model's "
            "own tasks (run mrnet_retrain to change them)", [t.name for t in base.tasks])
    train = base.train.model_copy(update={"epochs": cfg.refresh.epochs, "lr": cfg.refresh.lr,
                                          **{k: getattr(cfg.train, k) for k in RUN_ONLY}})
    return base.model_copy(update={"train": train, "refresh": cfg.refresh, "data": cfg.data,
                                   "artifact_root": cfg.artifact_root, "pgs": cfg.pgs, "embed": cfg.embed})


def refit_states(cfg: Config, old_states: list[dict], train_df: pd.DataFrame) -> list[dict]:
    """Static task states as they were; dynamic ones re-fitted on the refreshed labels."""
    specs = {t.name: t for t in cfg.tasks}
    return [T.fit_task(specs[s["name"]], train_df) if specs[s["name"]].signal == "dynamic" else s
            for s in old_states]


def _same_head(new: dict, old: dict | None) -> bool:
    keys = ("active", "out_dim", "classes", "vocabulary")
    return old is not None and all(new.get(k) == old.get(k) for k in keys)


@torch.no_grad()
def warm_start(model: MRNet, base: MRNet, states: list[dict], old_states: list[dict]) -> list[str]:
    """Copy the base weights; heads that no longer line up start as the prior predictor.

    Returns the names of the re-initialised heads."""
    model.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("heads.")},
                          strict=False)
    old = {s["name"]: s for s in old_states}
    fresh = []
    for state in (s for s in states if s["active"]):
        head = model.heads[state["name"]]
        if _same_head(state, old.get(state["name"])):
            head.load_state_dict(base.heads[state["name"]].state_dict())
        else:
            head.weight.mul_(0.1)
            head.bias.copy_(torch.tensor(state["prior"], dtype=torch.float32))
            fresh.append(state["name"])
    return fresh


def refresh_pg(cfg: Config, pg: str, catalog: pd.DataFrame, base_uri: str, out_dir: str,
               on_epoch=None) -> tuple[str, dict]:
    """Fine-tune the PG model at ``base_uri`` on today's labels; write model + metrics."""
    base, base_meta = load_model(base_uri)
    if base_meta["pg"] != pg:
        raise ValueError(f"{base_uri}: a model of PG {base_meta['pg']!r}, not {pg!r}")
    rcfg = refresh_config(cfg, base_meta["config"])
    train_df, val_df = pg_split(rcfg, catalog, pg)
    states = refit_states(rcfg, base_meta["tasks"], train_df)
    dynamic = {t.name for t in rcfg.tasks if t.signal == "dynamic"}
    active = {s["name"]: s for s in states
              if s["active"] and (rcfg.refresh.tasks == "all" or s["name"] in dynamic)}
    if not active:
        raise ValueError(f"PG {pg!r}: no task to fine-tune ({rcfg.refresh.tasks} tasks are inactive)")
    base_version = model_version(base_uri)
    key = json.dumps([rcfg.training_hash(), base_version]).encode()  # resume key: settings + base
    meta = {"pg": pg, "config": rcfg.model_dump(mode="json"), "vocab": base_meta["vocab"],
            "config_hash": hashlib.sha256(key).hexdigest()[:16],
            "tasks": states, "n_train": len(train_df), "n_val": len(val_df),
            "refreshed_from": {"model": base_uri, "version": base_version}}
    torch.manual_seed(rcfg.train.seed)
    model = build_model(meta)
    fresh = warm_start(model, base, states, base_meta["tasks"])
    if fresh:
        logging.getLogger("mrnet").warning("%s: heads %s re-initialised (their labels changed shape)", pg, fresh)
    model_uri, report = fit(rcfg, model, meta, train_df, val_df, active, out_dir, on_epoch)
    return model_uri, report | {"refreshed_from": meta["refreshed_from"], "reinitialised_heads": fresh}
