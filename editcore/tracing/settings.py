"""What a causal trace is run with: noise samples, noise scale, the restoration window, the seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

KINDS = ("hidden", "mlp", "attn")  # residual stream (block output), MLP output, attention output
KIND_LABELS = {"hidden": "residual stream (block output)", "mlp": "MLP output", "attn": "attention output"}

# Meng et al. restore a window of 10 adjacent MLP / attention layers in GPT-2 XL's 48: a fifth of the depth.
# On an 18-layer model a 10-layer window would span most of the network, so the default keeps the paper's
# fraction of the depth instead (4 layers on Gemma-3-270M, 6 on SmolLM2-135M); ``window`` sets it directly.
PAPER_WINDOW, PAPER_LAYERS = 10, 48
PAPER_SAMPLES = 10


@dataclass(frozen=True)
class TraceSettings:
    """``samples``: noise draws averaged per restoration (the paper: 10; fewer keep a CPU trace interactive,
    and averages over facts average the noise further). ``noise``: the noise scale as a multiple of the
    embeddings' standard deviation (the paper: 3). ``window``: restored MLP / attention layers around each
    centre layer (0 = the paper's fraction of the depth). ``seed``: the noise draw. ``noise_corpus``: what
    the embedding standard deviation is measured on (see :mod:`editcore.tracing.noise`)."""

    samples: int = 3
    noise: float = 3.0
    window: int = 0
    seed: int = 1
    noise_corpus: str = "subjects"

    def validate(self) -> "TraceSettings":
        if not isinstance(self.samples, int) or not 1 <= self.samples <= 64:
            raise InputError("noise samples must be an integer between 1 and 64")
        if not 0.0 < float(self.noise) <= 100.0:
            raise InputError("the noise scale must be above 0 and at most 100 (times the embedding std)")
        if not isinstance(self.window, int) or not 0 <= self.window <= 1024:
            raise InputError("the restoration window must be an integer between 0 (auto) and 1024 layers")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError("the seed must be a non-negative integer")
        if not self.noise_corpus:
            raise InputError("the noise corpus is empty")
        return self

    def window_for(self, n_layers: int) -> int:
        """The restoration window on a model of ``n_layers`` layers."""
        if self.window:
            return min(self.window, n_layers)
        return max(1, min(n_layers, round(PAPER_WINDOW * n_layers / PAPER_LAYERS)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TraceSettings":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown trace setting(s): {', '.join(sorted(unknown))}")
        try:
            out = cls(**{k: (type(getattr(cls, k))(v) if k != "noise_corpus" else str(v)) for k, v in d.items()})
        except (TypeError, ValueError):
            raise InputError(f"invalid trace settings: {d}") from None
        return out.validate()


def window_range(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Layers ``[lo, hi)`` restored around centre ``layer`` (the paper's rule; clipped at the model's ends)."""
    return max(0, layer - window // 2), min(n_layers, layer - (-window // 2))
