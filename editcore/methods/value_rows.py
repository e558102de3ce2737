"""The rows a value optimisation runs, and the engine that runs them (what :mod:`.values` calls).

:class:`ValueRows` lays out the batch: one row per (request, context template) holding the prompt and the
target's tokens but the last (a label only), the loss entries (row, position, label, request) and, per
request, where ROME's KL prompt ``"{subject} is a"`` is read.

:class:`ValueEngine` is the small interface between the algorithm and the replay machinery
(:mod:`.replay`): it holds the optimised ``delta`` (``[n_req, d]``, updated in place by the optimiser);
``forward()`` gives the final-normed hidden states at the read positions with ``delta[q]`` added at request
``q``'s edited token, ``drop_finished(done)`` lets finished requests leave the
batch, ``v_init`` and ``keys`` are what the first pass read. PMET optimises a second vector per request at the
attention output of the same block: ``also`` (that slot's name) and ``also_delta``, added the same way, its
unedited output in ``also_init``. Which replay runs, the first step taken from
the suffix's recording pass, every check against a plain forward and every fall-back live here, so the
algorithm never sees them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..models.kernels import packed_linears
from .. import hooks
from ..text import check_length, prompt_ids, target_ids
from ..types import Request
from .common import agrees, fill, module_io_at, subject_last_index
from .replay import BlockReplay, SuffixReplay
from .speed import Speed

log = logging.getLogger(__name__)


def row_segment(tokenizer, template: str, ids: Sequence[int], look: int) -> tuple[int, ...]:
    """The opening tokens of a row built from ``template`` that rows of other requests share: the context
    prefix before ``{}`` (without its trailing space, which joins the next word), cut back until it is a
    prefix of ``ids`` that ends before the edited token; for ``"{}"`` whatever the tokenizer opens with (BOS)."""
    seg = prompt_ids(tokenizer, template.split("{}", 1)[0].rstrip())
    while seg and (len(seg) > look or list(ids[:len(seg)]) != seg):
        seg = seg[:-1]
    return tuple(seg)


@dataclass
class ValueRows:
    n_req: int
    n_ctx: int
    seqs: list[list[int]] = field(default_factory=list)
    look: list[int] = field(default_factory=list)  # the edited token (subject's last) of each row
    owner: list[int] = field(default_factory=list)  # the request each row belongs to
    segments: list[tuple[int, ...]] = field(default_factory=list)  # opening tokens shared with other rows
    loss: list[tuple[int, int, int, int]] = field(default_factory=list)  # (row, position, label, request)
    kl: list[tuple[int, int]] = field(default_factory=list)  # (row, position) of each request's KL prompt

    @classmethod
    def build(cls, lm, reqs: Sequence[Request], templates: Sequence[str], share_kl_row: bool = True) -> "ValueRows":
        tok = lm.tokenizer
        rows = cls(len(reqs), len(templates))
        for q, req in enumerate(reqs):
            tgt = target_ids(tok, req.target_new)
            for ctx in templates:
                ids, idx = subject_last_index(tok, fill(ctx, req.prompt), req.subject)
                check_length(lm, len(ids) + len(tgt))
                for j, t in enumerate(tgt):
                    rows.loss.append((len(rows.seqs), len(ids) - 1 + j, t, q))
                # The last target token is only ever a label: no position reads it (as in ROME's code).
                rows._add(ids + tgt[:-1], idx, q, row_segment(tok, ctx, ids, idx))
        # The KL prompt is read at the subject's last token, so its row ends there. When the plain prompt opens
        # with the same tokens up to that one ("{subject} is located in"), its row already computes exactly
        # that position (same tokens, positions and delta; causal attention sees nothing later) and the
        # request needs no row of its own.
        for q, req in enumerate(reqs):
            kl_ids, kl_idx = subject_last_index(tok, "{} is a", req.subject)
            kl_ids = kl_ids[:kl_idx + 1]
            row = q * rows.n_ctx  # the request's first template
            if share_kl_row and templates[0] == "{}" and rows.look[row] == kl_idx \
                    and list(rows.seqs[row][:kl_idx + 1]) == list(kl_ids):
                rows.kl.append((row, kl_idx))
                continue
            rows.kl.append((len(rows.seqs), kl_idx))
            rows._add(kl_ids, kl_idx, q, row_segment(tok, "{}", kl_ids, kl_idx))
        return rows

    def _add(self, ids: list[int], look: int, owner: int, segment: tuple[int, ...]) -> None:
        self.seqs.append(ids)
        self.look.append(look)
        self.owner.append(owner)
        self.segments.append(segment)

    def tokens_per_request(self, device) -> torch.Tensor:
        """How many loss entries (target tokens times contexts) each request has: ``[n_req]``."""
        owners = torch.tensor([e[3] for e in self.loss], device=device)
        return torch.zeros(self.n_req, device=device).index_add_(0, owners, torch.ones(len(self.loss), device=device))


@dataclass
class Layout:
    """Index tensors for the rows a replay holds and the entries of the active requests."""

    cols: torch.Tensor  # edited column of each held row
    owner: torch.Tensor  # request of each held row
    read_rows: torch.Tensor  # where the loss entries, then the KL entries, are read
    read_cols: torch.Tensor
    labels: torch.Tensor  # label of each loss entry
    loss_owner: torch.Tensor  # request of each loss entry
    kl_owner: torch.Tensor  # request of each KL entry


class ValueEngine:
    """Runs a value optimisation's rows through the model; see the module docstring. A context manager: the
    replayed blocks' packed weights (``speed.packed_linears``) exist inside it."""

    def __init__(self, lm, rows: ValueRows, layer: int, slot: str, speed: Speed, delta: torch.Tensor,
                 also: str | None = None, also_delta: torch.Tensor | None = None):
        self.lm, self.rows, self.layer, self.slot, self.speed = lm, rows, layer, slot, speed
        self.delta = delta
        # ROME's delta sits inside block ``layer`` (replayed from there); MEMIT's is added to that block's
        # output, which is the input of block ``layer + 1``.
        self.start = layer if slot == "mlp_out" else layer + 1
        self.edited = lm.adapter.module("mlp_out", layer) if slot == "mlp_out" else None
        if also is not None and (slot != "mlp_out" or also != "attn_out" or also_delta is None):
            raise ValueError("a second optimised vector sits at the attention output beside slot 'mlp_out'")
        self.also = lm.adapter.module(also, layer) if also is not None else None  # inside block ``layer`` too
        self.also_delta = also_delta
        self.also_init: torch.Tensor | None = None  # [n_req, d] the unedited attention output at the plain prompt
        self.first_row = [rows.owner.index(q) for q in range(rows.n_req)]  # each request's plain prompt
        self.v_init: torch.Tensor | None = None  # [n_req, d] the edited output at the plain prompt, unedited
        self.keys: torch.Tensor | None = None  # [n_req * n_ctx, d_mlp] ROME's keys (slot "mlp_out")
        self.rows_run: list[int] = []  # rows run at each step
        self._stack = contextlib.ExitStack()

    # ---- set-up: packed weights, the replay, the first pass ---------------------------------------
    def __enter__(self) -> "ValueEngine":
        lm = self.lm
        replayed = [lm.adapter.block(i) for i in range(self.start, lm.adapter.n_layers)] \
            if self.speed.packed_linears else []
        model_mb = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20
        self._stack.enter_context(packed_linears(replayed, model_mb, self.speed.packed_limit_mb))
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _open(self) -> None:
        rows, speed = self.rows, self.speed
        self.rows_now = list(range(len(rows.seqs)))  # original row of each row the replay holds, in order
        self.replay = self._make_replay()
        self.layout = self._layout(range(rows.n_req))
        self._first = None  # the first step's hidden states, when the suffix's recording pass computed them
        if isinstance(self.replay, SuffixReplay):
            got: dict[str, torch.Tensor] = {}
            reuse = speed.record_first_step
            grab = contextlib.nullcontext()
            if self.edited is not None and reuse:
                # The first call only: at layer 0 the recording's check runs the edited block again on other rows.
                grab = hooks.capture(self.edited, "in", got, "k", keep="first")
            try:
                with grab, self._also(), torch.set_grad_enabled(reuse):
                    first = self.replay.record(self._add_delta, self.edited)
                self._first = first if reuse else None
            except Exception as exc:  # the whole-sequence replay is exact for any family
                log.info("suffix replay unavailable for %s (%s); replaying whole sequences", self.lm.adapter.family,
                         exc)
                self._whole_sequences()
            else:
                if "k" in got:  # ROME's keys: the projection's input at suffix column 0, the subject's last token
                    self.keys = got["k"][list(range(rows.n_req * rows.n_ctx)), 0].detach().float()
        if self.slot == "mlp_out" and self.keys is None:
            ctx_rows = range(rows.n_req * rows.n_ctx)  # the KL prompts' own rows come after these
            with torch.no_grad():
                self.keys = module_io_at(self.lm, "mlp_out", self.layer, [rows.seqs[r] for r in ctx_rows],
                                         [rows.look[r] for r in ctx_rows], "in")
        self.can_shrink = isinstance(self.replay, SuffixReplay) and speed.drop_finished
        self.step = 0

    def _make_replay(self):
        s, rows = self.speed, self.rows
        if s.block_replay and s.suffix_cache:
            try:
                return SuffixReplay(self.lm, rows.seqs, rows.look, self.start, rows.segments, s.shared_prefixes)
            except Exception as exc:  # any family that cannot do it still gets the (slower) exact path
                log.info("suffix replay unavailable for %s (%s); replaying whole sequences", self.lm.adapter.family,
                         exc)
        return BlockReplay.of(self.lm, rows.seqs, self.start, enabled=s.block_replay)

    def _whole_sequences(self) -> None:
        """The exact fall-back for any family: whole sequences through blocks ``start..L-1`` (its first
        forward reads ``v_init`` again)."""
        self.v_init = self.also_init = None
        self.replay = BlockReplay.of(self.lm, self.rows.seqs, self.start)
        self.layout = self._layout(range(self.rows.n_req))

    def _layout(self, active: Sequence[int]) -> Layout:
        rows, rp = self.rows, self.replay
        at = {r: i for i, r in enumerate(self.rows_now)}
        _, cols = rp.at(range(len(self.rows_now)), [rows.look[r] for r in self.rows_now])
        act = set(active)
        loss = [e for e in rows.loss if e[3] in act]
        kls = [rows.kl[q] for q in active]
        rr, rc = rp.at([at[e[0]] for e in loss] + [at[r] for r, _ in kls],
                       [e[1] for e in loss] + [p for _, p in kls])
        dev = self.lm.device

        def t(xs):
            return torch.tensor(list(xs), device=dev, dtype=torch.long)

        return Layout(t(cols), t(rows.owner[r] for r in self.rows_now), t(rr), t(rc), t(e[2] for e in loss),
                      t(e[3] for e in loss), t(active))

    # ---- what the optimisation calls ------------------------------------------------------------------
    def _add_delta(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layout
        if self.v_init is None:  # the first forward holds every row
            self.v_init = x[self.first_row, L.cols[self.first_row]].detach().float().clone()
        return self._bump(x, self.delta)

    def _add_also(self, x: torch.Tensor) -> torch.Tensor:
        if self.also_init is None:
            self.also_init = x[self.first_row, self.layout.cols[self.first_row]].detach().float().clone()
        return self._bump(x, self.also_delta)

    def _bump(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        L = self.layout
        bump = torch.zeros_like(x)
        bump[torch.arange(x.shape[0], device=x.device), L.cols] = delta[L.owner].to(x.dtype)
        return x + bump

    def _also(self):
        """The second vector's hook (PMET), for every forward and replay; nothing without one."""
        return hooks.edit_output(self.also, self._add_also if self.also is not None else None)

    def _run(self) -> torch.Tensor:
        with self._also():
            return self.replay.run(self._add_delta, self.edited)

    def forward(self) -> tuple[torch.Tensor, Layout]:
        """Final-normed hidden states at the read positions ``[loss entries + KL entries, d]`` with ``delta``
        added at each row's edited token, and the layout that says whose entries they are."""
        if self.step == 0:
            h = self._first if self._first is not None else self._run()
            if not self.replay.check(h):  # the replay disagrees with a plain forward: the exact path
                self.can_shrink = False
                if isinstance(self.replay, SuffixReplay):
                    self._whole_sequences()
                    h = self._run()
                    if not self.replay.check(h):
                        h = self._run()
                else:
                    h = self._run()
            self._first = None
        else:
            h = self._run()
        self.step += 1
        self._last = h
        self.rows_run.append(len(self.rows_now))
        L = self.layout
        return h[L.read_rows, L.read_cols], L

    def drop_finished(self, done: torch.Tensor) -> None:
        """Once a quarter of the held rows belong to finished requests, drop those rows; the cut replay is
        checked (same delta) against those rows of the last forward, and undone if they differ."""
        keep = [i for i, r in enumerate(self.rows_now) if not done[self.rows.owner[r]]]
        if not self.can_shrink or len(keep) > 0.75 * len(self.rows_now):
            return
        rp = self.replay
        state, old_rows, old_layout = rp.shrink(keep), self.rows_now, self.layout
        self.rows_now = [self.rows_now[i] for i in keep]
        self.layout = self._layout((~done).nonzero().flatten().tolist())
        with torch.no_grad():
            got = self._run()
        m = rp.suffix_mask
        if not agrees(self._last.detach()[keep][m], got[m], "suffix replay without finished rows", "keeping them"):
            rp.undo(state)
            self.rows_now, self.layout, self.can_shrink = old_rows, old_layout, False

    @property
    def replayed(self) -> bool:
        return self.replay.use_replay

    @property
    def suffix(self) -> bool:
        return isinstance(self.replay, SuffixReplay) and self.replay.use_replay
