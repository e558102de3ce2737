"""IKE's own behaviour on tiny models (the deterministic test encoder): the context it puts before every
prompt, the growing fact memory of sequential edits, the context budget, and the metrics reading the
edited model through the rewrite. The real-model success check is marked integration."""

import pytest
import torch

import tiny
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.ike import IkeHparams, demo_pool, kinds
from editcore.text import prompt_ids, rewritten, target_logprobs
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

IKE = get_method("ike")
LOUVRE = Request("{} is located in the city of", "The Louvre", "London", "Paris")
DARRIEUX = Request("The mother tongue of {} is", "Danielle Darrieux", "English", "French")


def _lm(context: int = 4096):
    lm = tiny.lm("llama")
    lm.model.config.max_position_embeddings = context  # rotary positions: the tiny model runs longer prompts
    return lm


def _hp(**overrides):
    return load_hparams("ike", IkeHparams, None, {"encoder": "hashed-bow", **overrides})


def _fact(req):
    return f"{req.text} {req.target_new}"


def _blocks(seen):
    """The demonstrations and the final block of a rewritten prompt."""
    return seen.split("\n\n")


def _kind(block, pool):
    """copy, update or retain, read back from a demonstration; also its pool fact's target."""
    fact, prompt = block[len("New Fact: "):].split("\nPrompt: ")
    p, target = next((p, t) for p in pool for t in p.targets if fact == f"{p.prompt} {t}")
    if prompt == fact:
        return "copy"
    if prompt in [f"{q} {target}" for q in p.paraphrases]:
        return "update"
    assert prompt in [f"{q} {a}" for q, a in p.neighbours], block
    return "retain"


def test_kinds_follow_the_ratio():
    assert sorted(kinds(8, (1, 3, 4), 0)) == sorted(["copy"] + ["update"] * 3 + ["retain"] * 4)
    assert len(kinds(32, (1, 3, 4), 1)) == 32 and kinds(32, (1, 3, 4), 1).count("copy") == 4
    assert kinds(5, (1, 3, 4), 0) == kinds(5, (1, 3, 4), 0) and kinds(0, (1, 3, 4), 0) == []


def test_the_prompt_holds_the_new_fact_and_k_demonstrations():
    lm = _lm()
    d0 = lm.digest()
    edit = IKE.compute(lm, [LOUVRE], _hp(k=8))
    assert lm.digest() == d0 and not edit.patch.deltas and not edit.patch.hooks
    with lm.scope(edit.patch):
        seen = rewritten(lm.tokenizer, LOUVRE.text)
        assert prompt_ids(lm.tokenizer, LOUVRE.text) == list(lm.tokenizer(seen)["input_ids"])
    blocks = _blocks(seen)
    demos, copy, last = blocks[:-2], blocks[-2], blocks[-1]
    assert last == f"New Fact: {_fact(LOUVRE)}\nPrompt: {LOUVRE.text}"
    assert copy == f"New Fact: {_fact(LOUVRE)}\nPrompt: {_fact(LOUVRE)}"
    assert len(demos) == 8 == edit.diagnostics["demonstrations"] and len(set(demos)) == 8
    assert sorted(_kind(d, demo_pool("catalog")) for d in demos) == sorted(kinds(8, (1, 3, 4), 0))
    assert not any("louvre" in d.casefold() for d in demos)  # never a counterfactual about the edited subject
    # No demonstration teaches the edit's old or new answer as some other fact's new target.
    assert not any(d.split("\nPrompt: ")[0].endswith((" Paris", " London")) for d in demos)
    assert edit.diagnostics["memory_size"] == 1 and edit.diagnostics["context"] + LOUVRE.text == seen
    # The nearest demonstration comes last, beside the query: here a fact of the same relation.
    assert "is located in the city of" in demos[-1]
    assert rewritten(lm.tokenizer, LOUVRE.text) == LOUVRE.text  # outside the scope: the base model


def test_demonstrations_never_assert_a_fact_about_the_prompts_subject():
    lm = _lm()
    edit = IKE.compute(lm, [LOUVRE], _hp(k=16))
    query = "The Eiffel Tower is located in the city of"
    with lm.scope(edit.patch):
        seen = rewritten(lm.tokenizer, query)
    demos = _blocks(seen)[:-2]
    assert len(demos) == 16
    assert not any(d.startswith("New Fact: The Eiffel Tower") for d in demos)
    assert seen.endswith(f"New Fact: {_fact(LOUVRE)}\nPrompt: {query}")


def test_sequential_edits_grow_one_memory_shown_once():
    lm = _lm()
    hp = _hp(k=4)
    with lm.scope() as s:
        first = IKE.compute(lm, [LOUVRE], hp)
        s.apply(first.patch)
        second = IKE.compute(lm, [DARRIEUX], hp)
        assert second.diagnostics["memory_size"] == 2
        s.apply(second.patch)
        for req, other in ((LOUVRE, DARRIEUX), (DARRIEUX, LOUVRE)):
            seen = rewritten(lm.tokenizer, req.text)
            blocks = _blocks(seen)
            assert len(blocks) == len(set(blocks)), "a block is shown twice"
            assert blocks[-1] == f"New Fact: {_fact(req)}\nPrompt: {req.text}"  # the nearest stored fact
            assert blocks.count(f"New Fact: {_fact(other)}\nPrompt: {_fact(other)}") == 1
            assert seen.count(f"New Fact: {_fact(req)}\n") == 2  # its copy demonstration and the final block
        s.rollback()  # back to the first edit alone
        seen = rewritten(lm.tokenizer, DARRIEUX.text)
        assert "Danielle Darrieux is English" not in seen and seen.endswith(f"{_fact(LOUVRE)}\nPrompt: {DARRIEUX.text}")
    # The second patch alone holds every fact edited so far.
    with lm.scope(second.patch):
        assert f"New Fact: {_fact(LOUVRE)}\nPrompt: {_fact(LOUVRE)}" in rewritten(lm.tokenizer, DARRIEUX.text)


def test_demonstrations_are_dropped_to_fit_the_context():
    lm = _lm(context=160)
    edit = IKE.compute(lm, [LOUVRE], _hp(k=32, reserve_tokens=40))
    assert edit.diagnostics["context_dropped"] > 0 and edit.warnings
    assert edit.diagnostics["prompt_tokens"] <= 160 - 40
    with lm.scope(edit.patch):
        assert len(prompt_ids(lm.tokenizer, LOUVRE.text)) == edit.diagnostics["prompt_tokens"]
        assert rewritten(lm.tokenizer, LOUVRE.text).endswith(f"New Fact: {_fact(LOUVRE)}\nPrompt: {LOUVRE.text}")


def test_metrics_read_the_model_behind_the_demonstrations():
    """Scores, next-token distributions (NKL), perplexity and greedy text all see the context, on every
    prompt (IKE rewrites them all)."""
    from editcore.decoding import greedy
    from editcore.metrics import evaluate
    from editcore.metrics.general import perplexity_parts
    from editcore.catalog import get_fact
    from editcore.cases.resolve import with_new_target

    lm = _lm()
    case = with_new_target(get_fact("P276:louvre"), "London")
    edit = IKE.compute(lm, [case.request()], _hp(k=4))
    prompts = [case.edit_prompt, "He plays the piano and the"]
    with lm.scope():
        base = target_logprobs(lm, prompts, [" London", " guitar"])
        ppl = perplexity_parts(lm, " ".join(tiny.CORPUS), context=64)
        text = greedy(lm, prompts, 4)
    with lm.scope(edit.patch):
        post = target_logprobs(lm, prompts, [" London", " guitar"])
        ppl_post = perplexity_parts(lm, " ".join(tiny.CORPUS), context=64)
        text_post = greedy(lm, prompts, 4)
    assert (post != base).all()
    assert ppl_post[1] == ppl[1] and ppl_post[0] != ppl[0]  # the same tokens scored, behind the context
    assert text_post != text or not torch.equal(post, base)
    report = evaluate(lm, case, edit, families=("counterfact", "nkl"), suggest=0)
    nkl = report.families["nkl"]
    assert nkl.per_prompt and all(v > 0 for v in nkl.per_prompt)


@pytest.mark.integration
def test_ike_edits_known_facts_of_the_real_model(gemma):
    """The issue's bar: at least 8 of 10 known catalog facts take the new target as top-1 after the edit."""
    from editcore.perfbench import judge, known_facts

    hp = load_hparams("ike", IkeHparams, gemma.name)
    facts = known_facts(gemma, 10)
    ok = 0
    for f in facts:
        with gemma.scope() as s:
            s.apply(IKE.compute(gemma, [f.request], hp).patch)
            ok += judge(gemma, [f])[0]["token_top1"]  # the new target as top-1
    assert ok >= 8, f"{ok}/10 facts succeeded"
