"""MEND's training report as Markdown (``reports/mend_training_<model>.md``) and its bench section."""

from __future__ import annotations

import json

CURVE_COLUMNS = ("step", "success", "efficacy", "generalisation", "neighbourhood", "train_loss", "train_edit_nll",
                 "train_loc_kl", "train_edit_top1")


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def training_markdown(report: dict) -> str:
    """The curve and the settings of one trained hypernetwork (an artefact's JSON report)."""
    s, d, b = report["settings"], report["data"], report.get("bench_facts", {})
    lines = [
        f"# MEND training on {report['model']}", "",
        f"`python -m editcore train mend {report['model']}`: {report['steps']} optimiser steps of "
        f"{s['batch_edits']} edits in {report['seconds'] / 60:.1f} min wall-clock"
        + (f" ({report['cpu_seconds'] / 60:.1f} min of CPU time)" if report.get("cpu_seconds") else "")
        + f" on {report['device']} with {report['threads']} thread(s); finished {report['finished']}.", "",
        f"Edited weights: {len(report['targets'])} ({', '.join(t['param'] for t in report['targets'])}).",
        f"Data: {d['train_edits']} training edits ({json.dumps(d['by_source'])}), {d['locality_pairs']} unrelated "
        f"locality pairs; {d['val_edits']} held-out validation edits; the bench's facts are held out too.", "",
        "## Held-out curve", "",
        "Each point: every held-out catalog fact edited alone with the network as it is at that step. Success = "
        "every token of the new target top-1 on the edit prompt; efficacy = P(new) > P(old); generalisation = the "
        "same on up to two paraphrases; neighbourhood = P(old) > P(new) on up to three prompts about other subjects "
        "(CounterFact's NS). The `train_*` columns average the training edits since the previous point (the loss, "
        "the post-edit NLL of the equivalence prompts, the locality KL, and the edit prompt's top-1 rate).", "",
        "| " + " | ".join(CURVE_COLUMNS) + " |", "|" + "---|" * len(CURVE_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(p.get(c)) for c in CURVE_COLUMNS) + " |" for p in report["curve"]]
    if b.get("n"):
        lines += ["", f"## The bench's {b['n']} known facts (held out)", "",
                  f"Success {b['success']:.2f}, efficacy {b['efficacy']:.2f}, generalisation "
                  f"{_fmt(b['generalisation'])}, neighbourhood score {_fmt(b['neighbourhood'])} "
                  f"({', '.join(b['ids'])})."]
    lines += ["", "## Settings", "", "```json", json.dumps(s, indent=1), "```", ""]
    return "\n".join(lines)


def bench_section(lm, facts, common) -> dict | None:
    """``make bench``: the trained network's curve (from its report), or how to train one."""
    from .method import METHOD

    report = METHOD.trained(lm)
    if report is None:
        return {"title": "MEND training", "columns": [], "rows": [],
                "note": f"No trained hypernetwork for {lm.name}: `python -m editcore train mend {lm.name}`."}
    cols = ["step", "success", "efficacy", "generalisation", "neighbourhood", "train_loss"]
    note = (f"Artefact `{report['name']}`: {report['steps']} steps in {report['seconds'] / 60:.1f} min "
            f"({report.get('threads')} thread(s)); held-out catalog facts edited alone at each step.")
    return {"title": "MEND training curve", "columns": cols,
            "rows": [{c: p.get(c) for c in cols} for p in report["curve"]], "note": note}
