"""One edit, computed and evaluated (:func:`run_edit`), and several methods on the same fact
(:func:`compare_methods`); results are plain data, cached on disk.

:mod:`editcore.metrics` and the methods load torch; they are imported inside the functions that use them,
so that importing the service (as every page does) stays cheap.
"""

from __future__ import annotations

import time

from ..cases import Case
from ..cases.resolve import resolve_case
from ..errors import InputError
from ..results_cache import ResultsCache, default_cache, make_key
from .choices import method_and_hparams
from .progress import Progress, exclusive, report, scaled
from .views import jsonable, scorecard, word_diff

GENERATION_TOKENS = 16  # before/after continuations shown on the Edit and Compare pages

# What the quick evaluation leaves out: the "general" family holds every generation-based and
# general-ability measure (fluency's greedy continuations, the downstream probes, held-out perplexity),
# which is most of the evaluation time on a CPU.
QUICK_SKIPPED = ("general",)


def evaluation_families(quick: bool = False) -> list[str]:
    """The metric families a (quick or full) evaluation runs, in the metrics module's order."""
    from ..metrics import FAMILIES

    return [f for f in FAMILIES if not (quick and f in QUICK_SKIPPED)]


def _generation_prompts(case: Case, n_generation: int = 3) -> list[tuple[str, str]]:
    prompts = [("edit prompt", case.edit_prompt)]
    prompts += [("paraphrase", p) for p in case.paraphrases[:2]]
    prompts += [("generation", p) for p in case.generation_prompts[:n_generation]]
    if case.neighbourhood:
        prompts.append(("neighbour", case.neighbourhood[0].prompt))
    return prompts


def _target_probs(scorer, case: Case) -> dict:
    """P(new) and P(old) after the edit prompt (teacher-forced product over target tokens), read through
    ``scorer`` (a pre-edit one serves repeats of the same fact from its cache)."""
    targets = [case.target_new] + ([case.target_true] if case.target_true else [])
    scores = scorer.pairs([case.edit_prompt] * len(targets), targets)
    out = {"p_new": scores[0].prob}
    if case.target_true:
        out["p_old"] = scores[1].prob
    return out


def edit_key(lm, case: Case, method: str, version: str, hparams: dict, families: list[str]) -> str:
    # The evaluated families are part of the key: a quick result must never stand in for a full one.
    return make_key(kind="edit", fingerprint=lm.fingerprint, method=method, method_version=version,
                    hparams=hparams, case=case.to_dict(), extra={"families": list(families)})


def run_edit(lm, spec: dict, method: str, overrides: dict | None = None, progress: Progress | None = None,
             use_cache: bool = True, cache: ResultsCache | None = None, quick: bool = False) -> dict:
    """Compute one edit, evaluate it and return plain data (cached on disk). ``quick`` skips the
    families in :data:`QUICK_SKIPPED` (see :func:`~editcore.service.views.not_computed`).

    The model is shared: the whole computation runs under its lock, and the edit exists only inside
    ``lm.scope(patch)`` blocks, so the model is pristine again when this returns or raises.
    """
    from ..metrics import evaluate
    from ..metrics.scoring import Scorer

    cache = cache if cache is not None else default_cache()  # an empty ResultsCache is falsy (__len__)
    case = resolve_case(spec, lm)
    request = case.request().validate()
    m, hp, hp_dict = method_and_hparams(method, lm.name, overrides)
    families = evaluation_families(bool(quick))
    key = edit_key(lm, case, m.name, str(m.version), hp_dict, families)
    if use_cache and (hit := cache.get(key)) is not None:
        report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}

    t0 = time.perf_counter()
    gens = _generation_prompts(case)
    with exclusive(lm, progress):
        with lm.scope():
            report(progress, "reading the unedited model", 0.02)
            # The pristine model's reads go through the pre-edit cache: Compare runs several methods on
            # one fact, and a fact is often edited again.
            probs_pre = _target_probs(Scorer(lm, pre=True), case)
            report(progress, f"computing the {m.name} edit", 0.04)
            edit = m.compute(lm, [request], hp, scaled(progress, 0.04, 0.5, f"{m.name}: "))
        with lm.scope(edit.patch):
            probs_post = _target_probs(Scorer(lm), case)
        t_eval = time.perf_counter()
        report(progress, "evaluating", 0.52)
        with lm.scope():
            # The before/after continuations are decoded in the evaluation's own loops (one per model state).
            evaluation = evaluate(lm, case, edit, families=families,
                                  progress=scaled(progress, 0.52, 0.99, "evaluating: "),
                                  generation_prompts=[p for _, p in gens],
                                  generation_tokens=GENERATION_TOKENS).to_dict()
        eval_seconds = time.perf_counter() - t_eval
        texts = evaluation.pop("generations", [])
        pre, post = [g["pre"] for g in texts], [g["post"] for g in texts]

    result = {
        "key": key,
        "model": {"name": lm.name, "fingerprint": lm.fingerprint},
        "method": {"name": m.name, "version": str(m.version), "hparams": hp_dict},
        "case": case.to_dict(),
        "request": {"prompt": request.text, "target_new": request.target_new, "target_true": request.target_true},
        "seconds": {"edit": float(edit.seconds), "evaluate": eval_seconds, "total": time.perf_counter() - t0},
        "edit": jsonable(edit.summary()),
        "diagnostics": jsonable(edit.diagnostics),
        "probabilities": {"pre": probs_pre, "post": probs_post},
        "generations": [{"kind": kind, "prompt": p, "pre": a, "post": b, "diff": word_diff(a, b)}
                        for (kind, p), a, b in zip(gens, pre, post)],
        "report": jsonable(evaluation),
        "evaluation": {"quick": bool(quick), "families": families},
        "computed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    report(progress, "done", 1.0)
    return {**cache.put(key, result), "cached": False}


def compare_methods(lm, spec: dict, methods: list[str], overrides: dict | None = None,
                    progress: Progress | None = None, use_cache: bool = True, quick: bool = False) -> dict:
    """Run every method on the same fact; one row of metrics (and time) per method."""
    if not methods:
        raise InputError("choose at least one method")
    rows, results = [], {}
    for i, name in enumerate(methods):
        sub = scaled(progress, i / len(methods), (i + 1) / len(methods), f"[{name}] ")
        res = run_edit(lm, spec, name, (overrides or {}).get(name), sub, use_cache, quick=quick)
        results[name] = res
        rows.append({"method": name, **scorecard(res)})
    return {"rows": rows, "results": results}
