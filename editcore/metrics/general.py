"""General abilities and collapse: does the edited model still work as a language model?

* Perplexity on held-out text: exp(Σ NLL / Σ tokens) over consecutive windows of ``context`` tokens
  (each window starts with the model's BOS if it has one, else with the previous window's last token, so
  every text token is scored exactly once, except the very first one of a BOS-less model).
  Token-weighted; the context length and token count are reported. Behind an input rewrite (IKE, SERAC)
  each window is the text the rewrite puts before it plus the window, and only the window is scored.
* Downstream probes (the survey's Figure 4 tasks, after Gu et al. 2024, "Model Editing Harms General
  Abilities of Large Language Models"), each with its mean, 95% bootstrap interval, standard error and the
  standard error of the paired change (pre vs post on the same items):
  - sentiment (SST-2): Gu et al.'s zero-shot instruction; the label whose log-likelihood is higher
    (Gu et al. decode one token and count an answer that is neither label as wrong);
  - physical commonsense (PIQA): argmax over the two solutions of the *mean-normalised* log-likelihood,
    (1/|s|) Σ log P(s_i | goal, s_<i) (lm-eval-harness acc_norm, by tokens);
  - arithmetic (GSM8K): Gu et al.'s prompt — the question, the worked solution, then the final number is
    asked for (5 greedy tokens); the first number must equal the gold one (Gu et al.: the gold number
    occurs in the output);
  - closed-book QA (NQ-open): 2-shot, exact match (SQuAD normalisation) of the first line of the answer, cut
    at the first sentence end (Gu et al. add a retrieved passage that the public files do not carry);
  - dialogue summarisation (SAMSum): ``{dialogue}\nTL;DR:``, 25 greedy tokens, the mean of ROUGE-1, -2 and -L
    F1 (:func:`rouge_mean`), as Gu et al.
  Items: the real task files (``../shared/data/downstream``, the hub online), else the freely licensed
  sets bundled in ``data/probes/`` (:func:`editcore.probes.probe_items` says which was used).
* Generation fluency: ROME's n-gram entropy (:func:`ngram_entropy`) of generated text, in ROME's reference
  mode (top-k 5 samples of 100 tokens over every generation prompt) or the quick one (:mod:`.fluency`).

Every probe is run before and after the edit ("Other-Task" locality, Yao et al. 2023).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from .. import text as textmod
from ..probes import heldout_text, probe_items
from .fluency import NOTES as FLUENCY_NOTES
from .fluency import QUICK_TOKENS, fluency_prompts, fluency_texts
from .matching import exact_match, first_line
from .scoring import _TEXT_CACHE, TEXT_CACHE_SIZE, _get, _put
from .numeric import CI, bootstrap_ci

# ---- text statistics ----------------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def words(s: str) -> list[str]:
    """Word/punctuation tokens (an approximation of ``nltk.word_tokenize``, which ROME uses; nltk is not
    a dependency here)."""
    return _WORD.findall(s)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(|a|·|b|))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004, β = 1): LCS over lower-cased word tokens; P = LCS/|pred|, R = LCS/|ref|,
    F = 2PR/(P+R); 0 when either side is empty or nothing is shared."""
    p = [w.lower() for w in _WORD.findall(prediction) if w.isalnum() or "'" in w]
    r = [w.lower() for w in _WORD.findall(reference) if w.isalnum() or "'" in w]
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def _rouge_words(s: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(s) if w.isalnum() or "'" in w]


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_n(prediction: str, reference: str, n: int) -> float:
    """ROUGE-N F1: clipped overlap of word n-grams (lower-cased), P over the prediction's, R over the reference's."""
    def grams(ws):
        return Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))

    p, r = grams(_rouge_words(prediction)), grams(_rouge_words(reference))
    return _f1(sum((p & r).values()), sum(p.values()), sum(r.values()))


def rouge_mean(prediction: str, reference: str) -> float:
    """Gu et al.'s summarisation score: the mean of the ROUGE-1, ROUGE-2 and ROUGE-L F1."""
    return (rouge_n(prediction, reference, 1) + rouge_n(prediction, reference, 2) + rouge_l(prediction, reference)) / 3


def ngram_entropy_one(s: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's ``compute_n_gram_entropy`` for one text: H_n = −Σ f log2 f over the relative frequencies f of
    its n-grams, and the result is the arithmetic mean of w_n·H_n (weights 2/3 and 4/3 for n = 2, 3).
    A text with no n-grams of some order contributes H_n = 0."""
    toks = words(s)
    vals = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        vals.append(w * h)
    return sum(vals) / len(vals)


def ngram_entropy(texts: Sequence[str]) -> float:
    """Mean of :func:`ngram_entropy_one` over texts (ROME's ``n_gram_entropy`` with ``agg="arith"``)."""
    return sum(ngram_entropy_one(t) for t in texts) / len(texts) if texts else 0.0


def first_number(s: str) -> str | None:
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", s)
    if not m:
        return None
    v = m.group(0).replace(",", "")
    return v.rstrip("0").rstrip(".") if "." in v else v


# ---- perplexity ---------------------------------------------------------------------------------------

@torch.no_grad()
def _window_nll(lm, ids: list[int], first: int = 1) -> tuple[float, int]:
    """Σ NLL of ids[first:] given their prefixes, and how many tokens that is (logits in chunks: 262k vocab)."""
    h = textmod.hidden_at(lm, [ids], [range(first - 1, len(ids) - 1)])[0]
    tgt = torch.tensor(ids[first:], device=h.device)
    total = 0.0
    for s in range(0, len(ids) - first, 64):
        logp = torch.log_softmax(lm.adapter.logits(h[s:s + 64]).float(), dim=-1)
        total += float(-logp.gather(1, tgt[s:s + 64, None]).sum())
    return total, len(ids) - first


def _behind_rewrite(tok, window: list[int]) -> tuple[list[int], int] | None:
    """``(ids, first scored position)`` of a window as the model sees it behind an active input rewrite
    (IKE's demonstrations, SERAC's retrieved edit: text put before the window's own text, which alone is
    scored); None when no rewrite changes it."""
    piece = tok.decode(window)
    seen = textmod.rewritten(tok, piece)
    if seen == piece or not seen.endswith(piece):
        return None
    head = list(tok(seen[:len(seen) - len(piece)], add_special_tokens=True)["input_ids"])
    return head + window, len(head)


def perplexity_parts(lm, text: str, context: int = 256) -> tuple[float, int]:
    """(Σ NLL, number of scored tokens) of ``text`` in windows of ``context`` tokens (see module doc)."""
    tok = lm.tokenizer
    body = list(tok(text, add_special_tokens=False)["input_ids"])
    bos = tok.bos_token_id if textmod.prompt_ids(tok, "x")[:1] == [tok.bos_token_id] else None
    context = min(context, textmod.context_length(lm))
    # Every window holds ``context`` tokens: BOS + step text tokens, or (no BOS) the previous window's last
    # token + step new ones, so each text token is predicted exactly once.
    step = context - 1
    nll, n = 0.0, 0
    for s in range(0, len(body), step):
        ids = [bos] + body[s:s + step] if bos is not None else body[max(0, s - 1):s + step]
        if len(ids) < 2:
            continue
        behind = _behind_rewrite(tok, body[s:s + step])
        if behind:  # the same tokens are scored as without the rewrite (a BOS-less model's first one is not)
            a, b = _window_nll(lm, behind[0], behind[1] + (bos is None and s == 0))
        else:
            a, b = _window_nll(lm, ids)
        nll, n = nll + a, n + b
    return nll, n


def perplexity(lm, text: str, context: int = 256) -> float:
    nll, n = perplexity_parts(lm, text, context)
    return math.exp(nll / n) if n else float("nan")


# ---- the probe block ----------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    task: str
    metric: str
    pre: CI
    post: CI
    items_pre: list[float]
    items_post: list[float]
    outputs_post: list[str] = field(default_factory=list)
    skipped: int = 0  # items left out because prompt + answer would not fit the model's context
    source: str = ""  # where the items came from (a file, "bundled: ...")
    se_pre: float = 0.0  # standard error of each mean
    se_post: float = 0.0
    delta_se: float = 0.0  # standard error of the paired change (post - pre, item by item)

    @property
    def delta(self) -> float:
        return self.post.mean - self.pre.mean


@dataclass
class GeneralReport:
    probes: dict[str, ProbeResult]
    perplexity_pre: float | None
    perplexity_post: float | None
    perplexity_tokens: int
    perplexity_context: int
    fluency_pre: float | None
    fluency_post: float | None
    fluency_texts_post: list[str]
    fluency_mode: str = "quick"
    fluency_note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in self.probes.items():
            d["probes"][k]["delta"] = v.delta
        return d


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean, sqrt(s^2 / n) with the n-1 sample variance (0 for fewer than 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


# Sizes: the log-likelihood probes (sentiment, PIQA) are one teacher-forced pass per item and state, so they
# are large enough that a 5-point change is beyond noise (standard errors are reported with each); the
# generation probes cost a decoding loop per state and are smaller. Real files hold 200 items per task.
DEFAULT_SIZES = {"sentiment": 200, "piqa": 200, "qa": 50, "arithmetic": 50, "summarisation": 10}
SHOTS = {"sentiment": 0, "piqa": 0, "qa": 2, "arithmetic": 0, "summarisation": 0}
TOKENS = {"qa": 8, "arithmetic": 5, "summarisation": 25}


# Prompts: Gu et al. 2024 (JasonForJoy/Model-Editing-Hurt, the survey's downstream tasks) in EditScope's words:
# a zero-shot instruction for sentiment, the worked solution then the final number for GSM8K, "TL;DR:" for
# dialogues; PIQA as lm-eval-harness asks it; closed-book few-shot QA (Gu et al. add a passage to each NQ
# question, which the public files do not carry).
def _sentiment_prompt(demos, item) -> str:
    return ("Decide whether the sentiment of the text is positive or negative and reply with exactly one word, "
            f"'positive' or 'negative'. text: {item['text']} answer:")


def _qa_prompt(demos, item) -> str:
    head = "".join(f"Q: {d['question']}\nA: {d['answers'][0]}\n\n" for d in demos)
    return head + f"Q: {item['question']}\nA:"


def _arith_prompt(demos, item) -> str:
    solution = item.get("solution", "").split("####")[0].strip()
    return (f"Q: {item['question']} A: Let's work through it step by step. {solution} "
            "So the final answer, as a number, is:")


def _summary_prompt(demos, item) -> str:
    return f"{item['dialogue']}\nTL;DR:"


def _piqa_prompt(demos, item) -> str:
    return f"Question: {item['goal']}\nAnswer:"


def _short_answer(s: str) -> str:
    line = first_line(s)
    return re.split(r"(?<=[^\d])[.!?](\s|$)", line)[0].strip()


def _split(task: str, items: list[dict], n: int) -> tuple[list[dict], list[dict]]:
    k = SHOTS[task]
    return items[:k], items[k:k + n]


PROMPT_OF = {"sentiment": _sentiment_prompt, "piqa": _piqa_prompt, "qa": _qa_prompt, "arithmetic": _arith_prompt,
             "summarisation": _summary_prompt}
# What has to fit the context besides the prompt (the longest answer or the generated tokens).
_ANSWER_OF = {"piqa": lambda it: max(it["sol1"], it["sol2"], key=len), "summarisation": lambda it: ""}


def probe_requests(task: str, items: list[dict], n: int, fits: Callable[[str], bool] | None = None):
    """What one probe needs from a scorer: (metric name, run(scorer) -> (per-item scores, outputs),
    number of items skipped because they do not fit the model's context, the greedy generations it will
    ask for as (prompt, tokens) pairs, so a caller can generate them all in one batch)."""
    demos, evals = _split(task, items, n)
    skipped = 0
    if fits is not None:
        kept = [it for it in evals if fits(PROMPT_OF[task](demos, it) + " " + _ANSWER_OF.get(task, lambda _: "")(it))]
        skipped, evals = len(evals) - len(kept), kept
    prompts = [PROMPT_OF[task](demos, it) for it in evals]
    if task == "sentiment":
        def run(sc):
            s = sc.pairs(prompts * 2, ["positive"] * len(prompts) + ["negative"] * len(prompts))
            pos, neg = s[:len(prompts)], s[len(prompts):]
            # Strict ">" for positive: a tie predicts negative (and is then right only for label 0).
            preds = [int(a.logprob > b.logprob) for a, b in zip(pos, neg)]
            return [float(p == it["label"]) for p, it in zip(preds, evals)], []
        return "accuracy (label log-likelihood, zero-shot instruction)", run, skipped, []
    if task == "piqa":
        def run(sc):
            s = sc.pairs(prompts * 2, [it["sol1"] for it in evals] + [it["sol2"] for it in evals])
            a, b = s[:len(evals)], s[len(evals):]
            preds = [0 if x.logprob / len(x.token_logprobs) > y.logprob / len(y.token_logprobs) else 1
                     for x, y in zip(a, b)]
            return [float(p == it["label"]) for p, it in zip(preds, evals)], []
        return "accuracy (mean-normalised log-likelihood)", run, skipped, []
    tokens = TOKENS[task]
    if task == "qa":
        def run(sc):
            outs = sc.greedy(prompts, tokens)
            return [float(exact_match(_short_answer(o), it["answers"])) for o, it in zip(outs, evals)], outs
        return "exact match (closed-book, 2-shot)", run, skipped, [(p, tokens) for p in prompts]
    if task == "arithmetic":
        def run(sc):
            outs = sc.greedy(prompts, tokens)
            return [float(first_number(o) == first_number(it["answer"])) for o, it in zip(outs, evals)], outs
        return "final number after the worked solution", run, skipped, [(p, tokens) for p in prompts]
    if task == "summarisation":
        def run(sc):
            outs = sc.greedy(prompts, tokens)
            return [rouge_mean(first_line(o), it["summary"]) for o, it in zip(outs, evals)], outs
        return "ROUGE F1, mean of 1/2/L", run, skipped, [(p, tokens) for p in prompts]
    raise ValueError(task)


def _ppl_cached(scorer, text: str, context: int) -> tuple[float, int]:
    # A content digest, not hash(): that differs between processes, and this key is also used on disk.
    key = (scorer.lm.fingerprint, scorer.state, "ppl", context, hashlib.sha256(text.encode()).hexdigest())
    if scorer.pre and (hit := _get(_TEXT_CACHE, key)) is not None:
        return hit
    memo = scorer._texts.get(("ppl", context, text))
    if memo is not None:
        return memo
    scorer._check(["perplexity"])
    out = perplexity_parts(scorer.lm, text, context)
    scorer._texts[("ppl", context, text)] = out
    if scorer.pre:
        _put(_TEXT_CACHE, key, out, TEXT_CACHE_SIZE)
    return out


def general_abilities(pre, post, *, sizes: dict[str, int] | None = None, paths: dict[str, str] | None = None,
                      heldout: str | None = None, heldout_chars: int = 1500, context: int = 256,
                      generation_prompts: Sequence[str] = (), fluency: str = "quick") -> GeneralReport:
    """Every probe before (``pre`` Scorer) and after (``post``); sizes of 0 skip a probe. Items come from
    ``paths``, else the real task files when present, else the bundled sets (:func:`editcore.probes.probe_items`).
    Fluency: ``fluency`` is ``"quick"`` or ``"reference"`` (:mod:`.fluency`) over ``generation_prompts``."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    paths = paths or {}
    lm = pre.lm
    limit = textmod.context_length(lm) - 40  # room for the answer / generated tokens

    def fits(prompt: str) -> bool:
        return len(textmod.prompt_ids(lm.tokenizer, prompt)) <= limit

    probes = []
    for task, n in sizes.items():
        if n > 0:
            items, source = probe_items(task, paths.get(task), limit=SHOTS[task] + n)
            probes.append((task, source, *probe_requests(task, items, n, fits)))
    fl_prompts = fluency_prompts(generation_prompts, fluency)
    wanted = [w for *_, needs in probes for w in needs]
    if fluency == "quick":
        wanted += [(p, QUICK_TOKENS) for p in fl_prompts]
    for sc in (pre, post):
        sc.prefetch_greedy(wanted)
    results: dict[str, ProbeResult] = {}
    for task, source, metric, run, skipped, _ in probes:
        a, _ = run(pre)
        b, outs = run(post)
        results[task] = ProbeResult(task, metric, bootstrap_ci(a), bootstrap_ci(b), a, b, outs, skipped, source,
                                    standard_error(a), standard_error(b),
                                    standard_error([y - x for x, y in zip(a, b)]))
    ppl_pre = ppl_post = None
    ntok = 0
    if heldout_chars > 0:
        text = heldout_text(heldout, max_chars=heldout_chars)
        nll_a, ntok = _ppl_cached(pre, text, context)
        nll_b, _ = _ppl_cached(post, text, context)
        if ntok:
            ppl_pre, ppl_post = math.exp(nll_a / ntok), math.exp(nll_b / ntok)
    flu_pre = flu_post = None
    texts_post: list[str] = []
    if fl_prompts:
        flu_pre = ngram_entropy(fluency_texts(pre, fl_prompts, fluency))
        texts_post = fluency_texts(post, fl_prompts, fluency)
        flu_post = ngram_entropy(texts_post)
    return GeneralReport(results, ppl_pre, ppl_post, ntok, min(context, textmod.context_length(lm)), flu_pre, flu_post,
                         texts_post, fluency, FLUENCY_NOTES[fluency])
