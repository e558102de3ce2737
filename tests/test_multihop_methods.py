"""MeLLo and DeepEdit (editcore.methods.mello / deepedit / reasoning): the procedures driven by a scripted
model whose answers the test controls, the patch as the edited model's front door, the growing memory and
the scope's exact restore."""

import re

import pytest
import torch

import tiny
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.deepedit import CONFLICT_PROMPT, ENTITY_PROMPT, EXIST_PROMPT, QUERY_PROMPT, STEP_PROMPT
from editcore.methods.mello import AGREES, CONTRADICTS
from editcore.methods.reasoning import ModelReasoner, Retriever, question_of
from editcore.metrics.multihop import cot_prompt, qa_prompt
from editcore.scope import param_digest
from editcore.text import next_token_logprobs, rewritten
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

LOUVRE = Request("{} is located in the country of", "The Louvre", "Spain", "France")
JAPAN = Request("The capital of {} is", "Japan", "Osaka", "Tokyo")
QUESTION = "What is the capital of the country where The Louvre is located?"


class Scripted:
    """A reasoner whose every answer a function of the prompt gives; it records what it was asked."""

    def __init__(self, generate, yes=lambda prompt: False):
        self._generate, self._yes = generate, yes
        self.prompts: list[str] = []

    def generate(self, prompt, stops, max_new_tokens):
        self.prompts.append(prompt)
        return self._generate(prompt)

    def yes(self, prompt):
        self.prompts.append(prompt)
        return self._yes(prompt)


def _hp(name, **overrides):
    method = get_method(name)
    return method, load_hparams(name, method.Hparams, None, {"encoder": "hashed-bow", **overrides})


# ---- MeLLo ----------------------------------------------------------------------------------------------------
_TENTATIVE = {  # subquestion -> the scripted model's tentative answer (its parametric knowledge)
    "In which country is The Louvre located?": ("The Louvre is located in the country of France.", "France"),
    "What is the capital of Spain?": ("The capital of Spain is Madrid.", "Madrid"),
    "What is the capital of France?": ("The capital of France is Paris.", "Paris"),
    "Who wrote Hamlet?": ("Hamlet was written by William Shakespeare.", "William Shakespeare"),
}
_NEXT = {"The Louvre": "What is the capital of {}?"}


def _mello_model(prompt: str) -> str:
    """Decomposes, and self-checks honestly: a retrieved fact that states the tentative answer's sentence with
    another answer contradicts it."""
    block = prompt[prompt.rfind("Question:"):]
    subs = re.findall(r"Subquestion: (.*)", block)
    facts = re.findall(r"Retrieved fact: (.*)\.", block)
    if not subs:
        first = "Who wrote Hamlet?" if "Hamlet" in block else "In which country is The Louvre located?"
        return f"Subquestion: {first}\nGenerated answer: {_TENTATIVE[first][0]}\n"
    sentence, tentative = _TENTATIVE[subs[-1]]
    fact = facts[-1]
    contradicts = fact.rsplit(" ", 1)[0] == sentence.rstrip(".").rsplit(" ", 1)[0] and not fact.endswith(tentative)
    answer = fact.rsplit(" ", 1)[-1] if contradicts else tentative
    check = f"{CONTRADICTS if contradicts else AGREES} {answer}\n"
    if "Louvre" in subs[-1]:
        nxt = _NEXT["The Louvre"].format(answer)
        return check + f"Subquestion: {nxt}\nGenerated answer: {_TENTATIVE[nxt][0]}\n"
    return check + f"Final answer: {answer}"


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("llama")


def test_mello_adopts_a_contradicting_fact_and_leaves_an_unrelated_question(lm):
    method, hp = _hp("mello")
    model = Scripted(_mello_model)
    edit = method.compute(lm, [JAPAN], hp, reasoner=model)
    edit2 = None
    with lm.scope(edit.patch) as scope:
        edit2 = method.compute(lm, [LOUVRE], hp, reasoner=model)
        scope.apply(edit2.patch)
        rw = edit2.patch.rewrite
        sol = rw.solve(rw.facts, QUESTION)
        # The subquestion about the Louvre retrieved the Louvre fact, the tentative "France" was overridden.
        assert "Subquestion: In which country is The Louvre located?\nGenerated answer: The Louvre is located " \
               "in the country of France.\nRetrieved fact: The Louvre is located in the country of Spain." in sol.transcript
        assert f"{CONTRADICTS} Spain" in sol.transcript
        assert sol.used == (LOUVRE,) and sol.answer == "Madrid"
        asked = qa_prompt(QUESTION)
        seen = rewritten(lm.tokenizer, asked)
        assert seen.endswith(asked) and seen.startswith(f"Question: {QUESTION}")
        assert "Final answer: Madrid\n\n" in seen
        # An unrelated question: the fact retrieved does not contradict, nothing is adopted, the prompt is as is.
        other = qa_prompt("Who wrote Hamlet?")
        assert rewritten(lm.tokenizer, other) == other
        assert rw.solve(rw.facts, "Who wrote Hamlet?").answer == "William Shakespeare"
        # The edit prompt itself is a stored statement: answered from the fact, the model not asked.
        n = len(model.prompts)
        assert rewritten(lm.tokenizer, LOUVRE.text).endswith("Final answer: Spain\n\n" + LOUVRE.text)
        assert len(model.prompts) == n
    assert rewritten(lm.tokenizer, asked) == asked


def test_mello_without_a_final_answer_passes_the_prompt(lm):
    method, hp = _hp("mello", max_hops=2)
    broken = Scripted(lambda prompt: "I am not sure.")
    edit = method.compute(lm, [LOUVRE], hp, reasoner=broken)
    with lm.scope(edit.patch):
        assert rewritten(lm.tokenizer, qa_prompt(QUESTION)) == qa_prompt(QUESTION)
    assert edit.diagnostics["edit_prompt_adopts_edit"]  # the direct hit


def test_mello_memory_grows_and_the_scope_restores_bit_for_bit(lm):
    method, hp = _hp("mello")
    model = Scripted(_mello_model)
    d0, read0 = param_digest(lm.model), next_token_logprobs(lm, [LOUVRE.text])
    with lm.scope() as scope:
        e1 = method.compute(lm, [JAPAN], hp, reasoner=model)
        scope.apply(e1.patch)
        e2 = method.compute(lm, [LOUVRE], hp, reasoner=model)
        assert e1.diagnostics["memory_size"] == 1 and e2.diagnostics["memory_size"] == 2
        assert set(e2.patch.rewrite.facts) == {JAPAN, LOUVRE}
        scope.apply(e2.patch)
        assert param_digest(lm.model) == d0
        assert not torch.equal(next_token_logprobs(lm, [LOUVRE.text]), read0)
        scope.rollback()  # the earlier patch is in charge again: the Louvre is no longer in memory
        assert "Final answer: Spain" not in rewritten(lm.tokenizer, LOUVRE.text)
        assert "Final answer: Osaka" in rewritten(lm.tokenizer, JAPAN.text)
    assert param_digest(lm.model) == d0
    assert torch.equal(next_token_logprobs(lm, [LOUVRE.text]), read0)
    assert rewritten(lm.tokenizer, JAPAN.text) == JAPAN.text


# ---- DeepEdit ------------------------------------------------------------------------------------------------
CREATED = Request("{} was created by", "Tetris", "Mark Burnett", "Alexey Pajitnov")
DEVELOPED = Request("{} was developed by", "Tetris", "Sega", "Nintendo")
TETRIS_Q = "Who made Tetris?"


def _deepedit_model(prompt: str) -> str:
    if prompt.startswith(ENTITY_PROMPT):
        a, b = re.findall(r"Sentence A: (.*)\nSentence B: (.*)\nAnswer:$", prompt)[0]
        return " Tetris" if a == "No entity appears." else " " + b.rsplit(" by ", 1)[-1].rstrip(".")
    if prompt.startswith(QUERY_PROMPT):
        b = re.findall(r"Sentence B: (.*)\nSentence B after deletion:$", prompt)[0]
        return " " + b.rsplit(" by ", 1)[0] + " by"
    assert prompt.startswith(STEP_PROMPT)
    steps = prompt.rsplit("Thoughts with New Knowledge:", 1)[1]
    if not steps:
        return " Tetris was created by Alexey Pajitnov."
    if steps.endswith("Sega.#"):
        return " Sega is the answer."
    # After Mark Burnett the model only repeats itself: a step the conciseness constraint rejects.
    return " Tetris was created by Mark Burnett."


def test_deepedit_rejects_a_repeated_step_and_backtracks():
    lm = tiny.lm("gpt2")
    method, hp = _hp("deepedit", k=2)
    model = Scripted(_deepedit_model)
    facts = (CREATED, DEVELOPED)
    retriever = Retriever("hashed-bow")
    assert [f for f, _ in retriever.rank(facts, "Tetris was created by")] == [CREATED, DEVELOPED]
    sol = method.solve(model, retriever, facts, TETRIS_Q, hp)
    assert sol.answer == "Sega" and sol.used == (DEVELOPED,)
    events = "\n".join(sol.events)
    # Both facts are coherent with the question; the more similar (created by) is explored first, its chain
    # ends in a repeated step (rejected), and the search backtracks to the other fact.
    assert events.index("candidate (new knowledge): Tetris was created by Mark Burnett.") \
        < events.index("rejected (conciseness): Tetris was created by Mark Burnett.; backtrack") \
        < events.index("answer: Sega")
    assert "rejected (conciseness, repeated): Tetris was created by Mark Burnett." in events
    assert sol.transcript.endswith("Thoughts with New Knowledge: Tetris was developed by Sega.#")
    # Through the patch: the chain and its answer before the question; an unrelated text passes unchanged.
    edit = method.compute(lm, [CREATED], hp, reasoner=model)
    with lm.scope(edit.patch) as scope:
        scope.apply(method.compute(lm, [DEVELOPED], hp, reasoner=model).patch)
        seen = rewritten(lm.tokenizer, qa_prompt(TETRIS_Q))
        assert "Tetris was developed by Sega.#\nFinal answer: Sega\n\n" in seen
        long_text = " ".join(["word"] * 60)
        assert rewritten(lm.tokenizer, long_text) == long_text


def test_deepedit_takes_a_conflicting_fact_over_the_models_step():
    """Receptiveness: a fact about the step's subject with another answer replaces the model's own step even
    when it does not mention the bridge entity; without the conflict the model's step stands."""
    method, hp = _hp("deepedit", k=1, max_steps=1)
    facts = (Request("{} is a citizen of", "Alexey Pajitnov", "Latvia", "Russia"),)
    q = "Who created Tetris and where is he from?"

    def model(prompt):
        if prompt.startswith(ENTITY_PROMPT):
            a = re.findall(r"Sentence A: (.*)\nSentence B: .*\nAnswer:$", prompt)[0]
            return " Tetris" if a == "No entity appears." else " Russia"
        if prompt.startswith(QUERY_PROMPT):
            return " Alexey Pajitnov is a citizen of"
        return " Alexey Pajitnov is a citizen of Russia."

    for says_conflict in (True, False):
        judge = Scripted(model, yes=lambda p, c=says_conflict: p.startswith(CONFLICT_PROMPT) and c)
        sol = method.solve(judge, Retriever("hashed-bow"), facts, q, hp)
        events = "\n".join(sol.events)
        if says_conflict:
            assert "candidate (new knowledge): Alexey Pajitnov is a citizen of Latvia." in events
        else:
            assert "rejected (coherence): Alexey Pajitnov is a citizen of Latvia." in events
            assert "candidate (model): Alexey Pajitnov is a citizen of Russia." in events
        assert any(p.startswith(EXIST_PROMPT) for p in judge.prompts)  # bridge not found by string: asked


# ---- shared machinery ----------------------------------------------------------------------------------------
def test_question_of_finds_the_question_in_the_metrics_prompts():
    assert question_of(qa_prompt(QUESTION)) == QUESTION
    assert question_of(cot_prompt(QUESTION)) == QUESTION
    assert question_of("  The Louvre is located in  ") == "The Louvre is located in"


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_model_reasoner_reuses_caches_without_changing_tokens(family):
    lm = tiny.lm(family)
    cached = ModelReasoner(lm)
    a = "The Louvre is located in the city of Paris and the Eiffel Tower"
    first = cached.generate(a, ("\n",), 6)
    second = cached.generate(a + first + " and", ("\n",), 6)  # shares the first prompt and its tokens
    assert second == ModelReasoner(lm).generate(a + first + " and", ("\n",), 6)
    assert cached.yes(a + " Is it? Answer:") == ModelReasoner(lm).yes(a + " Is it? Answer:")
    with lm.scope():
        assert cached.generate(a, ("\n",), 6) == first
