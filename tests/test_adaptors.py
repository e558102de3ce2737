"""What the adaptor methods share (editcore.methods.adaptor)."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import adaptor
from editcore.scope import Hook, Patch
from editcore.text import prompt_ids, target_ids
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
pytestmark = pytest.mark.usefixtures("tmp_home")


class _Add(adaptor.AdaptorHook):
    family = "test_add"
    supersedes = True

    def __init__(self, value):
        self.value = value

    def rewrite(self, x, h):
        return None if self.value == 0 else h + self.value


def test_only_the_newest_hook_of_a_lineage_acts_and_rollback_brings_back_the_earlier():
    lm = tiny.lm("llama")
    name = lm.adapter.module_name("mlp", 1)
    ids = torch.tensor([prompt_ids(lm.tokenizer, REQ.text)])

    def out():
        with torch.no_grad():
            return lm.model(ids).logits

    base = out()
    with lm.scope(Patch(hooks=(Hook(name, _Add(1.0)),))) as scope:
        one = out()
        scope.apply(Patch(hooks=(Hook(name, _Add(2.0)),)))
        assert [f.value for f in adaptor.installed(lm.model.get_submodule(name), "test_add")] == [1.0, 2.0]
        assert adaptor.newest(lm.model.get_submodule(name), "test_add").value == 2.0
        two = out()
        scope.rollback()
        assert torch.equal(out(), one) and not torch.equal(two, one)
        scope.apply(Patch(hooks=(Hook(name, _Add(0.0)),)))  # a hook that does not act changes nothing at all
        assert torch.equal(out(), base)
    assert hooks.count(lm.model) == 0


def test_edit_rows_mark_the_positions_that_predict_the_target():
    lm = tiny.lm("gemma3")
    rows = adaptor.edit_rows(lm, [REQ], prefixes=2, prefix_tokens=3)
    assert len(rows.requests) == 3 and rows.owner == [0, 0, 0]
    n_target = len(target_ids(lm.tokenizer, REQ.target_new))
    for r, req in enumerate(rows.requests):
        p = len(prompt_ids(lm.tokenizer, req.text))
        assert rows.at[r].nonzero().view(-1).tolist() == list(range(p - 1, p - 1 + n_target))
    subject = adaptor.subject_positions(lm, rows)
    plain = rows.batch.ids[0][subject[0]].tolist()
    assert lm.tokenizer.decode(plain).strip() == "The Louvre"


def test_negatives_are_read_once_per_model_state():
    lm = tiny.lm("llama")
    mlp = lm.adapter.module("mlp", 2)
    a = adaptor.negatives_at(lm, mlp, 3, 6)
    assert adaptor.negatives_at(lm, mlp, 3, 6) is a  # kept
    with lm.scope(Patch(hooks=(Hook(lm.adapter.module_name("mlp", 2), _Add(1.0)),))):
        assert adaptor.negatives_at(lm, mlp, 3, 6) is a  # the module's own output hooks do not change its input
    with lm.scope(Patch(hooks=(Hook(lm.adapter.module_name("mlp", 0), _Add(1.0)),))):
        b = adaptor.negatives_at(lm, mlp, 3, 6)
        assert b is not a and not torch.equal(a, b)  # a hook below it does

