"""The training loop shared by the hyper-network editors (MEND, KE, MALMEN): steps, curve, checkpoints.

A :class:`Trainer` owns one network, its optimisers, the data and the validation curve. A method changes what
its network is (:meth:`Trainer.build_net`), its optimisers, how an edit's gradient factors become an update
(:meth:`Trainer.transform`) and how the edit and locality losses combine (:meth:`Trainer.loss`); the rest —
drawing edits, clipping, skipping non-finite steps, the held-out curve and resumable checkpoints — is here
once. MEND's own choices are the defaults.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from . import data as mend_data
from . import store
from .factors import base_pass, edit_factors, make_batch, replay_agrees
from .hypernet import MendNet, Target
from .training import Transform, Validation, edit_losses, mend_transform

log = logging.getLogger(__name__)


class Trainer:
    """One training run, checkpointed by name under the method's ``kind``."""

    kind = "mend"
    answer_only = False  # factors of every token with a gradient (MEND, KE) or of the answer tokens (MALMEN)
    normalised = True  # the network keeps running statistics of the factors, primed before the first point

    def __init__(self, lm, thp, targets: Sequence[Target], data: mend_data.Data, name: str):
        self.lm, self.thp, self.data, self.name = lm, thp, data, name
        self.net = self.build_net(targets, thp, lm).to(lm.device)
        self.opts = self.make_optimisers()
        self.step = 0
        self.seconds = 0.0  # wall-clock and CPU time of the steps and curve points (over resumed sessions too)
        self.cpu_seconds = 0.0
        self.curve: list[dict] = []
        self.train_log: list[dict] = []
        self.replay = True
        self.validation: Validation | None = None

    # ---- what a method changes ------------------------------------------------------------------
    @staticmethod
    def build_net(targets: Sequence[Target], s, lm) -> nn.Module:
        """The network for ``targets`` of ``lm`` from the training settings ``s`` (also used to load an
        artefact)."""
        return MendNet(targets, s.rank, s.n_hidden, s.edit_lr, s.seed)

    def make_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": torch.optim.Adam([p for n, p in self.net.named_parameters() if n != "lrs"], lr=self.thp.lr),
                "lr_opt": torch.optim.Adam([self.net.lrs], lr=self.thp.lr_lr)}

    def transform(self, learn_norm: bool = False) -> Transform:
        return mend_transform(self.net, learn_norm)

    @staticmethod
    def edit_transform(net: nn.Module, lm) -> Transform:
        """The transform ``compute`` uses with a trained network."""
        return mend_transform(net)

    def loss(self, l_edit: torch.Tensor, l_loc: torch.Tensor) -> torch.Tensor:
        return (self.thp.cedit * l_edit + self.thp.cloc * l_loc).mean()

    def observe(self, factors) -> None:
        """Update the network's running statistics with one edit's factors (before the first point)."""
        for t, (u, d) in zip(self.net.targets, factors):
            self.net.nets[t.shape_key].norm_u.update(u)
            self.net.nets[t.shape_key].norm_delta.update(d)

    def after_step(self) -> None:
        """After each optimiser step (KE projects its multiplier back to >= 0)."""

    def after_point(self, point: dict) -> None:
        """After each curve point (KE tightens its margin)."""

    def point_extras(self) -> dict:
        return {"lrs": [float(x) for x in self.net.lrs.detach()]}

    def state(self) -> dict:
        """Plain state beyond the network and optimisers that a checkpoint must carry."""
        return {}

    def set_state(self, state: dict) -> None:
        pass

    # ---- timing ---------------------------------------------------------------------------------
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
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        meta = {"step": self.step, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "curve": self.curve,
                "train_log": self.train_log, "state": self.state()}
        for key, opt in self.opts.items():
            t, m = store.optimiser_tensors(key, opt)
            tensors |= t
            meta[key] = m
        store.save(self.name + ".ckpt", tensors, meta, self.kind)

    def load_checkpoint(self) -> bool:
        got = store.load(self.name + ".ckpt", self.lm.device, self.kind)
        if got is None:
            return False
        tensors, meta = got
        self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        for key, opt in self.opts.items():
            store.restore_optimiser(key, opt, tensors, meta[key])
        self.step, self.seconds = int(meta["step"]), float(meta["seconds"])
        self.cpu_seconds = float(meta.get("cpu_seconds", 0.0))
        self.curve, self.train_log = list(meta["curve"]), list(meta["train_log"])
        self.set_state(meta.get("state", {}))
        log.info("%s: resuming %s at step %d", self.kind, self.name, self.step)
        return True

    # ---- steps ----------------------------------------------------------------------------------
    def draws(self, step: int, hard_locality: bool | None = None) -> list[tuple]:
        hard = self.thp.hard_locality if hard_locality is None else hard_locality
        return [mend_data.draw(self.data, self.thp.seed, step, k, hard) for k in range(self.thp.batch_edits)]

    def run_step(self) -> dict:
        with self.lm.scope():
            l_edit, l_loc, info = edit_losses(self.lm, self.draws(self.step), self.net.targets,
                                              self.transform(learn_norm=True), self.replay, self.answer_only)
            loss = self.loss(l_edit, l_loc)
            loss.backward()
            params = [p for opt in self.opts.values() for group in opt.param_groups for p in group["params"]]
            grad = float(torch.nn.utils.clip_grad_norm_(params, self.thp.grad_clip))
            if math.isfinite(grad):  # a non-finite gradient skips the step (MEND's safe_backward)
                for opt in self.opts.values():
                    opt.step()
            for opt in self.opts.values():
                opt.zero_grad(set_to_none=True)
        self.after_step()
        self.step += 1
        return {"loss": float(loss.detach()), **info, "grad_norm": grad}

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
        if not self.normalised:
            return
        with self.lm.scope():
            draws = [mend_data.draw(self.data, self.thp.seed, -1, k, False) for k in range(self.thp.batch_edits)]
            batch = make_batch(self.lm, [(ex.prompt, ex.target_new) for ex, _o, _l in draws])
            factors, _, _ = edit_factors(self.lm, base_pass(self.lm, batch, self.net.targets), batch,
                                         list(range(len(draws))), answer_only=self.answer_only)
            for f in factors:
                self.observe(f)

    def validate(self) -> dict:
        if self.validation is None:
            self.validation = Validation(self.lm, self.net.targets, self.data.val, self.answer_only)
        point = {"step": self.step, **self.validation(self.transform(), self.replay), **self.point_extras()}
        recent = self.train_log[-self.thp.val_every:]
        for k in ("loss", "edit_nll", "loc_kl", "edit_top1"):
            point[f"train_{k}"] = sum(r[k] for r in recent) / len(recent) if recent else None
        self.after_point(point)
        return point


def load_net(trainer: type[Trainer], tensors: dict, meta: dict, lm) -> nn.Module:
    """A trained network for ``lm`` from its artefact (tensors and report), frozen for editing."""
    net = trainer.build_net([Target(**t) for t in meta["targets"]], SimpleNamespace(**meta["settings"]), lm)
    net = net.to(lm.device)
    net.load_state_dict(tensors)
    net.eval()
    net.requires_grad_(False)
    return net


def measure_step_seconds(trainer: type[Trainer], lm, thp, targets, data: mend_data.Data,
                         n: int = 2) -> tuple[float, float]:
    """Seconds of one training step and of one validation point, measured on a throwaway network."""
    tr = trainer(lm, thp, targets, data, "estimate")
    tr.prime_norms()
    tr.run_step()  # warm-up (allocations, first-call costs)
    t0 = time.perf_counter()
    for _ in range(n):
        tr.run_step()
    step = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    tr.validate()
    return step, time.perf_counter() - t0
