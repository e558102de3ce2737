"""MEND as an EditScope method: the trainable contract (:class:`editcore.methods.base.Trainable`) and
``compute``.

``compute`` reads the edit's gradient factors on the model as it is (inside the caller's scope, so sequential
edits see the earlier ones), maps them through the trained network and returns the dense weight change of each
edited MLP projection as a :class:`~editcore.scope.Patch`. The network is the one trained for this model's
fingerprint: with the shipped training settings (``hparams/mend/train_<model>.json``) if that artefact exists,
else the most recently trained one for the same model; with none, an :class:`InputError` names the command.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import InputError
from ...scope import Patch
from ...types import Request
from ..base import Edit, MethodInfo, Progress, hparam, hparams_to_dict, load_hparams, validate_hparams
from ..common import validate_requests
from . import data as mend_data
from . import store
from .hypernet import MendNet, Target
from .training import Trainer, Validation, edit_deltas, measure_step_seconds

log = logging.getLogger(__name__)

TRAIN_VERSION = "2"  # bump when training changes what an artefact holds (part of its key)
_BOOL = (True, False)


@dataclass(frozen=True)
class MendHparams:
    lr_scale: float = hparam(1.0, lo=0.0, hi=100.0,
                             help="multiplies the learned step sizes (1 = the update MEND was trained to make)")


@dataclass(frozen=True)
class MendTrainHparams:
    layers: tuple = hparam((), lo=0, hi=4095, help="layers whose MLP is edited; empty = the last three (the paper)")
    weights: str = hparam("mlp", choices=("mlp", "mlp_out"),
                          help="every MLP projection of those layers, or the output projection only")
    rank: int = hparam(512, lo=1, hi=8192, help="rank of the network's low-rank layers (the paper: 1920)")
    n_hidden: int = hparam(1, lo=0, hi=4, help="hidden layers of the network (the paper: 1)")
    edit_lr: float = hparam(1e-4, lo=0.0, hi=10.0, help="initial step size of every edited weight (the paper: 1e-4)")
    lr: float = hparam(1e-4, lo=1e-8, hi=1.0, help="Adam learning rate of the network")
    lr_lr: float = hparam(1e-4, lo=0.0, hi=1.0, help="Adam learning rate of the step sizes (the paper: 1e-4)")
    cedit: float = hparam(0.1, lo=0.0, hi=100.0, help="weight of the edit loss (the paper: 0.1)")
    cloc: float = hparam(1.0, lo=0.0, hi=100.0, help="weight of the locality KL (the paper: 1)")
    steps: int = hparam(600, lo=1, hi=1_000_000, help="optimiser steps")
    batch_edits: int = hparam(10, lo=1, hi=256, help="edits whose gradients are accumulated per step (the paper: 10)")
    grad_clip: float = hparam(100.0, lo=0.0, hi=1e6, help="gradient-norm clip (the paper: 100)")
    val_every: int = hparam(50, lo=1, hi=1_000_000, help="steps between points of the validation curve")
    n_val: int = hparam(30, lo=1, hi=1000, help="held-out catalog facts of the validation curve")
    holdout: str = hparam("report", choices=("report", "none"),
                          help="catalog part never trained on (the bench edits the report part)")
    checkpoint_every: int = hparam(25, lo=1, hi=1_000_000, help="steps between checkpoints")
    sources: tuple = hparam(("catalog", "counterfact", "zsre"), choices=("catalog", *mend_data.BENCH_SOURCES),
                            help="where edits come from (benchmarks only when their files are present)")
    bench_limit: int = hparam(2000, lo=0, hi=100_000, help="records read from each benchmark")
    known_only: bool = hparam(True, choices=_BOOL, help="train on catalog facts the model knows (if >= 50)")
    hard_locality: bool = hparam(True, choices=_BOOL,
                                 help="also a neighbourhood prompt of the edited fact as a locality example")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="initialisation and data order")


def edit_targets(lm, layers: Sequence[int], weights: str) -> list[Target]:
    """The edited weights: every MLP projection (or the output one) of ``layers`` (default: the last three)."""
    ad = lm.adapter
    layers = list(layers) or list(range(max(0, ad.n_layers - 3), ad.n_layers))
    slots = ("mlp_out",) if weights == "mlp_out" else (("mlp_gate", "mlp_up") if ad.gated else ("mlp_in",)) + (
        "mlp_out",)
    out = []
    for layer in layers:
        ad.check_layer(layer)
        for slot in slots:
            name = ad.module_name(slot, layer)
            mod = lm.model.get_submodule(name)
            transposed = not isinstance(mod, nn.Linear)  # GPT-2's Conv1D keeps [in, out]
            d_in, d_out = tuple(mod.weight.shape) if transposed else tuple(mod.weight.shape)[::-1]
            out.append(Target(f"{name}.weight", name, layer, d_in, d_out, transposed))
    return out


def _train_command(lm) -> str:
    return f"python -m editcore train mend {lm.name}"


# Loaded networks per model: {model: (artefact name, network)}.
_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Mend:
    name = "mend"
    version = "1"
    needs_training = True
    info = MethodInfo(
        title="MEND", category="meta-learning",
        reference="Mitchell et al. 2022, Fast Model Editing at Scale",
        summary="A small hypernetwork, trained once per model, turns the fine-tuning gradient of the last "
                "MLP layers into a weight update in one step: each token's input and output-gradient pair (the "
                "gradient's rank-one factors) is normalised, mapped through low-rank residual layers and summed "
                "back into an update, with a learned step size per layer. Training asks that the edit and its "
                "paraphrases follow while the next-token distributions of unrelated prompts stay put (KL).",
        adaptation="Trained here on the shipped catalog (plus CounterFact and zsRE where present) for a CPU "
                   "budget: rank 512 instead of 1920, a few hundred steps of four edits with a larger outer "
                   "learning rate instead of tens of thousands, and the edited fact's own neighbourhood prompts "
                   "added to the locality examples (hparams/mend/train_<model>.json).")
    Hparams = MendHparams
    TrainHparams = MendTrainHparams
    batched = False

    # ---- the trainable contract -----------------------------------------------------------------
    def _settings(self, lm, thp=None):
        thp = thp if thp is not None else load_hparams(self.name, MendTrainHparams, lm.name, prefix="train_")
        settings = hparams_to_dict(thp)
        return thp, store.stem(lm.fingerprint, store.artefact_key(lm.fingerprint, TRAIN_VERSION, settings))

    def trained(self, lm) -> dict | None:
        _thp, own = self._settings(lm)
        found = store.reports(lm.fingerprint)
        return next((r for r in found if r["name"] == own), found[0] if found else None)

    def held_out_facts(self, lm) -> set[str] | None:
        """Catalog ids the network in use never trained on (the bench judges MEND on these only)."""
        report = self.trained(lm)
        return set(report["data"]["held_out"]) if report else None

    def estimate_training_seconds(self, lm, thp) -> float:
        targets = edit_targets(lm, thp.layers, thp.weights)
        data = self._data(lm, thp)
        step, point = measure_step_seconds(lm, thp, targets, data)
        return thp.steps * step + (thp.steps // thp.val_every + 1) * point

    def _data(self, lm, thp) -> mend_data.Data:
        return mend_data.build(lm, thp.sources, thp.known_only, thp.holdout, thp.n_val, thp.bench_limit, thp.seed)

    def train(self, lm, thp, progress: Progress | None = None, *, resume: bool = True) -> dict:
        validate_hparams(thp)
        thp, name = self._settings(lm, thp)
        targets = edit_targets(lm, thp.layers, thp.weights)
        data = self._data(lm, thp)
        tr = Trainer(lm, thp, targets, data, name)
        if not (resume and tr.load_checkpoint()):
            store.remove(name + ".ckpt")
        started = store.now()
        with tr.timed():
            tr.check_replay()
            if not tr.curve:
                tr.prime_norms()
                tr.curve.append(tr.validate())
        while tr.step < thp.steps:
            with tr.timed():
                tr.train_log.append(tr.run_step())
                if tr.step % thp.val_every == 0 or tr.step == thp.steps:
                    tr.curve.append(tr.validate())
                    log.info("MEND step %d: %s", tr.step, {k: v for k, v in tr.curve[-1].items() if k != "lrs"})
            if tr.step % thp.checkpoint_every == 0 and tr.step < thp.steps:
                tr.save_checkpoint()
            if progress:
                last, point = tr.train_log[-1], tr.curve[-1]
                progress(f"step {tr.step}/{thp.steps}: loss {last['loss']:.3f}, held-out success "
                         f"{point['success']:.2f} (step {point['step']})", tr.step / thp.steps)
        report = self._report(lm, thp, tr, data, started)
        tensors = {k: v for k, v in tr.net.state_dict().items()}
        store.save(name, tensors, report)
        store.remove(name + ".ckpt")
        _LOADED.pop(lm.model, None)
        return {**report, "name": name}

    def _report(self, lm, thp, tr: Trainer, data: mend_data.Data, started: str) -> dict:
        from ...catalog import get_fact
        from ...perfbench import known_facts

        # The bench's 10 facts (held out from training), with their paraphrases from the catalog.
        bench = [e for f in known_facts(lm, 10) for e in mend_data.examples_of(get_fact(f.id))]
        return {
            "method": self.name, "model": lm.name, "fingerprint": lm.fingerprint, "complete": True,
            "train_version": TRAIN_VERSION, "settings": hparams_to_dict(thp), "steps": tr.step,
            "seconds": round(tr.seconds, 1), "cpu_seconds": round(tr.cpu_seconds, 1), "started": started,
            "finished": store.now(),
            "device": str(lm.device), "threads": torch.get_num_threads(),
            "targets": [dataclasses.asdict(t) for t in tr.net.targets],
            "data": {"train_edits": len(data.train), "val_edits": len(data.val), "locality_pairs": len(data.loc),
                     "by_source": data.counts, "held_out": data.held_out},
            "replayed_blocks": tr.replay, "curve": tr.curve,
            "bench_facts": {"ids": [b.id for b in bench],
                            **(Validation(lm, tr.net.targets, bench)(tr.net, tr.replay) if bench else {"n": 0})},
        }

    def _network(self, lm) -> tuple[MendNet, dict]:
        report = self.trained(lm)
        if report is None:
            raise InputError(f"MEND has no trained hypernetwork for {lm.name}; train one with "
                             f"`{_train_command(lm)}`")
        hit = _LOADED.get(lm.model)
        if hit is not None and hit[0] == report["name"]:
            return hit[1], report
        tensors, meta = store.load(report["name"], lm.device)
        targets = [Target(**t) for t in meta["targets"]]
        s = meta["settings"]
        net = MendNet(targets, s["rank"], s["n_hidden"], s["edit_lr"], s["seed"]).to(lm.device)
        net.load_state_dict(tensors)
        net.eval()
        net.requires_grad_(False)
        _LOADED[lm.model] = (report["name"], net)
        return net, report

    # ---- the method -----------------------------------------------------------------------------
    def compute(self, lm, requests: Sequence[Request], hp: MendHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        """MEND has no optional fast path, so ``speed`` is accepted (every method takes it) and not used."""
        t0 = time.perf_counter()
        validate_hparams(hp)
        req, = validate_requests(lm, requests, one_at_a_time="MEND")
        net, report = self._network(lm)
        params = dict(lm.model.named_parameters())
        missing = [t.param for t in net.targets if t.param not in params]
        if missing:
            raise InputError(f"the trained hypernetwork edits {missing[0]}, which this model does not have")
        with lm.lock:
            deltas, loss = edit_deltas(lm, net, req.text, req.target_new, hp.lr_scale)
        patch = Patch(deltas, label=f"MEND {req.subject} -> {req.target_new}")
        seconds = time.perf_counter() - t0
        diagnostics = {"edit_loss_before": loss, "artefact": report["name"], "trained_steps": report.get("steps"),
                       "layers": sorted({t.layer for t in net.targets}), "n_weights": len(net.targets),
                       "update_norm": float(sum(float(d.float().norm()) ** 2 for d in deltas.values()) ** 0.5)}
        log.info("MEND %r -> %r: |dW|=%.3g, %.2fs", req.subject, req.target_new, diagnostics["update_norm"], seconds)
        return Edit(self.name, (req,), patch, seconds, diagnostics)


METHOD = Mend()
