"""Where is the fact? Causal traces and the logit lens of one fact, before and after an edit, and traces
averaged over known facts with the layer they suggest. Plain data, cached on disk.

:mod:`editcore.tracing` (and torch) is imported inside the functions, so importing the service stays cheap.
"""

from __future__ import annotations

import time

from ..cases.resolve import resolve_case
from ..errors import InputError
from ..results_cache import default_cache, make_key
from .choices import method_and_hparams
from .progress import Progress, exclusive, report, scaled

SUMMARY_MAX_FACTS = 50


def trace_settings_info() -> dict:
    """What the page offers: the default settings, the paper's values and the kinds of state."""
    from ..tracing.settings import KIND_LABELS, PAPER_SAMPLES, PAPER_WINDOW, TraceSettings

    return {"defaults": TraceSettings().to_dict(), "paper_samples": PAPER_SAMPLES, "paper_window": PAPER_WINDOW,
            "kinds": dict(KIND_LABELS)}


def _view_key(lm, what: str, request: dict, settings, edit) -> str:
    return make_key(kind="trace_view", fingerprint=lm.fingerprint, method=what, case=request,
                    hparams=settings.to_dict(), extra={"edit": edit})


def _cached(cache, key: str, use_cache: bool) -> dict | None:
    hit = cache.get(key) if use_cache else None
    return None if hit is None else {**hit, "cached": True}


def trace_fact(lm, spec: dict, method: str | None = "rome", overrides: dict | None = None,
               settings: dict | None = None, progress: Progress | None = None, use_cache: bool = True) -> dict:
    """The causal traces (residual stream, MLP, attention) and the logit lens of a fact: on the unedited
    model towards the old answer, and, with ``method``, on the model edited towards the new target (the edit
    lives only inside ``lm.scope(patch)``). ``settings``: :class:`~editcore.tracing.settings.TraceSettings`
    fields."""
    from ..tracing.lens import logit_lens
    from ..tracing.settings import TraceSettings
    from ..text import target_ids
    from ..tracing.trace import trace_cached

    st = TraceSettings.from_dict(settings)
    case = resolve_case(spec, lm)
    req = case.request().validate()
    if not req.target_true:
        raise InputError("the fact has no current answer to trace")
    request = {"prompt": req.prompt, "subject": req.subject, "target_true": req.target_true,
               "target_new": req.target_new}
    targets = {"old": req.target_true, "new": req.target_new}
    warnings = []
    first_old, first_new = (target_ids(lm.tokenizer, t)[0] for t in (req.target_true, req.target_new))
    if first_old == first_new:
        warnings.append(f"the old and the new target both begin with the token {lm.tokenizer.decode([first_old])!r}: "
                        "traces and the lens read first tokens, so they cannot tell the two apart here")
    cache = default_cache()
    t0 = time.perf_counter()
    out = {"model": {"name": lm.name, "fingerprint": lm.fingerprint}, "case": case.to_dict(), "request": request,
           "prompt": req.text, "settings": st.to_dict(), "method": None, "after": None, "warnings": warnings}
    key = _view_key(lm, "before", request, st, "")
    before = _cached(cache, key, use_cache)
    with exclusive(lm, progress):
        if before is None:
            with lm.scope():
                tr = trace_cached(lm, req.prompt, req.subject, req.target_true, st, edit_id="",
                                  progress=scaled(progress, 0.0, 0.45 if method else 0.95, "before the edit: "),
                                  use_cache=use_cache)
                before = {**cache.put(key, {"trace": tr, "lens": logit_lens(lm, req.prompt, req.subject, targets)}),
                          "cached": False}
        out["before"] = before
        if method:
            m, hp, hp_dict = method_and_hparams(method, lm.name, overrides)
            out["method"] = {"name": m.name, "version": str(m.version), "hparams": hp_dict}
            edit_id = {**out["method"], "request": request}
            key = _view_key(lm, "after", request, st, edit_id)
            after = _cached(cache, key, use_cache)
            if after is None:
                report(progress, f"computing the {m.name} edit", 0.45)
                with lm.scope():
                    edit = m.compute(lm, [req], hp, scaled(progress, 0.45, 0.6, f"{m.name}: "))
                with lm.scope(edit.patch):
                    tr = trace_cached(lm, req.prompt, req.subject, req.target_new, st, edit_id=edit_id,
                                      progress=scaled(progress, 0.6, 0.98, "after the edit: "), use_cache=use_cache)
                    lens = logit_lens(lm, req.prompt, req.subject, targets)
                diag = edit.diagnostics
                info = {"seconds": float(edit.seconds), "layer": diag.get("layer", diag.get("layers")),
                        "warnings": list(edit.warnings)}
                after = {**cache.put(key, {"trace": tr, "lens": lens, "edit": info}), "cached": False}
            out["after"] = after
    out["seconds"] = time.perf_counter() - t0
    report(progress, "done", 1.0)
    return out


def trace_summary(lm, n_facts: int = 10, settings: dict | None = None, progress: Progress | None = None,
                  use_cache: bool = True) -> dict:
    """Causal traces of ``n_facts`` catalog facts the model knows, averaged (the paper's summary), and the
    ROME layer that suggests (:func:`~editcore.tracing.summary.layer_advice`)."""
    from ..perfbench import known_facts
    from ..tracing.settings import TraceSettings
    from ..tracing.summary import average, layer_advice, strongest
    from ..tracing.trace import trace_cached

    if not isinstance(n_facts, int) or not 1 <= n_facts <= SUMMARY_MAX_FACTS:
        raise InputError(f"the number of facts must be between 1 and {SUMMARY_MAX_FACTS}")
    st = TraceSettings.from_dict(settings)
    cache = default_cache()
    key = make_key(kind="trace_summary", fingerprint=lm.fingerprint, hparams=st.to_dict(), extra={"n": n_facts})
    if use_cache and (hit := cache.get(key)) is not None:
        report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}
    with exclusive(lm, progress), lm.scope():
        report(progress, "finding facts the model knows", 0.0)
        facts = known_facts(lm, n_facts)
        if not facts:
            raise InputError(f"no catalog fact is known by {lm.name}")
        traces = []
        for i, f in enumerate(facts):
            r = f.request
            traces.append(trace_cached(lm, r.prompt, r.subject, r.target_true, st, edit_id="", use_cache=use_cache,
                                       progress=scaled(progress, i / len(facts), (i + 1) / len(facts),
                                                       f"fact {i + 1}/{len(facts)}: ")))
    summary = average(traces)
    result = {"model": lm.name, "facts": [f.id for f in facts], "settings": st.to_dict(), "summary": summary,
              "advice": layer_advice(summary, lm.name),
              "per_fact": [{"fact": f.id, "prompt": t["prompt"], "high": t["high"], "low": t["low"],
                            "strongest_mlp": list(strongest(t)), "subject_last": t["subject_last"]}
                           for f, t in zip(facts, traces)]}
    report(progress, "done", 1.0)
    return {**cache.put(key, result), "cached": False}

