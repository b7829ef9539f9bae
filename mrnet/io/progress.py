"""Progress bars on a terminal only: an Airflow task log, CI or `make demo | tee` is not a TTY,
and there a bar's hundreds of ``\\r`` frames per line would bury the log. Off a TTY the stages
log one line per epoch instead (train.epoch_line, word2vec, the autoencoders)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def interactive(progress: bool) -> bool:
    """Draw bars: progress asked for, and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def bar(iterable=None, *, progress: bool, **options) -> tqdm:
    """``tqdm(iterable, **options)``, disabled off a terminal."""
    return tqdm(iterable, disable=not interactive(progress), **options)
