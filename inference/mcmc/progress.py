"""The NUTS progress bar: a tqdm bar on the host, advanced from inside compiled chains.

The compiled chains call :func:`tick` through ``jax.debug.callback`` every ``rate``
iterations (when asked to: each call is a device-host round trip); :func:`run_with_progress`
opens the bar for the duration of one run and points :data:`PROGRESS` at it.
"""

import os
import sys
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["PROGRESS", "run_with_progress", "show_progress", "tick"]

#: The progress bar the compiled programs report to (set while a run is in flight).
PROGRESS: dict[str, Any] = {"bar": None}


def show_progress(progress_bar: bool | None) -> bool:
    """Whether to show the bar: as asked, or by default on a terminal outside CI.

    Example:
        >>> show_progress(False), show_progress(True)
        (False, True)
    """
    if progress_bar is None:
        return sys.stderr.isatty() and not os.environ.get("CI")
    return bool(progress_bar)


def tick(iteration, rate, total) -> None:
    """Advance the bar of the run in flight to ``iteration`` (of ``total``, by ``rate``)."""
    bar = PROGRESS["bar"]
    if bar is not None:
        iteration, rate, total = int(iteration), int(rate), int(total)
        bar.update(rate if iteration % rate == 0 else total % rate)


def run_with_progress(sampler: Callable, total: int, progress: bool, *arguments):
    """``sampler(*arguments)``, waited for, with a bar of ``total`` iterations.

    Args:
        sampler: compiled chains, with the host callbacks of the bar when ``progress``.
        total: iterations of all chains together (warmup included).
        progress: show a bar (on stderr).
        *arguments: the arguments of ``sampler``.
    """
    if not progress:
        return jax.block_until_ready(sampler(*arguments))
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="NUTS", unit="it", file=sys.stderr) as bar:
        PROGRESS["bar"] = bar
        try:
            return jax.block_until_ready(sampler(*arguments))
        finally:
            PROGRESS["bar"] = None
