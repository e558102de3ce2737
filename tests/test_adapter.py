"""The architecture adapter finds the same canonical slots in every supported family."""

import pytest
import torch

import tiny
from editcore.errors import InputError, UnsupportedArchitectureError
from editcore.models.arch import ArchAdapter


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_slots_resolve_and_shapes_agree(family):
    model, _ = tiny.model(family)
    a = ArchAdapter(model)
    assert a.n_layers == 3
    assert a.d_model == 32
    for layer in range(a.n_layers):
        for slot in ("block", "mlp", "mlp_in", "mlp_out", "attn_out"):
            assert isinstance(a.module(slot, layer), torch.nn.Module)
        w = a.mlp_out_weight(layer)
        assert tuple(w.shape) == (a.d_model, a.d_mlp)
        param = dict(model.named_parameters())[a.mlp_out_param_name(layer)]
        assert a.to_param_layout(torch.zeros_like(w)).shape == param.shape
    assert a.module("unembed") is model.get_output_embeddings()
    assert a.gated == (family not in ("gpt2", "gptj", "gpt_neox"))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_mlp_out_input_is_the_key_and_weight_maps_it(family):
    """W (as [d_model, d_mlp]) applied to the captured key reproduces the projection's output."""
    model, tok = tiny.model(family)
    a = ArchAdapter(model)
    seen = {}
    mod = a.module("mlp_out", 1)
    h1 = mod.register_forward_pre_hook(lambda m, args: seen.__setitem__("k", args[0].detach()))
    h2 = mod.register_forward_hook(lambda m, args, out: seen.__setitem__("v", out.detach()))
    try:
        with torch.no_grad():
            model(**tok("The Louvre is in Paris", return_tensors="pt"))
    finally:
        h1.remove()
        h2.remove()
    k, v = seen["k"], seen["v"]
    assert k.shape[-1] == a.d_mlp
    bias = getattr(mod, "bias", None)
    expect = k @ a.mlp_out_weight(1).T + (bias if bias is not None else 0)
    assert torch.allclose(expect, v, atol=1e-5)


def test_logits_match_model_forward():
    lm = tiny.lm("gemma3")
    ids = lm.tokenizer("Big Ben stands", return_tensors="pt")
    with torch.no_grad():
        full = lm.model(**ids).logits[0, -1]
        h = lm.model.base_model(**ids).last_hidden_state[0, -1]
        assert torch.allclose(lm.adapter.logits(h), full, atol=1e-4)


def test_layer_out_of_range_is_a_user_error():
    a = ArchAdapter(tiny.model("gpt2")[0])
    with pytest.raises(InputError, match="out of range"):
        a.module("mlp_out", 7)


def test_unknown_architecture_is_named():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                       intermediate_size=32, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="bert"):
        ArchAdapter(model)
