"""MALMEN (Tan et al. 2024, "Massive Editing for Large Language Models via Meta Learning"): MEND-style
gradient factors mapped to value shifts, and the shifts of many edits aggregated into one weight update by
least squares.

* :mod:`.net` — MEND's network with MALMEN's blocks, and the least-squares aggregation;
* :mod:`.method` — the training and the batched ``compute``.

Data, gradient factors, the training loop and the artefacts are MEND's (:mod:`editcore.methods.mend`).
"""

from .method import METHOD, Malmen, MalmenTrainHparams

__all__ = ["METHOD", "Malmen", "MalmenTrainHparams"]
