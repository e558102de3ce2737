"""The impact scan of an edit result (:mod:`editcore.metrics.impact`), as the dashboard calls it: the pool
(the fact's own prompts, your text, the benchmark the fact came from, every catalog prompt), the cached
result, and the most affected prompts with their before/after continuations.

The scan needs the edit's patch: the one :func:`~editcore.service.edit.run_edit` just computed when it is
still in memory, otherwise the edit is computed again from the result's case, method and hyper-parameters
(the result then says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..cases import Case
from ..errors import InputError
from ..results_cache import ResultsCache, default_cache, make_key
from .choices import method_and_hparams
from .edit import recent_patch, remember_patch
from .progress import Progress, exclusive, report

log = logging.getLogger(__name__)

TOP = 12  # most affected prompts shown with their continuations
ANSWER_TOKENS = 5
MAX_TEXTS = 200  # prompts a user may add to the pool


def pool_parts(case: Case, *, catalog: bool = True, benchmark: dict | None = None, texts: Sequence[str] = ()):
    """The pool, in scan order: this fact's prompts, your text, the benchmark the fact came from, the
    catalog (a prompt in several parts is scanned once, under the first)."""
    from ..catalog import load_catalog
    from ..metrics import impact

    texts = [t for t in texts if t and t.strip()]
    if len(texts) > MAX_TEXTS:
        raise InputError(f"the impact scan takes at most {MAX_TEXTS} prompts of your own (got {len(texts)})")
    parts = [impact.part_of_cases("this fact", [case], lambda c, kind: f"this fact · {kind}")]
    if texts:
        parts.append(impact.part_of_texts("yours", texts, "typed by you"))
    if benchmark and benchmark.get("name"):
        from ..cases.resolve import benchmark_cases

        cases = benchmark_cases(benchmark["name"], int(benchmark.get("limit", 50)), benchmark.get("path"))
        parts.append(impact.part_of_cases(f"benchmark {benchmark['name']}", cases,
                                          lambda c, kind: f"{benchmark['name']} {c.id} · {kind}"))
    if catalog:
        parts.append(impact.part_of_cases("catalog", load_catalog()))
    return parts


def pool_of(result: dict, catalog: bool = True, texts: Sequence[str] = ()) -> list:
    spec = result.get("spec") or {}
    bench = {k: spec.get(k) for k in ("name", "limit", "path")} if spec.get("source") == "benchmark" else None
    return pool_parts(Case.from_dict(result["case"]), catalog=catalog, benchmark=bench, texts=texts)


def impact_key(lm, result: dict, parts) -> str:
    from ..metrics import impact

    return make_key(kind="impact", fingerprint=lm.fingerprint, extra={
        "edit": result["key"], "version": impact.VERSION, "target": result["request"]["target_new"],
        "pool": [[p.name, p.digest()] for p in parts]})


def impact_cached(lm, result: dict, catalog: bool = True, texts: Sequence[str] = (),
                  cache: ResultsCache | None = None) -> dict | None:
    """The stored scan of this result and pool, or None."""
    cache = cache if cache is not None else default_cache()
    hit = cache.get(impact_key(lm, result, pool_of(result, catalog, texts)))
    return {**hit, "cached": True} if hit is not None else None


def _patch_for(lm, result: dict, progress: Progress | None):
    """The result's patch: kept in memory since the edit, or computed again (a result from the disk cache)."""
    patch = recent_patch(result["key"])
    if patch is not None:
        return patch, False
    m, hp, _ = method_and_hparams(result["method"]["name"], lm.name, result["method"]["hparams"])
    case = Case.from_dict(result["case"])
    report(progress, f"computing the {m.name} edit again for the scan (it was not in memory)", 0.0)
    with lm.scope():
        edit = m.compute(lm, [case.request().validate()], hp)
    remember_patch(result["key"], edit.patch)
    return edit.patch, True


def _continuations(lm, patch, prompts: list[str]) -> tuple[list[str], list[str]]:
    from ..metrics.scoring import Scorer

    with lm.scope():
        before = Scorer(lm, pre=True).greedy(prompts, ANSWER_TOKENS)
    with lm.scope(patch):
        after = Scorer(lm).greedy(prompts, ANSWER_TOKENS)
    return before, after


def impact_view(rows: Sequence[dict], total: int, done: bool) -> dict:
    """Plain data the page draws, from scan rows so far: the summary, the rows ranked by KL (flips first
    among equal KL), the distribution's values, and the fact's own neighbour KLs for reference."""
    from ..metrics import impact

    ranked = sorted(rows, key=lambda r: (-(r["kl"] or 0.0), not r["flipped"]))
    neigh = [r["kl"] for r in rows if r["source"] == "this fact · neighbour"]
    return {"summary": impact.summary(rows), "ranked": ranked, "kl": [r["kl"] for r in rows],
            "parts": sorted({r["part"] for r in rows}), "scanned": len(rows), "total": total, "done": done,
            "neighbour_mean": sum(neigh) / len(neigh) if neigh else None}


def impact_scan(lm, result: dict, *, catalog: bool = True, texts: Sequence[str] = (),
                progress: Progress | None = None, on_chunk: Callable[[dict], None] | None = None,
                use_cache: bool = True, cache: ResultsCache | None = None) -> dict:
    """Scan the pool for what this edit changed (see :mod:`editcore.metrics.impact`); plain data, cached
    on disk. ``on_chunk(view)`` gets :func:`impact_view` of the rows scanned so far after every chunk."""
    from ..metrics import impact

    cache = cache if cache is not None else default_cache()
    parts = pool_of(result, catalog, texts)
    key = impact_key(lm, result, parts)
    if use_cache and (hit := cache.get(key)) is not None:
        report(progress, "loaded from the results cache", 1.0)
        return {**hit, "cached": True}
    with exclusive(lm, progress):
        patch, recomputed = _patch_for(lm, result, progress)

    def chunk(scan, total):
        if on_chunk is not None:
            on_chunk(impact_view([r.to_dict() for r in scan.rows], total, False))

    # Each chunk takes the model's lock on its own, so another session's edit can run between two chunks.
    scan = impact.scan(lm, patch, parts, target_new=result["request"]["target_new"], progress=progress,
                       on_chunk=chunk)
    rows = [r.to_dict() for r in scan.rows]
    view = impact_view(rows, len(rows), True)
    top = [r["prompt"] for r in view["ranked"][:TOP]]
    report(progress, f"continuing the {len(top)} most affected prompts before and after the edit", 0.99)
    before, after = _continuations(lm, patch, top)
    out = {
        "key": key, "edit_key": result["key"], "rows": rows,
        "top": [{"prompt": p, "before": b, "after": a} for p, b, a in zip(top, before, after)],
        "parts": [{"name": p.name, "prompts": len(p.prompts)} for p in parts],
        "seconds": scan.seconds, "prompts_per_second": len(rows) / scan.seconds if scan.seconds else None,
        "vocab_size": scan.vocab_size, "edit_recomputed": recomputed, "target_new": result["request"]["target_new"],
    }
    report(progress, "done", 1.0)
    return {**cache.put(key, out), "cached": False}


def prepare_impact(lm, progress: Progress | None = None) -> dict:
    """Read the unedited model on every catalog prompt once and cache it (``make run`` does this), so the
    first scan spends its time on the edited model only."""
    from ..catalog import load_catalog
    from ..metrics import impact

    part = impact.part_of_cases("catalog", load_catalog())
    was = impact.is_cached(lm, part)
    impact.unedited_hidden(lm, part, progress)
    return {"prompts": len(part.prompts), "was_cached": was}


# ---- bench (perfbench.SECTIONS) -----------------------------------------------------------------------------
BENCH_FACTS = (  # typed-in facts that no catalog fact has: what a user tries on the Edit page
    {"prompt": "The Mona Lisa hangs in a museum in the city of", "subject": "The Mona Lisa", "target_new": "London"},
    {"prompt": "The Brandenburg Gate stands in the city of", "subject": "The Brandenburg Gate", "target_new": "Rome"},
)


def bench_section(lm, facts, common) -> dict | None:
    """Seconds from **Run edit** to each stage of a free-form ROME edit with the quick evaluation (model
    loaded, statistics cached, nothing of the fact cached), and the impact scan's speed over the catalog."""
    import tempfile

    from ..methods import available
    from ..metrics import scoring
    from ..results_cache import ResultsCache
    from .edit import run_edit

    if "rome" not in available():
        return None

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultsCache(tmp)
        for i, spec in enumerate(BENCH_FACTS):
            t0 = time.perf_counter()
            seen: dict[str, float] = {}
            result = run_edit(lm, {"source": "free", **spec}, "rome", {k: v for k, v in common.items()
                                                                      if k in ("stats_samples", "stats_corpus")},
                              cache=cache, quick=True,
                              on_stage=lambda name, _r: seen.setdefault(name, time.perf_counter() - t0))
            prepared = _unedited_cached(lm)
            t1 = time.perf_counter()
            scan = impact_scan(lm, result, cache=cache)
            rows.append({"fact": f"{spec['subject']} → {spec['target_new']}",
                         "run": "first edit of the process" if i == 0 else "another fact, warm",
                         "edit (s)": seen.get("edit"), "texts + scorecard (s)": seen.get("scorecard"),
                         "all views (s)": seen.get("views"), "impact scan (s)": time.perf_counter() - t1,
                         "scanned": len(scan["rows"]), "prompts/s": scan["prompts_per_second"],
                         "unedited side cached": prepared, "neighbours": len(result["neighbourhood"])})
    scoring.clear_cache(disk=False)
    return {"title": "What-if edits (Edit page, free-form ROME, quick evaluation): seconds to each view",
            "columns": ["fact", "run", "edit (s)", "texts + scorecard (s)", "all views (s)", "impact scan (s)",
                        "scanned", "prompts/s", "unedited side cached", "neighbours"],
            "rows": rows,
            "note": "Stages as service.run_edit reports them to the page (drawing not included; the browser "
                    "walk-through measures that). Targets: texts and scorecard <= 5 s, every chart <= 8 s, "
                    ">= 2,000 impact-scan prompts in <= 20 s. The scan reads every catalog prompt, this fact's "
                    "own and none typed; its unedited side comes from the disk cache (make run computes it)."}


def _unedited_cached(lm) -> bool:
    from ..catalog import load_catalog
    from ..metrics import impact

    return impact.is_cached(lm, impact.part_of_cases("catalog", load_catalog()))
