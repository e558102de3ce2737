"""WISE on tiny models: the router sends an input to the main memory (the unedited model, bit for bit) unless
its activation score passes the threshold; edits fill shards that are merged with TIES; rollback brings back
the earlier side memory."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.wise import SideRouter, ties_merge
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
REQ2 = Request("The capital of {} is", "Japan", "Seoul", "Tokyo")
UNRELATED = ["He plays the piano and the guitar.", "Windows 11 is developed by", "She speaks English and Spanish.",
             "Big Ben stands in London by the Thames.", "Danielle Darrieux's mother tongue is French."]
# Margins in the units of a 3-layer random model's activations (WISE's defaults suit real models).
TINY = {"route_on": "answer", "lr": 100.0, "alpha": 0.02, "beta": 0.3, "gamma": 0.2, "steps": 60,
        "norm_constraint": 10.0, "negatives": 3, "negative_tokens": 8}
pytestmark = pytest.mark.usefixtures("tmp_home")


def _wide_llama():
    """A tiny Llama with a wider MLP: 48 hidden units leave a linear router too little room to tell a few
    edit positions from a hundred irrelevant ones."""
    import transformers

    from editcore.models import LM

    tok = tiny.tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
                                   intermediate_size=512, max_position_embeddings=128, vocab_size=len(tok))
    return LM.from_model(transformers.AutoModelForCausalLM.from_config(cfg).eval(), tok, "tiny-wide-llama")


def _setup(family="llama", **kw):
    lm = _wide_llama() if family == "wide-llama" else tiny.lm(family)
    m = get_method("wise")
    return lm, m, load_hparams("wise", m.Hparams, None, {**TINY, **kw})


def _logits(lm, text):
    enc = lm.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return lm.model(**enc).logits


def _scores(lm, router: SideRouter, module: str, text: str) -> torch.Tensor:
    """The router's best activation score at every position of ``text``."""
    with hooks.capture(lm.model.get_submodule(module), "in") as got:
        _logits(lm, text)
    a = got["x"][0].float()
    return torch.stack([(a @ d.T).norm(dim=-1) for d in router.candidates()]).max(0).values


def test_ties_merge_keeps_disjoint_entries_and_elects_signs():
    a = torch.tensor([1.5, 0.0, 2.0, -1.0])
    b = torch.tensor([0.0, 3.0, -1.0, -3.0])
    got = ties_merge([a, b], [0.5, 0.5], density=1.0)
    # entry 2: sign elected by the weighted sum (2 - 1 > 0), only the agreeing value kept
    assert got.tolist() == [1.5, 3.0, 2.0, -2.0]
    # trimming: each delta keeps its top half by magnitude before the vote
    assert ties_merge([a], [1.0], density=0.5).tolist() == [1.5, 0.0, 2.0, 0.0]


@pytest.mark.parametrize("family", ["wide-llama", "gemma3"])
def test_an_unrelated_input_is_routed_to_the_main_memory(family):
    lm, m, hp = _setup(family)
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    (hook,) = edit.patch.hooks
    router = hook.fn
    assert router.eps == pytest.approx(hp.act_ratio * edit.diagnostics["edit_score_min"])
    quiet = [t for t in UNRELATED if float(_scores(lm, router, hook.module, t).max()) <= router.eps]
    assert quiet, "the router sends every unrelated input to the side memory"
    before = {t: _logits(lm, t) for t in quiet + [REQ.text]}
    assert float(_scores(lm, router, hook.module, REQ.text).max()) > router.eps
    with lm.scope(edit.patch):
        for t in quiet:
            assert torch.equal(_logits(lm, t), before[t])  # the main memory: the unedited model exactly
        assert not torch.equal(_logits(lm, REQ.text), before[REQ.text])


def test_shards_are_merged_and_rollback_restores_the_side_memory():
    lm, m, hp = _setup(shard_edits=1, n_shards=2, steps=10)
    first = m.compute(lm, [REQ], hp)
    mem1 = first.patch.hooks[0].fn.memory
    assert (mem1.edits, len(mem1.pending), mem1.merged, mem1.shard) == (1, 1, None, 1)  # shard 0 is full
    with lm.scope(first.patch) as scope:
        one = _logits(lm, REQ.text)
        second = m.compute(lm, [REQ2], hp)
        mem2 = second.patch.hooks[0].fn.memory
        assert second.diagnostics["merged_now"] and (mem2.merges, mem2.pending) == (1, ())
        # Shard 1 had its own random subspace; where only shard 0 could change W', the merge keeps its
        # value exactly (TIES: a single non-zero entry elects its own sign and is averaged with itself).
        d0 = mem1.pending[0].reshape(-1)
        mask1 = torch.zeros_like(d0, dtype=torch.bool)
        mask1[m._open_shard(mem1, hp, d0.device).mask] = True
        only0 = (d0 != 0) & ~mask1
        assert bool(only0.any()) and torch.equal(mem2.merged.reshape(-1)[only0], d0[only0])
        assert bool((mem2.merged.reshape(-1)[mask1 & (d0 == 0)] != 0).any())  # shard 1's edit is in
        scope.apply(second.patch)
        scope.rollback()
        assert torch.equal(_logits(lm, REQ.text), one)
    assert hooks.count(lm.model) == 0
