"""AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models (Fang et al. 2025, ICLR).

MEMIT's update trades the new facts against the preserved keys ``K0`` (through ``lambda C``); every edit moves
``W K0`` a little, and over many sequential edits the model drifts away from what it knew. AlphaEdit removes
the trade-off: it projects the update onto the (approximate) null space of ``K0``, so ``dW K0 ~ 0`` whatever
the new facts ask, and the update only has to fit the new keys.

* **Projection.** ``P = U U^T`` with ``U`` the eigenvectors of the layer statistics ``C = E[k k^T]`` whose
  eigenvalues are below ``nullspace_threshold`` (the paper's 2e-2 on the same normalised moment). Then
  ``E[||dW P k||^2] = tr(dW P C P dW^T) <= threshold * ||dW||_F^2`` for ordinary keys. The eigen-decomposition
  is cached beside the statistics as safetensors (:func:`null_space`).
* **Update** per layer (MEMIT's loop: z*, keys, residual spread over the range, post-norm mapping;
  :func:`~editcore.methods.batch_update.spread_over_layers`):
  ``dW = R K^T P (K_p K_p^T P + K K^T P + alpha I)^-1``, where ``K_p`` are the keys of facts edited earlier
  in the sequence and ``alpha = l2``. This equals ``R K^T U (U^T (K K^T + K_p K_p^T) U + alpha I)^-1 U^T``
  (the solution already lies in ``P``'s row space), which is solved in the null space's own, smaller basis.
* **Sequential edits.** ``K_p`` accumulates the keys of earlier AlphaEdit edits, so a new update also leaves
  them in place. Each AlphaEdit patch carries its keys in ``Patch.memory``; :func:`previous_keys` reads them
  from the patches the open scopes hold (``editcore.scope.applied_patches``), so an edit sees exactly the
  earlier edits that are applied, and a rolled-back one no longer counts. ``accumulate=False`` ignores them.

As in the authors' code, ``mom2_update_weight`` plays no part (``C`` only enters through ``P``). On models that
normalise the MLP output (Gemma 2/3) each layer's residual is mapped through that norm, as for MEMIT.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..scope import applied_patches
from ..types import Request
from . import layer_stats
from .base import Edit, MethodInfo, hparam
from .batch_update import RangeMethod, key_averaging_hparam, residual_left, spread_over_layers
from .speed import Speed
from .values import ValueHparams, optimise_values, value_templates

_BOOL = (True, False)
MEMORY = "alphaedit"  # the key of AlphaEdit's records in Patch.memory


@dataclass(frozen=True)
class AlphaEditHparams(ValueHparams):
    # MEMIT's value settings (z* lives in the residual stream).
    v_num_grad_steps: int = hparam(25, lo=1, hi=1000, help="max Adam steps for the value (z*)")
    clamp_norm_factor: float = hparam(0.75, lo=0.0, hi=1e3, help="||delta|| <= factor * ||z_init||")
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023, help="layers R whose MLPs are edited; () = auto")
    nullspace_threshold: float = hparam(2e-2, lo=0.0, hi=1e9,
                                        help="eigenvalues of C below this span the preserved keys' null space")
    l2: float = hparam(10.0, lo=1e-12, hi=1e12, help="alpha, the ridge term of the projected solve")
    accumulate: bool = hparam(True, choices=_BOOL,
                              help="also preserve the keys of earlier AlphaEdit edits applied in this scope")
    key_averaging: str = key_averaging_hparam()


def null_space(lm, layers: Sequence[int], n_tokens: int, corpus: str | None, threshold: float,
               progress=None) -> dict[int, torch.Tensor]:
    """``U`` (``[d_mlp, r]``, float64, on the model's device) per layer: the eigenvectors of the layer's second
    moment with eigenvalues below ``threshold``. The eigen-decomposition (threshold-free) is cached on disk
    beside the statistics."""
    from safetensors.torch import load_file, save_file

    corpus_id = layer_stats.resolve_corpus(corpus)
    out = {}
    for layer in layers:
        path = layer_stats.cache_path({**layer_stats.cache_key(lm, layer, corpus_id, n_tokens), "stat": "mom2_eigh"})
        if path.is_file():
            got = load_file(str(path))
            values, vectors = got["eigenvalues"], got["eigenvectors"]
        else:
            cov = layer_stats.second_moment(lm, layer, n_tokens, corpus, progress)
            values, vectors = torch.linalg.eigh(cov.double())
            values, vectors = values.cpu(), vectors.cpu().contiguous()
            tmp = path.with_suffix(".tmp")
            save_file({"eigenvalues": values, "eigenvectors": vectors}, str(tmp))
            tmp.replace(path)
        out[layer] = vectors[:, values < threshold].to(lm.device)
    return out


def null_space_update(residual: torch.Tensor, keys: torch.Tensor, basis: torch.Tensor,
                      previous: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``R K^T U (U^T (K K^T + K_p K_p^T) U + alpha I)^-1 U^T`` in float64: ``residual`` ``[d_model, n]``,
    ``keys`` ``[d_mlp, n]``, ``basis`` ``U`` ``[d_mlp, r]``, ``previous`` ``K_p`` ``[d_mlp, N]`` or ``None``.
    Returns ``[d_model, d_mlp]``; its rows lie in ``U``'s span, so ``dW (I - U U^T) = 0``."""
    u = basis.double()
    ku = u.T @ keys.double().to(u.device)  # [r, n]
    m = ku @ ku.T + alpha * torch.eye(u.shape[1], dtype=torch.float64, device=u.device)
    if previous is not None and previous.shape[1]:
        pu = u.T @ previous.double().to(u.device)
        m = m + pu @ pu.T
    chol, info = torch.linalg.cholesky_ex(m)  # positive definite: alpha > 0
    if int(info):
        raise InputError("AlphaEdit's projected system is not positive definite; raise l2")
    y = torch.cholesky_solve(ku, chol)  # [r, n]
    return residual.double().to(u.device) @ (u @ y).T


def previous_keys(lm, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The keys (``[d_mlp, N]``) that earlier AlphaEdit patches applied in the open scopes wrote, per edited
    parameter name."""
    got: dict[str, list[torch.Tensor]] = {}
    for patch in applied_patches(lm.model):
        for record in patch.memory.get(MEMORY, ()):
            for name, k in record.items():
                if name in names:
                    got.setdefault(name, []).append(k)
    return {name: torch.cat(ks, 1) for name, ks in got.items()}


class AlphaEdit(RangeMethod):
    name = "alphaedit"
    version = "1"
    info = MethodInfo(
        title="AlphaEdit", category="locate-then-edit",
        reference="Fang et al. 2025, AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models",
        summary="MEMIT with its update projected onto the null space of ordinary keys (from the layer "
                "statistics), so the edited projections give the same outputs as before on what the model "
                "already knew; in a sequence of edits it also keeps the keys of the earlier edits, which stops "
                "later edits from eroding them.",
        adaptation="on models that normalise the MLP output (Gemma 2/3) each layer's target is mapped through "
                   "that norm first (as for MEMIT; the paper covers pre-norm models only)")
    Hparams = AlphaEditHparams

    def check(self, hp: AlphaEditHparams) -> None:
        if not hp.mom2_adjustment or hp.stats_samples == 0:
            raise InputError("AlphaEdit needs layer statistics for its null space: use stats_samples > 0 and "
                             "mom2_adjustment on")

    def prepare(self, lm, hp: AlphaEditHparams, progress=None) -> None:
        """Compute and cache the statistics' eigen-decompositions, so the first edit's time is its own."""
        null_space(lm, self.layers(lm, hp), hp.stats_samples, hp.stats_corpus, hp.nullspace_threshold, progress)

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: AlphaEditHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        templates = value_templates(lm, hp)
        ts = time.perf_counter()
        bases = null_space(lm, layers, hp.stats_samples, hp.stats_corpus, hp.nullspace_threshold, progress)
        stats_seconds = time.perf_counter() - ts
        names = {layer: lm.adapter.mlp_out_param_name(layer) for layer in layers}
        prev = previous_keys(lm, list(names.values())) if hp.accumulate else {}
        results = optimise_values(lm, reqs, layers[-1], templates, hp.value_settings(), slot="block",
                                  progress=progress, speed=speed)
        z_target = torch.stack([r.v for r in results], 1).double()

        def residual(i, layer, z_cur, keys):
            return (z_target - z_cur) / (len(layers) - i), float((z_target - z_cur).norm())

        def solve(layer, resid, keys):
            return null_space_update(resid, keys, bases[layer], prev.get(names[layer]), hp.l2)

        sp = spread_over_layers(lm, reqs, templates, layers, residual, solve, speed,
                                key_averaging=hp.key_averaging)
        z_init = torch.stack([r.v_init for r in results], 1).double().to(z_target.device)
        empty = [layer for layer in layers if bases[layer].shape[1] == 0]
        warnings = [f"no eigenvalue of the statistics of layer(s) {', '.join(map(str, empty))} is below the "
                    f"null-space threshold {hp.nullspace_threshold:g}, so those layers cannot change; raise "
                    "nullspace_threshold"] if empty else []
        n_prev = {layer: int(prev[names[layer]].shape[1]) if names[layer] in prev else 0 for layer in layers}
        extra = {"per_layer": [{**row, "null_space_dims": int(bases[row["layer"]].shape[1]),
                                "previous_keys": n_prev[row["layer"]]} for row in sp.per_layer],
                 "null_space_dims": min(int(b.shape[1]) for b in bases.values()),
                 "previous_keys": max(n_prev.values())}
        # Each layer's keys, for the next AlphaEdit edit in this scope (the paper's K_p).
        memory = {MEMORY: ({names[layer]: k.float() for layer, k in sp.keys.items()},)}
        return self.finish(lm, hp, reqs, layers, templates, results, sp, t0=t0, stats_seconds=stats_seconds,
                           identity=False, left=residual_left(z_target, sp.top_final, z_init), warnings=warnings,
                           extra=extra, memory=memory)


METHOD = AlphaEdit()
