"""What every config model and every name that becomes a path share: the frozen base model and
the path-segment rule (a PG, a run id, a task, a locale becomes a folder or an S3 key part).

It is the bottom of the tree: nothing in mrnet is imported here, so io/storage can use the same
rule as the config models.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# a name that becomes one path segment (a PG folder, a run folder, an S3 key part): no '/', no '..'
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_segment(name: str) -> bool:
    return bool(SEGMENT.match(str(name))) and ".." not in str(name)


def check_segment(name: str, what: str) -> str:
    """``name`` unchanged if it is a safe path segment, else a ValueError that names it."""
    if not is_segment(name):
        raise ValueError(f"{what} {name!r} cannot be a file or folder name: use letters, digits, '_', '-' and '.', "
                         "starting with a letter or digit, without '..'")
    return name


def safe_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keep them readable but path- and S3-safe. A run id that
    would climb out of the runs folder ('..', '.', '../x') is refused, not rewritten."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(run_id)).strip("_")
    return check_segment(safe or "run", "run id")


# a name that becomes a file or folder (task, PG, locale): SEGMENT, never '..'
Name = Annotated[str, AfterValidator(lambda v: check_segment(v, "name"))]


class Frozen(BaseModel):
    """Base of every config section: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")
