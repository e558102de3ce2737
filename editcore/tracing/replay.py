"""The fast path of a causal trace: many restorations per forward, each computing only what it changes.

A restoration at token ``t`` starting at layer ``lo`` (the restored block's successor for the residual
stream, the window's first layer for MLP / attention outputs) leaves every layer below ``lo`` and every
position before ``t`` exactly as in the corrupted run. So, for each restored token ``t``, all its
restorations (every kind, centre layer and noise sample) form one batch over positions ``t..T-1`` only: the
layers run from the lowest start upwards, a row joins the batch at its own start layer (its input is the
corrupted run's state there, with the clean state put back for a residual-stream restoration), and each
block attends to the corrupted run's cached keys and values of positions ``< t`` (per row, its own noise
sample's). The blocks are called with the keyword arguments recorded from one cached forward of a single
row (masks and rotary embeddings broadcast over the batch), as :mod:`editcore.methods.replay` does.

The result is checked: the first batch carries one unrestored row per noise sample, which must reproduce the
corrupted run; if it does not (a family doing something this does not expect), the trace falls back to
:mod:`editcore.tracing.reference`, plain full forwards.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

from .. import hooks
from ..methods.common import agrees, take_rows
from ..text import cached_forward
from .runs import Prepared, answer_prob
from .settings import window_range

log = logging.getLogger(__name__)

NONE, HIDDEN, MLP, ATTN = 0, 1, 2, 3
KIND_CODES = {"hidden": HIDDEN, "mlp": MLP, "attn": ATTN}


class ReplayMismatch(Exception):
    """The replay did not reproduce the corrupted run; use the reference path."""


@dataclass
class Rows:
    """The restorations of one token, one row per (kind, centre layer, noise sample), sorted by start layer."""

    kind: torch.Tensor  # NONE / HIDDEN / MLP / ATTN
    layer: torch.Tensor  # centre layer (HIDDEN: the restored block)
    start: torch.Tensor  # first block run (L: only the final norm)
    lo: torch.Tensor  # restored layers [lo, hi) for MLP / ATTN
    hi: torch.Tensor
    sample: torch.Tensor

    @classmethod
    def build(cls, prep: Prepared, t: int, kinds, window: int, n_layers: int, check: bool) -> "Rows":
        L, S, T = n_layers, prep.settings.samples, prep.T
        spec = []  # (kind, layer, start, lo, hi)
        if check:
            spec.append((NONE, -1, 0, 0, 0))
        for kind in kinds:
            for layer in range(L):
                if kind == "hidden":
                    # The last block's output at an earlier token reaches nothing: that cell is the corrupted run.
                    if layer == L - 1 and t < T - 1:
                        continue
                    spec.append((HIDDEN, layer, layer + 1, 0, 0))
                else:
                    lo, hi = window_range(layer, window, L)
                    spec.append((KIND_CODES[kind], layer, lo, lo, hi))
        full = [(*s, sample) for s in spec for sample in range(S)]
        full.sort(key=lambda r: r[2])
        cols = list(zip(*full))
        return cls(*(torch.tensor(c, dtype=torch.long) for c in cols))

    def __len__(self) -> int:
        return self.kind.numel()


def _recorded_calls(lm, prep: Prepared, t: int):
    """Block calls of one cached forward of a single corrupted row over positions ``t..T-1`` (its cache
    holding the row's positions ``< t``), and the cache object they name. ``t == 0``: a plain forward."""
    ad = lm.adapter
    modules = [ad.block(j) for j in range(ad.n_layers)]
    x = torch.tensor([prep.ids[t:]], device=lm.device)
    states = prep.prefix_states.get(t)
    if states is None:
        def forward():
            return lm.model.base_model(input_ids=x, use_cache=False)
        cache = None
    else:
        cache = copy.copy(prep.cache)
        cache.layers = [copy.copy(layer) for layer in prep.cache.layers]
        one = torch.tensor([0], device=lm.device)
        for layer, state in zip(cache.layers, states):
            layer.__dict__.clear()
            layer.__dict__.update(take_rows(state, one, prep.settings.samples))

        def forward():
            return cached_forward(lm, x, None, None, cache)
    _, calls = hooks.record_calls(modules, forward)
    if calls is None:
        raise ReplayMismatch("block calls could not be recorded")
    return calls, cache


@torch.no_grad()
def run_token(lm, prep: Prepared, t: int, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-normed states at the last token ``[len(rows), d]`` of every restoration of token ``t``, and
    P(answer) for each row."""
    ad = lm.adapter
    L, S = ad.n_layers, prep.settings.samples
    dev = lm.device
    calls, cache = _recorded_calls(lm, prep, t)
    states = prep.prefix_states.get(t)
    kind, start = rows.kind.to(dev), rows.start
    sample = rows.sample.to(dev)
    plan: dict[tuple[str, int], torch.Tensor] = {}
    for code, name in ((MLP, "mlp"), (ATTN, "attn")):
        for j in range(L):
            sel = torch.nonzero((rows.kind == code) & (rows.lo <= j) & (rows.hi > j))[:, 0]
            if sel.numel():
                plan[(name, j)] = sel.to(dev)

    def restore(name, j):
        clean = prep.clean[name][j, t]

        def fn(_args, out):
            idx = plan.get((name, j))
            if idx is None:
                return None
            h = hooks.first(out)
            h[idx, 0] = clean.to(h.dtype)  # rows in the plan started at or below j, so they are active
            return None
        return fn

    points = [(ad.module("mlp", j), restore("mlp", j)) for j in range(L) if ("mlp", j) in plan]
    points += [(ad.module("attn_out", j), restore("attn", j)) for j in range(L) if ("attn", j) in plan]
    h = None
    n_in = 0
    with hooks.together(hooks.on_output(m, fn) for m, fn in points):
        for j in range(int(start.min()), L + 1):
            k = int((start == j).sum())
            if k:
                new = slice(n_in, n_in + k)
                init = prep.corrupt_in[j][sample[new], t:].clone()
                put = torch.nonzero(kind[new] == HIDDEN)[:, 0]
                if put.numel():
                    init[put, 0] = prep.clean["hidden"][j - 1, t].to(init.dtype)
                h = init if h is None else torch.cat([h, init])
                n_in += k
            if j == L:
                break
            if h is None:
                continue
            if states is not None:
                layer = cache.layers[j]
                layer.__dict__.clear()
                layer.__dict__.update(take_rows(states[j], sample[:n_in], S))
            args, kwargs = calls[j]
            h = hooks.first(ad.block(j)(h, *args[1:], **kwargs))
    final = ad.module("final_norm")(h[:, -1:])[:, 0]
    return final, answer_prob(lm, final, prep.answer_id)


def replay_scores(lm, prep: Prepared, kinds, window: int, progress=None) -> dict[str, torch.Tensor]:
    """``kind -> [T, L]`` P(answer) after restoring each (token, layer), averaged over the noise samples.
    Tokens before the subject are left at the corrupted probability: nothing differs there between the clean
    and the corrupted run, so restoring them changes nothing."""
    L, T = lm.adapter.n_layers, prep.T
    scores = {k: torch.full((T, L), prep.low, dtype=torch.float64) for k in kinds}
    todo = list(range(prep.s0, T))
    # Checked on the first token, and on the first token replayed with a cache when the first had none.
    checked = {prep.s0, prep.s0 + 1 if prep.prefix_states.get(prep.s0) is None else prep.s0}
    for i, t in enumerate(todo):
        check = t in checked
        rows = Rows.build(prep, t, kinds, window, L, check=check)
        final, p = run_token(lm, prep, t, rows)
        if check:
            chk = torch.nonzero(rows.kind == NONE)[:, 0]
            ref = prep.corrupt_final[rows.sample[chk].to(prep.corrupt_final.device)]
            if not agrees(ref, final[chk.to(final.device)], f"trace replay ({lm.adapter.family})",
                          "using plain forwards"):
                raise ReplayMismatch("the replay differs from the corrupted run")
        p = p.double()
        for kind in kinds:
            code = KIND_CODES[kind]
            sel = rows.kind == code
            sums = torch.zeros(L, dtype=torch.float64).index_add_(0, rows.layer[sel], p[sel])
            counts = torch.zeros(L, dtype=torch.float64).index_add_(0, rows.layer[sel], torch.ones_like(p[sel]))
            have = counts > 0
            scores[kind][t, have] = sums[have] / counts[have]
        if progress is not None:
            progress(f"restoring token {t + 1}/{T}", (i + 1) / len(todo))
    return scores
