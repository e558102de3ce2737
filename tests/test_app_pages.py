"""AppTests for the Compare, Sequential, Pitfalls and Methods pages on a tiny random model."""

import pytest
from streamlit.testing.v1 import AppTest

import app_harness as h


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("pages")):
        yield


def open_page(name: str) -> AppTest:
    at = h.app()
    at.switch_page(h.page(name)).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    return at


def tiny_memit(at: AppTest, prefix: str) -> None:
    at.text_input(key=f"{prefix}_hp_memit_layers").set_value("[1, 2]")
    at.number_input(key=f"{prefix}_hp_memit_stats_samples").set_value(2000)


def test_compare_table_charts_and_details_link():
    at = open_page("compare")
    for cb in at.checkbox:
        if cb.key.startswith("cmp_m_"):
            cb.set_value(cb.key == "cmp_m_memit")
    at.text_input(key="cmp_search").set_value("Louvre").run(timeout=h.TIMEOUT)
    tiny_memit(at, "cmp")
    at.button(key="cmp_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["method"]) == ["memit"] and float(table["Seconds"].iloc[0]) > 0
    assert list(table["Fluency"]) == ["—"]  # quick evaluation: not computed, shown "—", never "None" or 0
    assert not any("previous run" in c.value for c in at.caption)
    assert not any("From the results cache" in c.value for c in at.caption)
    at.button(key="cmp_run").click().run(timeout=h.TIMEOUT)  # the same comparison again: from the cache
    assert any("From the results cache, not recomputed: memit" in c.value for c in at.caption)
    at.checkbox(key="cmp_m_rome").check().run(timeout=h.TIMEOUT)  # the form no longer matches the result
    assert any("Result of the previous run" in c.value for c in at.caption)
    assert any("[Efficacy](methods#efficacy)" in c.value for c in at.caption)  # the table's metrics link too
    assert len(at.get("plotly_chart")) == 2
    at.button(key="cmp_detail_memit").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    # The Edit page opened with the same fact and method, straight from the results cache.
    assert at.session_state["edit_result"]["method"]["name"] == "memit"
    assert "Louvre" in at.session_state["edit_result"]["request"]["prompt"]
    assert any("from the results cache" in c.value for c in at.caption)


def test_sequential_run_draws_curves_and_a_reload_shows_the_stored_run():
    at = open_page("sequential")
    at.multiselect(key="seq_methods").set_value(["memit"])
    at.number_input(key="seq_n").set_value(3)
    at.number_input(key="seq_every").set_value(1)
    at.run(timeout=h.TIMEOUT)
    # the tiny hyper-parameters go through the run config's overrides (no editor on this page)
    at.session_state["seq_overrides"] = {"memit": {"layers": [1, 2], "stats_samples": 2000}}
    at.button(key="seq_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= 3  # retention, locality, drift (+ perplexity when measured)
    assert any("complete" in m.value for m in at.markdown)
    # The progress box sits above the live charts (it stays in view while they grow), and shares are 0-1.
    order = [node.type for node in at.main if node.type in ("status", "plotly_chart", "expandable")]
    assert order[0] in ("status", "expandable") and "plotly_chart" in order[1:], order
    again = open_page("sequential")
    again.session_state["seq_overrides"] = {"memit": {"layers": [1, 2], "stats_samples": 2000}}
    again.multiselect(key="seq_methods").set_value(["memit"])
    again.number_input(key="seq_n").set_value(3)
    again.number_input(key="seq_every").set_value(1).run(timeout=h.TIMEOUT)
    assert any("stored result" in c.value for c in again.caption)
    assert len(again.get("plotly_chart")) >= 3


def test_sequential_defaults_to_memit_and_a_stop_keeps_and_shows_the_partial_run(monkeypatch):
    from editcore.service import sequential

    lm = h.shared_lm("tiny-gpt2")
    before = lm.digest()
    at = open_page("sequential")
    assert at.multiselect(key="seq_methods").value == ["memit"]
    at.number_input(key="seq_n").set_value(4)
    at.number_input(key="seq_every").set_value(1)
    at.number_input(key="seq_seed").set_value(7)
    at.run(timeout=h.TIMEOUT)
    at.session_state["seq_overrides"] = {"memit": {"layers": [1, 2], "stats_samples": 2000}}
    # Press Stop while edit 2 is being evaluated: AppTest cannot click during a run, so the evaluation
    # sets the flag the Stop button sets (it runs in the script's thread, with its session state).
    real, calls = sequential._seq_point, {"n": 0}

    def point_then_stop(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # points after 0, 1, 2 edits
            import streamlit as st

            st.session_state["seq_stop_requested"] = True
        return real(*a, **k)

    monkeypatch.setattr(sequential, "_seq_point", point_then_stop)
    at.button(key="seq_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [(b.state, b.label) for b in at.status] == [("error", "4 sequential edits — stopped")]
    assert any("memit**: stopped after 2 edits;" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert lm.digest() == before
    # The partial run is on disk: opening the page again with the same configuration shows it.
    again = open_page("sequential")
    again.session_state["seq_overrides"] = {"memit": {"layers": [1, 2], "stats_samples": 2000}}
    again.number_input(key="seq_n").set_value(4)
    again.number_input(key="seq_every").set_value(1)
    again.number_input(key="seq_seed").set_value(7).run(timeout=h.TIMEOUT)
    assert any("stored result" in c.value for c in again.caption)
    assert any("memit**: stopped after 2 edits;" in m.value for m in again.markdown)
    # Run clears the earlier Stop of that session: the next run goes to the end.
    monkeypatch.setattr(sequential, "_seq_point", real)
    assert at.session_state["seq_stop_requested"]
    at.button(key="seq_run").click().run(timeout=h.TIMEOUT)
    assert [(b.state, b.label) for b in at.status] == [("complete", "4 sequential edits — done")]
    assert any("memit**: complete;" in m.value for m in at.markdown)


def test_pitfalls_tables_with_an_empty_published_column():
    at = open_page("pitfalls")
    at.multiselect(key="pit_methods").set_value(["memit"])
    at.number_input(key="pit_n").set_value(1)
    at.session_state["pit_overrides"] = {"memit": {"layers": [1, 2], "stats_samples": 2000}}
    at.button(key="pit_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    t3 = at.dataframe[0].value
    assert {"reverse CS", "composite TFD", "coverage CM"} <= set(t3.columns)
    assert t3["published GPT-J (Li et al. 2024)"].isna().all()
    t4 = at.dataframe[1].value
    assert {"Succ", "IR", "FR"} <= set(t4.columns)
    assert 0.0 <= t4["Succ"].iloc[0] <= 1.0


def test_methods_page_has_an_anchor_for_every_metric_link():
    import re

    from app import ui

    at = open_page("methods")
    anchors = {hd.proto.anchor for hd in at.header}
    assert {anchor for _label, _text, anchor in ui.METRIC_HELP.values()} <= anchors
    assert len(at.latex) >= 4
    # Every definition link the pages draw (labels, help texts, captions) lands on one of these anchors.
    linked = set()
    for page in ("sequential", "pitfalls"):
        other = open_page(page)
        linked |= set(re.findall(r"\]\(methods#([\w-]+)\)", "\n".join(c.value for c in other.caption)))
    linked |= set(re.findall(r"\]\(methods#([\w-]+)\)", "\n".join(ui.metric_help(k) for k in ui.METRIC_HELP)))
    linked.add(ui.definition_url("shifts").split("#")[1])
    assert {"sequential", "pitfalls", "efficacy", "nkl"} <= linked and linked <= anchors


def test_methods_page_describes_every_registered_method():
    """The page reads each method's MethodInfo: a method added to the registry appears with no page edit."""
    from editcore.methods import available, get_method

    at = open_page("methods")
    text = "\n".join(m.value for m in at.markdown)
    for name in available():
        info = get_method(name).info
        assert f"**{info.title}** ({info.reference})" in text and info.summary in text
    assert any("adaptation" in c.value for c in at.caption)  # MEMIT's Gemma mapping is labelled
