"""CaliNET on tiny models: calibration slots shaped like the host FFN beside chosen layers' MLPs, the
original weights untouched, and one set of slots re-trained over sequential edits."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.calinet import CaliSlots
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
REQ2 = Request("The capital of {} is", "Japan", "Seoul", "Tokyo")
pytestmark = pytest.mark.usefixtures("tmp_home")


def _logits(lm, texts):
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return lm.model(**enc).logits


def _setup(family="llama", **kw):
    lm = tiny.lm(family)
    m = get_method("calinet")
    return lm, m, load_hparams("calinet", m.Hparams, None, {"steps": 10, "slots": 8, **kw})


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_slots_mirror_the_host_ffn_and_leave_the_weights(family):
    lm, m, hp = _setup(family, layers=[0, 2])
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    assert [h.module for h in edit.patch.hooks] == [lm.adapter.module_name("mlp", i) for i in (0, 2)]
    for h in edit.patch.hooks:
        slots = h.fn
        assert isinstance(slots, CaliSlots) and slots.keys.shape == (lm.adapter.d_model, 8)
        assert (slots.gate is not None) == lm.adapter.gated  # gated hosts get gated slots
        assert slots.values.shape == (8, lm.adapter.d_model) and float(slots.values.abs().max()) > 0
    before = _logits(lm, [REQ.text])
    with lm.scope(edit.patch):
        assert lm.digest() == d0  # the slots live in the hooks, not in the weights
        assert not torch.equal(_logits(lm, [REQ.text]), before)


def test_untrained_slots_add_nothing():
    lm, m, hp = _setup()
    edit = m.compute(lm, [REQ], hp)
    slots = edit.patch.hooks[0].fn
    zero = CaliSlots(slots.state, slots.keys, slots.gate, torch.zeros_like(slots.values), slots.act)
    h = torch.randn(2, 5, lm.adapter.d_model)
    assert torch.equal(zero.rewrite(torch.randn(2, 5, lm.adapter.d_model), h), h)


def test_sequential_edits_retrain_one_set_of_slots():
    lm, m, hp = _setup()
    first = m.compute(lm, [REQ], hp)
    with lm.scope(first.patch) as scope:
        one = _logits(lm, [REQ.text, REQ2.text])
        second = m.compute(lm, [REQ2], hp)
        d = second.diagnostics
        assert d["continued_from_earlier"] and d["facts_calibrated"] == 2 and d["facts_rehearsed"] == 1
        assert [r.subject for r in second.patch.hooks[0].fn.state.facts] == ["The Louvre", "Japan"]
        scope.apply(second.patch)
        both = _logits(lm, [REQ.text, REQ2.text])
        scope.rollback()
        assert torch.equal(_logits(lm, [REQ.text, REQ2.text]), one)
    # The second patch carries every fact: the first one steps aside while it is installed.
    with lm.scope(second.patch):
        assert torch.equal(_logits(lm, [REQ.text, REQ2.text]), both)
    assert hooks.count(lm.model) == 0
