"""Training MEND's hypernetwork (the loop of the authors' ``EditTrainer``, written for EditScope).

For each edit of a step, the base pass reads the factors of the edit loss's gradient on ``(x_e, y_e)``, the
network maps them to an update, and the post pass gives

* ``L_e`` — the mean NLL of ``y_e`` after the equivalence prompts (the edit prompt and a paraphrase), and
* ``L_loc`` — ``KL(p_base || p_edited)`` of the next-token distributions at the locality prompts' answer tokens;

the step's loss is the mean over its ``batch_edits`` edits of ``c_e L_e + c_loc L_loc`` (the paper's
``c_e = 0.1``; its code accumulates the same mean over ``accumulate_bs`` edits). The edits of a step run as one
batch, each row seeing only its own edit (:mod:`.factors`): the same numbers as one edit at a time. The
gradient norm is clipped, and the network (Adam, ``lr``) and the step sizes (Adam, ``lr_lr``) are updated;
the normalisation statistics are updated from each edit's factors, edit by edit, as they arrive.

Every ``val_every`` steps the curve gets a point on held-out catalog facts: each edit made with the network as
it is, judged by edit success (every target token top-1), efficacy (P(new) > P(old)), paraphrase
generalisation and neighbourhood score (P(old) > P(new) on other subjects). The validation rows below the
edited layers and the edits' gradient factors do not change during training, so they are computed once; each
point costs the blocks above. Checkpoints every ``checkpoint_every`` steps; a resumed run draws the same edits
an uninterrupted one would have (:func:`.data.draw`).

KE and MALMEN train the same way with their own networks: what differs is the *transform* from an edit's
gradient factors to the update's factors (:data:`Transform`) and how the two losses are combined, so this
module holds the shared passes and losses and :mod:`.trainer` the shared loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import data as mend_data
from .factors import base_pass, edit_factors, item_nll, log_probs, make_batch, post_pass
from .hypernet import MendNet, Target

VAL_PARAPHRASES = 2  # per held-out fact in the curve
VAL_NEIGHBOURS = 3

# ``(factors[e][i] of each edit e and target i, the edits' examples) -> (transformed[g][i] = (u~, delta~),
# step sizes per target, the group g of each edit)``: the post pass adds ``-lr_i sum_t delta~_t u~_t^T`` of
# group g to the rows of every edit in g (MEND, KE: one group per edit; MALMEN: one group for all).
Transform = Callable[[list, list], tuple[list, torch.Tensor, list[int]]]


def mend_transform(net: MendNet, learn_norm: bool = False) -> Transform:
    def fn(factors, _examples):
        return ([[net.factors(i, u, d, learn_norm) for i, (u, d) in enumerate(f)] for f in factors], net.lrs,
                list(range(len(factors))))
    return fn


def _per_edit_mean(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, owner, values)
    return sums / torch.bincount(owner, minlength=n).to(values.dtype).clamp(min=1)


def edit_losses(lm, draws: Sequence[tuple], targets: Sequence[Target], transform: Transform, replay: bool = True,
                answer_only: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(L_e, L_loc, info)`` of each of ``draws`` (``(example, equivalence prompts, locality pairs)``) edited
    through ``transform``, differentiable with respect to what the transform depends on."""
    rows = []  # (prompt, target), the edit it belongs to, its role
    for e, (ex, outer, loc) in enumerate(draws):
        rows += [((p, ex.target_new), e, "edit" if j == 0 else "outer") for j, p in enumerate(outer)]
        rows += [((p, a), e, "loc") for p, a in loc]
    pairs, edit_of, role = (list(col) for col in zip(*rows))
    batch = make_batch(lm, pairs)
    dev = batch.labels.device
    items = {"edit": [i for i, x in enumerate(role) if x == "edit"],
             "outer": [i for i, x in enumerate(role) if x != "loc"],
             "loc": [i for i, x in enumerate(role) if x == "loc"]}
    base = base_pass(lm, batch, targets)
    loc_sel = batch.tokens_of(items["loc"])
    factors, pre_nll, base_rows = edit_factors(lm, base, batch, items["edit"], loc_sel, answer_only)
    base.outputs = base.hidden = None  # the base graph is not needed any more
    transformed, lrs, group = transform(factors, [ex for ex, _o, _l in draws])
    hidden = post_pass(lm, base, batch, targets, transformed, lrs, [group[e] for e in edit_of], replay)
    outer_sel = batch.tokens_of(items["outer"])
    lp, top, post_rows = log_probs(lm, hidden, batch, outer_sel, loc_sel)
    n = len(draws)
    owner = torch.tensor(edit_of, device=dev)
    outer_items = torch.tensor(items["outer"], device=dev)
    nll = item_nll(lp, batch.item[outer_sel], batch.n_items)
    l_edit = _per_edit_mean(nll[outer_items], owner[outer_items], n)
    if loc_sel.numel():
        kl = (base_rows.exp() * (base_rows - post_rows)).sum(-1)
        l_loc = _per_edit_mean(kl, owner[batch.item[loc_sel]], n)
    else:
        l_loc = l_edit.new_zeros(n)
    on_edit = torch.isin(batch.item[outer_sel], torch.tensor(items["edit"], device=dev))
    wrong = torch.zeros(n, device=dev).index_add(0, owner[batch.item[outer_sel][on_edit]],
                                                 (top[on_edit] != batch.labels[outer_sel][on_edit]).float())
    info = {"edit_nll": float(l_edit.detach().mean()), "loc_kl": float(l_loc.detach().mean()),
            "pre_nll": float(pre_nll.mean()), "edit_top1": float((wrong == 0).float().mean())}
    return l_edit, l_loc, info


def step_loss(lm, net: MendNet, draws: Sequence[tuple], thp, replay: bool = True,
              learn_norm: bool = True) -> tuple[torch.Tensor, dict]:
    """MEND's loss: the mean over ``draws`` of ``c_e L_e + c_loc L_loc``, differentiable with respect to ``net``."""
    l_edit, l_loc, info = edit_losses(lm, draws, net.targets, mend_transform(net, learn_norm), replay)
    loss = (thp.cedit * l_edit + thp.cloc * l_loc).mean()
    return loss, {"loss": float(loss.detach()), **info}


@torch.no_grad()
def dense_updates(targets: Sequence[Target], transformed, lrs, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The weight change ``-lr_i sum_t delta~_t u~_t^T`` of each target from one group's transformed factors,
    in its parameter's layout."""
    out = {}
    for i, (t, (u, d)) in enumerate(zip(targets, transformed)):
        dw = (-lrs[i] * (d.T.float() @ u.float())) * scale
        out[t.param] = dw.T.contiguous() if t.transposed else dw
    return out


@torch.no_grad()
def edit_deltas(lm, net_or_transform, prompt: str, target: str, scale: float = 1.0,
                targets: Sequence[Target] | None = None) -> tuple[dict, float]:
    """``({param: delta}, the edit's NLL before the edit)`` for one edit (what ``compute`` applies): through
    MEND's network, or any :data:`Transform` with its ``targets``."""
    ex = mend_data.Example("edit", prompt, target, "", (), ())
    deltas, nll = batch_deltas(lm, net_or_transform, [ex], scale, targets)
    return deltas, float(nll[0])


@torch.no_grad()
def batch_deltas(lm, net_or_transform, examples: Sequence[mend_data.Example], scale: float = 1.0,
                 targets: Sequence[Target] | None = None, answer_only: bool = False) -> tuple[dict, torch.Tensor]:
    """``({param: delta}, each edit's NLL before the edit)`` of edits whose transform makes one group (MEND, KE:
    a single edit; MALMEN: any number)."""
    if targets is None:
        targets, transform = net_or_transform.targets, mend_transform(net_or_transform)
    else:
        transform = net_or_transform
    batch = make_batch(lm, [(ex.prompt, ex.target_new) for ex in examples])
    base = base_pass(lm, batch, targets)
    factors, nll, _ = edit_factors(lm, base, batch, list(range(len(examples))), answer_only=answer_only)
    transformed, lrs, group = transform(factors, list(examples))
    if len(set(group)) != 1:
        raise ValueError("these edits do not make one update")
    params = dict(lm.model.named_parameters())
    deltas = {n: d.to(dtype=params[n].dtype) for n, d in dense_updates(targets, transformed[0], lrs, scale).items()}
    return deltas, nll


class Validation:
    """The held-out facts of the curve, with what does not change during training computed once: each edit's
    gradient factors and the recorded inputs of the scoring rows at the lowest edited block."""

    def __init__(self, lm, targets: Sequence[Target], examples: Sequence[mend_data.Example],
                 answer_only: bool = False):
        self.lm, self.targets, self.examples = lm, tuple(targets), list(examples)
        with lm.scope():
            eb = make_batch(lm, [(ex.prompt, ex.target_new) for ex in self.examples])
            self.factors, _, _ = edit_factors(lm, base_pass(lm, eb, targets), eb, list(range(len(self.examples))),
                                              answer_only=answer_only)
            rows = []  # (prompt, target), the edit it belongs to, its kind; each row before its comparison
            for e, ex in enumerate(self.examples):
                rows += [((ex.prompt, ex.target_new), e, "edit"), ((ex.prompt, ex.target_true), e, "edit_old")]
                for p in ex.paraphrases[:VAL_PARAPHRASES]:
                    rows += [((p, ex.target_new), e, "para"), ((p, ex.target_true), e, "para_old")]
                for p, a in ex.neighbours[:VAL_NEIGHBOURS]:
                    rows += [((p, a), e, "nb"), ((p, ex.target_new), e, "nb_new")]
            pairs, self.edit_of, self.kind = (list(col) for col in zip(*rows))
            self.batch = make_batch(lm, pairs)
            self.base = base_pass(lm, self.batch, targets, grad=False)
            self.base.outputs = self.base.inputs = None

    @torch.no_grad()
    def __call__(self, transform: Transform | MendNet, replay: bool = True) -> dict:
        if isinstance(transform, MendNet):
            transform = mend_transform(transform)
        transformed, lrs, group = transform(self.factors, self.examples)
        with self.lm.scope():
            hidden = post_pass(self.lm, self.base, self.batch, self.targets, transformed, lrs,
                               [group[e] for e in self.edit_of], replay)
            sel = torch.arange(self.batch.labels.numel(), device=self.batch.labels.device)
            lp, top, _ = log_probs(self.lm, hidden, self.batch, sel, sel[:0])
        n_items = self.batch.n_items
        logp = torch.zeros(n_items, dtype=lp.dtype, device=lp.device).index_add(0, self.batch.item, lp)
        wrong = torch.zeros(n_items, device=lp.device).index_add(0, self.batch.item,
                                                                 (top != self.batch.labels).float())
        return summarise(self.kind, self.edit_of, logp.tolist(), (wrong == 0).tolist(), len(self.examples))


def summarise(kind: Sequence[str], edit_of: Sequence[int], logp: Sequence[float], correct: Sequence[bool],
              n_edits: int) -> dict:
    """Success, efficacy, generalisation and neighbourhood score (means over edits) from per-item scores laid
    out as :class:`Validation` lays them out (each scored row followed by its comparison row)."""
    per = [{"success": [], "efficacy": [], "generalisation": [], "neighbourhood": []} for _ in range(n_edits)]
    for i, k in enumerate(kind):
        e = edit_of[i]
        if k == "edit":
            per[e]["success"].append(correct[i])
            per[e]["efficacy"].append(logp[i] > logp[i + 1])
        elif k == "para":
            per[e]["generalisation"].append(logp[i] > logp[i + 1])
        elif k == "nb":
            per[e]["neighbourhood"].append(logp[i] > logp[i + 1])
    out = {}
    for key in ("success", "efficacy", "generalisation", "neighbourhood"):
        vals = [sum(p[key]) / len(p[key]) for p in per if p[key]]
        out[key] = sum(vals) / len(vals) if vals else None
    return out | {"n": n_edits}
