"""Architecture adapters: the one place that knows where a model family keeps its parts.

Methods and metrics ask for canonical slots ("the MLP output projection of layer 7") and never spell a
module path themselves. A layout is chosen by the config's ``model_type`` and then *checked against the
loaded model*, so a renamed module fails here with a clear message instead of deep inside ROME.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, UnsupportedArchitectureError
from .kernels import LabelLogProbs, Unembed, vocab_matmul


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
                out = Unembed.apply(h, w)
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
        or an empty tensor)``, in at least float32, with a fast gradient (:class:`~editcore.models.kernels.LabelLogProbs`) to
        ``hidden`` unless ``fused`` is off (then autograd's, through :meth:`logits`)."""
        head = self.model.get_output_embeddings()
        frozen = isinstance(head, nn.Linear) and not head.weight.requires_grad and (
            head.bias is None or not head.bias.requires_grad)
        if fused and frozen and hidden.dim() == 2:
            return LabelLogProbs.apply(hidden, head.weight, head.bias, self.softcap, labels, want_top)
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
