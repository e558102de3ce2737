"""MEND as an EditScope method: the trainable contract (:class:`editcore.methods.base.Trainable`) and
``compute``.

``compute`` reads the edit's gradient factors on the model as it is (inside the caller's scope, so sequential
edits see the earlier ones), maps them through the trained network and returns the dense weight change of each
edited MLP projection as a :class:`~editcore.scope.Patch`. The network is the one trained for this model's
fingerprint: with the shipped training settings (``hparams/mend/train_<model>.json``) if that artefact exists,
else the most recently trained one for the same model; with none, an :class:`InputError` names the command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..base import MethodInfo, hparam
from .trainable import HyperEditor, TrainSettings

log = logging.getLogger(__name__)

TRAIN_VERSION = "2"  # bump when training changes what an artefact holds (part of its key)


@dataclass(frozen=True)
class MendHparams:
    lr_scale: float = hparam(1.0, lo=0.0, hi=100.0,
                             help="multiplies the update (1 = the update the network was trained to make)")


@dataclass(frozen=True)
class MendTrainHparams(TrainSettings):
    batch_edits: int = hparam(10, lo=1, hi=256, help="edits whose gradients are accumulated per step (the paper: 10)")
    grad_clip: float = hparam(100.0, lo=0.0, hi=1e6, help="gradient-norm clip (the paper: 100)")
    rank: int = hparam(512, lo=1, hi=8192, help="rank of the network's low-rank layers (the paper: 1920)")
    n_hidden: int = hparam(1, lo=0, hi=4, help="hidden layers of the network (the paper: 1)")
    edit_lr: float = hparam(1e-4, lo=0.0, hi=10.0, help="initial step size of every edited weight (the paper: 1e-4)")
    lr: float = hparam(1e-4, lo=1e-8, hi=1.0, help="Adam learning rate of the network")
    lr_lr: float = hparam(1e-4, lo=0.0, hi=1.0, help="Adam learning rate of the step sizes (the paper: 1e-4)")
    cedit: float = hparam(0.1, lo=0.0, hi=100.0, help="weight of the edit loss (the paper: 0.1)")
    cloc: float = hparam(1.0, lo=0.0, hi=100.0, help="weight of the locality KL (the paper: 1)")


class Mend(HyperEditor):
    name = "mend"
    version = "1"
    needs_training = True
    info = MethodInfo(
        title="MEND", category="meta-learning",
        reference="Mitchell et al. 2022, Fast Model Editing at Scale",
        summary="A small hypernetwork, trained once per model, turns the fine-tuning gradient of the last "
                "MLP layers into a weight update in one step: each token's input and output-gradient pair (the "
                "gradient's rank-one factors) is normalised, mapped through low-rank residual layers and summed "
                "back into an update, with a learned step size per layer. Training asks that the edit and its "
                "paraphrases follow while the next-token distributions of unrelated prompts stay put (KL).",
        adaptation="Trained here on the shipped catalog (plus CounterFact and zsRE where present) for a CPU "
                   "budget: rank 512 instead of 1920, a few hundred steps of four edits with a larger outer "
                   "learning rate instead of tens of thousands, and the edited fact's own neighbourhood prompts "
                   "added to the locality examples (hparams/mend/train_<model>.json).")
    Hparams = MendHparams
    TrainHparams = MendTrainHparams
    train_version = TRAIN_VERSION
    batched = False


METHOD = Mend()
