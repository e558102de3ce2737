"""CPU kernels: the same products as the plain torch calls, arranged for the shapes editing runs into.

Nothing here changes a result beyond the order of float32 additions; each kernel has a test against the
plain torch computation. Why they exist (figures in ``docs/performance.md``):

* the unembedding of a 262k-token vocabulary (Gemma) against a handful of rows is a shape CPU BLAS runs
  badly, so the product and its backward are computed per vocabulary block in one batched matmul
  (:func:`vocab_matmul`, :func:`chunked_matmul`, :class:`Unembed`);
* the value optimisation's log-probabilities get their gradient written out in one pass
  (:class:`LabelLogProbs`) instead of autograd's zero-filled copies of ``[rows, vocabulary]`` tensors;
* greedy decoding feeds each Linear layer 2-8 rows, where ``(W x^T)^T`` beats ``x W^T``
  (:func:`small_batch_linear`, installed by name through :func:`install`);
* the replayed blocks' Linear layers can run through oneDNN with their weights reordered once into its
  blocked layout (:func:`packed_linears`), at the price of a copy of those weights.
"""

from __future__ import annotations

import contextlib
import types
import weakref

import torch
from torch import nn

VOCAB_CHUNK = 4096  # vocabulary rows per block in the unembedding's backward


def vocab_matmul(w: torch.Tensor, h: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``h @ w.T`` as a contiguous ``[n, V]`` tensor for a large vocabulary matrix ``w`` ``[V, d]``, computed
    per block of ``chunk`` vocabulary rows in one batched matmul on CPU. Which batched layout is faster
    depends on the row count; a contiguous result also keeps the ``log_softmax`` that follows fast."""
    v, d = w.shape
    k = v // chunk
    n = h.shape[0]
    if k < 2 or w.device.type != "cpu":
        return h @ w.T
    full = k * chunk
    blocks = w[:full].view(k, chunk, d)
    if n <= 5:
        out = torch.bmm(blocks, h.T.expand(k, d, n)).reshape(full, n).T.contiguous()
    else:
        out = torch.bmm(h.expand(k, n, d), blocks.transpose(1, 2)).permute(1, 0, 2).reshape(n, full)
    if full < v:
        out = torch.cat([out, h @ w[full:].T], dim=1)
    return out


def chunked_matmul(g: torch.Tensor, w: torch.Tensor, chunk: int = VOCAB_CHUNK) -> torch.Tensor:
    """``g @ w`` for ``g`` ``[n, V]``, ``w`` ``[V, d]`` with a long ``V``, as a sum of per-chunk products."""
    n, v = g.shape
    k = v // chunk
    if k < 2 or g.device.type != "cpu":
        return g @ w
    full = k * chunk
    parts = torch.bmm(g[:, :full].reshape(n, k, chunk).transpose(0, 1), w[:full].view(k, chunk, w.shape[1]))
    out = parts.sum(0)
    if full < v:
        out = out + g[:, full:] @ w[full:]
    return out


class Unembed(torch.autograd.Function):
    """``h W^T`` for a few rows against a large frozen vocabulary matrix ``W`` ``[V, d]``, whose backward
    ``g W`` (a reduction over the whole vocabulary) is summed per vocabulary chunk. ``W`` gets no gradient;
    the caller checks it is frozen."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return vocab_matmul(w, h)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (w,) = ctx.saved_tensors
        return chunked_matmul(g, w), None


class LabelLogProbs(torch.autograd.Function):
    """Log-probabilities from final-normed hidden states ``[n, d]``: the first ``len(labels)`` rows give
    their label's log-probability only, the other rows their whole distribution (the value optimisation's
    KL rows); optionally also the label rows' argmax.

    The values of ``log_softmax`` + ``gather`` + slicing, with the gradient written out in one pass:
    ``g (onehot - p)`` on a label row and ``g - p sum(g)`` on a full row (times ``1 - tanh^2`` under a
    logit soft-cap). Autograd's graph for the same ops fills and copies several ``[n, V]`` tensors."""

    @staticmethod
    def forward(ctx, h, w, bias, softcap, labels, want_top):
        x = vocab_matmul(w, h.to(w.dtype))
        if x.dtype in (torch.float16, torch.bfloat16):  # log-probabilities in at least float32
            x = x.float()
        if bias is not None:
            x += bias.to(x.dtype)
        capped = None
        if softcap:
            capped = torch.tanh(x / softcap)
            x = capped * softcap
        logp = torch.log_softmax(x, dim=-1)
        m = labels.numel()
        top = logp[:m].argmax(-1) if want_top else labels.new_empty(0)
        ctx.mark_non_differentiable(top)
        ctx.save_for_backward(w, logp, labels, capped)
        ctx.h_dtype = h.dtype
        return logp[:m].gather(1, labels[:, None])[:, 0], logp[m:].clone(), top

    @staticmethod
    def backward(ctx, g_tok, g_full, _g_top):
        w, logp, labels, capped = ctx.saved_tensors
        m = labels.numel()
        coef = logp.new_zeros(logp.shape[0])
        if g_tok is not None:
            coef[:m] = -g_tok
        if g_full is not None:
            coef[m:] = -g_full.sum(-1)
        grad = logp.exp().mul_(coef[:, None])
        if g_tok is not None:
            grad[:m].scatter_add_(1, labels[:, None], g_tok[:, None])
        if g_full is not None:
            grad[m:] += g_full
        if capped is not None:
            grad.mul_(1 - capped * capped)
        return chunked_matmul(grad.to(w.dtype), w).to(ctx.h_dtype), None, None, None, None, None


# ---- Linear layers -----------------------------------------------------------------------------------
SMALL_BATCH_ROWS = (2, 8)


def small_batch_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward``, computed as ``(W x^T)^T`` when 2-8 rows reach it on CPU without autograd (greedy
    decoding), and through oneDNN's blocked weights inside :func:`packed_linears`. One row takes BLAS's
    matrix-vector path either way, and from a few dozen rows on ``x W^T`` is as fast or faster."""
    packed = self.__dict__.get("_packed")
    if packed is not None and x.dtype == packed[0].dtype and x.device.type == "cpu":
        return PackedLinear.apply(x, self.bias, packed[0], packed[1])
    m = x.numel() // x.shape[-1] if x.dim() else 0
    if SMALL_BATCH_ROWS[0] <= m <= SMALL_BATCH_ROWS[1] and x.device.type == "cpu" and not torch.is_grad_enabled():
        y = (self.weight @ x.reshape(m, x.shape[-1]).T).T.contiguous()
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], y.shape[-1])
    return nn.functional.linear(x, self.weight, self.bias)


def use_small_batch_linears(model: nn.Module) -> int:
    """Give every plain ``nn.Linear`` of ``model`` :func:`small_batch_linear` as its forward (an instance
    attribute: parameters, state dict and hooks are untouched). Returns how many were switched."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(small_batch_linear, module)
            n += 1
    return n


# Kernels a loaded model can be given, by name; ``LM`` installs DEFAULT_KERNELS.
KERNELS = {"small_batch_linear": use_small_batch_linears}
DEFAULT_KERNELS = ("small_batch_linear",)


def install(model: nn.Module, names=DEFAULT_KERNELS) -> tuple[str, ...]:
    """Install the named kernels on ``model``; returns the names of those that took effect."""
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernel {unknown[0]!r}; known: {', '.join(KERNELS)}")
    return tuple(n for n in names if KERNELS[n](model))


class PackedLinear(torch.autograd.Function):
    """``F.linear`` through oneDNN with the weight (and its transpose, for the input's gradient) in oneDNN's
    blocked layout; see :func:`packed_linears`. The weight and bias get no gradient."""

    @staticmethod
    def forward(ctx, x, bias, packed, packed_t):
        ctx.packed_t = packed_t
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        out = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, g):
        flat = g.reshape(-1, g.shape[-1])
        gx = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), ctx.packed_t, None, "none", [], "")
        return gx.view(*g.shape[:-1], gx.shape[-1]), None, None, None


# Packed weights of the Linear layers used by replays, per module: {module: (content id, packed, packed^T)}.
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _can_pack(module: nn.Module) -> bool:
    if type(module) is not nn.Linear or "forward" not in module.__dict__:
        return False
    w = module.weight
    return (w.device.type == "cpu" and w.dtype == torch.float32 and not w.requires_grad
            and (module.bias is None or not module.bias.requires_grad)
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and torch.backends.mkldnn.is_available())


def is_packed(module: nn.Module) -> bool:
    """Whether a reordered copy of ``module``'s weight is kept (for tests)."""
    return module in _PACKED


@contextlib.contextmanager
def packed_linears(modules, model_mb: float, limit_mb: float):
    """Inside the ``with``, the frozen float32 Linear layers among ``modules`` (and their children) compute
    forward and backward (to the input) with weights reordered into oneDNN's blocked layout.

    The value optimisation runs the same few dozen rows through the blocks above the edited layer ten or more
    times, and the blocked layout streams the weights faster than BLAS does for those shapes. Reordering
    costs about a copy of the weights, so the copies are kept per module while its weight is unchanged
    (:func:`editcore.scope.content_id`; a restored model has its old ids back). That costs memory: copies are
    made only while twice ``model_mb`` (the model's parameters, plus about as much working memory for the
    methods) and the copies fit in ``limit_mb``; otherwise outdated copies are dropped and the layers compute
    as usual. Does nothing off CPU, for other dtypes or without oneDNN."""
    from ..scope import content_id

    touched = []
    try:
        ids = {m: content_id(m.weight) for block in modules for m in block.modules() if _can_pack(m)}
        stale = [m for m, cid in ids.items() if _PACKED.get(m, (None,))[0] != cid]
        packed_mb = sum(2 * m.weight.numel() * m.weight.element_size() for m in ids) / 2**20
        if stale and 2 * model_mb + packed_mb > limit_mb:
            for m in stale:  # no room: those layers compute as usual, and their outdated copies go
                _PACKED.pop(m, None)
                del ids[m]
            stale = []
        for m in stale:
            w = m.weight.detach()
            _PACKED[m] = (ids[m], torch.ops.mkldnn._reorder_linear_weight(w, None),
                          torch.ops.mkldnn._reorder_linear_weight(w.T.contiguous(), None))
        for m in ids:
            m.__dict__["_packed"] = _PACKED[m][1:]
            touched.append(m)
        yield len(touched)
    finally:
        for m in touched:
            m.__dict__.pop("_packed", None)
