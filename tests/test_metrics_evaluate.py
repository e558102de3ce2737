"""evaluate() on tiny random models with hand-built patches: identities, caching rules, restoring."""

import json
import math

import pytest
import torch

import tiny
from editcore.cases import Case, Probe
from editcore.metrics import evaluate, scoring
from editcore.metrics.nkl import neighbourhood_kl
from editcore.metrics.scoring import Scorer
from editcore.scope import Patch

CASE = Case(
    id="t:louvre", relation_id="P276", relation="location", prompt="{} is located in the city of",
    subject="The Louvre", target_true="Paris", targets_new=("London",),
    paraphrases=("The Louvre stands in",),
    neighbourhood=(Probe("The Eiffel Tower is in", "Paris"), Probe("Big Ben stands in", "London")),
    attributes=(Probe("The Louvre is a", "museum"),), aliases=("Louvre Museum",),
    reverse=Probe("The museum in London is the", "Louvre"), related=(("London", ("Big Ben", "Thames")),),
    one_hop=(Probe("The Louvre is in the country of", "England", target="London"),),
    generation_prompts=("The Louvre is",))

FAST = dict(general_sizes={"sentiment": 2, "piqa": 2, "qa": 1, "arithmetic": 1, "summarisation": 0},
            heldout_chars=300)


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("llama")


def _patch(lm, scale, seed=0):
    name = lm.adapter.mlp_out_param_name(1)
    w = dict(lm.model.named_parameters())[name]
    g = torch.Generator().manual_seed(seed)
    return Patch({name: torch.randn(w.shape, generator=g).to(w) * scale})


def _finite(x):
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


def test_zero_patch_changes_nothing(lm):
    scoring.clear_cache()
    r = evaluate(lm, CASE, _patch(lm, 0.0), suggest=0, **FAST).to_dict()
    f = r["families"]
    assert f["nkl"]["nkl"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert f["nkl"]["distracted_nkl"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert f["locality"]["other_attribution"]["agreement"]["mean"] == 1.0
    for key in ("es", "ps", "ns", "em", "pm", "nm"):
        # Pre and post score in different batches, so padding leaves float noise.
        assert f["counterfact"][key]["mean"] == pytest.approx(r["counterfact_pre"][key]["mean"], abs=1e-6)
    assert f["general"]["perplexity_pre"] == pytest.approx(f["general"]["perplexity_post"])
    assert f["shifts"]["bleed"]["rate"]["mean"] == 0.0
    json.dumps(r, allow_nan=False)


def test_random_patch_moves_things_and_restores_model(lm):
    before = lm.digest()
    rep = evaluate(lm, CASE, _patch(lm, 0.5), suggest=3, nkl_generated_tokens=3, **FAST)
    assert lm.digest() == before  # the scope restored every weight
    r = rep.to_dict()
    f = r["families"]
    assert f["nkl"]["nkl"]["mean"] > 0 and f["nkl"]["nkl"]["n"] == 2
    assert len(f["nkl"]["per_prompt_generated"]) == 2
    assert f["nkl"]["vocab_size"] == lm.model.config.vocab_size
    assert f["shifts"]["groups"]["subject"]["risers"], "a real change must produce risers"
    assert {w["word"] for w in f["shifts"]["related"] if w["of"] == "new"} == {"Big Ben", "Thames"}
    assert any(w["source"] == "suggested" for w in f["shifts"]["related"])  # none given for Paris
    assert set(f["portability"]) == {"subject_replace", "reverse_relation", "one_hop"}
    assert f["portability"]["one_hop"]["token_acc"]["n"] == 1
    assert _finite(r)
    json.dumps(r, allow_nan=False)
    assert "CounterFact" in rep.render()


def test_pre_cache_is_reused_and_never_filled_while_edited(lm):
    scoring.clear_cache()
    evaluate(lm, CASE, _patch(lm, 0.3), families=("counterfact", "nkl"), suggest=0)
    filled = scoring.cache_sizes()
    assert filled["pairs"] > 0 and filled["dists"] > 0
    # Pre-edit values of a second evaluation come from the cache: no pre-edit forward pass at all.
    pre = Scorer(lm, pre=True)
    before = lm.digest()
    with lm.scope():
        neighbourhood_kl(pre, pre, [p.prompt for p in CASE.neighbourhood], edit_prompt=CASE.edit_prompt,
                         target_new="London")
    assert pre.passes == 0
    # A frozen pre-edit scorer refuses to read the (edited) model for something new.
    pre.freeze()
    with lm.scope(_patch(lm, 0.3)):
        with pytest.raises(RuntimeError):
            pre.dists(["Something never asked before"])
    assert scoring.cache_sizes()["dists"] == filled["dists"]
    assert lm.digest() == before


def test_post_scorer_does_not_touch_the_cache(lm):
    scoring.clear_cache()
    with lm.scope(_patch(lm, 0.3)):
        Scorer(lm).pairs(["The Louvre is in"], ["Paris"])
    assert scoring.cache_sizes() == {"pairs": 0, "dists": 0, "texts": 0}


def test_cached_pre_values_equal_fresh_ones(lm):
    scoring.clear_cache()
    a = Scorer(lm, pre=True).pairs(["The Louvre is in"], ["Paris"])[0]
    b = Scorer(lm, pre=True).pairs(["The Louvre is in"], ["Paris"])[0]  # from the cache
    c = Scorer(lm).pairs(["The Louvre is in"], ["Paris"])[0]  # fresh pass
    assert a == b
    assert a.token_logprobs == pytest.approx(c.token_logprobs, abs=1e-5)


def test_free_form_case_without_old_answer(lm):
    case = Case(id="free", relation_id="", relation="", prompt="{} is located in", subject="Big Ben",
                target_true="", targets_new=("Rome",))
    r = evaluate(lm, case, _patch(lm, 0.1), families=("counterfact",), suggest=0)
    assert r.target_true  # taken from the model's greedy answer
    assert any("greedy" in n for n in r.notes)


def test_unknown_family_is_a_user_error(lm):
    from editcore.errors import InputError

    with pytest.raises(InputError):
        evaluate(lm, CASE, _patch(lm, 0.0), families=("nope",))


def test_pre_cache_persists_on_disk_for_the_base_model_only(lm, tmp_home, monkeypatch):
    """A new process (simulated by emptying the memory LRU) reads base-model scores from disk, equal to the
    originals; a scorer naming another state (sequential edits) never reads or writes the disk."""
    monkeypatch.setenv("EDITSCOPE_PRECACHE", "1")
    scoring.clear_cache()
    first = Scorer(lm, pre=True)
    pair = first.pairs(["The Louvre is in"], ["Paris"])[0]
    dist = first.dists(["The Louvre is in"])[0]
    text = first.greedy(["The Louvre is in"], 3)[0]
    scoring.clear_cache(disk=False)
    writes = []
    real_put = scoring._disk_put
    monkeypatch.setattr(scoring, "_disk_put", lambda *a: writes.append(a) or real_put(*a))
    again = Scorer(lm, pre=True)
    assert again.pairs(["The Louvre is in"], ["Paris"])[0] == pair
    assert torch.equal(again.dists(["The Louvre is in"])[0], dist)
    assert again.greedy(["The Louvre is in"], 3)[0] == text
    assert again.passes == 0
    assert writes == []  # what came from disk is not written back
    scoring.clear_cache(disk=False)
    other = Scorer(lm, pre=True, state="after 3 kept edits")
    other.pairs(["The Louvre is in"], ["Paris"])
    assert other.passes == 1
    scoring.clear_cache(disk=False)
    fresh = Scorer(lm, pre=True, state="after 3 kept edits")
    fresh.pairs(["The Louvre is in"], ["Paris"])
    assert fresh.passes == 1
    # clear_cache() empties the disk too.
    scoring.clear_cache()
    gone = Scorer(lm, pre=True)
    gone.pairs(["The Louvre is in"], ["Paris"])
    assert gone.passes == 1


def test_distributions_at_scored_prompts_come_from_the_pairs_passes(tmp_home, monkeypatch):
    """A prompt scored with targets has its next-token distribution read in the same pass: asking for it
    afterwards runs no forward pass, gives the plain distribution, and a pre-edit scorer keeps it on disk."""
    monkeypatch.setenv("EDITSCOPE_PRECACHE", "1")
    lm = tiny.lm("llama")
    scoring.clear_cache()
    first = Scorer(lm, pre=True)
    first.pairs(["The Louvre is in", "Big Ben is in"], ["Paris", "London"])
    passes = first.passes
    dist = first.dists(["Big Ben is in", "The Louvre is in"])
    assert first.passes == passes
    plain = Scorer(lm).dists(["Big Ben is in", "The Louvre is in"])
    assert torch.allclose(dist, plain, atol=1e-4)
    scoring.clear_cache(disk=False)
    again = Scorer(lm, pre=True)
    assert torch.equal(again.dists(["Big Ben is in"])[0], dist[0]) and again.passes == 0
    # A long list of prompts (a probe set) does not keep 1 MB per prompt on the side.
    monkeypatch.setattr(scoring, "SPARE_DISTS_MAX", 1)
    capped = Scorer(lm)
    capped.pairs(["A b c", "D e f"], ["x", "y"])
    before = capped.passes
    capped.dists(["A b c"])
    assert capped.passes == before + 1


def test_generation_prompts_are_continued_before_and_after_the_edit(lm):
    """The dashboard's before/after continuations come out of the evaluation's own decoding loops and equal
    plain greedy decoding of the unedited and the edited model."""
    from editcore import decoding, text

    patch = _patch(lm, 0.5)
    prompts = ["The Louvre is", "A short story about"]
    r = evaluate(lm, CASE, patch, families=("counterfact", "portability"), generation_prompts=prompts,
                 generation_tokens=5)
    assert [g["prompt"] for g in r.generations] == prompts
    assert [g["pre"] for g in r.generations] == decoding.greedy(lm, prompts, 5)
    with lm.scope(patch):
        assert [g["post"] for g in r.generations] == decoding.greedy(lm, prompts, 5)
    assert any(g["pre"] != g["post"] for g in r.generations)  # the patch changes them: the test can tell
    assert r.to_dict()["generations"] == r.generations
    assert evaluate(lm, CASE, patch, families=("counterfact",)).generations == []
