"""One causal trace as plain data, and its cache.

``trace(lm, template, subject, answer, settings)`` runs Meng et al.'s causal tracing on the model *as it is*
(the caller holds the scope: ``lm.scope()`` for the unedited model, ``lm.scope(edit.patch)`` for an edited
one): the probability of the answer's first token on the clean prompt (``high``), with the subject's
embeddings noised (``low``), and with one clean state put back at a time, for each kind (residual stream,
MLP output, attention output), token and layer (``scores[kind][token][layer]``, probabilities, as in the
paper's heatmaps). :func:`trace_cached` keeps results in the results cache, keyed by the model fingerprint,
the prompt, the answer, the settings, the noise scale and what was edited.
"""

from __future__ import annotations

import hashlib
import logging
import time

import torch

from ..results_cache import ResultsCache, default_cache, make_key
from ..scope import Patch
from .noise import embedding_std
from .reference import reference_scores
from .replay import ReplayMismatch, replay_scores
from .runs import prepare
from .settings import KINDS, TraceSettings

log = logging.getLogger(__name__)

VERSION = 1


def token_strings(tokenizer, ids) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def trace(lm, template: str, subject: str, answer: str, settings: TraceSettings | None = None,
          kinds=KINDS, engine: str = "auto", progress=None) -> dict:
    """The causal trace of ``template`` (with ``{}`` for ``subject``) towards ``answer``'s first token.
    ``engine``: "replay" (the batched fast path), "reference" (plain forwards) or "auto" (the replay,
    falling back to the reference if its check fails)."""
    settings = (settings or TraceSettings()).validate()
    t0 = time.perf_counter()
    noise = embedding_std(lm, settings.noise_corpus)
    prep = prepare(lm, template, subject, answer, settings, noise["std"])
    window = settings.window_for(lm.adapter.n_layers)
    used = engine
    if engine in ("auto", "replay"):
        try:
            scores = replay_scores(lm, prep, kinds, window, progress)
            used = "replay"
        except ReplayMismatch as exc:
            if engine == "replay":
                raise
            log.warning("trace replay unavailable for %s (%s); using plain forwards", lm.adapter.family, exc)
            used = "reference"
    if used == "reference":
        scores = reference_scores(lm, prep, kinds, window, progress)
    tokens = token_strings(lm.tokenizer, prep.ids)
    return {
        "version": VERSION,
        "model": lm.name,
        "prompt": template.replace("{}", subject, 1),
        "template": template,
        "subject": subject,
        "answer": answer,
        "answer_token": lm.tokenizer.decode([prep.answer_id]),
        "tokens": tokens,
        "subject_range": [prep.s0, prep.s1],
        "subject_last": prep.s1 - 1,
        "n_layers": lm.adapter.n_layers,
        "high": prep.high,
        "low": prep.low,
        "kinds": {k: {"scores": scores[k].tolist(), "window": 1 if k == "hidden" else window} for k in kinds},
        "settings": settings.to_dict(),
        "noise_std": noise["std"],
        "noise_scale": settings.noise * noise["std"],
        "noise_corpus": noise["corpus"],
        "engine": used,
        "seconds": time.perf_counter() - t0,
    }


def patch_digest(patch: Patch | None) -> str | None:
    """SHA-256 of a patch's parameter deltas (names and bytes); ``""`` for no patch, ``None`` for a patch
    with hooks or an input rewrite (functions have no stable digest: such traces are cached only under an
    explicit edit identity)."""
    if patch is None or (not patch.deltas and not patch.hooks and patch.rewrite is None):
        return ""
    if patch.hooks or patch.rewrite is not None:
        return None
    h = hashlib.sha256()
    for name in sorted(patch.deltas):
        d = patch.deltas[name].detach()
        h.update(name.encode())
        h.update(str(d.dtype).encode())
        h.update(d.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def trace_key(lm, template: str, subject: str, answer: str, settings: TraceSettings, edit) -> str:
    """Cache key of a trace: ``edit`` names what the model carries ("" unedited, a patch digest, or the
    edit's identity: method, version, hyper-parameters and request)."""
    return make_key(kind="trace", fingerprint=lm.fingerprint, method="causal_trace", method_version=str(VERSION),
                    hparams=settings.to_dict(), case={"template": template, "subject": subject, "answer": answer},
                    extra={"edit": edit})


def trace_cached(lm, template: str, subject: str, answer: str, settings: TraceSettings | None = None,
                 patch: Patch | None = None, edit_id=None, progress=None, cache: ResultsCache | None = None,
                 use_cache: bool = True) -> dict:
    """:func:`trace` through the results cache. The caller applies ``patch`` (``lm.scope(patch)``); it is
    passed here only to name the edit in the key (or give ``edit_id``)."""
    settings = (settings or TraceSettings()).validate()
    edit = edit_id if edit_id is not None else patch_digest(patch)
    cacheable = use_cache and edit is not None
    cache = cache if cache is not None else default_cache()
    key = trace_key(lm, template, subject, answer, settings, edit) if edit is not None else None
    if cacheable and (hit := cache.get(key)) is not None:
        if progress is not None:
            progress("trace loaded from the results cache", 1.0)
        return {**hit, "cached": True}
    result = trace(lm, template, subject, answer, settings, progress=progress)
    if key is None:
        return {**result, "cached": False}
    return {**cache.put(key, result), "cached": False}
