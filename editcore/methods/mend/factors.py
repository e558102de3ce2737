"""The two passes of MEND edits, for many independent edits in one batch.

Items are ``(prompt text, target)`` pairs, each belonging to one edit; rows are grouped by length into
right-padded parts (:class:`Batch`), so short prompts are not padded to the longest paraphrase.

* :func:`base_pass` — a forward of every part in which the input of the lowest edited block is made a leaf
  that needs a gradient (nothing below it builds a graph), keeping each edited layer's input ``u`` and output,
  and recording every block call above (what :func:`post_pass` replays).
* :func:`edit_factors` — the gradient of the summed edit losses with respect to each edited layer's output
  gives ``delta``; rows are independent, so each edit's factors are exactly those of its own fine-tuning
  gradient.
* :func:`post_pass` — the blocks above run again from the recorded inputs with each edited layer's output
  increased by ``dW_e x`` for the row's own edit ``e``, where ``dW_e = -alpha sum_t delta~_t u~_t^T`` is kept as
  its factors: thin products instead of dense matrices, differentiable for the training. Where the calls could
  not be recorded the pass is a full forward with the same hooks.

The unembedding (262k rows on Gemma, a memory-bound pass over 670 MB) runs once for all scored tokens of a
pass (:func:`log_probs`), which is what makes a training step of ten edits affordable on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from ... import hooks
from ...text import final_hidden, padded, prompt_ids, target_ids
from ..common import agrees
from ..replay import run_recorded
from .hypernet import Target, nonzero_tokens

LOGIT_ROWS = 96  # scored tokens per unembedding call (a full row is 1 MB on Gemma)


@dataclass
class Part:
    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor
    items: list[int]  # the item in each row


@dataclass
class Batch:
    """Pairs as length-grouped parts, and their scored tokens (part, row, position, label, item)."""

    parts: list[Part]
    n_items: int
    part: torch.Tensor = field(default=None)
    row: torch.Tensor = field(default=None)
    pos: torch.Tensor = field(default=None)
    labels: torch.Tensor = field(default=None)
    item: torch.Tensor = field(default=None)

    def tokens_of(self, items: Sequence[int]) -> torch.Tensor:
        """Indices of the scored tokens of ``items``."""
        return torch.nonzero(torch.isin(self.item, torch.as_tensor(list(items), device=self.item.device))).flatten()


def make_batch(lm, pairs: Sequence[tuple[str, str]], waste: float = 1.3) -> Batch:
    """Teacher-forced ``prompt_ids(prompt) + target_ids(target)`` rows, grouped so that a part's padded size
    stays within ``waste`` times its real tokens (plus a little)."""
    enc = [(prompt_ids(lm.tokenizer, p), target_ids(lm.tokenizer, t)) for p, t in pairs]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]) + len(enc[i][1]))
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = len(enc[i][0]) + len(enc[i][1])
        if groups and (len(groups[-1]) + 1) * n <= waste * (real + n) + 32:
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    parts, cols = [], {k: [] for k in ("part", "row", "pos", "labels", "item")}
    for g, members in enumerate(groups):
        ids, mask = padded(lm, [enc[i][0] + enc[i][1] for i in members])
        parts.append(Part(ids, mask, members))
        for r, i in enumerate(members):
            p, t = enc[i]
            for j, tok in enumerate(t):
                for k, v in zip(cols, (g, r, len(p) - 1 + j, tok, i)):
                    cols[k].append(v)
    dev = parts[0].ids.device
    return Batch(parts, len(pairs), **{k: torch.tensor(v, dtype=torch.long, device=dev) for k, v in cols.items()})


@dataclass
class BasePass:
    hidden: list[torch.Tensor]  # per part: final-normed hidden states [B, T, d] (in the graph from h0 on)
    inputs: list[list[torch.Tensor]]  # per part, per target: u [B, T, d_in] (detached)
    outputs: list[list[torch.Tensor]]  # per part, per target: the output [B, T, d_out] (in the graph)
    h0: list[torch.Tensor]  # per part: the leaf (input of the lowest edited block)
    calls: list[list | None]  # per part: recorded (args, kwargs) of every block from it, or None
    blocks: list
    final_norm: torch.nn.Module


def base_pass(lm, batch: Batch, targets: Sequence[Target], grad: bool = True) -> BasePass:
    """See the module docstring; ``grad=False`` only records (no leaf, no graph: validation rows)."""
    ad = lm.adapter
    blocks = [ad.block(i) for i in range(min(t.layer for t in targets), ad.n_layers)]
    final_norm = ad.module("final_norm")
    mods = [lm.model.get_submodule(t.module) for t in targets]
    bp = BasePass([], [], [], [], [], blocks, final_norm)
    for part in batch.parts:
        got: dict[str, torch.Tensor] = {}

        def make_leaf(args):
            got["h0"] = args[0].detach().requires_grad_(grad)
            return (got["h0"], *args[1:])

        reads = [hooks.capture(m, "in", got, f"u{i}") for i, m in enumerate(mods)]
        reads += [hooks.capture(m, "out", got, f"y{i}") for i, m in enumerate(mods)]
        with torch.set_grad_enabled(grad), hooks.on_input(blocks[0], make_leaf), hooks.together(reads):
            out, calls = hooks.record_calls([*blocks, final_norm], lambda: lm.model.base_model(
                input_ids=part.ids, attention_mask=part.mask, use_cache=False))
        bp.hidden.append(final_hidden(out))
        bp.inputs.append([got[f"u{i}"].detach() for i in range(len(mods))])
        bp.outputs.append([got[f"y{i}"] for i in range(len(mods))])
        bp.h0.append(got["h0"])
        bp.calls.append(calls[:len(blocks)] if calls is not None else None)
    return bp


def log_probs(lm, hidden: list[torch.Tensor], batch: Batch, sel: torch.Tensor, full: torch.Tensor):
    """``(log p(label) and argmax of the scored tokens sel, full log-distributions of the scored tokens full)``
    from the parts' final-normed ``hidden`` (index tensors into the batch's scored tokens)."""
    idx = torch.cat([sel, full])
    h = torch.stack([hidden[int(p)][int(r), int(q)] for p, r, q in
                     zip(batch.part[idx], batch.row[idx], batch.pos[idx])]) if idx.numel() else None
    m = sel.numel()
    lps, tops, rows = [], [], []
    for s in range(0, idx.numel(), LOGIT_ROWS):
        e = min(s + LOGIT_ROWS, idx.numel())
        lab = batch.labels[sel[s:min(e, m)]] if s < m else batch.labels[:0]
        lp, row, top = lm.adapter.label_log_probs(h[s:e], lab, want_top=True)
        lps.append(lp), tops.append(top), rows.append(row)
    if not lps:
        z = batch.labels.new_zeros(0)
        return z.float(), z, z.float()
    return torch.cat(lps), torch.cat(tops), torch.cat(rows)


def item_nll(tok_lp: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Each item's mean token NLL ``[n_items]`` (0 for items without tokens here)."""
    per = torch.zeros(n_items, dtype=tok_lp.dtype, device=tok_lp.device).index_add(0, items, -tok_lp)
    return per / torch.bincount(items, minlength=n_items).to(tok_lp.dtype).clamp(min=1)


def edit_factors(lm, base: BasePass, batch: Batch, edit_items: Sequence[int], full: torch.Tensor | None = None,
                 answer_only: bool = False):
    """``(factors, pre-edit NLL of each edit, log-distributions of the scored tokens full)``: ``factors[e][i] =
    (u [n, d_in], delta [n, d_out])`` of edit ``e`` (whose item is ``edit_items[e]``) at target ``i``. The
    gradient is of the *sum* of the edits' losses, so each edit's delta is that of its own loss. Every token
    with a gradient (MEND, KE: together they make the weight's gradient), or with ``answer_only`` the positions
    that predict the target's tokens (MALMEN's keys)."""
    sel = batch.tokens_of(edit_items)
    full = sel[:0] if full is None else full
    with torch.enable_grad():
        lp, _top, rows = log_probs(lm, base.hidden, batch, sel, full)
        nll = item_nll(lp, batch.item[sel], batch.n_items)[list(edit_items)]
        flat = [y for part in base.outputs for y in part]
        grads = torch.autograd.grad(nll.sum(), flat, allow_unused=True)
    n_t = len(base.outputs[0])
    where = {item: (p, r) for p, part in enumerate(batch.parts) for r, item in enumerate(part.items)}
    factors = []
    for item in edit_items:
        p, r = where[item]
        pos = batch.pos[batch.item == item] if answer_only else slice(None)
        per = []
        for i in range(n_t):
            g = grads[p * n_t + i]
            delta = torch.zeros_like(base.outputs[p][i][r]) if g is None else g[r].detach()
            per.append(nonzero_tokens(base.inputs[p][i][r][pos], delta[pos]))
        factors.append(per)
    return factors, nll.detach(), rows.detach()


def low_rank_hook(u_all: torch.Tensor, d_all: torch.Tensor, lr: torch.Tensor, own: torch.Tensor):
    """``fn(args, out)`` adding ``-lr ((x u_all^T) * own) d_all`` to a layer's output: each row only sees the
    tokens of its own edit (``own`` ``[B, 1, n]`` is 1 there, 0 elsewhere)."""
    def fn(args, out):
        x = args[0].to(u_all.dtype)
        return out + (-lr * (((x @ u_all.T) * own) @ d_all)).to(out.dtype)
    return fn


def post_pass(lm, base: BasePass, batch: Batch, targets: Sequence[Target], factors, lrs,
              edit_of_item: Sequence[int], replay: bool = True) -> list[torch.Tensor]:
    """Per part: final-normed hidden states with each row's edit applied (``factors[e][i] = (u~, delta~)``,
    step sizes ``lrs``); the graph reaches the factors and step sizes. ``replay=False``: full forwards."""
    mods = [lm.model.get_submodule(t.module) for t in targets]
    dev = batch.parts[0].ids.device
    # Which edit each factor token belongs to, per target (the zero-token filter differs between targets).
    tok_edit = [torch.cat([torch.full((f[i][0].shape[0],), e, device=dev) for e, f in enumerate(factors)])
                for i in range(len(mods))]
    u_all = [torch.cat([f[i][0] for f in factors]) for i in range(len(mods))]
    d_all = [torch.cat([f[i][1] for f in factors]) for i in range(len(mods))]
    out = []
    for p, part in enumerate(batch.parts):
        row_edit = torch.tensor([edit_of_item[i] for i in part.items], device=dev)
        edits = [hooks.on_output(m, low_rank_hook(u_all[i], d_all[i], lrs[i],
                                                  (row_edit[:, None] == tok_edit[i][None, :]).float()[:, None, :]))
                 for i, m in enumerate(mods)]
        with torch.enable_grad(), hooks.together(edits):
            if replay and base.calls[p] is not None:
                rp = SimpleNamespace(h0=base.h0[p].detach(), blocks=base.blocks, calls=base.calls[p],
                                     final_norm=base.final_norm)
                out.append(run_recorded(rp, None, None))
            else:
                out.append(final_hidden(lm.model.base_model(input_ids=part.ids, attention_mask=part.mask,
                                                            use_cache=False)))
    return out


@torch.no_grad()
def replay_agrees(lm, base: BasePass, batch: Batch) -> bool:
    """Whether replaying the recorded calls gives the base pass's hidden states (else: full forwards)."""
    ok = True
    for p, part in enumerate(batch.parts):
        if base.calls[p] is None:
            return False
        rp = SimpleNamespace(h0=base.h0[p].detach(), blocks=base.blocks, calls=base.calls[p],
                             final_norm=base.final_norm)
        m = part.mask.bool()
        ok &= agrees(base.hidden[p].detach()[m], run_recorded(rp, None, None)[m],
                     f"MEND replay ({lm.adapter.family})", "using full forwards")
    return ok
