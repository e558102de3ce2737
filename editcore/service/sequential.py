"""Sequential editing: many edits one after another, each computed on the already-edited model, with the
model evaluated every few edits (retention of earlier edits, locality, weight drift, general abilities).

A method's whole run happens inside one ``lm.scope()``: edits are applied without checkpoints and the scope
restores the pristine model at the end, also when the run is stopped or fails. Partial results are stored
after every evaluation, so a stopped run still shows (and a reload finds) what was measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..cases import Case, answers_equal
from ..cases.resolve import benchmark_cases
from ..catalog import load_catalog
from ..errors import InputError
from ..results_cache import default_cache, make_key
from .choices import known_case_ids, method_and_hparams
from .progress import Progress, exclusive, report

SEQ_MAX_EDITS = 100

# Every evaluation point pays for these: the two log-likelihood probes (one teacher-forced pass per item), 100
# items each, so the pooled accuracy's paired change has a standard error of a few points; the generation
# probes and fluency are left to the single-edit report.
SEQ_PROBE_SIZES = {"sentiment": 100, "piqa": 100, "qa": 0, "arithmetic": 0, "summarisation": 0}
SEQ_HELDOUT_CHARS = 1000


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
        pool = load_catalog()
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
        m, _hp, hp_dict = method_and_hparams(name, lm.name, cfg["overrides"].get(name))
        hit = cache.get(_seq_key(lm, cfg, m.name, str(m.version), hp_dict))
        if hit is not None:
            runs[name] = hit
    return {"config": cfg, "runs": runs} if runs else None


def _general_abilities(lm) -> dict:
    """Perplexity on held-out text and downstream-probe accuracy (items of all probes pooled, plus one key
    per probe) of the model *as it is now*."""
    from ..metrics.general import general_abilities
    from ..metrics.scoring import Scorer

    from ..metrics.general import standard_error

    sc = Scorer(lm)  # not a pre-edit scorer: the model carries the run's kept edits
    g = general_abilities(sc, sc, sizes=SEQ_PROBE_SIZES, heldout_chars=SEQ_HELDOUT_CHARS)
    items = [x for p in g.probes.values() for x in p.items_post]
    out = {"perplexity": g.perplexity_post, "probe_accuracy": sum(items) / len(items) if items else None,
           "probe_accuracy_se": standard_error(items) if items else None, "probe_items": len(items)}
    out.update({f"probe_{k}": p.post.mean for k, p in g.probes.items()})
    return out


def _seq_point(lm, n: int, cases: list[Case], neighbours: list[tuple[str, str, str]], drift: float) -> dict:
    """Metrics of the current (edited) model after ``n`` edits."""
    from ..text import score_targets

    point: dict[str, Any] = {"n_edits": n, "weight_drift": drift}
    done = cases[:n]
    if done:
        scores = score_targets(lm, [c.edit_prompt for c in done], [c.target_new for c in done])
        point["retention"] = sum(all(s.token_correct) for s in scores) / len(done)
        point["last_edit_top1"] = float(all(scores[-1].token_correct))
    if neighbours:
        # CounterFact's NS in ROME's convention (mean token NLL), as every other NS EditScope shows.
        prompts = [p for p, _a, _n in neighbours]
        s_true = score_targets(lm, prompts, [a for _p, a, _n in neighbours])
        s_new = score_targets(lm, prompts, [t for _p, _a, t in neighbours])
        point["neighbourhood_score"] = sum(a.mean_nll < b.mean_nll for a, b in zip(s_true, s_new)) / len(prompts)
    point.update({k: v for k, v in _general_abilities(lm).items() if isinstance(v, (int, float)) or v is None})
    return point


def sequential_run(lm, cfg: dict, progress: Progress | None = None, on_update: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, use_cache: bool = True) -> dict:
    """Apply ``n_edits`` edits one after another (each computed on the already-edited model), evaluating
    every ``every`` edits; one run per method. ``on_update`` gets the result so far after every
    evaluation; ``should_stop`` is asked before every edit."""
    import torch

    cache = default_cache()
    cases = _sequential_cases(lm, cfg)
    # A fixed locality probe set for every point: two neighbourhood prompts of every chosen fact, scored
    # with the fact's true answer against its new target (CounterFact NS).
    neighbours = [(p.prompt, p.answer, c.target_new) for c in cases for p in c.neighbourhood[:2]
                  if not answers_equal(p.answer, c.target_new)]
    out = {"config": cfg, "cases": [{"id": c.id, "edit": f"{c.edit_prompt} → {c.target_new}"} for c in cases],
           "runs": {}}
    n_methods = len(cfg["methods"])
    for mi, name in enumerate(cfg["methods"]):
        m, hp, hp_dict = method_and_hparams(name, lm.name, cfg["overrides"].get(name))
        key = _seq_key(lm, cfg, m.name, str(m.version), hp_dict)
        if use_cache and (hit := cache.get(key)) is not None and hit.get("complete"):
            out["runs"][name] = hit
            if on_update:
                on_update(out)
            continue
        run = {"method": m.name, "version": str(m.version), "hparams": hp_dict, "points": [], "complete": False,
               "stopped_after": None, "edit_seconds": 0.0, "failed_edits": 0, "preset": hp_dict.get("preset"),
               "adaptation": ""}
        out["runs"][name] = run
        base = mi / n_methods
        span = 1.0 / n_methods
        drift: dict[str, torch.Tensor] = {}
        applied = 0
        with exclusive(lm, progress), lm.scope() as scope:
            try:
                report(progress, f"[{name}] evaluating the unedited model", base)
                run["points"].append(_seq_point(lm, 0, cases, neighbours, 0.0))
                for i, case in enumerate(cases):
                    if should_stop is not None and should_stop():
                        run["stopped_after"] = i
                        break
                    report(progress, f"[{name}] edit {i + 1}/{len(cases)}: {case.edit_prompt} → {case.target_new}",
                           base + span * i / len(cases))
                    edit = m.compute(lm, [case.request()], hp, None)
                    run["adaptation"] = run["adaptation"] or edit.diagnostics.get("adaptation", m.info.adaptation) or ""
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
                        run["points"].append(_seq_point(lm, n, cases, neighbours, total))
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
        report(progress, "done", 1.0)
    return out
