"""FT-L as the ROME paper means it: fine-tuning with an L-infinity constraint on the weight change (see
:mod:`editcore.methods.ft`). EasyEdit's "FT-L" (no constraint, loss at the prompt's last token) is
:mod:`editcore.methods.ft_l_easyedit`."""

from .base import MethodInfo
from .ft import FT

METHOD = FT("ft_l", True, MethodInfo(
    title="FT-L (ROME, L∞)", category="fine-tuning",
    reference="Meng et al. 2022, after Zhu et al. 2020 (ROME's constrained fine-tuning baseline)",
    summary="Fine-tunes one MLP layer on the edit prompt with every weight change clamped to "
            "[-eps, eps] (an L-infinity constraint). Not EasyEdit's FT-L, which has no constraint "
            "(`ft_l_easyedit`).",
    adaptation="the fast preset trains teacher-forced and stops once the target is top-1; ROME's baseline scores "
               "every target token at the prompt's last position and stops on the loss only (preset 'reference')"))
