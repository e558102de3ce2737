"""Rendering of one edit result (the Edit page's output): continuations, scorecard, NKL, shifts, the impact
scan, downloads.

:class:`ResultView` owns one slot per section, created in page order before the run starts, and fills a
slot as soon as the result holds its data: the run's stages (``service.run_edit(on_stage=...)``) draw the
before/after texts and the scorecard while the other metric families still run, and the impact scan
redraws its slot after every chunk. A result from the cache fills every slot at once.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import charts, export, labels, ui
from editcore import service


def _chart(fig, name: str, key: str) -> None:
    st.plotly_chart(fig, key=f"chart_{key}")
    ok, _why = export.status()
    # Short labels (the chart is right above; its name is in the tooltip): "⬇ neighbour KL chart (HTML)"
    # was cut to "⬇ neighbour …" in a column at 1280 px.
    c = st.columns([1, 1, 3])
    c[0].download_button("⬇ chart (HTML)", charts.to_html(fig), file_name=f"{key}.html", mime="text/html",
                         key=f"dl_{key}", on_click="ignore", help=f"Download the {name} as an interactive HTML file")
    if ok:
        c[1].download_button("⬇ chart (PNG)", export.png_maker(fig), file_name=f"{key}.png", mime="image/png",
                             key=f"png_{key}", on_click="ignore", help=f"Download the {name} as a PNG image")


def header(result: dict) -> None:
    req = result["request"]
    m = result["method"]
    st.markdown(f"**{ui.escape_md(m['name'])}** edit: {ui.escape_md(req['prompt'])} "
                f":red[~~{ui.escape_md(req['target_true'] or '?')}~~] → :green[**{ui.escape_md(req['target_new'])}**]")
    for w in result.get("diagnostics", {}).get("warnings", []):
        st.warning(ui.escape_md(w))
    for note in result.get("fact_notes") or []:
        st.warning(ui.escape_md(note))
    pr = result.get("probabilities", {})
    pre, post = pr.get("pre", {}), pr.get("post", {})
    parts = [f"P({ui.escape_md(req['target_new'])}): {ui.fmt(pre.get('p_new'), 4)} → **{ui.fmt(post.get('p_new'), 4)}**"]
    if "p_old" in pre:
        parts.append(f"P({ui.escape_md(req['target_true'])}): {ui.fmt(pre.get('p_old'), 4)} → "
                     f"**{ui.fmt(post.get('p_old'), 4)}**")
    secs = (result.get("seconds") or {}).get("edit")
    st.markdown(" · ".join(parts) + " (on the edit prompt)" + (f" · edit computed in {secs:.1f} s" if secs else ""))


def generations(result: dict) -> None:
    st.subheader("Before vs after")
    head = st.columns([2, 3, 3])
    head[0].markdown("**prompt**")
    head[1].markdown("**before the edit**")
    head[2].markdown("**after the edit** (changed words highlighted)")
    for g in result["generations"]:
        c = st.columns([2, 3, 3])
        c[0].markdown(f":gray[{ui.escape_md(g['kind'])}] {ui.escape_md(g['prompt'])}")
        c[1].markdown(ui.escape_md(g["pre"]) or "_(empty)_")
        c[2].markdown(ui.diff_markdown(g["diff"]))


def scorecard(result: dict, pending: bool = False) -> dict:
    """The scorecard; ``pending``: the second evaluation pass is still running, so its numbers are
    "computing", not "not computed"."""
    st.subheader("Scorecard")
    card = service.scorecard(result)
    ran = set((result.get("evaluation") or {}).get("families") or [])
    skipped = service.not_computed(result)
    # Two rows, so that labels are not cut at 1280 px; deltas are relative to the unedited model.
    cols = st.columns(4) + st.columns(4)[:3]
    for col, (key, label, higher) in zip(cols, labels.SCORECARD):
        v, pre = card.get(key), card.get(f"{key}_pre")
        if key in skipped:
            # Not measured at all: never a number (and never 0). The words go in the grey delta line,
            # because a value as long as "not computed" is cut off at 1280 px.
            computing = pending and service.SCORECARD_FAMILY.get(key) in ran
            col.metric(ui.metric_label(key), "…" if computing else "—",
                       delta="computing" if computing else "not computed", delta_color="off", delta_arrow="off",
                       help=ui.metric_help(key))
            continue
        # "—" alone: measured, but this fact has no data for it.
        value = "—" if v is None else (f"{v:.2f}" if key == "seconds" else f"{v:.3f}")
        delta = None if v is None or pre is None else f"{v - pre:+.3f}"
        col.metric(ui.metric_label(key), value, delta=delta, delta_color="normal" if higher else "inverse",
                   help=ui.metric_help(key))
    extra = []
    if card.get("score") is not None:
        extra.append(f"CounterFact score (harmonic mean of ES, PS, NS): **{card['score']:.3f}**")
    if card.get("nkl_distracted") is not None:
        extra.append(f"distracted NKL: **{card['nkl_distracted']:.4f}**")
    if card.get("perplexity") is not None:
        extra.append(f"perplexity {ui.fmt(card.get('perplexity_pre'), 2)} → **{card['perplexity']:.2f}**")
    if extra:
        st.markdown(" · ".join(extra))
    if (result.get("evaluation") or {}).get("quick"):
        st.caption("Quick evaluation: fluency, perplexity and the downstream-task probes were not computed "
                   "(switch **Quick evaluation** off and run again to compute them).")
    notes = (result.get("report") or {}).get("notes") or []
    if notes and not pending:
        st.caption(" · ".join(ui.escape_md(n) for n in notes))
    if result.get("cached"):
        st.caption("from the results cache (same model, method version, hyper-parameters and fact)")
    return card


def neighbour_table(result: dict) -> None:
    rows = result.get("neighbourhood") or []
    if not rows:
        return
    kl = dict(zip((result["report"]["families"].get("nkl") or {}).get("prompts", []),
                  (result["report"]["families"].get("nkl") or {}).get("per_prompt", [])))
    table = [{"#": i + 1, "neighbour prompt": r["prompt"], "expected answer": r["answer"], "from": r["source"],
              "NKL": kl.get(r["prompt"])} for i, r in enumerate(rows)]
    st.caption("Where each neighbour comes from. Each also has a CounterFact+ *distracted* variant, the edit "
               "prompt and new target in front of it (“… London. The Eiffel Tower is located in”), built by the "
               "NKL metric.")
    st.dataframe(pd.DataFrame(table), hide_index=True, key="neighbour_table",
                 column_config={"NKL": st.column_config.NumberColumn(format="%.3e")})  # KLs of 1e-5 are common


def nkl(result: dict) -> None:
    rows = service.nkl_rows(result)
    st.subheader("Neighbour KL", help=ui.metric_help("nkl"))
    if not rows:
        st.info("This fact has no neighbourhood prompts, so there is no NKL. Type some in the fact's "
                "**Neighbourhood** box (or choose its relation) and run again.")
        return
    _chart(charts.nkl_bars(rows), "neighbour KL chart", "nkl")
    neighbour_table(result)


def shifts(result: dict) -> None:
    view = service.shift_views(result)
    st.subheader("Probability shifts",
                 help=f"What moved besides the edited fact. [Definition]({ui.definition_url('shifts')})")
    if not view["groups"] and not view["related"]:
        st.info("This evaluation has no probability-shift data.")
        return
    if view.get("bleed"):
        b = view["bleed"]
        st.markdown(f"Bleed of the new target: on **{ui.fmt(b['rate'], 2)}** of {b['n']} neighbour/unrelated "
                    f"prompts it newly became the top-1 next token; mean rise of its probability "
                    f"**{ui.fmt(b['rise'], 4)}**.")
    if view["related"]:
        # The "Big Ben" view first: after Louvre → London, do London's landmarks rise?
        _chart(charts.related_words(view["related"]), "related words chart", "related")
        suggested = sorted({r["group"] for r in view["related"] if r.get("source") == "suggested"})
        if suggested:
            st.caption("Related words of " + " and ".join(ui.escape_md(g) for g in suggested) + " were suggested by "
                       "the unedited model itself (its likeliest one-token words after prompts such as "
                       "“… is famous for its”), because the fact has no related words for that target.")
    if view["groups"]:
        st.caption(f"Risers and fallers are tokens of the model's vocabulary, not words: "
                   f"{charts.SPACE_MARK} marks a leading space, so {charts.SPACE_MARK}London (a word of its "
                   "own) and London (glued to the text before it) are two different tokens.")
        tabs = st.tabs([g["kind"] for g in view["groups"]])
        for tab, g in zip(tabs, view["groups"]):
            with tab:
                _chart(charts.shift_bars(g), f"{g['kind']} shifts chart", f"shifts_{g['kind']}")
    if view["per_prompt"]:
        with st.expander("Top-1 next token per prompt, before vs after"):
            st.dataframe(pd.DataFrame(view["per_prompt"]), hide_index=True, key="shift_table")


IMPACT_HELP = ("Every prompt of the pool (this fact's, yours, the benchmark's and every catalog prompt) read "
               "before and after the edit: KL(post ‖ pre) of the next-token distribution, the NKL metric's "
               "divergence, and whether the top-1 next token changed. The unedited side is cached per model.")


def impact(view: dict, scan: dict | None = None, final: bool = True) -> None:
    """The impact scan: a summary line, the KL distribution, the most affected prompts. ``view`` is
    :func:`service.impact.impact_view`; ``scan`` (the finished scan) adds the continuations and downloads.
    A partial view (``final=False``, drawn while the scan runs) has no widgets and its chart's key names the
    count scanned, so it can be drawn again after the next chunk."""
    st.subheader("Impact scan: what else did this edit change?", help=IMPACT_HELP)
    s = view["summary"]
    if not s["n"]:
        st.info("Nothing scanned yet.")
        return
    head = (f"**{view['scanned']}** of {view['total']} prompts scanned" if not view["done"] else
            f"**{s['n']}** prompts scanned")
    if scan and scan.get("seconds"):
        head += f" in {scan['seconds']:.1f} s ({scan['prompts_per_second']:.0f} prompts/s)"
    st.markdown(f"{head} · KL median **{s['median']:.2g}**, 90th percentile **{s['p90']:.2g}**, max "
                f"**{s['max']:.3g}** nats · {s['over_0.1']} prompts with KL > 0.1 · top-1 next token changed on "
                f"**{s['flipped']}** · the new target became the top-1 on **{s['new_top1']}**.")
    if view.get("neighbour_mean") is not None:
        st.caption(f"For scale: this fact's own neighbours moved by {view['neighbour_mean']:.3g} nats on average (NKL).")
    ranked = view["ranked"]
    hist, bars = charts.impact_histogram(view["kl"], view.get("neighbour_mean")), charts.impact_bars(ranked)
    if final:
        _chart(bars, "impact chart", "impact_top")
        _chart(hist, "impact distribution chart", "impact_hist")
    else:
        # Redrawn after every chunk: a key of its own each time (two equal charts without keys would clash).
        st.plotly_chart(bars, key=f"chart_impact_partial_{view['scanned']}")
    top = {t["prompt"]: t for t in (scan or {}).get("top", [])}
    table = [{"prompt": r["prompt"], "from": r["source"], "KL": r["kl"],
              "top-1 before": charts.token_label(r["top_pre"]), "top-1 after": charts.token_label(r["top_post"]),
              "P(top-1 before): before → after": f"{r['p_top_pre'][0]:.3f} → {r['p_top_pre'][1]:.3f}",
              **({"continuation before": top[r["prompt"]]["before"], "continuation after": top[r["prompt"]]["after"]}
                 if r["prompt"] in top else {})}
             for r in ranked[:max(len(top), 12)]]
    st.dataframe(pd.DataFrame(table), hide_index=True, key="impact_table" if final else None,
                 column_config={"KL": st.column_config.NumberColumn(format="%.3e")})
    if final and scan:
        csv = pd.DataFrame([{k: v for k, v in r.items() if k not in ("p_top_pre", "p_top_post")}
                            | {"p_top_pre_before": r["p_top_pre"][0], "p_top_pre_after": r["p_top_pre"][1]}
                            for r in ranked]).to_csv(index=False)
        st.download_button("⬇ every scanned prompt (CSV)", csv, file_name="editscope_impact.csv", mime="text/csv",
                           key="dl_impact_csv", on_click="ignore")
        if scan.get("edit_recomputed"):
            st.caption("The edit was computed again for this scan (the result came from the cache).")
        if scan.get("cached"):
            st.caption("Impact scan from the results cache.")


def downloads(result: dict) -> None:
    st.subheader("Download")
    c = st.columns(3)
    c[0].download_button("⬇ full result (JSON)", json.dumps(result, indent=1), file_name="editscope_result.json",
                         mime="application/json", key="dl_json",
                         on_click="ignore")
    csv = pd.DataFrame(service.result_csv_rows(result)).to_csv(index=False)
    c[1].download_button("⬇ metrics (CSV)", csv, file_name="editscope_result.csv", mime="text/csv", key="dl_csv",
                         on_click="ignore")
    ok, why = export.status()
    c[2].caption("Every chart has HTML and PNG downloads below it." if ok else
                 f"Charts download as HTML ({ui.escape_md(why)}; or use the camera icon on each chart).")


class ResultView:
    """Slots for every section, filled as the result grows (see the module docstring)."""

    ORDER = ("header", "generations", "scorecard", "nkl", "shifts", "impact", "downloads")

    def __init__(self):
        self.slots = {name: st.empty() for name in self.ORDER}
        self.drawn: set[str] = set()
        self.scorecard_final = False

    def _draw(self, name: str, fn, *args) -> None:
        with ui.shield(), self.slots[name].container():
            fn(*args)
        self.drawn.add(name)

    def show(self, stage: str, result: dict | None) -> None:
        """Draw what ``result`` holds and is not on the page yet (``stage``: run_edit's stage name, or "views"
        for a finished result)."""
        if not result:
            return
        families = (result.get("report") or {}).get("families") or {}
        if "header" not in self.drawn and "probabilities" in result:
            self._draw("header", header, result)
        if "generations" not in self.drawn and "generations" in result:
            self._draw("generations", generations, result)
        complete = stage == "views"
        if "counterfact" in families and not self.scorecard_final:
            # Drawn once early (numbers of the second pass "computing"), and again when they are in.
            self._draw("scorecard", scorecard, result, not complete)
            self.scorecard_final = complete
        if complete:
            for name, fn in (("nkl", nkl), ("shifts", shifts), ("downloads", downloads)):
                if name not in self.drawn:
                    self._draw(name, fn, result)

    def show_impact(self, view: dict, scan: dict | None = None, final: bool = True) -> None:
        self._draw("impact", impact, view, scan, final)

    def impact_note(self, text: str) -> None:
        with self.slots["impact"].container():
            st.subheader("Impact scan: what else did this edit change?", help=IMPACT_HELP)
            st.caption(text)


def full(result: dict) -> None:
    """Every section of a finished result (the Compare page's details and tests use it)."""
    ResultView().show("views", result)
