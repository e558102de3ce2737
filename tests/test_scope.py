"""The edit scope restores every tensor bit-for-bit, whatever happens inside it."""

import random
import threading

import pytest
import torch

import tiny
from editcore.scope import Hook, Patch, scratch


class Boom(Exception):
    pass


def _random_patch(lm, rng: random.Random, gen: torch.Generator) -> Patch:
    params = dict(lm.model.named_parameters())
    names = rng.sample(sorted(params), k=rng.randint(1, 3))
    deltas = {n: torch.randn(params[n].shape, generator=gen) * 0.1 for n in names}
    hooks = ()
    if rng.random() < 0.3:
        hooks = (Hook(lm.adapter.module_name("mlp_out", rng.randrange(lm.adapter.n_layers)),
                      lambda m, a, out: out * 2.0),)
    return Patch(deltas, hooks)


def test_thousand_random_cycles_leave_model_pristine():
    lm = tiny.lm("gpt2", n_layers=2)
    pristine = lm.digest()
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    raised = 0
    for i in range(1000):
        patch = _random_patch(lm, rng, gen)
        try:
            with lm.scope(patch) as s:
                if rng.random() < 0.5:
                    s.apply(_random_patch(lm, rng, gen), checkpoint=rng.random() < 0.5)
                if i % 3 == 0:
                    raise Boom
        except Boom:
            raised += 1
        if i % 100 == 0:
            assert lm.digest() == pristine, f"cycle {i} leaked"
    assert raised == 334
    assert lm.digest() == pristine
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_patch_changes_model_while_active():
    lm = tiny.lm("llama")
    ids = lm.tokenizer("The Louvre is", return_tensors="pt")
    with torch.no_grad():
        before = lm.model(**ids).logits
    name = lm.adapter.mlp_out_param_name(0)
    patch = Patch({name: torch.ones_like(dict(lm.model.named_parameters())[name])})
    with lm.scope(patch), torch.no_grad():
        during = lm.model(**ids).logits
    with torch.no_grad():
        after = lm.model(**ids).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)


def test_stacked_edits_roll_back_in_order():
    lm = tiny.lm("gpt2")
    name = lm.adapter.mlp_out_param_name(1)
    param = dict(lm.model.named_parameters())[name]
    states = [param.detach().clone()]
    with lm.scope() as s:
        for k in range(4):
            s.apply(Patch({name: torch.full_like(param, 0.1 * (k + 1))}))
            states.append(param.detach().clone())
        for k in range(4, 0, -1):
            assert torch.equal(param, states[k])
            s.rollback()
            assert torch.equal(param, states[k - 1])
        with pytest.raises(IndexError):
            s.rollback()
    assert torch.equal(param, states[0])


def test_rollback_without_checkpoint_is_refused_but_exit_restores():
    lm = tiny.lm("gpt2")
    pristine = lm.digest()
    name = lm.adapter.mlp_out_param_name(0)
    with lm.scope() as s:
        s.apply(Patch({name: torch.ones_like(dict(lm.model.named_parameters())[name])}), checkpoint=False)
        with pytest.raises(RuntimeError):
            s.rollback()
    assert lm.digest() == pristine


def test_failed_apply_leaves_no_half_edit():
    lm = tiny.lm("gpt2")
    pristine = lm.digest()
    good = lm.adapter.mlp_out_param_name(0)
    bad = lm.adapter.mlp_out_param_name(1)
    params = dict(lm.model.named_parameters())
    patch = Patch({good: torch.ones_like(params[good]), bad: torch.ones(3)})  # wrong shape
    with lm.scope() as s:
        with pytest.raises(ValueError):
            s.apply(patch)
        assert s.depth == 0
        assert lm.digest() == pristine
    assert lm.digest() == pristine


def test_keyboard_interrupt_inside_scope_restores():
    lm = tiny.lm("gpt2")
    pristine = lm.digest()
    name = lm.adapter.mlp_out_param_name(0)
    with pytest.raises(KeyboardInterrupt):
        with lm.scope(Patch({name: torch.ones_like(dict(lm.model.named_parameters())[name])})):
            raise KeyboardInterrupt
    assert lm.digest() == pristine


def test_scratch_restores_in_place_training():
    lm = tiny.lm("gpt2")
    pristine = lm.digest()
    name = lm.adapter.mlp_out_param_name(0)
    with pytest.raises(Boom):
        with scratch(lm.model, [name]):
            with torch.no_grad():
                dict(lm.model.named_parameters())[name].mul_(3)
            raise Boom
    assert lm.digest() == pristine


def test_concurrent_scopes_never_see_each_others_edits():
    """Two threads edit the same shared model; each sees exactly its own delta, never the other's."""
    lm = tiny.lm("gpt2")
    pristine = lm.digest()
    name = lm.adapter.mlp_out_param_name(0)
    param = dict(lm.model.named_parameters())[name]
    base = param.detach().clone()
    errors = []

    def worker(value: float):
        delta = torch.full_like(base, value)
        for _ in range(50):
            with lm.scope(Patch({name: delta})):
                seen = param.detach().clone()
                if not torch.equal(seen, base + delta):
                    errors.append(value)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1.0, -2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert lm.digest() == pristine


def test_content_key_names_the_weights_and_comes_back_with_them():
    """content_key (the key of cached activations) changes whenever a weight is written in place and is given
    back when the scope or scratch copies the saved weights back: equal keys, equal weights."""
    from editcore.scope import content_key, scratch

    lm = tiny.lm("gpt2")
    name = lm.adapter.mlp_out_param_name(0)
    before = content_key(lm.model)
    assert content_key(lm.model) == before
    with lm.scope() as scope:
        scope.apply(Patch({name: torch.ones_like(dict(lm.model.named_parameters())[name])}))
        patched = content_key(lm.model)
        assert patched != before
        scope.apply(Patch({name: torch.ones_like(dict(lm.model.named_parameters())[name])}))
        assert content_key(lm.model) not in (before, patched)
        scope.rollback()
        assert content_key(lm.model) == patched
    assert content_key(lm.model) == before
    with scratch(lm.model, [name]):
        with torch.no_grad():
            dict(lm.model.named_parameters())[name].mul_(2)
        assert content_key(lm.model) != before
    assert content_key(lm.model) == before
    with torch.no_grad():
        dict(lm.model.named_parameters())[name].add_(0.0)  # same values, but nothing can know that
    assert content_key(lm.model) != before


def test_an_input_rewrite_is_seen_inside_its_scope_only():
    """A patch's rewrite applies to every prompt the model is given while the patch is active (and to the
    scoring built on prompt_ids), in the thread that applied it, for that model's tokenizer only; rollback
    and the scope's exit remove it, also after an exception."""
    import threading

    from editcore.text import prompt_ids, target_logprobs

    lm = tiny.lm("gpt2")
    other = tiny.lm("gemma3")  # another tokenizer (the tiny gpt2 and llama share one)
    tok = lm.tokenizer
    prompt, fact = "The capital of Japan is", "Paris is in France. "
    plain = prompt_ids(tok, prompt)

    def raw(text):
        return list(tok(text)["input_ids"])

    with lm.scope():
        before = target_logprobs(lm, [prompt], [" Tokyo"])
    patch = Patch(rewrite=lambda t: fact + t, label="prefix")
    seen_elsewhere = []
    with lm.scope(patch) as s:
        assert prompt_ids(tok, prompt) == raw(fact + prompt) != plain
        assert not torch.allclose(target_logprobs(lm, [prompt], [" Tokyo"]), before)
        assert prompt_ids(other.tokenizer, prompt) == list(other.tokenizer(prompt)["input_ids"])
        t = threading.Thread(target=lambda: seen_elsewhere.append(prompt_ids(tok, prompt)))
        t.start()
        t.join()
        s.apply(Patch(rewrite=lambda t: "Note. " + t))
        assert prompt_ids(tok, prompt) == raw("Note. " + fact + prompt)
        s.rollback()
        assert prompt_ids(tok, prompt) == raw(fact + prompt)
    assert seen_elsewhere == [plain]
    assert prompt_ids(tok, prompt) == plain
    with pytest.raises(RuntimeError):
        with lm.scope(patch):
            raise RuntimeError("boom")
    assert prompt_ids(tok, prompt) == plain


def test_the_subject_is_found_behind_a_rewrite():
    """An input rewrite puts text before the prompt; the subject's last token is found in the rewritten ids."""
    from editcore.methods.common import subject_last_index

    lm = tiny.lm("gpt2")
    ids, idx = subject_last_index(lm.tokenizer, "{} is located in", "The Louvre")
    with lm.scope(Patch(rewrite=lambda t: "Big Ben stands in London. " + t)):
        ids2, idx2 = subject_last_index(lm.tokenizer, "{} is located in", "The Louvre")
    assert len(ids2) - idx2 == len(ids) - idx and ids2[-(len(ids) - idx):] == ids[idx:]
    assert lm.tokenizer.decode(ids2[:idx2 + 1]).endswith("The Louvre")
