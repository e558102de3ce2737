"""CounterFact efficacy, generalisation and specificity (Meng et al. 2022, "Locating and Editing Factual
Associations in GPT", §3 / Appendix; ROME's ``eval_utils_counterfact``).

For a prompt p, a new target o* and the true object o^c:

* ES (efficacy score)       = 1[P(o* | p) > P(o^c | p)] on the edit prompt;   EM = P(o*) − P(o^c)
* PS (paraphrase score)     = the same on each paraphrase prompt;               PM = its magnitude
* NS (neighbourhood score)  = 1[P(o^c | n) > P(o* | n)] on neighbourhood prompts n; NM = P(o^c) − P(o*)
* Score                     = harmonic mean of ES, PS, NS

Over a set of facts (:func:`aggregate`) every rate is first a mean over one fact's prompts, then a mean over
facts, and Score is the harmonic mean of those dataset-level ES, PS, NS, as ROME's
``experiments/summarize.py`` computes it (not a mean of per-fact Scores).

Two conventions for "P" (every result records which one it used, and carries the other's rates too):

* ``"rome_mean_nll"`` (ROME's released code, ``eval_utils_counterfact.test_batch_prediction``; the
  default): compare mean per-token NLLs, magnitudes are exp(−mean NLL);
* ``"product"`` (the paper's text): P(target) = Π_i P(t_i | p, t_<i), teacher-forced; this favours short
  targets, so multi-token targets give other ES/PS/NS and very different EM/PM/NM.

Comparisons are strict: a tie counts as failure. Also reported: EasyEdit's token-level accuracy (fraction
of target tokens that are the teacher-forced argmax), the convention of Yao et al. 2023 / EasyEdit.
For neighbourhood probes the "true" answer is the probe's own answer (CounterFact: the same o^c).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .scoring import CONVENTIONS, PairScore, Scorer
from .numeric import CI, bootstrap_ci, harmonic_mean, mean

DEFAULT_CONVENTION = "rome_mean_nll"
RATES = ("es", "ps", "ns")
MAGNITUDES = ("em", "pm", "nm")


def other_convention(convention: str) -> str:
    return next(c for c in CONVENTIONS if c != convention)


def prefers(a: PairScore, b: PairScore, convention: str) -> bool:
    """1[P(a) > P(b)] under ``convention``; ties are failures. Comparison in log space (no underflow)."""
    return a.log_value(convention) > b.log_value(convention)


def margin(a: PairScore, b: PairScore, convention: str) -> float:
    """P(a) − P(b) under ``convention`` (the paper's magnitude)."""
    return a.value(convention) - b.value(convention)


@dataclass
class PromptComparison:
    """One prompt: which target should win, both magnitudes and EasyEdit token accuracy of the winner."""

    prompt: str
    expected: str
    other: str
    p_expected: float
    p_other: float
    success: bool
    token_acc: float

    @property
    def margin(self) -> float:
        return self.p_expected - self.p_other


def compare_prompts(prompts: Sequence[str], expected: Sequence[str], other: Sequence[str],
                    scores_expected: Sequence[PairScore], scores_other: Sequence[PairScore],
                    convention: str) -> list[PromptComparison]:
    return [PromptComparison(p, e, o, se.value(convention), so.value(convention), prefers(se, so, convention),
                             se.token_acc)
            for p, e, o, se, so in zip(prompts, expected, other, scores_expected, scores_other)]


@dataclass
class CounterFactResult:
    convention: str
    edit: list[PromptComparison]
    paraphrase: list[PromptComparison]
    neighbourhood: list[PromptComparison]
    other: dict | None = None  # the same rates under the other convention (:func:`headline`)
    es: CI = field(init=False)
    em: CI = field(init=False)
    ps: CI = field(init=False)
    pm: CI = field(init=False)
    ns: CI = field(init=False)
    nm: CI = field(init=False)
    score: float = field(init=False)
    edit_token_acc: CI = field(init=False)
    paraphrase_token_acc: CI = field(init=False)
    neighbourhood_token_acc: CI = field(init=False)

    def __post_init__(self):
        def rate(rows):
            return bootstrap_ci([float(r.success) for r in rows])

        def mag(rows):
            return bootstrap_ci([r.margin for r in rows])

        def acc(rows):
            return bootstrap_ci([r.token_acc for r in rows])

        self.es, self.em = rate(self.edit), mag(self.edit)
        self.ps, self.pm = rate(self.paraphrase), mag(self.paraphrase)
        self.ns, self.nm = rate(self.neighbourhood), mag(self.neighbourhood)
        # Absent components (no paraphrases, say) are left out rather than counted as 0.
        parts = [c.mean for c in (self.es, self.ps, self.ns) if c.n]
        self.score = harmonic_mean(parts)
        self.edit_token_acc = acc(self.edit)
        self.paraphrase_token_acc = acc(self.paraphrase)
        self.neighbourhood_token_acc = acc(self.neighbourhood)

    def to_dict(self) -> dict:
        d = {k: (v.to_dict() if isinstance(v, CI) else v) for k, v in self.__dict__.items()
             if k not in ("edit", "paraphrase", "neighbourhood")}
        for k in ("edit", "paraphrase", "neighbourhood"):
            d[k] = [asdict(r) for r in getattr(self, k)]
        return d


def headline(r: CounterFactResult) -> dict:
    """The convention, rates, magnitudes and Score of a result as plain numbers (no per-prompt rows)."""
    return {"convention": r.convention, **{k: getattr(r, k).mean for k in RATES + MAGNITUDES},
            **{f"n_{k}": getattr(r, k).n for k in RATES}, "score": r.score}


def counterfact_from_scores(edit_prompt: str, paraphrases: Sequence[str], neighbours: Sequence[tuple[str, str]],
                            target_new: str, target_true: str, scorer: Scorer,
                            convention: str = DEFAULT_CONVENTION) -> CounterFactResult:
    """CounterFact metrics on the scorer's model state; ``neighbours`` are (prompt, true answer) pairs.
    The result is in ``convention`` and carries the other convention's headline in ``other``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}")
    subj = [edit_prompt, *paraphrases]
    nprompts = [p for p, _ in neighbours]
    nanswers = [a for _, a in neighbours]
    prompts = subj * 2 + nprompts * 2
    targets = [target_new] * len(subj) + [target_true] * len(subj) + nanswers + [target_new] * len(nprompts)
    s = scorer.pairs(prompts, targets)
    k, m = len(subj), len(nprompts)
    s_new, s_true, n_true, n_new = s[:k], s[k:2 * k], s[2 * k:2 * k + m], s[2 * k + m:]

    def result(conv: str, other: dict | None = None) -> CounterFactResult:
        rows = compare_prompts(subj, [target_new] * k, [target_true] * k, s_new, s_true, conv)
        nrows = compare_prompts(nprompts, nanswers, [target_new] * m, n_true, n_new, conv)
        return CounterFactResult(conv, rows[:1], rows[1:], nrows, other)

    return result(convention, headline(result(other_convention(convention))))


def case_neighbours(case) -> list[tuple[str, str]]:
    """(prompt, expected answer) of each neighbourhood probe; a probe without an answer expects the
    true object (CounterFact's neighbours share it)."""
    return [(p.prompt, p.answer or case.target_true) for p in case.neighbourhood]


def score_counterfact(lm, case, target_new: str | None = None, *, convention: str = DEFAULT_CONVENTION,
                      scorer: Scorer | None = None) -> CounterFactResult:
    """CounterFact metrics of ``case`` on ``lm`` as it is now (edited or not)."""
    target_new = target_new or case.target_new
    return counterfact_from_scores(case.edit_prompt, case.paraphrases, case_neighbours(case), target_new,
                                   case.target_true, scorer or Scorer(lm), convention)


def _rate(rows: Sequence[dict]) -> float | None:
    return mean([float(r["success"]) for r in rows]) if rows else None


def _magnitude(rows: Sequence[dict]) -> float | None:
    return mean([r["p_expected"] - r["p_other"] for r in rows]) if rows else None


def aggregate(results: Sequence[CounterFactResult | dict]) -> dict:
    """Dataset-level CounterFact numbers over several facts' results (one convention), as ROME's
    ``summarize.py``: each rate and magnitude is a fact's mean over its prompts, averaged over facts (a fact
    without paraphrases is left out of PS and PM), with 95% bootstrap intervals over facts; ``score`` is the
    harmonic mean of the dataset-level ES, PS and NS. ``mean_of_fact_scores`` is the other way round (a
    mean of per-fact harmonic means), kept only so the two can be told apart."""
    dicts = [r.to_dict() if isinstance(r, CounterFactResult) else r for r in results]
    conventions = {d["convention"] for d in dicts}
    if len(conventions) > 1:
        raise ValueError(f"results mix conventions {sorted(conventions)}")
    parts = {"es": ("edit", _rate), "ps": ("paraphrase", _rate), "ns": ("neighbourhood", _rate),
             "em": ("edit", _magnitude), "pm": ("paraphrase", _magnitude), "nm": ("neighbourhood", _magnitude)}
    out: dict = {"convention": conventions.pop() if conventions else DEFAULT_CONVENTION, "n_facts": len(dicts)}
    for key, (rows, per_fact) in parts.items():
        values = [v for v in (per_fact(d[rows]) for d in dicts) if v is not None]
        out[key] = bootstrap_ci(values).to_dict()
    out["score"] = harmonic_mean([out[k]["mean"] for k in RATES if out[k]["n"]])
    out["mean_of_fact_scores"] = mean([d["score"] for d in dicts])
    return out
