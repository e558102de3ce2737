"""MeLLo: Memory-based editing for Large Language models (Zhong et al. 2023, "MQuAKE: Assessing Knowledge
Editing in Language Models via Multi-Hop Questions", §5).

MeLLo changes no weight. The edited facts are kept in an explicit memory (their statements, embedded by a
sentence encoder). A question is answered by prompting the model with few-shot demonstrations to work in
steps, as in the authors' notebook (``run_mello.ipynb``):

1. the model writes a ``Subquestion:`` and a tentative ``Generated answer:`` (generation stops at
   ``Retrieved fact:``);
2. the edited fact most similar to the subquestion is retrieved and appended as ``Retrieved fact: …``;
3. the model continues with its **self-check**: ``Retrieved fact contradicts the generated answer, so the
   intermediate answer is: <the fact's answer>`` or ``… does not contradict …`` (its own answer), then the
   next subquestion;
4. until it writes ``Final answer:`` (at most ``max_hops`` subquestions).

**The edited model** (see :mod:`.reasoning`): a prompt whose question MeLLo answers with a chain that adopted
an edited fact (a self-check said *contradicts*) is given after that transcript and its final answer; every
other prompt passes unchanged. Sequential edits grow one memory (the newest MeLLo patch retrieves from the
facts of all active MeLLo patches).

Where EditScope departs from the paper (also in ``MethodInfo.adaptation``): the demonstrations are
EditScope's own (four, in the paper's format), not MQuAKE's; retrieval uses all-MiniLM-L6-v2 (the encoder
IKE uses here), not Contriever; the memory holds the facts edited in this scope, not every edit of the
dataset; an edit prompt that is a stored statement is answered directly (``direct_hit``); prompts that MeLLo
answers without adopting an edit pass unchanged rather than being answered by MeLLo's chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..metrics.matching import exact_match
from ..types import Request
from .base import MethodInfo, hparam
from .ike import fact_text
from .reasoning import MultiHopHparams, MultiHopMethod, MultiHopRewrite, Reasoner, Retriever, Solution

CONTRADICTS = "Retrieved fact contradicts the generated answer, so the intermediate answer is:"
AGREES = "Retrieved fact does not contradict the generated answer, so the intermediate answer is:"

# Written for EditScope in the format of MeLLo's prompt: each demonstration shows both self-check outcomes.
DEMONSTRATIONS = f"""Question: Which currency is used in the country where the Eiffel Tower is located?
Subquestion: In which country is the Eiffel Tower located?
Generated answer: The Eiffel Tower is located in France.
Retrieved fact: The Eiffel Tower is located in the country of Italy.
{CONTRADICTS} Italy
Subquestion: Which currency is used in Italy?
Generated answer: The currency of Italy is the euro.
Retrieved fact: The currency of Japan is the dollar.
{AGREES} euro
Final answer: euro

Question: Who is the head of state of the country where Daniel Radcliffe was born?
Subquestion: In which country was Daniel Radcliffe born?
Generated answer: Daniel Radcliffe was born in the United Kingdom.
Retrieved fact: Daniel Craig was born in Canada.
{AGREES} United Kingdom
Subquestion: Who is the head of state of the United Kingdom?
Generated answer: The head of state of the United Kingdom is King Charles III.
Retrieved fact: The head of state of the United Kingdom is Jacinda Ardern.
{CONTRADICTS} Jacinda Ardern
Final answer: Jacinda Ardern

Question: On which continent is the country of citizenship of the founder of Microsoft?
Subquestion: Who founded Microsoft?
Generated answer: Microsoft was founded by Bill Gates.
Retrieved fact: Microsoft was founded by Larry Page.
{CONTRADICTS} Larry Page
Subquestion: What is the country of citizenship of Larry Page?
Generated answer: Larry Page is a citizen of the United States.
Retrieved fact: Larry Page is a citizen of Brazil.
{CONTRADICTS} Brazil
Subquestion: On which continent is Brazil located?
Generated answer: Brazil is located in South America.
Retrieved fact: Kenya is located in the continent of Asia.
{AGREES} South America
Final answer: South America

Question: What is the official language of the country where the Sydney Opera House is located?
Subquestion: In which country is the Sydney Opera House located?
Generated answer: The Sydney Opera House is located in Australia.
Retrieved fact: The Sydney Opera House is located in the country of Australia.
{AGREES} Australia
Subquestion: What is the official language of Australia?
Generated answer: The official language of Australia is English.
Retrieved fact: The official language of Mexico is French.
{AGREES} English
Final answer: English"""


@dataclass(frozen=True)
class MelloHparams(MultiHopHparams):
    max_hops: int = hparam(4, lo=1, hi=8, help="subquestions before MeLLo gives up")


class MelloRewrite(MultiHopRewrite):
    pass


def _after(line: str, label: str) -> str:
    return line[len(label):].strip().rstrip(".").strip()


def _adopts(line: str, fact: Request) -> bool:
    """Whether a self-check line takes the retrieved fact: it says *contradicts*, or (small models mix the
    two up) its intermediate answer is the fact's new target whatever the verdict's wording."""
    if line.startswith(CONTRADICTS):
        return True
    return line.startswith(AGREES) and exact_match(_after(line, AGREES), [fact.target_new])


def solve(reasoner: Reasoner, retriever: Retriever, facts: Sequence[Request], question: str,
          hp: MelloHparams) -> Solution:
    """MeLLo's loop for one question (the memory ``facts``; the model behind ``reasoner``)."""
    head = DEMONSTRATIONS + "\n\n"
    prompt = head + f"Question: {question.strip()}\n"
    retrieved: Request | None = None
    used: list[Request] = []
    answer = None
    calls = 0
    for _ in range(hp.max_hops + 1):
        gen = reasoner.generate(prompt, ("Retrieved fact:", "\nQuestion:"), hp.max_new_tokens)
        calls += 1
        lines = [ln.strip() for ln in gen.split("\n") if ln.strip()]
        for ln in lines:  # the self-check on the fact retrieved last
            if retrieved is not None and retrieved not in used and _adopts(ln, retrieved):
                used.append(retrieved)
        final = next((ln for ln in lines if ln.startswith("Final answer:")), None)
        if final is not None:
            prompt += gen[:gen.find("Final answer:")]
            answer = _after(final, "Final answer:") or None
            break
        prompt += gen if gen.endswith("\n") else gen + "\n"
        sub = next((ln for ln in reversed(lines) if ln.startswith("Subquestion:")), None)
        if sub is None or not any(ln.startswith("Generated answer:") for ln in lines):
            break  # the model left the format: no answer
        retrieved = retriever.rank(facts, _after(sub, "Subquestion:"))[0][0]
        prompt += f"Retrieved fact: {fact_text(retrieved)}.\n"
    return Solution(question, answer, prompt[len(head):], tuple(used), calls)


class Mello(MultiHopMethod):
    name = "mello"
    version = "1"
    Hparams = MelloHparams
    info = MethodInfo(
        title="MeLLo", category="memory-based", changes_weights=False,
        reference="Zhong et al. 2023, MQuAKE: Assessing Knowledge Editing in Language Models via Multi-Hop "
                  "Questions",
        summary="Keeps edited facts in a memory outside the model and answers a question in steps: the model, "
                "prompted with demonstrations, writes a subquestion and a tentative answer, the most similar "
                "edited fact is retrieved, and the model checks whether it contradicts its answer, taking the "
                "fact's answer if so. Prompts whose answer used an edited fact are read after MeLLo's "
                "transcript; all others reach the unchanged model. Sequential edits grow the memory. Needs a "
                "model that follows the format: small models often do not.",
        adaptation="EditScope's own four demonstrations in MeLLo's format; all-MiniLM-L6-v2 retrieval (the paper: "
                   "Contriever); the memory holds the facts edited in the scope; the edit prompt itself is "
                   "answered from its stored fact; a prompt whose chain adopted no edited fact passes unchanged "
                   "(the base model answers, not MeLLo's chain); prompts over 40 words pass unchanged.")

    rewrite_cls = MelloRewrite
    solve = staticmethod(solve)


METHOD = Mello()
