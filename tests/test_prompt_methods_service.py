"""IKE and SERAC through the whole evaluation as the dashboard and the CLI run it (``service.run_edit``,
``compare_methods``, ``sequential_run``) on a tiny model: every family is computed behind the input rewrite,
the sequential runner reports no weight drift (none changes), and the model is left as found."""

import pytest

import tiny
from editcore import service
from editcore.methods import get_method
from editcore.text import prompt_ids

OVERRIDES = {"ike": {"encoder": "hashed-bow", "k": 4}, "serac": {"encoder": "hashed-bow", "k": 2}}


@pytest.fixture(scope="module")
def lm(module_home):
    lm = tiny.lm("llama")
    lm.model.config.max_position_embeddings = 2048  # room for the context and the few-shot probes
    tiny.train_if_needed(lm, get_method("serac"))
    yield lm


@pytest.mark.parametrize("name", ["ike", "serac"])
def test_run_edit_evaluates_every_family_behind_the_rewrite(lm, name):
    d0, plain = lm.digest(), prompt_ids(lm.tokenizer, "The Louvre is located in the city of")
    res = service.run_edit(lm, {"source": "catalog", "id": "P276:louvre", "target_new": "London"}, name,
                           OVERRIDES[name], use_cache=False)
    assert lm.digest() == d0 and prompt_ids(lm.tokenizer, "The Louvre is located in the city of") == plain
    assert set(res["evaluation"]["families"]) == set(service.evaluation_families(False))
    assert res["diagnostics"]["memory_size"] == 1
    rep = res["report"]["families"]
    assert rep["general"]["perplexity_post"] is not None and rep["nkl"]["per_prompt"]
    assert len(res["generations"]) >= 3 and all(isinstance(g["post"], str) for g in res["generations"])
    # The edit prompt is read behind the rewrite: its post-edit probability is not the unedited one.
    assert res["probabilities"]["post"]["p_new"] != res["probabilities"]["pre"]["p_new"]
    if name == "ike":  # every prompt carries the demonstrations: held-out text and neighbours move too
        assert rep["general"]["perplexity_post"] != rep["general"]["perplexity_pre"]
        assert all(v > 0 for v in rep["nkl"]["per_prompt"])


def test_compare_runs_both(lm):
    out = service.compare_methods(lm, {"source": "catalog", "id": "P276:louvre"}, ["ike", "serac"], OVERRIDES,
                                  use_cache=False, quick=True)
    assert [r["method"] for r in out["rows"]] == ["ike", "serac"]


def test_sequential_run_grows_the_memory_and_reports_no_weight_drift(lm):
    d0 = lm.digest()
    cfg = service.sequential_config(["ike", "serac"], 3, "catalog", seed=1, every=1, overrides=OVERRIDES)
    out = service.sequential_run(lm, cfg, use_cache=False)
    assert lm.digest() == d0
    for name in ("ike", "serac"):
        run = out["runs"][name]
        assert run["complete"] and [p["n_edits"] for p in run["points"]] == [0, 1, 2, 3]
        assert all(p["weight_drift"] == 0.0 for p in run["points"])
        assert all(0.0 <= p["retention"] <= 1.0 for p in run["points"][1:])
        assert run["failed_edits"] == 0
