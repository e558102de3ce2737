"""MALMEN as an EditScope method: its training; ``compute`` is the shared one of
:class:`~editcore.methods.mend.trainable.HyperEditor`, batched.

Training (Tan et al. 2024, §4.2 and the authors' ``BaseEditor.train``): each step draws ``batch_edits`` edits,
reads their keys and value gradients at the target's tokens (MALMEN's ``token: ans``), turns them into *one*
update by least squares (:mod:`.net`), and asks that every edit's paraphrase and prompt follow (the mean
post-edit NLL) while unrelated prompts keep their next-token distributions (KL, weight ``cloc``; the paper's
``loc_coef`` 1). The gradient reaches the network, the step sizes and ``lambda`` through the linear solve; the
paper splits that backward pass in two to save memory on billion-parameter models, autograd here computes the
same gradient. The curve edits the held-out facts *together*, in one update, as MALMEN is used.

``compute`` takes any number of requests and returns one update per edited weight (``make bench``: batches of
1, 10 and 100 held-out facts, :mod:`.bench`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import MethodInfo, hparam
from ..mend.method import MendHparams
from ..mend.trainable import HyperEditor, TrainSettings
from ..mend.trainer import Trainer
from .net import MalmenNet

TRAIN_VERSION = "1"


@dataclass(frozen=True)
class MalmenTrainHparams(TrainSettings):
    weights: str = hparam("mlp_out", choices=("mlp", "mlp_out"),
                          help="the output projection of those layers (the paper: fc_out), or every MLP one")
    batch_edits: int = hparam(8, lo=1, hi=1024, help="edits aggregated into one update per step")
    grad_clip: float = hparam(1.0, lo=0.0, hi=1e6, help="gradient-norm clip (the paper: 1)")
    rank: int = hparam(512, lo=1, hi=8192, help="rank of the network's low-rank layers (the paper: 1920)")
    n_blocks: int = hparam(2, lo=1, hi=5, help="low-rank residual blocks of the network (the paper: 2)")
    edit_lr: float = hparam(1e-4, lo=0.0, hi=10.0, help="initial step size of every edited weight")
    lr: float = hparam(1e-4, lo=1e-8, hi=1.0, help="Adam learning rate of the network (the paper: 1e-5)")
    lr_lr: float = hparam(1e-5, lo=0.0, hi=1.0, help="Adam learning rate of the step sizes")
    cedit: float = hparam(1.0, lo=0.0, hi=100.0, help="weight of the edit loss (the paper: 1)")
    cloc: float = hparam(1.0, lo=0.0, hi=100.0, help="weight of the locality KL (the paper's loc_coef: 1)")
    init_lambda: float = hparam(1.0, lo=1e-12, hi=1e6,
                                help="initial ridge term lambda of every edited weight (the paper: exp(0) = 1)")


class MalmenTrainer(Trainer):
    kind = "malmen"
    answer_only = True

    @staticmethod
    def build_net(targets, s, lm):
        return MalmenNet(targets, s.rank, s.n_blocks, s.edit_lr, s.seed, s.init_lambda)

    def make_optimisers(self):
        rest = [p for n, p in self.net.named_parameters() if n != "lrs"]
        return {"opt": torch.optim.Adam(rest, lr=self.thp.lr),
                "lr_opt": torch.optim.Adam([self.net.lrs], lr=self.thp.lr_lr)}

    def transform(self, learn_norm: bool = False):
        return self.net.transform(learn_norm)

    @staticmethod
    def edit_transform(net, lm):
        return net.transform()

    def point_extras(self):
        return {"lrs": [float(x) for x in self.net.lrs.detach()],
                "lambdas": [float(x) for x in self.net.log_lambdas.detach().exp()]}


class Malmen(HyperEditor):
    name = "malmen"
    version = "1"
    train_version = TRAIN_VERSION
    trainer = MalmenTrainer
    info = MethodInfo(
        title="MALMEN", category="meta-learning",
        reference="Tan et al. 2024, Massive Editing for Large Language Models via Meta Learning",
        summary="MEND's gradient factors, made for many edits at once: for every edit, the inputs (keys) and "
                "output gradients of the last MLP output projections at the new target's tokens go through a "
                "hyper-network trained once per model, which proposes a value shift per key; the shifts of all "
                "the edits of a call are then met together by one least-squares weight update (the normal "
                "equation, with a learned ridge term), so a hundred facts cost one update instead of a hundred "
                "that fight each other. Batched; sequential batches stack like any weight edit.",
        adaptation="Trained here on the shipped catalog (plus CounterFact and zsRE where present) for a CPU "
                   "budget: rank 512 instead of 1920, a few dozen steps of eight edits aggregated per update "
                   "instead of an epoch of batches of hundreds, a larger outer learning rate, separate step-size "
                   "learning rate, the edited fact's own neighbourhood prompts added to the locality examples, "
                   "and the least-squares gradient by autograd rather than the paper's memory-saving two-stage "
                   "backward (hparams/malmen/train_<model>.json).")
    Hparams = MendHparams
    TrainHparams = MalmenTrainHparams
    batched = True


METHOD = Malmen()
