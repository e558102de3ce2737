"""What the multi-hop, weight-preserving methods (MeLLo, DeepEdit) share: a fact memory read by
sentence-embedding retrieval, a language model driven step by step through few-shot prompts, and the input
rewrite that makes the result of that procedure *the edited model*.

**The edited model.** Both methods answer a question by running a procedure around the unchanged model
(decompose and self-check; search over reasoning steps). The patch is an input rewrite
(:class:`MultiHopRewrite`, a :class:`~editcore.methods.ike.FactMemory`): for each prompt the model is given,
the question in it is taken out (:func:`question_of`: the last ``Q: … A:`` of a few-shot prompt, the last
``Question: … Thoughts:`` of a chain-of-thought prompt, otherwise the prompt itself), the procedure runs on
it, and

* when its chain **adopted an edited fact**, the prompt is preceded by the procedure's transcript and its
  final answer (``…\\nFinal answer: X\\n\\n``): every metric that scores a prompt's next tokens, every
  generation and every probe reads the model given what the multi-hop procedure built;
* otherwise (no edited fact used, no answer reached, or a text longer than ``max_question_words`` such as
  the held-out passages of the perplexity metric) the prompt passes **unchanged**, so the edited model is
  the base model exactly there.

A prompt that *is* an edited fact's statement (the edit prompt itself) is a **direct hit**
(``direct_hit``): retrieval returns that fact with similarity 1, so its answer is taken without asking the
model to decompose a one-hop statement. This keeps the edit visible on its own prompt; multi-hop questions
never take this path.

The procedures call the model through a :class:`Reasoner` (:class:`ModelReasoner`: greedy decoding with stop
strings and yes/no judgements read from two tokens' scores). It encodes its prompts itself, so the active
input rewrites (this one included) are not applied inside the procedure. Tests pass a scripted reasoner.

Why a 135M/270M model struggles: the procedures need the model to write well-formed subquestions, to judge
whether two sentences contradict each other and to copy entities between steps, skills that the papers
obtained from GPT-3/ChatGPT-class models. A small model often breaks the format, misjudges a contradiction
or loses the bridge entity; such a question then passes unchanged (the base model's answer).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..encoders import DEFAULT_ENCODER, ENCODERS, get_encoder
from ..scope import Patch
from ..text import cached_forward, context_length, model_device, target_ids
from ..types import Request
from .base import Edit, Progress, hparam, validate_hparams
from .common import validate_requests
from .ike import FactMemory, fact_text, merge_facts

log = logging.getLogger(__name__)

_BOOL = (True, False)


@dataclass(frozen=True)
class MultiHopHparams:
    encoder: str = hparam(DEFAULT_ENCODER, choices=ENCODERS, help="sentence encoder for retrieving edited facts")
    max_new_tokens: int = hparam(48, lo=4, hi=512, help="tokens the model may write per call")
    max_question_words: int = hparam(40, lo=1, hi=10_000,
                                     help="longer texts are not questions: they pass unchanged")
    direct_hit: bool = hparam(True, choices=_BOOL,
                              help="a prompt that is an edited fact's statement takes its answer directly")


# ---- the model as the procedures use it ------------------------------------------------------------------
class ContextFull(Exception):
    """A procedure's prompt does not fit the model's context: that question gets no answer."""


class Reasoner(Protocol):
    def generate(self, prompt: str, stops: Sequence[str], max_new_tokens: int) -> str:
        """The greedy continuation of ``prompt``, cut before the first stop string."""

    def yes(self, prompt: str) -> bool:
        """Whether the model answers ``yes`` rather than ``no`` after ``prompt``."""


class ModelReasoner:
    """The model as it is now (weights, hooks) without input rewrites: prompts are encoded here.

    The procedures send many prompts that share long beginnings (the demonstrations; the chain so far), so
    the key/value caches of the last few prompts are kept and a new prompt runs only the tokens after its
    longest common beginning with one of them (the cache cropped there). A cache is only reused while the
    model's weights and applied patches are those it was computed under."""

    KEEP = 4  # caches kept (DeepEdit alternates between five prompt heads)
    MIN_SHARED = 16  # tokens in common below which a prompt runs from scratch

    def __init__(self, lm):
        self.lm = lm
        self.calls = 0
        self._kv: list[tuple[list[int], object]] = []  # (ids the cache holds, cache), most recent last
        self._kv_state = None

    def _state(self):
        from ..scope import applied_patches, content_key

        return content_key(self.lm.model), tuple(id(p) for p in applied_patches(self.lm.model))

    def _encode(self, prompt: str, extra: int) -> list[int]:
        ids = list(self.lm.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        limit = context_length(self.lm)
        if len(ids) + extra > limit:
            raise ContextFull(f"{len(ids)} + {extra} tokens, over the model's context of {limit}")
        self.calls += 1
        return ids

    def _prefill(self, ids: list[int]):
        """``(last hidden state [1, d], cache, ids the cache holds)`` after running ``ids``."""
        dev = model_device(self.lm)
        state = self._state()
        if state != self._kv_state:
            self._kv, self._kv_state = [], state
        best, shared = None, 0
        for j, (held, _) in enumerate(self._kv):
            n = 0
            limit = min(len(held), len(ids) - 1)  # at least one token must run to read its logits
            while n < limit and held[n] == ids[n]:
                n += 1
            if n > shared:
                best, shared = j, n
        if best is not None and shared >= self.MIN_SHARED:
            held, cache = self._kv.pop(best)
            try:
                _crop(cache, len(held), shared)
                pos = torch.arange(shared, len(ids), device=dev)[None, :]
                out, cache = cached_forward(self.lm, torch.tensor([ids[shared:]], device=dev), None, pos, cache)
                return out.last_hidden_state[:, -1], cache, list(ids)
            except Exception as exc:  # a cache that cannot be cropped (sliding windows): run from scratch
                log.debug("prefix cache not reusable (%s)", exc)
        out, cache = cached_forward(self.lm, torch.tensor([ids], device=dev), None, None)
        return out.last_hidden_state[:, -1], cache, list(ids)

    def _keep(self, held: list[int], cache) -> None:
        self._kv.append((held, cache))
        del self._kv[:-self.KEEP]

    @torch.no_grad()
    def generate(self, prompt: str, stops: Sequence[str], max_new_tokens: int) -> str:
        from ..decoding import eos_ids

        lm, tok = self.lm, self.lm.tokenizer
        ids = self._encode(prompt, max_new_tokens)
        dev = model_device(lm)
        h, cache, held = self._prefill(ids)
        eos, new, text = eos_ids(lm), [], ""
        try:
            for _ in range(max_new_tokens):
                nxt = int(lm.adapter.logits(h).argmax(-1))
                if nxt in eos:
                    break
                new.append(nxt)
                text = tok.decode(new, skip_special_tokens=True)
                cut = min((text.find(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    return text[:cut]
                pos = torch.tensor([[len(held)]], device=dev)
                out, cache = cached_forward(lm, torch.tensor([[nxt]], device=dev), None, pos, cache)
                held.append(nxt)
                h = out.last_hidden_state[:, -1]
            return text
        finally:
            self._keep(held, cache)

    @torch.no_grad()
    def yes(self, prompt: str) -> bool:
        tok = self.lm.tokenizer
        ids = self._encode(prompt, 1)
        h, cache, held = self._prefill(ids)
        self._keep(held, cache)
        logits = self.lm.adapter.logits(h)[0]
        return float(logits[target_ids(tok, "yes")[0]]) > float(logits[target_ids(tok, "no")[0]])


def _crop(cache, held: int, keep: int) -> None:
    """Cut a key/value cache of ``held`` tokens back to its first ``keep``. transformers 5 takes the number
    of tokens to remove (negative); earlier versions took the length to keep."""
    import inspect

    if keep >= held:
        return
    if "tokens_to_remove" in inspect.signature(cache.crop).parameters:
        cache.crop(keep - held)
    else:
        cache.crop(keep)


# ---- the fact memory, read by similarity -------------------------------------------------------------------
class Retriever:
    """Edited facts ranked by cosine similarity of their statements to a query (embeddings cached)."""

    def __init__(self, encoder_name: str, device=None):
        self.encoder_name, self.device = encoder_name, device
        self._emb: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def rank(self, facts: Sequence[Request], query: str) -> list[tuple[Request, float]]:
        if not facts:
            return []
        enc = get_encoder(self.encoder_name, self.device)
        texts = [fact_text(f) for f in facts]
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._emb]
            if missing:
                self._emb.update(zip(missing, enc.encode(missing)))
            emb = torch.stack([self._emb[t] for t in texts])
        sims = (emb @ enc.encode([query])[0]).tolist()
        order = sorted(range(len(facts)), key=lambda i: (-sims[i], i))
        return [(facts[i], sims[i]) for i in order]


# ---- questions in prompts ------------------------------------------------------------------------------------
def question_of(text: str) -> str:
    """The question a prompt asks: the last ``Q: … A:`` of a few-shot prompt, the last ``Question: …
    Thoughts:`` of a chain-of-thought prompt, else the prompt itself."""
    stripped = text.strip()
    if stripped.endswith("A:") and "Q:" in stripped:
        return stripped[stripped.rfind("Q:") + 2:-2].strip()
    if stripped.endswith("Thoughts:") and "Question:" in stripped:
        return stripped[stripped.rfind("Question:") + len("Question:"):-len("Thoughts:")].strip()
    return stripped


def _norm(text: str) -> str:
    return re.sub(r"[\s?.!:]+$", "", " ".join(text.casefold().split()))


def direct_fact(facts: Sequence[Request], question: str) -> Request | None:
    """The newest fact whose statement is ``question`` (normalised), if any."""
    q = _norm(question)
    return next((f for f in reversed(facts) if _norm(f.text) == q), None)


def mentions(entity: str, sentence: str) -> bool:
    return bool(entity.strip()) and entity.strip().casefold() in sentence.casefold()


@dataclass
class Solution:
    """What a procedure made of one question."""

    question: str
    answer: str | None
    transcript: str  # the procedure's own record, as the model was shown it (MeLLo) or its accepted steps
    used: tuple[Request, ...] = ()  # edited facts its final chain adopted
    calls: int = 0  # model calls
    events: list[str] = field(default_factory=list)  # what the search did (accepted, rejected, backtracked)

    @property
    def prefix(self) -> str | None:
        """What goes before the prompt (None: the prompt passes unchanged)."""
        if not self.used or not self.answer:
            return None
        return f"{self.transcript.rstrip()}\nFinal answer: {self.answer}\n\n"


class MultiHopRewrite(FactMemory):
    """The edited model's front door: ``solve`` runs the method's procedure over the fact memory."""

    def __init__(self, tokenizer, facts: Sequence[Request], method, hp, reasoner: Reasoner, retriever: Retriever):
        super().__init__(tokenizer, facts)
        self.method, self.hp, self.reasoner, self.retriever = method, hp, reasoner, retriever
        self._solve_lock = threading.RLock()  # one procedure at a time per patch
        self._solved: dict = {}  # (facts, question) -> Solution: the metrics ask one question in many prompts

    def solve(self, facts: Sequence[Request], question: str) -> Solution:
        key = (tuple(facts), question)
        with self._solve_lock:
            if key not in self._solved:
                if len(self._solved) >= self.MEMO:
                    self._solved.pop(next(iter(self._solved)))
                self._solved[key] = self._solve(facts, question)
            return self._solved[key]

    def _solve(self, facts: Sequence[Request], question: str) -> Solution:
        if self.hp.direct_hit:
            hit = direct_fact(facts, question)
            if hit is not None:
                return Solution(question, hit.target_new, f"Retrieved fact: {fact_text(hit)}.", (hit,))
        try:
            return self.method.solve(self.reasoner, self.retriever, facts, question, self.hp)
        except ContextFull as exc:  # the prompt passes unchanged; the edit's diagnostics say why
            log.info("%s gives no answer to %r: %s", self.method.name, question, exc)
            return Solution(question, None, "", events=[f"the procedure's prompt is too long: {exc}"])

    def rewrite(self, facts, text):
        question = question_of(text)
        if not facts or len(question.split()) > self.hp.max_question_words:
            return text
        prefix = self.solve(facts, question).prefix
        return text if prefix is None else prefix + text


def compute(method, lm, requests: Sequence[Request], hp, rewrite_cls: type[MultiHopRewrite] = MultiHopRewrite,
            reasoner: Reasoner | None = None, progress: Progress | None = None) -> Edit:
    """An edit of ``method`` (MeLLo, DeepEdit): the requests join the fact memory of the active patches of
    the same kind, and the patch is a rewrite over all of them. ``reasoner`` replaces the model in tests."""
    t0 = time.perf_counter()
    validate_hparams(hp)
    reqs = validate_requests(lm, requests)
    facts = merge_facts(list(rewrite_cls.active_facts(lm.tokenizer)) + reqs)
    rewrite = rewrite_cls(lm.tokenizer, facts, method, hp, reasoner or ModelReasoner(lm),
                          Retriever(hp.encoder, lm.device))
    req = reqs[-1]
    sol = rewrite.solve(facts, req.text)
    diagnostics = {"memory_size": len(facts), "encoder": hp.encoder, "edit_prompt_answer": sol.answer or "",
                   "edit_prompt_adopts_edit": req in sol.used, "model_calls": sol.calls,
                   "transcript": sol.transcript}
    if req not in sol.used:
        diagnostics["warnings"] = [f"{method.info.title} does not adopt the new fact on its own prompt "
                                   f"(answer: {sol.answer or 'none reached'})"]
    patch = Patch(rewrite=rewrite, label=f"{method.info.title} {req.subject} -> {req.target_new}")
    seconds = time.perf_counter() - t0
    log.info("%s %r -> %r: %d facts in memory, %.2fs", method.name, req.subject, req.target_new, len(facts), seconds)
    return Edit(method.name, tuple(reqs), patch, seconds, diagnostics)


class MultiHopMethod:
    """The registered side of MeLLo and DeepEdit: a subclass names its rewrite class and its ``solve``."""

    batched = False  # one fact per call in the pages; compute stores every request it is given
    rewrite_cls: type[MultiHopRewrite] = MultiHopRewrite

    def compute(self, lm, requests: Sequence[Request], hp, progress: Progress | None = None, *, speed=None,
                reasoner: Reasoner | None = None) -> Edit:
        return compute(self, lm, requests, hp, self.rewrite_cls, reasoner, progress)
