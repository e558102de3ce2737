"""ROME: Rank-One Model Editing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

One fact is written into the MLP output projection ``W`` (``[d_model, d_mlp]``) of a single layer ``l``:

1. **Key** ``k*``: the MLP key (input of the output projection) at the subject's last token, averaged over
   the edit prompt and a few context-prefixed copies of it ("{prefix}. {prompt}", prefixes sampled from
   the model; see :func:`editcore.methods._common.context_templates`).
2. **Value** ``v*``: the projection's output at that token plus a vector ``delta`` optimised so the new
   target follows every context prompt, with ROME's KL term on "{subject} is a" (``kl_factor``), weight
   decay ``v_weight_decay * ||delta|| / ||v_init||^2`` and clamp ``||delta|| <= clamp_norm_factor *
   ||v_init||`` (:func:`editcore.methods._common.optimise_value`).
3. **Update** ``dW = (v* - W k) (C^-1 k*)^T / ((C^-1 k*)^T k)``, with ``C = E[k k^T]`` the second moment of
   keys at layer ``l`` (:mod:`editcore.methods.stats`). It is rank one and gives ``W' k = v*``.

Which ``k`` enters step 3: the original ROME code uses the key of the *plain* edit prompt there (while
``C^-1 k*`` uses the context-averaged key); Gupta et al. 2024 ("Rebuilding ROME") show this inconsistency
causes model collapse in sequential editing and use ``k*`` in both places. ``consistent_keys=False`` is
the original; ``consistent_keys=True`` is r-ROME (then ``W' k* = v*``).

Covariance: ``mom2_adjustment=True`` (EditScope's default, as in the ROME paper) uses ``C``;
``False`` uses the identity. Note that EasyEdit's shipped ROME configs set ``mom2_adjustment: false``, so
"ROME" numbers from EasyEdit are the identity-``C`` variant. ROME's update is invariant to scaling ``C``,
so there is no ``mom2_update_weight`` here (it matters for MEMIT only). ``C^-1 k*`` is solved with ``C``'s
Cholesky factor, cached beside the statistics; statistics that are not positive definite (fewer tokens than
key dimensions) are solved as they are, and the edit carries a warning.

Post-norm blocks (Gemma 2/3 normalise the MLP output before it joins the residual): ``v*`` is optimised in
the projection's output space and the norm is part of the forward pass, so the method is exact, but the
norm makes the *size* of the change relative to ``v_init`` what matters. Any key that overlaps ``C^-1 k*``
gets a share of ``v* - v_init``, and after the norm that share is not diluted by the residual stream as in
GPT-style blocks. With ROME's ``clamp_norm_factor=4`` every Gemma-3-270M edit ran into the clamp and the
neighbourhood score was 0.24; the sweep in ``editcore/hparams/rome/`` picked 0.75 for that model.

Deviations from the reference code, for speed on CPU (each is a hyper-parameter): fewer context prefixes
(``context_prefixes=5`` of ``context_tokens=8`` tokens, sampled once with a fixed seed and cached, vs 20
sampled per edit), and an extra early stop once the mean target-token probability over the context prompts
reaches ``v_stop_prob`` (ROME stops only when the loss drops below ``v_stop_loss=0.05``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..scope import Patch
from ..types import Request
from . import stats
from ._common import (already_answer_warnings, context_templates, optimise_value, validate_request,
                      value_settings)
from .base import Edit, Progress, hparam, validate_hparams

log = logging.getLogger(__name__)

_BOOL = (True, False)


@dataclass(frozen=True)
class Hparams:
    layer: int = hparam(-1, lo=-1, hi=1023, help="layer whose MLP output projection is edited; -1 = auto")
    v_num_grad_steps: int = hparam(20, lo=1, hi=1000, help="max Adam steps for v*")
    v_lr: float = hparam(0.5, lo=1e-6, hi=100.0, help="Adam learning rate for v*")
    v_weight_decay: float = hparam(0.5, lo=0.0, hi=1e6, help="weight of ||delta|| / ||v_init||^2")
    clamp_norm_factor: float = hparam(4.0, lo=0.0, hi=1e3, help="||delta|| <= factor * ||v_init||")
    kl_factor: float = hparam(0.0625, lo=0.0, hi=1e3, help="weight of the KL term on '{subject} is a'")
    v_stop_loss: float = hparam(0.05, lo=0.0, hi=100.0, help="stop when the loss is below this (ROME)")
    v_stop_prob: float = hparam(0.9, lo=0.0, hi=1.0, help="stop when mean P(target token) reaches this; 1 = off")
    context_prefixes: int = hparam(5, lo=0, hi=64, help="number of sampled context prefixes (plus the plain prompt)")
    context_tokens: int = hparam(8, lo=1, hi=64, help="tokens per sampled prefix")
    context_seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed for sampling the prefixes")
    mom2_adjustment: bool = hparam(True, choices=_BOOL, help="use C = E[kk^T] (False: identity)")
    stats_samples: int = hparam(stats.DEFAULT_TOKENS, lo=0, hi=10**9, help="tokens for C; 0 = identity")
    stats_corpus: str = hparam("auto", help="'auto', 'model', 'hf:<dataset>' or a local text file")
    consistent_keys: bool = hparam(False, choices=_BOOL, help="r-ROME: use k* in the update too")


def auto_layer(lm) -> int:
    """Default layer for models without a sweep: a third of the way up (ROME's GPT-2 XL layer is 17 of 48,
    its GPT-J layer 5 of 28; the bundled models' layers come from sweeps in ``editcore/hparams/rome``)."""
    return max(0, round(lm.adapter.n_layers / 3) - 1)


def rank_one_update(weight: torch.Tensor, c_inv_k: torch.Tensor, key: torch.Tensor, v_target: torch.Tensor,
                    v_current: torch.Tensor) -> torch.Tensor:
    """``(v_target - v_current) (C^-1 k*)^T / ((C^-1 k*)^T key)`` as ``[d_model, d_mlp]`` float64.

    ``v_current`` is the projection's output for ``key`` (``W key`` plus any bias), so ``W' key = v_target``.
    """
    denom = torch.dot(c_inv_k, key)
    if not torch.isfinite(denom) or denom.abs() < 1e-12:
        raise InputError("ROME's update is degenerate for this key (k^T C^-1 k* is ~0); try another layer")
    right = (v_target - v_current) / denom
    return torch.outer(right, c_inv_k).to(weight.device)


class _Rome:
    name = "rome"
    version = "1"
    Hparams = Hparams
    batched = False

    def compute(self, lm, requests: Sequence[Request], hp: Hparams, progress: Progress | None = None) -> Edit:
        t0 = time.perf_counter()
        validate_hparams(hp)
        if len(requests) != 1:
            raise InputError(f"ROME edits one fact at a time (got {len(requests)}); use MEMIT for batches")
        req = validate_request(lm, requests[0])
        layer = lm.adapter.check_layer(auto_layer(lm) if hp.layer == -1 else hp.layer)
        with lm.lock:
            return self._compute(lm, req, layer, hp, progress, t0)

    def _compute(self, lm, req: Request, layer: int, hp: Hparams, progress, t0: float) -> Edit:
        templates = context_templates(lm, hp.context_prefixes, hp.context_tokens, hp.context_seed)
        ts = time.perf_counter()
        cov = chol = None
        if hp.mom2_adjustment:
            chol = stats.cholesky_factors(lm, [layer], hp.stats_samples, hp.stats_corpus, progress)[layer]
            if chol is None:  # no statistics (0 tokens), or C is not positive definite: solve with C itself
                cov = stats.second_moment(lm, layer, hp.stats_samples, hp.stats_corpus, progress)
        stats_seconds = time.perf_counter() - ts

        vr = optimise_value(lm, req, layer, templates, value_settings(hp), slot="mlp_out", progress=progress)
        keys = vr.keys.double()  # [n_contexts, d_mlp]; row 0 is the plain prompt
        k_star = keys.mean(0)
        if chol is not None:
            c_inv_k = torch.cholesky_solve(k_star[:, None].to(chol.device), chol)[:, 0]
        else:
            c_inv_k = torch.linalg.solve(cov, k_star) if cov is not None else k_star.clone()
        if not torch.isfinite(c_inv_k).all():
            raise InputError("the layer statistics are singular; use more statistics samples")
        key = k_star if hp.consistent_keys else keys[0]
        module = lm.adapter.module("mlp_out", layer)
        with torch.no_grad():
            # The projection's own forward, so biases (GPT-2's c_proj) and Conv1D layouts are handled.
            v_current = module(key.to(lm.dtype)[None])[0].double() if hp.consistent_keys else vr.v_init.double()
        v_target = vr.v.double()
        weight = lm.adapter.mlp_out_weight(layer)
        delta = rank_one_update(weight, c_inv_k, key, v_target, v_current)
        name = lm.adapter.mlp_out_param_name(layer)
        param_delta = lm.adapter.to_param_layout(delta).to(dtype=weight.dtype).contiguous()
        patch = Patch({name: param_delta}, label=f"ROME {req.subject} -> {req.target_new}")
        seconds = time.perf_counter() - t0
        diagnostics = {
            "layer": layer,
            "steps": vr.steps,
            "loss_curve": vr.losses,
            "target_prob_curve": vr.target_probs,
            "target_prob": vr.target_probs[-1] if vr.target_probs else float("nan"),
            "v_reached_target": vr.reached,
            "target_already_answer": vr.already_answer,
            "v_seconds": vr.seconds,
            "stats_seconds": stats_seconds,
            "update_norm": float(delta.norm()),
            "delta_norm": float(vr.delta.norm()),
            "v_init_norm": float(vr.v_init.norm()),
            "n_contexts": len(templates),
            "identity_cov": cov is None and chol is None,
            "block_replay": vr.replayed,
            "suffix_replay": vr.suffix,
            "consistent_keys": hp.consistent_keys,
            "warnings": already_answer_warnings([req], [vr]) + (
                [stats.not_positive_definite_warning([layer], hp.stats_samples, lm.adapter.d_mlp)]
                if cov is not None else []),
            # Tensors for tests and plots (kept on CPU); ``Edit.summary`` skips them.
            "vectors": {"k_star": k_star.cpu(), "key": key.cpu(), "c_inv_k": c_inv_k.cpu(),
                        "v_target": v_target.cpu(), "v_current": v_current.cpu()},
        }
        log.info("ROME %r -> %r at layer %d: %d steps, P(target)=%.3f, |dW|=%.3g, %.2fs", req.subject,
                 req.target_new, layer, vr.steps, diagnostics["target_prob"], diagnostics["update_norm"], seconds)
        return Edit(self.name, (req,), patch, seconds, diagnostics)


METHOD = _Rome()
