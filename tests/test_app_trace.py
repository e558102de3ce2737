"""AppTest: the "Where is the fact?" page on tiny random models."""

import pytest

import app_harness as h


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("trace")):
        yield


def trace_page():
    at = h.app()
    at.switch_page(h.page("trace")).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    return at


def charts(at):
    return at.get("plotly_chart")


def test_a_free_form_fact_draws_three_heatmaps_and_the_logit_lens_without_an_edit():
    at = trace_page()
    at.radio(key="trace_source").set_value("Free-form").run(timeout=h.TIMEOUT)
    at.text_input(key="trace_prompt").set_value("The Louvre is located in")
    at.text_input(key="trace_subject").set_value("The Louvre")
    at.text_input(key="trace_old").set_value("Paris")
    at.text_input(key="trace_new").set_value("London")
    at.selectbox(key="trace_method").select("no edit").run(timeout=h.TIMEOUT)
    at.slider(key="trace_samples").set_value(2)
    at.button(key="trace_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) == 5  # residual stream, MLP, attention; the lens at two positions
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Before the edit" in text and "After the" not in text
    assert "2 noise samples" in text


def test_a_catalog_fact_is_traced_before_and_after_an_edit_and_the_model_is_restored():
    lm = h.shared_lm("tiny-gpt2")
    digest = lm.digest()
    at = trace_page()
    at.radio(key="trace_source").set_value("Catalog").run(timeout=h.TIMEOUT)
    at.selectbox(key="trace_fact").select("P276:louvre").run(timeout=h.TIMEOUT)
    at.selectbox(key="trace_method").select("ft_l").run(timeout=h.TIMEOUT)
    at.slider(key="trace_samples").set_value(1)
    at.button(key="trace_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(charts(at)) == 8  # three heatmaps before and after, two lens charts
    text = " ".join(m.value for m in at.markdown)
    assert "After the ft\\_l edit" in text or "After the ft_l edit" in text
    assert lm.digest() == digest
    at.button(key="trace_run").click().run(timeout=h.TIMEOUT)  # the second run comes from the cache
    assert not at.exception
    assert any("from the cache" in c.value for c in at.caption)


def test_the_average_over_facts_reports_a_clear_error_when_the_model_knows_none():
    at = trace_page()
    at.radio(key="trace_source").set_value("Free-form").run(timeout=h.TIMEOUT)
    at.text_input(key="trace_prompt").set_value("The Louvre is located in")  # the form starts empty
    at.text_input(key="trace_subject").set_value("The Louvre")
    at.text_input(key="trace_old").set_value("Paris")
    at.text_input(key="trace_new").set_value("London")
    at.selectbox(key="trace_method").select("no edit")
    at.slider(key="trace_samples").set_value(1)
    at.button(key="trace_run").click().run(timeout=h.TIMEOUT)
    at.number_input(key="trace_summary_n").set_value(2)
    at.button(key="trace_summary_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert any("known by tiny-gpt2" in e.value for e in at.error), [e.value for e in at.error]
