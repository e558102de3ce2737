"""PMET on tiny random models: the attention and MLP vectors are optimised together (on every replay path),
only MLP weights are written, the MLP share reaches its target; the real Gemma run is marked integration."""

import pytest
import torch

import tiny
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.common import module_io_at, subject_last_index
from editcore.methods.speed import Speed
from editcore.methods.values import ValueSettings, optimise_values
from editcore.scope import param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")
REQ2 = Request("The capital of {} is", "Japan", "Paris")

pytestmark = pytest.mark.usefixtures("tmp_home")


def _hp(corpus, **kw):
    base = {"layers": [0, 1], "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 5,
            "context_prefixes": 2, "context_tokens": 3, "mom2_update_weight": 10.0}
    return load_hparams("pmet", get_method("pmet").Hparams, None, {**base, **kw})


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gemma3"])
def test_only_mlp_weights_are_written(family, corpus):
    """The patch holds the MLP output projections of the range and nothing else (no attention weight), though
    an attention vector was optimised for every request."""
    lm = tiny.lm(family)
    before = param_digest(lm.model)
    edit = get_method("pmet").compute(lm, [REQ, REQ2], _hp(corpus))
    assert param_digest(lm.model) == before
    assert set(edit.patch.deltas) == {lm.adapter.mlp_out_param_name(i) for i in (0, 1)}
    attn = {n for n, _ in lm.model.named_parameters() if lm.adapter.module_name("attn_out", 1) in n}
    assert attn and not attn & set(edit.patch.deltas)
    assert all(n > 0 for n in edit.diagnostics["attn_delta_norms"])
    assert all(n > 0 for n in edit.diagnostics["mlp_delta_norms"])


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_two_vectors_follow_the_same_curves_on_every_replay_path(family):
    """The attention vector rides on the engine's replays like the MLP one: the suffix replay (with finished
    requests dropped) and plain full forwards give the same loss curves and vectors."""
    lm = tiny.lm(family)
    reqs = [REQ, REQ2, Request("{} plays the", "Miles Davis", "guitar")]
    templates = ["{}", "A b. {}"]
    s = ValueSettings(steps=6, lr=0.5, stop_prob=1.0, clamp_norm_factor=100.0, weight_decay=0.1)
    first = optimise_values(lm, reqs, 1, templates, ValueSettings(steps=1), slot="mlp_out", also_at="attn_out")
    low = sorted(r.losses[0] for r in first)
    s = ValueSettings(**{**s.__dict__, "stop_loss": (low[0] + low[1]) / 2})  # one request finishes at once
    runs = {mode: optimise_values(lm, reqs, 1, templates, s, slot="mlp_out", also_at="attn_out", speed=sp)
            for mode, sp in (("suffix", Speed()), ("full", Speed(suffix_cache=False, block_replay=False)))}
    assert runs["suffix"][0].suffix and not runs["full"][0].replayed
    for a, b in zip(runs["suffix"], runs["full"]):
        assert a.steps == b.steps
        assert a.losses == pytest.approx(b.losses, rel=1e-3, abs=1e-6)
        assert torch.allclose(a.also_delta, b.also_delta, atol=1e-3)
        assert torch.allclose(a.delta, b.delta, atol=1e-3)
        assert torch.allclose(a.also_init, b.also_init, atol=1e-5)
    # The attention output at the plain prompt is what the engine calls its unedited value.
    ids, idx = subject_last_index(lm.tokenizer, REQ.prompt, REQ.subject)
    assert torch.allclose(runs["suffix"][0].also_init, module_io_at(lm, "attn_out", 1, [ids], [idx], "out")[0],
                          atol=1e-5)


def test_the_attention_vector_changes_the_mlp_target(corpus):
    """Optimised together, the MLP vector differs from the one optimised alone (ROME's slot), and the
    attention vector is of comparable size: the attention takes part of the change."""
    lm = tiny.lm("llama")
    s = ValueSettings(steps=8, lr=0.05, stop_prob=1.0, stop_loss=0.0, clamp_norm_factor=100.0, weight_decay=0.0)
    alone, = optimise_values(lm, [REQ], 1, ["{}"], s, slot="mlp_out")
    both, = optimise_values(lm, [REQ], 1, ["{}"], s, slot="mlp_out", also_at="attn_out")
    assert alone.also_delta is None and both.also_delta is not None
    assert not torch.allclose(alone.delta, both.delta, rtol=1e-3, atol=1e-5)
    assert float(both.also_delta.norm()) > 0.1 * float(both.delta.norm())


@pytest.mark.parametrize("family, tol", [("gpt2", 1e-2), ("llama", 1e-2), ("gemma3", 0.1)])
def test_one_layer_reaches_the_mlp_target(family, tol, corpus):
    """With one layer and a small lambda the MLP output at the plain prompt moves to m* = m_init + delta_mlp
    (through the post-MLP norm on Gemma, where only N(m) matters; on the tiny Gemma the MLP outputs' mean
    square is near the norm's eps, which the mapping treats as scale-free, hence the looser bound)."""
    lm = tiny.lm(family)
    edit = get_method("pmet").compute(lm, [REQ], _hp(corpus, layers=[1], context_prefixes=0,
                                                      mom2_update_weight=1e-4))
    assert edit.diagnostics["z_residual_left"] < tol


@pytest.mark.integration
def test_pmet_on_gemma_edits_known_facts(gemma, monkeypatch):
    from test_emmet import batch_hits_on_gemma

    hits = batch_hits_on_gemma(gemma, monkeypatch, "pmet")
    assert hits >= 8, f"PMET made only {hits}/10 new targets top-1"
