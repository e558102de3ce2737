"""KE as an EditScope method: its training (the Lagrangian of the paper); ``compute`` is the shared one of
:class:`~editcore.methods.mend.trainable.HyperEditor`.

Training (De Cao et al. 2021, §3.2 and the authors' ``training_step``): for each edit the network's update is
applied and the loss is ``L_e + m (KL - margin)``, where ``L_e`` is the post-edit NLL of the new target on the
edit prompt and a paraphrase, ``KL`` that of the next-token distributions at unrelated prompts, and the
multiplier ``m >= 0`` is trained by gradient *ascent* (its gradient is negated, and it is projected back to
``>= 0`` after each step): a constrained problem, "change the fact, keep the rest within the margin", solved
as a saddle point. Both are optimised with centred RMSprop (the paper's optimiser). The margin starts at
``margin_kl`` and is multiplied by 0.8 (down to ``margin_kl_min``) at each curve point where the held-out
success exceeds 0.9, as the authors' validation hook does.

``compute`` reads the edit's gradient factors on the model as it is, encodes the fact, and returns the dense
update of every edited weight as a :class:`~editcore.scope.Patch`; one fact per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import MethodInfo, hparam
from ..mend.method import MendHparams
from ..mend.trainable import HyperEditor, TrainSettings
from ..mend.trainer import Trainer
from .net import KENet

TRAIN_VERSION = "1"


@dataclass(frozen=True)
class KETrainHparams(TrainSettings):
    batch_edits: int = hparam(4, lo=1, hi=256, help="edits per optimiser step (the paper: batches of 64)")
    lstm_hidden: int = hparam(128, lo=1, hi=4096, help="hidden size of each direction of the condition LSTM")
    d_cond: int = hparam(1024, lo=1, hi=8192, help="size of the condition vector (the paper: 1024)")
    hidden: int = hparam(128, lo=1, hi=4096, help="hidden size of each weight's head (the paper: 128)")
    max_scale: float = hparam(1.0, lo=0.0, hi=100.0, help="bound on the update's scale sigmoid(eta)")
    lr: float = hparam(3e-4, lo=1e-8, hi=1.0, help="RMSprop learning rate of the network (the paper: 3e-4)")
    lr_alpha: float = hparam(0.1, lo=0.0, hi=10.0, help="RMSprop learning rate of the multiplier (the paper: 0.1)")
    margin_kl: float = hparam(1e-3, lo=0.0, hi=10.0, help="initial KL margin of the constraint (the paper: 1e-3)")
    margin_kl_min: float = hparam(1e-5, lo=0.0, hi=10.0, help="smallest KL margin (the paper: 1e-5)")
    grad_clip: float = hparam(100.0, lo=0.0, hi=1e6, help="gradient-norm clip (the paper's code: none)")


class KETrainer(Trainer):
    kind = "ke"
    normalised = False

    def __init__(self, lm, thp, targets, data, name):
        super().__init__(lm, thp, targets, data, name)
        self.margin = float(thp.margin_kl)

    @staticmethod
    def build_net(targets, s, lm):
        return KENet(targets, lm.model.get_input_embeddings().weight.shape[1], s.lstm_hidden, s.d_cond, s.hidden,
                     s.max_scale, s.seed)

    def make_optimisers(self):
        self.net.multiplier.register_hook(lambda g: -g)  # ascent: the multiplier maximises the Lagrangian
        rest = [p for n, p in self.net.named_parameters() if n != "multiplier"]
        return {"opt": torch.optim.RMSprop(rest, lr=self.thp.lr, centered=True),
                "alpha_opt": torch.optim.RMSprop([self.net.multiplier], lr=self.thp.lr_alpha, centered=True)}

    def transform(self, learn_norm: bool = False):
        return self.net.transform(self.lm)

    @staticmethod
    def edit_transform(net, lm):
        return net.transform(lm)

    def loss(self, l_edit, l_loc):
        return l_edit.mean() + self.net.multiplier * (l_loc.mean() - self.margin)

    def after_step(self):
        with torch.no_grad():
            self.net.multiplier.clamp_(min=0.0)

    def after_point(self, point):
        if (point.get("success") or 0.0) > 0.9:
            self.margin = max(0.8 * self.margin, float(self.thp.margin_kl_min))

    def point_extras(self):
        return {"multiplier": float(self.net.multiplier.detach()), "margin": self.margin}

    def state(self):
        return {"margin": self.margin}

    def set_state(self, state):
        self.margin = float(state.get("margin", self.margin))


class KE(HyperEditor):
    name = "ke"
    version = "1"
    train_version = TRAIN_VERSION
    trainer = KETrainer
    info = MethodInfo(
        title="KE", category="meta-learning",
        reference="De Cao et al. 2021, Editing Factual Knowledge in Language Models (KnowledgeEditor)",
        summary="A hyper-network, trained once per model and conditioned on the fact (an LSTM reads the edit "
                "prompt and the new target), turns the fine-tuning gradient of the last MLP layers into a "
                "constrained update: the gradient is gated element-wise by a predicted rank-one mask, a rank-one "
                "shift is added, and a sigmoid bounds the step. Training is a constrained problem: make the "
                "edit and its paraphrase follow while the KL on unrelated prompts stays within a margin "
                "(a learned Lagrange multiplier). One fact per call; sequential edits stack like any weight "
                "edit, though KE was trained for single edits.",
        adaptation="Trained here on the shipped catalog (plus CounterFact and zsRE where present) for a CPU "
                   "budget: the last three MLP layers instead of every weight matrix, the model's own frozen "
                   "embeddings under the condition LSTM (the paper trains a copy), a condition of prompt and "
                   "new target without the model's original prediction, a few dozen steps of four edits "
                   "instead of 200k updates of 64, no learning-rate warm-up, gradient clipping at 100, and the "
                   "edited fact's own neighbourhood prompts added to the locality examples "
                   "(hparams/ke/train_<model>.json).")
    Hparams = MendHparams
    TrainHparams = KETrainHparams
    batched = False


METHOD = KE()


def bench_section(lm, facts, common) -> dict:
    """``make bench``: KE's training curve (from its artefact's report), or how to train one."""
    from ..mend.report import curve_section

    return curve_section(METHOD, lm)
