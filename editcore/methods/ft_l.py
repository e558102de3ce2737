"""FT-L: fine-tuning with an L-infinity constraint on the weight change; see :mod:`editcore.methods.ft`."""

from .base import MethodInfo
from .ft import FT

METHOD = FT("ft_l", True, MethodInfo(
    title="FT-L", category="fine-tuning",
    reference="Meng et al. 2022, after Zhu et al. 2020 (ROME's constrained fine-tuning baseline)",
    summary="Fine-tunes one MLP layer on the edit prompt with every weight change clamped to "
            "[-eps, eps] (an L-infinity constraint)."))
