"""Architecture adapters: the one place that knows where a model family keeps its parts.

Methods and metrics ask for canonical slots ("the MLP output projection of layer 7") and never spell a
module path themselves. A layout is chosen by the config's ``model_type`` and then *checked against the
loaded model*, so a renamed module fails here with a clear message instead of deep inside ROME.
"""

from __future__ import annotations

import contextlib
import os
import types
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Layout:
    families: tuple[str, ...]
    blocks: str  # ModuleList of transformer blocks
    mlp: str  # relative to a block
    mlp_in: tuple[str, ...]  # relative to a block; (gate, up) for gated MLPs
    mlp_out: str  # relative to a block; its *input* is the MLP key ROME edits
    attn_out: str  # relative to a block
    final_norm: str
    embed: str
    gated: bool


LAYOUTS = (
    Layout(("gpt2",), "transformer.h", "mlp", ("mlp.c_fc",), "mlp.c_proj", "attn.c_proj",
           "transformer.ln_f", "transformer.wte", gated=False),
    Layout(("gptj",), "transformer.h", "mlp", ("mlp.fc_in",), "mlp.fc_out", "attn.out_proj",
           "transformer.ln_f", "transformer.wte", gated=False),
    Layout(("gpt_neox",), "gpt_neox.layers", "mlp", ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h",
           "attention.dense", "gpt_neox.final_layer_norm", "gpt_neox.embed_in", gated=False),
    Layout(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text"),
           "model.layers", "mlp", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "self_attn.o_proj",
           "model.norm", "model.embed_tokens", gated=True),
)

SUPPORTED_FAMILIES = tuple(f for layout in LAYOUTS for f in layout.families)


def _is_conv1d(module: nn.Module) -> bool:
    # GPT-2's Conv1D stores its weight as [in, out], the transpose of nn.Linear.
    return type(module).__name__ == "Conv1D"


class ArchAdapter:
    """Canonical access to blocks, MLP projections, norms and the unembedding of one loaded model."""

    def __init__(self, model: nn.Module):
        self.model = model
        config = model.config
        self.family = getattr(config, "model_type", type(model).__name__)
        layout = next((lay for lay in LAYOUTS if self.family in lay.families), None)
        if layout is None:
            raise UnsupportedArchitectureError(
                f"no adapter for architecture {self.family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}"
            )
        self.layout = layout
        try:
            blocks = model.get_submodule(layout.blocks)
            for i, block in enumerate(blocks):
                for rel in (layout.mlp, layout.mlp_out, layout.attn_out, *layout.mlp_in):
                    block.get_submodule(rel)
            model.get_submodule(layout.final_norm)
            model.get_submodule(layout.embed)
        except AttributeError as exc:
            raise UnsupportedArchitectureError(
                f"model of type {self.family!r} does not have the expected modules ({exc})"
            ) from None
        if model.get_output_embeddings() is None:
            raise UnsupportedArchitectureError(f"model of type {self.family!r} has no output embedding")
        self._blocks = blocks
        self.n_layers = len(blocks)
        w = self._mlp_out_weight_raw(0)
        self.mlp_out_is_conv1d = _is_conv1d(self.module("mlp_out", 0))
        self.d_model, self.d_mlp = (w.shape[1], w.shape[0]) if self.mlp_out_is_conv1d else tuple(w.shape)
        self.gated = layout.gated
        self.softcap = getattr(config, "final_logit_softcapping", None)

    # ---- names and modules -------------------------------------------------------------------
    def module_name(self, slot: str, layer: int | None = None) -> str:
        """Dotted name of a slot: block, mlp, mlp_out, mlp_in (first input projection), attn_out,
        final_norm, embed, unembed."""
        lay = self.layout
        if slot in ("final_norm", "embed"):
            return getattr(lay, slot)
        if slot == "unembed":
            out = self.model.get_output_embeddings()
            return next(n for n, m in self.model.named_modules() if m is out)
        if layer is None:
            raise ValueError(f"slot {slot!r} needs a layer")
        self.check_layer(layer)
        rel = {"block": None, "mlp": lay.mlp, "mlp_out": lay.mlp_out, "attn_out": lay.attn_out,
               "mlp_in": lay.mlp_in[0], "mlp_gate": lay.mlp_in[0] if lay.gated else None,
               "mlp_up": lay.mlp_in[-1]}[slot]
        base = f"{lay.blocks}.{layer}"
        return base if rel is None else f"{base}.{rel}"

    def module(self, slot: str, layer: int | None = None) -> nn.Module:
        return self.model.get_submodule(self.module_name(slot, layer))

    def block(self, layer: int) -> nn.Module:
        return self._blocks[layer]

    def post_mlp_norm(self, layer: int) -> nn.Module | None:
        """The norm applied to the MLP output *before* it joins the residual stream (Gemma 2/3's
        ``post_feedforward_layernorm``), or ``None`` for the usual pre-norm blocks. MEMIT needs it: a change
        of the projection's output is not a change of the residual when a norm sits in between."""
        return getattr(self.block(layer), "post_feedforward_layernorm", None)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < len(self._blocks):
            from ..errors import InputError

            raise InputError(f"layer {layer!r} is out of range: this model has layers 0..{len(self._blocks) - 1}")
        return layer

    # ---- the MLP output projection, always seen as [d_model(out), d_mlp(in)] ------------------
    def mlp_out_param_name(self, layer: int) -> str:
        return self.module_name("mlp_out", layer) + ".weight"

    def _mlp_out_weight_raw(self, layer: int) -> torch.Tensor:
        return self.model.get_submodule(f"{self.layout.blocks}.{layer}.{self.layout.mlp_out}").weight

    def mlp_out_weight(self, layer: int) -> torch.Tensor:
        """The projection's weight as ``[d_model, d_mlp]`` (a view, not a copy)."""
        w = self._mlp_out_weight_raw(layer)
        return w.T if self.mlp_out_is_conv1d else w

    def to_param_layout(self, delta_out_in: torch.Tensor) -> torch.Tensor:
        """Turn a ``[d_model, d_mlp]`` update into the layout the parameter is stored in."""
        return delta_out_in.T.contiguous() if self.mlp_out_is_conv1d else delta_out_in

    # ---- readout -----------------------------------------------------------------------------
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from *final-normed* hidden states (what ``model.base_model`` returns)."""
        head = self.model.get_output_embeddings()
        if isinstance(head, nn.Linear) and hidden.dim() == 2:
            w = head.weight
            h = hidden.to(w.dtype)
            if torch.is_grad_enabled() and h.requires_grad and not w.requires_grad:
                out = _Unembed.apply(h, w)
            else:
                out = vocab_matmul(w, h)
            if head.bias is not None:
                out = out + head.bias
        else:
            out = head(hidden)
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

    def label_log_probs(self, hidden: torch.Tensor, labels: torch.Tensor, want_top: bool = False,
                        fused: bool = True):
        """Log-probabilities from *final-normed* hidden states ``[n, d]``: ``(log p(labels[i]) for the first
        len(labels) rows, full log-probability rows [n - len(labels), V] for the rest, the first rows' argmax
        or an empty tensor)``, in at least float32, with a fast gradient (:class:`_LabelLogProbs`) to
        ``hidden`` unless ``fused`` is off (then autograd's, through :meth:`logits`)."""
        head = self.model.get_output_embeddings()
        frozen = isinstance(head, nn.Linear) and not head.weight.requires_grad and (
            head.bias is None or not head.bias.requires_grad)
        if fused and frozen and hidden.dim() == 2:
            return _LabelLogProbs.apply(hidden, head.weight, head.bias, self.softcap, labels, want_top)
        logp = torch.log_softmax(self.logits(hidden).float(), dim=-1)
        m = labels.numel()
        top = logp[:m].argmax(-1) if want_top else labels.new_empty(0)
        return logp[:m].gather(1, labels[:, None])[:, 0], logp[m:], top

    def describe(self) -> dict:
        return {
            "family": self.family,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "gated_mlp": self.gated,
            "post_mlp_norm": self.post_mlp_norm(0) is not None,
            "mlp_out": self.module_name("mlp_out", 0).replace(".0.", ".{i}."),
        }


_CHUNK = 4096


class _Unembed(torch.autograd.Function):
    """``h W^T`` for a few rows against a large frozen vocabulary matrix ``W`` ``[V, d]``, with a faster backward.

    The gradient ``g W`` (``[n, V] @ [V, d]``) reduces over the whole vocabulary; CPU BLAS runs that shape
    slowly for a handful of rows (Gemma-3-270M, 7 rows: 142 ms, versus 53 ms to read ``W`` once for the
    forward). Summing per-chunk products ``g[:, chunk] @ W[chunk]`` with one batched matmul gives the same
    value (only the order of the float32 additions differs) in ~48 ms. ``W`` gets no gradient (the caller
    checks it is frozen); the ROME/MEMIT value optimisation runs this twice per step.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return vocab_matmul(w, h)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (w,) = ctx.saved_tensors
        return chunked_matmul(g, w), None


class _LabelLogProbs(torch.autograd.Function):
    """Log-probabilities from final-normed hidden states ``[n, d]`` for the ROME/MEMIT value optimisation: the
    first ``len(labels)`` rows give their label's log-probability only, the other rows their whole
    distribution (the KL rows); optionally also the label rows' argmax.

    The values of ``log_softmax`` + ``gather`` + slicing, with the gradient written out: autograd's graph for
    those fills and copies several ``[n, V]`` tensors per backward (gather's and slicing's gradients start
    from zeros, ~20 ms each for Gemma's 262k vocabulary and 88 rows), while here it is one pass, ``g (onehot -
    p)`` on a label row and ``g - p sum(g)`` on a full row (times ``1 - tanh^2`` under a logit soft-cap)."""

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


SMALL_BATCH_ROWS = (2, 8)


def _small_batch_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward``, computed as ``(W x^T)^T`` when 2-8 rows reach it on CPU without autograd.

    Greedy decoding feeds each layer a few rows at a time, and CPU BLAS runs ``x W^T`` poorly for those:
    Gemma-3-270M's 126 block projections with 3 rows took 58 ms as ``x W^T`` and 20 ms as ``(W x^T)^T``
    (2 cores; the same products, only the order of the float32 additions differs). One row takes BLAS's
    matrix-vector path either way, and from a few dozen rows on ``x W^T`` is as fast or faster."""
    packed = self.__dict__.get("_packed")
    if packed is not None and x.dtype == packed[0].dtype and x.device.type == "cpu":
        return _PackedLinear.apply(x, self.bias, packed[0], packed[1])
    m = x.numel() // x.shape[-1] if x.dim() else 0
    if SMALL_BATCH_ROWS[0] <= m <= SMALL_BATCH_ROWS[1] and x.device.type == "cpu" and not torch.is_grad_enabled():
        y = (self.weight @ x.reshape(m, x.shape[-1]).T).T.contiguous()
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], y.shape[-1])
    return nn.functional.linear(x, self.weight, self.bias)


def use_small_batch_linears(model: nn.Module) -> int:
    """Give every plain ``nn.Linear`` of ``model`` :func:`_small_batch_linear` as its forward (an instance
    attribute: parameters, state dict and hooks are untouched). Returns how many were switched."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_small_batch_linear, module)
            n += 1
    return n


class _PackedLinear(torch.autograd.Function):
    """``F.linear`` through oneDNN with the weight (and its transpose, for the input's gradient) reordered into
    oneDNN's blocked layout once; see :func:`packed_linears`. The weight and bias get no gradient."""

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


# Packed copies are made only while twice the model's parameters plus the copies take at most this many MB:
# the memory target is 3 GB per model, the runtime takes ~0.4 GB, and the methods' own working memory is
# about the model's size again (Gemma-3-270M: 1.0 GB of parameters, 1.2 GB more for KN or MEMIT).
PACKED_LIMIT_MB = float(os.environ.get("EDITSCOPE_PACKED_MB", 2000))


# Packed weights of the Linear layers used by replays, per module: {module: (content id, packed, packed^T)}.
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _can_pack(module: nn.Module) -> bool:
    if type(module) is not nn.Linear or "forward" not in module.__dict__:
        return False
    w = module.weight
    return (w.device.type == "cpu" and w.dtype == torch.float32 and not w.requires_grad
            and (module.bias is None or not module.bias.requires_grad)
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and torch.backends.mkldnn.is_available())


@contextlib.contextmanager
def packed_linears(modules, model_mb: float = 0.0):
    """Inside the ``with``, the frozen float32 Linear layers among ``modules`` (and their children) compute
    with weights reordered into oneDNN's blocked layout, forward and backward (to the input).

    The value optimisation runs the same few dozen rows through the blocks above the edited layer, forward and
    backward, ten or more times; CPU BLAS streams each weight from memory for those small products at ~70-120
    GFLOP/s on this machine, the blocked layout at ~145-160 (SmolLM2, 48 rows: a replayed step 0.24 -> 0.19 s).
    The same products, summed in another order (differences at float32 rounding). Reordering costs about a
    copy of the weights (0.4-0.5 s for the replayed blocks of the bundled models), so the reordered weights
    are kept per module while its weight is unchanged (:func:`editcore.scope.content_id`; a restored model
    has its old ids back), which costs memory: twice the replayed blocks' Linear weights (SmolLM2 ~0.7 GB,
    Gemma-3-270M ~0.55 GB). They are made only while twice ``model_mb`` (the model's parameters) plus the
    copies of ``modules`` stay within ``PACKED_LIMIT_MB`` (``EDITSCOPE_PACKED_MB``, default 2000; 0 turns them
    off), so a model's peak stays under 3 GB: SmolLM2-135M (2 x 0.51 + 0.71 GB) has them, Gemma-3-270M (2 x
    1.0 GB) not; with them, its KN and MEMIT passes peaked at 3.4 and 3.2 GB. Does nothing off CPU, for other
    dtypes or without oneDNN."""
    from ..scope import content_id

    touched = []
    try:
        ids = {m: content_id(m.weight) for block in modules for m in block.modules() if _can_pack(m)}
        stale = [m for m, cid in ids.items() if _PACKED.get(m, (None,))[0] != cid]
        packed_mb = sum(2 * m.weight.numel() * m.weight.element_size() for m in ids) / 2**20
        if stale and 2 * model_mb + packed_mb > PACKED_LIMIT_MB:
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


def vocab_matmul(w: torch.Tensor, h: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``h @ w.T`` as a contiguous ``[n, V]`` tensor for a large vocabulary matrix ``w`` ``[V, d]``: the same
    products, computed per block of ``chunk`` vocabulary rows in one batched matmul on CPU.

    CPU BLAS runs the plain shapes poorly for most row counts, and which batched layout is faster depends
    on ``n``; measured on Gemma-3-270M's 262k x 640 matrix (2 cores), milliseconds for n = 4 / 10 / 13 / 88
    rows: ``h @ w.T`` 200+ for 3-7 rows, 120-340 otherwise; blocks of ``w`` times ``h^T`` 26 / 88 / 103 / 243
    (its ``[V, n]`` result is the transpose of what is wanted); ``h`` times blocks of ``w^T`` 36 / 52 / 60 /
    240 including the copy into ``[n, V]``. A contiguous result also matters downstream: ``log_softmax``
    over 88 rows of a transposed view took 115 ms, over contiguous rows 32 ms."""
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


def chunked_matmul(g: torch.Tensor, w: torch.Tensor, chunk: int = _CHUNK) -> torch.Tensor:
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
