"""GRACE on tiny random models: pass-through outside every radius, the edit on its prompt, the codebook
rules, and sequential edits rolled back one by one."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.grace import Codebook, CodebookHook, GraceHparams, place_key, top_hook
from editcore.scope import param_digest
from editcore.text import next_token_logprobs, score_targets
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
# On the tiny tokenizer " the" is one token: one replaced position can make it top-1 in a random model (a
# multi-token target there needs attention that random weights do not have).
ONE = Request("{} is located in the city of", "The Louvre", "the", "Paris")
OTHER = ["The capital of Japan is", "Windows 11 is developed by", "He plays the piano and the", "Big Ben stands in"]


def _hp(**over):
    m = get_method("grace")
    return load_hparams("grace", m.Hparams, None, {"layer": 1, "eps": 1e-3, **over})


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("llama")


def _logits(lm, prompts):
    with torch.no_grad():
        return next_token_logprobs(lm, prompts)


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_inputs_outside_every_radius_get_exactly_the_base_logits(family):
    lm = tiny.lm(family)
    m = get_method("grace")
    base = _logits(lm, OTHER + [REQ.text])
    edit = m.compute(lm, [REQ], _hp())
    assert not edit.patch.deltas and len(edit.patch.hooks) == 1
    d0 = lm.digest()
    with lm.scope(edit.patch) as s:
        got = _logits(lm, OTHER + [REQ.text])
        assert param_digest(s.model) == d0  # no weight changes
    assert torch.equal(got[:len(OTHER)], base[:len(OTHER)])  # bit-identical away from the key
    assert not torch.equal(got[-1], base[-1])  # ... and changed at it


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_an_edit_works_on_its_prompt(family):
    lm = tiny.lm(family)
    m = get_method("grace")
    d0 = lm.digest()
    before = score_targets(lm, [ONE.text], [ONE.target_new])[0]
    edit = m.compute(lm, [ONE], _hp())
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    assert edit.diagnostics["reached_top1"] and edit.diagnostics["rule"] == "new"
    with lm.scope(edit.patch):
        assert lm.digest() == d0  # a codebook changes no weight
        sc = score_targets(lm, [ONE.text], [ONE.target_new])[0]
    assert not all(before.token_correct) and all(sc.token_correct)
    assert hooks.count(lm.model) == 0


def test_generation_meets_the_codebook(lm):
    from editcore.decoding import greedy

    m = get_method("grace")
    edit = m.compute(lm, [ONE], _hp())
    plain = greedy(lm, [ONE.text, "The capital of Japan is"], max_new_tokens=3)
    with lm.scope(edit.patch):
        out = greedy(lm, [ONE.text, "The capital of Japan is"], max_new_tokens=3)
    assert out[0].startswith(" " + ONE.target_new) and not plain[0].startswith(" " + ONE.target_new)
    assert out[1] == plain[1]


def test_codebook_rules():
    hp = GraceHparams(eps=1.0)
    k0 = torch.zeros(4)
    v = torch.ones(3)
    book = place_key(Codebook(), k0, v, "London", hp).codebook
    far = place_key(book, torch.tensor([3.0, 0, 0, 0]), v, "Rome", hp)
    assert far.rule == "new" and len(far.codebook) == 2 and far.codebook.entries[1].eps == 1.0
    near = place_key(book, torch.tensor([1.5, 0, 0, 0]), v, "Rome", hp)  # radii overlap, other target
    assert near.rule == "split" and len(near.codebook) == 2
    assert near.codebook.entries[0].eps == pytest.approx(0.75 - 1e-5) and near.codebook.entries[1].eps == 0.75
    same = place_key(book, torch.tensor([1.5, 0, 0, 0]), v, "london", hp)  # same target: grow to cover
    assert same.rule == "expand" and len(same.codebook) == 1 and same.codebook.entries[0].eps == 1.5
    inside = place_key(book, torch.tensor([0.5, 0, 0, 0]), v, "London", hp)
    assert inside.rule == "covered" and inside.index == 0 and len(inside.codebook) == 1
    again = place_key(book, k0.clone(), v * 2, "Rome", hp)  # the same prompt edited to another target
    assert again.rule == "replace" and len(again.codebook) == 1 and again.codebook.entries[0].label == "Rome"
    moved = place_key(book, torch.tensor([1.5, 0, 0, 0]), v, "London", GraceHparams(eps=1.0,
                                                                                     eps_expand="moving_average"))
    assert torch.equal(moved.codebook.entries[0].key, torch.tensor([0.75, 0, 0, 0]))
    assert book.entries[0].eps == 1.0  # codebooks are never changed in place


def test_only_the_newest_codebook_hook_acts(lm):
    mod = lm.adapter.module("mlp_out", 1)
    x = torch.zeros(1, 2, lm.adapter.d_mlp)
    key = torch.zeros(lm.adapter.d_mlp)
    old = CodebookHook(Codebook(place_key(Codebook(), key, torch.full((lm.adapter.d_model,), 1.0), "a",
                                          GraceHparams()).codebook.entries))
    new = CodebookHook(Codebook(place_key(Codebook(), key, torch.full((lm.adapter.d_model,), 2.0), "b",
                                          GraceHparams()).codebook.entries))
    with hooks.removing([hooks.add(mod, old), hooks.add(mod, new)]):
        assert top_hook(mod) is new
        assert old(mod, (x,), torch.zeros(1, 2, lm.adapter.d_model)) is None
        assert float(new(mod, (x,), torch.zeros(1, 2, lm.adapter.d_model)).mean()) == 2.0
    assert top_hook(mod) is None


def test_twenty_sequential_edits_then_rolling_back_ten_leaves_the_first_ten(lm):
    """Each edit is computed inside the scope that holds the earlier ones (its codebook extends theirs);
    rolling back ten patches gives bit-for-bit the model after the first ten edits."""
    from editcore.catalog import load_catalog

    m = get_method("grace")
    hp = _hp(steps=20)
    cases = [c for c in load_catalog() if len(c.subject) > 3][:20]
    probes = [c.edit_prompt for c in cases] + OTHER
    base = _logits(lm, probes)
    d0 = lm.digest()
    with lm.scope() as s:
        sizes = []
        for i, c in enumerate(cases):
            edit = m.compute(lm, [c.request(0)], hp)
            s.apply(edit.patch)
            sizes.append(edit.diagnostics["codebook_size"])
            if i == 9:
                after_ten = _logits(lm, probes)
        assert sizes == list(range(1, 21))  # distinct prompts: one entry each
        after_twenty = _logits(lm, probes)
        s.rollback(10)
        assert s.depth == 10 and hooks.count(lm.model) == 10
        again = _logits(lm, probes)
        assert len(top_hook(lm.adapter.module("mlp_out", 1)).codebook) == 10
    assert torch.equal(again, after_ten)
    assert not torch.equal(after_twenty[10:20], after_ten[10:20])  # edits 11-20 were in force
    assert torch.equal(after_ten[10:20], base[10:20])  # ... and are gone: those prompts read the base model
    assert torch.equal(again[-len(OTHER):], base[-len(OTHER):])
    assert lm.digest() == d0 and hooks.count(lm.model) == 0


def test_a_cold_start_is_reproducible_and_leaves_the_global_rng_alone(lm):
    m = get_method("grace")
    hp = _hp(value_init="cold", steps=1, stop_at_top1=False, stop_loss=0.0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = m.compute(lm, [REQ], hp).patch.hooks[0].fn.codebook.entries[0].value
    assert torch.equal(torch.get_rng_state(), state)
    b = m.compute(lm, [REQ], hp).patch.hooks[0].fn.codebook.entries[0].value
    assert torch.equal(a, b)


def test_the_bench_section_reads_the_sequence(lm, monkeypatch):
    from editcore import perfbench
    from editcore.methods import grace

    hp = _hp()
    monkeypatch.setattr("editcore.methods.base.load_hparams", lambda *a, **k: hp)
    facts = [perfbench.Fact(f"f{i}", Request("{} is located in the city of", s, "the", "Paris"),
                            (("Big Ben stands in", "London"),)) for i, s in enumerate(["The Louvre", "Big Ben"])]
    d0 = lm.digest()
    sec = grace.bench_section(lm, facts, {})
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    assert [r["edits"] for r in sec["rows"]] == [1, 2]
    assert all(set(r) == set(sec["columns"]) for r in sec["rows"])
    assert all(0 <= r["retention"] <= 1 and r["neighbourhood"] is not None for r in sec["rows"])
