"""What every run of the service shares: the progress callback and the model's lock.

The base model is shared between browser sessions, and every read or edit of it runs under its lock
(``lm.scope()`` takes it too). A run that finds the lock taken tells its user so before it waits, so that a
page does not look frozen while another session's edit finishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Progress = Callable[[str, float], None]  # (stage description, fraction done 0..1)

WAITING_MESSAGE = "waiting for another session's edit…"


@contextlib.contextmanager
def exclusive(lm, progress: Progress | None) -> Iterator[None]:
    """Hold the model's lock; tell the user when another session holds it first."""
    if not lm.lock.acquire(blocking=False):
        report(progress, WAITING_MESSAGE, 0.0)
        lm.lock.acquire()
    try:
        yield
    finally:
        lm.lock.release()


def report(progress: Progress | None, stage: str, frac: float) -> None:
    if progress is not None:
        progress(stage, min(max(float(frac), 0.0), 1.0))


def scaled(progress: Progress | None, lo: float, hi: float, prefix: str = "") -> Progress | None:
    """A progress callback mapping a sub-task's 0..1 onto ``lo..hi`` of the caller's bar."""
    if progress is None:
        return None

    def sub(stage: str, frac: float) -> None:
        progress(f"{prefix}{stage}", lo + (hi - lo) * min(max(float(frac), 0.0), 1.0))

    return sub
