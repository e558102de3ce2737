"""Rendering of one edit result (the Edit page's output): continuations, scorecard, NKL, shifts, downloads."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import ui
from editcore import charts, service


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
    cols = st.columns(len(service.SCORECARD))
    for col, (key, label, _higher) in zip(cols, service.SCORECARD):
        v = card.get(key)
        col.metric(label, "—" if v is None else (f"{v:.2f}" if key == "seconds" else f"{v:.3f}"),
                   help=ui.metric_help(key))
    if result.get("cached"):
        st.caption("from the results cache (same model, method version, hyper-parameters and fact)")
    return card


def nkl(result: dict) -> None:
    rows = service.nkl_rows(result)
    st.subheader("Neighbour KL")
    if not rows:
        st.info("This evaluation has no neighbourhood prompts.")
        return
    _chart(charts.nkl_bars(rows), "neighbour KL chart", "nkl")


def shifts(result: dict) -> None:
    view = service.shift_views(result)
    st.subheader("Probability shifts")
    if not view["prompts"] and not view["related"]:
        st.info("This evaluation has no probability-shift data.")
        return
    if view.get("bleed") is not None:
        st.caption(f"bleed: {ui.escape_md(json.dumps(view['bleed']))}")
    prompts = view["prompts"]
    if prompts:
        tabs = st.tabs([f"{p.get('kind', 'prompt')}: {p.get('prompt', '')[:30]}" for p in prompts])
        for i, (tab, p) in enumerate(zip(tabs, prompts)):
            with tab:
                _chart(charts.shift_bars(p), f"shifts on prompt {i + 1}", f"shifts_{i}")
    if view["related"]:
        _chart(charts.related_words(view["related"]), "related words chart", "related")


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
    generations(result)
    scorecard(result)
    nkl(result)
    shifts(result)
    downloads(result)
