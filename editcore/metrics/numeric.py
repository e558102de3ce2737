"""Small numeric helpers shared by every metric family: bootstrap intervals, safe means, log floors,
divergences (KL, Jensen-Shannon).

Every mean over cases or prompts that a report shows comes with a percentile bootstrap interval
(Efron & Tibshirani 1993): resample the per-item values with replacement ``n_resamples`` times with a
fixed seed, take the mean of each resample, and report the ``(1-level)/2`` and ``(1+level)/2``
percentiles of those means. With one item (or none) the interval collapses onto the mean.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

# Log-probabilities are floored here before they enter any arithmetic, so a token that the model gives
# probability 0 (log -inf, e.g. after an edit saturates a softcapped logit) turns into a large finite
# penalty instead of NaN/inf. exp(-69.08) = 1e-30.
LOG_FLOOR = math.log(1e-30)
PROB_FLOOR = 1e-30


def floor_log(x: float) -> float:
    """``x`` with -inf/NaN replaced by :data:`LOG_FLOOR` (and never below it)."""
    if x != x or x < LOG_FLOOR:  # NaN or too small
        return LOG_FLOOR
    return float(x)


def safe_exp(logp: float) -> float:
    return math.exp(floor_log(logp))


@dataclass(frozen=True)
class CI:
    """A mean with its bootstrap interval; ``n`` is the number of items averaged."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)

    def fmt(self, digits: int = 3, pct: bool = False) -> str:
        if self.n == 0:
            return "n/a"
        k = 100.0 if pct else 1.0
        unit = "%" if pct else ""
        body = f"{self.mean * k:.{digits}f}{unit}"
        if self.n > 1:
            body += f" [{self.lo * k:.{digits}f}, {self.hi * k:.{digits}f}]"
        return f"{body} (n={self.n})"


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for an empty list (reports show n=0 next to it, so it is not mistaken for data)."""
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else 0.0


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> CI:
    """Percentile bootstrap interval of the mean of ``values`` (seeded, so reports are reproducible)."""
    vals = [float(v) for v in values]
    if any(not math.isfinite(v) for v in vals):
        raise ValueError("bootstrap_ci got a non-finite value")
    n = len(vals)
    m = mean(vals)
    if n <= 1 or min(vals) == max(vals):
        return CI(m, m, m, n, level)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(vals, k=n)) / n for _ in range(n_resamples))
    lo_q, hi_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    lo = means[min(n_resamples - 1, max(0, int(math.floor(lo_q * n_resamples))))]
    hi = means[min(n_resamples - 1, max(0, int(math.ceil(hi_q * n_resamples)) - 1))]
    # The sample mean can fall a rounding error outside the resampled range; keep lo <= mean <= hi.
    return CI(m, min(lo, m), max(hi, m), n, level)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative numbers; 0 when any of them is 0 (the limit), 0 for an empty list."""
    vals = [float(v) for v in values]
    if not vals or any(v <= 0.0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def normalise(ps: Sequence[float]) -> list[float]:
    """Scale non-negative numbers to sum to 1 (uniform if they are all zero)."""
    vals = [max(float(p), 0.0) for p in ps]
    total = sum(vals)
    if total <= 0.0:
        return [1.0 / len(vals)] * len(vals) if vals else []
    return [v / total for v in vals]


def kl(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p || q) in nats for discrete distributions; 0·log 0 = 0, q floored at :data:`PROB_FLOOR`."""
    return sum(pi * (math.log(pi) - math.log(max(qi, PROB_FLOOR))) for pi, qi in zip(p, q) if pi > 0.0)


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence (nats) of two non-negative vectors after normalising each to sum 1:
    JS = ½ KL(p‖m) + ½ KL(q‖m), m = ½(p+q). Bounded by ln 2."""
    if len(p) != len(q):
        raise ValueError("js_divergence: vectors differ in length")
    pn, qn = normalise(p), normalise(q)
    m = [(a + b) / 2.0 for a, b in zip(pn, qn)]
    return 0.5 * kl(pn, m) + 0.5 * kl(qn, m)


def ci_of(get):
    """A summary field holding the bootstrap CI of ``get(item)`` over the summary's items (``None`` values
    left out); see :class:`ItemSummary`."""
    return field(init=False, metadata={"ci_of": get})


class ItemSummary:
    """Base of the dataclasses that summarise a list of per-item results: every field made with :func:`ci_of`
    is filled from the items (the attribute named by ``items``) after init."""

    items = "outcomes"

    def __post_init__(self):
        rows = getattr(self, self.items)
        for f in fields(self):
            get = f.metadata.get("ci_of")
            if get is not None:
                setattr(self, f.name, bootstrap_ci([v for v in map(get, rows) if v is not None]))

    def to_dict(self) -> dict:
        return asdict(self)
