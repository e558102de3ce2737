"""Speed settings of the locate-then-edit methods: which exact fast paths run.

Every switch names a fast path that gives the same result as the plain computation (each is checked against
it at run time and has a test); they exist so the bench can measure what each one buys. A method takes them
as an argument (``compute(..., speed=Speed(...))``); nothing reads them from a global.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

PACKED_MB_ENV = "EDITSCOPE_PACKED_MB"


@dataclass(frozen=True)
class Speed:
    block_replay: bool = True  # optimisation steps run only the blocks above the edited layer
    suffix_cache: bool = True  # ... and only the tokens from the subject on, the prefix in a key/value cache
    shared_prefixes: bool = True  # each context prefix's key/values computed once and kept across edits
    record_first_step: bool = True  # the suffix's recording pass is the first step (and reads ROME's keys)
    drop_finished: bool = True  # requests that met their stopping rule leave the batch (MEMIT)
    shared_kl_row: bool = True  # the KL prompt read from the plain prompt's row when it opens with the subject
    layer_walk: bool = True  # MEMIT reads each layer by walking up from the previous layer's block inputs
    fused_log_probs: bool = True  # log-probabilities with a hand-written gradient (models.kernels)
    packed_linears: bool = True  # replayed Linear layers through oneDNN's blocked weights (models.kernels)
    # Packed copies only while twice the model's parameters plus the copies fit in this many MB (0: never).
    packed_limit_mb: float = 2000.0

    @classmethod
    def from_env(cls) -> "Speed":
        """The defaults, with ``EDITSCOPE_PACKED_MB`` (when set) as the packed-copy limit. Read when called, so
        a method given no settings follows the environment of the run, not of the import."""
        raw = os.environ.get(PACKED_MB_ENV, "").strip()
        return cls(packed_limit_mb=float(raw)) if raw else cls()

    def but(self, **changes) -> "Speed":
        """These settings with some switches changed (``Speed().but(suffix_cache=False)``)."""
        return dataclasses.replace(self, **changes)


def switches() -> list[str]:
    """Names of the on/off switches (for the bench's variant rows and the tests)."""
    return [f.name for f in dataclasses.fields(Speed) if f.type in ("bool", bool)]
