"""The reproduction's report: Tables 3 and 4 and Figure 4 in the survey's layout (ours with 95% bootstrap
CIs over cases; the survey's GPT-J values in their own column), a long-format CSV, a plotly figure and
a findings section that says, with the numbers, whether each claim of the survey holds on this model."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..metrics.numeric import bootstrap_ci
from . import survey
from .figures import PALETTE, Grid, write_figure

# (column, experiment, row key)
TABLE3 = (("Subject-Replace", "subject_replace", "subject_replace"),
          ("Reverse-Relation", "reverse_relation", "reverse_relation"),
          ("One-Hop", "one_hop", "one_hop"),
          ("Multi-hop acc. (MQuAKE)", "multihop", "multihop"),
          ("Reverse CS", "conflict_reverse", "reverse_cs"), ("Reverse CM", "conflict_reverse", "reverse_cm"),
          ("Composite CS", "conflict_composite", "composite_cs"),
          ("Composite CM", "conflict_composite", "composite_cm"))
TABLE4 = (("Other-Attribution", "locality", "other_attribution"),
          ("Distract-Neighbour", "locality", "distract_neighbour"),
          ("Other-Task (PIQA)", "locality", "other_task"),
          ("RoundEdit Succ", "roundedit", "round_succ"), ("Distortion D", "roundedit", "round_d"),
          ("Ignore Rate", "roundedit", "round_ir"), ("Failure Rate", "roundedit", "round_fr"))
# Figure 4's panels: (title, probe key, what is scored)
FIGURE4 = (("NQ", "qa", "exact match"), ("SST-2", "sentiment", "accuracy"),
           ("GSM8K", "arithmetic", "solve rate"), ("SAMSum", "summarisation", "ROUGE-L F1"))
PORTABILITY = ("subject_replace", "reverse_relation", "one_hop")
FLAT = 0.05  # |change| of the mean downstream score below which a method counts as "flat"


def _cell(result: dict, exp: str, method: str, key: str) -> dict:
    """{"mean", "lo", "hi", "n"} over cases, or {"na": reason}."""
    units = [u for u in result["units"] if u["experiment"] == exp and u["method"] == method]
    if not units:
        return {"na": result["n_a"].get(f"{exp}|{method}", "not run")}
    vals = [u["row"][key] for u in units if u["row"] and "na" not in u["row"] and u["row"].get(key) is not None]
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        reasons = [u["row"].get("na") or u["row"].get(f"{key}_na") for u in units if u["row"]]
        reasons = [r for r in reasons if r]
        if reasons:
            return {"na": reasons[0]}
        if any(u["row"] is None for u in units):
            return {"na": "not finished (rerun to resume)"}
        return {"na": "no case had a probe for this column"}
    ci = bootstrap_ci(vals)
    return {"mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n}


def _fmt(c: dict, digits: int = 2) -> str:
    if "na" in c:
        return f"n/a — {c['na']}"
    body = f"{c['mean']:.{digits}f}"
    if c["n"] > 1:
        body += f" [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"
    return f"{body} (n={c['n']})"


def figure4_series(result: dict, method: str) -> dict | None:
    """{probe: [(step, mean, lo, hi, n), ...]} of the method's Figure 4 run, or {"na": reason}."""
    units = [u for u in result["units"] if u["experiment"] == "figure4" and u["method"] == method]
    if not units:
        return {"na": result["n_a"].get(f"figure4|{method}", "not run")}
    row = units[0]["row"]
    if row is None:
        return {"na": "not finished (rerun to resume)"}
    if "na" in row:
        return {"na": row["na"]}
    out: dict = {"collapsed": row.get("collapsed")}
    for _title, k, _what in FIGURE4:
        pts = []
        for p in row["points"]:
            if p.get(f"probe_{k}") is None:
                continue
            lo, hi, n = p.get(f"probe_{k}_ci") or (None, None, None)
            pts.append((p["n_edits"], p[f"probe_{k}"], lo, hi, n))
        out[k] = pts
    return out


def _drop(series: dict) -> float | None:
    """Mean over Figure 4's tasks of (score after the most edits - unedited score)."""
    ds = [s[-1][1] - s[0][1] for k in (f[1] for f in FIGURE4) if len(s := series.get(k) or []) > 1]
    return sum(ds) / len(ds) if ds else None


def findings(result: dict) -> list[str]:
    from .. import methods as registry

    methods = result["config"]["methods"]
    out = []
    # 1. IKE best on single-edit portability
    port = {}
    for m in methods:
        cells = [_cell(result, e, m, e) for e in PORTABILITY]
        vals = [c["mean"] for c in cells if "na" not in c]
        if len(vals) == len(PORTABILITY):
            port[m] = sum(vals) / len(vals)
    shown = ", ".join(f"{m.upper()} {v:.2f}" for m, v in sorted(port.items(), key=lambda kv: -kv[1]))
    if "ike" not in port:
        why = _cell(result, "subject_replace", "ike", "subject_replace").get("na", "IKE lacks a portability cell")
        out.append(f"**IKE best on single-edit portability — cannot be tested here** (IKE: {why}). "
                   f"Mean portability of the methods that ran: {shown or 'none'}.")
    else:
        best = max(port, key=port.get)
        verdict = "holds" if best == "ike" else "does not hold"
        out.append(f"**IKE best on single-edit portability — {verdict}.** Mean of Subject-Replace, Reverse-Relation "
                   f"and One-Hop: {shown}.")
    # 2. parameter-modifying methods degrade, GRACE/SERAC flat
    drops = {}
    for m in methods:
        s = figure4_series(result, m)
        if s and "na" not in s and (d := _drop(s)) is not None:
            drops[m] = d
    steps = result["config"]["figure4_steps"]
    shown = ", ".join(f"{m.upper()} {d:+.3f}" for m, d in drops.items()) or "none"
    param = [m for m in drops if m in registry.available() and registry.get_method(m).info.changes_weights]
    keep = [m for m in ("grace", "serac") if m in drops]
    if not param:
        out.append(f"**Parameter-modifying methods lose general ability, GRACE/SERAC stay flat — cannot be tested "
                   f"here** (no Figure 4 run of a weight-changing method finished). Changes: {shown}.")
    else:
        degraded = [m for m in param if drops[m] < -FLAT]
        flat = [m for m in keep if abs(drops[m]) <= FLAT]
        part1 = (f"{len(degraded)} of {len(param)} weight-changing methods drop by more than {FLAT} "
                 f"({', '.join(m.upper() for m in degraded) or 'none'})")
        if keep:
            part2 = f"{len(flat)} of {len(keep)} of GRACE/SERAC stay within ±{FLAT}"
        elif any(m in methods for m in ("grace", "serac")):
            part2 = "GRACE and SERAC did not run (" + "; ".join(
                f"{m.upper()}: {figure4_series(result, m).get('na', 'n/a')}" for m in ("grace", "serac")
                if m in methods) + ")"
        else:
            part2 = "GRACE and SERAC were not requested"
        holds = len(degraded) == len(param) and (not keep or len(flat) == len(keep))
        verdict = ("holds" if holds else "does not hold") + ("" if keep else " for the weight-changing half only")
        out.append(f"**Parameter-modifying methods lose general ability, GRACE/SERAC stay flat — {verdict}.** "
                   f"Mean change of the Figure 4 scores from 0 to {steps[-1]} edits: {shown}; {part1}; {part2}.")
    # 3. MEMIT slower than ROME
    if "memit" in drops and "rome" in drops:
        verdict = "holds" if drops["memit"] > drops["rome"] else "does not hold"
        out.append(f"**MEMIT degrades more slowly than ROME — {verdict}.** Mean change after {steps[-1]} edits: "
                   f"MEMIT {drops['memit']:+.3f}, ROME {drops['rome']:+.3f}.")
    else:
        out.append("**MEMIT degrades more slowly than ROME — cannot be tested here** (needs Figure 4 runs of both; "
                   f"finished: {', '.join(m.upper() for m in drops) or 'none'}).")
    return out


def _table(result: dict, name: str, columns) -> list[str]:
    head = ["Method"] + [c for c, _e, _k in columns] + ["Survey GPT-J (published)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result["config"]["methods"]:
        cells = [_fmt(_cell(result, e, m, k)) for _c, e, k in columns]
        if len(set(cells)) == 1 and cells[0].startswith("n/a"):  # one reason for the whole row: say it once
            cells = cells[:1] + ["n/a — as left"] * (len(cells) - 1)
        pub = [f"{c} {v:.2f}" for c, _e, _k in columns if (v := survey.published(name, c, m.upper())) is not None]
        lines.append("| " + " | ".join([m.upper(), *cells, "; ".join(pub) or "not transcribed ¹"]) + " |")
    return lines


def csv_text(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "column", "method", "edits", "mean", "lo", "hi", "n", "n_a", "published_gptj"])
    for name, cols in (("table3", TABLE3), ("table4", TABLE4)):
        for m in result["config"]["methods"]:
            for c, e, k in cols:
                cell = _cell(result, e, m, k)
                w.writerow([name, c, m, 1, cell.get("mean"), cell.get("lo"), cell.get("hi"), cell.get("n"),
                            cell.get("na", ""), survey.published(name, c, m.upper())])
    for m in result["config"]["methods"]:
        s = figure4_series(result, m)
        if "na" in s:
            w.writerow(["figure4", "", m, "", "", "", "", "", s["na"], ""])
            continue
        for title, k, _what in FIGURE4:
            for step, mean, lo, hi, n in s[k]:
                w.writerow(["figure4", title, m, step, mean, lo, hi, n, "", ""])
    return buf.getvalue()


def figure4_spec(result: dict) -> dict:
    """Figure 4 as plotly JSON: one panel per task, one line per method (95% CI bars), the unedited score
    dotted; every panel spans the metric's whole 0-1 range."""
    g = Grid(1, len(FIGURE4), [f"{t} ({w})" for t, _k, w in FIGURE4],
             f"Figure 4 reproduced on {result['model']} (dotted: unedited score)", 1400, 440)
    for mi, m in enumerate(result["config"]["methods"]):
        s = figure4_series(result, m)
        if "na" in s:
            continue
        color = PALETTE[mi % len(PALETTE)]
        for ci, (_t, k, _w) in enumerate(FIGURE4):
            pts = s[k]
            if not pts:
                continue
            up = [(p[3] - p[1]) if p[3] is not None else 0 for p in pts]
            down = [(p[1] - p[2]) if p[2] is not None else 0 for p in pts]
            g.line(ci, m.upper(), color, [p[0] for p in pts], [p[1] for p in pts], legend=ci == 0, err=(up, down))
            g.reference(ci, pts[0][1], color)
    for ci in range(len(FIGURE4)):
        g.y_range(ci, -0.02, 1.02)
    return g.spec()


def markdown(result: dict, title_note: str = "") -> str:
    cfg = result["config"]
    L = [f"# The survey's experiments on {result['model']}", ""]
    if title_note:
        L += [title_note, ""]
    L += [f"Reproduction of Hsueh et al. 2024 (\"Editing the Mind of Giants\", arXiv:2406.01436) Tables 3-4 and "
          f"Figure 4 with `python -m editcore reproduce`. Model fingerprint `{result['fingerprint']}`; engine "
          f"{result['engine']} ({result['workers']} worker(s)); {cfg['cases']} cases per benchmark; Figure 4 after "
          f"{', '.join(map(str, cfg['figure4_steps']))} sequential zsRE edits with "
          + ", ".join(f"{v} {k}" for k, v in cfg["figure4_sizes"].items() if v) + " probe items; "
          f"{result['seconds'] / 60:.1f} min in this invocation ({result['cached_units']} of {len(result['units'])} units read from the cache). "
          "Cells: mean over cases [95% percentile bootstrap CI, 1000 resamples] (n = cases).", ""]
    if not result["complete"]:
        L += ["**Incomplete run** — some units did not finish; rerun the same command to resume.", ""]
    L += ["Data: " + "; ".join(f"{e}: {s}" for e, s in result["sources"].items()) + ".", ""]
    L += ["## Table 3 — portability and generalisation (single edit; multi-hop and conflicts: several edits)", ""]
    L += _table(result, "table3", TABLE3)
    L += ["", "Subject-Replace/Reverse-Relation/One-Hop: EasyEdit token accuracy of the probe answer after the edit "
          "(Yao et al. 2023). Multi-hop: MQuAKE MH accuracy after all edits of an instance, zero-shot `Q: … A:` "
          "prompts. CS/CM: ConflictEdit Conflict Score and Magnitude (Li et al. 2024), ROME's mean-NLL probability.",
          "", "## Table 4 — locality (single edit) and RoundEdit", ""]
    L += _table(result, "table4", TABLE4)
    L += ["", "Other-Attribution/Distract-Neighbour: EasyEdit argmax agreement before/after; Other-Task: PIQA "
          "accuracy after the edit. RoundEdit (Li et al. 2024): Succ, Distortion (JS divergence, nats), Ignore Rate, "
          "Failure Rate.", "", "## Figure 4 — general abilities as zsRE edits accumulate", ""]
    steps = cfg["figure4_steps"]
    head = ["Method", "Task"] + [f"{s} edits" for s in steps]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in cfg["methods"]:
        s = figure4_series(result, m)
        if "na" in s:
            L.append(f"| {m.upper()} | all | " + " | ".join([f"n/a — {s['na']}"] + [""] * (len(steps) - 1)) + " |")
            continue
        for title, k, _w in FIGURE4:
            by = {p[0]: p for p in s[k]}
            L.append(f"| {m.upper()} | {title} | " + " | ".join(
                f"{by[x][1]:.2f}" + (f" [{by[x][2]:.2f}, {by[x][3]:.2f}]" if by[x][4] and by[x][4] > 1 else "")
                if x in by else "—" for x in steps) + " |")
        if s.get("collapsed"):
            L.append(f"| {m.upper()} | collapse | stopped after {s['collapsed']['after']} edits: "
                     f"{s['collapsed']['reason']} |" + " |" * (len(steps) - 1))
    L += ["", "## Findings", ""] + [f"- {f}" for f in findings(result)]
    L += ["", f"¹ Survey GPT-J values: {survey.PUBLISHED_NOTE}.", ""]
    return "\n".join(L)


def write_report(result: dict, out_dir: str | Path, stem: str | None = None, title_note: str = "") -> dict:
    """Write ``<stem>.md``, ``.csv`` and ``-figure4.html`` (with its ``.json`` spec); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"reproduce-{result['model']}"
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv"}
    paths["md"].write_text(markdown(result, title_note), encoding="utf-8")
    paths["csv"].write_text(csv_text(result), encoding="utf-8")
    paths.update(write_figure(figure4_spec(result), f"Figure 4 on {result['model']}", out / f"{stem}-figure4.html"))
    return paths
