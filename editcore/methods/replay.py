"""Replaying the blocks above an edited layer: the machinery that makes each optimisation step cheap.

While a value is optimised at layer ``l``, nothing below the edit changes, so recomputing it every step is
wasted work. Both replays record one forward and then run only what can change:

* :class:`BlockReplay` records the hidden state entering block ``start`` and the keyword arguments every
  later block was called with (masks, rotary ``position_embeddings``, Gemma's per-layer masks), and runs
  blocks ``start..L-1`` plus the final norm from there. Used by ROME/MEMIT's value optimisation and by FT.
* :class:`SuffixReplay` goes further: the edit sits at the subject's last token, so every earlier position is
  fixed too. Rows are laid out so that token falls in one column; the prefix goes into a key/value cache
  once (a context prefix shared by several rows, or by the next edit while the weights are unchanged, is
  computed once: :func:`segment_cache`) and each step runs only the suffix.

Neither is trusted blindly: :meth:`check` compares an unedited replay with the recorded forward, and the
suffix replay's cached forward is compared with a plain forward, so a family that does something unexpected
between blocks falls back to the slower exact path. Both are exact for the families tested; the check is
for the ones that are not.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence

import torch

from .. import hooks
from ..scope import content_key
from ..text import cached_forward, final_hidden, pad_id, padded, position_ids
from .common import agrees, plain_hidden, take_rows

# ``edit(x)`` rewrites the hidden states ``x`` of every row the replay holds: ROME adds its delta to the MLP
# projection's output, MEMIT to the input of the block above the edited one.
HiddenEdit = Callable[[torch.Tensor], torch.Tensor]


class NoSuffix(Exception):
    """This model or batch cannot use the suffix replay (callers fall back to :class:`BlockReplay`)."""


def record_blocks(blocks: Sequence[torch.nn.Module], final_norm: torch.nn.Module, forward: Callable[[], object]):
    """Run ``forward`` recording every call of ``blocks`` and of the final norm. Returns ``(output, block
    calls, h0)`` where ``h0`` is the input of the first block (of the final norm when there are no blocks),
    or ``None`` when the calls could not be recorded (hidden states not passed positionally)."""
    out, calls = hooks.record_calls([*blocks, final_norm], forward)
    if calls is None:
        return out, [], None
    return out, calls[:len(blocks)], calls[0][0][0].detach()


def run_recorded(rp, edit: HiddenEdit | None, module: torch.nn.Module | None) -> torch.Tensor:
    """Run a replay's recorded block calls from its recorded input ``rp.h0`` (edited by ``edit`` unless the
    edit sits on ``module``, whose hook the caller installed). Returns final-normed hidden states."""
    h = rp.h0 if edit is None or module is not None else edit(rp.h0)
    for block, (args, kwargs) in zip(rp.blocks, rp.calls):
        h = hooks.first(block(h, *args[1:], **kwargs))
    return rp.final_norm(h)


class BlockReplay:
    """Run blocks ``start..L-1`` (plus the final norm) on recorded inputs; see the module docstring. With
    ``enabled=False`` every run is a full forward (the reference path the bench compares with)."""

    def __init__(self, lm, ids: torch.Tensor, mask: torch.Tensor, start: int, enabled: bool = True):
        self.lm = lm
        self.ids, self.mask, self.start = ids, mask, start
        ad = lm.adapter
        self.blocks = [ad.block(i) for i in range(start, ad.n_layers)]
        self.below = ad.block(start - 1) if start > 0 else None  # its output is the replay's input
        self.final_norm = ad.module("final_norm")
        with torch.no_grad():
            out, self.calls, self.h0 = record_blocks(self.blocks, self.final_norm, lambda: lm.model.base_model(
                input_ids=ids, attention_mask=mask, use_cache=False))
        self.reference = final_hidden(out).detach()
        self.use_replay = self.h0 is not None and enabled
        self.checked = False

    @classmethod
    def of(cls, lm, seqs: Sequence[Sequence[int]], start: int, enabled: bool = True) -> "BlockReplay":
        """A replay of right-padded ``seqs``."""
        return cls(lm, *padded(lm, seqs), start, enabled)

    def run(self, edit: HiddenEdit | None = None, module: torch.nn.Module | None = None) -> torch.Tensor:
        """Final-normed hidden states ``[B, T, d]``. ``edit`` rewrites the output of ``module`` (inside the
        replayed blocks) or, without ``module``, the replay's input (the output of block ``start - 1``)."""
        target = module
        if not self.use_replay and edit is not None and module is None:
            if self.below is None:
                raise ValueError("an edit of the replay's input needs start >= 1")
            target = self.below
        with hooks.edit_output(target, edit):
            if self.use_replay:
                return run_recorded(self, edit, module)
            out = self.lm.model.base_model(input_ids=self.ids, attention_mask=self.mask, use_cache=False)
            return final_hidden(out)

    def at(self, rows: Sequence[int], positions: Sequence[int]) -> tuple[list[int], list[int]]:
        """(row, position in the original sequence) -> (row, column) of what :meth:`run` returns."""
        return list(rows), list(positions)

    def check(self, h: torch.Tensor) -> bool:
        """Compare an unedited run ``h`` with the recorded full forward; switch to full forwards if they differ."""
        if self.checked or not self.use_replay:
            return True
        self.checked = True
        m = self.mask.bool()
        self.use_replay = agrees(self.reference[m], h.detach()[m], f"block replay ({self.lm.adapter.family})",
                                 "using full forwards")
        return self.use_replay


class SuffixReplay:
    """Like :class:`BlockReplay`, but only the tokens from each row's edited token (``look``) onward.

    Row layout: ``[its segment, left-padded to P][the rest of its prefix, left-padded][suffix, right-padded]``,
    so the edited token of every row sits in column ``c`` (explicit position ids skip the padding). The
    constructor fills a key/value cache with the columns before ``c``; :meth:`record` runs the suffix through
    the model itself with the edit installed (still adding zero), recording the suffix's input to block
    ``start`` and every block's call — that pass, with its graph, is the optimisation's first step — and
    checks the cached forward against a plain one on the rows with the most and the least padding. Each later
    step (:meth:`run`) runs blocks ``start..L-1`` on the suffix only, the cache reset to its post-prefix state.
    In suffix coordinates the edited token is column 0 of every row (:meth:`at`).
    """

    def __init__(self, lm, seqs: Sequence[Sequence[int]], look: Sequence[int], start: int,
                 segments: Sequence[Sequence[int]] | None = None, share_prefixes: bool = True):
        self.lm = lm
        ad = lm.adapter
        self.seqs, self.look, self.start = seqs, list(look), start
        if max(self.look) < 1:
            raise NoSuffix("no row has a token before the edited one")
        segs = [tuple(g) if g and share_prefixes and len(g) <= i and tuple(q[:len(g)]) == tuple(g) else ()
                for q, i, g in zip(seqs, self.look, segments or [()] * len(seqs))]
        P = max(map(len, segs))
        c = P + max(i - len(g) for i, g in zip(self.look, segs))
        width = c + max(len(q) - i for q, i in zip(seqs, self.look))
        ids = torch.full((len(seqs), width), pad_id(lm.tokenizer), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (q, i, g) in enumerate(zip(seqs, self.look, segs)):
            for a, part in ((P - len(g), g), (c - (i - len(g)), q[len(g):i]), (c, q[i:])):
                ids[r, a:a + len(part)] = torch.tensor(list(part), dtype=torch.long)
                mask[r, a:a + len(part)] = 1
        self.ids, self.mask = ids.to(lm.device), mask.to(lm.device)
        self.pos = position_ids(self.mask)
        self.c = c
        self.blocks = [ad.block(i) for i in range(start, ad.n_layers)]
        self.below = ad.block(start - 1) if start > 0 else None  # MEMIT's edit sits on its output
        self.final_norm = ad.module("final_norm")
        # The rows with the most and the least padding: where a cached or replayed forward is checked.
        self.probe = sorted({min(range(len(seqs)), key=self.look.__getitem__),
                             max(range(len(seqs)), key=self.look.__getitem__)})
        cache = None
        if P:
            unique = sorted(set(segs) - {()})
            cache = segment_cache(lm, unique, P, [unique.index(g) if g else 0 for g in segs])
        if c > P:
            with torch.no_grad():
                _, cache = cached_forward(lm, self.ids[:, P:c], self.mask[:, :c], self.pos[:, P:c], cache)
        self.cache = cache
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            raise NoSuffix("the key/value cache has no per-layer state to reset")
        self.saved = [dict(layer.__dict__) for layer in layers]
        self.suffix_mask = self.mask[:, c:].bool()
        self.use_replay = True
        self.checked = False

    def record(self, edit: HiddenEdit | None = None, module: torch.nn.Module | None = None) -> torch.Tensor:
        """The suffix through the whole model (autograd as the caller has it) with ``edit`` on the output of
        ``module`` (of the block below the replay without one), recording the replay's input and block calls:
        the final-normed hidden states ``[B, T, d]``. ``edit`` must add zero here (the replay's input is
        taken from this pass)."""
        lm, c, start = self.lm, self.c, self.start
        if edit is not None and module is None and self.below is None:
            raise NoSuffix("an edit of the replay's input needs start >= 1")
        with hooks.edit_output(module if module is not None else self.below, edit):
            (own, _), self.calls, h0 = record_blocks(self.blocks, self.final_norm, lambda: cached_forward(
                lm, self.ids[:, c:], self.mask, self.pos[:, c:], self.cache))
        self._reset()
        if h0 is None:
            raise NoSuffix("block calls could not be recorded")
        self.h0 = h0
        hidden = final_hidden(own)
        self.reference = hidden.detach()
        # The cached, left-padded forward is checked against a plain forward at the input of block ``start``
        # (at least block 1, so one cached attention is always covered): the blocks above use the same cache
        # code, and a plain pass that stops there costs a fraction of a full one.
        stop = max(start, 1)
        with torch.no_grad():
            plain = plain_hidden(lm, [self.seqs[r] for r in self.probe], stop)
        cached = self.calls[stop - start][0][0] if stop < lm.adapter.n_layers else self.reference
        for j, r in enumerate(self.probe):
            n = len(self.seqs[r]) - self.look[r]
            if not agrees(plain[j, self.look[r]:len(self.seqs[r])], cached[r, :n],
                          f"cached forward ({lm.adapter.family})", "replaying whole sequences"):
                raise NoSuffix("the cached forward differs from a plain forward")
        return hidden

    def at(self, rows: Sequence[int], positions: Sequence[int]) -> tuple[list[int], list[int]]:
        return list(rows), [p - self.look[r] for r, p in zip(rows, positions)]

    def _reset(self) -> None:
        for layer, state in zip(self.cache.layers, self.saved):
            layer.__dict__.clear()
            layer.__dict__.update(state)

    def run(self, edit: HiddenEdit | None = None, module: torch.nn.Module | None = None) -> torch.Tensor:
        self._reset()
        try:
            with hooks.edit_output(module, edit):
                return run_recorded(self, edit, module)
        finally:
            self._reset()

    def shrink(self, keep: Sequence[int]):
        """Drop every row but ``keep`` (current row numbers, in order): the recorded block inputs, keyword
        arguments and cache states are indexed along the batch. Returns what :meth:`undo` needs. The caller
        checks the result against rows of a forward it already has (a tensor that only looks batch-shaped
        would be cut wrongly)."""
        n = self.h0.shape[0]
        idx = torch.tensor(list(keep), device=self.h0.device)
        state = (self.h0, self.calls, self.saved, self.look, self.suffix_mask)
        self.h0 = self.h0[idx]
        self.calls = [(take_rows(a, idx, n), take_rows(k, idx, n)) for a, k in self.calls]
        self.saved = [take_rows(st, idx, n) for st in self.saved]
        self.look = [self.look[i] for i in keep]
        self.suffix_mask = self.suffix_mask[idx]
        return state

    def undo(self, state) -> None:
        self.h0, self.calls, self.saved, self.look, self.suffix_mask = state

    def check(self, _h: torch.Tensor | None = None) -> bool:
        """Compare the replay (unedited, no grad) with the recorded forward on the probe rows (both ends of the
        padding; the rows are cut as :meth:`shrink` cuts them)."""
        if self.checked:
            return True
        self.checked = True
        state = self.shrink(self.probe)
        try:
            with torch.no_grad():
                got = self.run()
            m = self.suffix_mask
        finally:
            self.undo(state)
        self.use_replay = agrees(self.reference[self.probe][m], got[m],
                                 f"suffix replay ({self.lm.adapter.family})", "not using it")
        return self.use_replay


# Key/values of the shared segments, per model: {model: (key, cache, per-layer states)}, the last key only.
_SEGMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def segment_cache(lm, segments: Sequence[tuple[int, ...]], width: int, rows: Sequence[int]):
    """A key/value cache holding ``segments[rows[i]]`` (left-padded to ``width``) in row ``i``.

    Each distinct segment goes through the model once, and the result is kept for the next edit while the
    weights hold the same values (:func:`editcore.scope.content_key`; a scope that restores the model restores
    the key)."""
    key = (content_key(lm.model), tuple(segments), width, str(lm.device))
    hit = _SEGMENTS.get(lm.model)
    if hit is None or hit[0] != key:
        ids, mask = padded(lm, segments, left=True, width=width)
        with torch.no_grad():
            _, cache = cached_forward(lm, ids, mask, position_ids(mask))
        if getattr(cache, "layers", None) is None:
            raise NoSuffix("the key/value cache has no per-layer state to copy")
        hit = (key, cache, [dict(layer.__dict__) for layer in cache.layers])
        _SEGMENTS[lm.model] = hit
    _, cache, states = hit
    idx = torch.tensor(list(rows), device=lm.device)
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer, state in zip(out.layers, states):
        layer.__dict__.clear()
        layer.__dict__.update(take_rows(state, idx, len(segments)))
    return out


def segment_key(lm):
    """The key of the segment cache kept for ``lm``'s model, or ``None`` (for tests)."""
    hit = _SEGMENTS.get(lm.model)
    return None if hit is None else hit[0]
