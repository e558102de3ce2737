"""T-Patcher (Huang et al. 2023, "Transformer-Patcher: One Mistake Worth One Neuron"): one trained neuron
per edit, added beside the MLP of the last transformer block.

A patch neuron is a key ``k``, a bias ``b`` and a value ``v``: on an input ``x`` of the MLP (the normed
hidden state its projections read) it adds ``act(x . k + b) * v`` to the MLP's output. "Last" means the last
block of every family (``lm.adapter.module_name("mlp", n_layers - 1)``); on Gemma the neuron's output, like
the MLP's, still passes the block's post-feed-forward norm. The neuron is trained with the model frozen on

* the edit loss: the target's teacher-forced NLL after the edit prompt;
* the activation loss: ``exp(margin - a)`` over the top-``act_topk`` of the pre-activations ``a`` at the
  positions that predict a target token (the neuron must fire there);
* the memory loss: over the memory's pre-activations ``m``, ``exp(m - a + gap)`` (the edit fires ``gap``
  above every memory input) and ``exp(m - memory_margin)`` (every memory input stays below a negative
  margin), each averaged over its top-``memory_topk`` terms.

The memory is what the neuron must not fire on: in the paper the representations of the training data; here
those of generic text sampled from the model (:func:`~editcore.methods.adaptor.negative_batch`), of the edit
prompt's own other positions, and of every earlier edit patched at this layer (the paper adds each edit to
the memory, so later neurons stay silent on earlier edits). Initialisation as in the paper: ``k`` is the
edit's mean query divided by its squared norm (pre-activation 1 on the edit), ``b = 0``, ``v`` standard
normal times a trainable amplification starting at ``amplify``. Adam with weight decay; training stops once
every target token is top-1, the neuron fires on every edit position and on no memory input.

Patches accumulate: each edit's patch is one more hook on the same MLP, trained with the earlier neurons
active, and rolling an edit back removes its neuron only.

Adaptation: the neuron's activation is ReLU, so a neuron that is not activated adds exactly nothing (the
paper adds it to BART's FFN, whose GELU leaves a small negative output below zero); the memory is sampled
text, not the task's training set; training stops at the first step where the edit is fixed and the memory
is silent instead of at a validation-based early stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import hooks
from ..scope import Hook, Patch
from ..types import Request
from .adaptor import (AdaptorHook, checked, edit_rows, fit, frozen, installed, negatives_at, replay_for,
                      resolve_layer, training, where_rows)
from .base import Edit, MethodInfo, Progress, hparam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TPatcherHparams:
    layer: int = hparam(-1, lo=-1, hi=4096, help="block whose MLP gets the neuron; -1: the last (the paper's)")
    steps: int = hparam(60, lo=1, hi=2000, help="maximum optimiser steps")
    lr: float = hparam(1e-2, lo=1e-6, hi=1.0, help="Adam learning rate (the paper's 1e-2)")
    weight_decay: float = hparam(0.01, lo=0.0, hi=1.0, help="Adam weight decay (the paper's 0.01)")
    amplify: float = hparam(10.0, lo=0.0, hi=1000.0, help="initial amplification of the value vector")
    act_margin: float = hparam(0.0, lo=-100.0, hi=100.0, help="the edit's pre-activation should exceed this")
    act_topk: int = hparam(5, lo=1, hi=10000, help="activation loss over the top-k edit positions")
    act_coef: float = hparam(1.0, lo=0.0, hi=1000.0, help="weight of the activation loss")
    memory_margin: float = hparam(-3.0, lo=-100.0, hi=0.0, help="memory pre-activations should stay below this")
    memory_gap: float = hparam(3.0, lo=0.0, hi=100.0, help="the edit fires this far above every memory input")
    memory_topk: int = hparam(1000, lo=1, hi=100000, help="memory loss over the top-k terms")
    memory_coef: float = hparam(5.0, lo=0.0, hi=1000.0, help="weight of the memory loss")
    negatives: int = hparam(24, lo=0, hi=512, help="sampled texts in the memory")
    negative_tokens: int = hparam(12, lo=1, hi=64, help="length of each sampled text")
    context_prefixes: int = hparam(0, lo=0, hi=20, help="sampled context prefixes the edit is also trained in")
    context_tokens: int = hparam(5, lo=1, hi=50, help="tokens per context prefix")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed of the value vector's initialisation")


class PatchNeuron(AdaptorHook):
    """One patch neuron on an MLP: adds ``relu(x . key + bias) * value * scale`` where it fires."""

    family = "t_patcher"

    def __init__(self, key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor, scale: torch.Tensor,
                 queries: torch.Tensor):
        self.key, self.bias, self.value, self.scale = key, bias, value, scale
        self.queries = queries  # the edit's queries: the memory of every later neuron at this layer
        self.record = False
        self.seen: torch.Tensor | None = None  # pre-activations of the last call, while recording

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() @ self.key + self.bias

    def rewrite(self, x, h):
        pre = self.preactivation(x)
        if self.record:
            self.seen = pre
        act = torch.relu(pre)
        on = act > 0
        if not bool(on.any()):
            return None
        add = act[..., None] * (self.value * self.scale)
        return where_rows(on, h + add.to(h.dtype), h)


def _topk_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    x = x.reshape(-1)
    return torch.topk(x, min(k, x.numel()))[0].mean() if x.numel() else x.new_zeros(())


class TPatcher:
    name = "t_patcher"
    version = "1"
    batched = False
    Hparams = TPatcherHparams
    info = MethodInfo(
        title="T-Patcher", category="memory-based",
        reference="Huang et al. 2023, \"Transformer-Patcher: One Mistake Worth One Neuron\" (ICLR)",
        summary="Adds one trained neuron per edit beside the MLP of the last block. Its key is trained to fire "
                "on the edit prompt and stay silent on a memory of other inputs (and on earlier edits), its "
                "value to produce the new target. The weights are untouched; neurons accumulate over "
                "sequential edits.",
        changes_weights=False, sequential=True,
        adaptation="The neuron uses ReLU, so it adds exactly nothing where it does not fire (the paper's BART "
                   "FFN uses GELU); its memory is text sampled from the model plus earlier edits and the edit "
                   "prompt's other positions, not the task's training set; training stops once the edit is "
                   "fixed and no memory input fires, at most `steps` steps (CPU budget).")

    def compute(self, lm, requests: Sequence[Request], hp: TPatcherHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        requests = checked(self, lm, requests, hp, one_at_a_time=True)
        layer = resolve_layer(lm, hp.layer, lm.adapter.n_layers - 1)
        name = lm.adapter.module_name("mlp", layer)
        mlp = lm.adapter.module("mlp", layer)
        with lm.lock:
            rows = edit_rows(lm, requests, hp.context_prefixes, hp.context_tokens)
            earlier = installed(mlp, PatchNeuron.family)
            with hooks.capture(mlp, "in") as got:
                replay = replay_for(lm, rows, layer, speed)
            x = got["x"].detach().float()
            queries = x[rows.at]
            parts = [x[rows.real & ~rows.at]] + [n.queries.to(x.device) for n in earlier]
            if hp.negatives:
                parts.append(negatives_at(lm, mlp, hp.negatives, hp.negative_tokens))
            memory = torch.cat(parts)
            neuron = self._initial(queries, hp)
            params = [neuron.key, neuron.bias, neuron.value, neuron.scale]

            def extra():
                act = neuron.seen[rows.at]
                his = neuron.preactivation(memory)
                gap = his[:, None] - act[None, :] + hp.memory_gap
                mem = _topk_mean(gap.exp(), hp.memory_topk) + _topk_mean((his - hp.memory_margin).exp(),
                                                                          hp.memory_topk)
                return {"activation": hp.act_coef * _topk_mean((hp.act_margin - act).exp(), hp.act_topk),
                        "memory": hp.memory_coef * mem}

            def silent_on_memory():
                with torch.no_grad():
                    return bool((neuron.seen[rows.at] > 0).all()) and bool(
                        (neuron.preactivation(memory) <= 0).all())

            neuron.record = True
            with training([(mlp, neuron)]):
                result = fit(lm, rows, replay, params, steps=hp.steps, lr=hp.lr, weight_decay=hp.weight_decay,
                             extra=extra, satisfied=silent_on_memory, progress=progress, label="T-Patcher: ")
            with torch.no_grad():
                act = neuron.seen[rows.at]
                his = neuron.preactivation(memory)
                done = PatchNeuron(frozen(neuron.key), frozen(neuron.bias), frozen(neuron.value * neuron.scale),
                                   torch.ones((), device=x.device), frozen(queries))
        seconds = time.perf_counter() - t0
        diag = {**result.diagnostics(), "layer": layer, "module": name, "neurons_at_layer": len(earlier) + 1,
                "memory_size": int(memory.shape[0]), "edit_activation_min": float(act.min()),
                "memory_preactivation_max": float(his.max()), "memory_fired": int((his > 0).sum()),
                "replayed_upper_blocks": replay.use_replay}
        if diag["memory_fired"]:
            diag["warnings"] = [f"the patch neuron fires on {diag['memory_fired']} of {diag['memory_size']} "
                                "memory inputs it should stay silent on"]
        log.info("t_patcher: layer %d, %d steps (%s), neuron %d at this layer, %.2fs", layer, result.steps,
                 result.stop_reason, len(earlier) + 1, seconds)
        patch = Patch(hooks=(Hook(name, done),), label=f"t_patcher@{layer}")
        return Edit(self.name, requests, patch, seconds, diag)

    @staticmethod
    def _initial(queries: torch.Tensor, hp: TPatcherHparams) -> PatchNeuron:
        q = queries.mean(0)
        gen = torch.Generator().manual_seed(hp.seed)
        value = torch.randn(q.shape[0], generator=gen).to(q.device)
        key = (q / q.pow(2).sum().clamp_min(1e-12)).clone().requires_grad_(True)
        return PatchNeuron(key, torch.zeros((), device=q.device, requires_grad=True), value.requires_grad_(True),
                           torch.full_like(q, hp.amplify).requires_grad_(True), queries)


METHOD = TPatcher()
