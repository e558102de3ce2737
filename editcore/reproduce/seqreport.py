"""The report of long sequential runs: one table per method and one plotly page of curves.

Axes are chosen to be read correctly: shares (retention, NS, probe accuracy) always span 0-1, perplexity
starts at 0 with the unedited value as a dotted line, so a ±0.1 wiggle is not drawn as a cliff."""

from __future__ import annotations

from pathlib import Path

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


def sequential_figure(model: str, runs: dict):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _k, t, _r in PANELS])
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for mi, (name, run) in enumerate(runs.items()):
        color = palette[mi % len(palette)]
        for pi, (key, _t, rng) in enumerate(PANELS):
            pts = [(p["n_edits"], p[key]) for p in run["points"] if p.get(key) is not None]
            if not pts:
                continue
            r, c = pi // 3 + 1, pi % 3 + 1
            fig.add_trace(go.Scatter(x=[x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers",
                                     name=name.upper(), legendgroup=name, showlegend=pi == 0, line={"color": color}),
                          row=r, col=c)
            if key in ("perplexity", "probe_accuracy", "neighbourhood_score"):
                fig.add_hline(y=pts[0][1], line_dash="dot", line_color=color, opacity=0.5, row=r, col=c)
            if rng:
                fig.update_yaxes(range=[rng[0] - 0.02, rng[1] + 0.02], row=r, col=c)
            else:
                top = max(y for _, y in pts)
                if key == "perplexity":
                    top = max(top, 2 * pts[0][1])
                fig.update_yaxes(range=[0, top * 1.05 or 1], row=r, col=c)
    fig.update_xaxes(title_text="edits")
    fig.update_layout(title=f"Sequential editing on {model} (dotted: unedited value)", height=700, width=1300,
                      template="plotly_white")
    return fig


def write_sequential(model: str, source: str, runs: dict, out: Path, stem: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"sequential-{model}-" + "-".join(runs) + f"-{max(r['config']['n_edits'] for r in runs.values())}"
    paths = {"md": out / f"{stem}.md", "html": out / f"{stem}.html"}
    paths["md"].write_text(sequential_markdown(model, source, runs), encoding="utf-8")
    sequential_figure(model, runs).write_html(str(paths["html"]), include_plotlyjs="cdn")
    return paths
