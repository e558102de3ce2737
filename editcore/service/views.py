"""Plain data read off a result: the scorecard numbers, neighbour-KL rows, probability-shift views, CSV
rows and the before/after word diff. The dashboard turns them into tables and charts (``app/``)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

# The metric family each scorecard number comes from ("seconds" is always measured).
SCORECARD_FAMILY = {"efficacy": "counterfact", "generalisation": "counterfact", "neighbourhood": "counterfact",
                    "nkl": "nkl", "portability": "portability", "fluency": "general", "perplexity": "general"}


def word_diff(before: str, after: str) -> list[dict]:
    """Word-level diff of two continuations: ``[{"text", "changed"}]`` segments of ``after``
    (words that are not in the matching part of ``before`` are ``changed``)."""
    a, b = before.split(), after.split()
    out: list[dict] = []
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if j2 > j1:
            out.append({"text": " ".join(b[j1:j2]), "changed": tag != "equal"})
    return out


def jsonable(obj: Any) -> Any:
    """Reduce diagnostics to JSON (tensors become lists or norms; unknown objects their repr)."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "numel"):
        return obj.tolist() if obj.numel() <= 64 else {"shape": list(obj.shape), "norm": float(obj.float().norm())}
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj):
        return jsonable(dataclasses.asdict(obj))
    return repr(obj)


def ci_mean(ci: Any) -> float | None:
    """The mean of a metrics CI dict (None when it has no samples)."""
    if isinstance(ci, dict):
        return float(ci["mean"]) if ci.get("n") and isinstance(ci.get("mean"), (int, float)) else None
    return float(ci) if isinstance(ci, (int, float)) and not isinstance(ci, bool) else None


def _families(result: dict) -> dict:
    return (result.get("report") or {}).get("families") or {}


def not_computed(result: dict) -> set[str]:
    """Scorecard keys whose family this evaluation did not run (a quick evaluation, or a family that
    did not exist yet): the page says "not computed" for them, which is not the same as no data."""
    ran = _families(result)
    return {key for key, family in SCORECARD_FAMILY.items() if family not in ran}


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
        "efficacy": ci_mean(cf.get("es")), "efficacy_pre": ci_mean(cf_pre.get("es")),
        "generalisation": ci_mean(cf.get("ps")), "generalisation_pre": ci_mean(cf_pre.get("ps")),
        "neighbourhood": ci_mean(cf.get("ns")), "neighbourhood_pre": ci_mean(cf_pre.get("ns")),
        "score": ci_mean(cf.get("score")),
        "nkl": ci_mean((f.get("nkl") or {}).get("nkl")),
        "nkl_distracted": ci_mean((f.get("nkl") or {}).get("distracted_nkl")),
        "portability": _pooled(f.get("portability"), "token_acc"),
        "portability_pre": _pooled(f.get("portability"), "token_acc_pre"),
        "fluency": ci_mean(gen.get("fluency_post")), "fluency_pre": ci_mean(gen.get("fluency_pre")),
        "perplexity": ci_mean(gen.get("perplexity_post")), "perplexity_pre": ci_mean(gen.get("perplexity_pre")),
        "seconds": float((result.get("seconds") or {}).get("edit", 0.0)),
        # Which preset produced the result and any EditScope adaptation of the paper it carries.
        "preset": ((result.get("report") or {}).get("method") or {}).get("preset")
        or ((result.get("method") or {}).get("hparams") or {}).get("preset"),
        "adaptation": ((result.get("report") or {}).get("method") or {}).get("adaptation") or "",
        "convention": (result.get("report") or {}).get("convention"),
    }


def _tok(t: dict) -> dict:
    return {"token": t["token"], "before": t["p_pre"], "after": t["p_post"], "dlogp": t["dlogp"]}


def _moved(shift: dict, k: int = 6) -> list[dict]:
    toks = list(shift.get("risers", [])) + list(shift.get("fallers", []))
    toks.sort(key=lambda t: -abs(t.get("dlogp") or 0.0))
    return [_tok(t) for t in toks[:k]]


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
                "dlogp": ci_mean(r.get("dlogp")), "source": r.get("source", "")} for r in sh.get("related", [])]
    bleed = sh.get("bleed") or {}
    return {"groups": groups, "per_prompt": per_prompt, "related": related,
            "bleed": {"rate": ci_mean(bleed.get("rate")), "rise": ci_mean(bleed.get("rise")),
                      "n": len(bleed.get("prompts", []))} if bleed else None}


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
