"""The guided tour of knowledge-editing pitfalls (issue 21): for each step, search the catalog for a case
that shows the step's effect on *this* model, with real edits, and say so when none does.

Every edit goes through the service's own runs (``run_edit``, the conflict / round-trip metrics,
``sequential_run``, causal tracing), each cached on disk; the search's outcome is cached too, keyed by model
fingerprint, step, tour version, method and hyper-parameters, so a classroom demo is instant after the
first run. Steps 7 and 8 need other parts of EditScope (a parameter-preserving method; causal tracing): they
look for them at run time and say what is missing.
"""

from __future__ import annotations

import importlib.util
import time

from .. import catalog, methods
from ..cases import CONFLICT_TYPES, Case
from ..errors import InputError
from ..results_cache import default_cache, make_key
from ..tour import effects
from ..tour.steps import BY_ID, STEPS
from .choices import method_and_hparams
from .edit import run_edit
from .progress import Progress, exclusive, report, scaled
from .sequential import sequential_config, sequential_run
from .views import jsonable

TOUR_VERSION = "1"
DEFAULT_BUDGET = 4  # facts (or pairs) tried per step before the tour says the model shows no such case
BUDGET_MAX = 20
# Methods that keep the base weights and route edited inputs to a memory: step 7's contrast.
PRESERVING = ("grace", "serac", "wise")
# The fact the Big-Ben step tries first: the survey's own example, with London as a free target.
LOUVRE = {"source": "catalog", "id": "P276:louvre", "target_new": "London"}


def tracing_available() -> bool:
    return importlib.util.find_spec("editcore.tracing") is not None and \
        importlib.util.find_spec("editcore.service.trace") is not None


def preserving_methods() -> list[str]:
    """Registered parameter-preserving methods that can edit without a training run first."""
    out = []
    for name in PRESERVING:
        if name in methods.available():
            try:
                if not getattr(methods.get_method(name), "needs_training", False):
                    out.append(name)
            except Exception:  # noqa: BLE001 - a half-landed method is simply not offered
                continue
    return out


def _needs(step_id: str) -> str | None:
    if step_id == "deterioration" and not preserving_methods():
        return ("a parameter-preserving method (GRACE, SERAC or WISE) for the contrast; the weight-editing run "
                "alone is shown")
    if step_id == "location" and not tracing_available():
        return "causal tracing (editcore.tracing), which is not installed in this version"
    return None


def tour_steps() -> list[dict]:
    """Every step's text, with what it still needs in this installation (``needs``; None when complete)."""
    return [{**s.to_dict(), "needs": _needs(s.id)} for s in STEPS]


# ---- candidates -----------------------------------------------------------------------------------
def _fact_order(lm) -> list[Case]:
    """Catalog facts, the ones this model is known to answer first (the committed knowledge check; an
    unknown model keeps catalog order rather than paying for a check of 515 facts)."""
    facts = catalog.load_catalog()
    known = catalog.known_facts(lm.name)
    if known is None:
        return facts
    return [c for c in facts if c.id in known] + [c for c in facts if c.id not in known]


def _fact_specs(lm, step_id: str) -> list[dict]:
    def usable(c: Case) -> bool:
        t = c.targets_new[0]
        if step_id == "reliability":
            return bool(c.paraphrases)
        if step_id == "portability":
            return bool(c.one_hop_for(t) or c.reverse)
        if step_id == "locality":
            return bool(c.neighbourhood)
        return bool(c.related)

    specs = [{"source": "catalog", "id": c.id, "target_new": c.targets_new[0]} for c in _fact_order(lm) if usable(c)]
    return ([LOUVRE] if step_id == "bigben" else []) + specs


def _pair_cases(kind: str) -> list:
    if kind == "conflict":
        cases = catalog.load_conflicts()
        # One of each conflict type in turn, so a small budget still sees every kind.
        by_type = [[c for c in cases if c.type == t] for t in CONFLICT_TYPES]
        return [g[i] for i in range(max(map(len, by_type), default=0)) for g in by_type if i < len(g)]
    return catalog.load_roundtrips()


def _pair_outcome(lm, kind: str, case, name: str, overrides: dict | None, use_cache: bool) -> dict:
    """One ConflictEdit pair or RoundEdit round trip with ``name``, cached per case."""
    from ..metrics import conflicts as cm

    m, hp, hp_dict = method_and_hparams(name, lm.name, overrides)
    key = make_key(kind=f"tour_{kind}", fingerprint=lm.fingerprint, method=m.name, method_version=str(m.version),
                   hparams=hp_dict, case=case.to_dict())
    cache = default_cache()
    if use_cache and (hit := cache.get(key)) is not None:
        return hit

    def patch_of(lm_, req):
        return m.compute(lm_, [req], hp, None).patch

    if kind == "conflict":
        out = cm.run_conflict(lm, cm.conflict_spec_from_case(case), patch_of)
        e1, e2 = case.edits
        info = {"edit1": f"{e1.edit_prompt} {e1.target_true} → {e1.target_new}",
                "edit2": f"{e2.edit_prompt} {e2.target_true} → {e2.target_new}"}
    else:
        spec = cm.round_spec_from_case(case)
        out = cm.run_roundtrip(lm, spec, patch_of)
        f = spec.forward
        info = {"forward": f"{f.text} {f.target_true} → {f.target_new}",
                "backward": f"… {f.target_new} → {f.target_true}", "others": list(spec.others)}
    return cache.put(key, jsonable({**out.__dict__, **info, "id": case.id, "method": m.name}))


# ---- the steps ------------------------------------------------------------------------------------
def _edit_step(lm, step_id, method, overrides, budget, progress, use_cache) -> dict:
    specs = _fact_specs(lm, step_id)[:budget]
    tried, examples, roles = [], [], set()
    for i, spec in enumerate(specs):
        sub = scaled(progress, i / len(specs), (i + 1) / len(specs), f"fact {i + 1}/{len(specs)}: ")
        result = run_edit(lm, spec, method, overrides, sub, use_cache=use_cache, quick=True)
        if step_id == "reliability":
            role, view = effects.reliability(result)
            shows = role is not None and role not in roles
            if shows:
                roles.add(role)
                examples.append({**view, "role": role})
        else:
            shows, view = getattr(effects, step_id)(result)
            if shows and not examples:
                examples.append(view)
        tried.append({"label": effects.edit_label(result), "method": method, "shows": bool(shows),
                      "cached": bool(result.get("cached"))})
        if (step_id == "reliability" and len(roles) == 2) or (step_id != "reliability" and examples):
            break
    if step_id == "reliability":
        found = len(roles) == 2
        missing = {"generalises", "fails on a paraphrase"} - roles
        message = ("" if found else f"none of the {len(tried)} facts tried gave an edit that "
                   + " or that ".join(sorted(missing)) + f" with {method} on {lm.name}")
        if not examples and tried:
            examples.append({**effects.reliability(result)[1], "role": None, "shows": False})
    else:
        found = bool(examples)
        message = "" if found else f"none of the {len(tried)} facts tried shows this with {method} on {lm.name}"
        if not found and tried:
            # Still show what the last fact did: the absence of the effect is a result too.
            examples.append({**getattr(effects, step_id)(result)[1], "shows": False})
    return {"found": found, "message": message, "examples": examples, "tried": tried}


def _pair_step(lm, kind, method, overrides, budget, progress, use_cache) -> dict:
    reader = effects.conflict if kind == "conflict" else effects.roundtrip
    cases = _pair_cases(kind)[:budget]
    tried, examples = [], []
    with exclusive(lm, progress):
        for i, case in enumerate(cases):
            report(progress, f"{kind} {i + 1}/{len(cases)}: {case.id}", i / len(cases))
            shows, view = reader(_pair_outcome(lm, kind, case, method, overrides, use_cache))
            tried.append({"label": case.id, "method": method, "shows": bool(shows)})
            if shows:
                examples.append(view)
                break
    found = bool(examples)
    if not found and tried:
        examples.append({**view, "shows": False})
    return {"found": found, "examples": examples, "tried": tried,
            "message": "" if found else f"none of the {len(tried)} {kind} cases tried shows this with {method}"}


def _sequential_step(lm, method, overrides, n_edits, progress, use_cache) -> dict:
    contrast = [m for m in preserving_methods() if m != method][:1]
    names = [method] + contrast
    cfg = sequential_config(names, n_edits, "catalog", 0, max(1, n_edits // 2),
                            {n: (overrides or {}).get(n) or {} for n in names},
                            known_only=catalog.known_facts(lm.name) is not None)
    out = sequential_run(lm, cfg, progress, use_cache=use_cache)
    examples = []
    for name in names:
        run = out["runs"].get(name)
        if run is None:
            continue
        shows, view = effects.deterioration(run)
        examples.append({**view, "method": name, "shows": bool(shows), "preserving": name in PRESERVING,
                         "points": run["points"], "adaptation": run.get("adaptation") or ""})
    found = bool(examples) and examples[0]["shows"]
    message = "" if found else (f"{n_edits} sequential {method} edits did not raise perplexity by "
                                f"{effects.PPL_RISE:.0%} or lower probe accuracy by two standard errors on {lm.name}; "
                                "a longer run may")
    return {"found": found, "examples": examples, "message": message,
            "tried": [{"label": f"{n_edits} edits", "method": n, "shows": e["shows"]} for n, e in zip(names, examples)]}


def _trace_step(lm, method, overrides, progress, use_cache) -> dict:
    from ..tracing.summary import strongest
    from .trace import trace_fact

    spec = next(iter(_fact_specs(lm, "locality")), LOUVRE)
    res = trace_fact(lm, spec, method, (overrides or {}).get(method), None, progress, use_cache)
    shows, view = effects.location(res, strongest)
    return {"found": shows, "examples": [{**view, "trace": res}],
            "tried": [{"label": res.get("prompt", ""), "method": method, "shows": shows}],
            "message": "" if shows else "the trace has no MLP scores to locate the fact with"}


def _key(lm, step_id: str, method: str, hp_dict: dict, budget: int, n_edits: int) -> str:
    return make_key(kind="tour", fingerprint=lm.fingerprint, method=method, hparams=hp_dict,
                    extra={"step": step_id, "tour": TOUR_VERSION, "budget": budget, "n_edits": n_edits,
                           "preserving": preserving_methods(), "tracing": tracing_available()})


def _validated(lm, step_id, method, overrides, budget, n_edits):
    if step_id not in BY_ID:
        raise InputError(f"unknown tour step {step_id!r}")
    if not 1 <= int(budget) <= BUDGET_MAX:
        raise InputError(f"the number of facts to try must be between 1 and {BUDGET_MAX}")
    m, _hp, hp_dict = method_and_hparams(method, lm.name, (overrides or {}).get(method))
    return m, hp_dict


def tour_cached(lm, step_id: str, method: str, overrides: dict | None = None, budget: int = DEFAULT_BUDGET,
                n_edits: int = 10) -> dict | None:
    """The stored outcome of this step (as :func:`tour_step` would return it), or None."""
    m, hp_dict = _validated(lm, step_id, method, overrides, budget, n_edits)
    hit = default_cache().get(_key(lm, step_id, m.name, hp_dict, int(budget), int(n_edits)))
    return None if hit is None else {**hit, "cached": True}


def tour_step(lm, step_id: str, method: str, overrides: dict | None = None, budget: int = DEFAULT_BUDGET,
              n_edits: int = 10, progress: Progress | None = None, use_cache: bool = True) -> dict:
    """Run one step of the tour: search up to ``budget`` catalog cases for one that shows the step's effect
    with ``method`` on ``lm`` (``n_edits``: step 7's sequential run). ``overrides``: hyper-parameters per
    method name. Returns plain data: the step's text, ``found``, ``message`` (why nothing was found),
    ``examples`` (the views to draw), ``tried`` (every case tried) and ``needs`` (what is missing)."""
    m, hp_dict = _validated(lm, step_id, method, overrides, budget, n_edits)
    key = _key(lm, step_id, m.name, hp_dict, int(budget), int(n_edits))
    cache = default_cache()
    if use_cache and (hit := cache.get(key)) is not None:
        report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}
    step = BY_ID[step_id]
    t0 = time.perf_counter()
    needs = _needs(step_id)
    if step.kind == "trace" and needs:
        body = {"found": False, "examples": [], "tried": [], "message": f"needs {needs}"}
    elif step.kind == "edit":
        body = _edit_step(lm, step_id, m.name, (overrides or {}).get(method), int(budget), progress, use_cache)
    elif step.kind in ("conflict", "round"):
        body = _pair_step(lm, step.kind, m.name, (overrides or {}).get(method), int(budget), progress, use_cache)
    elif step.kind == "sequential":
        body = _sequential_step(lm, m.name, overrides, int(n_edits), progress, use_cache)
    else:
        body = _trace_step(lm, m.name, overrides, progress, use_cache)
    result = {"step": step.to_dict(), "needs": needs, "model": lm.name, "method": m.name,
              "seconds": time.perf_counter() - t0, **body}
    report(progress, "done", 1.0)
    return {**cache.put(key, jsonable(result)), "cached": False}
