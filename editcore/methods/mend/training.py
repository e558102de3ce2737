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
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence

import torch

from . import data as mend_data
from . import store
from .factors import base_pass, edit_factors, item_nll, log_probs, make_batch, post_pass, replay_agrees
from .hypernet import MendNet, Target

log = logging.getLogger(__name__)

VAL_PARAPHRASES = 2  # per held-out fact in the curve
VAL_NEIGHBOURS = 3


def _per_edit_mean(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, owner, values)
    return sums / torch.bincount(owner, minlength=n).to(values.dtype).clamp(min=1)


def step_loss(lm, net: MendNet, draws: Sequence[tuple], thp, replay: bool = True,
              learn_norm: bool = True) -> tuple[torch.Tensor, dict]:
    """The mean over ``draws`` (``(example, equivalence prompts, locality pairs)``) of ``c_e L_e + c_loc L_loc``,
    differentiable with respect to ``net``."""
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
    base = base_pass(lm, batch, net.targets)
    loc_sel = batch.tokens_of(items["loc"])
    factors, pre_nll, base_rows = edit_factors(lm, base, batch, items["edit"], loc_sel)
    base.outputs = base.hidden = None  # the base graph is not needed any more
    transformed = [[net.factors(i, u, d, learn_norm) for i, (u, d) in enumerate(f)] for f in factors]
    hidden = post_pass(lm, base, batch, net.targets, transformed, net.lrs, edit_of, replay)
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
    loss = (thp.cedit * l_edit + thp.cloc * l_loc).mean()
    on_edit = torch.isin(batch.item[outer_sel], torch.tensor(items["edit"], device=dev))
    wrong = torch.zeros(n, device=dev).index_add(0, owner[batch.item[outer_sel][on_edit]],
                                                 (top[on_edit] != batch.labels[outer_sel][on_edit]).float())
    info = {"loss": float(loss.detach()), "edit_nll": float(l_edit.detach().mean()),
            "loc_kl": float(l_loc.detach().mean()), "pre_nll": float(pre_nll.mean()),
            "edit_top1": float((wrong == 0).float().mean())}
    return loss, info


@torch.no_grad()
def dense_updates(net: MendNet, factors, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """The network's weight change for each target, in its parameter's layout."""
    out = {}
    for i, (t, (u, d)) in enumerate(zip(net.targets, factors)):
        dw = net.update(i, u, d) * scale
        out[t.param] = dw.T.contiguous() if t.transposed else dw
    return out


def edit_deltas(lm, net: MendNet, prompt: str, target: str, scale: float = 1.0) -> tuple[dict, float]:
    """``({param: delta}, the edit's NLL before the edit)`` for one edit (what ``compute`` applies)."""
    batch = make_batch(lm, [(prompt, target)])
    base = base_pass(lm, batch, net.targets)
    factors, nll, _ = edit_factors(lm, base, batch, [0])
    params = dict(lm.model.named_parameters())
    deltas = {n: d.to(dtype=params[n].dtype) for n, d in dense_updates(net, factors[0], scale).items()}
    return deltas, float(nll[0])


class Validation:
    """The held-out facts of the curve, with what does not change during training computed once: each edit's
    gradient factors and the recorded inputs of the scoring rows at the lowest edited block."""

    def __init__(self, lm, targets: Sequence[Target], examples: Sequence[mend_data.Example]):
        self.lm, self.examples = lm, list(examples)
        with lm.scope():
            eb = make_batch(lm, [(ex.prompt, ex.target_new) for ex in self.examples])
            self.factors, _, _ = edit_factors(lm, base_pass(lm, eb, targets), eb, list(range(len(self.examples))))
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
    def __call__(self, net: MendNet, replay: bool = True) -> dict:
        net.eval()
        try:
            transformed = [[net.factors(i, u, d) for i, (u, d) in enumerate(f)] for f in self.factors]
            with self.lm.scope():
                hidden = post_pass(self.lm, self.base, self.batch, net.targets, transformed, net.lrs,
                                   self.edit_of, replay)
                sel = torch.arange(self.batch.labels.numel(), device=self.batch.labels.device)
                lp, top, _ = log_probs(self.lm, hidden, self.batch, sel, sel[:0])
        finally:
            net.train()
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


class Trainer:
    """One training run: the network, its optimisers, the data and the curve, checkpointed by name."""

    def __init__(self, lm, thp, targets: Sequence[Target], data: mend_data.Data, name: str):
        self.lm, self.thp, self.data, self.name = lm, thp, data, name
        self.net = MendNet(targets, thp.rank, thp.n_hidden, thp.edit_lr, thp.seed).to(lm.device)
        self.opt = torch.optim.Adam([p for n, p in self.net.named_parameters() if n != "lrs"], lr=thp.lr)
        self.lr_opt = torch.optim.Adam([self.net.lrs], lr=thp.lr_lr)
        self.step = 0
        self.seconds = 0.0  # wall-clock and CPU time of the steps and curve points (over resumed sessions too)
        self.cpu_seconds = 0.0
        self.curve: list[dict] = []
        self.train_log: list[dict] = []
        self.replay = True
        self.validation: Validation | None = None

    @contextlib.contextmanager
    def timed(self):
        """Count the block's wall-clock and CPU time into the run's totals."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        t_opt, m_opt = store.optimiser_tensors("opt", self.opt)
        t_lr, m_lr = store.optimiser_tensors("lr_opt", self.lr_opt)
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()} | t_opt | t_lr
        store.save(self.name + ".ckpt", tensors, {"step": self.step, "seconds": self.seconds,
                                                  "cpu_seconds": self.cpu_seconds, "curve": self.curve,
                                                  "train_log": self.train_log, "opt": m_opt, "lr_opt": m_lr})

    def load_checkpoint(self) -> bool:
        got = store.load(self.name + ".ckpt", self.lm.device)
        if got is None:
            return False
        tensors, meta = got
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        store.restore_optimiser("opt", self.opt, tensors, meta["opt"])
        store.restore_optimiser("lr_opt", self.lr_opt, tensors, meta["lr_opt"])
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        self.cpu_seconds = float(meta.get("cpu_seconds", 0.0))
        self.curve, self.train_log = list(meta["curve"]), list(meta["train_log"])
        log.info("MEND: resuming %s at step %d", self.name, self.step)
        return True

    # ---- steps ----------------------------------------------------------------------------------
    def draws(self, step: int, hard_locality: bool | None = None) -> list[tuple]:
        hard = self.thp.hard_locality if hard_locality is None else hard_locality
        return [mend_data.draw(self.data, self.thp.seed, step, k, hard) for k in range(self.thp.batch_edits)]

    def run_step(self) -> dict:
        thp = self.thp
        with self.lm.scope():
            loss, info = step_loss(self.lm, self.net, self.draws(self.step), thp, self.replay)
            loss.backward()
            params = [p for group in (self.opt.param_groups + self.lr_opt.param_groups) for p in group["params"]]
            grad = float(torch.nn.utils.clip_grad_norm_(params, thp.grad_clip))
            if math.isfinite(grad):  # a non-finite gradient skips the step (the code's safe_backward)
                self.opt.step()
                self.lr_opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.lr_opt.zero_grad(set_to_none=True)
        self.step += 1
        return info | {"grad_norm": grad}

    def check_replay(self) -> None:
        """Once per run: replaying the recorded blocks agrees with a plain forward on a real batch; if it does
        not, every post pass is a full forward."""
        ex, outer, loc = self.draws(0)[0]
        with self.lm.scope():
            batch = make_batch(self.lm, [(p, ex.target_new) for p in outer] + list(loc))
            self.replay = replay_agrees(self.lm, base_pass(self.lm, batch, self.net.targets, grad=False), batch)

    @torch.no_grad()
    def prime_norms(self) -> None:
        """Before the first step: the normalisation statistics from one step's worth of training edits drawn
        apart from the steps' own, so the untrained network can be evaluated for the curve's first point."""
        with self.lm.scope():
            draws = [mend_data.draw(self.data, self.thp.seed, -1, k, False) for k in range(self.thp.batch_edits)]
            batch = make_batch(self.lm, [(ex.prompt, ex.target_new) for ex, _o, _l in draws])
            factors, _, _ = edit_factors(self.lm, base_pass(self.lm, batch, self.net.targets), batch,
                                         list(range(len(draws))))
            for f in factors:
                for t, (u, d) in zip(self.net.targets, f):
                    self.net.nets[t.shape_key].norm_u.update(u)
                    self.net.nets[t.shape_key].norm_delta.update(d)

    def validate(self) -> dict:
        if self.validation is None:
            self.validation = Validation(self.lm, self.net.targets, self.data.val)
        point = {"step": self.step, **self.validation(self.net, self.replay),
                 "lrs": [float(x) for x in self.net.lrs.detach()]}
        recent = self.train_log[-self.thp.val_every:]
        for k in ("loss", "edit_nll", "loc_kl", "edit_top1"):
            point[f"train_{k}"] = sum(r[k] for r in recent) / len(recent) if recent else None
        return point


def measure_step_seconds(lm, thp, targets, data: mend_data.Data, n: int = 2) -> tuple[float, float]:
    """Seconds of one training step and of one validation point, measured on a throwaway network."""
    tr = Trainer(lm, thp, targets, data, "estimate")
    tr.prime_norms()
    tr.run_step()  # warm-up (allocations, first-call costs)
    t0 = time.perf_counter()
    for _ in range(n):
        tr.run_step()
    step = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    tr.validate()
    return step, time.perf_counter() - t0
