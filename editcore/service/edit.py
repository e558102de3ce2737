"""One edit, computed and evaluated (:func:`run_edit`), and several methods on the same fact
(:func:`compare_methods`); results are plain data, cached on disk.

:mod:`editcore.metrics` and the methods load torch; they are imported inside the functions that use them,
so that importing the service (as every page does) stays cheap.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..cases import Case, answers_equal
from ..cases.resolve import free_form, resolve_case
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


# Patches of recent edits, in memory only (tensors, not results): the impact scan of a result just computed
# reuses its patch instead of computing the edit again.
_PATCHES: OrderedDict[str, object] = OrderedDict()
_PATCHES_LOCK = threading.Lock()
PATCHES_KEPT = 4


def remember_patch(key: str, patch) -> None:
    with _PATCHES_LOCK:
        _PATCHES[key] = patch
        _PATCHES.move_to_end(key)
        while len(_PATCHES) > PATCHES_KEPT:
            _PATCHES.popitem(last=False)


def recent_patch(key: str):
    with _PATCHES_LOCK:
        return _PATCHES.get(key)


# The first pass of the evaluation: what the scorecard and the before/after texts need, drawn while the
# other families run (OnStage).
FIRST_FAMILIES = ("counterfact",)
OnStage = Callable[[str, dict], None]  # (stage name, the result so far): "edit", "scorecard", "views"


def _merge_reports(first: dict, second: dict | None) -> dict:
    if second is None:
        return first
    out = dict(first)
    out["families"] = {**first.get("families", {}), **second.get("families", {})}
    out["seconds"] = {**{f"first_{k}": v for k, v in first.get("seconds", {}).items()},
                      **{f"second_{k}": v for k, v in second.get("seconds", {}).items()}}
    out["notes"] = list(dict.fromkeys([*first.get("notes", []), *second.get("notes", [])]))
    return out


def neighbourhood_rows(case: Case, info=None, spec: dict | None = None) -> list[dict]:
    """The case's neighbour prompts with where each came from (the page lists them beside the NKL chart)."""
    if info is not None:
        return [n.to_dict() for n in info.neighbours if n.answer]
    where = {"catalog": f"catalog fact {case.id}", "benchmark": f"{(spec or {}).get('name', 'benchmark')} record"}
    src = where.get((spec or {}).get("source"), "the case")
    return [{"prompt": p.prompt, "answer": p.answer or case.target_true, "source": src, "fact_id": case.id}
            for p in case.neighbourhood]


def _fact_notes(info) -> list[str]:
    """What the page says about a typed-in fact's old answer and relation."""
    if info is None:
        return []
    notes = []
    if info.typed_answer and info.model_answer and not answers_equal(info.typed_answer, info.model_answer):
        notes.append(f"the unedited model does not answer {info.typed_answer!r} here but {info.model_answer!r}: "
                     "the scores compare the new target with the answer you typed")
    if not info.neighbours:
        notes.append("no neighbourhood: no catalog relation was recognised or chosen and none was typed, so there "
                     "is no NKL and no neighbourhood score")
    return notes


def _request(lm, spec: dict, method: str, overrides: dict | None, quick: bool):
    """What a run is asked to do: the case (and, typed in, what was decided about it), the request, the
    method and its hyper-parameters, the families and the result's cache key."""
    info = None
    if (spec or {}).get("source") == "free":
        case, info = free_form(spec, lm)
    else:
        case = resolve_case(spec, lm)
    request = case.request().validate()
    m, hp, hp_dict = method_and_hparams(method, lm.name, overrides)
    families = evaluation_families(bool(quick))
    key = edit_key(lm, case, m.name, str(m.version), hp_dict, families)
    return case, info, request, m, hp, hp_dict, families, key


def cached_edit(lm, spec: dict, method: str, overrides: dict | None = None, quick: bool = False,
                cache: ResultsCache | None = None) -> dict | None:
    """The stored result of exactly this request, or None; computes nothing (a shared link shows the result
    when it is cached, else waits for **Run edit**)."""
    cache = cache if cache is not None else default_cache()
    key = _request(lm, spec, method, overrides, quick)[-1]
    hit = cache.get(key)
    return {**hit, "cached": True} if hit is not None else None


def free_form_preview(lm, prompt: str, subject: str, typed_answer: str = "", relation: str = "auto",
                      neighbours: list | None = None) -> dict:
    """What the page shows about a typed-in fact before the run: the model's own answer (and the typed one's
    probability when they differ), the relation and the neighbourhood that would be built. Incomplete
    input is no error here: ``{"error": <what is missing>}``."""
    from ..cases.resolve import describe_free_form
    from ..metrics.scoring import Scorer
    from ..neighbours import relation_choices

    try:
        info = describe_free_form(prompt, subject, typed_answer, relation, lm, neighbours)
    except InputError as exc:
        return {"error": str(exc), "relation_choices": relation_choices()}
    out = {**info.to_dict(), "edit_prompt": info.template.format(subject.strip()),
           "relation_choices": relation_choices(), "typed_is_models": None, "p_typed": None, "p_model": None}
    targets = [t for t in dict.fromkeys([info.typed_answer, info.model_answer]) if t]
    if targets:
        with lm.scope():
            scores = Scorer(lm, pre=True).pairs([out["edit_prompt"]] * len(targets), targets)
        probs = dict(zip(targets, (s.prob for s in scores)))
        out["p_model"] = probs.get(info.model_answer)
        if info.typed_answer:
            out["p_typed"] = probs[info.typed_answer]
            out["typed_is_models"] = answers_equal(info.typed_answer, info.model_answer)
    return out


def run_edit(lm, spec: dict, method: str, overrides: dict | None = None, progress: Progress | None = None,
             use_cache: bool = True, cache: ResultsCache | None = None, quick: bool = False,
             on_stage: OnStage | None = None) -> dict:
    """Compute one edit, evaluate it and return plain data (cached on disk). ``quick`` skips the
    families in :data:`QUICK_SKIPPED` (see :func:`~editcore.service.views.not_computed`). ``on_stage`` gets
    the result as it grows: after the edit ("edit": request and probabilities), after the first evaluation
    pass ("scorecard": the before/after texts and the CounterFact family) and at the end ("views").

    The model is shared: the whole computation runs under its lock, and the edit exists only inside
    ``lm.scope(patch)`` blocks, so the model is pristine again when this returns or raises.
    """
    from ..metrics import evaluate
    from ..metrics.scoring import Scorer

    cache = cache if cache is not None else default_cache()  # an empty ResultsCache is falsy (__len__)
    case, info, request, m, hp, hp_dict, families, key = _request(lm, spec, method, overrides, quick)
    if use_cache and (hit := cache.get(key)) is not None:
        report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}

    t0 = time.perf_counter()
    gens = _generation_prompts(case)
    first = [f for f in families if f in FIRST_FAMILIES]
    rest = [f for f in families if f not in FIRST_FAMILIES]
    result = {
        "key": key,
        "model": {"name": lm.name, "fingerprint": lm.fingerprint},
        "method": {"name": m.name, "version": str(m.version), "hparams": hp_dict},
        "case": case.to_dict(),
        "spec": spec,
        "request": {"prompt": request.text, "target_new": request.target_new, "target_true": request.target_true},
        "free_form": info.to_dict() if info is not None else None,
        "neighbourhood": neighbourhood_rows(case, info, spec),
        "fact_notes": _fact_notes(info),
        "evaluation": {"quick": bool(quick), "families": families},
    }

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name, result)

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
        remember_patch(key, edit.patch)
        result.update(edit=jsonable(edit.summary()), diagnostics=jsonable(edit.diagnostics),
                      probabilities={"pre": probs_pre, "post": probs_post},
                      seconds={"edit": float(edit.seconds)})
        stage("edit")
        t_eval = time.perf_counter()
        report(progress, "evaluating: continuations and the CounterFact scores", 0.52)
        with lm.scope():
            # The before/after continuations are decoded in the evaluation's own loops (one per model state).
            # (suggest=0: related words are the shift family's, which runs in the second pass)
            one = evaluate(lm, case, edit, families=first, progress=scaled(progress, 0.52, 0.75, "evaluating: "),
                           suggest=0, generation_prompts=[p for _, p in gens], generation_tokens=GENERATION_TOKENS).to_dict()
        texts = one.pop("generations", [])
        result["generations"] = [{"kind": kind, "prompt": p, "pre": g["pre"], "post": g["post"],
                                  "diff": word_diff(g["pre"], g["post"])} for (kind, p), g in zip(gens, texts)]
        result["report"] = jsonable(one)
        stage("scorecard")
        two = None
        if rest:
            with lm.scope():
                two = evaluate(lm, case, edit, families=rest,
                               progress=scaled(progress, 0.75, 0.99, "evaluating: ")).to_dict()
            two.pop("generations", None)
        eval_seconds = time.perf_counter() - t_eval

    result["report"] = jsonable(_merge_reports(one, two))
    result["seconds"] = {"edit": float(edit.seconds), "evaluate": eval_seconds, "total": time.perf_counter() - t0}
    result["computed_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report(progress, "done", 1.0)
    stored = {**cache.put(key, result), "cached": False}
    stage("views")
    return stored


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
