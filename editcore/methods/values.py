"""The value optimisation of ROME (``compute_v``: v*) and MEMIT (``compute_z``: z*), written once.

For each request a vector ``delta`` is added, at the subject's last token of every context-prefixed prompt,
to the output of the MLP projection at layer ``l`` (ROME, ``slot="mlp_out"``) or of the whole block ``l``
(MEMIT, ``slot="block"``), and optimised with Adam so that the new target follows. The loss per request is

    mean NLL of the target tokens over the contexts
    + kl_factor * KL(P_edited || P_unedited) of the next token after "{subject} is a"   (ROME's "essence")
    + weight_decay * ||delta|| / ||v_init||^2

and after each step ``||delta||`` is clamped to ``clamp_norm_factor * ||v_init||``, ``v_init`` being the
unedited output at the plain prompt. A request stops when its loss falls below ``stop_loss`` (ROME's rule) or
its mean target-token probability reaches ``stop_prob`` (an EditScope early stop; 1 turns it off).

All requests share one batch: the loss is the *sum* of per-request losses and each request has its own
``delta``, so each gets exactly the gradient of its own loss (Adam is per coordinate), as if optimised
alone; a finished request is frozen while the others go on. How the rows run through the model is the
engine's business (:class:`~editcore.methods.value_rows.ValueEngine`).

PMET (``also_at="attn_out"``, with ``slot="mlp_out"``) optimises a second vector per request, added to the
attention output of the same block, with its own weight decay and clamp (both relative to that output's
unedited value); it is returned beside the first (:attr:`ValueResult.also_init`, :attr:`ValueResult.also_delta`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..types import Request
from . import layer_stats
from .base import hparam, preset_hparam
from .layer_stats import DEFAULT_TOKENS
from .speed import Speed
from .value_rows import ValueEngine, ValueRows

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
_BOOL = (True, False)
CONTEXT_STYLES = ("sampled", "rome", "memit")
# ROME's and MEMIT's code compute C over 100,000 Wikipedia articles (``mom2_n_samples``), each up to the
# model's context: tens of millions of tokens. This is a conservative floor for "as many as the reference".
REFERENCE_STATS_TOKENS = 10_000_000


@dataclass(frozen=True)
class ValueHparams:
    """Hyper-parameters every method built on the value optimisation has (ROME, MEMIT and their kin)."""

    v_num_grad_steps: int = hparam(20, lo=1, hi=1000, help="max Adam steps for the value (v*, z*)")
    v_lr: float = hparam(0.5, lo=1e-6, hi=100.0, help="Adam learning rate for the value")
    v_weight_decay: float = hparam(0.5, lo=0.0, hi=1e6, help="weight of ||delta|| / ||v_init||^2")
    clamp_norm_factor: float = hparam(4.0, lo=0.0, hi=1e3, help="||delta|| <= factor * ||v_init||")
    kl_factor: float = hparam(0.0625, lo=0.0, hi=1e3, help="weight of the KL term on '{subject} is a'")
    v_stop_loss: float = hparam(0.05, lo=0.0, hi=100.0, help="stop when the loss is below this (ROME's rule)")
    v_stop_prob: float = hparam(0.9, lo=0.0, hi=1.0, help="stop when mean P(target token) reaches this; 1 = off")
    preset: str = preset_hparam()
    contexts: str = hparam("sampled", choices=CONTEXT_STYLES,
                           help="sampled: context_prefixes prefixes of context_tokens tokens (EditScope's default); "
                                "rome: ROME's 10 of 5 and 10 of 10 tokens from the start token; memit: MEMIT's 5 "
                                "of 10 tokens, one per seed word")
    context_prefixes: int = hparam(5, lo=0, hi=64, help="number of sampled context prefixes (plus the plain prompt)")
    context_tokens: int = hparam(8, lo=1, hi=64, help="tokens per sampled prefix")
    context_seed: int = hparam(0, lo=0, hi=2**31 - 1, help="seed for sampling the prefixes")
    mom2_adjustment: bool = hparam(True, choices=_BOOL, help="use C = E[kk^T] (False: identity)")
    stats_samples: int = hparam(DEFAULT_TOKENS, lo=0, hi=10**9, help="tokens for C; 0 = identity")
    stats_corpus: str = hparam("auto", help="'auto' (the bundled WikiText-2 excerpt), 'bundled', 'model', 'hf:<dataset>' or a local text file")

    def value_settings(self) -> "ValueSettings":
        return ValueSettings(steps=self.v_num_grad_steps, lr=self.v_lr, weight_decay=self.v_weight_decay,
                             clamp_norm_factor=self.clamp_norm_factor, kl_factor=self.kl_factor,
                             stop_loss=self.v_stop_loss, stop_prob=self.v_stop_prob)


@dataclass(frozen=True)
class ValueSettings:
    steps: int = 20
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    stop_loss: float = 5e-2  # ROME's stopping rule
    stop_prob: float = 1.0  # also stop once mean P(target token) reaches this (1.0: ROME's rule only)


@dataclass
class ValueResult:
    v_init: torch.Tensor  # [d] output of the edited module at the subject's last token, plain prompt
    delta: torch.Tensor  # [d] optimised addition
    losses: list[float] = field(default_factory=list)
    target_probs: list[float] = field(default_factory=list)  # mean per-token P(target) over contexts
    steps: int = 0
    seconds: float = 0.0
    reached: bool = False  # the stopping criterion was met (not just out of steps)
    already_answer: bool = False  # the target was already top-1 on every context before optimising
    keys: torch.Tensor | None = None  # [n_contexts, d_mlp] keys at the edited layer (slot "mlp_out" only)
    replayed: bool = True
    suffix: bool = False  # the suffix-only replay was used
    batch_rows: list[int] = field(default_factory=list)  # rows run at each step (shared by the batch)
    also_init: torch.Tensor | None = None  # [d] the second slot's unedited output (PMET's attention), if any
    also_delta: torch.Tensor | None = None  # [d] its optimised addition

    @property
    def v(self) -> torch.Tensor:
        return self.v_init + self.delta


def optimise_value(lm, req: Request, layer: int, templates: Sequence[str], s: ValueSettings, *,
                   slot: str = "mlp_out", progress: Progress | None = None, speed: Speed | None = None) -> ValueResult:
    """One request: :func:`optimise_values` with a batch of one."""
    return optimise_values(lm, [req], layer, templates, s, slot=slot, progress=progress, speed=speed)[0]


def optimise_values(lm, reqs: Sequence[Request], layer: int, templates: Sequence[str], s: ValueSettings, *,
                    slot: str = "mlp_out", also_at: str | None = None, progress: Progress | None = None,
                    speed: Speed | None = None) -> list[ValueResult]:
    """One ``delta`` per request at ``slot``'s output of ``layer`` (and one at ``also_at``'s); see the module
    docstring."""
    t0 = time.perf_counter()
    speed = speed or Speed.from_env()
    rows = ValueRows.build(lm, reqs, templates, share_kl_row=speed.shared_kl_row)
    n_req, dev = len(reqs), lm.device
    per_req = rows.tokens_per_request(dev)

    def zeros():
        return torch.zeros(n_req, lm.adapter.d_model, device=dev, dtype=torch.float32, requires_grad=True)

    delta = zeros()
    also = zeros() if also_at is not None else None
    opt = torch.optim.Adam([delta] if also is None else [delta, also], lr=s.lr)
    results = [ValueResult(torch.zeros(0), torch.zeros(0)) for _ in reqs]
    done = torch.zeros(n_req, dtype=torch.bool, device=dev)
    kl_init: torch.Tensor | None = None  # [n_req, V] log-probabilities on the KL prompt before editing
    with ValueEngine(lm, rows, layer, slot, speed, delta, also_at, also) as engine:
        for it in range(s.steps):
            opt.zero_grad()
            h, at = engine.forward()
            tok_lp, kl_logp, top = lm.adapter.label_log_probs(h, at.labels, want_top=kl_init is None,
                                                              fused=speed.fused_log_probs)
            nll = -torch.zeros(n_req, device=dev).index_add(0, at.loss_owner, tok_lp) / per_req
            if kl_init is None:  # step 0: every request is active
                kl_init = kl_logp.detach().clone()
                hits = torch.zeros(n_req, device=dev).index_add_(0, at.loss_owner, (top == at.labels).float())
                for q in range(n_req):
                    results[q].already_answer = bool(hits[q] == per_req[q])
            kl_act = (kl_logp.exp() * (kl_logp - kl_init[at.kl_owner])).sum(-1)  # ROME's order: KL(edited || init)
            kl = torch.zeros(n_req, device=dev).index_add(0, at.kl_owner, kl_act)
            v_init = engine.v_init
            wd = s.weight_decay * delta.norm(dim=1) / v_init.norm(dim=1).clamp_min(1e-12) ** 2
            if also is not None:
                wd = wd + s.weight_decay * also.norm(dim=1) / engine.also_init.norm(dim=1).clamp_min(1e-12) ** 2
            loss = nll + s.kl_factor * kl + wd  # [n_req]; only the active requests' entries are meaningful
            probs = torch.zeros(n_req, device=dev).index_add_(0, at.loss_owner, tok_lp.detach().exp()) / per_req
            for q in (~done).nonzero().flatten().tolist():
                results[q].losses.append(float(loss[q].detach()))
                results[q].target_probs.append(float(probs[q]))
                results[q].steps = it + 1
                if results[q].losses[-1] < s.stop_loss or results[q].target_probs[-1] >= s.stop_prob:
                    results[q].reached = True
                    done[q] = True
            if progress:
                progress(f"optimising value at layer {layer}", (it + 1) / s.steps)
            if bool(done.all()) or it == s.steps - 1:
                break
            engine.drop_finished(done)
            pairs = [(delta, v_init)] + ([(also, engine.also_init)] if also is not None else [])
            frozen = [d.detach()[done].clone() for d, _ in pairs]
            loss[~done].sum().backward()
            opt.step()
            with torch.no_grad():
                for (d, init), keep in zip(pairs, frozen):
                    d[done] = keep  # Adam's momentum would otherwise keep moving finished requests
                    max_norm = s.clamp_norm_factor * init.norm(dim=1)
                    norms = d.norm(dim=1)
                    over = norms > max_norm
                    d[over] *= (max_norm[over] / norms[over])[:, None]
    seconds = time.perf_counter() - t0
    for q, res in enumerate(results):
        res.v_init = engine.v_init[q]
        res.delta = delta.detach()[q].clone()
        if also is not None:
            res.also_init, res.also_delta = engine.also_init[q], also.detach()[q].clone()
        res.keys = engine.keys[q * rows.n_ctx:(q + 1) * rows.n_ctx] if engine.keys is not None else None
        res.replayed, res.suffix, res.seconds, res.batch_rows = engine.replayed, engine.suffix, seconds, engine.rows_run
    for warning in already_answer_warnings(reqs, results):
        log.warning(warning)
    return results


def already_answer_warnings(reqs: Sequence[Request], results: Sequence[ValueResult]) -> list[str]:
    """One sentence for each request whose new target was already the model's top-1 answer (for an edit's
    ``diagnostics["warnings"]``; :func:`optimise_values` logs them too)."""
    return [f"the new target {req.target_new!r} was already the model's answer to {req.text!r}"
            for req, res in zip(reqs, results) if res.already_answer]


def value_templates(lm, hp: ValueHparams) -> list[str]:
    """The context templates of ``hp.contexts`` (row 0 is always the plain prompt, ``"{}"``)."""
    from .common import context_templates, reference_context_templates

    if hp.contexts == "sampled":
        return context_templates(lm, hp.context_prefixes, hp.context_tokens, hp.context_seed)
    return reference_context_templates(lm, hp.contexts, hp.context_seed)


def check_statistics_corpus(hp: ValueHparams) -> None:
    """The reference preset needs real text for C: sampling millions of tokens from the model is not what
    the papers do and would not finish on a CPU."""
    if hp.preset == "reference" and hp.mom2_adjustment and hp.stats_samples:
        if layer_stats.resolve_corpus(hp.stats_corpus) == "model":
            raise InputError("the reference preset computes the layer statistics from a text corpus: set "
                             "stats_corpus to a local text file (e.g. WikiText) or 'hf:<dataset>'")


def statistics_warnings(lm, layers: Sequence[int], hp: ValueHparams) -> list[str]:
    """Under the reference preset, one sentence when C came from fewer tokens than the reference code's."""
    if hp.preset != "reference" or not hp.mom2_adjustment or not hp.stats_samples:
        return []
    seen = []
    for layer in layers:
        info = layer_stats.cached_info(lm, layer, hp.stats_samples, hp.stats_corpus) or {}
        seen.append(int(info.get("tokens_seen", 0) or 0))
    used = min(seen) if seen else 0
    if used >= REFERENCE_STATS_TOKENS:
        return []
    return [f"layer statistics from {used:,} tokens of {layer_stats.resolve_corpus(hp.stats_corpus)}; ROME's and "
            f"MEMIT's code use 100,000 Wikipedia articles (over {REFERENCE_STATS_TOKENS:,} tokens), so C is "
            "noisier here"]
