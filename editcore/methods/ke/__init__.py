"""KE (De Cao et al. 2021, "Editing Factual Knowledge in Language Models", KnowledgeEditor): a hyper-network
conditioned on the fact maps the fine-tuning gradient of chosen weights to a constrained update.

* :mod:`.net` — the condition LSTM and one gating head per edited weight;
* :mod:`.method` — the training (a Lagrangian with a learned multiplier) and ``compute``.

Data, gradient factors, the training loop and the artefacts are MEND's (:mod:`editcore.methods.mend`).
"""

from .method import KE, METHOD, KETrainHparams

__all__ = ["KE", "METHOD", "KETrainHparams"]
