"""What MEMIT and its family (EMMET, PMET, AlphaEdit) share: writing a batch of target vectors into the MLP
output projections of a range of layers ``R``.

* :class:`LayerCovariances`: the layer statistics ``C_l = E[k k^T]`` of every layer in ``R``, as Cholesky
  factors where ``C_l`` is positive definite and as ``C_l`` itself where not (or neither: the identity).
* :func:`spread_over_layers`: MEMIT's loop. For each layer ``l`` of ``R``, ascending, with the updates of
  the layers below already applied (a nested ``lm.scope()``, so the model is restored afterwards): the keys
  ``K`` (``[d_mlp, n]``, subject's last token, averaged over the context prompts), the projection's output
  ``m`` at the plain prompts and the "top" read (the last layer's block output, or its projection's output)
  are read by :class:`LayerWalk`; the method's ``residual`` says what layer ``l`` should add to the residual
  stream, :func:`through_post_norm` turns that into a change of ``m`` on post-norm blocks, and the method's
  ``solve`` turns it into ``dW_l``.
* The per-layer solvers: :func:`memit_update` (MEMIT, PMET). EMMET's and AlphaEdit's live in their modules.

Post-norm MLPs (Gemma 2/3 normalise the MLP output with an RMSNorm ``N(m) = g * m / rms(m)`` before adding it
to the residual): MEMIT's reference code writes the residual straight into the projection's output ``m``,
which assumes the MLP output joins the residual unchanged; on Gemma-3-270M no new target sticks and the update
norms explode. EditScope therefore maps the residual ``r`` through the norm (:func:`through_post_norm`): it
asks for ``N(m') = N(m) + r``. An RMSNorm's outputs all have ``rms(N(m)/g) = 1``, so the closest reachable
output is found as a trust-region problem and ``m'`` keeps ``rms(m)``; the projection is then asked for
``m' - m``. This is an EditScope adaptation (the papers cover pre-norm models only); any part of ``r`` a
layer cannot reach is left to the layers above, which see the updated model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import hooks
from ..errors import InputError
from ..scope import Patch
from ..text import padded
from ..types import Request
from . import layer_stats
from .base import hparam
from .common import agrees, context_rows, module_io_at, subject_last_index, take_rows
from .speed import Speed

log = logging.getLogger(__name__)

# ``residual(i, layer, top, keys) -> (r [d_model, n], gap)``: what layer ``i`` of the range (``layer``) should
# add, given the top read ``top`` ``[d, n]`` and the keys ``keys`` ``[d_mlp, n]`` with the updates below it in
# place; ``gap`` is the norm the diagnostics record (how far the top read still is from its target).
Residual = Callable[[int, int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]
# ``solve(layer, r [d_model, n], keys [d_mlp, n]) -> dW [d_model, d_mlp]`` (float64).
Solve = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
KEY_AVERAGING = ("contexts", "per_type")


def key_averaging_hparam():
    """The ``key_averaging`` setting of MEMIT and of the methods built on its loop (their released code
    all averages keys as MEMIT's ``compute_ks`` does: the reference presets pick ``per_type``)."""
    return hparam("contexts", choices=KEY_AVERAGING,
                  help="contexts: a fact's key is the mean over every context; per_type: the mean of the plain "
                       "prompt's key and the prefixed prompts' mean (MEMIT's compute_ks)")


def average_keys(k_rows: torch.Tensor, n_requests: int, n_ctx: int, how: str) -> torch.Tensor:
    """``[d_mlp, n]`` keys from ``[n * n_ctx, d_mlp]`` rows (context 0 of each request is the plain prompt):
    the mean over contexts, or MEMIT's mean over context *types* (plain; prefixed), which weighs the plain
    prompt as much as all prefixed ones together."""
    rows = k_rows.view(n_requests, n_ctx, -1)
    if how == "per_type" and n_ctx > 1:
        return ((rows[:, 0] + rows[:, 1:].mean(1)) / 2).T
    return rows.mean(1).T


@dataclass
class LayerCovariances:
    """The statistics the solvers need per layer: ``C``'s Cholesky factor, else ``C`` itself (not positive
    definite: too few tokens), else neither (no statistics: the identity)."""

    chols: dict[int, torch.Tensor | None]
    covs: dict[int, torch.Tensor | None]
    no_factor: list[int]  # layers whose C has no Cholesky factor
    identity: bool
    seconds: float

    @classmethod
    def load(cls, lm, layers: Sequence[int], hp, progress=None) -> "LayerCovariances":
        """From ``hp``'s ``mom2_adjustment``, ``stats_samples`` and ``stats_corpus`` (cached on disk)."""
        ts = time.perf_counter()
        covs: dict = dict.fromkeys(layers)
        no_factor: list[int] = []
        chols = layer_stats.cholesky_factors(lm, layers, hp.stats_samples, hp.stats_corpus, progress) \
            if hp.mom2_adjustment else dict.fromkeys(layers)
        if hp.mom2_adjustment and hp.stats_samples:  # C itself only where it is not positive definite
            no_factor = [layer for layer in layers if chols[layer] is None]
            if no_factor:
                covs.update(layer_stats.second_moments(lm, no_factor, hp.stats_samples, hp.stats_corpus, progress))
        identity = not hp.mom2_adjustment or hp.stats_samples == 0
        return cls(chols, covs, no_factor, identity, time.perf_counter() - ts)

    def solve(self, layer: int, k: torch.Tensor) -> torch.Tensor:
        """``C^-1 k`` in float64 (``k`` itself for the identity)."""
        k = k.double()
        chol, cov = self.chols[layer], self.covs[layer]
        if chol is not None:
            out = torch.cholesky_solve(k.to(chol.device), chol).to(k.device)
        elif cov is not None:
            out = torch.linalg.solve(cov.double().to(k.device), k)
        else:
            out = k.clone()
        if not torch.isfinite(out).all():
            raise InputError("the layer statistics are singular; use more statistics samples")
        return out

    def warnings(self, lm, hp, method: str) -> list[str]:
        out = []
        if self.identity and any(lm.adapter.post_mlp_norm(layer) is not None for layer in self.chols):
            out.append(f"{method} without layer statistics (identity covariance) on a model that normalises its "
                       "MLP output (Gemma 2/3) spreads each update over every key; on Gemma-3-270M MEMIT made 0 of "
                       "10 new targets stick that way. Use stats_samples > 0.")
        if self.no_factor:
            out.append(layer_stats.not_positive_definite_warning(self.no_factor, hp.stats_samples, lm.adapter.d_mlp))
        return out


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


class LayerWalk:
    """The reads at each layer ``l`` of ``R``, in ascending order, with the updates of the layers below in
    place: the keys at ``l`` for every (request, context) row, and at the plain prompts the projection's
    output ``m`` at ``l`` and the top read (``top_slot``'s output at the last layer: ``"block"``, MEMIT's
    ``z``, or ``"mlp_out"``, PMET's MLP output). All at the subject's last token.

    Reading them with a fresh forward per layer runs blocks ``0..l`` again each time, though the input of
    block ``l - 1`` cannot have changed since the previous layer (only ``l - 1``'s own update is new). One
    forward records every block's call (masks, rotary embeddings) from ``R``'s first layer on; then each
    layer runs the blocks between it and the previous one from the kept input, and its own block up to the
    projection. The top read runs the blocks up to the last layer for the plain rows only (their rows of the
    recorded keyword arguments). The first walked layer's reads are compared with fresh forwards on two rows
    (:meth:`checked`); callers fall back to fresh forwards if they differ."""

    def __init__(self, lm, seqs: list[list[int]], idxs: list[int], plain_rows: list[int], layers: list[int],
                 top_slot: str = "block"):
        self.lm, self.idxs, self.plain, self.top_slot = lm, idxs, plain_rows, top_slot
        self.z_layer = layers[-1]
        ad = lm.adapter
        ids, mask = padded(lm, [q[:i + 1] for q, i in zip(seqs, idxs)])
        self.n = ids.shape[0]
        self.blocks = {b: ad.block(b) for b in range(layers[0], self.z_layer + 1)}
        with torch.no_grad():  # the forward stops at the last layer's block: nothing above it is needed
            _, calls = hooks.record_calls(list(self.blocks.values()), lambda: lm.model.base_model(
                input_ids=ids, attention_mask=mask, use_cache=False), stop_at_last=True)
        if calls is None:
            raise NoWalk("block calls could not be recorded")
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

    def _until_projection(self, layer: int, h: torch.Tensor, plain: bool = False) -> dict[str, torch.Tensor]:
        """Block ``layer`` on ``h`` up to its MLP output projection: its input ``k`` and output ``m``."""
        got: dict[str, torch.Tensor] = {}

        def grab(args, out):
            got["k"], got["m"] = args[0], hooks.first(out)
            raise hooks.StopForward

        with hooks.on_output(self.lm.adapter.module("mlp_out", layer), grab):
            try:
                self._run(layer, h, plain)
            except hooks.StopForward:
                pass
        return got

    @torch.no_grad()
    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keys [rows, d_mlp], m [plain rows, d_model], top [plain rows, d_model])`` at ``layer`` (float64)."""
        for b in range(self.at, layer):  # blocks below ``layer`` whose weights changed since their input was kept
            self.h = self._run(b, self.h)
        self.at = layer
        got = self._until_projection(layer, self.h)
        keys = got["k"][self.rows, self.pos].double()
        m = got["m"][self.rows, self.pos][self.plain_idx].double()
        if self.top_slot == "mlp_out" and layer == self.z_layer:
            return keys, m, m
        h = self.h[self.plain_idx]
        last = self.z_layer if self.top_slot == "block" else self.z_layer - 1
        for b in range(layer, last + 1):
            h = self._run(b, h, plain=True)
        if self.top_slot == "mlp_out":
            h = self._until_projection(self.z_layer, h, plain=True)["m"]
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
                 module_io_at(self.lm, self.top_slot, self.z_layer, q, i, "out")]
        return all(agrees(f, w, "MEMIT's layer walk", "reading each layer with a fresh forward")
                   for f, w in zip(fresh, (keys[rows], m[probe], z[probe])))


class NoWalk(Exception):
    """The layer walk is unavailable for this model (the layers are then read with fresh forwards)."""


@dataclass
class Spread:
    """What :func:`spread_over_layers` computed."""

    deltas: dict[str, torch.Tensor]  # parameter name -> update, in the parameter's layout and dtype
    keys: dict[int, torch.Tensor]  # layer -> the keys [d_mlp, n] its update was solved for
    per_layer: list[dict]
    top_final: torch.Tensor  # [d, n] the top read at the plain prompts with every update in place (float64)
    walked: bool  # the layer walk was used (not fresh forwards)
    through_norm: bool  # the post-norm mapping ran (an EditScope adaptation)


def spread_over_layers(lm, reqs: Sequence[Request], templates: Sequence[str], layers: list[int],
                       residual: Residual, solve: Solve, speed: Speed, *, top_slot: str = "block",
                       through_norm: bool = True, key_averaging: str = "contexts") -> Spread:
    """MEMIT's layer loop (see the module docstring) with the method's ``residual`` and ``solve``.

    ``through_norm``: the residual is a change of the residual stream, mapped through a post-MLP norm where the
    block has one (:func:`through_post_norm`); ``False``: it is already a change of the projection's output.
    ``key_averaging``: how a request's keys over its contexts become one (:func:`average_keys`)."""
    plain = [subject_last_index(lm.tokenizer, r.prompt, r.subject) for r in reqs]
    seqs, idxs = context_rows(lm, reqs, templates)
    n_ctx = len(templates)
    z_layer = layers[-1]
    walk = None
    if speed.layer_walk and templates[0] == "{}":  # row q * n_ctx is request q's plain prompt
        try:
            walk = LayerWalk(lm, seqs, idxs, [q * n_ctx for q in range(len(reqs))], layers, top_slot)
        except Exception as exc:  # NoWalk, or a family whose forward cannot be recorded this way
            log.info("layer walk unavailable for %s (%s)", lm.adapter.family, exc)

    def fresh(layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ps, pi = [p[0] for p in plain], [p[1] for p in plain]
        return (module_io_at(lm, "mlp_out", layer, seqs, idxs, "in").double(),
                module_io_at(lm, "mlp_out", layer, ps, pi, "out").double(),
                module_io_at(lm, top_slot, z_layer, ps, pi, "out").double())

    deltas: dict[str, torch.Tensor] = {}
    keys_at: dict[int, torch.Tensor] = {}
    per_layer = []
    mapped = False
    with lm.scope() as scope:  # updates of lower layers must be in place when later keys are read
        for i, layer in enumerate(layers):
            got = None
            if walk is not None:
                try:
                    got = walk.read(layer)
                    if i == 0 and not walk.checked(layer, seqs, got):
                        got = None
                except Exception as exc:  # a family whose blocks cannot be re-run this way: fresh reads
                    log.info("layer walk failed for %s (%s)", lm.adapter.family, exc)
                    got = None
                if got is None:
                    walk = None
            k_rows, m, top = got if got is not None else fresh(layer)
            keys = average_keys(k_rows, len(reqs), n_ctx, key_averaging)  # [d_mlp, n]
            resid, gap = residual(i, layer, top.T, keys)
            norm = lm.adapter.post_mlp_norm(layer)
            if norm is not None and through_norm:  # Gemma 2/3: ask the projection for what the norm turns into resid
                resid = through_post_norm(norm, m, resid.T).T
                mapped = True
            delta = solve(layer, resid, keys)
            weight = lm.adapter.mlp_out_weight(layer)
            name = lm.adapter.mlp_out_param_name(layer)
            param_delta = lm.adapter.to_param_layout(delta.to(weight.device)).to(weight.dtype).contiguous()
            scope.apply(Patch({name: param_delta}), checkpoint=False)
            deltas[name] = param_delta
            keys_at[layer] = keys
            per_layer.append({"layer": layer, "update_norm": float(delta.norm()), "residual_norm": gap})
        top_final = module_io_at(lm, top_slot, z_layer, [p[0] for p in plain], [p[1] for p in plain],
                                 "out").double().T
    return Spread(deltas, keys_at, per_layer, top_final, walk is not None, mapped)


def range_layers(lm, layers: Sequence[int]) -> list[int]:
    """The layer range ``R`` from a ``layers`` hyper-parameter (checked, sorted; ``()``: MEMIT's
    :func:`~editcore.methods.memit.auto_layers`)."""
    from .memit import auto_layers

    return sorted({lm.adapter.check_layer(int(x)) for x in layers}) if layers else auto_layers(lm)


def residual_left(target: torch.Tensor, final: torch.Tensor, init: torch.Tensor) -> float:
    """``||target - final|| / ||target - init||``: the share of the wanted change the update did not reach."""
    return float((target - final).norm() / (target - init).norm().clamp_min(1e-12))


class RangeMethod:
    """The shape MEMIT's family shares: :meth:`compute` checks its input, picks the layers (:meth:`layers`)
    and, holding the model's lock, runs the method's ``_compute(lm, reqs, layers, hp, progress, t0, speed)``,
    which ends with :meth:`finish`; :meth:`prepare` computes what an edit reads from the disk cache."""

    batched = True

    def layers(self, lm, hp) -> list[int]:
        return range_layers(lm, hp.layers)

    def check(self, hp) -> None:
        """Hyper-parameter checks of the method's own, before anything runs (raise :class:`InputError`)."""

    def compute(self, lm, requests: Sequence[Request], hp, progress=None, *, speed: Speed | None = None):
        from .base import validate_hparams
        from .common import validate_requests
        from .values import check_statistics_corpus

        t0 = time.perf_counter()
        validate_hparams(hp)
        check_statistics_corpus(hp)
        self.check(hp)
        reqs = validate_requests(lm, requests)
        layers = self.layers(lm, hp)
        with lm.lock:
            return self._compute(lm, reqs, layers, hp, progress, t0, speed or Speed.from_env())

    def prepare(self, lm, hp, progress=None) -> None:
        """Compute and cache the layer statistics and their factors, so the first edit's time is its own."""
        LayerCovariances.load(lm, self.layers(lm, hp), hp, progress)

    def finish(self, lm, hp, reqs: Sequence[Request], layers: list[int], templates: Sequence[str], results,
               sp: Spread, *, t0: float, stats_seconds: float, identity: bool, left: float, warnings: list[str],
               extra: dict | None = None, memory: dict | None = None):
        """The :class:`~editcore.methods.base.Edit`: the spread's deltas as a patch and the diagnostics every
        method of the family reports (``left``: the share of the wanted change at the top the update did not
        reach), plus ``extra``. ``adaptation`` is the method's only where the post-norm mapping ran: on
        pre-norm models the method runs as published."""
        from .base import Edit
        from .values import already_answer_warnings, statistics_warnings

        title = self.info.title
        seconds = time.perf_counter() - t0
        diagnostics = {
            "layers": layers,
            **value_diagnostics(results),
            "stats_seconds": stats_seconds,
            "update_norm": update_norm(sp.deltas),
            "per_layer": sp.per_layer,
            "z_residual_left": left,
            "identity_cov": identity,
            "n_contexts": len(templates),
            "layer_walk": sp.walked,
            **(extra or {}),
            "preset": hp.preset,
            "adaptation": self.info.adaptation if sp.through_norm else "",
            "warnings": warnings + already_answer_warnings(reqs, results) + statistics_warnings(lm, layers, hp),
        }
        for w in warnings:
            log.warning("%s: %s", title, w)
        log.info("%s %d request(s) over layers %s: |dW|=%.3g, %.2fs", title, len(reqs), layers,
                 diagnostics["update_norm"], seconds)
        patch = Patch(sp.deltas, label=batch_label(title, reqs), memory=memory or {})
        return Edit(self.name, tuple(reqs), patch, seconds, diagnostics)


def projection_of(lm, layer: int, keys: torch.Tensor) -> torch.Tensor:
    """The MLP output projection of ``layer`` applied to ``keys`` ``[d_mlp, n]``: ``W k`` plus any bias,
    ``[d_model, n]`` float64 (the module's own forward, so Conv1D layouts and biases are handled)."""
    with torch.no_grad():
        return lm.adapter.module("mlp_out", layer)(keys.T.to(lm.dtype)).double().T


def update_norm(deltas: dict[str, torch.Tensor]) -> float:
    return float(sum(float(d.double().norm()) ** 2 for d in deltas.values()) ** 0.5)


def batch_label(title: str, reqs: Sequence[Request]) -> str:
    return f"{title} " + "; ".join(f"{r.subject} -> {r.target_new}" for r in reqs[:3]) + (
        f" (+{len(reqs) - 3})" if len(reqs) > 3 else "")


def value_diagnostics(results) -> dict:
    """What every batched method reports about its value optimisation (one batch for all requests)."""
    return {
        "steps": sum(r.steps for r in results),
        "steps_per_request": [r.steps for r in results],
        "loss_curves": [r.losses for r in results],
        "target_probs": [r.target_probs[-1] if r.target_probs else float("nan") for r in results],
        "v_reached_target": all(r.reached for r in results),
        "v_reached_per_request": [r.reached for r in results],
        "v_seconds": results[0].seconds if results else 0.0,
        "block_replay": all(r.replayed for r in results),
        "suffix_replay": all(r.suffix for r in results),
    }
