"""EMMET: Equality-constrained Mass Model Editing in a Transformer (Gupta, Sajnani and Anumanchipalli 2024,
"A Unified Framework for Model Editing"; studied at scale in Gupta, Rao and Anumanchipalli 2024, "Model Editing
at Scale leads to Gradual and Catastrophic Forgetting").

ROME and MEMIT solve the same *preservation-memorisation* objective, keeping the outputs of ordinary keys
``K0`` (second moment ``C = K0 K0^T / N``) while writing new key-value pairs; MEMIT memorises them in the least-
squares sense, ROME as an equality constraint for one fact. EMMET is ROME for a batch: minimise
``||W' K0 - W K0||`` subject to ``W' k_i = v_i`` for every request ``i``, whose closed form is

    dW = (V - W K) (K^T C^-1 K)^-1 K^T C^-1.

``K`` (``[d_mlp, n]``) are the requests' keys averaged over the context prompts, used in the constraint and in
the solution alike (the consistency "Rebuilding ROME" asks for). With one request ``dW`` is exactly r-ROME's
rank-one update (``rome`` with ``consistent_keys=True``): ``(v - W k)(C^-1 k)^T / (k^T C^-1 k)``. For a batch
``K^T C^-1 K`` can be ill-conditioned (similar keys), so, as in the authors' code, ``emmet_lambda`` is added to
its diagonal when there is more than one request; ``C`` is scaled by ``mom2_update_weight`` first (which only
matters relative to ``emmet_lambda``).

One layer (the paper's setting and the authors' configurations): the values are ROME's ``v*``, optimised at the
MLP output of that layer (:func:`~editcore.methods.values.optimise_values` with ``slot="mlp_out"``, all
requests in one batch). Several layers (the authors' code offers MEMIT's distribution as an option): the values
are MEMIT's ``z*`` at the last layer's block output and each layer writes its share of the residual with
equality constraints (:func:`~editcore.methods.batch_update.spread_over_layers`, also its post-norm mapping).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..types import Request
from .base import Edit, MethodInfo, hparam
from .batch_update import (LayerCovariances, RangeMethod, key_averaging_hparam, projection_of, range_layers,
                           residual_left, spread_over_layers)
from .speed import Speed
from .values import ValueHparams, optimise_values, value_templates


@dataclass(frozen=True)
class EmmetHparams(ValueHparams):
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023,
                                     help="edited layers; () = ROME's automatic layer (one layer, the paper's setting)")
    mom2_update_weight: float = hparam(1.0, lo=1e-9, hi=1e9, help="scale of C (matters only against emmet_lambda)")
    emmet_lambda: float = hparam(0.1, lo=0.0, hi=1e9,
                                 help="added to the diagonal of K^T C^-1 K for batches (ill-conditioned keys)")
    key_averaging: str = key_averaging_hparam()


def equality_update(residual: torch.Tensor, keys: torch.Tensor, st: LayerCovariances, layer: int, scale: float,
                    lam: float) -> torch.Tensor:
    """``R (K^T (s C)^-1 K + lam I)^-1 K^T (s C)^-1`` (``lam`` only for ``n > 1``) in float64: ``residual``
    ``[d_model, n]``, ``keys`` ``[d_mlp, n]``. Returns ``[d_model, d_mlp]``; with it ``W' k_i = W k_i + r_i``
    for every key (exactly when ``lam = 0``)."""
    k = keys.double()
    a = st.solve(layer, k) / scale  # (s C)^-1 K, [d_mlp, n]
    d = k.T @ a  # [n, n], symmetric positive definite for independent keys
    if d.shape[0] > 1:
        d = d + lam * torch.eye(d.shape[0], dtype=d.dtype, device=d.device)
    try:
        adj = torch.linalg.solve(d, a.T)  # D^-1 K^T (s C)^-1, [n, d_mlp]
    except RuntimeError:
        raise InputError("EMMET's constraints are degenerate (two requests with the same key?); raise "
                         "emmet_lambda or edit them in separate batches") from None
    if not torch.isfinite(adj).all():
        raise InputError("EMMET's constraints are degenerate (k^T C^-1 k is ~0); try another layer")
    return residual.double().to(adj.device) @ adj


class Emmet(RangeMethod):
    name = "emmet"
    version = "1"
    info = MethodInfo(
        title="EMMET", category="locate-then-edit",
        reference="Gupta, Sajnani and Anumanchipalli 2024, A Unified Framework for Model Editing",
        summary="ROME for a batch: every fact of the batch is written into one MLP projection as an exact "
                "constraint (its key must give its value) while ordinary keys' outputs move as little as their "
                "covariance allows, in closed form. With one fact it is r-ROME; several layers spread the "
                "change as MEMIT does.",
        adaptation="several layers: on models that normalise the MLP output (Gemma 2/3) each layer's share is "
                   "mapped through that norm first (as for MEMIT)")
    Hparams = EmmetHparams

    def layers(self, lm, hp: EmmetHparams) -> list[int]:
        from .rome import auto_layer

        return range_layers(lm, hp.layers) if hp.layers else [auto_layer(lm)]

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: EmmetHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        templates = value_templates(lm, hp)
        st = LayerCovariances.load(lm, layers, hp, progress)
        one = len(layers) == 1
        # One layer: ROME's v* at the projection's output; several: MEMIT's z* at the last block's output.
        results = optimise_values(lm, reqs, layers[-1], templates, hp.value_settings(),
                                  slot="mlp_out" if one else "block", progress=progress, speed=speed)
        target = torch.stack([r.v for r in results], 1).double()  # [d_model, n]

        def residual(i, layer, top, keys):
            if one:  # the constraint W' k* = v* on the averaged keys themselves (r-ROME's consistency)
                r = target - projection_of(lm, layer, keys).to(target.device)
                return r, float(r.norm())
            return (target - top) / (len(layers) - i), float((target - top).norm())

        def solve(layer, resid, keys):
            return equality_update(resid, keys, st, layer, hp.mom2_update_weight, hp.emmet_lambda)

        sp = spread_over_layers(lm, reqs, templates, layers, residual, solve, speed,
                                top_slot="mlp_out" if one else "block", through_norm=not one,
                                key_averaging=hp.key_averaging)
        init = torch.stack([r.v_init for r in results], 1).double().to(target.device)
        # z_residual_left: share of v* - v_init (z* - z_init) the update leaves undone at the plain prompts.
        # vectors (tensors for tests and plots, on CPU; Edit.summary skips them): the last layer's keys and targets.
        return self.finish(lm, hp, reqs, layers, templates, results, sp, t0=t0, stats_seconds=st.seconds,
                           identity=st.identity, left=residual_left(target, sp.top_final, init),
                           warnings=st.warnings(lm, hp, "EMMET"),
                           extra={"vectors": {"keys": sp.keys[layers[-1]].cpu(), "targets": target.cpu()}})


METHOD = Emmet()
