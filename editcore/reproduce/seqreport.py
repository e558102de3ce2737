"""The report of long sequential runs: one table per method and one page of curves (shares span 0-1;
perplexity starts at 0 with its unedited value dotted, so a small wiggle is not drawn as a cliff)."""

from __future__ import annotations

from pathlib import Path

from .figures import PALETTE, Grid, write_figure

PANELS = (("retention", "retention of earlier edits", (0, 1)), ("neighbourhood_score", "neighbourhood score", (0, 1)),
          ("nkl", "NKL (nats)", None), ("perplexity", "perplexity (held-out)", None),
          ("probe_accuracy", "downstream probe accuracy", (0, 1)), ("weight_drift", "||W - W0||_F", None))


def _row(p: dict, key: str) -> str:
    v = p.get(key)
    return "—" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def sequential_markdown(model: str, source: str, runs: dict) -> str:
    L = [f"# Sequential editing on {model}", "",
         f"Facts from {source}, one edit per subject, each kept; evaluation points as listed. "
         "Retention: share of the edits so far whose edit prompt still gives the new target (teacher-forced, "
         "all target tokens top-1). NS/NKL on two neighbourhood prompts of every edited fact.", ""]
    for name, run in runs.items():
        cfg = run["config"]
        L += [f"## {name.upper()} — {cfg['n_edits']} edits, batch {run['batch']}, every {cfg['every']}", "",
              f"Edit time {run['edit_seconds']:.0f} s; complete: {run['complete']}"
              + (f"; **collapsed after {run['collapsed']['after']} edits: {run['collapsed']['reason']}**"
                 if run.get("collapsed") else "")
              + (f"; resumed from {run['resumed_from']} edits" if run.get("resumed_from") else ""), ""]
        keys = [k for k, _t, _r in PANELS]
        L += ["| edits | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        L += [f"| {p['n_edits']} | " + " | ".join(_row(p, k) for k in keys) + " |" for p in run["points"]]
        L.append("")
    return "\n".join(L)


def sequential_spec(model: str, runs: dict) -> dict:
    """The curves of every run as plotly JSON (see :mod:`.figures`)."""
    g = Grid(2, 3, [t for _k, t, _r in PANELS], f"Sequential editing on {model} (dotted: unedited value)", 1300, 720)
    tops = [0.0] * len(PANELS)
    for mi, (name, run) in enumerate(runs.items()):
        color = PALETTE[mi % len(PALETTE)]
        for pi, (key, _t, _r) in enumerate(PANELS):
            pts = [(p["n_edits"], p[key]) for p in run["points"] if p.get(key) is not None]
            if not pts:
                continue
            g.line(pi, name.upper(), color, [x for x, _ in pts], [y for _, y in pts], legend=pi == 0)
            if key in ("perplexity", "probe_accuracy", "neighbourhood_score"):
                g.reference(pi, pts[0][1], color)
            top = max(y for _, y in pts)
            tops[pi] = max(tops[pi], 2 * pts[0][1] if key == "perplexity" else 0, top)
    for pi, (_k, _t, rng) in enumerate(PANELS):
        g.y_range(pi, *((rng[0] - 0.02, rng[1] + 0.02) if rng else (0, tops[pi] * 1.05 or 1)))
    return g.spec()


def write_sequential(model: str, source: str, runs: dict, out: Path, stem: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"sequential-{model}-" + "-".join(runs) + f"-{max(r['config']['n_edits'] for r in runs.values())}"
    paths = {"md": out / f"{stem}.md"}
    paths["md"].write_text(sequential_markdown(model, source, runs), encoding="utf-8")
    paths.update(write_figure(sequential_spec(model, runs), f"Sequential editing on {model}", out / f"{stem}.html"))
    return paths
