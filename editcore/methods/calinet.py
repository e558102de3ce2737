"""CaliNET (Dong et al. 2022, "Calibrating Factual Knowledge in Pretrained Language Models"): calibration
memory slots beside the FFNs of chosen layers, trained on the facts with the model frozen.

A calibration FFN has the host FFN's shape with ``slots`` hidden units instead of thousands: keys ``K`` (and,
for a gated MLP, gate keys ``G``) and values ``V``; on the MLP's input ``x`` it adds
``act(x K) V`` (gated: ``(act(x G) * (x K)) V``, with the host's activation) to the MLP's output, so the
original neurons are untouched and the slots add their "calibration" on top. The paper puts 64 slots in the
top decoder layer of T5 for 100 facts and trains them on the facts' ParaRel paraphrases with the LM
objective; here the facts are trained in their own prompt and after sampled context prefixes (the
benchmark's paraphrases are held out for evaluation), and the default is the last block.

Several facts are calibrated at once (``batched``). Sequential edits re-train the slots: the new patch
starts from the slots of the newest CaliNET patch in the scope (same layers and size) and trains them on the
new facts together with up to ``rehearse`` of the most recent earlier ones, so one set of slots holds every
fact calibrated so far; it carries the whole set, so the earlier patch steps aside while it is installed
(and acts again if it is rolled back).

Adaptation: the value matrix starts at zero (PyTorch's default initialisation in the paper's code), so
untrained slots change nothing; Adam for at most ``steps`` steps until every target token is top-1 instead
of Adafactor for thousands of steps; earlier facts are rehearsed up to ``rehearse`` at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.activations import ACT2FN

from ..errors import InputError
from ..scope import Hook, Patch
from ..types import Request
from .adaptor import AdaptorHook, checked, edit_rows, fit, frozen, newest, replay_for, training
from .base import Edit, MethodInfo, Progress, hparam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaliNetHparams:
    layers: tuple = hparam((-1,), lo=-1, hi=4096, help="blocks whose MLP gets calibration slots; -1: the last")
    slots: int = hparam(64, lo=1, hi=4096, help="calibration memory slots per layer (the paper's 64)")
    steps: int = hparam(40, lo=1, hi=2000, help="maximum optimiser steps")
    lr: float = hparam(1e-2, lo=1e-6, hi=1.0, help="Adam learning rate (the paper's 1e-2, with Adafactor)")
    context_prefixes: int = hparam(2, lo=0, hi=20, help="sampled context prefixes each fact is trained in")
    context_tokens: int = hparam(5, lo=1, hi=50, help="tokens per context prefix")
    rehearse: int = hparam(8, lo=0, hi=1000, help="earlier facts trained again with each sequential edit")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed of the keys' initialisation")


@dataclass(frozen=True)
class Calibration:
    """What one CaliNET patch holds: the facts its slots were trained on, and where the slots are."""

    facts: tuple[Request, ...]
    layers: tuple[int, ...]
    slots: int


class CaliSlots(AdaptorHook):
    """Calibration slots on one MLP: adds ``act(x keys) values`` (gated: ``act(x gate) * (x keys)``)."""

    family = "calinet"
    supersedes = True

    def __init__(self, state: Calibration, keys: torch.Tensor, gate: torch.Tensor | None, values: torch.Tensor,
                 act):
        self.state, self.keys, self.gate, self.values, self.act = state, keys, gate, values, act

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(t for t in (self.keys, self.gate, self.values) if t is not None)

    def rewrite(self, x, h):
        x = x.float()
        z = x @ self.keys
        a = self.act(x @ self.gate) * z if self.gate is not None else self.act(z)
        return h + (a @ self.values).to(h.dtype)


def mlp_activation(lm):
    """The host MLP's activation function, from the model's config (the slots mirror the host FFN)."""
    cfg = lm.model.config
    for key in ("hidden_activation", "hidden_act", "activation_function"):
        name = getattr(cfg, key, None)
        if isinstance(name, str) and name in ACT2FN:
            return ACT2FN[name]
    raise InputError(f"cannot tell the MLP activation of {lm.adapter.family}; CaliNET needs it")


class CaliNet:
    name = "calinet"
    version = "1"
    batched = True
    Hparams = CaliNetHparams
    info = MethodInfo(
        title="CaliNET", category="memory-based",
        reference="Dong et al. 2022, \"Calibrating Factual Knowledge in Pretrained Language Models\" "
                  "(Findings of EMNLP)",
        summary="Adds a small FFN of calibration memory slots beside the MLP of chosen layers (the last by "
                "default) and trains only those slots on the facts; the original neurons are untouched. "
                "The slots act on every input, so side effects are what to look for. Sequential edits "
                "re-train one set of slots on the new fact and recent earlier ones.",
        changes_weights=False, sequential=True,
        adaptation="Slot values start at zero; Adam for at most `steps` steps until the targets are top-1 "
                   "(the paper: Adafactor, thousands of steps); sampled context prefixes stand in for "
                   "ParaRel paraphrases; sequential edits rehearse at most `rehearse` earlier facts.")

    def compute(self, lm, requests: Sequence[Request], hp: CaliNetHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        requests = checked(self, lm, requests, hp, one_at_a_time=False)
        ad = lm.adapter
        layers = tuple(sorted({ad.check_layer(ad.n_layers - 1 if x == -1 else int(x)) for x in hp.layers}))
        if not layers:
            raise InputError("CaliNET needs at least one layer")
        mlps = {layer: ad.module("mlp", layer) for layer in layers}
        act = mlp_activation(lm)
        warnings: list[str] = []
        with lm.lock:
            found = {layer: newest(mlps[layer], CaliSlots.family) for layer in layers}
            states = {id(f.state): f.state for f in found.values() if f is not None}
            earlier = found if len(states) == 1 and None not in found.values() else None
            state0 = next(iter(states.values())) if earlier else None
            if states and (earlier is None or state0.layers != layers or state0.slots != hp.slots):
                warnings.append("an earlier CaliNET edit with other layers or slots stays as it is; these slots "
                                "start afresh")
                earlier = state0 = None
            old_facts = state0.facts if state0 is not None else ()
            edited = {(r.prompt, r.subject) for r in requests}
            kept = tuple(r for r in old_facts if (r.prompt, r.subject) not in edited)
            rehearsed = kept[len(kept) - min(hp.rehearse, len(kept)):] if hp.rehearse else ()
            state = Calibration(kept + requests, layers, hp.slots)
            rows = edit_rows(lm, requests + rehearsed, hp.context_prefixes, hp.context_tokens)
            replay = replay_for(lm, rows, layers[0], speed)
            slots = {layer: self._initial(lm, state, layer, earlier and earlier[layer], act, hp) for layer in layers}
            params = [t for s in slots.values() for t in s.tensors()]
            with training([(mlps[layer], slots[layer]) for layer in layers]):
                result = fit(lm, rows, replay, params, steps=hp.steps, lr=hp.lr, progress=progress,
                             label="CaliNET: ")
            done = {layer: CaliSlots(state, *(frozen(t) if t is not None else None
                                              for t in (s.keys, s.gate, s.values)), act)
                    for layer, s in slots.items()}
        seconds = time.perf_counter() - t0
        diag = {**result.diagnostics(), "layers": list(layers), "slots": hp.slots,
                "facts_calibrated": len(state.facts), "facts_rehearsed": len(rehearsed),
                "continued_from_earlier": state0 is not None, "rows": len(rows.requests),
                "replayed_upper_blocks": replay.use_replay,
                "value_norm": float(sum(float(s.values.norm()) ** 2 for s in done.values()) ** 0.5)}
        if warnings:
            diag["warnings"] = warnings
        log.info("calinet: layers %s, %d facts, %d steps (%s), %.2fs", layers, len(state.facts), result.steps,
                 result.stop_reason, seconds)
        patch = Patch(hooks=tuple(Hook(ad.module_name("mlp", layer), done[layer]) for layer in layers),
                      label=f"calinet@{','.join(map(str, layers))}")
        return Edit(self.name, requests, patch, seconds, diag)

    @staticmethod
    def _initial(lm, state: Calibration, layer: int, earlier: CaliSlots | None, act,
                 hp: CaliNetHparams) -> CaliSlots:
        """Trainable slots: a copy of the newest earlier patch's at this layer, else keys drawn like a fresh
        Linear layer's (uniform in +-1/sqrt(d)) and zero values."""
        if earlier is not None:
            tensors = [t.detach().clone().requires_grad_(True) if t is not None else None
                       for t in (earlier.keys, earlier.gate, earlier.values)]
            return CaliSlots(state, *tensors, act)
        d, dev = lm.adapter.d_model, lm.device
        gen = torch.Generator().manual_seed(hp.seed + layer)
        bound = 1.0 / math.sqrt(d)

        def keys():
            return ((torch.rand(d, hp.slots, generator=gen) * 2 - 1) * bound).to(dev).requires_grad_(True)

        gate = keys() if lm.adapter.gated else None
        return CaliSlots(state, keys(), gate, torch.zeros(hp.slots, d, device=dev, requires_grad=True), act)


METHOD = CaliNet()
