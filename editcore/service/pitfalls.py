"""Pitfall benchmarks (Li et al. 2024, ICLR): ConflictEdit pairs of contradicting edits (the survey's
Table 3) and RoundEdit round trips o -> o' -> o (Table 4), on this model, for every chosen method."""

from __future__ import annotations

from pathlib import Path

from ..benchmarks import load_benchmark
from ..cases import CONFLICT_TYPES
from ..catalog import load_conflicts, load_roundtrips
from ..errors import InputError
from ..results_cache import default_cache, make_key
from .choices import method_and_hparams
from .progress import Progress, exclusive, report
from .views import ci_mean, jsonable

PITFALL_SOURCES = ("conflicts (catalog)", "round trips (catalog)", "conflictedit (public)", "roundedit (public)")

# The paper's GPT-J rows. Empty on purpose: no readable source gives the published values as text (the
# authors' repository shows its result tables only as images); fill a value only with its source.
PUBLISHED_GPTJ: dict = {"table3": {}, "table4": {},
                        "note": "the published GPT-J values (Li et al. 2024) could not be read from any available "
                                "source (the authors' repository shows its result tables only as images)"}


def _pitfall_cases(source: str, n: int, path: str | None) -> list:
    if source == "conflicts (catalog)":
        cases = load_conflicts()
    elif source == "round trips (catalog)":
        cases = load_roundtrips()
    elif source in ("conflictedit (public)", "roundedit (public)"):
        name = source.split(" ")[0]
        if name == "conflictedit" and path and Path(path).is_dir():
            cases = []
            for t in CONFLICT_TYPES:
                f = Path(path) / f"{t}_edit.json"
                if f.is_file():
                    cases += load_benchmark(name, path=str(f), limit=n)[:n]
            if not cases:
                raise InputError(f"no reverse_edit/composite_edit/coverage_edit.json in {path}")
            return cases
        cases = load_benchmark(name, path=path or None, limit=n)
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
    from ..metrics import conflicts as cm

    if not sources or not methods:
        raise InputError("choose at least one benchmark and one method")
    if not 1 <= int(n_cases) <= 200:
        raise InputError("the number of cases must be between 1 and 200")
    cache = default_cache()
    jobs = [(s, m) for s in sources for m in methods]
    table3, table4 = [], []
    for ji, (source, name) in enumerate(jobs):
        m, hp, hp_dict = method_and_hparams(name, lm.name, (overrides or {}).get(name))
        cases = _pitfall_cases(source, int(n_cases), path)
        key = make_key(kind="pitfall", fingerprint=lm.fingerprint, method=m.name, method_version=str(m.version),
                       hparams=hp_dict, case=[c.to_dict() for c in cases], extra={"source": source})
        hit = cache.get(key) if use_cache else None
        if hit is None:
            def patch_of(lm_, req, _m=m, _hp=hp):
                return _m.compute(lm_, [req], _hp, None).patch

            outcomes = []
            with exclusive(lm, progress):
                for ci, case in enumerate(cases):
                    report(progress, f"[{name}] {source}: case {ci + 1}/{len(cases)}",
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
            hit = cache.put(key, jsonable(hit))
        if hit["kind"] == "conflict":
            row = {"method": name, "benchmark": source}
            for t in CONFLICT_TYPES:
                summ = hit["by_type"][t]
                row[f"{t} n"] = len(summ["outcomes"])
                row[f"{t} CS"] = ci_mean(summ["cs"])  # explicit (the released scripts' default)
                if t != "coverage":  # the implicit variant equals the explicit one for coverage
                    row[f"{t} CS implicit"] = ci_mean(summ.get("cs_implicit"))
                row[f"{t} CM"] = ci_mean(summ["cm"])
                if t == "composite":
                    row[f"{t} TFD"] = ci_mean(summ["tfd"])
                if t == "coverage":
                    row[f"{t} Succ"] = ci_mean(summ.get("succ"))
            table3.append(row)
        else:
            summ = hit["summary"]
            table4.append({"method": name, "benchmark": source, "n": len(summ["outcomes"]),
                           "Succ": ci_mean(summ["success"]), "D (JS, nats)": ci_mean(summ["distortion"]),
                           "IR": ci_mean(summ["ir"]), "FR": ci_mean(summ["fr"])})
    report(progress, "done", 1.0)
    return {"table3": table3, "table4": table4, "model": lm.name, "published_gptj": PUBLISHED_GPTJ}
