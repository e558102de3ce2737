"""MELO (Yu et al. 2024, "MELO: Enhancing Model Editing with Neuron-Indexed Dynamic LoRA"): every edit trains
its own small LoRA block, and a vector index keyed on hidden states decides which block (if any) an input
uses.

* **Index.** Keys are the output of the MLP input projection of ``key_layer`` (the paper's "grace layer",
  e.g. GPT-2 XL's layer 35 ``c_fc``). The index holds clusters, each a centre, a radius and the edit label of
  its points; a point is a key and the block trained for it. Inserting an edit's keys follows the paper: a
  key farther than ``radius + init_radius`` from the nearest centre opens a cluster of radius
  ``init_radius``; a nearer key with the same label joins that cluster (its centre becomes the mean of its
  keys, its radius their largest distance to it, at least ``init_radius``); a nearer key with another label
  opens a cluster and the two radii are split at half the distance, the old cluster forgetting the points
  that fall outside.
* **Lookup.** A query's nearest centre (the newest of equally near ones); if it lies within that cluster's
  radius the block of the nearest point of the cluster is used, else no block: the input sees the base
  model exactly.
* **Dynamic LoRA.** Each edit's block is ``rank`` rows of LoRA factors ``A`` (random) and ``B`` (zero) on the
  MLP input projection (up projection of gated MLPs, ``c_fc`` of GPT-2) of each ``lora_layers`` block above
  the key layer, adding ``scale * x A B``; only the new block is trained (Adam, step decay), the earlier
  blocks and the model are frozen.

Every patch carries the index after its edit and the blocks it points to (tensors shared with earlier
patches), so the newest MELO patch in a scope hides the earlier ones; rolling it back restores the earlier
index exactly.

Adaptation: the index is consulted at every token position with that position's key, and the keys inserted
for an edit are those of the positions that predict the target's tokens; MELO looks up the last token once
per sequence and applies the block to the whole sequence. Per position, a sequence read at once, in chunks
or token by token gives the same output. Labels are compared as target token sequences (MELO compares sums
of label ids). ``scale`` stands for MELO's factor of the number of blocks on each factor.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..scope import Hook, Patch
from ..text import target_ids
from ..types import Request
from .adaptor import AdaptorHook, checked, edit_rows, fit, frozen, newest, replay_for, training
from .base import Edit, MethodInfo, Progress, hparam
from .common import stopped_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeloHparams:
    key_layer: int = hparam(-1, lo=-1, hi=4096, help="layer whose MLP input projection gives the index keys; "
                                                       "-1: about 73% of the way up (the paper's GPT-2 XL 35/48)")
    lora_layers: tuple = hparam((-1,), lo=-1, hi=4096, help="layers with LoRA blocks (above the key layer); "
                                                            "-1: the two above it")
    rank: int = hparam(2, lo=1, hi=256, help="LoRA rank of each edit's block (the paper's 2)")
    scale: float = hparam(16.0, lo=1e-3, hi=1e4, help="factor on each block's output x A B")
    lr: float = hparam(1e-2, lo=1e-6, hi=1.0, help="Adam learning rate")
    steps: int = hparam(50, lo=1, hi=2000, help="maximum optimiser steps (the paper's 50)")
    lr_step: int = hparam(20, lo=0, hi=2000, help="halve the rate every this many steps (the paper's 20)")
    init_radius: float = hparam(10.0, lo=0.0, hi=1e6, help="radius of a new cluster, in key units")
    context_prefixes: int = hparam(0, lo=0, hi=20, help="sampled context prefixes the edit is also trained in")
    context_tokens: int = hparam(5, lo=1, hi=50, help="tokens per context prefix")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed of the A factors")


@dataclass(frozen=True)
class Block:
    """One edit's LoRA factors ``{layer: (A [d_in, rank], B [rank, d_out])}`` and the factor on ``x A B``."""

    factors: dict
    scale: float

    def frozen(self) -> "Block":
        return Block({layer: (frozen(a), frozen(b)) for layer, (a, b) in self.factors.items()}, self.scale)


@dataclass(frozen=True)
class Cluster:
    center: torch.Tensor  # [dk]
    radius: float
    label: tuple[int, ...]
    keys: torch.Tensor  # [p, dk]
    blocks: tuple[int, ...]  # the block of each key; -1: none (a cluster left with no key of its own)


class MeloIndex:
    """The index and blocks after some edits; never changed once built (a new edit builds a new one)."""

    def __init__(self, clusters: tuple[Cluster, ...], blocks: tuple[Block, ...], conflicts: int = 0,
                 forgotten: int = 0):
        self.clusters, self.blocks = clusters, blocks
        self.conflicts, self.forgotten = conflicts, forgotten
        self.routes: tuple[tuple, torch.Tensor] | None = None  # (shape, block per position) of the last pass
        if clusters:
            self.centers = torch.stack([c.center for c in clusters])
            self.radii = torch.tensor([c.radius for c in clusters], device=self.centers.device)
            self.keys = torch.cat([c.keys for c in clusters])
            dev = self.centers.device
            self.key_cluster = torch.tensor([i for i, c in enumerate(clusters) for _ in c.blocks], device=dev)
            self.key_block = torch.tensor([b for c in clusters for b in c.blocks], device=dev)

    def lookup(self, q: torch.Tensor) -> torch.Tensor:
        """The block of each query ``[n, dk]`` (``-1``: none)."""
        if not self.clusters:
            return torch.full(q.shape[:1], -1, dtype=torch.long, device=q.device)
        # The nearest centre; among equally near ones the newest (a re-edit of the same prompt splits a
        # cluster at distance 0, and the new edit is meant to win).
        best, c = _dist(q, self.centers).flip(1).min(1)
        c = len(self.clusters) - 1 - c
        dk = _dist(q, self.keys).masked_fill(self.key_cluster[None, :] != c[:, None], float("inf"))
        block = self.key_block.flip(0)[dk.flip(1).argmin(1)]  # the nearest key, the newest on a tie
        return torch.where(best <= self.radii[c], block, torch.full_like(block, -1))

    def inserted(self, queries: torch.Tensor, label: tuple[int, ...], block: int, init_radius: float) -> "MeloIndex":
        """This index with ``queries`` (one edit's keys, trained into ``block``) added as the paper does."""
        table = list(self.clusters)
        conflicts, forgotten = self.conflicts, self.forgotten
        if not table:
            table = [Cluster(q, init_radius, label, q[None], (block,)) for q in queries]
            return MeloIndex(tuple(table), self.blocks, conflicts, forgotten)
        d = _dist(queries, self.centers)
        near_d, near = d.min(1)
        for q, dist, i in zip(queries, near_d.tolist(), near.tolist()):
            row = table[i]
            if dist > row.radius + init_radius:
                table.append(Cluster(q, init_radius, label, q[None], (block,)))
            elif row.label == label:
                keys = torch.cat([row.keys, q[None]])
                center = keys.mean(0)
                radius = max(float(_dist(keys, center[None]).max()), init_radius)
                table[i] = Cluster(center, radius, label, keys, row.blocks + (block,))
            else:
                conflicts += 1
                table.append(Cluster(q, dist / 2 + 1e-5, label, q[None], (block,)))
                radius = dist / 2 - 1e-5
                inside = (_dist(row.keys, row.center[None])[:, 0] <= radius).tolist()
                kept = [j for j, ok in enumerate(inside) if ok]
                forgotten += len(inside) - len(kept)
                if kept:
                    table[i] = Cluster(row.center, radius, row.label, row.keys[kept],
                                       tuple(row.blocks[j] for j in kept))
                else:
                    table[i] = Cluster(row.center, radius, row.label, row.center[None], (-1,))
        return MeloIndex(tuple(table), self.blocks, conflicts, forgotten)

    def with_block(self, block: Block) -> "MeloIndex":
        return MeloIndex(self.clusters, self.blocks + (block,), self.conflicts, self.forgotten)

    def routes_for(self, shape) -> torch.Tensor | None:
        if self.routes is None or self.routes[0] != tuple(shape):
            return None
        return self.routes[1]


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[n, m]`` computed term by term (MELO's ``cdist`` mode, exact for near keys)."""
    return torch.cdist(a, b, p=2, compute_mode="donot_use_mm_for_euclid_dist")


class MeloKey(AdaptorHook):
    """Reads the keys at the key layer and looks up each position's block for the LoRA layers above."""

    family = "melo"
    supersedes = True

    def __init__(self, index: MeloIndex):
        self.index = index

    def stepped_aside(self) -> None:
        self.index.routes = None

    def rewrite(self, x, h):
        q = h.detach().float()
        self.index.routes = (tuple(q.shape[:-1]), self.index.lookup(q.reshape(-1, q.shape[-1])).view(q.shape[:-1]))
        return None


class MeloLoRA(AdaptorHook):
    """The LoRA blocks of one layer: adds ``scale * x A_b B_b`` at the positions routed to block ``b``."""

    family = "melo_lora"

    def __init__(self, index: MeloIndex, layer: int):
        self.index, self.layer = index, layer

    def rewrite(self, x, h):
        routes = self.index.routes_for(x.shape[:-1])
        if routes is None or not bool((routes >= 0).any()):
            return None
        out = h.clone()
        for b in torch.unique(routes[routes >= 0]).tolist():
            block = self.index.blocks[b]
            if self.layer not in block.factors:  # an edit made with other LoRA layers
                continue
            a, bb = block.factors[self.layer]
            sel = routes == b
            out[sel] = h[sel] + (block.scale * ((x[sel].float() @ a) @ bb)).to(h.dtype)
        return out


class Melo:
    name = "melo"
    version = "1"
    batched = False
    Hparams = MeloHparams
    info = MethodInfo(
        title="MELO", category="memory-based",
        reference="Yu et al. 2024, \"MELO: Enhancing Model Editing with Neuron-Indexed Dynamic LoRA\" (AAAI)",
        summary="Trains a small LoRA block per edit on the MLPs of a few layers and files the edit's hidden "
                "states in a vector index of clusters with radii. An input whose key falls inside a "
                "cluster uses that cluster's block; any other input sees the unedited model exactly.",
        changes_weights=False, sequential=True,
        adaptation="The index is consulted per token position (MELO: the last token, once per sequence), "
                   "with the keys of the positions that predict the target filed for each edit; labels are "
                   "compared as token sequences; Adam for at most `steps` steps.")

    def compute(self, lm, requests: Sequence[Request], hp: MeloHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        requests = checked(self, lm, requests, hp, one_at_a_time=True)
        ad = lm.adapter
        key_layer, lora_layers = self._layers(lm, hp)
        key_name = ad.module_name("mlp_in", key_layer)
        key_module = ad.module("mlp_in", key_layer)
        ups = {layer: ad.module("mlp_up", layer) for layer in lora_layers}
        with lm.lock:
            earlier = newest(key_module, MeloKey.family)
            old = earlier.index if earlier is not None else MeloIndex((), ())
            rows = edit_rows(lm, requests, hp.context_prefixes, hp.context_tokens)
            with torch.no_grad():
                keys = stopped_at(lm, key_module, rows.batch.ids, rows.batch.mask, "out").float()
            block_id = len(old.blocks)
            label = tuple(target_ids(lm.tokenizer, requests[0].target_new))
            block = self._new_block(lm, lora_layers, hp)
            index = old.inserted(keys[rows.at], label, block_id, hp.init_radius).with_block(block)
            pairs = [(key_module, MeloKey(index))] + [(ups[layer], MeloLoRA(index, layer)) for layer in lora_layers]
            with training(pairs):
                # The new key hook looks the rows up in the new index during the recorded pass; the new
                # block adds nothing yet (B = 0), so that pass is the reference the replay is checked with.
                replay = replay_for(lm, rows, lora_layers[0], speed)
                routed = index.routes_for(rows.batch.ids.shape)
                params = [t for layer in lora_layers for t in block.factors[layer]]
                result = fit(lm, rows, replay, params, steps=hp.steps, lr=hp.lr, lr_step=hp.lr_step,
                             lr_gamma=0.5, progress=progress, label="MELO: ")
            done = MeloIndex(index.clusters, old.blocks + (block.frozen(),), index.conflicts, index.forgotten)
        seconds = time.perf_counter() - t0
        at_routes = routed[rows.at] if routed is not None else torch.empty(0)
        diag = {**result.diagnostics(), "key_layer": key_layer, "lora_layers": list(lora_layers),
                "key_module": key_name, "clusters": len(done.clusters), "blocks": len(done.blocks),
                "conflicts": done.conflicts, "forgotten_keys": done.forgotten,
                "edit_positions_on_own_block": int((at_routes == block_id).sum()),
                "edit_positions": int(rows.at.sum()), "replayed_upper_blocks": replay.use_replay}
        if diag["edit_positions_on_own_block"] < diag["edit_positions"]:
            diag["warnings"] = ["some positions of the edit are routed to another edit's block (a conflict in "
                                "the index)"]
        log.info("melo: key layer %d, LoRA %s, %d clusters, %d steps (%s), %.2fs", key_layer, lora_layers,
                 len(done.clusters), result.steps, result.stop_reason, seconds)
        patch = Patch(hooks=(Hook(key_name, MeloKey(done)),) + tuple(
            Hook(ad.module_name("mlp_up", layer), MeloLoRA(done, layer)) for layer in lora_layers),
            label=f"melo@{key_layer}:{','.join(map(str, lora_layers))}")
        return Edit(self.name, requests, patch, seconds, diag)

    @staticmethod
    def _layers(lm, hp: MeloHparams) -> tuple[int, tuple[int, ...]]:
        ad = lm.adapter
        n = ad.n_layers
        if n < 2:
            raise InputError("MELO needs a model with at least two layers (a key layer below the LoRA layers)")
        key = ad.check_layer(min(int(0.73 * n), n - 2) if hp.key_layer == -1 else hp.key_layer)
        if tuple(hp.lora_layers) == (-1,):
            lora = tuple(range(key + 1, min(key + 3, n)))
        else:
            lora = tuple(sorted({ad.check_layer(int(x)) for x in hp.lora_layers}))
        if not lora or lora[0] <= key:
            raise InputError(f"MELO's LoRA layers must lie above its key layer {key} (got {list(lora)})")
        return key, lora

    @staticmethod
    def _new_block(lm, lora_layers, hp: MeloHparams) -> Block:
        """A fresh block: per LoRA layer ``A`` drawn like a Linear layer's weight (uniform in +-1/sqrt(d)) and
        ``B`` zero. The up projection maps the hidden size to the MLP's."""
        gen = torch.Generator().manual_seed(hp.seed)
        d_in, d_out = lm.adapter.d_model, lm.adapter.d_mlp
        bound = 1.0 / math.sqrt(d_in)
        factors = {layer: (((torch.rand(d_in, hp.rank, generator=gen) * 2 - 1) * bound).to(lm.device)
                           .requires_grad_(True),
                           torch.zeros(hp.rank, d_out, device=lm.device, requires_grad=True))
                   for layer in lora_layers}
        return Block(factors, hp.scale)


METHOD = Melo()
