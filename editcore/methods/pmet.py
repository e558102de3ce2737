"""PMET: Precise Model Editing in a Transformer (Li et al. 2024, AAAI).

MEMIT optimises one vector per fact in the residual stream (the block output ``z``), which mixes what the
attention and the MLP contribute, and then asks the MLPs alone to produce all of it. PMET separates the two:

1. For each request, two vectors are optimised *together* at the subject's last token of the last layer ``L``
   of the range: one added to the attention output and one to the MLP output
   (:func:`~editcore.methods.values.optimise_values` with ``slot="mlp_out"`` and ``also_at="attn_out"``; each
   has its own weight decay and clamp, both relative to that output's unedited value). The MLP's target is
   ``m* = m_init + delta_mlp``.
2. Only the MLP share is written: for each layer ``l`` of the range, ascending, with the updates below in place
   (MEMIT's loop, :func:`~editcore.methods.batch_update.spread_over_layers`), the residual is the change of
   layer ``L``'s MLP contribution still missing, ``N_L(m*) - N_L(m_L)`` (``N_L`` the post-MLP norm on Gemma
   2/3, else the identity), divided by ``sqrt(layers left)`` as in the authors' code (MEMIT divides by the
   count), and ``dW_l = R K^T (lambda C_l + K K^T)^-1`` (MEMIT's solve). The attention vector is not written
   into any weight: it only lets the MLP target be optimised without having to carry the attention's share.

Adaptations: the authors lower the NLL weight to a tenth once every target token is top-1 and stop when the KL
term is small; EditScope uses the value optimisation's stopping rules (``v_stop_loss``, ``v_stop_prob``) shared
with ROME and MEMIT. On post-norm blocks each layer's share is mapped through that layer's norm
(:func:`~editcore.methods.batch_update.through_post_norm`), as for MEMIT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..types import Request
from .base import Edit, MethodInfo, hparam
from .batch_update import (LayerCovariances, RangeMethod, key_averaging_hparam, memit_update, residual_left,
                           spread_over_layers)
from .speed import Speed
from .values import ValueHparams, optimise_values, value_templates


@dataclass(frozen=True)
class PmetHparams(ValueHparams):
    # PMET's GPT-J settings for the shared value optimisation (kl_factor 1: the KL term weighs as much as the NLL).
    v_num_grad_steps: int = hparam(30, lo=1, hi=1000, help="max Adam steps for the two vectors")
    v_lr: float = hparam(0.2, lo=1e-6, hi=100.0, help="Adam learning rate for the two vectors")
    clamp_norm_factor: float = hparam(0.75, lo=0.0, hi=1e3, help="||delta|| <= factor * ||output_init||, each")
    kl_factor: float = hparam(1.0, lo=0.0, hi=1e3, help="weight of the KL term on '{subject} is a'")
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023, help="layers R whose MLPs are edited; () = auto")
    mom2_update_weight: float = hparam(6000.0, lo=0.0, hi=1e9, help="lambda, the weight of C")
    key_averaging: str = key_averaging_hparam()


def _normed(norm: torch.nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``N(x)`` for columns ``x`` ``[d, n]`` (float64), or ``x`` when there is no norm."""
    if norm is None:
        return x
    with torch.no_grad():
        return norm(x.T.to(next(norm.parameters()).dtype)).double().T


class Pmet(RangeMethod):
    name = "pmet"
    version = "1"
    info = MethodInfo(
        title="PMET", category="locate-then-edit",
        reference="Li et al. 2024, PMET: Precise Model Editing in a Transformer",
        summary="A MEMIT variant that optimises the attention's and the MLP's outputs together at the top of the "
                "layer range, then writes only the MLP's share into the MLP weights of the range, so the MLPs "
                "are not asked to carry what the attention contributes.",
        adaptation="the value optimisation stops by the rules ROME and MEMIT use here (not the authors' "
                   "reweighting of the NLL once the target is top-1); on models that normalise the MLP output "
                   "(Gemma 2/3) each layer's share is mapped through that norm, as for MEMIT")
    Hparams = PmetHparams

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: PmetHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        templates = value_templates(lm, hp)
        st = LayerCovariances.load(lm, layers, hp, progress)
        top = layers[-1]
        results = optimise_values(lm, reqs, top, templates, hp.value_settings(), slot="mlp_out", also_at="attn_out",
                                  progress=progress, speed=speed)
        norm = lm.adapter.post_mlp_norm(top)
        goal = _normed(norm, torch.stack([r.v for r in results], 1).double())  # N_L(m*) [d_model, n]

        def residual(i, layer, m_top, keys):
            gap = goal - _normed(norm, m_top)
            return gap / math.sqrt(len(layers) - i), float(gap.norm())

        def solve(layer, resid, keys):
            return memit_update(resid, keys, st.covs[layer], hp.mom2_update_weight, st.chols[layer])

        sp = spread_over_layers(lm, reqs, templates, layers, residual, solve, speed, top_slot="mlp_out",
                                key_averaging=hp.key_averaging)
        init = _normed(norm, torch.stack([r.v_init for r in results], 1).double().to(goal.device))
        # z_residual_left: share of the top MLP contribution's wanted change the update leaves undone. The
        # attention share was optimised with the MLP's but is written nowhere (PMET's design).
        return self.finish(lm, hp, reqs, layers, templates, results, sp, t0=t0, stats_seconds=st.seconds,
                           identity=st.identity, left=residual_left(goal, _normed(norm, sp.top_final), init),
                           warnings=st.warnings(lm, hp, "PMET"),
                           extra={"attn_delta_norms": [float(r.also_delta.norm()) for r in results],
                                  "mlp_delta_norms": [float(r.delta.norm()) for r in results]})


METHOD = Pmet()
