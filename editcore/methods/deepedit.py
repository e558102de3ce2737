"""DeepEdit: knowledge editing as decoding with constraints (Wang et al. 2024, "DeepEdit: Knowledge Editing as
Decoding with Constraints").

DeepEdit changes no weight. It decodes the model's reasoning one *step* (a short factual sentence) at a
time and searches depth-first over steps, as the authors' notebook (``run_deepedit.ipynb``) does:

1. from the chain so far the model proposes the next step (``… .#``); a step saying ``… is the answer`` ends
   the search with the entity the last step introduced;
2. the step, stripped of the entity it introduces (the model does this, ``QUERY_PROMPT``), is the query for
   the ``k`` most similar edited facts;
3. a retrieved fact becomes a candidate step when it satisfies the constraints:

   * **coherence**: it mentions the entity the previous step introduced (the bridge), by string or, failing
     that, by the model's judgement (``EXIST_PROMPT``); or its subject appears in the previous step (the
     question, before the first step);
   * **conciseness**: it does not go back to the entity before that, nor repeat a step of the chain;
   * **receptiveness**: a fact that *conflicts* with the model's step (same subject, another answer; the model
     judges ``CONFLICT_PROMPT``) replaces it even when it is not coherent by string;
   * **pertinence**: candidates are explored most-similar first (the retriever's ranking of new knowledge
     against the step), so new knowledge is preferred when it is relevant;

4. when no fact qualifies, the model's own step is the one candidate, kept only if it is concise (neither
   repeated nor re-introducing an entity already in the chain); a state without candidates is a dead end and
   the search backtracks to the next candidate on the stack. Depth (``max_steps``) and model calls
   (``max_calls``) are bounded.

**The edited model** (see :mod:`.reasoning`): a prompt whose chain contains an edited fact is given after
that chain and its answer; every other prompt passes unchanged. Sequential edits grow one memory.

Where EditScope departs from the paper (also in ``MethodInfo.adaptation``): prompts are EditScope's own in
the format of the authors'; yes/no judgements are read from the model's scores for " yes" and " no" (the
authors sample text, retrying at temperature 1); of the authors' three conflict judgements, "mentions the same
entity" and "mentions a different entity" are string checks on the stored fact's subject and new target
(known here), the third is the model's; a fact whose subject appears in the previous step counts as
coherent without asking the model; retrieval uses all-MiniLM-L6-v2 (the paper: Contriever); the model's
own step is checked for conciseness (the authors accept it unchecked); the edit prompt itself is answered from
its stored fact; a prompt whose chain used no edited fact passes unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Request
from .base import MethodInfo, hparam
from .ike import fact_text
from .reasoning import MultiHopHparams, MultiHopMethod, MultiHopRewrite, Reasoner, Retriever, Solution, mentions

STEP_PROMPT = """Answer the Question by reasoning in short steps in Thoughts with New Knowledge. Take every step as true, even when it disagrees with what you know. Steps are separated by a #.

Question: Which currency is used in the country where the Eiffel Tower is located?
Thoughts with New Knowledge: The Eiffel Tower is located in the country of Italy.# The currency of Italy is the euro.# euro is the answer.
Answer: euro

Question: Who is the head of state of the country where Daniel Radcliffe was born?
Thoughts with New Knowledge: Daniel Radcliffe was born in the United Kingdom.# The head of state of the United Kingdom is Jacinda Ardern.# Jacinda Ardern is the answer.
Answer: Jacinda Ardern

Question: On which continent is the country of citizenship of the founder of Microsoft?
Thoughts with New Knowledge: Microsoft was founded by Larry Page.# Larry Page is a citizen of Brazil.# Brazil is located in the continent of South America.# South America is the answer.
Answer: South America"""

ENTITY_PROMPT = """Name the entity that Sentence B mentions and Sentence A does not. Give the name only, as short as possible.

Sentence A: The Eiffel Tower is located in the country of Italy.
Sentence B: The currency of Italy is the euro.
Answer: euro

Sentence A: Microsoft was founded by Larry Page.
Sentence B: Larry Page is a citizen of Brazil.
Answer: Brazil

Sentence A: No entity appears.
Sentence B: Who founded Microsoft?
Answer: Microsoft"""

QUERY_PROMPT = """Delete from Sentence B the entity that does not appear in Sentence A.

Sentence A: The Eiffel Tower is located in the country of Italy.
Sentence B: The currency of Italy is the euro.
Sentence B after deletion: The currency of Italy is

Sentence A: Microsoft was founded by Larry Page.
Sentence B: Larry Page is a citizen of Brazil.
Sentence B after deletion: Larry Page is a citizen of"""

EXIST_PROMPT = """Does the Entity appear in the Sentence? Answer yes or no.

Sentence: The currency of Italy is the euro.
Entity: Italian Republic
Answer: yes

Sentence: Larry Page is a citizen of Brazil.
Entity: Microsoft
Answer: no"""

CONFLICT_PROMPT = """Do Sentence A and Sentence B give different answers to the same question about the same subject? Answer yes or no.

Sentence A: Larry Page is a citizen of Brazil.
Sentence B: Larry Page is a citizen of the United States.
Answer: yes

Sentence A: The currency of Italy is the euro.
Sentence B: Italy is located in the continent of Europe.
Answer: no"""


ENTITY_TOKENS = 16  # a name
QUERY_TOKENS = 32  # a step without its last entity


@dataclass(frozen=True)
class DeepEditHparams(MultiHopHparams):
    k: int = hparam(2, lo=1, hi=16, help="edited facts retrieved per step (the authors: 2)")
    max_steps: int = hparam(5, lo=1, hi=12, help="steps in a chain before the branch is cut")
    max_calls: int = hparam(48, lo=4, hi=2000, help="model calls per question before the search gives up")


class DeepEditRewrite(MultiHopRewrite):
    pass


@dataclass(frozen=True)
class _State:
    steps: tuple[str, ...]
    used: tuple[Request, ...]
    entity: str  # introduced by the last step (the bridge the next step must mention)
    entities: tuple[str, ...]  # every entity the chain has introduced, oldest first
    last: str  # the last step (the question before the first)


class _Search:
    def __init__(self, reasoner: Reasoner, hp: DeepEditHparams):
        self.r, self.hp = reasoner, hp
        self.calls = 0
        self.events: list[str] = []

    def gen(self, prompt: str, stops=("\n",), max_new_tokens: int | None = None) -> str:
        self.calls += 1
        return self.r.generate(prompt, stops, max_new_tokens or self.hp.max_new_tokens).strip()

    def yes(self, prompt: str) -> bool:
        self.calls += 1
        return self.r.yes(prompt)

    def new_entity(self, before: str, after: str) -> str:
        return self.gen(f"{ENTITY_PROMPT}\n\nSentence A: {before}\nSentence B: {after}\nAnswer:",
                        max_new_tokens=ENTITY_TOKENS).strip(" .\"'")

    def has(self, entity: str, sentence: str) -> bool:
        if not entity:
            return False
        return mentions(entity, sentence) or self.yes(
            f"{EXIST_PROMPT}\n\nSentence: {sentence}\nEntity: {entity}\nAnswer:")

    def conflicts(self, fact: Request, sentence: str, thought: str) -> bool:
        if not mentions(fact.subject, thought) or mentions(fact.target_new, thought):
            return False
        return self.yes(f"{CONFLICT_PROMPT}\n\nSentence A: {sentence}\nSentence B: {thought}\nAnswer:")

    def child(self, s: _State, step: str, fact: Request | None, entity: str | None = None) -> _State:
        entity = entity if entity is not None else (fact.target_new if fact is not None else "")
        return _State(s.steps + (step,), s.used + ((fact,) if fact is not None else ()), entity,
                      s.entities + (entity,), step)


def solve(reasoner: Reasoner, retriever: Retriever, facts: Sequence[Request], question: str,
          hp: DeepEditHparams) -> Solution:
    """DeepEdit's depth-first search for one question."""
    q = question.strip()
    search = _Search(reasoner, hp)
    head = f"{STEP_PROMPT}\n\nQuestion: {q}\nThoughts with New Knowledge:"
    first = search.new_entity("No entity appears.", q)
    stack = [_State((), (), first, (first,), q)]
    while stack and search.calls < hp.max_calls:
        s = stack.pop()
        if len(s.steps) >= hp.max_steps:
            search.events.append(f"cut at depth {len(s.steps)}; backtrack")
            continue
        thought = search.gen(head + "".join(f" {t}#" for t in s.steps), ("#", "\n"))
        if "the answer" in thought.casefold():
            search.events.append(f"answer: {s.entity}")
            transcript = f"Question: {q}\nThoughts with New Knowledge:" + "".join(f" {t}#" for t in s.steps)
            return Solution(q, s.entity or None, transcript, s.used, search.calls, search.events)
        thought = thought.rstrip(" .#") + "."
        query = search.gen(f"{QUERY_PROMPT}\n\nSentence A: {s.last}\nSentence B: {thought}\n"
                           "Sentence B after deletion:", max_new_tokens=QUERY_TOKENS) or thought
        children = []
        for fact, _ in reversed(retriever.rank(facts, query)[:hp.k]):  # the most similar ends on top
            sentence = fact_text(fact) + "."
            if sentence in s.steps:
                search.events.append(f"rejected (conciseness, repeated): {sentence}")
                continue
            back = len(s.entities) > 1 and search.has(s.entities[-2], sentence)
            coherent = (mentions(fact.subject, s.last) or search.has(s.entity, sentence)) and not back
            if coherent or search.conflicts(fact, sentence, thought):
                children.append(search.child(s, sentence, fact))
                search.events.append(f"candidate (new knowledge): {sentence}")
            else:
                search.events.append(f"rejected (coherence): {sentence}")
        if not children:
            entity = search.new_entity(s.last, thought)
            seen = {e.casefold() for e in s.entities}
            if thought in s.steps or not entity or entity.casefold() in seen:
                search.events.append(f"rejected (conciseness): {thought}; backtrack")
            else:
                children.append(search.child(s, thought, None, entity))
                search.events.append(f"candidate (model): {thought}")
        stack.extend(children)
    search.events.append("search exhausted")
    return Solution(q, None, f"Question: {q}", (), search.calls, search.events)


class DeepEdit(MultiHopMethod):
    name = "deepedit"
    version = "1"
    Hparams = DeepEditHparams
    info = MethodInfo(
        title="DeepEdit", category="memory-based", changes_weights=False,
        reference="Wang et al. 2024, DeepEdit: Knowledge Editing as Decoding with Constraints",
        summary="Decodes the model's reasoning one step at a time and searches depth-first over steps. Each "
                "step is the model's own or a retrieved edited fact, kept only if it satisfies the constraints "
                "(coherent with the previous step, concise, receptive to conflicting new knowledge, the most "
                "relevant new knowledge first); dead ends backtrack. Prompts whose chain used an edited fact are "
                "read after that chain; all others reach the unchanged model. Sequential edits grow the memory. "
                "Needs a model that can judge sentences: small models often cannot.",
        adaptation="EditScope's own prompts in the authors' format; yes/no judgements read from the scores of "
                   "' yes' and ' no'; two of the three conflict judgements are string checks on the stored "
                   "fact, and a fact whose subject the previous step names is coherent; all-MiniLM-L6-v2 retrieval (the paper: Contriever); the model's own step is checked "
                   "for conciseness; the edit prompt itself is answered from its stored fact; a prompt whose "
                   "chain used no edited fact passes unchanged; prompts over 40 words pass unchanged.")

    rewrite_cls = DeepEditRewrite
    solve = staticmethod(solve)


METHOD = DeepEdit()
