"""Plotly figures built from plain data (lists of dicts), so they can be tested without Streamlit and
exported as standalone HTML.

Every builder takes rows as produced by :mod:`editcore.service` and returns a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
HEIGHT = 380


def _short(text: str, n: int = 48) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    # The top margin leaves room for the title and legend above plotly's toolbar (which sits top right).
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=kw.pop("height", HEIGHT),
                      margin=dict(l=10, r=10, t=kw.pop("top", 80), b=10),
                      template="plotly_white",
                      legend=dict(orientation="h", x=1, y=1.02, xanchor="right", yanchor="bottom"), **kw)
    return fig


SPACE_MARK = "␣"  # shown for a token's leading/trailing spaces: ' London' (a word start) is not 'London'


def token_label(token) -> str:
    """A vocabulary token as a readable label: leading and trailing spaces become ␣, line breaks ↵ and
    tabs → (each one), so that ' London' (␣London) and 'London' look different; an empty token is ∅."""
    text = str(token)
    if not text:
        return "∅"
    core = text.strip(" ")
    lead, trail = len(text) - len(text.lstrip(" ")), len(text) - len(text.rstrip(" "))
    if not core:
        return SPACE_MARK * len(text)
    core = core.replace("\n", "↵").replace("\t", "→")
    return SPACE_MARK * lead + core + SPACE_MARK * trail


def _moved_hover(moved: Sequence[dict], k: int = 5) -> str:
    # Token strings come from the model's vocabulary: escape them, plotly hover text is HTML.
    parts = []
    for m in list(moved)[:k]:
        tok = html.escape(repr(str(m.get("token", ""))))
        before, after = m.get("before"), m.get("after")
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            parts.append(f"{tok}: {before:.3g} → {after:.3g}")
        elif isinstance(m.get("dlogp"), (int, float)):
            parts.append(f"{tok}: Δ log P {m['dlogp']:+.3g}")
        else:
            parts.append(tok)
    return "<br>".join(parts) if parts else "(none)"


def nkl_bars(rows: Sequence[dict]) -> go.Figure:
    """One bar per neighbourhood prompt, grouped by kind (plain / distracted); hover lists the tokens whose
    probability moved most."""
    fig = go.Figure()
    kinds = list(dict.fromkeys(r.get("kind", "plain") for r in rows))
    for i, kind in enumerate(kinds):
        sel = [r for r in rows if r.get("kind", "plain") == kind]
        fig.add_bar(
            name=kind,
            x=[f"{j + 1}. {_short(r['prompt'], 40)}" for j, r in enumerate(sel)],
            y=[r.get("nkl") for r in sel],
            marker_color=PALETTE[i % len(PALETTE)],
            customdata=[[html.escape(r["prompt"]), _moved_hover(r.get("top_moved", []))] for r in sel],
            hovertemplate="%{customdata[0]}<br>NKL = %{y:.4g}<br><b>top moved tokens</b><br>%{customdata[1]}"
                          "<extra>%{fullData.name}</extra>",
        )
    fig.update_yaxes(title="KL(post ‖ pre), nats")
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, "Neighbour KL per prompt", barmode="group")


def shift_bars(prompt_row: dict, k: int = 10) -> go.Figure:
    """Risers (green) and fallers (red) on one prompt (or group of prompts): the tokens whose next-token
    log-probability moved most (Δ log P in nats; hover shows the probabilities). Tokens are labelled by
    :func:`token_label` (␣ for a leading space)."""
    risers = list(prompt_row.get("risers", []))[:k]
    fallers = list(prompt_row.get("fallers", []))[:k]
    # Labels must be unique, or plotly stacks different tokens on one row (e.g. several byte-level tokens
    # that each decode to "�"): a repeated label gets " ·2", " ·3", ...
    seen: dict[str, int] = {}
    labels = []
    for r in risers + fallers:
        label = token_label(r.get("token", ""))
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} ·{seen[label]}")
    fig = go.Figure()
    for rows, ys, name, colour in ((risers, labels[:len(risers)], "risers", "#2ca02c"),
                                   (fallers, labels[len(risers):], "fallers", "#d62728")):
        fig.add_bar(
            name=name, orientation="h", marker_color=colour,
            y=ys,
            x=[_delta(r) for r in rows],
            customdata=[[r.get("before"), r.get("after")] for r in rows],
            hovertemplate="%{y}: P %{customdata[0]:.3g} → %{customdata[1]:.3g} (Δ log P %{x:+.3g})<extra></extra>",
        )
    fig.update_xaxes(title="Δ log P (nats, after − before)")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Risers and fallers: {_short(prompt_row.get('prompt', ''), 60)}",
                   height=max(HEIGHT, 24 * (len(risers) + len(fallers)) + 120))


def _delta(r: dict) -> float | None:
    if isinstance(r.get("dlogp"), (int, float)):
        return r["dlogp"]
    if isinstance(r.get("before"), (int, float)) and isinstance(r.get("after"), (int, float)) and r["before"] > 0 \
            and r["after"] > 0:
        import math

        return math.log(r["after"]) - math.log(r["before"])
    return None


def related_words(rows: Sequence[dict]) -> go.Figure:
    """Related words of the new and old target: probability before vs after (log scale)."""
    fig = go.Figure()
    groups = list(dict.fromkeys(r.get("group", "") for r in rows))
    for i, group in enumerate(groups):
        sel = [r for r in rows if r.get("group", "") == group]
        labels = [f"{r.get('word', '')} · {_short(r.get('prompt', ''), 28)}" if r.get("prompt") else r.get("word", "")
                  for r in sel]
        fig.add_bar(name=f"{group}: before", x=labels, y=[r.get("before") for r in sel],
                    marker_color=PALETTE[(2 * i) % len(PALETTE)], opacity=0.45)
        fig.add_bar(name=f"{group}: after", x=labels, y=[r.get("after") for r in sel],
                    marker_color=PALETTE[(2 * i) % len(PALETTE)])
    fig.update_yaxes(type="log", title="probability")
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, "Related words of the new and old target, before vs after", barmode="group")


def impact_histogram(kls: Sequence[float], neighbour_mean: float | None = None) -> go.Figure:
    """How far every scanned prompt moved: a histogram of KL on a log axis (KL = 0 cannot sit on it and is
    counted in the title), with the fact's own mean neighbour KL marked for reference."""
    import math

    pos = [k for k in kls if k and k > 0]
    zero = len(kls) - len(pos)
    fig = go.Figure(go.Histogram(x=[math.log10(k) for k in pos], nbinsx=40, marker_color=PALETTE[0],
                                 hovertemplate="log10 KL %{x}<br>%{y} prompts<extra></extra>"))
    if neighbour_mean and neighbour_mean > 0:
        x = math.log10(neighbour_mean)
        fig.add_vline(x=x, line_dash="dash", line_color=PALETTE[1])
        fig.add_annotation(x=x, y=1, yref="paper", text="mean NKL of this fact's neighbours", showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color=PALETTE[1]))
    ticks = list(range(-8, 3))
    fig.update_xaxes(title="KL(post ‖ pre), nats (log scale)", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks])
    fig.update_yaxes(title="prompts")
    title = f"KL over {len(kls)} scanned prompts" + (f" ({zero} with KL = 0 not shown)" if zero else "")
    return _layout(fig, title, height=340)


def impact_bars(rows: Sequence[dict], k: int = 20) -> go.Figure:
    """The ``k`` most affected prompts: KL bars, red where the top-1 next token changed; hover shows where
    the prompt comes from and the top-1 token before → after."""
    rows = list(rows)[:k]
    labels, seen = [], {}
    for r in rows:
        label = _short(r["prompt"], 56)
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} ·{seen[label]}")
    fig = go.Figure(go.Bar(
        orientation="h", y=labels, x=[r["kl"] for r in rows],
        marker_color=[PALETTE[1] if r.get("flipped") else PALETTE[0] for r in rows],
        customdata=[[html.escape(r["prompt"]), html.escape(r.get("source", "")),
                     html.escape(token_label(r.get("top_pre", ""))), html.escape(token_label(r.get("top_post", "")))]
                    for r in rows],
        hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>KL = %{x:.4g}<br>top-1: %{customdata[2]} → "
                      "%{customdata[3]}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="KL(post ‖ pre), nats")
    return _layout(fig, f"The {len(rows)} most affected prompts (red: the top-1 next token changed)",
                   height=max(HEIGHT, 22 * len(rows) + 120))


def fmt_sig(v: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, "—" when missing (the Compare table and heatmap cells)."""
    return "—" if v is None else f"{v:.{digits}g}"


def method_label(row: dict) -> str:
    """A method's name in charts, with † when its result carries an EditScope adaptation of the paper."""
    return f"{row['method']} †" if row.get("adaptation") else row["method"]


def compare_heatmap(rows: Sequence[dict], metrics: Sequence[tuple[str, str, bool]]) -> go.Figure:
    """Methods × metrics. Colour is the value scaled per metric so that 1 = best among the methods (for
    'lower is better' metrics the scale is flipped); the cell text is the raw value."""
    methods = [method_label(r) for r in rows]
    z, text = [], []
    for key, _label, higher in metrics:
        vals = [r.get(key) for r in rows]
        z.append(_row_scores(vals, higher))
        text.append([fmt_sig(v) for v in vals])
    fig = go.Figure(go.Heatmap(z=z, x=methods, y=[label for _k, label, _h in metrics], text=text,
                               texttemplate="%{text}", colorscale="RdYlGn", zmin=0, zmax=1, showscale=False,
                               hovertemplate="%{y} · %{x}: %{text}<extra></extra>"))
    # A short title: at half of 1280 px a longer one runs under plotly's toolbar (the page explains the colours).
    return _layout(fig, "All metrics", height=90 + 42 * len(metrics))


def _row_scores(vals: Sequence, higher: bool) -> list[float | None]:
    """One heatmap row scaled to [0, 1] with 1 = best: (value - worst) / (best - worst). Every value tied
    at the best is 1 (green), also when all methods tie; a missing value stays None (no colour)."""
    nums = [v for v in vals if isinstance(v, (int, float))]
    if not nums:
        return [None for _ in vals]
    best, worst = (max(nums), min(nums)) if higher else (min(nums), max(nums))
    if best == worst:
        return [None if v is None else 1.0 for v in vals]
    return [None if v is None else (v - worst) / (best - worst) for v in vals]


def compare_radar(rows: Sequence[dict], metrics: Sequence[tuple[str, str, bool]]) -> go.Figure:
    """Radar of the metrics that live in [0, 1] with higher = better (rates), one trace per method."""
    fig = go.Figure()
    labels = [label.replace(" ", "<br>") for _k, label, _h in metrics]  # two-line labels fit at half width
    for i, r in enumerate(rows):
        vals = [r.get(k) for k, _l, _h in metrics]
        fig.add_trace(go.Scatterpolar(r=vals + vals[:1], theta=labels + labels[:1], name=method_label(r),
                                      line_color=PALETTE[i % len(PALETTE)], connectgaps=False))
    # Margins keep the angular labels ("Neighbourhood score") inside the chart at half of 1280 px.
    fig.update_layout(polar=dict(radialaxis=dict(range=[0, 1]), domain=dict(x=[0.2, 0.8], y=[0, 0.9])))
    return _layout(fig, "Rates (1 = best)")


def curves(runs: dict[str, Sequence[dict]], metric: str, label: str, *, log_y: bool = False,
           y_range: tuple[float, float] | None = None) -> go.Figure:
    """``metric`` versus number of edits, one line per method (``runs``: method -> evaluation points).
    ``y_range`` fixes the y axis (e.g. (0, 1) for shares) instead of fitting it to the data."""
    fig = go.Figure()
    for i, (method, points) in enumerate(runs.items()):
        pts = [p for p in points if p.get(metric) is not None]
        fig.add_scatter(x=[p["n_edits"] for p in pts], y=[p[metric] for p in pts], mode="lines+markers",
                        name=method, line_color=PALETTE[i % len(PALETTE)])
    fig.update_xaxes(title="number of edits", rangemode="tozero")
    fig.update_yaxes(title=label, type="log" if log_y else "linear")
    if y_range is not None:
        pad = 0.03 * (y_range[1] - y_range[0])  # so that markers at exactly 0 or 1 are not cut in half
        fig.update_yaxes(range=[y_range[0] - pad, y_range[1] + pad])
    return _layout(fig, f"{label} vs number of edits", height=320)


def to_html(fig: go.Figure) -> str:
    """A standalone HTML file (plotly.js inlined, so it opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


# ---- causal tracing and the logit lens (issue #20; rows from editcore.service.trace) ---------------------
TRACE_COLOURS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}  # the paper's colours per kind
TRACE_TITLES = {"hidden": "Residual stream", "mlp": "MLP output", "attn": "Attention output"}


def _token_ticks(trace: dict) -> list[str]:
    """Readable, escaped tick labels of a trace's tokens; subject tokens carry a star (as in the paper)."""
    s0, s1 = trace["subject_range"]
    return [html.escape(token_label(t)) + ("*" if s0 <= i < s1 else "") for i, t in enumerate(trace["tokens"])]


def trace_heatmap(trace: dict, kind: str, title: str | None = None) -> go.Figure:
    """One causal-tracing heatmap: tokens (rows) x layers, the colour P(answer) with that state restored,
    from the corrupted probability (white) up. Rows are numbered, so repeated tokens stay apart."""
    k = trace["kinds"][kind]
    ticks = _token_ticks(trace)
    z = k["scores"]
    layers = list(range(len(z[0]) if z else 0))
    answer = html.escape(token_label(trace.get("answer_token", trace.get("answer", ""))))
    fig = go.Figure(go.Heatmap(
        z=z, x=layers, y=list(range(len(ticks))), colorscale=TRACE_COLOURS.get(kind, "Blues"),
        zmin=trace["low"], zmax=max(trace["high"], max((max(r) for r in z), default=trace["low"])),
        customdata=[[ticks[i]] * len(layers) for i in range(len(ticks))],
        colorbar=dict(title=dict(text=f"P({answer})", side="right"), thickness=12),
        hovertemplate="%{customdata} · layer %{x}: P = %{z:.3g}<extra></extra>"))
    fig.update_yaxes(tickvals=list(range(len(ticks))), ticktext=ticks, autorange="reversed")
    w = k.get("window", 1)
    fig.update_xaxes(title="restored layer" if kind == "hidden" or w == 1 else f"centre of {w} restored layers",
                     dtick=max(1, len(layers) // 9))
    # Short titles: at half of 1280 px a longer one runs under plotly's toolbar.
    return _layout(fig, title or TRACE_TITLES.get(kind, kind),
                   height=max(240, 22 * len(ticks) + 130), top=50)


def logit_lens_chart(lens_before: dict, lens_after: dict | None, position: str) -> go.Figure:
    """P(old) and P(new) read out from every layer at one position (``last`` or ``subject_last``), before
    (solid) and after (dashed) the edit, on a log scale; hover names each layer's top token."""
    fig = go.Figure()
    colours = {"old": PALETTE[0], "new": PALETTE[1]}
    for state, lens, dash in (("before", lens_before, "solid"), ("after", lens_after, "dash")):
        if not lens:
            continue
        pos = lens["positions"][position]
        tops = [f"{html.escape(token_label(t))} ({p:.2g})" for t, p in pos["top"]]
        for label, probs in pos["p"].items():
            target = html.escape(lens["targets"].get(label, label))
            fig.add_scatter(x=lens["layers"], y=probs, mode="lines+markers", name=f"P({target}) {state}",
                            line=dict(color=colours.get(label, PALETTE[2]), dash=dash), customdata=tops,
                            hovertemplate="layer %{x}: %{y:.3g}<br>top: %{customdata}<extra>%{fullData.name}</extra>")
    pos = (lens_before or lens_after)["positions"][position]
    fig.update_yaxes(type="log", title="probability (first token)")
    fig.update_xaxes(title="layer (emb = embeddings)", type="category")
    where = "last token" if position == "last" else "subject's end"
    return _layout(fig, f"Lens: {where} “{html.escape(token_label(pos['token']))}”", height=360, top=110)


def trace_average(summary: dict, kind: str) -> go.Figure:
    """The average indirect effect of restoring ``kind`` per layer, one line per token category."""
    k = summary["kinds"][kind]
    fig = go.Figure()
    for i, (cat, values) in enumerate(k["aie"].items()):
        if all(v is None for v in values):
            continue
        bold = cat in ("last subject token", "last token")
        fig.add_scatter(x=list(range(len(values))), y=values, mode="lines+markers", name=cat,
                        line=dict(color=PALETTE[i % len(PALETTE)], width=3 if bold else 1.5),
                        hovertemplate=f"{cat} · layer %{{x}}: AIE %{{y:.3g}}<extra></extra>")
    fig.update_xaxes(title="restored layer" if kind == "hidden" else f"centre of {k['window']} restored layers")
    fig.update_yaxes(title="average indirect effect")
    return _layout(fig, f"{TRACE_TITLES.get(kind, kind)}: average over {summary['n_facts']} facts",
                   height=340, top=90)


def localisation_scatter(rows: Sequence[dict], score: str = "rewrite", effect: str = "mlp_last") -> go.Figure:
    """Tracing effect against an edit score, one point per (fact, edited layer), coloured by the layer."""
    fig = go.Figure(go.Scatter(
        x=[r[effect] for r in rows], y=[r[score] for r in rows], mode="markers",
        marker=dict(color=[r["layer"] for r in rows], colorscale="Viridis", size=8, showscale=True,
                    colorbar=dict(title="layer", thickness=12)),
        customdata=[[html.escape(str(r["fact"])), r["layer"]] for r in rows],
        hovertemplate="%{customdata[0]} · layer %{customdata[1]}<br>effect %{x:.3g}, score %{y:.3g}<extra></extra>"))
    fig.update_xaxes(title="tracing effect (fraction restored, MLP at the subject's last token)")
    fig.update_yaxes(title={"rewrite": "ROME rewrite score", "success": "ROME edit success",
                            "neighbourhood": "neighbourhood score"}.get(score, score))
    return _layout(fig, f"Tracing effect vs {score} per (fact, layer)", height=380)


def localisation_layers(per_layer: Sequence[dict]) -> go.Figure:
    """Per edited layer: mean tracing effect and ROME's success, neighbourhood and rewrite scores."""
    fig = go.Figure()
    x = [r["layer"] for r in per_layer]
    for i, (key, name) in enumerate((("mlp_last", "tracing effect (MLP, subject's last token)"),
                                     ("success", "edit success"), ("neighbourhood", "neighbourhood score"),
                                     ("rewrite", "rewrite score"))):
        fig.add_scatter(x=x, y=[r[key] for r in per_layer], mode="lines+markers", name=name,
                        line=dict(color=PALETTE[i % len(PALETTE)]))
    fig.update_xaxes(title="layer (ROME edits here; tracing restores its MLP window)")
    fig.update_yaxes(title="mean over facts", range=[-0.03, 1.03])
    return _layout(fig, "Where the fact is traced vs where editing works", height=380, top=100)
