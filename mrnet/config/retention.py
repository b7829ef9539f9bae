"""Typed configuration of retention and housekeeping (release/retention.py, ``mrnet gc``, the
``mrnet_housekeeping`` DAG; docs/RETENTION.md): what a year of weekly retrains keeps."""

from __future__ import annotations

from pydantic import Field

from mrnet.config.base import Frozen


class RetentionConfig(Frozen):
    """Keep every release that was ever champion, the current champion and challenger, the last
    ``keep_last`` runs, every run younger than ``keep_days`` and every run still in progress (no
    gate decision yet and started less than ``running_hours`` ago); delete the rest: run folders,
    their MLflow runs and artifacts, and their registry versions. In the runs kept, each PG's
    ``ckpt.pt`` (optimizer state, 2x the model) goes once the run has its gate decision."""

    keep_last: int = Field(default=8, ge=1, le=100_000)
    keep_days: float = Field(default=28.0, ge=0.0, le=3650.0)
    running_hours: float = Field(default=48.0, ge=1.0, le=24.0 * 60)  # > the longest task timeouts + retries
    drop_checkpoints: bool = True
    lock_stale_minutes: float = Field(default=120.0, ge=1.0, le=24.0 * 60)  # a lock older than this was left by a kill
