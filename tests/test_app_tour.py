"""AppTest: the guided tour walked step by step on a tiny random model (MEMIT with tiny hyper-parameters)."""

import pytest
import torch

import app_harness as h
from editcore import service

TINY = {"memit": {"layers": [1, 2], "stats_samples": 2000}}


@pytest.fixture(autouse=True, scope="module")
def _tiny(tmp_path_factory):
    with h.tiny_env(tmp_path_factory.mktemp("tour")):
        yield


def tour_page():
    at = h.app()
    at.switch_page(h.page("tour")).run(timeout=h.TIMEOUT)
    assert not at.exception, at.exception
    at.session_state["tour_overrides"] = TINY
    at.selectbox(key="tour_method").select("memit")
    at.number_input(key="tour_budget").set_value(1)
    at.number_input(key="tour_n_edits").set_value(2)
    return at.run(timeout=h.TIMEOUT)


def text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                     + [w.value for w in at.warning] + [s.value for s in at.success] + [i.value for i in at.info])


def test_every_step_runs_shows_its_view_and_restores_the_model():
    lm = h.shared_lm("tiny-gpt2")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    at = tour_page()
    steps = [s["id"] for s in service.tour_steps()]
    assert len(at.radio(key="tour_step").options) == len(steps) == 8
    for expected in steps:  # walked with the Next button, as a class would
        sid = at.radio(key="tour_step").value
        assert sid == expected
        at.button(key="tour_run").click().run(timeout=600)
        assert not at.exception, (sid, at.exception)
        assert not at.error, (sid, [e.value for e in at.error])
        shown = text(at)
        assert "**Why.**" in shown and "Reference:" in shown, sid
        # Found, or an honest "not shown on this model" / "needs" line: never silence.
        assert at.success or at.warning or at.info, sid
        assert any("computed in" in c.value or "results cache" in c.value for c in at.caption), sid
        at.button(key="tour_next").click().run(timeout=h.TIMEOUT)
        assert not at.exception, at.exception
    assert at.radio(key="tour_step").value == steps[0]  # Next wraps round after step 8
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_views_per_step_and_a_reload_comes_from_the_cache():
    at = tour_page()
    at.button(key="tour_run_all").click().run(timeout=900)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("status")) == 8  # one progress box per step
    shown = {}
    for sid in [s["id"] for s in service.tour_steps()]:
        at.radio(key="tour_step").set_value(sid).run(timeout=h.TIMEOUT)
        assert not at.exception, (sid, at.exception)
        shown[sid] = text(at)
        metrics = [m.label for m in at.metric]
        if sid == "reliability":
            assert any("Efficacy" in m for m in metrics)
        if sid == "locality":
            assert any("neighbour KL" in m for m in metrics) and at.get("plotly_chart")
        if sid == "conflicts":
            assert "Conflict magnitude CM" in metrics and "Edit 2:" in shown[sid]
        if sid == "distortion":
            assert "Ignore rate IR" in metrics and at.dataframe
        if sid == "deterioration":
            assert len(at.get("plotly_chart")) == 2 and any("perplexity" in m for m in metrics)
        if sid == "location" and "needs causal tracing" not in shown[sid]:
            assert "Causal trace peaks at MLP layer" in metrics
    assert "tiny\\-gpt2" in shown["reliability"]  # model names are escaped markdown
    again = tour_page()  # a fresh session: the stored outcome is shown without pressing Run
    again.radio(key="tour_step").set_value("distortion").run(timeout=h.TIMEOUT)
    assert any("from the results cache" in c.value for c in again.caption)
    assert "Ignore rate IR" in [m.label for m in again.metric]
