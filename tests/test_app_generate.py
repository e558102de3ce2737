"""AppTest: the router, the sidebar model picker and the Generate page on a tiny random model."""

import pytest
from streamlit.testing.v1 import AppTest

import app_harness as h
import tiny
from editcore import service


@pytest.fixture(autouse=True)
def _tiny(tmp_path):
    with h.tiny_env(tmp_path):
        yield


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


def test_the_tiny_entry_script_registers_the_tiny_models_and_runs_the_app(monkeypatch):
    """tests/tiny_app.py, which the browser test serves, registers the tiny models itself (deeper ones with
    EDITSCOPE_TEST_TINY_LAYERS) and then runs app/main.py."""
    from app import ui

    tiny.unregister_models()
    monkeypatch.setenv("EDITSCOPE_TEST_TINY_LAYERS", "4")
    try:
        at = AppTest.from_file(str(h.ROOT / "tests" / "tiny_app.py"), default_timeout=h.TIMEOUT).run()
        assert not at.exception
        assert at.selectbox(key="model_choice").options[:3] == ["tiny-gpt2", "tiny-llama", "tiny-gemma3"]
        assert service.load_model("tiny-gpt2").adapter.n_layers == 4
        at.switch_page(h.page("generate")).run(timeout=h.TIMEOUT)
        at.slider(key="gen_max_new").set_value(3)
        at.button(key="gen_run").click().run(timeout=h.TIMEOUT)
        assert not at.exception
        assert not at.error, [e.value for e in at.error]
        assert any("tiny-gpt2" in c.value for c in at.caption)
    finally:
        ui._shared_model.clear()  # later tests get the usual 3-layer models


def test_unknown_model_is_reported_next_to_the_picker():
    at = h.app()
    at.switch_page(h.page("generate")).run(timeout=h.TIMEOUT)
    at.selectbox(key="model_choice").select(h.OTHER_MODEL).run(timeout=h.TIMEOUT)
    at.text_input(key="model_path").input("/no/such/model/dir").run(timeout=h.TIMEOUT)
    at.button(key="gen_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception
    assert any("no such model path" in e.value for e in at.error)
