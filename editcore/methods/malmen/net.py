"""MALMEN's hyper-network and its least-squares aggregation (Tan et al. 2024, §4; the shape of the authors'
``MALMENNet`` and ``predict_param_shifts``), written for EditScope.

For an edited weight ``W`` (``[d_out, d_in]``) every edit contributes, at each position that predicts a token of
its target, a *key* ``k_t`` (the layer's input) and a *value gradient* ``g_t`` (the loss gradient at its
output). MEND's network (:class:`~editcore.methods.mend.hypernet.MendNet`, with MALMEN's block order) maps each
pair to ``(k~_t, g~_t)``, and the *value shift* the edit asks for at that key is

    s_t = -lr_l (k_t . k~_t) g~_t.

The shifts of all edits are then met at once by the one update that solves the ridge problem
``min_dW sum_t |dW k_t - s_t|^2 + exp(lambda_l) |dW|^2``, whose normal equation gives

    dW = S^T K (K^T K + exp(lambda_l) I)^-1 = S^T (K K^T + exp(lambda_l) I)^-1 K

(``K`` ``[n, d_in]`` the keys, ``S`` ``[n, d_out]`` the shifts; the second form, a system in the number of keys
rather than in ``d_in``, is used when there are fewer keys than dimensions: the same matrix). ``lambda_l`` is
learned per edited weight, as in the paper. The update is kept as factors ``(u~, s)`` with
``u~ = (K K^T + exp(lambda) I)^-1 K``, so the batched post pass applies it without a dense matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..mend.hypernet import MendNet, Target


def ridge_factors(keys: torch.Tensor, shifts: torch.Tensor, log_lambda: torch.Tensor):
    """``(u~ [n, d_in], shifts)`` with ``dW = shifts^T u~`` the ridge solution for ``keys`` ``[n, d_in]``."""
    n, d = keys.shape
    k = keys.double()
    lam = log_lambda.double().exp()
    if n <= d:
        u = torch.linalg.solve(k @ k.T + lam * torch.eye(n, dtype=k.dtype, device=k.device), k)
    else:
        u = torch.linalg.solve(k.T @ k + lam * torch.eye(d, dtype=k.dtype, device=k.device), k.T).T
    return u.to(keys.dtype), shifts


class MalmenNet(MendNet):
    """MEND's network with MALMEN's blocks (the clamp before the scale and offset), ``n_blocks`` of them, a
    learned step size and a learned ``log lambda`` per edited weight."""

    def __init__(self, targets: Sequence[Target], rank: int, n_blocks: int, edit_lr: float, seed: int = 0,
                 init_lambda: float = 1.0):
        super().__init__(targets, rank, n_blocks - 1, edit_lr, seed, relu_first=True)
        self.log_lambdas = nn.Parameter(torch.full((len(self.targets),), math.log(init_lambda)))

    def shifts(self, i: int, keys: torch.Tensor, grads: torch.Tensor, learn_norm: bool = False) -> torch.Tensor:
        """The value shifts ``s_t = -lr_i (k_t . k~_t) g~_t`` ``[n, d_out]`` of target ``i``."""
        k_t, g_t = self.factors(i, keys, grads, learn_norm)
        return -self.lrs[i] * (keys.float() * k_t).sum(-1, keepdim=True) * g_t

    def transform(self, learn_norm: bool = False):
        """The :data:`~editcore.methods.mend.training.Transform` of MALMEN: every edit of the call in one update."""
        def fn(factors, _examples):
            out = []
            for i in range(len(self.targets)):
                keys = torch.cat([f[i][0] for f in factors]).float()
                grads = torch.cat([f[i][1] for f in factors]).float()
                out.append(ridge_factors(keys, self.shifts(i, keys, grads, learn_norm), self.log_lambdas[i]))
            # The post pass adds -lr * sum s_t u~_t^T; the ridge update is +sum s_t u~_t^T.
            return [out], torch.full((len(self.targets),), -1.0, device=self.lrs.device), [0] * len(factors)
        return fn
