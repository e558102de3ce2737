"""AppTest: the router, the sidebar model picker and the Generate page on a tiny random model."""

import pytest

import app_harness as h


@pytest.fixture(autouse=True)
def _tiny(monkeypatch, tmp_path):
    h.tiny_env(monkeypatch, tmp_path)


def test_generate_page_shows_a_continuation():
    at = h.app()
    at.switch_page(h.page("generate")).run(timeout=h.TIMEOUT)
    assert not at.exception
    at.text_area(key="gen_prompt").set_value("The Louvre is located in")
    at.slider(key="gen_max_new").set_value(5)
    at.button(key="gen_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(m.value for m in at.markdown)
    assert "Louvre" in shown
    assert any("tiny-gpt2" in c.value for c in at.caption)


def test_empty_prompt_is_a_clear_error_not_a_traceback():
    at = h.app()
    at.switch_page(h.page("generate")).run(timeout=h.TIMEOUT)
    at.text_area(key="gen_prompt").set_value("   ")
    at.button(key="gen_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception
    assert [e.value for e in at.error] == ["the prompt is empty"]


def test_unknown_model_is_reported_next_to_the_picker():
    at = h.app()
    at.switch_page(h.page("generate")).run(timeout=h.TIMEOUT)
    at.selectbox(key="model_choice").select(h.OTHER_MODEL).run(timeout=h.TIMEOUT)
    at.text_input(key="model_path").input("/no/such/model/dir").run(timeout=h.TIMEOUT)
    at.button(key="gen_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception
    assert any("no such model path" in e.value for e in at.error)
