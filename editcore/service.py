"""Everything the dashboard calls: model loading, generation, running and evaluating edits, comparing
methods, sequential runs and pitfall benchmarks — with on-disk result caching.

Pages never import torch or transformers; they pass plain data (names, dicts, numbers) in and get plain,
JSON-serialisable dicts back. Every failure a user can cause raises :class:`EditScopeError`.

Concurrency: the base model is shared between browser sessions. Every read of it and every edit runs
inside ``lm.scope()``, which holds the model's lock, so one session's edit is never seen by another and
the model is restored bit-for-bit afterwards (also when a run is stopped or fails). A caller that has
to wait for the lock is told so through its progress callback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import paths
from .cases import Case
from .cases.resolve import (benchmark_cases, catalog_related_words, is_case_target, resolve_case,
                            with_new_target)
from .errors import EditScopeError, InputError
from .results_cache import ResultsCache, default_cache, make_key

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

WAITING_MESSAGE = "waiting for another session's edit…"


class Cancelled(EditScopeError):
    """The user stopped a run; the model has been restored."""


# ==== models ===================================================================================
# Models registered in this process (the tests' tiny random models): name -> factory() -> LM.
_REGISTERED: dict[str, Callable[[], Any]] = {}


def register_model(name: str, factory: Callable[[], Any]) -> None:
    """Offer ``name`` in the model picker, built by ``factory()`` instead of the model registry. Registered
    models are listed before the built-in ones, and the first one registered is the default."""
    _REGISTERED[name] = factory


def unregister_model(name: str) -> None:
    _REGISTERED.pop(name, None)


def model_choices() -> list[str]:
    from .models import BUILTIN

    return list(_REGISTERED) + list(BUILTIN)


def default_model() -> str:
    from .models.registry import DEFAULT_MODEL

    return next(iter(_REGISTERED), DEFAULT_MODEL)


def load_model(name: str, progress: Progress | None = None):
    """The shared :class:`~editcore.models.LM` for a registered or built-in name, a local path or a hub id."""
    name = (name or "").strip()
    if name in _REGISTERED:
        return _REGISTERED[name]()
    from .models import load_model as _load

    return _load(name, progress=progress)


def model_info(lm) -> dict:
    from .text import context_length

    n_params = sum(p.numel() for p in lm.model.parameters())
    return {"name": lm.name, "fingerprint": lm.fingerprint, "device": str(lm.device), "dtype": str(lm.dtype),
            "parameters": int(n_params), "context": context_length(lm), **lm.adapter.describe()}


@contextlib.contextmanager
def _exclusive(lm, progress: Progress | None) -> Iterator[None]:
    """Hold the model's lock; tell the user when another session holds it first."""
    if not lm.lock.acquire(blocking=False):
        _report(progress, WAITING_MESSAGE, 0.0)
        lm.lock.acquire()
    try:
        yield
    finally:
        lm.lock.release()


def _report(progress: Progress | None, stage: str, frac: float) -> None:
    if progress is not None:
        progress(stage, min(max(float(frac), 0.0), 1.0))


def _scaled(progress: Progress | None, lo: float, hi: float, prefix: str = "") -> Progress | None:
    """A progress callback mapping a sub-task's 0..1 onto ``lo..hi`` of the caller's bar."""
    if progress is None:
        return None

    def report(stage: str, frac: float) -> None:
        progress(f"{prefix}{stage}", lo + (hi - lo) * min(max(float(frac), 0.0), 1.0))

    return report


# ==== generation ===============================================================================
def generate(lm, prompt: str, max_new_tokens: int = 24, progress: Progress | None = None) -> dict:
    """Greedy continuation of ``prompt`` by the unedited model."""
    from .text import greedy

    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty")
    if not 1 <= int(max_new_tokens) <= 256:
        raise InputError("max new tokens must be between 1 and 256")
    start = time.perf_counter()
    with _exclusive(lm, progress), lm.scope():
        _report(progress, "generating", 0.1)
        text = greedy(lm, [prompt], max_new_tokens=int(max_new_tokens))[0]
    return {"prompt": prompt, "continuation": text, "seconds": time.perf_counter() - start, "model": lm.name}


def word_diff(before: str, after: str) -> list[dict]:
    """Word-level diff of two continuations: ``[{"text", "changed"}]`` segments of ``after``
    (words that are not in the matching part of ``before`` are ``changed``)."""
    a, b = before.split(), after.split()
    out: list[dict] = []
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if j2 > j1:
            out.append({"text": " ".join(b[j1:j2]), "changed": tag != "equal"})
    return out


# ==== methods ==================================================================================
def list_methods() -> list[dict]:
    from . import methods

    out = []
    for name in methods.available():
        try:
            m = methods.get_method(name)
            out.append({"name": m.name, "version": str(m.version), "batched": bool(getattr(m, "batched", False)),
                        "doc": (m.__doc__ or "").strip().splitlines()[0] if m.__doc__ else ""})
        except Exception:  # a half-landed method must not break the picker
            log.exception("method %s failed to load", name)
    return out


def _hp_model_name(lm_or_name) -> str | None:
    return lm_or_name if isinstance(lm_or_name, str) else getattr(lm_or_name, "name", None)


def method_hparams(method: str, model_name: str | None, overrides: dict | None = None) -> list[dict]:
    """The method's hyper-parameters for this model: name, value, valid range/choices, help text."""
    from .methods import get_method
    from .methods.base import hparams_to_dict, load_hparams

    m = get_method(method)
    hp = load_hparams(m.name, m.Hparams, model_name, overrides)
    values = hparams_to_dict(hp)
    rows = []
    for f in dataclasses.fields(hp):
        v = values[f.name]
        kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float" if isinstance(v, float)
                else "list" if isinstance(v, list) else "str")
        rows.append({"name": f.name, "value": v, "kind": kind, "lo": f.metadata.get("lo"), "hi": f.metadata.get("hi"),
                     "choices": list(f.metadata["choices"]) if f.metadata.get("choices") is not None else None,
                     "help": f.metadata.get("help", "")})
    return rows


def _method_and_hparams(method: str, model_name: str | None, overrides: dict | None):
    from .methods import get_method
    from .methods.base import hparams_to_dict, load_hparams

    m = get_method(method)
    hp = load_hparams(m.name, m.Hparams, model_name, overrides or {})
    return m, hp, hparams_to_dict(hp)


# ==== cases ====================================================================================
def _optional(module: str):
    """Import a sibling module that another developer may not have landed yet (None if absent)."""
    try:
        return importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(module):
            return None
        raise


def _facts_file() -> Path:
    return paths.repo_root() / "data" / "facts.jsonl"


def catalog_cases() -> list[Case]:
    """Every fact in the built-in catalog."""
    catalog = _optional("catalog")
    for fn in ("load_catalog", "load_facts", "facts", "load"):
        if catalog is not None and callable(getattr(catalog, fn, None)):
            return [c if isinstance(c, Case) else Case.from_dict(c) for c in getattr(catalog, fn)()]
    path = _facts_file()
    if not path.is_file():
        return []
    return [Case.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def known_case_ids(lm, progress: Progress | None = None) -> set[str]:
    """Ids of catalog facts the model already knows (its greedy answer matches the true object).

    Uses the committed per-model check (``editcore.catalog.known_facts``) when there is one; otherwise
    runs the check once for this model and keeps the answer in the results cache.
    """
    from . import catalog

    known = catalog.known_facts(lm.name)
    if known is not None:
        return set(known)
    cache = default_cache()
    key = make_key(kind="known_facts", fingerprint=lm.fingerprint, extra={"catalog": _catalog_digest()})
    if (hit := cache.get(key)) is not None:
        return set(hit["ids"])
    with _exclusive(lm, progress), lm.scope():
        _report(progress, "checking which catalog facts this model knows (once per model)", 0.0)
        report = catalog.check_model(lm, progress=(lambda done, total: _report(progress, "checking facts",
                                                                               done / max(total, 1))))
    ids = sorted(fid for fid, entry in report["facts"].items() if entry.get("knows_fact"))
    cache.put(key, {"ids": ids})
    return set(ids)


def _catalog_digest() -> str:
    import hashlib

    path = _facts_file()
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def catalog_entries(lm=None, known_only: bool = False, query: str = "") -> list[dict]:
    """Searchable, plain-data list of catalog facts for the fact picker."""
    cases = catalog_cases()
    if known_only:
        if lm is None:
            raise InputError("the 'known by this model' filter needs a loaded model")
        ids = known_case_ids(lm)
        cases = [c for c in cases if c.id in ids]
    q = query.strip().casefold()
    out = []
    for c in cases:
        label = f"{c.edit_prompt} {c.target_true} → {' / '.join(c.targets_new)}"
        if q and q not in label.casefold() and q not in c.id.casefold():
            continue
        out.append({"id": c.id, "label": label, "prompt": c.prompt, "subject": c.subject,
                    "target_true": c.target_true, "targets_new": list(c.targets_new), "relation": c.relation})
    return out


# Benchmarks that hold other kinds of cases (multi-hop, conflicts, round trips) are for the pitfall page.
# Downstream task sets (PIQA, SST-2, ...) are not edits at all.
_NOT_SINGLE_FACT = ("mquake", "conflictedit", "roundedit", "ripple_edits", "piqa", "sst2", "gsm8k", "nq_open",
                    "samsum")


def benchmark_names() -> list[str]:
    """Single-fact public benchmarks whose local file is present (editcore.benchmarks)."""
    bench = _optional("benchmarks")
    if bench is None:
        return []
    data = paths.shared_data()
    return [name for name, b in bench.BENCHMARKS.items()
            if name not in _NOT_SINGLE_FACT and (data / b.default).is_file()]


def benchmark_entries(name: str, limit: int = 50, path: str | None = None) -> list[dict]:
    return [{"id": c.id, "label": f"{c.edit_prompt} {c.target_true} → {' / '.join(c.targets_new)}",
             "targets_new": list(c.targets_new), "target_true": c.target_true}
            for c in benchmark_cases(name, limit, path)]


# ==== one edit + evaluation ====================================================================
GENERATION_TOKENS = 16  # before/after continuations shown on the Edit and Compare pages


def _generation_prompts(case: Case, n_generation: int = 3) -> list[tuple[str, str]]:
    prompts = [("edit prompt", case.edit_prompt)]
    prompts += [("paraphrase", p) for p in case.paraphrases[:2]]
    prompts += [("generation", p) for p in case.generation_prompts[:n_generation]]
    if case.neighbourhood:
        prompts.append(("neighbour", case.neighbourhood[0].prompt))
    return prompts


# What the quick evaluation leaves out: the "general" family holds every generation-based and
# general-ability measure (fluency's greedy continuations, the downstream probes, held-out perplexity),
# which is most of the evaluation time on a CPU.
QUICK_SKIPPED = ("general",)


def evaluation_families(quick: bool = False) -> list[str]:
    """The metric families a (quick or full) evaluation runs, in the metrics module's order."""
    metrics = _optional("metrics")
    families = list(getattr(metrics, "FAMILIES", ())) if metrics is not None else []
    return [f for f in families if not (quick and f in QUICK_SKIPPED)]


def _evaluate(lm, case: Case, edit, progress: Progress | None, families: list[str],
              generation_prompts: Sequence[str] = ()) -> dict:
    metrics = _optional("metrics")
    if metrics is None or not hasattr(metrics, "evaluate"):
        raise EditScopeError("the evaluation metrics (editcore.metrics) are not installed yet")
    report = metrics.evaluate(lm, case, edit, families=families, progress=progress,
                              generation_prompts=generation_prompts, generation_tokens=GENERATION_TOKENS)
    return report.to_dict() if hasattr(report, "to_dict") else dict(report)


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
    families in :data:`QUICK_SKIPPED` (see :func:`not_computed`).

    The model is shared: the whole computation runs under its lock, and the edit exists only inside
    ``lm.scope(patch)`` blocks, so the model is pristine again when this returns or raises.
    """
    from .metrics.scoring import Scorer

    cache = cache if cache is not None else default_cache()  # an empty ResultsCache is falsy (__len__)
    case = resolve_case(spec, lm)
    request = case.request().validate()
    m, hp, hp_dict = _method_and_hparams(method, lm.name, overrides)
    families = evaluation_families(bool(quick))
    key = edit_key(lm, case, m.name, str(m.version), hp_dict, families)
    if use_cache and (hit := cache.get(key)) is not None:
        _report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}

    t0 = time.perf_counter()
    gens = _generation_prompts(case)
    with _exclusive(lm, progress):
        with lm.scope():
            _report(progress, "reading the unedited model", 0.02)
            # The pristine model's reads go through the pre-edit cache: Compare runs several methods on
            # one fact, and a fact is often edited again.
            probs_pre = _target_probs(Scorer(lm, pre=True), case)
            _report(progress, f"computing the {m.name} edit", 0.04)
            edit = m.compute(lm, [request], hp, _scaled(progress, 0.04, 0.5, f"{m.name}: "))
        with lm.scope(edit.patch):
            probs_post = _target_probs(Scorer(lm), case)
        t_eval = time.perf_counter()
        _report(progress, "evaluating", 0.52)
        with lm.scope():
            # The before/after continuations are decoded in the evaluation's own loops (one per model state).
            report = _evaluate(lm, case, edit, _scaled(progress, 0.52, 0.99, "evaluating: "), families,
                               [p for _, p in gens])
        eval_seconds = time.perf_counter() - t_eval
        texts = report.pop("generations", [])
        pre, post = [g["pre"] for g in texts], [g["post"] for g in texts]

    result = {
        "key": key,
        "model": {"name": lm.name, "fingerprint": lm.fingerprint},
        "method": {"name": m.name, "version": str(m.version), "hparams": hp_dict},
        "case": case.to_dict(),
        "request": {"prompt": request.text, "target_new": request.target_new, "target_true": request.target_true},
        "seconds": {"edit": float(edit.seconds), "evaluate": eval_seconds, "total": time.perf_counter() - t0},
        "edit": _jsonable(edit.summary()),
        "diagnostics": _jsonable(edit.diagnostics),
        "probabilities": {"pre": probs_pre, "post": probs_post},
        "generations": [{"kind": kind, "prompt": p, "pre": a, "post": b, "diff": word_diff(a, b)}
                        for (kind, p), a, b in zip(gens, pre, post)],
        "report": _jsonable(report),
        "evaluation": {"quick": bool(quick), "families": families},
        "computed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _report(progress, "done", 1.0)
    return {**cache.put(key, result), "cached": False}


def _jsonable(obj: Any) -> Any:
    """Reduce diagnostics to JSON (tensors become lists or norms; unknown objects their repr)."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "numel"):
        return obj.tolist() if obj.numel() <= 64 else {"shape": list(obj.shape), "norm": float(obj.float().norm())}
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj):
        return _jsonable(dataclasses.asdict(obj))
    return repr(obj)


# ==== comparing methods ========================================================================
def compare_methods(lm, spec: dict, methods: list[str], overrides: dict | None = None,
                    progress: Progress | None = None, use_cache: bool = True, quick: bool = False) -> dict:
    """Run every method on the same fact; one row of metrics (and time) per method."""
    if not methods:
        raise InputError("choose at least one method")
    rows, results = [], {}
    for i, name in enumerate(methods):
        sub = _scaled(progress, i / len(methods), (i + 1) / len(methods), f"[{name}] ")
        res = run_edit(lm, spec, name, (overrides or {}).get(name), sub, use_cache, quick=quick)
        results[name] = res
        rows.append({"method": name, **scorecard(res)})
    return {"rows": rows, "results": results}


# ==== views on a result (plain data for charts and the scorecard) ==============================
# The metric family each scorecard number comes from ("seconds" is always measured).
SCORECARD_FAMILY = {"efficacy": "counterfact", "generalisation": "counterfact", "neighbourhood": "counterfact",
                    "nkl": "nkl", "portability": "portability", "fluency": "general", "perplexity": "general"}


def not_computed(result: dict) -> set[str]:
    """Scorecard keys whose family this evaluation did not run (a quick evaluation, or a family that
    did not exist yet): the page says "not computed" for them, which is not the same as no data."""
    ran = _families(result)
    return {key for key, family in SCORECARD_FAMILY.items() if family not in ran}


def _find(d: Any, *names: str) -> Any:
    """First value found under any of ``names`` (dotted paths allowed) in a nested dict."""
    for name in names:
        cur = d
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                cur = None
                break
        if cur is not None:
            return cur
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        for k in ("mean", "value", "score"):
            if isinstance(v.get(k), (int, float)):
                return float(v[k])
    return None


def _families(result: dict) -> dict:
    return (result.get("report") or {}).get("families") or {}


def _mean(ci: Any) -> float | None:
    """The mean of a metrics CI dict (None when it has no samples)."""
    if isinstance(ci, dict):
        return float(ci["mean"]) if ci.get("n") and isinstance(ci.get("mean"), (int, float)) else None
    return float(ci) if isinstance(ci, (int, float)) and not isinstance(ci, bool) else None


def _pooled(sets: dict, field: str) -> float | None:
    """n-weighted mean of ``field`` over several probe sets (portability: one-hop, subject replace, ...)."""
    total = weight = 0.0
    for s in (sets or {}).values():
        ci = s.get(field) if isinstance(s, dict) else None
        if isinstance(ci, dict) and ci.get("n"):
            total += ci["mean"] * ci["n"]
            weight += ci["n"]
    return total / weight if weight else None


def scorecard(result: dict) -> dict:
    """The headline numbers of one result (None where the evaluation has no data for one), plus the
    unedited model's value where one exists (``<key>_pre``), for before/after deltas."""
    f = _families(result)
    cf = f.get("counterfact") or {}
    cf_pre = (result.get("report") or {}).get("counterfact_pre") or {}
    gen = f.get("general") or {}
    return {
        "efficacy": _mean(cf.get("es")), "efficacy_pre": _mean(cf_pre.get("es")),
        "generalisation": _mean(cf.get("ps")), "generalisation_pre": _mean(cf_pre.get("ps")),
        "neighbourhood": _mean(cf.get("ns")), "neighbourhood_pre": _mean(cf_pre.get("ns")),
        "score": _mean(cf.get("score")),
        "nkl": _mean((f.get("nkl") or {}).get("nkl")),
        "nkl_distracted": _mean((f.get("nkl") or {}).get("distracted_nkl")),
        "portability": _pooled(f.get("portability"), "token_acc"),
        "portability_pre": _pooled(f.get("portability"), "token_acc_pre"),
        "fluency": _mean(gen.get("fluency_post")), "fluency_pre": _mean(gen.get("fluency_pre")),
        "perplexity": _mean(gen.get("perplexity_post")), "perplexity_pre": _mean(gen.get("perplexity_pre")),
        "seconds": float((result.get("seconds") or {}).get("edit", 0.0)),
    }


def _moved(shift: dict, k: int = 6) -> list[dict]:
    toks = list(shift.get("risers", [])) + list(shift.get("fallers", []))
    toks.sort(key=lambda t: -abs(t.get("dlogp") or 0.0))
    return [{"token": t["token"], "before": t["p_pre"], "after": t["p_post"], "dlogp": t["dlogp"]} for t in toks[:k]]


def nkl_rows(result: dict) -> list[dict]:
    """One row per neighbourhood prompt (plain and distracted): NKL and, where the probability-shift
    analysis covered the same prompt, the tokens that moved most."""
    f = _families(result)
    nkl = f.get("nkl") or {}
    moved = {p["prompt"]: _moved(p) for p in (f.get("shifts") or {}).get("prompts", [])}
    rows = [{"prompt": p, "kind": "plain", "nkl": v, "top_moved": moved.get(p, [])}
            for p, v in zip(nkl.get("prompts", []), nkl.get("per_prompt", []))]
    rows += [{"prompt": p, "kind": "distracted", "nkl": v, "top_moved": moved.get(p, [])}
             for p, v in zip(nkl.get("distracted_prompts", []), nkl.get("distracted_per_prompt", []))]
    return rows


def shift_views(result: dict) -> dict:
    """Risers/fallers per prompt group (subject, neighbourhood, unrelated) and per prompt, related words of
    the new and old target before vs after, and the bleed of the new target."""
    sh = _families(result).get("shifts") or {}
    groups = []
    for name, g in (sh.get("groups") or {}).items():
        groups.append({"prompt": f"{name} prompts (mean over the group)", "kind": name,
                       "risers": [_tok(t) for t in g.get("risers", [])],
                       "fallers": [_tok(t) for t in g.get("fallers", [])]})
    per_prompt = [{"group": p["group"], "prompt": p["prompt"], "top before": p["top_pre"], "top after": p["top_post"],
                   "changed": p["top_pre"] != p["top_post"]} for p in sh.get("prompts", [])]
    label = {"new": f"new target ({sh.get('target_new', '')})", "old": f"old target ({sh.get('target_old', '')})"}
    related = [{"word": r["word"], "group": label.get(r["of"], r["of"]), "before": r["p_pre"], "after": r["p_post"],
                "dlogp": _mean(r.get("dlogp")), "source": r.get("source", "")} for r in sh.get("related", [])]
    bleed = sh.get("bleed") or {}
    return {"groups": groups, "per_prompt": per_prompt, "related": related,
            "bleed": {"rate": _mean(bleed.get("rate")), "rise": _mean(bleed.get("rise")),
                      "n": len(bleed.get("prompts", []))} if bleed else None}


def _tok(t: dict) -> dict:
    return {"token": t["token"], "before": t["p_pre"], "after": t["p_post"], "dlogp": t["dlogp"]}


def result_csv_rows(result: dict) -> list[dict]:
    """The result flattened into ``section, name, value`` rows for a CSV download."""
    rows = []

    def walk(prefix: str, v: Any):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{prefix}[{i}]", x)
        else:
            rows.append({"name": prefix, "value": v})

    rows.extend({"name": f"scorecard.{k}", "value": v} for k, v in scorecard(result).items())
    for section in ("request", "method", "seconds", "probabilities", "report"):
        walk(section, result.get(section, {}))
    return rows


# ==== sequential editing =======================================================================
SEQ_MAX_EDITS = 100


def sequential_config(methods: list[str], n_edits: int, source: str = "catalog", seed: int = 0, every: int = 5,
                      overrides: dict | None = None, known_only: bool = False) -> dict:
    """A validated, canonical run configuration (it is also the cache key's payload)."""
    if not methods:
        raise InputError("choose at least one method")
    if not 1 <= int(n_edits) <= SEQ_MAX_EDITS:
        raise InputError(f"the number of edits must be between 1 and {SEQ_MAX_EDITS}")
    if not 1 <= int(every) <= int(n_edits):
        raise InputError("evaluate every k edits with 1 <= k <= the number of edits")
    if source != "catalog" and not source.startswith("benchmark:"):
        raise InputError(f"unknown fact source {source!r}")
    return {"methods": list(methods), "n_edits": int(n_edits), "source": source, "seed": int(seed),
            "every": int(every), "overrides": {m: dict((overrides or {}).get(m) or {}) for m in methods},
            "known_only": bool(known_only)}


def _sequential_cases(lm, cfg: dict) -> list[Case]:
    if cfg["source"] == "catalog":
        pool = catalog_cases()
        if cfg["known_only"]:
            ids = known_case_ids(lm)
            pool = [c for c in pool if c.id in ids]
    else:
        pool = benchmark_cases(cfg["source"].split(":", 1)[1], limit=2000)
    # One edit per subject: a second edit of the same subject would overwrite the first and make
    # "retention" meaningless.
    by_subject: dict[str, Case] = {}
    for c in pool:
        by_subject.setdefault(c.subject.casefold(), c)
    pool = list(by_subject.values())
    if len(pool) < cfg["n_edits"]:
        raise InputError(f"only {len(pool)} distinct facts are available for {cfg['n_edits']} edits")
    return random.Random(cfg["seed"]).sample(pool, cfg["n_edits"])


def _seq_key(lm, cfg: dict, method: str, version: str, hp: dict) -> str:
    extra = {k: cfg[k] for k in ("n_edits", "source", "seed", "every", "known_only")}
    return make_key(kind="sequential", fingerprint=lm.fingerprint, method=method, method_version=version,
                    hparams=hp, extra=extra)


def sequential_cached(lm, cfg: dict) -> dict | None:
    """The stored result of this run configuration (complete or stopped part-way), if any."""
    cache = default_cache()
    runs = {}
    for name in cfg["methods"]:
        m, _hp, hp_dict = _method_and_hparams(name, lm.name, cfg["overrides"].get(name))
        hit = cache.get(_seq_key(lm, cfg, m.name, str(m.version), hp_dict))
        if hit is not None:
            runs[name] = hit
    return {"config": cfg, "runs": runs} if runs else None


def _seq_point(lm, n: int, cases: list[Case], neighbours: list[tuple[str, str, str]], drift: float,
               general: Callable | None) -> dict:
    """Metrics of the current (edited) model after ``n`` edits."""
    from .text import score_targets, target_logprobs

    point: dict[str, Any] = {"n_edits": n, "weight_drift": drift}
    done = cases[:n]
    if done:
        scores = score_targets(lm, [c.edit_prompt for c in done], [c.target_new for c in done])
        point["retention"] = sum(all(s.token_correct) for s in scores) / len(done)
        point["last_edit_top1"] = float(all(scores[-1].token_correct))
    if neighbours:
        prompts = [p for p, _a, _n in neighbours]
        lp_true = target_logprobs(lm, prompts, [a for _p, a, _n in neighbours])
        lp_new = target_logprobs(lm, prompts, [t for _p, _a, t in neighbours])
        point["neighbourhood_score"] = float((lp_true > lp_new).float().mean())
    if general is not None:
        point.update({k: v for k, v in general(lm).items() if isinstance(v, (int, float)) or v is None})
    return point


# Sequential curves: every evaluation point pays for these, so small; the summarisation probe (16 generated
# tokens) and fluency are left to the single-edit report.
SEQ_PROBE_SIZES = {"sentiment": 6, "piqa": 4, "qa": 3, "arithmetic": 3, "summarisation": 0}
SEQ_HELDOUT_CHARS = 1000


def _general_abilities() -> Callable | None:
    """``general(lm) -> dict``: perplexity on held-out text and downstream-probe accuracy (items of all probes
    pooled, plus one key per probe) of the model *as it is now*, for the sequential curves."""
    try:
        from .metrics import general as gen
        from .metrics.scoring import Scorer
    except ImportError:
        return None

    def general(lm) -> dict:
        sc = Scorer(lm)  # not a pre-edit scorer: the model carries the run's kept edits
        g = gen.general_abilities(sc, sc, sizes=SEQ_PROBE_SIZES, heldout_chars=SEQ_HELDOUT_CHARS)
        items = [x for p in g.probes.values() for x in p.items_post]
        out = {"perplexity": g.perplexity_post, "probe_accuracy": sum(items) / len(items) if items else None}
        out.update({f"probe_{k}": p.post.mean for k, p in g.probes.items()})
        return out

    return general


def sequential_run(lm, cfg: dict, progress: Progress | None = None, on_update: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, use_cache: bool = True) -> dict:
    """Apply ``n_edits`` edits one after another (each computed on the already-edited model), evaluating
    every ``every`` edits; one run per method.

    The whole run of a method happens inside one ``lm.scope()``: edits are applied with
    ``checkpoint=False`` (nothing is rolled back individually) and the scope restores the pristine model
    at the end, also when the run is stopped or fails. Partial results are saved after every evaluation,
    so a stopped run still shows (and a reload finds) what was measured.
    """
    import torch

    cache = default_cache()
    cases = _sequential_cases(lm, cfg)
    # A fixed locality probe set for every point: two neighbourhood prompts of every chosen fact, scored
    # with the fact's true answer against its new target (CounterFact NS).
    neighbours = [(p.prompt, p.answer, c.target_new) for c in cases for p in c.neighbourhood[:2]
                  if not _same(p.answer, c.target_new)]
    general = _general_abilities()
    out = {"config": cfg, "cases": [{"id": c.id, "edit": f"{c.edit_prompt} → {c.target_new}"} for c in cases],
           "runs": {}}
    n_methods = len(cfg["methods"])
    for mi, name in enumerate(cfg["methods"]):
        m, hp, hp_dict = _method_and_hparams(name, lm.name, cfg["overrides"].get(name))
        key = _seq_key(lm, cfg, m.name, str(m.version), hp_dict)
        if use_cache and (hit := cache.get(key)) is not None and hit.get("complete"):
            out["runs"][name] = hit
            if on_update:
                on_update(out)
            continue
        run = {"method": m.name, "version": str(m.version), "hparams": hp_dict, "points": [], "complete": False,
               "stopped_after": None, "edit_seconds": 0.0, "failed_edits": 0}
        out["runs"][name] = run
        base = mi / n_methods
        span = 1.0 / n_methods
        drift: dict[str, torch.Tensor] = {}
        applied = 0
        with _exclusive(lm, progress), lm.scope() as scope:
            try:
                _report(progress, f"[{name}] evaluating the unedited model", base)
                run["points"].append(_seq_point(lm, 0, cases, neighbours, 0.0, general))
                for i, case in enumerate(cases):
                    if should_stop is not None and should_stop():
                        run["stopped_after"] = i
                        break
                    _report(progress, f"[{name}] edit {i + 1}/{len(cases)}: {case.edit_prompt} → {case.target_new}",
                            base + span * i / len(cases))
                    edit = m.compute(lm, [case.request()], hp, None)
                    scope.apply(edit.patch, checkpoint=False)
                    applied = i + 1
                    run["edit_seconds"] += float(edit.seconds)
                    for pname, d in edit.patch.deltas.items():
                        d = d.detach().float()
                        drift[pname] = drift[pname] + d.to(drift[pname].device) if pname in drift else d.clone()
                    n = i + 1
                    if n % cfg["every"] == 0 or n == len(cases):
                        # Weight drift: ||W_n - W_0||_F over every edited matrix together.
                        total = float(sum(float(t.norm()) ** 2 for t in drift.values()) ** 0.5)
                        run["points"].append(_seq_point(lm, n, cases, neighbours, total, general))
                        cache.put(key, run)  # a stopped or crashed run still shows what it measured
                        if on_update:
                            on_update(out)
                else:
                    run["complete"] = True
            except BaseException:
                # Interrupted from outside (a dashboard rerun, Ctrl-C) or failed: the stored partial run
                # says how many edits were applied; the scope still restores the model.
                run["stopped_after"] = applied
                cache.put(key, run)
                raise
        cache.put(key, run)
        if on_update:
            on_update(out)
        if run["stopped_after"] is not None:
            break  # a stop ends the whole run, not just this method's part
    else:
        _report(progress, "done", 1.0)
    return out


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# ==== pitfall benchmarks (Li et al. 2024) =========================================================
PITFALL_SOURCES = ("conflicts (catalog)", "round trips (catalog)", "conflictedit (public)", "roundedit (public)")
CONFLICT_TYPES = ("reverse", "composite", "coverage")


def _pitfall_cases(source: str, n: int, path: str | None) -> list:
    from . import catalog

    if source == "conflicts (catalog)":
        cases = catalog.load_conflicts()
    elif source == "round trips (catalog)":
        cases = catalog.load_roundtrips()
    elif source in ("conflictedit (public)", "roundedit (public)"):
        bench = _optional("benchmarks")
        name = source.split(" ")[0]
        if bench is None:
            raise EditScopeError("benchmark loaders (editcore.benchmarks) are not installed")
        if name == "conflictedit" and path and Path(path).is_dir():
            cases = []
            for t in CONFLICT_TYPES:
                f = Path(path) / f"{t}_edit.json"
                if f.is_file():
                    cases += bench.load_benchmark(name, path=str(f), limit=n)[:n]
            if not cases:
                raise InputError(f"no reverse_edit/composite_edit/coverage_edit.json in {path}")
            return cases
        cases = bench.load_benchmark(name, path=path or None, limit=n)
    else:
        raise InputError(f"unknown pitfall benchmark {source!r}")
    if source.startswith("conflict"):
        # n cases of each conflict type, so every column of Table 3 is filled alike.
        return [c for t in CONFLICT_TYPES for c in [c for c in cases if c.type == t][:n]]
    return list(cases)[:n]


def pitfall_run(lm, sources: list[str], methods: list[str], n_cases: int, path: str | None = None,
                overrides: dict | None = None, progress: Progress | None = None, use_cache: bool = True) -> dict:
    """Run ConflictEdit / RoundEdit evaluations (metrics.conflicts) for every method; returns the rows of
    the survey's Table 3 (CS, CM, TFD per conflict type) and Table 4 (Succ, D, IR, FR)."""
    from .metrics import conflicts as cm

    if not sources or not methods:
        raise InputError("choose at least one benchmark and one method")
    if not 1 <= int(n_cases) <= 200:
        raise InputError("the number of cases must be between 1 and 200")
    cache = default_cache()
    jobs = [(s, m) for s in sources for m in methods]
    table3, table4 = [], []
    for ji, (source, name) in enumerate(jobs):
        m, hp, hp_dict = _method_and_hparams(name, lm.name, (overrides or {}).get(name))
        cases = _pitfall_cases(source, int(n_cases), path)
        key = make_key(kind="pitfall", fingerprint=lm.fingerprint, method=m.name, method_version=str(m.version),
                       hparams=hp_dict, case=[c.to_dict() for c in cases], extra={"source": source})
        hit = cache.get(key) if use_cache else None
        if hit is None:
            def patch_of(lm_, req, _m=m, _hp=hp):
                return _m.compute(lm_, [req], _hp, None).patch

            outcomes = []
            with _exclusive(lm, progress):
                for ci, case in enumerate(cases):
                    _report(progress, f"[{name}] {source}: case {ci + 1}/{len(cases)}",
                            (ji + ci / max(len(cases), 1)) / len(jobs))
                    if source.startswith("conflict"):
                        outcomes.append(cm.run_conflict(lm, cm.conflict_spec_from_case(case), patch_of))
                    else:
                        outcomes.append(cm.run_roundtrip(lm, cm.round_spec_from_case(case), patch_of))
            if source.startswith("conflict"):
                hit = {"kind": "conflict", "by_type": {t: cm.ConflictSummary([o for o in outcomes if o.type == t])
                                                       .to_dict() for t in CONFLICT_TYPES}}
            else:
                hit = {"kind": "round", "summary": cm.RoundSummary(outcomes).to_dict()}
            hit = cache.put(key, _jsonable(hit))
        if hit["kind"] == "conflict":
            row = {"method": name, "benchmark": source}
            for t in CONFLICT_TYPES:
                summ = hit["by_type"][t]
                row[f"{t} n"] = len(summ["outcomes"])
                row[f"{t} CS"] = _mean(summ["cs"])
                row[f"{t} CM"] = _mean(summ["cm"])
                if t == "composite":
                    row[f"{t} TFD"] = _mean(summ["tfd"])
            table3.append(row)
        else:
            summ = hit["summary"]
            table4.append({"method": name, "benchmark": source, "n": len(summ["outcomes"]),
                           "Succ": _mean(summ["success"]), "D (JS, nats)": _mean(summ["distortion"]),
                           "IR": _mean(summ["ir"]), "FR": _mean(summ["fr"])})
    _report(progress, "done", 1.0)
    return {"table3": table3, "table4": table4, "model": lm.name,
            "published_gptj": PUBLISHED_GPTJ}


# The paper's GPT-J rows (Li et al. 2024, ICLR). Empty on purpose: no source that could be read here gives
# the published values as text. Looked up (for issue #7): the arXiv HTML of 2310.02129 and its ar5iv copy
# (only the opening sections are stored), and zjunlp/PitfallsKnowledgeEditing README.md, whose results are
# images (img/knowledge_conflict_results.png, img/knowledge_distortion_results.png). Numbers quoted in
# third-party reviews are not the paper's tables and are not used. Fill a value only with its source.
PUBLISHED_GPTJ: dict = {"table3": {}, "table4": {},
                        "note": "the published GPT-J values (Li et al. 2024) could not be read from any available "
                                "source (the authors' repository shows its result tables only as images)"}
