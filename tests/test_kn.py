"""KN (knowledge neurons) on tiny random models."""

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.kn import Attribution, KNHparams, attribute, select_neurons
from editcore.text import prompt_ids, target_ids
from editcore.types import Request

REQ = Request("The {} is located in the city of", "Eiffel Tower", "Rome", "Paris")


def _naive_ig(lm, prompt, answer_id, layer, steps):
    """Reference IG, one alpha per forward over the whole prompt, no batching and no KV cache."""
    ids = torch.tensor([prompt_ids(lm.tokenizer, prompt)])
    mod = lm.adapter.module("mlp_out", layer)
    got = {}
    h = mod.register_forward_pre_hook(lambda _m, a: got.__setitem__("a", a[0][0, -1].detach().clone()))
    with torch.no_grad():
        lm.model(input_ids=ids)
    h.remove()
    act = got["a"].float()
    total = torch.zeros_like(act)
    values = []
    for k in range(0, steps + 1):
        leaf = (act * k / steps).requires_grad_(True)

        def swap(_m, args):
            x = args[0].clone()
            x[0, -1] = leaf
            return (x,)

        h = mod.register_forward_pre_hook(swap)
        with torch.enable_grad():
            p = torch.softmax(lm.model(input_ids=ids).logits[0, -1].float(), -1)[answer_id]
            g, = torch.autograd.grad(p, leaf)
        h.remove()
        values.append(float(p.detach()))
        if k > 0:
            total += g
    return act * total / steps, values


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_batched_cached_attribution_matches_naive_ig(family):
    lm = tiny.lm(family)
    answer = target_ids(lm.tokenizer, "Paris")[0]
    a = attribute(lm, REQ.text, answer, [0, 2], steps=8, batch_rows=5)  # chunks cut across layers
    assert a.cached
    for i, layer in enumerate([0, 2]):
        ref, _ = _naive_ig(lm, REQ.text, answer, layer, 8)
        torch.testing.assert_close(a.scores[i], ref, rtol=1e-3, atol=1e-7 * float(ref.abs().max()) + 1e-9)


def test_attribution_completeness():
    # Integrated gradients' completeness: sum of attributions ~= P(y | a) - P(y | 0) for fine Riemann sums.
    lm = tiny.lm("gpt2")
    answer = target_ids(lm.tokenizer, "Paris")[0]
    a = attribute(lm, REQ.text, answer, [1], steps=200)
    _, probs = _naive_ig(lm, REQ.text, answer, 1, 1)  # probs[0] at alpha=0, probs[1] at alpha=1
    diff = probs[1] - probs[0]
    assert a.answer_prob == pytest.approx(probs[1], rel=1e-4)
    assert float(a.scores.sum()) == pytest.approx(diff, rel=0.05, abs=1e-3 * abs(probs[1]))


def test_single_token_prompt_uses_full_path():
    lm = tiny.lm("llama")
    answer = target_ids(lm.tokenizer, "Paris")[0]
    assert len(prompt_ids(lm.tokenizer, "The")) == 1
    a = attribute(lm, "The", answer, [1], steps=4)
    assert not a.cached and a.scores.shape == (1, lm.adapter.d_mlp)


def _attr(scores, layers=(0, 1)):
    s = torch.tensor(scores, dtype=torch.float32)
    return Attribution(list(layers), s, s.abs(), 0, 0.5, True)


def test_threshold_and_refinement():
    a = _attr([[1.0, 0.19, 0.21, -3.0], [0.5, 0.0, 0.0, 0.25]])
    assert select_neurons([a], 0.2, 0.5) == [(0, 0), (1, 0), (1, 3), (0, 2)]
    b = _attr([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.9]])
    c = _attr([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    # (1, 3) is selected on all three prompts, (0, 0) on two of three, (1, 0) and (0, 2) on one.
    assert select_neurons([a, b, c], 0.2, 1.0) == [(1, 3)]
    assert set(select_neurons([a, b, c], 0.2, 0.6)) == {(1, 3), (0, 0)}
    assert select_neurons([a, b, c], 0.2, 0.6, max_neurons=1) == [(1, 3)]
    assert select_neurons([_attr([[-1.0, 0.0], [0.0, -2.0]])], 0.2, 0.5) == []


@pytest.mark.parametrize("family, scaled", [("gpt2", True), ("llama", True), ("gemma3", True), ("gpt2", False)])
def test_kn_changes_only_selected_value_columns(family, scaled):
    """Only the selected neurons' value columns move, by lambda2 e(new) - lambda1 e(old): with the authors'
    scaling each embedding is normalised and scaled to that column's own norm."""
    lm = tiny.lm(family)
    d0 = lm.digest()
    hp = KNHparams(steps=6, lambda_old=1.0, lambda_new=8.0, scale_to_value_norm=scaled)
    edit = get_method("kn").compute(lm, [REQ], hp)
    assert lm.digest() == d0
    neurons = [tuple(n) for n in edit.diagnostics["neurons"]]
    assert neurons, "a fact on a random model still has neurons above 0.2 * max"
    ad = lm.adapter
    layers = sorted({l for l, _ in neurons})
    assert sorted(edit.patch.deltas) == sorted(ad.mlp_out_param_name(l) for l in layers)
    emb = lm.model.get_output_embeddings().weight
    old = target_ids(lm.tokenizer, "Paris")[0]
    new = target_ids(lm.tokenizer, "Rome")[0]
    if scaled:
        expected_col = 8.0 * emb[new] / emb[new].norm() - 1.0 * emb[old] / emb[old].norm()
    else:
        expected_col = 8.0 * emb[new] - 1.0 * emb[old]
    for l in layers:
        d = edit.patch.deltas[ad.mlp_out_param_name(l)]
        assert d.shape == ad._mlp_out_weight_raw(l).shape
        d_oi = d.T if ad.mlp_out_is_conv1d else d  # back to [d_model, d_mlp]
        cols = sorted(j for ll, j in neurons if ll == l)
        mask = torch.zeros_like(d_oi, dtype=torch.bool)
        mask[:, cols] = True
        assert torch.count_nonzero(d_oi[~mask]) == 0
        value_norms = ad.mlp_out_weight(l)[:, cols].norm(dim=0) if scaled else torch.ones(len(cols))
        torch.testing.assert_close(d_oi[:, cols], expected_col[:, None] * value_norms[None, :])
    with lm.scope(edit.patch):
        assert lm.digest() != d0
    assert lm.digest() == d0


def test_kn_uses_model_answer_without_target_true():
    lm = tiny.lm("gpt2")
    edit = get_method("kn").compute(lm, [Request("The {} is located in", "Eiffel Tower", "Rome")],
                                    KNHparams(steps=4, layers=(1,)))
    assert edit.diagnostics["answer_source"] == "model top-1"
    assert edit.diagnostics["layers_examined"] == [1]
    assert set(edit.diagnostics["layers_edited"]) <= {1}


def test_kn_paraphrases_refine(caplog):
    lm = tiny.lm("llama")
    hp = KNHparams(steps=4, refine_p=1.0)
    single = get_method("kn").compute(lm, [REQ], hp)
    refined = get_method("kn").compute(lm, [REQ], hp, paraphrases=["The Eiffel Tower stands in the city of",
                                                                    "Where is the Eiffel Tower? In"])
    assert refined.diagnostics["n_prompts"] == 3
    assert set(map(tuple, refined.diagnostics["neurons"])) <= set(map(tuple, single.diagnostics["neurons"]))


def test_kn_rejects_bad_input():
    lm = tiny.lm("gpt2")
    d0 = lm.digest()
    with pytest.raises(InputError, match="one fact at a time"):
        get_method("kn").compute(lm, [REQ, REQ], KNHparams(steps=2))
    with pytest.raises(InputError, match="out of range"):
        get_method("kn").compute(lm, [REQ], KNHparams(steps=2, layers=(5,)))
    with pytest.raises(InputError, match="adaptive_threshold"):
        load_hparams("kn", KNHparams, None, {"adaptive_threshold": 1.5})
    with pytest.raises(InputError, match="layers"):
        load_hparams("kn", KNHparams, None, {"layers": [-1]})
    assert lm.digest() == d0


@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_bundled_defaults_load(model):
    hp = load_hparams("kn", KNHparams, model)
    assert hp.steps >= 1
