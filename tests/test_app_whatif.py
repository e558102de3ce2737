"""AppTest: ad-hoc what-if edits on the Edit page (tiny random model, FT-L: no layer statistics needed).

Free-form facts with a neighbourhood built from the catalog, an edited neighbour list, the impact scan, a
shared link restoring the form and its cached result, and the stale-answer case."""

import pytest
from streamlit.testing.v1 import AppTest

import app_harness as h

PROMPT, SUBJECT = "The Louvre is located in", "The Louvre"


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("whatif")):
        yield


def edit_page(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(h.MAIN, default_timeout=h.TIMEOUT)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(h.page("edit")).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    return at


def free_form(at: AppTest, prompt=PROMPT, subject=SUBJECT, old="Paris", new="London", scan_catalog=False) -> None:
    at.radio(key="edit_source").set_value("Free-form").run(timeout=h.TIMEOUT)
    at.text_input(key="edit_prompt").set_value(prompt)
    at.text_input(key="edit_subject").set_value(subject)
    at.text_input(key="edit_old").set_value(old)
    at.text_input(key="edit_new").set_value(new)
    at.selectbox(key="edit_method").select("ft_l")
    if not scan_catalog:
        at.checkbox(key="edit_scan_catalog").uncheck()
    at.run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception


def run(at: AppTest) -> dict:
    at.button(key="edit_run").click().run(timeout=600)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at.session_state["edit_result"]


def table(at: AppTest, column: str):
    """The first st.dataframe with this column (AppTest does not look dataframes up by key)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {column!r}")


def chart_ids(at: AppTest) -> str:
    return " ".join(c.proto.id for c in at.get("plotly_chart"))


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning])


def test_the_free_form_starts_empty_and_the_example_is_a_button():
    at = edit_page()
    at.radio(key="edit_source").set_value("Free-form").run(timeout=h.TIMEOUT)
    assert [at.text_input(key=f"edit_{k}").value for k in ("prompt", "subject", "old", "new")] == ["", "", "", ""]
    assert "Try an example" in [b.label for b in at.button]
    at.button(key="edit_example").click().run(timeout=h.TIMEOUT)
    assert at.text_input(key="edit_prompt").value.startswith("The Louvre")
    assert at.text_input(key="edit_old").value == ""  # the old answer stays the model's own


def test_free_form_fact_with_built_neighbours_shows_nkl_and_their_sources():
    at = edit_page()
    free_form(at)
    box = at.text_area(key="edit_neighbours").value
    assert "The Eiffel Tower is located in → Paris" in box  # same relation, same answer, typed template
    assert "built from the catalog" in texts(at)
    result = run(at)
    assert result["free_form"]["relation"] == "P276"
    assert result["report"]["families"]["nkl"]["prompts"]
    assert "chart_nkl" in chart_ids(at)
    assert set(table(at, "neighbour prompt")["from"]) == {"catalog: same relation, same answer"}
    assert "Neighbour KL" in [s.value for s in at.subheader]
    card = {m.label.split("]")[0].lstrip("["): m.value for m in at.metric}
    assert card["NKL"] != "—" and card["Neighbourhood score"] != "—"


def test_an_edited_neighbour_list_is_what_the_edit_is_judged_on():
    at = edit_page()
    free_form(at)
    at.text_area(key="edit_neighbours").set_value("Big Ben stands in → London\nThe Eiffel Tower is located in\n")
    at.run(timeout=h.TIMEOUT)
    assert "Your list: 2 neighbours (1 typed by you, 1 from the catalog)" in texts(at)
    result = run(at)
    rows = result["neighbourhood"]
    assert [r["prompt"] for r in rows] == ["Big Ben stands in", "The Eiffel Tower is located in"]
    assert [r["source"] for r in rows] == ["typed by you", "catalog: same relation, same answer"]
    assert rows[0]["answer"] == "London" and rows[1]["answer"]  # no answer given: the model's own
    assert result["report"]["families"]["nkl"]["prompts"] == [r["prompt"] for r in rows]
    # A changed fact rebuilds the list: edits belong to the fact they were made for.
    at.text_input(key="edit_subject").set_value("The Parthenon")
    at.text_input(key="edit_prompt").set_value("The Parthenon is located in").run(timeout=h.TIMEOUT)
    assert "Big Ben" not in at.text_area(key="edit_neighbours").value


def test_the_impact_scan_ranks_the_pool_after_the_edit():
    at = edit_page()
    free_form(at, scan_catalog=True)
    at.text_area(key="edit_scan_texts").set_value("My favourite city is\nThe weather today is")
    result = run(at)
    scan = at.session_state["edit_impact"]
    assert scan["edit_key"] == result["key"]
    assert len(scan["rows"]) > 2000  # every catalog prompt, this fact's and yours
    assert {r["part"] for r in scan["rows"]} == {"this fact", "yours", "catalog"}
    assert "Impact scan: what else did this edit change?" in [s.value for s in at.subheader]
    kl = list(table(at, "top-1 before")["KL"])
    assert kl == sorted(kl, reverse=True)
    assert "chart_impact_top" in chart_ids(at) and "chart_impact_hist" in chart_ids(at)
    assert "prompts scanned" in texts(at)
    assert [(b.state, b.label) for b in at.status] == [("complete", "Editing with ft_l — done")]


def test_the_url_holds_the_form_and_a_shared_link_restores_it_and_its_cached_result():
    at = edit_page()
    free_form(at, old="Paris", new="Rome")
    at.number_input(key="edit_hp_ft_l_norm_constraint").set_value(0.002)
    at.run(timeout=h.TIMEOUT)
    params = dict(at.query_params)
    flat = {k: v[0] if isinstance(v, list) else v for k, v in params.items()}
    assert flat["src"] == "free" and flat["prompt"] == PROMPT and flat["new"] == "Rome" and flat["method"] == "ft_l"
    assert '"norm_constraint": 0.002' in flat["hp"]
    result = run(at)
    # Someone opens the link: the same form, and the result from the cache without pressing Run edit.
    other = edit_page(flat)
    assert other.radio(key="edit_source").value == "Free-form"
    assert [other.text_input(key=f"edit_{k}").value for k in ("prompt", "subject", "old", "new")] == \
        [PROMPT, SUBJECT, "Paris", "Rome"]
    assert other.selectbox(key="edit_method").value == "ft_l"
    assert other.number_input(key="edit_hp_ft_l_norm_constraint").value == pytest.approx(0.002)
    shown = other.session_state["edit_result"]
    assert shown["key"] == result["key"] and shown["cached"]
    assert "Scorecard" in [s.value for s in other.subheader]
    assert not any("previous run" in c.value for c in other.caption)


def test_a_link_to_an_edit_never_computed_fills_the_form_and_waits():
    at = edit_page({"src": "free", "prompt": "Big Ben stands in", "subject": "Big Ben", "old": "London",
                    "new": "Berlin", "method": "ft_l", "quick": "1", "scan": "0", "cat": "0"})
    assert at.text_input(key="edit_subject").value == "Big Ben"
    assert at.toggle(key="edit_scan").value is False
    assert at.checkbox(key="edit_scan_catalog").value is False
    assert at.query_params["cat"] in ("0", ["0"])  # and the page's own link keeps it
    assert "edit_result" not in at.session_state or at.session_state["edit_result"] is None
    assert any("press **Run edit**" in i.value for i in at.info)


def test_a_changed_prompt_and_subject_never_edit_against_the_old_answer_left_in_the_field():
    """The stale-answer bug: a typed current answer belongs to its prompt and subject; when both change and
    the field is left untouched, it is cleared (the page says so) and the model's own answer is used."""
    at = edit_page()
    free_form(at, old="Paris", new="London")
    at.text_input(key="edit_prompt").set_value("Big Ben stands in")
    at.text_input(key="edit_subject").set_value("Big Ben")
    at.run(timeout=h.TIMEOUT)
    assert at.text_input(key="edit_old").value == ""
    assert "was for another prompt or subject, so it was cleared" in texts(at)
    result = run(at)
    own = result["free_form"]["model_answer"]
    assert result["request"]["target_true"] == own != "Paris"
    assert result["free_form"]["old_answer_source"] == "model"
    # Typed again for the new fact, it is kept and used.
    at.text_input(key="edit_old").set_value("London").run(timeout=h.TIMEOUT)
    assert at.text_input(key="edit_old").value == "London"
    assert "does not answer “London” here" in texts(at)  # the tiny model's own answer is another word
    at.text_input(key="edit_new").set_value("Paris")
    assert run(at)["request"]["target_true"] == "London"
