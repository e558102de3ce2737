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

``preset="reference"`` (``editcore/hparams/memit/reference.json``) runs MEMIT's procedure: its contexts
(five prefixes of 10 tokens), keys averaged per context type, loss-only stopping and statistics from the
whole corpus given (warned when fewer tokens than MEMIT's). The post-norm mapping stays in both presets:
without it MEMIT does not edit Gemma at all; results say so (``diagnostics["adaptation"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..types import Request
from .base import Edit, MethodInfo, hparam
from .batch_update import (KEY_AVERAGING, LayerCovariances, RangeMethod, average_keys,  # noqa: F401
                           key_averaging_hparam, memit_update, residual_left, spread_over_layers)
from .speed import Speed
from .values import ValueHparams, optimise_values, value_templates


@dataclass(frozen=True)
class MemitHparams(ValueHparams):
    # MEMIT's own defaults for the shared value settings (z* lives in the residual stream: a smaller clamp).
    v_num_grad_steps: int = hparam(25, lo=1, hi=1000, help="max Adam steps for the value (z*)")
    clamp_norm_factor: float = hparam(0.75, lo=0.0, hi=1e3, help="||delta|| <= factor * ||z_init||")
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023, help="layers R whose MLPs are edited; () = auto")
    mom2_update_weight: float = hparam(15000.0, lo=0.0, hi=1e9, help="lambda, the weight of C")
    key_averaging: str = key_averaging_hparam()


def auto_layers(lm) -> list[int]:
    """Default range for models without a sweep: five layers ending where ROME's automatic layer is
    (MEMIT's GPT-J range 3..8 of 28 layers ends at ROME's critical layer in the same way)."""
    from .rome import auto_layer

    top = auto_layer(lm)
    return list(range(max(0, top - 4), top + 1))


class Memit(RangeMethod):
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

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: MemitHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        templates = value_templates(lm, hp)
        st = LayerCovariances.load(lm, layers, hp, progress)
        # All requests' z* in one batch (each its own delta; see optimise_values).
        results = optimise_values(lm, reqs, layers[-1], templates, hp.value_settings(), slot="block",
                                  progress=progress, speed=speed)
        z_target = torch.stack([r.v for r in results], 1).double()  # [d_model, n]

        def residual(i, layer, z_cur, keys):
            return (z_target - z_cur) / (len(layers) - i), float((z_target - z_cur).norm())

        def solve(layer, resid, keys):
            return memit_update(resid, keys, st.covs[layer], hp.mom2_update_weight, st.chols[layer])

        sp = spread_over_layers(lm, reqs, templates, layers, residual, solve, speed, key_averaging=hp.key_averaging)
        z_init = torch.stack([r.v_init for r in results], 1).double().to(z_target.device)
        # z_residual_left: how much of z* - z_init the finished update leaves undone at the last layer.
        return self.finish(lm, hp, reqs, layers, templates, results, sp, t0=t0, stats_seconds=st.seconds,
                           identity=st.identity, left=residual_left(z_target, sp.top_final, z_init),
                           warnings=st.warnings(lm, hp, "MEMIT"))


METHOD = Memit()
