"""AppTest: the Edit page end to end on a tiny random model (MEMIT with tiny-model hyper-parameters)."""

import threading

import pytest
from streamlit.testing.v1 import AppTest

import app_harness as h


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("edit")):
        yield


def edit_page() -> AppTest:
    at = h.app()
    at.switch_page(h.page("edit")).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    # The impact scan still runs, over the fact's own prompts only (test_app_whatif scans the catalog).
    at.checkbox(key="edit_scan_catalog").uncheck()
    return at


def set_tiny_memit(at: AppTest) -> None:
    at.selectbox(key="edit_method").select("memit").run(timeout=h.TIMEOUT)
    at.text_input(key="edit_hp_memit_layers").set_value("[1, 2]")
    at.number_input(key="edit_hp_memit_stats_samples").set_value(2000)


def free_form(at: AppTest, subject: str, prompt: str, old: str, new: str) -> None:
    at.radio(key="edit_source").set_value("Free-form").run(timeout=h.TIMEOUT)
    at.text_input(key="edit_prompt").set_value(prompt)
    at.text_input(key="edit_subject").set_value(subject)
    at.text_input(key="edit_old").set_value(old)
    at.text_input(key="edit_new").set_value(new)


def keep_typed_options(at: AppTest) -> AppTest:
    """AppTest sends a selectbox's state as one of the options it was drawn with, while a value typed into a
    box with ``accept_new_options`` is not among them after a rerun (the browser keeps it): put it back."""
    for box in at.selectbox:
        value = at.session_state[box.key] if box.key and box.key in at.session_state else None
        if isinstance(value, str) and value not in box.options:
            box.options.append(value)
    return at


def run(at: AppTest) -> AppTest:
    keep_typed_options(at)
    at.button(key="edit_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    return at


def shown_text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_free_form_edit_shows_every_section_and_restores_the_model():
    lm = h.shared_lm("tiny-gpt2")
    before = lm.digest()
    at = edit_page()
    free_form(at, "The Louvre", "The Louvre is located in", "Paris", "London")
    set_tiny_memit(at)
    run(at)
    assert not at.error, [e.value for e in at.error]
    # Every label is a link to its definition on the Methods & metrics page.
    labels = [m.label for m in at.metric]
    assert labels == ["[Efficacy](methods#efficacy)", "[Generalisation](methods#generalisation)",
                      "[Neighbourhood score](methods#neighbourhood-score)", "[NKL](methods#nkl)",
                      "[Portability](methods#portability)", "[Fluency](methods#fluency)", "[Seconds](methods#time)"]
    assert float(at.metric[-1].value) > 0  # seconds spent on the edit
    text = shown_text(at)
    assert "London" in text and "before the edit" in text
    assert [s.value for s in at.subheader][:2] == ["Before vs after", "Scorecard"]
    assert len(at.get("download_button")) >= 3  # JSON, CSV and at least one chart
    assert [(b.state, b.label) for b in at.status] == [("complete", "Editing with memit — done")]
    assert lm.digest() == before


def test_catalog_fact_edit_then_the_same_request_comes_from_the_cache():
    at = edit_page()
    at.text_input(key="edit_search").set_value("Louvre").run(timeout=h.TIMEOUT)
    fact = at.selectbox(key="edit_fact")
    assert fact.value == "P276:louvre" and all("Louvre" in o for o in fact.options)
    set_tiny_memit(at)
    run(at)
    assert not at.error, [e.value for e in at.error]
    assert "from the results cache" not in shown_text(at)
    run(at)
    assert "from the results cache" in shown_text(at)
    assert len(at.metric) == 7


def type_target(at: AppTest, key: str, target: str) -> None:
    """Type a target that is not among the box's options (as the browser sends it with accept_new_options)."""
    box = at.selectbox(key=key)
    if target not in box.options:
        box.options.append(target)
    box.set_value(target)


def test_a_catalog_fact_takes_a_typed_new_target_and_an_old_result_is_marked_when_the_form_changes():
    at = edit_page()
    at.text_input(key="edit_search").set_value("Louvre").run(timeout=h.TIMEOUT)
    box = at.selectbox(key="edit_target")
    assert "London" not in box.options and box.value == box.options[0]
    set_tiny_memit(at)
    type_target(at, "edit_target", "London")
    at.run(timeout=h.TIMEOUT)
    assert any("not one of this fact's own targets" in c.value for c in at.caption)
    run(at)
    assert not at.error, [e.value for e in at.error]
    result = at.session_state["edit_result"]
    assert result["request"]["target_new"] == "London" and "Louvre" in result["request"]["prompt"]
    assert result["case"]["paraphrases"]  # the catalog fact's own paraphrases still count
    assert not any("previous run" in c.value for c in at.caption)
    # A changed form: the result on show is marked as the previous run's until Run edit is pressed.
    keep_typed_options(at).selectbox(key="edit_target").select_index(0).run(timeout=h.TIMEOUT)
    assert any("Result of the previous run" in c.value for c in at.caption)
    assert at.session_state["edit_result"]["request"]["target_new"] == "London"
    run(at)
    assert not any("previous run" in c.value for c in at.caption)
    assert at.session_state["edit_result"]["request"]["target_new"] == at.selectbox(key="edit_target").options[0]


def test_the_new_target_starts_at_the_new_facts_first_target_when_the_fact_changes():
    at = edit_page()
    first = at.selectbox(key="edit_target")
    assert first.value == first.options[0]
    first = first.value
    at.text_input(key="edit_search").set_value("Louvre").run(timeout=h.TIMEOUT)
    box = at.selectbox(key="edit_target")
    assert at.selectbox(key="edit_fact").value == "P276:louvre"
    assert box.value == box.options[0] and box.value != first  # not the previous fact's target
    at.selectbox(key="edit_target").select_index(1).run(timeout=h.TIMEOUT)
    assert at.selectbox(key="edit_target").value == box.options[1]  # a choice for the same fact is kept
    at.text_input(key="edit_search").set_value("Parthenon").run(timeout=h.TIMEOUT)
    box = at.selectbox(key="edit_target")
    assert box.value == box.options[0]


def test_quick_evaluation_is_on_by_default_and_cached_apart_from_the_full_one():
    at = edit_page()
    assert at.toggle(key="edit_quick").value is True
    at.text_input(key="edit_search").set_value("Parthenon").run(timeout=h.TIMEOUT)
    assert at.selectbox(key="edit_fact").value == "P276:parthenon"  # a fact with generation prompts
    set_tiny_memit(at)
    run(at)
    assert not at.error, [e.value for e in at.error]
    card = {m.label.split("]")[0].lstrip("["): (m.value, m.delta) for m in at.metric}
    assert card["Fluency"] == ("—", "not computed") and card["Efficacy"][0] != "—"
    assert card["Efficacy"][1] != "not computed"
    assert "general" not in at.session_state["edit_result"]["report"]["families"]
    assert any("Quick evaluation" in c.value for c in at.caption)
    # Full evaluation of the same edit: a different cache entry, with fluency measured.
    at.toggle(key="edit_quick").set_value(False)
    run(at)
    assert "from the results cache" not in shown_text(at)
    card = {m.label.split("]")[0].lstrip("["): (m.value, m.delta) for m in at.metric}
    assert card["Fluency"][0] != "—" and card["Fluency"][1] != "not computed"
    assert "general" in at.session_state["edit_result"]["report"]["families"]
    # Back to quick: that one is in the cache.
    at.toggle(key="edit_quick").set_value(True)
    run(at)
    assert "from the results cache" in shown_text(at)
    assert at.metric[5].label.startswith("[Fluency]") and at.metric[5].delta == "not computed"


def test_new_target_equal_to_the_old_answer_is_a_clear_error():
    at = edit_page()
    free_form(at, "The Louvre", "The Louvre is located in", "Paris", "paris")
    set_tiny_memit(at)
    run(at)
    assert [e.value for e in at.error] == ["the new target 'paris' equals the current answer"]
    assert not at.metric


def test_a_failing_edit_ends_its_status_box_as_failed_not_done():
    at = edit_page()
    free_form(at, "Big Ben", "The Louvre is located in", "Paris", "London")  # subject not in the prompt
    set_tiny_memit(at)
    run(at)
    assert [e.value for e in at.error] == ["the subject 'Big Ben' does not occur in the prompt"]
    assert [(b.state, b.label) for b in at.status] == [("error", "Editing with memit — failed")]
    assert not at.metric


def test_absurd_hyper_parameter_is_a_clear_error():
    at = edit_page()
    free_form(at, "The Louvre", "The Louvre is located in", "Paris", "London")
    set_tiny_memit(at)
    at.number_input(key="edit_hp_memit_v_lr").set_value(-3.0)
    run(at)
    assert any("v_lr must be >=" in e.value for e in at.error), [e.value for e in at.error]


def test_prompt_over_the_context_length_is_a_clear_error():
    at = edit_page()
    free_form(at, "The Louvre", "The Louvre is located in " + "very " * 200, "Paris", "London")
    set_tiny_memit(at)
    run(at)
    assert any("over" in e.value and "limit" in e.value for e in at.error), [e.value for e in at.error]


def test_two_sessions_editing_at_once_each_see_only_their_own_edit(monkeypatch):
    # CPython 3.11 can fail with "AST constructor recursion depth mismatch" when two threads compile at once
    # (cpython#106905); both AppTest sessions compile the page script, so compiling is serialised here.
    import builtins

    compile_lock = threading.Lock()
    plain_compile = builtins.compile

    def locked_compile(*args, **kwargs):
        with compile_lock:
            return plain_compile(*args, **kwargs)

    monkeypatch.setattr(builtins, "compile", locked_compile)
    lm = h.shared_lm("tiny-gpt2")
    before = lm.digest()
    facts = {"a": ("The Colosseum", "The Colosseum is in", "Rome", "Tokyo"),
             "b": ("Big Ben", "Big Ben stands in", "London", "Berlin")}
    sessions, errors = {}, []
    # Widgets are set up one session at a time; the two runs (edit + evaluation) then overlap.
    for name in facts:
        at = edit_page()
        free_form(at, *facts[name])
        set_tiny_memit(at)
        sessions[name] = at

    def session(name):
        try:
            run(sessions[name])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(n,)) for n in facts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for name, (subject, _prompt, _old, new) in facts.items():
        at = sessions[name]
        assert not at.error, [e.value for e in at.error]
        result = at.session_state["edit_result"]
        assert result["request"]["target_new"] == new
        assert subject in result["request"]["prompt"]
        other = facts["b" if name == "a" else "a"]
        assert other[0] not in shown_text(at)
    assert lm.digest() == before
