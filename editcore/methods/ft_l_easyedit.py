"""FT-L as EasyEdit runs it (``easyeditor/models/ft``, ``objective_optimization: prompt_last``), the FT-L of
Yao et al. 2023, Gu et al. 2024, Zhang et al. 2024 and the survey's experiments (Hsueh et al. 2024): one MLP
layer's output projection, every target token scored at the prompt's last position, Adam for 25 steps at
5e-4, stop when the loss falls below 1e-2, and *no* norm constraint (EasyEdit's GPT-J and LLaMA configurations
set ``norm_constraint: false``; only its GPT-2 XL file keeps ROME's 5e-4). ROME's L∞-constrained FT-L is
``ft_l``. Training is :func:`editcore.methods.ft.finetune`; only the defaults differ.
"""

from dataclasses import dataclass

from .base import MethodInfo, hparam
from .ft import FT, OBJECTIVES, FTHparams


@dataclass(frozen=True)
class EasyEditFTLHparams(FTHparams):
    objective: str = hparam("prompt_last", choices=OBJECTIVES,
                            help="prompt_last: every target token at the prompt's last position (EasyEdit's FT-L); "
                                 "teacher_forced: EasyEdit's FT-M")
    stop_at_top1: bool = hparam(False, choices=(False, True),
                                help="stop once every target token is the model's top-1 prediction (not EasyEdit's)")


METHOD = FT("ft_l_easyedit", False, MethodInfo(
    title="FT-L (EasyEdit)", category="fine-tuning",
    reference="EasyEdit's FT-L (Wang et al. 2024; as run by Yao et al. 2023 and Gu et al. 2024), after Zhu et al. 2020",
    summary="Fine-tunes one MLP layer so that the prompt's last position predicts the new target's tokens, "
            "with no constraint on the weight change: the FT-L of EasyEdit-based papers and of the survey's "
            "tables. ROME's FT-L, with an L∞ bound, is `ft_l`.",
    adaptation="targets are tokenised with a leading space and no special tokens (EasyEdit's tokenizer call adds "
               "a <bos> to LLaMA/Gemma targets)"), EasyEditFTLHparams, always_adapted=True)
