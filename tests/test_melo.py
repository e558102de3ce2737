"""MELO: the cluster/radius index (insertion and lookup as in the paper), and on tiny models the dynamic
LoRA blocks: an input whose keys fall in no cluster sees the base model bit for bit."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.melo import MeloIndex, MeloKey
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
REQ2 = Request("The capital of {} is", "Japan", "Seoul", "Tokyo")
UNRELATED = "He plays the piano and the guitar."
pytestmark = pytest.mark.usefixtures("tmp_home")


def _k(*xs):
    return torch.tensor([list(map(float, x)) for x in xs])


def test_index_inserts_joins_and_splits_like_the_paper():
    idx = MeloIndex((), ()).inserted(_k((0, 0)), (1,), 0, 1.0)
    assert len(idx.clusters) == 1 and idx.clusters[0].radius == 1.0
    # far away (beyond radius + init_radius): a new cluster
    idx = idx.inserted(_k((10, 0)), (2,), 1, 1.0)
    assert len(idx.clusters) == 2
    # near the first, same label: joins it; centre = mean, radius = largest distance (>= init radius)
    idx = idx.inserted(_k((1.5, 0)), (1,), 2, 1.0)
    c = idx.clusters[0]
    assert len(idx.clusters) == 2 and c.blocks == (0, 2)
    assert torch.allclose(c.center, torch.tensor([0.75, 0.0])) and c.radius == pytest.approx(1.0)
    assert idx.lookup(_k((0.1, 0), (1.4, 0), (10.2, 0), (5, 5))).tolist() == [0, 2, 1, -1]
    # near the second with another label: a conflict, radii split at half the distance
    idx = idx.inserted(_k((11, 0)), (3,), 3, 1.0)
    assert idx.conflicts == 1 and idx.clusters[1].radius == pytest.approx(0.5 - 1e-5)
    assert idx.clusters[-1].radius == pytest.approx(0.5 + 1e-5)
    assert idx.lookup(_k((10.1, 0), (10.9, 0))).tolist() == [1, 3]


def _setup(family="llama", **kw):
    lm = tiny.lm(family)
    m = get_method("melo")
    return lm, m, load_hparams("melo", m.Hparams, None, {"init_radius": 1e-3, "steps": 30, **kw})


def _last_logits(lm, texts):
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return lm.model(**enc).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_an_input_outside_every_cluster_sees_the_base_model(family):
    lm, m, hp = _setup(family)
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == d0 and hooks.count(lm.model) == 0
    d = edit.diagnostics
    assert d["edit_positions_on_own_block"] == d["edit_positions"] > 0
    base, base_edit = _last_logits(lm, [UNRELATED]), _last_logits(lm, [REQ.text])
    with lm.scope(edit.patch):
        assert torch.equal(_last_logits(lm, [UNRELATED]), base)
        assert not torch.equal(_last_logits(lm, [REQ.text]), base_edit)
    assert lm.digest() == d0 and hooks.count(lm.model) == 0


def test_sequential_edits_share_one_index_and_roll_back_exactly():
    lm, m, hp = _setup()
    key = lm.adapter.module("mlp_in", m._layers(lm, hp)[0])
    first = m.compute(lm, [REQ], hp)
    with lm.scope(first.patch) as scope:
        one = _last_logits(lm, [REQ.text, REQ2.text])
        second = m.compute(lm, [REQ2], hp)
        assert second.diagnostics["blocks"] == 2
        assert second.diagnostics["clusters"] >= first.diagnostics["clusters"]
        scope.apply(second.patch)
        assert len([f for f in key._forward_hooks.values() if isinstance(f, MeloKey)]) == 2
        two = _last_logits(lm, [REQ.text, REQ2.text])
        assert torch.equal(two[0], one[0])  # the first edit is untouched by the second
        assert not torch.equal(two[1], one[1])
        scope.rollback()
        assert torch.equal(_last_logits(lm, [REQ.text, REQ2.text]), one)
    assert hooks.count(lm.model) == 0


def test_a_conflicting_edit_takes_over_the_same_keys():
    lm, m, hp = _setup()
    first = m.compute(lm, [REQ], hp)
    other = Request(REQ.prompt, REQ.subject, "Rome", "Paris")
    with lm.scope(first.patch) as scope:
        second = m.compute(lm, [other], hp)
        assert second.diagnostics["conflicts"] >= 1
        scope.apply(second.patch)
        assert second.diagnostics["edit_positions_on_own_block"] == second.diagnostics["edit_positions"]
