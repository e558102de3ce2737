"""Shareable runs: the Edit page's form in the URL's query parameters, and back.

Every run of the page writes the form (model, fact or typed-in fields, target, method, changed
hyper-parameters, quick evaluation, impact scan and its pool) to the query string, so the address bar is always a link
to what is on the form; :func:`restore` seeds the widgets from such a link once per browser session. The
parameters are plain text (JSON for lists), never evaluated.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st

SOURCES = {"catalog": "Catalog", "benchmark": "Benchmark", "free": "Free-form"}
APPLIED = "edit_query_applied"


def _json(raw: str | None, default):
    try:
        return json.loads(raw) if raw else default
    except ValueError:
        return default


def restore(prefix: str = "edit") -> bool:
    """Seed the widgets from the URL, once per session; True when the link named a fact (the page then shows
    its cached result, if any)."""
    if st.session_state.get(APPLIED):
        return False
    st.session_state[APPLIED] = True
    q = st.query_params
    k = lambda name: f"{prefix}_{name}"  # noqa: E731
    source = SOURCES.get(q.get("src") or ("catalog" if q.get("fact") else ""))
    if source:
        st.session_state[k("source")] = source
    named = False
    if source == "Catalog" and q.get("fact"):
        st.session_state[k("fact")] = q["fact"]
        if q.get("target"):
            st.session_state[k("target")] = q["target"]
            st.session_state[k("target_fact")] = q["fact"]  # so the target box keeps it
        named = True
    elif source == "Benchmark" and q.get("bench") and q.get("case"):
        st.session_state[k("bench")] = q["bench"]
        st.session_state[k("bench_case")] = q["case"]
        if q.get("n"):
            st.session_state[k("bench_n")] = int(q["n"]) if q["n"].isdigit() else 50
        if q.get("target"):
            st.session_state[k("bench_target")] = q["target"]
            st.session_state[k("bench_target_fact")] = f"{q['bench']}/{q['case']}"
        named = True
    elif source == "Free-form":
        for name in ("prompt", "subject", "old", "new"):
            st.session_state[k(name)] = q.get(name, "")
        st.session_state[k("old_for")] = (q.get("prompt", "").strip(), q.get("subject", "").strip())
        st.session_state[k("relation")] = q.get("relation") or "auto"
        rows = _json(q.get("neighbours"), None)
        if isinstance(rows, list):
            from app.widgets import neighbour_lines

            st.session_state[k("neighbours_seed")] = neighbour_lines(
                [{"prompt": str(r[0]), "answer": str(r[1]) if len(r) > 1 else ""} for r in rows
                 if isinstance(r, list) and r])
        named = bool(q.get("prompt") and q.get("new"))
    if q.get("method"):
        st.session_state[k("method")] = q["method"]
        for name, value in (_json(q.get("hp"), {}) or {}).items():
            st.session_state[f"{k('hp')}_{q['method']}_{name}"] = json.dumps(value) if isinstance(value, list) else value
    if q.get("quick") in ("0", "1"):
        st.session_state[k("quick")] = q["quick"] == "1"
    if q.get("scan") in ("0", "1"):
        st.session_state[k("scan")] = q["scan"] == "1"
    if q.get("cat") in ("0", "1"):
        st.session_state[k("scan_catalog")] = q["cat"] == "1"
    return named


def state(model: str, spec: dict | None, method: str, overrides: dict | None, quick: bool, scan: bool,
          catalog: bool = True) -> dict:
    """The query parameters of this form (only what is set)."""
    out: dict[str, str] = {"model": model}
    spec = spec or {}
    src = spec.get("source")
    if src == "catalog":
        out.update(src="catalog", fact=spec["id"], target=spec.get("target_new") or "")
    elif src == "benchmark":
        out.update(src="benchmark", bench=spec["name"], case=spec["id"], n=str(spec.get("limit", 50)),
                   target=spec.get("target_new") or "")
    elif src == "free":
        out.update(src="free", prompt=spec.get("prompt", ""), subject=spec.get("subject", ""),
                   old=spec.get("target_true") or "", new=spec.get("target_new") or "",
                   relation=spec.get("relation") or "auto")
        if spec.get("neighbours") is not None:
            out["neighbours"] = json.dumps([[r["prompt"], r.get("answer", "")] for r in spec["neighbours"]],
                                           ensure_ascii=False)
    out["method"] = method
    if overrides:
        out["hp"] = json.dumps(overrides, sort_keys=True)
    out["quick"] = "1" if quick else "0"
    out["scan"] = "1" if scan else "0"
    if not catalog:
        out["cat"] = "0"  # the scan's pool without the catalog's prompts
    return {key: v for key, v in out.items() if v != ""}


def write(params: dict) -> None:
    """Put ``params`` in the address bar (no rerun); only when they changed."""
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def link(params: dict) -> str:
    """The full link of this form: the page's own address with ``params`` as its query."""
    base = getattr(st.context, "url", None) or ""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(params), ""))
