"""A hyper-network editor's training report as Markdown (``reports/<method>_training_<model>.md``) and its bench
section (MEND, KE, MALMEN)."""

from __future__ import annotations

import json

CURVE_COLUMNS = ("step", "success", "efficacy", "generalisation", "neighbourhood", "train_loss", "train_edit_nll",
                 "train_loc_kl", "train_edit_top1")


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


TITLES = {"mend": "MEND", "ke": "KE", "malmen": "MALMEN"}


def training_markdown(report: dict, how_edited: str = "edited alone", extra_columns: tuple = (),
                      notes: tuple[str, ...] = ()) -> str:
    """The curve and the settings of one trained hypernetwork (an artefact's JSON report); ``how_edited`` says
    how the held-out facts are edited at each point, ``extra_columns`` adds method-specific curve columns."""
    s, d, b = report["settings"], report["data"], report.get("bench_facts", {})
    method = report.get("method", "mend")
    columns = CURVE_COLUMNS + tuple(extra_columns)
    lines = [
        f"# {TITLES.get(method, method)} training on {report['model']}", "",
        f"`python -m editcore train {method} {report['model']}`: {report['steps']} optimiser steps of "
        f"{s['batch_edits']} edits in {report['seconds'] / 60:.1f} min wall-clock"
        + (f" ({report['cpu_seconds'] / 60:.1f} min of CPU time)" if report.get("cpu_seconds") else "")
        + f" on {report['device']} with {report['threads']} thread(s); finished {report['finished']}.", "",
        f"Edited weights: {len(report['targets'])} ({', '.join(t['param'] for t in report['targets'])}).",
        f"Data: {d['train_edits']} training edits ({json.dumps(d['by_source'])}), {d['locality_pairs']} unrelated "
        f"locality pairs; {d['val_edits']} held-out validation edits; the bench's facts are held out too.", "",
        "## Held-out curve", "",
        f"Each point: every held-out catalog fact {how_edited} with the network as it is at that step. Success = "
        "every token of the new target top-1 on the edit prompt; efficacy = P(new) > P(old); generalisation = the "
        "same on up to two paraphrases; neighbourhood = P(old) > P(new) on up to three prompts about other subjects "
        "(CounterFact's NS). The `train_*` columns average the training edits since the previous point (the loss, "
        "the post-edit NLL of the equivalence prompts, the locality KL, and the edit prompt's top-1 rate).", "",
        "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(p.get(c)) for c in columns) + " |" for p in report["curve"]]
    if b.get("n"):
        lines += ["", f"## The bench's {b['n']} known facts (held out)", "",
                  f"Success {b['success']:.2f}, efficacy {b['efficacy']:.2f}, generalisation "
                  f"{_fmt(b['generalisation'])}, neighbourhood score {_fmt(b['neighbourhood'])} "
                  f"({', '.join(b['ids'])})."]
    lines += [*(["", *notes] if notes else []), "", "## Settings", "", "```json", json.dumps(s, indent=1), "```", ""]
    return "\n".join(lines)


def curve_section(method, lm, how_edited: str = "edited alone") -> dict:
    """``make bench``: a trained network's curve (from its report), or how to train one."""
    title = method.info.title
    report = method.trained(lm)
    if report is None:
        return {"title": f"{title} training", "columns": [], "rows": [],
                "note": f"No trained hypernetwork for {lm.name}: `{method.train_command(lm)}`."}
    cols = ["step", "success", "efficacy", "generalisation", "neighbourhood", "train_loss"]
    note = (f"Artefact `{report['name']}`: {report['steps']} steps in {report['seconds'] / 60:.1f} min "
            f"({report.get('threads')} thread(s)); held-out catalog facts {how_edited} at each step.")
    return {"title": f"{title} training curve", "columns": cols,
            "rows": [{c: p.get(c) for c in cols} for p in report["curve"]], "note": note}


def bench_section(lm, facts, common) -> dict | None:
    from .method import METHOD

    return curve_section(METHOD, lm)
