"""IKE: In-context Knowledge Editing (Zheng et al. 2023, "Can We Edit Factual Knowledge by In-Context Learning?").

IKE changes no weight. **The edited model is the base model with a context in front of every prompt it
sees** — the edit prompt, paraphrases, neighbourhood prompts, generation prompts, the downstream probes and
the held-out text of the perplexity metric — so every metric measures what a user of an IKE-edited model
meets, demonstrations included. The context, in the format of the authors' code::

    New Fact: <pool fact> <its new target>\\nPrompt: <a prompt> <its answer>\\n\\n      k demonstrations
    New Fact: <edit prompt> <new target>\\nPrompt: <edit prompt> <new target>\\n\\n   the new fact, copied
    New Fact: <edit prompt> <new target>\\nPrompt: <the prompt the model is given>

Demonstrations come in the paper's three kinds, mixed copy : update : retain = 1 : 3 : 4 (``ratio``): *copy*
(the pool fact's own prompt, answered with its new target), *update* (a paraphrase, answered with the new
target) and *retain* (a neighbourhood prompt about another subject, answered with its true answer, so the
model learns that a new fact does not spill over). The ``k`` demonstrations are the pool facts nearest, in a
sentence encoder's embedding (:mod:`editcore.encoders`), to ``New Fact: <fact>\\nPrompt: <the prompt>``;
the nearest comes last, beside the query, as in the authors' code.

Where EditScope departs from the paper (also in ``MethodInfo.adaptation``):

* the pool is EditScope's catalog (each fact with its first counterfactual target; ``pool`` adds
  CounterFact records when ``../shared/data`` has them), not CounterFact's training split;
* with ``retrieve_by="query"`` (default) demonstrations are retrieved for each prompt the model is given;
  the authors retrieve once per edit from the edit prompt (``"fact"``);
* the kind of each demonstration and which paraphrase or neighbour it shows are drawn from ``seed``, not
  anew on every run;
* pool facts about a subject the prompt names, or about an edited subject, are never demonstrated (they
  would assert a counterfactual about it that nobody asked for);
* sequential edits keep a growing memory of facts (the paper edits one fact at a time): a patch holds
  every fact edited so far; of the IKE patches active at once only the newest writes the context (so no
  fact or demonstration is seen twice), from the union of their memories. Each stored fact is shown as a
  copy demonstration (the ``max_memory_facts`` nearest the prompt); the nearest one is the ``New Fact``;
* demonstrations are dropped, farthest first, when the context would not leave ``reserve_tokens`` of the
  model's context free.

:class:`FactMemory` (a rewrite carrying facts, discoverable from the scope) and :class:`Prompter` (the
context) are shared with SERAC, whose counterfactual model is the base model given this context.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import paths
from ..encoders import DEFAULT_ENCODER, ENCODERS, Encoder, get_encoder
from ..errors import EditScopeError, InputError
from ..scope import Patch
from ..text import active_rewrites, context_length
from ..types import Request
from .base import Edit, MethodInfo, Progress, hparam, validate_hparams
from .common import validate_requests

log = logging.getLogger(__name__)

_BOOL = (True, False)
POOLS = ("catalog", "catalog+counterfact")
KINDS = ("copy", "update", "retain")


@dataclass(frozen=True)
class PromptHparams:
    """How the in-context prompt is built (IKE's, and SERAC's counterfactual model's)."""

    k: int = hparam(32, lo=0, hi=64, help="demonstrations before the new fact (the paper uses 32)")
    ratio: tuple[int, ...] = hparam((1, 3, 4), lo=0, hi=64, help="copy : update : retain demonstrations (3 numbers)")
    retrieve_by: str = hparam("query", choices=("query", "fact"),
                              help="retrieve demonstrations for each prompt the model is given (query) or once "
                                   "from the edit prompt, as the authors' code (fact)")
    pool: str = hparam("catalog", choices=POOLS, help="where demonstrations come from")
    order: str = hparam("nearest_last", choices=("nearest_last", "nearest_first"),
                        help="where the most similar demonstration goes (the authors: last, beside the query)")
    copy_fact: bool = hparam(True, choices=_BOOL, help="a copy demonstration of the new fact before the query")
    reserve_tokens: int = hparam(48, lo=0, hi=4096,
                                 help="context left free after the prompt (answers, generated text); "
                                      "demonstrations are dropped, farthest first, to keep it")
    encoder: str = hparam(DEFAULT_ENCODER, choices=ENCODERS, help="sentence encoder for retrieval")
    seed: int = hparam(0, lo=0, hi=2**31 - 1, help="draws each demonstration's kind and prompt")

    def check(self) -> None:
        validate_hparams(self)
        if len(self.ratio) != 3 or (self.k > 0 and sum(self.ratio) == 0):
            raise InputError("hyper-parameter ratio must be three numbers (copy, update, retain), not all 0")


@dataclass(frozen=True)
class IkeHparams(PromptHparams):
    max_memory_facts: int = hparam(16, lo=1, hi=1024,
                                   help="sequential edits: stored facts shown (those nearest the prompt)")


# ---- the demonstration pool --------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolFact:
    id: str
    subject: str
    prompt: str  # subject filled in
    targets: tuple[str, ...]  # its counterfactual targets, the first preferred
    paraphrases: tuple[str, ...]
    neighbours: tuple[tuple[str, str], ...]  # (prompt, true answer)

    @property
    def fact(self) -> str:
        return f"{self.prompt} {self.targets[0]}"

    def target(self, avoid: Sequence[str]) -> str:
        """The first counterfactual target that is not an answer of the edit being shown: the catalog's
        targets are often a neighbour's true answer, and a demonstration teaching the edit's old answer
        as a new fact pulls the model back to it."""
        return next((t for t in self.targets if t.casefold() not in avoid), self.targets[0])

    def demonstration(self, kind: str, seed: int, blocked: Sequence[str], avoid: Sequence[str]) -> str:
        """One demonstration of ``kind``; a copy where the fact has no usable prompt of that kind (none,
        or each names an edited subject)."""
        def usable(prompts):
            return [p for p in prompts if not _names_any(p[0] if isinstance(p, tuple) else p, blocked)]

        target = self.target(avoid)
        fact = f"{self.prompt} {target}"
        options = usable(self.paraphrases) if kind == "update" else usable(self.neighbours) if kind == "retain" else []
        if not options:
            return _block(fact, fact)
        pick = options[zlib.crc32(f"{seed}:{self.id}:{kind}".encode()) % len(options)]
        return _block(fact, f"{pick} {target}" if kind == "update" else f"{pick[0]} {pick[1]}")


def _block(fact: str, prompt: str) -> str:
    return f"New Fact: {fact}\nPrompt: {prompt}\n\n"


def _names_any(text: str, subjects: Sequence[str]) -> bool:
    low = text.casefold()
    return any(s in low for s in subjects)


@functools.lru_cache(maxsize=4)
def demo_pool(name: str) -> tuple[PoolFact, ...]:
    """The pool's facts: the catalog (first counterfactual target of each fact), plus CounterFact."""
    from ..catalog import load_catalog

    cases = list(load_catalog())
    if name == "catalog+counterfact":
        from ..benchmarks import load_benchmark
        from ..cases import Case

        try:
            cases += [c for c in load_benchmark("counterfact") if isinstance(c, Case)]
        except EditScopeError as exc:
            log.warning("IKE pool without CounterFact: %s", exc)
    return tuple(PoolFact(c.id, c.subject, c.edit_prompt, tuple(c.targets_new), tuple(c.paraphrases),
                          tuple((p.prompt, p.answer) for p in c.neighbourhood)) for c in cases)


_POOL_EMB: dict[str, torch.Tensor] = {}
_POOL_LOCK = threading.Lock()


def pool_embeddings(pool: Sequence[PoolFact], encoder: Encoder, progress: Progress | None = None) -> torch.Tensor:
    """``[len(pool), d]``: each fact as ``New Fact: <fact>\\nPrompt: <prompt>`` (the authors' query shape),
    computed once per encoder and pool and kept on disk (safetensors)."""
    from safetensors.torch import load_file, save_file

    texts = [f"New Fact: {p.fact}\nPrompt: {p.prompt}" for p in pool]
    digest = hashlib.sha256(json.dumps({"encoder": encoder.fingerprint, "texts": texts}).encode()).hexdigest()
    with _POOL_LOCK:
        if digest in _POOL_EMB:
            return _POOL_EMB[digest]
        path = paths.sub("ike", "pools") / f"{digest}.safetensors"
        emb = None
        if path.is_file():
            try:
                emb = load_file(str(path))["embeddings"]
            except Exception as exc:  # a damaged cache file is recomputed
                log.warning("ignoring unreadable pool embeddings %s (%s)", path, exc)
        if emb is None or emb.shape[0] != len(texts):
            parts = []
            for start in range(0, len(texts), 256):
                parts.append(encoder.encode(texts[start:start + 256]))
                if progress:
                    progress("embedding IKE's demonstration pool (once per encoder)", min(1.0, (start + 256) / len(texts)))
            emb = torch.cat(parts) if parts else torch.empty(0, encoder.dim)
            tmp = path.with_suffix(".tmp")
            save_file({"embeddings": emb.contiguous()}, str(tmp))
            tmp.replace(path)
        _POOL_EMB[digest] = emb
        return emb


def kinds(k: int, ratio: Sequence[int], seed: int) -> list[str]:
    """The kind of the i-th nearest demonstration: ``k`` kinds in proportion ``ratio`` (largest remainders),
    shuffled by ``seed``."""
    if k <= 0:
        return []
    total = sum(ratio)
    exact = [k * r / total for r in ratio]
    counts = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[:k - sum(counts)]:
        counts[i] += 1
    out = [kind for kind, n in zip(KINDS, counts) for _ in range(n)]
    random.Random(seed).shuffle(out)
    return out


# ---- the context --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What goes before one prompt: ``prefix`` (the prompt follows it directly), the fact shown as the new
    fact, and how many demonstrations and stored facts it holds."""

    prefix: str
    fact: Request
    demonstrations: int
    memory_shown: int
    dropped: int  # demonstrations / stored facts left out to fit the context


def fact_text(req: Request) -> str:
    return f"{req.text} {req.target_new}"


class Prompter:
    """Builds the context for a prompt from a fact memory (IKE's edited model; SERAC's counterfactual one)."""

    def __init__(self, lm, hp: PromptHparams, progress: Progress | None = None, max_memory_facts: int = 1):
        self.hp = hp
        self.tokenizer = lm.tokenizer
        self.budget = context_length(lm) - hp.reserve_tokens
        self.max_memory_facts = max_memory_facts
        self._device = lm.device
        self.pool = demo_pool(hp.pool) if hp.k > 0 else ()
        self.pool_emb = pool_embeddings(self.pool, self.encoder, progress) if self.pool else None
        self.pattern = kinds(hp.k, hp.ratio, hp.seed)
        self._subjects = [p.subject.casefold() for p in self.pool]
        self._fact_emb: dict[str, torch.Tensor] = {}
        self._asked: OrderedDict = OrderedDict()  # retrieval sentence -> embedding (one per edit with "fact")

    @property
    def encoder(self) -> Encoder:
        """Loaded on first use: a context without demonstrations for a single fact needs none."""
        return get_encoder(self.hp.encoder, self._device)

    def _embed_asked(self, sentence: str) -> torch.Tensor:
        hit = self._asked.get(sentence)
        if hit is None:
            hit = self._asked[sentence] = self.encoder.encode([sentence])[0]
            while len(self._asked) > FactMemory.MEMO:
                self._asked.popitem(last=False)
        return hit

    def _blocked(self, query: str, edited: Sequence[str]) -> torch.Tensor:
        """Pool facts never demonstrated for ``query``: about a subject the query names or an edited one,
        or whose fact names an edited subject."""
        low = query.casefold()
        return torch.tensor([s in low or s in edited or _names_any(p.fact, edited)
                             for s, p in zip(self._subjects, self.pool)], dtype=torch.bool)

    def _ranked_facts(self, facts: Sequence[Request], query: str) -> list[Request]:
        """The stored facts to show, least similar to ``query`` first (the nearest is the new fact)."""
        if len(facts) == 1:
            return list(facts)
        missing = [fact_text(f) for f in facts if fact_text(f) not in self._fact_emb]
        if missing:
            self._fact_emb.update(zip(missing, self.encoder.encode(missing)))
        sims = torch.stack([self._fact_emb[fact_text(f)] for f in facts]) @ self.encoder.encode([query])[0]
        order = sorted(range(len(facts)), key=lambda i: (float(sims[i]), i))
        return [facts[i] for i in order][-self.max_memory_facts:]

    def _demonstrations(self, fact: Request, query: str, edited: Sequence[str], avoid: Sequence[str]) -> list[str]:
        """The ``k`` pool demonstrations nearest to the (fact, prompt) pair, nearest first."""
        if not self.pattern or self.pool_emb is None or not len(self.pool):
            return []
        asked = query if self.hp.retrieve_by == "query" else fact.text
        scores = self.pool_emb @ self._embed_asked(f"New Fact: {fact_text(fact)}\nPrompt: {asked}")
        scores = scores.masked_fill(self._blocked(query, edited), float("-inf"))
        n = min(len(self.pattern), int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, n).indices.tolist() if n else []
        return [self.pool[i].demonstration(kind, self.hp.seed, edited, avoid) for i, kind in zip(top, self.pattern)]

    def context(self, facts: Sequence[Request], query: str) -> Context:
        if not facts:
            raise ValueError("a context needs at least one fact")
        ranked = self._ranked_facts(facts, query)
        fact = ranked[-1]
        edited = sorted({f.subject.casefold() for f in facts})
        avoid = sorted({a.casefold() for f in facts for a in (f.target_new, f.target_true) if a})
        demos = self._demonstrations(fact, query, edited, avoid)  # nearest first
        others = [_block(fact_text(f), fact_text(f)) for f in ranked[:-1]]  # least similar first
        copy = [_block(fact_text(fact), fact_text(fact))] if self.hp.copy_fact else []
        tail = f"New Fact: {fact_text(fact)}\nPrompt: "
        dropped = 0

        def build() -> str:
            shown = list(reversed(demos)) if self.hp.order == "nearest_last" else list(demos)
            return "".join(shown + others + copy) + tail

        prefix = build()
        while len(self.tokenizer(prefix + query)["input_ids"]) > self.budget and (demos or others or copy):
            (demos if demos else others if others else copy).pop(-1 if demos else 0)
            dropped += 1
            prefix = build()
        return Context(prefix, fact, len(demos), len(others) + 1, dropped)


# ---- a rewrite that carries facts ------------------------------------------------------------------------
def merge_facts(facts: Sequence[Request]) -> tuple[Request, ...]:
    """Facts in order, a later edit of the same subject and relation replacing the earlier one."""
    out: dict[tuple[str, str], Request] = {}
    for f in facts:
        key = (f.subject.casefold(), f.prompt)
        out.pop(key, None)
        out[key] = f
    return tuple(out.values())


class FactMemory:
    """An input rewrite (:attr:`editcore.scope.Patch.rewrite`) holding facts. Of the rewrites of one kind
    active at once (sequential edits), only the newest acts, over the union of their facts; the others pass
    the prompt through, so nothing is shown twice, and rolling back the newest leaves the previous one in
    charge. Rewritten prompts are memoised (the metrics ask for the same prompts many times)."""

    MEMO = 4096

    def __init__(self, tokenizer, facts: Sequence[Request]):
        self.tokenizer = tokenizer
        self.facts = tuple(facts)
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def active_facts(cls, tokenizer) -> tuple[Request, ...]:
        """The facts of every active rewrite of this kind (what a new sequential edit adds to)."""
        return merge_facts([f for fn in active_rewrites(tokenizer) if type(fn) is cls for f in fn.facts])

    def __call__(self, text: str) -> str:
        chain = [fn for fn in active_rewrites(self.tokenizer) if type(fn) is type(self)]
        if self in chain and chain[-1] is not self:
            return text
        facts = merge_facts([f for fn in chain if fn is not self for f in fn.facts] + list(self.facts))
        key = (facts, text)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        out = self.rewrite(facts, text)
        with self._lock:
            self._memo[key] = out
            while len(self._memo) > self.MEMO:
                self._memo.popitem(last=False)
        return out

    def rewrite(self, facts: tuple[Request, ...], text: str) -> str:
        raise NotImplementedError


class IkeRewrite(FactMemory):
    def __init__(self, tokenizer, facts: Sequence[Request], prompter: Prompter):
        super().__init__(tokenizer, facts)
        self.prompter = prompter

    def rewrite(self, facts, text):
        return self.prompter.context(facts, text).prefix + text


def context_diagnostics(lm, ctx: Context, prompt: str) -> dict:
    """What a context did to one prompt, for an edit's diagnostics."""
    n = len(lm.tokenizer(ctx.prefix + prompt)["input_ids"])
    return {"demonstrations": ctx.demonstrations, "prompt_tokens": n, "context_dropped": ctx.dropped,
            "context": ctx.prefix}


class Ike:
    name = "ike"
    version = "2"
    Hparams = IkeHparams
    batched = False  # one fact per call in the bench and the pages; compute stores several if given them
    info = MethodInfo(
        title="IKE", category="prompting", changes_weights=False,
        reference="Zheng et al. 2023, Can We Edit Factual Knowledge by In-Context Learning?",
        summary="Edits by prompting alone: every prompt the edited model sees is preceded by k demonstrations "
                "(copy, update and retain examples of other facts, retrieved by sentence-embedding similarity) "
                "and the new fact. No weight changes; all metrics, generations and probes here are measured "
                "with that context in front, as a user of the edited model would meet it. Sequential edits "
                "grow a memory of facts shown together.",
        adaptation="Demonstration pool from EditScope's catalog (not CounterFact's training split); "
                   "demonstrations retrieved per prompt by default (the authors: once per edit); kinds and prompts "
                   "drawn from a fixed seed; a fact memory for sequential edits; k tuned per bundled model.")

    def compute(self, lm, requests: Sequence[Request], hp: IkeHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        hp.check()
        reqs = validate_requests(lm, requests)
        prompter = Prompter(lm, hp, progress, hp.max_memory_facts)
        facts = merge_facts(list(IkeRewrite.active_facts(lm.tokenizer)) + reqs)
        ctx = prompter.context(facts, reqs[-1].text)
        diagnostics = {"memory_size": len(facts), "k": hp.k, "retrieve_by": hp.retrieve_by, "encoder": hp.encoder,
                       **context_diagnostics(lm, ctx, reqs[-1].text)}
        if ctx.dropped:
            diagnostics["warnings"] = [f"{ctx.dropped} demonstration(s) left out to fit the model's context"]
        patch = Patch(rewrite=IkeRewrite(lm.tokenizer, facts, prompter),
                      label=f"IKE {reqs[-1].subject} -> {reqs[-1].target_new}")
        seconds = time.perf_counter() - t0
        log.info("IKE %r -> %r: %d facts in memory, %d demonstrations, %d prompt tokens, %.2fs", reqs[-1].subject,
                 reqs[-1].target_new, len(facts), ctx.demonstrations, diagnostics["prompt_tokens"], seconds)
        return Edit(self.name, tuple(reqs), patch, seconds, diagnostics)


METHOD = Ike()


# ---- bench (editcore.perfbench.SECTIONS) ----------------------------------------------------------------
def bench_section(lm, facts, common) -> dict:
    """What IKE's context costs: its length, its build time and the evaluation time it adds, for retrieval
    per prompt (the default) and once per edit (the authors'), on the bench's facts."""
    import statistics

    from ..catalog import get_fact
    from ..metrics import evaluate
    from ..perfbench import judge
    from .base import load_hparams

    rows = []
    for retrieve_by in ("query", "fact"):
        hp = load_hparams("ike", IkeHparams, lm.name, {"retrieve_by": retrieve_by})
        seconds, tokens, judged, eval_s = [], [], [], None
        for i, f in enumerate(facts):
            with lm.scope() as s:
                edit = METHOD.compute(lm, [f.request], hp)
                s.apply(edit.patch)
                seconds.append(edit.seconds)
                tokens.append(edit.diagnostics["prompt_tokens"])
                judged.extend(judge(lm, [f]))
            if i == 0:  # the quick evaluation families with the context in front of every prompt
                t = time.perf_counter()
                evaluate(lm, get_fact(f.id), edit, families=("counterfact", "nkl", "shifts", "portability",
                                                             "locality"), target_new=f.request.target_new)
                eval_s = time.perf_counter() - t
        rows.append({"retrieve_by": retrieve_by, "k": hp.k, "facts": len(judged),
                     "s/edit median": statistics.median(seconds), "prompt tokens (mean)": statistics.mean(tokens),
                     "success": sum(j["success"] for j in judged) / len(judged),
                     "neighbourhood": sum(j["neighbourhood"] for j in judged) / len(judged),
                     "quick evaluation s (1st fact)": eval_s})
    return {"title": "IKE: the context in front of every prompt", "columns": list(rows[0]), "rows": rows,
            "note": "Seconds: retrieval and building the context for the edit prompt (the encoder and the pool's "
                    "embeddings already loaded). Every prompt the edited model is given carries the context, so "
                    "evaluating IKE reads long prompts: the last column is `metrics.evaluate` without the general "
                    "family on the first fact (the unedited model's reads included)."}
