"""AppTest: the hyper-parameter editor's Reference preset toggle shows the reference values."""

import pytest

import app_harness as h


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("presets")):
        yield


def test_reference_toggle_switches_the_fields_to_the_reference_values():
    at = h.app()
    at.switch_page(h.page("edit")).run(timeout=h.TIMEOUT)
    at.selectbox(key="edit_method").select("rome").run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert at.number_input(key="edit_hp_rome_v_stop_prob").value == pytest.approx(0.9)
    at.toggle(key="edit_hp_rome_preset_toggle").set_value(True).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    assert at.number_input(key="edit_hp_rome_ref_v_stop_prob").value == pytest.approx(1.0)
    assert at.selectbox(key="edit_hp_rome_ref_contexts").value == "rome"
    # KN has no reference preset: no toggle.
    at.selectbox(key="edit_method").select("kn").run(timeout=h.TIMEOUT)
    assert not any(t.key == "edit_hp_kn_preset_toggle" for t in at.toggle)
