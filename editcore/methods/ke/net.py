"""KnowledgeEditor's hyper-network (De Cao et al. 2021, §3; the shape of the authors' ``OneShotLearner``,
``LSTMConditioner`` and ``ConditionedParameter``), written for EditScope.

* **Condition**: the fact is read by a bidirectional LSTM over the model's input embeddings of the edit prompt
  followed by the new target; its two final states go through ``tanh(Linear)`` to a vector ``c``. (The paper
  also feeds the model's original prediction and trains a copy of the embedding table; here the table is the
  model's own, frozen: Gemma's has 168M entries.)
* **One head per edited weight** ``W`` (``[d_out, d_in]``): ``c -> tanh(weight-normed Linear) -> weight-normed
  Linear`` gives ``alpha``, ``beta`` (``d_out``), ``gamma``, ``zeta`` (``d_in``) and ``eta`` (a scalar), and

      dW = max_scale * sigmoid(eta) * (grad W ⊙ softmax(alpha) gamma^T + softmax(beta) zeta^T)

  — the gradient of the edit loss, gated element-wise by a rank-one mask, plus a rank-one shift; the sigmoid
  bounds the step. It is *added* to ``W`` (the sign is learned through ``gamma``).

Because ``grad W = sum_t delta_t u_t^T`` over tokens and ``grad W ⊙ a g^T = diag(a) grad W diag(g)``, the
update is kept as factors — ``(u_t ⊙ gamma, s a ⊙ delta_t)`` per token and ``(zeta, s softmax(beta))`` for the
shift — which MEND's batched post pass applies without forming a dense matrix (:meth:`Head.factors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ...text import prompt_ids, target_ids
from ..mend.hypernet import Target


class Conditioner(nn.Module):
    """``BiLSTM(embeddings) -> tanh(Linear)``: the fact as one vector."""

    def __init__(self, d_embed: int, hidden: int, d_cond: int):
        super().__init__()
        self.lstm = nn.LSTM(d_embed, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, d_cond)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb`` ``[T, d_embed]`` -> ``[d_cond]``."""
        _, (h, _) = self.lstm(emb[None].float())
        return torch.tanh(self.out(torch.cat([h[0, 0], h[1, 0]])))


class Head(nn.Module):
    """One edited weight's ``ConditionedParameter``."""

    def __init__(self, target: Target, d_cond: int, hidden: int, max_scale: float):
        super().__init__()
        self.d_in, self.d_out, self.max_scale = target.d_in, target.d_out, float(max_scale)
        self.mlp = nn.Sequential(weight_norm(nn.Linear(d_cond, hidden)), nn.Tanh(),
                                 weight_norm(nn.Linear(hidden, 2 * (self.d_in + self.d_out) + 1)))

    def gates(self, c: torch.Tensor):
        """``(scale, row gate softmax(alpha), column gate gamma, shift rows softmax(beta), shift columns zeta)``."""
        gamma, alpha, zeta, beta, eta = self.mlp(c).split([self.d_in, self.d_out, self.d_in, self.d_out, 1])
        return self.max_scale * torch.sigmoid(eta), alpha.softmax(-1), gamma, beta.softmax(-1), zeta

    def factors(self, c: torch.Tensor, u: torch.Tensor, d: torch.Tensor):
        """``(u~ [n+1, d_in], delta~ [n+1, d_out])`` with ``dW = sum_t delta~_t u~_t^T`` (the module docstring)."""
        s, a, g, b, h = self.gates(c)
        return torch.cat([u.float() * g, h[None]]), torch.cat([d.float() * (s * a), (s * b)[None]])


class KENet(nn.Module):
    """The conditioner, one head per edited weight, and the constraint's multiplier (training only)."""

    def __init__(self, targets: Sequence[Target], d_embed: int, lstm_hidden: int, d_cond: int, hidden: int,
                 max_scale: float, seed: int = 0):
        super().__init__()
        self.targets = tuple(targets)
        with torch.random.fork_rng(devices=[]):  # the same seed gives the same network, whoever ran before
            torch.manual_seed(seed)
            self.condition = Conditioner(d_embed, lstm_hidden, d_cond)
            self.heads = nn.ModuleList(Head(t, d_cond, hidden, max_scale) for t in self.targets)
        # KE trains with a Lagrangian, max over multiplier >= 0 of L_e + multiplier * (KL - margin).
        self.multiplier = nn.Parameter(torch.ones(()))

    def encode(self, lm, prompt: str, target: str) -> torch.Tensor:
        """The condition vector of one fact: the prompt's tokens as the model sees them, then the target's."""
        ids = prompt_ids(lm.tokenizer, prompt) + target_ids(lm.tokenizer, target)
        emb = lm.model.get_input_embeddings()
        with torch.no_grad():
            x = emb(torch.tensor(ids, device=emb.weight.device))
        return self.condition(x)

    def transform(self, lm):
        """The :data:`~editcore.methods.mend.training.Transform` of KE: each edit its own update."""
        def fn(factors, examples):
            out = []
            for f, ex in zip(factors, examples):
                c = self.encode(lm, ex.prompt, ex.target_new)
                out.append([head.factors(c, u, d) for head, (u, d) in zip(self.heads, f)])
            # The post pass adds -lr * sum delta~ u~^T; KE's update is +sum delta~ u~^T.
            return out, torch.full((len(self.targets),), -1.0, device=self.multiplier.device), list(range(len(out)))
        return fn
