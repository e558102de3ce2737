"""AppTest: GRACE and MEND on the Edit, Compare and Sequential pages with tiny models. MEND (KE, MALMEN) without
a trained hypernetwork shows the command that trains one (and nothing runs); once one is trained it runs like any
method."""

import pytest

import app_harness as h
import tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("new_methods")):
        yield


def open_page(name):
    at = h.app()
    at.switch_page(h.page(name)).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    return at


def _infos(at) -> str:
    return "\n".join(i.value for i in at.info)


@pytest.mark.parametrize("name", ["mend", "ke", "malmen"])
def test_untrained_hypernetwork_says_how_to_train_on_every_page(name):
    at = open_page("edit")
    at.selectbox(key="edit_method").select(name).run(timeout=h.TIMEOUT)
    assert f"python -m editcore train {name} tiny-gpt2" in _infos(at)
    at.button(key="edit_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "edit_result" not in at.session_state or at.session_state["edit_result"] is None

    cmp = open_page("compare")
    cmp.checkbox(key=f"cmp_m_{name}").check().run(timeout=h.TIMEOUT)
    assert f"python -m editcore train {name} tiny-gpt2" in _infos(cmp)
    assert not cmp.exception and not cmp.error

    seq = open_page("sequential")
    seq.multiselect(key="seq_methods").set_value([name]).run(timeout=h.TIMEOUT)
    assert f"python -m editcore train {name} tiny-gpt2" in _infos(seq)
    assert not seq.exception


def test_grace_runs_on_the_edit_page_and_trained_mend_too():
    at = open_page("edit")
    at.selectbox(key="edit_method").select("grace").run(timeout=h.TIMEOUT)
    at.number_input(key="edit_hp_grace_layer").set_value(1)
    at.number_input(key="edit_hp_grace_steps").set_value(5)
    at.button(key="edit_run").click().run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["edit_result"]["method"]["name"] == "grace"

    from editcore.methods import get_method

    tiny.train_if_needed(h.shared_lm("tiny-gpt2"), get_method("mend"))
    again = open_page("edit")
    again.selectbox(key="edit_method").select("mend").run(timeout=h.TIMEOUT)
    assert "train mend" not in _infos(again)
    again.button(key="edit_run").click().run(timeout=h.TIMEOUT)
    assert not again.exception, again.exception
    assert not again.error, [e.value for e in again.error]
    assert again.session_state["edit_result"]["method"]["name"] == "mend"
