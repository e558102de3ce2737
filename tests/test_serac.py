"""SERAC's own behaviour on tiny models: the scope classifier trained on the fly with the deterministic test
encoder (no pre-trained artefact needed), the router (empty memory = the base model; in-scope prompts get
the edit, out-of-scope ones pass untouched) and the metrics reading the edited model through it. Training
the real classifier (all-MiniLM-L6-v2) is marked integration."""

import json

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.serac import SeracHparams, SeracTrainHparams
from editcore.scope import Patch
from editcore.text import rewritten, target_logprobs
from editcore.types import Request

SERAC = get_method("serac")
LOUVRE = Request("{} is located in the city of", "The Louvre", "London", "Paris")
DARRIEUX = Request("The mother tongue of {} is", "Danielle Darrieux", "English", "French")
UNRELATED = "He plays the piano and the"
# Small and fast: the catalog only, a narrow head, few epochs.
SMALL = {"encoder": "hashed-bow", "sources": ["catalog"], "hidden": 64, "epochs": 6}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One private home per module with a small classifier trained in it (seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITSCOPE_HOME", str(tmp_path_factory.mktemp("serac-home")))
        lm = tiny.lm("llama")
        report = SERAC.train(lm, load_hparams("serac", SeracTrainHparams, None, SMALL, prefix="train_"))
        yield report


@pytest.fixture
def lm(home):
    lm = tiny.lm("llama")
    lm.model.config.max_position_embeddings = 4096
    return lm


def _hp(**overrides):
    return load_hparams("serac", SeracHparams, None, {"encoder": "hashed-bow", "k": 2, **overrides})


def test_the_trained_classifier_separates_held_out_pairs(home, lm):
    assert home["heldout_f1"] >= 0.8, home["heldout"]
    assert home["pairs_heldout"] > 500 and home["heldout"]["pairs"] == home["pairs_heldout"]
    rates = home["heldout"]["in_scope_rate"]
    assert rates["paraphrase"] > rates["neighbour"] and rates["edit prompt"] > rates["unrelated"]
    assert home["loss_curve"][-1] < home["loss_curve"][0]
    assert SERAC.trained(lm) is None  # the model's own settings use the real encoder, not trained here
    # Trained again with the same settings: the artefact is found, not retrained.
    again = SERAC.train(lm, load_hparams("serac", SeracTrainHparams, None, SMALL, prefix="train_"))
    assert again["key"] == home["key"] and again["trained_at"] == home["trained_at"]
    json.dumps(again)


def test_without_a_trained_classifier_compute_says_how_to_train(tmp_path, monkeypatch, lm):
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="python -m editcore train serac"):
        SERAC.compute(lm, [LOUVRE], _hp())


def test_an_empty_memory_is_exactly_the_base_model(lm):
    prompts = [LOUVRE.text, UNRELATED, "The capital of Japan is"]
    with lm.scope():
        base = target_logprobs(lm, prompts, [" London", " guitar", " Tokyo"])
        ids = torch.tensor([lm.tokenizer(LOUVRE.text)["input_ids"]])
        logits = lm.model(input_ids=ids).logits
    router = SERAC.router(lm, _hp())
    with lm.scope(Patch(rewrite=router)):
        assert all(rewritten(lm.tokenizer, p) == p for p in prompts)
        assert torch.equal(target_logprobs(lm, prompts, [" London", " guitar", " Tokyo"]), base)
        assert torch.equal(lm.model(input_ids=ids).logits, logits)


def test_in_scope_prompts_get_the_edit_and_the_rest_pass_untouched(lm):
    """The metric reads (teacher-forced scores, an evaluate family) differ from the base model's exactly
    where the router sends a prompt to the edit."""
    from editcore.catalog import get_fact
    from editcore.cases.resolve import with_new_target
    from editcore.metrics import evaluate
    from editcore.metrics.scoring import clear_cache

    case = with_new_target(get_fact("P276:louvre"), "London")
    edit = SERAC.compute(lm, [case.request()], _hp())
    assert edit.diagnostics["edit_prompt_in_scope"] and edit.diagnostics["memory_size"] == 1
    router = edit.patch.rewrite
    prompts = [case.edit_prompt, *case.paraphrases, *(p.prompt for p in case.neighbourhood), UNRELATED]
    routed = [router.route(router.facts, p)[0] is not None for p in prompts]
    assert routed[0] and not routed[-1] and any(routed) and not all(routed)
    targets = [" London"] * len(prompts)
    with lm.scope():
        base = target_logprobs(lm, prompts, targets)
    with lm.scope(edit.patch):
        post = target_logprobs(lm, prompts, targets)
        for p, r in zip(prompts, routed):
            seen = rewritten(lm.tokenizer, p)
            assert (seen != p) == r and (not r or seen.endswith(f"New Fact: {case.edit_prompt} London\nPrompt: {p}"))
    assert [bool(a != b) for a, b in zip(post.tolist(), base.tolist())] == routed
    # The unedited distributions are read afresh: from the process-wide pre-edit cache they may come from
    # another test's batch (other padding), and an untouched prompt's KL is then float noise (~1e-7 seen).
    clear_cache(disk=False)
    report = evaluate(lm, case, edit, families=("nkl",), suggest=0)
    nb_routed = routed[1 + len(case.paraphrases):-1]
    nkl = report.families["nkl"].per_prompt
    assert [v > 1e-8 for v in nkl] == nb_routed, nkl


def test_sequential_edits_share_one_memory(lm):
    hp = _hp()
    with lm.scope() as s:
        first = SERAC.compute(lm, [LOUVRE], hp)
        s.apply(first.patch)
        second = SERAC.compute(lm, [DARRIEUX], hp)
        assert second.diagnostics["memory_size"] == 2
        s.apply(second.patch)
        louvre, darrieux = rewritten(lm.tokenizer, LOUVRE.text), rewritten(lm.tokenizer, DARRIEUX.text)
        assert louvre.endswith(f"New Fact: {LOUVRE.text} London\nPrompt: {LOUVRE.text}")
        assert darrieux.endswith(f"New Fact: {DARRIEUX.text} English\nPrompt: {DARRIEUX.text}")
        assert louvre.count("New Fact: ") == darrieux.count("New Fact: ")  # one context, never two
        s.rollback()
        assert rewritten(lm.tokenizer, DARRIEUX.text) == DARRIEUX.text  # the first edit alone: out of scope


@pytest.mark.integration
def test_the_real_scope_classifier_beats_the_issues_bar(tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 with the shipped training settings: held-out F1 >= 0.8 (minutes on a CPU). The
    classifier does not depend on the language model, so none is loaded."""
    from editcore.methods.serac import classifier

    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))
    report = classifier.train(load_hparams("serac", SeracTrainHparams, "gemma-3-270m", prefix="train_"))
    assert report["heldout_f1"] >= 0.8, report["heldout"]
