"""Neighbourhood KL divergence, NKL (Hoelscher-Obermaier et al. 2023, "Detecting Edit Failures in Large
Language Models: An Improved Specificity Benchmark", CounterFact+).

For each neighbourhood prompt n, with the full next-token distributions P_pre(· | n) and P_post(· | n):

    NKL(n) = KL(P_post ‖ P_pre) = Σ_v P_post(v | n) · (log P_post(v | n) − log P_pre(v | n))

reported per prompt and as a mean (bootstrap CI), on plain neighbourhood prompts and on "distracted"
ones, ``"{edit prompt} {new target}. " + n`` (the CounterFact+ construction, which shows how far the edit
leaks when the subject and new object sit in the context). This is the *true* KL in nats. The released
specificityplus code divides each KL by the vocabulary size; ``vocab_size`` is stored in every result so
a reader can convert (``nkl / vocab_size``).

Optionally NKL is also averaged over the first ``k`` generated tokens: the pre-edit model's greedy
continuation of n is teacher-forced through both models and the per-position KLs are averaged.

Zero probabilities: terms with P_post = 0 contribute 0 (x·log x → 0); P_pre is floored at
``numeric.LOG_FLOOR`` in log space, so a KL is always finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from .numeric import CI, LOG_FLOOR, bootstrap_ci


def kl_rows(logp_post: torch.Tensor, logp_pre: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(P_post ‖ P_pre) in nats for ``[n, V]`` log-probabilities; never NaN/inf, never < 0."""
    post = logp_post.float().clamp_min(LOG_FLOOR)
    pre = logp_pre.float().clamp_min(LOG_FLOOR)
    p = logp_post.float().exp()  # exact zeros stay zero, so their terms vanish
    terms = torch.where(p > 0, p * (post - pre), torch.zeros_like(p))
    # Exact KL is ≥ 0; float summation can leave −1e-9 on identical rows.
    return terms.sum(-1).clamp_min(0.0)


@dataclass
class NKLResult:
    prompts: list[str]
    per_prompt: list[float]
    distracted_prompts: list[str]
    distracted_per_prompt: list[float]
    vocab_size: int
    generated_tokens: int = 0
    per_prompt_generated: list[float] = field(default_factory=list)
    nkl: CI = field(init=False)
    distracted_nkl: CI = field(init=False)
    generated_nkl: CI = field(init=False)
    unit: str = "nats (true KL; specificityplus divides by vocab_size)"

    def __post_init__(self):
        self.nkl = bootstrap_ci(self.per_prompt)
        self.distracted_nkl = bootstrap_ci(self.distracted_per_prompt)
        self.generated_nkl = bootstrap_ci(self.per_prompt_generated)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("nkl", "distracted_nkl", "generated_nkl"):
            d[k] = getattr(self, k).to_dict()
        return d


def distracted_prompts(edit_prompt: str, target_new: str, neighbour_prompts: Sequence[str]) -> list[str]:
    """CounterFact+'s distracting neighbourhood: ``f"{edit_prompt} {target_new}. {n}"``."""
    return [f"{edit_prompt} {target_new}. {n}" for n in neighbour_prompts]


@torch.no_grad()
def greedy_ids(lm, prompt: str, k: int) -> list[int]:
    """The model's greedy next ``k`` token ids after ``prompt`` (no re-tokenisation of decoded text)."""
    from .. import text

    ids = text.prompt_ids(lm.tokenizer, prompt)
    text.check_length(lm, len(ids) + k)
    dev = next(lm.model.parameters()).device
    inp = torch.tensor([ids], device=dev)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out = lm.model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), max_new_tokens=k,
                            min_new_tokens=k, do_sample=False, num_beams=1, pad_token_id=pad)
    return out[0, len(ids):].tolist()


def neighbourhood_kl(pre, post, neighbour_prompts: Sequence[str], *, edit_prompt: str | None = None,
                     target_new: str | None = None, generated_tokens: int = 0) -> NKLResult:
    """NKL on ``neighbour_prompts`` (and their distracted versions when ``edit_prompt``/``target_new`` are
    given). ``pre``/``post`` are :class:`~editcore.metrics.scoring.Scorer` objects for the two states."""
    prompts = list(neighbour_prompts)
    distracted = distracted_prompts(edit_prompt, target_new, prompts) if edit_prompt and target_new else []
    everything = prompts + distracted
    vocab = 0
    per: list[float] = []
    if everything:
        lp_pre, lp_post = pre.dists(everything), post.dists(everything)
        vocab = int(lp_pre.shape[-1])
        per = kl_rows(lp_post, lp_pre).tolist()
    gen: list[float] = []
    if generated_tokens > 0:
        for p in prompts:
            cont = pre.greedy_ids(p, generated_tokens)
            gen.append(float(kl_rows(post.dists_along(p, cont), pre.dists_along(p, cont)).mean()))
    return NKLResult(prompts, per[:len(prompts)], distracted, per[len(prompts):], vocab, generated_tokens, gen)
