"""Rendering of one edit result (the Edit page's output): continuations, scorecard, NKL, shifts, downloads."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import charts, labels, ui
from editcore import service


def _chart(fig, name: str, key: str) -> None:
    st.plotly_chart(fig, key=f"chart_{key}")
    st.download_button(f"⬇ {name} (HTML)", charts.to_html(fig), file_name=f"{key}.html", mime="text/html",
                       key=f"dl_{key}")


def generations(result: dict) -> None:
    st.subheader("Before vs after")
    pr = result.get("probabilities", {})
    pre, post = pr.get("pre", {}), pr.get("post", {})
    req = result["request"]
    parts = [f"P({ui.escape_md(req['target_new'])}): {ui.fmt(pre.get('p_new'), 4)} → **{ui.fmt(post.get('p_new'), 4)}**"]
    if "p_old" in pre:
        parts.append(f"P({ui.escape_md(req['target_true'])}): {ui.fmt(pre.get('p_old'), 4)} → "
                     f"**{ui.fmt(post.get('p_old'), 4)}**")
    st.markdown(" · ".join(parts) + " (on the edit prompt)")
    head = st.columns([2, 3, 3])
    head[0].markdown("**prompt**")
    head[1].markdown("**before the edit**")
    head[2].markdown("**after the edit** (changed words highlighted)")
    for g in result["generations"]:
        c = st.columns([2, 3, 3])
        c[0].markdown(f":gray[{ui.escape_md(g['kind'])}] {ui.escape_md(g['prompt'])}")
        c[1].markdown(ui.escape_md(g["pre"]) or "_(empty)_")
        c[2].markdown(ui.diff_markdown(g["diff"]))


def scorecard(result: dict) -> dict:
    st.subheader("Scorecard")
    card = service.scorecard(result)
    skipped = service.not_computed(result)
    # Two rows, so that labels are not cut at 1280 px; deltas are relative to the unedited model.
    cols = st.columns(4) + st.columns(4)[:3]
    for col, (key, label, higher) in zip(cols, labels.SCORECARD):
        v, pre = card.get(key), card.get(f"{key}_pre")
        if key in skipped:
            # Not measured at all: never a number (and never 0). The words go in the grey delta line,
            # because a value as long as "not computed" is cut off at 1280 px.
            col.metric(ui.metric_label(key), "—", delta="not computed", delta_color="off", delta_arrow="off",
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
    if notes:
        st.caption(" · ".join(ui.escape_md(n) for n in notes))
    if result.get("cached"):
        st.caption("from the results cache (same model, method version, hyper-parameters and fact)")
    return card


def nkl(result: dict) -> None:
    rows = service.nkl_rows(result)
    st.subheader("Neighbour KL", help=ui.metric_help("nkl"))
    if not rows:
        st.info("This fact has no neighbourhood prompts, so there is no NKL.")
        return
    _chart(charts.nkl_bars(rows), "neighbour KL chart", "nkl")


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
    if view["related"]:
        _chart(charts.related_words(view["related"]), "related words chart", "related")
        suggested = sorted({r["group"] for r in view["related"] if r.get("source") == "suggested"})
        if suggested:
            st.caption("Related words of " + " and ".join(ui.escape_md(g) for g in suggested) + " were suggested by "
                       "the unedited model itself (its likeliest one-token words after prompts such as "
                       "“… is famous for its”), because the fact has no related words for that target.")


def downloads(result: dict) -> None:
    st.subheader("Download")
    c = st.columns(3)
    c[0].download_button("⬇ full result (JSON)", json.dumps(result, indent=1), file_name="editscope_result.json",
                         mime="application/json", key="dl_json")
    csv = pd.DataFrame(service.result_csv_rows(result)).to_csv(index=False)
    c[1].download_button("⬇ metrics (CSV)", csv, file_name="editscope_result.csv", mime="text/csv", key="dl_csv")
    c[2].caption("PNG export needs the kaleido package, which is not installed; charts download as HTML "
                 "(or use the camera icon on each chart).")


def full(result: dict) -> None:
    req = result["request"]
    m = result["method"]
    st.markdown(f"**{ui.escape_md(m['name'])}** edit: {ui.escape_md(req['prompt'])} "
                f":red[~~{ui.escape_md(req['target_true'] or '?')}~~] → :green[**{ui.escape_md(req['target_new'])}**]")
    for w in result.get("diagnostics", {}).get("warnings", []):
        st.warning(ui.escape_md(w))
    generations(result)
    scorecard(result)
    nkl(result)
    shifts(result)
    downloads(result)
