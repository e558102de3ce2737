"""``reproduce``: the survey's Tables 3-4 and Figure 4 on the model in front of you.

The driver loads the cases, turns every (experiment, method, case) into a unit, asks the results cache for
each unit (so a cut-off run resumes where it stopped) and hands the missing ones to the engine; rows are
stored the moment they arrive. Aggregation and the report are in :mod:`.report`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import methods as registry
from ..errors import InputError
from ..results_cache import default_cache
from .data import EXPERIMENTS, experiment_cases
from .units import case_unit, sequence_unit, unit_key

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

# The survey's eight methods (its Tables 3-4 and Figure 4).
SURVEY_METHODS = ("ft", "mend", "rome", "memit", "serac", "ike", "kn", "grace")
FIGURE4_STEPS = (0, 10, 20, 30, 40)
# Figure 4's tasks: NQ (qa), SST-2 (sentiment), GSM8K (arithmetic), SAMSum (summarisation).
FIGURE4_SIZES = {"qa": 20, "sentiment": 20, "arithmetic": 20, "summarisation": 5, "piqa": 0}


@dataclass
class ReproConfig:
    methods: tuple[str, ...] = SURVEY_METHODS
    cases: int = 50
    data_dir: str | None = None
    experiments: tuple[str, ...] = tuple(EXPERIMENTS)
    figure4_steps: tuple[int, ...] = FIGURE4_STEPS
    figure4_sizes: dict = field(default_factory=lambda: dict(FIGURE4_SIZES))
    overrides: dict = field(default_factory=dict)  # method -> hparam overrides

    def __post_init__(self):
        if not 1 <= int(self.cases) <= 2000:
            raise InputError("--cases must be between 1 and 2000")
        if not self.methods:
            raise InputError("choose at least one method")
        unknown = sorted(set(self.experiments) - set(EXPERIMENTS))
        if unknown:
            raise InputError(f"unknown experiment {unknown[0]!r}; known: {', '.join(EXPERIMENTS)}")
        steps = sorted({int(s) for s in self.figure4_steps})
        if not steps or steps[0] < 0 or steps[-1] < 1:
            raise InputError("Figure 4 needs steps like 0,10,20,30,40 (at least one above 0)")
        self.figure4_steps = tuple(steps)
        self.methods = tuple(m.strip().lower() for m in self.methods)


def method_status(name: str) -> str | None:
    """Why ``name`` cannot run on this branch (None when it can)."""
    if name not in registry.available():
        return f"{name} is not registered on this branch (registered: {', '.join(registry.available())})"
    return None


def build_units(cfg: ReproConfig) -> tuple[list[dict], dict, dict]:
    """``(units, sources, n_a)``: every unit to run, where each experiment's cases came from, and the
    reason of every (experiment, method) that cannot run.

    Units are ordered case by case across experiments and methods (first case of everything, then the
    second, ...), so a run cut off early has still reached every cell of the tables."""
    per_case: list[list[dict]] = []
    sources: dict[str, str] = {}
    n_a: dict[tuple[str, str], str] = {}
    for exp in cfg.experiments:
        if exp == "figure4":
            cases, src = experiment_cases(exp, max(cfg.figure4_steps), cfg.data_dir)
        else:
            cases, src = experiment_cases(exp, cfg.cases, cfg.data_dir)
        sources[exp] = src
        for method in cfg.methods:
            why = method_status(method)
            if why is None and not cases:
                why = f"no usable case in {src}"
            if why is None and exp == "figure4" and len(cases) < max(cfg.figure4_steps):
                why = f"only {len(cases)} distinct zsRE subjects for {max(cfg.figure4_steps)} edits"
            if why is not None:
                n_a[(exp, method)] = why
                continue
            ov = cfg.overrides.get(method) or {}
            if exp == "figure4":
                todo = [sequence_unit(method, ov, cases, list(cfg.figure4_steps), cfg.figure4_sizes)]
            else:
                todo = [case_unit(exp, method, ov, c) for c in cases]
            for i, u in enumerate(todo):
                if i == len(per_case):
                    per_case.append([])
                per_case[i].append(u)
    return [u for group in per_case for u in group], sources, n_a


def _keys(units: list[dict], model_name: str, fingerprint: str) -> list[str]:
    from types import SimpleNamespace

    from ..methods.base import hparams_to_dict, load_hparams

    lm = SimpleNamespace(name=model_name, fingerprint=fingerprint)
    out = []
    for u in units:
        m = registry.get_method(u["method"])
        hp = hparams_to_dict(load_hparams(m.name, m.Hparams, model_name, u.get("overrides") or {}))
        out.append(unit_key(lm, u, str(m.version), hp))
    return out


def reproduce(engine, cfg: ReproConfig, *, progress: Progress | None = None, use_cache: bool = True,
              should_stop: Callable[[], bool] | None = None, run: bool = True) -> dict:
    """Run (or read from the cache) every unit of ``cfg`` on ``engine``; returns the plain result that
    :mod:`.report` turns into tables. ``run=False`` only reads the cache (a report of what has finished)."""
    def say(stage: str, frac: float) -> None:
        if progress is not None:
            progress(stage, frac)

    t0 = time.perf_counter()
    info = engine.describe()
    units, sources, n_a = build_units(cfg)
    keys = _keys(units, info["model"], info["fingerprint"])
    cache = default_cache()
    rows: list[dict | None] = [cache.get(k) if use_cache else None for k in keys]
    todo = [i for i, r in enumerate(rows) if r is None]
    cached = len(units) - len(todo)
    say(f"{len(units)} units, {cached} from the cache, {len(todo)} to run on {engine.name}", 0.0)
    stopped = False
    done = 0
    for j, row in engine.map([units[i] for i in todo]) if run else ():
        i = todo[j]
        rows[i] = row if "na" in row else cache.put(keys[i], row)  # failures are retried on the next run
        done += 1
        u = units[i]
        say(f"{done}/{len(todo)} {u['experiment']} · {u['method']}", done / max(len(todo), 1))
        if should_stop is not None and should_stop():
            stopped = True
            break
    say("done", 1.0)
    return {"model": info["model"], "fingerprint": info["fingerprint"], "engine": engine.name,
            "workers": info.get("workers", 1), "config": {"methods": list(cfg.methods), "cases": cfg.cases,
                                                          "experiments": list(cfg.experiments),
                                                          "figure4_steps": list(cfg.figure4_steps),
                                                          "figure4_sizes": cfg.figure4_sizes,
                                                          "data_dir": cfg.data_dir},
            "sources": sources, "n_a": {f"{e}|{m}": why for (e, m), why in n_a.items()},
            "units": [{"experiment": u["experiment"], "method": u["method"],
                       "case": (u.get("case") or {}).get("id"), "row": r} for u, r in zip(units, rows)],
            "cached_units": cached, "seconds": time.perf_counter() - t0, "complete": not stopped
            and all(r is not None for r in rows)}
