"""Drawing one step of the guided tour (the Tour page's output): the headline number, the view that shows
the effect, the cases tried and the "why" paragraph. Every piece of model or catalog text is escaped."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, labels, ui

esc = ui.escape_md


def _headline(col, label: str, value: str, note: str = "", good: bool | None = None) -> None:
    col.metric(label, value, delta=note or None, delta_color="off" if good is None else
               ("normal" if good else "inverse"), delta_arrow="off")


def _table(rows: list[dict], key: str, columns: dict[str, str]) -> None:
    if not rows:
        st.caption("no rows")
        return
    df = pd.DataFrame(rows)
    df = df[[c for c in columns if c in df.columns]].rename(columns=columns)
    st.dataframe(df, hide_index=True, key=key)


# Narrow headers: the table must fit 1280 px without a sideways scroll.
_CF_COLUMNS = {"kind": "kind", "prompt": "prompt", "expected": "should win", "other": "against",
               "p_expected": "P(should win)", "p_other": "P(against)", "success": "wins",
               "success_before": "before"}


def _edit_head(ex: dict) -> None:
    st.markdown(f"**{esc(ex['method'])}** edit: {esc(ex['label'])}")
    if ex.get("adaptation"):
        st.caption(f"† {esc(ex['adaptation'])}")


def reliability(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        role = ex.get("role")
        st.markdown(f"#### {esc(role.capitalize()) if role else 'The edit did not win on its own prompt'}")
        _edit_head(ex)
        c = st.columns(3)
        _headline(c[0], "Efficacy (edit prompt)", ui.fmt(ex["efficacy"], 2))
        _headline(c[1], "Generalisation (paraphrases)", ui.fmt(ex["generalisation"], 2),
                  "every paraphrase wins" if role == "generalises" else
                  "a paraphrase loses" if role else "", good=role == "generalises" if role else None)
        rows = [{**r, "kind": r["kind"] + (" ✗" if not r["success"] else "")} for r in ex["rows"]]
        with c[2]:
            st.caption("P is ROME's convention: exp(−mean token NLL) of the answer after the prompt.")
        _table(rows, f"tour_{sid}_rows_{i}", _CF_COLUMNS)


def portability(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        _edit_head(ex)
        c = st.columns(3)
        _headline(c[0], "Efficacy", ui.fmt(ex["efficacy"], 2))
        _headline(c[1], "Portability (token accuracy)", ui.fmt(ex["portability"], 2),
                  f"{ex['not_ported']} of {len(ex['rows'])} probes not ported", good=ex["not_ported"] == 0)
        _table(ex["rows"], f"tour_{sid}_rows_{i}",
               {"set": "probe", "prompt": "prompt", "expected": "implied answer", "generated": "model now says",
                "token_acc_before": "acc. before", "token_acc_after": "acc. after", "ported": "ported"})


def locality(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        _edit_head(ex)
        c = st.columns(3)
        _headline(c[0], "Neighbour prompts flipped to the new target", str(ex["flipped"]),
                  f"of {len(ex['neighbours'])}", good=ex["flipped"] == 0)
        _headline(c[1], "Largest neighbour KL (nats)", ui.fmt(ex["nkl_max"], 4),
                  f"{ex['nkl_moved']} of {len(ex['nkl_rows'])} prompts above 0.01", good=ex["nkl_moved"] == 0)
        _headline(c[2], "Neighbour top-1 tokens changed", str(len(ex["top1_changed"])))
        if ex["nkl_rows"]:
            st.plotly_chart(charts.nkl_bars(ex["nkl_rows"]), key=f"tour_{sid}_nkl_{i}")
        _table(ex["neighbours"], f"tour_{sid}_rows_{i}", _CF_COLUMNS)


def bigben(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        _edit_head(ex)
        c = st.columns(3)
        _headline(c[0], "Related words of the new target that rose", f"{ex['rising']} of {ex['new_related']}",
                  f"top riser: {ex['top_riser']}" if ex["top_riser"] else "")
        _headline(c[1], "Mean change of log P (related words)", ui.fmt(ex["mean_dlogp"], 3))
        b = ex.get("bleed") or {}
        _headline(c[2], "Bleed into unrelated prompts", ui.fmt(b.get("rate"), 2),
                  f"new top-1 on a share of {b.get('n', 0)} prompts")
        if ex["related"]:
            st.plotly_chart(charts.related_words(ex["related"]), key=f"tour_{sid}_related_{i}")
        groups = [g for g in ex.get("groups") or [] if g["kind"] == "unrelated"]
        if groups:
            st.plotly_chart(charts.shift_bars(groups[0]), key=f"tour_{sid}_unrelated_{i}")


def conflicts(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        st.markdown(f"Edit 1: {esc(ex['edit1'])}  \nEdit 2: {esc(ex['edit2'])}  \n:gray[{esc(ex['id'])}, "
                    f"{esc(ex['method'])}]")
        c = st.columns(3)
        _headline(c[0], "Winner after both edits", ex["winner"],
                  "edit 2's fact beats edit 1's" if ex["conflict"] else "edit 1's fact still beats edit 2's")
        _headline(c[1], "Conflict magnitude CM", ui.fmt(ex["magnitude"], 3),
                  "share of edit 1's probability lost to edit 2", good=(ex["magnitude"] or 0) <= 0)
        _headline(c[2], "P(edit 1's object)", f"{ui.fmt(ex['p1_o1'], 3)} → {ui.fmt(ex['p2_o1'], 3)}",
                  "after edit 1 → after edit 2")


def distortion(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        st.markdown(f"There: {esc(ex['forward'])}  \nBack: {esc(ex['backward'])}  \n:gray[{esc(ex['id'])}, "
                    f"{esc(ex['method'])}]")
        c = st.columns(3)
        _headline(c[0], "Ignore rate IR", ui.fmt(ex["ignore_rate"], 2),
                  "share of other true objects that fell", good=(ex["ignore_rate"] or 0) == 0)
        _headline(c[1], "Distortion D (JS, nats)", ui.fmt(ex["distortion"], 4))
        _headline(c[2], "Round-trip success", ui.fmt(ex["success"], 2))
        rows = [{"object": o, "P before": a, "P after the round trip": b, "fell": b < a}
                for o, a, b in zip(ex["others"], ex["others_pre"], ex["others_post"])]
        _table(rows, f"tour_{sid}_rows_{i}", {k: k for k in ("object", "P before", "P after the round trip", "fell")})


def deterioration(res: dict, sid: str) -> None:
    if not res["examples"]:
        return
    cols = st.columns(len(res["examples"]))
    for col, ex in zip(cols, res["examples"]):
        kind = "keeps the weights" if ex["preserving"] else "edits the weights"
        ch = ex.get("ppl_change")
        _headline(col, f"{ex['method']} ({kind}): perplexity",
                  f"{ui.fmt(ex['first'].get('perplexity'), 1)} → {ui.fmt(ex['last'].get('perplexity'), 1)}",
                  "" if ch is None else f"{ch:+.1%} after {ex.get('n_edits')} edits", good=not ex["shows"])
        acc = ex.get("acc_change")
        col.caption(f"probe accuracy {ui.fmt(ex['first'].get('probe_accuracy'), 2)} → "
                    f"{ui.fmt(ex['last'].get('probe_accuracy'), 2)}"
                    + ("" if acc is None else f" ({acc:+.2f})"))
    runs = {ex["method"]: ex["points"] for ex in res["examples"]}
    for key in ("perplexity", "probe_accuracy"):
        label, log_y = labels.SEQ_CURVES[key]
        st.plotly_chart(charts.curves(runs, key, label, log_y=log_y,
                                      y_range=(0.0, 1.0) if key in labels.SEQ_RATE_CURVES else None),
                        key=f"tour_{sid}_{key}")


def location(res: dict, sid: str) -> None:
    for i, ex in enumerate(res["examples"]):
        st.markdown(f"Traced: {esc(ex['prompt'] or '')} → {esc(ex['answer'] or '')}")
        c = st.columns(3)
        _headline(c[0], "Causal trace peaks at MLP layer", str(ex["peak_layer"]),
                  f"token {ex['peak_token']!r}" + (" (last subject token)" if ex["peak_is_subject_last"] else ""))
        _headline(c[1], "The edit wrote to layer", str(ex["edited_layer"]))
        _headline(c[2], "P(answer): clean / corrupted", f"{ui.fmt(ex['high'], 3)} / {ui.fmt(ex['low'], 3)}")
        heatmap = getattr(charts, "trace_heatmap", None)
        if heatmap is not None and ex.get("trace", {}).get("before"):
            st.plotly_chart(heatmap(ex["trace"]["before"]["trace"], "mlp"), key=f"tour_{sid}_trace_{i}")


DRAW = {"reliability": reliability, "portability": portability, "locality": locality, "bigben": bigben,
        "conflicts": conflicts, "distortion": distortion, "deterioration": deterioration, "location": location}


def step(res: dict) -> None:
    """One step's outcome: found or not (and why), its view, the cases tried and the why paragraph."""
    s = res["step"]
    if res.get("needs"):
        st.info(f"This step needs {esc(res['needs'])}.")
    if res["found"]:
        st.success(f"Found on {esc(res['model'])}: the view below shows the effect.")
    elif res.get("message"):
        st.warning(f"Not shown on this model: {esc(res['message'])}."
                   + (" What the last case tried did is below." if res["examples"] else ""))
    DRAW[s["id"]](res, s["id"])
    if res["tried"]:
        with st.expander(f"Cases tried ({len(res['tried'])})"):
            st.dataframe(pd.DataFrame(res["tried"]), hide_index=True, key=f"tour_{s['id']}_tried")
    st.markdown(f"**Why.** {esc(s['why'])}")
    st.caption(f"Reference: {esc(s['reference'])}")
    if res.get("cached"):
        st.caption("from the results cache (same model, method, hyper-parameters and tour version)")
    elif res["tried"] and all(t.get("cached") for t in res["tried"]):
        st.caption(f"searched in {res.get('seconds', 0.0):.1f} s: every edit tried was already in the results "
                   "cache (an earlier step computed it)")
    else:
        st.caption(f"computed in {res.get('seconds', 0.0):.1f} s")
