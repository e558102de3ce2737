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


def test_chunked_unembedding_gradient_equals_plain_autograd():
    """The unembedding's custom backward (per-chunk products, for speed) gives the plain matmul's gradient,
    including a vocabulary that is not a multiple of the chunk."""
    from editcore.models.arch import _Unembed, chunked_matmul, vocab_matmul

    torch.manual_seed(0)
    w = torch.randn(10_000, 24)
    g = torch.randn(5, 10_000)
    for chunk in (1000, 3000, 4096, 20_000):
        assert torch.allclose(chunked_matmul(g, w, chunk), g @ w, rtol=1e-4, atol=1e-3)
        for rows in (1, 5):
            assert torch.allclose(vocab_matmul(w, g[:rows, :24], chunk), g[:rows, :24] @ w.T, atol=1e-4)
    h = torch.randn(5, 24, requires_grad=True)
    target = torch.randint(0, 10_000, (5,))
    torch.nn.functional.cross_entropy(_Unembed.apply(h, w), target).backward()
    fast = h.grad.clone()
    h.grad = None
    torch.nn.functional.cross_entropy(h @ w.T, target).backward()
    assert torch.allclose(fast, h.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_small_batch_linear_equals_the_plain_one(bias):
    """The loaded models' Linear layers compute 2-8 rows without autograd as (W x^T)^T (decoding speed): the
    same values as F.linear for every row count and shape, and the plain path (with a gradient) otherwise."""
    from editcore.models.arch import SMALL_BATCH_ROWS, use_small_batch_linears

    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 40, bias=bias)
    assert use_small_batch_linears(torch.nn.Sequential(layer)) == 1 and "forward" in layer.__dict__
    for shape in ((1, 48), (3, 48), (8, 48), (9, 48), (2, 3, 48), (4, 1, 48), (5, 2, 48)):
        x = torch.randn(*shape)
        with torch.no_grad():
            got = layer(x)
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        assert got.shape == want.shape and got.is_contiguous()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), shape
    x = torch.randn(SMALL_BATCH_ROWS[1], 48, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand_as(x))


def test_loaded_models_use_the_small_batch_linear():
    """Every plain Linear of a handle's model gets it; weights and state dict keys stay as they were."""
    lm = tiny.lm("llama")
    linears = [m for m in lm.model.modules() if type(m) is torch.nn.Linear]
    assert linears and all("forward" in m.__dict__ for m in linears)
    assert not any(".forward" in k for k in lm.model.state_dict())


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


@pytest.mark.parametrize("bias,softcap", [(False, None), (True, None), (False, 30.0)])
def test_label_log_probs_equal_autograd_on_log_softmax(bias, softcap):
    """The value optimisation's fused log-probabilities (label rows + full KL rows, hand-written gradient)
    give log_softmax's values and autograd's gradient, with a bias, a logit soft-cap and a vocabulary that is
    not a multiple of the chunk; the label rows' argmax comes along on request."""
    from editcore.models.arch import _LabelLogProbs

    torch.manual_seed(0)
    w = torch.randn(5000, 16, dtype=torch.float64)
    b = torch.randn(5000, dtype=torch.float64) if bias else None
    labels = torch.tensor([3, 4999, 1024, 3])
    g_tok, g_full = torch.randn(4, dtype=torch.float64), torch.randn(5, 5000, dtype=torch.float64)
    for rows in (4, 6, 9):  # both layouts of vocab_matmul (up to 5 rows, more than 5)
        h = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
        tok, full, top = _LabelLogProbs.apply(h, w, b, softcap, labels, True)
        ((tok * g_tok).sum() + (full * g_full[:rows - 4]).sum()).backward()
        fast, h.grad = h.grad.clone(), None
        x = h @ w.T + (b if bias else 0)
        if softcap:
            x = torch.tanh(x / softcap) * softcap
        logp = torch.log_softmax(x, dim=-1)
        want_tok = logp[:4].gather(1, labels[:, None])[:, 0]
        assert torch.allclose(tok, want_tok) and torch.allclose(full, logp[4:])
        assert torch.equal(top, logp[:4].argmax(-1))
        ((want_tok * g_tok).sum() + (logp[4:] * g_full[:rows - 4]).sum()).backward()
        assert torch.allclose(fast, h.grad)
    assert _LabelLogProbs.apply(h, w, b, softcap, labels, False)[2].numel() == 0


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_reorder_linear_weight") or not torch.backends.mkldnn.is_available(),
                    reason="this torch build has no oneDNN")
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linears_equal_the_plain_ones(bias, monkeypatch):
    """Inside packed_linears a loaded model's frozen Linear layers compute through oneDNN's blocked weights:
    the same outputs and input gradients as F.linear; a weight written in place is packed again; outside the
    block nothing is left behind; a Linear that trains is left alone; over the memory limit nothing is packed
    (and the outdated copy is dropped)."""
    from editcore.models import arch
    from editcore.models.arch import packed_linears, use_small_batch_linears

    monkeypatch.setattr(arch, "PACKED_LIMIT_MB", 1e9)

    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 40, bias=bias).requires_grad_(False)
    other = torch.nn.Linear(48, 40)  # trainable: never packed
    use_small_batch_linears(torch.nn.Sequential(layer, other))

    def check():
        for shape in ((5, 48), (3, 7, 48)):
            x = torch.randn(*shape, requires_grad=True)
            y = layer(x)
            (y * torch.arange(40.0)).sum().backward()
            want = torch.nn.functional.linear(x.detach(), layer.weight, layer.bias)
            assert torch.allclose(y, want, rtol=1e-5, atol=1e-5)
            assert torch.allclose(x.grad, (torch.arange(40.0) @ layer.weight).expand_as(x), rtol=1e-5, atol=1e-5)

    with packed_linears([torch.nn.Sequential(layer, other)]) as n:
        assert n == 1 and "_packed" in layer.__dict__ and "_packed" not in other.__dict__
        check()
        with torch.no_grad():
            layer.weight.mul_(-2)
    assert "_packed" not in layer.__dict__
    with packed_linears([layer]):
        check()  # the in-place change was seen: packed again
    with torch.no_grad():
        layer.weight.add_(1)
    monkeypatch.setattr(arch, "PACKED_LIMIT_MB", 0)
    with packed_linears([layer]) as n:
        assert n == 0 and "_packed" not in layer.__dict__ and layer not in arch._PACKED
        check()
