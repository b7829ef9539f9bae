"""Early stopping for a PG model (encoder/train.fit): the best epoch by mean normalized validation loss,
whose weights are restored, and task retirement, which stops drawing a task that overfits (alternating
optimization, paper §3.1, with far fewer labels per task than the paper's million). Its state travels in the
training checkpoint, so a run killed and resumed stops where an uninterrupted one would."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn


PRIOR = 1.0  # a normalized loss of 1.0 is the label-prior predictor's (encoder/targets.py)


def informative(loss: float) -> float:
    """A task's normalized loss counted at most as the prior (1.0): above it a head knows nothing of its task and
    is only miscalibrated. The promotion gate counts rises this way. As a stop score (``train.cap_at_prior``) it
    keeps a task a title cannot predict (the demo's ``review``: 0.85 one epoch, 1.45 the next) from picking the
    epoch, but it also hides that task's slow fall towards the prior, and on BigBasket 10k training then stopped
    sooner and scored lower, so the stop score leaves it off by default (docs/TRAINING.md)."""
    return min(loss, PRIOR)


def val_score(val: dict, retired=(), cap: bool = False) -> float | None:
    """Early-stopping score of one epoch: the mean normalized validation loss over its tasks still trained
    (``retired`` ones left out: an overfit head that is no longer drawn must not end the others' training),
    each capped at the prior with ``cap`` (``informative``; ``train.cap_at_prior``)."""
    losses = [informative(v["loss"]) if cap else v["loss"] for name, v in val.items()
              if name not in retired and np.isfinite(v["loss"])]
    return float(np.mean(losses)) if losses else None


@dataclass
class Stopper:
    """Early stopping with best-weight restore, and task retirement; its state lives in the checkpoint,
    so a resumed run stops at the same epoch with the same weights as an uninterrupted one.

    The PG's score is the mean normalized validation loss over its tasks. With ``task_patience``,
    each task also keeps its own best loss: a task that overfits (``retire``) is retired
    (``retired``: task → epoch), is no longer drawn by the training loop, and leaves the score: the best
    epoch kept so far is re-scored on the remaining tasks (``best_val`` holds its per-task losses), so
    epochs are compared on the same tasks, and the heads still learning decide when to stop."""

    patience: int | None
    min_delta: float
    task_patience: int | None = None
    retire_delta: float = 0.05
    cap: bool = False
    best: float = float("inf")
    best_epoch: int = 0
    best_state: dict | None = None
    best_val: dict = field(default_factory=dict)
    waited: int = 0
    task_best: dict = field(default_factory=dict)
    task_waited: dict = field(default_factory=dict)
    retired: dict = field(default_factory=dict)

    def update(self, epoch: int, val: dict, model: nn.Module) -> bool:
        """Record an epoch's validation metrics; True when training should stop: every task retired, or
        (with ``patience``) no better mean for ``patience`` epochs. Without ``patience`` no best epoch is
        kept: the PG trains to the cap (or until every task is retired) and keeps its last weights."""
        before = len(self.retired)
        self.retire(epoch, val)
        every_task_retired = self.task_patience is not None and bool(val) and all(n in self.retired for n in val)
        score = val_score(val, self.retired, self.cap)
        if score is None or self.patience is None:
            return every_task_retired
        if len(self.retired) > before and self.best_val:  # the kept best, on the tasks still trained
            rescored = val_score(self.best_val, self.retired, self.cap)
            self.best = rescored if rescored is not None else float("inf")
        self.improve(epoch, score, model, val)
        return every_task_retired or self.waited >= self.patience

    def improve(self, epoch: int, score: float | None, model: nn.Module, val: dict | None = None) -> None:
        if score is not None and score < self.best - self.min_delta:
            self.best, self.best_epoch, self.waited = score, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.best_val = {name: {"loss": float(v["loss"])} for name, v in (val or {}).items()}
        else:
            self.waited += 1

    def retire(self, epoch: int, val: dict) -> None:
        """Retire each task whose validation loss has been more than ``retire_delta`` above its own best
        for ``task_patience`` epochs in a row: it overfits (a plateau, or a slow decline, is not retired,
        so a saturated task such as gender keeps anchoring the encoder)."""
        if self.task_patience is None:
            return
        for name, metrics in sorted(val.items()):
            loss = metrics["loss"]
            if name in self.retired or not np.isfinite(loss):
                continue
            best = min(self.task_best.get(name, float("inf")), loss)
            self.task_best[name] = best
            self.task_waited[name] = self.task_waited.get(name, 0) + 1 if loss > best + self.retire_delta else 0
            if self.task_waited[name] >= self.task_patience:
                self.retired[name] = epoch

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited,
                "best_state": self.best_state, "best_val": self.best_val, "task_best": self.task_best, "task_waited": self.task_waited,
                "retired": self.retired}

    def load(self, state: dict) -> None:
        self.best, self.best_epoch, self.waited = state["best"], state["best_epoch"], state["waited"]
        self.best_state, self.best_val = state["best_state"], state.get("best_val", {})
        self.task_best, self.task_waited = state.get("task_best", {}), state.get("task_waited", {})
        self.retired = state.get("retired", {})
