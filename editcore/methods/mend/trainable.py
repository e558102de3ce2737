"""The trainable contract (:class:`editcore.methods.base.Trainable`) for the hyper-network editors, once.

MEND, KE and MALMEN each train one network per model on the same data (:mod:`.data`) with the same loop
(:mod:`.trainer`) and keep it the same way (:mod:`.store`); :class:`HyperEditor` is what they share: finding
the artefact for a model (the one trained with the shipped settings, else the newest), the facts it never
trained on, the time estimate, training with its report, and loading the network for ``compute``. A method
sets its ``name``, ``TrainHparams``, ``train_version`` and ``trainer``.
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
from ..base import Edit, Progress, hparam, hparams_to_dict, load_hparams, validate_hparams
from ..common import validate_requests
from . import data as mend_data
from . import store
from .hypernet import Target
from .trainer import Trainer, load_net, measure_step_seconds
from .training import Validation, batch_deltas

log = logging.getLogger(__name__)

BOOL = (True, False)


@dataclass(frozen=True)
class TrainSettings:
    """The training settings every hyper-network editor has: which weights, the data, the schedule."""

    layers: tuple = hparam((), lo=0, hi=4095, help="layers whose MLP is edited; empty = the last three (the paper)")
    weights: str = hparam("mlp", choices=("mlp", "mlp_out"),
                          help="every MLP projection of those layers, or the output projection only")
    steps: int = hparam(600, lo=1, hi=1_000_000, help="optimiser steps")
    batch_edits: int = hparam(10, lo=1, hi=256, help="edits drawn per optimiser step")
    grad_clip: float = hparam(100.0, lo=0.0, hi=1e6, help="gradient-norm clip")
    val_every: int = hparam(50, lo=1, hi=1_000_000, help="steps between points of the validation curve")
    n_val: int = hparam(30, lo=1, hi=1000, help="held-out catalog facts of the validation curve")
    holdout: str = hparam("report", choices=("report", "none"),
                          help="catalog part never trained on (the bench edits the report part)")
    checkpoint_every: int = hparam(25, lo=1, hi=1_000_000, help="steps between checkpoints")
    sources: tuple = hparam(("catalog", "counterfact", "zsre"), choices=("catalog", *mend_data.BENCH_SOURCES),
                            help="where edits come from (benchmarks only when their files are present)")
    bench_limit: int = hparam(2000, lo=0, hi=100_000, help="records read from each benchmark")
    known_only: bool = hparam(True, choices=BOOL, help="train on catalog facts the model knows (if >= 50)")
    hard_locality: bool = hparam(True, choices=BOOL,
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



def update_norm(deltas: dict[str, torch.Tensor]) -> float:
    """The Frobenius norm of all of an edit's weight changes together (a diagnostic)."""
    return float(sum(float(d.float().norm()) ** 2 for d in deltas.values()) ** 0.5)


class HyperEditor:
    name = "mend"
    needs_training = True
    train_version = "1"  # bump when training changes what an artefact holds (part of its key)
    trainer: type[Trainer] = Trainer
    TrainHparams: type

    def __init__(self):
        self._loaded = weakref.WeakKeyDictionary()  # {model: (artefact name, network)}

    def targets(self, lm, thp) -> list[Target]:
        return edit_targets(lm, thp.layers, thp.weights)

    def train_command(self, lm) -> str:
        return f"python -m editcore train {self.name} {lm.name}"

    # ---- the trainable contract -----------------------------------------------------------------
    def _settings(self, lm, thp=None):
        thp = thp if thp is not None else load_hparams(self.name, self.TrainHparams, lm.name, prefix="train_")
        key = store.artefact_key(lm.fingerprint, self.train_version, hparams_to_dict(thp), self.name)
        return thp, store.stem(lm.fingerprint, key)

    def trained(self, lm) -> dict | None:
        _thp, own = self._settings(lm)
        found = store.reports(lm.fingerprint, self.name)
        return next((r for r in found if r["name"] == own), found[0] if found else None)

    def held_out_facts(self, lm) -> set[str] | None:
        """Catalog ids the network in use never trained on (the bench judges the method on these only)."""
        report = self.trained(lm)
        return set(report["data"]["held_out"]) if report else None

    def estimate_training_seconds(self, lm, thp) -> float:
        step, point = measure_step_seconds(self.trainer, lm, thp, self.targets(lm, thp), self._data(lm, thp))
        return thp.steps * step + (thp.steps // thp.val_every + 1) * point

    def _data(self, lm, thp) -> mend_data.Data:
        return mend_data.build(lm, thp.sources, thp.known_only, thp.holdout, thp.n_val, thp.bench_limit, thp.seed)

    def train(self, lm, thp, progress: Progress | None = None, *, resume: bool = True) -> dict:
        validate_hparams(thp)
        thp, name = self._settings(lm, thp)
        data = self._data(lm, thp)
        tr = self.trainer(lm, thp, self.targets(lm, thp), data, name)
        if not (resume and tr.load_checkpoint()):
            store.remove(name + ".ckpt", self.name)
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
                    log.info("%s step %d: %s", self.name, tr.step,
                             {k: v for k, v in tr.curve[-1].items() if not isinstance(v, list)})
            if tr.step % thp.checkpoint_every == 0 and tr.step < thp.steps:
                tr.save_checkpoint()
            if progress:
                last, point = tr.train_log[-1], tr.curve[-1]
                progress(f"step {tr.step}/{thp.steps}: loss {last['loss']:.3f}, held-out success "
                         f"{point['success']:.2f} (step {point['step']})", tr.step / thp.steps)
        report = self._report(lm, thp, tr, data, started)
        store.save(name, dict(tr.net.state_dict()), report, self.name)
        store.remove(name + ".ckpt", self.name)
        self._loaded.pop(lm.model, None)
        return {**report, "name": name}

    def _report(self, lm, thp, tr: Trainer, data: mend_data.Data, started: str) -> dict:
        from ...catalog import get_fact
        from ...perfbench import known_facts

        # The bench's 10 facts (held out from training), with their paraphrases from the catalog.
        bench = [e for f in known_facts(lm, 10) for e in mend_data.examples_of(get_fact(f.id))]
        scores = (Validation(lm, tr.net.targets, bench, tr.answer_only)(tr.transform(), tr.replay) if bench
                  else {"n": 0})
        return {
            "method": self.name, "model": lm.name, "fingerprint": lm.fingerprint, "complete": True,
            "train_version": self.train_version, "settings": hparams_to_dict(thp), "steps": tr.step,
            "seconds": round(tr.seconds, 1), "cpu_seconds": round(tr.cpu_seconds, 1), "started": started,
            "finished": store.now(),
            "device": str(lm.device), "threads": torch.get_num_threads(),
            "targets": [dataclasses.asdict(t) for t in tr.net.targets],
            "data": {"train_edits": len(data.train), "val_edits": len(data.val), "locality_pairs": len(data.loc),
                     "by_source": data.counts, "held_out": data.held_out},
            "replayed_blocks": tr.replay, "curve": tr.curve,
            "bench_facts": {"ids": [b.id for b in bench], **scores},
        }

    def network(self, lm):
        """``(the trained network for lm, its report)``; an :class:`InputError` names the command if none."""
        report = self.trained(lm)
        if report is None:
            raise InputError(f"{self.info.title} has no trained hypernetwork for {lm.name}; train one with "
                             f"`{self.train_command(lm)}`")
        hit = self._loaded.get(lm.model)
        if hit is not None and hit[0] == report["name"]:
            return hit[1], report
        tensors, meta = store.load(report["name"], lm.device, self.name)
        net = load_net(self.trainer, tensors, meta, lm)
        params = dict(lm.model.named_parameters())
        missing = [t.param for t in net.targets if t.param not in params]
        if missing:
            raise InputError(f"the trained hypernetwork edits {missing[0]}, which this model does not have")
        self._loaded[lm.model] = (report["name"], net)
        return net, report

    # ---- the method -----------------------------------------------------------------------------
    def compute(self, lm, requests, hp, progress: Progress | None = None, *, speed=None) -> Edit:
        """The edit's gradient factors read on the model as it is (inside the caller's scope, so sequential
        edits see the earlier ones), mapped through the trained network to one update per edited weight (of
        one request, or of all of them for a ``batched`` method). No optional fast path: ``speed`` is accepted
        (every method takes it) and not used."""
        t0 = time.perf_counter()
        validate_hparams(hp)
        reqs = validate_requests(lm, requests, one_at_a_time=None if self.batched else self.info.title)
        net, report = self.network(lm)
        examples = [mend_data.Example(str(i), r.text, r.target_new, "", (), ()) for i, r in enumerate(reqs)]
        with lm.lock:
            deltas, nll = batch_deltas(lm, self.trainer.edit_transform(net, lm), examples, hp.lr_scale,
                                       net.targets, self.trainer.answer_only)
        seconds = time.perf_counter() - t0
        first = reqs[0]
        more = f" (+{len(reqs) - 1} more)" if len(reqs) > 1 else ""
        patch = Patch(deltas, label=f"{self.info.title} {first.subject} -> {first.target_new}{more}")
        diagnostics = {"edit_loss_before": float(nll.float().mean()), "artefact": report["name"],
                       "trained_steps": report.get("steps"), "layers": sorted({t.layer for t in net.targets}),
                       "n_weights": len(net.targets), "update_norm": update_norm(deltas)}
        log.info("%s %r -> %r%s: |dW|=%.3g, %.2fs", self.info.title, first.subject, first.target_new, more,
                 diagnostics["update_norm"], seconds)
        return Edit(self.name, tuple(reqs), patch, seconds, diagnostics)
