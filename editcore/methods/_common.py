"""Shared maths of the locate-then-edit methods (ROME, MEMIT; FT/KN may reuse the lookup helpers).

What lives here, written once so the methods cannot drift apart:

* :func:`subject_last_index` — where a fact is "looked up": the subject's last token in a prompt
  (ROME/MEMIT's ``fact_token = subject_last``).
* :func:`context_templates` — short prefixes sampled from the model itself ("{prefix}. {}"), seeded and
  cached on disk per model fingerprint, so k* and v* average over a few contexts as in ROME.
* :func:`mlp_keys` — the MLP *key* at the subject's last token: the input of the MLP output projection
  (for gated MLPs that is ``act(gate(x)) * up(x)``, the input of ``down_proj``), averaged over contexts.
* :func:`module_io_at` — input/output of a slot at given positions (MEMIT's current ``z``).
* :func:`optimise_value` — ROME's ``compute_v`` / MEMIT's ``compute_z``: a vector ``delta`` added at the
  subject's last token to the output of the MLP projection (ROME) or of a whole block (MEMIT), optimised so
  the new target becomes likely, with ROME's KL "essence" term on ``"{subject} is a"``, its weight decay
  ``||delta|| / ||v_init||^2`` and its clamp ``||delta|| <= clamp_norm_factor * ||v_init||``.

Speed: the blocks below the edited layer do not change while ``delta`` is optimised, so :class:`_Replay` runs
them once, records the hidden state entering the first replayed block and the keyword arguments every later
block was called with (masks, rotary ``position_embeddings``, Gemma's per-layer sliding/full masks), and each
optimisation step then runs only blocks ``l..L-1`` (ROME's delta sits inside block ``l``) or ``l+1..L-1``
(MEMIT's is added to block ``l``'s output). The replay is checked against a full forward on the first step; if
it disagrees (an unknown family that does something between blocks) it falls back to full forwards.
:class:`_SuffixReplay` goes further and recomputes only the tokens from the edited one on, with the prefix in
a key/value cache (each context prefix's part computed once per batch and kept across edits while the weights
are unchanged); its recording pass through the model itself is the first step (the replay is checked against
it, and it against a plain forward, on the two rows with the most and the least padding); in a batch (MEMIT)
the rows of requests that have met their stopping rule are dropped. Rows end at the last position that is read
(the last target token is only a label; the KL prompt is read at the subject), and a request whose prompt
opens with its subject reads the KL term from that prompt's row instead of a row of its own. Logits are
computed only at the scored positions (Gemma's vocabulary has 262k entries), the unembedding's backward is
computed per vocabulary chunk (:func:`editcore.models.arch.chunked_matmul`), and the log-probabilities'
gradient is written out in one pass instead of autograd's zero-filled copies
(:meth:`editcore.models.arch.ArchAdapter.label_log_probs`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import paths
from ..errors import InputError
from ..models.arch import packed_linears
from ..scope import content_key
from ..text import (cached_forward, check_length, final_hidden, pad_id, padded, position_ids, prompt_ids,
                    target_ids)
from ..types import Request

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

# ROME's prompts for sampling context prefixes (rome/rome_main.py uses these five).
_PREFIX_SEEDS = ("The", "Therefore", "Because", "I", "You")


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the needed activation is captured."""


def fill(template: str, subject: str) -> str:
    """``template`` with its ``{}`` replaced by ``subject`` (``str.format`` would choke on other braces)."""
    return template.replace("{}", subject, 1)


def validate_request(lm, req: Request) -> Request:
    """Request checks every method shares; raises :class:`InputError` with a one-line message."""
    if not isinstance(req, Request):
        raise InputError(f"expected a Request, got {type(req).__name__}")
    req.validate()
    target_ids(lm.tokenizer, req.target_new)  # empty / untokenisable target
    check_length(lm, len(prompt_ids(lm.tokenizer, req.text)) + len(target_ids(lm.tokenizer, req.target_new)))
    return req


def subject_last_index(tokenizer, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` filled with ``subject`` and the index of the subject's last token."""
    text = fill(template, subject)
    head_text = template.split("{}", 1)[0] + subject
    ids = prompt_ids(tokenizer, text)
    head = prompt_ids(tokenizer, head_text)
    # Special tokens appended at the end (EOS) would make ``head`` longer than the real prefix.
    while head and len(head) > len(ids):
        head = head[:-1]
    if ids[: len(head)] == head and head:
        return ids, len(head) - 1
    # The subject merged with the following text into one token: find the last token that starts inside
    # the subject using character offsets (fast tokenizers only).
    try:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        idx = max(i for i, (s, e) in enumerate(offsets) if e > s and s < len(head_text))
        return list(enc["input_ids"]), idx
    except (ValueError, KeyError, NotImplementedError, TypeError):
        raise InputError(f"cannot locate the subject {subject!r} in the tokenised prompt") from None


# ---- context templates ----------------------------------------------------------------------------
def context_templates(lm, n: int, length: int, seed: int = 0) -> list[str]:
    """``["{}", "<prefix 1>. {}", ...]``: ``n`` prefixes of ``length`` new tokens sampled from the model.

    ROME samples them from the model (top-k 5) each run; here they are sampled once with a fixed seed and
    cached on disk per (model fingerprint, n, length, seed), so an edit is reproducible and costs nothing
    extra after the first time.
    """
    if n <= 0:
        return ["{}"]
    key = {"fingerprint": lm.fingerprint, "n": n, "length": length, "seed": seed, "v": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = paths.sub("context") / f"{digest}.json"
    if path.is_file():
        try:
            prefixes = json.loads(path.read_text())["prefixes"]
            if len(prefixes) == n:
                return ["{}"] + [f"{p}. {{}}" for p in prefixes]
        except (ValueError, KeyError):
            log.warning("ignoring unreadable context cache %s", path)
    prefixes = _sample_prefixes(lm, n, length, seed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "prefixes": prefixes}))
    tmp.replace(path)
    return ["{}"] + [f"{p}. {{}}" for p in prefixes]


@torch.no_grad()
def _sample_prefixes(lm, n: int, length: int, seed: int) -> list[str]:
    tok = lm.tokenizer
    out: list[str] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    # fork_rng keeps the caller's global RNG untouched; the seed makes the prefixes reproducible.
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(n):
            start = _PREFIX_SEEDS[i % len(_PREFIX_SEEDS)]
            ids = torch.tensor([prompt_ids(tok, start)], device=lm.device)
            gen = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                    max_new_tokens=length, min_new_tokens=length, pad_token_id=pad)
            text = tok.decode(gen[0], skip_special_tokens=True)
            # Braces would be read as the subject slot; newlines make odd prompts.
            text = " ".join(text.replace("{", " ").replace("}", " ").split())
            out.append(text or start)
    return out


# ---- batching and capture ---------------------------------------------------------------------------
def _pad_right(lm, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return padded(lm, seqs)


@contextlib.contextmanager
def _hooked(handles: list):
    try:
        yield
    finally:
        while handles:
            handles.pop().remove()


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def module_io_at(lm, slot: str, layer: int, seqs: Sequence[Sequence[int]], idxs: Sequence[int],
                 which: str = "in") -> torch.Tensor:
    """Input (``which="in"``, first positional argument) or output of ``slot`` at layer ``layer`` for each
    sequence at its position ``idxs[i]``: ``[n, d]`` in float32. The forward stops right after it."""
    # Causal: nothing after position idx reaches it, so each sequence ends there (a context-prefixed prompt
    # with its target is ~40% longer than what the subject's last token sees).
    ids, mask = _pad_right(lm, [list(q[:i + 1]) for q, i in zip(seqs, idxs)])
    x = _stopped_at(lm, lm.adapter.module(slot, layer), ids, mask, which, f"{slot} of layer {layer}")
    rows = torch.arange(len(seqs), device=ids.device)
    return x[rows, torch.tensor(list(idxs), device=ids.device)].float()


def _stopped_at(lm, module: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, which: str,
                name: str) -> torch.Tensor:
    """A plain forward (no cache) of ``ids`` that stops at ``module``: its input (``which="in"``, first
    positional argument) or output ``[n, T, ...]``."""
    got: dict[str, torch.Tensor] = {}

    def pre(_m, args):
        got["x"] = args[0]
        raise _Stop

    def post(_m, _args, out):
        got["x"] = _first(out)
        raise _Stop

    handles = [module.register_forward_pre_hook(pre) if which == "in" else module.register_forward_hook(post)]
    with _hooked(handles):
        try:
            lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
    if "x" not in got:
        raise RuntimeError(f"{name} was not reached by the forward pass")
    return got["x"]


def context_rows(lm, requests: Sequence[Request], templates: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of every (request, template) prompt, request by request, and the subject's last token in each."""
    seqs, idxs = [], []
    for req in requests:
        for ctx in templates:
            ids, idx = subject_last_index(lm.tokenizer, fill(ctx, req.prompt), req.subject)
            seqs.append(ids)
            idxs.append(idx)
    return seqs, idxs


def mlp_keys(lm, layer: int, requests: Sequence[Request], templates: Sequence[str],
             batch_size: int = 32) -> torch.Tensor:
    """MLP keys ``[n_requests, d_mlp]`` at the subject's last token, averaged over ``templates``
    (each template is a context with a ``{}`` where the request's prompt goes)."""
    seqs, idxs = context_rows(lm, requests, templates)
    keys = torch.cat([module_io_at(lm, "mlp_out", layer, seqs[i:i + batch_size], idxs[i:i + batch_size])
                      for i in range(0, len(seqs), batch_size)])
    return keys.view(len(requests), len(templates), -1).mean(1)


# ---- replaying the upper blocks -------------------------------------------------------------------
# ``edit(x)`` rewrites the hidden states ``x`` of every row the replay holds: ROME adds its delta to the MLP
# projection's output, MEMIT to the input of the block above the edited one.
HiddenEdit = Callable[[torch.Tensor], torch.Tensor]


def _edit_output(out, edit: HiddenEdit):
    return edit(out) if not isinstance(out, tuple) else (edit(out[0]),) + tuple(out[1:])


def record_calls(modules: Sequence[torch.nn.Module], forward: Callable[[], object], stop_at_last: bool = False):
    """Run ``forward`` recording the ``(args, kwargs)`` of every call of ``modules`` (in call order). Returns
    ``(output, calls)``, ``calls`` being ``None`` unless each module was called once with its hidden states as
    the first positional argument (what a replay needs). ``stop_at_last`` ends the forward once the last module
    is reached (the output is then ``None``)."""
    calls: list[tuple[tuple, dict]] = []
    last = modules[-1] if modules else None

    def record(module, args, kwargs):
        calls.append((args, kwargs))
        if stop_at_last and module is last:
            raise _Stop

    out = None
    with _hooked([m.register_forward_pre_hook(record, with_kwargs=True) for m in modules]):
        try:
            out = forward()
        except _Stop:
            if not stop_at_last:
                raise
    ok = len(calls) == len(modules) and all(len(a) >= 1 and isinstance(a[0], torch.Tensor) for a, _ in calls)
    return out, (calls if ok else None)


def _record(blocks: Sequence[torch.nn.Module], final_norm: torch.nn.Module, forward: Callable[[], object]):
    """Run ``forward`` recording every call of ``blocks`` and of the final norm. Returns ``(output, block
    calls, h0)`` where ``h0`` is the input of the first block (of the final norm when there are no blocks),
    or ``None`` when the calls could not be recorded (hidden states not passed positionally)."""
    out, calls = record_calls([*blocks, final_norm], forward)
    if calls is None:
        return out, [], None
    return out, calls[:len(blocks)], calls[0][0][0].detach()


def _run_recorded(rp, edit: HiddenEdit | None, module: torch.nn.Module | None) -> torch.Tensor:
    """Run a replay's recorded block calls from its recorded input ``rp.h0`` (edited by ``edit`` unless the edit
    sits on ``module``, whose forward hook the caller installed). Returns final-normed hidden states."""
    h = rp.h0 if edit is None or module is not None else edit(rp.h0)
    for block, (args, kwargs) in zip(rp.blocks, rp.calls):
        h = _first(block(h, *args[1:], **kwargs))
    return rp.final_norm(h)


def _module_edit(edit: HiddenEdit | None, module: torch.nn.Module | None) -> list:
    if edit is None or module is None:
        return []
    return [module.register_forward_hook(lambda _m, _a, out: _edit_output(out, edit))]


class _Replay:
    """Run blocks ``start..L-1`` (plus the final norm) on recorded inputs; see the module docstring."""

    def __init__(self, lm, ids: torch.Tensor, mask: torch.Tensor, start: int):
        self.lm = lm
        self.ids, self.mask, self.start = ids, mask, start
        ad = lm.adapter
        self.blocks = [ad.block(i) for i in range(start, ad.n_layers)]
        self.below = ad.block(start - 1) if start > 0 else None  # its output is the replay's input
        self.final_norm = ad.module("final_norm")
        with torch.no_grad():
            out, self.calls, self.h0 = _record(self.blocks, self.final_norm, lambda: lm.model.base_model(
                input_ids=ids, attention_mask=mask, use_cache=False))
        self.reference = final_hidden(out).detach()
        self.use_replay = self.h0 is not None
        self.checked = False

    def run(self, edit: HiddenEdit | None = None, module: torch.nn.Module | None = None) -> torch.Tensor:
        """Final-normed hidden states ``[B, T, d]``. ``edit`` rewrites the output of ``module`` (inside the
        replayed blocks) or, without ``module``, the replay's input (the output of block ``start - 1``)."""
        handles = _module_edit(edit, module)
        if not self.use_replay and edit is not None and module is None:
            if self.below is None:
                raise ValueError("an edit of the replay's input needs start >= 1")
            handles += _module_edit(edit, self.below)
        with _hooked(handles):
            if self.use_replay:
                return _run_recorded(self, edit, module)
            out = self.lm.model.base_model(input_ids=self.ids, attention_mask=self.mask, use_cache=False)
            return final_hidden(out)

    def at(self, rows: Sequence[int], positions: Sequence[int]) -> tuple[list[int], list[int]]:
        return list(rows), list(positions)

    def check(self, h: torch.Tensor) -> bool:
        """Compare an unedited replay with the recorded full forward; switch to full forwards if they differ."""
        if self.checked or not self.use_replay:
            return True
        self.checked = True
        m = self.mask.bool()
        self.use_replay = _agrees(self.reference[m], h.detach()[m], f"block replay ({self.lm.adapter.family})",
                                  "using full forwards")
        return self.use_replay


def _agrees(ref: torch.Tensor, got: torch.Tensor, what: str, fallback: str) -> bool:
    """A fast path's hidden states equal a full forward's (to float32 rounding); logs when they do not."""
    ref, got = ref.detach().float(), got.detach().float()
    err = float((ref - got).abs().max())
    tol = 1e-3 * max(1.0, float(ref.abs().max()))
    if not math.isfinite(err) or err > tol:
        log.warning("%s differs from a full forward (max err %.2e); %s", what, err, fallback)
        return False
    return True


class _SuffixReplay:
    """Like :class:`_Replay`, but only the tokens from the subject's last token onward are recomputed.

    ``delta`` is added at the subject's last token, so every earlier position (and, below the edited layer,
    every position) is the same at every optimisation step. Rows are laid out so the subject's last token
    of every row falls in one column ``c`` (left padding, explicit position ids): no-grad passes over the
    columns before ``c`` fill a key/value cache (the constructor; a row's ``segment``, its context prefix, is
    shared by the rows of every request and by later edits, so each distinct one is computed once and kept
    while the weights are unchanged, see :func:`_segment_cache`), and :meth:`record` runs the suffix through
    the model with the edit installed (``delta`` is still zero), recording the suffix's input to block
    ``start`` and every block's call; that pass, with its graph, *is* the first optimisation step. Each later
    step runs blocks ``start..L-1`` on the suffix only (about 8 tokens per row instead of 20 with context
    prefixes), reading the prefix from the cache, whose layers are reset to their post-prefix state before
    each step. :meth:`record` compares the cached forward with a plain forward on the two rows with the most
    and the least padding, and :meth:`check` the replay (unedited) with the recorded forward on the same two
    rows; on any difference (or if a family cannot do this) the caller falls back to ``_Replay``.

    In suffix coordinates the edited token is column 0 of every row; :meth:`at` maps (row, position in the
    original sequence) to suffix columns.
    """

    def __init__(self, lm, seqs: Sequence[Sequence[int]], look: Sequence[int], start: int,
                 segments: Sequence[Sequence[int]] | None = None):
        self.lm = lm
        ad = lm.adapter
        self.seqs, self.look, self.start = seqs, list(look), start
        if max(self.look) < 1:
            raise _NoSuffix("no row has a token before the edited one")
        # Row layout: [its segment, left-padded to P][the rest of its prefix, left-padded][suffix, right-padded],
        # so the edited token of every row sits in column c (explicit position ids skip the padding).
        segs = [tuple(g) if g and SPEEDUPS["shared_prefixes"] and len(g) <= i and tuple(q[:len(g)]) == tuple(g)
                else () for q, i, g in zip(seqs, self.look, segments or [()] * len(seqs))]
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
            cache = _segment_cache(lm, unique, P, [unique.index(g) if g else 0 for g in segs])
        if c > P:
            with torch.no_grad():
                _, cache = cached_forward(lm, self.ids[:, P:c], self.mask[:, :c], self.pos[:, P:c], cache)
        self.cache = cache
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            raise _NoSuffix("the key/value cache has no per-layer state to reset")
        self.saved = [dict(layer.__dict__) for layer in layers]
        self.suffix_mask = self.mask[:, c:].bool()
        self.use_replay = True
        self.checked = False

    def record(self, edit: HiddenEdit | None = None, module: torch.nn.Module | None = None) -> torch.Tensor:
        """The suffix through the whole model (autograd on) with ``edit`` on the output of ``module`` (of the
        block below the replay without one), recording the replay's input and block calls: the final-normed
        hidden states ``[B, T, d]``, the optimisation's first step. ``edit`` must add zero here (the replay's
        input is taken from this pass)."""
        lm, c, start = self.lm, self.c, self.start
        if edit is not None and module is None and self.below is None:
            raise _NoSuffix("an edit of the replay's input needs start >= 1")
        handles = _module_edit(edit, module if module is not None else self.below)
        with _hooked(handles):
            (own, _), self.calls, h0 = _record(self.blocks, self.final_norm, lambda: cached_forward(
                lm, self.ids[:, c:], self.mask, self.pos[:, c:], self.cache))
        self._reset()
        if h0 is None:
            raise _NoSuffix("block calls could not be recorded")
        self.h0 = h0
        hidden = final_hidden(own)
        self.reference = hidden.detach()
        # That the cached, left-padded forward equals a plain forward is checked on the probe rows at the input
        # of block ``start`` (at least block 1, so one cached attention is always covered): the blocks above use
        # the same cache code, and a plain pass that stops there costs a fraction of a full one.
        stop = max(start, 1)
        with torch.no_grad():
            plain = _plain_hidden(lm, [self.seqs[r] for r in self.probe], stop)
        cached = self.calls[stop - start][0][0] if stop < lm.adapter.n_layers else self.reference
        for j, r in enumerate(self.probe):
            n = len(self.seqs[r]) - self.look[r]
            if not _agrees(plain[j, self.look[r]:len(self.seqs[r])], cached[r, :n],
                           f"cached forward ({lm.adapter.family})", "replaying whole sequences"):
                raise _NoSuffix("the cached forward differs from a plain forward")
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
            with _hooked(_module_edit(edit, module)):
                return _run_recorded(self, edit, module)
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
        self.calls = [(_take_rows(a, idx, n), _take_rows(k, idx, n)) for a, k in self.calls]
        self.saved = [_take_rows(st, idx, n) for st in self.saved]
        self.look = [self.look[i] for i in keep]
        self.suffix_mask = self.suffix_mask[idx]
        return state

    def undo(self, state) -> None:
        self.h0, self.calls, self.saved, self.look, self.suffix_mask = state

    def check(self, _h: torch.Tensor | None = None) -> bool:
        """Compare the replay (unedited, no grad) with the recorded forward on the probe rows (both ends of the
        padding; the rows are cut as :meth:`shrink` cuts them). ``_h``, the recorded forward itself, is not
        needed."""
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
        self.use_replay = _agrees(self.reference[self.probe][m], got[m],
                                  f"suffix replay ({self.lm.adapter.family})", "not using it")
        return self.use_replay


# Key/values of the shared segments, per model: {model: (key, cache, per-layer states)}, the last key only.
_SEGMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _segment_cache(lm, segments: Sequence[tuple[int, ...]], width: int, rows: Sequence[int]):
    """A key/value cache holding ``segments[rows[i]]`` (left-padded to ``width``) in row ``i``.

    Each distinct segment goes through the model once, and the result is kept for the next edit while the
    weights hold the same values (:func:`editcore.scope.content_key`; a scope that restores the model restores
    the key), so a context prefix shared by the rows of a batch, or by successive edits, is computed once."""
    key = (content_key(lm.model), tuple(segments), width, str(lm.device))
    hit = _SEGMENTS.get(lm.model)
    if hit is None or hit[0] != key:
        ids, mask = padded(lm, segments, left=True, width=width)
        with torch.no_grad():
            _, cache = cached_forward(lm, ids, mask, position_ids(mask))
        if getattr(cache, "layers", None) is None:
            raise _NoSuffix("the key/value cache has no per-layer state to copy")
        hit = (key, cache, [dict(layer.__dict__) for layer in cache.layers])
        _SEGMENTS[lm.model] = hit
    _, cache, states = hit
    idx = torch.tensor(list(rows), device=lm.device)
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer, state in zip(out.layers, states):
        layer.__dict__.clear()
        layer.__dict__.update(_take_rows(state, idx, len(segments)))
    return out


def row_segment(tokenizer, template: str, ids: Sequence[int], look: int) -> tuple[int, ...]:
    """The opening tokens of a row built from ``template`` that rows of other requests share: the context
    prefix before ``{}`` (without its trailing space, which joins the next word), cut back until it is a
    prefix of ``ids`` that ends before the edited token; for ``"{}"`` whatever the tokenizer opens with (BOS)."""
    seg = prompt_ids(tokenizer, template.split("{}", 1)[0].rstrip())
    while seg and (len(seg) > look or list(ids[:len(seg)]) != seg):
        seg = seg[:-1]
    return tuple(seg)


def _plain_hidden(lm, seqs: Sequence[Sequence[int]], block: int) -> torch.Tensor:
    """Right-padded plain forward (no cache) of ``seqs``: the input of block ``block`` ``[n, T, d]``, the pass
    stopping there, or the final-normed hidden states when ``block`` is past the last block."""
    ids, mask = _pad_right(lm, seqs)
    if block >= lm.adapter.n_layers:
        return final_hidden(lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False))
    return _stopped_at(lm, lm.adapter.block(block), ids, mask, "in", f"block {block}")


def _take_rows(x, idx: torch.Tensor, n: int):
    """``x`` with every tensor of batch size ``n`` (2-D or more, first dimension ``n``) cut to rows ``idx``;
    containers are rebuilt, anything else (a cache object, flags) is passed through."""
    if isinstance(x, torch.Tensor):
        return x[idx] if x.dim() >= 2 and x.shape[0] == n else x
    if isinstance(x, dict):
        return {k: _take_rows(v, idx, n) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        items = [_take_rows(v, idx, n) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    return x


class _NoSuffix(Exception):
    """This model/batch cannot use the suffix replay (the caller falls back to :class:`_Replay`)."""


# Switches for the benchmark's "what bought how much" table; all on in normal use.
SPEEDUPS = {"block_replay": True, "suffix_cache": True, "drop_finished": True, "shared_kl_row": True,
            "layer_walk": True, "fused_log_probs": True, "record_first_step": True, "shared_prefixes": True,
            "packed_linears": True}


# ---- value optimisation (ROME's v*, MEMIT's z*) ---------------------------------------------------------
@dataclass
class ValueResult:
    v_init: torch.Tensor  # [d] output of the edited module at the subject's last token, plain prompt
    delta: torch.Tensor  # [d] optimised addition
    losses: list[float] = field(default_factory=list)
    target_probs: list[float] = field(default_factory=list)  # mean per-token P(target) over contexts
    steps: int = 0
    seconds: float = 0.0
    reached: bool = False  # the stopping criterion was met (not just out of steps)
    already_answer: bool = False  # the target was already top-1 on every context before optimising
    keys: torch.Tensor | None = None  # [n_contexts, d_mlp] keys at the edited layer (slot "mlp_out" only)
    replayed: bool = True
    suffix: bool = False  # the suffix-only replay was used (see _SuffixReplay)
    batch_rows: list[int] = field(default_factory=list)  # rows run at each step (shared by the batch)

    @property
    def v(self) -> torch.Tensor:
        return self.v_init + self.delta


@dataclass(frozen=True)
class ValueSettings:
    steps: int = 20
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    stop_loss: float = 5e-2  # ROME's stopping rule
    stop_prob: float = 1.0  # also stop once mean P(target token) reaches this (1.0: ROME's rule only)


def _make_replay(lm, seqs, look, start, segments=None):
    if SPEEDUPS["block_replay"] and SPEEDUPS["suffix_cache"]:
        try:
            return _SuffixReplay(lm, seqs, look, start, segments)
        except Exception as exc:  # any family that cannot do it still gets the (slower) exact path
            log.info("suffix replay unavailable for %s (%s); replaying whole sequences", lm.adapter.family, exc)
    rp = _Replay(lm, *_pad_right(lm, seqs), start)
    if not SPEEDUPS["block_replay"]:
        rp.use_replay = False
    return rp


def optimise_value(lm, req: Request, layer: int, templates: Sequence[str], s: ValueSettings, *,
                   slot: str = "mlp_out", progress: Progress | None = None) -> ValueResult:
    """One request: :func:`optimise_values` with a batch of one."""
    return optimise_values(lm, [req], layer, templates, s, slot=slot, progress=progress)[0]


def optimise_values(lm, reqs: Sequence[Request], layer: int, templates: Sequence[str], s: ValueSettings, *,
                    slot: str = "mlp_out", progress: Progress | None = None) -> list[ValueResult]:
    """Optimise one ``delta`` per request, added to ``slot``'s output (``"mlp_out"`` for ROME, ``"block"`` for
    MEMIT) at the subject's last token of every context-prefixed prompt of that request; see the module
    docstring for the objective.

    All requests share one batch: the loss is the *sum* of the per-request losses and each request has its
    own ``delta``, so every ``delta`` gets exactly the gradient of its own loss (Adam is per coordinate), as
    if it were optimised alone; a request that meets its stopping rule is frozen while the others go on.
    Batching pays on CPU because the unembedding (Gemma: 262k x 640, 670 MB) is read once per step for all
    rows, and the loss rows and the KL rows share that one read. Once a quarter of the batch's rows belong
    to finished requests, those rows are dropped from the suffix replay (checked against the rows of the
    step's own forward; kept if they differ), so later steps cost only what the unfinished requests need.
    """
    t0 = time.perf_counter()
    # ROME's delta sits inside block ``layer`` (replayed from there); MEMIT's is added to that block's output,
    # which is the input of block ``layer + 1``.
    start = layer if slot == "mlp_out" else layer + 1
    replayed = [lm.adapter.block(i) for i in range(start, lm.adapter.n_layers)] if SPEEDUPS["packed_linears"] else []
    model_mb = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20
    with packed_linears(replayed, model_mb):
        return _optimise_values(lm, reqs, layer, start, templates, s, slot, progress, t0)


def _optimise_values(lm, reqs: Sequence[Request], layer: int, start: int, templates: Sequence[str],
                     s: ValueSettings, slot: str, progress: Progress | None, t0: float) -> list[ValueResult]:
    tok = lm.tokenizer
    n_req, n_ctx = len(reqs), len(templates)
    seqs, look, owner, segments = [], [], [], []
    loss_entries: list[tuple[int, int, int, int]] = []  # (row, position, label, request)
    for q, req in enumerate(reqs):
        tgt = target_ids(tok, req.target_new)
        for ctx in templates:
            ids, idx = subject_last_index(tok, fill(ctx, req.prompt), req.subject)
            check_length(lm, len(ids) + len(tgt))
            for j, t in enumerate(tgt):
                loss_entries.append((len(seqs), len(ids) - 1 + j, t, q))
            # The last target token is only ever a label: no position reads it (as in ROME's code).
            seqs.append(ids + tgt[:-1])
            look.append(idx)
            owner.append(q)
            segments.append(row_segment(tok, ctx, ids, idx))
    # ROME's KL prompt: the subject's own "essence", read at the subject's last token (one row per request).
    # Nothing after that token can reach it, so the row ends there. When the plain prompt starts with the same
    # tokens up to that one ("{subject} is located in"), its row already computes exactly that position (same
    # tokens, positions and delta; causal attention sees nothing later), so the KL term is read there and the
    # request needs no row of its own (a one-token row is padded to the suffix width: 1/7 of a ROME step).
    kl_entries: list[tuple[int, int]] = []  # (row, position), one per request
    for q, req in enumerate(reqs):
        kl_ids, kl_idx = subject_last_index(tok, "{} is a", req.subject)
        kl_ids = kl_ids[:kl_idx + 1]
        row = q * n_ctx  # the request's first template
        if SPEEDUPS["shared_kl_row"] and templates[0] == "{}" and look[row] == kl_idx \
                and list(seqs[row][:kl_idx + 1]) == list(kl_ids):
            kl_entries.append((row, kl_idx))
            continue
        kl_entries.append((len(seqs), kl_idx))
        seqs.append(kl_ids)
        look.append(kl_idx)
        owner.append(q)
        segments.append(row_segment(tok, "{}", kl_ids, kl_idx))

    dev = lm.device
    per_req = torch.zeros(n_req, device=dev).index_add_(
        0, torch.tensor([e[3] for e in loss_entries], device=dev), torch.ones(len(loss_entries), device=dev))
    first_row = [owner.index(q) for q in range(n_req)]  # the plain prompt ("{}" comes first) of each request
    replay = _make_replay(lm, seqs, look, start, segments)
    rows_now = list(range(len(seqs)))  # original row of each row the replay holds, in order

    def make_layout(rp, active: Sequence[int]) -> dict:
        """Index tensors for the rows ``rp`` holds (``rows_now``) and the entries of the ``active`` requests."""
        at = {r: i for i, r in enumerate(rows_now)}
        _, cols = rp.at(range(len(rows_now)), [look[r] for r in rows_now])
        act = set(active)
        loss = [e for e in loss_entries if e[3] in act]
        kls = [kl_entries[q] for q in active]
        rr, rc = rp.at([at[e[0]] for e in loss] + [at[r] for r, _ in kls], [e[1] for e in loss] + [p for _, p in kls])
        t = lambda xs: torch.tensor(list(xs), device=dev, dtype=torch.long)  # noqa: E731
        return {"cols": t(cols), "owner": t(owner[r] for r in rows_now),
                "read_rows": t(rr), "read_cols": t(rc), "labels": t(e[2] for e in loss),
                "loss_owner": t(e[3] for e in loss), "kl_owner": t(active)}

    L = make_layout(replay, range(n_req))
    edited = lm.adapter.module("mlp_out", layer) if slot == "mlp_out" else None
    captured: dict[str, torch.Tensor] = {}
    ctx_rows = range(n_req * n_ctx)  # the KL prompts' own rows come after these
    d = lm.adapter.d_model
    delta = torch.zeros(n_req, d, device=dev, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=s.lr)

    def add_delta(x: torch.Tensor) -> torch.Tensor:
        if "v_init" not in captured:  # the first forward holds every row
            captured["v_init"] = x[first_row, L["cols"][first_row]].detach().float().clone()
        bump = torch.zeros_like(x)
        bump[torch.arange(x.shape[0], device=x.device), L["cols"]] = delta[L["owner"]].to(x.dtype)
        return x + bump

    def forward(rp) -> torch.Tensor:
        return rp.run(add_delta, edited)

    def whole_sequences() -> _Replay:
        """The exact fallback for any family: whole sequences through blocks ``start..L-1`` (its first forward
        reads ``v_init`` again)."""
        captured.pop("v_init", None)
        return _Replay(lm, *_pad_right(lm, seqs), start)

    first = None  # the first step's hidden states, when the suffix replay's recording pass computed them
    if isinstance(replay, _SuffixReplay):
        got: dict[str, torch.Tensor] = {}
        reuse = SPEEDUPS["record_first_step"]
        grab = [edited.register_forward_pre_hook(lambda _m, a: got.update(k=a[0]))] \
            if edited is not None and reuse else []
        try:
            with _hooked(grab), torch.set_grad_enabled(reuse):
                first = replay.record(add_delta, edited)
            first = first if reuse else None
        except Exception as exc:  # as in _make_replay: the whole-sequence replay is exact for any family
            log.info("suffix replay unavailable for %s (%s); replaying whole sequences", lm.adapter.family, exc)
            replay = whole_sequences()
            L = make_layout(replay, range(n_req))
        else:
            if "k" in got:  # ROME's keys: the projection's input at suffix column 0, the subject's last token
                captured["keys"] = got["k"][list(ctx_rows), 0].detach().float()
    if slot == "mlp_out" and "keys" not in captured:
        with torch.no_grad():
            captured["keys"] = module_io_at(lm, "mlp_out", layer, [seqs[r] for r in ctx_rows],
                                            [look[r] for r in ctx_rows], "in")
    results = [ValueResult(torch.zeros(d), torch.zeros(d)) for _ in reqs]
    done = torch.zeros(n_req, dtype=torch.bool, device=dev)
    kl_init: torch.Tensor | None = None  # [n_req, V] log-probabilities on the KL prompt before editing
    can_shrink = isinstance(replay, _SuffixReplay) and SPEEDUPS["drop_finished"]
    rows_run: list[int] = []
    for it in range(s.steps):
        opt.zero_grad()
        h = first if it == 0 and first is not None else forward(replay)
        if it == 0 and not replay.check(h):
            can_shrink = False
            if isinstance(replay, _SuffixReplay):
                replay = whole_sequences()
                L = make_layout(replay, range(n_req))
                h = forward(replay)
                if not replay.check(h):
                    h = forward(replay)
            else:
                h = forward(replay)
        rows_run.append(len(rows_now))
        tok_lp, kl_logp, top = lm.adapter.label_log_probs(h[L["read_rows"], L["read_cols"]], L["labels"],
                                                          want_top=kl_init is None,
                                                          fused=SPEEDUPS["fused_log_probs"])
        nll = -torch.zeros(n_req, device=dev).index_add(0, L["loss_owner"], tok_lp) / per_req
        if kl_init is None:
            kl_init = kl_logp.detach().clone()  # every request is active at step 0
            hit = (top == L["labels"]).float()
            hits = torch.zeros(n_req, device=dev).index_add_(0, L["loss_owner"], hit)
            for q in range(n_req):
                results[q].already_answer = bool(hits[q] == per_req[q])
        # ROME's order: KL(P_edited || P_init) on the essence prompt, per request.
        kl_act = (kl_logp.exp() * (kl_logp - kl_init[L["kl_owner"]])).sum(-1)
        kl = torch.zeros(n_req, device=dev).index_add(0, L["kl_owner"], kl_act)
        v_init = captured["v_init"]
        wd = s.weight_decay * delta.norm(dim=1) / v_init.norm(dim=1).clamp_min(1e-12) ** 2
        loss = nll + s.kl_factor * kl + wd  # [n_req]; only the active requests' entries are meaningful
        probs = torch.zeros(n_req, device=dev).index_add_(0, L["loss_owner"], tok_lp.detach().exp()) / per_req
        active = (~done).nonzero().flatten().tolist()
        for q in active:
            results[q].losses.append(float(loss[q].detach()))
            results[q].target_probs.append(float(probs[q]))
            results[q].steps = it + 1
            if results[q].losses[-1] < s.stop_loss or results[q].target_probs[-1] >= s.stop_prob:
                results[q].reached = True
                done[q] = True
        if progress:
            progress(f"optimising value at layer {layer}", (it + 1) / s.steps)
        if bool(done.all()) or it == s.steps - 1:
            break
        keep = [i for i, r in enumerate(rows_now) if not done[owner[r]]]
        if can_shrink and len(keep) <= 0.75 * len(rows_now):
            # Drop the finished requests' rows, then check one forward of the cut replay (same delta) against
            # those rows of this step's forward; undo the cut if they differ.
            state, old_rows, old_layout = replay.shrink(keep), rows_now, L
            rows_now = [rows_now[i] for i in keep]
            L = make_layout(replay, (~done).nonzero().flatten().tolist())
            with torch.no_grad():
                got = forward(replay)
            m = replay.suffix_mask
            if not _agrees(h.detach()[keep][m], got[m], "suffix replay without finished rows", "keeping them"):
                replay.undo(state)
                rows_now, L, can_shrink = old_rows, old_layout, False
        frozen = delta.detach()[done].clone()
        loss[~done].sum().backward()
        opt.step()
        with torch.no_grad():
            delta[done] = frozen  # Adam's momentum would otherwise keep moving finished requests
            max_norm = s.clamp_norm_factor * v_init.norm(dim=1)
            norms = delta.norm(dim=1)
            over = norms > max_norm
            delta[over] *= (max_norm[over] / norms[over])[:, None]
    seconds = time.perf_counter() - t0
    keys = captured.get("keys")
    for q, res in enumerate(results):
        res.v_init = captured["v_init"][q]
        res.delta = delta.detach()[q].clone()
        res.keys = keys[q * n_ctx:(q + 1) * n_ctx] if keys is not None else None
        res.replayed = replay.use_replay
        res.suffix = isinstance(replay, _SuffixReplay) and replay.use_replay
        res.seconds = seconds
        res.batch_rows = rows_run
    for warning in already_answer_warnings(reqs, results):
        log.warning(warning)
    return results


def already_answer_warnings(reqs: Sequence[Request], results: Sequence[ValueResult]) -> list[str]:
    """One sentence for each request whose new target was already the model's top-1 answer (for an edit's
    ``diagnostics["warnings"]``; :func:`optimise_values` logs them too)."""
    return [f"the new target {req.target_new!r} was already the model's answer to {req.text!r}"
            for req, res in zip(reqs, results) if res.already_answer]


def value_settings(hp) -> ValueSettings:
    """Pick the v*/z* settings out of a method's hyper-parameters (same field names in ROME and MEMIT)."""
    return ValueSettings(steps=hp.v_num_grad_steps, lr=hp.v_lr, weight_decay=hp.v_weight_decay,
                         clamp_norm_factor=hp.clamp_norm_factor, kl_factor=hp.kl_factor,
                         stop_loss=hp.v_stop_loss, stop_prob=hp.v_stop_prob)
