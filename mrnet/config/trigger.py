"""What a DAG trigger may set: the boundary between the people who trigger runs and the worker's files.

Anyone with trigger rights on an mrnet DAG sends ``config`` and ``overrides``; the worker then reads
the catalog and writes the artifacts those name. So a trigger is held to three rules (docs/ORCHESTRATION.md):

- ``config`` is a file under the configured folder (``[mrnet] config_dir``): the operator's configs;
- an override sets a *setting* (``SETTINGS``: training, evaluation, gate, retention, … and ``pgs``),
  never tracking or the training tasks;
- an override that names a *path* (``PATH_KEYS``: the artifact root, the catalog, …) is an absolute path
  or ``s3://`` URI under one of ``[mrnet] allowed_roots``, without ``..``; with no roots configured, a
  trigger names no path at all.

``override_pattern`` turns the rules into the JSON-schema pattern of the trigger form's ``overrides``
param, so a REST trigger that breaks them is refused with HTTP 400 before a run exists; ``check_trigger``
applies them again in the run's first task (a schema can be edited, the worker's check cannot), with
symlinks resolved. Runs started from the command line (``mrnet run``) are not triggers: a shell user can
read their own files anyway. Pure Python on purpose: the DAG files build their form from it at parse time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# settings a trigger may override: ``pgs``, and ``section.field`` (any depth) of the other sections
SETTINGS = ("pgs", "train", "refresh", "model", "word2vec", "embed", "sparse_ae", "gate", "index", "retention",
            "data", "evaluation", "crosslingual")
PATH_KEYS = ("artifact_root", "data.raw_dir", "data.pg_mapping", "data.catalog", "crosslingual.pairs",
             "crosslingual.catalog_a", "crosslingual.catalog_b")
# settings a trigger may not override: whole sections that hold paths (nested in lists), or the tasks trained
REFUSED = ("evaluation.tasks", "tracking", "tasks")
KEY = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
SAFE_TAIL = r"(?:/(?!\.\.?(?:/|$))[^/\s]+)*/?"  # more segments, none of them . or ..


@dataclass(frozen=True)
class TriggerPolicy:
    """``config_dir``: the folder every triggered config lies under (absolute once resolved by the caller);
    ``roots``: the absolute paths / ``s3://`` prefixes a triggered path may lie under."""

    config_dir: str
    roots: tuple[str, ...] = ()

    @classmethod
    def parse(cls, config_dir: str, allowed_roots: str) -> "TriggerPolicy":
        """From the Airflow settings: ``allowed_roots`` is comma-separated (spaces ignored)."""
        roots = tuple(r.strip().rstrip("/") or "/" for r in (allowed_roots or "").split(",") if r.strip())
        for root in roots:
            if not (root.startswith("s3://") or os.path.isabs(root)):
                raise ValueError(f"[mrnet] allowed_roots: {root!r} is neither an absolute path nor an s3:// URI")
        return cls(config_dir, roots)


def _any(names: tuple[str, ...]) -> str:
    return "(?:" + "|".join(re.escape(n) for n in names) + ")"


def override_pattern(roots: tuple[str, ...]) -> str:
    """The JSON-schema pattern one ``overrides`` item must match: a setting (``key=any value``), or a path key
    whose value lies under one of ``roots`` (none: no path key matches)."""
    not_refused = rf"(?!{_any(REFUSED + PATH_KEYS)}[.=])"
    setting = rf"{not_refused}(?:pgs|{_any(SETTINGS[1:])}\.{KEY})=.*"  # a section's field, never a whole section
    choices = [setting]
    if roots:
        under = "(?:" + "|".join(re.escape(r.rstrip("/")) for r in roots) + ")"
        choices.append(rf"{_any(PATH_KEYS)}={under}{SAFE_TAIL}")
    return "^(?:" + "|".join(choices) + ")$"


def check_trigger(config_path: str, overrides: list[str], policy: TriggerPolicy) -> None:
    """Raise one line naming the first rule a trigger breaks; ``config_path`` is absolute (resolved by the caller)."""
    folder = _real(policy.config_dir)
    if not _under(_real(config_path), folder):
        raise ValueError(f"config {config_path} is outside {folder} ([mrnet] config_dir): a trigger may only "
                         "name configs there")
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in PATH_KEYS:
            _check_path(key, value.strip().strip("'\""), policy.roots)
        elif not re.match(override_pattern(()), item):
            raise ValueError(f"override {item!r}: a trigger may set only settings ({', '.join(SETTINGS)}; not "
                             f"{', '.join(REFUSED)}) and the paths {', '.join(PATH_KEYS)} under [mrnet] allowed_roots")


def _check_path(key: str, value: str, roots: tuple[str, ...]) -> None:
    if not roots:
        raise ValueError(f"override {key}={value}: a trigger may name a path only under [mrnet] allowed_roots, "
                         "and none is configured")
    if not (value.startswith("s3://") or os.path.isabs(value)) or ".." in value.split("/"):
        raise ValueError(f"override {key}={value}: a triggered path is absolute (or s3://…) and has no '..'")
    if not any(_under(_real(value), _real(root)) for root in roots):
        raise ValueError(f"override {key}={value}: outside [mrnet] allowed_roots ({', '.join(roots)})")


def _real(path: str) -> str:
    """Local paths with symlinks resolved (a link under a root that points out of it is outside); URIs as given."""
    return path.rstrip("/") if path.startswith("s3://") else os.path.realpath(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
