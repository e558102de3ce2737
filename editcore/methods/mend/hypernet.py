"""MEND's gradient network (Mitchell et al. 2022a, §3; the shape of the authors' ``GradientTransform`` and
``IDMLP``/``LRLinear``), written for EditScope.

For a weight ``W`` (``[d_out, d_in]``) of an edited MLP projection, the fine-tuning gradient of one example is
a sum of rank-one terms, one per token: ``grad W = sum_t delta_t u_t^T`` with ``u_t`` the layer's input and
``delta_t`` the gradient of the loss with respect to its output. MEND never forms that gradient. It maps each
pair ``(u_t, delta_t)`` to a new pair ``(u~_t, delta~_t)`` and edits ``W~ = W - alpha_l sum_t delta~_t u~_t^T``.

* **Normalisation**: each of ``u`` and ``delta`` is standardised per dimension with running means and standard
  deviations gathered over the training tokens (updated while training, frozen afterwards), so gradients of
  very different sizes reach the network on one scale.
* **Network**: ``z = [u_hat, delta_hat]`` goes through ``n_hidden + 1`` low-rank residual layers
  ``z <- z + relu(s_l * (U V z + b) + o_l)`` with ``U`` initialised to zero, so an untrained network is the
  identity and MEND starts as a normalised gradient step. ``relu`` is a clamp at zero, whose gradient at zero
  is one (the authors note why: at initialisation every pre-activation *is* zero, and a zero gradient there
  would never move ``U``).
* **Sharing**: one network per weight shape, shared by every edited layer of that shape; a learned scale ``s_l``
  and offset ``o_l`` per edited weight (the paper's layer-specific "mode" embeddings) tell them apart.
* **Learned step sizes** ``alpha_l``, one per edited weight, initialised to ``edit_lr``.

One departure of initialisation only: ``V`` is drawn with variance ``1/D`` (``D = d_in + d_out``) instead of
the code's unit variance, which lets a CPU-length training use a larger outer learning rate; an untrained
network is the identity either way.

MALMEN (Tan et al. 2024) uses the same network with the clamp before the scale and offset
(``z + s_l * relu(U V z + b) + o_l``, its ``MALMENBlock``): ``relu_first``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Target:
    """One edited weight: the parameter, its module, and its shape as a Linear sees it."""

    param: str  # e.g. "model.layers.15.mlp.down_proj.weight"
    module: str  # its module (where u and delta are read)
    layer: int
    d_in: int
    d_out: int
    transposed: bool  # stored as [d_in, d_out] (GPT-2's Conv1D), not [d_out, d_in]

    @property
    def shape_key(self) -> str:
        return f"in{self.d_in}_out{self.d_out}"


class RunningNorm(nn.Module):
    """Per-dimension running mean and standard deviation (Chan et al.'s parallel update, in float64)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        k = self.count.clone()
        total = k + n
        d = mean_b - self.mean
        self.mean += d * (n / total)
        self.m2 += m2_b + d * d * (k * n / total)
        self.count.fill_(float(total))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.count) < 2:
            raise RuntimeError("the normalisation has seen fewer than 2 tokens")
        std = (self.m2 / (self.count - 1)).sqrt()
        return (x - self.mean.to(x.dtype)) / (std.to(x.dtype) + 1e-7)


class LowRankResidual(nn.Module):
    """``z + clamp(s[mode] * (U V z + b) + o[mode], min=0)`` with ``U = 0`` at initialisation (``relu_first``:
    ``z + s[mode] * clamp(U V z + b, min=0) + o[mode]``)."""

    def __init__(self, dim: int, rank: int, n_modes: int, generator: torch.Generator, relu_first: bool = False):
        super().__init__()
        self.relu_first = relu_first
        mid = min(rank, dim)
        self.U = nn.Parameter(torch.zeros(dim, mid))
        self.V = nn.Parameter(torch.randn(mid, dim, generator=generator) / math.sqrt(dim))
        self.b = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))

    def forward(self, z: torch.Tensor, mode: int) -> torch.Tensor:
        pre = (z @ self.V.T) @ self.U.T + self.b
        if self.relu_first:
            return z + pre.clamp(min=0) * self.scale[mode] + self.shift[mode]
        return z + (pre * self.scale[mode] + self.shift[mode]).clamp(min=0)


class FactorNet(nn.Module):
    """The network of one weight shape: ``(u, delta) -> (u~, delta~)`` for ``[n, d_in]``, ``[n, d_out]``."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_hidden: int, n_modes: int, generator: torch.Generator,
                 relu_first: bool = False):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.norm_u = RunningNorm(d_in)
        self.norm_delta = RunningNorm(d_out)
        self.layers = nn.ModuleList(LowRankResidual(d_in + d_out, rank, n_modes, generator, relu_first)
                                    for _ in range(n_hidden + 1))

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int, learn_norm: bool = False):
        u, delta = u.float(), delta.float()
        if learn_norm:
            self.norm_u.update(u)
            self.norm_delta.update(delta)
        z = torch.cat([self.norm_u(u), self.norm_delta(delta)], dim=-1)
        for layer in self.layers:
            z = layer(z, mode)
        return z.split([self.d_in, self.d_out], dim=-1)


class MendNet(nn.Module):
    """Every edited weight's factor network (shared per shape) and learned step size."""

    def __init__(self, targets: Sequence[Target], rank: int, n_hidden: int, edit_lr: float, seed: int = 0,
                 relu_first: bool = False):
        super().__init__()
        self.targets = tuple(targets)
        g = torch.Generator().manual_seed(seed)
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(self.targets):
            groups.setdefault(t.shape_key, []).append(i)
        self.mode = {i: members.index(i) for members in groups.values() for i in members}
        first = {key: self.targets[members[0]] for key, members in groups.items()}
        self.nets = nn.ModuleDict({key: FactorNet(t.d_in, t.d_out, rank, n_hidden, len(groups[key]), g, relu_first)
                                   for key, t in first.items()})
        self.lrs = nn.Parameter(torch.full((len(self.targets),), float(edit_lr)))

    def factors(self, i: int, u: torch.Tensor, delta: torch.Tensor, learn_norm: bool = False):
        """``(u~, delta~)`` of target ``i`` for its token pairs ``u`` ``[n, d_in]``, ``delta`` ``[n, d_out]``."""
        t = self.targets[i]
        return self.nets[t.shape_key](u, delta, self.mode[i], learn_norm)

    def update(self, i: int, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The weight change ``-alpha_i sum_t delta~_t u~_t^T`` as ``[d_out, d_in]`` float32."""
        u_t, d_t = self.factors(i, u, delta)
        return -self.lrs[i] * (d_t.T @ u_t)


def nonzero_tokens(u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Flattened token pairs ``(u [n, d_in], delta [n, d_out])`` without the tokens whose input or output
    gradient is all zeros (padding, and positions after the last scored one): MEND skips them."""
    u = u.reshape(-1, u.shape[-1])
    delta = delta.reshape(-1, delta.shape[-1])
    keep = (u != 0).any(-1) & (delta != 0).any(-1)
    return u[keep], delta[keep]
