"""General abilities and collapse: does the edited model still work as a language model?

* Perplexity on held-out text: exp(Σ NLL / Σ tokens) over consecutive windows of ``context`` tokens
  (each window starts with the model's BOS if it has one, else with the previous window's last token, so
  every text token is scored exactly once, except the very first one of a BOS-less model).
  Token-weighted; the context length and token count are reported. Behind an input rewrite (IKE, SERAC)
  each window is the text the rewrite puts before it plus the window, and only the window is scored.
* Log-likelihood probes (zero/few-shot; demonstrations are the first ``shots`` items, left out of scoring):
  - sentiment (SST-2 style): argmax over the choices " positive"/" negative" of log P(choice | prompt);
  - physical commonsense (PIQA style): argmax over the two solutions of the *mean-normalised*
    log-likelihood, (1/|s|) Σ log P(s_i | goal, s_<i) (length-normalised, as in lm-eval-harness acc_norm
    by tokens).
* Generation probes (greedy):
  - closed-book QA (NQ-open style): exact match (SQuAD normalisation) of the first line of the answer,
    cut at the first sentence end, against any gold answer;
  - arithmetic word problems (GSM8K style): solve rate; the first number in the greedy answer must equal
    the gold number (no chain of thought: small models are near 0 on real GSM8K, which is the point of
    comparing before vs after, not the absolute value);
  - dialogue summarisation (SAMSum style): ROUGE-L F1 (:func:`rouge_l`) of a short greedy summary.
* Generation fluency: ROME's n-gram entropy (:func:`ngram_entropy`) of greedy continuations of the
  case's generation prompts. ROME samples 100 tokens with top-k; here it is greedy and short so the
  dashboard stays fast — read it as a before/after comparison, not against ROME's tables.

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
from ..probes import heldout_text, load_probe
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
    fluency_note: str = "ROME n-gram entropy (bits; 2/3·H2, 4/3·H3 averaged) of greedy continuations"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in self.probes.items():
            d["probes"][k]["delta"] = v.delta
        return d


# Dashboard defaults: small, because every generated token is a forward pass before *and* after the
# edit. These are smoke tests of general ability, not benchmark numbers; pass larger sizes (or real
# files via ``paths``) for those.
DEFAULT_SIZES = {"sentiment": 6, "piqa": 4, "qa": 3, "arithmetic": 3, "summarisation": 1}
SHOTS = {"sentiment": 2, "piqa": 0, "qa": 2, "arithmetic": 2, "summarisation": 0}


def _sentiment_prompt(demos, item) -> str:
    head = "".join(f"Review: {d['text']}\nSentiment: {'positive' if d['label'] else 'negative'}\n\n" for d in demos)
    return head + f"Review: {item['text']}\nSentiment:"


def _qa_prompt(demos, item) -> str:
    head = "".join(f"Q: {d['question']}\nA: {d['answers'][0]}\n\n" for d in demos)
    return head + f"Q: {item['question']}\nA:"


def _arith_prompt(demos, item) -> str:
    head = "".join(f"Question: {d['question']}\nAnswer: {d['answer']}\n\n" for d in demos)
    return head + f"Question: {item['question']}\nAnswer:"


def _short_answer(s: str) -> str:
    line = first_line(s)
    return re.split(r"(?<=[^\d])[.!?](\s|$)", line)[0].strip()


def _split(task: str, items: list[dict], n: int) -> tuple[list[dict], list[dict]]:
    k = SHOTS[task]
    return items[:k], items[k:k + n]


PROMPT_OF = {
    "sentiment": lambda demos, it: _sentiment_prompt(demos, it),
    "piqa": lambda demos, it: f"Question: {it['goal']}\nAnswer: {it['sol1']} {it['sol2']}",
    "qa": lambda demos, it: _qa_prompt(demos, it),
    "arithmetic": lambda demos, it: _arith_prompt(demos, it),
    "summarisation": lambda demos, it: f"Dialogue:\n{it['dialogue']}\n\nShort summary: {it['summary']}",
}


def probe_requests(task: str, items: list[dict], n: int, fits: Callable[[str], bool] | None = None):
    """What one probe needs from a scorer: (metric name, run(scorer) -> (per-item scores, outputs),
    number of items skipped because they do not fit the model's context, the greedy generations it will
    ask for as (prompt, tokens) pairs, so a caller can generate them all in one batch)."""
    demos, evals = _split(task, items, n)
    skipped = 0
    if fits is not None:
        kept = [it for it in evals if fits(PROMPT_OF[task](demos, it))]
        skipped, evals = len(evals) - len(kept), kept
    if task == "sentiment":
        prompts = [_sentiment_prompt(demos, it) for it in evals]

        def run(sc):
            s = sc.pairs(prompts * 2, ["positive"] * len(prompts) + ["negative"] * len(prompts))
            pos, neg = s[:len(prompts)], s[len(prompts):]
            # Strict ">" for positive: a tie predicts negative (and is then right only for label 0).
            preds = [int(a.logprob > b.logprob) for a, b in zip(pos, neg)]
            return [float(p == it["label"]) for p, it in zip(preds, evals)], []
        return "accuracy", run, skipped, []
    if task == "piqa":
        prompts = [f"Question: {it['goal']}\nAnswer:" for it in evals]

        def run(sc):
            s = sc.pairs(prompts * 2, [it["sol1"] for it in evals] + [it["sol2"] for it in evals])
            a, b = s[:len(evals)], s[len(evals):]
            preds = [0 if x.logprob / len(x.token_logprobs) > y.logprob / len(y.token_logprobs) else 1
                     for x, y in zip(a, b)]
            return [float(p == it["label"]) for p, it in zip(preds, evals)], []
        return "accuracy (mean-normalised log-likelihood)", run, skipped, []
    if task == "qa":
        prompts = [_qa_prompt(demos, it) for it in evals]

        def run(sc):
            outs = sc.greedy(prompts, 8)
            return [float(exact_match(_short_answer(o), it["answers"])) for o, it in zip(outs, evals)], outs
        return "exact match", run, skipped, [(p, 8) for p in prompts]
    if task == "arithmetic":
        prompts = [_arith_prompt(demos, it) for it in evals]

        def run(sc):
            outs = sc.greedy(prompts, 6)
            return [float(first_number(o) == first_number(it["answer"])) for o, it in zip(outs, evals)], outs
        return "solve rate", run, skipped, [(p, 6) for p in prompts]
    if task == "summarisation":
        prompts = [f"Dialogue:\n{it['dialogue']}\n\nShort summary:" for it in evals]

        def run(sc):
            outs = sc.greedy(prompts, 16)
            return [rouge_l(first_line(o), it["summary"]) for o, it in zip(outs, evals)], outs
        return "ROUGE-L F1", run, skipped, [(p, 16) for p in prompts]
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
                      generation_prompts: Sequence[str] = (), fluency_tokens: int = 16) -> GeneralReport:
    """Every probe before (``pre`` Scorer) and after (``post``); sizes of 0 skip a probe."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    paths = paths or {}
    lm = pre.lm
    limit = textmod.context_length(lm) - 40  # room for the answer / generated tokens

    def fits(prompt: str) -> bool:
        return len(textmod.prompt_ids(lm.tokenizer, prompt)) <= limit

    probes = []
    for task, n in sizes.items():
        if n > 0:
            items = load_probe(task, paths.get(task), limit=SHOTS[task] + n)
            probes.append((task, *probe_requests(task, items, n, fits)))
    wanted = [w for *_, needs in probes for w in needs] + [(p, fluency_tokens) for p in generation_prompts]
    for sc in (pre, post):
        sc.prefetch_greedy(wanted)
    results: dict[str, ProbeResult] = {}
    for task, metric, run, skipped, _ in probes:
        a, _ = run(pre)
        b, outs = run(post)
        results[task] = ProbeResult(task, metric, bootstrap_ci(a), bootstrap_ci(b), a, b, outs, skipped)
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
    if generation_prompts:
        gp = list(generation_prompts)
        flu_pre = ngram_entropy(pre.greedy(gp, fluency_tokens))
        texts_post = post.greedy(gp, fluency_tokens)
        flu_post = ngram_entropy(texts_post)
    return GeneralReport(results, ppl_pre, ppl_post, ntok, min(context, textmod.context_length(lm)), flu_pre, flu_post, texts_post)
