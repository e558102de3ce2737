"""Side-effect metrics of a knowledge edit: one module per family, one orchestration entry point.

* :mod:`.counterfact` — ES/PS/NS, EM/PM/NM, Score (Meng et al. 2022), ROME's convention by default and the
  product one beside it; ``aggregate`` for a set of facts (ROME's Score);
* :mod:`.nkl` — neighbourhood KL (Hoelscher-Obermaier et al. 2023);
* :mod:`.shifts` — risers/fallers, related-word shifts, bleed of the new target;
* :mod:`.portability`, :mod:`.locality` — Yao et al. 2023;
* :mod:`.multihop` — MQuAKE EW/IW/MH (Zhong et al. 2023);
* :mod:`.conflicts` — ConflictEdit / RoundEdit (Li et al. 2024);
* :mod:`.general` — perplexity, downstream probes (Gu et al.'s tasks, with standard errors), ROUGE, n-gram
  entropy; :mod:`.fluency` — ROME's sampled generation texts (reference) or the quick greedy ones;
* :mod:`.numeric` — bootstrap CIs, safe means, log floors, JS divergence;
* :mod:`.scoring` — batched, cached model reads;
* :mod:`.report` — ``evaluate(lm, case, edit_or_patch) -> EvalReport``.
"""

from .report import FAMILIES, EvalReport, evaluate, render  # noqa: E402,F401

__all__ = ["FAMILIES", "EvalReport", "evaluate", "render"]
