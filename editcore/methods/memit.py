"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al. 2023).

A batch of facts is spread over the MLP output projections of a range of layers ``R = layers``:

1. For each request, ``z*`` = the hidden state (block output) of the *last* layer of ``R`` at the subject's
   last token plus a vector optimised so the new target follows (same objective as ROME's ``v*``:
   :func:`editcore.methods.values.optimise_values` with ``slot="block"``, all requests in one batch).
2. For each layer ``l`` in ``R``, ascending: keys ``K`` (``[d_mlp, n]``, subject's last token, averaged
   over the context prompts) and the residual ``R_l = (z* - z_current) / (layers left)`` with
   ``z_current`` the last layer's hidden state for the plain prompt, both computed *with the updates of
   the layers below already applied* (a nested ``lm.scope()``, so the model is restored afterwards; read
   by walking up from block inputs kept at the previous layer, :class:`_LayerWalk`);
   then ``dW_l = R_l K^T (lambda C_l + K K^T)^-1`` (a linear solve in float64), where ``C_l = E[k k^T]``
   and ``lambda = mom2_update_weight``.

``lambda`` weighs the preserved keys (``C_l`` is a normalised second moment, so ``lambda`` acts like a count
of preserved key samples) against the new ones. MEMIT used 15000 for GPT-J and 20000 for GPT-2 XL with
``C`` from 100k Wikipedia samples. Because ``C_l`` here is an average, ``lambda`` does not need rescaling
for a smaller token count; the count only changes how noisy ``C_l`` is (it must exceed ``d_mlp`` tokens
for ``C_l`` to be full rank). The bundled models' ``lambda`` was picked by the sweep in
``editcore/hparams/memit/``.

Post-norm MLPs (Gemma 2/3 normalise the MLP output with an RMSNorm ``N(m) = g * m / rms(m)`` before adding it
to the residual): the reference method writes ``R_l`` straight into the projection's output ``m``, which
assumes the MLP output joins the residual unchanged; on Gemma-3-270M no new target sticks and the update
norms explode. EditScope therefore maps ``R_l`` through the norm (:func:`through_post_norm`): it asks
for ``N(m') = N(m) + R_l``. An RMSNorm's outputs all have ``rms(N(m)/g) = 1``, so the closest reachable
output is found as a trust-region problem and ``m'`` keeps ``rms(m)``; the projection is then asked for
``m' - m``. This is an EditScope adaptation (the MEMIT paper covers pre-norm GPT models only); any part of
``R_l`` a layer cannot reach is left to the layers above, which see the updated model.

``preset="reference"`` (``editcore/hparams/memit/reference.json``) runs MEMIT's procedure: its contexts
(five prefixes of 10 tokens), keys averaged per context type, loss-only stopping and statistics from the
whole corpus given (warned when fewer tokens than MEMIT's). The post-norm mapping stays in both presets:
without it MEMIT does not edit Gemma at all; results say so (``diagnostics["adaptation"]``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import hooks
from ..errors import InputError
from ..scope import Patch
from ..text import padded
from ..types import Request
from . import layer_stats
from .base import Edit, MethodInfo, Progress, hparam, validate_hparams
from .common import agrees, context_rows, module_io_at, subject_last_index, take_rows, validate_requests
from .speed import Speed
from .values import (ValueHparams, already_answer_warnings, check_statistics_corpus, optimise_values,
                     statistics_warnings, value_templates)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MemitHparams(ValueHparams):
    # MEMIT's own defaults for the shared value settings (z* lives in the residual stream: a smaller clamp).
    v_num_grad_steps: int = hparam(25, lo=1, hi=1000, help="max Adam steps for the value (z*)")
    clamp_norm_factor: float = hparam(0.75, lo=0.0, hi=1e3, help="||delta|| <= factor * ||z_init||")
    layers: tuple[int, ...] = hparam((), lo=0, hi=1023, help="layers R whose MLPs are edited; () = auto")
    mom2_update_weight: float = hparam(15000.0, lo=0.0, hi=1e9, help="lambda, the weight of C")
    key_averaging: str = hparam("contexts", choices=("contexts", "per_type"),
                                help="contexts: a fact's key is the mean over every context; per_type: the mean "
                                     "of the plain prompt's key and the prefixed prompts' mean (MEMIT's compute_ks)")


def average_keys(k_rows: torch.Tensor, n_requests: int, n_ctx: int, how: str) -> torch.Tensor:
    """``[d_mlp, n]`` keys from ``[n * n_ctx, d_mlp]`` rows (context 0 of each request is the plain prompt):
    the mean over contexts, or MEMIT's mean over context *types* (plain; prefixed), which weighs the plain
    prompt as much as all prefixed ones together."""
    rows = k_rows.view(n_requests, n_ctx, -1)
    if how == "per_type" and n_ctx > 1:
        return ((rows[:, 0] + rows[:, 1:].mean(1)) / 2).T
    return rows.mean(1).T


def auto_layers(lm) -> list[int]:
    """Default range for models without a sweep: five layers ending where ROME's automatic layer is
    (MEMIT's GPT-J range 3..8 of 28 layers ends at ROME's critical layer in the same way)."""
    from .rome import auto_layer

    top = auto_layer(lm)
    return list(range(max(0, top - 4), top + 1))


def memit_update(residual: torch.Tensor, keys: torch.Tensor, cov: torch.Tensor | None, lam: float,
                 chol: torch.Tensor | None = None) -> torch.Tensor:
    """``R K^T (lam C + K K^T)^-1`` in float64: ``residual`` ``[d_model, n]``, ``keys`` ``[d_mlp, n]``,
    ``cov`` ``[d_mlp, d_mlp]`` (``None``: identity). Returns ``[d_model, d_mlp]``.

    With ``chol``, the Cholesky factor of ``C`` (``cov`` is then not needed), and fewer edits than key
    dimensions, the same matrix comes from the Woodbury identity without factorising a ``d x d`` system:
    ``(lam C + K K^T)^-1 K = A (I + K^T A)^-1`` with ``A = C^-1 K / lam``."""
    k = keys.double()
    try:
        if chol is not None and k.shape[1] < k.shape[0]:
            a = torch.cholesky_solve(k.to(chol.device), chol).to(k.device) / lam  # [d_mlp, n]
            m = torch.eye(k.shape[1], dtype=torch.float64, device=k.device) + k.T @ a  # symmetric positive definite
            adj = torch.linalg.solve(m, a.T).T
        else:
            if chol is not None:
                c = chol @ chol.T
            else:
                c = torch.eye(k.shape[0], dtype=torch.float64, device=k.device) if cov is None else cov.double()
            a = lam * c.to(k.device) + k @ k.T
            adj = torch.linalg.solve(a, k)  # (lam C + K K^T)^-1 K; the matrix is symmetric
    except RuntimeError:
        raise InputError("MEMIT's system is singular: use more statistics samples or a larger "
                         "mom2_update_weight") from None
    return residual.double().to(k.device) @ adj.T


def through_post_norm(norm: torch.nn.Module, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Change of the projection outputs ``m`` (``[n, d]``) that moves ``norm(m)`` by ``r`` (``[n, d]``) as
    closely as an RMSNorm ``N(m) = g * m / rms(m)`` allows.

    Every output of ``N`` is ``g * x`` with ``mean(x^2) = 1``. For the wanted output ``y = N(m) + r`` the
    closest one minimises ``||g * x - y||^2`` subject to ``mean(x^2) = 1``: ``x = g y / (g^2 + mu)`` with the
    multiplier ``mu`` found by bisection (``mean(x^2)`` falls as ``mu`` grows). ``m' = rms(m) x`` keeps the
    output's size (``N`` ignores it), so the weight change stays small. Coordinates with gain zero (Gemma has a
    few) do not reach the output and are left as they are. Raises :class:`InputError` if ``norm`` is not RMSNorm-shaped.
    """
    m = m.double()
    with torch.no_grad():
        dt = next(norm.parameters()).dtype
        out = norm(m.to(dt)).double()
        g = norm(torch.ones(1, m.shape[1], dtype=dt, device=m.device)).double()[0]
        eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
        g = g * (1.0 + eps) ** 0.5  # norm(ones) = g / sqrt(1 + eps)
        rms = (m.pow(2).mean(1, keepdim=True) + eps).sqrt()
        if float((out - g * m / rms).abs().max()) > 1e-3 * max(1.0, float(out.abs().max())):
            raise InputError("MEMIT: this model's post-MLP norm is not an RMSNorm; no mapping for it")
        y = out + r.double().to(m.device)
        g2, gy = g * g, g * y
        nz = g2 > 0
        lo = torch.full((m.shape[0], 1), -float(g2[nz].min()) * (1 - 1e-9), dtype=torch.float64, device=m.device)

        # Coordinates with gain 0 do not reach the output: keep them (and their share of the rms) as they are.
        keep = torch.where(nz, 0.0, m / rms)
        budget = (m.shape[1] - keep.pow(2).sum(1, keepdim=True)).clamp_min(1e-12)
        hi = (gy.pow(2).sum(1, keepdim=True) / budget).sqrt() + 1e-12  # sum x^2 <= budget from here up

        def solve(mu: torch.Tensor) -> torch.Tensor:
            return torch.where(nz, gy / torch.where(nz, g2 + mu, 1.0), 0.0)

        for _ in range(100):
            mid = (lo + hi) / 2
            big = solve(mid).pow(2).sum(1, keepdim=True) > budget
            lo = torch.where(big, mid, lo)
            hi = torch.where(big, hi, mid)
        return rms * (solve(hi) + keep) - m


class _LayerWalk:
    """MEMIT's reads at each layer ``l`` of ``R``, in ascending order, with the updates of the layers below in
    place: the keys at ``l`` for every (request, context) row, and at the plain prompts the projection's
    output ``m`` at ``l`` and the last layer's output ``z``. All at the subject's last token.

    Reading them with a fresh forward per layer runs blocks ``0..l`` again each time, though the input of
    block ``l - 1`` cannot have changed since the previous layer (only ``l - 1``'s own update is new). One
    forward records every block's call (masks, rotary embeddings) from ``R``'s first layer on; then each
    layer runs the blocks between it and the previous one from the kept input, and its own block up to the
    projection. ``z`` runs the blocks up to the last layer for the plain rows only (their rows of the recorded
    keyword arguments). The first walked layer's reads are compared with fresh forwards on two rows
    (:meth:`checked`); callers fall back to fresh forwards if they differ."""

    def __init__(self, lm, seqs: list[list[int]], idxs: list[int], plain_rows: list[int], layers: list[int]):
        self.lm, self.idxs, self.plain = lm, idxs, plain_rows
        self.z_layer = layers[-1]
        ad = lm.adapter
        ids, mask = padded(lm, [q[:i + 1] for q, i in zip(seqs, idxs)])
        self.n = ids.shape[0]
        self.blocks = {b: ad.block(b) for b in range(layers[0], self.z_layer + 1)}
        with torch.no_grad():  # the forward stops at the last layer's block: nothing above it is needed
            _, calls = hooks.record_calls(list(self.blocks.values()), lambda: lm.model.base_model(
                input_ids=ids, attention_mask=mask, use_cache=False), stop_at_last=True)
        if calls is None:
            raise _NoWalk("block calls could not be recorded")
        self.calls: dict[int, tuple[tuple, dict]] = dict(zip(self.blocks, calls))
        self.at = layers[0]
        self.h = self.calls[layers[0]][0][0]  # input of block self.at, with the updates below it in place
        self.rows = torch.arange(self.n, device=ids.device)
        self.pos = torch.tensor(idxs, device=ids.device)
        self.plain_idx = torch.tensor(plain_rows, device=ids.device)
        self._plain_calls = {b: (take_rows(a, self.plain_idx, self.n), take_rows(k, self.plain_idx, self.n))
                             for b, (a, k) in self.calls.items()}

    def _run(self, block: int, h: torch.Tensor, plain: bool = False) -> torch.Tensor:
        args, kwargs = (self._plain_calls if plain else self.calls)[block]
        return hooks.first(self.blocks[block](h, *args[1:], **kwargs))

    @torch.no_grad()
    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keys [rows, d_mlp], m [plain rows, d_model], z [plain rows, d_model])`` at ``layer`` (float64)."""
        for b in range(self.at, layer):  # blocks below ``layer`` whose weights changed since their input was kept
            self.h = self._run(b, self.h)
        self.at = layer
        got: dict[str, torch.Tensor] = {}

        def grab(args, out):
            got["k"], got["m"] = args[0], hooks.first(out)
            raise hooks.StopForward

        with hooks.on_output(self.lm.adapter.module("mlp_out", layer), grab):
            try:
                self._run(layer, self.h)
            except hooks.StopForward:
                pass
        keys = got["k"][self.rows, self.pos].double()
        m = got["m"][self.rows, self.pos][self.plain_idx].double()
        h = self.h[self.plain_idx]
        for b in range(layer, self.z_layer + 1):
            h = self._run(b, h, plain=True)
        z = h[torch.arange(len(self.plain), device=h.device), self.pos[self.plain_idx]].double()
        return keys, m, z

    @torch.no_grad()
    def checked(self, layer: int, seqs: list[list[int]], got: tuple[torch.Tensor, ...]) -> bool:
        """The walk's reads at ``layer`` equal fresh forwards' on the first and last plain rows."""
        keys, m, z = got
        probe = sorted({0, len(self.plain) - 1})
        rows = [self.plain[j] for j in probe]
        q, i = [seqs[r] for r in rows], [self.idxs[r] for r in rows]
        fresh = [module_io_at(self.lm, "mlp_out", layer, q, i, "in"),
                 module_io_at(self.lm, "mlp_out", layer, q, i, "out"),
                 module_io_at(self.lm, "block", self.z_layer, q, i, "out")]
        return all(agrees(f, w, "MEMIT's layer walk", "reading each layer with a fresh forward")
                   for f, w in zip(fresh, (keys[rows], m[probe], z[probe])))


class _NoWalk(Exception):
    """The layer walk is unavailable for this model (MEMIT then reads each layer with a fresh forward)."""


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
        layers = sorted({lm.adapter.check_layer(int(x)) for x in hp.layers}) if hp.layers else auto_layers(lm)
        with lm.lock:
            return self._compute(lm, reqs, layers, hp, progress, t0, speed or Speed.from_env())

    def _compute(self, lm, reqs: list[Request], layers: list[int], hp: MemitHparams, progress, t0: float,
                 speed: Speed) -> Edit:
        check_statistics_corpus(hp)
        templates = value_templates(lm, hp)
        ts = time.perf_counter()
        covs: dict = dict.fromkeys(layers)
        no_factor: list[int] = []
        chols = layer_stats.cholesky_factors(lm, layers, hp.stats_samples, hp.stats_corpus, progress) \
            if hp.mom2_adjustment else dict.fromkeys(layers)
        if hp.mom2_adjustment and hp.stats_samples:  # C itself only where it is not positive definite
            no_factor = [layer for layer in layers if chols[layer] is None]
            if no_factor:
                covs.update(layer_stats.second_moments(lm, no_factor, hp.stats_samples, hp.stats_corpus, progress))
        stats_seconds = time.perf_counter() - ts
        identity = not hp.mom2_adjustment or hp.stats_samples == 0
        identity_on_post_norm = identity and any(lm.adapter.post_mlp_norm(layer) is not None for layer in layers)
        z_layer = layers[-1]

        # All requests' z* in one batch (each its own delta; see optimise_values).
        results = optimise_values(lm, reqs, z_layer, templates, hp.value_settings(), slot="block", progress=progress,
                                  speed=speed)
        z_target = torch.stack([r.v for r in results], 1).double()  # [d_model, n]

        plain = [subject_last_index(lm.tokenizer, r.prompt, r.subject) for r in reqs]
        seqs, idxs = context_rows(lm, reqs, templates)
        n_ctx = len(templates)
        walk = None
        if speed.layer_walk and templates[0] == "{}":  # row q * n_ctx is request q's plain prompt
            try:
                walk = _LayerWalk(lm, seqs, idxs, [q * n_ctx for q in range(len(reqs))], layers)
            except Exception as exc:  # _NoWalk, or a family whose forward cannot be recorded this way
                log.info("MEMIT layer walk unavailable for %s (%s)", lm.adapter.family, exc)

        def fresh(layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            ps, pi = [p[0] for p in plain], [p[1] for p in plain]
            return (module_io_at(lm, "mlp_out", layer, seqs, idxs, "in").double(),
                    module_io_at(lm, "mlp_out", layer, ps, pi, "out").double(),
                    module_io_at(lm, "block", z_layer, ps, pi, "out").double())

        deltas: dict[str, torch.Tensor] = {}
        per_layer = []
        adapted = False
        with lm.scope() as scope:  # updates of lower layers must be in place when later keys are read
            for i, layer in enumerate(layers):
                got = None
                if walk is not None:
                    try:
                        got = walk.read(layer)
                        if i == 0 and not walk.checked(layer, seqs, got):
                            got = None
                    except Exception as exc:  # a family whose blocks cannot be re-run this way: fresh reads
                        log.info("MEMIT layer walk failed for %s (%s)", lm.adapter.family, exc)
                        got = None
                    if got is None:
                        walk = None
                k_rows, m, z_cur = got if got is not None else fresh(layer)
                keys = average_keys(k_rows, len(reqs), n_ctx, hp.key_averaging)  # [d_mlp, n]
                z_cur = z_cur.T
                resid = (z_target - z_cur) / (len(layers) - i)
                norm = lm.adapter.post_mlp_norm(layer)
                if norm is not None:  # Gemma 2/3: ask the projection for what the norm turns into resid
                    resid = through_post_norm(norm, m, resid.T).T
                    adapted = True
                delta = memit_update(resid, keys, covs[layer], hp.mom2_update_weight, chols[layer])
                weight = lm.adapter.mlp_out_weight(layer)
                name = lm.adapter.mlp_out_param_name(layer)
                param_delta = lm.adapter.to_param_layout(delta.to(weight.device)).to(weight.dtype).contiguous()
                scope.apply(Patch({name: param_delta}), checkpoint=False)
                deltas[name] = param_delta
                per_layer.append({"layer": layer, "update_norm": float(delta.norm()),
                                  "residual_norm": float((z_target - z_cur).norm())})
            z_final = module_io_at(lm, "block", z_layer, [p[0] for p in plain], [p[1] for p in plain],
                                   "out").double().T
        seconds = time.perf_counter() - t0
        label = "MEMIT " + "; ".join(f"{r.subject} -> {r.target_new}" for r in reqs[:3]) + (
            f" (+{len(reqs) - 3})" if len(reqs) > 3 else "")
        diagnostics = {
            "layers": layers,
            "steps": sum(r.steps for r in results),
            "steps_per_request": [r.steps for r in results],
            "loss_curves": [r.losses for r in results],
            "target_probs": [r.target_probs[-1] if r.target_probs else float("nan") for r in results],
            "v_reached_target": all(r.reached for r in results),
            "v_reached_per_request": [r.reached for r in results],
            "v_seconds": results[0].seconds if results else 0.0,  # one batched optimisation for all
            "stats_seconds": stats_seconds,
            "update_norm": float(sum(float(d.double().norm()) ** 2 for d in deltas.values()) ** 0.5),
            "per_layer": per_layer,
            # How much of z* - z_init the finished update achieves at the last layer (1 = all of it).
            "z_residual_left": float((z_target - z_final).norm() / (z_target - torch.stack(
                [r.v_init for r in results], 1).double().to(z_target.device)).norm().clamp_min(1e-12)),
            "identity_cov": identity,
            "n_contexts": len(templates),
            "block_replay": all(r.replayed for r in results),
            "suffix_replay": all(r.suffix for r in results),
            "layer_walk": walk is not None,
            "preset": hp.preset,
            # Only where the post-norm mapping ran: on pre-norm models this is MEMIT as published.
            "adaptation": self.info.adaptation if adapted else "",
            "warnings": ([_IDENTITY_ON_POST_NORM] if identity_on_post_norm else [])
            + ([layer_stats.not_positive_definite_warning(no_factor, hp.stats_samples, lm.adapter.d_mlp)]
               if no_factor else [])
            + already_answer_warnings(reqs, results) + statistics_warnings(lm, layers, hp),
        }
        if identity_on_post_norm:
            log.warning("MEMIT: %s", _IDENTITY_ON_POST_NORM)
        log.info("MEMIT %d request(s) over layers %s: |dW|=%.3g, %.2fs", len(reqs), layers,
                 diagnostics["update_norm"], seconds)
        return Edit(self.name, tuple(reqs), Patch(deltas, label=label), seconds, diagnostics)


_IDENTITY_ON_POST_NORM = (
    "MEMIT without layer statistics (identity covariance) on a model that normalises its MLP output (Gemma 2/3) "
    "spreads each update over every key; on Gemma-3-270M it made 0 of 10 new targets stick. Use stats_samples > 0.")


METHOD = Memit()
