"""What the adaptor methods share (editcore.methods.adaptor), and the metrics reading a hook patch: a metric's
value differs from the unedited model's exactly on the prompts where the adaptor acts."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import adaptor, get_method
from editcore.methods.base import load_hparams
from editcore.metrics import evaluate
from editcore.scope import Hook, Patch
from editcore.text import prompt_ids, target_ids
from editcore.types import Request
from test_metrics_evaluate import CASE

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


def test_metrics_read_the_adaptor_exactly_where_it_acts():
    """MELO with a tiny radius acts only at positions whose keys it filed (the edit prompt's): the
    CounterFact reads of the edit prompt change, those of the paraphrase and the neighbours are the
    unedited model's to the last bit."""
    lm = tiny.lm("llama")
    m = get_method("melo")
    hp = load_hparams("melo", m.Hparams, None, {"init_radius": 1e-3, "steps": 20})
    edit = m.compute(lm, [CASE.request()], hp)
    key_hook = edit.patch.hooks[0]
    index = key_hook.fn.index

    def acts(prompt: str, target: str) -> bool:
        ids = torch.tensor([prompt_ids(lm.tokenizer, prompt) + target_ids(lm.tokenizer, target)])
        with hooks.capture(lm.model.get_submodule(key_hook.module), "out") as got, torch.no_grad():
            lm.model(ids)
        return bool((index.lookup(got["x"][0].float()) >= 0).any())

    rep = evaluate(lm, CASE, edit, families=("counterfact",), suggest=0).to_dict()
    post, pre = rep["families"]["counterfact"], rep["counterfact_pre"]
    checked = 0
    for kind in ("edit", "paraphrase", "neighbourhood"):
        for a, b in zip(post[kind], pre[kind]):
            acting = acts(a["prompt"], a["expected"]) or acts(a["prompt"], a["other"])
            same = (a["p_expected"], a["p_other"]) == (b["p_expected"], b["p_other"])
            assert same != acting, (kind, a["prompt"])
            checked += 1
    assert checked == 1 + len(CASE.paraphrases) + len(CASE.neighbourhood)
    assert acts(CASE.edit_prompt, CASE.target_new)
