"""Does a result show a step's effect? Each reader takes plain result data (the service's ``run_edit``
dict, a conflict or round-trip outcome, a sequential run, a trace) and returns ``(shows, view)``: whether the
effect is there on this model, and the rows and headline number the Tour page draws.

Thresholds are stated beside each reader; they decide only *which* case the tour shows first, never a
number it reports.
"""

from __future__ import annotations

from ..service.views import nkl_rows, scorecard, shift_views

# A neighbour's next-token distribution "moved" when its KL divergence exceeds this (nats): well above the
# float noise of an unchanged model (~1e-6) and small enough that a visible change in the top tokens is caught.
NKL_MOVED = 0.01
# A sequential run "deteriorated" when perplexity rose by this share, or probe accuracy fell by two
# standard errors of the pooled probe items.
PPL_RISE = 0.05


def _cf(result: dict, pre: bool = False) -> dict:
    rep = result.get("report") or {}
    return (rep.get("counterfact_pre") if pre else (rep.get("families") or {}).get("counterfact")) or {}


def _rows(result: dict, kind: str) -> list[dict]:
    """Per-prompt CounterFact rows after the edit, with the unedited model's winner beside them."""
    post, pre = _cf(result).get(kind) or [], _cf(result, pre=True).get(kind) or []
    out = []
    for i, r in enumerate(post):
        before = pre[i] if i < len(pre) and pre[i].get("prompt") == r.get("prompt") else {}
        out.append({"prompt": r["prompt"], "expected": r["expected"], "other": r["other"],
                    "p_expected": r["p_expected"], "p_other": r["p_other"], "success": bool(r["success"]),
                    "success_before": before.get("success")})
    return out


def edit_label(result: dict) -> str:
    req = result["request"]
    return f"{req['prompt']} {req.get('target_true') or '?'} → {req['target_new']}"


def _base(result: dict) -> dict:
    card = scorecard(result)
    return {"label": edit_label(result), "method": result["method"]["name"], "key": result.get("key"),
            "efficacy": card["efficacy"], "generalisation": card["generalisation"],
            "neighbourhood": card["neighbourhood"], "nkl": card["nkl"], "portability": card["portability"],
            "convention": card.get("convention"), "adaptation": card.get("adaptation") or ""}


def reliability(result: dict) -> tuple[str | None, dict]:
    """Role of the result in step 1: "generalises" (wins on the prompt and every paraphrase), "fails on a
    paraphrase" (wins on the prompt, loses on at least one paraphrase) or None (the edit itself failed,
    or the fact has no paraphrases)."""
    edit, para = _rows(result, "edit"), _rows(result, "paraphrase")
    view = {**_base(result), "rows": [{"kind": "edit prompt", **r} for r in edit]
            + [{"kind": "paraphrase", **r} for r in para]}
    if not edit or not para or not all(r["success"] for r in edit):
        return None, view
    return ("generalises" if all(r["success"] for r in para) else "fails on a paraphrase"), view


def portability(result: dict) -> tuple[bool, dict]:
    """Shows when the edit wins on its prompt but at least one reverse / one-hop / subject-replace probe
    does not give the answer the edit implies (its greedy continuation does not start with it)."""
    sets = ((result.get("report") or {}).get("families") or {}).get("portability") or {}
    rows = []
    for name, s in sets.items():
        for p in (s or {}).get("probes", []):
            rows.append({"set": name.replace("_", " "), "prompt": p["prompt"], "expected": p["answer"],
                         "generated": p.get("generated_post", ""), "token_acc_before": p["token_acc_pre"],
                         "token_acc_after": p["token_acc_post"], "ported": bool(p["exact_post"])})
    edit_ok = all(r["success"] for r in _rows(result, "edit")) and bool(_rows(result, "edit"))
    view = {**_base(result), "rows": rows, "not_ported": sum(not r["ported"] for r in rows)}
    return edit_ok and any(not r["ported"] for r in rows), view


def locality(result: dict) -> tuple[bool, dict]:
    """Shows when a neighbour prompt's winner flipped to the new target, or its top-1 next token changed,
    or its next-token distribution moved by more than :data:`NKL_MOVED`."""
    neigh = _rows(result, "neighbourhood")
    flipped = [r for r in neigh if r["success_before"] and not r["success"]]
    top1 = [p for p in shift_views(result)["per_prompt"] if p["group"] == "neighbourhood" and p["changed"]]
    kl = nkl_rows(result)
    moved = [r for r in kl if (r["nkl"] or 0.0) > NKL_MOVED]
    view = {**_base(result), "neighbours": neigh, "flipped": len(flipped), "top1_changed": top1,
            "nkl_rows": kl, "nkl_max": max((r["nkl"] or 0.0 for r in kl), default=None), "nkl_moved": len(moved)}
    return bool(flipped or top1 or moved), view


def bigben(result: dict) -> tuple[bool, dict]:
    """Shows when related words of the new target rise on average on the subject's prompts (mean change
    of log-probability > 0 with most of them rising)."""
    sv = shift_views(result)
    new = [r for r in sv["related"] if str(r["group"]).startswith("new target") and r["dlogp"] is not None]
    rising = [r for r in new if r["dlogp"] > 0]
    mean = sum(r["dlogp"] for r in new) / len(new) if new else None
    view = {**_base(result), "related": sv["related"], "new_related": len(new), "rising": len(rising),
            "mean_dlogp": mean, "top_riser": max(new, key=lambda r: r["dlogp"])["word"] if new else None,
            "bleed": sv["bleed"], "groups": sv["groups"]}
    return bool(new) and mean is not None and mean > 0 and len(rising) * 2 > len(new), view


def conflict(outcome: dict) -> tuple[bool, dict]:
    """Shows when the second edit took probability from the first (CM > 0)."""
    cm = outcome.get("magnitude")
    winner = "edit 2" if outcome["conflict"] else "edit 1"
    return cm is not None and cm > 0, {**outcome, "winner": winner}


def roundtrip(outcome: dict) -> tuple[bool, dict]:
    """Shows when at least one of the subject's other true objects lost probability after the round trip."""
    return (outcome.get("ignore_rate") or 0.0) > 0, dict(outcome)


def deterioration(run: dict) -> tuple[bool, dict]:
    """Shows when perplexity rose by :data:`PPL_RISE` or probe accuracy fell by two standard errors between
    the unedited model and the last evaluation."""
    pts = run.get("points") or []
    if len(pts) < 2:
        return False, {"first": pts[0] if pts else {}, "last": pts[-1] if pts else {}}
    a, b = pts[0], pts[-1]
    out = {"first": a, "last": b, "n_edits": b.get("n_edits")}
    ppl = a.get("perplexity"), b.get("perplexity")
    out["ppl_change"] = (ppl[1] / ppl[0] - 1.0) if None not in ppl and ppl[0] else None
    acc = a.get("probe_accuracy"), b.get("probe_accuracy")
    out["acc_change"] = (acc[1] - acc[0]) if None not in acc else None
    se = max(a.get("probe_accuracy_se") or 0.0, b.get("probe_accuracy_se") or 0.0)
    worse_ppl = out["ppl_change"] is not None and out["ppl_change"] > PPL_RISE
    worse_acc = out["acc_change"] is not None and se > 0 and out["acc_change"] < -2 * se
    return worse_ppl or worse_acc, out


def location(trace_result: dict, strongest) -> tuple[bool, dict]:
    """Where the causal trace of the unedited model peaks (MLP, by token and layer) beside the layer the
    edit wrote to; ``strongest`` is :func:`editcore.tracing.summary.strongest`. Always "shows" once traced:
    the step is a measurement, and the agreement (or not) is the lesson."""
    tr = (trace_result.get("before") or {}).get("trace") or {}
    token, layer = strongest(tr, "mlp") if tr.get("kinds", {}).get("mlp") else (None, None)
    edited = ((trace_result.get("after") or {}).get("edit") or {}).get("layer")
    tokens = tr.get("tokens") or []
    view = {"peak_layer": layer, "peak_token": tokens[token] if token is not None and token < len(tokens) else None,
            "peak_is_subject_last": token == tr.get("subject_last"), "edited_layer": edited,
            "high": tr.get("high"), "low": tr.get("low"), "prompt": trace_result.get("prompt"),
            "answer": (trace_result.get("request") or {}).get("target_true")}
    return layer is not None, view


__all__ = ["NKL_MOVED", "PPL_RISE", "bigben", "conflict", "deterioration", "edit_label", "locality",
           "location", "portability", "reliability", "roundtrip"]
