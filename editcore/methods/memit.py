"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al. 2023).

A batch of facts is spread over the MLP output projections of a range of layers ``R = layers``:

1. For each request, ``z*`` = the hidden state (block output) of the *last* layer of ``R`` at the subject's
   last token plus a vector optimised so the new target follows (same objective as ROME's ``v*``:
   :func:`editcore.methods.values.optimise_values` with ``slot="block"``, all requests in one batch).
2. For each layer ``l`` in ``R``, ascending: keys ``K`` (``[d_mlp, n]``, subject's last token, averaged
   over the context prompts) and the residual ``R_l = (z* - z_current) / (layers left)`` with
   ``z_current`` the last layer's hidden state for the plain prompt, both computed *with the updates of
   the layers below already applied* (a nested ``lm.scope()``, so the model is restored afterwards; read
   by walking up from block inputs kept at the previous layer,
   :class:`~editcore.methods.batch_update.LayerWalk`);
   then ``dW_l = R_l K^T (lambda C_l + K K^T)^-1`` (a linear solve in float64), where ``C_l = E[k k^T]``
   and ``lambda = mom2_update_weight``.

``lambda`` weighs the preserved keys (``C_l`` is a normalised second moment, so ``lambda`` acts like a count
of preserved key samples) against the new ones. MEMIT used 15000 for GPT-J and 20000 for GPT-2 XL with
``C`` from 100k Wikipedia samples. Because ``C_l`` here is an average, ``lambda`` does not need rescaling
for a smaller token count; the count only changes how noisy ``C_l`` is (it must exceed ``d_mlp`` tokens
for ``C_l`` to be full rank). The bundled models' ``lambda`` was picked by the sweep in
``editcore/hparams/memit/``.

Post-norm MLPs (Gemma 2/3): each layer's residual is mapped through the norm first
(:func:`~editcore.methods.batch_update.through_post_norm`, an EditScope adaptation; the MEMIT paper covers
pre-norm GPT models only). The layer loop, the walk that reads each layer and the solvers are shared with
EMMET, PMET and AlphaEdit (:mod:`editcore.methods.batch_update`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..scope import Patch
from ..types import Request
from .base import Edit, MethodInfo, Progress, hparam, validate_hparams
from .batch_update import (LayerCovariances, batch_label, memit_update, spread_over_layers, update_norm,
                           value_diagnostics)
from .common import context_templates, validate_requests
from .speed import Speed
from .values import ValueHparams, already_answer_warnings, optimise_values

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MemitHparams(ValueHparams):
    # MEMIT's own defaults for the shared value settings (z* lives in the residual stream: a smaller clamp).
    v_num_grad_steps: int = hparam(25, lo=1, hi=1000, help="max Adam steps for the value (z*)")
    clamp_norm_factor: float = hparam(0.75, lo=0.0, hi=1e3, help="||delta|| <= factor * ||z_init||")
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023, help="layers R whose MLPs are edited; () = auto")
    mom2_update_weight: float = hparam(15000.0, lo=0.0, hi=1e9, help="lambda, the weight of C")


def auto_layers(lm) -> list[int]:
    """Default range for models without a sweep: five layers ending where ROME's automatic layer is
    (MEMIT's GPT-J range 3..8 of 28 layers ends at ROME's critical layer in the same way)."""
    from .rome import auto_layer

    top = auto_layer(lm)
    return list(range(max(0, top - 4), top + 1))


class Memit:
    name = "memit"
    version = "2"
    info = MethodInfo(
        title="MEMIT", category="locate-then-edit",
        reference="Meng et al. 2023, Mass-Editing Memory in a Transformer",
        summary="Spreads a batch of edits over several MLP layers: one target hidden state per fact at the top of "
                "the range, then a least-squares update per layer that also keeps ordinary keys' outputs.",
        adaptation="on models that normalise the MLP output (Gemma 2/3) each layer's target is mapped through "
                   "that norm first (EditScope's own step; the paper covers pre-norm models only)")
    Hparams = MemitHparams
    batched = True

    def compute(self, lm, requests: Sequence[Request], hp: MemitHparams, progress: Progress | None = None, *,
                speed: Speed | None = None) -> Edit:
        t0 = time.perf_counter()
        validate_hparams(hp)
        reqs = validate_requests(lm, requests)
        layers = range_layers(lm, hp.layers)
        with lm.lock:
            return self._compute(lm, reqs, layers, hp, progress, t0, speed or Speed.from_env())

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: MemitHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        templates = context_templates(lm, hp.context_prefixes, hp.context_tokens, hp.context_seed)
        st = LayerCovariances.load(lm, layers, hp, progress)
        z_layer = layers[-1]

        # All requests' z* in one batch (each its own delta; see optimise_values).
        results = optimise_values(lm, reqs, z_layer, templates, hp.value_settings(), slot="block", progress=progress,
                                  speed=speed)
        z_target = torch.stack([r.v for r in results], 1).double()  # [d_model, n]

        def residual(i, layer, z_cur, keys):
            return (z_target - z_cur) / (len(layers) - i), float((z_target - z_cur).norm())

        def solve(layer, resid, keys):
            return memit_update(resid, keys, st.covs[layer], hp.mom2_update_weight, st.chols[layer])

        sp = spread_over_layers(lm, reqs, templates, layers, residual, solve, speed)
        seconds = time.perf_counter() - t0
        z_init = torch.stack([r.v_init for r in results], 1).double().to(z_target.device)
        warnings = st.warnings(lm, hp, "MEMIT")
        diagnostics = {
            "layers": layers,
            **value_diagnostics(results),
            "stats_seconds": st.seconds,
            "update_norm": update_norm(sp.deltas),
            "per_layer": sp.per_layer,
            # How much of z* - z_init the finished update achieves at the last layer (1 = all of it).
            "z_residual_left": residual_left(z_target, sp.top_final, z_init),
            "identity_cov": st.identity,
            "n_contexts": len(templates),
            "layer_walk": sp.walked,
            "warnings": warnings + already_answer_warnings(reqs, results),
        }
        for w in warnings:
            log.warning("MEMIT: %s", w)
        log.info("MEMIT %d request(s) over layers %s: |dW|=%.3g, %.2fs", len(reqs), layers,
                 diagnostics["update_norm"], seconds)
        return Edit(self.name, tuple(reqs), Patch(sp.deltas, label=batch_label("MEMIT", reqs)), seconds, diagnostics)


def range_layers(lm, layers: Sequence[int]) -> list[int]:
    """The layer range ``R`` from a ``layers`` hyper-parameter (checked, sorted; ``()``: :func:`auto_layers`)."""
    return sorted({lm.adapter.check_layer(int(x)) for x in layers}) if layers else auto_layers(lm)


def residual_left(target: torch.Tensor, final: torch.Tensor, init: torch.Tensor) -> float:
    """``||target - final|| / ||target - init||``: the share of the wanted change the update did not reach."""
    return float((target - final).norm() / (target - init).norm().clamp_min(1e-12))


METHOD = Memit()
