"""WISE (Wang et al. 2024, "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing of Large Language
Models"): edits go into a side memory, a copy of one FFN's value matrix, and a router decides per input
whether the main memory (the model's own matrix) or the side memory answers.

* **Side memory.** ``W'`` starts as a copy of the value matrix ``W`` (the MLP's output projection) of a
  mid-to-late layer and only ``W'`` is edited. The patch stores ``W' - W`` and adds ``a (W' - W)^T`` to the
  projection's output ``a W^T`` where the side memory is chosen, which is what ``a W'^T`` gives.
* **Routing.** The activation score of an input is ``||a (W' - W)^T||``; it routes to the side memory when
  the score exceeds ``eps = act_ratio * (the smallest score of any edit so far)``. Training adds the margin
  losses ``[s_i - alpha]+ + [beta - s_e]+ + [gamma - (s_e - s_i)]+`` (edit scores ``s_e`` above ``beta``,
  irrelevant scores ``s_i`` below ``alpha``, apart by ``gamma``) to the target's NLL. The edit positions are
  the subject's tokens (``route_on``; the paper's code does so for facts with a subject) and the irrelevant
  ones the edit prompt's other positions and text sampled from the model. SGD on the shard's entries, each
  kept within ``norm_constraint``; it stops once the target is top-1 and no irrelevant position passes the
  threshold the edit leaves, or after ``steps``.
* **Knowledge sharding and merging.** Edits go to a shard, a random subspace of ``W'`` (a mask keeping a
  ``mask_ratio`` share of the entries; only they are trained) for ``shard_edits`` edits; then the next
  shard begins with a fresh mask. After ``n_shards`` shards their deltas are merged with TIES (trim to the
  top ``density`` by magnitude, elect each entry's sign by the sum, average the agreeing values) into the one
  side memory, a previous merged memory taking part with weight 0.6 against the new shards' 0.4 (the
  paper's code). Between merges, the merged memory and every shard not yet merged are candidates; a
  position goes to the candidate with the highest score, if that score exceeds ``eps``.

Every patch carries the whole side memory after its edit (the shards' entries as values at their mask's
positions, shared with the patches before), so the newest WISE patch in a scope hides the earlier ones and
rolling it back brings back the earlier side memory exactly.

Adaptation: the router decides per token position (the score of that position against ``eps``), where the
paper and its code average the scores over the query's tokens and route the whole query; a per-position
rule gives the same output whether a sequence is read at once, in chunks or token by token with a cache.
No weight decay on ``W'`` (the code's SGD has 1e-5), ``steps`` at most, and fewer context prefixes than the
code's ten (CPU budget).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .. import hooks
from ..errors import InputError
from ..scope import Hook, Patch
from ..types import Request
from .adaptor import (AdaptorHook, checked, edit_rows, fit, negatives_at, newest, replay_for, resolve_layer,
                      subject_positions, training, where_rows)
from .base import Edit, MethodInfo, Progress, hparam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WiseHparams:
    layer: int = hparam(-1, lo=-1, hi=4096, help="layer whose MLP output projection gets the side memory; "
                                                  "-1: 85% of the way up")
    steps: int = hparam(30, lo=1, hi=2000, help="maximum optimiser steps (the paper's code: 30-40)")
    lr: float = hparam(1.0, lo=1e-6, hi=100.0, help="SGD learning rate (the paper's code: 0.9-1.0)")
    norm_constraint: float = hparam(1.0, lo=1e-6, hi=100.0, help="bound on each entry of W' - W")
    alpha: float = hparam(5.0, lo=0.0, hi=1e4, help="irrelevant inputs' scores should stay below this")
    beta: float = hparam(20.0, lo=0.0, hi=1e4, help="the edit's scores should exceed this")
    gamma: float = hparam(10.0, lo=0.0, hi=1e4, help="margin between edit and irrelevant scores")
    act_ratio: float = hparam(0.8, lo=0.0, hi=1.0, help="eps = act_ratio * the smallest edit score")
    mask_ratio: float = hparam(0.2, lo=1e-4, hi=1.0, help="share of W' entries a shard may change")
    shard_edits: int = hparam(10, lo=1, hi=100000, help="edits per shard before the next shard starts")
    n_shards: int = hparam(2, lo=1, hi=64, help="shards merged into the side memory at a time")
    density: float = hparam(0.53, lo=0.01, hi=1.0, help="TIES: share of each delta's entries kept")
    negatives: int = hparam(16, lo=0, hi=512, help="sampled texts used as irrelevant inputs")
    negative_tokens: int = hparam(12, lo=1, hi=64, help="length of each sampled text")
    route_on: str = hparam("subject", choices=("subject", "answer", "both"),
                           help="edit positions the side memory is trained to take: the subject's tokens (the "
                                "paper's code for facts), the positions predicting the target, or both")
    context_prefixes: int = hparam(2, lo=0, hi=20, help="sampled context prefixes the edit is trained in")
    context_tokens: int = hparam(5, lo=1, hi=50, help="tokens per context prefix")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed of the shards' masks")


@dataclass(frozen=True)
class SideMemory:
    """The side memory after some edits; immutable, shared between consecutive patches where unchanged."""

    shape: tuple[int, int]  # [d_model, d_mlp]: W' - W is kept in this orientation whatever the layout
    merged: torch.Tensor | None = None  # the merged shards' W' - W
    pending: tuple[torch.Tensor, ...] = ()  # finished shards not merged yet
    mask: torch.Tensor | None = None  # flat indices of the current shard's subspace
    values: torch.Tensor | None = None  # the current shard's W' - W at those indices
    shard: int = 0  # number of the current shard
    in_shard: int = 0  # edits in the current shard
    edits: int = 0
    merges: int = 0
    min_score: float = float("inf")  # the smallest edit score so far

    def dense(self, values: torch.Tensor | None = None) -> torch.Tensor | None:
        """The current shard's ``W' - W`` (or of ``values`` at its indices)."""
        values = self.values if values is None else values
        if values is None:
            return None
        flat = torch.zeros(self.shape[0] * self.shape[1], device=values.device, dtype=values.dtype)
        return flat.index_put((self.mask,), values).view(self.shape)


def ties_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES merging of task vectors: each trimmed to its top ``density`` share by magnitude, signs elected by
    the weighted sum, agreeing entries averaged with their weights."""
    trimmed = []
    for d in deltas:
        flat = d.reshape(-1)
        k = int(density * flat.numel())
        if density < 1 and 0 < k < flat.numel():
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[torch.topk(flat.abs(), k).indices] = True
            flat = torch.where(keep, flat, torch.zeros_like(flat))
        trimmed.append(flat)
    stack = torch.stack(trimmed)
    w = torch.tensor(list(weights), dtype=stack.dtype, device=stack.device)[:, None]
    weighted = stack * w
    sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(stack.dtype)
    agree = stack.sign() == sign
    divisor = (w * agree).sum(0)
    divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return ((weighted * agree).sum(0) / divisor).view(deltas[0].shape)


class SideRouter(AdaptorHook):
    """The side memory's router on the MLP output projection (its input ``a``, its output ``a W^T``)."""

    family = "wise"
    supersedes = True

    def __init__(self, memory: SideMemory, eps: float):
        self.memory, self.eps = memory, eps
        self._current: torch.Tensor | None = None  # the current shard densified, while this hook acts

    def candidates(self) -> list[torch.Tensor]:
        if self._current is None and self.memory.values is not None:
            self._current = self.memory.dense()
        out = [m for m in (self.memory.merged, *self.memory.pending, self._current) if m is not None]
        return out

    def stepped_aside(self) -> None:
        self._current = None

    def rewrite(self, a, h):
        a = a.float()
        best_s = best = None
        for delta in self.candidates():
            s = a @ delta.T
            score = s.norm(dim=-1)
            if best is None:
                best_s, best = s, score
            else:
                better = score > best
                best_s, best = where_rows(better, s, best_s), torch.where(better, score, best)
        if best is None:
            return None
        route = best > self.eps
        if not bool(route.any()):
            return None
        return where_rows(route, h + best_s.to(h.dtype), h)


class ShardTraining(AdaptorHook):
    """The current shard being trained: the side memory at the edit positions, its scores recorded."""

    family = "wise"
    supersedes = True

    def __init__(self, memory: SideMemory, values: torch.Tensor, at: torch.Tensor):
        self.memory, self.values, self.at = memory, values, at
        self.scores: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None

    def rewrite(self, a, h):
        self.delta = self.memory.dense(self.values)
        s = a.float() @ self.delta.T
        self.scores = s.norm(dim=-1)
        return where_rows(self.at, h + s.to(h.dtype), h)


def _hinge_mean(x: torch.Tensor) -> torch.Tensor:
    pos = x[x > 0]
    return pos.mean() if pos.numel() else x.new_zeros(())


class Wise:
    name = "wise"
    version = "1"
    batched = False
    Hparams = WiseHparams
    info = MethodInfo(
        title="WISE", category="memory-based",
        reference="Wang et al. 2024, \"WISE: Rethinking the Knowledge Memory for Lifelong Model Editing of "
                  "Large Language Models\" (NeurIPS)",
        summary="Edits a side copy of one MLP's value matrix instead of the matrix itself; an activation-based "
                "router sends each input to the side memory only where the edit's activation pattern shows, "
                "else to the untouched main memory. Edits fill random subspaces (shards) that are merged "
                "with TIES, for lifelong editing.",
        changes_weights=False, sequential=True,
        adaptation="Routing is decided per token position instead of per query (the same result whether a "
                   "text is read at once or token by token); irrelevant inputs are text sampled from the "
                   "model and the edit prompt's other positions; at most `steps` SGD steps and two context "
                   "prefixes (CPU budget).")

    def compute(self, lm, requests: Sequence[Request], hp: WiseHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        requests = checked(self, lm, requests, hp, one_at_a_time=True)
        ad = lm.adapter
        layer = resolve_layer(lm, hp.layer, max(0, min(ad.n_layers - 1, int(0.85 * ad.n_layers))))
        name = ad.module_name("mlp_out", layer)
        proj = ad.module("mlp_out", layer)
        with lm.lock:
            earlier = newest(proj, SideRouter.family)
            memory = earlier.memory if earlier is not None else SideMemory((ad.d_model, ad.d_mlp))
            if memory.shape != (ad.d_model, ad.d_mlp):
                raise InputError("an earlier WISE edit of this layer has another shape; roll it back first")
            memory = self._open_shard(memory, hp, lm.device)
            rows = edit_rows(lm, requests, hp.context_prefixes, hp.context_tokens)
            subject = subject_positions(lm, rows)
            inside = {"subject": subject, "answer": rows.at, "both": subject | rows.at}[hp.route_on]
            with hooks.capture(proj, "in") as got:
                replay = replay_for(lm, rows, layer, speed)
            off = got["x"].detach().float()[rows.real & ~inside]
            irrelevant = torch.cat([off, negatives_at(lm, proj, hp.negatives, hp.negative_tokens).view(-1, ad.d_mlp)])
            values = memory.values.clone().requires_grad_(True)
            shard = ShardTraining(memory, values, inside)

            def margins():
                s_e = shard.scores[inside]
                s_i = (irrelevant @ shard.delta.T).norm(dim=-1)
                return {"margin": _hinge_mean(s_i - hp.alpha) + _hinge_mean(hp.beta - s_e)
                        + _hinge_mean(s_i[:, None] - s_e[None, :] + hp.gamma)}

            def routed():  # every edit position would be routed to the side memory, no irrelevant one
                with torch.no_grad():
                    eps = hp.act_ratio * min(memory.min_score, float(shard.scores[inside].min()))
                    return bool(((irrelevant @ shard.delta.T).norm(dim=-1) <= eps).all())

            with training([(proj, shard)]):
                result = fit(lm, rows, replay, [values], steps=hp.steps, lr=hp.lr, optimiser="sgd",
                             extra=margins, satisfied=routed, after_step=lambda: values.clamp_(
                                 -hp.norm_constraint, hp.norm_constraint), progress=progress, label="WISE: ")
            with torch.no_grad():  # the last pass of the fit saw the final values
                edit_scores = shard.scores[inside]
                irr_scores = (irrelevant @ shard.delta.T).norm(dim=-1)
            memory, merged_now = self._close_edit(memory, values.detach().clone(), float(edit_scores.min()), hp)
            router = SideRouter(memory, hp.act_ratio * memory.min_score)
        seconds = time.perf_counter() - t0
        diag = {**result.diagnostics(), "layer": layer, "module": name, "edits_in_side_memory": memory.edits,
                "shard": memory.shard, "edits_in_shard": memory.in_shard, "pending_shards": len(memory.pending),
                "merges": memory.merges, "merged_now": merged_now, "eps": router.eps,
                "edit_score_min": float(edit_scores.min()), "irrelevant_score_max": float(irr_scores.max()),
                "irrelevant_routed": int((irr_scores > router.eps).sum()), "irrelevant_size": int(irr_scores.numel()),
                "replayed_upper_blocks": replay.use_replay}
        if diag["irrelevant_routed"]:
            diag["warnings"] = [f"{diag['irrelevant_routed']} of {diag['irrelevant_size']} irrelevant positions "
                                "score above the routing threshold (they would read the side memory)"]
        log.info("wise: layer %d, %d steps (%s), %d edits, eps %.3g, %.2fs", layer, result.steps,
                 result.stop_reason, memory.edits, router.eps, seconds)
        return Edit(self.name, requests, Patch(hooks=(Hook(name, router),), label=f"wise@{layer}"), seconds, diag)

    @staticmethod
    def _open_shard(memory: SideMemory, hp: WiseHparams, device) -> SideMemory:
        """The memory with a current shard to edit: the open one, or a new one with a fresh random mask."""
        if memory.values is not None:
            return memory
        n = memory.shape[0] * memory.shape[1]
        gen = torch.Generator().manual_seed(hp.seed * 1009 + memory.shard)
        mask = torch.nonzero(torch.rand(n, generator=gen) < hp.mask_ratio).view(-1).to(device)
        return replace(memory, mask=mask, values=torch.zeros(mask.numel(), device=device), in_shard=0)

    @staticmethod
    def _close_edit(memory: SideMemory, values: torch.Tensor, score: float, hp: WiseHparams):
        """The memory after this edit: the shard finished after ``shard_edits`` edits, and all finished shards
        merged once there are ``n_shards`` of them."""
        memory = replace(memory, values=values, in_shard=memory.in_shard + 1, edits=memory.edits + 1,
                         min_score=min(memory.min_score, score))
        if memory.in_shard < hp.shard_edits:
            return memory, False
        memory = replace(memory, pending=memory.pending + (memory.dense(),), mask=None, values=None,
                         shard=memory.shard + 1, in_shard=0)
        if len(memory.pending) < hp.n_shards:
            return memory, False
        shards = list(memory.pending)
        if memory.merged is None:
            merged = ties_merge(shards, [1.0 / len(shards)] * len(shards), hp.density)
        else:
            merged = ties_merge(shards + [memory.merged], [0.4 / len(shards)] * len(shards) + [0.6], hp.density)
        return replace(memory, merged=merged, pending=(), merges=memory.merges + 1), True


METHOD = Wise()
