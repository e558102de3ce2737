"""T-Patcher on tiny models: one neuron per edit at the last block's MLP, silent (adding exactly nothing)
where its pre-activation is not positive, neurons accumulating over sequential edits and rolled back one by
one."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import get_method
from editcore.methods.adaptor import installed, negative_batch
from editcore.methods.base import load_hparams
from editcore.methods.t_patcher import PatchNeuron
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
REQ2 = Request("The capital of {} is", "Japan", "Seoul", "Tokyo")
pytestmark = pytest.mark.usefixtures("tmp_home")


def _hp(**kw):
    m = get_method("t_patcher")
    return m, load_hparams("t_patcher", m.Hparams, None, {"steps": 300, "negatives": 6, "negative_tokens": 8, **kw})


def _logits(lm, ids, mask):
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_neuron_sits_in_the_last_mlp_and_is_silent_on_its_memory(family):
    lm = tiny.lm(family)
    m, hp = _hp()
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    (hook,) = edit.patch.hooks
    assert hook.module == lm.adapter.module_name("mlp", lm.adapter.n_layers - 1)
    neuron = hook.fn
    assert isinstance(neuron, PatchNeuron) and edit.diagnostics["memory_fired"] == 0
    # The sampled texts of its memory: the neuron's pre-activation is <= 0 at every position, and the
    # model's logits at every real position are bit-identical with and without the patch.
    ids, mask = negative_batch(lm, hp.negatives, hp.negative_tokens)
    with hooks.capture(lm.model.get_submodule(hook.module), "in") as got:
        before = _logits(lm, ids, mask)
    assert float(neuron.preactivation(got["x"])[mask.bool()].max()) <= 0
    with lm.scope(edit.patch):
        after = _logits(lm, ids, mask)
    real = mask.bool()
    assert torch.equal(before[real], after[real])
    # ... and it does act on the edit prompt.
    ids, mask = lm.tokenizer([REQ.text], return_tensors="pt")["input_ids"], None
    with lm.scope(edit.patch):
        edited = _logits(lm, ids, mask)
    assert not torch.equal(edited, _logits(lm, ids, mask))


def test_neurons_accumulate_and_roll_back_one_at_a_time():
    lm = tiny.lm("llama")
    m, hp = _hp(steps=20)
    ids = lm.tokenizer([REQ.text, REQ2.text], return_tensors="pt", padding=True)
    mlp = lm.adapter.module("mlp", lm.adapter.n_layers - 1)
    first = m.compute(lm, [REQ], hp)
    alone = m.compute(lm, [REQ2], hp)
    with lm.scope(first.patch) as scope:
        one = _logits(lm, ids["input_ids"], ids["attention_mask"])
        second = m.compute(lm, [REQ2], hp)
        assert second.diagnostics["neurons_at_layer"] == 2
        # the first edit's queries joined the second neuron's memory
        n_first = first.patch.hooks[0].fn.queries.shape[0]
        assert second.diagnostics["memory_size"] == alone.diagnostics["memory_size"] + n_first
        scope.apply(second.patch)
        assert len(installed(mlp, PatchNeuron.family)) == 2
        scope.rollback()
        assert len(installed(mlp, PatchNeuron.family)) == 1
        assert torch.equal(_logits(lm, ids["input_ids"], ids["attention_mask"]), one)
    assert hooks.count(lm.model) == 0
