"""ROME: Rank-One Model Editing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

One fact is written into the MLP output projection ``W`` (``[d_model, d_mlp]``) of one layer ``l``, in
three steps (the shape of the authors' ``compute_u`` / ``compute_v`` / ``rome_main``):

1. **Key** (:func:`compute_key`): ``k*``, the MLP key (input of the output projection) at the subject's last
   token averaged over the edit prompt and context-prefixed copies of it, and ``C^-1 k*`` with
   ``C = E[k k^T]`` the second moment of keys at ``l`` (:mod:`~editcore.methods.layer_stats`).
2. **Value** (:func:`~editcore.methods.values.optimise_value`): ``v* = v_init + delta``, the projection's
   output at that token plus a vector optimised so that the new target follows every context prompt.
3. **Update** (:func:`rank_one_update`): ``dW = (v* - W k) (C^-1 k*)^T / ((C^-1 k*)^T k)``, rank one, with
   ``W' k = v*``.

Which ``k`` enters step 3: ROME's code uses the *plain* prompt's key there (while ``C^-1 k*`` uses the
context average); Gupta et al. 2024 ("Rebuilding ROME") show this inconsistency makes sequential editing
collapse and use ``k*`` in both places: ``consistent_keys=True`` is that r-ROME.

Covariance: ``mom2_adjustment=True`` (the paper's ROME) uses ``C``; ``False`` the identity. EasyEdit's shipped
ROME configs switch it off, so "ROME" numbers from EasyEdit are the identity variant. The update is
invariant to scaling ``C``. Statistics that are not positive definite (fewer tokens than key dimensions)
are solved as they are, and the edit carries a warning.

Post-norm blocks (Gemma 2/3 normalise the MLP output before it joins the residual): the method stays exact
(the norm is part of the forward pass), but the norm makes the size of the change relative to ``v_init`` what
decides locality, so the clamp factor matters more there; the bundled models' values come from the sweeps in
``editcore/hparams/rome/``.

Deviations from the reference code in the fast defaults, each a hyper-parameter: 5 context prefixes of 8
tokens (``contexts="sampled"``; ROME: 10 of 5 and 10 of 10 tokens), an extra early stop once the mean
target-token probability reaches ``v_stop_prob`` (ROME stops only on ``v_stop_loss``) and statistics from
16,384 tokens. ``preset="reference"`` (``editcore/hparams/rome/reference.json``) runs ROME's procedure:
ROME's contexts, loss-only stopping and statistics from the whole corpus given, with a warning when that is
fewer tokens than ROME's 100,000 Wikipedia articles. Still different: the prefixes are sampled once per
model and kept (ROME samples them in every process).
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
from . import layer_stats
from .base import Edit, MethodInfo, Progress, hparam, validate_hparams
from .common import validate_requests
from .speed import Speed
from .values import (ValueHparams, already_answer_warnings, check_statistics_corpus, optimise_value,
                     statistics_warnings, value_templates)

log = logging.getLogger(__name__)

_BOOL = (True, False)


@dataclass(frozen=True)
class RomeHparams(ValueHparams):
    layer: int = hparam(-1, lo=-1, hi=1023, help="layer whose MLP output projection is edited; -1 = auto")
    consistent_keys: bool = hparam(False, choices=_BOOL, help="r-ROME: use k* in the update too")


def auto_layer(lm) -> int:
    """Default layer for models without a sweep: a third of the way up (ROME's GPT-2 XL layer is 17 of 48,
    its GPT-J layer 5 of 28)."""
    return max(0, round(lm.adapter.n_layers / 3) - 1)


@dataclass
class KeyStats:
    """What step 1 needs of the layer statistics: ``C``'s Cholesky factor, else ``C`` itself, else neither
    (the identity)."""

    chol: torch.Tensor | None
    cov: torch.Tensor | None
    seconds: float

    @classmethod
    def load(cls, lm, layer: int, hp: RomeHparams, progress: Progress | None) -> "KeyStats":
        t0 = time.perf_counter()
        chol = cov = None
        if hp.mom2_adjustment:
            chol = layer_stats.cholesky_factors(lm, [layer], hp.stats_samples, hp.stats_corpus, progress)[layer]
            if chol is None:  # no statistics (0 tokens), or C is not positive definite: solve with C itself
                cov = layer_stats.second_moment(lm, layer, hp.stats_samples, hp.stats_corpus, progress)
        return cls(chol, cov, time.perf_counter() - t0)

    @property
    def identity(self) -> bool:
        return self.chol is None and self.cov is None


def compute_key(keys: torch.Tensor, st: KeyStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: ``(k*, C^-1 k*)`` in float64 from the keys of every context ``[n_contexts, d_mlp]``."""
    k_star = keys.double().mean(0)
    if st.chol is not None:
        c_inv_k = torch.cholesky_solve(k_star[:, None].to(st.chol.device), st.chol)[:, 0]
    else:
        c_inv_k = torch.linalg.solve(st.cov, k_star) if st.cov is not None else k_star.clone()
    if not torch.isfinite(c_inv_k).all():
        raise InputError("the layer statistics are singular; use more statistics samples")
    return k_star, c_inv_k


def rank_one_update(weight: torch.Tensor, c_inv_k: torch.Tensor, key: torch.Tensor, v_target: torch.Tensor,
                    v_current: torch.Tensor) -> torch.Tensor:
    """Step 3: ``(v_target - v_current) (C^-1 k*)^T / ((C^-1 k*)^T key)`` as ``[d_model, d_mlp]`` float64.

    ``v_current`` is the projection's output for ``key`` (``W key`` plus any bias), so ``W' key = v_target``.
    """
    denom = torch.dot(c_inv_k, key)
    if not torch.isfinite(denom) or denom.abs() < 1e-12:
        raise InputError("ROME's update is degenerate for this key (k^T C^-1 k* is ~0); try another layer")
    right = (v_target - v_current) / denom
    return torch.outer(right, c_inv_k).to(weight.device)


class Rome:
    name = "rome"
    version = "1"
    info = MethodInfo(
        title="ROME", category="locate-then-edit",
        reference="Meng et al. 2022, Locating and Editing Factual Associations in GPT",
        summary="Treats one MLP output projection as a key-value memory: the key is the MLP's input at the "
                "subject's last token, the value is optimised so the new target follows, and a rank-one update "
                "writes the pair while disturbing other keys as little as their covariance allows. "
                "`consistent_keys` gives r-ROME (Gupta et al. 2024).")
    Hparams = RomeHparams
    batched = False

    def compute(self, lm, requests: Sequence[Request], hp: RomeHparams, progress: Progress | None = None, *,
                speed: Speed | None = None) -> Edit:
        t0 = time.perf_counter()
        validate_hparams(hp)
        req, = validate_requests(lm, requests, one_at_a_time="ROME")
        layer = lm.adapter.check_layer(auto_layer(lm) if hp.layer == -1 else hp.layer)
        check_statistics_corpus(hp)
        with lm.lock:
            templates = value_templates(lm, hp)
            st = KeyStats.load(lm, layer, hp, progress)
            # The value's first pass reads the keys of every context at the edited layer (step 1's input).
            vr = optimise_value(lm, req, layer, templates, hp.value_settings(), slot="mlp_out", progress=progress,
                                speed=speed)
            k_star, c_inv_k = compute_key(vr.keys, st)
            key = k_star if hp.consistent_keys else vr.keys[0].double()  # row 0 is the plain prompt
            with torch.no_grad():
                # The projection's own forward, so biases (GPT-2's c_proj) and Conv1D layouts are handled.
                v_current = lm.adapter.module("mlp_out", layer)(key.to(lm.dtype)[None])[0].double() \
                    if hp.consistent_keys else vr.v_init.double()
            weight = lm.adapter.mlp_out_weight(layer)
            delta = rank_one_update(weight, c_inv_k, key, vr.v.double(), v_current)
        name = lm.adapter.mlp_out_param_name(layer)
        patch = Patch({name: lm.adapter.to_param_layout(delta).to(dtype=weight.dtype).contiguous()},
                      label=f"ROME {req.subject} -> {req.target_new}")
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
            "stats_seconds": st.seconds,
            "update_norm": float(delta.norm()),
            "delta_norm": float(vr.delta.norm()),
            "v_init_norm": float(vr.v_init.norm()),
            "n_contexts": len(templates),
            "identity_cov": st.identity,
            "block_replay": vr.replayed,
            "suffix_replay": vr.suffix,
            "consistent_keys": hp.consistent_keys,
            "preset": hp.preset,
            "warnings": already_answer_warnings([req], [vr]) + (
                [layer_stats.not_positive_definite_warning([layer], hp.stats_samples, lm.adapter.d_mlp)]
                if st.cov is not None else []) + statistics_warnings(lm, [layer], hp),
            # Tensors for tests and plots (kept on CPU); ``Edit.summary`` skips them.
            "vectors": {"k_star": k_star.cpu(), "key": key.cpu(), "c_inv_k": c_inv_k.cpu(),
                        "v_target": vr.v.double().cpu(), "v_current": v_current.cpu()},
        }
        log.info("ROME %r -> %r at layer %d: %d steps, P(target)=%.3f, |dW|=%.3g, %.2fs", req.subject,
                 req.target_new, layer, vr.steps, diagnostics["target_prob"], diagnostics["update_norm"], seconds)
        return Edit(self.name, (req,), patch, seconds, diagnostics)


METHOD = Rome()
