"""Units of work: one (experiment, method, case) single-edit evaluation, or one whole sequential run
(Figure 4). A unit is plain JSON in and plain JSON out, so any engine (in-process, Ray) runs the same code
and a result can be cached under the unit's own key.

Every unit leaves the model as it found it (edits happen inside ``lm.scope()``).
"""

from __future__ import annotations

from typing import Any

from ..cases.schema import case_from_dict
from ..results_cache import make_key

_KIND_OF = {"Case": "case", "MultiHopCase": "multihop", "ConflictCase": "conflict", "RoundTripCase": "roundtrip"}

# Other-Task locality (Yao et al. 2023 use a commonsense task): PIQA items scored before and after each
# single edit.
OTHER_TASK_ITEMS = 8


def case_unit(experiment: str, method: str, overrides: dict, case) -> dict:
    return {"experiment": experiment, "method": method, "overrides": dict(overrides or {}),
            "kind": _KIND_OF[type(case).__name__], "case": case.to_dict()}


def sequence_unit(method: str, overrides: dict, cases: list, steps: list[int], probe_sizes: dict,
                  batch: int = 1) -> dict:
    return {"experiment": "figure4", "method": method, "overrides": dict(overrides or {}), "kind": "sequence",
            "cases": [c.to_dict() for c in cases], "steps": list(steps), "probe_sizes": dict(probe_sizes),
            "batch": int(batch)}


def unit_key(lm, unit: dict, method_version: str, hp_dict: dict) -> str:
    return make_key(kind="reproduce-unit", fingerprint=lm.fingerprint, method=unit["method"],
                    method_version=method_version, hparams=hp_dict, case=unit)


def _method(unit: dict, lm):
    from ..methods import get_method
    from ..methods.base import load_hparams

    m = get_method(unit["method"])
    return m, load_hparams(m.name, m.Hparams, lm.name, unit.get("overrides") or {})


def _ci_mean(d: dict | None) -> float | None:
    return float(d["mean"]) if d and d.get("n") else None


def _single(lm, unit: dict, m, hp) -> dict:
    """One edit of one fact; the columns of the experiment it belongs to."""
    from ..metrics import evaluate

    case = case_from_dict({**unit["case"], "kind": "case"})
    edit = m.compute(lm, [case.request()], hp, None)
    exp = unit["experiment"]
    if exp == "locality":
        sizes = {t: 0 for t in ("sentiment", "qa", "arithmetic", "summarisation")} | {"piqa": OTHER_TASK_ITEMS}
        rep = evaluate(lm, case, edit, families=("locality", "general"), suggest=0, general_sizes=sizes,
                       heldout_chars=0).to_dict()["families"]
        piqa = rep["general"]["probes"].get("piqa") or {}
        row = {"other_attribution": _ci_mean(rep["locality"]["other_attribution"]["agreement"]),
               "distract_neighbour": _ci_mean(rep["locality"]["distract_neighbour"]["agreement"]),
               "distract_neighbour_ns": _ci_mean(rep["locality"]["distract_neighbour"]["ns"]),
               "other_task": _ci_mean(piqa.get("post")), "other_task_pre": _ci_mean(piqa.get("pre"))}
        if row["other_task"] is None:  # e.g. every item longer than a small model's context
            row["other_task_na"] = f"{piqa.get('skipped', 0)} PIQA items skipped (longer than the model's context)"
        return row
    rep = evaluate(lm, case, edit, families=("portability",), suggest=0).to_dict()["families"]["portability"]
    return {exp: _ci_mean(rep[exp]["token_acc"]), f"{exp}_exact": _ci_mean(rep[exp]["exact"]),
            f"{exp}_pre": _ci_mean(rep[exp]["token_acc_pre"])}


def _multihop(lm, unit: dict, m, hp) -> dict:
    from ..metrics.multihop import multihop_case_outcome
    from ..metrics.scoring import Scorer

    case = case_from_dict({**unit["case"], "kind": "multihop"})
    reqs = case.requests()
    with lm.scope() as s:
        if getattr(m, "batched", False):
            s.apply(m.compute(lm, reqs, hp, None).patch)
        else:  # one after another, each computed on the model as the previous ones left it
            for r in reqs:
                s.apply(m.compute(lm, [r], hp, None).patch)
        o = multihop_case_outcome(Scorer(lm), case)
    return {"multihop": float(o.mh), "multihop_ew": o.ew, "multihop_iw": float(o.iw)}


def _pitfall(lm, unit: dict, m, hp) -> dict:
    from ..metrics import conflicts as cm

    def patch_of(lm_, req):
        return m.compute(lm_, [req], hp, None).patch

    if unit["kind"] == "conflict":
        o = cm.run_conflict(lm, cm.conflict_spec_from_case(case_from_dict({**unit["case"], "kind": "conflict"})),
                            patch_of)
        t = o.type
        return {f"{t}_cs": float(o.conflict), f"{t}_cm": o.magnitude}
    o = cm.run_roundtrip(lm, cm.round_spec_from_case(case_from_dict({**unit["case"], "kind": "roundtrip"})),
                         patch_of)
    return {"round_succ": o.success, "round_d": o.distortion, "round_ir": o.ignore_rate, "round_fr": float(o.failed)}


def _sequence(lm, unit: dict, m, hp, progress=None) -> dict:
    from .sequential import SeqConfig, sequential_run

    cases = [case_from_dict({**c, "kind": "case"}) for c in unit["cases"]]
    steps = [int(s) for s in unit["steps"]]
    cfg = SeqConfig(method=unit["method"], n_edits=max(steps), every=max(1, max(steps)), steps=tuple(steps),
                    overrides=unit.get("overrides") or {}, probe_sizes=unit["probe_sizes"], heldout_chars=0,
                    batch=int(unit.get("batch", 1)))
    run = sequential_run(lm, cases, cfg, progress=progress)
    return {"points": run["points"], "collapsed": run["collapsed"], "edit_seconds": run["edit_seconds"]}


def run_unit(lm, unit: dict, progress=None) -> dict[str, Any]:
    """The result row of ``unit``: its metric values (None where a case has no probe for a column)."""
    m, hp = _method(unit, lm)
    if unit["kind"] == "sequence":
        return _sequence(lm, unit, m, hp, progress)
    if unit["kind"] == "multihop":
        return _multihop(lm, unit, m, hp)
    if unit["kind"] in ("conflict", "roundtrip"):
        return _pitfall(lm, unit, m, hp)
    return _single(lm, unit, m, hp)
