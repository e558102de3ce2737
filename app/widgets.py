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
                                           "subject", "old", "new", "relation", "neighbours", "hp_", "quick"))


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


def impact_options(prefix: str) -> tuple[bool, bool, list[str]]:
    """The impact scan's switch and pool: ``(scan after the edit, every catalog prompt, your own prompts)``."""
    st.session_state.setdefault(f"{prefix}_scan", True)
    st.session_state.setdefault(f"{prefix}_scan_catalog", True)
    with st.expander("Impact scan: what else did the edit change?"):
        on = st.toggle("Scan after the edit", key=f"{prefix}_scan",
                       help="Reads every prompt of the pool before and after the edit and ranks them by KL of the "
                            "next-token distribution and by top-1 flips.")
        catalog = st.checkbox("every prompt of the fact catalog", key=f"{prefix}_scan_catalog",
                              help="A few thousand prompts about other facts; the unedited side is cached.")
        text = st.text_area("Your own prompts (one per line)", key=f"{prefix}_scan_texts",
                            placeholder="My favourite city is\nThe best museum in the world is", height=90)
        st.caption("Always scanned too: this fact's own prompts and, for a benchmark fact, the benchmark's.")
    return bool(on), bool(catalog), [t.strip() for t in (text or "").splitlines() if t.strip()]


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
    return free_form_picker(prefix, lm)


# The "try an example" button's fact. The old answer stays empty: it is the model's own.
EXAMPLE = {"prompt": "The Louvre is located in the city of", "subject": "The Louvre", "new": "London"}
ARROW = " → "


def _try_example(prefix: str) -> None:
    for k, v in EXAMPLE.items():
        st.session_state[f"{prefix}_{k}"] = v
    st.session_state[f"{prefix}_old"] = ""
    st.session_state[f"{prefix}_relation"] = "auto"


def _old_typed(prefix: str) -> None:
    """The current answer belongs to the prompt and subject it was typed for (see :func:`free_form_picker`)."""
    st.session_state[f"{prefix}_old_for"] = (st.session_state.get(f"{prefix}_prompt", "").strip(),
                                            st.session_state.get(f"{prefix}_subject", "").strip())


def neighbour_lines(rows) -> str:
    return "\n".join(f"{r['prompt']}{ARROW}{r['answer']}" if r.get("answer") else r["prompt"] for r in rows)


def parse_neighbours(text: str, built: list[dict]) -> list[dict]:
    """Lines "prompt → answer" (or just "prompt": the model's own answer) as neighbour rows; a line that is
    a built neighbour keeps its source."""
    sources = {r["prompt"].casefold(): r for r in built}
    rows = []
    for line in (text or "").splitlines():
        head, sep, tail = line.replace("->", "→").partition("→")
        prompt = " ".join(head.split())
        if not prompt:
            continue
        was = sources.get(prompt.casefold())
        rows.append({"prompt": prompt, "answer": " ".join(tail.split()) if sep else "",
                     "source": was["source"] if was else "typed by you", "fact_id": was.get("fact_id", "") if was else ""})
    return rows


def _relation_label(value: str, preview: dict) -> str:
    names = dict(preview.get("relation_choices") or [])
    if value == "auto":  # one label whatever the preview says: Streamlit keys a choice by its label
        return "recognise from the prompt"
    if value == "none":
        return "none (no catalog neighbours)"
    return f"{names.get(value, value)} ({value})"


def free_form_picker(prefix: str, lm) -> dict | None:
    """A typed-in fact. The form starts empty (the example is a button, never a silent value); the current
    answer is the unedited model's own unless typed, shown before the run, and a typed answer the model does
    not give is flagged. A typed answer belongs to the prompt and subject it was typed for: when they change
    it is cleared, so an edit can never run against another fact's answer. The neighbourhood is built from
    the catalog (shown with its sources) and is an editable list."""
    k = lambda name: f"{prefix}_{name}"  # noqa: E731
    top = st.columns([4, 1])
    top[0].caption("Type any fact: a prompt that ends where the answer would start, the subject it is about, and "
                   "the new target.")
    top[1].button("Try an example", key=k("example"), on_click=_try_example, args=(prefix,),
                  help="Fills in " + f"“{EXAMPLE['prompt']}” → {EXAMPLE['new']}.")
    prompt_now = st.session_state.get(k("prompt"), "").strip()
    subject_now = st.session_state.get(k("subject"), "").strip()
    bound = st.session_state.get(k("old_for"))
    cleared = None
    if st.session_state.get(k("old")) and bound and all(bound) and bound != (prompt_now, subject_now):
        cleared = st.session_state[k("old")]
        st.session_state[k("old")] = ""  # typed for another fact: never edit against it
    if st.session_state.get(k("old")) and (not bound or not all(bound)) and prompt_now and subject_now:
        st.session_state[k("old_for")] = (prompt_now, subject_now)  # typed before the fact was complete
    c1, c2 = st.columns(2)
    prompt = c1.text_input("Prompt (use {} for the subject, or write the subject out)", key=k("prompt"),
                           placeholder=EXAMPLE["prompt"])
    subject = c2.text_input("Subject", key=k("subject"), placeholder=EXAMPLE["subject"])
    c3, c4 = st.columns(2)
    old = c3.text_input("Current answer (empty: the model's own answer)", key=k("old"), on_change=_old_typed,
                        args=(prefix,), placeholder="the model's own answer")
    new = c4.text_input("New target", key=k("new"), placeholder=EXAMPLE["new"])
    if cleared:
        st.caption(f":orange[The current answer you typed, “{ui.escape_md(cleared)}”, was for another prompt or "
                   "subject, so it was cleared: the model's own answer is used. Type one again to override it.]")
    st.session_state.setdefault(k("relation"), "auto")
    relation = st.session_state[k("relation")]
    preview = ui.call(service.free_form_preview, lm, prompt, subject, old, relation) or {}
    if not prompt.strip() and not subject.strip():
        st.info("Type a prompt and its subject, or press **Try an example**.")
        return None
    spec = {"source": "free", "prompt": prompt, "subject": subject, "target_true": old, "target_new": new,
            "relation": relation}
    if preview.get("error"):
        st.caption(f":orange[{ui.escape_md(preview['error'])}]")
        return spec  # Run edit says the same in an error box
    own = preview.get("model_answer") or ""
    if preview.get("typed_is_models") is False:
        st.warning(f"The unedited model does not answer “{ui.escape_md(old)}” here: its own answer is "
                   f"“{ui.escape_md(own)}” (P = {ui.fmt(preview.get('p_model'), 3)}; P({ui.escape_md(old)}) = "
                   f"{ui.fmt(preview.get('p_typed'), 4)}). The edit is scored against the answer you typed.")
    elif own:
        st.caption(f"The unedited model continues “{ui.escape_md(preview['edit_prompt'])}” with "
                   f"“{ui.escape_md(preview.get('continuation', '').strip())}”: current answer **{ui.escape_md(own)}** "
                   f"(P = {ui.fmt(preview.get('p_model'), 3)})" + (" — the one you typed." if old else "."))
    else:
        st.warning("The unedited model writes no word after this prompt: type the current answer.")
    options = ["auto", "none", *[rid for rid, _ in preview.get("relation_choices") or []]]
    if relation not in options:
        st.session_state[k("relation")] = relation = "auto"
    relation = st.selectbox("Relation (for the neighbourhood)", options, key=k("relation"),
                            format_func=lambda v: _relation_label(v, preview),
                            help="Neighbours are other catalog subjects of this relation with the same answer "
                                 "(CounterFact's rule), put into your prompt's template.")
    if relation == "auto" and preview.get("relation_source") == "recognised":
        rid = preview["relation"]
        st.caption(f"Recognised relation: {ui.escape_md(dict(preview.get('relation_choices') or []).get(rid, rid))} "
                   f"({ui.escape_md(rid)})")
    elif relation == "auto" and preview.get("template"):
        st.caption("No catalog relation recognised in this prompt.")
    spec["relation"] = relation
    spec["neighbours"] = neighbourhood_box(prefix, preview, relation)
    if spec["neighbours"] is None:
        del spec["neighbours"]
    return spec


def neighbourhood_box(prefix: str, preview: dict, relation: str) -> list[dict] | None:
    """The neighbour list as editable text, one "prompt → answer" per line, starting from the built list.
    It is rebuilt whenever the fact changes (edits belong to the fact they were made for). Returns the
    edited rows, or None when the list is the built one (the service builds the same)."""
    key, built = f"{prefix}_neighbours", preview.get("neighbours") or []
    fact = (preview.get("template"), preview.get("model_answer"), preview.get("typed_answer"), relation)
    auto = neighbour_lines(built)
    if st.session_state.get(f"{key}_for") != fact:
        seeded = st.session_state.pop(f"{key}_seed", None)  # a shared link's list, once
        st.session_state[f"{key}_for"] = fact
        st.session_state[key] = seeded if seeded is not None else auto
    text = st.text_area("Neighbourhood: prompts whose answers the edit must not change (one per line, "
                        f"“prompt{ARROW}expected answer”; no answer: the model's own)", key=key,
                        height=min(68 + 24 * max(len(built), 3), 260),
                        help="Built from the catalog; add, change or delete lines. NKL, the neighbourhood score "
                             "and the distracted (CounterFact+) variants are computed on these prompts.")
    rows = parse_neighbours(text, built)
    if rows == parse_neighbours(auto, built):
        if built:
            sources = sorted({r["source"] for r in built})
            st.caption(f"{len(built)} neighbours built from the catalog ({'; '.join(sources)}).")
        else:
            st.caption(":orange[No catalog neighbours for this fact (no relation recognised, or no other subject "
                       "of it): type some above, or NKL and the neighbourhood score stay empty.]")
        return None
    typed = sum(r["source"] == "typed by you" for r in rows)
    st.caption(f"Your list: {len(rows)} neighbours ({typed} typed by you, {len(rows) - typed} from the catalog).")
    return rows


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
