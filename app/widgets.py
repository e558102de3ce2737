"""Input widgets shared by several pages: the fact picker and the hyper-parameter editor.

Each returns plain data (a case spec dict, an overrides dict) that the service layer understands.
"""

from __future__ import annotations

import json

import streamlit as st

from app import ui
from editcore import service

SOURCES = ("Catalog", "Benchmark", "Free-form")


def copyable(prefix: str) -> tuple[str, ...]:
    """Key prefixes of the fact-picker and hyper-parameter widgets (to carry a choice to another page)."""
    return tuple(f"{prefix}_{k}" for k in ("source", "search", "known", "fact", "target", "bench", "prompt",
                                           "subject", "old", "new", "hp_", "quick"))


def quick_toggle(prefix: str, container=st) -> bool:
    """The "quick evaluation" switch (on by default): skip the slow metric families."""
    key = f"{prefix}_quick"
    # The default goes through session state, so a value copied from another page wins without a warning.
    st.session_state.setdefault(key, True)
    return bool(container.toggle(
        "Quick evaluation", key=key,
        help="Skips fluency (greedy generation), perplexity and the downstream-task probes, the slow part of "
             "the evaluation; efficacy, generalisation, neighbourhood score, NKL, portability, locality and "
             "probability shifts are still computed. Quick and full results are cached separately."))


def target_box(key: str, fact_id: str, entry: dict) -> str:
    """The new target of a catalog or benchmark fact: one of its own targets, or any text the user types.

    The box starts at the fact's first target whenever the fact changes (the fact it was set for is kept
    under ``<key>_fact``, a key that :func:`copyable` carries along with the box's own)."""
    targets = list(entry["targets_new"])
    if st.session_state.get(f"{key}_fact") != fact_id or not st.session_state.get(key):
        st.session_state[f"{key}_fact"] = fact_id
        st.session_state[key] = targets[0]
    target = st.selectbox("New target", targets, key=key, accept_new_options=True,
                          help="One of this fact's targets, or type any other word and press Enter.")
    target = " ".join(str(target or "").split())
    if target and not service.is_case_target(entry, target):
        st.caption(f"**{ui.escape_md(target)}** is not one of this fact's own targets: the fact's paraphrases, "
                   "neighbours and subject aliases are still used, but it has no one-hop portability questions "
                   "for this target (such as the country it lies in). Its related words come from another catalog "
                   "fact that lists them (Big Ben for London), or else are suggested by the model itself.")
    return target


def fact_picker(prefix: str, lm) -> dict | None:
    """Choose a fact and a new target. Returns the case spec (None until one is chosen); every spec names
    its new target (``"target_new"``)."""
    source = st.radio("Fact from", SOURCES, horizontal=True, key=f"{prefix}_source")
    if source == "Catalog":
        c1, c2 = st.columns([3, 1])
        query = c1.text_input("Search the catalog", key=f"{prefix}_search", placeholder="Louvre, Paris, mother tongue…")
        known = c2.checkbox("known by this model", key=f"{prefix}_known",
                            help="Only facts whose true answer is the model's own greedy answer "
                                 "(editcore.catalog.known_facts).")
        entries = ui.call(service.catalog_entries, lm, known, query) or []
        if not entries:
            st.warning("No catalog fact matches." if query or known else "The fact catalog is empty.")
            return None
        by_id = {e["id"]: e for e in entries}
        fact_id = st.selectbox("Fact", list(by_id), key=f"{prefix}_fact", format_func=lambda i: by_id[i]["label"])
        entry = by_id.get(fact_id)
        if entry is None:
            return None
        target = target_box(f"{prefix}_target", fact_id, entry)
        return {"source": "catalog", "id": fact_id, "target_new": target}
    if source == "Benchmark":
        names = ui.call(service.benchmark_names) or []
        if not names:
            st.warning("No public benchmark is readable here (editcore.benchmarks or the data folder is missing).")
            return None
        c1, c2 = st.columns([3, 1])
        name = c1.selectbox("Benchmark", names, key=f"{prefix}_bench")
        limit = c2.number_input("cases listed", 1, 2000, 50, key=f"{prefix}_bench_n")
        entries = ui.call(service.benchmark_entries, name, int(limit)) or []
        if not entries:
            return None
        by_id = {e["id"]: e for e in entries}
        case_id = st.selectbox("Case", list(by_id), key=f"{prefix}_bench_case", format_func=lambda i: by_id[i]["label"])
        entry = by_id[case_id]
        target = target_box(f"{prefix}_bench_target", f"{name}/{case_id}", entry)
        return {"source": "benchmark", "name": name, "id": case_id, "limit": int(limit), "target_new": target}
    c1, c2 = st.columns(2)
    prompt = c1.text_input("Prompt (use {} for the subject, or write the subject out)", key=f"{prefix}_prompt",
                           value="The Louvre is located in")
    subject = c2.text_input("Subject", key=f"{prefix}_subject", value="The Louvre")
    c3, c4 = st.columns(2)
    old = c3.text_input("Current answer (empty: the model's own greedy answer)", key=f"{prefix}_old", value="Paris")
    new = c4.text_input("New target", key=f"{prefix}_new", value="London")
    return {"source": "free", "prompt": prompt, "subject": subject, "target_true": old, "target_new": new}


def hparam_editor(prefix: str, method: str, model: str) -> dict | None:
    """Hyper-parameters in an expander, defaults from the method's file for this model (or, with the
    reference toggle on, that file under the method's reference preset); returns the overrides (values that
    differ from those defaults, plus the preset), or None if they cannot be read."""
    rows = ui.call(service.method_hparams, method, model)
    if rows is None:
        return None
    overrides: dict = {}
    with st.expander(f"Hyper-parameters of {method} (defaults for {model})"):
        if any(r["name"] == "preset" for r in rows):
            reference = st.toggle(
                "Reference preset", key=f"{prefix}_hp_{method}_preset_toggle",
                help="Run the method as its paper's released code does (e.g. ROME: no early stop, ROME's 20 "
                     "context prefixes, statistics from the whole corpus; slower, and the statistics take minutes "
                     "the first time), and measure fluency as ROME does. Off: EditScope's faster defaults. "
                     "Every result records the preset.")
            if reference:
                rows = ui.call(service.method_hparams, method, model, {"preset": "reference"})
                if rows is None:
                    return None
                overrides["preset"] = "reference"
            rows = [r for r in rows if r["name"] != "preset"]
        tag = "ref_" if overrides.get("preset") == "reference" else ""
        cols = st.columns(3)
        for i, row in enumerate(rows):
            # The preset is part of the key: the two presets' defaults differ, so their widgets must too.
            key = f"{prefix}_hp_{method}_{tag}{row['name']}"
            col = cols[i % 3]
            v, help_ = row["value"], row["help"] or None
            if row["choices"] is not None and row["kind"] != "bool":
                value = col.selectbox(row["name"], row["choices"], index=row["choices"].index(v) if v in row["choices"]
                                      else 0, key=key, help=help_)
            elif row["kind"] == "bool":
                value = col.checkbox(row["name"], value=bool(v), key=key, help=help_)
            elif row["kind"] == "int":
                # The range is enforced by the service (a clear error), not clamped silently by the widget.
                value = int(col.number_input(row["name"], value=int(v), step=1, key=key, help=help_))
            elif row["kind"] == "float":
                value = float(col.number_input(row["name"], value=float(v), format="%.6g", key=key, help=help_))
            elif row["kind"] == "list":
                text = col.text_input(row["name"], value=json.dumps(v), key=key, help=help_)
                try:
                    value = json.loads(text)
                except ValueError:
                    col.error(f"{row['name']}: not a JSON list")
                    return None
            else:
                value = col.text_input(row["name"], value=str(v), key=key, help=help_)
            if value != v:
                overrides[row["name"]] = value
        changed = {k: v for k, v in overrides.items() if k != "preset"}
        if changed:
            st.caption("changed: " + ", ".join(f"{k} = {ui.escape_md(json.dumps(v))}" for k, v in changed.items()))
    return overrides


def trained_only(lm, methods: list[str], container=st) -> list[str]:
    """``methods`` less those that need a trained component this model does not have yet (MEND's
    hypernetwork); each of those gets a one-line note with the command that trains it. The dashboard never
    trains anything by itself."""
    usable = []
    for name in methods:
        status = ui.call(service.training_status, lm, name)
        if status is None:
            continue
        if status["trained"]:
            usable.append(name)
        else:
            container.info(f"**{name}** needs a component trained for this model first: run "
                           f"`{status['command']}` (once; it is cached).")
    return usable
