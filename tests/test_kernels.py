"""CPU kernels (editcore.models.kernels): each equals the plain torch computation it replaces."""

import pytest
import torch

import tiny


def test_chunked_unembedding_gradient_equals_plain_autograd():
    """The unembedding's custom backward (per-chunk products, for speed) gives the plain matmul's gradient,
    including a vocabulary that is not a multiple of the chunk."""
    from editcore.models.kernels import Unembed, chunked_matmul, vocab_matmul

    torch.manual_seed(0)
    w = torch.randn(10_000, 24)
    g = torch.randn(5, 10_000)
    for chunk in (1000, 3000, 4096, 20_000):
        assert torch.allclose(chunked_matmul(g, w, chunk), g @ w, rtol=1e-4, atol=1e-3)
        for rows in (1, 5):
            assert torch.allclose(vocab_matmul(w, g[:rows, :24], chunk), g[:rows, :24] @ w.T, atol=1e-4)
    h = torch.randn(5, 24, requires_grad=True)
    target = torch.randint(0, 10_000, (5,))
    torch.nn.functional.cross_entropy(Unembed.apply(h, w), target).backward()
    fast = h.grad.clone()
    h.grad = None
    torch.nn.functional.cross_entropy(h @ w.T, target).backward()
    assert torch.allclose(fast, h.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_small_batch_linear_equals_the_plain_one(bias):
    """The loaded models' Linear layers compute 2-8 rows without autograd as (W x^T)^T (decoding speed): the
    same values as F.linear for every row count and shape, and the plain path (with a gradient) otherwise."""
    from editcore.models.kernels import SMALL_BATCH_ROWS, use_small_batch_linears

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
    assert lm.kernels == ("small_batch_linear",)
    linears = [m for m in lm.model.modules() if type(m) is torch.nn.Linear]
    assert linears and all("forward" in m.__dict__ for m in linears)
    assert not any(".forward" in k for k in lm.model.state_dict())


@pytest.mark.parametrize("bias,softcap", [(False, None), (True, None), (False, 30.0)])
def test_label_log_probs_equal_autograd_on_log_softmax(bias, softcap):
    """The value optimisation's fused log-probabilities (label rows + full KL rows, hand-written gradient)
    give log_softmax's values and autograd's gradient, with a bias, a logit soft-cap and a vocabulary that is
    not a multiple of the chunk; the label rows' argmax comes along on request."""
    from editcore.models.kernels import LabelLogProbs

    torch.manual_seed(0)
    w = torch.randn(5000, 16, dtype=torch.float64)
    b = torch.randn(5000, dtype=torch.float64) if bias else None
    labels = torch.tensor([3, 4999, 1024, 3])
    g_tok, g_full = torch.randn(4, dtype=torch.float64), torch.randn(5, 5000, dtype=torch.float64)
    for rows in (4, 6, 9):  # both layouts of vocab_matmul (up to 5 rows, more than 5)
        h = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
        tok, full, top = LabelLogProbs.apply(h, w, b, softcap, labels, True)
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
    assert LabelLogProbs.apply(h, w, b, softcap, labels, False)[2].numel() == 0


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_reorder_linear_weight") or not torch.backends.mkldnn.is_available(),
                    reason="this torch build has no oneDNN")
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linears_equal_the_plain_ones(bias):
    """Inside packed_linears a loaded model's frozen Linear layers compute through oneDNN's blocked weights:
    the same outputs and input gradients as F.linear; a weight written in place is packed again; outside the
    block nothing is left behind; a Linear that trains is left alone; over the memory limit nothing is packed
    (and the outdated copy is dropped)."""
    from editcore.models import kernels
    from editcore.models.kernels import packed_linears, use_small_batch_linears

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

    with packed_linears([torch.nn.Sequential(layer, other)], 0.0, 1e9) as n:
        assert n == 1 and "_packed" in layer.__dict__ and "_packed" not in other.__dict__
        check()
        with torch.no_grad():
            layer.weight.mul_(-2)
    assert "_packed" not in layer.__dict__
    with packed_linears([layer], 0.0, 1e9):
        check()  # the in-place change was seen: packed again
    with torch.no_grad():
        layer.weight.add_(1)
    with packed_linears([layer], 0.0, 0) as n:
        assert n == 0 and "_packed" not in layer.__dict__ and not kernels.is_packed(layer)
        check()


def test_unknown_kernel_is_named():
    from editcore.models.kernels import install

    with pytest.raises(ValueError, match="unknown kernel"):
        install(torch.nn.Linear(2, 2), ("no_such_kernel",))
